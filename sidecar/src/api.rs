//! The building blocks independent of protocol (Dapr's "universal" API): the HTTP and gRPC
//! front ends translate requests into these calls and their [`ApiError`]s into responses.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;

use crate::components::{SecretComponent, StateComponent};
use crate::errors::{self, ApiError};
use crate::metrics::Block;
use crate::runtime::Runtime;
use crate::secrets::{self, Secret};
use crate::state::query::Query;
use crate::state::{
    Concurrency, Consistency, DeleteRequest, Feature, Item, KEY_SEPARATOR, Operation, SetRequest,
    StoreError, original_key, parse_ttl,
};

/// Default bulk-get parallelism when the request gives none.
pub const DEFAULT_BULK_PARALLELISM: usize = 10;

/// One item to save, as the app gave it (key not yet prefixed).
#[derive(Debug, Clone, PartialEq)]
pub struct SaveItem {
    pub key: String,
    pub value: Bytes,
    pub etag: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub concurrency: Concurrency,
    pub consistency: Consistency,
}

/// One item to delete.
#[derive(Debug, Clone, PartialEq)]
pub struct DeleteItem {
    pub key: String,
    pub etag: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub concurrency: Concurrency,
    pub consistency: Consistency,
}

/// One transaction operation.
#[derive(Debug, Clone, PartialEq)]
pub enum TxOp {
    Upsert(SaveItem),
    Delete(DeleteItem),
}

/// One result of a bulk get, in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkItem {
    pub key: String,
    pub item: Option<Item>,
    pub error: Option<String>,
}

/// A query result with the app's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryResult {
    pub results: Vec<(String, Bytes, Option<String>)>,
    pub token: Option<String>,
}

impl Runtime {
    fn state_store(&self, name: &str) -> Result<StateComponent, ApiError> {
        let components = self.table.snapshot();
        if components.state.is_empty() {
            return Err(errors::state_store_not_configured(&self.app_id));
        }
        components
            .state
            .get(name)
            .cloned()
            .ok_or_else(|| errors::state_store_not_found(name, &self.app_id))
    }

    /// The error for a bad `concurrency`/`consistency` option: `error` (the store's own
    /// refusal, as Dapr's stores give it), unless the store itself is missing.
    pub fn state_option_error(&self, name: &str, error: ApiError) -> ApiError {
        match self.state_store(name) {
            Ok(_) => error,
            Err(missing) => missing,
        }
    }

    fn state_key(&self, store: &StateComponent, name: &str, key: &str) -> Result<String, ApiError> {
        if key.contains(KEY_SEPARATOR) {
            return Err(errors::illegal_key(name, key));
        }
        Ok(format!(
            "{}{key}",
            store
                .prefix
                .prefix(&self.app_id, name, self.namespace.as_deref())
        ))
    }

    fn record(&self, block: Block, component: &str, op: &str, ok: bool, started: Instant) {
        self.metrics
            .component(block, component, op, ok, started.elapsed());
    }

    fn set_request(
        &self,
        store: &StateComponent,
        name: &str,
        item: SaveItem,
    ) -> Result<SetRequest, ApiError> {
        let key = self.state_key(store, name, &item.key)?;
        let ttl = parse_ttl(&item.metadata).map_err(|e| errors::state_save(name, &e))?;
        Ok(SetRequest {
            key,
            value: item.value,
            etag: item.etag.filter(|e| !e.is_empty()),
            concurrency: item.concurrency,
            consistency: item.consistency,
            ttl,
            metadata: item.metadata,
        })
    }

    fn delete_request(
        &self,
        store: &StateComponent,
        name: &str,
        item: DeleteItem,
    ) -> Result<DeleteRequest, ApiError> {
        Ok(DeleteRequest {
            key: self.state_key(store, name, &item.key)?,
            etag: item.etag.filter(|e| !e.is_empty()),
            concurrency: item.concurrency,
            consistency: item.consistency,
            metadata: item.metadata,
        })
    }

