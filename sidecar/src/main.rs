//! The `daprd` binary: flags in, [`daprs_sidecar::run`], exit code out.

use daprs_api::cli::{EXIT_USAGE, parse_or_exit};
use daprs_sidecar::config::Args;

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
