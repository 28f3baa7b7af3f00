//! Certificate signing requests: only the public key and the signature are used; the CSR's
//! subject and SANs are ignored (identity comes from the validator).

use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

/// Why a CSR was refused; every message names what was found and what is accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("the certificate signing request is empty")]
    Empty,
    #[error("the certificate signing request is not PEM with a CERTIFICATE REQUEST block: {0}")]
    Pem(String),
    #[error("the certificate signing request is not valid DER: {0}")]
    Der(String),
    #[error(
        "unsupported key type {0} in the certificate signing request; use Ed25519, ECDSA P-256/P-384 or RSA"
    )]
    UnsupportedKey(String),
    #[error("the certificate signing request's signature does not verify ({0})")]
    BadSignature(String),
}

/// The key algorithm of a verified CSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    Rsa,
}

/// A CSR whose signature verified: its public key, ready to be certified.
#[derive(Debug)]
pub struct VerifiedCsr {
    pub kind: KeyKind,
    pub public_key: rcgen::SubjectPublicKeyInfo,
}

/// Parses a PEM CSR (block `CERTIFICATE REQUEST`, or the legacy label `CERTIFICATE`) and
/// verifies its signature.
pub fn verify_pem(pem: &[u8]) -> Result<VerifiedCsr, CsrError> {
    if pem.iter().all(u8::is_ascii_whitespace) {
        return Err(CsrError::Empty);
    }
    let der = match CertificateSigningRequestDer::from_pem_slice(pem) {
        Ok(der) => der.as_ref().to_vec(),
        Err(_) => legacy_certificate_block(pem)?,
    };
    verify_der(&der)
}

/// Dapr also accepts a CSR wrapped in a block labelled `CERTIFICATE`.
fn legacy_certificate_block(pem: &[u8]) -> Result<Vec<u8>, CsrError> {
    rustls::pki_types::CertificateDer::from_pem_slice(pem)
        .map(|der| der.as_ref().to_vec())
        .map_err(|e| CsrError::Pem(e.to_string()))
}

/// Verifies a DER CSR.
pub fn verify_der(der: &[u8]) -> Result<VerifiedCsr, CsrError> {
    let (_, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Der(e.to_string()))?;
    let spki = &csr.certification_request_info.subject_pki;
    let algorithm = &spki.algorithm.algorithm;
    let kind = if *algorithm == OID_SIG_ED25519 {
        KeyKind::Ed25519
    } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
        KeyKind::Rsa
    } else if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 => KeyKind::EcdsaP256,
            Some(c) if c == OID_NIST_EC_P384 => KeyKind::EcdsaP384,
            Some(c) => return Err(CsrError::UnsupportedKey(format!("EC curve {c}"))),
            None => {
                return Err(CsrError::UnsupportedKey(
                    "EC key without a named curve".into(),
                ));
            }
        }
    } else {
        return Err(CsrError::UnsupportedKey(format!(
            "with algorithm OID {algorithm}"
        )));
    };
    csr.verify_signature()
        .map_err(|e| CsrError::BadSignature(e.to_string()))?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| CsrError::UnsupportedKey(format!("{kind:?} key rcgen cannot use: {e}")))?;
    Ok(VerifiedCsr { kind, public_key })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    pub(crate) const RSA_KEY: &str = include_str!("../../api/tests/fixtures/rsa-2048.key");
    const P521_CSR: &str = include_str!("../tests/fixtures/p521.csr");

    pub(crate) fn csr_for(key: &KeyPair) -> String {
        let mut params = CertificateParams::new(vec!["ignored.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    #[test]
    fn accepts_every_supported_key_type() {
        let cases = [
            (
                KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
                KeyKind::Ed25519,
            ),
            (
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
                KeyKind::EcdsaP256,
            ),
            (
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
                KeyKind::EcdsaP384,
            ),
            (
                KeyPair::from_pkcs8_pem_and_sign_algo(RSA_KEY, &rcgen::PKCS_RSA_SHA256).unwrap(),
                KeyKind::Rsa,
            ),
        ];
        for (key, kind) in cases {
            let verified = verify_pem(csr_for(&key).as_bytes()).unwrap();
            assert_eq!(verified.kind, kind);
            use rcgen::PublicKeyData;
            assert_eq!(verified.public_key.der_bytes(), key.der_bytes(), "{kind:?}");
        }
    }

    #[test]
    fn accepts_the_legacy_certificate_label() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let pem = csr_for(&key).replace("CERTIFICATE REQUEST", "CERTIFICATE");
        assert_eq!(verify_pem(pem.as_bytes()).unwrap().kind, KeyKind::Ed25519);
    }

    #[test]
    fn refuses_a_bad_signature() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let pem = csr_for(&key);
        let der = CertificateSigningRequestDer::from_pem_slice(pem.as_bytes()).unwrap();
        let mut der = der.as_ref().to_vec();
        // Flip a bit inside the signature (the last bytes of the DER).
        let last = der.len() - 3;
        der[last] ^= 0x01;
        assert!(matches!(verify_der(&der), Err(CsrError::BadSignature(_))));
    }

    #[test]
    fn refuses_unsupported_keys_naming_them() {
        // A P-521 CSR made with `openssl req -new -newkey ec:<(openssl ecparam -name secp521r1)`.
        let err = verify_pem(P521_CSR.as_bytes()).unwrap_err();
        assert!(matches!(err, CsrError::UnsupportedKey(_)), "{err}");
        assert!(err.to_string().contains("1.3.132.0.35"), "{err}");
        assert!(err.to_string().contains("use Ed25519"), "{err}");
    }

    #[test]
    fn refuses_empty_and_garbage() {
        assert_eq!(verify_pem(b"").unwrap_err(), CsrError::Empty);
        assert!(matches!(verify_pem(b"hello"), Err(CsrError::Pem(_))));
        assert!(matches!(
            verify_der(b"\x30\x03\x02\x01\x00"),
            Err(CsrError::Der(_))
        ));
    }
}
