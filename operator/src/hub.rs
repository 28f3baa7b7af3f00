//! The in-memory view of one kind of Dapr resource, fed by a Kubernetes watch, and the fan-out
//! of its changes to sidecar streams.
//!
//! - A change is published once, in watch order, with a sequence number; each subscriber gets
//!   it through Dapr's per-app transform ([`event_for`]): outside the app's scopes before and
//!   after → nothing; leaving the scopes → `DELETED` (old object); joining → `CREATED`.
//! - **No event lost between a List and the stream that follows it.** A List records the
//!   hub's position for the caller (namespace, app id); the caller's next stream replays every
//!   change after that position from a bounded history, then continues live.
//! - **Bounded buffers.** Each stream has [`SUBSCRIBER_BUFFER`] slots. A stream that falls
//!   behind is cut off (its client reconnects and lists again, as daprd does) instead of
//!   growing without bound or slowing every other stream.
//! - Re-lists after a watch desync are diffed against the view, so deletions that happened
//!   while disconnected are published too; updates without a new `resourceVersion` (resyncs)
//!   are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::watch;

pub use queue::Receiver;
use queue::{SendError, Sender};

mod queue;

/// Slots per stream before it is considered fallen behind.
pub const SUBSCRIBER_BUFFER: usize = 256;
/// Changes kept for replay after a List.
pub const HISTORY_LEN: usize = 4096;
/// How long a List's position is kept for the caller's next stream.
pub const WATERMARK_TTL: Duration = Duration::from_secs(600);
/// Positions kept per (namespace, app id): one per replica that listed and has not streamed.
pub const WATERMARKS_PER_APP: usize = 32;

/// A Dapr object as the hub keeps it: the full JSON plus what routing needs.
#[derive(Debug)]
pub struct Object {
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub generation: Option<i64>,
    pub scopes: Vec<String>,
    /// The whole Kubernetes object.
    pub value: Value,
    /// `value` as JSON bytes, encoded once for every stream that needs no secret inlined.
    pub encoded: Bytes,
    /// A hash of what sidecars see: the object without `status` and bookkeeping metadata
    /// (resourceVersion, generation, managedFields). A change that leaves it equal (a status
    /// write) is stored but not published, so status reports never make sidecars reload.
    pub fingerprint: u64,
}

impl Object {
    /// Reads the routing fields of a Kubernetes object.
    pub fn new(value: Value) -> Self {
        let meta = &value["metadata"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let encoded = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut content = value.clone();
            if let Some(object) = content.as_object_mut() {
                object.remove("status");
            }
            if let Some(meta) = content.get_mut("metadata").and_then(Value::as_object_mut) {
                for field in ["resourceVersion", "generation", "managedFields"] {
                    meta.remove(field);
                }
            }
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            serde_json::to_string(&content)
                .unwrap_or_default()
                .hash(&mut hasher);
            hasher.finish()
        };
        Self {
            namespace: text(&meta["namespace"]),
            name: text(&meta["name"]),
            resource_version: text(&meta["resourceVersion"]),
            generation: meta["generation"].as_i64(),
            scopes: daprs_api::crd::scopes_of(&value),
            value,
            encoded,
            fingerprint,
        }
    }

    fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }

    pub fn in_scope(&self, app_id: &str) -> bool {
        daprs_api::crd::in_scope(&self.scopes, app_id)
    }
}

/// One change of one object: `old` absent for a creation, `new` absent for a deletion.
#[derive(Debug)]
pub struct Change {
    pub seq: u64,
    pub old: Option<Arc<Object>>,
    pub new: Option<Arc<Object>>,
}

impl Change {
    fn namespace(&self) -> &str {
        self.new
            .as_ref()
            .or(self.old.as_ref())
            .map(|o| o.namespace.as_str())
            .unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.new
            .as_ref()
            .or(self.old.as_ref())
            .map(|o| o.name.as_str())
            .unwrap_or_default()
    }
}

/// What a subscriber is told (Dapr's `ResourceEventType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// One event for one subscriber.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    pub object: Arc<Object>,
}

