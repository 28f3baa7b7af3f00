//! Reading Dapr manifests from disk as Dapr's standalone loader does: every `*.yaml`/`*.yml` in
//! each resources directory (not recursive), several documents per file, Components matched
//! on `kind`, filtered by `scopes` and namespace, duplicate names refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use daprs_api::crd::{Component, Configuration, ConfigurationSpec, in_scope};
use serde_yaml::Value;

use super::{ComponentError, Manifest};

/// Where the loader looks and for whom.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub app_id: &'a str,
    /// `NAMESPACE`, when set: manifests of other namespaces are skipped.
    pub namespace: Option<&'a str>,
}

fn file_error(file: &Path, message: impl Into<String>) -> ComponentError {
    ComponentError {
        file: file.display().to_string(),
        component: String::new(),
        message: message.into(),
    }
}

/// The YAML files of one directory, sorted by name.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ComponentError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| file_error(dir, format!("failed to read the resources directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml") | Some("yml") => files.push(path),
            _ => tracing::warn!(file = %path.display(), "skipping a file that is not YAML"),
        }
    }
    files.sort();
    Ok(files)
}

/// The documents of one file.
fn documents(file: &Path) -> Result<Vec<Value>, ComponentError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| file_error(file, format!("failed to read: {e}")))?;
    let mut docs = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde::Deserialize::deserialize(doc).map_err(|e: serde_yaml::Error| {
            file_error(
                file,
                format!("document {} is not valid YAML: {e}", index + 1),
            )
        })?;
        if !matches!(value, Value::Null) {
            docs.push(value);
        }
    }
    Ok(docs)
}

fn kind(doc: &Value) -> &str {
    doc.get("kind").and_then(Value::as_str).unwrap_or_default()
}

/// Parses one Component document, filling the fields Dapr lets users omit.
pub fn parse_component(file: &Path, mut doc: Value) -> Result<Manifest, ComponentError> {
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let error = |message: String| ComponentError {
        file: file.display().to_string(),
        component: name.clone(),
        message,
    };
    if name.is_empty() {
        return Err(error(
            "field metadata.name is required: every component needs a name".into(),
        ));
    }
    match doc.get_mut("spec") {
        Some(Value::Mapping(spec)) => {
            for (field, default) in [
                ("version", Value::String(String::new())),
                ("metadata", Value::Sequence(Vec::new())),
            ] {
                let key = Value::String(field.into());
                if matches!(spec.get(&key), None | Some(Value::Null)) {
                    spec.insert(key, default);
                }
            }
        }
        _ => {
            return Err(error(
                "field spec is required: it holds type, version and metadata".into(),
            ));
        }
    }
    let component: Component =
        serde_yaml::from_value(doc).map_err(|e| error(format!("invalid manifest: {e}")))?;
    let fields = component.spec;
    if fields.spec.type_.split_once('.').is_none() {
        return Err(error(format!(
            "field spec.type {:?} must be <building block>.<name>, for example state.redis",
            fields.spec.type_
        )));
    }
    for (i, item) in fields.spec.metadata.iter().enumerate() {
        if item.name.is_empty() {
            return Err(error(format!("field spec.metadata[{i}].name is required")));
        }
    }
    Ok(Manifest {
        file: file.to_owned(),
        name,
        fields,
    })
}

