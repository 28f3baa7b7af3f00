//! `state.redis`, compatible with Dapr's layout: each key is a hash with fields `data` (the
//! value) and `version` (the ETag: 1, 2, 3...), so data written by Dapr is readable here and
//! back. Writes, deletes and transactions run as one Lua script that checks every ETag first
//! and applies everything or nothing.

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

/// The Redis store.
pub struct RedisStore {
    connection: MultiplexedConnection,
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
        Ok(RedisStore {
            connection,
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
        let mut connection = self.connection.clone();
        let (status, _index): (String, i64) = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(backend)?;
        match status.as_str() {
            "ok" => Ok(()),
            _ => Err(StoreError::EtagMismatch),
        }
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
