//! `httpendpoints.dapr.io`: an external HTTP service apps invoke through their sidecar.

// `printcolumn(...)` repeats `type_` per column by design.
#![allow(clippy::duplicated_attributes)]

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Auth, NameValuePair, ResourceStatus, SecretKeyRef};

/// The fields of an HTTPEndpoint besides `metadata` and `status`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v1alpha1",
    kind = "HTTPEndpoint",
    plural = "httpendpoints",
    namespaced,
    no_spec,
    status = "ResourceStatus",
    derive = "PartialEq",
    derive = "Default",
    label("app.kubernetes.io/part-of", "dapr"),
    doc = "An external HTTP endpoint apps invoke through Dapr.",
    printcolumn(name = "Base URL", type_ = "string", json_path = ".spec.baseUrl"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct HttpEndpointFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub spec: HttpEndpointSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.baseUrl.startsWith('http://') || self.baseUrl.startsWith('https://')",
    "message": "spec.baseUrl must start with http:// or https://"
}]))]
pub struct HttpEndpointSpec {
    pub base_url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NameValuePair>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "clientTLS")]
    pub client_tls: Option<ClientTls>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "rootCA")]
    pub root_ca: Option<TlsDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<TlsDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<TlsDocument>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renegotiation: Option<Renegotiation>,
}

/// A PEM document given inline or from a secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::common::dynamic_value")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Renegotiation {
    #[default]
    Never,
    OnceAsClient,
    FreelyAsClient,
}
