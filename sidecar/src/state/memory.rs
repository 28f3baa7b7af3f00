//! `state.in-memory`: a map in the process. ETags are a new UUID per write, TTLs expire lazily
//! and by a sweeper, transactions are atomic under one lock, and it can be queried.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::query::Query;
use super::{
    Consistency, DeleteRequest, Feature, Item, Operation, QueryItem, QueryResponse, SetRequest,
    StateStore, StoreError, TTL_EXPIRE_TIME, rfc3339, uuid_v4,
};

/// How often expired entries are removed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Entry {
    data: Bytes,
    etag: String,
    /// Monotonic deadline and its wall-clock twin for `ttlExpireTime`.
    expires: Option<(Instant, time::OffsetDateTime)>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|(at, _)| at > now)
    }
}

type Map = HashMap<String, Entry>;

/// The in-memory store.
pub struct MemoryStore {
    map: Arc<Mutex<Map>>,
    sweeper: tokio::task::JoinHandle<()>,
}

impl MemoryStore {
    /// Creates the store and its sweeper (needs a Tokio runtime).
    pub fn new() -> Self {
        let map = Arc::new(Mutex::new(Map::new()));
        let weak: Weak<Mutex<Map>> = Arc::downgrade(&map);
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                let Some(map) = weak.upgrade() else { return };
                let now = Instant::now();
                lock(&map).retain(|_, e| e.live(now));
            }
        });
        MemoryStore { map, sweeper }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

/// The map lock; a panic while holding it cannot leave an entry half-written, so a poisoned
/// lock is still usable.
fn lock(map: &Mutex<Map>) -> MutexGuard<'_, Map> {
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn check_set(map: &Map, now: Instant, request: &SetRequest) -> Result<(), StoreError> {
    let current = map.get(&request.key).filter(|e| e.live(now));
    match (&request.etag, current) {
        (Some(etag), Some(entry)) if *etag == entry.etag => Ok(()),
        (Some(_), _) => Err(StoreError::EtagMismatch),
        (None, Some(_)) if request.concurrency == super::Concurrency::FirstWrite => {
            Err(StoreError::EtagMismatch)
        }
        (None, _) => Ok(()),
    }
}

fn check_delete(map: &Map, now: Instant, request: &DeleteRequest) -> Result<(), StoreError> {
    match &request.etag {
        None => Ok(()),
        Some(etag) => match map.get(&request.key).filter(|e| e.live(now)) {
            Some(entry) if entry.etag == *etag => Ok(()),
            _ => Err(StoreError::EtagMismatch),
        },
    }
}

fn apply_set(map: &mut Map, now: Instant, request: SetRequest) {
    let expires = request.ttl.map(|ttl| {
        (
            now + ttl,
            time::OffsetDateTime::now_utc() + time::Duration::try_from(ttl).unwrap_or_default(),
        )
    });
    map.insert(
        request.key,
        Entry {
            data: request.value,
            etag: uuid_v4(),
            expires,
        },
    );
}

