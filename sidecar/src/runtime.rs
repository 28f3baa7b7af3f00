//! The sidecar's shared state: identity, the live component table, readiness, extended
//! metadata, the shutdown trigger; and the start-up load of components.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use daprs_api::crd::ConfigurationSpec;
use daprs_api::crd::configuration::SecretsScope;
use tokio::sync::watch;

use crate::components::registry::Registry;
use crate::components::{ComponentError, Components, Manifest, Table};
use crate::metrics::Metrics;

/// The runtime version reported by the metadata API.
pub const RUNTIME_VERSION: &str = concat!("daprs-", env!("CARGO_PKG_VERSION"));

/// How daprd reaches the app (shown by the metadata API).
#[derive(Debug, Clone, Default)]
pub struct AppConnection {
    pub port: Option<u16>,
    pub protocol: String,
    pub channel_address: String,
    pub max_concurrency: i64,
    pub health_check: Option<AppHealth>,
}

#[derive(Debug, Clone)]
pub struct AppHealth {
    pub path: String,
    pub interval_seconds: u64,
    pub timeout_ms: u64,
    pub threshold: u32,
}

/// Why the process is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Running,
    Graceful,
}

/// Everything the API handlers share.
pub struct Runtime {
    pub app_id: String,
    /// `NAMESPACE`, when set.
    pub namespace: Option<String>,
    pub table: Table,
    pub registry: Registry,
    pub configuration: ConfigurationSpec,
    pub metrics: Arc<Metrics>,
    /// The workload identity, when mTLS is on or in kubernetes mode.
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Service invocation (caller side, internal server, app channel).
    pub invoker: Arc<crate::invoke::Invoker>,
    pub app: AppConnection,
    pub resources_path: Vec<PathBuf>,
    /// `DAPR_API_TOKEN`, when set.
    pub api_token: Option<String>,
    pub max_body_bytes: usize,
    /// Requests being handled by the API servers.
    pub in_flight: crate::drain::InFlight,
    extended: Mutex<BTreeMap<String, String>>,
    ready: AtomicBool,
    outbound_ready: AtomicBool,
    stop: watch::Sender<Stop>,
}

/// What [`Runtime::new`] needs.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub app_id: String,
    pub namespace: Option<String>,
    pub configuration: ConfigurationSpec,
    pub app: AppConnection,
    pub resources_path: Vec<PathBuf>,
    pub api_token: Option<String>,
    pub max_body_bytes: usize,
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Name resolution and the app channel of service invocation.
    pub invocation: crate::invoke::InvokeSettings,
    /// Metrics shared with tasks started before the runtime (the identity).
    pub metrics: Option<Arc<Metrics>>,
}

impl Runtime {
    pub fn new(settings: Settings, registry: Registry) -> Arc<Self> {
        let (stop, _) = watch::channel(Stop::Running);
        let metrics = settings
            .metrics
            .unwrap_or_else(|| Arc::new(Metrics::new(&settings.app_id)));
        let invoker = Arc::new(crate::invoke::Invoker::new(
            settings.app_id.clone(),
            settings
                .namespace
                .clone()
                .unwrap_or_else(|| daprs_api::names::DEFAULT_NAMESPACE.to_owned()),
            settings.invocation,
            crate::invoke::acl::Acl::new(settings.configuration.access_control.clone()),
            settings.identity.clone(),
            metrics.clone(),
        ));
        Arc::new(Runtime {
            metrics,
            invoker,
            identity: settings.identity,
            app_id: settings.app_id,
            namespace: settings.namespace,
            table: Table::default(),
            registry,
            configuration: settings.configuration,
            app: settings.app,
            resources_path: settings.resources_path,
            api_token: settings.api_token,
            max_body_bytes: settings.max_body_bytes,
            in_flight: crate::drain::InFlight::default(),
            extended: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(false),
            outbound_ready: AtomicBool::new(false),
            stop,
        })
    }

