//! rustls building blocks every daprs component reuses.
//!
//! - [`TrustAnchors`]: the roots peers must chain to, swappable at run time (a rotated root is
//!   picked up by the next handshake).
//! - [`SvidResolver`]: serves (or presents as a client) the current SVID; swappable at run time
//!   and **fails closed** until the first certificate is set.
//! - [`SpiffeServerVerifier`] / [`SpiffeClientVerifier`]: verify a peer's chain against the trust
//!   anchors and authorise it by its SPIFFE id, never by host name.
//!
//! Ed25519, ECDSA and RSA chains are accepted (whatever the ring provider verifies).

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, TrustAnchor, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::spiffe::SpiffeId;

/// What went wrong building TLS material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("failed to parse PEM {what}: {source}")]
    ParsePem {
        what: &'static str,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no {0} found in PEM input")]
    EmptyPem(&'static str),
    #[error("trust anchor {index} is not a usable root certificate: {source}")]
    TrustAnchor {
        index: usize,
        #[source]
        source: webpki::Error,
    },
    #[error("failed to load the private key: {0}")]
    LoadKey(#[source] rustls::Error),
    #[error("the certificate has no SPIFFE id: {0}")]
    NoSpiffeId(String),
    #[error("failed to build a TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The crypto provider every daprs component uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs [`provider`] as the process default; binaries call this first. Safe to call twice.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Parses every `CERTIFICATE` block of a PEM document.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::ParsePem {
            what: "certificates",
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::EmptyPem("certificate"));
    }
    Ok(certs)
}

/// Parses the first private key (PKCS#8, SEC1 or PKCS#1) of a PEM document.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::EmptyPem("private key"),
        source => TlsError::ParsePem {
            what: "private key",
            source,
        },
    })
}

/// The SPIFFE id in a certificate's URI SANs (the first `spiffe://` URI).
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Result<SpiffeId, TlsError> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref())
        .map_err(|e| TlsError::NoSpiffeId(format!("unparseable certificate: {e}")))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| TlsError::NoSpiffeId(format!("bad subjectAltName: {e}")))?
        .ok_or_else(|| TlsError::NoSpiffeId("no subjectAltName extension".into()))?;
    let uri = san
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .ok_or_else(|| TlsError::NoSpiffeId("no spiffe:// URI SAN".into()))?;
    uri.parse()
        .map_err(|e| TlsError::NoSpiffeId(format!("{e}")))
}

struct AnchorSet {
    certs: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

/// The trust anchors peers must chain to; cheap to clone, all clones see [`TrustAnchors::set`].
#[derive(Clone)]
pub struct TrustAnchors {
    inner: Arc<RwLock<Arc<AnchorSet>>>,
}

impl fmt::Debug for TrustAnchors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustAnchors")
            .field("roots", &self.current().certs.len())
            .finish()
    }
}

impl TrustAnchors {
    /// Anchors from a PEM bundle of one or more root certificates.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsError> {
        Ok(Self {
            inner: Arc::new(RwLock::new(Arc::new(Self::build(pem)?))),
        })
    }

    fn build(pem: &[u8]) -> Result<AnchorSet, TlsError> {
        let certs = certs_from_pem(pem)?;
        let mut anchors = Vec::with_capacity(certs.len());
        for (index, cert) in certs.iter().enumerate() {
            let anchor = webpki::anchor_from_trusted_cert(cert)
                .map_err(|source| TlsError::TrustAnchor { index, source })?
                .to_owned();
            anchors.push(anchor);
        }
        Ok(AnchorSet { certs, anchors })
    }

    /// Replaces the anchors for every clone; later handshakes use the new set.
    pub fn set_pem(&self, pem: &[u8]) -> Result<(), TlsError> {
        let set = Arc::new(Self::build(pem)?);
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = set;
        Ok(())
    }

    fn current(&self) -> Arc<AnchorSet> {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The current root certificates.
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        self.current().certs.clone()
    }

    /// Verifies `end_entity` (+ `intermediates`) chains to the current anchors for `usage`
    /// at `now`, and returns the SPIFFE id of the end entity.
    pub fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
        algorithms: &WebPkiSupportedAlgorithms,
    ) -> Result<SpiffeId, rustls::Error> {
        let set = self.current();
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(pki_error)?;
        cert.verify_for_usage(
            algorithms.all,
            &set.anchors,
            intermediates,
            now,
            usage,
            None,
            None,
        )
        .map_err(pki_error)?;
        spiffe_id_of(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })
    }
}

fn pki_error(error: webpki::Error) -> rustls::Error {
    use rustls::CertificateError as C;
    use webpki::Error as E;
    rustls::Error::InvalidCertificate(match error {
        E::BadDer | E::BadDerTime => C::BadEncoding,
        E::CertExpired { .. } | E::InvalidCertValidity => C::Expired,
        E::CertNotValidYet { .. } => C::NotValidYet,
        E::UnknownIssuer => C::UnknownIssuer,
        E::InvalidSignatureForPublicKey => C::BadSignature,
        E::RequiredEkuNotFoundContext(_) => C::InvalidPurpose,
        other => C::Other(rustls::OtherError(Arc::new(other))),
    })
}

/// Which peer SPIFFE ids a verifier accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMatcher {
    /// Exactly this id, trust domain included (e.g. sentry, the operator).
    Exact(SpiffeId),
    /// This namespace and app id in any trust domain (Dapr's sidecar-to-sidecar check).
    Path(SpiffeId),
    /// Any id that chains to the anchors (the operator's clients; authorised per call).
    Any,
}

