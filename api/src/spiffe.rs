//! SPIFFE ids as Dapr uses them: `spiffe://<trust-domain>/ns/<namespace>/<app-id>`.
//!
//! Every workload certificate sentry issues carries exactly one such id as its URI SAN, and every
//! peer is authorised by it (never by host name).

use std::fmt;
use std::str::FromStr;

/// The URI scheme prefix of every SPIFFE id.
const SCHEME: &str = "spiffe://";

/// Longest trust domain the SPIFFE specification allows.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Longest app id sentry accepts (Dapr's common validator check).
pub const MAX_APP_ID_LEN: usize = 64;

/// A parsed, validated `spiffe://<trust-domain>/ns/<namespace>/<app-id>` id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    app_id: String,
}

/// What is wrong with a SPIFFE id; each variant names the part and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE id {0:?} must start with \"spiffe://\"")]
    Scheme(String),
    #[error("SPIFFE id {id:?} must have the path /ns/<namespace>/<app-id>, found {path:?}")]
    Path { id: String, path: String },
    #[error(
        "trust domain {0:?} is invalid: use 1-255 characters of lowercase a-z, 0-9, '.', '-' and '_'"
    )]
    TrustDomain(String),
    #[error(
        "namespace {0:?} is invalid: use 1 or more of the characters A-Z, a-z, 0-9, '.', '-', '_'"
    )]
    Namespace(String),
    #[error(
        "app id {0:?} is invalid: use 1 or more of the characters A-Z, a-z, 0-9, '.', '-', '_'"
    )]
    AppId(String),
}

impl SpiffeId {
    /// Builds an id from its parts, validating each.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        app_id: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        let (trust_domain, namespace, app_id) =
            (trust_domain.into(), namespace.into(), app_id.into());
        validate_trust_domain(&trust_domain)?;
        if !valid_path_segment(&namespace) {
            return Err(SpiffeIdError::Namespace(namespace));
        }
        if !valid_path_segment(&app_id) {
            return Err(SpiffeIdError::AppId(app_id));
        }
        Ok(Self {
            trust_domain,
            namespace,
            app_id,
        })
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// True when both ids name the same namespace and app id, whatever their trust domains.
    ///
    /// Dapr authorises sidecar peers and operator clients by the `/ns/<ns>/<id>` path only.
    pub fn same_path(&self, other: &SpiffeId) -> bool {
        self.namespace == other.namespace && self.app_id == other.app_id
    }
}

fn validate_trust_domain(td: &str) -> Result<(), SpiffeIdError> {
    let ok = !td.is_empty()
        && td.len() <= MAX_TRUST_DOMAIN_LEN
        && td.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(SpiffeIdError::TrustDomain(td.to_owned()))
    }
}

/// Path segments as the SPIFFE specification (and go-spiffe, used by Dapr) allows them.
fn valid_path_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// Checks a trust domain on its own (for flags).
pub fn validate_trust_domain_name(td: &str) -> Result<(), SpiffeIdError> {
    validate_trust_domain(td)
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let (trust_domain, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        validate_trust_domain(trust_domain)?;
        let path_error = || SpiffeIdError::Path {
            id: s.to_owned(),
            path: path.to_owned(),
        };
        let mut parts = path
            .strip_prefix("/ns/")
            .ok_or_else(path_error)?
            .splitn(2, '/');
        let namespace = parts.next().unwrap_or_default();
        let app_id = parts.next().ok_or_else(path_error)?;
        Self::new(trust_domain, namespace, app_id)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/{}",
            self.trust_domain, self.namespace, self.app_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        let id: SpiffeId = "spiffe://public/ns/default/orders".parse().unwrap();
        assert_eq!(id.trust_domain(), "public");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.app_id(), "orders");
        assert_eq!(id.to_string(), "spiffe://public/ns/default/orders");
    }

    #[test]
    fn errors_name_the_wrong_part() {
        assert!(matches!(
            "https://public/ns/a/b".parse::<SpiffeId>(),
            Err(SpiffeIdError::Scheme(_))
        ));
        assert!(matches!(
            "spiffe://Public/ns/a/b".parse::<SpiffeId>(),
            Err(SpiffeIdError::TrustDomain(td)) if td == "Public"
        ));
        assert!(matches!(
            "spiffe://public/namespace/a/b".parse::<SpiffeId>(),
            Err(SpiffeIdError::Path { .. })
        ));
        assert!(matches!(
            "spiffe://public/ns/a".parse::<SpiffeId>(),
            Err(SpiffeIdError::Path { .. })
        ));
        assert!(matches!(
            "spiffe://public/ns//b".parse::<SpiffeId>(),
            Err(SpiffeIdError::Namespace(ns)) if ns.is_empty()
        ));
        assert!(matches!(
            "spiffe://public/ns/a/b/c".parse::<SpiffeId>(),
            Err(SpiffeIdError::AppId(id)) if id == "b/c"
        ));
        assert!(matches!(
            "spiffe://public/ns/a/".parse::<SpiffeId>(),
            Err(SpiffeIdError::AppId(id)) if id.is_empty()
        ));
    }

    #[test]
    fn segments_are_limited_to_what_go_spiffe_accepts() {
        for bad in ["a#b", "a?b", "a%20", "a:b", "a b"] {
            assert!(SpiffeId::new("public", "default", bad).is_err(), "{bad}");
        }
        assert!(SpiffeId::new("public", "default", "Orders_v1.2-x").is_ok());
    }

    #[test]
    fn error_messages_say_what_is_allowed() {
        let err = "spiffe://bad domain/ns/a/b"
            .parse::<SpiffeId>()
            .unwrap_err();
        assert!(err.to_string().contains("lowercase a-z"), "{err}");
    }

    #[test]
    fn same_path_ignores_trust_domain() {
        let a = SpiffeId::new("public", "ns1", "app").unwrap();
        let b = SpiffeId::new("cluster.local", "ns1", "app").unwrap();
        let c = SpiffeId::new("public", "ns2", "app").unwrap();
        assert!(a.same_path(&b));
        assert!(!a.same_path(&c));
        assert_ne!(a, b);
    }
}
