//! The certificate authority: a trust bundle (roots + issuer + issuer key), its validation, its
//! generation, and the issuing of workload certificates exactly as Dapr issues them.
//!
//! Everything here is pure: the current time is a parameter, so tests can move it freely.

use std::time::Duration;

use daprs_api::SpiffeId;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Key algorithm for generated roots and issuers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// Ed25519, Dapr's default.
    Ed25519,
    /// ECDSA on NIST P-256.
    EcdsaP256,
}

impl KeyAlgorithm {
    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        KeyPair::generate_for(match self {
            Self::Ed25519 => &rcgen::PKCS_ED25519,
            Self::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        })
    }
}

/// The three PEM documents of a trust bundle, as stored in files or the `dapr-trust-bundle`
/// Secret (`ca.crt`, `issuer.crt`, `issuer.key`).
#[derive(Clone, PartialEq, Eq)]
pub struct Bundle {
    /// Every trusted root, concatenated.
    pub trust_anchors: String,
    /// The issuer certificate, then any intermediates (the root may be appended; it is ignored).
    pub issuer_chain: String,
    /// The issuer's private key (PKCS#8).
    pub issuer_key: String,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle").finish_non_exhaustive()
    }
}

/// Why a bundle cannot be used; each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("failed to parse the {what}: {detail}")]
    Parse { what: &'static str, detail: String },
    #[error(
        "failed to read the issuer key: {0}; the key must be PKCS#8 PEM (\"BEGIN PRIVATE KEY\"), convert it with `openssl pkcs8 -topk8 -nocrypt -in issuer.key`"
    )]
    Key(String),
    #[error("trust anchor {subject:?} is not a self-signed root certificate")]
    AnchorNotSelfSigned { subject: String },
    #[error(
        "the issuer certificate {subject:?} is not a CA certificate (basicConstraints CA:TRUE is required)"
    )]
    IssuerNotCa { subject: String },
    #[error(
        "the issuer key does not match the issuer certificate {subject:?}: supply the key the certificate was made for"
    )]
    KeyMismatch { subject: String },
    #[error(
        "the issuer certificate {subject:?} does not chain to any trust anchor (issuer {issuer:?}): put its root in ca.crt"
    )]
    NotChained { subject: String, issuer: String },
    #[error("the {what} {subject:?} expired at {not_after} (now {now})")]
    Expired {
        what: &'static str,
        subject: String,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error(
        "the {what} {subject:?} is not valid before {not_before} (now {now}): check the clocks"
    )]
    NotYetValid {
        what: &'static str,
        subject: String,
        not_before: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error("failed to generate the CA: {0}")]
    Generate(#[source] rcgen::Error),
    #[error(
        "certificates signed by this CA do not verify against its own anchors ({detail}); the issuer's subject (under root {subject:?}) may use an encoding sentry cannot reproduce, such as repeated or multi-valued attributes: issue the CA with a simple subject such as O=<name>"
    )]
    SelfCheck { subject: String, detail: String },
}

/// Why a workload certificate could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error(
        "the issuer certificate expired at {not_after} (now {now}); sentry cannot sign until its CA is renewed"
    )]
    IssuerExpired {
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    },
    #[error("failed to sign the certificate: {0}")]
    Sign(#[source] rcgen::Error),
    #[error("failed to build the certificate: {0}")]
    Build(String),
}

/// A parsed certificate's facts we need.
struct CertInfo {
    der: CertificateDer<'static>,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertInfo>, BundleError> {
    let ders = daprs_api::tls::certs_from_pem(pem.as_bytes()).map_err(|e| BundleError::Parse {
        what,
        detail: e.to_string(),
    })?;
    ders.into_iter()
        .map(|der| {
            let (_, cert) =
                X509Certificate::from_der(der.as_ref()).map_err(|e| BundleError::Parse {
                    what,
                    detail: e.to_string(),
                })?;
            let info = CertInfo {
                subject: cert.subject().to_string(),
                not_before: cert.validity().not_before.to_datetime(),
                not_after: cert.validity().not_after.to_datetime(),
                der: der.clone(),
            };
            Ok(info)
        })
        .collect()
}

fn with_cert<T>(info: &CertInfo, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (_, cert) = X509Certificate::from_der(info.der.as_ref()).expect("parsed before");
    f(&cert)
}

fn is_signed_by(child: &CertInfo, parent: &CertInfo) -> bool {
    with_cert(child, |child| {
        with_cert(parent, |parent| {
            child.issuer() == parent.subject()
                && child.verify_signature(Some(parent.public_key())).is_ok()
        })
    })
}

/// True when the last certificate of `issuer_chain` (PEM) is signed by `root`.
pub(crate) fn chain_ends_at(issuer_chain: &str, root: &CertificateDer<'_>) -> bool {
    let Ok(chain) = parse_certs(issuer_chain, "issuer certificate") else {
        return false;
    };
    let Ok(roots) = parse_certs(&pem_of(root), "root") else {
        return false;
    };
    chain
        .iter()
        .rfind(|c| c.der != roots[0].der)
        .is_some_and(|top| is_signed_by(top, &roots[0]))
}

