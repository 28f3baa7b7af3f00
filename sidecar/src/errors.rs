//! Dapr's API errors: one value rendered as the HTTP JSON body (`{"errorCode","message",
//! "details"}`) or as a gRPC status with google.rpc details, so both APIs agree.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::state::StoreError;

/// The ErrorInfo domain of every Dapr error.
pub const DOMAIN: &str = "dapr.io";
const TYPE_PREFIX: &str = "type.googleapis.com/google.rpc.";
const TRANSACTIONS_HELP_URL: &str =
    "https://docs.dapr.io/reference/components-reference/supported-state-stores/";

/// google.rpc details of a "rich" error (Dapr's kit errors).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rich {
    pub reason: &'static str,
    pub metadata: Vec<(String, String)>,
    /// `(resource_type, resource_name)`.
    pub resource: Option<(String, String)>,
    /// `(field, description)`.
    pub bad_request: Option<(String, String)>,
    /// `(url, description)`.
    pub help: Option<(String, String)>,
}

/// An error of the Dapr API with its HTTP status, gRPC code and `ERR_*` code.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub grpc: Code,
    pub code: &'static str,
    pub message: String,
    pub rich: Option<Box<Rich>>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// A legacy error: status, code and message, no details.
    pub fn legacy(
        status: StatusCode,
        grpc: Code,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            grpc,
            code,
            message: message.into(),
            rich: None,
        }
    }

    fn with_rich(mut self, rich: Rich) -> Self {
        self.rich = Some(Box::new(rich));
        self
    }

    /// The HTTP JSON body.
    pub fn json(&self) -> Value {
        let mut body = json!({ "errorCode": self.code, "message": self.message });
        if let Some(rich) = &self.rich {
            let metadata: serde_json::Map<String, Value> = rich
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let mut details = vec![json!({
                "@type": format!("{TYPE_PREFIX}ErrorInfo"),
                "reason": rich.reason,
                "domain": DOMAIN,
                "metadata": metadata,
            })];
            if let Some((kind, name)) = &rich.resource {
                details.push(json!({
                    "@type": format!("{TYPE_PREFIX}ResourceInfo"),
                    "resource_type": kind,
                    "resource_name": name,
                    "owner": "",
                    "description": "",
                }));
            }
            if let Some((field, description)) = &rich.bad_request {
                details.push(json!({
                    "@type": format!("{TYPE_PREFIX}BadRequest"),
                    "field_violations": [{ "field": field, "description": description }],
                }));
            }
            if let Some((url, description)) = &rich.help {
                details.push(json!({
                    "@type": format!("{TYPE_PREFIX}Help"),
                    "links": [{ "url": url, "description": description }],
                }));
            }
            body["details"] = Value::Array(details);
        }
        body
    }

    /// The gRPC status, with google.rpc details in `grpc-status-details-bin` for rich errors.
    pub fn to_status(&self) -> tonic::Status {
        let Some(rich) = &self.rich else {
            return tonic::Status::new(self.grpc, self.message.clone());
        };
        let mut details = ErrorDetails::new();
        let metadata: HashMap<String, String> = rich.metadata.iter().cloned().collect();
        details.set_error_info(rich.reason, DOMAIN, metadata);
        if let Some((kind, name)) = &rich.resource {
            details.set_resource_info(kind.clone(), name.clone(), "", "");
        }
        if let Some((field, description)) = &rich.bad_request {
            details.add_bad_request_violation(field.clone(), description.clone());
        }
        if let Some((url, description)) = &rich.help {
            details.add_help_link(description.clone(), url.clone());
        }
        tonic::Status::with_error_details(self.grpc, self.message.clone(), details)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.json().to_string()).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> Self {
        error.to_status()
    }
}

fn app_meta(app_id: &str) -> Vec<(String, String)> {
    vec![("appID".to_owned(), app_id.to_owned())]
}

// ---- state -------------------------------------------------------------------------------

