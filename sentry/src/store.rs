//! Where the CA lives: files (standalone) or the `dapr-trust-bundle` Secret and ConfigMap
//! (kubernetes). Both understand cert-manager's `tls.crt`/`tls.key`/`ca.crt` layout, which is
//! always treated as user-supplied (never rotated or overwritten).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

use crate::ca::Bundle;
use crate::config::CredentialNames;
use crate::rotation::{RotationState, StoredCa};

/// Key / file name of the rotation bookkeeping, present only for sentry-generated CAs.
pub const ROTATION_KEY: &str = "rotation.json";
/// cert-manager's Secret layout.
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to read {what}: {detail}")]
    Read { what: String, detail: String },
    #[error("failed to write {what}: {detail}")]
    Write { what: String, detail: String },
    #[error(
        "{location} holds only part of a CA ({present} present, {missing} missing): supply all of {all} or remove them so sentry generates a CA"
    )]
    Partial {
        location: String,
        present: String,
        missing: String,
        all: String,
    },
    #[error("{0} was changed by someone else while sentry wrote it; re-reading")]
    Conflict(String),
}

/// What a store holds now.
#[derive(Debug, Default)]
pub struct Loaded {
    pub ca: Option<StoredCa>,
    /// Opaque version for optimistic concurrency (the Secret's resourceVersion).
    pub version: Option<String>,
    /// True when published anchors (the ConfigMap) differ from the CA's and need a repair.
    pub anchors_out_of_date: bool,
    /// Version of the published anchors (the ConfigMap's resourceVersion), if they exist.
    pub anchors_version: Option<String>,
}

#[async_trait]
pub trait CaStore: Send + Sync {
    /// Reads the CA; `Ok(Loaded { ca: None, .. })` when there is none yet.
    async fn load(&self) -> Result<Loaded, StoreError>;
    /// Writes a CA sentry manages (never a user-supplied one); fails with
    /// [`StoreError::Conflict`] if `version` is no longer current. Keys, type and metadata
    /// sentry does not own are kept.
    async fn save(&self, ca: &StoredCa, version: Option<&str>) -> Result<(), StoreError>;
    /// Publishes the trust anchors where workloads read them (the ConfigMap); `version` is the
    /// published object's version from [`CaStore::load`]. Files need nothing: `ca.crt` is it.
    async fn publish_anchors(&self, anchors: &str, version: Option<&str>)
    -> Result<(), StoreError>;
    /// Where the CA lives, for messages.
    fn location(&self) -> String;
}

