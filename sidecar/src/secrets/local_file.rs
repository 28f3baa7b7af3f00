//! `secretstores.local.file`: secrets from a JSON file. Nested objects are flattened with
//! `nestedSeparator` (default `:`); with `multiValued: true` a top-level key is a secret whose
//! keys are its (flattened) children.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde_json::Value;

use super::{Secret, SecretError, SecretStore};

/// The file's secrets, read once at initialisation.
#[derive(Debug)]
pub struct LocalFileStore {
    secrets: BTreeMap<String, Secret>,
}

impl LocalFileStore {
    /// Reads and flattens `path`; the error names the file and what is wrong.
    pub fn open(path: &Path, separator: &str, multi_valued: bool) -> Result<Self, String> {
        let text = std::fs::read(path)
            .map_err(|e| format!("failed to read secretsFile {}: {e}", path.display()))?;
        let value: Value = serde_json::from_slice(&text)
            .map_err(|e| format!("secretsFile {} is not valid JSON: {e}", path.display()))?;
        let Value::Object(top) = value else {
            return Err(format!(
                "secretsFile {} must hold a JSON object",
                path.display()
            ));
        };
        let mut secrets = BTreeMap::new();
        for (key, value) in top {
            if multi_valued {
                let mut inner = BTreeMap::new();
                match value {
                    Value::Object(children) => {
                        for (child, v) in children {
                            flatten(&child, &v, separator, &mut inner);
                        }
                    }
                    other => {
                        inner.insert(key.clone(), scalar(&other));
                    }
                }
                secrets.insert(key, inner);
            } else {
                let mut flat = BTreeMap::new();
                flatten(&key, &value, separator, &mut flat);
                for (k, v) in flat {
                    secrets.insert(k.clone(), BTreeMap::from([(k, v)]));
                }
            }
        }
        Ok(LocalFileStore { secrets })
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn flatten(prefix: &str, value: &Value, separator: &str, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(children) => {
            for (k, v) in children {
                flatten(&format!("{prefix}{separator}{k}"), v, separator, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), scalar(other));
        }
    }
}

#[async_trait]
impl SecretStore for LocalFileStore {
    async fn get(
        &self,
        key: &str,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<Secret, SecretError> {
        self.secrets
            .get(key)
            .cloned()
            .ok_or_else(|| SecretError::NotFound(key.to_owned()))
    }

    async fn bulk(
        &self,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, SecretError> {
        Ok(self.secrets.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"db": {"user": "admin", "pass": {"v1": "x"}}, "plain": "p", "n": 3}"#;

    async fn get(store: &LocalFileStore, key: &str) -> Result<Secret, SecretError> {
        store.get(key, &BTreeMap::new()).await
    }

    #[tokio::test]
    async fn nested_json_is_flattened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, FILE).unwrap();
        let store = LocalFileStore::open(&path, ":", false).unwrap();
        assert_eq!(
            get(&store, "db:user").await.unwrap(),
            BTreeMap::from([("db:user".to_owned(), "admin".to_owned())])
        );
        assert_eq!(get(&store, "db:pass:v1").await.unwrap()["db:pass:v1"], "x");
        assert_eq!(get(&store, "n").await.unwrap()["n"], "3");
        assert_eq!(
            get(&store, "db").await,
            Err(SecretError::NotFound("db".into()))
        );
        let store = LocalFileStore::open(&path, ".", false).unwrap();
        assert_eq!(get(&store, "db.user").await.unwrap()["db.user"], "admin");
    }

    #[tokio::test]
    async fn multi_valued_secrets_keep_their_children() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        std::fs::write(&path, FILE).unwrap();
        let store = LocalFileStore::open(&path, ":", true).unwrap();
        let db = get(&store, "db").await.unwrap();
        assert_eq!(db["user"], "admin");
        assert_eq!(db["pass:v1"], "x");
        assert_eq!(get(&store, "plain").await.unwrap()["plain"], "p");
        assert_eq!(store.bulk(&BTreeMap::new()).await.unwrap().len(), 3);
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, "[1]").unwrap();
        let err = LocalFileStore::open(&path, ":", false).unwrap_err();
        assert!(err.contains("s.json") && err.contains("object"), "{err}");
        let err = LocalFileStore::open(&dir.path().join("none.json"), ":", false).unwrap_err();
        assert!(err.contains("none.json"), "{err}");
    }
}
