//! mDNS name resolution between two of our daprd processes (Configuration
//! `spec.nameResolution.component: mdns`, no registry directory): they find each other through
//! real multicast on this machine, a restarted sidecar on a new port is found again, and an app
//! id nobody announces fails with an error naming mDNS. The same against a real Dapr daprd is in `dapr_interop.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::Request;
use serde_json::{Value, json};

const DAPRD: &str = env!("CARGO_BIN_EXE_daprd");

const CONFIG: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: mdns
spec:
  nameResolution:
    component: mdns
"#;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An HTTP app answering with its name and the caller's id.
async fn app(name: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new().fallback(move |request: Request| async move {
        let caller = request
            .headers()
            .get("dapr-caller-app-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        axum::Json(json!({"app": name, "caller": caller, "path": request.uri().path()}))
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

struct Daprd {
    child: Child,
    http: u16,
}

impl Drop for Daprd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn daprd(app_id: &str, app_port: u16, config: &Path, registry: &Path) -> Daprd {
    let (http, grpc, metrics, internal) = (free_port(), free_port(), free_port(), free_port());
    let child = Command::new(DAPRD)
        .args(["--app-id", app_id, "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--app-port", &app_port.to_string()])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
        .arg("--config")
        .arg(config)
        // Were the registry used, it would be this empty directory: nothing to find there.
        .arg("--registry-dir")
        .arg(registry)
        .env_remove("DAPR_API_TOKEN")
        .env_remove("NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let d = Daprd { child, http };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/v1.0/healthz", d.http)).await
            && r.status() == 204
        {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "daprd {app_id} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn invoke(via: &Daprd, target: &str) -> (u16, Value) {
    let r = reqwest::get(format!(
        "http://127.0.0.1:{}/v1.0/invoke/{target}/method/hello",
        via.http
    ))
    .await
    .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_find_each_other_through_mdns() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let registry = dir.path().join("registry");
    // App ids unique to this run: mDNS is shared by everything on the machine.
    let suffix = std::process::id();
    let (a_id, b_id) = (format!("mdnsa{suffix}"), format!("mdnsb{suffix}"));
    let (a_app, b_app) = (app("a").await, app("b").await);
    let a = daprd(&a_id, a_app, &config, &registry).await;
    let b = daprd(&b_id, b_app, &config, &registry).await;

    let (status, got) = invoke(&a, &b_id).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (got["app"].as_str(), got["caller"].as_str()),
        (Some("b"), Some(a_id.as_str()))
    );
    let (status, got) = invoke(&b, &a_id).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(
        (got["app"].as_str(), got["caller"].as_str()),
        (Some("a"), Some(b_id.as_str()))
    );
    assert!(
        !registry.exists(),
        "the registry resolver was used although mDNS was configured"
    );

    // b restarts on other ports (killed: no goodbye): a finds the new address, from b's
    // announcement or, when a call to the remembered one fails, by asking again.
    drop(b);
    let b = daprd(&b_id, b_app, &config, &registry).await;
    let (status, got) = invoke(&a, &b_id).await;
    assert_eq!(status, 200, "after b restarted: {got}");
    assert_eq!(got["app"], "b");
    drop(b);

    // Nobody announces this id.
    let (status, got) = invoke(&a, &format!("nobody{suffix}")).await;
    assert_eq!(status, 500, "{got}");
    let message = got["message"].as_str().unwrap();
    assert!(
        message.contains("was not found by mDNS"),
        "the error should name mDNS: {message}"
    );
}
