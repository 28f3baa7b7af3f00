//! The serving certificate: from files (standalone) or from sentry (kubernetes), swapped in
//! place so running connections are kept, and TLS fails closed until the first one is held.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use daprs_api::SpiffeId;
use daprs_api::proto::sentry::TokenValidator;
use daprs_api::sentry_client::{self, SvidRequest};
use daprs_api::tls::{self, TrustAnchors};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

use crate::router::Live;

/// First retry delay after a failed issuance; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// Shortest wait before a renewal, so a certificate with a tiny lifetime cannot spin the loop.
pub const MIN_RENEW_WAIT: Duration = Duration::from_secs(1);
/// How often certificate files are checked for a change.
pub const FILE_RELOAD_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to load the serving certificate: {0}")]
    Load(#[source] tls::TlsError),
    #[error("failed to load the serving key: {0}")]
    Key(#[source] rustls::Error),
    #[error("the injector has no trust anchors to verify sentry with")]
    NoTrustAnchors,
    #[error("failed to obtain a certificate from sentry: {0}")]
    Sentry(#[source] sentry_client::SentryClientError),
}

/// The certificate the webhook serves; any chain (SPIFFE or not). Clones share it.
#[derive(Clone, Default)]
pub struct ServingCert {
    current: Arc<RwLock<Option<Arc<CertifiedKey>>>>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("has_certificate", &self.get().is_some())
            .finish()
    }
}

impl ServingCert {
    /// Swaps in a chain (leaf first) and key, both PEM. New handshakes use it; open connections
    /// keep theirs.
    pub fn set_pem(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), Error> {
        let chain = tls::certs_from_pem(chain_pem).map_err(Error::Load)?;
        let key = tls::key_from_pem(key_pem).map_err(Error::Load)?;
        let key = tls::provider()
            .key_provider
            .load_private_key(key)
            .map_err(Error::Key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(CertifiedKey::new(chain, key)));
        Ok(())
    }

    pub fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // `None` aborts the handshake: the webhook fails closed until it holds a certificate.
        self.get()
    }
}

/// A TLS server configuration for the webhook (HTTP/2 and HTTP/1.1, no client certificates).
pub fn server_config(cert: ServingCert) -> Result<rustls::ServerConfig, Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Key)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(cert));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Certificate files (standalone mode).
#[derive(Clone, Debug)]
pub struct FileSource {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl FileSource {
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })
        };
        Ok((read(&self.cert)?, read(&self.key)?))
    }

    /// Loads the files once.
    pub fn load(&self, into: &ServingCert) -> Result<(), Error> {
        let (cert, key) = self.read()?;
        into.set_pem(&cert, &key)
    }

    /// Reloads the files whenever their content changes (cert-manager, kubelet secret updates),
    /// keeping the loaded certificate when the new one does not load.
    pub async fn watch(self, into: ServingCert, mut shutdown: watch::Receiver<bool>) {
        let mut last = self.read().ok();
        loop {
            tokio::select! {
                () = tokio::time::sleep(FILE_RELOAD_INTERVAL) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            let Ok(now) = self.read() else { continue };
            if last.as_ref() == Some(&now) {
                continue;
            }
            match into.set_pem(&now.0, &now.1) {
                Ok(()) => {
                    tracing::info!(cert = %self.cert.display(), "serving certificate reloaded")
                }
                Err(error) => {
                    tracing::warn!(%error, "new certificate files do not load; keeping the current certificate")
                }
            }
            last = Some(now);
        }
    }
}

/// The injector's identity at sentry.
#[derive(Clone, Debug)]
pub struct SentrySource {
    /// `host:port` of sentry.
    pub address: String,
    pub namespace: String,
    pub trust_domain: String,
    pub token_file: PathBuf,
    pub validator: TokenValidator,
}

impl SentrySource {
    /// sentry's own SPIFFE id, which its serving certificate must carry.
    pub fn sentry_id(&self) -> Result<SpiffeId, daprs_api::SpiffeIdError> {
        daprs_api::names::sentry_audience(&self.trust_domain, &self.namespace).parse()
    }

    /// Asks sentry once for a certificate, verifying sentry against `anchors`.
    pub async fn issue(&self, anchors: &str) -> Result<sentry_client::IssuedSvid, Error> {
        let anchors = TrustAnchors::from_pem(anchors.as_bytes()).map_err(Error::Load)?;
        let sentry_id = self.sentry_id().map_err(|e| {
            Error::Sentry(sentry_client::SentryClientError::BadResponse(e.to_string()))
        })?;
        let channel = sentry_client::sentry_channel(&self.address, anchors, sentry_id)
            .map_err(Error::Sentry)?;
        let token = match self.validator {
            TokenValidator::Insecure => String::new(),
            _ => std::fs::read_to_string(&self.token_file)
                .map_err(|source| Error::Read {
                    path: self.token_file.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
        };
        // ECDSA: the API server verifies this certificate, and some refuse Ed25519.
        sentry_client::request_svid_with_key(
            channel,
            &SvidRequest {
                app_id: daprs_api::names::INJECTOR_APP_ID.into(),
                namespace: self.namespace.clone(),
                trust_domain: self.trust_domain.clone(),
                token,
                validator: self.validator,
            },
            sentry_client::KeyAlgorithm::EcdsaP256,
        )
        .await
        .map_err(Error::Sentry)
    }

    /// Keeps `into` holding a current certificate: issues one, renews it at half its life, and
    /// on failure retries with backoff while the still-valid certificate keeps serving.
    /// `issued` is told after every new certificate.
    pub async fn run(
        self,
        into: ServingCert,
        live: Arc<Live>,
        issued: watch::Sender<u64>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut retry = RETRY_MIN;
        loop {
            let wait = match live.trust_anchors() {
                None => Err(Error::NoTrustAnchors),
                Some(anchors) => self.issue(&anchors).await,
            }
            .and_then(|svid| {
                into.set_pem(svid.chain_pem.as_bytes(), svid.key_pem.as_bytes())?;
                Ok(svid)
            });
            let wait = match wait {
                Ok(svid) => {
                    retry = RETRY_MIN;
                    issued.send_modify(|n| *n += 1);
                    let renew_in = svid
                        .renew_at()
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO)
                        .max(MIN_RENEW_WAIT);
                    tracing::info!(id = %svid.svid.id, ?renew_in, "serving certificate issued by sentry");
                    renew_in
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?retry, "failed to obtain the serving certificate; keeping the current one");
                    let wait = retry;
                    retry = (retry * 2).min(RETRY_MAX);
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
