//! The injector over real TLS on 127.0.0.1: certificate files, HTTP/1.1 and HTTP/2, health that
//! tells the truth, metrics, and a certificate from a real (in-process) sentry that is renewed
//! at half its life while open connections keep working.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use clap::Parser;
use daprs_injector::config::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

const REVIEW: &str = include_str!("fixtures/review-v1.json");

struct Pki {
    ca_pem: String,
}

/// A CA and a leaf for `localhost`/127.0.0.1, written to `dir`.
fn write_pki(dir: &Path) -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    std::fs::write(dir.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca.pem()).unwrap();
    Pki { ca_pem: ca.pem() }
}

fn args(dir: &Path, extra: &[&str]) -> Args {
    let anchors = dir.join("ca.crt");
    let mut argv: Vec<String> = [
        "injector",
        "--mode",
        "standalone",
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--metrics-port",
        "0",
        "--listen-address",
        "127.0.0.1",
        "--healthz-listen-address",
        "127.0.0.1",
        "--metrics-listen-address",
        "127.0.0.1",
        "--sidecar-image",
        "daprio/daprd:test",
        "--namespace",
        "default",
        "--kube-cluster-domain",
        "cluster.local",
        "--trust-anchors-file",
        anchors.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    Args::parse_from(argv)
}

fn file_args(dir: &Path) -> Args {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    args(
        dir,
        &[
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ],
    )
}

fn client_config(roots_pem: &str, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in daprs_api::tls::certs_from_pem(roots_pem.as_bytes()).unwrap() {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(daprs_api::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TLS connection verified for `server_name`; returns it and the server's leaf.
async fn connect(
    addr: std::net::SocketAddr,
    roots_pem: &str,
    server_name: &str,
    alpn: &[u8],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    CertificateDer<'static>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client_config(roots_pem, alpn));
    let tls = connector
        .connect(ServerName::try_from(server_name.to_owned()).unwrap(), tcp)
        .await
        .unwrap();
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, leaf)
}

fn mutate_request(body: &str) -> hyper::Request<Full<Bytes>> {
    hyper::Request::post("/mutate")
        .header("content-type", "application/json")
        .header("host", "localhost")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

async fn read_json(response: hyper::Response<hyper::body::Incoming>) -> Value {
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn assert_injected(review: &Value) {
    let response = &review["response"];
    assert_eq!(response["allowed"], true, "{review}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
    assert!(ops.iter().any(|op| op["value"]["name"] == "daprd"));
}

async fn get(url: String) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn wait_healthy(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if get(format!("http://{addr}/healthz")).await.0 == 200 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the injector did not become healthy");
}

#[tokio::test]
async fn serves_mutate_over_tls_from_certificate_files_in_http1_and_http2() {
    daprs_api::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path());
    let running = daprs_injector::start(file_args(dir.path())).await.unwrap();
    wait_healthy(running.healthz_addr).await;

    let (tls, _) = connect(running.webhook_addr, &pki.ca_pem, "localhost", b"http/1.1").await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_injected(&read_json(h1.send_request(mutate_request(REVIEW)).await.unwrap()).await);

    let (tls, _) = connect(running.webhook_addr, &pki.ca_pem, "localhost", b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut h2_request = mutate_request(REVIEW);
    *h2_request.uri_mut() = "https://localhost/mutate".parse().unwrap();
    assert_injected(&read_json(h2.send_request(h2_request).await.unwrap()).await);

    let (status, text) = get(format!("http://{}/metrics", running.metrics_addr.unwrap())).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("dapr_injector_sidecar_injection_requests_total 2"),
        "{text}"
    );
    assert!(
        text.contains("dapr_injector_sidecar_injection_succeeded_total{app_id=\"orders\"} 2"),
        "{text}"
    );
    running.stop().await;
}

#[tokio::test]
async fn without_trust_anchors_it_is_unready_and_denies_until_the_file_appears() {
    daprs_api::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let pki = write_pki(dir.path());
    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    let running = daprs_injector::start(file_args(dir.path())).await.unwrap();
    let healthz = format!("http://{}/healthz", running.healthz_addr);
    let (status, text) = get(healthz.clone()).await;
    assert_eq!((status, text.as_str()), (503, "waiting for: trust anchors"));

    let (tls, _) = connect(running.webhook_addr, &pki.ca_pem, "localhost", b"http/1.1").await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let review = read_json(h1.send_request(mutate_request(REVIEW)).await.unwrap()).await;
    assert_eq!(review["response"]["allowed"], false, "{review}");

    std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).unwrap();
    wait_healthy(running.healthz_addr).await;
    assert_injected(&read_json(h1.send_request(mutate_request(REVIEW)).await.unwrap()).await);
    running.stop().await;
}

#[tokio::test]
async fn bad_certificate_files_are_a_configuration_error() {
    daprs_api::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    std::fs::write(dir.path().join("tls.key"), "not a key").unwrap();
    let error = daprs_injector::start(file_args(dir.path()))
        .await
        .unwrap_err();
    assert!(matches!(error, daprs_injector::Error::Config(_)), "{error}");
    assert!(error.to_string().contains("--tls-cert-file"), "{error}");
}

async fn start_sentry(dir: &Path, extra: &[&str]) -> daprs_sentry::Running {
    let creds = dir.join("creds");
    let mut argv: Vec<String> = [
        "sentry",
        "--issuer-credentials",
        creds.to_str().unwrap(),
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--metrics-port",
        "0",
        "--listen-address",
        "127.0.0.1",
        "--healthz-listen-address",
        "127.0.0.1",
        "--metrics-listen-address",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let running = daprs_sentry::start(daprs_sentry::config::Args::parse_from(argv))
        .await
        .unwrap();
    let url = format!("http://{}/healthz", running.healthz_addr);
    for _ in 0..200 {
        if get(url.clone()).await.0 == 200 {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sentry did not become ready");
}

#[tokio::test]
async fn a_certificate_from_sentry_is_served_and_renewed_without_dropping_connections() {
    daprs_api::tls::install_default_provider();
    let dir = tempfile::tempdir().unwrap();
    let sentry = start_sentry(
        dir.path(),
        &["--workload-cert-ttl", "4s", "--allowed-clock-skew", "0s"],
    )
    .await;
    let anchors_file = dir.path().join("creds/ca.crt");
    let anchors = std::fs::read_to_string(&anchors_file).unwrap();
    std::fs::copy(&anchors_file, dir.path().join("ca.crt")).unwrap();
    let address = sentry.grpc_addr.to_string();
    let mut running = daprs_injector::start(args(
        dir.path(),
        &[
            "--sentry-address",
            &address,
            "--sentry-token-validator",
            "insecure",
            "--control-plane-trust-domain",
            "localhost",
        ],
    ))
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        running.certificates_issued.wait_for(|n| *n >= 1),
    )
    .await
    .expect("a certificate from sentry")
    .unwrap();
    wait_healthy(running.healthz_addr).await;

    // Verified as a TLS server for the webhook Service's DNS name, signed by sentry's anchors.
    let host = "dapr-sidecar-injector.default.svc";
    let (tls, first) = connect(running.webhook_addr, &anchors, host, b"http/1.1").await;
    assert_eq!(
        daprs_api::tls::spiffe_id_of(&first).unwrap().to_string(),
        "spiffe://localhost/ns/default/dapr-injector"
    );
    // An ECDSA key: API servers that refuse Ed25519 serving certificates accept it.
    {
        use x509_parser::prelude::FromDer;
        let (_, leaf) =
            x509_parser::certificate::X509Certificate::from_der(first.as_ref()).unwrap();
        assert_eq!(
            leaf.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
    }
    let (mut kept, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_injected(&read_json(kept.send_request(mutate_request(REVIEW)).await.unwrap()).await);

    // A 4 s certificate is renewed after about 2 s; the open connection keeps working.
    let issued = *running.certificates_issued.borrow();
    tokio::time::timeout(
        Duration::from_secs(20),
        running.certificates_issued.wait_for(|n| *n > issued),
    )
    .await
    .expect("a renewal")
    .unwrap();
    assert_injected(&read_json(kept.send_request(mutate_request(REVIEW)).await.unwrap()).await);
    let (_, second) = connect(running.webhook_addr, &anchors, host, b"http/1.1").await;
    assert_ne!(first, second, "new connections get the renewed certificate");

    running.stop().await;
    sentry.stop().await.unwrap();
}
