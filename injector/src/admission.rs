//! `AdmissionReview` as the API server sends it (`admission.k8s.io/v1` and `v1beta1`, which
//! have the same shape for what the injector reads) and the responses the injector sends back.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::patch::Operation;

pub const API_VERSION_V1: &str = "admission.k8s.io/v1";
pub const API_VERSION_V1BETA1: &str = "admission.k8s.io/v1beta1";

/// The review the API server posts.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    pub api_version: String,
    pub kind: String,
    pub request: Option<AdmissionRequest>,
}

/// What is being admitted.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub operation: String,
    #[serde(default)]
    pub user_info: UserInfo,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    pub kind: String,
}

/// Who made the request.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The review sent back: the request's `apiVersion` echoed, and the response.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewResponse {
    pub api_version: String,
    pub kind: &'static str,
    pub response: AdmissionResponse,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    pub uid: String,
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// base64 of the JSON Patch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `metav1.Status` as admission responses use it.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub status: &'static str,
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl AdmissionResponse {
    /// Allowed, with `operations` as a JSON patch when there are any.
    pub fn allow(uid: &str, operations: &[Operation], warnings: Vec<String>) -> Self {
        let patch = (!operations.is_empty()).then(|| {
            // A Vec of serialisable operations always serialises.
            let json = serde_json::to_vec(operations).unwrap_or_default();
            base64::engine::general_purpose::STANDARD.encode(json)
        });
        Self {
            uid: uid.to_owned(),
            allowed: true,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status: None,
            warnings,
        }
    }

    /// Denied (403 Forbidden): the pod is refused with `message`.
    pub fn deny(uid: &str, message: String, warnings: Vec<String>) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: false,
            status: Some(Status {
                status: "Failure",
                code: 403,
                reason: "Forbidden",
                message,
            }),
            warnings,
            ..Self::default()
        }
    }

    /// Refused because the review itself is malformed (400 Invalid).
    pub fn invalid(uid: &str, message: String) -> Self {
        Self {
            uid: uid.to_owned(),
            allowed: false,
            status: Some(Status {
                status: "Failure",
                code: 400,
                reason: "Invalid",
                message,
            }),
            ..Self::default()
        }
    }
}

impl ReviewResponse {
    /// A review answering one of `api_version` (v1 unless it was v1beta1).
    pub fn new(api_version: &str, response: AdmissionResponse) -> Self {
        let api_version = if api_version == API_VERSION_V1BETA1 {
            API_VERSION_V1BETA1
        } else {
            API_VERSION_V1
        };
        Self {
            api_version: api_version.to_owned(),
            kind: "AdmissionReview",
            response,
        }
    }
}
