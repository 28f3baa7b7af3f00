//! Automatic CA rotation with overlapping trust (Dapr has none; see pain point S-1).
//!
//! Dapr stores no root key, so a CA is renewed by making a whole new root and issuer:
//!
//! 1. **Publish.** When the active CA gets within `rotate_before` of its expiry, a new root and
//!    issuer are generated. The new root is *added* to the trust anchors; the new issuer waits.
//! 2. **Switch.** After `propagation_delay` (time for every client to load the new anchors),
//!    signing switches to the new issuer. The old root stays trusted.
//! 3. **Retire.** Once every certificate signed under the old root has expired (at most one
//!    workload TTL after the switch, plus clock skew), the old root leaves the anchors.
//!
//! At every moment every certificate sentry has issued verifies against the anchors any client
//! holds, as long as clients pick up the published anchors within `propagation_delay`.
//! All of this is pure (time is a parameter); [`crate::store`] persists it and the server drives it.

use std::time::Duration;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ca::{self, Authority, Bundle, BundleError, GenerateOptions};

/// A CA as a store holds it: the bundle, plus rotation bookkeeping when sentry manages it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCa {
    pub bundle: Bundle,
    /// `Some` when sentry generated this CA and rotates it; `None` for a user-supplied CA,
    /// which sentry never replaces (it only warns as expiry approaches).
    pub rotation: Option<RotationState>,
}

/// Rotation bookkeeping, stored as JSON beside the bundle (`rotation.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationState {
    /// SHA-256 (hex) of the active issuer certificate this bookkeeping belongs to. A CA that
    /// was replaced from outside no longer matches and is treated as user-supplied.
    #[serde(default)]
    pub issuer_sha256: String,
    /// The next issuer, whose root is already published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingIssuer>,
    /// Old roots and when they may leave the anchors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retiring: Vec<RetiringRoot>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingIssuer {
    pub issuer_chain: String,
    pub issuer_key: String,
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
}

impl std::fmt::Debug for PendingIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The issuer key is never printed.
        f.debug_struct("PendingIssuer")
            .field("published_at", &self.published_at)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetiringRoot {
    /// The root certificate, PEM.
    pub root: String,
    #[serde(with = "time::serde::rfc3339")]
    pub after: OffsetDateTime,
}

/// SHA-256 (hex) of the first certificate of `bundle.issuer_chain`, or "" if it has none.
pub fn issuer_fingerprint(bundle: &Bundle) -> String {
    use sha2::{Digest, Sha256};
    daprs_api::tls::certs_from_pem(bundle.issuer_chain.as_bytes())
        .ok()
        .and_then(|certs| certs.into_iter().next())
        .map(|cert| {
            Sha256::digest(cert.as_ref())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .unwrap_or_default()
}

impl StoredCa {
    /// True when the rotation bookkeeping was written for this very issuer.
    pub fn bookkeeping_matches(&self) -> bool {
        self.rotation
            .as_ref()
            .is_some_and(|state| state.issuer_sha256 == issuer_fingerprint(&self.bundle))
    }

    /// Ties the rotation bookkeeping to the current issuer (call before saving).
    pub fn seal(&mut self) {
        let fingerprint = issuer_fingerprint(&self.bundle);
        if let Some(state) = &mut self.rotation {
            state.issuer_sha256 = fingerprint;
        }
    }

    /// A managed CA that signs with `pending` right away, trusting only its root: used when
    /// the active CA expired while sentry was down.
    pub fn promote_pending(&self) -> Option<StoredCa> {
        let pending = self.rotation.as_ref()?.pending.as_ref()?;
        let roots = pem_blocks(&self.bundle.trust_anchors).ok()?;
        let root = roots
            .iter()
            .find(|root| ca::chain_ends_at(&pending.issuer_chain, root))?;
        let mut next = StoredCa {
            bundle: Bundle {
                trust_anchors: ca::pem_of(root),
                issuer_chain: pending.issuer_chain.clone(),
                issuer_key: pending.issuer_key.clone(),
            },
            rotation: Some(RotationState::default()),
        };
        next.seal();
        Some(next)
    }
}

/// When and how to rotate.
#[derive(Clone, Debug)]
pub struct RotationPolicy {
    /// Start a rotation when the active CA expires within this.
    pub rotate_before: Duration,
    /// How long clients may take to load newly published anchors.
    pub propagation_delay: Duration,
    /// Longest workload certificate lifetime sentry issues.
    pub workload_ttl: Duration,
    /// Allowed clock skew between sentry and its clients.
    pub skew: Duration,
}

/// A rotation policy whose numbers cannot keep trust overlapping.
#[derive(Debug, thiserror::Error)]
#[error(
    "--ca-rotate-before ({rotate_before:?}) must exceed the propagation delay + workload certificate TTL + clock skew ({needed:?}) and be shorter than the CA lifetime ({ca_ttl:?})"
)]
pub struct PolicyError {
    rotate_before: Duration,
    needed: Duration,
    ca_ttl: Duration,
}

