//! `daprs-sidecar`: `daprd`, the sidecar apps talk to. It speaks Dapr's HTTP and gRPC APIs over
//! components loaded from Dapr manifests.
//!
//! - [`config`]: Dapr's flags.
//! - [`components`]: manifests, the factory registry and the live component table.
//! - [`state`], [`secrets`]: building blocks and their stores.
//! - [`api`]: the protocol-independent operations; [`http`] and [`grpc`] are the front ends.
//! - [`reload`]: hot reload of changed components without a gap.
//! - [`identity`]: the workload certificate from sentry (mutual TLS).
//! - [`kubernetes`]: kubernetes mode: resources from the operator.

#![forbid(unsafe_code)]

pub mod api;
pub mod api_access;
pub mod components;
pub mod config;
pub mod drain;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod identity;
pub mod invoke;
pub mod kubernetes;
pub mod metrics;
pub mod reload;
pub mod runtime;
pub mod secrets;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::ServiceExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::components::ComponentError;
use crate::components::manifest::{Scope, load_components, load_configuration};
use crate::components::registry::Registry;
use crate::config::{Args, Mode};
use crate::runtime::{AppConnection, AppHealth, Runtime, Settings};

/// How long a shutdown waits, once nothing is in flight, for connections to close by
/// themselves before closing them.
pub const DRAIN_POLL: Duration = Duration::from_millis(100);

