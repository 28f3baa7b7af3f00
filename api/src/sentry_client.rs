//! Obtaining an SVID from sentry, as daprd does: a fresh key per request, an empty-subject CSR,
//! `SignCertificate`, and sentry verified by its SPIFFE id against the trust anchors.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use tonic::transport::Channel;

use crate::proto::sentry::{SignCertificateRequest, TokenValidator, ca_client::CaClient};
use crate::spiffe::SpiffeId;
use crate::tls::{self, PeerMatcher, SpiffeServerVerifier, Svid, TrustAnchors};

/// What failed while obtaining an SVID.
#[derive(Debug, thiserror::Error)]
pub enum SentryClientError {
    #[error("failed to generate a key or CSR: {0}")]
    GenerateKey(#[source] rcgen::Error),
    #[error("failed to build the TLS client for sentry: {0}")]
    Tls(#[source] tls::TlsError),
    #[error("invalid sentry address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("sentry refused to sign the certificate ({code:?}): {message}")]
    Sign { code: tonic::Code, message: String },
    #[error("sentry returned an unusable certificate: {0}")]
    BadResponse(String),
}

/// Who asks for a certificate and how it proves it.
#[derive(Clone, Default)]
pub struct SvidRequest {
    pub app_id: String,
    pub namespace: String,
    /// Only set for control-plane ids (as daprd does); sentry decides otherwise.
    pub trust_domain: String,
    /// A token for the validator (e.g. a pod-bound service-account token); empty for insecure.
    pub token: String,
    pub validator: TokenValidator,
}

impl std::fmt::Debug for SvidRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is never printed.
        f.debug_struct("SvidRequest")
            .field("app_id", &self.app_id)
            .field("namespace", &self.namespace)
            .field("trust_domain", &self.trust_domain)
            .field("validator", &self.validator)
            .finish_non_exhaustive()
    }
}

/// A certificate sentry issued, with its private key and the anchors sentry returned.
#[derive(Clone)]
pub struct IssuedSvid {
    pub svid: Svid,
    pub chain_pem: String,
    pub key_pem: String,
    pub trust_anchors_pem: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl std::fmt::Debug for IssuedSvid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key is never printed.
        f.debug_struct("IssuedSvid")
            .field("id", &self.svid.id)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl IssuedSvid {
    /// When to renew: the midpoint of the validity window (Dapr's rule).
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + lifetime / 2
    }
}

/// A gRPC channel to `address` (`host:port`) over TLS with `config`; the TLS server name is
/// irrelevant because the verifier authorises by SPIFFE id. Connects lazily and reconnects.
pub fn tls_channel(
    address: &str,
    config: rustls::ClientConfig,
) -> Result<Channel, SentryClientError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|source| SentryClientError::Address {
            address: address.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    Ok(
        endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
            let connector = connector.clone();
            async move {
                let host = uri
                    .host()
                    .unwrap_or("localhost")
                    .trim_matches(['[', ']'])
                    .to_owned();
                let port = uri.port_u16().unwrap_or(443);
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from(host).unwrap_or_else(|_| {
                    rustls::pki_types::ServerName::try_from("sentry.invalid")
                        .expect("static name is valid")
                });
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        })),
    )
}

/// A channel to sentry that verifies it is `sentry_id` under `anchors`.
pub fn sentry_channel(
    address: &str,
    anchors: TrustAnchors,
    sentry_id: SpiffeId,
) -> Result<Channel, SentryClientError> {
    let verifier = SpiffeServerVerifier::new(anchors, PeerMatcher::Exact(sentry_id));
    let config = tls::client_config(verifier, None).map_err(SentryClientError::Tls)?;
    tls_channel(address, config)
}

/// The key type of a requested certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// Dapr's choice for workloads.
    #[default]
    Ed25519,
    /// For certificates the Kubernetes API server verifies (webhooks): accepted everywhere,
    /// including API servers that refuse Ed25519.
    EcdsaP256,
}

/// A fresh Ed25519 key and a PEM CSR with an empty subject (sentry ignores the CSR's names).
pub fn new_key_and_csr() -> Result<(KeyPair, String), SentryClientError> {
    new_key_and_csr_with(KeyAlgorithm::Ed25519)
}

/// [`new_key_and_csr`] with a chosen key type.
pub fn new_key_and_csr_with(
    algorithm: KeyAlgorithm,
) -> Result<(KeyPair, String), SentryClientError> {
    let alg = match algorithm {
        KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let key = KeyPair::generate_for(alg).map_err(SentryClientError::GenerateKey)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(SentryClientError::GenerateKey)?;
    Ok((key, csr))
}

/// Asks sentry for a certificate with a fresh Ed25519 key, once (callers retry with backoff).
pub async fn request_svid(
    channel: Channel,
    request: &SvidRequest,
) -> Result<IssuedSvid, SentryClientError> {
    request_svid_with_key(channel, request, KeyAlgorithm::Ed25519).await
}

/// [`request_svid`] with a chosen key type.
pub async fn request_svid_with_key(
    channel: Channel,
    request: &SvidRequest,
    algorithm: KeyAlgorithm,
) -> Result<IssuedSvid, SentryClientError> {
    let (key, csr) = new_key_and_csr_with(algorithm)?;
    let response = CaClient::new(channel)
        .sign_certificate(SignCertificateRequest {
            id: request.app_id.clone(),
            token: request.token.clone(),
            trust_domain: request.trust_domain.clone(),
            namespace: request.namespace.clone(),
            certificate_signing_request: csr.into_bytes(),
            token_validator: request.validator as i32,
            jwt_audiences: Vec::new(),
        })
        .await
        .map_err(|status| SentryClientError::Sign {
            code: status.code(),
            message: status.message().to_owned(),
        })?
        .into_inner();

    let bad = |what: String| SentryClientError::BadResponse(what);
    let valid_until = response
        .valid_until
        .ok_or_else(|| bad("no valid_until".into()))?;
    let not_after =
        SystemTime::try_from(valid_until).map_err(|e| bad(format!("valid_until: {e}")))?;
    let chain_pem = String::from_utf8(response.workload_certificate)
        .map_err(|_| bad("workload_certificate is not PEM text".into()))?;
    let key_pem = key.serialize_pem();
    let chain = tls::certs_from_pem(chain_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let not_before = not_before_of(&chain[0]).map_err(bad)?;
    let svid = Svid::new(chain, PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .map_err(|e| bad(e.to_string()))?;
    let trust_anchors_pem = response
        .trust_chain_certificates
        .into_iter()
        .map(|pem| String::from_utf8_lossy(&pem).into_owned())
        .collect();
    Ok(IssuedSvid {
        svid,
        chain_pem,
        key_pem,
        trust_anchors_pem,
        not_before,
        not_after,
    })
}

fn not_before_of(cert: &rustls::pki_types::CertificateDer<'_>) -> Result<SystemTime, String> {
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref())
        .map_err(|e| format!("leaf certificate: {e}"))?;
    let secs = parsed.validity().not_before.timestamp();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_has_an_empty_subject_and_a_valid_signature() {
        let (key, _) = new_key_and_csr_with(KeyAlgorithm::EcdsaP256).unwrap();
        assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        let (_, pem) = new_key_and_csr().unwrap();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|d: rustls::pki_types::CertificateSigningRequestDer<'static>| d)
            .unwrap();
        use x509_parser::prelude::FromDer;
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .unwrap();
        csr.verify_signature().unwrap();
        assert_eq!(csr.certification_request_info.subject.iter().count(), 0);
    }
}
