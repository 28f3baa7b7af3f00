//! The trace context on its way to a gRPC app, seen by a tonic app in the test (grpcio, used by
//! the other tests, consumes `grpc-trace-bin` and never shows it to the app): a W3C
//! `traceparent` from an HTTP caller arrives as `traceparent`, `tracestate` and the binary
//! `grpc-trace-bin`; a gRPC caller's `grpc-trace-bin` arrives as both, too; a proxied gRPC call
//! (`dapr-app-id`) with `traceparent` gets its `grpc-trace-bin`. Two real daprd processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// `grpc-trace-bin` of TRACEPARENT: version 0; field 0, the trace id; field 1, the span id;
/// field 2, the flags.
fn trace_bin() -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend([
        0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31,
        0x9c,
    ]);
    b.push(1);
    b.extend([0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
    b.extend([2, 1]);
    b
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the app saw last.
type Seen = Arc<Mutex<Option<MetadataMap>>>;

#[derive(Clone)]
struct App(Seen);

#[tonic::async_trait]
impl pb::app_callback_server::AppCallback for App {
    async fn on_invoke(
        &self,
        request: Request<common::InvokeRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        *self.0.lock().unwrap() = Some(request.metadata().clone());
        Ok(Response::new(common::InvokeResponse::default()))
    }
    async fn list_topic_subscriptions(
        &self,
        _: Request<()>,
    ) -> Result<Response<pb::ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    async fn on_topic_event(
        &self,
        _: Request<pb::TopicEventRequest>,
    ) -> Result<Response<pb::TopicEventResponse>, Status> {
        Err(Status::unimplemented("no topics"))
    }
    async fn list_input_bindings(
        &self,
        _: Request<()>,
    ) -> Result<Response<pb::ListInputBindingsResponse>, Status> {
        Ok(Response::new(Default::default()))
    }
    async fn on_binding_event(
        &self,
        _: Request<pb::BindingEventRequest>,
    ) -> Result<Response<pb::BindingEventResponse>, Status> {
        Err(Status::unimplemented("no bindings"))
    }
    async fn on_bulk_topic_event(
        &self,
        _: Request<pb::TopicEventBulkRequest>,
    ) -> Result<Response<pb::TopicEventBulkResponse>, Status> {
        Err(Status::unimplemented("no topics"))
    }
    async fn on_job_event(
        &self,
        _: Request<pb::JobEventRequest>,
    ) -> Result<Response<pb::JobEventResponse>, Status> {
        Err(Status::unimplemented("no jobs"))
    }
}

#[tonic::async_trait]
impl pb::app_callback_health_check_server::AppCallbackHealthCheck for App {
    async fn health_check(
        &self,
        request: Request<()>,
    ) -> Result<Response<pb::HealthCheckResponse>, Status> {
        *self.0.lock().unwrap() = Some(request.metadata().clone());
        Ok(Response::new(pb::HealthCheckResponse {}))
    }
}

struct Daprd {
    child: Child,
    http: u16,
    grpc: u16,
}

impl Drop for Daprd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daprd(app_id: &str, app_port: Option<u16>, registry: &std::path::Path) -> Daprd {
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
        .env_remove("DAPR_API_TOKEN")
        .env_remove("APP_API_TOKEN")
        .env_remove("NAMESPACE")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(port) = app_port {
        command
            .args(["--app-port", &port.to_string()])
            .args(["--app-protocol", "grpc"]);
    }
    Daprd {
        child: command.spawn().unwrap(),
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

fn take(seen: &Seen) -> MetadataMap {
    seen.lock().unwrap().take().expect("the app was called")
}

fn assert_both(md: &MetadataMap, how: &str) {
    assert_eq!(
        md.get("traceparent").map(|v| v.to_str().unwrap()),
        Some(TRACEPARENT),
        "{how}: {md:?}"
    );
    assert_eq!(
        md.get_bin("grpc-trace-bin")
            .map(|v| v.to_bytes().unwrap().to_vec()),
        Some(trace_bin()),
        "{how}: {md:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_grpc_apps_in_both_forms() {
    let seen: Seen = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    let app = App(seen.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::app_callback_server::AppCallbackServer::new(app.clone()))
            .add_service(
                pb::app_callback_health_check_server::AppCallbackHealthCheckServer::new(app),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let registry = tempfile::tempdir().unwrap();
    let callee = daprd("traced", Some(app_port), registry.path());
    let caller = daprd("tracer", None, registry.path());
    ready(&callee).await;
    ready(&caller).await;

    // HTTP caller with traceparent and tracestate.
    let r = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1.0/invoke/traced/method/m",
            caller.http
        ))
        .header("traceparent", TRACEPARENT)
        .header("tracestate", "vendor=value")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let md = take(&seen);
    assert_both(&md, "HTTP caller");
    assert_eq!(md.get("tracestate").unwrap(), "vendor=value");

    // gRPC caller (InvokeService) with only grpc-trace-bin.
    let mut client =
        pb::dapr_client::DaprClient::connect(format!("http://127.0.0.1:{}", caller.grpc))
            .await
            .unwrap();
    let mut request = Request::new(pb::InvokeServiceRequest {
        id: "traced".into(),
        message: Some(common::InvokeRequest {
            method: "m".into(),
            ..Default::default()
        }),
    });
    request
        .metadata_mut()
        .insert_bin("grpc-trace-bin", MetadataValue::from_bytes(&trace_bin()));
    client.invoke_service(request).await.unwrap();
    assert_both(&take(&seen), "gRPC caller");

    // A proxied call (any service, here the app's health service) with traceparent.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", caller.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health =
        pb::app_callback_health_check_client::AppCallbackHealthCheckClient::new(channel);
    let mut request = Request::new(());
    request
        .metadata_mut()
        .insert("dapr-app-id", MetadataValue::from_static("traced"));
    request
        .metadata_mut()
        .insert("traceparent", MetadataValue::from_static(TRACEPARENT));
    health.health_check(request).await.unwrap();
    let md = take(&seen);
    assert_both(&md, "proxied call");
    assert_eq!(md.get("dapr-caller-app-id").unwrap(), "tracer");
    assert!(md.get("dapr-app-id").is_none());
}
