//! The committed `crds/*.yaml` match the types, and typical real-world Dapr manifests
//! deserialize into the types and validate against the generated schemas.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use daprs_api::crd::subscription::{v1alpha1, v2alpha1};
use daprs_api::crd::{Component, Configuration, HTTPEndpoint, Resiliency};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::{Value, json};

fn crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap()
}

#[test]
fn committed_crds_match_the_types() {
    let rendered = daprs_operator::crds::render_all().unwrap();
    let mut expected = BTreeSet::new();
    for (name, yaml) in &rendered {
        expected.insert(name.clone());
        let committed = std::fs::read_to_string(crds_dir().join(name)).unwrap_or_default();
        assert!(
            committed == *yaml,
            "crds/{name} is out of date: run `cargo run -p daprs-operator --bin crdgen` and commit the result"
        );
    }
    let present: BTreeSet<String> = std::fs::read_dir(crds_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    assert_eq!(present, expected, "crds/ holds files crdgen does not write");
}

/// A small structural-schema check, enough to catch what the API server would prune or
/// refuse: unknown fields, missing required fields, wrong JSON types, values outside an enum.
fn validate(schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true))
        && schema.get("properties").is_none()
    {
        return;
    }
    if value.is_null() && schema.get("nullable") == Some(&json!(true)) {
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {allowed:?}"));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!(
            "{path}: expected {}, found {value}",
            ty.unwrap_or("?")
        ));
        return;
    }
    if let Some(object) = value.as_object() {
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = required.as_str().unwrap();
            if !object.contains_key(key) {
                errors.push(format!("{path}.{key}: required"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        for (key, child) in object {
            if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let child_path = format!("{path}.{key}");
            match (properties.and_then(|p| p.get(key)), additional) {
                (Some(s), _) => validate(s, child, &child_path, errors),
                (None, Some(s)) if s.is_object() => validate(s, child, &child_path, errors),
                _ if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true)) => {}
                _ => errors.push(format!(
                    "{child_path}: unknown field (the API server would drop it)"
                )),
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(items, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn schema_for(manifest: &Value) -> Value {
    let (group_version, kind) = (
        manifest["apiVersion"].as_str().unwrap(),
        manifest["kind"].as_str().unwrap(),
    );
    let (group, version) = group_version.split_once('/').unwrap();
    let crd: CustomResourceDefinition = daprs_api::crd::definitions()
        .into_iter()
        .find(|c| c.spec.group == group && c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"));
    let version = crd
        .spec
        .versions
        .into_iter()
        .find(|v| v.name == version)
        .unwrap();
    serde_json::to_value(version.schema.unwrap().open_api_v3_schema.unwrap()).unwrap()
}

fn schema_errors(manifest: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    validate(&schema_for(manifest), manifest, "", &mut errors);
    errors
}

#[test]
fn typical_dapr_manifests_validate_and_deserialize() {
    type Check = fn(Value);
    let cases: &[(&str, Check)] = &[
        ("redis-statestore.yaml", |v| {
            let c: Component = serde_json::from_value(v).unwrap();
            assert_eq!(c.type_(), "state.redis");
            let password = &c.spec.spec.metadata[1];
            assert_eq!(
                password.secret_key_ref.as_ref().unwrap().key,
                "redis-password"
            );
            assert_eq!(c.spec.scopes, ["orders", "checkout"]);
        }),
        ("kafka-pubsub.yaml", |v| {
            let c: Component = serde_json::from_value(v).unwrap();
            assert_eq!(c.type_(), "pubsub.kafka");
            assert_eq!(
                c.spec.spec.metadata[5].value,
                Some(json!(1024)),
                "numbers stay numbers"
            );
        }),
        ("configuration.yaml", |v| {
            let c: Configuration = serde_json::from_value(v).unwrap();
            let mtls = c.spec.mtls.unwrap();
            assert!(mtls.is_enabled());
            assert_eq!(mtls.workload_cert_ttl, "24h");
            let acl = c.spec.access_control.unwrap();
            assert_eq!(acl.policies[0].operations[0].http_verb, ["POST", "GET"]);
            assert_eq!(c.spec.tracing.unwrap().sampling_rate, "1");
        }),
        ("subscription-v1alpha1.yaml", |v| {
            let s: v1alpha1::Subscription = serde_json::from_value(v).unwrap();
            assert_eq!(s.spec.spec.route, "/orders");
        }),
        ("subscription-v2alpha1.yaml", |v| {
            let s: v2alpha1::Subscription = serde_json::from_value(v).unwrap();
            assert_eq!(s.spec.spec.routes.rules.len(), 2);
            assert_eq!(
                s.spec.spec.bulk_subscribe.unwrap().max_messages_count,
                Some(100)
            );
        }),
        ("resiliency.yaml", |v| {
            let r: Resiliency = serde_json::from_value(v).unwrap();
            assert_eq!(
                r.spec.spec.policies.retries["retryForever"].max_retries,
                Some(-1)
            );
            let actor = &r.spec.spec.targets.actors["myActorType"];
            assert_eq!(actor.circuit_breaker_scope, "both");
            assert_eq!(actor.policies.circuit_breaker, "simpleCB");
        }),
        ("httpendpoint.yaml", |v| {
            let h: HTTPEndpoint = serde_json::from_value(v).unwrap();
            let tls = h.spec.spec.client_tls.unwrap();
            assert_eq!(
                tls.private_key.unwrap().secret_key_ref.unwrap().key,
                "tls.key"
            );
        }),
    ];
    for (name, check) in cases {
        let manifest = fixture(name);
        let errors = schema_errors(&manifest);
        assert!(errors.is_empty(), "{name}: {errors:#?}");
        check(manifest);
    }
}

#[test]
fn the_schema_check_catches_typos_missing_fields_and_wrong_types() {
    let mut manifest = fixture("redis-statestore.yaml");
    manifest["spec"]["metdata"] = json!([]);
    manifest["spec"]["metadata"][0]["valueFrom"] = json!("x");
    manifest["spec"]["ignoreErrors"] = json!("yes");
    manifest["spec"].as_object_mut().unwrap().remove("version");
    let errors = schema_errors(&manifest);
    for needle in [
        ".spec.metdata: unknown",
        ".spec.metadata[0].valueFrom: unknown",
        ".spec.ignoreErrors: expected boolean",
        ".spec.version: required",
    ] {
        assert!(
            errors.iter().any(|e| e.contains(needle)),
            "{needle} not in {errors:#?}"
        );
    }
    let mut endpoint = fixture("httpendpoint.yaml");
    endpoint["spec"]["clientTLS"]["renegotiation"] = json!("Always");
    assert!(
        schema_errors(&endpoint)
            .iter()
            .any(|e| e.contains("renegotiation"))
    );
}

#[test]
fn auth_and_scopes_are_top_level_in_the_schemas() {
    for (kind, auth) in [
        ("Component", true),
        ("HTTPEndpoint", true),
        ("Resiliency", false),
        ("Subscription", false),
    ] {
        let crd = daprs_api::crd::definitions()
            .into_iter()
            .find(|c| c.spec.names.kind == kind)
            .unwrap();
        let schema = serde_json::to_value(
            crd.spec
                .versions
                .last()
                .unwrap()
                .schema
                .clone()
                .unwrap()
                .open_api_v3_schema
                .unwrap(),
        )
        .unwrap();
        let properties = schema["properties"].as_object().unwrap();
        assert!(properties.contains_key("scopes"), "{kind}");
        assert_eq!(properties.contains_key("auth"), auth, "{kind}");
        assert!(
            schema["properties"]["spec"]["properties"]
                .get("scopes")
                .is_none(),
            "{kind}"
        );
    }
}