/// Turns a map of credential name → bytes into a CA, recognising both layouts.
fn from_entries(
    entries: &BTreeMap<String, Vec<u8>>,
    names: &CredentialNames,
    location: &str,
) -> Result<Option<StoredCa>, StoreError> {
    let text = |key: &str| -> Result<Option<String>, StoreError> {
        entries
            .get(key)
            .filter(|v| !v.iter().all(u8::is_ascii_whitespace))
            .map(|v| {
                String::from_utf8(v.clone()).map_err(|_| StoreError::Read {
                    what: format!("{key} in {location}"),
                    detail: "not UTF-8 PEM text".into(),
                })
            })
            .transpose()
    };
    let dapr = [
        (&names.trust_anchors, text(&names.trust_anchors)?),
        (&names.issuer_cert, text(&names.issuer_cert)?),
        (&names.issuer_key, text(&names.issuer_key)?),
    ];
    if let [(_, Some(anchors)), (_, Some(cert)), (_, Some(key))] = &dapr {
        let rotation = text(ROTATION_KEY)?
            .map(|json| {
                serde_json::from_str::<RotationState>(&json).map_err(|e| StoreError::Read {
                    what: format!("{ROTATION_KEY} in {location}"),
                    detail: format!(
                        "{e}; delete {ROTATION_KEY} to treat this CA as user-supplied (never rotated)"
                    ),
                })
            })
            .transpose()?;
        return Ok(Some(StoredCa {
            bundle: Bundle {
                trust_anchors: anchors.clone(),
                issuer_chain: cert.clone(),
                issuer_key: key.clone(),
            },
            rotation,
        }));
    }
    if let (Some(anchors), Some(cert), Some(key)) =
        (text(&names.trust_anchors)?, text(TLS_CRT)?, text(TLS_KEY)?)
    {
        return Ok(Some(StoredCa {
            bundle: Bundle {
                trust_anchors: anchors,
                issuer_chain: cert,
                issuer_key: key,
            },
            rotation: None,
        }));
    }
    let tls = [(TLS_CRT, text(TLS_CRT)?), (TLS_KEY, text(TLS_KEY)?)];
    let present: Vec<&str> = dapr
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .chain(tls.iter().map(|(k, v)| (*k, v)))
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect();
    if present.is_empty() {
        return Ok(None);
    }
    let missing: Vec<&str> = if tls.iter().any(|(_, v)| v.is_some()) {
        // cert-manager's layout: tls.crt + tls.key need the root in ca.crt.
        [
            (names.trust_anchors.as_str(), &dapr[0].1),
            (TLS_CRT, &tls[0].1),
            (TLS_KEY, &tls[1].1),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect()
    } else {
        dapr.iter()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.as_str())
            .collect()
    };
    Err(StoreError::Partial {
        location: location.into(),
        present: present.join(", "),
        missing: missing.join(", "),
        all: format!(
            "{}, {}, {}",
            names.trust_anchors, names.issuer_cert, names.issuer_key
        ),
    })
}

fn to_entries(
    ca: &StoredCa,
    names: &CredentialNames,
) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let mut entries = BTreeMap::new();
    entries.insert(
        names.trust_anchors.clone(),
        ca.bundle.trust_anchors.clone().into_bytes(),
    );
    entries.insert(
        names.issuer_cert.clone(),
        ca.bundle.issuer_chain.clone().into_bytes(),
    );
    entries.insert(
        names.issuer_key.clone(),
        ca.bundle.issuer_key.clone().into_bytes(),
    );
    if let Some(rotation) = &ca.rotation {
        let json = serde_json::to_vec_pretty(rotation).map_err(|e| StoreError::Write {
            what: ROTATION_KEY.into(),
            detail: e.to_string(),
        })?;
        entries.insert(ROTATION_KEY.into(), json);
    }
    Ok(entries)
}

/// The CA as files in a folder (standalone mode).
#[derive(Debug)]
pub struct FileStore {
    pub dir: PathBuf,
    pub names: CredentialNames,
}

impl FileStore {
    fn all_names(&self) -> [&str; 6] {
        [
            &self.names.trust_anchors,
            &self.names.issuer_cert,
            &self.names.issuer_key,
            ROTATION_KEY,
            TLS_CRT,
            TLS_KEY,
        ]
    }
}

