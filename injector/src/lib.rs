//! daprs-injector: the sidecar injector, a mutating admission webhook that adds `daprd` to
//! pods annotated `dapr.io/enabled: "true"`.
//!
//! Module map: [`config`] (flags) → [`sidecar`] (annotations, with [`values`] checks) →
//! [`mutate`] (the pure decision, as [`patch`] operations) → [`router`] (`POST /mutate`, logs,
//! [`metrics`]) → [`serve`] (TLS with the certificate from [`certs`]); [`webhook`] keeps the
//! trust anchors, the caBundle and the mTLS switch current.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admission;
pub mod certs;
pub mod config;
pub mod glob;
pub mod metrics;
pub mod mutate;
pub mod patch;
pub mod router;
pub mod serve;
pub mod sidecar;
pub mod values;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use daprs_api::proto::sentry::TokenValidator;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::certs::{FileSource, SentrySource, ServingCert};
use crate::config::{Args, InjectorConfig, Mode, SentryValidator};
use crate::metrics::Metrics;
use crate::router::{AppState, Live};

/// What stopped the injector.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration mistake (exit 64).
    #[error("{0}")]
    Config(String),
    #[error("failed to bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to connect to the Kubernetes API server: {0}")]
    Kube(#[source] kube::Error),
}

/// A started injector: where it listens, what it holds, and how to stop it.
#[derive(Debug)]
pub struct Running {
    pub webhook_addr: SocketAddr,
    pub healthz_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<InjectorConfig>,
    /// Counts certificates obtained from sentry (stays 0 with certificate files).
    pub certificates_issued: watch::Receiver<u64>,
    /// True once the caBundle has been applied (kubernetes mode).
    pub ca_bundle_applied: watch::Receiver<bool>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, drains open connections and waits for every task.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Waits until the injector is stopped by [`Running::trigger_shutdown`].
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }

    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

async fn kube_client(args: &Args) -> Result<kube::Client, Error> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| Error::Config(format!("--kubeconfig {}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            Error::Config(format!(
                "no Kubernetes configuration found ({e}); pass --kubeconfig or run in a pod"
            ))
        })?,
    };
    kube::Client::try_from(config).map_err(Error::Kube)
}

fn cluster_domain(args: &Args) -> String {
    args.kube_cluster_domain
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/resolv.conf")
                .ok()
                .and_then(|text| config::cluster_domain_from_resolv_conf(&text))
        })
        .unwrap_or_else(|| "cluster.local".to_owned())
}

