//! Status for the kinds sidecars do not report on (Configuration, Subscription, Resiliency,
//! HTTPEndpoint), which Dapr leaves without one: the leader writes `.status.observedGeneration`
//! and two conditions from what the operator itself can check.
//!
//! - `Valid`: the object parses as its Dapr type (what every sidecar does with it) and passes
//!   the checks below; reason `Parsed`, `Invalid`, or `UnknownPolicy` (a Resiliency target naming
//!   a policy that `spec.policies` does not define). A Subscription is also converted to
//!   `dapr.io/v1alpha1` and back, as the conversion webhook does for clients of the old
//!   version; when that loses its routing rules the message says so.
//! - `Ready`: this generation is in the operator's cache, so the operator API serves it to
//!   sidecars (reason `Served`); `False` (`Invalid`) when sidecars will refuse it; `Unknown`
//!   (`NotServedYet`) until the cache has this generation.
//!
//! The decision is the pure [`assess`]; [`run`] watches each kind on the leader and writes
//! with server-side apply (field manager `daprs-operator`) only when something changed.

use std::sync::Arc;
use std::time::Duration;

use daprs_api::crd::subscription::v2alpha1;
use daprs_api::crd::{Condition, Configuration, HTTPEndpoint, Resiliency, ResourceStatus};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use crate::hub::Hub;
use crate::service::FIELD_MANAGER;

/// When to look again at an object the cache has not caught up with.
pub const NOT_SERVED_REQUEUE: Duration = Duration::from_secs(2);
/// When to retry a failed status write.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(10);

/// The kinds this module reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Configuration,
    Subscription,
    Resiliency,
    HttpEndpoint,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Configuration,
        Kind::Subscription,
        Kind::Resiliency,
        Kind::HttpEndpoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Configuration => "Configuration",
            Kind::Subscription => "Subscription",
            Kind::Resiliency => "Resiliency",
            Kind::HttpEndpoint => "HTTPEndpoint",
        }
    }

    /// The version status is written at (the storage version).
    pub fn resource(self) -> ApiResource {
        let (version, plural) = match self {
            Kind::Configuration => ("v1alpha1", "configurations"),
            Kind::Subscription => ("v2alpha1", "subscriptions"),
            Kind::Resiliency => ("v1alpha1", "resiliencies"),
            Kind::HttpEndpoint => ("v1alpha1", "httpendpoints"),
        };
        crate::watch::resource(self.name(), version, plural)
    }
}

/// What the operator can tell about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// `Ok(notes)` or `Err((reason, message))`.
    pub valid: Result<Vec<String>, (&'static str, String)>,
    /// Whether sidecars can use it at all (it parses).
    pub parses: bool,
}

fn resiliency_problems(resiliency: &Resiliency) -> Vec<String> {
    let policies = &resiliency.spec.spec.policies;
    let mut problems = Vec::new();
    let mut check = |target: String, names: &daprs_api::crd::resiliency::PolicyNames| {
        if !names.timeout.is_empty()
            && !policies.timeouts.contains_key(&names.timeout)
            && daprs_api::duration::parse_go_duration(&names.timeout).is_err()
        {
            problems.push(format!(
                "{target}.timeout names {:?}, which spec.policies.timeouts does not define (nor is it a duration)",
                names.timeout
            ));
        }
        if !names.retry.is_empty() && !policies.retries.contains_key(&names.retry) {
            problems.push(format!(
                "{target}.retry names {:?}, which spec.policies.retries does not define",
                names.retry
            ));
        }
        if !names.circuit_breaker.is_empty()
            && !policies
                .circuit_breakers
                .contains_key(&names.circuit_breaker)
        {
            problems.push(format!(
                "{target}.circuitBreaker names {:?}, which spec.policies.circuitBreakers does not define",
                names.circuit_breaker
            ));
        }
    };
    let targets = &resiliency.spec.spec.targets;
    for (app, names) in &targets.apps {
        check(format!("spec.targets.apps.{app}"), &names.policies);
    }
    for (actor, names) in &targets.actors {
        check(format!("spec.targets.actors.{actor}"), &names.policies);
    }
    for (component, names) in &targets.components {
        if let Some(inbound) = &names.inbound {
            check(
                format!("spec.targets.components.{component}.inbound"),
                inbound,
            );
        }
        if let Some(outbound) = &names.outbound {
            check(
                format!("spec.targets.components.{component}.outbound"),
                outbound,
            );
        }
    }
    problems
}

