//! Running our sentry in-process for a test, its listeners on loopback ports of its own.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

/// How long sentry gets to answer `/healthz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts sentry with `args` (what the test cares about: `--mode kubernetes`,
/// `--issuer-credentials <dir>`, `--trust-domain <td>`...) plus its gRPC and healthz listeners
/// on free `127.0.0.1` ports and no metrics server, in `namespace` with the API server `client`
/// (kubernetes mode needs one, with sentry's own credentials). Returns once `/healthz` says 200.
pub async fn start_sentry(
    namespace: &str,
    client: Option<kube::Client>,
    args: &[&str],
) -> Result<daprs_sentry::Running> {
    let argv = ["sentry"].iter().chain(args).chain(&[
        "--listen-address",
        "127.0.0.1",
        "--port",
        "0",
        "--healthz-listen-address",
        "127.0.0.1",
        "--healthz-port",
        "0",
        "--enable-metrics=false",
    ]);
    let args = daprs_sentry::config::Args::try_parse_from(argv).context("sentry's flags")?;
    let environment = daprs_sentry::Environment {
        namespace: namespace.to_owned(),
        client,
    };
    let running = daprs_sentry::start_in(args, environment)
        .await
        .context("sentry did not start")?;
    let url = format!("http://{}/healthz", running.healthz_addr);
    let deadline = Instant::now() + READY_TIMEOUT;
    while !reqwest::get(&url)
        .await
        .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
    {
        if Instant::now() >= deadline {
            bail!("sentry did not become ready within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(running)
}
