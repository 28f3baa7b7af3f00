//! The secrets building block: the [`SecretStore`] contract, the local stores, the built-in
//! `kubernetes` store and the secret
//! scopes of Configuration `spec.secrets.scopes`.

pub mod kubernetes;
pub mod local_env;
pub mod local_file;

use std::collections::BTreeMap;

use async_trait::async_trait;
use daprs_api::crd::configuration::SecretsScope;

/// A secret: key → value (a multi-valued secret has several keys).
pub type Secret = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SecretError {
    #[error("secret {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Backend(String),
}

/// What every secret store implements.
#[async_trait]
pub trait SecretStore: Send + Sync + 'static {
    async fn get(
        &self,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Secret, SecretError>;
    async fn bulk(
        &self,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, SecretError>;
}

/// The secret scope of one store (Dapr's rule: an allow-list wins, then the deny-list, then the
/// default access).
pub fn allowed(scopes: &[SecretsScope], store: &str, key: &str) -> bool {
    let Some(scope) = scopes.iter().find(|s| s.store_name == store) else {
        return true;
    };
    if scope.allowed_secrets.iter().any(|s| s == key) {
        return true;
    }
    if scope.denied_secrets.iter().any(|s| s == key) {
        return false;
    }
    if !scope.allowed_secrets.is_empty() {
        return false;
    }
    !scope.default_access.eq_ignore_ascii_case("deny")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(default: &str, allow: &[&str], deny: &[&str]) -> Vec<SecretsScope> {
        vec![SecretsScope {
            store_name: "s".into(),
            default_access: default.into(),
            allowed_secrets: allow.iter().map(|s| s.to_string()).collect(),
            denied_secrets: deny.iter().map(|s| s.to_string()).collect(),
        }]
    }

    #[test]
    fn scopes_follow_dapr() {
        assert!(allowed(&[], "s", "k"));
        assert!(allowed(&scope("", &[], &[]), "s", "k"));
        assert!(!allowed(&scope("deny", &[], &[]), "s", "k"));
        assert!(allowed(&scope("deny", &["k"], &[]), "s", "k"));
        assert!(!allowed(&scope("allow", &["a"], &[]), "s", "k"));
        assert!(!allowed(&scope("allow", &[], &["k"]), "s", "k"));
        assert!(allowed(&scope("deny", &[], &[]), "other", "k"));
    }
}