fn subscription_notes(object: &Value) -> Result<Vec<String>, (&'static str, String)> {
    let subscription: v2alpha1::Subscription =
        serde_json::from_value(object.clone()).map_err(|e| {
            (
                "Invalid",
                format!("not a valid dapr.io/v2alpha1 Subscription: {e}"),
            )
        })?;
    let mut as_v2 = object.clone();
    as_v2["apiVersion"] = json!("dapr.io/v2alpha1");
    let round_trip = crate::webhook::convert_objects("dapr.io/v1alpha1", vec![as_v2])
        .and_then(|old| crate::webhook::convert_objects("dapr.io/v2alpha1", old))
        .map_err(|e| {
            (
                "ConversionFailed",
                format!("cannot be read as dapr.io/v1alpha1: {e}"),
            )
        })?;
    let back: v2alpha1::Subscription = round_trip
        .into_iter()
        .next()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or((
            "ConversionFailed",
            "the conversion returned nothing".to_owned(),
        ))?;
    let mut notes = Vec::new();
    if back.spec != subscription.spec {
        let rules = subscription.spec.spec.routes.rules.len();
        notes.push(if rules > 0 {
            format!(
                "read as dapr.io/v1alpha1 it keeps only the default route; its {rules} routing rule(s) are dropped there"
            )
        } else {
            "read as dapr.io/v1alpha1 it loses fields that version cannot hold".to_owned()
        });
    }
    Ok(notes)
}

/// Checks one object of `kind` (pure).
pub fn assess(kind: Kind, object: &Value) -> Assessment {
    fn parse<T: serde::de::DeserializeOwned>(
        kind: Kind,
        object: &Value,
    ) -> Result<T, (&'static str, String)> {
        serde_json::from_value(object.clone())
            .map_err(|e| ("Invalid", format!("not a valid Dapr {}: {e}", kind.name())))
    }
    let valid = match kind {
        Kind::Configuration => parse::<Configuration>(kind, object).map(|_| Vec::new()),
        Kind::HttpEndpoint => parse::<HTTPEndpoint>(kind, object).map(|_| Vec::new()),
        Kind::Resiliency => parse::<Resiliency>(kind, object).and_then(|r| {
            let problems = resiliency_problems(&r);
            if problems.is_empty() {
                Ok(Vec::new())
            } else {
                Err(("UnknownPolicy", problems.join("; ")))
            }
        }),
        Kind::Subscription => subscription_notes(object),
    };
    let parses = match &valid {
        Ok(_) => true,
        Err((reason, _)) => *reason != "Invalid",
    };
    Assessment { valid, parses }
}

/// The conditions for an object at `generation`, given whether the cache serves that
/// generation; transition times are kept from `previous` when the status did not change.
pub fn conditions(
    kind: Kind,
    assessment: &Assessment,
    served: bool,
    generation: Option<i64>,
    previous: &[Condition],
    now: &str,
) -> Vec<Condition> {
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let last_transition_time = match previous.iter().find(|c| c.type_ == type_) {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Some(now.to_owned()),
        };
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: generation,
        }
    };
    let valid = match &assessment.valid {
        Ok(notes) => {
            let mut message = format!("parsed as a Dapr {}", kind.name());
            for note in notes {
                message.push_str("; ");
                message.push_str(note);
            }
            condition("Valid", "True", "Parsed", message)
        }
        Err((reason, message)) => condition("Valid", "False", reason, message.clone()),
    };
    let ready = if !assessment.parses {
        condition(
            "Ready",
            "False",
            "Invalid",
            "served, but sidecars cannot parse it: fix what the Valid condition says".to_owned(),
        )
    } else if served {
        condition(
            "Ready",
            "True",
            "Served",
            "this generation is served to the sidecars in scope".to_owned(),
        )
    } else {
        condition(
            "Ready",
            "Unknown",
            "NotServedYet",
            "the operator's cache does not have this generation yet".to_owned(),
        )
    };
    vec![valid, ready]
}

