//! The `operator` binary: flags in, [`daprs_operator::run`], exit code out.

use daprs_api::cli::{EXIT_USAGE, parse_or_exit};
use daprs_operator::config::Args;

/// One mapping per large buffer: the operator holds one mostly idle mTLS connection per
/// sidecar, and its library buffers' untouched pages then cost nothing (see `daprs-page-alloc`).
#[global_allocator]
static ALLOCATOR: daprs_page_alloc::PageAlloc = daprs_page_alloc::PageAlloc;

#[tokio::main]
async fn main() {
    daprs_api::tls::install_default_provider();
    let args: Args = parse_or_exit();
    args.log.init();
    match daprs_operator::run(args).await {
        Ok(()) => {}
        Err(error @ daprs_operator::Error::Config(_)) => {
            eprintln!("operator: {error}");
            std::process::exit(EXIT_USAGE);
        }
        Err(error) => {
            tracing::error!(%error, "operator stopped");
            std::process::exit(1);
        }
    }
}
