//! sentry: the daprs certificate authority.
//!
//! It issues SPIFFE workload certificates (SVIDs) to sidecars and control-plane services after a
//! validator has authenticated the caller, and keeps its own CA alive by rotating it.
//!
//! Module map: [`config`] (flags) → [`manager`] (CA lifecycle over a [`store`], [`rotation`])
//! → [`server`] (the gRPC service, using [`validator`]s, [`csr`] and [`ca`]) + health/metrics.

pub mod ca;
pub mod config;
pub mod csr;
pub mod manager;
pub mod metrics;
pub mod rotation;
pub mod server;
pub mod store;
pub mod validator;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::routing::get;
use daprs_api::names;
use daprs_api::proto::sentry::TokenValidator;
use daprs_api::proto::sentry::ca_server::CaServer;
use daprs_api::tls::SvidResolver;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Args, Mode, MtlsSettings};
use crate::manager::{CaManager, system_clock};
use crate::metrics::Metrics;
use crate::rotation::RotationPolicy;
use crate::server::{CaService, CurrentAuthority, IssuePolicy};
use crate::store::{CaStore, FileStore, KubeStore};
use crate::validator::{Insecure, Validator, Validators};

/// Attempts at reading the control plane's Configuration before giving up.
const CONFIGURATION_READ_ATTEMPTS: usize = 5;
/// Delay before retrying a CA that could not be loaded at start-up.
const STARTUP_RETRY: Duration = Duration::from_secs(2);

/// What stopped sentry.
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
    #[error(
        "failed to set up the Kubernetes client (in-cluster service account or KUBECONFIG): {0}"
    )]
    Kube(#[source] kube::Error),
    #[error("failed to read the Configuration {name}: {source}")]
    ReadConfiguration {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to build the TLS server configuration: {0}")]
    Tls(#[source] daprs_api::tls::TlsError),
    #[error("sentry's server task ended abnormally: {0}")]
    Crashed(String),
    #[error("the gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
}

/// A started sentry: where it listens, and how to stop it.
#[derive(Debug)]
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub healthz_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub current: CurrentAuthority,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), Error>>,
}

impl Running {
    /// Stops accepting, finishes in-flight requests and waits for the servers to end.
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.shutdown.send(true);
        self.task
            .await
            .unwrap_or_else(|e| Err(Error::Crashed(e.to_string())))
    }

    /// Waits until sentry ends by itself (it does not, short of an error or [`Running::stop`]).
    pub async fn wait(self) -> Result<(), Error> {
        self.task
            .await
            .unwrap_or_else(|e| Err(Error::Crashed(e.to_string())))
    }

    /// Asks sentry to stop without waiting.
    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

fn namespace(mode: Mode) -> Result<String, Error> {
    match (std::env::var(names::ENV_NAMESPACE).ok().filter(|n| !n.is_empty()), mode) {
        (Some(ns), _) => Ok(ns),
        (None, Mode::Standalone) => Ok(names::DEFAULT_NAMESPACE.into()),
        (None, Mode::Kubernetes) => Err(Error::Config(
            "NAMESPACE is not set: set it to sentry's namespace (the Helm chart sets it from metadata.namespace)".into(),
        )),
    }
}

async fn mtls_settings(
    args: &Args,
    client: Option<&kube::Client>,
    namespace: &str,
) -> Result<MtlsSettings, Error> {
    let settings = match client {
        Some(client) => {
            let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
                client.clone(),
                namespace,
                &validator::kubernetes::configuration_resource(),
            );
            let mut attempt = 0;
            let found = loop {
                attempt += 1;
                match api.get_opt(&args.config).await {
                    Ok(found) => break found,
                    // The Configuration CRD itself is not installed (yet).
                    Err(kube::Error::Api(status)) if status.code == 404 => break None,
                    Err(source) if attempt >= CONFIGURATION_READ_ATTEMPTS => {
                        return Err(Error::ReadConfiguration {
                            name: format!("{namespace}/{}", args.config),
                            source,
                        });
                    }
                    Err(error) => {
                        tracing::warn!(config = %args.config, %error, attempt, "could not read the Configuration; retrying");
                        tokio::time::sleep(STARTUP_RETRY).await;
                    }
                }
            };
            match found {
                Some(doc) => {
                    let value =
                        serde_json::to_value(doc).map_err(|e| Error::Config(e.to_string()))?;
                    MtlsSettings::from_configuration(&args.config, value)
                        .map_err(|e| Error::Config(e.to_string()))?
                }
                None => {
                    tracing::info!(config = %args.config, %namespace, "Configuration not found; using flags");
                    MtlsSettings::default()
                }
            }
        }
        None if Path::new(&args.config).is_file() => {
            MtlsSettings::from_file(Path::new(&args.config))
                .map_err(|e| Error::Config(e.to_string()))?
        }
        None => MtlsSettings::default(),
    };
    Ok(settings)
}

