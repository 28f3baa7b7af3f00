//! `configurations.dapr.io`: the settings of a sidecar (tracing, access control, mTLS...) and,
//! as `daprsystem`, of the control plane. No `scopes`.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{NameValuePair, ResourceStatus, any_object, dynamic_value};

/// `spec` of a Configuration; sections daprs does not interpret are kept as given.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "dapr.io",
    version = "v1alpha1",
    kind = "Configuration",
    namespaced,
    status = "ResourceStatus",
    derive = "PartialEq",
    derive = "Default",
    label("app.kubernetes.io/part-of", "dapr"),
    doc = "A Dapr configuration: sidecar or control-plane settings.",
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
#[serde(rename_all = "camelCase")]
pub struct ConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_control: Option<AccessControlSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_http_pipeline: Option<PipelineSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_pipeline: Option<PipelineSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<ComponentsSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<FeatureSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
    /// Older spelling of `metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_resolution: Option<NameResolutionSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub workflow: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessControlSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trust_domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AppPolicySpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppPolicySpec {
    pub app_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trust_domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<AppOperationAction>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppOperationAction {
    pub name: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_verb: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<ApiAccessRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied: Vec<ApiAccessRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiAccessRule {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PipelineSpec {
    pub handlers: Vec<HandlerSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HandlerSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<SelectorSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectorSpec {
    pub fields: Vec<SelectorField>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SelectorField {
    pub field: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComponentsSpec {
    /// Component types that may not be loaded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FeatureSpec {
    pub name: String,
    pub enabled: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_logging: Option<ApiLoggingSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiLoggingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "obfuscateURLs")]
    pub obfuscate_urls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit_health_checks: Option<bool>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricSpec {
    /// Unset means enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub http: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "dynamic_value")]
    pub rules: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_distribution_buckets: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_error_codes: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub workflow: Option<serde_json::Value>,
}

/// mTLS settings; on `daprsystem` they configure sentry and every sidecar.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MtlsSpec {
    /// Unset means enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "String::is_empty",
        rename = "workloadCertTTL"
    )]
    pub workload_cert_ttl: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub allowed_clock_skew: String,
    pub control_plane_trust_domain: String,
    pub sentry_address: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_validators: Vec<TokenValidatorSpec>,
}

impl MtlsSpec {
    /// Dapr's rule: mTLS is on unless `enabled: false`.
    pub fn is_enabled(&self) -> bool {
        self.enabled.unwrap_or(true)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TokenValidatorSpec {
    pub name: TokenValidatorName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub options: Option<serde_json::Value>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenValidatorName {
    #[default]
    Jwks,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NameResolutionSpec {
    pub component: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "dynamic_value")]
    pub configuration: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretsSpec {
    #[serde(default)]
    pub scopes: Vec<SecretsScope>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretsScope {
    pub store_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub default_access: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_secrets: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// A number from 0 to 1 as text, e.g. `"1"`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sampling_rate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zipkin: Option<ZipkinSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel: Option<OtelSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpec {
    pub endpoint_address: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtelSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_secure: Option<bool>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub timeout: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<NameValuePair>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WasmSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_sandbox: Option<bool>,
}
