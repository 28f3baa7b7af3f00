//! The operator's HTTPS webhooks: Subscription conversion (`/convert`, Dapr's) and Component
//! validation (`/validate-component`, daprs'). Pure decisions in [`convert_objects`] and
//! [`crate::validate::validate`]; this is the axum router around them and the TLS server.
//! Business decisions are always answered 200 with a response body, never 5xx.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use daprs_api::crd::Component;
use daprs_api::crd::subscription::{v1alpha1, v2alpha1};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::conversion::{ConversionRequest, ConversionResponse, ConversionReview};
use kube::core::response::Status;
use serde_json::Value;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Path of the Component validating webhook.
pub const VALIDATE_PATH: &str = "/validate-component";

/// Converts Subscriptions to `desired` (`dapr.io/v1alpha1` or `dapr.io/v2alpha1`).
pub fn convert_objects(desired: &str, objects: Vec<Value>) -> Result<Vec<Value>, String> {
    objects
        .into_iter()
        .map(|object| {
            let from = object["apiVersion"].as_str().unwrap_or_default().to_owned();
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let bad =
                |e: serde_json::Error| format!("Subscription {name:?} ({from}) is not valid: {e}");
            let as_v2: v2alpha1::Subscription = match from.as_str() {
                "dapr.io/v2alpha1" => serde_json::from_value(object.clone()).map_err(bad)?,
                "dapr.io/v1alpha1" => {
                    serde_json::from_value::<v1alpha1::Subscription>(object.clone())
                        .map_err(bad)?
                        .into()
                }
                other => {
                    return Err(format!(
                        "cannot convert Subscription {name:?} from {other:?}"
                    ));
                }
            };
            let mut converted = match desired {
                "dapr.io/v2alpha1" => serde_json::to_value(as_v2),
                "dapr.io/v1alpha1" => serde_json::to_value(v1alpha1::Subscription::from(as_v2)),
                other => return Err(format!("cannot convert Subscription {name:?} to {other:?}")),
            }
            .map_err(|e| e.to_string())?;
            converted["apiVersion"] = Value::String(desired.to_owned());
            converted["kind"] = Value::String("Subscription".into());
            Ok(converted)
        })
        .collect()
}

/// Answers a ConversionReview.
pub fn review_conversion(review: ConversionReview, metrics: &Metrics) -> ConversionReview {
    let request = match ConversionRequest::from_review(review) {
        Ok(request) => request,
        Err(_) => {
            Metrics::count(&metrics.conversions, "invalid");
            return ConversionResponse::invalid(Status::failure(
                "the ConversionReview has no request",
                "BadRequest",
            ))
            .into_review();
        }
    };
    let desired = request.desired_api_version.clone();
    let objects = request.objects.clone();
    let response = ConversionResponse::for_request(request);
    match convert_objects(&desired, objects) {
        Ok(converted) => {
            Metrics::count(&metrics.conversions, "converted");
            response.success(converted).into_review()
        }
        Err(message) => {
            Metrics::count(&metrics.conversions, "failed");
            response
                .failure(Status::failure(&message, "Invalid"))
                .into_review()
        }
    }
}

/// Answers a Component AdmissionReview: denials refuse, warnings are shown by kubectl.
pub fn review_component(
    review: AdmissionReview<DynamicObject>,
    metrics: &Metrics,
) -> AdmissionReview<DynamicObject> {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(_) => {
            return AdmissionResponse::invalid("the AdmissionReview has no request").into_review();
        }
    };
    let response = AdmissionResponse::from(&request);
    let Some(object) = request.object.as_ref() else {
        return response.into_review();
    };
    let component: Component = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(c) => c,
        Err(e) => {
            Metrics::count(&metrics.validations, "denied");
            return response
                .deny(format!("not a valid Component: {e}"))
                .into_review();
        }
    };
    let verdict = crate::validate::validate(&component);
    let mut response = if verdict.denials.is_empty() {
        Metrics::count(
            &metrics.validations,
            if verdict.warnings.is_empty() {
                "allowed"
            } else {
                "warned"
            },
        );
        response
    } else {
        Metrics::count(&metrics.validations, "denied");
        response.deny(verdict.denials.join("; "))
    };
    if !verdict.warnings.is_empty() {
        response.warnings = Some(verdict.warnings);
    }
    response.into_review()
}

