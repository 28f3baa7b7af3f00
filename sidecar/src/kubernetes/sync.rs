//! Keeping the sidecar's resources equal to what the operator serves it.
//!
//! - Start-up: `ListComponents` (plus the kinds kept inert), load everything, report each
//!   component's result.
//! - Then one long-lived stream per kind. A Component event changes the desired set and the
//!   set is applied with the gap-free swap of [`crate::reload::apply`]: only the changed
//!   component is built, health-checked and swapped in; a broken change keeps the old one.
//! - A stream error (operator restart, network) closes every stream; after a jittered
//!   exponential backoff the sidecar lists everything again (so components deleted while it
//!   was disconnected go away) and opens new streams. The operator replays what changed
//!   between that List and the stream. A full List-and-apply also runs every
//!   [`RECONCILE_INTERVAL`], as Dapr does.
//! - After every apply, components whose state or generation changed are reported through
//!   `ResourceStatus.ReportResources` (a Dapr operator answers `Unimplemented`: reporting then
//!   stops quietly).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use daprs_api::proto::operator::{
    EventType, ResourceConditionStatus, ResourceEventType, ResourceResult, ResourceType,
};
use tokio::sync::Mutex;

use super::client::OperatorClient;
use super::resources::{Decoded, Kept, KeptResources, OperatorComponent, decode_component};
use super::{Error, retry};
use crate::components::Manifest;
use crate::reload::Outcome;
use crate::runtime::Runtime;

/// How often everything is listed and applied again while streams are healthy (Dapr's 60 s).
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// First wait after a broken stream; doubled per failure up to [`BACKOFF_MAX`].
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(500);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Reason strings of the reports (shown in the Component's status).
pub const REASON_LOADED: &str = "Loaded";
pub const REASON_FAILED: &str = "InitFailed";

/// Exponential backoff with ±25 % jitter, so a restarted operator is not hit by every
/// sidecar at once.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_INITIAL,
        }
    }
}

impl Backoff {
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        base.mul_f64(rand::random_range(0.75..1.25))
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_INITIAL;
    }
}

#[derive(Default)]
struct State {
    /// Every Component the operator serves this app, by name.
    desired: BTreeMap<String, OperatorComponent>,
    /// Components that could not even be decoded, with why (reported as failures).
    undecodable: BTreeMap<String, String>,
    /// What was last reported per component: (generation, loaded).
    reported: HashMap<String, (i64, bool)>,
    reports_enabled: bool,
}

/// The operator side of a kubernetes-mode sidecar.
pub struct Sync {
    pub rt: Arc<Runtime>,
    pub client: OperatorClient,
    /// The built-in `kubernetes` secret store, always loaded and never removed.
    pub builtin: Vec<Manifest>,
    pub kept: Arc<KeptResources>,
    state: Mutex<State>,
}

/// The result of one component after an apply.
fn result(name: &str, generation: i64, outcome: Result<(), &str>) -> ResourceResult {
    let (condition, reason, message) = match outcome {
        Ok(()) => (ResourceConditionStatus::StatusSuccess, REASON_LOADED, None),
        Err(m) => (
            ResourceConditionStatus::StatusFailure,
            REASON_FAILED,
            Some(m.to_owned()),
        ),
    };
    ResourceResult {
        resource_type: ResourceType::ResourceComponent as i32,
        event_type: EventType::EventInit as i32,
        name: name.to_owned(),
        condition: condition as i32,
        reason: Some(reason.to_owned()),
        message,
        observed_generation: generation,
        last_transaction_time: Some(std::time::SystemTime::now().into()),
    }
}

fn closed(name: &str) -> ResourceResult {
    ResourceResult {
        resource_type: ResourceType::ResourceComponent as i32,
        event_type: EventType::EventClose as i32,
        name: name.to_owned(),
        condition: ResourceConditionStatus::StatusUnknown as i32,
        reason: None,
        message: None,
        observed_generation: 0,
        last_transaction_time: Some(std::time::SystemTime::now().into()),
    }
}

