//! The registry of component factories, keyed by `spec.type` + `spec.version`. Adding a
//! component type is one `register` call with an async constructor.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;

use super::{ComponentError, Components, Instance, Manifest, Properties};
use crate::secrets::local_env::LocalEnvStore;
use crate::secrets::local_file::LocalFileStore;
use crate::state::KeyPrefix;
use crate::state::memory::MemoryStore;

/// Env var that, when set, lists the variables `envRef` may read (comma-separated).
pub const ENV_KEYS_ALLOW_LIST: &str = "DAPR_ENV_KEYS";

/// What a factory gets: the component's name and resolved metadata.
#[derive(Debug, Clone)]
pub struct Context {
    pub name: String,
    pub properties: Properties,
    pub app_id: String,
}

pub type Built = Pin<Box<dyn Future<Output = Result<Instance, String>> + Send>>;
pub type Factory = Arc<dyn Fn(Context) -> Built + Send + Sync>;

/// The factories daprs knows.
#[derive(Clone)]
pub struct Registry {
    factories: BTreeMap<(String, String), Factory>,
}

impl Registry {
    pub fn empty() -> Self {
        Registry {
            factories: BTreeMap::new(),
        }
    }

    /// Every built-in component type.
    pub fn builtin() -> Self {
        let mut r = Registry::empty();
        r.register("state.in-memory", "v1", |_ctx| {
            Box::pin(async { Ok(Instance::State(Arc::new(MemoryStore::new()))) })
        });
        r.register("secretstores.local.file", "v1", |ctx| {
            Box::pin(async move {
                let p = &ctx.properties;
                let file =
                    p.required("secretsFile", "the path of the JSON file with the secrets")?;
                let separator = p
                    .get("nestedSeparator")
                    .filter(|s| !s.is_empty())
                    .unwrap_or(":");
                let multi = p.bool("multiValued", false)?;
                let store = LocalFileStore::open(&PathBuf::from(file), separator, multi)?;
                Ok(Instance::Secrets(Arc::new(store)))
            })
        });
        r.register("secretstores.local.env", "v1", |ctx| {
            Box::pin(async move {
                let prefix = ctx.properties.get("prefix").unwrap_or_default().to_owned();
                Ok(Instance::Secrets(Arc::new(LocalEnvStore::new(prefix))))
            })
        });
        crate::state::redis::register(&mut r);
        crate::state::postgres::register(&mut r);
        r
    }

    pub fn register<F>(&mut self, type_: &str, version: &str, factory: F)
    where
        F: Fn(Context) -> Built + Send + Sync + 'static,
    {
        self.factories
            .insert((type_.to_owned(), version.to_owned()), Arc::new(factory));
    }

    fn factory(&self, manifest: &Manifest) -> Result<&Factory, ComponentError> {
        let key = (manifest.type_().to_owned(), manifest.version().to_owned());
        if let Some(f) = self.factories.get(&key) {
            return Ok(f);
        }
        let versions: Vec<&str> = self
            .factories
            .keys()
            .filter(|(t, _)| t == manifest.type_())
            .map(|(_, v)| v.as_str())
            .collect();
        if versions.is_empty() {
            let types: Vec<&str> = self.factories.keys().map(|(t, _)| t.as_str()).collect();
            Err(manifest.error(format!(
                "field spec.type: unknown component type {:?}; daprs supports {}",
                manifest.type_(),
                types.join(", ")
            )))
        } else {
            Err(manifest.error(format!(
                "field spec.version: version {:?} of {} is not supported; use {}",
                manifest.version(),
                manifest.type_(),
                versions.join(", ")
            )))
        }
    }

    /// Checks the type is known without building anything.
    pub fn knows(&self, manifest: &Manifest) -> Result<(), ComponentError> {
        self.factory(manifest).map(|_| ())
    }