/// The webhook routes.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            daprs_api::crd::CONVERSION_PATH,
            post(
                |State(m): State<Arc<Metrics>>, Json(review): Json<ConversionReview>| async move {
                    Json(review_conversion(review, &m))
                },
            ),
        )
        .route(
            VALIDATE_PATH,
            post(
                |State(m): State<Arc<Metrics>>,
                 Json(review): Json<AdmissionReview<DynamicObject>>| async move {
                    Json(review_component(review, &m))
                },
            ),
        )
        .with_state(metrics)
}

/// Serves `app` over TLS on `listener` until `shutdown`.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: watch::Receiver<bool>,
) {
    let incoming = daprs_api::tls::tls_incoming(listener, tls);
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    crate::grpc_server::serve_connections("webhook", incoming, shutdown, |stream| {
        builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()))
            .into_owned()
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use serde_json::json;
    use tower::ServiceExt;

    async fn post_json(path: &str, body: Value) -> Value {
        let response = router(Arc::new(Metrics::default()))
            .oneshot(
                http::Request::post(path)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn v1(name: &str) -> Value {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Subscription",
               "metadata": {"name": name, "namespace": "ns", "uid": "u1"},
               "scopes": ["app"],
               "spec": {"pubsubname": "pubsub", "topic": "orders", "route": "/orders"}})
    }

    #[tokio::test]
    async fn conversion_reviews_convert_both_ways() {
        let review = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "request": {"uid": "r1", "desiredAPIVersion": "dapr.io/v2alpha1", "objects": [v1("a")]}});
        let answer = post_json("/convert", review).await;
        assert_eq!(answer["response"]["uid"], "r1");
        assert_eq!(answer["response"]["result"]["status"], "Success");
        let converted = &answer["response"]["convertedObjects"][0];
        assert_eq!(converted["apiVersion"], "dapr.io/v2alpha1");
        assert_eq!(converted["spec"]["routes"]["default"], "/orders");
        assert_eq!(converted["metadata"]["uid"], "u1", "metadata is kept");
        assert_eq!(converted["scopes"], json!(["app"]));

        let back = convert_objects("dapr.io/v1alpha1", vec![converted.clone()]).unwrap();
        assert_eq!(back[0]["spec"]["route"], "/orders");
        assert_eq!(back[0]["apiVersion"], "dapr.io/v1alpha1");
    }

    #[tokio::test]
    async fn an_unconvertible_object_fails_the_review_with_a_reason_not_a_5xx() {
        let review = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
            "request": {"uid": "r2", "desiredAPIVersion": "dapr.io/v3", "objects": [v1("a")]}});
        let answer = post_json("/convert", review).await;
        assert_eq!(answer["response"]["result"]["status"], "Failure");
        assert!(
            answer["response"]["result"]["message"]
                .as_str()
                .unwrap()
                .contains("dapr.io/v3")
        );
    }

    fn admission(spec: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "a1", "kind": {"group": "dapr.io", "version": "v1alpha1", "kind": "Component"},
                "resource": {"group": "dapr.io", "version": "v1alpha1", "resource": "components"},
                "operation": "CREATE", "userInfo": {"username": "me"}, "name": "c", "namespace": "ns",
                "object": {"apiVersion": "dapr.io/v1alpha1", "kind": "Component",
                           "metadata": {"name": "c", "namespace": "ns"}, "spec": spec}}})
    }

    #[tokio::test]
    async fn components_are_denied_or_warned_through_the_router() {
        let denied = post_json(
            VALIDATE_PATH,
            admission(json!({"type": "state.redis", "version": "v1", "metadata": []})),
        )
        .await;
        assert_eq!(denied["response"]["uid"], "a1");
        assert_eq!(denied["response"]["allowed"], false);
        assert!(
            denied["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("redisHost")
        );

        let warned = post_json(VALIDATE_PATH, admission(json!({"type": "state.redis", "version": "v1",
            "metadata": [{"name": "redisHost", "value": "r"}, {"name": "redisPasword", "value": "x"}]}))).await;
        assert_eq!(warned["response"]["allowed"], true);
        assert!(
            warned["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("redisPassword")
        );
    }
}
