//! The watchdog (Dapr's, off by default): on the leader, it restarts pods that should have a
//! sidecar but were admitted without one (the injector was down, or the pod was created before
//! the injector was installed), so that they come back through the injector.
//!
//! Each pass first waits for the injector: a Deployment of the operator's namespace labelled
//! [`INJECTOR_SELECTOR`] (how the daprs chart labels `dapr-sidecar-injector`) with at least one
//! ready replica; a pod deleted while no injector answers would come back without a sidecar
//! again. It then lists the pods without the `dapr.io/sidecar-injected` and
//! `dapr.io/watchdog-patched` labels (in `--watch-namespace`, or everywhere) and deletes those
//! annotated `dapr.io/enabled` truthy that have no `daprd` container (neither in `containers`
//! nor as a native sidecar in `initContainers`), at most `--max-pod-restarts-per-minute`
//! evenly spaced (0: no limit). With `--watchdog-can-patch-pod-labels` it labels the pods that
//! do have a sidecar `dapr.io/watchdog-patched=true`, so later passes skip them.
//!
//! The decisions are pure ([`verdict`], [`plan`], [`RestartLimiter`]); [`Watchdog`] does the IO.

use std::time::Duration;

use daprs_api::annotations::{
    ENABLED, LABEL_SIDECAR_INJECTED, LABEL_WATCHDOG_PATCHED, SIDECAR_CONTAINER_NAME, parse_bool,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use tokio::sync::watch;
use tokio::time::Instant;

/// How the chart labels the injector's Deployment (`dapr-sidecar-injector`), looked for in the
/// operator's namespace. Dapr looks for `app=dapr-sidecar-injector`, which the daprs chart puts
/// on the injector's pods only.
pub const INJECTOR_SELECTOR: &str =
    "app.kubernetes.io/part-of=daprs,app.kubernetes.io/component=injector";
/// The pods a pass looks at: neither injected nor already checked (Dapr's selector).
pub const POD_SELECTOR: &str = "!dapr.io/sidecar-injected,!dapr.io/watchdog-patched";
/// How long to wait before trying again when the injector is not ready or a pass failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);
/// The shortest `--watch-interval` that repeats.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// `--watch-interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interval {
    /// `0`: no watchdog (the default).
    Off,
    /// `once`: one successful pass after becoming the leader.
    Once,
    /// A pass at once, then one per interval (≥ [`MIN_INTERVAL`]).
    Every(Duration),
}

impl Interval {
    /// Parses `0`, `once` or a Go duration of at least 1s; anything else is refused with what
    /// is allowed.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "" | "0" => Ok(Self::Off),
            "once" => Ok(Self::Once),
            other => {
                let duration = daprs_api::duration::parse_go_duration(other).map_err(|e| {
                    format!("{e}; use 0 (off), once, or a duration of at least 1s such as 30s")
                })?;
                if duration.is_zero() {
                    Ok(Self::Off)
                } else if duration < MIN_INTERVAL {
                    Err(format!(
                        "{other:?} is shorter than 1s; use 0 (off), once, or a duration of at least 1s such as 30s"
                    ))
                } else {
                    Ok(Self::Every(duration))
                }
            }
        }
    }
}

/// What the watchdog does with one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a Dapr pod, already handled, or on its way out.
    Leave,
    /// Annotated `dapr.io/enabled` but without a sidecar: delete it so it is created again
    /// through the injector.
    Delete,
    /// Has its sidecar: label it `dapr.io/watchdog-patched=true` (only when allowed).
    Label,
}

/// True when the pod has a `daprd` container, or a `daprd` native sidecar (an init container
/// with `restartPolicy: Always`).
pub fn has_sidecar(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.containers
        .iter()
        .any(|c| c.name == SIDECAR_CONTAINER_NAME)
        || spec.init_containers.iter().flatten().any(|c| {
            c.name == SIDECAR_CONTAINER_NAME && c.restart_policy.as_deref() == Some("Always")
        })
}

