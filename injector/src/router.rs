//! The HTTP face of [`crate::mutate`]: `POST /mutate` turns an `AdmissionReview` into a
//! decision, a log line and metrics. No TLS here (see [`crate::serve`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tracing::{Span, field};

use crate::admission::{AdmissionResponse, AdmissionReview, ReviewResponse};
use crate::config::InjectorConfig;
use crate::metrics::Metrics;
use crate::mutate::{Components, Context, Decision, DenyReason, mutate, wants_components};

/// Largest review accepted (the API server's own request limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;

/// What changes while the injector runs: the trust anchors and the mTLS setting.
#[derive(Debug)]
pub struct Live {
    trust_anchors: RwLock<Option<Arc<str>>>,
    mtls_enabled: AtomicBool,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            trust_anchors: RwLock::new(None),
            mtls_enabled: AtomicBool::new(true),
        }
    }
}

impl Live {
    /// Replaces the trust anchors (PEM) that new sidecars get; returns true if they changed.
    pub fn set_trust_anchors(&self, pem: &str) -> bool {
        let mut current = self
            .trust_anchors
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if current.as_deref() == Some(pem) {
            return false;
        }
        *current = Some(Arc::from(pem));
        true
    }

    pub fn trust_anchors(&self) -> Option<Arc<str>> {
        self.trust_anchors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_mtls_enabled(&self, enabled: bool) {
        self.mtls_enabled.store(enabled, Ordering::Relaxed);
    }

    pub fn mtls_enabled(&self) -> bool {
        self.mtls_enabled.load(Ordering::Relaxed)
    }
}

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<InjectorConfig>,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    /// The API server, to list Components for `dapr.io/inject-pluggable-components`;
    /// `None` in standalone mode (such pods are then denied: nothing to list them from).
    pub client: Option<kube::Client>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("live", &self.live)
            .field("client", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// `POST /mutate`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn review_json(api_version: &str, response: AdmissionResponse) -> Response {
    axum::Json(ReviewResponse::new(api_version, response)).into_response()
}

async fn mutate_handler(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.metrics.requests.inc();
    // Transport mistakes are HTTP errors (as Dapr answers them); anything about the review
    // itself is an AdmissionReview answer, never a 5xx.
    if body.is_empty() {
        state.metrics.failed(None, "malformed_review");
        return (
            StatusCode::BAD_REQUEST,
            "empty body: expected an AdmissionReview\n",
        )
            .into_response();
    }
    if !is_json(&headers) {
        state.metrics.failed(None, "malformed_review");
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json\n",
        )
            .into_response();
    }
    let review: AdmissionReview = match serde_json::from_slice(&body) {
        Ok(review) => review,
        Err(error) => {
            // Echo what can be salvaged so the API server can match the answer.
            let loose: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let version = loose["apiVersion"].as_str().unwrap_or_default();
            let uid = loose["request"]["uid"].as_str().unwrap_or_default();
            state.metrics.failed(None, "malformed_review");
            tracing::warn!(%error, uid, "malformed AdmissionReview");
            return review_json(
                version,
                AdmissionResponse::invalid(uid, format!("malformed AdmissionReview: {error}")),
            );
        }
    };
    let Some(request) = review.request else {
        state.metrics.failed(None, "malformed_review");
        return review_json(
            &review.api_version,
            AdmissionResponse::invalid("", "the AdmissionReview has no request".into()),
        );
    };

    let span = tracing::info_span!(
        "admission",
        uid = %request.uid,
        namespace = request.namespace.as_deref().unwrap_or_default(),
        user = %request.user_info.username,
        app_id = field::Empty,
        decision = field::Empty,
        reason = field::Empty,
    );
    let _entered = span.enter();
    let anchors = state.live.trust_anchors();
    // The only IO of an admission, and only for pods that ask for it.
    let listed = if wants_components(&request) {
        let namespace = request.namespace.as_deref().unwrap_or_default();
        Some(match &state.client {
            Some(client) => crate::webhook::list_components(client, namespace).await,
            None => Err(
                "the injector runs in standalone mode, without a Kubernetes API client".to_owned(),
            ),
        })
    } else {
        None
    };
    let components = match &listed {
        None => Components::NotListed,
        Some(Ok(list)) => Components::Listed(list),
        Some(Err(error)) => Components::Failed(error),
    };
    let decision = mutate(
        &request,
        &state.config,
        Context {
            trust_anchors: anchors.as_deref(),
            mtls_enabled: state.live.mtls_enabled(),
            components,
        },
    );
    let response = match decision {
        Decision::Inject {
            app_id,
            native,
            operations,
            warnings,
        } => {
            record(&span, &app_id, "inject", "");
            state.metrics.succeeded(&app_id);
            tracing::info!(
                native,
                operations = operations.len(),
                warnings = warnings.len(),
                "sidecar injected"
            );
            AdmissionResponse::allow(&request.uid, &operations, warnings)
        }
        Decision::Skip { skip, warnings } => {
            record(&span, "", "skip", skip.reason());
            state.metrics.skipped(skip.reason());
            tracing::info!(?skip, "admitted without a sidecar");
            AdmissionResponse::allow(&request.uid, &[], warnings)
        }
        Decision::Deny {
            reason,
            app_id,
            message,
            warnings,
        } => {
            let app_id = app_id.filter(|_| reason != DenyReason::InvalidAppId);
            record(
                &span,
                app_id.as_deref().unwrap_or_default(),
                "deny",
                reason.reason(),
            );
            state.metrics.failed(app_id.as_deref(), reason.reason());
            tracing::warn!(%message, "pod denied");
            AdmissionResponse::deny(&request.uid, message, warnings)
        }
    };
    review_json(&review.api_version, response)
}

fn record(span: &Span, app_id: &str, decision: &str, reason: &str) {
    span.record("app_id", app_id);
    span.record("decision", decision);
    span.record("reason", reason);
}

#[cfg(test)]
mod tests;
