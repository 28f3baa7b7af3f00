//! `state.redis`, compatible with Dapr's layout: each key is a hash with fields `data` (the
//! value) and `version` (the ETag: 1, 2, 3...), so data written by Dapr is readable here and
//! back. Writes, deletes and transactions run as one Lua script that checks every ETag first
//! and applies everything or nothing.
//!
//! `consistency: strong` works as in Dapr's Redis store: when the server had replicas connected
//! at start-up (`INFO replication`, `connected_slaves`), a strong write is followed by
//! `WAIT <replicas> 1000` on the connection that wrote it, so daprd answers once the replicas
//! acknowledged it (or after one second, which, as in Dapr, is not an error). Dapr waits on
//! saves only; daprs waits on strong deletes and transactions too. Without replicas there
//! is nothing to wait for and no `WAIT` is sent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;

use super::{
    Concurrency, Consistency, DeleteRequest, Feature, Item, Operation, SetRequest, StateStore,
    StoreError, TTL_EXPIRE_TIME, rfc3339,
};
use crate::components::Instance;
use crate::components::registry::Registry;

/// Checks every operation's ETag, then applies all of them. Each operation has one key and five
/// ARGV values: kind (`S` set, `D` delete), etag (`""` none), first-write (`1`/`0`), value,
/// TTL in seconds (`""` none).
const SCRIPT: &str = r#"
local n = #KEYS
for i = 1, n do
  local b = (i - 1) * 5
  local kind, etag, first = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3]
  local version = redis.call('HGET', KEYS[i], 'version')
  if etag ~= '' then
    if (not version) or version ~= etag then return {'mismatch', i} end
  elseif kind == 'S' and first == '1' and version then
    return {'mismatch', i}
  end
end
for i = 1, n do
  local b = (i - 1) * 5
  if ARGV[b + 1] == 'S' then
    redis.call('HSET', KEYS[i], 'data', ARGV[b + 4])
    redis.call('HINCRBY', KEYS[i], 'version', 1)
    if ARGV[b + 5] ~= '' then
      redis.call('EXPIRE', KEYS[i], tonumber(ARGV[b + 5]))
    else
      redis.call('PERSIST', KEYS[i])
    end
  else
    redis.call('DEL', KEYS[i])
  end
end
return {'ok', 0}
"#;

/// How long a strong write waits for its replicas (Dapr's value), in milliseconds.
pub const STRONG_WAIT_TIMEOUT_MS: u64 = 1000;
/// The response timeout of the connection strong writes use: longer than the `WAIT` itself.
const STRONG_RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The Redis store.
pub struct RedisStore {
    connection: MultiplexedConnection,
    /// Replicas connected at start-up: what a strong write waits for.
    replicas: u32,
    /// A connection of its own for strong writes, when there are replicas: `WAIT` blocks the
    /// connection it runs on, so eventual requests must not queue behind it.
    strong: Option<MultiplexedConnection>,
    script: Arc<redis::Script>,
    /// Component-level `ttlInSeconds`: applied to writes without their own TTL.
    default_ttl: Option<Duration>,
}

fn backend(error: redis::RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {error}"))
}

/// Builds the connection URL from Dapr's metadata (`redisHost`, `redisPassword`,
/// `redisUsername`, `redisDB`).
pub fn url(properties: &crate::components::Properties) -> Result<String, String> {
    let host = properties.required("redisHost", "the Redis address as host:port")?;
    if properties.bool("enableTLS", false)? {
        return Err(
            "metadata field \"enableTLS\": TLS to Redis is not supported by daprs yet".into(),
        );
    }
    if properties
        .get("redisType")
        .is_some_and(|t| t.eq_ignore_ascii_case("cluster"))
        || properties.bool("failover", false)?
    {
        return Err(
            "metadata fields \"redisType: cluster\" and \"failover\" are not supported by daprs yet; use a single node"
                .into(),
        );
    }
    let user = properties.get("redisUsername").unwrap_or_default();
    let password = properties.get("redisPassword").unwrap_or_default();
    let auth = match (user.is_empty(), password.is_empty()) {
        (true, true) => String::new(),
        (_, false) => format!("{}:{}@", encode(user), encode(password)),
        (false, true) => format!("{}@", encode(user)),
    };
    let db = match properties.get("redisDB").filter(|d| !d.is_empty()) {
        None => 0,
        Some(d) => d
            .parse::<u32>()
            .map_err(|_| format!("metadata field \"redisDB\": {d:?} is not a database number"))?,
    };
    Ok(format!("redis://{auth}{host}/{db}"))
}

