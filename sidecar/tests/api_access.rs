//! Configuration `spec.api.allowed` / `spec.api.denied` through both front ends: the whole
//! sidecar started in-process on free ports, HTTP over a real socket, gRPC through the SDK's
//! generated client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use clap::Parser;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use pb::dapr_client::DaprClient;
use serde_json::Value;
use tonic::Code;
use tonic_types::StatusExt;

const COMPONENTS: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: env\nspec:\n  type: secretstores.local.env\n  version: v1\n";

/// Allows state, secrets and invocation over HTTP and state and secrets over gRPC, then denies
/// secrets on both: the deny list wins.
const RESTRICTED: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: restricted
spec:
  api:
    allowed:
    - {name: state, version: v1, protocol: http}
    - {name: secrets, version: v1, protocol: http}
    - {name: invoke, version: v1, protocol: http}
    - {name: state, version: v1, protocol: grpc}
    - {name: secrets, version: v1, protocol: grpc}
    denied:
    - {name: secrets, version: v1, protocol: http}
    - {name: secrets, version: v1, protocol: grpc}
"#;

/// Only a deny list, turning HTTP invocation off.
const NO_INVOKE: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: noinvoke
spec:
  api:
    denied:
    - {name: invoke, version: v1, protocol: http}
"#;

async fn start(dir: &Path, config: &str) -> daprs_sidecar::Running {
    let resources = dir.join("resources");
    std::fs::create_dir_all(&resources).unwrap();
    std::fs::write(resources.join("components.yaml"), COMPONENTS).unwrap();
    let config_file = dir.join("config.yaml");
    std::fs::write(&config_file, config).unwrap();
    let args = daprs_sidecar::config::Args::try_parse_from([
        "daprd",
        "--app-id",
        "accessapp",
        "--dapr-http-port",
        "0",
        "--dapr-grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--dapr-listen-addresses",
        "127.0.0.1",
        "--metrics-listen-address",
        "127.0.0.1",
        "--resources-path",
        resources.to_str().unwrap(),
        "--config",
        config_file.to_str().unwrap(),
    ])
    .unwrap();
    daprs_sidecar::start(args).await.unwrap()
}

async fn http(
    running: &daprs_sidecar::Running,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    let url = format!("http://{}{path}", running.http[0]);
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

fn error_code(body: &str) -> String {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON error ({e}): {body}"));
    v["errorCode"].as_str().unwrap_or_default().to_owned()
}

fn assert_blocked(status: tonic::Status, method: &str) {
    assert_eq!(status.code(), Code::Unimplemented, "{method}: {status:?}");
    assert_eq!(status.message(), "Not Implemented", "{method}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "Not Implemented");
    assert_eq!(info.domain, "dapr.io");
    assert_eq!(info.metadata["http.code"], "501");
    assert_eq!(
        info.metadata["http.error_message"],
        "requested endpoint is not available"
    );
}

#[tokio::test]
async fn allow_and_deny_lists_over_http() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), RESTRICTED).await;

    // Allowed: state v1.
    let (status, body) = http(
        &running,
        Method::POST,
        "/v1.0/state/statestore",
        Some(r#"[{"key":"k","value":"v"}]"#),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = http(&running, Method::GET, "/v1.0/state/statestore/k", None).await;
    assert_eq!((status, body.as_str()), (200, r#""v""#));

    // Health is always on.
    let (status, _) = http(&running, Method::GET, "/v1.0/healthz", None).await;
    assert_eq!(status, 204);
    let (status, _) = http(&running, Method::GET, "/v1.0/healthz/outbound", None).await;
    assert_eq!(status, 204);

    // Off: denied (though allowed too), or not allowed. Their paths fall through to service
    // invocation, as unknown paths do.
    for (method, path) in [
        (Method::GET, "/v1.0/secrets/env/HOME"),
        (Method::GET, "/v1.0/secrets/env/bulk"),
        (Method::GET, "/v1.0/metadata"),
        (Method::PUT, "/v1.0/metadata/k"),
        (Method::POST, "/v1.0-alpha1/state/statestore/query"),
        (Method::POST, "/v1.0/shutdown"),
    ] {
        let (status, body) = http(&running, method.clone(), path, Some("{}")).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert_eq!(error_code(&body), "ERR_DIRECT_INVOKE", "{method} {path}");
    }
    // The shutdown API was off: the sidecar still serves.
    let (status, _) = http(&running, Method::GET, "/v1.0/state/statestore/k", None).await;
    assert_eq!(status, 200);

    running.runtime.request_stop();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn without_invocation_unknown_and_blocked_paths_get_a_plain_404() {
    use reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), NO_INVOKE).await;
    for path in ["/v1.0/invoke/other/method/hi", "/v1.0/nothing-here"] {
        let (status, body) = http(&running, Method::GET, path, None).await;
        assert_eq!(
            (status, body.as_str()),
            (404, "404 page not found\n"),
            "{path}"
        );
    }
    // A deny list alone leaves the rest on, over both protocols.
    let (status, body) = http(&running, Method::GET, "/v1.0/metadata", None).await;
    assert_eq!(status, 200, "{body}");
    let mut client = DaprClient::connect(format!("http://{}", running.grpc[0]))
        .await
        .unwrap();
    let metadata = client
        .get_metadata(pb::GetMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(metadata.id, "accessapp");

    running.runtime.request_stop();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn allow_and_deny_lists_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(dir.path(), RESTRICTED).await;
    let mut client = DaprClient::connect(format!("http://{}", running.grpc[0]))
        .await
        .unwrap();

    client
        .save_state(pb::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![common::StateItem {
                key: "g".into(),
                value: b"1".to_vec(),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let got = client
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, b"1");

    let denied = client
        .get_secret(pb::GetSecretRequest {
            store_name: "env".into(),
            key: "HOME".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_blocked(denied, "GetSecret (allowed and denied)");
    let not_allowed = client
        .get_metadata(pb::GetMetadataRequest {})
        .await
        .unwrap_err();
    assert_blocked(not_allowed, "GetMetadata (not allowed)");
    let alpha = client
        .query_state_alpha1(pb::QueryStateRequest {
            store_name: "statestore".into(),
            query: "{}".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_blocked(alpha, "QueryStateAlpha1 (state v1alpha1 not allowed)");
    let shutdown = client.shutdown(pb::ShutdownRequest {}).await.unwrap_err();
    assert_blocked(shutdown, "Shutdown (not allowed)");
    // Still serving after the refused shutdown.
    client
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: "g".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    running.runtime.request_stop();
    running.wait().await.unwrap();
}