/// What sentry takes from its surroundings rather than its flags.
#[derive(Clone)]
pub struct Environment {
    /// sentry's namespace (env `NAMESPACE`).
    pub namespace: String,
    /// The API server client (kubernetes mode), with sentry's own credentials.
    pub client: Option<kube::Client>,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment")
            .field("namespace", &self.namespace)
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl Environment {
    /// `NAMESPACE` from the environment and, in kubernetes mode, the in-cluster or
    /// `KUBECONFIG` credentials.
    pub async fn from_process(mode: Mode) -> Result<Self, Error> {
        let namespace = namespace(mode)?;
        let client = match mode {
            Mode::Kubernetes => Some(kube::Client::try_default().await.map_err(Error::Kube)?),
            Mode::Standalone => None,
        };
        Ok(Self { namespace, client })
    }
}

/// Binds every port, then starts the CA and the servers in the background.
pub async fn start(args: Args) -> Result<Running, Error> {
    let environment = Environment::from_process(args.mode).await?;
    start_in(args, environment).await
}

/// [`start`] with an explicit environment (tests run sentry in-process with a given client).
pub async fn start_in(args: Args, environment: Environment) -> Result<Running, Error> {
    let Environment { namespace, client } = environment;
    if args.mode == Mode::Kubernetes && client.is_none() {
        return Err(Error::Config(
            "kubernetes mode needs an API server client".into(),
        ));
    }
    let settings = mtls_settings(&args, client.as_ref(), &namespace).await?;
    let workload_ttl = settings.workload_cert_ttl.unwrap_or(args.workload_cert_ttl);
    let skew = settings
        .allowed_clock_skew
        .unwrap_or(args.allowed_clock_skew);
    let rotation = (!args.ca_rotate_before.is_zero()).then_some(RotationPolicy {
        rotate_before: args.ca_rotate_before,
        propagation_delay: args.ca_propagation_delay,
        workload_ttl,
        skew,
    });
    if let Some(policy) = &rotation {
        policy
            .validate(args.ca_ttl)
            .map_err(|e| Error::Config(e.to_string()))?;
    }

    let sentry_id = names::sentry_audience(&args.trust_domain, &namespace);
    // kubernetes mode: `kubernetes` (the default) plus any configured validator. Standalone:
    // the configured validator, or `insecure` only when none is configured (as Dapr).
    let mut enabled: Vec<(TokenValidator, Box<dyn Validator>)> = Vec::new();
    if let Some(client) = &client {
        enabled.push((
            TokenValidator::Kubernetes,
            Box::new(validator::kubernetes::KubernetesValidator::new(
                client.clone(),
                &namespace,
                &args.trust_domain,
            )),
        ));
    }
    if let Some(source) = settings.jwks_source.as_ref().or(args.jwks_source.as_ref()) {
        let jwks = validator::jwks::JwksValidator::new(
            validator::jwks::JwksSource::parse(source),
            sentry_id.clone(),
        )
        .await
        .map_err(|e| Error::Config(format!("jwks validator: {e}")))?;
        enabled.push((TokenValidator::Jwks, Box::new(jwks)));
    }
    if enabled.is_empty() {
        enabled.push((TokenValidator::Insecure, Box::new(Insecure)));
    }
    let validators = Validators {
        default: enabled[0].0,
        enabled,
    };

    let store: Box<dyn CaStore> = match &client {
        Some(client) => Box::new(KubeStore::new(
            client.clone(),
            &namespace,
            args.credential_names(),
        )),
        None => Box::new(FileStore {
            dir: args.issuer_credentials.clone(),
            names: args.credential_names(),
        }),
    };
    let metrics = Arc::new(Metrics::default());
    let current = CurrentAuthority::default();
    let serving = SvidResolver::default();
    let manager = CaManager {
        store,
        trust_domain: args.trust_domain.clone(),
        namespace: namespace.clone(),
        algorithm: args.ca_key_algorithm,
        ca_ttl: args.ca_ttl,
        rotation,
        workload_ttl,
        skew,
        current: current.clone(),
        serving: serving.clone(),
        metrics: metrics.clone(),
        clock: system_clock(),
        last_expiry_warning: Default::default(),
        serving_issued: Default::default(),
    };
    let service = CaService {
        authority: current.clone(),
        validators,
        policy: IssuePolicy {
            workload_ttl,
            skew,
            control_plane_namespace: namespace.clone(),
            control_plane_trust_domain: args.trust_domain.clone(),
            cluster_domain: args.cluster_domain.clone(),
        },
        metrics: metrics.clone(),
    };

    let grpc = bind(
        "the CA gRPC server",
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
    let grpc_addr = grpc.local_addr().map_err(|source| Error::Bind {
        what: "gRPC",
        addr: SocketAddr::new(args.listen_address, args.port),
        source,
    })?;
    let healthz_addr = healthz.local_addr().map_err(|source| Error::Bind {
        what: "/healthz",
        addr: SocketAddr::new(args.healthz_listen_address, args.healthz_port),
        source,
    })?;
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    tracing::info!(
        mode = ?args.mode,
        %namespace,
        trust_domain = %args.trust_domain,
        validators = ?service.validators,
        workload_cert_ttl = ?workload_ttl,
        allowed_clock_skew = ?skew,
        %grpc_addr,
        "sentry starting"
    );

    let (shutdown, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(AtomicBool::new(false));
    let watch_dir = (args.mode == Mode::Standalone).then(|| args.issuer_credentials.clone());
    let task = tokio::spawn(serve(
        manager,
        service,
        Servers {
            grpc,
            healthz,
            metrics: metrics_listener,
        },
        ServeContext {
            serving,
            metrics,
            ready,
            reload_interval: args.ca_reload_interval,
            watch_dir,
        },
        shutdown_rx,
    ));
    Ok(Running {
        grpc_addr,
        healthz_addr,
        metrics_addr,
        current,
        shutdown,
        task,
    })
}

struct Servers {
    grpc: TcpListener,
    healthz: TcpListener,
    metrics: Option<TcpListener>,
}

struct ServeContext {
    serving: SvidResolver,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    reload_interval: Duration,
    watch_dir: Option<std::path::PathBuf>,
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn serve(
    manager: CaManager,
    service: CaService,
    servers: Servers,
    ctx: ServeContext,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    // Health first, so probes see "not ready" rather than a refused connection.
    let ready = ctx.ready.clone();
    let health = axum::Router::new().route(
        "/healthz",
        get(move || {
            let ready = ready.load(Ordering::SeqCst);
            async move {
                if ready {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        "waiting for the CA",
                    )
                }
            }
        }),
    );
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(servers.healthz, health)
            .with_graceful_shutdown(wait_for(stop))
            .await;
    });
    if let Some(listener) = servers.metrics {
        let registry = Arc::new(ctx.metrics.register());
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
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(wait_for(stop))
                .await;
        });
    }

    // The CA must load before sentry is ready; keep trying with a clear message.
    loop {
        match manager.reconcile().await {
            Ok(_) => break,
            Err(error) => {
                tracing::error!(%error, "failed to load the CA; retrying");
                tokio::select! {
                    () = tokio::time::sleep(STARTUP_RETRY) => {}
                    () = wait_for(shutdown.clone()) => return Ok(()),
                }
            }
        }
    }

    let tls = daprs_api::tls::server_config(ctx.serving.clone(), None).map_err(Error::Tls)?;
    let incoming = daprs_api::tls::tls_incoming(servers.grpc, Arc::new(tls));
    let grpc = tonic::transport::Server::builder()
        .add_service(CaServer::new(service))
        .serve_with_incoming_shutdown(incoming, wait_for(shutdown.clone()));
    ctx.ready.store(true, Ordering::SeqCst);
    tracing::info!("sentry is ready");

    let reload = reload_loop(
        manager,
        ctx.reload_interval,
        ctx.watch_dir,
        shutdown.clone(),
    );
    let (served, ()) = tokio::join!(grpc, reload);
    ctx.ready.store(false, Ordering::SeqCst);
    served.map_err(Error::Serve)
}

