//! `state.postgresql` (alias `state.postgres`), version v1 with Dapr's table layout: `key text`
//! primary key, `value jsonb`, `isbinary boolean` (binary values as a base64 JSON string),
//! `insertdate`, `updatedate`, `expiredate`; the ETag is the row's `xmin`. The table and
//! `dapr_metadata` are created when absent. Transactions run in one database transaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_postgres::{Client, GenericClient, NoTls};

use super::query::Query;
use super::{
    Concurrency, Consistency, DeleteRequest, Feature, Item, Operation, QueryItem, QueryResponse,
    SetRequest, StateStore, StoreError, TTL_EXPIRE_TIME,
};
use crate::components::registry::Registry;
use crate::components::{Instance, Properties};

/// Default `tableName` (Dapr's v1 default).
pub const DEFAULT_TABLE: &str = "state";
/// Default `metadataTableName`.
pub const DEFAULT_METADATA_TABLE: &str = "dapr_metadata";
/// Default `cleanupInterval` of expired rows.
pub const DEFAULT_CLEANUP_INTERVAL: Duration = Duration::from_secs(3600);

/// The PostgreSQL store: one connection for single statements (pipelined), one for
/// transactions.
pub struct PostgresStore {
    client: Client,
    tx_client: Mutex<Client>,
    table: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn backend(error: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(format!("postgresql: {error}"))
}

/// A table name Dapr accepts: letters, digits, `_`, optionally `schema.table`.
fn valid_table(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').count() <= 2
        && name
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
}

async fn connect(connection_string: &str) -> Result<(Client, tokio::task::JoinHandle<()>), String> {
    let (client, connection) = tokio_postgres::connect(connection_string, NoTls)
        .await
        .map_err(|e| format!("failed to connect to PostgreSQL: {e}"))?;
    let task = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "PostgreSQL connection closed");
        }
    });
    Ok((client, task))
}

/// Stored form of a value: JSON as jsonb, anything else as a base64 string marked binary.
fn encode(value: &[u8]) -> (Value, bool) {
    match serde_json::from_slice::<Value>(value) {
        Ok(json) => (json, false),
        Err(_) => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
            true,
        ),
    }
}

fn decode(value: Value, is_binary: bool) -> Bytes {
    if is_binary
        && let Value::String(text) = &value
        && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(text)
    {
        return Bytes::from(raw);
    }
    Bytes::from(value.to_string())
}

fn etag_number(etag: &str) -> Result<u32, StoreError> {
    etag.parse::<u32>().map_err(|_| StoreError::EtagInvalid)
}

impl PostgresStore {
    pub async fn open(properties: &Properties) -> Result<Self, String> {
        let connection_string = properties.required(
            "connectionString",
            "a PostgreSQL connection string such as \"host=localhost user=postgres password=... port=5432 database=dapr\"",
        )?;
        let table = properties
            .get("tableName")
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_TABLE)
            .to_owned();
        if !valid_table(&table) {
            return Err(format!(
                "metadata field \"tableName\": {table:?} may contain only letters, digits and '_' (optionally schema.table)"
            ));
        }
        let metadata_table = properties
            .get("metadataTableName")
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_METADATA_TABLE)
            .to_owned();
        if !valid_table(&metadata_table) {
            return Err(format!(
                "metadata field \"metadataTableName\": {metadata_table:?} may contain only letters, digits and '_'"
            ));
        }
        let cleanup = match properties.get("cleanupInterval").filter(|t| !t.is_empty()) {
            None => Some(DEFAULT_CLEANUP_INTERVAL),
            Some(v) if v.starts_with('-') || v == "0" => None,
            Some(v) => Some(
                daprs_api::duration::parse_go_duration(v)
                    .map_err(|e| format!("metadata field \"cleanupInterval\": {e}"))?,
            ),
        };
        let (client, task1) = connect(connection_string).await?;
        let (tx_client, task2) = connect(connection_string).await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {metadata_table} (key text NOT NULL PRIMARY KEY, value text NOT NULL);
                 CREATE TABLE IF NOT EXISTS {table} (
                   key text NOT NULL PRIMARY KEY,
                   value jsonb NOT NULL,
                   isbinary boolean NOT NULL,
                   insertdate TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
                   updatedate TIMESTAMP WITH TIME ZONE NULL,
                   expiredate TIMESTAMP WITH TIME ZONE NULL);"
            ))
            .await
            .map_err(|e| format!("failed to create table {table}: {e}"))?;
        let mut tasks = vec![task1, task2];
        if let Some(every) = cleanup {
            let statement =
                format!("DELETE FROM {table} WHERE expiredate IS NOT NULL AND expiredate < now()");
            let (cleaner, task3) = connect(connection_string).await?;
            tasks.push(task3);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(error) = cleaner.execute(statement.as_str(), &[]).await {
                        tracing::warn!(%error, "failed to delete expired state rows");
                    }
                }
            }));
        }
        Ok(PostgresStore {
            client,
            tx_client: Mutex::new(tx_client),
            table,
            tasks,
        })
    }

    async fn apply<C: GenericClient>(&self, c: &C, op: &Operation) -> Result<(), StoreError> {
        let table = &self.table;
        match op {
            Operation::Upsert(s) => {
                let (value, binary) = encode(&s.value);
                let ttl = s.ttl.map(|t| t.as_secs_f64());
                let rows = match (&s.etag, s.concurrency) {
                    (Some(etag), _) => {
                        let etag = etag_number(etag)?;
                        c.execute(
                            &format!(
                                "UPDATE {table} SET value = $2, isbinary = $3, updatedate = now(),
                                   expiredate = CASE WHEN $4::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $4::float8) END
                                 WHERE key = $1 AND xmin::text::bigint = $5
                                   AND (expiredate IS NULL OR expiredate > now())"
                            ),
                            &[&s.key, &value, &binary, &ttl, &i64::from(etag)],
                        )
                        .await
                    }
                    (None, Concurrency::FirstWrite) => {
                        c.execute(
                            &format!(
                                "INSERT INTO {table} (key, value, isbinary, expiredate)
                                 VALUES ($1, $2, $3, CASE WHEN $4::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $4::float8) END)
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, isbinary = excluded.isbinary,
                                   updatedate = now(), expiredate = excluded.expiredate
                                 WHERE {table}.expiredate IS NOT NULL AND {table}.expiredate <= now()"
                            ),
                            &[&s.key, &value, &binary, &ttl],
                        )
                        .await
                    }
                    (None, Concurrency::LastWrite) => {
                        c.execute(
                            &format!(
                                "INSERT INTO {table} (key, value, isbinary, expiredate)
                                 VALUES ($1, $2, $3, CASE WHEN $4::float8 IS NULL THEN NULL ELSE now() + make_interval(secs => $4::float8) END)
                                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, isbinary = excluded.isbinary,
                                   updatedate = now(), expiredate = excluded.expiredate"
                            ),
                            &[&s.key, &value, &binary, &ttl],
                        )
                        .await
                    }
                }
                .map_err(backend)?;
                if rows == 0 {
                    return Err(StoreError::EtagMismatch);
                }
                Ok(())
            }
            Operation::Delete(d) => match &d.etag {
                None => {
                    c.execute(&format!("DELETE FROM {table} WHERE key = $1"), &[&d.key])
                        .await
                        .map_err(backend)?;
                    Ok(())
                }
                Some(etag) => {
                    let etag = i64::from(etag_number(etag)?);
                    let rows = c
                        .execute(
                            &format!(
                                "DELETE FROM {table} WHERE key = $1 AND xmin::text::bigint = $2
                                   AND (expiredate IS NULL OR expiredate > now())"
                            ),
                            &[&d.key, &etag],
                        )
                        .await
                        .map_err(backend)?;
                    if rows == 0 {
                        return Err(StoreError::EtagMismatch);
                    }
                    Ok(())
                }
            },
        }
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