fn check_validity(
    info: &CertInfo,
    what: &'static str,
    now: OffsetDateTime,
) -> Result<(), BundleError> {
    if now > info.not_after {
        return Err(BundleError::Expired {
            what,
            subject: info.subject.clone(),
            not_after: info.not_after,
            now,
        });
    }
    if now < info.not_before {
        return Err(BundleError::NotYetValid {
            what,
            subject: info.subject.clone(),
            not_before: info.not_before,
            now,
        });
    }
    Ok(())
}

/// A loaded, validated CA that can sign workload certificates.
pub struct Authority {
    bundle: Bundle,
    anchors: Vec<CertInfo>,
    issuer_chain_pem: String,
    issuer: Issuer<'static, KeyPair>,
    issuer_not_after: OffsetDateTime,
    /// NotAfter of the root the issuer chains to.
    root_not_after: OffsetDateTime,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("issuer_not_after", &self.issuer_not_after)
            .field("root_not_after", &self.root_not_after)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// Validates a bundle at `now`: every anchor is a self-signed root, the issuer is a CA
    /// that chains to an anchor, the key matches the issuer, and the issuer chain is valid now.
    pub fn load(bundle: &Bundle, now: OffsetDateTime) -> Result<Self, BundleError> {
        let anchors = parse_certs(&bundle.trust_anchors, "trust anchors (ca.crt)")?;
        for anchor in &anchors {
            let self_signed = with_cert(anchor, |c| {
                c.subject() == c.issuer() && c.verify_signature(None).is_ok()
            });
            if !self_signed {
                return Err(BundleError::AnchorNotSelfSigned {
                    subject: anchor.subject.clone(),
                });
            }
        }
        let mut chain = parse_certs(&bundle.issuer_chain, "issuer certificate (issuer.crt)")?;
        // A root appended to the issuer chain is ignored, as Dapr does.
        chain.retain(|c| !anchors.iter().any(|a| a.der == c.der));
        let issuer_info = chain.first().ok_or_else(|| BundleError::Parse {
            what: "issuer certificate (issuer.crt)",
            detail: "it only contains the root; put the issuer certificate first".into(),
        })?;
        if !with_cert(issuer_info, |c| c.is_ca()) {
            return Err(BundleError::IssuerNotCa {
                subject: issuer_info.subject.clone(),
            });
        }

        // Each certificate must be signed by the next; the last by an anchor.
        for pair in chain.windows(2) {
            if !is_signed_by(&pair[0], &pair[1]) {
                return Err(BundleError::NotChained {
                    subject: pair[0].subject.clone(),
                    issuer: with_cert(&pair[0], |c| c.issuer().to_string()),
                });
            }
        }
        let top = chain.last().expect("chain is non-empty");
        let root = anchors
            .iter()
            .find(|anchor| is_signed_by(top, anchor))
            .ok_or_else(|| BundleError::NotChained {
                subject: top.subject.clone(),
                issuer: with_cert(top, |c| c.issuer().to_string()),
            })?;
        check_validity(root, "root certificate", now)?;
        for cert in &chain {
            check_validity(cert, "issuer certificate", now)?;
        }

        let key =
            KeyPair::from_pem(&bundle.issuer_key).map_err(|e| BundleError::Key(e.to_string()))?;
        let cert_key = with_cert(issuer_info, |c| c.public_key().raw.to_vec());
        if key.subject_public_key_info() != cert_key {
            return Err(BundleError::KeyMismatch {
                subject: issuer_info.subject.clone(),
            });
        }
        let issuer =
            Issuer::from_ca_cert_der(&issuer_info.der, key).map_err(|e| BundleError::Parse {
                what: "issuer certificate (issuer.crt)",
                detail: e.to_string(),
            })?;
        let issuer_not_after = chain.iter().map(|c| c.not_after).min().expect("non-empty");
        let root_not_after = root.not_after;
        let issuer_chain_pem = chain.iter().map(|c| pem_of(&c.der)).collect::<String>();
        let authority = Self {
            bundle: bundle.clone(),
            anchors,
            issuer_chain_pem,
            issuer,
            issuer_not_after,
            root_not_after,
        };
        authority.self_check(now)?;
        Ok(authority)
    }

