//! What the operator sends, decoded: Components become [`Manifest`]s (namespace and scopes
//! checked again locally, as Dapr does; inlined secrets decoded), and the resources the
//! sidecar does not act on yet (Subscriptions, Resiliency policies, HTTPEndpoints) are kept
//! by name as the JSON the operator sent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::components::manifest::parse_component;
use crate::components::{ComponentError, Manifest};

/// A Component from the operator, ready to load.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorComponent {
    pub manifest: Manifest,
    /// `metadata.generation`, reported back with the load result.
    pub generation: i64,
}

/// What the operator sent about one component.
#[derive(Debug)]
pub enum Decoded {
    /// For this app: load it.
    Component(Box<OperatorComponent>),
    /// Another namespace's or outside the app's scopes: not for this app.
    NotForUs { name: String },
}

fn name_of(value: &Value) -> String {
    value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Decodes one Component's JSON for `app_id` in `namespace`.
pub fn decode_component(
    bytes: &[u8],
    namespace: &str,
    app_id: &str,
) -> Result<Decoded, ComponentError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ComponentError {
        file: "operator".into(),
        component: String::new(),
        message: format!("the operator sent a Component that is not JSON: {e}"),
    })?;
    let name = name_of(&value);
    let ns = value["metadata"]["namespace"].as_str().unwrap_or_default();
    if (!ns.is_empty() && ns != namespace)
        || !daprs_api::crd::in_scope(&daprs_api::crd::scopes_of(&value), app_id)
    {
        return Ok(Decoded::NotForUs { name });
    }
    let generation = value["metadata"]["generation"].as_i64().unwrap_or(0);
    let origin = PathBuf::from(format!("Component {namespace}/{name}"));
    let yaml: serde_yaml::Value = serde_json::from_value(value).map_err(|e| ComponentError {
        file: origin.display().to_string(),
        component: name.clone(),
        message: format!("unreadable: {e}"),
    })?;
    let mut manifest = parse_component(Path::new(&origin), yaml)?;
    crate::secrets::kubernetes::inline_operator_secrets(&mut manifest.fields)
        .map_err(|message| manifest.error(message))?;
    Ok(Decoded::Component(Box::new(OperatorComponent {
        manifest,
        generation,
    })))
}

/// The kinds the sidecar fetches and keeps but does not act on yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kept {
    Subscription,
    Resiliency,
    HttpEndpoint,
}

impl Kept {
    pub fn kind(self) -> &'static str {
        match self {
            Kept::Subscription => "Subscription",
            Kept::Resiliency => "Resiliency",
            Kept::HttpEndpoint => "HTTPEndpoint",
        }
    }
}

/// The resources the operator sent besides Components, by kind and name, plus the
/// Configuration. Inert for now: pub/sub, resiliency and HTTPEndpoint invocation are not
/// implemented, and a changed Configuration takes effect at the next start (Dapr restarts
/// itself in-process for it).
#[derive(Debug, Default)]
pub struct KeptResources {
    inner: Mutex<KeptInner>,
}

#[derive(Debug, Default)]
struct KeptInner {
    by_kind: BTreeMap<Kept, BTreeMap<String, Value>>,
    configuration: Option<Value>,
}

impl KeptResources {
    fn lock(&self) -> std::sync::MutexGuard<'_, KeptInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces every resource of `kind` (a List), keeping those in `app_id`'s scopes.
    pub fn replace(&self, kind: Kept, items: &[Vec<u8>], app_id: &str) {
        let mut map = BTreeMap::new();
        for bytes in items {
            match serde_json::from_slice::<Value>(bytes) {
                Ok(value)
                    if daprs_api::crd::in_scope(&daprs_api::crd::scopes_of(&value), app_id) =>
                {
                    map.insert(name_of(&value), value);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(kind = kind.kind(), %error, "the operator sent a resource that is not JSON; ignoring it")
                }
            }
        }
        self.lock().by_kind.insert(kind, map);
    }

    /// Applies one stream event.
    pub fn event(&self, kind: Kept, bytes: &[u8], deleted: bool, app_id: &str) {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            tracing::warn!(
                kind = kind.kind(),
                "the operator sent a resource that is not JSON; ignoring it"
            );
            return;
        };
        let name = name_of(&value);
        let mut inner = self.lock();
        let map = inner.by_kind.entry(kind).or_default();
        if deleted || !daprs_api::crd::in_scope(&daprs_api::crd::scopes_of(&value), app_id) {
            map.remove(&name);
        } else {
            map.insert(name, value);
        }
    }

    /// The names kept of `kind`.
    pub fn names(&self, kind: Kept) -> Vec<String> {
        self.lock()
            .by_kind
            .get(&kind)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn get(&self, kind: Kept, name: &str) -> Option<Value> {
        self.lock().by_kind.get(&kind)?.get(name).cloned()
    }

    pub fn set_configuration(&self, value: Option<Value>) {
        self.lock().configuration = value;
    }

    pub fn configuration(&self) -> Option<Value> {
        self.lock().configuration.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bytes(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn components_are_checked_for_namespace_and_scopes_and_secrets_decoded() {
        let c = json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "statestore", "namespace": "apps", "generation": 3},
            "scopes": ["orders"],
            "spec": {"type": "state.redis", "version": "v1", "ignoreErrors": false, "initTimeout": "", "metadata": [
                {"name": "redisPassword", "value": "czNjcmV0", "secretKeyRef": {"name": "redis", "key": "password"}}
            ]}
        });
        let Decoded::Component(got) =
            decode_component(&bytes(c.clone()), "apps", "orders").unwrap()
        else {
            panic!("for us")
        };
        assert_eq!(got.generation, 3);
        assert_eq!(got.manifest.name, "statestore");
        assert_eq!(
            got.manifest.fields.spec.metadata[0].value,
            Some(json!("s3cret"))
        );
        assert!(matches!(
            decode_component(&bytes(c.clone()), "apps", "billing").unwrap(),
            Decoded::NotForUs { .. }
        ));
        assert!(matches!(
            decode_component(&bytes(c), "other", "orders").unwrap(),
            Decoded::NotForUs { .. }
        ));
        let broken =
            json!({"kind": "Component", "metadata": {"name": "b"}, "spec": {"type": "redis"}});
        let err = decode_component(&bytes(broken), "apps", "orders")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Component apps/b") && err.contains("spec.type"),
            "{err}"
        );
    }

    #[test]
    fn kept_resources_follow_lists_and_events_within_scope() {
        let kept = KeptResources::default();
        let sub = |name: &str, scopes: Value| {
            bytes(
                json!({"kind": "Subscription", "metadata": {"name": name}, "scopes": scopes, "spec": {}}),
            )
        };
        kept.replace(
            Kept::Subscription,
            &[sub("a", json!([])), sub("b", json!(["other"]))],
            "orders",
        );
        assert_eq!(kept.names(Kept::Subscription), ["a"]);
        kept.event(
            Kept::Subscription,
            &sub("c", json!(["orders"])),
            false,
            "orders",
        );
        kept.event(Kept::Subscription, &sub("a", json!([])), true, "orders");
        assert_eq!(kept.names(Kept::Subscription), ["c"]);
        assert!(kept.names(Kept::Resiliency).is_empty());
    }
}
