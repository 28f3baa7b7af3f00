//! `secretstores.kubernetes`: the built-in `kubernetes` secret store of kubernetes mode.
//!
//! - **Component secrets** never reach the API server from the sidecar: the operator inlines
//!   every `secretKeyRef` of a component whose `auth.secretStore` is empty or `kubernetes` as
//!   standard base64 of the Secret's bytes in `value`, and the sidecar decodes it
//!   ([`inline_operator_secrets`]), as Dapr's daprd does. A reference the operator could not
//!   resolve is left to this store.
//! - **The secrets API** (`GET /v1.0/secrets/kubernetes/<name>`, bulk) reads Secrets of the
//!   app's namespace through the API server with the pod's credentials (in-cluster service
//!   account, or `KUBECONFIG`), as Dapr's component does; request metadata `namespace` picks
//!   another namespace, RBAC permitting.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use daprs_api::crd::common::{Auth, KUBERNETES_SECRET_STORE};
use daprs_api::crd::{ComponentFields, ComponentSpec};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use tokio::sync::OnceCell;

use super::{Secret, SecretError, SecretStore};
use crate::components::registry::Registry;
use crate::components::{Instance, Manifest};

/// The component name of the built-in store.
pub const NAME: &str = KUBERNETES_SECRET_STORE;
/// Its component type.
pub const TYPE: &str = "secretstores.kubernetes";

/// The built-in store's manifest, loaded in kubernetes mode unless
/// `--disable-builtin-k8s-secret-store`.
pub fn builtin_manifest() -> Manifest {
    Manifest {
        file: PathBuf::from("built-in"),
        name: NAME.to_owned(),
        fields: ComponentFields {
            auth: None,
            scopes: Vec::new(),
            spec: ComponentSpec {
                type_: TYPE.to_owned(),
                version: "v1".to_owned(),
                ..ComponentSpec::default()
            },
        },
    }
}

/// Registers `secretstores.kubernetes` (metadata: optional `namespace`, `kubeconfigPath`).
pub fn register(registry: &mut Registry) {
    registry.register(TYPE, "v1", |ctx| {
        Box::pin(async move {
            let p = &ctx.properties;
            let namespace = p
                .get("namespace")
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .or_else(|| std::env::var(daprs_api::names::ENV_NAMESPACE).ok())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| daprs_api::names::DEFAULT_NAMESPACE.to_owned());
            let kubeconfig = p
                .get("kubeconfigPath")
                .filter(|k| !k.is_empty())
                .map(PathBuf::from);
            Ok(Instance::Secrets(Arc::new(KubernetesStore::new(
                namespace, kubeconfig,
            ))))
        })
    });
}

/// Decodes a value the operator inlined: standard base64 of the Secret's bytes, as UTF-8.
pub fn decode_inlined(value: &serde_json::Value) -> Result<String, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("expected a base64 string from the operator, got {value}"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("the inlined secret is not base64: {e}"))?;
    String::from_utf8(bytes).map_err(|_| "the secret's value is not UTF-8 text".to_owned())
}

/// Decodes the `secretKeyRef` values the operator inlined into a component that uses the
/// Kubernetes store, turning them into plain values. References the operator left without a
/// value (the Secret or key was missing) stay, pointed at the built-in store, so loading the
/// component names the missing secret.
pub fn inline_operator_secrets(fields: &mut ComponentFields) -> Result<(), String> {
    if !Auth::is_kubernetes(fields.auth.as_ref()) {
        return Ok(());
    }
    let mut unresolved = false;
    for (i, item) in fields.spec.metadata.iter_mut().enumerate() {
        if item.secret_key_ref.is_none() {
            continue;
        }
        match item.value.take() {
            Some(value) => {
                let decoded = decode_inlined(&value)
                    .map_err(|e| format!("field spec.metadata[{i}] ({}): {e}", item.name))?;
                item.value = Some(serde_json::Value::String(decoded));
                item.secret_key_ref = None;
            }
            None => unresolved = true,
        }
    }
    if unresolved {
        fields.auth = Some(Auth {
            secret_store: NAME.to_owned(),
        });
    }
    Ok(())
}

/// Secrets from the API server, with a client made on first use.
pub struct KubernetesStore {
    namespace: String,
    kubeconfig: Option<PathBuf>,
    client: OnceCell<kube::Client>,
}

