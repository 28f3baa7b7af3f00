//! sentry over real TLS on 127.0.0.1: the shared client obtains certificates, the returned chain
//! verifies against the returned anchors, and every refusal carries the right gRPC code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::time::Duration;

use clap::Parser;
use daprs_api::SpiffeId;
use daprs_api::proto::sentry::{SignCertificateRequest, TokenValidator, ca_client::CaClient};
use daprs_api::sentry_client::{self, SvidRequest};
use daprs_api::tls::TrustAnchors;
use daprs_sentry::config::Args;
use rustls::pki_types::UnixTime;

struct Sentry {
    running: daprs_sentry::Running,
    dir: tempfile::TempDir,
}

async fn start(extra: &[&str]) -> Sentry {
    daprs_api::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let mut argv = vec![
        "sentry".to_owned(),
        "--issuer-credentials".into(),
        creds.to_str().unwrap().into(),
        "--port".into(),
        "0".into(),
        "--healthz-port".into(),
        "0".into(),
        "--metrics-port".into(),
        "0".into(),
        "--listen-address".into(),
        "127.0.0.1".into(),
        "--healthz-listen-address".into(),
        "127.0.0.1".into(),
        "--metrics-listen-address".into(),
        "127.0.0.1".into(),
        "--ca-reload-interval".into(),
        "200ms".into(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    let running = daprs_sentry::start(Args::parse_from(argv)).await.unwrap();
    let sentry = Sentry { running, dir };
    sentry.wait_ready().await;
    sentry
}

impl Sentry {
    async fn wait_ready(&self) {
        let url = format!("http://{}/healthz", self.running.healthz_addr);
        for _ in 0..100 {
            if reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("sentry did not become ready");
    }

    fn anchors_pem(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("creds/ca.crt")).unwrap()
    }

    fn sentry_id(&self) -> SpiffeId {
        "spiffe://localhost/ns/default/dapr-sentry".parse().unwrap()
    }

    fn channel(&self, expect: SpiffeId) -> tonic::transport::Channel {
        let anchors = TrustAnchors::from_pem(self.anchors_pem().as_bytes()).unwrap();
        sentry_client::sentry_channel(&self.running.grpc_addr.to_string(), anchors, expect).unwrap()
    }
}

fn request(id: &str) -> SvidRequest {
    SvidRequest {
        app_id: id.into(),
        namespace: "default".into(),
        ..SvidRequest::default()
    }
}

#[tokio::test]
async fn a_client_obtains_a_certificate_that_verifies_against_the_returned_anchors() {
    let sentry = start(&[]).await;
    let issued =
        sentry_client::request_svid(sentry.channel(sentry.sentry_id()), &request("orders"))
            .await
            .unwrap();
    assert_eq!(
        issued.svid.id.to_string(),
        "spiffe://public/ns/default/orders"
    );
    assert_eq!(issued.trust_anchors_pem, sentry.anchors_pem());

    let anchors = TrustAnchors::from_pem(issued.trust_anchors_pem.as_bytes()).unwrap();
    let chain = &issued.svid.chain;
    let id = anchors
        .verify(
            &chain[0],
            &chain[1..],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            &daprs_api::tls::provider().signature_verification_algorithms,
        )
        .unwrap();
    assert_eq!(id, issued.svid.id);
    let lifetime = issued.not_after.duration_since(issued.not_before).unwrap();
    assert_eq!(
        lifetime,
        Duration::from_secs(24 * 3600 + 15 * 60),
        "24h TTL + 15m backdating"
    );
    sentry.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_expecting_another_identity_refuses_sentry() {
    let sentry = start(&[]).await;
    let anchors = TrustAnchors::from_pem(sentry.anchors_pem().as_bytes()).unwrap();
    let handshake = |expected: &str| {
        let verifier = daprs_api::tls::SpiffeServerVerifier::new(
            anchors.clone(),
            daprs_api::tls::PeerMatcher::Exact(expected.parse().unwrap()),
        );
        let config = daprs_api::tls::client_config(verifier, None).unwrap();
        let addr = sentry.running.grpc_addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("sentry.invalid").unwrap();
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
                .connect(name, tcp)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    let err = handshake("spiffe://localhost/ns/default/not-sentry")
        .await
        .unwrap_err();
    assert!(err.contains("not the expected"), "{err}");
    // The same handshake with the right id succeeds, so the refusal is about the identity.
    handshake("spiffe://localhost/ns/default/dapr-sentry")
        .await
        .unwrap();
    sentry.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_csr_naming_another_identity_gets_the_authenticated_one() {
    let sentry = start(&[]).await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["payments.example".into()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "payments");
    params.subject_alt_names.push(rcgen::SanType::URI(
        "spiffe://public/ns/default/payments".try_into().unwrap(),
    ));
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let mut client = CaClient::new(sentry.channel(sentry.sentry_id()));
    let response = client
        .sign_certificate(SignCertificateRequest {
            id: "orders".into(),
            namespace: "default".into(),
            certificate_signing_request: csr.into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let chain = daprs_api::tls::certs_from_pem(&response.workload_certificate).unwrap();
    use x509_parser::prelude::FromDer;
    let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(chain[0].as_ref()).unwrap();
    assert_eq!(
        leaf.subject().iter().count(),
        0,
        "the CSR's subject is ignored"
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
        vec![x509_parser::extensions::GeneralName::URI(
            "spiffe://public/ns/default/orders"
        )],
        "only the authenticated identity"
    );
    sentry.running.stop().await.unwrap();
}

#[tokio::test]
async fn sentrys_own_identity_is_never_issued() {
    let sentry = start(&[]).await;
    let err = sentry_client::request_svid(
        sentry.channel(sentry.sentry_id()),
        &SvidRequest {
            app_id: "dapr-sentry".into(),
            namespace: "default".into(),
            trust_domain: "localhost".into(),
            ..SvidRequest::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, sentry_client::SentryClientError::Sign { code: tonic::Code::PermissionDenied, message } if message.contains("never issued")),
        "{err:?}"
    );
    sentry.running.stop().await.unwrap();
}

#[tokio::test]
async fn a_configured_jwks_validator_replaces_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, r#"{"keys": []}"#).unwrap();
    let sentry = start(&["--jwks-source", jwks.to_str().unwrap()]).await;
    let mut client = CaClient::new(sentry.channel(sentry.sentry_id()));
    let (_, csr) = sentry_client::new_key_and_csr().unwrap();
    let base = SignCertificateRequest {
        id: "orders".into(),
        namespace: "default".into(),
        certificate_signing_request: csr.into_bytes(),
        ..Default::default()
    };
    let status = client
        .sign_certificate(SignCertificateRequest {
            token_validator: TokenValidator::Insecure as i32,
            ..base.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("enabled: jwks"),
        "{}",
        status.message()
    );
    // The default is now jwks, which wants a token.
    let status = client.sign_certificate(base).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("needs a JWT"),
        "{}",
        status.message()
    );
    sentry.running.stop().await.unwrap();
}

#[tokio::test]
async fn refusals_carry_the_right_codes_and_reasons() {
    let sentry = start(&[]).await;
    let mut client = CaClient::new(sentry.channel(sentry.sentry_id()));
    let (_, csr) = sentry_client::new_key_and_csr().unwrap();
    let base = SignCertificateRequest {
        id: "orders".into(),
        namespace: "default".into(),
        certificate_signing_request: csr.into_bytes(),
        ..Default::default()
    };
    let cases = [
        (
            SignCertificateRequest {
                id: "a.b".into(),
                ..base.clone()
            },
            tonic::Code::PermissionDenied,
            "contains a '.'",
        ),
        (
            SignCertificateRequest {
                namespace: String::new(),
                ..base.clone()
            },
            tonic::Code::PermissionDenied,
            "namespace",
        ),
        (
            SignCertificateRequest {
                certificate_signing_request: b"junk".to_vec(),
                ..base.clone()
            },
            tonic::Code::InvalidArgument,
            "CERTIFICATE REQUEST",
        ),
        (
            SignCertificateRequest {
                token_validator: TokenValidator::Kubernetes as i32,
                ..base.clone()
            },
            tonic::Code::InvalidArgument,
            "not enabled",
        ),
    ];
    for (req, code, needle) in cases {
        let status = client.sign_certificate(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(status.message().contains(needle), "{}", status.message());
    }
    // The CSR's own names are ignored: the certificate carries the validated identity.
    let ok = client.sign_certificate(base).await.unwrap().into_inner();
    let chain = daprs_api::tls::certs_from_pem(&ok.workload_certificate).unwrap();
    assert_eq!(
        daprs_api::tls::spiffe_id_of(&chain[0]).unwrap().app_id(),
        "orders"
    );

    let metrics_url = format!("http://{}/metrics", sentry.running.metrics_addr.unwrap());
    let text = reqwest::get(metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "dapr_sentry_cert_sign_request_received_total 5",
        "dapr_sentry_cert_sign_success_total 1",
        "dapr_sentry_cert_sign_failure_total{reason=\"validation\"} 2",
        "dapr_sentry_cert_sign_failure_total{reason=\"bad_request\"} 2",
        "dapr_sentry_issuercert_changed_total 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    sentry.running.stop().await.unwrap();
}

#[tokio::test]
async fn replaced_credentials_are_picked_up_without_a_restart() {
    let sentry = start(&[]).await;
    let other = start(&[]).await;
    let before = sentry.anchors_pem();
    // Requests keep flowing during the swap; none may fail.
    let stop_load = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let both_anchors =
            TrustAnchors::from_pem(format!("{}{}", before, other.anchors_pem()).as_bytes())
                .unwrap();
        let channel = sentry_client::sentry_channel(
            &sentry.running.grpc_addr.to_string(),
            both_anchors,
            sentry.sentry_id(),
        )
        .unwrap();
        let stop = stop_load.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match sentry_client::request_svid(channel.clone(), &request("steady")).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e:?}")),
                }
            }
            (ok, failed)
        })
    };
    // Overlapping trust, as an operator would do it: both roots, then the new issuer.
    let both = format!("{}{}", before, other.anchors_pem());
    let creds = sentry.dir.path().join("creds");
    let other_creds = other.dir.path().join("creds");
    std::fs::write(creds.join("ca.crt"), &both).unwrap();
    std::fs::copy(other_creds.join("issuer.key"), creds.join("issuer.key.new")).unwrap();
    std::fs::copy(other_creds.join("issuer.crt"), creds.join("issuer.crt.new")).unwrap();
    std::fs::rename(creds.join("issuer.key.new"), creds.join("issuer.key")).unwrap();
    std::fs::rename(creds.join("issuer.crt.new"), creds.join("issuer.crt")).unwrap();

    let anchors = TrustAnchors::from_pem(both.as_bytes()).unwrap();
    let mut switched = false;
    for _ in 0..50 {
        let channel = sentry_client::sentry_channel(
            &sentry.running.grpc_addr.to_string(),
            anchors.clone(),
            sentry.sentry_id(),
        )
        .unwrap();
        let issued = sentry_client::request_svid(channel, &request("orders"))
            .await
            .unwrap();
        if issued.trust_anchors_pem == both {
            // Signed by the new issuer: the chain's issuer is the other sentry's.
            assert!(
                issued.chain_pem.contains(
                    std::fs::read_to_string(other_creds.join("issuer.crt"))
                        .unwrap()
                        .trim()
                )
            );
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "sentry never loaded the new credentials");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_load.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = load.await.unwrap();
    assert!(
        failed.is_empty(),
        "requests failed during the reload: {failed:?}"
    );
    assert!(ok > 10, "only {ok} requests ran during the reload");
    sentry.running.stop().await.unwrap();
    other.running.stop().await.unwrap();
}
