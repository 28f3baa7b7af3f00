//! Real TLS handshakes over loopback between the building blocks, with good and bad peers.

use std::net::SocketAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SignatureAlgorithm,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

const RSA_KEY: &str = include_str!("../../tests/fixtures/rsa-2048.key");

/// A root + issuer CA made for tests, able to sign leaves for any SPIFFE id.
struct TestCa {
    root_pem: String,
    issuer_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn key(alg: &'static SignatureAlgorithm) -> KeyPair {
    if alg == &rcgen::PKCS_RSA_SHA256 {
        KeyPair::from_pkcs8_pem_and_sign_algo(RSA_KEY, alg).unwrap()
    } else {
        KeyPair::generate_for(alg).unwrap()
    }
}

fn ca_params(org: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, org);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl TestCa {
    fn new(alg: &'static SignatureAlgorithm) -> Self {
        let root_key = key(alg);
        let root_params = ca_params("root");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let issuer_key = key(alg);
        let issuer_params = ca_params("issuer");
        let issuer_cert = issuer_params.signed_by(&issuer_key, &root_issuer).unwrap();
        Self {
            root_pem: root.pem(),
            issuer_pem: issuer_cert.pem(),
            issuer: Issuer::new(issuer_params, issuer_key),
        }
    }

    fn anchors(&self) -> TrustAnchors {
        TrustAnchors::from_pem(self.root_pem.as_bytes()).unwrap()
    }

    fn svid(&self, id: &str) -> Svid {
        self.svid_with(id, |_| {})
    }

    fn svid_with(&self, id: &str, edit: impl FnOnce(&mut CertificateParams)) -> Svid {
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        edit(&mut params);
        let leaf = params.signed_by(&leaf_key, &self.issuer).unwrap();
        let chain = format!("{}{}", leaf.pem(), self.issuer_pem);
        Svid::from_pem(chain.as_bytes(), leaf_key.serialize_pem().as_bytes()).unwrap()
    }
}

fn id(s: &str) -> SpiffeId {
    s.parse().unwrap()
}

/// Serves one TLS connection that echoes a byte; returns the address and the server's result.
async fn serve_once(
    config: rustls::ServerConfig,
) -> (SocketAddr, tokio::task::JoinHandle<Result<(), String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(&byte).await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())
    });
    (addr, task)
}

async fn connect(addr: SocketAddr, config: rustls::ClientConfig) -> Result<(), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("ignored.invalid").unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"x").await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
    Ok(())
}

const SENTRY: &str = "spiffe://cluster.local/ns/dapr-system/dapr-sentry";

