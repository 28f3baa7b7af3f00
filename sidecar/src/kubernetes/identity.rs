//! The sidecar's SVID for kubernetes mode, as daprd obtains it: trust anchors from
//! `DAPR_TRUST_ANCHORS`, the projected token (`DAPR_SENTRY_TOKEN_FILE`, else the injector's
//! mount, else the legacy service-account token) with the KUBERNETES validator, a fresh
//! Ed25519 key per request, sentry verified by its SPIFFE id; renewed at half-life, the old
//! certificate kept while a renewal fails.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use daprs_api::SpiffeId;
use daprs_api::proto::sentry::TokenValidator;
use daprs_api::sentry_client::{self, IssuedSvid, SvidRequest};
use daprs_api::tls::{SvidResolver, TrustAnchors};

use super::Error;

/// Env var with the trust anchors (PEM), set by the injector.
pub const ENV_TRUST_ANCHORS: &str = "DAPR_TRUST_ANCHORS";
/// Env var naming another token file (Dapr's).
pub const ENV_TOKEN_FILE: &str = "DAPR_SENTRY_TOKEN_FILE";
/// The legacy service-account token, used when the projected one is absent.
pub const LEGACY_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Attempts at start-up before giving up (Dapr's 5).
pub const START_ATTEMPTS: u32 = 5;
/// Wait between failed requests.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(3);

/// Who the sidecar is and what it trusts.
#[derive(Clone, Debug)]
pub struct Identity {
    pub id: SpiffeId,
    pub anchors: TrustAnchors,
    pub svid: SvidResolver,
}

/// Where the certificate comes from.
#[derive(Clone, Debug)]
pub struct SentryTarget {
    pub address: String,
    pub control_plane_trust_domain: String,
    pub control_plane_namespace: String,
    pub app_id: String,
    pub namespace: String,
}

fn token() -> (String, TokenValidator) {
    let candidates: Vec<PathBuf> = std::env::var_os(ENV_TOKEN_FILE)
        .map(PathBuf::from)
        .into_iter()
        .chain([
            PathBuf::from(daprs_api::names::SENTRY_TOKEN_PATH),
            PathBuf::from(LEGACY_TOKEN_PATH),
        ])
        .collect();
    for path in candidates {
        if let Ok(token) = std::fs::read_to_string(&path) {
            return (token.trim().to_owned(), TokenValidator::Kubernetes);
        }
    }
    tracing::warn!("no service-account token found; asking sentry without one");
    (String::new(), TokenValidator::Unknown)
}

impl SentryTarget {
    async fn request(&self, anchors: &TrustAnchors) -> Result<IssuedSvid, String> {
        let sentry_id = SpiffeId::new(
            &self.control_plane_trust_domain,
            &self.control_plane_namespace,
            daprs_api::names::SENTRY_APP_ID,
        )
        .map_err(|e| e.to_string())?;
        let channel = sentry_client::sentry_channel(&self.address, anchors.clone(), sentry_id)
            .map_err(|e| e.to_string())?;
        let (token, validator) = token();
        sentry_client::request_svid(
            channel,
            &SvidRequest {
                app_id: self.app_id.clone(),
                namespace: self.namespace.clone(),
                trust_domain: String::new(),
                token,
                validator,
            },
        )
        .await
        .map_err(|e| e.to_string())
    }
}

/// The trust anchors from `DAPR_TRUST_ANCHORS`.
pub fn anchors_from_env() -> Result<TrustAnchors, Error> {
    let pem = std::env::var(ENV_TRUST_ANCHORS)
        .ok()
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| {
            Error::Config(format!(
                "{ENV_TRUST_ANCHORS} is not set: kubernetes mode needs the trust anchors (the injector sets them from the dapr-trust-bundle)"
            ))
        })?;
    TrustAnchors::from_pem(pem.as_bytes())
        .map_err(|e| Error::Config(format!("{ENV_TRUST_ANCHORS}: {e}")))
}

/// Obtains the first SVID (a few attempts), then keeps renewing it in the background.
pub async fn obtain(target: SentryTarget, anchors: TrustAnchors) -> Result<Identity, Error> {
    let mut last = String::new();
    for attempt in 1..=START_ATTEMPTS {
        match target.request(&anchors).await {
            Ok(issued) => {
                let id = issued.svid.id.clone();
                tracing::info!(%id, sentry = %target.address, "obtained the sidecar's certificate from sentry");
                let svid = SvidResolver::default();
                let renew_at = issued.renew_at();
                svid.set(issued.svid);
                tokio::spawn(renew(target, anchors.clone(), svid.clone(), renew_at));
                return Ok(Identity { id, anchors, svid });
            }
            Err(error) => {
                tracing::warn!(%error, attempt, sentry = %target.address, "failed to obtain a certificate from sentry");
                last = error;
                if attempt < START_ATTEMPTS {
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
            }
        }
    }
    Err(Error::Identity(format!(
        "sentry at {} refused or was unreachable {START_ATTEMPTS} times; last error: {last}",
        target.address
    )))
}

async fn renew(target: SentryTarget, anchors: TrustAnchors, svid: SvidResolver, first: SystemTime) {
    let mut at = first;
    loop {
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        match target.request(&anchors).await {
            Ok(issued) => {
                tracing::info!(id = %issued.svid.id, "renewed the sidecar's certificate");
                at = issued.renew_at();
                svid.set(issued.svid);
            }
            Err(error) => {
                tracing::warn!(%error, "failed to renew the sidecar's certificate; keeping the current one and retrying");
                at = SystemTime::now() + Duration::from_secs(10);
            }
        }
    }
}
