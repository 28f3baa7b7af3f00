//! The `<app-id>-dapr` headless Service of every Deployment and StatefulSet whose pod
//! template has `dapr.io/enabled`: the name and ports other sidecars dial (a wire contract),
//! computed by the pure [`desired`] and written with server-side apply, owned by the workload
//! (so it goes when the workload goes; like Dapr, never when the annotation is removed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::metrics::Metrics;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "daprs-operator";
/// When to look again at a workload whose annotations are wrong.
pub const INVALID_REQUEUE: Duration = Duration::from_secs(300);
/// When to retry after an API error.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(10);

// The annotations the Service is derived from, shared with the injector.
use daprs_api::annotations::{
    APP_ID as ANNOTATION_APP_ID, ENABLE_METRICS as ANNOTATION_ENABLE_METRICS,
    ENABLED as ANNOTATION_ENABLED, GRPC_PORT as ANNOTATION_GRPC_PORT,
    INTERNAL_GRPC_PORT as ANNOTATION_INTERNAL_GRPC_PORT, METRICS_PORT as ANNOTATION_METRICS_PORT,
    SIDECAR_SVC_ANNOTATIONS as ANNOTATION_SIDECAR_SVC_ANNOTATIONS,
};

/// What the Service is derived from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Workload {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// `spec.selector.matchLabels`.
    pub selector: BTreeMap<String, String>,
    /// The pod template's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Why no Service can be computed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    #[error(
        "{kind} {namespace}/{name} has dapr.io/enabled but no dapr.io/app-id in its pod template: add the app id"
    )]
    MissingAppId {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error(
        "{kind} {namespace}/{name}: app id {app_id:?} cannot name a Service ({reason}); use at most 58 lowercase letters, digits and '-', starting with a letter"
    )]
    InvalidAppId {
        kind: String,
        namespace: String,
        name: String,
        app_id: String,
        reason: &'static str,
    },
    #[error("{kind} {namespace}/{name}: {annotation}={value:?} is not a port (1-65535)")]
    InvalidPort {
        kind: String,
        namespace: String,
        name: String,
        annotation: &'static str,
        value: String,
    },
}

/// Dapr's truthy values.
pub fn truthy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "y" | "yes" | "true" | "t" | "on" | "1"
    )
}

fn falsy(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "n" | "no" | "false" | "f" | "off" | "0"
    )
}

