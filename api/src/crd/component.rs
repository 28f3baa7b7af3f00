//! `components.dapr.io`: a building-block implementation (a state store, a pub/sub broker...)
//! and its metadata. `auth` and `scopes` sit beside `spec`, as in Dapr.

// `printcolumn(...)` repeats `type_` per column by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Auth, Condition, NameValuePair};

/// The fields of a Component besides `metadata` and `status`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v1alpha1",
    kind = "Component",
    namespaced,
    no_spec,
    status = "ComponentStatus",
    derive = "PartialEq",
    derive = "Default",
    label("app.kubernetes.io/part-of", "dapr"),
    doc = "A Dapr component: a building-block implementation and its metadata.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Loaded",
        type_ = "integer",
        json_path = ".status.loaded",
        description = "app ids whose sidecars loaded this generation"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.failed",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ComponentFields {
    /// The secret store that resolves `secretKeyRef`s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// App ids allowed to load the component; empty means every app in the namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub spec: ComponentSpec,
}

/// `spec` of a Component. Dapr serialises every field, empty or not.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.type.matches('^[a-z0-9]+(\\\\.[a-zA-Z0-9_-]+)+$')",
        "message": "spec.type must be <building block>.<name>, for example state.redis or pubsub.kafka"
    },
    {
        "rule": "!has(self.initTimeout) || self.initTimeout == '' || self.initTimeout.matches('^([0-9]+(\\\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')",
        "message": "spec.initTimeout must be a Go duration such as 5s, 1m30s or 500ms"
    }
]))]
pub struct ComponentSpec {
    /// `<building block>.<name>`, e.g. `state.redis`.
    #[serde(rename = "type")]
    pub type_: String,
    /// e.g. `v1`.
    pub version: String,
    /// Keep the sidecar running when this component fails to initialise.
    #[serde(default)]
    pub ignore_errors: bool,
    pub metadata: Vec<NameValuePair>,
    /// How long the sidecar waits for initialisation (Go duration, default 5s).
    #[serde(default)]
    pub init_timeout: String,
}

/// What daprs reports about a Component: whether the sidecars that may use it loaded it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComponentStatus {
    /// `Ready`: every app that reported on the current generation loaded it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One entry per app id, written on behalf of that app's sidecars.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["appId"]))]
    pub apps: Vec<AppLoadStatus>,
    /// App ids that loaded the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<i32>,
    /// App ids that failed to load the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
}

/// The load result one app's sidecars reported.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppLoadStatus {
    pub app_id: String,
    /// `Loaded` or `Failed`.
    pub state: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The Component generation the sidecar loaded.
    #[serde(default)]
    pub observed_generation: i64,
    /// RFC 3339 time of the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<String>,
}

/// `AppLoadStatus::state` values.
pub const APP_LOADED: &str = "Loaded";
pub const APP_FAILED: &str = "Failed";

impl Component {
    /// The building-block type, e.g. `state.redis`.
    pub fn type_(&self) -> &str {
        &self.spec.spec.type_
    }
}
