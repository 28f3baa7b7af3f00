//! `daprd --mode kubernetes` against the real operator API and a real sentry, both in this
//! process, and a real `redis-server`: the sidecar gets its certificate from sentry, its
//! Configuration and components from the operator over mutual TLS, decodes inlined secrets,
//! swaps a changed component in without a restart (a broken change keeps the old one),
//! removes a deleted one, reports each result to the operator's status RPC, and after the
//! operator restarts lists again, so a component deleted while it was away goes too. Dapr's own
//! daprd (built by `scripts/dapr-daprd.sh`) is served by the same operator and sentry.
//!
//! The operator's resources come from its hubs fed directly by the test (what its Kubernetes
//! watches do in a cluster); `e2e/tests/daprd_kubernetes.rs` runs the same path on a real API
//! server. Status writes go to a recording writer instead of the API server, for the same
//! reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/dapr.rs"]
mod dapr_binary;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use daprs_api::crd::AppLoadStatus;
use daprs_api::sentry_client::{self, SvidRequest};
use daprs_api::tls::{self, SvidResolver, TrustAnchors};
use daprs_operator::api::{Hubs, OperatorApi};
use daprs_operator::metrics::Metrics;
use daprs_operator::pods::StaticPods;
use daprs_operator::secrets::{CoalescingSecrets, SecretData, SecretError, SecretSource};
use daprs_operator::status::{StatusApi, StatusWriter};
use serde_json::{Value, json};
use tokio::sync::watch;

const DAPRD: &str = env!("CARGO_BIN_EXE_daprd");
const NS: &str = "apps";
const APP: &str = "orders";
const REDIS_PASSWORD: &str = "s3cret-pw";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis() -> Redis {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--requirepass", REDIS_PASSWORD, "--dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server is missing: run scripts/sidecar-deps.sh");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Redis {
        child,
        port,
        _dir: dir,
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
        self.0
            .lock()
            .unwrap()
            .push((namespace.into(), name.into(), app_id.into(), entry));
        Ok(())
    }
}

impl Recorded {
    /// The last entry recorded for `component` by our app: `Some(None)` when closed.
    fn last(&self, component: &str) -> Option<Option<AppLoadStatus>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(ns, name, app, _)| ns == NS && name == component && app == APP)
            .map(|w| w.3.clone())
    }
}

/// sentry and the operator API, in process.
struct ControlPlane {
    sentry: daprs_sentry::Running,
    dir: tempfile::TempDir,
    hubs: Hubs,
    recorded: Arc<Recorded>,
    operator_addr: SocketAddr,
    operator: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl ControlPlane {
    async fn start() -> Self {
        tls::install_default_provider();
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        let sentry = daprs_sentry::start(daprs_sentry::config::Args::parse_from([
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
        ]))
        .await
        .unwrap();
        let url = format!("http://{}/healthz", sentry.healthz_addr);
        eventually(20, "sentry", || async {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status() == 200)
                .then_some(())
        })
        .await;
        let hubs = Hubs::default();
        for hub in hubs.all() {
            hub.relist_start();
            hub.relist_done();
        }
        let mut cp = ControlPlane {
            sentry,
            dir,
            hubs,
            recorded: Arc::default(),
            operator_addr: SocketAddr::from(([127, 0, 0, 1], free_port())),
            operator: None,
        };
        cp.start_operator().await;
        cp
    }

    fn anchors_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("creds/ca.crt")).unwrap()
    }

    /// (Re)starts the operator API on its address, over the same hubs.
    async fn start_operator(&mut self) {
        let anchors = TrustAnchors::from_pem(self.anchors_pem().as_bytes()).unwrap();
        let channel = sentry_client::sentry_channel(
            &self.sentry.grpc_addr.to_string(),
            anchors.clone(),
            "spiffe://localhost/ns/default/dapr-sentry".parse().unwrap(),
        )
        .unwrap();
        let issued = sentry_client::request_svid(
            channel,
            &SvidRequest {
                app_id: "dapr-operator".into(),
                namespace: "default".into(),
                trust_domain: "localhost".into(),
                ..SvidRequest::default()
            },
        )
        .await
        .unwrap();
        let mut secrets = Secrets::default();
        secrets.0.insert(
            (NS.into(), "redis".into()),
            [("password".to_owned(), REDIS_PASSWORD.as_bytes().to_vec())].into(),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::default());
        let api = OperatorApi {
            hubs: self.hubs.clone(),
            secrets: Arc::new(CoalescingSecrets::new(Arc::new(secrets))),
            pods: Arc::new(StaticPods(
                [((NS.to_owned(), APP.to_owned()), "appconfig".to_owned())].into(),
            )),
            shutdown: shutdown_rx.clone(),
            metrics: metrics.clone(),
        };
        let status = StatusApi {
            writer: self.recorded.clone(),
            metrics,
        };
        let listener = tokio::net::TcpListener::bind(self.operator_addr)
            .await
            .unwrap();
        let task = tokio::spawn(async move {
            daprs_operator::serve_api(
                listener,
                SvidResolver::with(issued.svid),
                anchors,
                api,
                status,
                shutdown_rx,
            )
            .await
            .unwrap();
        });
        self.operator = Some((shutdown, task));
    }

    /// The Configuration `appconfig` with `spec`, the component `statestore` for every app and
    /// `billing-only` scoped to another app.
    fn configure(&self, spec: Value) {
        self.hubs.configurations.apply(json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "appconfig", "namespace": NS, "resourceVersion": "1"},
            "spec": spec
        }));
        self.hubs
            .components
            .apply(component("statestore", 1, in_memory(), &[]));
        self.hubs
            .components
            .apply(component("billing-only", 1, in_memory(), &["billing"]));
    }

    async fn stop_operator(&mut self) {
        let (shutdown, task) = self.operator.take().unwrap();
        shutdown.send(true).unwrap();
        task.await.unwrap();
    }
}

