//! Keeps sentry's CA current: loads it from the store (generating one when there is none),
//! takes due rotation steps, reloads on outside changes, and re-issues sentry's own serving
//! certificate whenever the CA changes or the certificate reaches half its life.

use std::sync::Arc;
use std::time::Duration;

use daprs_api::SpiffeId;
use daprs_api::tls::{Svid, SvidResolver};
use time::OffsetDateTime;

use crate::ca::{self, Authority, BundleError, GenerateOptions, IssueRequest, KeyAlgorithm};
use crate::metrics::Metrics;
use crate::rotation::{self, RotationPolicy, RotationState, StoredCa};
use crate::server::CurrentAuthority;
use crate::store::{CaStore, StoreError};

/// Warn about an expiring CA from this far out (Dapr does the same).
pub const EXPIRY_WARNING_WINDOW: Duration = Duration::from_secs(30 * 86_400);
/// Least time between two "the CA expires soon" warnings.
const EXPIRY_WARNING_INTERVAL: Duration = Duration::from_secs(3600);
/// Attempts at a write that keeps conflicting with another writer (another sentry replica).
const MAX_CONFLICT_RETRIES: usize = 5;

/// What stopped the CA from loading.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the CA in {location} cannot be used: {source}")]
    Invalid {
        location: String,
        #[source]
        source: BundleError,
    },
    #[error("failed to issue sentry's own certificate: {0}")]
    ServingCertificate(String),
}

/// Source of "now", replaceable in tests.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(OffsetDateTime::now_utc)
}

/// Everything the manager needs.
pub struct CaManager {
    pub store: Box<dyn CaStore>,
    pub trust_domain: String,
    pub namespace: String,
    pub algorithm: KeyAlgorithm,
    pub ca_ttl: Duration,
    /// `None` turns automatic rotation off.
    pub rotation: Option<RotationPolicy>,
    pub workload_ttl: Duration,
    pub skew: Duration,
    pub current: CurrentAuthority,
    pub serving: SvidResolver,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// When the expiry warning was last logged.
    pub last_expiry_warning: std::sync::Mutex<Option<OffsetDateTime>>,
    /// sentry's current serving certificate.
    pub serving_issued: std::sync::Mutex<Option<ServingCertificate>>,
}

impl std::fmt::Debug for CaManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaManager")
            .field("store", &self.store.location())
            .finish_non_exhaustive()
    }
}

/// The certificate sentry serves its CA API with.
#[derive(Clone, Debug)]
pub struct ServingCertificate {
    pub issued_at: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Leaf + issuer chain, PEM.
    pub chain_pem: String,
}

/// Result of one reconcile.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Changed,
}

