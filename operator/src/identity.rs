//! The operator's own SVID (`dapr-operator`, ECDSA P-256), obtained from sentry and renewed at
//! half its life; the old certificate keeps serving while a renewal fails. Until the first
//! one arrives the servers fail closed (no certificate, no handshake).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use daprs_api::SpiffeId;
use daprs_api::proto::sentry::TokenValidator;
use daprs_api::sentry_client::{self, SvidRequest};
use daprs_api::tls::{SvidResolver, TrustAnchors};
use tokio::sync::watch;

/// Wait between failed requests.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(10);
/// The legacy service-account token.
pub const LEGACY_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// Where to get the SVID from.
#[derive(Clone, Debug)]
pub struct Sentry {
    pub address: String,
    pub control_plane_trust_domain: String,
    pub namespace: String,
    pub anchors: TrustAnchors,
    /// `--sentry-token-file` (env `DAPR_SENTRY_TOKEN_FILE`), tried first.
    pub token_file: Option<PathBuf>,
}

/// The token and validator to present: `token_file` (an error when it cannot be read), else
/// the projected sentry token, the legacy service-account token, or none (insecure, for
/// sentry's standalone mode). Read at every request: the kubelet rotates projected tokens.
fn token(token_file: Option<&PathBuf>) -> Result<(String, TokenValidator), String> {
    if let Some(path) = token_file {
        return std::fs::read_to_string(path)
            .map(|token| (token.trim().to_owned(), TokenValidator::Kubernetes))
            .map_err(|e| format!("--sentry-token-file {}: {e}", path.display()));
    }
    for path in [daprs_api::names::SENTRY_TOKEN_PATH, LEGACY_TOKEN_PATH] {
        if let Ok(token) = std::fs::read_to_string(path) {
            return Ok((token.trim().to_owned(), TokenValidator::Kubernetes));
        }
    }
    Ok((String::new(), TokenValidator::Insecure))
}

impl Sentry {
    fn sentry_id(&self) -> Result<SpiffeId, String> {
        SpiffeId::new(
            &self.control_plane_trust_domain,
            &self.namespace,
            daprs_api::names::SENTRY_APP_ID,
        )
        .map_err(|e| e.to_string())
    }

    /// Asks sentry once.
    pub async fn request(&self) -> Result<sentry_client::IssuedSvid, String> {
        let channel =
            sentry_client::sentry_channel(&self.address, self.anchors.clone(), self.sentry_id()?)
                .map_err(|e| e.to_string())?;
        let (token, validator) = token(self.token_file.as_ref())?;
        let request = SvidRequest {
            app_id: daprs_api::names::OPERATOR_APP_ID.into(),
            namespace: self.namespace.clone(),
            trust_domain: self.control_plane_trust_domain.clone(),
            token,
            validator,
        };
        // The webhooks serve this certificate to the API server: ECDSA P-256 is accepted by
        // every API server (Dapr asks for RSA here; some refuse Ed25519).
        sentry_client::request_svid_with_key(
            channel,
            &request,
            sentry_client::KeyAlgorithm::EcdsaP256,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

/// Keeps `resolver` holding a valid SVID until `shutdown`; `held` turns true at the first.
pub async fn keep(
    sentry: Sentry,
    resolver: SvidResolver,
    held: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let wait = match sentry.request().await {
            Ok(issued) => {
                tracing::info!(id = %issued.svid.id, "obtained the operator's certificate from sentry");
                let renew_at = issued.renew_at();
                resolver.set(issued.svid);
                held.send_replace(true);
                renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .max(Duration::from_secs(1))
            }
            Err(error) => {
                tracing::error!(%error, sentry = %sentry.address, "failed to obtain the operator's certificate; retrying");
                RETRY_INTERVAL
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = crate::api::stopped(&mut shutdown) => return,
        }
    }
}