pub fn state_store_not_found(store: &str, app_id: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        "ERR_STATE_STORE_NOT_FOUND",
        format!("state store {store} is not found"),
    )
    .with_rich(Rich {
        reason: "DAPR_STATE_NOT_FOUND",
        metadata: app_meta(app_id),
        resource: Some(("state".into(), store.into())),
        ..Rich::default()
    })
}

pub fn state_store_not_configured(app_id: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::FailedPrecondition,
        "ERR_STATE_STORE_NOT_CONFIGURED",
        "state store is not configured",
    )
    .with_rich(Rich {
        reason: "DAPR_STATE_NOT_CONFIGURED",
        metadata: app_meta(app_id),
        resource: Some(("state".into(), String::new())),
        ..Rich::default()
    })
}

pub fn illegal_key(store: &str, key: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        "ERR_MALFORMED_REQUEST",
        format!("input key/keyPrefix '{key}' can't contain '||'"),
    )
    .with_rich(Rich {
        reason: "DAPR_STATE_ILLEGAL_KEY",
        resource: Some(("state".into(), store.into())),
        bad_request: Some((key.into(), "can't contain '||'".into())),
        ..Rich::default()
    })
}

pub fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::legacy(
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        "ERR_MALFORMED_REQUEST",
        message,
    )
}

pub fn transactions_not_supported(store: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Unimplemented,
        "ERR_STATE_STORE_NOT_SUPPORTED",
        format!("state store {store} doesn't support transactions"),
    )
    .with_rich(Rich {
        reason: "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
        resource: Some(("state".into(), store.into())),
        help: Some((
            TRANSACTIONS_HELP_URL.into(),
            "Check the list of state stores and the features they support".into(),
        )),
        ..Rich::default()
    })
}

pub fn query_not_supported(store: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_STATE_STORE_NOT_SUPPORTED",
        format!("state store {store} does not support querying"),
    )
    .with_rich(Rich {
        reason: "DAPR_STATE_QUERYING_NOT_SUPPORTED",
        resource: Some(("state".into(), store.into())),
        ..Rich::default()
    })
}

pub fn state_query(store: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_STATE_QUERY",
        format!("failed query in state store {store}: {error}"),
    )
    .with_rich(Rich {
        reason: "DAPR_STATE_QUERY_FAILED",
        resource: Some(("state".into(), store.into())),
        ..Rich::default()
    })
}

pub fn unsupported_operation(operation: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::BAD_REQUEST,
        Code::Unimplemented,
        "ERR_NOT_SUPPORTED_STATE_OPERATION",
        format!("operation type {operation} not supported"),
    )
}

pub fn state_get(store: &str, key: &str, error: &StoreError) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_STATE_GET",
        format!("fail to get {key} from state store {store}: {error}"),
    )
}

pub fn state_bulk_get(store: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_STATE_BULK_GET",
        format!("failed getting state in state store {store}: {error}"),
    )
}

/// Save and delete failures: 409/Aborted on an ETag mismatch, 400/InvalidArgument on an
/// invalid ETag, 500/Internal otherwise.
pub fn state_write(code: &'static str, message: String, error: &StoreError) -> ApiError {
    let (status, grpc) = match error {
        StoreError::EtagMismatch => (StatusCode::CONFLICT, Code::Aborted),
        StoreError::EtagInvalid => (StatusCode::BAD_REQUEST, Code::InvalidArgument),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal),
    };
    ApiError::legacy(status, grpc, code, message)
}

pub fn state_save(store: &str, error: &StoreError) -> ApiError {
    state_write(
        "ERR_STATE_SAVE",
        format!("failed saving state in state store {store}: {error}"),
        error,
    )
}

pub fn state_delete(key: &str, error: &StoreError) -> ApiError {
    state_write(
        "ERR_STATE_DELETE",
        format!("failed deleting state with key {key}: {error}"),
        error,
    )
}

pub fn state_bulk_delete(error: &StoreError) -> ApiError {
    state_write(
        "ERR_STATE_BULK_DELETE",
        format!("failed deleting state in bulk: {error}"),
        error,
    )
}

pub fn state_transaction(error: &StoreError) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_STATE_TRANSACTION",
        format!("error while executing state transaction: {error}"),
    )
}

