//! Starting an injected pod's `daprd` container as a local process on loopback, with ports
//! of its own, and waiting until it is ready: what several end-to-end tests do the same way.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::pod::{PodProcess, RunPod};

/// Where daprd reads its sentry token by default; naming it lets [`RunPod`] rewrite it to the
/// pod's projected token volume on this machine.
const SENTRY_TOKEN_PATH: &str = "/var/run/secrets/dapr.io/sentrytoken/token";

/// How long a daprd gets to answer `/v1.0/healthz` with success.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running daprd and the loopback port of its HTTP API.
#[derive(Debug)]
pub struct Daprd {
    pub process: PodProcess,
    pub http_port: u16,
}

impl RunPod {
    /// Runs the pod's `daprd` container with its sentry token file mapped and every listener on
    /// loopback on free ports, except the internal API, which listens on `internal_ip` on the
    /// injector's port (so two sidecars can share that port on different loopback addresses).
    /// daprd takes the last of a repeated flag, so these override the injector's. Returns once
    /// `/v1.0/healthz` succeeds, or fails with the process's log.
    pub async fn start_daprd(self, internal_ip: Ipv4Addr) -> Result<Daprd> {
        let [http, grpc, public, metrics] = free_ports::<4>()?;
        let process = self
            .container("daprd")
            .env("DAPR_SENTRY_TOKEN_FILE", SENTRY_TOKEN_PATH)
            .arg("--dapr-listen-addresses")
            .arg("127.0.0.1")
            .arg("--dapr-http-port")
            .arg(http.to_string())
            .arg("--dapr-grpc-port")
            .arg(grpc.to_string())
            .arg("--dapr-internal-grpc-listen-address")
            .arg(internal_ip.to_string())
            .arg("--dapr-public-port")
            .arg(public.to_string())
            .arg("--dapr-public-listen-address")
            .arg("127.0.0.1")
            .arg("--metrics-port")
            .arg(metrics.to_string())
            .arg("--metrics-listen-address")
            .arg("127.0.0.1")
            .start()
            .await?;
        let url = format!("http://127.0.0.1:{http}/v1.0/healthz");
        let deadline = Instant::now() + READY_TIMEOUT;
        while !healthy(&url).await {
            if Instant::now() >= deadline {
                bail!(
                    "daprd did not become ready within {READY_TIMEOUT:?}:\n{}",
                    process.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Daprd {
            process,
            http_port: http,
        })
    }
}

impl Daprd {
    /// The port of the internal (sidecar-to-sidecar) API on daprd's command line: the
    /// injector's, since [`RunPod::start_daprd`] only changes its address.
    pub fn internal_port(&self) -> Option<u16> {
        self.process
            .args()
            .windows(2)
            .rev()
            .find(|w| w[0] == "--dapr-internal-grpc-port")
            .and_then(|w| w[1].parse().ok())
    }
}

/// Starts an HTTP app on a free loopback port (returned) that answers every request with its
/// method, path, headers and body as JSON, so a test can check what daprd delivered.
pub async fn echo_app() -> Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("failed to bind the echo app")?;
    let port = listener.local_addr()?.port();
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_else(|error| format!("<unreadable body: {error}>").into());
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    serde_json::json!(v.to_str().unwrap_or_default()),
                )
            })
            .collect();
        axum::Json(serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.path(),
            "headers": headers,
            "body": String::from_utf8_lossy(&body),
        }))
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

/// Whether the daprd whose HTTP API is at `base` (`http://127.0.0.1:<port>`) lists a loaded
/// component `name` of type `type_` in `/v1.0/metadata` (false when it cannot be asked).
pub async fn has_component(base: &str, name: &str, type_: &str) -> bool {
    let Ok(response) = reqwest::get(format!("{base}/v1.0/metadata")).await else {
        return false;
    };
    let Ok(meta) = response.json::<serde_json::Value>().await else {
        return false;
    };
    meta["components"].as_array().is_some_and(|components| {
        components
            .iter()
            .any(|c| c["name"] == name && c["type"] == type_)
    })
}

async fn healthy(url: &str) -> bool {
    reqwest::get(url)
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// `N` distinct free loopback ports, held together while chosen so none is handed out twice.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let held = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("failed to find free ports")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&held) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