#[async_trait]
impl CaStore for FileStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let mut entries = BTreeMap::new();
        for name in self.all_names() {
            let path = self.dir.join(name);
            match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    entries.insert(name.to_owned(), bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Read {
                        what: path.display().to_string(),
                        detail: e.to_string(),
                    });
                }
            }
        }
        Ok(Loaded {
            ca: from_entries(&entries, &self.names, &self.location())?,
            ..Loaded::default()
        })
    }

    async fn save(&self, ca: &StoredCa, _version: Option<&str>) -> Result<(), StoreError> {
        let write_err = |what: &Path, e: std::io::Error| StoreError::Write {
            what: what.display().to_string(),
            detail: e.to_string(),
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| write_err(&self.dir, e))?;
        for (name, bytes) in to_entries(ca, &self.names)? {
            let path = self.dir.join(&name);
            let tmp = self.dir.join(format!(".{name}.tmp"));
            tokio::fs::write(&tmp, &bytes)
                .await
                .map_err(|e| write_err(&tmp, e))?;
            let private = name == self.names.issuer_key || name == ROTATION_KEY;
            set_mode(&tmp, if private { 0o600 } else { 0o644 }).map_err(|e| write_err(&tmp, e))?;
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| write_err(&path, e))?;
        }
        Ok(())
    }

    async fn publish_anchors(
        &self,
        _anchors: &str,
        _version: Option<&str>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    fn location(&self) -> String {
        format!("folder {}", self.dir.display())
    }
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> std::io::Result<()> {
    Ok(())
}

/// The CA in the `dapr-trust-bundle` Secret, with the anchors published in the ConfigMap of the
/// same name (kubernetes mode). Unlike Dapr, sentry creates both when they are missing.
pub struct KubeStore {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    namespace: String,
    names: CredentialNames,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore")
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl KubeStore {
    pub fn new(client: kube::Client, namespace: &str, names: CredentialNames) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            names,
        }
    }

    fn read_err(&self, kind: &str, e: kube::Error) -> StoreError {
        StoreError::Read {
            what: format!(
                "{kind} {}/{}",
                self.namespace,
                daprs_api::names::TRUST_BUNDLE_NAME
            ),
            detail: e.to_string(),
        }
    }

    fn write_err(&self, kind: &str, e: kube::Error) -> StoreError {
        let what = format!(
            "{kind} {}/{}",
            self.namespace,
            daprs_api::names::TRUST_BUNDLE_NAME
        );
        match e {
            kube::Error::Api(status) if status.code == 409 => StoreError::Conflict(what),
            e => StoreError::Write {
                what,
                detail: e.to_string(),
            },
        }
    }

    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            name: Some(daprs_api::names::TRUST_BUNDLE_NAME.into()),
            namespace: Some(self.namespace.clone()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "daprs-sentry".to_owned(),
            )])),
            ..ObjectMeta::default()
        }
    }
}

#[async_trait]
impl CaStore for KubeStore {
    async fn load(&self) -> Result<Loaded, StoreError> {
        let name = daprs_api::names::TRUST_BUNDLE_NAME;
        let secret = self
            .secrets
            .get_opt(name)
            .await
            .map_err(|e| self.read_err("Secret", e))?;
        let version = secret
            .as_ref()
            .and_then(|s| s.metadata.resource_version.clone());
        let entries: BTreeMap<String, Vec<u8>> = secret
            .and_then(|s| s.data)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        let ca = from_entries(&entries, &self.names, &self.location())?;
        let config_map = self
            .config_maps
            .get_opt(name)
            .await
            .map_err(|e| self.read_err("ConfigMap", e))?;
        let anchors_version = config_map
            .as_ref()
            .and_then(|cm| cm.metadata.resource_version.clone());
        let published = config_map
            .and_then(|cm| cm.data)
            .and_then(|data| data.get(&self.names.trust_anchors).cloned());
        let anchors_out_of_date = ca
            .as_ref()
            .is_some_and(|ca| published.as_deref() != Some(ca.bundle.trust_anchors.as_str()));
        Ok(Loaded {
            ca,
            // A Secret that exists (even empty, as a chart makes it) is patched, not created.
            version,
            anchors_out_of_date,
            anchors_version,
        })
    }