/// Why daprd could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("failed to load components: {0}")]
    Components(#[from] ComponentError),
    #[error("failed to listen on {addr} for the {what}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to set up the workload identity: {0}")]
    Identity(#[from] identity::IdentityError),
    #[error("graceful shutdown timeout exceeded ({0:?})")]
    ShutdownTimeout(Duration),
    #[error("kubernetes mode: {0}")]
    Kubernetes(#[source] kubernetes::Error),
}

impl From<kubernetes::Error> for Error {
    fn from(error: kubernetes::Error) -> Self {
        match error {
            kubernetes::Error::Config(message) => Error::Config(message),
            kubernetes::Error::Components(error) => Error::Components(error),
            other => Error::Kubernetes(other),
        }
    }
}

/// A started sidecar: where it listens, and the handle to stop it.
pub struct Running {
    pub runtime: Arc<Runtime>,
    pub http: Vec<SocketAddr>,
    pub grpc: Vec<SocketAddr>,
    pub public: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    /// The internal (sidecar-to-sidecar) gRPC server.
    pub internal: SocketAddr,
    registered: Option<std::path::PathBuf>,
    grace: Duration,
    servers: JoinSet<()>,
    reloader: Option<reload::Watcher>,
    /// Kubernetes mode: the operator connection and the resources it serves.
    pub kubernetes: Option<Arc<kubernetes::Sync>>,
    operator_task: Option<tokio::task::JoinHandle<()>>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// Loads components, then binds and serves every port. Returns once the sidecar is ready.
pub async fn start(args: Args) -> Result<Running, Error> {
    let started = Instant::now();
    for flag in args.unsupported.given() {
        tracing::warn!(
            flag,
            "flag accepted but not supported yet; it has no effect"
        );
    }
    if args.mode == Mode::Standalone && args.control_plane_address.is_some() {
        tracing::warn!(
            flag = "--control-plane-address",
            mode = "standalone",
            "flag accepted but not supported yet; it has no effect"
        );
    }
    args.validate().map_err(Error::Config)?;
    let namespace = std::env::var(daprs_api::names::ENV_NAMESPACE)
        .ok()
        .filter(|n| !n.is_empty());
    let api_token = std::env::var("DAPR_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let app = AppConnection {
        port: args.app_port,
        protocol: args.app_protocol.name().to_owned(),
        channel_address: args.app_channel_address.clone(),
        max_concurrency: args.app_max_concurrency,
        health_check: args.enable_app_health_check.then(|| AppHealth {
            path: args.app_health_check_path.clone(),
            interval_seconds: args.app_health_probe_interval,
            timeout_ms: args.app_health_probe_timeout,
            threshold: args.app_health_threshold,
        }),
    };
    let metrics = Arc::new(metrics::Metrics::new(&args.app_id));
    let (identity_stop, identity_stopped) = tokio::sync::watch::channel(false);
    let identity = if args.needs_identity() {
        let config = identity::IdentityConfig {
            app_id: args.app_id.clone(),
            namespace: namespace
                .clone()
                .unwrap_or_else(|| daprs_api::names::DEFAULT_NAMESPACE.to_owned()),
            sentry_address: args.sentry_address.clone().unwrap_or_default(),
            control_plane_trust_domain: args.control_plane_trust_domain(),
            control_plane_namespace: args.control_plane_namespace(),
            ..identity::IdentityConfig::default()
        }
        .with_process_env();
        let mut stopped = identity_stopped;
        Some(identity::Identity::start(
            config,
            metrics.clone(),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        )?)
    } else {
        None
    };
    let kept = Arc::new(kubernetes::resources::KeptResources::default());
    let (configuration, operator) = match (&identity, args.mode) {
        (Some(identity), Mode::Kubernetes) => {
            let (configuration, client) = kubernetes_boot(&args, identity, &kept).await?;
            (configuration, Some(client))
        }
        _ => (load_configuration(&args.config)?, None),
    };
    let resources_path = if operator.is_some() {
        Vec::new()
    } else {
        args.resources_path.clone()
    };
    let resolver = match args.mode {
        config::Mode::Kubernetes => {
            let cluster_domain = configuration
                .name_resolution
                .as_ref()
                .and_then(|n| n.configuration.as_ref())
                .and_then(|c| c.get("clusterDomain"))
                .and_then(|d| d.as_str())
                .unwrap_or(invoke::resolve::DEFAULT_CLUSTER_DOMAIN)
                .to_owned();
            invoke::resolve::Resolver::Kubernetes {
                cluster_domain,
                port: args.internal_port(),
            }
        }
        config::Mode::Standalone => {
            let component = configuration
                .name_resolution
                .as_ref()
                .map(|n| n.component.as_str())
                .unwrap_or_default();
            match component {
                "mdns" => invoke::resolve::Resolver::Mdns(invoke::mdns::Mdns::start().map_err(
                    |e| {
                        Error::Config(format!(
                            "spec.nameResolution.component is mdns, but {e}; free UDP port 5353 for multicast or use the default registry resolver (remove nameResolution)"
                        ))
                    },
                )?),
                "" | "registry" => invoke::resolve::Resolver::registry(
                    args.registry_dir
                        .clone()
                        .unwrap_or_else(invoke::resolve::Resolver::default_registry_dir),
                ),
                other => {
                    tracing::warn!(
                        component = other,
                        "this name resolver is not supported (self-hosted: registry, mdns); using the daprs registry directory"
                    );
                    invoke::resolve::Resolver::registry(
                        args.registry_dir
                            .clone()
                            .unwrap_or_else(invoke::resolve::Resolver::default_registry_dir),
                    )
                }
            }
        }
    };
    let invocation = invoke::InvokeSettings {
        resolver,
        app: invoke::AppSettings {
            port: args.app_port,
            protocol: args.app_protocol.name().to_owned(),
            address: args.app_channel_address.clone(),
            max_concurrency: args.app_max_concurrency,
            health: app.health_check.clone(),
        },
    };
    let rt = Runtime::new(
        Settings {
            invocation,
            identity: identity.clone(),
            metrics: Some(metrics),
            app_id: args.app_id.clone(),
            namespace: namespace.clone(),
            configuration,
            app,
            resources_path,
            api_token: api_token.clone(),
            max_body_bytes: args.max_body_size,
        },
        registry(),
    );
    let sync = match operator {
        Some(client) => {
            let builtin = if args.disable_builtin_k8s_secret_store {
                Vec::new()
            } else {
                vec![secrets::kubernetes::builtin_manifest()]
            };
            let sync = kubernetes::Sync::new(rt.clone(), client, builtin, kept);
            sync.initial_load().await?;
            Some(sync)
        }
        None => {
            let manifests = load_components(
                &args.resources_path,
                &Scope {
                    app_id: &args.app_id,
                    namespace: namespace.as_deref(),
                },
            )?;
            rt.load(manifests).await?;
            None
        }
    };

    let mut servers = JoinSet::new();
    let mut grpc_addrs = Vec::new();
    for ip in &args.listen_addresses {
        let listener = bind("gRPC API", SocketAddr::new(*ip, args.grpc_port)).await?;
        grpc_addrs.push(listener.local_addr().map_err(|source| Error::Bind {
            what: "gRPC API",
            addr: SocketAddr::new(*ip, args.grpc_port),
            source,
        })?);
        let service = tonic_service(rt.clone(), api_token.clone());
        let proxy = invoke::proxy::Layer::api(rt.invoker.clone(), api_token.clone());
        let stop = rt.clone();
        let in_flight = rt.in_flight.clone();
        servers.spawn(async move {
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let result = tonic::transport::Server::builder()
                .layer(drain::Layer(in_flight))
                .layer(proxy)
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move { stop.stopped().await })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "gRPC API server failed");
            }
        });
    }
    let internal = serve_internal(&args, &rt, &mut servers).await?;
    let mut http_addrs = Vec::new();
    for ip in &args.listen_addresses {
        let addr = SocketAddr::new(*ip, args.http_port);
        let listener = bind("HTTP API", addr).await?;
        http_addrs.push(listener.local_addr().map_err(|source| Error::Bind {
            what: "HTTP API",
            addr,
            source,
        })?);
        let app = http::service(rt.clone());
        let stop = rt.clone();
        servers.spawn(async move {
            let result = axum::serve(listener, app.into_make_service())
                .with_graceful_shutdown(async move { stop.stopped().await })
                .await;
            if let Err(error) = result {
                tracing::error!(%error, "HTTP API server failed");
            }
        });
    }
    let public = match args.public_port {
        None => None,
        Some(port) => {
            let addr = SocketAddr::new(args.public_listen_address, port);
            let listener = bind("public health and metadata port", addr).await?;
            let local = listener.local_addr().ok();
            let app = http::public_router(rt.clone());
            let stop = rt.clone();
            servers.spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.stopped().await })
                    .await;
            });
            local
        }
    };
    let metrics = if args.enable_metrics {
        let addr = SocketAddr::new(args.metrics_listen_address, args.metrics_port);
        let listener = bind("metrics", addr).await?;
        let local = listener.local_addr().ok();
        let state = rt.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let state = state.clone();
                async move {
                    (
                        [(
                            ::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        state.metrics.render(),
                    )
                }
            }),
        );
        let stop = rt.clone();
        servers.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.stopped().await })
                .await;
        });
        local
    } else {
        None
    };
    let operator_task = sync.clone().map(|sync| tokio::spawn(sync.run()));
    let reloader = if args.hot_reload && !rt.resources_path.is_empty() {
        match reload::Watcher::start(rt.clone()) {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, "hot reload is off: cannot watch the resources paths");
                None
            }
        }
    } else {
        None
    };
    {
        let rt = rt.clone();
        tokio::spawn(async move {
            rt.stopped().await;
            identity_stop.send_replace(true);
        });
    }
    if let Some(health) = &rt.app.health_check {
        let stop = rt.clone();
        rt.invoker
            .app
            .start_health_probes(health, async move { stop.stopped().await });
    }
    rt.set_ready();
    let components = rt.component_list();
    tracing::info!(
        app_id = %rt.app_id,
        http = ?http_addrs,
        grpc = ?grpc_addrs,
        internal = %internal.0,
        mtls = rt.identity.is_some(),
        components = components.len(),
        names = ?components.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        startup_ms = started.elapsed().as_millis() as u64,
        "daprd is ready"
    );
    Ok(Running {
        runtime: rt,
        http: http_addrs,
        grpc: grpc_addrs,
        public,
        metrics,
        internal: internal.0,
        registered: internal.1,
        grace: args.grace_period(),
        servers,
        reloader,
        kubernetes: sync,
        operator_task,
    })
}

