//! Component status, which Dapr lacks: sidecars report each component's load result through
//! the `ResourceStatus.ReportResources` RPC (daprs' addition to the operator API); the
//! receiving replica records it as the app's entry in `.status.apps` (server-side apply with
//! a field manager per app id, so replicas and apps never overwrite each other); the leader
//! folds the entries of the current generation into `Ready`, `loaded` and `failed`, which
//! `kubectl get components` prints.

use std::sync::Arc;
use std::time::Duration;

use daprs_api::crd::component::{APP_FAILED, APP_LOADED};
use daprs_api::crd::{AppLoadStatus, Component, Condition};
use daprs_api::proto::operator::resource_status_server::ResourceStatus;
use daprs_api::proto::operator::{
    EventType, ReportResourcesRequest, ReportResourcesResponse, ResourceConditionStatus,
    ResourceResult, ResourceType,
};
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::service::FIELD_MANAGER;

/// The most results one report may carry.
pub const MAX_RESULTS_PER_REPORT: usize = 256;
/// When to retry a failed status write.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(10);

/// Where app entries are written.
#[async_trait::async_trait]
pub trait StatusWriter: Send + Sync + 'static {
    /// Sets (`Some`) or removes (`None`) `app_id`'s entry in the status of Component `name`.
    async fn record(
        &self,
        namespace: &str,
        name: &str,
        app_id: &str,
        entry: Option<AppLoadStatus>,
    ) -> Result<(), String>;
}

/// The field manager of one app's entries.
pub fn app_field_manager(app_id: &str) -> String {
    format!("{FIELD_MANAGER}/app/{app_id}")
}

/// Writes entries with server-side apply on the status subresource.
#[derive(Clone)]
pub struct KubeStatusWriter {
    pub client: kube::Client,
}

#[async_trait::async_trait]
impl StatusWriter for KubeStatusWriter {
    async fn record(
        &self,
        namespace: &str,
        name: &str,
        app_id: &str,
        entry: Option<AppLoadStatus>,
    ) -> Result<(), String> {
        let api: Api<Component> = Api::namespaced(self.client.clone(), namespace);
        let patch = json!({
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": name},
            "status": {"apps": entry.into_iter().collect::<Vec<_>>()},
        });
        api.patch_status(
            name,
            &PatchParams::apply(&app_field_manager(app_id)).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 404 => {
                format!("Component {namespace}/{name} does not exist")
            }
            other => {
                format!("failed to record the status of Component {namespace}/{name}: {other}")
            }
        })
    }
}

/// The entry a result becomes: `None` removes the app's entry (the sidecar closed it).
pub fn entry_for(
    app_id: &str,
    result: &ResourceResult,
    now: &str,
) -> Result<Option<AppLoadStatus>, String> {
    if result.resource_type != ResourceType::ResourceComponent as i32 {
        return Err(format!(
            "{:?}: only component results are recorded",
            result.name
        ));
    }
    if result.name.is_empty() {
        return Err("a result without a resource name".into());
    }
    if result.event_type == EventType::EventClose as i32 {
        return Ok(None);
    }
    let state = match ResourceConditionStatus::try_from(result.condition) {
        Ok(ResourceConditionStatus::StatusSuccess) => APP_LOADED,
        Ok(ResourceConditionStatus::StatusFailure) => APP_FAILED,
        _ => {
            return Err(format!(
                "{:?}: the condition must be success or failure",
                result.name
            ));
        }
    };
    Ok(Some(AppLoadStatus {
        app_id: app_id.into(),
        state: state.into(),
        reason: result.reason.clone().unwrap_or_default(),
        message: result.message.clone().unwrap_or_default(),
        observed_generation: result.observed_generation,
        last_report_time: Some(now.into()),
    }))
}