// ---- secrets -----------------------------------------------------------------------------

pub fn secret_stores_not_configured() -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::FailedPrecondition,
        "ERR_SECRET_STORES_NOT_CONFIGURED",
        "secret store is not configured",
    )
}

pub fn secret_store_not_found(store: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::UNAUTHORIZED,
        Code::InvalidArgument,
        "ERR_SECRET_STORE_NOT_FOUND",
        format!("failed finding secret store with key {store}"),
    )
}

pub fn secret_permission_denied(store: &str, key: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::FORBIDDEN,
        Code::PermissionDenied,
        "ERR_PERMISSION_DENIED",
        format!("access denied by policy to get \"{key}\" from \"{store}\""),
    )
}

pub fn secret_get(store: &str, key: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_SECRET_GET",
        format!("failed getting secret with key {key} from secret store {store}: {error}"),
    )
}

// ---- runtime -----------------------------------------------------------------------------

pub fn body_read(error: impl std::fmt::Display) -> ApiError {
    ApiError::legacy(
        StatusCode::BAD_REQUEST,
        Code::InvalidArgument,
        "ERR_BODY_READ",
        format!("failed to read request body: {error}"),
    )
}

pub fn health_not_ready(targets: &[&str]) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_HEALTH_NOT_READY",
        format!("dapr is not ready: [{}]", targets.join(" ")),
    )
}

pub fn health_appid_mismatch() -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_HEALTH_APPID_NOT_MATCH",
        "dapr app-id does not match",
    )
}

pub fn outbound_not_ready() -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_OUTBOUND_HEALTH_NOT_READY",
        "dapr outbound is not ready",
    )
}

/// The fall-through of unknown routes: Dapr hands them to service invocation.
pub fn direct_invoke_no_app_id() -> ApiError {
    ApiError::legacy(
        StatusCode::NOT_FOUND,
        Code::NotFound,
        "ERR_DIRECT_INVOKE",
        "failed getting app id either from the URL path or the header dapr-app-id",
    )
}

pub fn direct_invoke_unavailable(app_id: &str) -> ApiError {
    ApiError::legacy(
        StatusCode::INTERNAL_SERVER_ERROR,
        Code::Internal,
        "ERR_DIRECT_INVOKE",
        format!(
            "failed to invoke, id: {app_id}, err: service invocation is not supported by daprs yet"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rich_error_json_matches_dapr() {
        let body = state_store_not_found("nope", "app").json();
        assert_eq!(body["errorCode"], "ERR_STATE_STORE_NOT_FOUND");
        assert_eq!(body["message"], "state store nope is not found");
        assert_eq!(body["details"][0]["reason"], "DAPR_STATE_NOT_FOUND");
        assert_eq!(body["details"][0]["domain"], "dapr.io");
        assert_eq!(
            body["details"][0]["@type"],
            "type.googleapis.com/google.rpc.ErrorInfo"
        );
        assert_eq!(body["details"][0]["metadata"]["appID"], "app");
        let legacy = secret_store_not_found("s").json();
        assert!(legacy.get("details").is_none());
    }

    #[test]
    fn grpc_status_carries_error_info() {
        let status = illegal_key("statestore", "key||").to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "input key/keyPrefix 'key||' can't contain '||'"
        );
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some("DAPR_STATE_ILLEGAL_KEY")
        );
        assert_eq!(
            details.resource_info().map(|r| r.resource_name.as_str()),
            Some("statestore")
        );
        assert_eq!(
            details
                .bad_request()
                .map(|b| b.field_violations[0].field.as_str()),
            Some("key||")
        );
    }

    #[test]
    fn etag_errors_map_to_conflict_and_aborted() {
        let e = state_save("s", &StoreError::EtagMismatch);
        assert_eq!((e.status, e.grpc), (StatusCode::CONFLICT, Code::Aborted));
        let e = state_delete("k", &StoreError::EtagInvalid);
        assert_eq!(
            (e.status, e.grpc),
            (StatusCode::BAD_REQUEST, Code::InvalidArgument)
        );
        let e = state_save("s", &StoreError::Backend("x".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
}