async fn handshake_with(alg: &'static SignatureAlgorithm) {
    let ca = TestCa::new(alg);
    let server = server_config(SvidResolver::with(ca.svid(SENTRY)), None).unwrap();
    let (addr, task) = serve_once(server).await;
    let verifier = SpiffeServerVerifier::new(ca.anchors(), PeerMatcher::Exact(id(SENTRY)));
    connect(addr, client_config(verifier, None).unwrap())
        .await
        .unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn ed25519_chain_is_accepted() {
    handshake_with(&rcgen::PKCS_ED25519).await;
}

#[tokio::test]
async fn ecdsa_p256_chain_is_accepted() {
    handshake_with(&rcgen::PKCS_ECDSA_P256_SHA256).await;
}

#[tokio::test]
async fn ecdsa_p384_chain_is_accepted() {
    handshake_with(&rcgen::PKCS_ECDSA_P384_SHA384).await;
}

#[tokio::test]
async fn rsa_chain_is_accepted() {
    handshake_with(&rcgen::PKCS_RSA_SHA256).await;
}

#[tokio::test]
async fn client_refuses_server_with_another_spiffe_id() {
    let ca = TestCa::new(&rcgen::PKCS_ED25519);
    let server = server_config(
        SvidResolver::with(ca.svid("spiffe://cluster.local/ns/dapr-system/impostor")),
        None,
    )
    .unwrap();
    let (addr, _task) = serve_once(server).await;
    let verifier = SpiffeServerVerifier::new(ca.anchors(), PeerMatcher::Exact(id(SENTRY)));
    let err = connect(addr, client_config(verifier, None).unwrap())
        .await
        .unwrap_err();
    assert!(
        err.contains("impostor") && err.contains("not the expected"),
        "{err}"
    );
}

#[tokio::test]
async fn client_refuses_server_from_another_ca() {
    let ca = TestCa::new(&rcgen::PKCS_ED25519);
    let other = TestCa::new(&rcgen::PKCS_ED25519);
    let server = server_config(SvidResolver::with(other.svid(SENTRY)), None).unwrap();
    let (addr, _task) = serve_once(server).await;
    let verifier = SpiffeServerVerifier::new(ca.anchors(), PeerMatcher::Exact(id(SENTRY)));
    let err = connect(addr, client_config(verifier, None).unwrap())
        .await
        .unwrap_err();
    // Same issuer names, other keys: webpki reports either outcome.
    assert!(
        err.contains("UnknownIssuer") || err.contains("BadSignature"),
        "{err}"
    );
}

#[tokio::test]
async fn client_refuses_expired_server_certificate() {
    let ca = TestCa::new(&rcgen::PKCS_ED25519);
    let svid = ca.svid_with(SENTRY, |p| {
        p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(2);
        p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    });
    let (addr, _task) = serve_once(server_config(SvidResolver::with(svid), None).unwrap()).await;
    let verifier = SpiffeServerVerifier::new(ca.anchors(), PeerMatcher::Exact(id(SENTRY)));
    let err = connect(addr, client_config(verifier, None).unwrap())
        .await
        .unwrap_err();
    assert!(err.contains("Expired"), "{err}");
}

#[tokio::test]
async fn path_matcher_ignores_trust_domain_but_not_app() {
    let ca = TestCa::new(&rcgen::PKCS_ED25519);
    let want = PeerMatcher::Path(id("spiffe://public/ns/default/orders"));
    for (served, ok) in [
        ("spiffe://other.td/ns/default/orders", true),
        ("spiffe://public/ns/default/payments", false),
    ] {
        let server = server_config(SvidResolver::with(ca.svid(served)), None).unwrap();
        let (addr, _task) = serve_once(server).await;
        let verifier = SpiffeServerVerifier::new(ca.anchors(), want.clone());
        let result = connect(addr, client_config(verifier, None).unwrap()).await;
        assert_eq!(result.is_ok(), ok, "{served}: {result:?}");
    }
}

#[tokio::test]
async fn server_fails_closed_until_it_holds_a_certificate() {
    let ca = TestCa::new(&rcgen::PKCS_ED25519);
    let resolver = SvidResolver::default();
    let (addr, task) = serve_once(server_config(resolver.clone(), None).unwrap()).await;
    let verifier = SpiffeServerVerifier::new(ca.anchors(), PeerMatcher::Any);
    assert!(
        connect(addr, client_config(verifier, None).unwrap())
            .await
            .is_err()
    );
    assert!(task.await.unwrap().is_err());

    resolver.set(ca.svid(SENTRY));
    let (addr, task) = serve_once(server_config(resolver, None).unwrap()).await;
    let verifier = SpiffeServerVerifier::new(ca.anchors(), PeerMatcher::Any);
    connect(addr, client_config(verifier, None).unwrap())
        .await
        .unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn anchors_swap_at_run_time() {
    let old = TestCa::new(&rcgen::PKCS_ED25519);
    let new = TestCa::new(&rcgen::PKCS_ED25519);
    let anchors = old.anchors();
    let server_svid = SvidResolver::with(new.svid(SENTRY));
    let client = || {
        let verifier = SpiffeServerVerifier::new(anchors.clone(), PeerMatcher::Exact(id(SENTRY)));
        client_config(verifier, None).unwrap()
    };

    let (addr, _task) = serve_once(server_config(server_svid.clone(), None).unwrap()).await;
    assert!(
        connect(addr, client()).await.is_err(),
        "new root not trusted yet"
    );

    // Overlapping bundle: both roots are trusted during a rotation.
    let bundle = format!("{}{}", old.root_pem, new.root_pem);
    anchors.set_pem(bundle.as_bytes()).unwrap();
    assert_eq!(anchors.certificates().len(), 2);
    let (addr, task) = serve_once(server_config(server_svid, None).unwrap()).await;
    connect(addr, client()).await.unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn mutual_tls_requires_and_authorises_the_client() {
    let ca = TestCa::new(&rcgen::PKCS_ED25519);
    let server_id = "spiffe://cluster.local/ns/dapr-system/dapr-operator";
    let mtls_server = || {
        let clients = SpiffeClientVerifier::new(
            ca.anchors(),
            PeerMatcher::Path(id("spiffe://public/ns/default/orders")),
        );
        server_config(SvidResolver::with(ca.svid(server_id)), Some(clients)).unwrap()
    };
    let client = |svid: Option<Svid>| {
        let verifier = SpiffeServerVerifier::new(ca.anchors(), PeerMatcher::Exact(id(server_id)));
        client_config(verifier, svid.map(SvidResolver::with)).unwrap()
    };

    let (addr, task) = serve_once(mtls_server()).await;
    let _ = connect(addr, client(None)).await;
    let err = task.await.unwrap().unwrap_err();
    assert!(
        err.contains("NoCertificatesPresented") || err.contains("certificate"),
        "{err}"
    );

    let (addr, task) = serve_once(mtls_server()).await;
    let _ = connect(
        addr,
        client(Some(ca.svid("spiffe://public/ns/default/payments"))),
    )
    .await;
    let err = task.await.unwrap().unwrap_err();
    assert!(err.contains("payments"), "{err}");

    let (addr, task) = serve_once(mtls_server()).await;
    connect(
        addr,
        client(Some(ca.svid("spiffe://public/ns/default/orders"))),
    )
    .await
    .unwrap();
    task.await.unwrap().unwrap();
}

#[test]
fn spiffe_id_is_read_from_the_uri_san() {
    let ca = TestCa::new(&rcgen::PKCS_ED25519);
    let svid = ca.svid("spiffe://public/ns/default/orders");
    assert_eq!(svid.id, id("spiffe://public/ns/default/orders"));
    let err = Svid::new(
        certs_from_pem(ca.root_pem.as_bytes()).unwrap(),
        key_from_pem(RSA_KEY.as_bytes()).unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no subjectAltName"), "{err}");
}

#[test]
fn pem_errors_say_what_is_missing() {
    assert!(matches!(
        certs_from_pem(b"nothing here"),
        Err(TlsError::EmptyPem("certificate"))
    ));
    assert!(matches!(
        key_from_pem(b""),
        Err(TlsError::EmptyPem("private key"))
    ));
}