fn namespace_of(doc: &Value) -> Option<&str> {
    doc.get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn scopes_of(doc: &Value) -> Vec<String> {
    doc.get("scopes")
        .and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every Component for this app in the given directories.
pub fn load_components(
    dirs: &[PathBuf],
    scope: &Scope<'_>,
) -> Result<Vec<Manifest>, ComponentError> {
    let mut found: BTreeMap<String, Manifest> = BTreeMap::new();
    for dir in dirs {
        for file in yaml_files(dir)? {
            for doc in documents(&file)? {
                if kind(&doc) != "Component" {
                    tracing::debug!(file = %file.display(), kind = kind(&doc), "skipping a resource that is not a Component");
                    continue;
                }
                if let (Some(ns), Some(own)) = (namespace_of(&doc), scope.namespace)
                    && ns != own
                {
                    continue;
                }
                if !in_scope(&scopes_of(&doc), scope.app_id) {
                    continue;
                }
                let manifest = parse_component(&file, doc)?;
                if let Some(previous) = found.get(&manifest.name) {
                    return Err(manifest.error(format!(
                        "duplicate component name; it is also defined in {}",
                        previous.file.display()
                    )));
                }
                found.insert(manifest.name.clone(), manifest);
            }
        }
    }
    Ok(found.into_values().collect())
}

/// The Configuration of `--config` files (their specs merged in order; later scopes add).
pub fn load_configuration(files: &[PathBuf]) -> Result<ConfigurationSpec, ComponentError> {
    let mut merged = ConfigurationSpec::default();
    for file in files {
        let mut seen = false;
        for doc in documents(file)? {
            if kind(&doc) != "Configuration" {
                continue;
            }
            seen = true;
            let config: Configuration = serde_yaml::from_value(doc)
                .map_err(|e| file_error(file, format!("invalid Configuration: {e}")))?;
            let spec = config.spec;
            if let Some(secrets) = spec.secrets {
                merged
                    .secrets
                    .get_or_insert_with(Default::default)
                    .scopes
                    .extend(secrets.scopes);
            }
            if spec.access_control.is_some() {
                merged.access_control = spec.access_control;
            }
            if let Some(api) = spec.api {
                for problem in crate::api_access::ignored_rules(&api) {
                    tracing::warn!(file = %file.display(), "{problem}");
                }
                let merged_api = merged.api.get_or_insert_with(Default::default);
                merged_api.allowed.extend(api.allowed);
                merged_api.denied.extend(api.denied);
            }
            merged.features.extend(spec.features);
            // The name resolver (self-hosted: registry or mdns); a later file's wins.
            if spec.name_resolution.is_some() {
                merged.name_resolution = spec.name_resolution;
            }
        }
        if !seen {
            return Err(file_error(
                file,
                "no document with kind: Configuration in this --config file",
            ));
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    const SCOPE: Scope<'static> = Scope {
        app_id: "myapp",
        namespace: None,
    };

    #[test]
    fn loads_several_documents_scopes_and_skips_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: one\nspec:\n  type: state.in-memory\n---\napiVersion: dapr.io/v1alpha1\nkind: Subscription\nmetadata:\n  name: sub\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: two\nspec:\n  type: secretstores.local.env\n  version: v1\n  metadata:\n  - name: a\n    value: b\nscopes: [other]\n",
        );
        write(
            dir.path(),
            "b.yml",
            "kind: Component\nmetadata:\n  name: three\nspec:\n  type: state.in-memory\nscopes: [myapp]\n",
        );
        write(dir.path(), "notes.txt", "not yaml: [");
        let found = load_components(&[dir.path().to_owned()], &SCOPE).unwrap();
        let names: Vec<_> = found.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["one", "three"]);
        assert_eq!(found[0].version(), "v1");
    }

    #[test]
    fn errors_name_file_component_and_field() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "bad.yaml",
            "kind: Component\nmetadata:\n  name: broken\nspec:\n  type: redis\n",
        );
        let err = load_components(&[dir.path().to_owned()], &SCOPE).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bad.yaml") && text.contains("broken") && text.contains("spec.type"),
            "{text}"
        );

        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            "kind: Component\nmetadata:\n  name: same\nspec:\n  type: state.in-memory\n",
        );
        write(
            dir.path(),
            "b.yaml",
            "kind: Component\nmetadata:\n  name: same\nspec:\n  type: state.in-memory\n",
        );
        let err = load_components(&[dir.path().to_owned()], &SCOPE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate") && err.contains("a.yaml"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            "kind: Component\nmetadata:\n  name: x\nspec:\n  type: state.in-memory\n  metadata:\n  - value: 1\n",
        );
        let err = load_components(&[dir.path().to_owned()], &SCOPE)
            .unwrap_err()
            .to_string();
        assert!(err.contains("name"), "{err}");
    }

    #[test]
    fn other_namespaces_are_skipped_only_when_namespace_is_set() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "a.yaml",
            "kind: Component\nmetadata:\n  name: x\n  namespace: prod\nspec:\n  type: state.in-memory\n",
        );
        let dirs = [dir.path().to_owned()];
        assert_eq!(load_components(&dirs, &SCOPE).unwrap().len(), 1);
        let dev = Scope {
            app_id: "myapp",
            namespace: Some("dev"),
        };
        assert!(load_components(&dirs, &dev).unwrap().is_empty());
    }

    #[test]
    fn configuration_secret_scopes() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "config.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  secrets:\n    scopes:\n    - storeName: local\n      defaultAccess: deny\n      allowedSecrets: [a]\n",
        );
        let spec = load_configuration(&[dir.path().join("config.yaml")]).unwrap();
        let scopes = spec.secrets.unwrap().scopes;
        assert_eq!(scopes[0].store_name, "local");
        assert_eq!(scopes[0].allowed_secrets, ["a"]);
        write(dir.path(), "other.yaml", "kind: Component\n");
        assert!(load_configuration(&[dir.path().join("other.yaml")]).is_err());
    }

    #[test]
    fn configuration_api_lists_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "config.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  api:\n    allowed:\n    - {name: state, version: v1, protocol: http}\n    denied:\n    - {name: secrets, version: v1, protocol: grpc}\n",
        );
        let spec = load_configuration(&[dir.path().join("config.yaml")]).unwrap();
        let api = spec.api.unwrap();
        assert_eq!(api.allowed[0].name, "state");
        assert_eq!(api.denied[0].protocol, "grpc");
    }

    #[test]
    fn configuration_name_resolution_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "config.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  nameResolution:\n    component: mdns\n",
        );
        let spec = load_configuration(&[dir.path().join("config.yaml")]).unwrap();
        assert_eq!(spec.name_resolution.unwrap().component, "mdns");
    }
}