fn component(name: &str, generation: i64, spec: Value, scopes: &[&str]) -> Value {
    json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": generation.to_string(), "generation": generation},
        "scopes": scopes,
        "spec": spec
    })
}

fn in_memory() -> Value {
    json!({"type": "state.in-memory", "version": "v1", "ignoreErrors": false, "initTimeout": "", "metadata": []})
}

fn redis_spec(port: u16, password: Value) -> Value {
    json!({"type": "state.redis", "version": "v1", "ignoreErrors": false, "initTimeout": "", "metadata": [
        {"name": "redisHost", "value": format!("127.0.0.1:{port}")},
        password,
    ]})
}

struct Daprd {
    child: Child,
    http: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Daprd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daprd {
    fn start(cp: &ControlPlane, config: &str) -> Self {
        Self::start_binary(Path::new(DAPRD), cp, config)
    }

    /// `binary` (ours, or Dapr's own daprd) in Kubernetes mode against `cp`.
    fn start_binary(binary: &Path, cp: &ControlPlane, config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("daprd.log");
        let out = std::fs::File::create(&log).unwrap();
        let http = free_port();
        let mut command = Command::new(binary);
        if !config.is_empty() {
            command.args(["--config", config]);
        }
        let ours = binary == Path::new(DAPRD);
        if !ours {
            // Dapr's daprd: no cluster here for its built-in Kubernetes secret store. It finds
            // no token file either, and asks sentry without a token, as ours does.
            command.arg("--disable-builtin-k8s-secret-store");
        }
        let child = command
            .args(["--mode", "kubernetes", "--app-id", APP])
            .args(["--control-plane-address", &cp.operator_addr.to_string()])
            .args(["--sentry-address", &cp.sentry.grpc_addr.to_string()])
            .args(["--control-plane-namespace", "default"])
            .args(["--control-plane-trust-domain", "localhost"])
            .args(["--dapr-listen-addresses", "127.0.0.1"])
            .args(["--dapr-http-port", &http.to_string()])
            .args(["--dapr-grpc-port", &free_port().to_string()])
            // Not the port derived from the app id: both tests run a daprd for APP at once.
            .args(["--dapr-internal-grpc-port", &free_port().to_string()])
            .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
            .arg("--enable-metrics=false")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NAMESPACE", NS)
            .env("DAPR_TRUST_ANCHORS", cp.anchors_pem())
            .envs(ours.then(|| ("DAPR_SENTRY_TOKEN_FILE", dir.path().join("no-token"))))
            // Dapr's daprd refuses to run in Kubernetes mode as any user but its image's.
            .envs((!ours).then_some(("DAPR_UNSAFE_SKIP_CONTAINER_UID_GID_CHECK", "true")))
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Daprd {
            child,
            http,
            log,
            _dir: dir,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("daprd exited ({status}):\n{}", self.logs());
            }
            if let Ok(r) = reqwest::get(self.url("/v1.0/healthz")).await
                && r.status() == 204
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daprd did not become ready:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn components(&self) -> Vec<(String, String)> {
        let meta: Value = reqwest::get(self.url("/v1.0/metadata"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let mut list: Vec<(String, String)> = meta["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["type"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        list.sort();
        list
    }

    async fn save(&self, store: &str, key: &str, value: &str) -> reqwest::StatusCode {
        reqwest::Client::new()
            .post(self.url(&format!("/v1.0/state/{store}")))
            .json(&json!([{"key": key, "value": value}]))
            .send()
            .await
            .unwrap()
            .status()
    }

    async fn get(&self, store: &str, key: &str) -> (reqwest::StatusCode, String) {
        let r = reqwest::get(self.url(&format!("/v1.0/state/{store}/{key}")))
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

fn redis_has(port: u16, key: &str) -> bool {
    let client =
        redis::Client::open(format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/")).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("EXISTS")
        .arg(key)
        .query::<i64>(&mut conn)
        .unwrap()
        == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_come_from_the_operator_and_follow_its_changes() {
    let redis = redis();
    let mut cp = ControlPlane::start().await;
    cp.configure(
        json!({"secrets": {"scopes": [{"storeName": "kubernetes", "defaultAccess": "deny"}]}}),
    );
    cp.hubs.subscriptions.apply(json!({
        "apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
        "metadata": {"name": "orders-sub", "namespace": NS, "resourceVersion": "1"},
        "spec": {"pubsubname": "pubsub", "topic": "orders", "routes": {"default": "/orders"}}
    }));

    let mut daprd = Daprd::start(&cp, "appconfig");
    daprd.ready().await;
    let logs = daprd.logs();
    assert!(
        logs.contains("spiffe://public/ns/apps/orders"),
        "the certificate from sentry: {logs}"
    );
    assert_eq!(
        daprd.components().await,
        [
            (
                "kubernetes".to_owned(),
                "secretstores.kubernetes".to_owned()
            ),
            ("statestore".to_owned(), "state.in-memory".to_owned())
        ],
        "in scope only, plus the built-in secret store"
    );
    // The Configuration from the operator applies: its secret scope denies the built-in store.
    let denied = reqwest::get(daprd.url("/v1.0/secrets/kubernetes/anything"))
        .await
        .unwrap();
    assert_eq!(denied.status(), 403, "{}", denied.text().await.unwrap());
    assert_eq!(daprd.save("statestore", "k1", "one").await, 204);
    assert_eq!(daprd.get("statestore", "k1").await.1, "\"one\"");
    let loaded = eventually(10, "the first status report", || async {
        cp.recorded.last("statestore").flatten()
    })
    .await;
    assert_eq!(
        (loaded.state.as_str(), loaded.observed_generation),
        ("Loaded", 1)
    );
    assert!(cp.recorded.last("billing-only").is_none());

    // A changed component (now Redis, its password a Kubernetes secret the operator inlines)
    // is swapped in without a restart.
    cp.hubs.components.apply(component(
        "statestore",
        2,
        redis_spec(
            redis.port,
            json!({"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}}),
        ),
        &[],
    ));
    eventually(15, "the Redis store to be swapped in", || async {
        (daprd
            .components()
            .await
            .contains(&("statestore".to_owned(), "state.redis".to_owned())))
        .then_some(())
    })
    .await;
    assert_eq!(daprd.save("statestore", "k2", "two").await, 204);
    assert!(
        redis_has(redis.port, "orders||k2"),
        "saved in Redis with Dapr's key layout"
    );
    assert_eq!(daprd.get("statestore", "k2").await.1, "\"two\"");
    let report = eventually(10, "generation 2 reported", || async {
        cp.recorded
            .last("statestore")
            .flatten()
            .filter(|s| s.observed_generation == 2)
    })
    .await;
    assert_eq!(report.state, "Loaded");

    // A broken change (wrong password) keeps the working instance and is reported as failed.
    cp.hubs.components.apply(component(
        "statestore",
        3,
        redis_spec(
            redis.port,
            json!({"name": "redisPassword", "value": "wrong"}),
        ),
        &[],
    ));
    let failed = eventually(15, "generation 3 reported as failed", || async {
        cp.recorded
            .last("statestore")
            .flatten()
            .filter(|s| s.observed_generation == 3)
    })
    .await;
    assert_eq!(failed.state, "Failed", "{failed:?}");
    assert!(!failed.message.is_empty(), "{failed:?}");
    assert_eq!(daprd.save("statestore", "k3", "three").await, 204);
    assert!(
        redis_has(redis.port, "orders||k3"),
        "the old instance kept serving"
    );

    // A deleted component goes, and its status entry is closed.
    cp.hubs
        .components
        .delete(component("statestore", 3, in_memory(), &[]));
    eventually(10, "the store removed", || async {
        (daprd.components().await.len() == 1).then_some(())
    })
    .await;
    let (status, body) = daprd.get("statestore", "k2").await;
    assert!(
        status.is_server_error() && body.contains("ERR_STATE_STORE"),
        "{status} {body}"
    );
    eventually(10, "the entry closed", || async {
        (cp.recorded.last("statestore") == Some(None)).then_some(())
    })
    .await;

    // The operator goes away; meanwhile a component is deleted and another created. After it
    // is back, daprd lists again: the deleted one goes, the new one comes.
    cp.hubs
        .components
        .apply(component("cache", 5, in_memory(), &[]));
    eventually(10, "cache loaded", || async {
        daprd
            .components()
            .await
            .iter()
            .any(|c| c.0 == "cache")
            .then_some(())
    })
    .await;
    cp.stop_operator().await;
    cp.hubs
        .components
        .delete(component("cache", 5, in_memory(), &[]));
    cp.hubs
        .components
        .apply(component("sessions", 6, in_memory(), &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        daprd.components().await.iter().any(|c| c.0 == "cache"),
        "nothing changes while the operator is away"
    );
    cp.start_operator().await;
    eventually(30, "the resync after the operator's return", || async {
        let names: Vec<String> = daprd.components().await.into_iter().map(|c| c.0).collect();
        (names == ["kubernetes", "sessions"]).then_some(())
    })
    .await;
    assert_eq!(daprd.save("sessions", "s", "x").await, 204);
    let logs = daprd.logs();
    assert!(
        logs.contains("lost the operator's streams"),
        "the reconnect is logged: {logs}"
    );
    cp.stop_operator().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_configuration_or_broken_component_stops_start_up_with_the_reason() {
    let mut cp = ControlPlane::start().await;
    let daprd = Daprd::start(&cp, "nope");
    let status = tokio::task::spawn_blocking(move || {
        let mut daprd = daprd;
        let status = daprd.child.wait().unwrap();
        (status, daprd)
    })
    .await
    .unwrap();
    let (status, daprd) = status;
    assert!(!status.success());
    let logs = daprd.logs();
    assert!(
        logs.contains("Configuration \\\"nope\\\" not found")
            || logs.contains("Configuration \"nope\" not found"),
        "{logs}"
    );

    // A component that cannot load (no ignoreErrors) is reported as failed, then daprd exits.
    cp.hubs.components.apply(component(
        "broken",
        4,
        json!({"type": "state.redis", "version": "v1", "ignoreErrors": false, "initTimeout": "", "metadata": []}),
        &[],
    ));
    let daprd = Daprd::start(&cp, "");
    let (status, daprd) = tokio::task::spawn_blocking(move || {
        let mut daprd = daprd;
        let status = daprd.child.wait().unwrap();
        (status, daprd)
    })
    .await
    .unwrap();
    assert!(!status.success());
    let logs = daprd.logs();
    assert!(logs.contains("redisHost"), "{logs}");
    let report = cp.recorded.last("broken").flatten().expect("a report");
    assert_eq!(
        (report.state.as_str(), report.observed_generation),
        ("Failed", 4)
    );
    assert!(report.message.contains("redisHost"), "{report:?}");
    cp.stop_operator().await;
}

/// Dapr's own daprd (v1.16, a Go gRPC client) in Kubernetes mode against our operator and
/// sentry: it gets its certificate, its Configuration (which turns on Dapr's HotReload) and its
/// components, serves state from one, and follows the `ComponentUpdate` stream: a component
/// added while it runs is loaded, a deleted one closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dapr_daprd_gets_its_components_from_our_operator() {
    let dapr = dapr_binary::dapr_daprd();
    let cp = ControlPlane::start().await;
    // Dapr 1.16 follows component changes only with this preview feature on.
    cp.configure(json!({"features": [{"name": "HotReload", "enabled": true}]}));

    let mut daprd = Daprd::start_binary(&dapr, &cp, "appconfig");
    daprd.ready().await;
    let types = |list: Vec<(String, String)>| -> Vec<String> {
        list.into_iter()
            .map(|(name, kind)| format!("{name}={kind}"))
            .collect()
    };
    assert_eq!(
        types(daprd.components().await),
        ["statestore=state.in-memory"],
        "in scope only:\n{}",
        daprd.logs()
    );
    assert_eq!(daprd.save("statestore", "k1", "one").await, 204);
    assert_eq!(daprd.get("statestore", "k1").await.1, "\"one\"");

    cp.hubs
        .components
        .apply(component("cache", 1, in_memory(), &[]));
    eventually(20, "the added component in Dapr's daprd", || async {
        let list = types(daprd.components().await);
        (list == ["cache=state.in-memory", "statestore=state.in-memory"]).then_some(())
    })
    .await;
    assert_eq!(daprd.save("cache", "k2", "two").await, 204);
    assert_eq!(daprd.get("cache", "k2").await.1, "\"two\"");

    cp.hubs
        .components
        .delete(component("statestore", 2, in_memory(), &[]));
    eventually(
        20,
        "the deleted component gone from Dapr's daprd",
        || async { (types(daprd.components().await) == ["cache=state.in-memory"]).then_some(()) },
    )
    .await;
}
