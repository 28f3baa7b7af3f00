//! The daprs operator: serves Dapr resources to sidecars over mutual TLS, reconciles each
//! Dapr app's `<app-id>-dapr` Service, validates Components and reports their status.
//!
//! Module map: [`watch`] feeds one [`hub`] per resource kind → [`api`] serves them to sidecars
//! (with [`secrets`] inlined, [`pods`] for `dapr.io/config`; connections in [`grpc_server`],
//! update streams framed by [`grpc_stream`]) and [`status`] records what the sidecars report; [`leader`] runs [`service`], the status aggregation, [`resource_status`]
//! and the [`watchdog`] on one replica;
//! [`webhook`] converts Subscriptions and [`validate`]s Components ([`component_webhook`] keeps
//! its caBundle); [`crds`] renders and
//! applies the CRDs; [`identity`] keeps the operator's SVID.
#![forbid(unsafe_code)]

pub mod api;
pub mod component_webhook;
pub mod config;
pub mod crds;
pub mod grpc_server;
pub mod grpc_stream;
pub mod hub;
pub mod identity;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod resource_status;
pub mod secrets;
pub mod service;
pub mod status;
pub mod trust_bundle;
pub mod validate;
pub mod watch;
pub mod watchdog;
pub mod webhook;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use daprs_api::crd::Configuration;
use daprs_api::proto::operator::resource_status_server::ResourceStatusServer;
use daprs_api::tls::{PeerMatcher, SpiffeClientVerifier, SvidResolver, TrustAnchors};
use tokio::net::TcpListener;
use tokio::sync::watch as signal;

use crate::api::{Hubs, OperatorApi, stopped};
use crate::config::Args;
use crate::metrics::Metrics;
use crate::secrets::CoalescingSecrets;
use crate::status::StatusApi;

/// How often the trust anchors file is checked for a rotated root.
pub const ANCHORS_POLL: Duration = Duration::from_secs(10);
/// How long in-flight calls get after shutdown before connections are dropped (Dapr's 5 s).
pub const GRACEFUL_STOP: Duration = Duration::from_secs(5);
/// Env var that turns the webhooks off (Dapr's).
pub const ENV_ENABLE_WEBHOOKS: &str = "ENABLE_WEBHOOKS";

/// What stopped the operator.
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
    #[error("failed to read the {name} Configuration: {source}")]
    ReadConfiguration {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    ApplyCrds(#[from] crds::ApplyError),
    #[error("failed to build the TLS configuration: {0}")]
    Tls(String),
}

/// What the operator takes from its surroundings rather than its flags.
#[derive(Clone)]
pub struct Environment {
    /// The operator's namespace (env `NAMESPACE`).
    pub namespace: String,
    /// The API server client, with the operator's credentials.
    pub client: kube::Client,
    /// This replica's name in the Lease (env `POD_NAME`, else the host name).
    pub identity: String,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("namespace", &self.namespace)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Environment {
    /// `NAMESPACE`, `POD_NAME` and the in-cluster or `KUBECONFIG` credentials.
    pub async fn from_process() -> Result<Self, Error> {
        let namespace = std::env::var(daprs_api::names::ENV_NAMESPACE)
            .ok()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                Error::Config("NAMESPACE is not set: set it to the operator's namespace (the Helm chart sets it from metadata.namespace)".into())
            })?;
        let identity = std::env::var("POD_NAME")
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
            })
            .unwrap_or_else(|| format!("operator-{}", std::process::id()));
        let client = kube::Client::try_default().await.map_err(Error::Kube)?;
        Ok(Self {
            namespace,
            client,
            identity,
        })
    }
}

/// A started operator: where it listens, and how to stop it.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub healthz_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub webhook_addr: Option<SocketAddr>,
    /// True while this replica leads.
    pub leading: signal::Receiver<bool>,
    pub hubs: Hubs,
    shutdown: signal::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Stops serving, ends the streams, releases the lease and waits.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        self.task.await.unwrap_or(Ok(()))
    }

    /// Waits until the operator ends by itself.
    pub async fn wait(self) -> Result<(), Error> {
        self.task.await.unwrap_or(Ok(()))
    }

    pub fn shutdown_handle(&self) -> signal::Sender<bool> {
        self.shutdown.clone()
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Bind { what, addr, source })?;
    Ok((listener, local))
}