    pub fn secret_scopes(&self) -> &[SecretsScope] {
        self.configuration
            .secrets
            .as_ref()
            .map(|s| s.scopes.as_slice())
            .unwrap_or_default()
    }

    /// Ready: started, and holding a certificate when one is needed.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst) && self.identity.as_ref().is_none_or(|i| i.is_ready())
    }

    pub fn is_outbound_ready(&self) -> bool {
        self.outbound_ready.load(Ordering::SeqCst)
    }

    /// Marks the outbound APIs usable (components loaded, API servers listening) and, with no
    /// app to wait for in this part, the whole sidecar ready.
    pub fn set_ready(&self) {
        self.outbound_ready.store(true, Ordering::SeqCst);
        self.ready.store(true, Ordering::SeqCst);
    }

    pub fn set_extended(&self, key: String, value: String) {
        self.extended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }

    pub fn extended(&self) -> BTreeMap<String, String> {
        self.extended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Starts a graceful shutdown (idempotent).
    pub fn request_stop(&self) {
        self.stop.send_replace(Stop::Graceful);
    }

    /// Resolves when a shutdown was requested.
    pub async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s != Stop::Running).await;
    }

    /// Builds every manifest (secret stores first, so `secretKeyRef`s resolve) and installs the
    /// set. A failure stops start-up unless the component has `ignoreErrors`.
    pub async fn load(&self, manifests: Vec<Manifest>) -> Result<(), ComponentError> {
        self.load_reporting(manifests, &mut Vec::new()).await
    }

    /// [`Runtime::load`], recording each component's result in `results` (name, error) in
    /// load order, so a caller can report them (kubernetes mode tells the operator) even when
    /// the load fails as a whole.
    pub async fn load_reporting(
        &self,
        manifests: Vec<Manifest>,
        results: &mut Vec<(String, Result<(), String>)>,
    ) -> Result<(), ComponentError> {
        for m in &manifests {
            if let Err(error) = self.registry.knows(m) {
                results.push((m.name.clone(), Err(error.to_string())));
                if !m.fields.spec.ignore_errors {
                    return Err(error);
                }
            }
        }
        let manifests: Vec<Manifest> = manifests
            .into_iter()
            .filter(|m| self.registry.knows(m).is_ok())
            .collect();
        let (secrets, others): (Vec<_>, Vec<_>) = manifests
            .into_iter()
            .partition(|m| m.type_().starts_with("secretstores."));
        let mut loaded = Components::default();
        for manifest in secrets.into_iter().chain(others) {
            let started = Instant::now();
            match self.registry.build(&manifest, &loaded, &self.app_id).await {
                Ok((instance, prefix)) => {
                    self.metrics.inc(
                        "dapr_runtime_component_init_total",
                        &[("type", manifest.type_())],
                    );
                    tracing::info!(
                        component = %manifest.name,
                        r#type = manifest.type_(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "component loaded"
                    );
                    results.push((manifest.name.clone(), Ok(())));
                    loaded.insert(Arc::new(manifest), instance, prefix);
                }
                Err(error) => {
                    results.push((manifest.name.clone(), Err(error.to_string())));
                    self.metrics.inc(
                        "dapr_runtime_component_init_fail_total",
                        &[("type", manifest.type_()), ("reason", "init")],
                    );
                    if manifest.fields.spec.ignore_errors {
                        tracing::warn!(%error, "component failed to load; ignoring it (ignoreErrors)");
                    } else {
                        return Err(error);
                    }
                }
            }
        }
        self.metrics.set_gauge(
            "dapr_runtime_component_loaded",
            &[],
            (loaded.state.len() + loaded.secrets.len()) as f64,
        );
        self.table.swap(loaded);
        Ok(())
    }

    /// Closes every component (at shutdown).
    pub async fn close_components(&self) {
        let components = self.table.swap(Components::default());
        for c in components.state.values() {
            c.store.close().await;
        }
    }
}
