//! The API server calls an admission webhook served by a local process on 127.0.0.1, with a
//! serving certificate from the cluster CA: the setup later webhook tests (injector, operator)
//! stand on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use daprs_e2e::{Cluster, with_temp_ns};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};

/// Denies ConfigMaps whose name starts with `deny-`, allows the rest.
async fn validate(Json(review): Json<Value>) -> Json<Value> {
    let request = &review["request"];
    let name = request["object"]["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    let allowed = !name.starts_with("deny-");
    Json(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {
            "uid": request["uid"],
            "allowed": allowed,
            "status": {"code": 403, "message": format!("the e2e webhook refuses {name}")},
        }
    }))
}

/// Serves `validate` over TLS on a free loopback port until the test ends.
async fn serve_webhook(cluster: &Cluster) -> SocketAddr {
    let cert = cluster
        .issue_certificate("e2e-webhook", &["127.0.0.1"])
        .expect("a serving certificate");
    let chain = vec![CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).expect("PEM cert")];
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("PEM key");
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a TLS server config");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("an address");
    let router = axum::Router::new().route("/validate", post(validate));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(router.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                }
            });
        }
    });
    addr
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
    )
    .expect("a valid ConfigMap")
}

#[tokio::test]
async fn the_api_server_calls_a_webhook_on_loopback() {
    let cluster = Cluster::shared().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = serve_webhook(cluster).await;
    with_temp_ns(|client, ns| async move {
        let webhook: ValidatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": ns.name()},
            "webhooks": [{
                "name": "configmaps.e2e.daprs.dev",
                "clientConfig": {
                    "url": format!("https://{addr}/validate"),
                    "caBundle": BASE64.encode(cluster.connection().ca_pem()),
                },
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["configmaps"]
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns.name()}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5
            }]
        }))
        .expect("a valid ValidatingWebhookConfiguration");
        ns.accepts(&webhook).await;

        // The API server picks the configuration up from its informer: dry-run until it bites.
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
        let dry_run = PostParams {
            dry_run: true,
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while config_maps
            .create(&dry_run, &config_map("deny-probe"))
            .await
            .is_ok()
        {
            assert!(Instant::now() < deadline, "the webhook never took effect");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        let message = ns.rejects(&config_map("deny-me")).await;
        assert!(
            message.contains("the e2e webhook refuses deny-me"),
            "{message}"
        );
        ns.accepts(&config_map("fine")).await;

        Api::<ValidatingWebhookConfiguration>::all(client)
            .delete(ns.name(), &DeleteParams::default())
            .await
            .expect("delete the webhook configuration");
    })
    .await;
}
