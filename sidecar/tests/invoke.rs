//! Service invocation between two real daprd processes with certificates from a real sentry
//! (in-process, 2 s certificate lifetime so renewals happen during the test): both directions
//! over mutual TLS with headers checked in the receiving app, a sidecar holding another app's
//! certificate refused by the caller's SPIFFE check, an ACL that denies a path with 403, and
//! renewals without a failed request. alpha runs on one thread (the default), beta on two and
//! gamma on one per core (`--worker-threads`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/echo.rs"]
mod echo;
mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Sentry;

/// An echo app whose record of requests this test does not read.
async fn echo_app(name: &'static str) -> u16 {
    echo::echo_app(name, echo::Seen::default()).await
}

const DAPRD: &str = env!("CARGO_BIN_EXE_daprd");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daprd {
    child: Child,
    http: u16,
    metrics: u16,
}

impl Drop for Daprd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daprd(
    app_id: &str,
    app_port: u16,
    sentry: &Sentry,
    registry: &Path,
    config: Option<&Path>,
    worker_threads: Option<&str>,
) -> Daprd {
    let (http, grpc, metrics, internal) = (free_port(), free_port(), free_port(), free_port());
    let mut command = Command::new(DAPRD);
    command
        .args(["--app-id", app_id, "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--app-port", &app_port.to_string()])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
        .args(["--enable-mtls", "--sentry-address", &sentry.address()])
        .arg("--registry-dir")
        .arg(registry)
        .env("DAPR_TRUST_ANCHORS_FILE", sentry.anchors_file())
        .env("DAPR_SENTRY_TOKEN_FILE", "/nonexistent")
        .env_remove("DAPR_API_TOKEN")
        .env_remove("NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    if let Some(threads) = worker_threads {
        command.args(["--worker-threads", threads]);
    }
    Daprd {
        child: command.spawn().unwrap(),
        http,
        metrics,
    }
}

async fn ready(d: &Daprd) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/v1.0/healthz", d.http)).await
            && r.status() == 204
        {
            return;
        }
        assert!(Instant::now() < deadline, "daprd did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ACL: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: acl
spec:
  accessControl:
    defaultAction: deny
    trustDomain: public
    policies:
    - appId: alpha
      defaultAction: allow
      trustDomain: public
      namespace: default
      operations:
      - name: /admin
        httpVerb: ["*"]
        action: deny
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_invoke_each_other_over_mutual_tls() {
    let mut sentry = Sentry::start(&[
        "--workload-cert-ttl",
        "2s",
        "--allowed-clock-skew",
        "0s",
        "--ca-reload-interval",
        "200ms",
    ])
    .await;
    let registry = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.yaml");
    std::fs::write(&acl, ACL).unwrap();

    let (alpha_app, beta_app, gamma_app) = (
        echo_app("alpha").await,
        echo_app("beta").await,
        echo_app("gamma").await,
    );
    let alpha = daprd("alpha", alpha_app, &sentry, registry.path(), None, None);
    let beta = daprd(
        "beta",
        beta_app,
        &sentry,
        registry.path(),
        Some(&acl),
        Some("2"),
    );
    let gamma = daprd(
        "gamma",
        gamma_app,
        &sentry,
        registry.path(),
        None,
        Some("0"),
    );
    for d in [&alpha, &beta, &gamma] {
        ready(d).await;
    }
    let http = reqwest::Client::new();

    // alpha -> beta, path form, every verb, headers and query forwarded, caller stamped.
    for verb in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        let r = http
            .request(
                verb.parse().unwrap(),
                format!(
                    "http://127.0.0.1:{}/v1.0/invoke/beta/method/orders/42?x=1",
                    alpha.http
                ),
            )
            .header("x-custom", "hello")
            .header(
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            )
            .header("content-type", "text/plain")
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{verb}");
        assert_eq!(r.headers()["x-app"], "beta");
        let got: Value = r.json().await.unwrap();
        assert_eq!(got["method"], verb);
        assert_eq!(got["path"], "/orders/42");
        assert_eq!(got["query"], "x=1");
        let h = &got["headers"];
        assert_eq!(h["x-custom"], "hello");
        assert_eq!(h["dapr-caller-app-id"], "alpha");
        assert_eq!(h["dapr-caller-namespace"], "default");
        assert_eq!(h["dapr-callee-app-id"], "beta");
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(h["content-type"], "text/plain");
        assert!(h.get("destination-app-id").is_none());
        assert!(h["x-forwarded-for"].is_string());
        if verb != "GET" && verb != "DELETE" {
            assert_eq!(got["body"], "payload");
        }
    }

    // beta -> alpha with the dapr-app-id header, and with Basic auth.
    let r = http
        .post(format!("http://127.0.0.1:{}/hello", beta.http))
        .header("dapr-app-id", "alpha")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(
        (got["app"].as_str(), got["path"].as_str()),
        (Some("alpha"), Some("/hello"))
    );
    assert_eq!(got["headers"]["dapr-caller-app-id"], "beta");
    assert!(got["headers"].get("dapr-app-id").is_none());
    let r = http
        .get(format!("http://127.0.0.1:{}/basic", beta.http))
        .basic_auth("dapr-app-id", Some("alpha.default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["app"], "alpha");
    assert!(got["headers"].get("authorization").is_none());

    // The ACL on beta denies /admin to alpha (403), and gamma (no policy) everything.
    let r = http
        .get(format!(
            "http://127.0.0.1:{}/v1.0/invoke/beta/method/admin",
            alpha.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
    let r = http
        .get(format!(
            "http://127.0.0.1:{}/v1.0/invoke/beta/method/orders",
            gamma.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Renewals (2 s certificates) while calls keep going: none fails.
    let until = Instant::now() + Duration::from_secs(5);
    let mut calls = 0;
    while Instant::now() < until {
        let r = http
            .get(format!(
                "http://127.0.0.1:{}/v1.0/invoke/beta/method/tick",
                alpha.http
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "call {calls} during renewals failed");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for d in [&alpha, &beta] {
        let metrics = http
            .get(format!("http://127.0.0.1:{}/metrics", d.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let rotated = metrics
            .lines()
            .find(|l| l.starts_with("dapr_runtime_mtls_workload_cert_rotated_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(rotated >= 2.0, "expected renewals, metrics:\n{metrics}");
    }

    // gamma's certificate pretends to be beta: alpha's SPIFFE check refuses it.
    let beta_entry = registry.path().join("default/beta.json");
    let gamma_entry = std::fs::read(registry.path().join("default/gamma.json")).unwrap();
    std::fs::write(&beta_entry, gamma_entry).unwrap();
    let r = http
        .get(format!(
            "http://127.0.0.1:{}/v1.0/invoke/beta/method/orders",
            alpha.http
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("failed to invoke, id: beta"), "{message}");
    assert!(
        message.contains("spiffe://public/ns/default/gamma is not the expected /ns/default/beta"),
        "{message}"
    );

    drop((alpha, beta, gamma));
    sentry.stop().await;
}