/// The `ResourceStatus` gRPC service.
pub struct StatusApi {
    pub writer: Arc<dyn StatusWriter>,
    pub metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl ResourceStatus for StatusApi {
    async fn report_resources(
        &self,
        request: Request<ReportResourcesRequest>,
    ) -> Result<Response<ReportResourcesResponse>, Status> {
        let id = crate::api::caller(&request)?;
        let ReportResourcesRequest { namespace, results } = request.into_inner();
        crate::api::authorize(&id, &namespace)?;
        if results.len() > MAX_RESULTS_PER_REPORT {
            return Err(Status::invalid_argument(format!(
                "{} results in one report; send at most {MAX_RESULTS_PER_REPORT}",
                results.len()
            )));
        }
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut rejected = Vec::new();
        for result in &results {
            let outcome = match entry_for(id.app_id(), result, &now) {
                Ok(entry) => {
                    self.writer
                        .record(&namespace, &result.name, id.app_id(), entry)
                        .await
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => Metrics::count(&self.metrics.status_reports, "recorded"),
                Err(reason) => {
                    Metrics::count(&self.metrics.status_reports, "rejected");
                    rejected.push(reason);
                }
            }
        }
        Ok(Response::new(ReportResourcesResponse { rejected }))
    }
}

/// The aggregate the leader writes: conditions, counts and observedGeneration.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    pub ready: Condition,
    pub loaded: i32,
    pub failed: i32,
    pub observed_generation: Option<i64>,
}

/// Folds the app entries of the current generation into `Ready` (pure). `now` is used only
/// when the condition's status changes.
pub fn aggregate(component: &Component, now: &str) -> Aggregate {
    let generation = component.metadata.generation;
    let status = component.status.clone().unwrap_or_default();
    let current: Vec<&AppLoadStatus> = status
        .apps
        .iter()
        .filter(|a| generation.is_none_or(|g| a.observed_generation == g))
        .collect();
    let failed: Vec<&&AppLoadStatus> = current.iter().filter(|a| a.state == APP_FAILED).collect();
    let loaded = current.iter().filter(|a| a.state == APP_LOADED).count();
    let (state, reason, message) = if !failed.is_empty() {
        let detail: Vec<String> = failed
            .iter()
            .map(|a| {
                format!(
                    "{}: {}",
                    a.app_id,
                    if a.message.is_empty() {
                        &a.reason
                    } else {
                        &a.message
                    }
                )
            })
            .collect();
        (
            "False",
            "LoadFailed",
            format!("failed to load in {}", detail.join("; ")),
        )
    } else if loaded > 0 {
        ("True", "Loaded", format!("loaded by {loaded} app(s)"))
    } else {
        (
            "Unknown",
            "NoReports",
            "no sidecar has reported on this generation yet".to_owned(),
        )
    };
    let previous = status.conditions.iter().find(|c| c.type_ == "Ready");
    let last_transition_time = match previous {
        Some(p) if p.status == state => p.last_transition_time.clone(),
        _ => Some(now.to_owned()),
    };
    Aggregate {
        ready: Condition {
            type_: "Ready".into(),
            status: state.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: generation,
        },
        loaded: loaded as i32,
        failed: failed.len() as i32,
        observed_generation: generation,
    }
}

fn unchanged(component: &Component, aggregate: &Aggregate) -> bool {
    let Some(status) = component.status.as_ref() else {
        return false;
    };
    status.conditions.contains(&aggregate.ready)
        && status.loaded == Some(aggregate.loaded)
        && status.failed == Some(aggregate.failed)
        && status.observed_generation == aggregate.observed_generation
}

/// Writes the aggregate of one Component when it changed.
pub async fn reconcile(
    component: Arc<Component>,
    client: Arc<kube::Client>,
) -> Result<Action, kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let aggregate = aggregate(&component, &now);
    if unchanged(&component, &aggregate) {
        return Ok(Action::await_change());
    }
    let api: Api<Component> = Api::namespaced(
        (*client).clone(),
        &component.namespace().unwrap_or_default(),
    );
    let patch = json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": component.name_any()},
        "status": {
            "conditions": [aggregate.ready],
            "loaded": aggregate.loaded,
            "failed": aggregate.failed,
            "observedGeneration": aggregate.observed_generation,
        },
    });
    api.patch_status(
        &component.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(Action::await_change())
}

