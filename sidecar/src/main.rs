//! The `daprd` binary: flags in, [`daprs_sidecar::run`], exit code out.

use daprs_api::cli::{EXIT_USAGE, parse_or_exit};
use daprs_sidecar::config::Args;

/// mimalloc rather than the C library's allocator: the shipped build is static musl, whose
/// malloc (one lock, no thread caches) took ~15 % of a sidecar's CPU under invocation load;
/// mimalloc takes about a quarter off the total. Built without transparent huge pages
/// (`no_thp`), which would otherwise make ~10 MiB of its arena resident (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let args: Args = parse_or_exit();
    args.log.init();
    match daprs_sidecar::run(args).await {
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