/// `connected_slaves:<n>` of `INFO replication` (0 when absent, as in Dapr).
fn connected_replicas(info: &str) -> u32 {
    info.lines()
        .find_map(|line| line.trim().strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl RedisStore {
    pub async fn connect(properties: &crate::components::Properties) -> Result<Self, String> {
        let url = url(properties)?;
        let default_ttl = match properties.get("ttlInSeconds").filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => match t.parse::<i64>() {
                Ok(s) if s > 0 => Some(Duration::from_secs(s.unsigned_abs())),
                Ok(_) => None,
                Err(_) => {
                    return Err(format!(
                        "metadata field \"ttlInSeconds\": {t:?} is not a number of seconds"
                    ));
                }
            },
        };
        let client = redis::Client::open(url.as_str())
            .map_err(|e| format!("metadata field \"redisHost\": {e}"))?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| format!("failed to connect to Redis: {e}"))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("Redis did not answer PING: {e}"))?;
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("Redis did not answer INFO replication: {e}"))?;
        let replicas = connected_replicas(&info);
        let strong = if replicas > 0 {
            let config = redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(STRONG_RESPONSE_TIMEOUT));
            Some(
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map_err(|e| format!("failed to connect to Redis: {e}"))?,
            )
        } else {
            None
        };
        Ok(RedisStore {
            connection,
            replicas,
            strong,
            script: Arc::new(redis::Script::new(SCRIPT)),
            default_ttl,
        })
    }

    async fn run(&self, operations: Vec<Operation>) -> Result<(), StoreError> {
        let mut invocation = self.script.prepare_invoke();
        for op in &operations {
            let (key, kind, etag, first, value, ttl) = match op {
                Operation::Upsert(s) => (
                    &s.key,
                    "S",
                    &s.etag,
                    s.concurrency == Concurrency::FirstWrite,
                    s.value.to_vec(),
                    s.ttl
                        .or(self.default_ttl)
                        .map(|t| t.as_secs().to_string())
                        .unwrap_or_default(),
                ),
                Operation::Delete(d) => (&d.key, "D", &d.etag, false, Vec::new(), String::new()),
            };
            if let Some(etag) = etag
                && etag.parse::<u64>().is_err()
            {
                return Err(StoreError::EtagInvalid);
            }
            invocation
                .key(key)
                .arg(kind)
                .arg(etag.clone().unwrap_or_default())
                .arg(if first { "1" } else { "0" })
                .arg(value)
                .arg(ttl);
        }
        let wants_strong = operations.iter().any(|op| {
            let consistency = match op {
                Operation::Upsert(s) => s.consistency,
                Operation::Delete(d) => d.consistency,
            };
            consistency == Consistency::Strong
        });
        let strong = self.strong.as_ref().filter(|_| wants_strong);
        let mut connection = strong.unwrap_or(&self.connection).clone();
        let (status, _index): (String, i64) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(backend)?;
        if status != "ok" {
            return Err(StoreError::EtagMismatch);
        }
        if strong.is_some() {
            // WAIT covers every write sent before it on this connection, ours included.
            let acknowledged: i64 = redis::cmd("WAIT")
                .arg(self.replicas)
                .arg(STRONG_WAIT_TIMEOUT_MS)
                .query_async(&mut connection)
                .await
                .map_err(|e| {
                    StoreError::Backend(format!(
                        "redis waiting for {} replicas to acknowledge write, err: {e}",
                        self.replicas
                    ))
                })?;
            if acknowledged < i64::from(self.replicas) {
                tracing::warn!(
                    acknowledged,
                    replicas = self.replicas,
                    "strong write: not every replica acknowledged within {STRONG_WAIT_TIMEOUT_MS} ms"
                );
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StateStore for RedisStore {
    fn features(&self) -> &'static [Feature] {
        &[Feature::Etag, Feature::Transactional, Feature::Ttl]
    }

    async fn get(
        &self,
        key: &str,
        _consistency: Consistency,
        _metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Item>, StoreError> {
        let mut connection = self.connection.clone();
        let ((data, version), ttl): ((Option<Vec<u8>>, Option<String>), i64) = redis::pipe()
            .cmd("HMGET")
            .arg(key)
            .arg("data")
            .arg("version")
            .cmd("TTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .map_err(backend)?;
        let Some(data) = data else {
            return Ok(None);
        };
        let mut metadata = BTreeMap::new();
        if ttl > 0 {
            let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(ttl);
            metadata.insert(TTL_EXPIRE_TIME.to_owned(), rfc3339(at));
        }
        Ok(Some(Item {
            data: Bytes::from(data),
            etag: version,
            metadata,
        }))
    }

    async fn set(&self, request: SetRequest) -> Result<(), StoreError> {
        self.run(vec![Operation::Upsert(request)]).await
    }

    async fn delete(&self, request: DeleteRequest) -> Result<(), StoreError> {
        self.run(vec![Operation::Delete(request)]).await
    }

    async fn transact(&self, operations: Vec<Operation>) -> Result<(), StoreError> {
        self.run(operations).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let _: String = redis::cmd("PING")
            .query_async(&mut connection)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// Adds `state.redis` (v1) to the registry.
pub fn register(registry: &mut Registry) {
    registry.register("state.redis", "v1", |ctx| {
        Box::pin(async move {
            let store = RedisStore::connect(&ctx.properties).await?;
            Ok(Instance::State(Arc::new(store)))
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::components::Properties;

    fn props(pairs: &[(&str, &str)]) -> Properties {
        Properties {
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn replicas_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1\r\n";
        assert_eq!(connected_replicas(info), 2);
        assert_eq!(connected_replicas("# Replication\r\nrole:master\r\n"), 0);
        assert_eq!(connected_replicas(""), 0);
    }

    #[test]
    fn urls_from_dapr_metadata() {
        assert_eq!(
            url(&props(&[
                ("redisHost", "localhost:6379"),
                ("redisPassword", "")
            ]))
            .unwrap(),
            "redis://localhost:6379/0"
        );
        assert_eq!(
            url(&props(&[
                ("redisHost", "h:1"),
                ("redisPassword", "p@ss"),
                ("redisDB", "2")
            ]))
            .unwrap(),
            "redis://:p%40ss@h:1/2"
        );
        assert!(url(&props(&[])).unwrap_err().contains("redisHost"));
        assert!(
            url(&props(&[("redisHost", "h:1"), ("enableTLS", "true")]))
                .unwrap_err()
                .contains("enableTLS")
        );
        assert!(
            url(&props(&[("redisHost", "h:1"), ("redisDB", "x")]))
                .unwrap_err()
                .contains("redisDB")
        );
    }
}
