//! Types shared by several Dapr resources: metadata pairs, secret references, `auth`, and the
//! `status` every daprs CRD carries (Dapr's own CRDs have none).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One `metadata` (or `headers`) entry: a name and a value given inline, from a secret, or from
/// an environment variable of the sidecar.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NameValuePair {
    pub name: String,
    /// Any JSON value (string, number, boolean, object); stored as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "dynamic_value")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_ref: Option<String>,
}

/// A key of a secret in the resource's secret store (`auth.secretStore`, by default the
/// Kubernetes Secrets of the resource's namespace).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "size(self.name) > 0",
    "message": "secretKeyRef.name must name a secret (the key defaults to the name)"
}]))]
pub struct SecretKeyRef {
    pub name: String,
    /// The key inside the secret; empty means the secret's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// Where `secretKeyRef`s are resolved.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// The name of a secret store component; empty or `kubernetes` is the built-in store.
    pub secret_store: String,
}

/// The name of the built-in secret store backed by Kubernetes Secrets.
pub const KUBERNETES_SECRET_STORE: &str = "kubernetes";

impl Auth {
    /// True when secrets come from the built-in Kubernetes store.
    pub fn is_kubernetes(auth: Option<&Auth>) -> bool {
        auth.is_none_or(|a| a.secret_store.is_empty() || a.secret_store == KUBERNETES_SECRET_STORE)
    }
}

/// A standard Kubernetes condition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// RFC 3339 time of the last change of `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The status daprs keeps on resources without a richer one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Schema of a value that may be any JSON (Dapr's `DynamicValue`).
pub(crate) fn dynamic_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema of an object whose fields daprs does not interpret (kept as given).
pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// Label every Dapr CRD carries.
pub const PART_OF_LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "dapr");
