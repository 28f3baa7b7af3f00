use super::*;
use crate::csr;
use daprs_api::tls::TrustAnchors;
use rustls::pki_types::UnixTime;
use x509_parser::extensions::GeneralName;

const DAY: Duration = Duration::from_secs(86_400);
const SKEW: Duration = Duration::from_secs(15 * 60);

pub(crate) fn options(algorithm: KeyAlgorithm) -> GenerateOptions<'static> {
    GenerateOptions {
        trust_domain: "cluster.local",
        namespace: "dapr-system",
        algorithm,
        ttl: 365 * DAY,
        skew: SKEW,
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).unwrap()
}

fn unix(t: OffsetDateTime) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(t.unix_timestamp() as u64))
}

fn workload_key() -> KeyPair {
    KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap()
}

fn issue_for(authority: &Authority, id: &str, ttl: Duration, at: OffsetDateTime) -> Issued {
    let key = workload_key();
    authority
        .issue(
            &IssueRequest {
                id: &id.parse().unwrap(),
                public_key: &key,
                dns_names: &[],
                ttl,
                skew: SKEW,
            },
            at,
        )
        .unwrap()
}

/// Verifies an issued chain against the anchors at `at` and returns the leaf's SPIFFE id.
fn verify(authority: &Authority, issued: &Issued, at: OffsetDateTime) -> Result<SpiffeId, String> {
    let anchors = TrustAnchors::from_pem(authority.trust_anchors_pem().as_bytes()).unwrap();
    let chain = daprs_api::tls::certs_from_pem(issued.chain_pem.as_bytes()).unwrap();
    anchors
        .verify(
            &chain[0],
            &chain[1..],
            unix(at),
            webpki::KeyUsage::client_auth(),
            &daprs_api::tls::provider().signature_verification_algorithms,
        )
        .map_err(|e| e.to_string())
}

#[test]
fn generated_bundles_load_and_issue_verifiable_certificates() {
    for algorithm in [KeyAlgorithm::Ed25519, KeyAlgorithm::EcdsaP256] {
        let t = now();
        let bundle = generate(&options(algorithm), t).unwrap();
        let authority = Authority::load(&bundle, t).unwrap();
        assert_eq!(authority.issuer_not_after(), t + 365 * DAY);
        let issued = issue_for(&authority, "spiffe://public/ns/default/orders", DAY, t);
        let id = verify(&authority, &issued, t).unwrap();
        assert_eq!(
            id.to_string(),
            "spiffe://public/ns/default/orders",
            "{algorithm:?}"
        );
    }
}

#[test]
fn generated_hierarchy_is_shaped_like_daprs() {
    let t = now();
    let bundle = generate(&options(KeyAlgorithm::Ed25519), t).unwrap();
    let root = daprs_api::tls::certs_from_pem(bundle.trust_anchors.as_bytes()).unwrap();
    let (_, root) = X509Certificate::from_der(root[0].as_ref()).unwrap();
    assert_eq!(root.subject().to_string(), "O=cluster.local");
    assert!(root.is_ca());
    assert_eq!(root.validity().not_before.to_datetime(), t - SKEW);
    let issuer = daprs_api::tls::certs_from_pem(bundle.issuer_chain.as_bytes()).unwrap();
    let (_, issuer) = X509Certificate::from_der(issuer[0].as_ref()).unwrap();
    assert_eq!(
        issuer.subject().to_string(),
        "O=spiffe://cluster.local/ns/dapr-system/dapr-sentry"
    );
    let usage = issuer.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && usage.digital_signature());
    assert!(bundle.issuer_key.contains("BEGIN PRIVATE KEY"));
}

