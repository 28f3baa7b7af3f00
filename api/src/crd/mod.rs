//! The Dapr resource types (group `dapr.io`), shaped exactly as Dapr's so existing manifests
//! apply unchanged, plus what daprs adds: a `status` subresource (`conditions`,
//! `observedGeneration`; per-app load results on Components), printer columns and CEL rules
//! for mistakes the API server can catch.
//!
//! [`definitions`] is the source of the committed `crds/*.yaml` (written by the operator's
//! `crdgen`) and of what the operator applies at start-up.

pub mod common;
pub mod component;
pub mod configuration;
pub mod http_endpoint;
pub mod resiliency;
pub mod subscription;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceConversion, CustomResourceDefinition, ServiceReference, WebhookClientConfig,
    WebhookConversion,
};
use kube::CustomResourceExt;

pub use common::{Auth, Condition, NameValuePair, ResourceStatus, SecretKeyRef};
pub use component::{AppLoadStatus, Component, ComponentFields, ComponentSpec, ComponentStatus};
pub use configuration::{Configuration, ConfigurationSpec};
pub use http_endpoint::{HTTPEndpoint, HttpEndpointFields, HttpEndpointSpec};
pub use resiliency::{Resiliency, ResiliencyFields, ResiliencySpec};

/// The API group of every Dapr resource.
pub const GROUP: &str = "dapr.io";
/// The Service in front of the operator's webhooks (Dapr's name).
pub const WEBHOOK_SERVICE_NAME: &str = "dapr-webhook";
/// Path of the Subscription conversion webhook.
pub const CONVERSION_PATH: &str = "/convert";
/// Namespace in the shipped CRD; the operator replaces it with its own (as Dapr does).
pub const PLACEHOLDER_NAMESPACE: &str = "replaceme";
/// Name of the Subscription CRD, whose conversion webhook the operator serves.
pub const SUBSCRIPTION_CRD_NAME: &str = "subscriptions.dapr.io";
/// Versions the conversion webhook understands (Dapr's list).
pub const CONVERSION_REVIEW_VERSIONS: &[&str] = &["v1", "v2alpha1"];

/// Every CRD daprs serves, in a stable order.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![
        Component::crd(),
        Configuration::crd(),
        subscription_definition(),
        Resiliency::crd(),
        HTTPEndpoint::crd(),
    ]
}

/// `subscriptions.dapr.io`: both versions, v2alpha1 stored, converted by the operator's webhook
/// behind the `dapr-webhook` Service in [`PLACEHOLDER_NAMESPACE`].
pub fn subscription_definition() -> CustomResourceDefinition {
    let mut crd = kube::core::crd::merge_crds(
        vec![
            subscription::v1alpha1::Subscription::crd(),
            subscription::v2alpha1::Subscription::crd(),
        ],
        "v2alpha1",
    )
    .expect("both Subscription versions share group, kind and scope");
    crd.spec.versions.sort_by(|a, b| a.name.cmp(&b.name));
    crd.spec.conversion = Some(CustomResourceConversion {
        strategy: "Webhook".into(),
        webhook: Some(WebhookConversion {
            client_config: Some(WebhookClientConfig {
                service: Some(ServiceReference {
                    name: WEBHOOK_SERVICE_NAME.into(),
                    namespace: PLACEHOLDER_NAMESPACE.into(),
                    path: Some(CONVERSION_PATH.into()),
                    port: Some(443),
                }),
                ..WebhookClientConfig::default()
            }),
            conversion_review_versions: CONVERSION_REVIEW_VERSIONS
                .iter()
                .map(|v| v.to_string())
                .collect(),
        }),
    });
    crd
}

/// The scopes of a Dapr object as JSON (`scopes` at the top level): empty means every app.
pub fn scopes_of(object: &serde_json::Value) -> Vec<String> {
    object
        .get("scopes")
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Dapr's scope rule: no scopes, or the app id is listed.
pub fn in_scope(scopes: &[String], app_id: &str) -> bool {
    scopes.is_empty() || scopes.iter().any(|s| s == app_id)
}

#[cfg(test)]
mod tests;