/// Every component type daprd knows.
pub fn registry() -> Registry {
    let mut registry = Registry::builtin();
    secrets::kubernetes::register(&mut registry);
    registry
}

/// Kubernetes mode up to the component load: the first certificate from sentry, the operator
/// client and the app's Configuration.
async fn kubernetes_boot(
    args: &Args,
    identity: &identity::Identity,
    kept: &kubernetes::resources::KeptResources,
) -> Result<
    (
        daprs_api::crd::ConfigurationSpec,
        kubernetes::OperatorClient,
    ),
    Error,
> {
    if !args.resources_path.is_empty() {
        tracing::warn!(
            flag = "--resources-path",
            "ignored in kubernetes mode: components come from the operator"
        );
    }
    if std::env::var(daprs_api::names::ENV_NAMESPACE)
        .ok()
        .filter(|n| !n.is_empty())
        .is_none()
    {
        return Err(Error::Config(format!(
            "{} is not set: kubernetes mode needs the pod's namespace (the injector sets it)",
            daprs_api::names::ENV_NAMESPACE
        )));
    }
    // Dapr waits for the certificate before it talks to the operator (always mutual TLS).
    identity.ready().await;
    let client = kubernetes::OperatorClient::new(
        &kubernetes::OperatorTarget {
            address: args.control_plane_address.clone().unwrap_or_default(),
            control_plane_trust_domain: identity.control_plane_trust_domain().to_owned(),
            control_plane_namespace: identity.control_plane_namespace().to_owned(),
        },
        identity.anchors().clone(),
        (**identity.svid()).clone(),
        identity.namespace(),
    )?;
    // In Kubernetes --config names a Configuration; only the first is used, as in Dapr.
    let name = args
        .config
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (configuration, raw) = kubernetes::fetch_configuration(&client, &name).await?;
    kept.set_configuration(raw);
    tracing::info!(id = ?identity.spiffe_id(), configuration = %name, "connected to the operator");
    Ok((configuration, client))
}

