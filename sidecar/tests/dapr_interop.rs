//! Interoperability with a real Dapr daprd (v1.16, built from Dapr's Go module by
//! `scripts/dapr-daprd.sh`, which this test runs when the binary is missing): our sentry
//! (self-hosted, in-process) issues the certificates of both sidecars; both resolve each other
//! through mDNS (`spec.nameResolution.component: mdns`, Dapr's self-hosted default); each app
//! invokes the other through its own sidecar, over HTTP (`/v1.0/invoke`) and gRPC
//! (`InvokeService`), sidecar to sidecar over Dapr's internal gRPC API with mutual TLS and the
//! SPIFFE checks of both implementations. The receiving app checks the caller's headers
//! (`dapr-caller-app-id`, W3C trace context). An mDNS announcement that sends both callers
//! to a sidecar whose certificate names another app is refused by both SPIFFE checks. Each
//! side's `spec.accessControl` denies a path to the other's SPIFFE id (403). gRPC
//! proxying (`dapr-app-id` metadata) works both ways between real gRPC apps (grpcio).
//!
//! Multicast on the machine's interfaces is needed (it loops back locally; nothing leaves the
//! machine that a peer on the link would not also see from Dapr).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/dapr.rs"]
mod dapr_binary;
#[path = "support/echo.rs"]
mod echo;
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use dapr_binary::dapr_daprd;
use echo::{Seen, echo_app};
use serde_json::{Value, json};
use support::Sentry;

const DAPRD: &str = env!("CARGO_BIN_EXE_daprd");
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sidecar {
    child: Child,
    http: u16,
    grpc: u16,
    internal: u16,
    log: PathBuf,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sidecar {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn ready(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) =
                reqwest::get(format!("http://127.0.0.1:{}/v1.0/healthz", self.http)).await
                && r.status() == 204
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what} exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "{what} did not become ready; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// mDNS, and an ACL that denies `/admin` to `caller` (allows the rest).
fn acl_config(caller: &str) -> String {
    format!(
        r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: interop-acl
spec:
  nameResolution:
    component: mdns
  accessControl:
    defaultAction: allow
    trustDomain: public
    policies:
    - appId: {caller}
      defaultAction: allow
      trustDomain: public
      namespace: default
      operations:
      - name: /admin
        httpVerb: ["*"]
        action: deny
"#
    )
}

const MDNS_CONFIG: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: interop
spec:
  nameResolution:
    component: mdns
"#;

fn common_env(command: &mut Command, dir: &Path, name: &str) -> PathBuf {
    let log = dir.join(format!("{name}.log"));
    command
        .env("DAPR_HOST_IP", "127.0.0.1")
        .env_remove("DAPR_API_TOKEN")
        .env_remove("APP_API_TOKEN")
        .env_remove("NAMESPACE")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap());
    log
}

/// Our daprd, `--app-id app_id`, mDNS name resolution.
fn ours(app_id: &str, app: (u16, &str), sentry: &Sentry, dir: &Path, config: &Path) -> Sidecar {
    let (app_port, app_protocol) = app;
    let (http, grpc, metrics, internal) = (free_port(), free_port(), free_port(), free_port());
    let mut command = Command::new(DAPRD);
    command
        .args(["--app-id", app_id, "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--app-port", &app_port.to_string()])
        .args(["--app-protocol", app_protocol])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
        .args(["--enable-mtls", "--sentry-address", &sentry.address()])
        .arg("--config")
        .arg(config)
        .env("DAPR_TRUST_ANCHORS", sentry.anchors_pem())
        .env("DAPR_SENTRY_TOKEN_FILE", "/nonexistent")
        .env("RUST_LOG", "info,daprs_sidecar::invoke=debug");
    let log = common_env(&mut command, dir, app_id);
    Sidecar {
        child: command.spawn().unwrap(),
        http,
        grpc,
        internal,
        log,
    }
}

/// Dapr's daprd, `--app-id app_id`, mDNS name resolution, no components.
fn dapr(
    binary: &Path,
    app_id: &str,
    app: (u16, &str),
    sentry: &Sentry,
    dir: &Path,
    config: &Path,
) -> Sidecar {
    let (app_port, app_protocol) = app;
    let (http, grpc, metrics, internal) = (free_port(), free_port(), free_port(), free_port());
    let resources = dir.join(format!("{app_id}-resources"));
    std::fs::create_dir_all(&resources).unwrap();
    let mut command = Command::new(binary);
    command
        .args(["--app-id", app_id, "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--app-port", &app_port.to_string()])
        .args(["--app-protocol", app_protocol])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
        .args(["--enable-mtls", "--sentry-address", &sentry.address()])
        .args(["--log-level", "debug"])
        .args(["--placement-host-address", ""])
        .args(["--scheduler-host-address", ""])
        .arg("--resources-path")
        .arg(&resources)
        .arg("--config")
        .arg(config)
        .env("DAPR_TRUST_ANCHORS", sentry.anchors_pem());
    let log = common_env(&mut command, dir, app_id);
    Sidecar {
        child: command.spawn().unwrap(),
        http,
        grpc,
        internal,
        log,
    }
}

