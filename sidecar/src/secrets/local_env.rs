//! `secretstores.local.env`: secrets from the sidecar's environment. daprd's own credentials
//! (`DAPR_*`, `APP_API_TOKEN`) are never handed out.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Secret, SecretError, SecretStore};

/// Reads the environment on every call.
#[derive(Debug, Default)]
pub struct LocalEnvStore {
    /// Optional `prefix` metadata: only variables with it are visible, named without it.
    prefix: String,
}

impl LocalEnvStore {
    pub fn new(prefix: String) -> Self {
        LocalEnvStore { prefix }
    }
}

fn hidden(name: &str) -> bool {
    name.starts_with("DAPR_") || name == "APP_API_TOKEN"
}

#[async_trait]
impl SecretStore for LocalEnvStore {
    async fn get(
        &self,
        key: &str,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<Secret, SecretError> {
        let name = format!("{}{key}", self.prefix);
        if hidden(&name) {
            return Err(SecretError::NotFound(key.to_owned()));
        }
        match std::env::var(&name) {
            Ok(value) => Ok(BTreeMap::from([(key.to_owned(), value)])),
            Err(_) => Err(SecretError::NotFound(key.to_owned())),
        }
    }

    async fn bulk(
        &self,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, SecretError> {
        Ok(std::env::vars()
            .filter(|(name, _)| !hidden(name))
            .filter_map(|(name, value)| {
                let key = name.strip_prefix(&self.prefix)?.to_owned();
                Some((key.clone(), BTreeMap::from([(key, value)])))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_environment_but_not_daprs_own_secrets() {
        // PATH is set in every test environment; tests must not mutate the environment.
        let store = LocalEnvStore::default();
        let path = store.get("PATH", &BTreeMap::new()).await.unwrap();
        assert_eq!(path["PATH"], std::env::var("PATH").unwrap());
        assert_eq!(
            store.get("DAPR_API_TOKEN", &BTreeMap::new()).await,
            Err(SecretError::NotFound("DAPR_API_TOKEN".into()))
        );
        assert!(
            store
                .get("SURELY_NOT_SET_4711", &BTreeMap::new())
                .await
                .is_err()
        );
        let all = store.bulk(&BTreeMap::new()).await.unwrap();
        assert!(all.contains_key("PATH"));
        assert!(all.keys().all(|k| !k.starts_with("DAPR_")));
        let prefixed = LocalEnvStore::new("PA".into());
        assert!(prefixed.get("TH", &BTreeMap::new()).await.is_ok());
    }
}
