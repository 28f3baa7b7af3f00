//! Name resolution: where another app's sidecar listens for sidecar-to-sidecar calls.
//!
//! - `kubernetes` (kubernetes mode): `<id>-dapr.<namespace>.svc.<cluster-domain>:<port>`, the
//!   port being our own internal port (every sidecar uses the same, 50002 from the injector);
//!   the cluster domain is `cluster.local` unless Configuration
//!   `spec.nameResolution.configuration.clusterDomain` says otherwise.
//! - `registry` (self-hosted, daprs): a directory every daprd on the machine shares (default
//!   `$HOME/.dapr/registry`), one file per app, `<namespace>/<app-id>.json` holding
//!   `{"address": "127.0.0.1:47321", "pid": 1234}`. Each daprd writes its own file when its
//!   internal server listens and removes it when it stops; an entry whose process is gone is
//!   ignored. No multicast is needed, so it works on any laptop. Dapr's default self-hosted
//!   resolver (mDNS) is not implemented; `spec.nameResolution.component: mdns` falls back to
//!   the registry with a warning.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Dapr's default cluster domain.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// Why an app id could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "app id {app_id:?} in namespace {namespace:?} is not registered in {dir} (is its daprd running on this machine?)"
    )]
    NotRegistered {
        app_id: String,
        namespace: String,
        dir: String,
    },
    #[error("the registry entry {file} is unreadable: {error}")]
    BadEntry { file: String, error: String },
}

/// One registry entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    pub address: String,
    pub pid: u32,
}

/// How to find other sidecars.
#[derive(Debug, Clone)]
pub enum Resolver {
    Kubernetes { cluster_domain: String, port: u16 },
    Registry { dir: PathBuf },
}

impl Resolver {
    /// The default registry directory: `$HOME/.dapr/registry` (or `./.dapr/registry`).
    pub fn default_registry_dir() -> PathBuf {
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".dapr")
            .join("registry")
    }

    /// `host:port` of the sidecar of `app_id` in `namespace`.
    pub fn resolve(&self, app_id: &str, namespace: &str) -> Result<String, ResolveError> {
        match self {
            Resolver::Kubernetes {
                cluster_domain,
                port,
            } => Ok(format!(
                "{app_id}-dapr.{namespace}.svc.{cluster_domain}:{port}"
            )),
            Resolver::Registry { dir } => {
                let file = entry_path(dir, app_id, namespace);
                let not_registered = || ResolveError::NotRegistered {
                    app_id: app_id.to_owned(),
                    namespace: namespace.to_owned(),
                    dir: dir.display().to_string(),
                };
                let text = std::fs::read(&file).map_err(|_| not_registered())?;
                let entry: Entry =
                    serde_json::from_slice(&text).map_err(|e| ResolveError::BadEntry {
                        file: file.display().to_string(),
                        error: e.to_string(),
                    })?;
                if !process_alive(entry.pid) {
                    return Err(not_registered());
                }
                Ok(entry.address)
            }
        }
    }

    /// Announces our own address (registry only); returns the file to remove at shutdown.
    pub fn register(
        &self,
        app_id: &str,
        namespace: &str,
        address: &str,
    ) -> std::io::Result<Option<PathBuf>> {
        let Resolver::Registry { dir } = self else {
            return Ok(None);
        };
        let file = entry_path(dir, app_id, namespace);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let entry = Entry {
            address: address.to_owned(),
            pid: std::process::id(),
        };
        // Written to a temporary file and renamed, so readers never see half an entry.
        let tmp = file.with_extension(format!("json.{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&entry).unwrap_or_default())?;
        std::fs::rename(&tmp, &file)?;
        Ok(Some(file))
    }
}

/// Removes our entry if it is still ours (another daprd with the same id may have replaced it).
pub fn unregister(file: &Path) {
    if let Ok(text) = std::fs::read(file)
        && let Ok(entry) = serde_json::from_slice::<Entry>(&text)
        && entry.pid == std::process::id()
    {
        let _ = std::fs::remove_file(file);
    }
}

fn entry_path(dir: &Path, app_id: &str, namespace: &str) -> PathBuf {
    dir.join(namespace).join(format!("{app_id}.json"))
}

/// True unless the process is known to be gone (Linux `/proc`; elsewhere always true).
fn process_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    proc.join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        let r = Resolver::Kubernetes {
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.into(),
            port: 50002,
        };
        assert_eq!(
            r.resolve("orders", "shop").unwrap(),
            "orders-dapr.shop.svc.cluster.local:50002"
        );
    }

    #[test]
    fn registry_round_trip_and_stale_entries() {
        let dir = tempfile::tempdir().unwrap();
        let r = Resolver::Registry {
            dir: dir.path().to_owned(),
        };
        let err = r.resolve("orders", "default").unwrap_err().to_string();
        assert!(err.contains("not registered"), "{err}");
        let file = r
            .register("orders", "default", "127.0.0.1:47001")
            .unwrap()
            .unwrap();
        assert_eq!(r.resolve("orders", "default").unwrap(), "127.0.0.1:47001");
        // A dead process's entry is ignored.
        std::fs::write(&file, r#"{"address":"127.0.0.1:1","pid":4000000000}"#).unwrap();
        assert!(r.resolve("orders", "default").is_err());
        // Only our own entry is removed.
        unregister(&file);
        assert!(file.exists());
        r.register("orders", "default", "127.0.0.1:47001").unwrap();
        unregister(&file);
        assert!(!file.exists());
    }
}