    /// Resolves the metadata and builds the component within its `initTimeout`.
    pub async fn build(
        &self,
        manifest: &Manifest,
        loaded: &Components,
        app_id: &str,
    ) -> Result<(Instance, KeyPrefix), ComponentError> {
        let factory = self.factory(manifest)?.clone();
        let properties = resolve(manifest, loaded).await?;
        let prefix = KeyPrefix::parse(properties.get("keyPrefix").unwrap_or_default())
            .map_err(|e| manifest.error(format!("metadata field \"keyPrefix\": {e}")))?;
        let timeout = manifest.init_timeout()?;
        let context = Context {
            name: manifest.name.clone(),
            properties,
            app_id: app_id.to_owned(),
        };
        match tokio::time::timeout(timeout, factory(context)).await {
            Ok(Ok(instance)) => Ok((instance, prefix)),
            Ok(Err(message)) => Err(manifest.error(format!(
                "failed to initialise {}: {message}",
                manifest.type_()
            ))),
            Err(_) => Err(manifest.error(format!(
                "failed to initialise {} within spec.initTimeout ({timeout:?})",
                manifest.type_()
            ))),
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Resolves `value`, `envRef` and `secretKeyRef` of every metadata item.
pub async fn resolve(
    manifest: &Manifest,
    loaded: &Components,
) -> Result<Properties, ComponentError> {
    let mut values = BTreeMap::new();
    let allow_list: Option<Vec<String>> = std::env::var(ENV_KEYS_ALLOW_LIST)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    for (i, item) in manifest.fields.spec.metadata.iter().enumerate() {
        let field = format!("spec.metadata[{i}] ({})", item.name);
        let value = if let Some(reference) = &item.secret_key_ref {
            let store_name = manifest
                .fields
                .auth
                .as_ref()
                .map(|a| a.secret_store.as_str())
                .unwrap_or_default();
            if store_name.is_empty() {
                return Err(manifest.error(format!(
                    "field {field}: secretKeyRef needs auth.secretStore naming a secret store component"
                )));
            }
            let store = loaded.secrets.get(store_name).ok_or_else(|| {
                manifest.error(format!(
                    "field {field}: auth.secretStore {store_name:?} is not a loaded secret store"
                ))
            })?;
            let secret = store
                .store
                .get(&reference.name, &BTreeMap::new())
                .await
                .map_err(|e| {
                    manifest.error(format!(
                        "field {field}: secretKeyRef {:?} in store {store_name:?}: {e}",
                        reference.name
                    ))
                })?;
            let key = if reference.key.is_empty() {
                &reference.name
            } else {
                &reference.key
            };
            secret.get(key).cloned().ok_or_else(|| {
                manifest.error(format!(
                    "field {field}: secret {:?} has no key {key:?}",
                    reference.name
                ))
            })?
        } else if let Some(variable) = &item.env_ref {
            if allow_list
                .as_ref()
                .is_some_and(|allowed| !allowed.iter().any(|a| a == variable))
            {
                return Err(manifest.error(format!(
                    "field {field}: envRef {variable:?} is not listed in {ENV_KEYS_ALLOW_LIST}"
                )));
            }
            std::env::var(variable).map_err(|_| {
                manifest.error(format!(
                    "field {field}: envRef {variable:?} is not set in daprd's environment"
                ))
            })?
        } else {
            item.value.as_ref().map(text).unwrap_or_default()
        };
        values.insert(item.name.clone(), value);
    }
    Ok(Properties { values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::manifest::parse_component;
    use std::path::Path;

    fn manifest(yaml: &str) -> Manifest {
        parse_component(Path::new("test.yaml"), serde_yaml::from_str(yaml).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn unknown_types_and_versions_say_what_is_supported() {
        let r = Registry::builtin();
        let m = manifest("kind: Component\nmetadata: {name: x}\nspec: {type: state.nope}\n");
        let err = r.knows(&m).unwrap_err().to_string();
        assert!(
            err.contains("state.nope") && err.contains("state.in-memory"),
            "{err}"
        );
        let m = manifest(
            "kind: Component\nmetadata: {name: x}\nspec: {type: state.in-memory, version: v9}\n",
        );
        let err = r.knows(&m).unwrap_err().to_string();
        assert!(err.contains("spec.version") && err.contains("v1"), "{err}");
    }

    #[tokio::test]
    async fn secret_refs_resolve_through_the_named_store() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s.json");
        std::fs::write(&file, r#"{"redis": {"password": "pw"}}"#).unwrap();
        let r = Registry::builtin();
        let secrets = manifest(&format!(
            "kind: Component\nmetadata: {{name: files}}\nspec:\n  type: secretstores.local.file\n  metadata:\n  - name: secretsFile\n    value: {}\n",
            file.display()
        ));
        let mut loaded = Components::default();
        let (instance, prefix) = r.build(&secrets, &loaded, "app").await.unwrap();
        loaded.insert(Arc::new(secrets), instance, prefix);

        let user = manifest(
            "kind: Component\nmetadata: {name: store}\nspec:\n  type: state.in-memory\n  metadata:\n  - name: redisPassword\n    secretKeyRef: {name: 'redis:password'}\n  - name: n\n    value: 3\nauth: {secretStore: files}\n",
        );
        let props = resolve(&user, &loaded).await.unwrap();
        assert_eq!(props.get("redisPassword"), Some("pw"));
        assert_eq!(props.get("n"), Some("3"));

        let no_auth = manifest(
            "kind: Component\nmetadata: {name: store}\nspec:\n  type: state.in-memory\n  metadata:\n  - name: p\n    secretKeyRef: {name: x}\n",
        );
        let err = resolve(&no_auth, &loaded).await.unwrap_err().to_string();
        assert!(
            err.contains("auth.secretStore") && err.contains("spec.metadata[0]"),
            "{err}"
        );

        let missing_env = manifest(
            "kind: Component\nmetadata: {name: store}\nspec:\n  type: state.in-memory\n  metadata:\n  - name: p\n    envRef: SURELY_NOT_SET_4711\n",
        );
        let err = resolve(&missing_env, &loaded)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("SURELY_NOT_SET_4711"), "{err}");
        let env = manifest(
            "kind: Component\nmetadata: {name: store}\nspec:\n  type: state.in-memory\n  metadata:\n  - name: p\n    envRef: PATH\n",
        );
        assert_eq!(
            resolve(&env, &loaded).await.unwrap().get("p"),
            std::env::var("PATH").ok().as_deref()
        );
    }

    #[tokio::test]
    async fn bad_metadata_names_the_field() {
        let r = Registry::builtin();
        let m = manifest(
            "kind: Component\nmetadata: {name: files}\nspec: {type: secretstores.local.file}\n",
        );
        let err = r
            .build(&m, &Components::default(), "app")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("secretsFile") && err.contains("files"),
            "{err}"
        );
        let m = manifest(
            "kind: Component\nmetadata: {name: s}\nspec:\n  type: state.in-memory\n  metadata:\n  - {name: keyPrefix, value: 'a||b'}\n",
        );
        let err = r
            .build(&m, &Components::default(), "app")
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("keyPrefix"), "{err}");
    }
}
