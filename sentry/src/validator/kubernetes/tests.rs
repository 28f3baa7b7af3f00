//! The kubernetes validator against a scripted stand-in for the API server (three endpoints:
//! TokenReview, Pod GET, Configuration GET). The same cases run against a real API server in
//! `e2e/`; this mock exists so they also run without one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine;
use daprs_api::proto::sentry::SignCertificateRequest;
use serde_json::{Value, json};

use super::*;

const CP_NS: &str = "dapr-system";
const CP_TD: &str = "cluster.local";

/// A token the scripted API server knows.
#[derive(Clone)]
struct TokenFacts {
    username: String,
    pod: Option<(String, String)>, // name, uid
    audiences: Vec<String>,
}

#[derive(Default)]
struct Scripted {
    tokens: HashMap<String, TokenFacts>,
    pods: HashMap<(String, String), Value>,
    configurations: HashMap<(String, String), Value>,
    reviews: AtomicUsize,
    /// Answer authenticated reviews without `status.audiences` (valid for the API server only).
    omit_audiences: bool,
}

type Shared = Arc<Mutex<Scripted>>;

async fn token_review(State(s): State<Shared>, Json(body): Json<Value>) -> Json<Value> {
    let s = s.lock().unwrap();
    s.reviews.fetch_add(1, Ordering::SeqCst);
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let wanted: Vec<String> =
        serde_json::from_value(body["spec"]["audiences"].clone()).unwrap_or_default();
    let status = match s.tokens.get(token) {
        Some(facts) if facts.audiences.iter().any(|a| wanted.contains(a)) => {
            let mut extra = json!({});
            if let Some((name, uid)) = &facts.pod {
                extra = json!({ EXTRA_POD_NAME: [name], EXTRA_POD_UID: [uid] });
            }
            let granted: Vec<&String> = wanted
                .iter()
                .filter(|a| facts.audiences.contains(a) && !s.omit_audiences)
                .collect();
            json!({"authenticated": true, "user": {"username": facts.username, "extra": extra}, "audiences": granted})
        }
        Some(_) => {
            json!({"authenticated": false, "error": "token audiences is invalid for the target audiences"})
        }
        None => json!({"authenticated": false, "error": "invalid bearer token"}),
    };
    Json(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": body["spec"], "status": status}),
    )
}

fn not_found(kind: &str, name: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
            "message": format!("{kind} \"{name}\" not found")}),
        ),
    )
}

async fn get_pod(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    match s.lock().unwrap().pods.get(&(ns, name.clone())) {
        Some(pod) => (StatusCode::OK, Json(pod.clone())),
        None => not_found("pods", &name),
    }
}

async fn get_configuration(
    State(s): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> (StatusCode, Json<Value>) {
    match s.lock().unwrap().configurations.get(&(ns, name.clone())) {
        Some(c) => (StatusCode::OK, Json(c.clone())),
        None => not_found("configurations.dapr.io", &name),
    }
}

async fn serve(shared: Shared) -> kube::Client {
    let app = axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(token_review),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
        .route(
            "/apis/dapr.io/v1alpha1/namespaces/{ns}/configurations/{name}",
            get(get_configuration),
        )
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = kube::Config::new(url.parse().unwrap());
    kube::Client::try_from(config).unwrap()
}

fn jwt(claims: Value) -> String {
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.sig", enc(&json!({"alg": "RS256"})), enc(&claims))
}

fn pod(ns: &str, name: &str, uid: &str, sa: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": annotations},
        "spec": {"serviceAccountName": sa, "containers": [{"name": "app", "image": "app"}]}})
}

struct Fixture {
    shared: Shared,
    validator: KubernetesValidator,
}

const SENTRY_AUD: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";

impl Fixture {
    async fn new() -> Self {
        let shared: Shared = Arc::default();
        let client = serve(shared.clone()).await;
        Self {
            shared,
            validator: KubernetesValidator::new(client, CP_NS, CP_TD),
        }
    }

    /// Registers a pod and a pod-bound token for it; returns the token.
    fn pod_with_token(&self, ns: &str, name: &str, sa: &str, annotations: Value) -> String {
        let uid = format!("uid-{name}");
        let token = jwt(
            json!({"exp": 4_000_000_000u64, "kubernetes.io": {"namespace": ns, "pod": {"name": name, "uid": uid}}}),
        );
        let mut s = self.shared.lock().unwrap();
        s.pods.insert(
            (ns.into(), name.into()),
            pod(ns, name, &uid, sa, annotations),
        );
        s.tokens.insert(
            token.clone(),
            TokenFacts {
                username: format!("system:serviceaccount:{ns}:{sa}"),
                pod: Some((name.into(), uid)),
                audiences: vec![SENTRY_AUD.into()],
            },
        );
        token
    }

    async fn sign(&self, id: &str, ns: &str, token: &str) -> Result<SpiffeId, Denial> {
        self.validator
            .validate(&SignCertificateRequest {
                id: id.into(),
                namespace: ns.into(),
                token: token.into(),
                ..Default::default()
            })
            .await
    }
}

fn denied(result: Result<SpiffeId, Denial>, needle: &str) {
    match result {
        Err(Denial::Denied(msg)) => {
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}")
        }
        other => panic!("expected a denial mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pod_bound_token_for_the_right_pod_gets_its_app_id() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "shop",
        "orders-7d9f",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    let id = f.sign("orders", "shop", &token).await.unwrap();
    assert_eq!(id.to_string(), "spiffe://public/ns/shop/orders");
}

#[tokio::test]
async fn the_pod_name_is_the_app_id_without_an_annotation() {
    let f = Fixture::new().await;
    let token = f.pod_with_token("shop", "worker", "default", json!({}));
    assert_eq!(
        f.sign("worker", "shop", &token).await.unwrap().app_id(),
        "worker"
    );
    denied(f.sign("orders", "shop", &token).await, "by its name");
}

#[tokio::test]
async fn a_mismatched_app_id_is_refused() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "shop",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    denied(
        f.sign("payments", "shop", &token).await,
        "app id mismatch: requested \"payments\"",
    );
}