impl RotationPolicy {
    /// Checks the numbers against the CA lifetime.
    pub fn validate(&self, ca_ttl: Duration) -> Result<(), PolicyError> {
        let needed = self.propagation_delay + self.workload_ttl + self.skew;
        if self.rotate_before <= needed || self.rotate_before >= ca_ttl {
            return Err(PolicyError {
                rotate_before: self.rotate_before,
                needed,
                ca_ttl,
            });
        }
        Ok(())
    }
}

/// One step taken by [`advance`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A new root was added to the anchors; its issuer waits for the propagation delay.
    PublishedNewRoot { new_expiry: OffsetDateTime },
    /// Signing moved to the new issuer.
    SwitchedIssuer,
    /// Old roots left the anchors.
    RetiredRoots { count: usize },
}

/// Takes at most one rotation step at `now`; callers repeat until `None`.
///
/// `active` is the loaded authority of `stored.bundle`.
pub fn advance(
    stored: &StoredCa,
    active: &Authority,
    policy: &RotationPolicy,
    generate: &GenerateOptions<'_>,
    now: OffsetDateTime,
) -> Result<Option<(StoredCa, Step)>, BundleError> {
    let Some(state) = &stored.rotation else {
        return Ok(None);
    };

    // 3. Retire roots whose certificates can no longer be valid anywhere.
    let (due, kept): (Vec<_>, Vec<_>) =
        state.retiring.iter().cloned().partition(|r| now >= r.after);
    if !due.is_empty() {
        let drop: Vec<CertificateDer<'static>> = due
            .iter()
            .flat_map(|r| daprs_api::tls::certs_from_pem(r.root.as_bytes()).unwrap_or_default())
            .collect();
        let anchors = pem_blocks(&stored.bundle.trust_anchors)?
            .into_iter()
            .filter(|c| !drop.contains(c))
            .map(|c| ca::pem_of(&c))
            .collect();
        let next = StoredCa {
            bundle: Bundle {
                trust_anchors: anchors,
                ..stored.bundle.clone()
            },
            rotation: Some(RotationState {
                retiring: kept,
                ..state.clone()
            }),
        };
        return Ok(Some((next, Step::RetiredRoots { count: due.len() })));
    }

    // 2. Switch signing once the new root had time to reach every client.
    if let Some(pending) = &state.pending {
        // Wait for the propagation delay, unless the active CA would expire first.
        let expiring = active.expiry() - now <= policy.skew;
        if now < pending.published_at + policy.propagation_delay && !expiring {
            return Ok(None);
        }
        // The last certificate the old issuer signed expires by then (plus skew for clients
        // whose clocks lag).
        let last_old_expiry = (now + policy.workload_ttl).min(active.expiry());
        let retiring = old_roots(&stored.bundle, &pending.issuer_chain)?
            .into_iter()
            .filter(|root| !state.retiring.iter().any(|r| &r.root == root))
            .map(|root| RetiringRoot {
                root,
                after: last_old_expiry + policy.skew,
            })
            .chain(state.retiring.iter().cloned())
            .collect();
        let next = StoredCa {
            bundle: Bundle {
                trust_anchors: stored.bundle.trust_anchors.clone(),
                issuer_chain: pending.issuer_chain.clone(),
                issuer_key: pending.issuer_key.clone(),
            },
            rotation: Some(RotationState {
                pending: None,
                retiring,
                ..state.clone()
            }),
        };
        return Ok(Some((next, Step::SwitchedIssuer)));
    }

    // 1. Publish a new root ahead of expiry.
    if active.expiry() - now > policy.rotate_before {
        return Ok(None);
    }
    let fresh = ca::generate(generate, now)?;
    let next = StoredCa {
        bundle: Bundle {
            trust_anchors: format!("{}{}", stored.bundle.trust_anchors, fresh.trust_anchors),
            ..stored.bundle.clone()
        },
        rotation: Some(RotationState {
            pending: Some(PendingIssuer {
                issuer_chain: fresh.issuer_chain,
                issuer_key: fresh.issuer_key,
                published_at: now,
            }),
            retiring: state.retiring.clone(),
            ..state.clone()
        }),
    };
    Ok(Some((
        next,
        Step::PublishedNewRoot {
            new_expiry: now + generate.ttl,
        },
    )))
}

/// The roots in `bundle` other than the one `new_issuer_chain` chains to, as PEM.
fn old_roots(bundle: &Bundle, new_issuer_chain: &str) -> Result<Vec<String>, BundleError> {
    Ok(pem_blocks(&bundle.trust_anchors)?
        .iter()
        .filter(|root| !ca::chain_ends_at(new_issuer_chain, root))
        .map(|root| ca::pem_of(root))
        .collect())
}

fn pem_blocks(pem: &str) -> Result<Vec<CertificateDer<'static>>, BundleError> {
    daprs_api::tls::certs_from_pem(pem.as_bytes()).map_err(|e| BundleError::Parse {
        what: "trust anchors (ca.crt)",
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
