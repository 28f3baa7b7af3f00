//! The state building block: the [`StateStore`] contract every store implements, Dapr's key
//! prefixing, TTL and option parsing. Stores live in submodules; the API layer is
//! [`crate::api`].

pub mod memory;
pub mod postgres;
pub mod query;
pub mod redis;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// Separator between a key prefix and the key (`<appid>||<key>`).
pub const KEY_SEPARATOR: &str = "||";
/// Metadata key of the per-item time to live.
pub const TTL_METADATA: &str = "ttlInSeconds";
/// Response metadata key of the expiry time (RFC 3339).
pub const TTL_EXPIRE_TIME: &str = "ttlExpireTime";

/// A failure of a store operation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("possible etag mismatch. error from state store: etag mismatch")]
    EtagMismatch,
    #[error("invalid etag value")]
    EtagInvalid,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Backend(String),
}

/// Features a store advertises (Dapr's names, shown by the metadata API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    Etag,
    Transactional,
    Ttl,
    QueryApi,
}

impl Feature {
    pub fn name(self) -> &'static str {
        match self {
            Feature::Etag => "ETAG",
            Feature::Transactional => "TRANSACTIONAL",
            Feature::Ttl => "TTL",
            Feature::QueryApi => "QUERY_API",
        }
    }
}

/// `first-write` or `last-write`.
///
/// Every store rejects any other value on writes and deletes with the error Dapr's stores give
/// (`unrecognized concurrency model 'x'`); reads ignore the options, as in Dapr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Concurrency {
    FirstWrite,
    #[default]
    LastWrite,
}

/// `eventual` or `strong`.
///
/// What `strong` means per store: `state.redis` waits (`WAIT <replicas> 1000`) until the
/// replicas connected when the store started acknowledge the write; `state.postgresql` and
/// `state.in-memory` are strongly consistent already (a write is committed, and visible to every
/// later read, before daprd answers), so both values behave the same there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Consistency {
    #[default]
    Eventual,
    Strong,
}

impl Concurrency {
    /// Parses Dapr's option value; empty is the default.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "" | "last-write" => Ok(Concurrency::LastWrite),
            "first-write" => Ok(Concurrency::FirstWrite),
            other => Err(format!(
                "unrecognized concurrency model '{other}': use first-write or last-write"
            )),
        }
    }
}

impl Consistency {
    /// Parses Dapr's option value; empty is the default.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "" | "eventual" => Ok(Consistency::Eventual),
            "strong" => Ok(Consistency::Strong),
            other => Err(format!(
                "unrecognized consistency model '{other}': use eventual or strong"
            )),
        }
    }
}

/// A stored value as read.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub data: Bytes,
    pub etag: Option<String>,
    /// Response metadata, such as `ttlExpireTime`.
    pub metadata: BTreeMap<String, String>,
}

/// One write. `key` is already prefixed.
#[derive(Debug, Clone, PartialEq)]
pub struct SetRequest {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    pub consistency: Consistency,
    /// Time to live; `None` is forever.
    pub ttl: Option<Duration>,
    pub metadata: BTreeMap<String, String>,
}

/// One delete. `key` is already prefixed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteRequest {
    pub key: String,
    pub etag: Option<String>,
    pub concurrency: Concurrency,
    pub consistency: Consistency,
    pub metadata: BTreeMap<String, String>,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Operation {
    Upsert(SetRequest),
    Delete(DeleteRequest),
}

/// A store's answer to a query: keys still prefixed, values as JSON.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QueryResponse {
    pub results: Vec<QueryItem>,
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryItem {
    pub key: String,
    pub data: Bytes,
    pub etag: Option<String>,
}

/// What every state store implements. Keys are already prefixed by the caller.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The features shown in the metadata API and checked before transactions and queries.
    fn features(&self) -> &'static [Feature];
    /// Reads a key; `None` when it is missing or expired.
    async fn get(
        &self,
        key: &str,
        consistency: Consistency,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Item>, StoreError>;
    async fn set(&self, request: SetRequest) -> Result<(), StoreError>;
    async fn delete(&self, request: DeleteRequest) -> Result<(), StoreError>;
    /// Applies every operation or none. Only called when `features()` has `Transactional`.
    async fn transact(&self, operations: Vec<Operation>) -> Result<(), StoreError> {
        let _ = operations;
        Err(StoreError::Backend(
            "this store does not support transactions".into(),
        ))
    }
    /// Runs a query over the keys that start with `key_prefix`. Only called when `features()`
    /// has `QueryApi`.
    async fn query(
        &self,
        key_prefix: &str,
        query: &query::Query,
    ) -> Result<QueryResponse, StoreError> {
        let _ = (key_prefix, query);
        Err(StoreError::Backend(
            "this store does not support queries".into(),
        ))
    }
    /// Checks the backing service is reachable (used before a hot-reloaded store is swapped in).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Releases connections and background tasks.
    async fn close(&self) {}
}

