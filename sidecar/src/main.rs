//! The `daprd` binary: flags in, [`daprs_sidecar::run`] on the runtime `--worker-threads`
//! asks for, exit code out.

use daprs_api::cli::{EXIT_USAGE, parse_or_exit};
use daprs_sidecar::config::Args;

/// mimalloc rather than the C library's allocator: the shipped build is static musl, whose
/// malloc (one lock, no thread caches) took ~15 % of a sidecar's CPU under invocation load;
/// mimalloc takes about a quarter off the total. Built without transparent huge pages
/// (`no_thp`), which would otherwise make ~10 MiB of its arena resident (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Args = parse_or_exit();
    args.log.init();
    let runtime = match runtime(args.worker_threads) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("daprd: cannot start the async runtime: {error}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(daprs_sidecar::run(args)) {
        Ok(()) => {}
        Err(error @ daprs_sidecar::Error::Config(_)) => {
            eprintln!("daprd: {error}");
            std::process::exit(EXIT_USAGE);
        }
        Err(error) => {
            tracing::error!(%error, "daprd stopped");
            eprintln!("daprd: {error}");
            std::process::exit(1);
        }
    }
}

/// One thread by default: a sidecar's work is small pieces of I/O, and on one thread a request
/// is never handed between threads, which on a 2-core machine took about a fifth off the CPU
/// per invocation and helped bring the added p90 under 0.4 ms (docs/performance.md). `threads` > 1 runs
/// tokio's work-stealing runtime with that many workers, 0 with one per core.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            builder.worker_threads(threads);
        }
        builder
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod tests {
    use tokio::runtime::RuntimeFlavor;

    #[test]
    fn one_thread_by_default_and_as_many_workers_as_asked() {
        let one = super::runtime(1).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        let two = super::runtime(2).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
        let per_core = super::runtime(0).unwrap();
        assert_eq!(
            per_core.handle().runtime_flavor(),
            RuntimeFlavor::MultiThread
        );
        assert!(per_core.metrics().num_workers() >= 1);
    }
}
