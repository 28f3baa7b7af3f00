//! Admission-time checks of Components against the metadata schema of each component type
//! daprs implements: required fields, value types, known keys (an unknown key is a warning
//! naming the nearest valid one). A type daprs does not implement is a warning, never a
//! denial: the manifest may be meant for another runtime or a pluggable component.

use std::collections::HashSet;

use daprs_api::crd::{Component, NameValuePair};
use serde_json::Value;

/// What a metadata value must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    String,
    Bool,
    Int,
    /// A Go duration (`5s`, `1m30s`) or a whole number.
    Duration,
    OneOf(&'static [&'static str]),
}

/// One metadata field of a component type.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub name: &'static str,
    pub value: ValueType,
    pub required: bool,
}

const fn f(name: &'static str, value: ValueType) -> Field {
    Field {
        name,
        value,
        required: false,
    }
}

const fn required(name: &'static str, value: ValueType) -> Field {
    Field {
        name,
        value,
        required: true,
    }
}

use ValueType::{Bool, Duration, Int, OneOf, String as Text};

/// A component type daprs implements and its metadata.
#[derive(Debug)]
pub struct ComponentSchema {
    pub type_: &'static str,
    pub versions: &'static [&'static str],
    pub fields: &'static [Field],
}

/// Every built-in component type, with its metadata fields.
pub const SCHEMAS: &[ComponentSchema] = &[
    ComponentSchema {
        type_: "state.in-memory",
        versions: &["v1"],
        fields: &[f("actorStateStore", Bool), f("cleanupInterval", Duration)],
    },
    ComponentSchema {
        type_: "state.redis",
        versions: &["v1"],
        fields: &[
            required("redisHost", Text),
            f("redisUsername", Text),
            f("redisPassword", Text),
            f("redisDB", Int),
            f("redisType", OneOf(&["node", "cluster"])),
            f("enableTLS", Bool),
            f("clientCert", Text),
            f("clientKey", Text),
            f("failover", Bool),
            f("sentinelMasterName", Text),
            f("sentinelUsername", Text),
            f("sentinelPassword", Text),
            f("maxRetries", Int),
            f("maxRetryBackoff", Duration),
            f("redisMaxRetries", Int),
            f("redisMinRetryInterval", Duration),
            f("redisMaxRetryInterval", Duration),
            f("dialTimeout", Duration),
            f("readTimeout", Duration),
            f("writeTimeout", Duration),
            f("poolSize", Int),
            f("poolTimeout", Duration),
            f("minIdleConns", Int),
            f("idleTimeout", Duration),
            f("idleCheckFrequency", Duration),
            f("maxConnAge", Duration),
            f("ttlInSeconds", Int),
            f("queryIndexes", Text),
            f("actorStateStore", Bool),
            f("keyPrefix", Text),
        ],
    },
    ComponentSchema {
        type_: "state.postgresql",
        versions: &["v1", "v2"],
        fields: &[
            required("connectionString", Text),
            f("tableName", Text),
            f("metadataTableName", Text),
            f("timeoutInSeconds", Int),
            f("cleanupIntervalInSeconds", Int),
            f("connectionMaxIdleTime", Duration),
            f("maxConns", Int),
            f("queryExecMode", Text),
            f("actorStateStore", Bool),
            f("keyPrefix", Text),
        ],
    },
    ComponentSchema {
        type_: "secretstores.local.file",
        versions: &["v1"],
        fields: &[
            required("secretsFile", Text),
            f("nestedSeparator", Text),
            f("multiValued", Bool),
        ],
    },
    ComponentSchema {
        type_: "secretstores.local.env",
        versions: &["v1"],
        fields: &[f("prefix", Text)],
    },
    ComponentSchema {
        type_: "secretstores.kubernetes",
        versions: &["v1"],
        fields: &[f("defaultNamespace", Text), f("kubeconfigPath", Text)],
    },
];

/// The outcome of a review: denials (the object is refused) and warnings (shown by kubectl).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub denials: Vec<String>,
    pub warnings: Vec<String>,
}