/// How the key daprd hands to the store is built (`keyPrefix` metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPrefix {
    AppId,
    Name,
    Namespace,
    None,
    Literal(String),
}

impl KeyPrefix {
    /// Parses the `keyPrefix` component metadata (empty is `appid`).
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.contains(KEY_SEPARATOR) {
            return Err(format!(
                "keyPrefix {value:?} can't contain '||'; use appid, name, namespace, none or a literal prefix"
            ));
        }
        Ok(match value.to_ascii_lowercase().as_str() {
            "" | "appid" => KeyPrefix::AppId,
            "name" => KeyPrefix::Name,
            "namespace" => KeyPrefix::Namespace,
            "none" => KeyPrefix::None,
            _ => KeyPrefix::Literal(value.to_owned()),
        })
    }

    /// The prefix including the separator, or "" for `none`.
    pub fn prefix(&self, app_id: &str, store: &str, namespace: Option<&str>) -> String {
        let head = match self {
            KeyPrefix::AppId => app_id.to_owned(),
            KeyPrefix::Name => store.to_owned(),
            KeyPrefix::Namespace => match namespace {
                Some(ns) if !ns.is_empty() => format!("{ns}.{app_id}"),
                _ => app_id.to_owned(),
            },
            KeyPrefix::None => return String::new(),
            KeyPrefix::Literal(prefix) => prefix.clone(),
        };
        format!("{head}{KEY_SEPARATOR}")
    }
}

/// The key as the app sees it: the part after the first `||` (Dapr's `GetOriginalStateKey`).
pub fn original_key(key: &str) -> &str {
    let mut parts = key.splitn(3, KEY_SEPARATOR);
    match (parts.next(), parts.next()) {
        (Some(_), Some(second)) => second,
        _ => key,
    }
}

/// Parses item metadata `ttlInSeconds`: absent or `-1` is forever.
pub fn parse_ttl(metadata: &BTreeMap<String, String>) -> Result<Option<Duration>, StoreError> {
    let Some(raw) = metadata.get(TTL_METADATA) else {
        return Ok(None);
    };
    let seconds: i64 = raw.trim().parse().map_err(|_| {
        StoreError::BadRequest(format!(
            "incorrect value for metadata '{TTL_METADATA}': {raw:?} is not an integer"
        ))
    })?;
    match seconds {
        -1 => Ok(None),
        s if s < -1 => Err(StoreError::BadRequest(format!(
            "incorrect value for metadata '{TTL_METADATA}': {s}; use -1 (never expire) or a positive number"
        ))),
        s => Ok(Some(Duration::from_secs(s.unsigned_abs()))),
    }
}

/// RFC 3339 text of a wall-clock instant, for `ttlExpireTime`.
pub fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A random v4 UUID as text (in-memory ETags).
pub fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_prefixes_follow_dapr() {
        let p = |v: &str, ns| KeyPrefix::parse(v).unwrap().prefix("app", "store", ns);
        assert_eq!(p("", None), "app||");
        assert_eq!(p("appid", Some("x")), "app||");
        assert_eq!(p("name", None), "store||");
        assert_eq!(p("namespace", Some("prod")), "prod.app||");
        assert_eq!(p("namespace", None), "app||");
        assert_eq!(p("none", None), "");
        assert_eq!(p("custom", None), "custom||");
        assert!(KeyPrefix::parse("a||b").is_err());
    }

    #[test]
    fn original_keys_drop_the_prefix() {
        assert_eq!(original_key("app||k"), "k");
        assert_eq!(original_key("k"), "k");
        assert_eq!(original_key("a||b||c"), "b");
    }

    #[test]
    fn ttl_parsing() {
        let m = |v: &str| BTreeMap::from([(TTL_METADATA.to_owned(), v.to_owned())]);
        assert_eq!(parse_ttl(&BTreeMap::new()), Ok(None));
        assert_eq!(parse_ttl(&m("-1")), Ok(None));
        assert_eq!(parse_ttl(&m("5")), Ok(Some(Duration::from_secs(5))));
        assert!(parse_ttl(&m("x")).is_err());
        assert!(parse_ttl(&m("-2")).is_err());
    }

    #[test]
    fn uuids_look_like_uuids() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }
}
