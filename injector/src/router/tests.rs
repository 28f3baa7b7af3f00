//! The router with `oneshot` and real AdmissionReview JSON (v1 and v1beta1), no socket.

use axum::body::Body;
use axum::http::Request;
use base64::Engine;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

const V1: &str = include_str!("../../tests/fixtures/review-v1.json");
const V1BETA1: &str = include_str!("../../tests/fixtures/review-v1beta1.json");
const BARE_POD_BY_USER: &str = include_str!("../../tests/fixtures/review-v1-bare-pod-by-user.json");

fn state() -> AppState {
    let live = Live::default();
    live.set_trust_anchors("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    AppState {
        config: Arc::new(InjectorConfig::for_tests()),
        live: Arc::new(live),
        metrics: Arc::new(Metrics::default()),
        client: None,
    }
}

async fn post(
    state: &AppState,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, Vec<u8>) {
    let mut request = Request::post("/mutate");
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let response = router(state.clone())
        .oneshot(request.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

async fn review(state: &AppState, body: &str) -> Value {
    let (status, bytes) = post(state, Some("application/json"), body.to_owned()).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    serde_json::from_slice(&bytes).unwrap()
}

fn metrics_text(state: &AppState) -> String {
    crate::metrics::render(&state.metrics.register())
}

#[tokio::test]
async fn a_v1_review_gets_a_patch_that_applies_to_its_pod() {
    let state = state();
    let out = review(&state, V1).await;
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = &out["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    assert!(
        response.get("warnings").is_none(),
        "a clean pod has no warnings"
    );

    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let input: Value = serde_json::from_str(V1).unwrap();
    let mut pod = input["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    assert_eq!(pod["spec"]["containers"][2]["name"], "daprd");
    assert_eq!(
        pod["metadata"]["labels"]["dapr.io/sidecar-injected"],
        "true"
    );

    let text = metrics_text(&state);
    assert!(
        text.contains("dapr_injector_sidecar_injection_requests_total 1"),
        "{text}"
    );
    assert!(
        text.contains("dapr_injector_sidecar_injection_succeeded_total{app_id=\"orders\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_v1beta1_review_is_answered_in_v1beta1() {
    let out = review(&state(), V1BETA1).await;
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(
        out["response"]["uid"],
        "5a4f3e2d-1c0b-4a99-8877-665544332211"
    );
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
}

#[tokio::test]
async fn a_bare_pod_by_a_user_is_admitted_unchanged_with_a_warning() {
    let state = state();
    let out = review(&state, BARE_POD_BY_USER).await;
    let response = &out["response"];
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none() && response.get("patchType").is_none());
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("\"alice\""),
        "{response}"
    );
    let text = metrics_text(&state);
    assert!(
        text.contains(
            "daprs_injector_sidecar_injection_skipped_total{reason=\"caller_not_allowed\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn denials_are_200_with_allowed_false_and_the_reason() {
    let state = state();
    let mut input: Value = serde_json::from_str(V1).unwrap();
    input["request"]["object"]["metadata"]["annotations"]["dapr.io/app-id"] = json!("Orders_V2");
    input["request"]["object"]["metadata"]["annotations"]["dapr.io/app-prot"] = json!("1");
    let out = review(&state, &input.to_string()).await;
    let response = &out["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("\"Orders_V2\" is invalid")
    );
    assert!(
        response["warnings"][0]
            .as_str()
            .unwrap()
            .contains("did you mean dapr.io/app-port?")
    );
    let text = metrics_text(&state);
    assert!(
        text.contains(
            "dapr_injector_sidecar_injection_failed_total{app_id=\"\",reason=\"invalid_app_id\"} 1"
        ),
        "user-chosen invalid ids stay out of labels: {text}"
    );
}

#[tokio::test]
async fn without_trust_anchors_pods_are_denied() {
    let state = AppState {
        live: Arc::new(Live::default()),
        ..state()
    };
    let out = review(&state, V1).await;
    assert_eq!(out["response"]["allowed"], false);
    assert!(
        out["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("trust anchors")
    );
}

#[tokio::test]
async fn malformed_reviews_get_an_invalid_answer() {
    let state = state();
    let cases = [
        ("{not json", "", ""),
        (
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
            "admission.k8s.io/v1",
            "",
        ),
        (
            r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"u-1","kind":"Pod"}}"#,
            "admission.k8s.io/v1beta1",
            "u-1",
        ),
        ("[1,2,3]", "", ""),
    ];
    for (body, version, uid) in cases {
        let out = review(&state, body).await;
        let response = &out["response"];
        assert_eq!(response["allowed"], false, "{body}");
        assert_eq!(response["status"]["code"], 400, "{body}");
        assert_eq!(response["status"]["reason"], "Invalid", "{body}");
        assert_eq!(response["uid"], uid, "{body}");
        let want = if version.is_empty() {
            "admission.k8s.io/v1"
        } else {
            version
        };
        assert_eq!(out["apiVersion"], want, "{body}");
    }
    assert!(metrics_text(&state).contains("reason=\"malformed_review\"} 4"));
}

#[tokio::test]
async fn transport_mistakes_are_http_errors() {
    let state = state();
    let (status, _) = post(&state, Some("application/json"), "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(&state, Some("text/plain"), V1).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = post(&state, None, V1).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = post(&state, Some("application/json; charset=utf-8"), V1).await;
    assert_eq!(status, StatusCode::OK);
    let response = router(state.clone())
        .oneshot(Request::get("/mutate").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let response = router(state)
        .oneshot(Request::post("/other").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pluggable_components_without_an_api_client_are_denied() {
    let state = state();
    let mut body: Value = serde_json::from_str(V1).unwrap();
    body["request"]["object"]["metadata"]["annotations"]["dapr.io/inject-pluggable-components"] =
        json!("true");
    let out = review(&state, &body.to_string()).await;
    assert_eq!(out["response"]["allowed"], false, "{out:#}");
    let message = out["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("could not list the Components") && message.contains("standalone mode"),
        "{message}"
    );
    assert!(
        metrics_text(&state).contains("reason=\"list_components\"} 1"),
        "{}",
        metrics_text(&state)
    );
}
