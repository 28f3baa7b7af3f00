//! Validators authenticate a `SignCertificate` caller and decide the identity it gets.
//!
//! - `insecure`: no token (self-hosted default); the common id checks still apply.
//! - `kubernetes`: a pod-bound service-account token, checked with TokenReview ([`kubernetes`]).
//! - `jwks`: a JWT verified against a JWKS ([`jwks`]).
//!
//! The identity always comes from what was authenticated, never from the CSR.

pub mod jwks;
pub mod kubernetes;

use async_trait::async_trait;
use daprs_api::SpiffeId;
use daprs_api::proto::sentry::{SignCertificateRequest, TokenValidator};
use daprs_api::spiffe::MAX_APP_ID_LEN;

/// Why a caller gets no certificate. Messages say which check failed, expected vs. seen;
/// they never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The request itself is malformed (gRPC `InvalidArgument`).
    #[error("{0}")]
    Invalid(String),
    /// The caller is not who it claims to be (gRPC `PermissionDenied`).
    #[error("{0}")]
    Denied(String),
    /// The validator could not decide, e.g. the API server is unreachable (gRPC `Unavailable`).
    #[error("{0}")]
    Unavailable(String),
}

#[async_trait]
pub trait Validator: Send + Sync {
    /// The validator's name as in Dapr (`insecure`, `kubernetes`, `jwks`).
    fn name(&self) -> &'static str;
    /// Authenticates the request and returns the identity to certify.
    async fn validate(&self, request: &SignCertificateRequest) -> Result<SpiffeId, Denial>;
}

/// Dapr's checks common to every validator.
pub fn common_checks(request: &SignCertificateRequest) -> Result<(), Denial> {
    let id = &request.id;
    if id.is_empty() {
        return Err(Denial::Denied("the app id is empty".into()));
    }
    if id.contains('.') {
        return Err(Denial::Denied(format!(
            "app id {id:?} contains a '.', which is not allowed"
        )));
    }
    if id.chars().count() > MAX_APP_ID_LEN {
        return Err(Denial::Denied(format!(
            "app id {id:?} is {} characters long; at most {MAX_APP_ID_LEN} are allowed",
            id.chars().count()
        )));
    }
    if request.namespace.is_empty() {
        return Err(Denial::Denied(format!(
            "the namespace of app id {id:?} is empty; set NAMESPACE"
        )));
    }
    Ok(())
}

/// The SPIFFE id for `id` in `namespace` under `trust_domain`, with a denial naming what is wrong.
pub fn spiffe_id(trust_domain: &str, namespace: &str, id: &str) -> Result<SpiffeId, Denial> {
    SpiffeId::new(trust_domain, namespace, id).map_err(|e| Denial::Denied(e.to_string()))
}

/// No authentication: the self-hosted default.
#[derive(Debug, Default)]
pub struct Insecure;

#[async_trait]
impl Validator for Insecure {
    fn name(&self) -> &'static str {
        "insecure"
    }

    async fn validate(&self, request: &SignCertificateRequest) -> Result<SpiffeId, Denial> {
        common_checks(request)?;
        let td = if request.trust_domain.is_empty() {
            daprs_api::names::DEFAULT_APP_TRUST_DOMAIN
        } else {
            &request.trust_domain
        };
        spiffe_id(td, &request.namespace, &request.id)
    }
}

/// The enabled validators and the default one.
pub struct Validators {
    pub default: TokenValidator,
    pub enabled: Vec<(TokenValidator, Box<dyn Validator>)>,
}

impl std::fmt::Debug for Validators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validators")
            .field("default", &self.default)
            .field("enabled", &self.names())
            .finish()
    }
}

impl Validators {
    fn names(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|(_, v)| v.name()).collect()
    }

    /// The validator a request asks for (or the default), or `InvalidArgument` naming the
    /// enabled ones.
    pub fn select(&self, requested: i32) -> Result<&dyn Validator, Denial> {
        let kind = match TokenValidator::try_from(requested) {
            Ok(TokenValidator::Unknown) => self.default,
            Ok(kind) => kind,
            Err(_) => {
                return Err(Denial::Invalid(format!(
                    "unknown token validator {requested}; enabled: {}",
                    self.names().join(", ")
                )));
            }
        };
        self.enabled
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v.as_ref())
            .ok_or_else(|| {
                Denial::Invalid(format!(
                    "token validator {} is not enabled on this sentry; enabled: {}",
                    kind.as_str_name(),
                    self.names().join(", ")
                ))
            })
    }
}

/// Reads the payload of a JWT without verifying it (only after a trusted check succeeded).
pub(crate) fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: &str, namespace: &str) -> SignCertificateRequest {
        SignCertificateRequest {
            id: id.into(),
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn insecure_applies_the_common_checks() {
        let v = Insecure;
        let ok = v.validate(&request("orders", "default")).await.unwrap();
        assert_eq!(ok.to_string(), "spiffe://public/ns/default/orders");
        for (id, ns, needle) in [
            ("", "default", "empty"),
            ("a.b", "default", "contains a '.'"),
            (&"x".repeat(65), "default", "at most 64"),
            ("orders", "", "namespace"),
        ] {
            let err = v.validate(&request(id, ns)).await.unwrap_err();
            assert!(
                matches!(&err, Denial::Denied(m) if m.contains(needle)),
                "{id}: {err}"
            );
        }
        assert!(
            v.validate(&request(&"x".repeat(64), "default"))
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn insecure_honours_a_requested_trust_domain() {
        let mut req = request("dapr-operator", "dapr-system");
        req.trust_domain = "cluster.local".into();
        let id = Insecure.validate(&req).await.unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/dapr-system/dapr-operator"
        );
    }

    #[test]
    fn selecting_a_disabled_validator_names_the_enabled_ones() {
        let validators = Validators {
            default: TokenValidator::Insecure,
            enabled: vec![(TokenValidator::Insecure, Box::new(Insecure))],
        };
        assert_eq!(validators.select(0).unwrap().name(), "insecure");
        let Err(Denial::Invalid(msg)) = validators.select(TokenValidator::Kubernetes as i32) else {
            panic!("expected InvalidArgument");
        };
        assert!(
            msg.contains("KUBERNETES") && msg.contains("enabled: insecure"),
            "{msg}"
        );
        assert!(matches!(validators.select(42), Err(Denial::Invalid(_))));
    }
}