impl KubernetesStore {
    pub fn new(namespace: String, kubeconfig: Option<PathBuf>) -> Self {
        KubernetesStore {
            namespace,
            kubeconfig,
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> Result<kube::Client, SecretError> {
        self.client
            .get_or_try_init(|| async {
                let config = match &self.kubeconfig {
                    Some(path) => {
                        let kubeconfig =
                            kube::config::Kubeconfig::read_from(path).map_err(|e| e.to_string())?;
                        kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                            .await
                            .map_err(|e| e.to_string())?
                    }
                    None => kube::Config::infer().await.map_err(|e| e.to_string())?,
                };
                kube::Client::try_from(config).map_err(|e| e.to_string())
            })
            .await
            .cloned()
            .map_err(|e: String| {
                SecretError::Backend(format!(
                    "the kubernetes secret store cannot reach the API server: {e}"
                ))
            })
    }

    fn namespace<'a>(&'a self, metadata: &'a BTreeMap<String, String>) -> &'a str {
        metadata
            .get("namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or(&self.namespace)
    }
}

fn to_secret(secret: &KubeSecret) -> Secret {
    let mut out = Secret::new();
    for (key, value) in secret.data.iter().flatten() {
        out.insert(key.clone(), String::from_utf8_lossy(&value.0).into_owned());
    }
    for (key, value) in secret.string_data.iter().flatten() {
        out.insert(key.clone(), value.clone());
    }
    out
}

fn backend(error: kube::Error, what: &str) -> SecretError {
    match error {
        kube::Error::Api(status) if status.code == 404 => SecretError::NotFound(what.to_owned()),
        kube::Error::Api(status) if status.code == 403 => SecretError::Backend(format!(
            "the pod's service account may not read {what}: {}",
            status.message
        )),
        other => SecretError::Backend(format!("failed to read {what}: {other}")),
    }
}

#[async_trait]
impl SecretStore for KubernetesStore {
    async fn get(
        &self,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Secret, SecretError> {
        let api: kube::Api<KubeSecret> =
            kube::Api::namespaced(self.client().await?, self.namespace(metadata));
        let secret = api.get(key).await.map_err(|e| backend(e, key))?;
        Ok(to_secret(&secret))
    }

    async fn bulk(
        &self,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, SecretError> {
        let namespace = self.namespace(metadata);
        let api: kube::Api<KubeSecret> = kube::Api::namespaced(self.client().await?, namespace);
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| backend(e, &format!("the Secrets of namespace {namespace}")))?;
        Ok(list
            .items
            .iter()
            .filter_map(|s| Some((s.metadata.name.clone()?, to_secret(s))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(value: serde_json::Value) -> ComponentFields {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn inlined_secrets_are_decoded_and_unresolved_ones_point_at_the_store() {
        let mut f = fields(json!({
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "redisHost", "value": "redis:6379"},
                {"name": "redisPassword", "value": "czNjcmV0", "secretKeyRef": {"name": "redis", "key": "password"}},
                {"name": "other", "secretKeyRef": {"name": "missing"}}
            ]}
        }));
        inline_operator_secrets(&mut f).unwrap();
        let m = &f.spec.metadata;
        assert_eq!(m[0].value, Some(json!("redis:6379")));
        assert_eq!(m[1].value, Some(json!("s3cret")));
        assert!(m[1].secret_key_ref.is_none());
        assert!(m[2].secret_key_ref.is_some());
        assert_eq!(f.auth.unwrap().secret_store, "kubernetes");
    }

    #[test]
    fn other_stores_are_left_alone_and_bad_base64_names_the_field() {
        let original = fields(json!({
            "auth": {"secretStore": "vault"},
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "p", "value": "czNjcmV0", "secretKeyRef": {"name": "redis"}}
            ]}
        }));
        let mut f = original.clone();
        inline_operator_secrets(&mut f).unwrap();
        assert_eq!(f, original);

        let mut bad = fields(json!({
            "spec": {"type": "state.redis", "version": "v1", "metadata": [
                {"name": "redisPassword", "value": "not base64!", "secretKeyRef": {"name": "redis"}}
            ]}
        }));
        let err = inline_operator_secrets(&mut bad).unwrap_err();
        assert!(
            err.contains("spec.metadata[0] (redisPassword)") && err.contains("base64"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn without_credentials_the_store_says_it_cannot_reach_the_api_server() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-kubeconfig");
        let store = KubernetesStore::new("default".into(), Some(missing));
        let err = store.get("x", &BTreeMap::new()).await.unwrap_err();
        assert!(
            err.to_string().contains("cannot reach the API server"),
            "{err}"
        );
    }
}