#[tokio::test]
async fn a_token_for_the_wrong_audience_is_refused() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "shop",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    f.shared
        .lock()
        .unwrap()
        .tokens
        .get_mut(&token)
        .unwrap()
        .audiences = vec!["https://kubernetes.default.svc".into()];
    denied(
        f.sign("orders", "shop", &token).await,
        "not authenticated for audience",
    );
}

#[tokio::test]
async fn an_unbound_token_is_refused() {
    let f = Fixture::new().await;
    let token = jwt(json!({"sub": "system:serviceaccount:shop:orders"}));
    f.shared.lock().unwrap().tokens.insert(
        token.clone(),
        TokenFacts {
            username: "system:serviceaccount:shop:orders".into(),
            pod: None,
            audiences: vec![SENTRY_AUD.into()],
        },
    );
    denied(f.sign("orders", "shop", &token).await, "not bound to a pod");
}

#[tokio::test]
async fn a_token_of_another_namespace_is_refused() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "other",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    denied(
        f.sign("orders", "shop", &token).await,
        "belongs to namespace \"other\"",
    );
}

#[tokio::test]
async fn a_deleted_pod_is_refused_even_with_a_cached_review() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "shop",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    f.sign("orders", "shop", &token).await.unwrap();
    f.shared.lock().unwrap().pods.clear();
    denied(f.sign("orders", "shop", &token).await, "no longer exists");
}

#[tokio::test]
async fn an_unknown_token_and_a_user_token_are_refused() {
    let f = Fixture::new().await;
    denied(
        f.sign("orders", "shop", "garbage").await,
        "invalid bearer token",
    );
    let token = jwt(json!({}));
    f.shared.lock().unwrap().tokens.insert(
        token.clone(),
        TokenFacts {
            username: "alice".into(),
            pod: None,
            audiences: vec![SENTRY_AUD.into()],
        },
    );
    denied(
        f.sign("orders", "shop", &token).await,
        "not to a service account",
    );
    denied(f.sign("orders", "shop", "").await, "no token was sent");
}

#[tokio::test]
async fn a_pod_with_another_service_account_is_refused() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "shop",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    {
        let mut s = f.shared.lock().unwrap();
        let pod = s.pods.get_mut(&("shop".into(), "orders-1".into())).unwrap();
        pod["spec"]["serviceAccountName"] = json!("admin");
    }
    denied(
        f.sign("orders", "shop", &token).await,
        "runs as service account \"admin\"",
    );
}

#[tokio::test]
async fn control_plane_pods_get_control_plane_ids() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        CP_NS,
        "dapr-operator-0",
        "dapr-operator",
        json!({"dapr.io/control-plane": "operator"}),
    );
    let id = f.sign("dapr-operator", CP_NS, &token).await.unwrap();
    assert_eq!(
        id.to_string(),
        "spiffe://cluster.local/ns/dapr-system/dapr-operator"
    );
    denied(
        f.sign("dapr-sentry", CP_NS, &token).await,
        "is \"dapr-operator\"",
    );

    let outside = f.pod_with_token(
        "shop",
        "fake-op",
        "x",
        json!({"dapr.io/control-plane": "operator"}),
    );
    denied(
        f.sign("dapr-operator", "shop", &outside).await,
        "not in the control-plane namespace",
    );
    let both = f.pod_with_token(
        CP_NS,
        "both",
        "x",
        json!({"dapr.io/control-plane": "injector", "dapr.io/app-id": "x"}),
    );
    denied(
        f.sign("dapr-injector", CP_NS, &both).await,
        "must not also carry",
    );
    let unknown = f.pod_with_token(CP_NS, "u", "x", json!({"dapr.io/control-plane": "router"}));
    denied(
        f.sign("dapr-router", CP_NS, &unknown).await,
        "unknown dapr.io/control-plane value",
    );
}

#[tokio::test]
async fn the_trust_domain_comes_from_the_pods_configuration() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "shop",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders", "dapr.io/config": "appconfig"}),
    );
    denied(
        f.sign("orders", "shop", &token).await,
        "Configuration shop/appconfig",
    );
    f.shared.lock().unwrap().configurations.insert(
        ("shop".into(), "appconfig".into()),
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
               "metadata": {"name": "appconfig", "namespace": "shop"},
               "spec": {"accessControl": {"trustDomain": "shop.example"}}}),
    );
    let id = f.sign("orders", "shop", &token).await.unwrap();
    assert_eq!(id.to_string(), "spiffe://shop.example/ns/shop/orders");
}

#[tokio::test]
async fn successful_reviews_are_cached_for_the_tokens_lifetime() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "shop",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    for _ in 0..5 {
        f.sign("orders", "shop", &token).await.unwrap();
    }
    assert_eq!(f.shared.lock().unwrap().reviews.load(Ordering::SeqCst), 1);
    // A failed review is not cached.
    for _ in 0..2 {
        let _ = f.sign("orders", "shop", "garbage").await;
    }
    assert_eq!(f.shared.lock().unwrap().reviews.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_review_that_does_not_grant_sentrys_audience_is_refused() {
    let f = Fixture::new().await;
    let token = f.pod_with_token(
        "shop",
        "orders-1",
        "orders",
        json!({"dapr.io/app-id": "orders"}),
    );
    f.shared.lock().unwrap().omit_audiences = true;
    denied(
        f.sign("orders", "shop", &token).await,
        "authenticated for []",
    );
}