    pub async fn get_state(
        &self,
        name: &str,
        key: &str,
        consistency: Consistency,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Option<Item>, ApiError> {
        let store = self.state_store(name)?;
        let full = self.state_key(&store, name, key)?;
        let started = Instant::now();
        let result = store.store.get(&full, consistency, metadata).await;
        self.record(Block::State, name, "get", result.is_ok(), started);
        result.map_err(|e| errors::state_get(name, key, &e))
    }

    pub async fn save_state(&self, name: &str, items: Vec<SaveItem>) -> Result<(), ApiError> {
        let store = self.state_store(name)?;
        let requests = items
            .into_iter()
            .map(|item| self.set_request(&store, name, item))
            .collect::<Result<Vec<_>, _>>()?;
        for request in requests {
            let started = Instant::now();
            let result = store.store.set(request).await;
            self.record(Block::State, name, "set", result.is_ok(), started);
            result.map_err(|e| errors::state_save(name, &e))?;
        }
        Ok(())
    }

    pub async fn delete_state(&self, name: &str, item: DeleteItem) -> Result<(), ApiError> {
        let store = self.state_store(name)?;
        let key = item.key.clone();
        let request = self.delete_request(&store, name, item)?;
        let started = Instant::now();
        let result = store.store.delete(request).await;
        self.record(Block::State, name, "delete", result.is_ok(), started);
        result.map_err(|e| errors::state_delete(&key, &e))
    }

    pub async fn delete_bulk_state(
        &self,
        name: &str,
        items: Vec<DeleteItem>,
    ) -> Result<(), ApiError> {
        let store = self.state_store(name)?;
        let requests = items
            .into_iter()
            .map(|item| self.delete_request(&store, name, item))
            .collect::<Result<Vec<_>, _>>()?;
        for request in requests {
            let started = Instant::now();
            let result = store.store.delete(request).await;
            self.record(Block::State, name, "bulk_delete", result.is_ok(), started);
            result.map_err(|e| errors::state_bulk_delete(&e))?;
        }
        Ok(())
    }

    pub async fn bulk_get_state(
        &self,
        name: &str,
        keys: Vec<String>,
        parallelism: usize,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Vec<BulkItem>, ApiError> {
        let store = self.state_store(name)?;
        let full: Vec<(String, String)> = keys
            .into_iter()
            .map(|k| Ok((self.state_key(&store, name, &k)?, k)))
            .collect::<Result<_, ApiError>>()?;
        let started = Instant::now();
        let parallelism = if parallelism == 0 {
            DEFAULT_BULK_PARALLELISM
        } else {
            parallelism
        };
        let store_ref = &store;
        let results: Vec<BulkItem> = futures::stream::iter(full)
            .map(|(full, key)| async move {
                match store_ref
                    .store
                    .get(&full, Consistency::Eventual, metadata)
                    .await
                {
                    Ok(item) => BulkItem {
                        key,
                        item,
                        error: None,
                    },
                    Err(e) => BulkItem {
                        key,
                        item: None,
                        error: Some(e.to_string()),
                    },
                }
            })
            .buffered(parallelism)
            .collect()
            .await;
        self.record(Block::State, name, "bulk_get", true, started);
        Ok(results)
    }

    pub async fn transact_state(
        &self,
        name: &str,
        operations: Vec<TxOp>,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let store = self.state_store(name)?;
        if !store.store.features().contains(&Feature::Transactional) {
            return Err(errors::transactions_not_supported(name));
        }
        let merge = |mut own: BTreeMap<String, String>| {
            for (k, v) in metadata {
                own.entry(k.clone()).or_insert_with(|| v.clone());
            }
            own
        };
        let mut ops = Vec::with_capacity(operations.len());
        for op in operations {
            ops.push(match op {
                TxOp::Upsert(mut item) => {
                    item.metadata = merge(item.metadata);
                    Operation::Upsert(
                        self.set_request(&store, name, item)
                            .map_err(|e| tx_error(e, name))?,
                    )
                }
                TxOp::Delete(mut item) => {
                    item.metadata = merge(item.metadata);
                    Operation::Delete(self.delete_request(&store, name, item)?)
                }
            });
        }
        if ops.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let result = store.store.transact(ops).await;
        self.record(Block::State, name, "transaction", result.is_ok(), started);
        result.map_err(|e| errors::state_transaction(&e))
    }

    pub async fn query_state(&self, name: &str, query: &[u8]) -> Result<QueryResult, ApiError> {
        let store = self.state_store(name)?;
        if !store.store.features().contains(&Feature::QueryApi) {
            return Err(errors::query_not_supported(name));
        }
        let query = Query::parse(query).map_err(|e| errors::state_query(name, e))?;
        let prefix = store
            .prefix
            .prefix(&self.app_id, name, self.namespace.as_deref());
        let started = Instant::now();
        let result = store.store.query(&prefix, &query).await;
        self.record(Block::State, name, "query", result.is_ok(), started);
        let response = result.map_err(|e| errors::state_query(name, e))?;
        Ok(QueryResult {
            results: response
                .results
                .into_iter()
                .map(|r| (original_key(&r.key).to_owned(), r.data, r.etag))
                .collect(),
            token: response.token,
        })
    }

    fn secret_store(&self, name: &str) -> Result<SecretComponent, ApiError> {
        let components = self.table.snapshot();
        if components.secrets.is_empty() {
            return Err(errors::secret_stores_not_configured());
        }
        components
            .secrets
            .get(name)
            .cloned()
            .ok_or_else(|| errors::secret_store_not_found(name))
    }

    pub async fn get_secret(
        &self,
        name: &str,
        key: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<Secret, ApiError> {
        let store = self.secret_store(name)?;
        if !secrets::allowed(self.secret_scopes(), name, key) {
            return Err(errors::secret_permission_denied(name, key));
        }
        let started = Instant::now();
        let result = store.store.get(key, metadata).await;
        self.record(Block::Secret, name, "get", result.is_ok(), started);
        result.map_err(|e| errors::secret_get(name, key, e))
    }

    pub async fn bulk_secrets(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Secret>, ApiError> {
        let store = self.secret_store(name)?;
        let started = Instant::now();
        let result = store.store.bulk(metadata).await;
        self.record(Block::Secret, name, "bulk_get", result.is_ok(), started);
        let all = result.map_err(|e| errors::secret_get(name, "", e))?;
        let scopes = self.secret_scopes();
        Ok(all
            .into_iter()
            .filter(|(k, _)| secrets::allowed(scopes, name, k))
            .collect())
    }

    /// The components for the metadata API: `(name, type, version, capabilities)`.
    pub fn component_list(&self) -> Vec<(String, String, String, Vec<&'static str>)> {
        let components = self.table.snapshot();
        let mut list: Vec<_> = components
            .state
            .values()
            .map(|c| {
                let features = c.store.features();
                let mut caps: Vec<&'static str> = features.iter().map(|f| f.name()).collect();
                if features.contains(&Feature::Etag) && features.contains(&Feature::Transactional) {
                    caps.push("ACTOR");
                }
                (
                    c.manifest.name.clone(),
                    c.manifest.type_().to_owned(),
                    c.manifest.version().to_owned(),
                    caps,
                )
            })
            .chain(components.secrets.values().map(|c| {
                (
                    c.manifest.name.clone(),
                    c.manifest.type_().to_owned(),
                    c.manifest.version().to_owned(),
                    Vec::new(),
                )
            }))
            .collect();
        list.sort();
        list
    }
}

/// In a transaction every component failure is `ERR_STATE_TRANSACTION`, even a bad TTL.
fn tx_error(error: ApiError, _store: &str) -> ApiError {
    if error.code == "ERR_STATE_SAVE" {
        errors::state_transaction(&StoreError::BadRequest(error.message))
    } else {
        error
    }
}

/// The shared runtime handle the front ends hold.
pub type Shared = Arc<Runtime>;