/// Invokes `target` through `via` over HTTP with a trace context; returns what the app saw.
async fn invoke_http(via: &Sidecar, target: &str, method: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1.0/invoke/{target}/method/{method}?q=1",
            via.http
        ))
        .header("traceparent", TRACEPARENT)
        .header("x-custom", "hello")
        .header("content-type", "text/plain")
        .body("ping")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Invokes `target` through `via`'s gRPC API (`InvokeService`); returns the app's JSON answer
/// and the response metadata.
async fn invoke_grpc(
    via: &Sidecar,
    target: &str,
    method: &str,
) -> Result<(Value, tonic::metadata::MetadataMap), tonic::Status> {
    let mut client = pb::dapr_client::DaprClient::connect(format!("http://127.0.0.1:{}", via.grpc))
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::InvokeServiceRequest {
        id: target.into(),
        message: Some(common::InvokeRequest {
            method: method.into(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: b"grpc-ping".to_vec(),
            }),
            content_type: "text/plain".into(),
            http_extension: Some(common::HttpExtension {
                verb: common::http_extension::Verb::Put as i32,
                querystring: "g=2".into(),
            }),
        }),
    });
    request
        .metadata_mut()
        .insert("traceparent", TRACEPARENT.parse().unwrap());
    let response = client.invoke_service(request).await?;
    let md = response.metadata().clone();
    let data = response
        .into_inner()
        .data
        .map(|d| d.value)
        .unwrap_or_default();
    Ok((serde_json::from_slice(&data).unwrap_or(Value::Null), md))
}

