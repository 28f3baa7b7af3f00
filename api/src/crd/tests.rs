use super::subscription::{v1alpha1, v2alpha1};
use super::*;
use serde_json::json;

#[test]
fn auth_and_scopes_sit_beside_spec_and_component_spec_fields_are_always_written() {
    let component: Component = serde_json::from_value(json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "statestore", "namespace": "default"},
        "auth": {"secretStore": "vault"},
        "scopes": ["orders"],
        "spec": {"type": "state.redis", "version": "v1", "metadata": [
            {"name": "redisHost", "value": "redis:6379"},
            {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
            {"name": "maxRetries", "value": 3}
        ]}
    }))
    .unwrap();
    assert_eq!(component.spec.auth.as_ref().unwrap().secret_store, "vault");
    assert_eq!(component.spec.scopes, ["orders"]);
    assert_eq!(component.type_(), "state.redis");
    assert_eq!(component.spec.spec.metadata[2].value, Some(json!(3)));
    let back = serde_json::to_value(&component).unwrap();
    assert_eq!(back["scopes"], json!(["orders"]));
    assert!(back["spec"].get("scopes").is_none());
    assert_eq!(back["spec"]["ignoreErrors"], json!(false));
    assert_eq!(back["spec"]["initTimeout"], json!(""));
}

#[test]
fn the_subscription_crd_stores_v2alpha1_and_converts_through_the_webhook() {
    let crd = subscription_definition();
    let versions: Vec<_> = crd
        .spec
        .versions
        .iter()
        .map(|v| (v.name.as_str(), v.served, v.storage))
        .collect();
    assert_eq!(
        versions,
        [("v1alpha1", true, false), ("v2alpha1", true, true)]
    );
    let conversion = crd.spec.conversion.unwrap();
    assert_eq!(conversion.strategy, "Webhook");
    let webhook = conversion.webhook.unwrap();
    let service = webhook.client_config.unwrap().service.unwrap();
    assert_eq!(
        (service.name.as_str(), service.path.as_deref()),
        ("dapr-webhook", Some("/convert"))
    );
    assert_eq!(webhook.conversion_review_versions, ["v1", "v2alpha1"]);
}

#[test]
fn every_crd_has_a_status_subresource_and_the_dapr_label() {
    for crd in definitions() {
        assert_eq!(crd.spec.group, GROUP);
        assert_eq!(crd.spec.scope, "Namespaced");
        let labels = crd.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some("dapr"),
            "{:?}",
            crd.metadata.name
        );
        for version in &crd.spec.versions {
            assert!(
                version
                    .subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some(),
                "{:?} {}",
                crd.metadata.name,
                version.name
            );
        }
    }
}

#[test]
fn subscription_conversion_maps_route_and_drops_rules_as_dapr_does() {
    let v2: v2alpha1::Subscription = serde_json::from_value(json!({
        "apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
        "metadata": {"name": "orders"},
        "scopes": ["checkout"],
        "spec": {"pubsubname": "pubsub", "topic": "orders", "deadLetterTopic": "dead",
                 "metadata": {"rawPayload": "true"},
                 "bulkSubscribe": {"enabled": true, "maxMessagesCount": 10},
                 "routes": {"default": "/orders", "rules": [{"match": "event.type == 'x'", "path": "/x"}]}}
    }))
    .unwrap();
    let v1: v1alpha1::Subscription = v2.clone().into();
    assert_eq!(v1.spec.spec.route, "/orders");
    assert_eq!(v1.spec.scopes, ["checkout"]);
    assert_eq!(v1.spec.spec.dead_letter_topic, "dead");
    assert_eq!(v1.spec.spec.metadata["rawPayload"], "true");
    assert_eq!(
        v1.spec
            .spec
            .bulk_subscribe
            .as_ref()
            .unwrap()
            .max_messages_count,
        Some(10)
    );
    let back: v2alpha1::Subscription = v1.into();
    assert_eq!(back.spec.spec.routes.default, "/orders");
    assert!(back.spec.spec.routes.rules.is_empty(), "rules are lost");
    assert_eq!(back.spec.spec.topic, v2.spec.spec.topic);
}

#[test]
fn scopes_follow_daprs_rule() {
    let object = json!({"scopes": ["a", "b"]});
    let scopes = scopes_of(&object);
    assert!(in_scope(&scopes, "a"));
    assert!(!in_scope(&scopes, "c"));
    assert!(in_scope(&scopes_of(&json!({})), "anyone"));
}
