//! The operator API over real mutual TLS with certificates issued by an in-process sentry:
//! namespace authorisation, scope filtering, secret inlining, ordered streams with scope
//! changes, no loss between List and stream, status reports, and shutdown.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use daprs_api::SpiffeId;
use daprs_api::crd::AppLoadStatus;
use daprs_api::proto::operator::operator_client::OperatorClient;
use daprs_api::proto::operator::resource_status_client::ResourceStatusClient;
use daprs_api::proto::operator::*;
use daprs_api::sentry_client::{self, IssuedSvid, SvidRequest};
use daprs_api::tls::{self, PeerMatcher, SpiffeServerVerifier, SvidResolver, TrustAnchors};
use daprs_operator::api::{Hubs, OperatorApi};
use daprs_operator::metrics::Metrics;
use daprs_operator::pods::StaticPods;
use daprs_operator::secrets::{CoalescingSecrets, SecretData, SecretError, SecretSource};
use daprs_operator::status::{StatusApi, StatusWriter};
use serde_json::{Value, json};
use tokio::sync::watch;
use tonic::Streaming;

struct Sentry {
    running: daprs_sentry::Running,
    dir: tempfile::TempDir,
}

async fn start_sentry() -> Sentry {
    tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let argv = [
        "sentry",
        "--issuer-credentials",
        creds.to_str().unwrap(),
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--listen-address",
        "127.0.0.1",
        "--healthz-listen-address",
        "127.0.0.1",
        "--enable-metrics",
        "false",
    ];
    let running = daprs_sentry::start(daprs_sentry::config::Args::parse_from(argv))
        .await
        .unwrap();
    let url = format!("http://{}/healthz", running.healthz_addr);
    for _ in 0..200 {
        if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
            return Sentry { running, dir };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sentry did not become ready");
}

impl Sentry {
    fn anchors_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("creds/ca.crt")).unwrap()
    }

    fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem(self.anchors_pem().as_bytes()).unwrap()
    }

    async fn svid(&self, app_id: &str, namespace: &str) -> IssuedSvid {
        let sentry_id: SpiffeId = "spiffe://localhost/ns/default/dapr-sentry".parse().unwrap();
        let channel = sentry_client::sentry_channel(
            &self.running.grpc_addr.to_string(),
            self.anchors(),
            sentry_id,
        )
        .unwrap();
        let trust_domain = if app_id == "dapr-operator" {
            "localhost"
        } else {
            ""
        };
        sentry_client::request_svid(
            channel,
            &SvidRequest {
                app_id: app_id.into(),
                namespace: namespace.into(),
                trust_domain: trust_domain.into(),
                ..SvidRequest::default()
            },
        )
        .await
        .unwrap()
    }
}

#[derive(Default)]
struct Secrets(HashMap<(String, String), SecretData>);

#[async_trait::async_trait]
impl SecretSource for Secrets {
    async fn get(&self, namespace: &str, name: &str) -> Result<Option<SecretData>, SecretError> {
        Ok(self
            .0
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned())
    }
}

/// (namespace, component, app id, entry) per write.
type Write = (String, String, String, Option<AppLoadStatus>);

#[derive(Default)]
struct Recorded(Mutex<Vec<Write>>);

#[async_trait::async_trait]
impl StatusWriter for Recorded {
    async fn record(
        &self,
        namespace: &str,
        name: &str,
        app_id: &str,
        entry: Option<AppLoadStatus>,
    ) -> Result<(), String> {
        if name == "missing" {
            return Err(format!("Component {namespace}/{name} does not exist"));
        }
        self.0
            .lock()
            .unwrap()
            .push((namespace.into(), name.into(), app_id.into(), entry));
        Ok(())
    }
}

struct Operator {
    sentry: Sentry,
    addr: std::net::SocketAddr,
    hubs: Hubs,
    operator_id: SpiffeId,
    recorded: Arc<Recorded>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), daprs_operator::Error>>,
}

fn component(ns: &str, name: &str, rv: &str, scopes: &[&str]) -> Value {
    json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv},
        "scopes": scopes,
        "spec": {"type": "state.redis", "version": "v1", "ignoreErrors": false, "initTimeout": "", "metadata": [
            {"name": "redisHost", "value": "redis:6379"},
            {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
            {"name": "revision", "value": rv}
        ]}
    })
}