/// Retries `f` until it returns `Ok` (mDNS answers take a moment after start-up).
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn check_headers(headers: &Value, caller: &str, callee: &str, what: &str) {
    assert_eq!(headers["dapr-caller-app-id"], caller, "{what}: {headers}");
    assert_eq!(headers["dapr-callee-app-id"], callee, "{what}: {headers}");
    let traceparent = headers["traceparent"].as_str().unwrap_or_default();
    // Same trace id; the span id may be the sidecar's own.
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{what}: traceparent {traceparent:?} lost the trace id; headers {headers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_daprd_and_a_real_dapr_daprd_invoke_each_other_over_mutual_tls() {
    let binary = dapr_daprd();
    let mut sentry = Sentry::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, MDNS_CONFIG).unwrap();

    let (rust_seen, go_seen): (Seen, Seen) = Default::default();
    let rust_app = echo_app("rust-app", rust_seen.clone()).await;
    let go_app = echo_app("go-app", go_seen.clone()).await;
    // App ids unique to this run: mDNS is shared by everything on the machine.
    let suffix = std::process::id();
    let (rust_id, go_id) = (format!("rusty{suffix}"), format!("gopher{suffix}"));
    let spare_seen: Seen = Default::default();
    let spare_app = echo_app("spare-app", spare_seen.clone()).await;
    let spare_id = format!("spare{suffix}");
    // Each side's ACL denies /admin to the other.
    let (rust_config, go_config) = (dir.path().join("rust.yaml"), dir.path().join("go.yaml"));
    std::fs::write(&rust_config, acl_config(&go_id)).unwrap();
    std::fs::write(&go_config, acl_config(&rust_id)).unwrap();
    let mut rust = ours(
        &rust_id,
        (rust_app, "http"),
        &sentry,
        dir.path(),
        &rust_config,
    );
    let mut go = dapr(
        &binary,
        &go_id,
        (go_app, "http"),
        &sentry,
        dir.path(),
        &go_config,
    );
    let mut spare = ours(&spare_id, (spare_app, "http"), &sentry, dir.path(), &config);
    rust.ready("our daprd").await;
    go.ready("Dapr's daprd").await;
    spare.ready("our second daprd").await;

    // ours -> Dapr, HTTP.
    let got = eventually("our daprd invoking Dapr's over HTTP", || async {
        match invoke_http(&rust, &go_id, "orders/7").await {
            (200, v) => Ok(v),
            (s, v) => Err(format!("{s} {v}\nour log:\n{}", rust.log())),
        }
    })
    .await;
    assert_eq!(got["app"], "go-app");
    assert_eq!(got["method"], "POST");
    assert_eq!(got["path"], "/orders/7");
    assert_eq!(got["query"], "q=1");
    assert_eq!(got["body"], "ping");
    assert_eq!(got["headers"]["x-custom"], "hello");
    check_headers(&got["headers"], &rust_id, &go_id, "ours -> Dapr (HTTP)");

    // Dapr -> ours, HTTP.
    let got = eventually("Dapr's daprd invoking ours over HTTP", || async {
        match invoke_http(&go, &rust_id, "orders/8").await {
            (200, v) => Ok(v),
            (s, v) => Err(format!("{s} {v}\nDapr's log:\n{}", go.log())),
        }
    })
    .await;
    assert_eq!(got["app"], "rust-app");
    assert_eq!(got["path"], "/orders/8");
    assert_eq!(got["query"], "q=1");
    assert_eq!(got["body"], "ping");
    assert_eq!(got["headers"]["x-custom"], "hello");
    check_headers(&got["headers"], &go_id, &rust_id, "Dapr -> ours (HTTP)");

    // Both directions through the gRPC API (InvokeService to an HTTP app).
    for (via, target, app, caller, what) in [
        (&rust, &go_id, "go-app", &rust_id, "ours -> Dapr (gRPC)"),
        (&go, &rust_id, "rust-app", &go_id, "Dapr -> ours (gRPC)"),
    ] {
        let (got, md) = invoke_grpc(via, target, "grpc/m")
            .await
            .unwrap_or_else(|s| panic!("{what}: {s:?}"));
        // The HTTP app's status and headers, as Dapr hands them to a gRPC caller.
        let header = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(
            header("dapr-http-status").as_deref(),
            Some("200"),
            "{what}: {md:?}"
        );
        assert_eq!(header("x-app").as_deref(), Some(app), "{what}: {md:?}");
        assert_eq!(
            header("dapr-content-type").as_deref(),
            Some("application/json"),
            "{what}: {md:?}"
        );
        assert!(header("content-length").is_none(), "{what}: {md:?}");
        assert_eq!(got["app"], app, "{what}");
        assert_eq!(got["method"], "PUT", "{what}");
        assert_eq!(got["path"], "/grpc/m", "{what}");
        assert_eq!(got["query"], "g=2", "{what}");
        assert_eq!(got["body"], "grpc-ping", "{what}");
        check_headers(&got["headers"], caller, target, what);
    }

    // Larger payloads are streamed in chunks both ways (CallLocalStream).
    for (via, target) in [(&rust, &go_id), (&go, &rust_id)] {
        let body = "x".repeat(100_000);
        let r = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{}/v1.0/invoke/{target}/method/big",
                via.http
            ))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "big body to {target}");
        let got: Value = r.json().await.unwrap();
        assert_eq!(got["body"].as_str().unwrap().len(), body.len());
    }

    // Each ACL, checking the other implementation's SPIFFE id, denies /admin: 403.
    for (via, target, what) in [(&rust, &go_id, "Dapr's ACL"), (&go, &rust_id, "our ACL")] {
        let (status, body) = invoke_http(via, target, "admin").await;
        assert_eq!(status, 403, "{what}: {body}");
        assert_eq!(body["errorCode"], "ERR_DIRECT_INVOKE", "{what}: {body}");
        let (status, body) = invoke_http(via, target, "orders/9").await;
        assert_eq!(status, 200, "{what} allows the rest: {body}");
    }
    assert!(
        !rust_seen
            .lock()
            .unwrap()
            .iter()
            .chain(go_seen.lock().unwrap().iter())
            .any(|(p, _)| p == "/admin"),
        "a denied call reached an app"
    );

    // An impostor: mDNS (announced from this process) says app "ghost" is at a third
    // sidecar (ours, app id "spare", not called before: Dapr pools connections by address
    // and would reuse one checked earlier). Both callers' SPIFFE checks refuse it.
    let ghost = format!("ghost{suffix}");
    let impostor = daprs_sidecar::invoke::mdns::Mdns::start().unwrap();
    impostor
        .announce(
            &ghost,
            format!("127.0.0.1:{}", spare.internal).parse().unwrap(),
        )
        .unwrap();
    let (status, body) = invoke_http(&rust, &ghost, "x").await;
    assert_eq!(status, 500, "ours -> impostor: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "spiffe://public/ns/default/{spare_id} is not the expected /ns/default/{ghost}"
        )),
        "ours -> impostor: {body}"
    );
    let (status, body) = invoke_http(&go, &ghost, "x").await;
    assert_eq!(status, 500, "Dapr -> impostor: {body}");
    assert_eq!(
        body["errorCode"], "ERR_DIRECT_INVOKE",
        "Dapr -> impostor: {body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("spiffe://public/ns/default/{spare_id}")),
        "Dapr -> impostor: Dapr's SPIFFE check should name our id: {body}"
    );
    drop(impostor);
    assert!(
        spare_seen.lock().unwrap().is_empty(),
        "the impostor's callers never reached the app behind it"
    );

    assert!(
        !rust_seen.lock().unwrap().is_empty() && !go_seen.lock().unwrap().is_empty(),
        "both apps were called"
    );
    drop((rust, go, spare));
    sentry.stop().await;
}