#[test]
fn workload_certificate_is_exactly_as_dapr_issues_it() {
    let t = now();
    let authority =
        Authority::load(&generate(&options(KeyAlgorithm::Ed25519), t).unwrap(), t).unwrap();
    let key = workload_key();
    let dns = vec!["dapr-sidecar-injector.dapr-system.svc".to_owned()];
    let issued = authority
        .issue(
            &IssueRequest {
                id: &"spiffe://cluster.local/ns/dapr-system/dapr-injector"
                    .parse()
                    .unwrap(),
                public_key: &key,
                dns_names: &dns,
                ttl: DAY,
                skew: SKEW,
            },
            t,
        )
        .unwrap();
    let chain = daprs_api::tls::certs_from_pem(issued.chain_pem.as_bytes()).unwrap();
    assert_eq!(chain.len(), 2, "leaf + issuer, no root");
    let (_, leaf) = X509Certificate::from_der(chain[0].as_ref()).unwrap();
    assert_eq!(leaf.subject().iter().count(), 0, "empty subject");
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    let sans = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert_eq!(
        sans,
        vec![
            GeneralName::URI("spiffe://cluster.local/ns/dapr-system/dapr-injector"),
            GeneralName::DNSName("dapr-sidecar-injector.dapr-system.svc"),
        ]
    );
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(leaf.key_usage().unwrap().unwrap().value.digital_signature());
    assert!(!leaf.is_ca());
    assert_eq!(leaf.validity().not_before.to_datetime(), t - SKEW);
    assert_eq!(leaf.validity().not_after.to_datetime(), t + DAY);
    assert_eq!(issued.not_after, t + DAY);
    assert!(!issued.capped);
    assert!(leaf.raw_serial().len() >= 15, "128-bit random serial");
}

#[test]
fn ttl_is_capped_at_the_issuer_expiry() {
    let t = now();
    let mut opts = options(KeyAlgorithm::Ed25519);
    opts.ttl = 2 * DAY;
    let authority = Authority::load(&generate(&opts, t).unwrap(), t).unwrap();
    let later = t + 36 * 3600 * Duration::from_secs(1);
    let issued = issue_for(&authority, "spiffe://public/ns/default/a", DAY, later);
    assert!(issued.capped);
    assert_eq!(issued.not_after, t + 2 * DAY);
}

#[test]
fn an_expired_issuer_refuses_to_sign() {
    let t = now();
    let mut opts = options(KeyAlgorithm::Ed25519);
    opts.ttl = DAY;
    let authority = Authority::load(&generate(&opts, t).unwrap(), t).unwrap();
    let key = workload_key();
    let err = authority
        .issue(
            &IssueRequest {
                id: &"spiffe://public/ns/default/a".parse().unwrap(),
                public_key: &key,
                dns_names: &[],
                ttl: DAY,
                skew: SKEW,
            },
            t + 2 * DAY,
        )
        .unwrap_err();
    assert!(matches!(err, IssueError::IssuerExpired { .. }), "{err}");
    assert!(err.to_string().contains("expired at"), "{err}");
}

#[test]
fn load_refuses_an_expired_or_not_yet_valid_bundle() {
    let t = now();
    let mut opts = options(KeyAlgorithm::Ed25519);
    opts.ttl = DAY;
    let bundle = generate(&opts, t).unwrap();
    let err = Authority::load(&bundle, t + 2 * DAY).unwrap_err();
    assert!(matches!(err, BundleError::Expired { .. }), "{err}");
    let err = Authority::load(&bundle, t - DAY).unwrap_err();
    assert!(matches!(err, BundleError::NotYetValid { .. }), "{err}");
    assert!(err.to_string().contains("check the clocks"), "{err}");
}

#[test]
fn load_refuses_a_key_that_does_not_match_the_issuer() {
    let t = now();
    let a = generate(&options(KeyAlgorithm::Ed25519), t).unwrap();
    let b = generate(&options(KeyAlgorithm::Ed25519), t).unwrap();
    let mixed = Bundle {
        issuer_key: b.issuer_key,
        ..a
    };
    let err = Authority::load(&mixed, t).unwrap_err();
    assert!(matches!(err, BundleError::KeyMismatch { .. }), "{err}");
}

#[test]
fn load_refuses_an_issuer_from_another_root() {
    let t = now();
    let a = generate(&options(KeyAlgorithm::Ed25519), t).unwrap();
    let b = generate(&options(KeyAlgorithm::Ed25519), t).unwrap();
    let mixed = Bundle {
        trust_anchors: b.trust_anchors,
        ..a
    };
    let err = Authority::load(&mixed, t).unwrap_err();
    assert!(matches!(err, BundleError::NotChained { .. }), "{err}");
    assert!(err.to_string().contains("put its root in ca.crt"), "{err}");
}