/// The decision for one pod (pure).
pub fn verdict(pod: &Pod, can_patch_labels: bool) -> Verdict {
    if pod.metadata.deletion_timestamp.is_some() {
        return Verdict::Leave;
    }
    let labels = pod.labels();
    if labels.contains_key(LABEL_SIDECAR_INJECTED) || labels.contains_key(LABEL_WATCHDOG_PATCHED) {
        return Verdict::Leave;
    }
    let enabled = pod
        .annotations()
        .get(ENABLED)
        .and_then(|v| parse_bool(v))
        .unwrap_or(false);
    if !enabled {
        return Verdict::Leave;
    }
    match (has_sidecar(pod), can_patch_labels) {
        (false, _) => Verdict::Delete,
        (true, true) => Verdict::Label,
        (true, false) => Verdict::Leave,
    }
}

/// A pod by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
}

/// What one pass will do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub delete: Vec<PodRef>,
    pub label: Vec<PodRef>,
}

/// The pass's work over the listed pods (pure).
pub fn plan(pods: &[Pod], can_patch_labels: bool) -> Plan {
    let mut plan = Plan::default();
    for pod in pods {
        let pod_ref = PodRef {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
        };
        match verdict(pod, can_patch_labels) {
            Verdict::Delete => plan.delete.push(pod_ref),
            Verdict::Label => plan.label.push(pod_ref),
            Verdict::Leave => {}
        }
    }
    plan
}

/// Spaces pod deletions evenly: at most `per_minute` a minute, none in a burst (Dapr's limiter
/// has no slack either); 0 means no limit.
#[derive(Clone, Debug)]
pub struct RestartLimiter {
    spacing: Option<Duration>,
    next: Option<Instant>,
}

impl RestartLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            spacing: (per_minute > 0).then(|| Duration::from_secs(60) / per_minute),
            next: None,
        }
    }

    /// Reserves the next deletion's slot for a deletion wanted at `now`; returns how long to
    /// wait before deleting.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let Some(spacing) = self.spacing else {
            return Duration::ZERO;
        };
        let at = match self.next {
            Some(next) if next > now => next,
            _ => now,
        };
        self.next = Some(at + spacing);
        at - now
    }
}

/// What failed in a pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to look for the injector's Deployment ({INJECTOR_SELECTOR}): {0}")]
    ListDeployments(#[source] kube::Error),
    #[error(
        "no ready injector Deployment ({INJECTOR_SELECTOR}) in namespace {0}; pods are restarted only while the injector can add their sidecar"
    )]
    InjectorNotReady(String),
    #[error("failed to list the pods: {0}")]
    ListPods(#[source] kube::Error),
    #[error("stopped")]
    Stopped,
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub deleted: usize,
    pub labelled: usize,
    pub failed: usize,
}

/// The watchdog's settings and its IO.
pub struct Watchdog {
    pub client: kube::Client,
    /// Where the injector's Deployment is (the operator's namespace).
    pub control_plane_namespace: String,
    /// `--watch-namespace`; `None`: every namespace.
    pub watch_namespace: Option<String>,
    pub can_patch_labels: bool,
    pub limiter: RestartLimiter,
    /// Counts every pod acted on (`daprs_operator_watchdog_pods`).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Watchdog {
    fn count(&self, result: &str) {
        crate::metrics::Metrics::count(&self.metrics.watchdog_pods, result);
    }