/// Dapr's per-app transform of a change: what the app `app_id` must see, if anything.
pub fn event_for(
    old: Option<&Arc<Object>>,
    new: Option<&Arc<Object>>,
    app_id: &str,
) -> Option<Event> {
    let was = old.is_some_and(|o| o.in_scope(app_id));
    match new {
        Some(new) if new.in_scope(app_id) => Some(Event {
            kind: if old.is_some() && was {
                EventKind::Updated
            } else {
                EventKind::Created
            },
            object: new.clone(),
        }),
        _ if was => Some(Event {
            kind: EventKind::Deleted,
            object: old?.clone(),
        }),
        _ => None,
    }
}

/// Which changes a stream wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub namespace: String,
    pub app_id: String,
    /// Only the object with this name (the ConfigurationUpdate stream).
    pub name: Option<String>,
}

impl Filter {
    fn event(&self, change: &Change) -> Option<Event> {
        if change.namespace() != self.namespace
            || self.name.as_deref().is_some_and(|n| n != change.name())
        {
            return None;
        }
        event_for(change.old.as_ref(), change.new.as_ref(), &self.app_id)
    }
}

/// A stream's view of the hub: replayed events first, then live ones.
#[derive(Debug)]
pub struct Subscription {
    pub replay: Vec<Event>,
    /// Ends when the hub cuts the stream off for falling behind ([`Receiver::fell_behind`]).
    pub live: Receiver,
}

struct Subscriber {
    filter: Filter,
    tx: Sender,
}

#[derive(Default)]
struct State {
    objects: HashMap<(String, String), Arc<Object>>,
    seq: u64,
    history: VecDeque<Arc<Change>>,
    subscribers: HashMap<String, Vec<Subscriber>>,
    watermarks: HashMap<(String, String), VecDeque<(u64, Instant)>>,
    relist: Option<HashMap<(String, String), Arc<Object>>>,
}