/// The Service for `workload`, or `None` when Dapr is not enabled on it.
pub fn desired(workload: &Workload, mtls_enabled: bool) -> Result<Option<Service>, DesiredError> {
    let annotations = &workload.annotations;
    if !annotations
        .get(ANNOTATION_ENABLED)
        .is_some_and(|v| truthy(v))
    {
        return Ok(None);
    }
    let app_id = annotations
        .get(ANNOTATION_APP_ID)
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| DesiredError::MissingAppId {
            kind: workload.kind.clone(),
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        })?;
    let invalid = |reason| DesiredError::InvalidAppId {
        kind: workload.kind.clone(),
        namespace: workload.namespace.clone(),
        name: workload.name.clone(),
        app_id: app_id.to_owned(),
        reason,
    };
    let service_name = format!("{app_id}-dapr");
    if service_name.len() > 63 {
        return Err(invalid("too long"));
    }
    if !app_id.starts_with(|c: char| c.is_ascii_lowercase())
        || !app_id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(invalid("not a DNS label"));
    }
    let port = |annotation: &'static str, default: u16| -> Result<i32, DesiredError> {
        match annotations.get(annotation) {
            None => Ok(i32::from(default)),
            Some(value) => value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .map(i32::from)
                .ok_or_else(|| DesiredError::InvalidPort {
                    kind: workload.kind.clone(),
                    namespace: workload.namespace.clone(),
                    name: workload.name.clone(),
                    annotation,
                    value: value.clone(),
                }),
        }
    };
    let grpc = port(ANNOTATION_GRPC_PORT, 50001)?;
    let internal = port(ANNOTATION_INTERNAL_GRPC_PORT, 50002)?;
    let metrics = port(ANNOTATION_METRICS_PORT, 9090)?;
    let metrics_enabled = !annotations
        .get(ANNOTATION_ENABLE_METRICS)
        .is_some_and(|v| falsy(v));

    let mut service_annotations = BTreeMap::new();
    if let Some(extra) = annotations.get(ANNOTATION_SIDECAR_SVC_ANNOTATIONS) {
        for pair in extra.split(',') {
            if let Some((k, v)) = pair.split_once('=') {
                service_annotations.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    // Reserved keys are ours, whatever the user pairs say.
    service_annotations.retain(|k, _| !k.starts_with("prometheus.io/") && k != ANNOTATION_APP_ID);
    service_annotations.insert(ANNOTATION_APP_ID.into(), app_id.into());
    if metrics_enabled {
        for (k, v) in [
            ("prometheus.io/probe", "true".to_owned()),
            ("prometheus.io/scrape", "true".to_owned()),
            ("prometheus.io/port", metrics.to_string()),
            ("prometheus.io/path", "/".to_owned()),
        ] {
            service_annotations.insert(k.into(), v);
        }
    }
    let service_port = |name: &str, port: i32, target: i32, protocol: &str| ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(target)),
        protocol: Some("TCP".into()),
        app_protocol: Some(protocol.into()),
        ..ServicePort::default()
    };
    Ok(Some(Service {
        metadata: ObjectMeta {
            name: Some(service_name),
            namespace: Some(workload.namespace.clone()),
            labels: Some(BTreeMap::from([(ANNOTATION_ENABLED.into(), "true".into())])),
            annotations: Some(service_annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: workload.kind.clone(),
                name: workload.name.clone(),
                uid: workload.uid.clone(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(workload.selector.clone()),
            ports: Some(vec![
                service_port("dapr-http", 80, 3500, "http"),
                service_port("dapr-grpc", grpc, grpc, "grpc"),
                service_port(
                    "dapr-internal",
                    internal,
                    internal,
                    if mtls_enabled { "tls" } else { "grpc" },
                ),
                service_port("dapr-metrics", metrics, metrics, "http"),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }))
}

impl Workload {
    pub fn from_deployment(d: &Deployment) -> Self {
        let spec = d.spec.as_ref();
        Self {
            kind: "Deployment".into(),
            name: d.name_any(),
            namespace: d.namespace().unwrap_or_default(),
            uid: d.uid().unwrap_or_default(),
            selector: spec
                .and_then(|s| s.selector.match_labels.clone())
                .unwrap_or_default(),
            annotations: spec
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default(),
        }
    }

    pub fn from_stateful_set(s: &StatefulSet) -> Self {
        let spec = s.spec.as_ref();
        Self {
            kind: "StatefulSet".into(),
            name: s.name_any(),
            namespace: s.namespace().unwrap_or_default(),
            uid: s.uid().unwrap_or_default(),
            selector: spec
                .and_then(|s| s.selector.match_labels.clone())
                .unwrap_or_default(),
            annotations: spec
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default(),
        }
    }
}

/// What failed while reconciling a workload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to apply Service {namespace}/{name}: {source}")]
    ApplyService {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What the reconciler needs.
pub struct Context {
    pub client: kube::Client,
    pub mtls_enabled: bool,
    pub metrics: Arc<Metrics>,
}

/// Applies the desired Service of one workload.
pub async fn reconcile(workload: Workload, ctx: Arc<Context>) -> Result<Action, Error> {
    let service = match desired(&workload, ctx.mtls_enabled) {
        Ok(Some(service)) => service,
        Ok(None) => return Ok(Action::await_change()),
        Err(problem) => {
            tracing::warn!(%problem, "cannot create the app's Service");
            return Ok(Action::requeue(INVALID_REQUEUE));
        }
    };
    let name = service.name_any();
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &workload.namespace);
    let before = api.get_opt(&name).await.ok().flatten();
    let applied = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&service),
        )
        .await
        .map_err(|source| Error::ApplyService {
            namespace: workload.namespace.clone(),
            name: name.clone(),
            source,
        })?;
    let app_id = workload
        .annotations
        .get(ANNOTATION_APP_ID)
        .cloned()
        .unwrap_or_default();
    match before {
        None => {
            Metrics::service(&ctx.metrics.service_created, &app_id);
            tracing::info!(namespace = %workload.namespace, service = %name, %app_id, "Service created");
        }
        Some(old) if old.resource_version() != applied.resource_version() => {
            Metrics::service(&ctx.metrics.service_updated, &app_id);
            tracing::info!(namespace = %workload.namespace, service = %name, %app_id, "Service updated");
        }
        Some(_) => {}
    }
    Ok(Action::await_change())
}

pub fn error_policy(error: &Error) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying");
    Action::requeue(ERROR_REQUEUE)
}

/// Runs the Deployment and StatefulSet reconcilers until `stop`.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let client = ctx.client.clone();
    let (deployments, stateful_sets, services): (Api<Deployment>, Api<StatefulSet>, Api<Service>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let owned = watcher::Config::default().labels(&format!("{ANNOTATION_ENABLED}=true"));
    let d_ctx = ctx.clone();
    let deployments = Controller::new(deployments, watcher::Config::default())
        .owns(services.clone(), owned.clone())
        .graceful_shutdown_on(wait(stop.clone()))
        .run(
            |d: Arc<Deployment>, ctx: Arc<Context>| reconcile(Workload::from_deployment(&d), ctx),
            |_, e, _| error_policy(e),
            d_ctx,
        )
        .for_each(|_| async {});
    let stateful_sets = Controller::new(stateful_sets, watcher::Config::default())
        .owns(services, owned)
        .graceful_shutdown_on(wait(stop.clone()))
        .run(
            |s: Arc<StatefulSet>, ctx: Arc<Context>| {
                reconcile(Workload::from_stateful_set(&s), ctx)
            },
            |_, e, _| error_policy(e),
            ctx,
        )
        .for_each(|_| async {});
    tokio::select! {
        _ = futures::future::join(deployments, stateful_sets) => {}
        () = crate::api::stopped(&mut stop) => {}
    }
}

async fn wait(mut stop: tokio::sync::watch::Receiver<bool>) {
    crate::api::stopped(&mut stop).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(annotations: &[(&str, &str)]) -> Workload {
        Workload {
            kind: "Deployment".into(),
            name: "orders".into(),
            namespace: "shop".into(),
            uid: "uid-1".into(),
            selector: BTreeMap::from([("app".into(), "orders".into())]),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_service_is_daprs() {
        let service = desired(
            &workload(&[("dapr.io/enabled", "true"), ("dapr.io/app-id", "orders")]),
            true,
        )
        .unwrap()
        .unwrap();
        let value = serde_json::to_value(&service).unwrap();
        assert_eq!(value["metadata"]["name"], "orders-dapr");
        assert_eq!(value["metadata"]["namespace"], "shop");
        assert_eq!(
            value["metadata"]["labels"],
            serde_json::json!({"dapr.io/enabled": "true"})
        );
        assert_eq!(
            value["metadata"]["annotations"],
            serde_json::json!({
                "dapr.io/app-id": "orders",
                "prometheus.io/path": "/",
                "prometheus.io/port": "9090",
                "prometheus.io/probe": "true",
                "prometheus.io/scrape": "true"
            })
        );
        let owner = &value["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["name"].as_str(),
                owner["uid"].as_str(),
                owner["controller"].as_bool()
            ),
            (
                Some("Deployment"),
                Some("orders"),
                Some("uid-1"),
                Some(true)
            )
        );
        assert_eq!(value["spec"]["clusterIP"], "None");
        assert_eq!(
            value["spec"]["selector"],
            serde_json::json!({"app": "orders"})
        );
        let ports: Vec<_> = value["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_owned(),
                    p["port"].as_i64().unwrap(),
                    p["targetPort"].as_i64().unwrap(),
                    p["appProtocol"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("dapr-http".into(), 80, 3500, "http".into()),
                ("dapr-grpc".into(), 50001, 50001, "grpc".into()),
                ("dapr-internal".into(), 50002, 50002, "tls".into()),
                ("dapr-metrics".into(), 9090, 9090, "http".into()),
            ]
        );
    }

    #[test]
    fn annotations_move_ports_and_turn_metrics_off() {
        let service = desired(
            &workload(&[
                ("dapr.io/enabled", "yes"),
                ("dapr.io/app-id", "orders"),
                ("dapr.io/grpc-port", "6000"),
                ("dapr.io/internal-grpc-port", "6001"),
                ("dapr.io/metrics-port", "6002"),
                ("dapr.io/enable-metrics", "false"),
                (
                    "dapr.io/sidecar-svc-annotations",
                    "team=shop, prometheus.io/scrape=false",
                ),
            ]),
            false,
        )
        .unwrap()
        .unwrap();
        let ports: Vec<_> = service
            .spec
            .unwrap()
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.port, p.app_protocol.unwrap()))
            .collect();
        assert_eq!(
            ports[1..],
            [
                (6000, "grpc".into()),
                (6001, "grpc".into()),
                (6002, "http".into())
            ]
        );
        let annotations = service.metadata.annotations.unwrap();
        assert_eq!(annotations.get("team").map(String::as_str), Some("shop"));
        assert!(
            !annotations.keys().any(|k| k.starts_with("prometheus.io/")),
            "{annotations:?}"
        );
    }

    #[test]
    fn no_service_without_dapr_and_clear_errors_for_bad_annotations() {
        assert_eq!(desired(&workload(&[]), true), Ok(None));
        assert_eq!(
            desired(
                &workload(&[("dapr.io/enabled", "false"), ("dapr.io/app-id", "x")]),
                true
            ),
            Ok(None)
        );
        let missing = desired(&workload(&[("dapr.io/enabled", "true")]), true).unwrap_err();
        assert!(
            missing.to_string().contains("no dapr.io/app-id"),
            "{missing}"
        );
        let invalid = desired(
            &workload(&[("dapr.io/enabled", "true"), ("dapr.io/app-id", "Orders_1")]),
            true,
        )
        .unwrap_err();
        assert!(invalid.to_string().contains("\"Orders_1\""), "{invalid}");
        let port = desired(
            &workload(&[
                ("dapr.io/enabled", "1"),
                ("dapr.io/app-id", "o"),
                ("dapr.io/grpc-port", "70000"),
            ]),
            true,
        )
        .unwrap_err();
        assert!(
            port.to_string().contains("dapr.io/grpc-port=\"70000\""),
            "{port}"
        );
    }
}
