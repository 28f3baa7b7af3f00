//! `subscriptions.dapr.io`: declarative pub/sub subscriptions, in Dapr's two versions.
//! `v2alpha1` is stored; `v1alpha1` is served and converted by the operator's webhook
//! (`spec.route` ↔ `spec.routes.default`; routing rules do not exist in `v1alpha1`).

// `printcolumn(...)` repeats `type_` per column by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `bulkSubscribe` of both versions.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkSubscribe {
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages_count: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_await_duration_ms: Option<i32>,
}

pub mod v1alpha1 {
    //! The first Subscription version: one `route`.

    use super::*;
    use crate::crd::common::ResourceStatus;
    use kube::CustomResource;

    /// The fields of a v1alpha1 Subscription besides `metadata` and `status`.
    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "dapr.io",
        version = "v1alpha1",
        kind = "Subscription",
        namespaced,
        no_spec,
        status = "ResourceStatus",
        derive = "PartialEq",
        derive = "Default",
        storage = false,
        label("app.kubernetes.io/part-of", "dapr"),
        doc = "A declarative Dapr pub/sub subscription (v1alpha1: a single route).",
        printcolumn(name = "Pubsub", type_ = "string", json_path = ".spec.pubsubname"),
        printcolumn(name = "Topic", type_ = "string", json_path = ".spec.topic"),
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
    pub struct SubscriptionFields {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub scopes: Vec<String>,
        pub spec: SubscriptionSpec,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SubscriptionSpec {
        pub pubsubname: String,
        pub topic: String,
        pub route: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub metadata: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub dead_letter_topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bulk_subscribe: Option<BulkSubscribe>,
    }
}

pub mod v2alpha1 {
    //! The stored Subscription version: a default route and CEL routing rules.

    use super::*;
    use crate::crd::common::ResourceStatus;
    use kube::CustomResource;

    /// The fields of a v2alpha1 Subscription besides `metadata` and `status`.
    #[derive(
        CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema,
    )]
    #[kube(
        group = "dapr.io",
        version = "v2alpha1",
        kind = "Subscription",
        namespaced,
        no_spec,
        status = "ResourceStatus",
        derive = "PartialEq",
        derive = "Default",
        storage = true,
        label("app.kubernetes.io/part-of", "dapr"),
        doc = "A declarative Dapr pub/sub subscription.",
        printcolumn(name = "Pubsub", type_ = "string", json_path = ".spec.pubsubname"),
        printcolumn(name = "Topic", type_ = "string", json_path = ".spec.topic"),
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
    pub struct SubscriptionFields {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub scopes: Vec<String>,
        pub spec: SubscriptionSpec,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct SubscriptionSpec {
        pub pubsubname: String,
        pub topic: String,
        pub routes: Routes,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub metadata: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub dead_letter_topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub bulk_subscribe: Option<BulkSubscribe>,
    }

    /// Where messages go: the first rule whose CEL `match` holds, else `default`.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "(has(self.default) && size(self.default) > 0) || (has(self.rules) && size(self.rules) > 0)",
        "message": "spec.routes needs a default route or at least one rule, or no message is ever delivered"
    }]))]
    pub struct Routes {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub rules: Vec<Rule>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub default: String,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    pub struct Rule {
        /// A CEL expression over the CloudEvent, e.g. `event.type == "order"`.
        #[serde(rename = "match")]
        pub match_: String,
        pub path: String,
    }
}

impl From<v1alpha1::Subscription> for v2alpha1::Subscription {
    /// Dapr's conversion: `route` becomes `routes.default`.
    fn from(old: v1alpha1::Subscription) -> Self {
        let v1alpha1::SubscriptionSpec {
            pubsubname,
            topic,
            route,
            metadata,
            dead_letter_topic,
            bulk_subscribe,
        } = old.spec.spec;
        Self {
            metadata: old.metadata,
            spec: v2alpha1::SubscriptionFields {
                scopes: old.spec.scopes,
                spec: v2alpha1::SubscriptionSpec {
                    pubsubname,
                    topic,
                    routes: v2alpha1::Routes {
                        rules: Vec::new(),
                        default: route,
                    },
                    metadata,
                    dead_letter_topic,
                    bulk_subscribe,
                },
            },
            status: old.status,
        }
    }
}

impl From<v2alpha1::Subscription> for v1alpha1::Subscription {
    /// Dapr's conversion: `routes.default` becomes `route`; rules have no v1alpha1 form and
    /// are dropped.
    fn from(new: v2alpha1::Subscription) -> Self {
        let v2alpha1::SubscriptionSpec {
            pubsubname,
            topic,
            routes,
            metadata,
            dead_letter_topic,
            bulk_subscribe,
        } = new.spec.spec;
        Self {
            metadata: new.metadata,
            spec: v1alpha1::SubscriptionFields {
                scopes: new.spec.scopes,
                spec: v1alpha1::SubscriptionSpec {
                    pubsubname,
                    topic,
                    route: routes.default,
                    metadata,
                    dead_letter_topic,
                    bulk_subscribe,
                },
            },
            status: new.status,
        }
    }
}