impl CaManager {
    fn generate_options(&self) -> GenerateOptions<'_> {
        GenerateOptions {
            trust_domain: &self.trust_domain,
            namespace: &self.namespace,
            algorithm: self.algorithm,
            ttl: self.ca_ttl,
            skew: self.skew,
        }
    }

    fn fresh(&self, now: OffsetDateTime) -> Result<StoredCa, ManagerError> {
        let bundle = ca::generate(&self.generate_options(), now).map_err(|source| {
            ManagerError::Invalid {
                location: self.store.location(),
                source,
            }
        })?;
        Ok(StoredCa {
            bundle,
            rotation: Some(RotationState::default()),
        })
    }

    /// Loads, repairs and rotates the CA once, retrying write conflicts; swaps in a changed CA.
    pub async fn reconcile(&self) -> Result<Outcome, ManagerError> {
        let mut attempt = 0;
        loop {
            match self.reconcile_once().await {
                Err(ManagerError::Store(StoreError::Conflict(what)))
                    if attempt < MAX_CONFLICT_RETRIES =>
                {
                    attempt += 1;
                    tracing::info!(%what, attempt, "another writer changed the CA; re-reading");
                }
                result => return result,
            }
        }
    }

    async fn reconcile_once(&self) -> Result<Outcome, ManagerError> {
        let now = (self.clock)();
        let location = self.store.location();
        let invalid = |source| ManagerError::Invalid {
            location: location.clone(),
            source,
        };
        let loaded = self.store.load().await?;
        // `write` = the CA itself changed and must be stored (only ever a CA sentry manages).
        let (mut stored, mut write) = match loaded.ca {
            Some(ca) => (ca, false),
            None => {
                tracing::info!(%location, trust_domain = %self.trust_domain, algorithm = ?self.algorithm, "no CA found; generating a root and an issuer");
                (self.fresh(now)?, true)
            }
        };
        if stored.rotation.is_some() && !write && !stored.bookkeeping_matches() {
            tracing::warn!(%location, "{ROTATION_FILE} does not belong to this CA (it was replaced from outside); treating it as user-supplied: it will not be rotated or overwritten. Delete {ROTATION_FILE} to silence this", ROTATION_FILE = crate::store::ROTATION_KEY);
            stored.rotation = None;
        }
        let mut authority = match Authority::load(&stored.bundle, now) {
            Ok(authority) => authority,
            Err(error @ BundleError::Expired { .. }) if stored.rotation.is_some() => {
                // sentry was down past its own CA's life: move to the issuer that was waiting,
                // or start over.
                stored = match stored.promote_pending() {
                    Some(next) => {
                        tracing::error!(%location, %error, "the generated CA expired while a rotation was pending; signing with the new issuer now (workloads holding only the old root need new certificates)");
                        next
                    }
                    None => {
                        tracing::error!(%location, %error, "the generated CA expired; generating a new one (workloads will need new certificates)");
                        self.fresh(now)?
                    }
                };
                write = true;
                Authority::load(&stored.bundle, now).map_err(invalid)?
            }
            Err(source) => return Err(invalid(source)),
        };
        if let Some(policy) = self.rotation.as_ref().filter(|_| stored.rotation.is_some()) {
            while let Some((next, step)) =
                rotation::advance(&stored, &authority, policy, &self.generate_options(), now)
                    .map_err(invalid)?
            {
                self.log_rotation_step(&step, policy, now);
                self.metrics.ca_rotations.inc();
                stored = next;
                write = true;
                authority = Authority::load(&stored.bundle, now).map_err(invalid)?;
            }
        }
        if write {
            stored.seal();
            self.store.save(&stored, loaded.version.as_deref()).await?;
        }
        if write || loaded.anchors_out_of_date {
            // After a Secret write the ConfigMap read at load is still the one to replace.
            self.store
                .publish_anchors(
                    &stored.bundle.trust_anchors,
                    loaded.anchors_version.as_deref(),
                )
                .await?;
        }
        self.warn_if_expiring(&authority, &stored, now);

        let changed = self
            .current
            .get()
            .is_none_or(|current| current.bundle() != authority.bundle());
        if !changed {
            return Ok(Outcome::Unchanged);
        }
        self.metrics.issuer_changed.inc();
        self.metrics
            .issuer_expiry
            .set(authority.issuer_not_after().unix_timestamp());
        self.metrics
            .root_expiry
            .set(authority.root_not_after().unix_timestamp());
        tracing::info!(
            %location,
            issuer_expiry = %authority.issuer_not_after(),
            root_expiry = %authority.root_not_after(),
            roots = authority.trust_anchor_ders().len(),
            "CA loaded"
        );
        let authority = Arc::new(authority);
        self.current.set(authority.clone());
        self.issue_serving_certificate(&authority, now)?;
        Ok(Outcome::Changed)
    }

    fn log_rotation_step(
        &self,
        step: &rotation::Step,
        policy: &RotationPolicy,
        now: OffsetDateTime,
    ) {
        let location = self.store.location();
        match step {
            rotation::Step::PublishedNewRoot { new_expiry } => tracing::warn!(
                %location,
                %new_expiry,
                switch_at = %(now + policy.propagation_delay),
                "CA rotation: a new root is now in the trust anchors; sentry signs with its issuer from switch_at on. Workloads that read the anchors only at start (Dapr sidecars with DAPR_TRUST_ANCHORS) must be restarted before then"
            ),
            rotation::Step::SwitchedIssuer => {
                tracing::info!(%location, "CA rotation: now signing with the new issuer; the old root stays trusted until everything it signed has expired")
            }
            rotation::Step::RetiredRoots { count } => {
                tracing::info!(%location, count, "CA rotation: retired old roots from the trust anchors")
            }
        }
    }

    fn warn_if_expiring(&self, authority: &Authority, stored: &StoredCa, now: OffsetDateTime) {
        let left = authority.expiry() - now;
        let mut last = self
            .last_expiry_warning
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|at| now - at >= EXPIRY_WARNING_INTERVAL);
        if left < EXPIRY_WARNING_WINDOW && due {
            *last = Some(now);
            let fix = if stored.rotation.is_some() && self.rotation.is_some() {
                "rotation is under way"
            } else {
                "this CA is user-supplied or rotation is off: renew it and update the trust bundle"
            };
            tracing::warn!(expiry = %authority.expiry(), days_left = left.whole_days(), fix, "the CA expires soon");
        }
    }

    /// True once sentry's serving certificate has reached the midpoint of its validity.
    pub fn serving_renewal_due(&self, now: OffsetDateTime) -> bool {
        match &*self
            .serving_issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        {
            Some(cert) => now >= cert.issued_at + (cert.not_after - cert.issued_at) / 2,
            None => true,
        }
    }

    /// Issues sentry's own serving certificate (`spiffe://<cp-td>/ns/<ns>/dapr-sentry`).
    pub fn issue_serving_certificate(
        &self,
        authority: &Authority,
        now: OffsetDateTime,
    ) -> Result<OffsetDateTime, ManagerError> {
        let result = (|| {
            let id = SpiffeId::new(
                &self.trust_domain,
                &self.namespace,
                daprs_api::names::SENTRY_APP_ID,
            )
            .map_err(|e| e.to_string())?;
            let key =
                rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|e| e.to_string())?;
            let issued = authority
                .issue(
                    &IssueRequest {
                        id: &id,
                        public_key: &key,
                        dns_names: &[],
                        ttl: self.workload_ttl,
                        skew: self.skew,
                    },
                    now,
                )
                .map_err(|e| e.to_string())?;
            let svid = Svid::from_pem(issued.chain_pem.as_bytes(), key.serialize_pem().as_bytes())
                .map_err(|e| e.to_string())?;
            self.serving.set(svid);
            *self
                .serving_issued
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(ServingCertificate {
                issued_at: now,
                not_after: issued.not_after,
                chain_pem: issued.chain_pem.clone(),
            });
            Ok::<_, String>(issued.not_after)
        })();
        result.map_err(|e| {
            self.metrics
                .servercert_issue_failed
                .get_or_create(&crate::metrics::ReasonLabel {
                    reason: "sign".into(),
                })
                .inc();
            ManagerError::ServingCertificate(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CredentialNames;
    use crate::store::FileStore;

    const HOUR: Duration = Duration::from_secs(3600);

    fn verify_at(chain_pem: &str, anchors_pem: &str, at: OffsetDateTime) -> Result<(), String> {
        let anchors = daprs_api::tls::TrustAnchors::from_pem(anchors_pem.as_bytes()).unwrap();
        let chain = daprs_api::tls::certs_from_pem(chain_pem.as_bytes()).unwrap();
        let at = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            at.unix_timestamp() as u64,
        ));
        anchors
            .verify(
                &chain[0],
                &chain[1..],
                at,
                webpki::KeyUsage::server_auth(),
                &daprs_api::tls::provider().signature_verification_algorithms,
            )
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn manager(dir: &std::path::Path, clock: Clock, rotation: Option<RotationPolicy>) -> CaManager {
        CaManager {
            store: Box::new(FileStore {
                dir: dir.to_owned(),
                names: CredentialNames::default(),
            }),
            trust_domain: "localhost".into(),
            namespace: "default".into(),
            algorithm: KeyAlgorithm::Ed25519,
            ca_ttl: 10 * HOUR,
            rotation,
            workload_ttl: HOUR,
            skew: Duration::from_secs(60),
            current: CurrentAuthority::default(),
            serving: SvidResolver::default(),
            metrics: Arc::default(),
            clock,
            last_expiry_warning: Default::default(),
            serving_issued: Default::default(),
        }
    }

    #[tokio::test]
    async fn generates_once_then_reuses_the_stored_ca() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path(), system_clock(), None);
        assert_eq!(m.reconcile().await.unwrap(), Outcome::Changed);
        let first = std::fs::read_to_string(dir.path().join("ca.crt")).unwrap();
        assert!(m.current.get().is_some());
        assert_eq!(m.reconcile().await.unwrap(), Outcome::Unchanged);

        // A second sentry on the same folder (a restart) reuses it.
        let again = manager(dir.path(), system_clock(), None);
        again.reconcile().await.unwrap();
        assert_eq!(again.current.get().unwrap().trust_anchors_pem(), first);
    }

    #[tokio::test]
    async fn picks_up_credentials_replaced_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let m = manager(dir.path(), system_clock(), None);
        m.reconcile().await.unwrap();
        let before = m.current.get().unwrap().bundle().clone();
        let other = tempfile::tempdir().unwrap();
        manager(other.path(), system_clock(), None)
            .reconcile()
            .await
            .unwrap();
        for f in ["ca.crt", "issuer.crt", "issuer.key"] {
            std::fs::copy(other.path().join(f), dir.path().join(f)).unwrap();
        }
        assert_eq!(m.reconcile().await.unwrap(), Outcome::Changed);
        assert_ne!(m.current.get().unwrap().bundle(), &before);
        assert_eq!(m.metrics.issuer_changed.get(), 2);
    }

    #[tokio::test]
    async fn a_broken_user_ca_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        manager(a.path(), system_clock(), None)
            .reconcile()
            .await
            .unwrap();
        manager(b.path(), system_clock(), None)
            .reconcile()
            .await
            .unwrap();
        std::fs::copy(a.path().join("ca.crt"), dir.path().join("ca.crt")).unwrap();
        std::fs::copy(a.path().join("issuer.crt"), dir.path().join("issuer.crt")).unwrap();
        std::fs::copy(b.path().join("issuer.key"), dir.path().join("issuer.key")).unwrap();
        let key_before = std::fs::read(dir.path().join("issuer.key")).unwrap();
        let err = manager(dir.path(), system_clock(), None)
            .reconcile()
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("does not match the issuer certificate"),
            "{err}"
        );
        assert_eq!(
            std::fs::read(dir.path().join("issuer.key")).unwrap(),
            key_before
        );
    }

    /// Paused tokio time drives the clock: the manager, reconciling every simulated 5 minutes,
    /// rotates its CA and keeps its own serving certificate valid the whole time.
    #[tokio::test(start_paused = true)]
    async fn rotates_under_paused_time_and_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let origin = OffsetDateTime::now_utc();
        let started = tokio::time::Instant::now();
        let clock: Clock = Arc::new(move || origin + started.elapsed());
        let policy = RotationPolicy {
            rotate_before: 3 * HOUR,
            propagation_delay: Duration::from_secs(600),
            workload_ttl: HOUR,
            skew: Duration::from_secs(60),
        };
        let m = manager(dir.path(), clock.clone(), Some(policy));
        m.reconcile().await.unwrap();
        let first_root = m.current.get().unwrap().trust_anchors_pem().to_owned();
        let mut max_roots = 1;
        // (time, anchors) as published, to check against what clients hold one delay later.
        let mut published: Vec<(OffsetDateTime, String)> = vec![(clock(), first_root.clone())];
        for _ in 0..(12 * 9) {
            tokio::time::sleep(Duration::from_secs(300)).await;
            m.reconcile().await.unwrap();
            if m.serving_renewal_due(clock()) {
                m.issue_serving_certificate(&m.current.get().unwrap(), clock())
                    .unwrap();
            }
            let authority = m.current.get().unwrap();
            published.push((clock(), authority.trust_anchors_pem().to_owned()));
            let serving = m.serving_issued.lock().unwrap().clone().unwrap();
            let lagging = published
                .iter()
                .rev()
                .find(|(t, _)| *t <= clock() - Duration::from_secs(600))
                .map_or(first_root.as_str(), |(_, a)| a.as_str());
            for anchors in [authority.trust_anchors_pem(), lagging] {
                verify_at(&serving.chain_pem, anchors, clock())
                    .unwrap_or_else(|e| panic!("sentry's certificate fails at {} : {e}", clock()));
            }
            max_roots = max_roots.max(authority.trust_anchor_ders().len());
            assert!(
                authority.expiry() > clock(),
                "the active CA is always valid"
            );
        }
        let last = m.current.get().unwrap();
        assert_eq!(max_roots, 2, "old and new roots overlapped");
        assert!(
            !last.trust_anchors_pem().contains(first_root.trim()),
            "the first root was retired"
        );
        assert_eq!(m.metrics.ca_rotations.get(), 3);
    }
}