    /// Signs a throwaway certificate and verifies it against the anchors, so a CA whose
    /// certificates would not verify (e.g. a subject rcgen cannot reproduce) is refused at load.
    fn self_check(&self, now: OffsetDateTime) -> Result<(), BundleError> {
        let failed = |detail: String| BundleError::SelfCheck {
            subject: self
                .anchors
                .first()
                .map(|a| a.subject.clone())
                .unwrap_or_default(),
            detail,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(BundleError::Generate)?;
        let id = SpiffeId::new("self-check.invalid", "sentry", "self-check")
            .map_err(|e| failed(e.to_string()))?;
        let issued = self
            .issue(
                &IssueRequest {
                    id: &id,
                    public_key: &key,
                    dns_names: &[],
                    ttl: Duration::from_secs(60),
                    skew: Duration::ZERO,
                },
                now,
            )
            .map_err(|e| failed(e.to_string()))?;
        let anchors = daprs_api::tls::TrustAnchors::from_pem(self.bundle.trust_anchors.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
        let chain = daprs_api::tls::certs_from_pem(issued.chain_pem.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
        let at = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(
            u64::try_from(now.unix_timestamp()).unwrap_or(0),
        ));
        anchors
            .verify(
                &chain[0],
                &chain[1..],
                at,
                webpki::KeyUsage::client_auth(),
                &daprs_api::tls::provider().signature_verification_algorithms,
            )
            .map(drop)
            .map_err(|e| failed(e.to_string()))
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The PEM trust anchors handed to every client.
    pub fn trust_anchors_pem(&self) -> &str {
        &self.bundle.trust_anchors
    }

    pub fn trust_anchor_ders(&self) -> Vec<CertificateDer<'static>> {
        self.anchors.iter().map(|a| a.der.clone()).collect()
    }

    pub fn issuer_not_after(&self) -> OffsetDateTime {
        self.issuer_not_after
    }

    pub fn root_not_after(&self) -> OffsetDateTime {
        self.root_not_after
    }

    /// When this CA stops being able to sign: the earlier of its issuer's and root's expiry.
    pub fn expiry(&self) -> OffsetDateTime {
        self.issuer_not_after.min(self.root_not_after)
    }

    /// Issues a workload certificate. NotBefore is backdated by `skew`; NotAfter is
    /// `now + ttl`, capped at the issuer's expiry (the result says when it was capped).
    pub fn issue(
        &self,
        request: &IssueRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        if now >= self.expiry() {
            return Err(IssueError::IssuerExpired {
                not_after: self.expiry(),
                now,
            });
        }
        let wanted = now + request.ttl;
        let not_after = wanted.min(self.expiry());
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.not_before = now - request.skew;
        params.not_after = not_after;
        params.serial_number = Some(random_serial());
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let uri = request
            .id
            .to_string()
            .try_into()
            .map_err(|e: rcgen::Error| IssueError::Build(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
        for dns in request.dns_names {
            let name = dns
                .clone()
                .try_into()
                .map_err(|e: rcgen::Error| IssueError::Build(format!("DNS name {dns:?}: {e}")))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        let leaf = params
            .signed_by(&request.public_key, &self.issuer)
            .map_err(IssueError::Sign)?;
        Ok(Issued {
            chain_pem: format!("{}{}", leaf.pem(), self.issuer_chain_pem),
            not_after,
            capped: not_after < wanted,
        })
    }
}

/// What to certify.
pub struct IssueRequest<'a> {
    pub id: &'a SpiffeId,
    pub public_key: &'a dyn PublicKeyData,
    pub dns_names: &'a [String],
    pub ttl: Duration,
    pub skew: Duration,
}

impl std::fmt::Debug for IssueRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssueRequest")
            .field("id", &self.id.to_string())
            .field("dns_names", &self.dns_names)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// An issued workload certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The leaf then the issuer chain (no root), PEM.
    pub chain_pem: String,
    pub not_after: OffsetDateTime,
    /// True when NotAfter was cut short by the issuer's expiry.
    pub capped: bool,
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // keep it positive
    SerialNumber::from_slice(&bytes)
}

pub(crate) fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// Parameters of a generated CA.
#[derive(Clone, Debug)]
pub struct GenerateOptions<'a> {
    /// The control plane's trust domain (root subject `O=<td>`).
    pub trust_domain: &'a str,
    /// sentry's namespace (issuer subject `O=spiffe://<td>/ns/<ns>/dapr-sentry`).
    pub namespace: &'a str,
    pub algorithm: KeyAlgorithm,
    /// Lifetime of the root and the issuer (Dapr: 365 days).
    pub ttl: Duration,
    /// Backdating of NotBefore.
    pub skew: Duration,
}

/// Generates a new root and issuer as Dapr does. The root key is not kept: renewal makes a
/// new root (see [`crate::rotation`]).
pub fn generate(options: &GenerateOptions<'_>, now: OffsetDateTime) -> Result<Bundle, BundleError> {
    let ca_params = |subject: String, usages: Vec<KeyUsagePurpose>| {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, subject);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = usages;
        params.not_before = now - options.skew;
        params.not_after = now + options.ttl;
        params.serial_number = Some(random_serial());
        params
    };
    let root_key = options
        .algorithm
        .generate()
        .map_err(BundleError::Generate)?;
    let root_params = ca_params(
        options.trust_domain.to_owned(),
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ],
    );
    let root = root_params
        .self_signed(&root_key)
        .map_err(BundleError::Generate)?;
    let root_issuer = Issuer::new(root_params, root_key);

    let issuer_key = options
        .algorithm
        .generate()
        .map_err(BundleError::Generate)?;
    let issuer_params = ca_params(
        daprs_api::names::sentry_audience(options.trust_domain, options.namespace),
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ],
    );
    let issuer = issuer_params
        .signed_by(&issuer_key, &root_issuer)
        .map_err(BundleError::Generate)?;
    Ok(Bundle {
        trust_anchors: root.pem(),
        issuer_chain: issuer.pem(),
        issuer_key: issuer_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests;
