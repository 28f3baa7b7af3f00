//! The sidecar's identity against a real sentry: a certificate with the app's SPIFFE id,
//! servers that fail closed until it is held, renewal of short-lived certificates, a
//! rotated trust-anchor file, and metrics when sentry is unreachable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use daprs_api::SpiffeId;
use daprs_api::tls::PeerMatcher;
use daprs_sidecar::identity::{Identity, IdentityConfig};
use daprs_sidecar::metrics::Metrics;
use support::Sentry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(sentry: &Sentry, app_id: &str) -> IdentityConfig {
    IdentityConfig {
        app_id: app_id.into(),
        namespace: "default".into(),
        sentry_address: sentry.address(),
        control_plane_trust_domain: "localhost".into(),
        control_plane_namespace: "default".into(),
        trust_anchors_pem: Some(sentry.anchors_pem()),
        trust_anchors_file: None,
        // No such file: the insecure validator of a self-hosted sentry.
        token_file: Some("/nonexistent/token".into()),
    }
}

/// Serves one mTLS connection with `server` and echoes a byte; returns the address.
async fn echo_server(server: rustls::ServerConfig) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let mut b = [0u8; 1];
                    if tls.read_exact(&mut b).await.is_ok() {
                        let _ = tls.write_all(&b).await;
                    }
                }
            });
        }
    });
    addr
}

async fn handshake(
    client: rustls::ClientConfig,
    addr: std::net::SocketAddr,
) -> Result<(), std::io::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls::pki_types::ServerName::try_from("peer.invalid").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    tls.write_all(b"x").await?;
    let mut b = [0u8; 1];
    tls.read_exact(&mut b).await?;
    Ok(())
}

#[tokio::test]
async fn obtains_a_certificate_and_serves_mutual_tls_only_once_it_is_held() {
    let mut sentry = Sentry::start(&[]).await;
    let metrics = Arc::new(Metrics::new("orders"));

    // Built but not started: no certificate yet, so the server refuses every handshake.
    let unstarted = Identity::new(config(&sentry, "orders")).unwrap();
    assert!(!unstarted.is_ready() && unstarted.spiffe_id().is_none());
    let closed = echo_server(unstarted.server_config().unwrap()).await;

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let orders = Identity::start(config(&sentry, "orders"), metrics.clone(), async move {
        let _ = stopped.await;
    })
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), orders.ready())
        .await
        .expect("a certificate within 10 s");
    let id = orders.spiffe_id().unwrap();
    assert_eq!(id.to_string(), "spiffe://public/ns/default/orders");
    assert_eq!(orders.trust_domain().as_deref(), Some("public"));
    assert_eq!((orders.app_id(), orders.namespace()), ("orders", "default"));
    assert!(metrics.render().contains("dapr_runtime_mtls_init_total"));

    let want_orders = PeerMatcher::Path(SpiffeId::new("any", "default", "orders").unwrap());
    let err = handshake(orders.client_config(want_orders.clone()).unwrap(), closed).await;
    assert!(
        err.is_err(),
        "a server without a certificate must fail closed"
    );

    let open = echo_server(orders.server_config().unwrap()).await;
    handshake(orders.client_config(want_orders).unwrap(), open)
        .await
        .expect("mutual TLS with the right peer id");
    let want_other = PeerMatcher::Path(SpiffeId::new("public", "default", "payments").unwrap());
    let err = handshake(orders.client_config(want_other).unwrap(), open)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not the expected"), "{err}");

    // The id used to dial the operator.
    let operator = orders.control_plane_id("dapr-operator").unwrap();
    assert_eq!(
        operator.to_string(),
        "spiffe://localhost/ns/default/dapr-operator"
    );
    let _ = stop.send(());
    sentry.stop().await;
}

#[tokio::test]
async fn short_lived_certificates_are_renewed_before_they_expire() {
    // sentry renews its own (equally short-lived) serving certificate at each reload tick.
    let mut sentry = Sentry::start(&[
        "--workload-cert-ttl",
        "2s",
        "--allowed-clock-skew",
        "0s",
        "--ca-reload-interval",
        "200ms",
    ])
    .await;
    let metrics = Arc::new(Metrics::new("renew"));
    let identity = Identity::start(
        config(&sentry, "renew"),
        metrics.clone(),
        std::future::pending(),
    )
    .unwrap();
    identity.ready().await;
    let mut rx = identity.subscribe();
    let first = identity.held().not_after.unwrap();
    // Each certificate lives 2 s and is renewed at the latest after 1 s.
    tokio::time::timeout(Duration::from_secs(8), rx.wait_for(|h| h.issued >= 4))
        .await
        .expect("three renewals within 8 s")
        .unwrap();
    assert!(identity.held().not_after.unwrap() > first);
    let text = metrics.render();
    assert!(
        text.contains("dapr_runtime_mtls_workload_cert_rotated_total"),
        "{text}"
    );
    sentry.stop().await;
}

#[tokio::test]
async fn an_unreachable_sentry_is_retried_and_counted_until_it_answers() {
    let sentry = Sentry::start(&[]).await;
    let mut cfg = config(&sentry, "late");
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cfg.sentry_address = free.local_addr().unwrap().to_string();
    drop(free);
    let metrics = Arc::new(Metrics::new("late"));
    let identity = Identity::start(cfg, metrics.clone(), std::future::pending()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!identity.is_ready());
    let text = metrics.render();
    assert!(text.contains("dapr_runtime_mtls_init_fail_total"), "{text}");
}

#[tokio::test]
async fn a_rotated_trust_anchor_file_is_picked_up_without_a_restart() {
    let mut first = Sentry::start(&[]).await;
    let mut second = Sentry::start(&[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ca.crt");
    std::fs::write(&file, first.anchors_pem()).unwrap();
    let mut cfg = config(&first, "rot");
    cfg.trust_anchors_pem = None;
    cfg.trust_anchors_file = Some(file.clone());
    let identity =
        Identity::start(cfg, Arc::new(Metrics::new("rot")), std::future::pending()).unwrap();
    identity.ready().await;
    let before = identity.anchors().certificates();
    std::fs::write(&file, second.anchors_pem()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while identity.anchors().certificates() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "anchors not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected = daprs_api::tls::certs_from_pem(second.anchors_pem().as_bytes()).unwrap();
    assert_eq!(identity.anchors().certificates(), expected);
    first.stop().await;
    second.stop().await;
}