    async fn injector_ready(&self) -> Result<bool, Error> {
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.control_plane_namespace);
        let deployments = api
            .list(&ListParams::default().labels(INJECTOR_SELECTOR))
            .await
            .map_err(Error::ListDeployments)?;
        Ok(deployments.items.iter().any(|d| {
            d.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
                >= 1
        }))
    }

    /// One pass: the injector must be ready; then deletes and labels as [`plan`] says.
    pub async fn pass(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Report, Error> {
        if !self.injector_ready().await? {
            return Err(Error::InjectorNotReady(
                self.control_plane_namespace.clone(),
            ));
        }
        let pods: Api<Pod> = match &self.watch_namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let listed = pods
            .list(&ListParams::default().labels(POD_SELECTOR))
            .await
            .map_err(Error::ListPods)?;
        let plan = plan(&listed.items, self.can_patch_labels);
        let mut report = Report::default();
        let label = serde_json::json!({"metadata": {"labels": {LABEL_WATCHDOG_PATCHED: "true"}}});
        for pod in &plan.label {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
            match api
                .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&label))
                .await
            {
                Ok(_) => {
                    report.labelled += 1;
                    self.count("labelled");
                }
                Err(error) => {
                    report.failed += 1;
                    self.count("failed");
                    tracing::warn!(namespace = %pod.namespace, pod = %pod.name, %error, "failed to label a pod that has its sidecar");
                }
            }
        }
        for pod in &plan.delete {
            let wait = self.limiter.reserve(Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = crate::api::stopped(stop) => return Err(Error::Stopped),
                }
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
            match api.delete(&pod.name, &DeleteParams::default()).await {
                Ok(_) => {
                    report.deleted += 1;
                    self.count("deleted");
                    tracing::warn!(namespace = %pod.namespace, pod = %pod.name, "deleted a pod annotated dapr.io/enabled that has no sidecar, so it is created again through the injector");
                }
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(error) => {
                    report.failed += 1;
                    self.count("failed");
                    tracing::warn!(namespace = %pod.namespace, pod = %pod.name, %error, "failed to delete a pod without its sidecar");
                }
            }
        }
        Ok(report)
    }

    /// Runs passes as `interval` says until `stop` (leader only). The first pass is retried
    /// every [`RETRY_AFTER`] until it succeeds (the injector may still be starting).
    pub async fn run(mut self, interval: Interval, mut stop: watch::Receiver<bool>) {
        let every = match interval {
            Interval::Off => return,
            Interval::Once => None,
            Interval::Every(every) => Some(every),
        };
        tracing::info!(?interval, "watchdog started");
        loop {
            match self.pass(&mut stop).await {
                Ok(report) => {
                    tracing::info!(
                        deleted = report.deleted,
                        labelled = report.labelled,
                        failed = report.failed,
                        "watchdog pass done"
                    );
                    break;
                }
                Err(Error::Stopped) => return,
                Err(error) => tracing::warn!(%error, "watchdog pass failed; retrying"),
            }
            tokio::select! {
                () = tokio::time::sleep(RETRY_AFTER) => {}
                () = crate::api::stopped(&mut stop) => return,
            }
        }
        let Some(every) = every else {
            tracing::info!("watchdog ran once; done");
            return;
        };
        let mut ticks = tokio::time::interval_at(Instant::now() + every, every);
        // A pass that overruns its interval is followed by one pass, not a burst (Dapr's).
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = crate::api::stopped(&mut stop) => return,
            }
            match self.pass(&mut stop).await {
                Ok(report) if report == Report::default() => {
                    tracing::debug!("watchdog pass done; nothing to do")
                }
                Ok(report) => tracing::info!(
                    deleted = report.deleted,
                    labelled = report.labelled,
                    failed = report.failed,
                    "watchdog pass done"
                ),
                Err(Error::Stopped) => return,
                Err(error) => tracing::warn!(%error, "watchdog pass failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(
        name: &str,
        annotations: serde_json::Value,
        labels: serde_json::Value,
        spec: serde_json::Value,
    ) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "annotations": annotations, "labels": labels},
            "spec": spec,
        }))
        .unwrap()
    }

    fn app_only() -> serde_json::Value {
        json!({"containers": [{"name": "app", "image": "a"}]})
    }

    fn with_daprd() -> serde_json::Value {
        json!({"containers": [{"name": "app", "image": "a"}, {"name": "daprd", "image": "d"}]})
    }

    fn native_daprd(restart_policy: Option<&str>) -> serde_json::Value {
        let mut daprd = json!({"name": "daprd", "image": "d"});
        if let Some(p) = restart_policy {
            daprd["restartPolicy"] = json!(p);
        }
        json!({"containers": [{"name": "app", "image": "a"}], "initContainers": [daprd]})
    }

    #[test]
    fn enabled_pods_without_daprd_are_deleted_and_the_rest_left() {
        let enabled = json!({"dapr.io/enabled": "true"});
        assert_eq!(
            verdict(&pod("a", enabled.clone(), json!({}), app_only()), false),
            Verdict::Delete
        );
        for truthy in ["yes", "1", "on", "T"] {
            let p = pod(
                "a",
                json!({"dapr.io/enabled": truthy}),
                json!({}),
                app_only(),
            );
            assert_eq!(verdict(&p, false), Verdict::Delete, "{truthy}");
        }
        for falsy in ["false", "no", "", "maybe"] {
            let p = pod(
                "a",
                json!({"dapr.io/enabled": falsy}),
                json!({}),
                app_only(),
            );
            assert_eq!(verdict(&p, true), Verdict::Leave, "{falsy}");
        }
        assert_eq!(
            verdict(&pod("a", json!({}), json!({}), app_only()), true),
            Verdict::Leave
        );
        // Injected or already checked: left (the list selector excludes them too).
        let injected = pod(
            "a",
            enabled.clone(),
            json!({"dapr.io/sidecar-injected": "true"}),
            app_only(),
        );
        assert_eq!(verdict(&injected, true), Verdict::Leave);
        let patched = pod(
            "a",
            enabled.clone(),
            json!({"dapr.io/watchdog-patched": "true"}),
            app_only(),
        );
        assert_eq!(verdict(&patched, true), Verdict::Leave);
        // Already being deleted.
        let mut going = pod("a", enabled, json!({}), app_only());
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(verdict(&going, false), Verdict::Leave);
    }

    #[test]
    fn pods_with_a_sidecar_are_labelled_only_when_allowed() {
        let enabled = json!({"dapr.io/enabled": "true"});
        let p = pod("a", enabled.clone(), json!({}), with_daprd());
        assert_eq!(verdict(&p, true), Verdict::Label);
        assert_eq!(verdict(&p, false), Verdict::Leave);
        // daprd as a native sidecar counts; a plain init container named daprd does not run
        // beside the app, so it does not.
        let native = pod(
            "a",
            enabled.clone(),
            json!({}),
            native_daprd(Some("Always")),
        );
        assert!(has_sidecar(&native));
        assert_eq!(verdict(&native, false), Verdict::Leave);
        let plain_init = pod("a", enabled, json!({}), native_daprd(None));
        assert!(!has_sidecar(&plain_init));
        assert_eq!(verdict(&plain_init, false), Verdict::Delete);
    }

    #[test]
    fn a_plan_names_each_pod_once() {
        let enabled = json!({"dapr.io/enabled": "true"});
        let pods = [
            pod("missed", enabled.clone(), json!({}), app_only()),
            pod("fine", enabled.clone(), json!({}), with_daprd()),
            pod("plain", json!({}), json!({}), app_only()),
        ];
        let at = |name: &str| PodRef {
            namespace: "ns".into(),
            name: name.into(),
        };
        assert_eq!(
            plan(&pods, true),
            Plan {
                delete: vec![at("missed")],
                label: vec![at("fine")]
            }
        );
        assert_eq!(
            plan(&pods, false),
            Plan {
                delete: vec![at("missed")],
                label: vec![]
            }
        );
    }

    #[test]
    fn the_limiter_spaces_deletions_evenly_and_zero_is_unlimited() {
        let start = Instant::now();
        let mut limiter = RestartLimiter::new(20);
        // 20 a minute: one every 3 s, the first at once.
        assert_eq!(limiter.reserve(start), Duration::ZERO);
        assert_eq!(limiter.reserve(start), Duration::from_secs(3));
        assert_eq!(limiter.reserve(start), Duration::from_secs(6));
        // Time that passed counts; idle time is not saved up (no burst afterwards).
        let later = start + Duration::from_secs(60);
        assert_eq!(limiter.reserve(later), Duration::ZERO);
        assert_eq!(limiter.reserve(later), Duration::from_secs(3));
        let mut unlimited = RestartLimiter::new(0);
        for _ in 0..100 {
            assert_eq!(unlimited.reserve(start), Duration::ZERO);
        }
        let mut one = RestartLimiter::new(1);
        one.reserve(start);
        assert_eq!(
            one.reserve(start + Duration::from_secs(10)),
            Duration::from_secs(50)
        );
    }

    #[test]
    fn the_interval_is_off_once_or_at_least_a_second() {
        assert_eq!(Interval::parse("0"), Ok(Interval::Off));
        assert_eq!(Interval::parse("0s"), Ok(Interval::Off));
        assert_eq!(Interval::parse("once"), Ok(Interval::Once));
        assert_eq!(
            Interval::parse("1s"),
            Ok(Interval::Every(Duration::from_secs(1)))
        );
        assert_eq!(
            Interval::parse("1m30s"),
            Ok(Interval::Every(Duration::from_secs(90)))
        );
        let short = Interval::parse("500ms").unwrap_err();
        assert!(
            short.contains("shorter than 1s") && short.contains("once"),
            "{short}"
        );
        let bad = Interval::parse("often").unwrap_err();
        assert!(bad.contains("use 0 (off), once"), "{bad}");
    }
}