/// Binds and serves the internal API (mutual TLS with an identity, h2c without) and announces
/// it to the name resolver; returns the address and the registry file to remove at the end.
async fn serve_internal(
    args: &Args,
    rt: &Arc<Runtime>,
    servers: &mut JoinSet<()>,
) -> Result<(SocketAddr, Option<std::path::PathBuf>), Error> {
    let ip = args
        .internal_grpc_listen_address
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let addr = SocketAddr::new(ip, args.internal_port());
    let listener = match bind("internal gRPC server", addr).await {
        Ok(listener) => listener,
        // The derived self-hosted port is taken (another daprd with the same app id, or any
        // program): any free port does, the registry announces it.
        Err(error)
            if args.internal_grpc_port.is_none_or(|p| p == 0)
                && args.mode == config::Mode::Standalone =>
        {
            tracing::warn!(%error, "the internal port derived from the app id is taken; using a free port");
            bind("internal gRPC server", SocketAddr::new(ip, 0)).await?
        }
        Err(error) => return Err(error),
    };
    let local = listener.local_addr().map_err(|source| Error::Bind {
        what: "internal gRPC server",
        addr,
        source,
    })?;
    // Paths other than the internal API's calls: gRPC proxying to our app, and Unimplemented.
    let fallback = tower::ServiceBuilder::new()
        .layer(drain::Layer(rt.in_flight.clone()))
        .layer(invoke::proxy::Layer::internal(rt.invoker.clone()))
        .service_fn(|request: ::http::Request<tonic::body::Body>| async move {
            let status = tonic::Status::unimplemented(format!(
                "{} is not a method of this server",
                request.uri().path()
            ));
            Ok::<_, std::convert::Infallible>(status.into_http())
        });
    let shared = Arc::new(invoke::serve::Shared {
        internal: invoke::server::Internal::new(rt.invoker.clone()),
        fallback: invoke::serve::Fallback::new(fallback),
        in_flight: rt.in_flight.clone(),
    });
    let stop = rt.clone();
    let stopped = move || {
        let stop = stop.clone();
        async move { stop.stopped().await }
    };
    match &rt.identity {
        Some(identity) => {
            let config = Arc::new(identity.server_config()?);
            let incoming = tokio_stream::StreamExt::map(
                daprs_api::tls::tls_incoming(listener, config),
                |accepted| {
                    accepted.map(|tls| {
                        let cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|certs| certs.first())
                            .map(|c| c.clone().into_owned());
                        (tls, cert)
                    })
                },
            );
            servers.spawn(invoke::serve::serve(incoming, shared, stopped));
        }
        None => {
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |accepted| {
                    accepted.map(|tcp| {
                        let _ = tcp.set_nodelay(true);
                        (tcp, None)
                    })
                },
            );
            servers.spawn(invoke::serve::serve(incoming, shared, stopped));
        }
    }
    // The announced address: a loopback listen address as given, else DAPR_HOST_IP or
    // 127.0.0.1 (self-hosted sidecars share one machine).
    let host = if ip.is_loopback() {
        ip.to_string()
    } else {
        std::env::var("DAPR_HOST_IP")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into())
    };
    let announced = if host.contains(':') {
        format!("[{host}]:{}", local.port())
    } else {
        format!("{host}:{}", local.port())
    };
    let registered = match rt.invoker.resolver.register(
        &rt.app_id,
        &rt.invoker.namespace,
        &announced,
    ) {
        Ok(file) => file,
        Err(error) => {
            tracing::warn!(%error, "failed to register in the name-resolution registry; other sidecars cannot find this one");
            None
        }
    };
    Ok((local, registered))
}