/// Runs the aggregation until `stop` (leader only).
pub async fn run(
    client: kube::Client,
    namespace: Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let api: Api<Component> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut stop_signal = stop.clone();
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(async move { crate::api::stopped(&mut stop_signal).await })
        .run(
            reconcile,
            |_, error, _| {
                tracing::warn!(%error, "failed to write a Component's status; retrying");
                Action::requeue(ERROR_REQUEUE)
            },
            Arc::new(client),
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component(generation: i64, apps: serde_json::Value) -> Component {
        serde_json::from_value(json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "c", "namespace": "ns", "generation": generation},
            "spec": {"type": "state.redis", "version": "v1", "metadata": []},
            "status": {"apps": apps}
        }))
        .unwrap()
    }

    #[test]
    fn ready_reflects_the_current_generation_only() {
        let c = component(
            2,
            json!([
                {"appId": "a", "state": "Loaded", "observedGeneration": 2},
                {"appId": "b", "state": "Loaded", "observedGeneration": 2},
                {"appId": "old", "state": "Failed", "observedGeneration": 1, "message": "stale"}
            ]),
        );
        let agg = aggregate(&c, "t1");
        assert_eq!(
            (agg.ready.status.as_str(), agg.ready.reason.as_str()),
            ("True", "Loaded")
        );
        assert_eq!((agg.loaded, agg.failed), (2, 0));
        assert_eq!(agg.ready.observed_generation, Some(2));
        assert_eq!(agg.ready.last_transition_time.as_deref(), Some("t1"));
    }

    #[test]
    fn one_failure_makes_it_not_ready_and_says_where_and_why() {
        let c = component(
            1,
            json!([
                {"appId": "a", "state": "Loaded", "observedGeneration": 1},
                {"appId": "b", "state": "Failed", "observedGeneration": 1, "reason": "InitFailed", "message": "dial tcp redis:6379: connection refused"}
            ]),
        );
        let agg = aggregate(&c, "t");
        assert_eq!(agg.ready.status, "False");
        assert!(
            agg.ready.message.contains("b: dial tcp redis:6379"),
            "{}",
            agg.ready.message
        );
        assert_eq!((agg.loaded, agg.failed), (1, 1));
    }

    #[test]
    fn without_reports_it_is_unknown_and_transition_times_are_kept() {
        let mut c = component(3, json!([]));
        let agg = aggregate(&c, "t1");
        assert_eq!(agg.ready.status, "Unknown");
        c.status.as_mut().unwrap().conditions = vec![agg.ready.clone()];
        c.status.as_mut().unwrap().loaded = Some(0);
        c.status.as_mut().unwrap().failed = Some(0);
        c.status.as_mut().unwrap().observed_generation = Some(3);
        let again = aggregate(&c, "t2");
        assert_eq!(again.ready.last_transition_time.as_deref(), Some("t1"));
        assert!(unchanged(&c, &again), "no write when nothing changed");
    }

    #[test]
    fn results_become_entries_and_bad_results_are_refused() {
        let ok = ResourceResult {
            resource_type: ResourceType::ResourceComponent as i32,
            event_type: EventType::EventInit as i32,
            name: "statestore".into(),
            condition: ResourceConditionStatus::StatusFailure as i32,
            reason: Some("InitFailed".into()),
            message: Some("boom".into()),
            observed_generation: 4,
            last_transaction_time: None,
        };
        let entry = entry_for("orders", &ok, "now").unwrap().unwrap();
        assert_eq!(
            (
                entry.app_id.as_str(),
                entry.state.as_str(),
                entry.observed_generation
            ),
            ("orders", "Failed", 4)
        );
        let closed = ResourceResult {
            event_type: EventType::EventClose as i32,
            ..ok.clone()
        };
        assert_eq!(entry_for("orders", &closed, "now").unwrap(), None);
        let unknown = ResourceResult {
            condition: 0,
            ..ok.clone()
        };
        assert!(
            entry_for("orders", &unknown, "now")
                .unwrap_err()
                .contains("success or failure")
        );
        let other = ResourceResult {
            resource_type: 0,
            ..ok
        };
        assert!(entry_for("orders", &other, "now").is_err());
        assert_eq!(app_field_manager("orders"), "daprs-operator/app/orders");
    }
}