/// Binds every port, then serves in the background.
pub async fn start(args: Args) -> Result<Running, Error> {
    let cluster_domain = cluster_domain(&args);
    let client = match args.mode {
        Mode::Kubernetes => Some(kube_client(&args).await?),
        Mode::Standalone => None,
    };
    let native_default = match &client {
        Some(client) => match client.apiserver_version().await {
            Ok(info) => config::supports_native_sidecars(&info.major, &info.minor),
            Err(error) => {
                tracing::warn!(%error, "cannot read the API server's version; injecting plain sidecars unless NATIVE_SIDECAR_ENABLED is set");
                false
            }
        },
        None => false,
    };
    let config = Arc::new(InjectorConfig::from_args(
        &args,
        cluster_domain,
        native_default,
    ));
    let live = Arc::new(Live::default());
    let metrics = Arc::new(Metrics::default());
    let cert = ServingCert::default();
    if let (Some(cert_file), Some(key_file)) = (&args.tls_cert_file, &args.tls_key_file) {
        FileSource {
            cert: cert_file.clone(),
            key: key_file.clone(),
        }
        .load(&cert)
        .map_err(|e| Error::Config(format!("--tls-cert-file/--tls-key-file: {e}")))?;
    }
    let tls =
        Arc::new(certs::server_config(cert.clone()).map_err(|e| Error::Config(e.to_string()))?);

    let webhook = bind(
        "the webhook",
        SocketAddr::new(args.listen_address, args.port),
    )
    .await?;
    let healthz = bind(
        "/healthz",
        SocketAddr::new(args.healthz_listen_address, args.healthz_port),
    )
    .await?;
    let metrics_listener = if args.enable_metrics {
        Some(
            bind(
                "/metrics",
                SocketAddr::new(args.metrics_listen_address, args.metrics_port),
            )
            .await?,
        )
    } else {
        None
    };
    let local = |l: &TcpListener| l.local_addr().ok();
    let webhook_addr =
        local(&webhook).unwrap_or_else(|| SocketAddr::new(args.listen_address, args.port));
    let healthz_addr = local(&healthz)
        .unwrap_or_else(|| SocketAddr::new(args.healthz_listen_address, args.healthz_port));
    let metrics_addr = metrics_listener.as_ref().and_then(local);

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (anchors_tx, anchors_rx) = watch::channel(0u64);
    let (issued_tx, issued_rx) = watch::channel(0u64);
    let (applied_tx, applied_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    tasks.push(tokio::spawn(webhook::watch_trust_anchors(
        args.trust_anchors_file.clone(),
        live.clone(),
        anchors_tx,
        shutdown_rx.clone(),
    )));
    match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert_file), Some(key_file)) => tasks.push(tokio::spawn(
            FileSource {
                cert: cert_file.clone(),
                key: key_file.clone(),
            }
            .watch(cert.clone(), shutdown_rx.clone()),
        )),
        _ => {
            let source = SentrySource {
                address: args.sentry_address.clone().unwrap_or_else(|| {
                    format!(
                        "dapr-sentry.{}.svc.{}:443",
                        args.namespace, config.cluster_domain
                    )
                }),
                namespace: args.namespace.clone(),
                trust_domain: args.control_plane_trust_domain.clone(),
                token_file: args.sentry_token_file.clone(),
                validator: match args.sentry_token_validator {
                    SentryValidator::Kubernetes => TokenValidator::Kubernetes,
                    SentryValidator::Insecure => TokenValidator::Insecure,
                },
            };
            source.sentry_id().map_err(|e| {
                Error::Config(format!("--namespace/--control-plane-trust-domain: {e}"))
            })?;
            let live = live.clone();
            let stop = shutdown_rx.clone();
            let cert = cert.clone();
            let mut anchors = anchors_rx.clone();
            tasks.push(tokio::spawn(async move {
                // The anchors verify sentry: wait for the first read of the file.
                if live.trust_anchors().is_none() {
                    let mut stop2 = stop.clone();
                    tokio::select! {
                        _ = anchors.wait_for(|n| *n > 0) => {}
                        _ = stop2.wait_for(|s| *s) => return,
                    }
                }
                source.run(cert, live, issued_tx, stop).await;
            }));
        }
    }
    if let Some(client) = &client {
        tasks.push(tokio::spawn(webhook::keep_ca_bundle(
            client.clone(),
            args.webhook_configuration_name.clone(),
            live.clone(),
            anchors_rx.clone(),
            applied_tx,
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(webhook::watch_mtls(
            client.clone(),
            args.namespace.clone(),
            live.clone(),
            shutdown_rx.clone(),
        )));
    }

    // Health tells the truth: a certificate is held, the anchors are read and, with a cluster,
    // the API server has been given the caBundle.
    let needs_ca_bundle = client.is_some();
    let health = {
        let cert = cert.clone();
        let live = live.clone();
        let applied = applied_rx.clone();
        axum::Router::new().route(
            "/healthz",
            get(move || {
                let mut waiting = Vec::new();
                if cert.get().is_none() {
                    waiting.push("serving certificate");
                }
                if live.trust_anchors().is_none() {
                    waiting.push("trust anchors");
                }
                if needs_ca_bundle && !*applied.borrow() {
                    waiting.push("webhook caBundle");
                }
                async move {
                    if waiting.is_empty() {
                        (axum::http::StatusCode::OK, "ok".to_owned())
                    } else {
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("waiting for: {}", waiting.join(", ")),
                        )
                    }
                }
            }),
        )
    };
    tasks.push(tokio::spawn(serve::serve_plain(
        healthz,
        health,
        shutdown_rx.clone(),
    )));
    if let Some(listener) = metrics_listener {
        let registry = Arc::new(metrics.register());
        let app = axum::Router::new().route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        metrics::render(&registry),
                    )
                }
            }),
        );
        tasks.push(tokio::spawn(serve::serve_plain(
            listener,
            app,
            shutdown_rx.clone(),
        )));
    }
    let app = router::router(AppState {
        config: config.clone(),
        live: live.clone(),
        metrics: metrics.clone(),
        client: client.clone(),
    });
    tasks.push(tokio::spawn(serve::serve_tls(
        webhook,
        tls,
        app,
        shutdown_rx,
    )));

    tracing::info!(
        mode = ?args.mode,
        namespace = %args.namespace,
        cluster_domain = %config.cluster_domain,
        native_sidecar = config.native_sidecar,
        strict_annotations = config.strict_annotations,
        %webhook_addr,
        "sidecar injector started"
    );
    Ok(Running {
        webhook_addr,
        healthz_addr,
        metrics_addr,
        live,
        metrics,
        config,
        certificates_issued: issued_rx,
        ca_bundle_applied: applied_rx,
        shutdown,
        tasks,
    })
}

/// Runs the injector until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<(), Error> {
    let running = start(args).await?;
    let stopper = running.shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stopper.send(true);
    });
    running.wait().await;
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
