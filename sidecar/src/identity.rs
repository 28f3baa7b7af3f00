//! The sidecar's workload identity: an SVID from sentry, renewed before it expires.
//!
//! daprd asks sentry exactly as Dapr's does (Dapr's `pkg/security`): a fresh Ed25519 key and an
//! empty-subject CSR per request, the projected token from
//! `/var/run/secrets/dapr.io/sentrytoken/token` (or `DAPR_SENTRY_TOKEN_FILE`) with validator
//! `KUBERNETES` when one exists, otherwise no token and validator `INSECURE` (self-hosted
//! sentry). Sentry itself is verified by its SPIFFE id
//! `spiffe://<control-plane-td>/ns/<control-plane-ns>/dapr-sentry` against the trust anchors.
//!
//! Trust anchors come from `DAPR_TRUST_ANCHORS` (as Dapr) and, beyond Dapr, from the file named
//! by `DAPR_TRUST_ANCHORS_FILE` (the injector mounts the `dapr-trust-bundle` ConfigMap at
//! `/var/run/secrets/dapr.io/trust-anchors/ca.crt`), which is polled so that a rotated root is
//! used by the next handshake without a restart.
//!
//! Renewal: at the latest at half the certificate's life ([`IssuedSvid::renew_at`]); the old
//! certificate keeps serving while renewals fail; failures back off with jitter from
//! [`RETRY_MIN`] to [`RETRY_MAX`]. Until the first certificate is held, every TLS server built
//! from [`Identity::server_config`] refuses handshakes (the [`SvidResolver`] fails closed) and
//! [`Identity::is_ready`] is false (daprd's readiness includes it).
//!
//! # API for other modules (the operator client, the internal invocation server)
//!
//! - [`Identity::app_id`], [`Identity::namespace`]: who we are.
//! - [`Identity::spiffe_id`], [`Identity::trust_domain`]: from the certificate held (sentry
//!   decides the trust domain), `None` before the first one.
//! - [`Identity::anchors`] ([`TrustAnchors`], shared, follows rotations) and
//!   [`Identity::svid`] (`Arc<SvidResolver>`, follows renewals).
//! - [`Identity::ready`]: waits for the first certificate.
//! - [`Identity::client_config`]: a rustls client configuration presenting our SVID and
//!   verifying the server by a [`PeerMatcher`]; [`Identity::control_plane_id`] builds the id of
//!   a control-plane service (e.g. `dapr-operator`) to match exactly.
//! - [`Identity::server_config`]: mutual TLS, any client chaining to the anchors.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use daprs_api::SpiffeId;
use daprs_api::proto::sentry::TokenValidator;
use daprs_api::sentry_client::{self, IssuedSvid, SvidRequest};
use daprs_api::tls::{
    self, PeerMatcher, SpiffeClientVerifier, SpiffeServerVerifier, SvidResolver, TrustAnchors,
};
use rand::Rng;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Env var with the PEM trust anchors (Dapr's).
pub const ENV_TRUST_ANCHORS: &str = "DAPR_TRUST_ANCHORS";
/// Env var naming a trust-anchor file that is watched (daprs; set by the injector).
pub const ENV_TRUST_ANCHORS_FILE: &str = "DAPR_TRUST_ANCHORS_FILE";
/// Env var naming the token file for sentry (Dapr's).
pub const ENV_SENTRY_TOKEN_FILE: &str = "DAPR_SENTRY_TOKEN_FILE";
/// Env vars with the control plane's namespace and trust domain, used when the flags are not
/// given (Dapr's).
pub const ENV_CONTROL_PLANE_NAMESPACE: &str = "DAPR_CONTROLPLANE_NAMESPACE";
pub const ENV_CONTROL_PLANE_TRUST_DOMAIN: &str = "DAPR_CONTROLPLANE_TRUST_DOMAIN";

/// Shortest wait before retrying a failed certificate request.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// Longest wait between retries (Dapr retries every 10 s).
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// Longest wait for one answer from sentry (Dapr: 3 s per attempt).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the trust-anchor file is read for changes.
pub const ANCHORS_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Shortest wait before a renewal, so a certificate already past its midpoint does not make
/// the loop spin.
pub const RENEW_MIN_WAIT: Duration = Duration::from_secs(1);

/// Why the identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "mutual TLS needs trust anchors: set DAPR_TRUST_ANCHORS to the PEM roots or \
         DAPR_TRUST_ANCHORS_FILE to a file holding them (sentry's ca.crt)"
    )]
    NoTrustAnchors,
    #[error("failed to read the trust anchors from {source_name}: {error}")]
    TrustAnchors { source_name: String, error: String },
    #[error("mutual TLS needs --sentry-address (host:port of sentry)")]
    NoSentryAddress,
    #[error("invalid identity: {0}")]
    Id(#[from] daprs_api::SpiffeIdError),
    #[error("failed to build a TLS configuration: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Where the identity comes from.
#[derive(Clone, Debug, Default)]
pub struct IdentityConfig {
    pub app_id: String,
    pub namespace: String,
    /// `host:port` of sentry.
    pub sentry_address: String,
    pub control_plane_trust_domain: String,
    pub control_plane_namespace: String,
    /// PEM anchors given inline (`DAPR_TRUST_ANCHORS`).
    pub trust_anchors_pem: Option<String>,
    /// A watched anchors file (`DAPR_TRUST_ANCHORS_FILE`).
    pub trust_anchors_file: Option<PathBuf>,
    /// Explicit token file (`DAPR_SENTRY_TOKEN_FILE`); otherwise the projected token path.
    pub token_file: Option<PathBuf>,
}

impl IdentityConfig {
    /// Reads `DAPR_TRUST_ANCHORS`, `DAPR_TRUST_ANCHORS_FILE` and `DAPR_SENTRY_TOKEN_FILE`.
    pub fn with_process_env(mut self) -> Self {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        self.trust_anchors_pem = env(ENV_TRUST_ANCHORS);
        self.trust_anchors_file = env(ENV_TRUST_ANCHORS_FILE).map(PathBuf::from);
        self.token_file = env(ENV_SENTRY_TOKEN_FILE).map(PathBuf::from);
        self
    }
}

/// What the identity currently holds.
#[derive(Clone, Debug, Default)]
pub struct Held {
    pub id: Option<SpiffeId>,
    pub not_after: Option<SystemTime>,
    /// Number of certificates obtained so far.
    pub issued: u64,
}

/// The sidecar's identity; shared as `Arc<Identity>`.
#[derive(Debug)]
pub struct Identity {
    config: IdentityConfig,
    anchors: TrustAnchors,
    svid: Arc<SvidResolver>,
    held: watch::Sender<Held>,
}

impl Identity {
    /// Loads the anchors and builds the identity without a certificate; [`Identity::keep`]
    /// (spawned by [`Identity::start`]) obtains and renews it.
    pub fn new(config: IdentityConfig) -> Result<Self, IdentityError> {
        if config.sentry_address.is_empty() {
            return Err(IdentityError::NoSentryAddress);
        }
        let anchors = match (&config.trust_anchors_file, &config.trust_anchors_pem) {
            (Some(path), inline) => match std::fs::read(path) {
                Ok(pem) => {
                    TrustAnchors::from_pem(&pem).map_err(|e| IdentityError::TrustAnchors {
                        source_name: path.display().to_string(),
                        error: e.to_string(),
                    })?
                }
                // The mounted ConfigMap may lag behind; the inline anchors cover the start.
                Err(error) => match inline {
                    Some(pem) => inline_anchors(pem)?,
                    None => {
                        return Err(IdentityError::TrustAnchors {
                            source_name: path.display().to_string(),
                            error: error.to_string(),
                        });
                    }
                },
            },
            (None, Some(pem)) => inline_anchors(pem)?,
            (None, None) => return Err(IdentityError::NoTrustAnchors),
        };
        // Validated now so that a bad namespace or trust domain is a start-up error.
        SpiffeId::new(
            &config.control_plane_trust_domain,
            &config.control_plane_namespace,
            daprs_api::names::SENTRY_APP_ID,
        )?;
        Ok(Self {
            config,
            anchors,
            svid: Arc::new(SvidResolver::default()),
            held: watch::channel(Held::default()).0,
        })
    }

    /// [`Identity::new`], then the renewal loop and the anchors watcher in the background
    /// until `shutdown` resolves.
    pub fn start(
        config: IdentityConfig,
        metrics: Arc<Metrics>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Arc<Self>, IdentityError> {
        let identity = Arc::new(Self::new(config)?);
        let keep = identity.clone();
        let watch = identity.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = keep.keep(metrics) => {}
                () = watch.watch_anchors() => {}
                () = shutdown => {}
            }
        });
        Ok(identity)
    }

    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    pub fn control_plane_namespace(&self) -> &str {
        &self.config.control_plane_namespace
    }

    pub fn control_plane_trust_domain(&self) -> &str {
        &self.config.control_plane_trust_domain
    }

    /// The trust anchors (shared; a rotated root is seen by every holder).
    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// The current SVID for rustls (client or server); empty until the first certificate.
    pub fn svid(&self) -> &Arc<SvidResolver> {
        &self.svid
    }

    /// Our SPIFFE id, from the certificate held.
    pub fn spiffe_id(&self) -> Option<SpiffeId> {
        self.held.borrow().id.clone()
    }

    /// Our trust domain (sentry decides it: `public` unless the Configuration sets one).
    pub fn trust_domain(&self) -> Option<String> {
        self.spiffe_id().map(|id| id.trust_domain().to_owned())
    }

    /// What is held now.
    pub fn held(&self) -> Held {
        self.held.borrow().clone()
    }

    /// True once a certificate is held.
    pub fn is_ready(&self) -> bool {
        self.held.borrow().id.is_some()
    }

    /// Waits for the first certificate.
    pub async fn ready(&self) {
        let mut rx = self.held.subscribe();
        let _ = rx.wait_for(|h| h.id.is_some()).await;
    }

    /// A subscription to changes (each renewal).
    pub fn subscribe(&self) -> watch::Receiver<Held> {
        self.held.subscribe()
    }

    /// The SPIFFE id of a control-plane service (`dapr-operator`, `dapr-sentry`) in the
    /// control-plane trust domain and namespace, for [`PeerMatcher::Exact`].
    pub fn control_plane_id(&self, app_id: &str) -> Result<SpiffeId, IdentityError> {
        Ok(SpiffeId::new(
            &self.config.control_plane_trust_domain,
            &self.config.control_plane_namespace,
            app_id,
        )?)
    }

    /// A client configuration (ALPN h2) that presents our SVID and accepts a server chaining to
    /// the anchors whose id matches `peer`.
    pub fn client_config(&self, peer: PeerMatcher) -> Result<rustls::ClientConfig, IdentityError> {
        let verifier = SpiffeServerVerifier::new(self.anchors.clone(), peer);
        Ok(tls::client_config(verifier, Some((*self.svid).clone()))?)
    }

    /// A server configuration (ALPN h2) serving our SVID and requiring a client certificate
    /// that chains to the anchors (any SPIFFE id; callers are authorised per request).
    pub fn server_config(&self) -> Result<rustls::ServerConfig, IdentityError> {
        let clients = SpiffeClientVerifier::new(self.anchors.clone(), PeerMatcher::Any);
        Ok(tls::server_config((*self.svid).clone(), Some(clients))?)
    }

    fn token(&self) -> (String, TokenValidator) {
        let path = self
            .config
            .token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(daprs_api::names::SENTRY_TOKEN_PATH));
        match std::fs::read_to_string(&path) {
            Ok(token) if !token.trim().is_empty() => {
                (token.trim().to_owned(), TokenValidator::Kubernetes)
            }
            _ => (String::new(), TokenValidator::Insecure),
        }
    }

    /// Asks sentry once.
    pub async fn request(&self) -> Result<IssuedSvid, (&'static str, String)> {
        let sentry_id = self
            .control_plane_id(daprs_api::names::SENTRY_APP_ID)
            .map_err(|e| ("sentry_conn", e.to_string()))?;
        let channel = sentry_client::sentry_channel(
            &self.config.sentry_address,
            self.anchors.clone(),
            sentry_id,
        )
        .map_err(|e| ("sentry_conn", e.to_string()))?;
        let (token, validator) = self.token();
        let request = SvidRequest {
            app_id: self.config.app_id.clone(),
            namespace: self.config.namespace.clone(),
            // As daprd: only control-plane ids name their trust domain.
            trust_domain: String::new(),
            token,
            validator,
        };
        let result = tokio::time::timeout(
            REQUEST_TIMEOUT,
            sentry_client::request_svid(channel, &request),
        )
        .await
        .map_err(|_| {
            (
                "sentry_conn",
                format!("no answer from sentry within {REQUEST_TIMEOUT:?}"),
            )
        })?;
        result.map_err(|e| {
            let reason = match &e {
                sentry_client::SentryClientError::Sign { code, .. }
                    if *code == tonic::Code::Unavailable
                        || *code == tonic::Code::DeadlineExceeded =>
                {
                    "sentry_conn"
                }
                sentry_client::SentryClientError::Sign { code, .. }
                    if *code == tonic::Code::PermissionDenied
                        || *code == tonic::Code::Unauthenticated =>
                {
                    "sentry_token"
                }
                sentry_client::SentryClientError::BadResponse(_) => "invalid_ts",
                sentry_client::SentryClientError::Address { .. }
                | sentry_client::SentryClientError::Tls(_) => "sentry_conn",
                _ => "sign",
            };
            (reason, e.to_string())
        })
    }

    /// Obtains a certificate and renews it for as long as the future runs.
    pub async fn keep(&self, metrics: Arc<Metrics>) {
        let mut failures: u32 = 0;
        loop {
            let first = !self.is_ready();
            let wait = match self.request().await {
                Ok(issued) => {
                    failures = 0;
                    let now = SystemTime::now();
                    let wait = renew_wait(&issued, now);
                    tracing::info!(
                        id = %issued.svid.id,
                        renew_in_s = wait.as_secs(),
                        "obtained the workload certificate from sentry"
                    );
                    if first {
                        metrics.inc("dapr_runtime_mtls_init_total", &[]);
                    } else {
                        metrics.inc("dapr_runtime_mtls_workload_cert_rotated_total", &[]);
                    }
                    if let Ok(expiry) = issued.not_after.duration_since(SystemTime::UNIX_EPOCH) {
                        metrics.set_gauge(
                            "daprs_runtime_mtls_workload_cert_expiry_timestamp",
                            &[],
                            expiry.as_secs_f64(),
                        );
                    }
                    let id = issued.svid.id.clone();
                    self.svid.set(issued.svid);
                    self.held.send_modify(|h| {
                        h.id = Some(id);
                        h.not_after = Some(issued.not_after);
                        h.issued += 1;
                    });
                    wait
                }
                Err((reason, error)) => {
                    failures = failures.saturating_add(1);
                    let wait = retry_wait(failures);
                    if first {
                        metrics.inc("dapr_runtime_mtls_init_fail_total", &[]);
                    } else {
                        metrics.inc(
                            "dapr_runtime_mtls_workload_cert_rotated_fail_total",
                            &[("reason", reason)],
                        );
                    }
                    let still_valid = self.held().not_after.is_some_and(|t| t > SystemTime::now());
                    tracing::warn!(
                        %error,
                        sentry = %self.config.sentry_address,
                        retry_in_ms = wait.as_millis() as u64,
                        still_valid,
                        "failed to obtain a workload certificate from sentry; retrying"
                    );
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Polls the anchors file and swaps changed anchors in.
    pub async fn watch_anchors(&self) {
        let Some(path) = self.config.trust_anchors_file.clone() else {
            return std::future::pending().await;
        };
        let mut last = std::fs::read(&path).ok();
        loop {
            tokio::time::sleep(ANCHORS_POLL_INTERVAL).await;
            let Ok(pem) = tokio::fs::read(&path).await else {
                continue;
            };
            if last.as_deref() == Some(pem.as_slice()) {
                continue;
            }
            match self.anchors.set_pem(&pem) {
                Ok(()) => {
                    tracing::info!(file = %path.display(), "trust anchors changed; using the new ones");
                    last = Some(pem);
                }
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "ignoring an unusable trust-anchor file");
                    last = Some(pem);
                }
            }
        }
    }
}

fn inline_anchors(pem: &str) -> Result<TrustAnchors, IdentityError> {
    TrustAnchors::from_pem(pem.as_bytes()).map_err(|e| IdentityError::TrustAnchors {
        source_name: ENV_TRUST_ANCHORS.into(),
        error: e.to_string(),
    })
}

/// How long to wait before renewing `issued`: until its midpoint, or, when that has passed
/// (a backdated short-lived certificate), half of what is left; never less than
/// [`RENEW_MIN_WAIT`].
pub fn renew_wait(issued: &IssuedSvid, now: SystemTime) -> Duration {
    let wait = match issued.renew_at().duration_since(now) {
        Ok(wait) => wait,
        Err(_) => issued.not_after.duration_since(now).unwrap_or_default() / 2,
    };
    wait.max(RENEW_MIN_WAIT)
}

/// Exponential backoff from [`RETRY_MIN`] to [`RETRY_MAX`] with 50–100 % jitter.
pub fn retry_wait(failures: u32) -> Duration {
    let exp = RETRY_MIN.saturating_mul(1u32 << failures.saturating_sub(1).min(8));
    let capped = exp.min(RETRY_MAX);
    let factor = rand::rng().random_range(0.5..=1.0);
    capped.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        for failures in 1..20 {
            let wait = retry_wait(failures);
            assert!(wait <= RETRY_MAX, "{failures}: {wait:?}");
            assert!(wait >= RETRY_MIN / 2, "{failures}: {wait:?}");
        }
        assert!(retry_wait(1) <= RETRY_MIN);
        assert!(retry_wait(12) >= RETRY_MAX / 2);
    }

    #[test]
    fn configuration_mistakes_are_named() {
        let config = IdentityConfig {
            app_id: "a".into(),
            namespace: "default".into(),
            sentry_address: "127.0.0.1:1".into(),
            control_plane_trust_domain: "localhost".into(),
            control_plane_namespace: "default".into(),
            ..IdentityConfig::default()
        };
        let err = Identity::new(config.clone()).unwrap_err().to_string();
        assert!(err.contains("DAPR_TRUST_ANCHORS"), "{err}");
        let err = Identity::new(IdentityConfig {
            trust_anchors_pem: Some("not pem".into()),
            ..config.clone()
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("DAPR_TRUST_ANCHORS"), "{err}");
        let err = Identity::new(IdentityConfig {
            sentry_address: String::new(),
            ..config
        })
        .unwrap_err()
        .to_string();
        assert!(err.contains("--sentry-address"), "{err}");
    }
}
