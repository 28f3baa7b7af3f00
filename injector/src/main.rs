//! The `injector` binary: flags in, [`daprs_injector::run`], exit code out.

use daprs_api::cli::{EXIT_USAGE, parse_or_exit};
use daprs_injector::config::Args;

#[tokio::main]
async fn main() {
    daprs_api::tls::install_default_provider();
    let args: Args = parse_or_exit();
    args.log.init();
    match daprs_injector::run(args).await {
        Ok(()) => {}
        Err(error @ daprs_injector::Error::Config(_)) => {
            eprintln!("injector: {error}");
            std::process::exit(EXIT_USAGE);
        }
        Err(error) => {
            tracing::error!(%error, "injector stopped");
            std::process::exit(1);
        }
    }
}