#[cfg(test)]
mod ownership_tests {
    use super::*;
    use crate::config::CredentialNames;
    use crate::store::FileStore;

    /// A CA replaced from outside while sentry's rotation.json stayed behind is user-supplied
    /// now: sentry neither rotates nor overwrites it.
    #[tokio::test]
    async fn a_replaced_ca_with_stale_bookkeeping_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let manager = |clock: Clock| CaManager {
            store: Box::new(FileStore {
                dir: dir.path().to_owned(),
                names: CredentialNames::default(),
            }),
            trust_domain: "localhost".into(),
            namespace: "default".into(),
            algorithm: KeyAlgorithm::Ed25519,
            ca_ttl: 10 * hour,
            rotation: Some(RotationPolicy {
                rotate_before: 3 * hour,
                propagation_delay: Duration::from_secs(600),
                workload_ttl: hour,
                skew: Duration::from_secs(60),
            }),
            workload_ttl: hour,
            skew: Duration::from_secs(60),
            current: CurrentAuthority::default(),
            serving: SvidResolver::default(),
            metrics: Arc::default(),
            clock,
            last_expiry_warning: Default::default(),
            serving_issued: Default::default(),
        };
        manager(system_clock()).reconcile().await.unwrap();
        assert!(dir.path().join("rotation.json").exists());

        // The user drops in a CA of their own (8h left), leaving rotation.json.
        let user = ca::generate(
            &GenerateOptions {
                trust_domain: "localhost",
                namespace: "default",
                algorithm: KeyAlgorithm::Ed25519,
                ttl: 8 * hour,
                skew: Duration::ZERO,
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        std::fs::write(dir.path().join("ca.crt"), &user.trust_anchors).unwrap();
        std::fs::write(dir.path().join("issuer.crt"), &user.issuer_chain).unwrap();
        std::fs::write(dir.path().join("issuer.key"), &user.issuer_key).unwrap();

        // Six hours later a managed CA would rotate; this one must not be touched.
        let later = OffsetDateTime::now_utc() + 6 * hour;
        let m = manager(Arc::new(move || later));
        m.reconcile().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(),
            user.trust_anchors
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("issuer.key")).unwrap(),
            user.issuer_key
        );
        assert_eq!(m.metrics.ca_rotations.get(), 0);
        assert_eq!(m.current.get().unwrap().bundle(), &user);
    }
}