async fn start() -> Operator {
    let sentry = start_sentry().await;
    let issued = sentry.svid("dapr-operator", "default").await;
    let operator_id = issued.svid.id.clone();
    let hubs = Hubs::default();
    for hub in hubs.all() {
        hub.relist_start();
        hub.relist_done();
    }
    let mut secrets = Secrets::default();
    secrets.0.insert(
        ("a".into(), "redis".into()),
        [("password".to_owned(), b"s3cret".to_vec())].into(),
    );
    let (shutdown, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::default());
    let recorded = Arc::new(Recorded::default());
    let api = OperatorApi {
        hubs: hubs.clone(),
        secrets: Arc::new(CoalescingSecrets::new(Arc::new(secrets))),
        pods: Arc::new(StaticPods(
            [(
                ("a".to_owned(), "orders".to_owned()),
                "appconfig".to_owned(),
            )]
            .into(),
        )),
        shutdown: shutdown_rx.clone(),
        metrics: metrics.clone(),
    };
    let status = StatusApi {
        writer: recorded.clone(),
        metrics,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(daprs_operator::serve_api(
        listener,
        SvidResolver::with(issued.svid),
        sentry.anchors(),
        api,
        status,
        shutdown_rx,
    ));
    Operator {
        sentry,
        addr,
        hubs,
        operator_id,
        recorded,
        shutdown,
        task,
    }
}

impl Operator {
    async fn channel(&self, app_id: &str, namespace: &str) -> tonic::transport::Channel {
        let issued = self.sentry.svid(app_id, namespace).await;
        let verifier = SpiffeServerVerifier::new(
            self.sentry.anchors(),
            PeerMatcher::Exact(self.operator_id.clone()),
        );
        let config = tls::client_config(verifier, Some(SvidResolver::with(issued.svid))).unwrap();
        sentry_client::tls_channel(&self.addr.to_string(), config).unwrap()
    }

    async fn client(
        &self,
        app_id: &str,
        namespace: &str,
    ) -> OperatorClient<tonic::transport::Channel> {
        OperatorClient::new(self.channel(app_id, namespace).await)
    }
}

async fn next_event(stream: &mut Streaming<ComponentUpdateEvent>) -> (i32, Value) {
    let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .expect("the stream is open");
    (
        event.r#type,
        serde_json::from_slice(&event.component).unwrap(),
    )
}

const CREATED: i32 = ResourceEventType::Created as i32;
const UPDATED: i32 = ResourceEventType::Updated as i32;
const DELETED: i32 = ResourceEventType::Deleted as i32;

#[tokio::test]
async fn a_client_of_namespace_a_cannot_read_namespace_b() {
    let op = start().await;
    op.hubs.components.apply(component("b", "theirs", "1", &[]));
    let mut client = op.client("orders", "a").await;
    let denied = client
        .list_components(ListComponentsRequest {
            namespace: "b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert!(
        denied
            .message()
            .contains("identity does not match requested namespace"),
        "{denied:?}"
    );
    let stream = client
        .component_update(ComponentUpdateRequest {
            namespace: "b".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(stream.code(), tonic::Code::PermissionDenied);
    let config = client
        .get_configuration(GetConfigurationRequest {
            name: "x".into(),
            namespace: "".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(config.code(), tonic::Code::PermissionDenied);
    let legacy = client.list_subscriptions(()).await.unwrap_err();
    assert_eq!(legacy.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_client_from_another_ca_cannot_connect() {
    let op = start().await;
    let other = start_sentry().await;
    let issued = other.svid("orders", "a").await;
    let verifier = SpiffeServerVerifier::new(
        op.sentry.anchors(),
        PeerMatcher::Exact(op.operator_id.clone()),
    );
    let config = tls::client_config(verifier, Some(SvidResolver::with(issued.svid))).unwrap();
    let mut client =
        OperatorClient::new(sentry_client::tls_channel(&op.addr.to_string(), config).unwrap());
    let err = client
        .list_components(ListComponentsRequest {
            namespace: "a".into(),
        })
        .await
        .unwrap_err();
    // TLS 1.3 reports the rejected client certificate as an alert after the client's side of
    // the handshake: the call fails at the transport, never reaching the service.
    let text = format!("{err:?}");
    assert!(
        matches!(err.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
            && (text.contains("alert") || text.contains("transport")),
        "{text}"
    );
    assert_ne!(
        err.code(),
        tonic::Code::PermissionDenied,
        "refused before authorisation"
    );
}

#[tokio::test]
async fn lists_are_scoped_and_secrets_inlined_as_base64() {
    let op = start().await;
    op.hubs
        .components
        .apply(component("a", "everyone", "1", &[]));
    op.hubs
        .components
        .apply(component("a", "mine", "2", &["orders"]));
    op.hubs
        .components
        .apply(component("a", "theirs", "3", &["billing"]));
    let mut client = op.client("orders", "a").await;
    let listed = client
        .list_components(ListComponentsRequest {
            namespace: "a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .components;
    let values: Vec<Value> = listed
        .iter()
        .map(|b| serde_json::from_slice(b).unwrap())
        .collect();
    let names: Vec<_> = values
        .iter()
        .map(|v| v["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["everyone", "mine"]);
    assert_eq!(
        values[0]["spec"]["metadata"][1]["value"], "czNjcmV0",
        "base64 of the secret"
    );
    assert_eq!(values[0]["spec"]["metadata"][0]["value"], "redis:6379");
    assert_eq!(
        values[1]["scopes"],
        json!(["orders"]),
        "scopes stay top-level"
    );
}

#[tokio::test]
async fn a_stream_sees_create_update_scope_changes_and_delete_in_order() {
    let op = start().await;
    let mut client = op.client("orders", "a").await;
    let mut stream = client
        .component_update(ComponentUpdateRequest {
            namespace: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let hub = &op.hubs.components;
    hub.apply(component("a", "c", "1", &[]));
    hub.apply(component("b", "c", "2", &[])); // other namespace
    hub.apply(component("a", "c", "3", &["billing"])); // leaves the scopes
    hub.apply(component("a", "c", "4", &["billing", "orders"])); // joins again
    hub.apply(component("a", "c", "5", &["orders"]));
    hub.delete(component("a", "c", "5", &["orders"]));
    let mut seen = Vec::new();
    for _ in 0..5 {
        let (kind, value) = next_event(&mut stream).await;
        seen.push((
            kind,
            value["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
        if kind != DELETED {
            assert_eq!(
                value["spec"]["metadata"][1]["value"], "czNjcmV0",
                "stream events carry inlined secrets"
            );
        }
    }
    assert_eq!(
        seen,
        [
            (CREATED, "1".into()),
            (DELETED, "1".into()),
            (CREATED, "4".into()),
            (UPDATED, "5".into()),
            (DELETED, "5".into()),
        ]
    );
}

#[tokio::test]
async fn nothing_is_lost_between_the_list_and_the_stream() {
    let op = start().await;
    let hub = &op.hubs.components;
    hub.apply(component("a", "first", "1", &[]));
    let mut client = op.client("orders", "a").await;
    let listed = client
        .list_components(ListComponentsRequest {
            namespace: "a".into(),
        })
        .await
        .unwrap();
    assert_eq!(listed.into_inner().components.len(), 1);
    hub.apply(component("a", "second", "2", &[]));
    hub.apply(component("a", "first", "3", &[]));
    let mut stream = client
        .component_update(ComponentUpdateRequest {
            namespace: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    hub.apply(component("a", "third", "4", &[]));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let (kind, value) = next_event(&mut stream).await;
        seen.push((kind, value["metadata"]["name"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        seen,
        [
            (CREATED, "second".into()),
            (UPDATED, "first".into()),
            (CREATED, "third".into())
        ]
    );
}

#[tokio::test]
async fn configuration_updates_follow_the_apps_dapr_config_annotation() {
    let op = start().await;
    let config = |name: &str, rv: &str| {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
               "metadata": {"name": name, "namespace": "a", "resourceVersion": rv},
               "spec": {"tracing": {"samplingRate": rv}}})
    };
    op.hubs.configurations.apply(config("appconfig", "1"));
    let mut client = op.client("orders", "a").await;
    let got = client
        .get_configuration(GetConfigurationRequest {
            name: "appconfig".into(),
            namespace: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let value: Value = serde_json::from_slice(&got.configuration).unwrap();
    assert_eq!(value["spec"]["tracing"]["samplingRate"], "1");
    let missing = client
        .get_configuration(GetConfigurationRequest {
            name: "nope".into(),
            namespace: "a".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let mut stream = client
        .configuration_update(ConfigurationUpdateRequest {
            namespace: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    op.hubs.configurations.apply(config("other", "2"));
    op.hubs.configurations.apply(config("appconfig", "3"));
    let event = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let value: Value = serde_json::from_slice(&event.configuration).unwrap();
    assert_eq!(
        (event.r#type, value["metadata"]["name"].as_str()),
        (UPDATED, Some("appconfig"))
    );
}

#[tokio::test]
async fn sidecars_report_component_status_for_their_own_app_only() {
    let op = start().await;
    let mut client = ResourceStatusClient::new(op.channel("orders", "a").await);
    let result = |name: &str, condition: ResourceConditionStatus| ResourceResult {
        resource_type: ResourceType::ResourceComponent as i32,
        event_type: EventType::EventInit as i32,
        name: name.into(),
        condition: condition as i32,
        reason: Some("InitFailed".into()),
        message: Some("connection refused".into()),
        observed_generation: 2,
        last_transaction_time: None,
    };
    let response = client
        .report_resources(ReportResourcesRequest {
            namespace: "a".into(),
            results: vec![
                result("statestore", ResourceConditionStatus::StatusFailure),
                result("missing", ResourceConditionStatus::StatusSuccess),
            ],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.rejected.len(), 1);
    assert!(response.rejected[0].contains("does not exist"));
    let recorded = op.recorded.0.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    let (ns, name, app, entry) = &recorded[0];
    assert_eq!(
        (ns.as_str(), name.as_str(), app.as_str()),
        ("a", "statestore", "orders")
    );
    let entry = entry.as_ref().unwrap();
    assert_eq!(
        (entry.state.as_str(), entry.observed_generation),
        ("Failed", 2)
    );

    let denied = client
        .report_resources(ReportResourcesRequest {
            namespace: "b".into(),
            results: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
}

#[tokio::test]
async fn a_service_the_operator_does_not_serve_is_unimplemented() {
    let op = start().await;
    let channel = op.channel("orders", "a").await;
    let err = daprs_api::proto::sentry::ca_client::CaClient::new(channel.clone())
        .sign_certificate(daprs_api::proto::sentry::SignCertificateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    // The connection still serves the operator's own calls.
    let listed = OperatorClient::new(channel)
        .list_components(ListComponentsRequest {
            namespace: "a".into(),
        })
        .await;
    assert!(listed.is_ok(), "{listed:?}");
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_the_server() {
    let op = start().await;
    let mut client = op.client("orders", "a").await;
    let mut stream = client
        .component_update(ComponentUpdateRequest {
            namespace: "a".into(),
        })
        .await
        .unwrap()
        .into_inner();
    op.shutdown.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream ends promptly");
    match ended {
        Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable),
        Ok(None) => {}
        Ok(Some(event)) => panic!("unexpected event {event:?}"),
    }
    tokio::time::timeout(Duration::from_secs(7), op.task)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_stream_the_client_drops_or_disconnects_is_unsubscribed() {
    let op = start().await;
    let hub = &op.hubs.components;
    // Waits until the hub has `n` subscribers; a change makes it notice closed streams.
    let settles_at = |n: usize| async move {
        for revision in 0..100 {
            hub.apply(component("a", "c", &format!("{n}.{revision}"), &[]));
            if hub.subscribers() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the hub has {} subscribers, not {n}", hub.subscribers());
    };
    let mut client = op.client("orders", "a").await;
    let request = || ComponentUpdateRequest {
        namespace: "a".into(),
    };
    let dropped = client.component_update(request()).await.unwrap();
    let mut kept = client
        .component_update(request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hub.subscribers(), 2);
    // The client resets one stream: only that one goes; the other still receives.
    drop(dropped);
    settles_at(1).await;
    assert!(next_event(&mut kept).await.1["metadata"]["name"] == "c");
    // The client goes away altogether (its connection closes).
    drop(kept);
    drop(client);
    settles_at(0).await;
}