impl PeerMatcher {
    fn check(&self, seen: &SpiffeId) -> Result<(), rustls::Error> {
        let ok = match self {
            Self::Exact(want) => want == seen,
            Self::Path(want) => want.same_path(seen),
            Self::Any => true,
        };
        if ok {
            Ok(())
        } else {
            Err(rustls::Error::General(format!(
                "peer identity {seen} is not the expected {self}"
            )))
        }
    }
}

impl fmt::Display for PeerMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(id) => write!(f, "{id}"),
            Self::Path(id) => write!(
                f,
                "/ns/{}/{} (any trust domain)",
                id.namespace(),
                id.app_id()
            ),
            Self::Any => f.write_str("any SPIFFE id"),
        }
    }
}

/// What both verifiers share: the anchors, the expected peer and the signature algorithms.
#[derive(Debug)]
struct PeerVerifier {
    anchors: TrustAnchors,
    expected: PeerMatcher,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PeerVerifier {
    fn new(anchors: TrustAnchors, expected: PeerMatcher) -> Self {
        Self {
            anchors,
            expected,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: webpki::KeyUsage,
    ) -> Result<(), rustls::Error> {
        let seen = self
            .anchors
            .verify(end_entity, intermediates, now, usage, &self.algorithms)?;
        self.expected.check(&seen)
    }
}

/// The handshake-signature methods both verifier traits need, delegated to [`PeerVerifier`].
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.algorithms.supported_schemes()
        }
    };
}

/// Verifies a server by SPIFFE id against [`TrustAnchors`]; the TLS server name is ignored.
#[derive(Debug)]
pub struct SpiffeServerVerifier(PeerVerifier);

impl SpiffeServerVerifier {
    pub fn new(anchors: TrustAnchors, expected: PeerMatcher) -> Self {
        Self(PeerVerifier::new(anchors, expected))
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Verifies TLS clients against [`TrustAnchors`] and authorises them by SPIFFE id.
#[derive(Debug)]
pub struct SpiffeClientVerifier(PeerVerifier);

impl SpiffeClientVerifier {
    pub fn new(anchors: TrustAnchors, expected: PeerMatcher) -> Self {
        Self(PeerVerifier::new(anchors, expected))
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; clients present their single SVID regardless.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check(
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// A certificate chain and its private key: what a component presents.
#[derive(Clone)]
pub struct Svid {
    /// Leaf first, then the issuer chain.
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<dyn rustls::sign::SigningKey>,
    pub id: SpiffeId,
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Svid {
    /// An SVID from a PEM chain (leaf first) and a PEM private key.
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let chain = certs_from_pem(chain_pem)?;
        Self::new(chain, key_from_pem(key_pem)?)
    }

    /// An SVID from DER parts; the SPIFFE id is read from the leaf.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, TlsError> {
        let leaf = chain.first().ok_or(TlsError::EmptyPem("certificate"))?;
        let id = spiffe_id_of(leaf)?;
        let key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(TlsError::LoadKey)?;
        Ok(Self { chain, key, id })
    }
}

/// Holds the current SVID and hands it to rustls, as server or client; empty until set.
#[derive(Clone, Default)]
pub struct SvidResolver {
    current: Arc<RwLock<Option<Arc<CertifiedKey>>>>,
}

impl fmt::Debug for SvidResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidResolver")
            .field("has_certificate", &self.get().is_some())
            .finish()
    }
}

impl SvidResolver {
    /// A resolver that already holds `svid`.
    pub fn with(svid: Svid) -> Self {
        let resolver = Self::default();
        resolver.set(svid);
        resolver
    }

    /// Swaps in a new SVID; handshakes after this present it, running connections are kept.
    pub fn set(&self, svid: Svid) {
        let key = Arc::new(CertifiedKey::new(svid.chain, svid.key));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for SvidResolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // `None` aborts the handshake: servers fail closed until a certificate is held.
        self.get()
    }
}

impl rustls::client::ResolvesClientCert for SvidResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.get()
    }

    fn has_certs(&self) -> bool {
        self.get().is_some()
    }
}

/// ALPN protocols for gRPC (HTTP/2) servers and clients.
pub const ALPN_H2: &[u8] = b"h2";

/// A server configuration that serves the resolver's SVID.
///
/// With `clients: Some(..)` client certificates are required and verified (mutual TLS);
/// with `None` no client certificate is asked for (sentry: the token authenticates).
pub fn server_config(
    svid: SvidResolver,
    clients: Option<SpiffeClientVerifier>,
) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(Arc::new(verifier)),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(svid));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client configuration that verifies the server by SPIFFE id and, with `svid: Some(..)`,
/// presents that SVID (mutual TLS).
pub fn client_config(
    server: SpiffeServerVerifier,
    svid: Option<SvidResolver>,
) -> Result<rustls::ClientConfig, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(server));
    let mut config = match svid {
        Some(resolver) => builder.with_client_cert_resolver(Arc::new(resolver)),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A TLS connection accepted by [`tls_incoming`].
pub type ServerTlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Accepts connections on `listener` and completes TLS handshakes concurrently, yielding the
/// finished streams (for `tonic`'s `serve_with_incoming`). A failed or slow handshake is
/// logged and dropped; it never stops the server or delays other clients.
pub fn tls_incoming(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<ServerTlsStream, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "failed to accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests;
