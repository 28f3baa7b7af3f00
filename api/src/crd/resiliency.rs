//! `resiliencies.dapr.io`: named timeout, retry and circuit-breaker policies and the targets
//! (apps, actors, components) they apply to.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::ResourceStatus;

/// The fields of a Resiliency besides `metadata` and `status`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v1alpha1",
    kind = "Resiliency",
    plural = "resiliencies",
    namespaced,
    no_spec,
    status = "ResourceStatus",
    derive = "PartialEq",
    derive = "Default",
    label("app.kubernetes.io/part-of", "dapr"),
    doc = "Dapr resiliency policies and the targets they apply to.",
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
pub struct ResiliencyFields {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub spec: ResiliencySpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResiliencySpec {
    pub policies: Policies,
    pub targets: Targets,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policies {
    /// Name → Go duration.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timeouts: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub retries: BTreeMap<String, Retry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub circuit_breakers: BTreeMap<String, CircuitBreaker>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// `constant` or `exponential`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub policy: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub duration: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub max_interval: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matching: Option<RetryMatching>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryMatching {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub http_status_codes: String,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        rename = "gRPCStatusCodes"
    )]
    pub grpc_status_codes: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interval: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    /// A CEL-like expression, e.g. `consecutiveFailures > 5`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Targets {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, EndpointPolicyNames>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub actors: BTreeMap<String, ActorPolicyNames>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub components: BTreeMap<String, ComponentPolicyNames>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyNames {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub retry: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub circuit_breaker: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPolicyNames {
    #[serde(flatten)]
    pub policies: PolicyNames,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker_cache_size: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActorPolicyNames {
    #[serde(flatten)]
    pub policies: PolicyNames,
    /// `type`, `id` or `both`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub circuit_breaker_scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker_cache_size: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentPolicyNames {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<PolicyNames>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<PolicyNames>,
}