impl Sync {
    pub fn new(
        rt: Arc<Runtime>,
        client: OperatorClient,
        builtin: Vec<Manifest>,
        kept: Arc<KeptResources>,
    ) -> Arc<Self> {
        Arc::new(Self {
            rt,
            client,
            builtin,
            kept,
            state: Mutex::new(State {
                reports_enabled: true,
                ..State::default()
            }),
        })
    }

    fn app_id(&self) -> &str {
        &self.rt.app_id
    }

    /// Decodes a List into the desired set.
    fn decode_all(&self, items: &[Vec<u8>], state: &mut State) {
        state.desired.clear();
        state.undecodable.clear();
        for bytes in items {
            match decode_component(bytes, &self.client.namespace, self.app_id()) {
                Ok(Decoded::Component(c)) => {
                    state.desired.insert(c.manifest.name.clone(), *c);
                }
                Ok(Decoded::NotForUs { name }) => {
                    tracing::debug!(component = %name, "skipping a component outside this app's namespace or scopes");
                }
                Err(error) => {
                    tracing::error!(%error, "the operator sent a component that cannot be loaded");
                    state
                        .undecodable
                        .insert(error.component.clone(), error.to_string());
                }
            }
        }
    }

    /// Lists the kinds kept inert (errors are logged, as Dapr does).
    async fn list_kept(&self) {
        let app = self.app_id().to_owned();
        match self.client.list_resiliency().await {
            Ok(items) => self.kept.replace(Kept::Resiliency, &items, &app),
            Err(error) => tracing::warn!(%error, "failed to list Resiliency policies"),
        }
        match self.client.list_http_endpoints().await {
            Ok(items) => self.kept.replace(Kept::HttpEndpoint, &items, &app),
            Err(error) => tracing::warn!(%error, "failed to list HTTPEndpoints"),
        }
        match self.client.list_subscriptions().await {
            Ok(items) => self.kept.replace(Kept::Subscription, &items, &app),
            Err(error) => tracing::warn!(%error, "failed to list Subscriptions"),
        }
    }

    fn manifests(&self, state: &State) -> Vec<Manifest> {
        self.builtin
            .iter()
            .cloned()
            .chain(state.desired.values().map(|c| c.manifest.clone()))
            .collect()
    }

    /// Start-up: lists everything (retrying while the operator is unreachable), loads the
    /// components and reports them. A component that fails without `ignoreErrors` stops
    /// start-up, after its failure was reported.
    pub async fn initial_load(&self) -> Result<(), Error> {
        let items = retry("ListComponents", || self.client.list_components()).await?;
        self.list_kept().await;
        let mut state = self.state.lock().await;
        self.decode_all(&items, &mut state);
        let mut results = Vec::new();
        let loaded = self
            .rt
            .load_reporting(self.manifests(&state), &mut results)
            .await;
        let mut reports = Vec::new();
        for (name, outcome) in &results {
            if let Some(c) = state.desired.get(name) {
                reports.push((name.clone(), c.generation, outcome.clone()));
            }
        }
        for (name, message) in &state.undecodable {
            reports.push((name.clone(), 0, Err(message.clone())));
        }
        self.report(&mut state, reports, Vec::new()).await;
        loaded.map_err(Error::Components)
    }

