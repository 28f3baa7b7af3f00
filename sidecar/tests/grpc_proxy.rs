//! gRPC proxying through two real daprd processes: a tonic client calls `daprs.test.Echo`,
//! a service no sidecar knows, on its own daprd's gRPC port with `dapr-app-id: echo`; the call
//! goes through the echo app's sidecar (`--app-protocol grpc`) to a real gRPC app (grpcio,
//! sdk/grpc_echo_app.py). Unary, server streaming and bidirectional streaming (message by
//! message, so a proxy that buffered a stream would hang), status codes, messages, response
//! headers and trailers passed through, the metadata the app sees, an ACL denial, a call to
//! our own app, and the errors for a missing or unknown target. Over mutual TLS with a real
//! sentry (in-process) and over plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes};
use serde_json::Value;
use support::Sentry;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Messages as raw bytes (the test service has no .proto).
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Daprd {
    _proc: Proc,
    http: u16,
    grpc: u16,
}

fn python() -> PathBuf {
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
    python
}

fn daprd(
    app_id: &str,
    app_port: Option<u16>,
    registry: &std::path::Path,
    sentry: Option<&Sentry>,
    config: Option<&std::path::Path>,
) -> Daprd {
    let (http, grpc, metrics, internal) = (free_port(), free_port(), free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_daprd"));
    command
        .args(["--app-id", app_id, "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .args(["--dapr-internal-grpc-port", &internal.to_string()])
        .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
        .arg("--registry-dir")
        .arg(registry)
        .env("APP_API_TOKEN", "app-secret")
        .env_remove("DAPR_API_TOKEN")
        .env_remove("NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(port) = app_port {
        command
            .args(["--app-port", &port.to_string()])
            .args(["--app-protocol", "grpc"]);
    }
    if let Some(sentry) = sentry {
        command
            .args(["--enable-mtls", "--sentry-address", &sentry.address()])
            .env("DAPR_TRUST_ANCHORS_FILE", sentry.anchors_file())
            .env("DAPR_SENTRY_TOKEN_FILE", "/nonexistent");
    }
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    Daprd {
        _proc: Proc(command.spawn().unwrap()),
        http,
        grpc,
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
    - appId: client
      defaultAction: allow
      trustDomain: public
      namespace: default
      operations:
      - name: /daprs.test.Echo/Secret
        action: deny
"#;

struct Client {
    grpc: tonic::client::Grpc<Channel>,
}

impl Client {
    async fn connect(port: u16) -> Client {
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        Client {
            grpc: tonic::client::Grpc::new(channel),
        }
    }

    fn request<T>(message: T, target: Option<&str>) -> Request<T> {
        let mut request = Request::new(message);
        let md = request.metadata_mut();
        if let Some(target) = target {
            md.insert("dapr-app-id", target.parse().unwrap());
        }
        md.insert("x-custom", MetadataValue::from_static("hello"));
        // A client cannot pose as another caller: the sidecar stamps its own app id.
        md.insert("dapr-caller-app-id", MetadataValue::from_static("forged"));
        md.insert("traceparent", MetadataValue::from_static(TRACEPARENT));
        request
    }

    async fn unary(
        &mut self,
        method: &'static str,
        body: &'static [u8],
        target: Option<&str>,
    ) -> Result<tonic::Response<Bytes>, Status> {
        self.grpc.ready().await.unwrap();
        self.grpc
            .unary(
                Self::request(Bytes::from_static(body), target),
                http::uri::PathAndQuery::from_static(method),
                Raw,
            )
            .await
    }
}

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
/// Every check of the proxy, from a client on `client_port` (the daprd of app `client`).
async fn check_proxy(client_port: u16, with_acl: bool) {
    let mut client = Client::connect(client_port).await;

    // Unary: the body, the metadata the app saw, the app's header and trailer.
    let response = client
        .unary("/daprs.test.Echo/Say", b"hi there", Some("echo"))
        .await
        .unwrap();
    assert_eq!(response.metadata().get("x-app-header").unwrap(), "h");
    let got: Value = serde_json::from_slice(response.get_ref()).unwrap();
    assert_eq!(got["body"], "hi there");
    let md = &got["metadata"];
    assert_eq!(md["x-custom"], serde_json::json!(["hello"]), "{md}");
    assert_eq!(
        md["dapr-caller-app-id"],
        serde_json::json!(["client"]),
        "{md}"
    );
    assert_eq!(
        md["dapr-callee-app-id"],
        serde_json::json!(["echo"]),
        "{md}"
    );
    assert_eq!(
        md["dapr-api-token"],
        serde_json::json!(["app-secret"]),
        "{md}"
    );
    // (grpc-trace-bin is checked in tests/trace_context.rs: grpcio keeps it from the app.)
    assert_eq!(md["traceparent"], serde_json::json!([TRACEPARENT]), "{md}");
    assert!(md.get("dapr-app-id").is_none(), "{md}");
    // Trailers come through too (tonic's unary response folds them into the metadata).
    assert_eq!(response.metadata().get("x-app-trailer").unwrap(), "t");

    // A status from the app: code, message and trailer as the app sent them.
    let status = client
        .unary("/daprs.test.Echo/Fail", b"", Some("echo"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "order 7 not found");
    assert_eq!(status.metadata().get("x-why").unwrap(), "gone");

    // Server streaming.
    client.grpc.ready().await.unwrap();
    let mut stream = client
        .grpc
        .server_streaming(
            Client::request(Bytes::from_static(b"5"), Some("echo")),
            http::uri::PathAndQuery::from_static("/daprs.test.Echo/Count"),
            Raw,
        )
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = stream.message().await.unwrap() {
        got.push(String::from_utf8(m.to_vec()).unwrap());
    }
    assert_eq!(got, ["0", "1", "2", "3", "4"]);

    // Bidirectional, one message at a time: the next one is only sent after the answer to
    // the previous one arrived, so a proxy that waited for the end of a stream would hang.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    client.grpc.ready().await.unwrap();
    tx.send(Bytes::from_static(b"one")).await.unwrap();
    let answers = client.grpc.streaming(
        Client::request(
            tokio_stream::wrappers::ReceiverStream::new(rx),
            Some("echo"),
        ),
        http::uri::PathAndQuery::from_static("/daprs.test.Echo/Chat"),
        Raw,
    );
    let mut answers = tokio::time::timeout(Duration::from_secs(10), answers)
        .await
        .expect("the stream opened while the request stream is still open")
        .unwrap()
        .into_inner();
    for word in ["one", "two", "three"] {
        if word != "one" {
            tx.send(Bytes::copy_from_slice(word.as_bytes()))
                .await
                .unwrap();
        }
        let answer = tokio::time::timeout(Duration::from_secs(10), answers.message())
            .await
            .expect("an answer per message, before the request stream ends")
            .unwrap()
            .unwrap();
        assert_eq!(answer, format!("echo:{word}").as_bytes());
    }
    drop(tx);
    assert!(answers.message().await.unwrap().is_none());

    // The ACL of the echo sidecar denies Secret to `client` (only checkable with mTLS, where
    // the caller has a SPIFFE id; without, the global default "deny" applies to everything).
    if with_acl {
        let status = client
            .unary("/daprs.test.Echo/Secret", b"", Some("echo"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(
            status.message().contains("/daprs.test.Echo/Secret"),
            "{status:?}"
        );
    } else {
        let r = client
            .unary("/daprs.test.Echo/Secret", b"", Some("echo"))
            .await
            .unwrap();
        assert_eq!(r.get_ref().as_ref(), b"secret");
    }

    // No target: the unknown service is refused with a hint.
    let status = client
        .unary("/daprs.test.Echo/Say", b"x", None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(status.message().contains("dapr-app-id"), "{status:?}");

    // An unknown target app.
    let status = client
        .unary("/daprs.test.Echo/Say", b"x", Some("nobody"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("failed to invoke, id: nobody"),
        "{status:?}"
    );

    // The Dapr API itself is still served on the same port.
    client.grpc.ready().await.unwrap();
    let status = client
        .grpc
        .unary(
            Client::request(Bytes::new(), None),
            http::uri::PathAndQuery::from_static("/dapr.proto.runtime.v1.Dapr/GetMetadata"),
            Raw,
        )
        .await;
    assert!(status.is_ok(), "{status:?}");
}

async fn run(sentry: Option<&Sentry>) {
    let registry = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.yaml");
    std::fs::write(&acl, ACL).unwrap();
    let app_port = free_port();
    let _app = Proc(
        Command::new(python())
            .arg(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/grpc_echo_app.py"),
            )
            .arg(app_port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let with_acl = sentry.is_some();
    let echo = daprd(
        "echo",
        Some(app_port),
        registry.path(),
        sentry,
        with_acl.then_some(acl.as_path()),
    );
    let client = daprd("client", None, registry.path(), sentry, None);
    ready(&echo).await;
    ready(&client).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", app_port)).is_err() {
        assert!(Instant::now() < deadline, "the gRPC app did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    check_proxy(client.grpc, with_acl).await;

    // A client of the echo app's own sidecar reaches its app directly; with the ACL, such a
    // call has no SPIFFE id, so the global default (deny) applies, as in Dapr.
    let mut local = Client::connect(echo.grpc).await;
    let response = local
        .unary("/daprs.test.Echo/Say", b"local", Some("echo"))
        .await;
    if with_acl {
        let status = response.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("no SPIFFE id"), "{status:?}");
    } else {
        let got: Value = serde_json::from_slice(response.unwrap().get_ref()).unwrap();
        assert_eq!(got["body"], "local");
        assert_eq!(
            got["metadata"]["dapr-api-token"],
            serde_json::json!(["app-secret"])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxying_over_mutual_tls() {
    let mut sentry = Sentry::start(&[]).await;
    run(Some(&sentry)).await;
    sentry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_proxying_over_plaintext() {
    run(None).await;
}
