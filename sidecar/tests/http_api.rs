//! The HTTP API through `Router::oneshot`: routes, status codes, error bodies, router rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use daprs_sidecar::components::manifest::{Scope, load_components, load_configuration};
use daprs_sidecar::components::registry::Registry;
use daprs_sidecar::runtime::{Runtime, Settings};
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

const COMPONENTS: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: store
spec:
  type: state.in-memory
  version: v1
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: shared
spec:
  type: state.in-memory
  metadata:
  - name: keyPrefix
    value: none
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: vault
spec:
  type: secretstores.local.file
  metadata:
  - name: secretsFile
    value: SECRETS
"#;

const CONFIG: &str = r#"
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: c
spec:
  secrets:
    scopes:
    - storeName: vault
      defaultAccess: deny
      allowedSecrets: ["db:password"]
"#;

struct Sidecar {
    rt: Arc<Runtime>,
    _dir: tempfile::TempDir,
}

async fn sidecar(token: Option<&str>) -> Sidecar {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    std::fs::write(
        &secrets,
        r#"{"db": {"password": "s3cret", "user": "admin"}}"#,
    )
    .unwrap();
    let resources = dir.path().join("resources");
    std::fs::create_dir(&resources).unwrap();
    std::fs::write(
        resources.join("components.yaml"),
        COMPONENTS.replace("SECRETS", &secrets.display().to_string()),
    )
    .unwrap();
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let configuration = load_configuration(&[dir.path().join("config.yaml")]).unwrap();
    let rt = Runtime::new(
        Settings {
            app_id: "myapp".into(),
            configuration,
            api_token: token.map(str::to_owned),
            max_body_bytes: 1024,
            resources_path: vec![resources.clone()],
            ..Settings::default()
        },
        Registry::builtin(),
    );
    let manifests = load_components(
        &[resources],
        &Scope {
            app_id: "myapp",
            namespace: None,
        },
    )
    .unwrap();
    rt.load(manifests).await.unwrap();
    rt.set_ready();
    Sidecar { rt, _dir: dir }
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Sidecar {
    async fn call(&self, request: Request<Body>) -> Reply {
        let app = daprs_sidecar::http::service(self.rt.clone());
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn send(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_default();
        self.call(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(body)
                .unwrap(),
        )
        .await
    }
}

#[tokio::test]
async fn save_get_delete_with_etags() {
    let s = sidecar(None).await;
    let r = s
        .send(
            "POST",
            "/v1.0/state/store",
            Some(json!([{"key": "k", "value": {"n": 1}}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = s.send("GET", "/v1.0/state/store/k", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"n": 1}));
    assert_eq!(r.headers["content-type"], "application/json");
    let etag = r.headers["etag"].to_str().unwrap().to_owned();

    let r = s
        .send(
            "POST",
            "/v1.0/state/store",
            Some(json!([{"key": "k", "value": 2, "etag": "nope"}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["errorCode"], "ERR_STATE_SAVE");
    let r = s
        .send(
            "POST",
            "/v1.0/state/store",
            Some(json!([{"key": "k", "value": 2, "etag": etag}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s
        .send(
            "POST",
            "/v1.0/state/store",
            Some(json!([{"key": "k", "value": 3, "options": {"Concurrency": "first-write"}}])),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "first-write on an existing key"
    );

    let r = s
        .call(
            Request::delete("/v1.0/state/store/k")
                .header("if-match", "wrong")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["errorCode"], "ERR_STATE_DELETE");
    let r = s.send("DELETE", "/v1.0/state/store/k", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.send("GET", "/v1.0/state/store/k", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "a missing key is 204");
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn state_errors_match_dapr() {
    let s = sidecar(None).await;
    let r = s.send("POST", "/v1.0/state/nope", Some(json!([]))).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let body = r.json();
    assert_eq!(body["errorCode"], "ERR_STATE_STORE_NOT_FOUND");
    assert_eq!(body["message"], "state store nope is not found");
    assert_eq!(body["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");

    let r = s.send("GET", "/v1.0/state/store/a%7C%7Cb", None).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["details"][0]["reason"], "DAPR_STATE_ILLEGAL_KEY");

    let r = s
        .send("POST", "/v1.0/state/store", Some(json!([{"value": 1}])))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["errorCode"], "ERR_MALFORMED_REQUEST");
    let r = s
        .call(
            Request::post("/v1.0/state/store")
                .body(Body::from("{nope"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.json()["errorCode"], "ERR_MALFORMED_REQUEST");
    let r = s.send("POST", "/v1.0/state/store", Some(json!([]))).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "an empty list is fine");

    let r = s
        .send(
            "POST",
            "/v1.0/state/store/transaction",
            Some(json!({"operations": [{"operation": "merge", "request": {"key": "a"}}]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["errorCode"], "ERR_NOT_SUPPORTED_STATE_OPERATION");
}

#[tokio::test]
async fn bulk_transactions_ttl_prefixes_and_query() {
    let s = sidecar(None).await;
    let r = s
        .send(
            "POST",
            "/v1.0/state/store/transaction",
            Some(json!({"operations": [
                {"operation": "upsert", "request": {"key": "a", "value": {"city": "Oslo", "n": 1}}},
                {"operation": "upsert", "request": {"key": "b", "value": {"city": "Rome", "n": 2}}},
                {"operation": "upsert", "request": {"key": "c", "value": "plain"}},
                {"operation": "delete", "request": {"key": "c"}}
            ]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    let r = s
        .send(
            "POST",
            "/v1.0/state/store/transaction",
            Some(json!({"operations": [
                {"operation": "upsert", "request": {"key": "z", "value": 1}},
                {"operation": "delete", "request": {"key": "a", "etag": "bad"}}
            ]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.json()["errorCode"], "ERR_STATE_TRANSACTION");
    assert_eq!(
        s.send("GET", "/v1.0/state/store/z", None).await.status,
        StatusCode::NO_CONTENT
    );

    let r = s
        .send(
            "POST",
            "/v1.0/state/store/bulk",
            Some(json!({"keys": ["b", "missing", "a"], "parallelism": 2})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let items = r.json();
    assert_eq!(items[0]["key"], "b");
    assert_eq!(items[0]["data"]["city"], "Rome");
    assert!(items[0]["etag"].is_string());
    assert_eq!(items[1], json!({"key": "missing"}));
    assert_eq!(items[2]["data"]["n"], 1);

    let r = s
        .send(
            "POST",
            "/v1.0/state/store?metadata.ttlInSeconds=100",
            Some(json!([{"key": "t", "value": 1}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s.send("GET", "/v1.0/state/store/t", None).await;
    assert!(
        r.headers.contains_key("metadata.ttlExpireTime"),
        "{:?}",
        r.headers
    );
    let r = s
        .send(
            "POST",
            "/v1.0/state/store",
            Some(json!([{"key": "t", "value": 1, "metadata": {"ttlInSeconds": "soon"}}])),
        )
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);

    // keyPrefix none on "shared": the same key in another store is separate.
    s.send(
        "POST",
        "/v1.0/state/shared",
        Some(json!([{"key": "a", "value": "other"}])),
    )
    .await;
    assert_eq!(
        s.send("GET", "/v1.0/state/shared/a", None).await.json(),
        json!("other")
    );
    assert_eq!(
        s.send("GET", "/v1.0/state/store/a", None).await.json()["city"],
        "Oslo"
    );

    let r = s
        .send(
            "POST",
            "/v1.0-alpha1/state/store/query",
            Some(json!({"filter": {"EQ": {"city": "Rome"}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = r.json();
    assert_eq!(body["results"].as_array().unwrap().len(), 1);
    assert_eq!(body["results"][0]["key"], "b");
    let r = s
        .send(
            "POST",
            "/v1.0-alpha1/state/store/query",
            Some(json!({"filter": {"EQ": {"city": "Paris"}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = s
        .send(
            "POST",
            "/v1.0-alpha1/state/store/query",
            Some(json!({"filter": {"LIKE": {"city": "x"}}})),
        )
        .await;
    assert_eq!(r.json()["errorCode"], "ERR_STATE_QUERY");
}

#[tokio::test]
async fn router_rules() {
    let s = sidecar(Some("tok")).await;
    let r = s.send("GET", "/v1.0/state/store/k", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.text(), "invalid api token");
    assert_eq!(
        s.send("GET", "/v1.0/healthz", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        s.send("GET", "/v1.0/healthz/outbound", None).await.status,
        StatusCode::NO_CONTENT
    );
    let with_token = |uri: &str| {
        Request::get(uri)
            .header("dapr-api-token", "tok")
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        s.call(with_token("/v1.0//state/store/k/")).await.status,
        StatusCode::NO_CONTENT
    );
    let r = s.call(with_token("/v1.0/unknown/route")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["errorCode"], "ERR_DIRECT_INVOKE");
    let r = s.call(with_token("/v1.0/state/store/bad%zz")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);

    // Invocation by path takes a shortcut past the router: the same token check and metrics.
    let r = s.send("POST", "/v1.0/invoke/nobody/method/m", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.text(), "invalid api token");
    let r = s.call(with_token("/v1.0/invoke/nobody/method/m")).await;
    assert_eq!(r.json()["errorCode"], "ERR_DIRECT_INVOKE", "{}", r.text());
    let metrics = s.rt.metrics.render();
    assert!(
        metrics.contains(
            r#"dapr_http_server_response_count{app_id="myapp",method="POST",path="",status="401"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"dapr_http_server_latency_count{app_id="myapp",method="POST",path="",status="401"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"dapr_http_server_request_count{app_id="myapp",method="GET",path=""} "#),
        "{metrics}"
    );

    let big = "x".repeat(2048);
    let r = s
        .call(
            Request::post("/v1.0/state/store")
                .header("dapr-api-token", "tok")
                .body(Body::from(format!(r#"[{{"key":"k","value":"{big}"}}]"#)))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn health_metadata_and_secrets() {
    let s = sidecar(None).await;
    let r = s.send("GET", "/v1.0/healthz?appid=other", None).await;
    assert_eq!(r.json()["errorCode"], "ERR_HEALTH_APPID_NOT_MATCH");
    let r = s
        .call(
            Request::put("/v1.0/metadata/owner")
                .body(Body::from("team-a"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let meta = s.send("GET", "/v1.0/metadata", None).await.json();
    assert_eq!(meta["id"], "myapp");
    assert_eq!(meta["extended"]["owner"], "team-a");
    assert!(meta["extended"]["daprRuntimeVersion"].is_string());
    let store = meta["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "store")
        .unwrap();
    assert_eq!(store["type"], "state.in-memory");
    assert!(
        store["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("TRANSACTIONAL"))
    );

    let r = s.send("GET", "/v1.0/secrets/vault/db:password", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"db:password": "s3cret"}));
    let r = s.send("GET", "/v1.0/secrets/vault/db:user", None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.json()["errorCode"], "ERR_PERMISSION_DENIED");
    let r = s.send("GET", "/v1.0/secrets/nope/x", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.json()["errorCode"], "ERR_SECRET_STORE_NOT_FOUND");
    let r = s.send("GET", "/v1.0/secrets/vault/bulk", None).await;
    assert_eq!(r.json(), json!({"db:password": {"db:password": "s3cret"}}));

    let r = s.send("POST", "/v1.0/shutdown", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    tokio::time::timeout(std::time::Duration::from_secs(1), s.rt.stopped())
        .await
        .expect("the shutdown API starts a shutdown");
}