    /// Applies the desired set and reports what changed.
    async fn apply(&self, state: &mut State) -> Outcome {
        let keep: Vec<&str> = self.builtin.iter().map(|m| m.name.as_str()).collect();
        let outcome = crate::reload::apply(&self.rt, self.manifests(state), &keep).await;
        if outcome != Outcome::default() {
            tracing::info!(
                added = ?outcome.added,
                replaced = ?outcome.replaced,
                removed = ?outcome.removed,
                failed = ?outcome.failed.iter().map(|f| &f.0).collect::<Vec<_>>(),
                "components updated from the operator"
            );
        }
        let live = self.rt.table.snapshot();
        let mut reports = Vec::new();
        for (name, c) in &state.desired {
            let loaded = live
                .manifest(name)
                .is_some_and(|m| m.fields == c.manifest.fields);
            let outcome = if loaded {
                Ok(())
            } else {
                Err(outcome
                    .failed
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, e)| e.clone())
                    .unwrap_or_else(|| "not loaded".to_owned()))
            };
            reports.push((name.clone(), c.generation, outcome));
        }
        for (name, message) in &state.undecodable {
            reports.push((name.clone(), 0, Err(message.clone())));
        }
        let gone: Vec<String> = state
            .reported
            .keys()
            .filter(|n| !state.desired.contains_key(*n) && !state.undecodable.contains_key(*n))
            .cloned()
            .collect();
        self.report(state, reports, gone).await;
        outcome
    }

    /// Sends the results that differ from what was last reported, and closes `gone`.
    async fn report(
        &self,
        state: &mut State,
        results: Vec<(String, i64, Result<(), String>)>,
        gone: Vec<String>,
    ) {
        if !state.reports_enabled {
            return;
        }
        let mut batch = Vec::new();
        let mut sent = Vec::new();
        for (name, generation, outcome) in results {
            let key = (generation, outcome.is_ok());
            if state.reported.get(&name) == Some(&key) {
                continue;
            }
            batch.push(result(
                &name,
                generation,
                outcome.as_ref().map(|_| ()).map_err(|e| e.as_str()),
            ));
            sent.push((name, Some(key)));
        }
        for name in gone {
            batch.push(closed(&name));
            sent.push((name, None));
        }
        if batch.is_empty() {
            return;
        }
        match self.client.report(batch).await {
            Ok(rejected) => {
                for reason in rejected {
                    tracing::warn!(%reason, "the operator did not record a component status");
                }
                for (name, key) in sent {
                    match key {
                        Some(key) => state.reported.insert(name, key),
                        None => state.reported.remove(&name),
                    };
                }
            }
            Err(Error::Call {
                code: tonic::Code::Unimplemented,
                ..
            }) => {
                tracing::info!(
                    "the operator does not take component status reports (a Dapr operator); not sending them"
                );
                state.reports_enabled = false;
            }
            Err(error) => {
                // Not recorded as reported: the next apply or resync sends it again.
                tracing::warn!(%error, "failed to report component status to the operator");
            }
        }
    }

    /// Lists everything again and applies the result.
    pub async fn resync(&self) -> Result<Outcome, Error> {
        let items = self.client.list_components().await?;
        self.list_kept().await;
        let mut state = self.state.lock().await;
        self.decode_all(&items, &mut state);
        Ok(self.apply(&mut state).await)
    }

    /// One `ComponentUpdate` event.
    pub async fn component_event(&self, bytes: &[u8], kind: i32) -> Outcome {
        let deleted = kind == ResourceEventType::Deleted as i32;
        let mut state = self.state.lock().await;
        match decode_component(bytes, &self.client.namespace, self.app_id()) {
            Ok(Decoded::Component(c)) if !deleted => {
                tracing::info!(component = %c.manifest.name, generation = c.generation, "component changed");
                state.undecodable.remove(&c.manifest.name);
                state.desired.insert(c.manifest.name.clone(), *c);
            }
            Ok(Decoded::Component(c)) => {
                tracing::info!(component = %c.manifest.name, "component deleted");
                state.desired.remove(&c.manifest.name);
                state.undecodable.remove(&c.manifest.name);
            }
            Ok(Decoded::NotForUs { name }) => {
                state.desired.remove(&name);
                state.undecodable.remove(&name);
            }
            Err(error) => {
                tracing::error!(%error, "the operator sent a component that cannot be loaded; keeping the current one");
                if deleted {
                    state.desired.remove(&error.component);
                } else {
                    state
                        .undecodable
                        .insert(error.component.clone(), error.to_string());
                }
            }
        }
        self.apply(&mut state).await
    }

    /// Streams until one fails; `list_first` lists and applies before opening them (every
    /// session but the first, whose List was the start-up load).
    async fn session(&self, list_first: bool, backoff: &mut Backoff) -> Result<(), Error> {
        if list_first {
            self.resync().await?;
        }
        let mut components = self.client.component_updates().await?;
        let mut subscriptions = self.client.subscription_updates().await?;
        let mut resiliencies = self.client.resiliency_updates().await?;
        let mut endpoints = self.client.http_endpoint_updates().await?;
        let mut configuration = self.client.configuration_updates().await?;
        backoff.reset();
        tracing::info!("watching the operator for resource changes");
        let app = self.app_id().to_owned();
        let deleted = |kind: i32| kind == ResourceEventType::Deleted as i32;
        let ended = |rpc: &'static str| Error::StreamEnded(rpc);
        let failed = |rpc: &'static str| {
            move |status: tonic::Status| Error::Call {
                rpc,
                code: status.code(),
                message: status.message().to_owned(),
            }
        };
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + RECONCILE_INTERVAL,
            RECONCILE_INTERVAL,
        );
        loop {
            tokio::select! {
                m = components.message() => {
                    let e = m.map_err(failed("ComponentUpdate"))?.ok_or_else(|| ended("ComponentUpdate"))?;
                    self.component_event(&e.component, e.r#type).await;
                }
                m = subscriptions.message() => {
                    let e = m.map_err(failed("SubscriptionUpdate"))?.ok_or_else(|| ended("SubscriptionUpdate"))?;
                    self.kept.event(Kept::Subscription, &e.subscription, deleted(e.r#type), &app);
                }
                m = resiliencies.message() => {
                    let e = m.map_err(failed("ResiliencyUpdate"))?.ok_or_else(|| ended("ResiliencyUpdate"))?;
                    self.kept.event(Kept::Resiliency, &e.resiliency, deleted(e.r#type), &app);
                }
                m = endpoints.message() => {
                    let e = m.map_err(failed("HTTPEndpointUpdate"))?.ok_or_else(|| ended("HTTPEndpointUpdate"))?;
                    self.kept.event(Kept::HttpEndpoint, &e.http_endpoints, deleted(e.r#type), &app);
                }
                m = async {
                    match configuration.as_mut() {
                        Some(stream) => stream.message().await,
                        None => std::future::pending().await,
                    }
                } => {
                    let e = m.map_err(failed("ConfigurationUpdate"))?.ok_or_else(|| ended("ConfigurationUpdate"))?;
                    let value = serde_json::from_slice(&e.configuration).ok();
                    self.kept.set_configuration(value);
                    tracing::warn!("the app's Configuration changed; it takes effect when daprd restarts");
                }
                _ = tick.tick() => {
                    self.resync().await?;
                }
            }
        }
    }

    /// Runs until the runtime stops: streams, and on any failure backoff, List and streams
    /// again.
    pub async fn run(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        let mut list_first = false;
        loop {
            let session = self.session(list_first, &mut backoff);
            let error = tokio::select! {
                result = session => match result {
                    Ok(()) => continue,
                    Err(error) => error,
                },
                () = self.rt.stopped() => return,
            };
            let delay = backoff.next_delay();
            tracing::warn!(%error, retry_in = ?delay, "lost the operator's streams; reconnecting and listing again");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.rt.stopped() => return,
            }
            list_first = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(
            first >= BACKOFF_INITIAL.mul_f64(0.75) && first <= BACKOFF_INITIAL.mul_f64(1.25),
            "{first:?}"
        );
        let mut last = first;
        for _ in 0..20 {
            last = b.next_delay();
        }
        assert!(
            last <= BACKOFF_MAX.mul_f64(1.25) && last >= BACKOFF_MAX.mul_f64(0.75),
            "{last:?}"
        );
        b.reset();
        assert!(b.next_delay() <= BACKOFF_INITIAL.mul_f64(1.25));
    }
}