/// Reconciles the CA every `interval`, at once when the credentials folder changes, and
/// renews sentry's own certificate at half its life.
async fn reload_loop(
    manager: CaManager,
    interval: Duration,
    watch_dir: Option<std::path::PathBuf>,
    shutdown: watch::Receiver<bool>,
) {
    let (tx, mut changes) = tokio::sync::mpsc::channel::<()>(1);
    let _watcher = watch_dir.and_then(|dir| {
        use notify::Watcher;
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.try_send(());
            }
        })
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the credentials folder; polling only"))
        .ok()?;
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the credentials folder; polling only"))
            .ok()?;
        Some(watcher)
    });
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            Some(()) = changes.recv() => {
                // Let a burst of file events settle (a Secret volume update is several).
                tokio::time::sleep(Duration::from_millis(200)).await;
                while changes.try_recv().is_ok() {}
            }
            () = wait_for(shutdown.clone()) => return,
        }
        match manager.reconcile().await {
            Ok(_) => {}
            // Keep signing with the CA already loaded; the error says what to fix.
            Err(error) => {
                tracing::error!(%error, "failed to reload the CA; still using the loaded one")
            }
        }
        let now = (manager.clock)();
        if manager.serving_renewal_due(now)
            && let Some(authority) = manager.current.get()
            && let Err(error) = manager.issue_serving_certificate(&authority, now)
        {
            tracing::error!(%error, "failed to renew sentry's own certificate");
        }
    }
}

/// Runs sentry until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> Result<(), Error> {
    let running = start(args).await?;
    let stopper = running.shutdown.clone();
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
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