/// Messages as raw bytes (the echo app's service has no .proto).
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf;
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n)))
    }
}

/// A grpcio app (`tests/sdk/grpc_echo_app.py`, from the SDK virtualenv of
/// `scripts/sidecar-deps.sh`) serving `daprs.test.Echo`; returns its port.
async fn grpc_echo_app() -> (u16, Child) {
    let python = std::env::var_os("DAPRS_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/daprs/sdk-venv/bin/python")
        });
    assert!(
        python.exists(),
        "{} is missing: run scripts/sidecar-deps.sh (its Python virtualenv has grpcio)",
        python.display()
    );
    let port = free_port();
    let child = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/grpc_echo_app.py"))
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the gRPC app did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (port, child)
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// gRPC proxying (`dapr-app-id` metadata on any service) between our daprd and Dapr's, both
/// directions, each in front of a real gRPC app (grpcio), over mutual TLS with mDNS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxying_between_our_daprd_and_a_real_dapr_daprd() {
    let binary = dapr_daprd();
    let mut sentry = Sentry::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, MDNS_CONFIG).unwrap();
    let (rust_app, rust_app_proc) = grpc_echo_app().await;
    let (go_app, go_app_proc) = grpc_echo_app().await;
    let _apps = (Kill(rust_app_proc), Kill(go_app_proc));
    let suffix = std::process::id();
    let (rust_id, go_id) = (format!("rustproxy{suffix}"), format!("goproxy{suffix}"));
    let mut rust = ours(&rust_id, (rust_app, "grpc"), &sentry, dir.path(), &config);
    let mut go = dapr(
        &binary,
        &go_id,
        (go_app, "grpc"),
        &sentry,
        dir.path(),
        &config,
    );
    rust.ready("our daprd").await;
    go.ready("Dapr's daprd").await;

    for (via, target, caller, what) in [
        (&rust, &go_id, &rust_id, "ours -> Dapr"),
        (&go, &rust_id, &go_id, "Dapr -> ours"),
    ] {
        let channel =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", via.grpc))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        let (rust, go) = (&rust, &go);
        let response = eventually(what, || {
            let mut grpc = grpc.clone();
            async move {
                let mut request = tonic::Request::new(bytes::Bytes::from_static(b"hi there"));
                let md = request.metadata_mut();
                md.insert("dapr-app-id", target.parse().unwrap());
                md.insert("x-custom", "hello".parse().unwrap());
                md.insert("traceparent", TRACEPARENT.parse().unwrap());
                grpc.ready().await.map_err(|e| e.to_string())?;
                grpc.unary(
                    request,
                    http::uri::PathAndQuery::from_static("/daprs.test.Echo/Say"),
                    Raw,
                )
                .await
                .map_err(|s| format!("{s:?}\nour log:\n{}\nDapr's log:\n{}", rust.log(), go.log()))
            }
        })
        .await;
        assert_eq!(
            response
                .metadata()
                .get("x-app-header")
                .map(|v| v.to_str().unwrap()),
            Some("h"),
            "{what}: {:?}",
            response.metadata()
        );
        let got: Value = serde_json::from_slice(response.get_ref()).unwrap();
        assert_eq!(got["body"], "hi there", "{what}");
        let md = &got["metadata"];
        assert_eq!(md["x-custom"], json!(["hello"]), "{what}: {md}");
        assert_eq!(md["dapr-caller-app-id"], json!([caller]), "{what}: {md}");
        assert_eq!(md["dapr-callee-app-id"], json!([target]), "{what}: {md}");
        assert!(md.get("dapr-app-id").is_none(), "{what}: {md}");

        // A status from the app comes back as the app sent it.
        let mut request = tonic::Request::new(bytes::Bytes::new());
        request
            .metadata_mut()
            .insert("dapr-app-id", target.parse().unwrap());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                request,
                http::uri::PathAndQuery::from_static("/daprs.test.Echo/Fail"),
                Raw,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{what}: {status:?}");
        assert_eq!(status.message(), "order 7 not found", "{what}");
    }
    drop((rust, go));
    sentry.stop().await;
}