/// Edit distance, for "did you mean" suggestions.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The candidate closest to `word`, when close enough to be a likely typo.
pub fn nearest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            let d = if c.to_ascii_lowercase() == lower {
                0
            } else {
                distance(&lower, &c.to_ascii_lowercase())
            };
            (d, c)
        })
        .filter(|(d, c)| *d <= (c.len() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn text_of(value: &Value) -> Option<std::string::String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Why `value` is not a `ty`, if it is not.
fn type_error(ty: ValueType, value: &Value) -> Option<std::string::String> {
    let text = text_of(value)?;
    let ok = match ty {
        Text => true,
        Bool => matches!(
            text.to_ascii_lowercase().as_str(),
            "true" | "false" | "1" | "0"
        ),
        Int => text.trim().parse::<i64>().is_ok(),
        Duration => {
            text.trim().parse::<i64>().is_ok()
                || daprs_api::duration::parse_go_duration(text.trim()).is_ok()
        }
        OneOf(allowed) => allowed.contains(&text.as_str()),
    };
    (!ok).then(|| match ty {
        Bool => format!("{text:?} is not a boolean: use \"true\" or \"false\""),
        Int => format!("{text:?} is not a whole number"),
        Duration => {
            format!("{text:?} is not a duration: use a Go duration such as \"5s\" or \"1m30s\"")
        }
        OneOf(allowed) => format!("{text:?} is not one of {}", allowed.join(", ")),
        Text => std::string::String::new(),
    })
}

/// Reviews a Component.
pub fn validate(component: &Component) -> Verdict {
    let mut verdict = Verdict::default();
    let spec = &component.spec.spec;
    let mut seen = HashSet::new();
    for item in &spec.metadata {
        if !seen.insert(item.name.as_str()) {
            verdict.denials.push(format!(
                "spec.metadata: {:?} appears more than once; keep one entry",
                item.name
            ));
        }
        let sources = [
            item.value.is_some(),
            item.secret_key_ref.is_some(),
            item.env_ref.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() > 1 {
            verdict.warnings.push(format!(
                "spec.metadata {:?}: give one of value, secretKeyRef or envRef; the others are ignored",
                item.name
            ));
        }
    }
    let Some(schema) = SCHEMAS.iter().find(|s| s.type_ == spec.type_) else {
        let hint = nearest(&spec.type_, SCHEMAS.iter().map(|s| s.type_))
            .map(|n| format!(" (did you mean {n}?)"))
            .unwrap_or_default();
        verdict.warnings.push(format!(
            "component type {:?} is not one daprs implements{hint}; its metadata is not checked",
            spec.type_
        ));
        return verdict;
    };
    if !schema.versions.contains(&spec.version.as_str()) {
        verdict.warnings.push(format!(
            "spec.version {:?}: {} is implemented as {}",
            spec.version,
            schema.type_,
            schema.versions.join(", ")
        ));
    }
    let by_name = |name: &str| schema.fields.iter().find(|f| f.name == name);
    for field in schema.fields.iter().filter(|f| f.required) {
        let given = spec.metadata.iter().find(|m| m.name == field.name);
        if !given.is_some_and(has_value) {
            let hint = spec
                .metadata
                .iter()
                .filter(|m| by_name(&m.name).is_none())
                .find(|m| nearest(&m.name, [field.name]).is_some())
                .map(|m| format!(" ({:?} looks like a misspelling of it)", m.name))
                .unwrap_or_default();
            verdict.denials.push(format!(
                "spec.metadata: {} needs {:?}{hint}; add {{name: {}, value: ...}} or a secretKeyRef",
                schema.type_, field.name, field.name
            ));
        }
    }
    for item in &spec.metadata {
        match by_name(&item.name) {
            Some(field) => {
                if let Some(value) = &item.value
                    && let Some(problem) = type_error(field.value, value)
                {
                    verdict
                        .denials
                        .push(format!("spec.metadata {:?}: {problem}", item.name));
                }
            }
            None => {
                let hint = nearest(&item.name, schema.fields.iter().map(|f| f.name))
                    .map(|n| format!("; did you mean {n:?}?"))
                    .unwrap_or_default();
                verdict.warnings.push(format!(
                    "spec.metadata {:?} is not a field of {}{hint}",
                    item.name, schema.type_
                ));
            }
        }
    }
    verdict
}

fn has_value(item: &NameValuePair) -> bool {
    item.secret_key_ref.is_some()
        || item.env_ref.as_deref().is_some_and(|e| !e.is_empty())
        || item.value.as_ref().is_some_and(|v| !v.is_null() && v != "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn component(type_: &str, metadata: Value) -> Component {
        serde_json::from_value(json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "c"},
            "spec": {"type": type_, "version": "v1", "metadata": metadata}
        }))
        .unwrap()
    }

    #[test]
    fn a_correct_redis_component_passes_cleanly() {
        let verdict = validate(&component(
            "state.redis",
            json!([
                {"name": "redisHost", "value": "redis:6379"},
                {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": "password"}},
                {"name": "enableTLS", "value": false},
                {"name": "maxRetries", "value": "3"},
                {"name": "dialTimeout", "value": "5s"}
            ]),
        ));
        assert_eq!(verdict, Verdict::default());
    }

    #[test]
    fn a_missing_required_field_is_denied_naming_the_misspelling() {
        let verdict = validate(&component(
            "state.redis",
            json!([{"name": "redisHots", "value": "redis:6379"}]),
        ));
        assert_eq!(verdict.denials.len(), 1, "{verdict:?}");
        let denial = &verdict.denials[0];
        assert!(
            denial.contains("\"redisHost\"")
                && denial.contains("\"redisHots\" looks like a misspelling"),
            "{denial}"
        );
        assert!(
            verdict.warnings[0].contains("did you mean \"redisHost\"?"),
            "{verdict:?}"
        );
    }

    #[test]
    fn wrong_value_types_are_denied_with_what_is_allowed() {
        let verdict = validate(&component(
            "state.redis",
            json!([
                {"name": "redisHost", "value": "r:6379"},
                {"name": "enableTLS", "value": "yes please"},
                {"name": "redisDB", "value": "zero"},
                {"name": "dialTimeout", "value": "5 seconds"},
                {"name": "redisType", "value": "sentinel"}
            ]),
        ));
        let all = verdict.denials.join("\n");
        for needle in [
            "not a boolean",
            "not a whole number",
            "Go duration",
            "one of node, cluster",
        ] {
            assert!(all.contains(needle), "{needle} missing in {all}");
        }
        assert_eq!(verdict.denials.len(), 4);
    }

    #[test]
    fn unknown_keys_warn_with_the_nearest_name_and_case_slips_are_caught() {
        let verdict = validate(&component(
            "secretstores.local.file",
            json!([{"name": "secretsFile", "value": "/s.json"}, {"name": "nestedseparator", "value": ":"}, {"name": "zzz", "value": 1}]),
        ));
        assert!(verdict.denials.is_empty());
        assert!(
            verdict.warnings[0].contains("did you mean \"nestedSeparator\"?"),
            "{verdict:?}"
        );
        assert!(!verdict.warnings[1].contains("did you mean"), "{verdict:?}");
    }

    #[test]
    fn unknown_types_are_a_warning_with_a_suggestion() {
        let verdict = validate(&component("state.rediss", json!([])));
        assert!(verdict.denials.is_empty());
        assert!(
            verdict.warnings[0].contains("did you mean state.redis?"),
            "{verdict:?}"
        );
        let kafka = validate(&component(
            "pubsub.kafka",
            json!([{"name": "brokers", "value": "k:9092"}]),
        ));
        assert!(kafka.denials.is_empty() && kafka.warnings[0].contains("not one daprs implements"));
    }

    #[test]
    fn duplicates_are_denied_and_required_values_may_come_from_env_or_secrets() {
        let verdict = validate(&component(
            "state.postgresql",
            json!([{"name": "connectionString", "envRef": "PG"}, {"name": "tableName", "value": "a"}, {"name": "tableName", "value": "b"}]),
        ));
        assert_eq!(verdict.denials.len(), 1, "{verdict:?}");
        assert!(verdict.denials[0].contains("more than once"));
    }

    #[test]
    fn nearest_only_suggests_likely_typos() {
        assert_eq!(
            nearest("redisHots", ["redisHost", "redisDB"]),
            Some("redisHost")
        );
        assert_eq!(nearest("x", ["redisHost"]), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}