#[async_trait]
impl StateStore for MemoryStore {
    fn features(&self) -> &'static [Feature] {
        &[
            Feature::Etag,
            Feature::Transactional,
            Feature::Ttl,
            Feature::QueryApi,
        ]
    }

    async fn get(
        &self,
        key: &str,
        _consistency: Consistency,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Item>, StoreError> {
        let now = Instant::now();
        let map = lock(&self.map);
        Ok(map.get(key).filter(|e| e.live(now)).map(|e| Item {
            data: e.data.clone(),
            etag: Some(e.etag.clone()),
            metadata: e
                .expires
                .map(|(_, wall)| BTreeMap::from([(TTL_EXPIRE_TIME.to_owned(), rfc3339(wall))]))
                .unwrap_or_default(),
        }))
    }

    async fn set(&self, request: SetRequest) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut map = lock(&self.map);
        check_set(&map, now, &request)?;
        apply_set(&mut map, now, request);
        Ok(())
    }

    async fn delete(&self, request: DeleteRequest) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut map = lock(&self.map);
        check_delete(&map, now, &request)?;
        map.remove(&request.key);
        Ok(())
    }

    async fn transact(&self, operations: Vec<Operation>) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut map = lock(&self.map);
        // Check against a scratch copy of the touched keys so that later operations see
        // earlier ones, then apply everything or nothing.
        let mut scratch: Map = operations
            .iter()
            .filter_map(|op| {
                let key = match op {
                    Operation::Upsert(s) => &s.key,
                    Operation::Delete(d) => &d.key,
                };
                map.get(key).map(|e| (key.clone(), e.clone()))
            })
            .collect();
        for op in &operations {
            match op {
                Operation::Upsert(s) => {
                    check_set(&scratch, now, s)?;
                    apply_set(&mut scratch, now, s.clone());
                }
                Operation::Delete(d) => {
                    check_delete(&scratch, now, d)?;
                    scratch.remove(&d.key);
                }
            }
        }
        for op in operations {
            match op {
                Operation::Upsert(s) => apply_set(&mut map, now, s),
                Operation::Delete(d) => {
                    map.remove(&d.key);
                }
            }
        }
        Ok(())
    }

    async fn query(&self, key_prefix: &str, query: &Query) -> Result<QueryResponse, StoreError> {
        let now = Instant::now();
        let rows: Vec<((String, String, Bytes), serde_json::Value)> = {
            let map = lock(&self.map);
            map.iter()
                .filter(|(k, e)| k.starts_with(key_prefix) && e.live(now))
                .filter_map(|(k, e)| {
                    let value = serde_json::from_slice(&e.data).ok()?;
                    Some(((k.clone(), e.etag.clone(), e.data.clone()), value))
                })
                .collect()
        };
        let mut rows = rows;
        // A stable order for unsorted queries and for paging.
        rows.sort_by(|a, b| a.0.0.cmp(&b.0.0));
        let (page, token) = query.run(rows).map_err(StoreError::BadRequest)?;
        Ok(QueryResponse {
            results: page
                .into_iter()
                .map(|((key, etag, data), _)| QueryItem {
                    key,
                    data,
                    etag: Some(etag),
                })
                .collect(),
            token,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn close(&self) {
        self.sweeper.abort();
        lock(&self.map).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Concurrency;

    fn set(key: &str, value: &str, etag: Option<&str>) -> SetRequest {
        SetRequest {
            key: key.into(),
            value: Bytes::copy_from_slice(value.as_bytes()),
            etag: etag.map(str::to_owned),
            concurrency: Concurrency::LastWrite,
            consistency: Consistency::Eventual,
            ttl: None,
            metadata: BTreeMap::new(),
        }
    }

    fn del(key: &str, etag: Option<&str>) -> DeleteRequest {
        DeleteRequest {
            key: key.into(),
            etag: etag.map(str::to_owned),
            concurrency: Concurrency::LastWrite,
            consistency: Consistency::Eventual,
            metadata: BTreeMap::new(),
        }
    }

    async fn get(store: &MemoryStore, key: &str) -> Option<Item> {
        store
            .get(key, Consistency::Eventual, &BTreeMap::new())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn etags_guard_writes() {
        let store = MemoryStore::new();
        store.set(set("k", "1", None)).await.unwrap();
        let etag = get(&store, "k").await.unwrap().etag.unwrap();
        assert_eq!(
            store.set(set("k", "2", Some("wrong"))).await,
            Err(StoreError::EtagMismatch)
        );
        store.set(set("k", "2", Some(&etag))).await.unwrap();
        assert_eq!(
            store.set(set("k", "3", Some(&etag))).await,
            Err(StoreError::EtagMismatch),
            "an etag is good for one write"
        );
        assert_eq!(
            store.set(set("missing", "1", Some(&etag))).await,
            Err(StoreError::EtagMismatch)
        );
        let mut first = set("k", "4", None);
        first.concurrency = Concurrency::FirstWrite;
        assert_eq!(store.set(first).await, Err(StoreError::EtagMismatch));
        assert_eq!(
            store.delete(del("k", Some("wrong"))).await,
            Err(StoreError::EtagMismatch)
        );
        let etag = get(&store, "k").await.unwrap().etag.unwrap();
        store.delete(del("k", Some(&etag))).await.unwrap();
        assert!(get(&store, "k").await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expires_entries() {
        let store = MemoryStore::new();
        let mut request = set("k", "1", None);
        request.ttl = Some(Duration::from_secs(2));
        store.set(request).await.unwrap();
        let item = get(&store, "k").await.unwrap();
        assert!(item.metadata.contains_key(TTL_EXPIRE_TIME));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(get(&store, "k").await.is_none());
    }

    #[tokio::test]
    async fn transactions_are_all_or_nothing() {
        let store = MemoryStore::new();
        store.set(set("a", "1", None)).await.unwrap();
        let failing = vec![
            Operation::Upsert(set("b", "2", None)),
            Operation::Delete(del("a", Some("wrong"))),
        ];
        assert_eq!(store.transact(failing).await, Err(StoreError::EtagMismatch));
        assert!(get(&store, "b").await.is_none(), "nothing applied");
        let etag = get(&store, "a").await.unwrap().etag.unwrap();
        store
            .transact(vec![
                Operation::Upsert(set("b", "2", None)),
                Operation::Delete(del("a", Some(&etag))),
            ])
            .await
            .unwrap();
        assert!(get(&store, "a").await.is_none());
        assert_eq!(get(&store, "b").await.unwrap().data, "2");
    }

    #[tokio::test]
    async fn queries_see_only_the_prefix() {
        let store = MemoryStore::new();
        store.set(set("app||1", r#"{"n":1}"#, None)).await.unwrap();
        store.set(set("app||2", r#"{"n":2}"#, None)).await.unwrap();
        store
            .set(set("other||3", r#"{"n":3}"#, None))
            .await
            .unwrap();
        let query = Query::parse(br#"{"filter":{"GTE":{"n":1}}}"#).unwrap();
        let response = store.query("app||", &query).await.unwrap();
        let keys: Vec<_> = response.results.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["app||1", "app||2"]);
    }
}