/// Serves the operator API on `listener` with mutual TLS until `shutdown`: the SVID in
/// `svid` (no handshake before there is one), clients verified against `anchors`.
pub async fn serve_api(
    listener: TcpListener,
    svid: SvidResolver,
    anchors: TrustAnchors,
    api: OperatorApi,
    status: StatusApi,
    shutdown: signal::Receiver<bool>,
) -> Result<(), Error> {
    let clients = SpiffeClientVerifier::new(anchors, PeerMatcher::Any);
    let mut tls = daprs_api::tls::server_config(svid, Some(clients))
        .map_err(|e| Error::Tls(e.to_string()))?;
    api::lean_tls(&mut tls);
    let incoming = daprs_api::tls::tls_incoming(listener, Arc::new(tls));
    let routes = tonic::service::Routes::new(grpc_stream::Streams::new(api))
        .add_service(ResourceStatusServer::new(status));
    grpc_server::serve(incoming, routes, shutdown).await;
    Ok(())
}

/// The `daprsystem` settings the operator needs.
#[derive(Clone, Debug)]
struct ControlPlane {
    sentry_address: String,
    trust_domain: String,
    mtls_enabled: bool,
}

async fn control_plane(args: &Args, env: &Environment) -> Result<ControlPlane, Error> {
    let api: kube::Api<Configuration> = kube::Api::namespaced(env.client.clone(), &env.namespace);
    let config = api
        .get_opt(&args.config)
        .await
        .map_err(|source| Error::ReadConfiguration {
            name: args.config.clone(),
            source,
        })?
        .ok_or_else(|| {
            Error::Config(format!(
                "Configuration {:?} not found in namespace {:?}: install it (the Helm chart creates it) or name another with --config",
                args.config, env.namespace
            ))
        })?;
    let mtls = config.spec.mtls.unwrap_or_default();
    if mtls.sentry_address.is_empty() || mtls.control_plane_trust_domain.is_empty() {
        return Err(Error::Config(format!(
            "Configuration {:?} needs spec.mtls.sentryAddress and spec.mtls.controlPlaneTrustDomain: the operator gets its certificate from sentry",
            args.config
        )));
    }
    Ok(ControlPlane {
        sentry_address: mtls.sentry_address.clone(),
        trust_domain: mtls.control_plane_trust_domain.clone(),
        mtls_enabled: mtls.is_enabled(),
    })
}

/// How the webhooks are served and what the API server must trust.
enum WebhookTls {
    Svid,
    Files {
        config: Box<rustls::ServerConfig>,
        ca_bundle: Vec<u8>,
    },
}

