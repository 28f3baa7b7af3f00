//! The whole sidecar started in-process on free ports: the gRPC API through the SDK's own
//! generated client, readiness, metrics, hot reload and shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use pb::dapr_client::DaprClient;
use tonic::Code;
use tonic_types::StatusExt;

const STORE: &str = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n";

async fn start(resources: &Path) -> daprs_sidecar::Running {
    let args = daprs_sidecar::config::Args::try_parse_from([
        "daprd",
        "--app-id",
        "grpcapp",
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
    ])
    .unwrap();
    daprs_sidecar::start(args).await.unwrap()
}

fn item(key: &str, value: &[u8], etag: Option<&str>) -> common::StateItem {
    common::StateItem {
        key: key.into(),
        value: value.to_vec(),
        etag: etag.map(|e| common::Etag { value: e.into() }),
        ..Default::default()
    }
}

#[tokio::test]
async fn state_over_grpc_with_dapr_error_codes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("store.yaml"), STORE).unwrap();
    let running = start(dir.path()).await;
    let mut client = DaprClient::connect(format!("http://{}", running.grpc[0]))
        .await
        .unwrap();

    client
        .save_state(pb::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![item("k", b"raw bytes", None)],
        })
        .await
        .unwrap();
    let got = client
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data, b"raw bytes");
    assert!(!got.etag.is_empty());

    let err = client
        .save_state(pb::SaveStateRequest {
            store_name: "statestore".into(),
            states: vec![item("k", b"x", Some("stale"))],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "an ETag mismatch is ABORTED");

    let missing = client
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: "missing".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        missing.data.is_empty(),
        "a missing key is empty data, not an error"
    );

    let err = client
        .get_state(pb::GetStateRequest {
            store_name: "statestore".into(),
            key: "key||".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "input key/keyPrefix 'key||' can't contain '||'"
    );
    let details = err.get_error_details();
    let info = details.error_info().unwrap();
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("DAPR_STATE_ILLEGAL_KEY", "dapr.io")
    );

    let err = client
        .get_state(pb::GetStateRequest {
            store_name: "nope".into(),
            key: "k".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_error_details().error_info().unwrap().reason,
        "DAPR_STATE_NOT_FOUND"
    );

    client
        .execute_state_transaction(pb::ExecuteStateTransactionRequest {
            store_name: "statestore".into(),
            operations: vec![
                pb::TransactionalStateOperation {
                    operation_type: "upsert".into(),
                    request: Some(item("a", b"1", None)),
                },
                pb::TransactionalStateOperation {
                    operation_type: "delete".into(),
                    request: Some(item("k", b"", None)),
                },
            ],
            metadata: HashMap::new(),
        })
        .await
        .unwrap();
    let bulk = client
        .get_bulk_state(pb::GetBulkStateRequest {
            store_name: "statestore".into(),
            keys: vec!["a".into(), "k".into()],
            parallelism: 2,
            metadata: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bulk.items[0].data, b"1");
    assert!(bulk.items[1].data.is_empty());

    let err = client
        .publish_event(pb::PublishEventRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().contains("pub/sub"), "{}", err.message());

    let meta = client
        .get_metadata(pb::GetMetadataRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.id, "grpcapp");
    assert_eq!(meta.registered_components[0].r#type, "state.in-memory");

    let metrics = reqwest::get(format!("http://{}/metrics", running.metrics.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"grpc_server_method="/dapr.proto.runtime.v1.Dapr/SaveState",grpc_server_status="ABORTED"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains("dapr_component_state_count{"), "{metrics}");

    client
        .shutdown(pb::ShutdownRequest::default())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("shutdown finishes within the grace period")
        .unwrap();
}

#[tokio::test]
async fn hot_reload_swaps_without_a_gap_and_keeps_the_old_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("store.yaml"), STORE).unwrap();
    let running = start(dir.path()).await;
    let rt = running.runtime.clone();
    let http = format!("http://{}", running.http[0]);
    let client = reqwest::Client::new();
    client
        .post(format!("{http}/v1.0/state/statestore"))
        .body(r#"[{"key":"k","value":1}]"#)
        .send()
        .await
        .unwrap();

    // A broken edit: the old store stays, with its data.
    std::fs::write(
        dir.path().join("store.yaml"),
        STORE.replace("state.in-memory", "state.nope"),
    )
    .unwrap();
    let outcome = daprs_sidecar::reload::reconcile(&rt).await;
    assert_eq!(outcome.failed.len(), 1, "{outcome:?}");
    let r = client
        .get(format!("{http}/v1.0/state/statestore/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // A new component appears; a changed one is replaced; requests keep being answered
    // throughout.
    let hammer = {
        let client = client.clone();
        let http = http.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                let r = client
                    .get(format!("{http}/v1.0/state/statestore/k"))
                    .send()
                    .await
                    .unwrap();
                assert!(
                    r.status() == 200 || r.status() == 204,
                    "a request saw {} during reload",
                    r.status()
                );
            }
        })
    };
    std::fs::write(
        dir.path().join("store.yaml"),
        format!(
            "{STORE}  metadata:\n  - name: keyPrefix\n    value: name\n---\n{}",
            STORE.replace("statestore", "second")
        ),
    )
    .unwrap();
    let outcome = daprs_sidecar::reload::reconcile(&rt).await;
    assert_eq!(outcome.added, ["second"]);
    assert_eq!(outcome.replaced, ["statestore"]);
    hammer.await.unwrap();

    std::fs::write(
        dir.path().join("store.yaml"),
        STORE.replace("statestore", "second"),
    )
    .unwrap();
    let outcome = daprs_sidecar::reload::reconcile(&rt).await;
    assert_eq!(outcome.removed, ["statestore"]);
    let r = client
        .get(format!("{http}/v1.0/state/statestore/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a removed store is not found");
    rt.request_stop();
    running.wait().await.unwrap();
}

#[tokio::test]
async fn the_file_watcher_picks_up_new_components() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("store.yaml"), STORE).unwrap();
    let running = start(dir.path()).await;
    let http = format!("http://{}", running.http[0]);
    std::fs::write(
        dir.path().join("more.yaml"),
        STORE.replace("statestore", "added"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = reqwest::get(format!("{http}/v1.0/state/added/k"))
            .await
            .unwrap()
            .status();
        if status == 204 {
            break;
        }
        assert_eq!(status, 400, "before the reload the store is not found");
        assert!(
            std::time::Instant::now() < deadline,
            "the new component was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.runtime.request_stop();
    running.wait().await.unwrap();
}