#[async_trait]
impl StateStore for PostgresStore {
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
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT value, isbinary, xmin::text,
                       to_char(expiredate AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
                     FROM {} WHERE key = $1 AND (expiredate IS NULL OR expiredate > now())",
                    self.table
                ),
                &[&key],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|row| {
            let value: Value = row.get(0);
            let binary: bool = row.get(1);
            let etag: String = row.get(2);
            let expires: Option<String> = row.get(3);
            Item {
                data: decode(value, binary),
                etag: Some(etag),
                metadata: expires
                    .map(|e| BTreeMap::from([(TTL_EXPIRE_TIME.to_owned(), e)]))
                    .unwrap_or_default(),
            }
        }))
    }

    async fn set(&self, request: SetRequest) -> Result<(), StoreError> {
        self.apply(&self.client, &Operation::Upsert(request)).await
    }

    async fn delete(&self, request: DeleteRequest) -> Result<(), StoreError> {
        self.apply(&self.client, &Operation::Delete(request)).await
    }

    async fn transact(&self, operations: Vec<Operation>) -> Result<(), StoreError> {
        let mut client = self.tx_client.lock().await;
        let tx = client.transaction().await.map_err(backend)?;
        for op in &operations {
            // Dropping the transaction on error rolls it back.
            self.apply(&tx, op).await?;
        }
        tx.commit().await.map_err(backend)
    }

    async fn query(&self, key_prefix: &str, query: &Query) -> Result<QueryResponse, StoreError> {
        let pattern = format!(
            "{}%",
            key_prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT key, value, xmin::text FROM {} WHERE key LIKE $1 AND NOT isbinary
                       AND (expiredate IS NULL OR expiredate > now()) ORDER BY key",
                    self.table
                ),
                &[&pattern],
            )
            .await
            .map_err(backend)?;
        let rows: Vec<((String, String), Value)> = rows
            .into_iter()
            .map(|r| ((r.get::<_, String>(0), r.get::<_, String>(2)), r.get(1)))
            .collect();
        let (page, token) = query.run(rows).map_err(StoreError::BadRequest)?;
        Ok(QueryResponse {
            results: page
                .into_iter()
                .map(|((key, etag), value)| QueryItem {
                    key,
                    data: Bytes::from(value.to_string()),
                    etag: Some(etag),
                })
                .collect(),
            token,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .simple_query("SELECT 1")
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Adds `state.postgresql` and its alias `state.postgres` (v1) to the registry.
pub fn register(registry: &mut Registry) {
    for name in ["state.postgresql", "state.postgres"] {
        registry.register(name, "v1", |ctx| {
            Box::pin(async move {
                let store = PostgresStore::open(&ctx.properties).await?;
                Ok(Instance::State(Arc::new(store)))
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_as_json_or_base64() {
        let (v, binary) = encode(br#"{"a":1}"#);
        assert!(!binary);
        assert_eq!(decode(v, binary), Bytes::from(r#"{"a":1}"#));
        let (v, binary) = encode(b"\x00raw");
        assert!(binary);
        assert_eq!(decode(v, binary), Bytes::from_static(b"\x00raw"));
    }

    #[test]
    fn table_names_are_checked() {
        assert!(valid_table("state"));
        assert!(valid_table("public.state_1"));
        assert!(!valid_table("state; DROP TABLE x"));
        assert!(!valid_table("a.b.c"));
        assert_eq!(etag_number("x"), Err(StoreError::EtagInvalid));
    }
}