    async fn save(&self, ca: &StoredCa, version: Option<&str>) -> Result<(), StoreError> {
        let name = daprs_api::names::TRUST_BUNDLE_NAME;
        let data: BTreeMap<String, ByteString> = to_entries(ca, &self.names)?
            .into_iter()
            .map(|(k, v)| (k, ByteString(v)))
            .collect();
        match version {
            // Merge only sentry's keys; the Secret's type, metadata and other keys stay.
            // The resourceVersion makes the patch fail with 409 if someone wrote in between.
            Some(version) => {
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": version},
                    "data": data,
                });
                self.secrets
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
            None => {
                let secret = Secret {
                    metadata: self.meta(),
                    data: Some(data),
                    type_: Some("Opaque".into()),
                    ..Secret::default()
                };
                self.secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map(drop)
            }
        }
        .map_err(|e| self.write_err("Secret", e))
    }

    async fn publish_anchors(
        &self,
        anchors: &str,
        version: Option<&str>,
    ) -> Result<(), StoreError> {
        let name = daprs_api::names::TRUST_BUNDLE_NAME;
        let key = &self.names.trust_anchors;
        match version {
            Some(version) => {
                let patch = serde_json::json!({
                    "metadata": {"resourceVersion": version},
                    "data": {key: anchors},
                });
                self.config_maps
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(drop)
            }
            None => {
                let config_map = ConfigMap {
                    metadata: self.meta(),
                    data: Some(BTreeMap::from([(key.clone(), anchors.to_owned())])),
                    ..ConfigMap::default()
                };
                self.config_maps
                    .create(&PostParams::default(), &config_map)
                    .await
                    .map(drop)
            }
        }
        .map_err(|e| self.write_err("ConfigMap", e))
    }

    fn location(&self) -> String {
        format!(
            "Secret {}/{}",
            self.namespace,
            daprs_api::names::TRUST_BUNDLE_NAME
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{self, GenerateOptions, KeyAlgorithm};
    use std::time::Duration;

    fn generated() -> Bundle {
        ca::generate(
            &GenerateOptions {
                trust_domain: "localhost",
                namespace: "default",
                algorithm: KeyAlgorithm::Ed25519,
                ttl: Duration::from_secs(86_400),
                skew: Duration::ZERO,
            },
            time::OffsetDateTime::now_utc(),
        )
        .unwrap()
    }

    fn store(dir: &Path) -> FileStore {
        FileStore {
            dir: dir.to_owned(),
            names: CredentialNames::default(),
        }
    }

    #[tokio::test]
    async fn files_round_trip_with_rotation_state_and_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir.path().join("creds"));
        assert!(store.load().await.unwrap().ca.is_none());
        let ca = StoredCa {
            bundle: generated(),
            rotation: Some(RotationState::default()),
        };
        store.save(&ca, None).await.unwrap();
        assert_eq!(store.load().await.unwrap().ca, Some(ca));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.dir.join("issuer.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn cert_manager_layout_is_user_supplied() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = generated();
        std::fs::write(dir.path().join("ca.crt"), &bundle.trust_anchors).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &bundle.issuer_chain).unwrap();
        std::fs::write(dir.path().join("tls.key"), &bundle.issuer_key).unwrap();
        let loaded = store(dir.path()).load().await.unwrap().ca.unwrap();
        assert_eq!(loaded.bundle, bundle);
        assert_eq!(loaded.rotation, None, "never rotated");
    }

    #[tokio::test]
    async fn a_partial_ca_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), generated().trust_anchors).unwrap();
        let err = store(dir.path()).load().await.unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("ca.crt present") && msg.contains("issuer.crt, issuer.key missing"),
            "{msg}"
        );
        assert!(dir.path().join("ca.crt").exists());
    }

    #[tokio::test]
    async fn a_cert_manager_secret_without_its_root_is_partial() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = generated();
        std::fs::write(dir.path().join("tls.crt"), &bundle.issuer_chain).unwrap();
        std::fs::write(dir.path().join("tls.key"), &bundle.issuer_key).unwrap();
        let msg = store(dir.path()).load().await.unwrap_err().to_string();
        assert!(
            msg.contains("tls.crt, tls.key present") && msg.contains("ca.crt missing"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn custom_file_names_are_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore {
            dir: dir.path().to_owned(),
            names: CredentialNames {
                trust_anchors: "root.pem".into(),
                issuer_cert: "int.pem".into(),
                issuer_key: "int.key".into(),
            },
        };
        let ca = StoredCa {
            bundle: generated(),
            rotation: None,
        };
        store.save(&ca, None).await.unwrap();
        assert!(dir.path().join("root.pem").exists() && dir.path().join("int.key").exists());
        assert!(!dir.path().join(ROTATION_KEY).exists());
        assert_eq!(store.load().await.unwrap().ca, Some(ca));
    }
}