#[test]
fn load_accepts_several_anchors_and_an_appended_root() {
    let t = now();
    let a = generate(&options(KeyAlgorithm::Ed25519), t).unwrap();
    let b = generate(&options(KeyAlgorithm::EcdsaP256), t).unwrap();
    let both = Bundle {
        trust_anchors: format!("{}{}", b.trust_anchors, a.trust_anchors),
        issuer_chain: format!("{}{}", a.issuer_chain, a.trust_anchors),
        issuer_key: a.issuer_key.clone(),
    };
    let authority = Authority::load(&both, t).unwrap();
    assert_eq!(authority.trust_anchor_ders().len(), 2);
    let issued = issue_for(&authority, "spiffe://public/ns/default/x", DAY, t);
    assert_eq!(
        issued.chain_pem.matches("BEGIN CERTIFICATE").count(),
        2,
        "root not re-sent"
    );
    verify(&authority, &issued, t).unwrap();
}

#[test]
fn load_refuses_non_root_anchors_and_non_ca_issuers() {
    let t = now();
    let a = generate(&options(KeyAlgorithm::Ed25519), t).unwrap();
    let err = Authority::load(
        &Bundle {
            trust_anchors: a.issuer_chain.clone(),
            ..a.clone()
        },
        t,
    )
    .unwrap_err();
    assert!(
        matches!(err, BundleError::AnchorNotSelfSigned { .. }),
        "{err}"
    );

    // A workload certificate used as an issuer.
    let authority = Authority::load(&a, t).unwrap();
    let key = workload_key();
    let leaf = authority
        .issue(
            &IssueRequest {
                id: &"spiffe://public/ns/default/x".parse().unwrap(),
                public_key: &key,
                dns_names: &[],
                ttl: DAY,
                skew: SKEW,
            },
            t,
        )
        .unwrap();
    let err = Authority::load(
        &Bundle {
            trust_anchors: a.trust_anchors.clone(),
            issuer_chain: leaf.chain_pem,
            issuer_key: key.serialize_pem(),
        },
        t,
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::IssuerNotCa { .. }), "{err}");
}

#[test]
fn load_explains_non_pkcs8_keys_and_garbage() {
    let t = now();
    let a = generate(&options(KeyAlgorithm::EcdsaP256), t).unwrap();
    let sec1 = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBb+\n-----END EC PRIVATE KEY-----\n";
    let err = Authority::load(
        &Bundle {
            issuer_key: sec1.into(),
            ..a.clone()
        },
        t,
    )
    .unwrap_err();
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
    let err = Authority::load(
        &Bundle {
            trust_anchors: "not pem".into(),
            ..a
        },
        t,
    )
    .unwrap_err();
    assert!(err.to_string().contains("trust anchors (ca.crt)"), "{err}");
}

#[test]
fn every_supported_csr_key_type_can_be_certified() {
    let t = now();
    let authority =
        Authority::load(&generate(&options(KeyAlgorithm::Ed25519), t).unwrap(), t).unwrap();
    for key in [
        KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        KeyPair::from_pkcs8_pem_and_sign_algo(csr::tests::RSA_KEY, &rcgen::PKCS_RSA_SHA256)
            .unwrap(),
    ] {
        let verified = csr::verify_pem(csr::tests::csr_for(&key).as_bytes()).unwrap();
        let issued = authority
            .issue(
                &IssueRequest {
                    id: &"spiffe://public/ns/default/x".parse().unwrap(),
                    public_key: &verified.public_key,
                    dns_names: &[],
                    ttl: DAY,
                    skew: SKEW,
                },
                t,
            )
            .unwrap();
        verify(&authority, &issued, t).unwrap();
        let chain = daprs_api::tls::certs_from_pem(issued.chain_pem.as_bytes()).unwrap();
        let (_, leaf) = X509Certificate::from_der(chain[0].as_ref()).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            key.subject_public_key_info().as_slice(),
            "{:?}",
            verified.kind
        );
    }
}

/// A CA made by openssl whose subjects repeat `DC`: rcgen would re-encode the issuer name and
/// its certificates would not chain, so the load-time self-check refuses it.
#[test]
fn a_ca_whose_certificates_would_not_verify_is_refused_at_load() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/repeated-dc/");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
    let bundle = Bundle {
        trust_anchors: read("ca.crt"),
        issuer_chain: read("issuer.crt"),
        issuer_key: read("issuer.key"),
    };
    match Authority::load(&bundle, now()) {
        Err(BundleError::SelfCheck { subject, .. }) => {
            assert!(subject.contains("DC=com"), "{subject}")
        }
        Err(other) => panic!("expected the self-check to refuse it, got: {other}"),
        Ok(_) => panic!("expected the self-check to refuse it"),
    }
}