fn webhook_tls_from_dir(dir: &Path) -> Result<WebhookTls, Error> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| {
            Error::Config(format!(
                "--webhook-tls-dir {}: cannot read {name}: {e}",
                dir.display()
            ))
        })
    };
    let chain = daprs_api::tls::certs_from_pem(&read("tls.crt")?)
        .map_err(|e| Error::Config(format!("--webhook-tls-dir {}: tls.crt: {e}", dir.display())))?;
    let key = daprs_api::tls::key_from_pem(&read("tls.key")?)
        .map_err(|e| Error::Config(format!("--webhook-tls-dir {}: tls.key: {e}", dir.display())))?;
    let ca_bundle = read("ca.crt")?;
    let mut config = rustls::ServerConfig::builder_with_provider(daprs_api::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| Error::Config(format!("--webhook-tls-dir {}: {e}", dir.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(WebhookTls::Files {
        config: Box::new(config),
        ca_bundle,
    })
}

/// Reads flags and the environment, binds every port, and starts in the background.
pub async fn start(args: Args) -> Result<Running, Error> {
    let environment = Environment::from_process().await?;
    start_in(args, environment).await
}

/// [`start`] with an explicit environment (tests run the operator in-process).
pub async fn start_in(args: Args, env: Environment) -> Result<Running, Error> {
    let Args {
        config: _,
        watch_interval,
        max_pod_restarts_per_minute,
        watchdog_can_patch_pod_labels,
        disable_leader_election,
        disable_service_reconciler,
        ref watch_namespace,
        enable_argo_rollout_service_reconciler: _,
        ref trust_anchors_file,
        ref sentry_token_file,
        port,
        listen_address,
        healthz_port,
        healthz_listen_address,
        webhook_server_port,
        webhook_server_listen_address,
        cache_sync_period,
        metrics_port,
        metrics_listen_address,
        enable_metrics,
        disable_crd_apply,
        ref webhook_tls_dir,
        ref webhook_url,
        ref component_webhook_name,
        log: _,
    } = args;
    if !cache_sync_period.is_zero() {
        tracing::info!(
            ?cache_sync_period,
            "--cache-sync-period has no effect: watches here never resync"
        );
    }
    let watch_namespace = Some(watch_namespace.clone()).filter(|n| !n.is_empty());
    let anchors_pem = std::fs::read(trust_anchors_file).map_err(|e| {
        Error::Config(format!(
            "--trust-anchors-file {}: {e}; mount the trust bundle's ca.crt there",
            trust_anchors_file.display()
        ))
    })?;
    let anchors = TrustAnchors::from_pem(&anchors_pem).map_err(|e| {
        Error::Config(format!(
            "--trust-anchors-file {}: {e}",
            trust_anchors_file.display()
        ))
    })?;
    let webhooks_enabled = std::env::var(ENV_ENABLE_WEBHOOKS)
        .map(|v| v != "false")
        .unwrap_or(true);
    let webhook_tls = match webhook_tls_dir {
        Some(dir) => webhook_tls_from_dir(dir)?,
        None => WebhookTls::Svid,
    };
    let control_plane = control_plane(&args, &env).await?;

    let (grpc, grpc_addr) = bind("the operator API", SocketAddr::new(listen_address, port)).await?;
    let (healthz, healthz_addr) = bind(
        "/healthz",
        SocketAddr::new(healthz_listen_address, healthz_port),
    )
    .await?;
    let metrics_listener = if enable_metrics {
        Some(
            bind(
                "/metrics",
                SocketAddr::new(metrics_listen_address, metrics_port),
            )
            .await?,
        )
    } else {
        None
    };
    let webhook_listener = if webhooks_enabled {
        Some(
            bind(
                "the webhooks",
                SocketAddr::new(webhook_server_listen_address, webhook_server_port),
            )
            .await?,
        )
    } else {
        None
    };
    let metrics_addr = metrics_listener.as_ref().map(|(_, a)| *a);
    let webhook_addr = webhook_listener.as_ref().map(|(_, a)| *a);

    // Without --webhook-tls-dir the webhooks serve the SVID, so the API server must trust the anchors.
    let uses_anchors = webhook_tls_dir.is_none();
    let ca_bundle = match &webhook_tls {
        WebhookTls::Svid => anchors_pem.clone(),
        WebhookTls::Files { ca_bundle, .. } => ca_bundle.clone(),
    };
    if !disable_crd_apply {
        crds::apply(
            &env.client,
            &env.namespace,
            webhook_url.as_deref(),
            &ca_bundle,
        )
        .await?;
    }

    let (shutdown, shutdown_rx) = signal::channel(false);
    let (leading_tx, leading) = signal::channel(false);
    let metrics = Arc::new(Metrics::default());
    let hubs = Hubs::default();
    let svid = SvidResolver::default();
    let (held_tx, held) = signal::channel(false);

    tracing::info!(
        namespace = %env.namespace,
        sentry = %control_plane.sentry_address,
        watch_namespace = ?watch_namespace,
        %grpc_addr,
        "operator starting"
    );

    tokio::spawn(identity::keep(
        identity::Sentry {
            address: control_plane.sentry_address.clone(),
            control_plane_trust_domain: control_plane.trust_domain.clone(),
            namespace: env.namespace.clone(),
            anchors: anchors.clone(),
            token_file: sentry_token_file.clone(),
        },
        svid.clone(),
        held_tx,
        shutdown_rx.clone(),
    ));
    for (hub, kind, version, plural) in [
        (&hubs.components, "Component", "v1alpha1", "components"),
        (
            &hubs.configurations,
            "Configuration",
            "v1alpha1",
            "configurations",
        ),
        (
            &hubs.subscriptions,
            "Subscription",
            "v2alpha1",
            "subscriptions",
        ),
        (&hubs.resiliencies, "Resiliency", "v1alpha1", "resiliencies"),
        (
            &hubs.http_endpoints,
            "HTTPEndpoint",
            "v1alpha1",
            "httpendpoints",
        ),
    ] {
        tokio::spawn(watch::run(
            env.client.clone(),
            watch::resource(kind, version, plural),
            watch_namespace.clone(),
            hub.clone(),
            shutdown_rx.clone(),
        ));
    }

    // Health: ready once every cache synced and the certificate is held.
    let health = {
        let (hubs, held) = (hubs.clone(), held.clone());
        axum::Router::new().route(
            "/healthz",
            get(move || {
                let problem = if !*held.borrow() {
                    Some("waiting for the operator's certificate from sentry")
                } else if !hubs.synced() {
                    Some("waiting for the resource caches to sync")
                } else {
                    None
                };
                async move {
                    match problem {
                        None => (axum::http::StatusCode::OK, "ok"),
                        Some(p) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, p),
                    }
                }
            }),
        )
    };
    let mut stop = shutdown_rx.clone();
    tokio::spawn(async move {
        let _ = axum::serve(healthz, health)
            .with_graceful_shutdown(async move { stopped(&mut stop).await })
            .await;
    });
    if let Some((listener, _)) = metrics_listener {
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
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stopped(&mut stop).await })
                .await;
        });
    }
    if let Some((listener, _)) = webhook_listener {
        let tls = match webhook_tls {
            WebhookTls::Files { config, .. } => *config,
            WebhookTls::Svid => {
                let mut config = daprs_api::tls::server_config(svid.clone(), None)
                    .map_err(|e| Error::Tls(e.to_string()))?;
                config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                config
            }
        };
        tokio::spawn(webhook::serve_tls(
            listener,
            Arc::new(tls),
            webhook::router(metrics.clone()),
            shutdown_rx.clone(),
        ));
    }

    // What the API server must trust to call the webhooks, for the Component webhook's keeper.
    let (bundle_tx, bundle_rx) = signal::channel(ca_bundle.clone());
    // A rotated root: new anchors for every later handshake, and a fresh caBundle.
    {
        let (anchors, file, mut stop) = (
            anchors.clone(),
            trust_anchors_file.clone(),
            shutdown_rx.clone(),
        );
        let mut last_file = anchors_pem.clone();
        tokio::spawn(async move {
            loop {
                if let Ok(pem) = std::fs::read(&file)
                    && pem != last_file
                {
                    match anchors.set_pem(&pem) {
                        Ok(()) => {
                            tracing::info!("trust anchors changed; using the new ones");
                            if uses_anchors {
                                bundle_tx.send_replace(pem.clone());
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "the new trust anchors are invalid; keeping the old ones")
                        }
                    }
                    last_file = pem;
                }
                tokio::select! {
                    () = tokio::time::sleep(ANCHORS_POLL) => {}
                    () = stopped(&mut stop) => return,
                }
            }
        });
    }

    // The reconcilers, on the leader only.
    let lead = {
        let hubs = hubs.clone();
        let client = env.client.clone();
        let metrics = metrics.clone();
        let ns = watch_namespace.clone();
        let mtls_enabled = control_plane.mtls_enabled;
        let (anchors_file, cp_namespace) = (trust_anchors_file.clone(), env.namespace.clone());
        // Without the webhooks (ENABLE_WEBHOOKS=false) there is nothing for the API server to call.
        let component_webhook =
            Some(component_webhook_name.clone()).filter(|n| webhooks_enabled && !n.is_empty());
        // With --disable-crd-apply the CRDs, their conversion webhook included, are someone
        // else's to manage.
        let conversion = (!disable_crd_apply).then(|| webhook_url.clone());
        move |stop: signal::Receiver<bool>| {
            let (client, metrics, ns) = (client.clone(), metrics.clone(), ns.clone());
            let (component_webhook, bundle_rx) = (component_webhook.clone(), bundle_rx.clone());
            let (conversion, cp_ns, hubs) =
                (conversion.clone(), cp_namespace.clone(), hubs.clone());
            let watchdog = watchdog::Watchdog {
                client: client.clone(),
                control_plane_namespace: cp_namespace.clone(),
                watch_namespace: ns.clone(),
                can_patch_labels: watchdog_can_patch_pod_labels,
                limiter: watchdog::RestartLimiter::new(max_pod_restarts_per_minute),
                metrics: metrics.clone(),
            }
            .run(watch_interval, stop.clone());
            let bundles = trust_bundle::run(
                client.clone(),
                anchors_file.clone(),
                cp_namespace.clone(),
                ns.clone(),
                stop.clone(),
            );
            async move {
                metrics.leader.set(1);
                let services = async {
                    if !disable_service_reconciler {
                        let ctx = Arc::new(service::Context {
                            client: client.clone(),
                            mtls_enabled,
                            metrics: metrics.clone(),
                        });
                        service::run(ctx, ns.clone(), stop.clone()).await;
                    }
                };
                let statuses = status::run(client.clone(), ns.clone(), stop.clone());
                let ca_bundle = async {
                    if let Some(name) = component_webhook {
                        component_webhook::run(
                            client.clone(),
                            name,
                            bundle_rx.clone(),
                            stop.clone(),
                        )
                        .await;
                    }
                };
                let conversion = async {
                    if let Some(url) = conversion {
                        crds::keep_conversion(
                            client.clone(),
                            cp_ns,
                            url,
                            bundle_rx.clone(),
                            stop.clone(),
                        )
                        .await;
                    }
                };
                let resources =
                    resource_status::run(client.clone(), ns.clone(), hubs, stop.clone());
                futures::join!(
                    services, statuses, bundles, ca_bundle, conversion, watchdog, resources
                );
                metrics.leader.set(0);
            }
        }
    };
    if disable_leader_election {
        leading_tx.send_replace(true);
        tokio::spawn(lead(shutdown_rx.clone()));
    } else {
        let lock = leader::LeaseLock {
            api: kube::Api::namespaced(env.client.clone(), &env.namespace),
            identity: env.identity.clone(),
        };
        tokio::spawn(leader::run(lock, shutdown_rx.clone(), leading_tx, lead));
    }

    let api = OperatorApi {
        hubs: hubs.clone(),
        secrets: Arc::new(CoalescingSecrets::new(Arc::new(secrets::KubeSecrets {
            client: env.client.clone(),
        }))),
        pods: Arc::new(pods::KubePods {
            client: env.client.clone(),
        }),
        shutdown: shutdown_rx.clone(),
        metrics: metrics.clone(),
    };
    let status = StatusApi {
        writer: Arc::new(status::KubeStatusWriter {
            client: env.client.clone(),
        }),
        metrics,
    };
    let task = tokio::spawn(serve_api(grpc, svid, anchors, api, status, shutdown_rx));
    Ok(Running {
        grpc_addr,
        healthz_addr,
        metrics_addr,
        webhook_addr,
        leading,
        hubs,
        shutdown,
        task,
    })
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<(), Error> {
    let running = start(args).await?;
    let stopper = running.shutdown_handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stopper.send(true);
    });
    running.wait().await
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
