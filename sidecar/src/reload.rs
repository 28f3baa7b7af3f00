//! Hot reload without a gap: when a resources file changes, the changed components are built,
//! initialised and health-checked beside the live ones, then the whole table is swapped in one
//! step. A component that fails keeps its old instance; removed components go away. Replaced
//! instances are closed only after [`CLOSE_DELAY`], so in-flight requests finish on them.

use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::components::manifest::{Scope, load_components};
use crate::components::{Instance, Manifest};
use crate::runtime::Runtime;

/// Quiet time after the last file event before reconciling (editors write in bursts).
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// How long a replaced instance stays open for requests that already hold it.
pub const CLOSE_DELAY: Duration = Duration::from_secs(5);
/// Time limit of the health check of a new instance.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// What one reconcile did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub added: Vec<String>,
    pub replaced: Vec<String>,
    pub removed: Vec<String>,
    /// `(component, error)`: these kept their previous instance (or stayed absent).
    pub failed: Vec<(String, String)>,
}

/// The running file watcher; dropping it stops hot reload.
pub struct Watcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    pub fn start(rt: Arc<Runtime>) -> Result<Self, notify::Error> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })?;
        for dir in &rt.resources_path {
            watcher.watch(dir, RecursiveMode::NonRecursive)?;
        }
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                // Debounce: wait until the directory has been quiet for a moment.
                loop {
                    match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                        Ok(Some(())) => continue,
                        Ok(None) => return,
                        Err(_) => break,
                    }
                }
                let outcome = reconcile(&rt).await;
                tracing::info!(
                    added = ?outcome.added,
                    replaced = ?outcome.replaced,
                    removed = ?outcome.removed,
                    failed = outcome.failed.len(),
                    "components reloaded"
                );
            }
        });
        Ok(Watcher {
            _watcher: watcher,
            task,
        })
    }
}

async fn health_check(instance: &Instance) -> Result<(), String> {
    match instance {
        Instance::State(store) => match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("health check failed: {e}")),
            Err(_) => Err(format!("health check timed out after {PING_TIMEOUT:?}")),
        },
        Instance::Secrets(_) => Ok(()),
    }
}

/// Re-reads the resources paths and swaps in what changed.
pub async fn reconcile(rt: &Runtime) -> Outcome {
    let mut outcome = Outcome::default();
    let manifests = match load_components(
        &rt.resources_path,
        &Scope {
            app_id: &rt.app_id,
            namespace: rt.namespace.as_deref(),
        },
    ) {
        Ok(m) => m,
        Err(error) => {
            tracing::warn!(%error, "reload refused; keeping the current components");
            rt.metrics.inc(
                "daprs_runtime_component_reload_total",
                &[("component", &error.component), ("success", "false")],
            );
            outcome
                .failed
                .push((error.component.clone(), error.to_string()));
            return outcome;
        }
    };
    apply(rt, manifests, &[]).await
}

/// Makes `manifests` the component set: new and changed components are built and
/// health-checked beside the live ones, components absent from `manifests` are removed
/// (except those named in `keep`), unchanged ones are left alone; then the table is swapped
/// in one step. Used by the file watcher and by kubernetes mode's operator streams.
pub async fn apply(rt: &Runtime, manifests: Vec<Manifest>, keep: &[&str]) -> Outcome {
    let mut outcome = Outcome::default();
    let current = rt.table.snapshot();
    let mut next = (*current).clone();
    let wanted: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    for old in current.manifests() {
        if !wanted.contains(&old.name.as_str()) && !keep.contains(&old.name.as_str()) {
            next.state.remove(&old.name);
            next.secrets.remove(&old.name);
            outcome.removed.push(old.name.clone());
        }
    }
    let (secrets, others): (Vec<Manifest>, Vec<Manifest>) = manifests
        .into_iter()
        .partition(|m| m.type_().starts_with("secretstores."));
    for manifest in secrets.into_iter().chain(others) {
        let previous = current.manifest(&manifest.name);
        if previous.is_some_and(|p| p.fields == manifest.fields) {
            continue;
        }
        let name = manifest.name.clone();
        let built = match rt.registry.build(&manifest, &next, &rt.app_id).await {
            Ok((instance, prefix)) => match health_check(&instance).await {
                Ok(()) => Ok((instance, prefix)),
                Err(e) => Err(manifest.error(e).to_string()),
            },
            Err(e) => Err(e.to_string()),
        };
        match built {
            Ok((instance, prefix)) => {
                if previous.is_some() {
                    outcome.replaced.push(name.clone());
                } else {
                    outcome.added.push(name.clone());
                }
                next.insert(Arc::new(manifest), instance, prefix);
                rt.metrics.inc(
                    "daprs_runtime_component_reload_total",
                    &[("component", &name), ("success", "true")],
                );
            }
            Err(error) => {
                tracing::warn!(component = %name, %error, "reload of a component failed; keeping the previous one");
                rt.metrics.inc(
                    "daprs_runtime_component_reload_total",
                    &[("component", &name), ("success", "false")],
                );
                outcome.failed.push((name, error));
            }
        }
    }
    rt.metrics.set_gauge(
        "dapr_runtime_component_loaded",
        &[],
        (next.state.len() + next.secrets.len()) as f64,
    );
    let old = rt.table.swap(next);
    // Close instances that are no longer in the table, once in-flight requests are done.
    let live = rt.table.snapshot();
    let retired: Vec<_> = old
        .state
        .iter()
        .filter(|(name, c)| {
            live.state
                .get(*name)
                .is_none_or(|now| !Arc::ptr_eq(&now.store, &c.store))
        })
        .map(|(_, c)| c.store.clone())
        .collect();
    if !retired.is_empty() {
        tokio::spawn(async move {
            tokio::time::sleep(CLOSE_DELAY).await;
            for store in retired {
                store.close().await;
            }
        });
    }
    outcome
}