/// The view of one resource kind and its subscribers.
pub struct Hub {
    kind: &'static str,
    state: Mutex<State>,
    synced: watch::Sender<bool>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Hub {
    pub fn new(kind: &'static str) -> Arc<Self> {
        Arc::new(Self {
            kind,
            state: Mutex::new(State::default()),
            synced: watch::channel(false).0,
        })
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An object was created or changed.
    pub fn apply(&self, value: Value) {
        let object = Arc::new(Object::new(value));
        let mut state = self.lock();
        let old = state.objects.get(&object.key()).cloned();
        if old
            .as_ref()
            .is_some_and(|o| o.resource_version == object.resource_version)
        {
            return;
        }
        state.objects.insert(object.key(), object.clone());
        if old
            .as_ref()
            .is_some_and(|o| o.fingerprint == object.fingerprint)
        {
            return;
        }
        publish(&mut state, old, Some(object));
    }

    /// An object was deleted.
    pub fn delete(&self, value: Value) {
        let object = Object::new(value);
        let mut state = self.lock();
        if let Some(old) = state.objects.remove(&object.key()) {
            publish(&mut state, Some(old), None);
        }
    }

    /// A (re-)list starts: objects follow with [`Hub::relist_item`], then [`Hub::relist_done`].
    pub fn relist_start(&self) {
        self.lock().relist = Some(HashMap::new());
    }

    pub fn relist_item(&self, value: Value) {
        let mut state = self.lock();
        match state.relist.as_mut() {
            Some(pending) => {
                let object = Arc::new(Object::new(value));
                pending.insert(object.key(), object);
            }
            None => {
                drop(state);
                self.apply(value);
            }
        }
    }

    /// The list is complete: publish the difference to the previous view; the hub is synced.
    pub fn relist_done(&self) {
        let mut state = self.lock();
        let Some(listed) = state.relist.take() else {
            return;
        };
        let previous = std::mem::take(&mut state.objects);
        for (key, old) in &previous {
            if !listed.contains_key(key) {
                publish(&mut state, Some(old.clone()), None);
            }
        }
        for (key, new) in &listed {
            match previous.get(key) {
                Some(old) if old.fingerprint == new.fingerprint => {}
                old => publish(&mut state, old.cloned(), Some(new.clone())),
            }
        }
        state.objects = listed
            .into_iter()
            .map(|(key, new)| match previous.get(&key) {
                Some(old) if old.resource_version == new.resource_version => (key, old.clone()),
                _ => (key, new),
            })
            .collect();
        drop(state);
        self.synced.send_replace(true);
    }

    /// True once the first list completed.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits for the first list.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The objects of `namespace`, sorted by name. With `caller: Some(app id)` the position is
    /// recorded so that app's next stream replays what changes after this list.
    pub fn list(&self, namespace: &str, caller: Option<&str>) -> Vec<Arc<Object>> {
        let mut state = self.lock();
        let mut objects: Vec<_> = state
            .objects
            .values()
            .filter(|o| o.namespace == namespace)
            .cloned()
            .collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(app_id) = caller {
            let now = Instant::now();
            let seq = state.seq;
            let marks = state
                .watermarks
                .entry((namespace.to_owned(), app_id.to_owned()))
                .or_default();
            marks.retain(|(_, at)| now.duration_since(*at) < WATERMARK_TTL);
            if marks.len() >= WATERMARKS_PER_APP {
                marks.pop_front();
            }
            marks.push_back((seq, now));
        }
        objects
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<Object>> {
        self.lock()
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Registers a stream. Changes after the caller's oldest unconsumed List are replayed.
    pub fn subscribe(&self, filter: Filter) -> Subscription {
        let (tx, live) = queue::queue(SUBSCRIBER_BUFFER);
        let mut state = self.lock();
        let key = (filter.namespace.clone(), filter.app_id.clone());
        let mark = state.watermarks.get_mut(&key).and_then(|marks| {
            let now = Instant::now();
            marks.retain(|(_, at)| now.duration_since(*at) < WATERMARK_TTL);
            marks.pop_front().map(|(seq, _)| seq)
        });
        if state.watermarks.get(&key).is_some_and(VecDeque::is_empty) {
            state.watermarks.remove(&key);
        }
        let replay = match mark {
            None => Vec::new(),
            Some(seq) if seq == state.seq => Vec::new(),
            Some(seq) if state.history.front().is_some_and(|c| c.seq <= seq + 1) => state
                .history
                .iter()
                .filter(|c| c.seq > seq)
                .filter_map(|c| filter.event(c))
                .collect(),
            // The history no longer reaches back to the List: resend what the app sees now.
            Some(_) => {
                let mut objects: Vec<_> = state
                    .objects
                    .values()
                    .filter(|o| o.namespace == filter.namespace)
                    .filter(|o| filter.name.as_deref().is_none_or(|n| n == o.name))
                    .filter(|o| o.in_scope(&filter.app_id))
                    .cloned()
                    .collect();
                objects.sort_by(|a, b| a.name.cmp(&b.name));
                objects
                    .into_iter()
                    .map(|object| Event {
                        kind: EventKind::Updated,
                        object,
                    })
                    .collect()
            }
        };
        state
            .subscribers
            .entry(filter.namespace.clone())
            .or_default()
            .push(Subscriber { filter, tx });
        Subscription { replay, live }
    }

    /// Streams currently registered.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.values().map(Vec::len).sum()
    }
}

fn publish(state: &mut State, old: Option<Arc<Object>>, new: Option<Arc<Object>>) {
    state.seq += 1;
    let change = Arc::new(Change {
        seq: state.seq,
        old,
        new,
    });
    if state.history.len() >= HISTORY_LEN {
        state.history.pop_front();
    }
    state.history.push_back(change.clone());
    let namespace = change.namespace().to_owned();
    let Some(subscribers) = state.subscribers.get_mut(&namespace) else {
        return;
    };
    subscribers.retain(|s| {
        let Some(event) = s.filter.event(&change) else {
            return !s.tx.is_closed();
        };
        match s.tx.try_send(event) {
            Ok(()) => true,
            Err(SendError::Full) => {
                s.tx.fell_behind();
                false
            }
            Err(SendError::Closed) => false,
        }
    });
    if subscribers.is_empty() {
        state.subscribers.remove(&namespace);
    }
}

#[cfg(test)]
mod tests;