/// What a reconcile needs.
pub struct Context {
    pub client: kube::Client,
    pub kind: Kind,
    pub resource: ApiResource,
    pub hub: Arc<Hub>,
}

fn current_status(object: &DynamicObject) -> ResourceStatus {
    object
        .data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// Writes the status of one object when it changed.
pub async fn reconcile(
    object: Arc<DynamicObject>,
    ctx: Arc<Context>,
) -> Result<Action, kube::Error> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let generation = object.metadata.generation;
    let mut value = serde_json::to_value(object.as_ref()).unwrap_or_default();
    value["apiVersion"] = json!(ctx.resource.api_version);
    value["kind"] = json!(ctx.resource.kind);
    let served = ctx
        .hub
        .get(&namespace, &name)
        .is_some_and(|o| o.generation == generation);
    let assessment = assess(ctx.kind, &value);
    tracing::debug!(kind = ctx.kind.name(), %namespace, %name, served, ?assessment, "status reconcile");
    let status = current_status(&object);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let conditions = conditions(
        ctx.kind,
        &assessment,
        served,
        generation,
        &status.conditions,
        &now,
    );
    let next = if served {
        Action::await_change()
    } else {
        Action::requeue(NOT_SERVED_REQUEUE)
    };
    if status.observed_generation == generation
        && conditions.iter().all(|c| status.conditions.contains(c))
    {
        return Ok(next);
    }
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.resource);
    let patch = json!({
        "apiVersion": ctx.resource.api_version,
        "kind": ctx.resource.kind,
        "metadata": {"name": name},
        "status": {"conditions": conditions, "observedGeneration": generation},
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(next)
}

/// Keeps the status of every object of `kind` until `stop` (leader only).
pub async fn run_kind(
    client: kube::Client,
    kind: Kind,
    hub: Arc<Hub>,
    namespace: Option<String>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let resource = kind.resource();
    tracing::debug!(kind = kind.name(), "status controller starting");
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let ctx = Arc::new(Context {
        client,
        kind,
        resource: resource.clone(),
        hub,
    });
    let mut stop_signal = stop.clone();
    Controller::new_with(api, watcher::Config::default(), resource)
        .graceful_shutdown_on(async move { crate::api::stopped(&mut stop_signal).await })
        .run(
            reconcile,
            move |_, error, _| {
                tracing::warn!(kind = kind.name(), %error, "failed to write a status; retrying");
                Action::requeue(ERROR_REQUEUE)
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

/// [`run_kind`] for every kind, fed by the operator's caches.
pub async fn run(
    client: kube::Client,
    namespace: Option<String>,
    hubs: crate::api::Hubs,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let hub = |kind: Kind| match kind {
        Kind::Configuration => hubs.configurations.clone(),
        Kind::Subscription => hubs.subscriptions.clone(),
        Kind::Resiliency => hubs.resiliencies.clone(),
        Kind::HttpEndpoint => hubs.http_endpoints.clone(),
    };
    futures::future::join_all(Kind::ALL.map(|kind| {
        run_kind(
            client.clone(),
            kind,
            hub(kind),
            namespace.clone(),
            stop.clone(),
        )
    }))
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resiliency(targets: Value) -> Value {
        json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Resiliency",
               "metadata": {"name": "r", "namespace": "ns", "generation": 1},
               "spec": {"policies": {"timeouts": {"general": "5s"},
                                      "retries": {"retryForever": {"policy": "constant", "duration": "5s", "maxRetries": -1}},
                                      "circuitBreakers": {"simpleCB": {"maxRequests": 1, "timeout": "30s", "trip": "consecutiveFailures >= 5"}}},
                        "targets": targets}})
    }

    #[test]
    fn resiliency_targets_must_name_defined_policies() {
        let fine = resiliency(
            json!({"apps": {"orders": {"timeout": "general", "retry": "retryForever", "circuitBreaker": "simpleCB"}},
                                     "components": {"statestore": {"outbound": {"timeout": "3s", "retry": "retryForever"}}}}),
        );
        assert_eq!(assess(Kind::Resiliency, &fine).valid, Ok(vec![]));
        let typo = resiliency(
            json!({"apps": {"orders": {"retry": "retryForEver", "circuitBreaker": "simpleCB"}},
                                     "components": {"statestore": {"inbound": {"circuitBreaker": "nope"}}}}),
        );
        let assessment = assess(Kind::Resiliency, &typo);
        let (reason, message) = assessment.valid.clone().unwrap_err();
        assert_eq!(reason, "UnknownPolicy");
        assert!(
            message.contains("spec.targets.apps.orders.retry names \"retryForEver\", which spec.policies.retries does not define")
                && message.contains("spec.targets.components.statestore.inbound.circuitBreaker names \"nope\""),
            "{message}"
        );
        assert!(assessment.parses, "sidecars still load it");
    }

    #[test]
    fn a_subscription_with_rules_is_valid_and_says_what_v1alpha1_readers_lose() {
        let with_rules = json!({"apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": "s", "namespace": "ns", "generation": 1},
            "spec": {"pubsubname": "pubsub", "topic": "orders",
                     "routes": {"rules": [{"match": "event.type == \"a\"", "path": "/a"}], "default": "/orders"}}});
        let notes = assess(Kind::Subscription, &with_rules).valid.unwrap();
        assert_eq!(notes.len(), 1);
        assert!(
            notes[0].contains("1 routing rule(s) are dropped"),
            "{notes:?}"
        );
        let plain = json!({"apiVersion": "dapr.io/v2alpha1", "kind": "Subscription",
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"pubsubname": "pubsub", "topic": "orders", "routes": {"default": "/orders"}}});
        assert_eq!(assess(Kind::Subscription, &plain).valid, Ok(vec![]));
    }

    #[test]
    fn objects_that_do_not_parse_are_invalid_and_not_ready() {
        let broken = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "HTTPEndpoint",
            "metadata": {"name": "h", "namespace": "ns", "generation": 3},
            "spec": {"baseUrl": 42}});
        let assessment = assess(Kind::HttpEndpoint, &broken);
        assert!(!assessment.parses);
        let conditions = conditions(Kind::HttpEndpoint, &assessment, true, Some(3), &[], "t");
        assert_eq!(
            (conditions[0].status.as_str(), conditions[0].reason.as_str()),
            ("False", "Invalid")
        );
        assert!(
            conditions[0]
                .message
                .contains("not a valid Dapr HTTPEndpoint"),
            "{:?}",
            conditions[0]
        );
        assert_eq!(conditions[1].status, "False");
        assert!(conditions.iter().all(|c| c.observed_generation == Some(3)));
    }

    #[test]
    fn ready_follows_the_cache_and_transition_times_are_kept() {
        let config = json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "c", "namespace": "ns", "generation": 2},
            "spec": {"tracing": {"samplingRate": "1"}}});
        let assessment = assess(Kind::Configuration, &config);
        let pending = conditions(Kind::Configuration, &assessment, false, Some(2), &[], "t1");
        assert_eq!(
            (
                pending[0].status.as_str(),
                pending[1].status.as_str(),
                pending[1].reason.as_str()
            ),
            ("True", "Unknown", "NotServedYet")
        );
        let served = conditions(
            Kind::Configuration,
            &assessment,
            true,
            Some(2),
            &pending,
            "t2",
        );
        assert_eq!(
            (served[1].status.as_str(), served[1].reason.as_str()),
            ("True", "Served")
        );
        assert_eq!(
            served[0].last_transition_time.as_deref(),
            Some("t1"),
            "Valid did not change"
        );
        assert_eq!(served[1].last_transition_time.as_deref(), Some("t2"));
        let again = conditions(
            Kind::Configuration,
            &assessment,
            true,
            Some(2),
            &served,
            "t3",
        );
        assert_eq!(again, served, "nothing changed, nothing to write");
    }
}
