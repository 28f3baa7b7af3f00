//! The `sentry` binary: flags in, [`daprs_sentry::run`], exit code out.

use daprs_api::cli::{EXIT_USAGE, parse_or_exit};
use daprs_sentry::config::Args;

#[tokio::main]
async fn main() {
    daprs_api::tls::install_default_provider();
    let args: Args = parse_or_exit();
    args.log.init();
    match daprs_sentry::run(args).await {
        Ok(()) => {}
        Err(error @ daprs_sentry::Error::Config(_)) => {
            eprintln!("sentry: {error}");
            std::process::exit(EXIT_USAGE);
        }
        Err(error) => {
            tracing::error!(%error, "sentry stopped");
            std::process::exit(1);
        }
    }
}