#[allow(clippy::type_complexity)] // the interceptor closure has no nameable type
fn tonic_service(
    rt: Arc<Runtime>,
    token: Option<String>,
) -> tonic::service::interceptor::InterceptedService<
    grpc::Server,
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
> {
    tonic::service::interceptor::InterceptedService::new(
        grpc::DaprApi::server(rt),
        grpc::token_interceptor(token),
    )
}

impl Running {
    /// Waits for a stop request, drains the servers within the grace period and closes the
    /// components.
    pub async fn wait(mut self) -> Result<(), Error> {
        self.runtime.stopped().await;
        tracing::info!(grace = ?self.grace, "shutting down");
        drop(self.reloader.take());
        if let Some(task) = self.operator_task.take() {
            task.abort();
        }
        if let Some(file) = self.registered.take() {
            invoke::resolve::unregister(&file);
        }
        // The listeners stop accepting at once. Requests in flight may finish within the grace
        // period; connections that stay open with nothing in flight (SDK clients keep theirs)
        // are closed once every request is done.
        let deadline = tokio::time::Instant::now() + self.grace;
        loop {
            let drained = self.runtime.in_flight.count() == 0;
            tokio::select! {
                next = self.servers.join_next() => {
                    if next.is_none() {
                        break;
                    }
                }
                _ = tokio::time::sleep(DRAIN_POLL), if drained => {
                    if self.runtime.in_flight.count() == 0 {
                        self.servers.abort_all();
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::ShutdownTimeout(self.grace));
                }
            }
        }
        let close = self.runtime.close_components();
        tokio::time::timeout_at(deadline, close)
            .await
            .map_err(|_| Error::ShutdownTimeout(self.grace))?;
        tracing::info!("daprd stopped");
        Ok(())
    }
}

/// Starts, stops on SIGTERM/SIGINT or the shutdown API, and waits.
pub async fn run(args: Args) -> Result<(), Error> {
    let running = start(args).await?;
    let rt = running.runtime.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received");
        rt.request_stop();
    });
    running.wait().await
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
