//! Components: Dapr manifests read from `--resources-path`, metadata resolved (`envRef`,
//! `secretKeyRef`), built by the [`registry`] of factories keyed by `type` + `version`, and kept
//! in a [`Table`] that request handlers read and hot reload swaps.

pub mod manifest;
pub mod registry;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use daprs_api::crd::ComponentFields;

use crate::secrets::SecretStore;
use crate::state::{KeyPrefix, StateStore};

/// Default `spec.initTimeout`.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A component that cannot be loaded: the file, the component and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: component {component:?}: {message}")]
pub struct ComponentError {
    pub file: String,
    pub component: String,
    pub message: String,
}

/// One Component manifest as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub file: PathBuf,
    pub name: String,
    pub fields: ComponentFields,
}

impl Manifest {
    pub fn type_(&self) -> &str {
        &self.fields.spec.type_
    }

    /// `spec.version`, with empty meaning `v1` as in Dapr.
    pub fn version(&self) -> &str {
        match self.fields.spec.version.as_str() {
            "" => "v1",
            v => v,
        }
    }

    pub fn error(&self, message: impl Into<String>) -> ComponentError {
        ComponentError {
            file: self.file.display().to_string(),
            component: self.name.clone(),
            message: message.into(),
        }
    }

    /// `spec.initTimeout`, default 5s.
    pub fn init_timeout(&self) -> Result<Duration, ComponentError> {
        match self.fields.spec.init_timeout.as_str() {
            "" => Ok(DEFAULT_INIT_TIMEOUT),
            t => daprs_api::duration::parse_go_duration(t)
                .map_err(|e| self.error(format!("field spec.initTimeout: {e}"))),
        }
    }
}

/// Resolved component metadata with getters whose errors name the field.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Properties {
    pub values: BTreeMap<String, String>,
}

impl Properties {
    pub fn get(&self, name: &str) -> Option<&str> {
        // Dapr matches metadata names case-insensitively.
        self.values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn required(&self, name: &str, what: &str) -> Result<&str, String> {
        match self.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(format!("metadata field {name:?} is required: {what}")),
        }
    }

    pub fn bool(&self, name: &str, default: bool) -> Result<bool, String> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(default),
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
            Some(v) => Err(format!(
                "metadata field {name:?}: {v:?} is not a boolean; use true or false"
            )),
        }
    }
}

/// What a factory builds.
pub enum Instance {
    State(Arc<dyn StateStore>),
    Secrets(Arc<dyn SecretStore>),
}

/// A loaded state store.
#[derive(Clone)]
pub struct StateComponent {
    pub manifest: Arc<Manifest>,
    pub store: Arc<dyn StateStore>,
    pub prefix: KeyPrefix,
}

/// A loaded secret store.
#[derive(Clone)]
pub struct SecretComponent {
    pub manifest: Arc<Manifest>,
    pub store: Arc<dyn SecretStore>,
}

/// The set of loaded components at one moment.
#[derive(Clone, Default)]
pub struct Components {
    pub state: BTreeMap<String, StateComponent>,
    pub secrets: BTreeMap<String, SecretComponent>,
}

impl Components {
    /// Every manifest, for the metadata API and for diffing on reload.
    pub fn manifests(&self) -> Vec<Arc<Manifest>> {
        self.state
            .values()
            .map(|c| c.manifest.clone())
            .chain(self.secrets.values().map(|c| c.manifest.clone()))
            .collect()
    }

    pub fn manifest(&self, name: &str) -> Option<&Arc<Manifest>> {
        self.state
            .get(name)
            .map(|c| &c.manifest)
            .or_else(|| self.secrets.get(name).map(|c| &c.manifest))
    }

    pub fn insert(&mut self, manifest: Arc<Manifest>, instance: Instance, prefix: KeyPrefix) {
        let name = manifest.name.clone();
        self.state.remove(&name);
        self.secrets.remove(&name);
        match instance {
            Instance::State(store) => {
                self.state.insert(
                    name,
                    StateComponent {
                        manifest,
                        store,
                        prefix,
                    },
                );
            }
            Instance::Secrets(store) => {
                self.secrets
                    .insert(name, SecretComponent { manifest, store });
            }
        }
    }
}

/// The live component set. Readers take a snapshot (an `Arc` clone under a short lock), so a
/// swap never leaves a request without its component.
#[derive(Default)]
pub struct Table {
    current: RwLock<Arc<Components>>,
}

impl Table {
    pub fn new(components: Components) -> Self {
        Table {
            current: RwLock::new(Arc::new(components)),
        }
    }

    pub fn snapshot(&self) -> Arc<Components> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the set atomically; returns the previous one.
    pub fn swap(&self, components: Components) -> Arc<Components> {
        let mut guard = self.current.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *guard, Arc::new(components))
    }
}
