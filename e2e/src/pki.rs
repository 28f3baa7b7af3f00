//! The cluster's certificates and keys, generated fresh for every cluster.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Host names and addresses the API server's serving certificate is valid for: loopback, where
/// it listens, and the in-cluster names of the `kubernetes` Service.
const API_SERVER_SANS: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "10.0.0.1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey").finish_non_exhaustive()
    }
}

/// The cluster CA, the API server's serving certificate, the admin client certificate and
/// the service-account token signing key.
pub(crate) struct Pki {
    pub ca: Issuer<'static, KeyPair>,
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub serving: CertifiedKey,
    pub admin: CertifiedKey,
    /// PKCS#8 PEM private key the API server signs service-account tokens with.
    pub service_account_key_pem: String,
    /// Its public key, PEM, which the API server verifies tokens with.
    pub service_account_public_pem: String,
}

impl Pki {
    pub fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate().context("failed to generate the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "daprs-e2e-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("failed to self-sign the CA")?;
        let ca = Issuer::new(ca_params, ca_key);

        let serving = issue(&ca, "kube-apiserver", None, API_SERVER_SANS)?;
        // system:masters is the group the API server lets do anything, RBAC or not.
        let admin = issue(&ca, "daprs-e2e-admin", Some("system:masters"), &[])?;

        let sa_key = KeyPair::generate().context("failed to generate the service-account key")?;
        Ok(Self {
            ca,
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().to_vec(),
            serving,
            admin,
            service_account_key_pem: sa_key.serialize_pem(),
            service_account_public_pem: sa_key.public_key_pem(),
        })
    }
}

/// Issues a certificate from `ca` usable for both TLS server and client authentication:
/// the subject is `common_name` with `organization` (Kubernetes reads them as user name and
/// group), the SANs are `sans` (IP addresses are recognised).
pub(crate) fn issue(
    ca: &Issuer<'static, KeyPair>,
    common_name: &str,
    organization: Option<&str>,
    sans: &[&str],
) -> Result<CertifiedKey> {
    let key = KeyPair::generate().context("failed to generate a key")?;
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .with_context(|| format!("invalid subject alternative names {sans:?}"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
    }
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params
        .signed_by(&key, ca)
        .with_context(|| format!("failed to issue the certificate for {common_name}"))?;
    Ok(CertifiedKey {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
