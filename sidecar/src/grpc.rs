//! The gRPC API `dapr.proto.runtime.v1.Dapr`, implementing the server trait of the official
//! Rust SDK (`dapr` crate). Errors carry Dapr's codes and google.rpc details; building blocks
//! daprs does not serve yet answer `Unimplemented` naming the block.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::time::Instant;

use bytes::Bytes;
use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as pb;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

use crate::api::{DeleteItem, SaveItem, Shared, TxOp};
use crate::errors;
use crate::runtime::RUNTIME_VERSION;
use crate::state::{Concurrency, Consistency};

pub use pb::dapr_server::DaprServer;

/// The gRPC API service: [`DaprServer`] behind the Configuration's API allow and deny lists.
pub type Server = crate::api_access::GrpcGuard<DaprServer<DaprApi>>;

/// The metadata key that carries the API token.
pub const API_TOKEN_METADATA: &str = "dapr-api-token";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The gRPC front end over the shared runtime.
#[derive(Clone)]
pub struct DaprApi {
    rt: Shared,
}

impl DaprApi {
    pub fn new(rt: Shared) -> Self {
        DaprApi { rt }
    }

    /// The server with the body limit of `--max-body-size`, serving only the APIs the
    /// Configuration's `spec.api` allows.
    pub fn server(rt: Shared) -> Server {
        let max = rt.max_body_bytes;
        let access = std::sync::Arc::new(crate::api_access::ApiAccess::new(
            rt.configuration.api.as_ref(),
        ));
        let server = DaprServer::new(DaprApi::new(rt))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        crate::api_access::GrpcGuard::new(server, access)
    }

    /// Records `dapr_grpc_io_server_*` for one call.
    fn observe<T>(
        &self,
        method: &str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let code = match &result {
            Ok(_) => "OK".to_owned(),
            Err(s) => format!("{:?}", s.code()).to_ascii_uppercase(),
        };
        let method = format!("/dapr.proto.runtime.v1.Dapr/{method}");
        let labels = [
            ("grpc_server_method", method.as_str()),
            ("grpc_server_status", code.as_str()),
        ];
        self.rt
            .metrics
            .inc("dapr_grpc_io_server_completed_rpcs", &labels);
        self.rt.metrics.observe(
            "dapr_grpc_io_server_server_latency",
            &labels,
            started.elapsed(),
        );
        result.map(Response::new)
    }
}

/// Checks `dapr-api-token` metadata when `DAPR_API_TOKEN` is set, then removes it.
pub fn token_interceptor(
    token: Option<String>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut request: Request<()>| {
        if let Some(token) = &token {
            let given = request
                .metadata()
                .get(API_TOKEN_METADATA)
                .map(|v| v.as_bytes());
            if given != Some(token.as_bytes()) {
                return Err(Status::unauthenticated(
                    "authentication error: api token mismatch",
                ));
            }
            request.metadata_mut().remove(API_TOKEN_METADATA);
        }
        Ok(request)
    }
}

fn not_yet(block: &str, method: &str) -> Status {
    Status::unimplemented(format!(
        "{method}: the {block} building block is not implemented by daprs yet"
    ))
}

fn sorted(map: HashMap<String, String>) -> BTreeMap<String, String> {
    map.into_iter().collect()
}

fn consistency(value: i32) -> Consistency {
    if value == common::state_options::StateConsistency::ConsistencyStrong as i32 {
        Consistency::Strong
    } else {
        Consistency::Eventual
    }
}

fn options(options: Option<&common::StateOptions>) -> (Concurrency, Consistency) {
    match options {
        None => (Concurrency::LastWrite, Consistency::Eventual),
        Some(o) => {
            let concurrency = if o.concurrency
                == common::state_options::StateConcurrency::ConcurrencyFirstWrite as i32
            {
                Concurrency::FirstWrite
            } else {
                Concurrency::LastWrite
            };
            (concurrency, consistency(o.consistency))
        }
    }
}

/// A gRPC state item: raw bytes kept as given, unless `contentType` says JSON, in which case
/// they are parsed and re-serialised (as Dapr does).
fn save_item(item: common::StateItem) -> SaveItem {
    let (concurrency, consistency) = options(item.options.as_ref());
    let metadata = sorted(item.metadata);
    let is_json = metadata
        .get("contentType")
        .is_some_and(|c| c.starts_with("application/json"));
    let value = if is_json {
        serde_json::from_slice::<serde_json::Value>(&item.value)
            .map(|v| Bytes::from(v.to_string()))
            .unwrap_or_else(|_| Bytes::from(item.value))
    } else {
        Bytes::from(item.value)
    };
    SaveItem {
        key: item.key,
        value,
        etag: item.etag.map(|e| e.value),
        metadata,
        concurrency,
        consistency,
    }
}

fn delete_item(item: common::StateItem) -> DeleteItem {
    let (concurrency, consistency) = options(item.options.as_ref());
    DeleteItem {
        key: item.key,
        etag: item.etag.map(|e| e.value),
        metadata: sorted(item.metadata),
        concurrency,
        consistency,
    }
}

#[tonic::async_trait]
impl pb::dapr_server::Dapr for DaprApi {
    type SubscribeTopicEventsAlpha1Stream = BoxStream<pb::SubscribeTopicEventsResponseAlpha1>;
    type SubscribeConfigurationAlpha1Stream = BoxStream<pb::SubscribeConfigurationResponse>;
    type SubscribeConfigurationStream = BoxStream<pb::SubscribeConfigurationResponse>;
    type EncryptAlpha1Stream = BoxStream<pb::EncryptResponse>;
    type DecryptAlpha1Stream = BoxStream<pb::DecryptResponse>;

    async fn get_state(
        &self,
        request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::GetStateResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let result = self
            .rt
            .get_state(
                &r.store_name,
                &r.key,
                consistency(r.consistency),
                &sorted(r.metadata),
            )
            .await
            .map(|item| match item {
                None => pb::GetStateResponse::default(),
                Some(item) => pb::GetStateResponse {
                    data: item.data.to_vec(),
                    etag: item.etag.unwrap_or_default(),
                    metadata: item.metadata.into_iter().collect(),
                },
            })
            .map_err(Status::from);
        self.observe("GetState", started, result)
    }

    async fn get_bulk_state(
        &self,
        request: Request<pb::GetBulkStateRequest>,
    ) -> Result<Response<pb::GetBulkStateResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let parallelism = usize::try_from(r.parallelism).unwrap_or(0);
        let result = self
            .rt
            .bulk_get_state(&r.store_name, r.keys, parallelism, &sorted(r.metadata))
            .await
            .map(|items| pb::GetBulkStateResponse {
                items: items
                    .into_iter()
                    .map(|b| {
                        let (data, etag, metadata) = match b.item {
                            Some(i) => (
                                i.data.to_vec(),
                                i.etag.unwrap_or_default(),
                                i.metadata.into_iter().collect(),
                            ),
                            None => Default::default(),
                        };
                        pb::BulkStateItem {
                            key: b.key,
                            data,
                            etag,
                            error: b.error.unwrap_or_default(),
                            metadata,
                        }
                    })
                    .collect(),
            })
            .map_err(Status::from);
        self.observe("GetBulkState", started, result)
    }

    async fn save_state(
        &self,
        request: Request<pb::SaveStateRequest>,
    ) -> Result<Response<()>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let items = r.states.into_iter().map(save_item).collect();
        let result = self
            .rt
            .save_state(&r.store_name, items)
            .await
            .map_err(Status::from);
        self.observe("SaveState", started, result)
    }

    async fn query_state_alpha1(
        &self,
        request: Request<pb::QueryStateRequest>,
    ) -> Result<Response<pb::QueryStateResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let result = self
            .rt
            .query_state(&r.store_name, r.query.as_bytes())
            .await
            .map(|q| pb::QueryStateResponse {
                results: q
                    .results
                    .into_iter()
                    .map(|(key, data, etag)| pb::QueryStateItem {
                        key,
                        data: data.to_vec(),
                        etag: etag.unwrap_or_default(),
                        error: String::new(),
                    })
                    .collect(),
                token: q.token.unwrap_or_default(),
                metadata: HashMap::new(),
            })
            .map_err(Status::from);
        self.observe("QueryStateAlpha1", started, result)
    }

    async fn delete_state(
        &self,
        request: Request<pb::DeleteStateRequest>,
    ) -> Result<Response<()>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let (concurrency, consistency) = options(r.options.as_ref());
        let item = DeleteItem {
            key: r.key,
            etag: r.etag.map(|e| e.value),
            metadata: sorted(r.metadata),
            concurrency,
            consistency,
        };
        let result = self
            .rt
            .delete_state(&r.store_name, item)
            .await
            .map_err(Status::from);
        self.observe("DeleteState", started, result)
    }

    async fn delete_bulk_state(
        &self,
        request: Request<pb::DeleteBulkStateRequest>,
    ) -> Result<Response<()>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let items = r.states.into_iter().map(delete_item).collect();
        let result = self
            .rt
            .delete_bulk_state(&r.store_name, items)
            .await
            .map_err(Status::from);
        self.observe("DeleteBulkState", started, result)
    }

    async fn execute_state_transaction(
        &self,
        request: Request<pb::ExecuteStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let mut ops = Vec::with_capacity(r.operations.len());
        for op in r.operations {
            let item = op.request.unwrap_or_default();
            match op.operation_type.as_str() {
                "upsert" => ops.push(TxOp::Upsert(save_item(item))),
                "delete" => ops.push(TxOp::Delete(delete_item(item))),
                other => {
                    let status = Status::from(errors::unsupported_operation(other));
                    return self.observe("ExecuteStateTransaction", started, Err(status));
                }
            }
        }
        let result = self
            .rt
            .transact_state(&r.store_name, ops, &sorted(r.metadata))
            .await
            .map_err(Status::from);
        self.observe("ExecuteStateTransaction", started, result)
    }

    async fn get_secret(
        &self,
        request: Request<pb::GetSecretRequest>,
    ) -> Result<Response<pb::GetSecretResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let result = self
            .rt
            .get_secret(&r.store_name, &r.key, &sorted(r.metadata))
            .await
            .map(|s| pb::GetSecretResponse {
                data: s.into_iter().collect(),
            })
            .map_err(Status::from);
        self.observe("GetSecret", started, result)
    }

    async fn get_bulk_secret(
        &self,
        request: Request<pb::GetBulkSecretRequest>,
    ) -> Result<Response<pb::GetBulkSecretResponse>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        let result = self
            .rt
            .bulk_secrets(&r.store_name, &sorted(r.metadata))
            .await
            .map(|all| pb::GetBulkSecretResponse {
                data: all
                    .into_iter()
                    .map(|(k, s)| {
                        (
                            k,
                            pb::SecretResponse {
                                secrets: s.into_iter().collect(),
                            },
                        )
                    })
                    .collect(),
            })
            .map_err(Status::from);
        self.observe("GetBulkSecret", started, result)
    }

    async fn get_metadata(
        &self,
        _request: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        let started = Instant::now();
        let rt = &self.rt;
        let mut extended: HashMap<String, String> = rt.extended().into_iter().collect();
        extended.insert("daprRuntimeVersion".into(), RUNTIME_VERSION.into());
        let response = pb::GetMetadataResponse {
            id: rt.app_id.clone(),
            registered_components: rt
                .component_list()
                .into_iter()
                .map(|(name, r#type, version, caps)| pb::RegisteredComponents {
                    name,
                    r#type,
                    version,
                    capabilities: caps.into_iter().map(str::to_owned).collect(),
                })
                .collect(),
            extended_metadata: extended,
            app_connection_properties: Some(pb::AppConnectionProperties {
                port: rt.app.port.map(i32::from).unwrap_or_default(),
                protocol: rt.app.protocol.clone(),
                channel_address: rt.app.channel_address.clone(),
                max_concurrency: i32::try_from(rt.app.max_concurrency.max(0)).unwrap_or(i32::MAX),
                health: rt
                    .app
                    .health_check
                    .as_ref()
                    .map(|h| pb::AppConnectionHealthProperties {
                        health_check_path: h.path.clone(),
                        health_probe_interval: format!("{}s", h.interval_seconds),
                        health_probe_timeout: format!("{}ms", h.timeout_ms),
                        health_threshold: i32::try_from(h.threshold).unwrap_or(i32::MAX),
                    }),
            }),
            runtime_version: RUNTIME_VERSION.into(),
            ..Default::default()
        };
        self.observe("GetMetadata", started, Ok(response))
    }

    async fn set_metadata(
        &self,
        request: Request<pb::SetMetadataRequest>,
    ) -> Result<Response<()>, Status> {
        let started = Instant::now();
        let r = request.into_inner();
        self.rt.set_extended(r.key, r.value);
        self.observe("SetMetadata", started, Ok(()))
    }

    async fn shutdown(
        &self,
        request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<()>, Status> {
        let started = Instant::now();
        let forced = request
            .metadata()
            .get("dapr-force-shutdown")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if forced {
            tracing::warn!("forced shutdown requested; exiting");
            tokio::spawn(async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                std::process::exit(1);
            });
        } else {
            tracing::info!("shutdown requested through the API");
            self.rt.request_stop();
        }
        self.observe("Shutdown", started, Ok(()))
    }

    async fn invoke_service(
        &self,
        request: Request<pb::InvokeServiceRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        let started = Instant::now();
        let mut metadata = crate::invoke::app::request_metadata_to_md(request.metadata());
        for key in [
            API_TOKEN_METADATA,
            "dapr-app-id",
            "content-type",
            "user-agent",
            "te",
        ] {
            metadata.remove(key);
        }
        metadata.retain(|k, _| {
            (!k.starts_with("grpc-") || k == crate::invoke::trace::GRPC_TRACE_BIN)
                && !k.starts_with(':')
        });
        let request = request.into_inner();
        let message = request.message.unwrap_or_default();
        let ext = message.http_extension.unwrap_or_default();
        let call = crate::invoke::Call {
            target: request.id.clone(),
            method: message.method,
            verb: crate::invoke::app::verb_name(ext.verb).map(str::to_owned),
            query: ext.querystring,
            metadata,
            body: message
                .data
                .map(|d| Bytes::from(d.value))
                .unwrap_or_default(),
            content_type: message.content_type,
        };
        let result = match self.rt.invoker.invoke(call).await {
            Err(e) => Err(e.to_api().to_status()),
            Ok(r) => {
                let code = if r.status >= 100 {
                    crate::invoke::grpc_code_of_http(r.status as u16)
                } else {
                    tonic::Code::from_i32(r.status)
                };
                if code == tonic::Code::Ok {
                    Ok(r)
                } else {
                    let message = if r.status >= 100 {
                        String::from_utf8_lossy(&r.body).into_owned()
                    } else {
                        r.message.clone()
                    };
                    Err(Status::new(code, message))
                }
            }
        };
        let result = result.map(|r| {
            let mut md = tonic::metadata::MetadataMap::new();
            for (k, value) in crate::invoke::app::grpc_caller_metadata(&r.headers) {
                match value {
                    crate::invoke::app::MdValue::Ascii(v) => {
                        if let (Ok(key), Ok(v)) = (
                            tonic::metadata::AsciiMetadataKey::from_bytes(k.as_bytes()),
                            tonic::metadata::MetadataValue::try_from(v.as_str()),
                        ) {
                            md.append(key, v);
                        }
                    }
                    crate::invoke::app::MdValue::Binary(v) => {
                        if let Ok(key) =
                            tonic::metadata::BinaryMetadataKey::from_bytes(k.as_bytes())
                        {
                            md.append_bin(key, tonic::metadata::MetadataValue::from_bytes(&v));
                        }
                    }
                }
            }
            // An HTTP app's status, as Dapr reports it to a gRPC caller.
            if r.status >= 100
                && let Ok(v) = tonic::metadata::MetadataValue::try_from(r.status.to_string())
            {
                md.insert("dapr-http-status", v);
            }
            let body = common::InvokeResponse {
                data: Some(prost_types::Any {
                    type_url: String::new(),
                    value: r.body.to_vec(),
                }),
                content_type: r.content_type,
            };
            (md, body)
        });
        match self.observe("InvokeService", started, result) {
            Ok(response) => {
                let (md, body) = response.into_inner();
                let mut response = Response::new(body);
                *response.metadata_mut() = md;
                Ok(response)
            }
            Err(e) => Err(e),
        }
    }

    async fn publish_event(
        &self,
        _request: Request<pb::PublishEventRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("pub/sub", "PublishEvent"))
    }

    async fn bulk_publish_event_alpha1(
        &self,
        _request: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        Err(not_yet("pub/sub", "BulkPublishEventAlpha1"))
    }

    async fn bulk_publish_event(
        &self,
        _request: Request<pb::BulkPublishRequest>,
    ) -> Result<Response<pb::BulkPublishResponse>, Status> {
        Err(not_yet("pub/sub", "BulkPublishEvent"))
    }

    async fn subscribe_topic_events_alpha1(
        &self,
        _request: Request<Streaming<pb::SubscribeTopicEventsRequestAlpha1>>,
    ) -> Result<Response<Self::SubscribeTopicEventsAlpha1Stream>, Status> {
        Err(not_yet("pub/sub", "SubscribeTopicEventsAlpha1"))
    }

    async fn invoke_binding(
        &self,
        _request: Request<pb::InvokeBindingRequest>,
    ) -> Result<Response<pb::InvokeBindingResponse>, Status> {
        Err(not_yet("bindings", "InvokeBinding"))
    }

    async fn register_actor_timer(
        &self,
        _request: Request<pb::RegisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("actors", "RegisterActorTimer"))
    }

    async fn unregister_actor_timer(
        &self,
        _request: Request<pb::UnregisterActorTimerRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("actors", "UnregisterActorTimer"))
    }

    async fn register_actor_reminder(
        &self,
        _request: Request<pb::RegisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("actors", "RegisterActorReminder"))
    }

    async fn unregister_actor_reminder(
        &self,
        _request: Request<pb::UnregisterActorReminderRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("actors", "UnregisterActorReminder"))
    }

    async fn unregister_actor_reminders_by_type(
        &self,
        _request: Request<pb::UnregisterActorRemindersByTypeRequest>,
    ) -> Result<Response<pb::UnregisterActorRemindersByTypeResponse>, Status> {
        Err(not_yet("actors", "UnregisterActorRemindersByType"))
    }

    async fn list_actor_reminders(
        &self,
        _request: Request<pb::ListActorRemindersRequest>,
    ) -> Result<Response<pb::ListActorRemindersResponse>, Status> {
        Err(not_yet("actors", "ListActorReminders"))
    }

    async fn get_actor_state(
        &self,
        _request: Request<pb::GetActorStateRequest>,
    ) -> Result<Response<pb::GetActorStateResponse>, Status> {
        Err(not_yet("actors", "GetActorState"))
    }

    async fn get_actor_reminder(
        &self,
        _request: Request<pb::GetActorReminderRequest>,
    ) -> Result<Response<pb::GetActorReminderResponse>, Status> {
        Err(not_yet("actors", "GetActorReminder"))
    }

    async fn execute_actor_state_transaction(
        &self,
        _request: Request<pb::ExecuteActorStateTransactionRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("actors", "ExecuteActorStateTransaction"))
    }

    async fn invoke_actor(
        &self,
        _request: Request<pb::InvokeActorRequest>,
    ) -> Result<Response<pb::InvokeActorResponse>, Status> {
        Err(not_yet("actors", "InvokeActor"))
    }

    async fn get_configuration_alpha1(
        &self,
        _request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        Err(not_yet("configuration", "GetConfigurationAlpha1"))
    }

    async fn get_configuration(
        &self,
        _request: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        Err(not_yet("configuration", "GetConfiguration"))
    }

    async fn subscribe_configuration_alpha1(
        &self,
        _request: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationAlpha1Stream>, Status> {
        Err(not_yet("configuration", "SubscribeConfigurationAlpha1"))
    }

    async fn subscribe_configuration(
        &self,
        _request: Request<pb::SubscribeConfigurationRequest>,
    ) -> Result<Response<Self::SubscribeConfigurationStream>, Status> {
        Err(not_yet("configuration", "SubscribeConfiguration"))
    }

    async fn unsubscribe_configuration_alpha1(
        &self,
        _request: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        Err(not_yet("configuration", "UnsubscribeConfigurationAlpha1"))
    }

    async fn unsubscribe_configuration(
        &self,
        _request: Request<pb::UnsubscribeConfigurationRequest>,
    ) -> Result<Response<pb::UnsubscribeConfigurationResponse>, Status> {
        Err(not_yet("configuration", "UnsubscribeConfiguration"))
    }

    async fn try_lock_alpha1(
        &self,
        _request: Request<pb::TryLockRequest>,
    ) -> Result<Response<pb::TryLockResponse>, Status> {
        Err(not_yet("distributed lock", "TryLockAlpha1"))
    }

    async fn unlock_alpha1(
        &self,
        _request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        Err(not_yet("distributed lock", "UnlockAlpha1"))
    }

    async fn encrypt_alpha1(
        &self,
        _request: Request<Streaming<pb::EncryptRequest>>,
    ) -> Result<Response<Self::EncryptAlpha1Stream>, Status> {
        Err(not_yet("cryptography", "EncryptAlpha1"))
    }

    async fn decrypt_alpha1(
        &self,
        _request: Request<Streaming<pb::DecryptRequest>>,
    ) -> Result<Response<Self::DecryptAlpha1Stream>, Status> {
        Err(not_yet("cryptography", "DecryptAlpha1"))
    }

    async fn subtle_get_key_alpha1(
        &self,
        _request: Request<pb::SubtleGetKeyRequest>,
    ) -> Result<Response<pb::SubtleGetKeyResponse>, Status> {
        Err(not_yet("cryptography", "SubtleGetKeyAlpha1"))
    }

    async fn subtle_encrypt_alpha1(
        &self,
        _request: Request<pb::SubtleEncryptRequest>,
    ) -> Result<Response<pb::SubtleEncryptResponse>, Status> {
        Err(not_yet("cryptography", "SubtleEncryptAlpha1"))
    }

    async fn subtle_decrypt_alpha1(
        &self,
        _request: Request<pb::SubtleDecryptRequest>,
    ) -> Result<Response<pb::SubtleDecryptResponse>, Status> {
        Err(not_yet("cryptography", "SubtleDecryptAlpha1"))
    }

    async fn subtle_wrap_key_alpha1(
        &self,
        _request: Request<pb::SubtleWrapKeyRequest>,
    ) -> Result<Response<pb::SubtleWrapKeyResponse>, Status> {
        Err(not_yet("cryptography", "SubtleWrapKeyAlpha1"))
    }

    async fn subtle_unwrap_key_alpha1(
        &self,
        _request: Request<pb::SubtleUnwrapKeyRequest>,
    ) -> Result<Response<pb::SubtleUnwrapKeyResponse>, Status> {
        Err(not_yet("cryptography", "SubtleUnwrapKeyAlpha1"))
    }

    async fn subtle_sign_alpha1(
        &self,
        _request: Request<pb::SubtleSignRequest>,
    ) -> Result<Response<pb::SubtleSignResponse>, Status> {
        Err(not_yet("cryptography", "SubtleSignAlpha1"))
    }

    async fn subtle_verify_alpha1(
        &self,
        _request: Request<pb::SubtleVerifyRequest>,
    ) -> Result<Response<pb::SubtleVerifyResponse>, Status> {
        Err(not_yet("cryptography", "SubtleVerifyAlpha1"))
    }

    async fn start_workflow_alpha1(
        &self,
        _request: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        Err(not_yet("workflows", "StartWorkflowAlpha1"))
    }

    async fn get_workflow_alpha1(
        &self,
        _request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        Err(not_yet("workflows", "GetWorkflowAlpha1"))
    }

    async fn purge_workflow_alpha1(
        &self,
        _request: Request<pb::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "PurgeWorkflowAlpha1"))
    }

    async fn terminate_workflow_alpha1(
        &self,
        _request: Request<pb::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "TerminateWorkflowAlpha1"))
    }

    async fn pause_workflow_alpha1(
        &self,
        _request: Request<pb::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "PauseWorkflowAlpha1"))
    }

    async fn resume_workflow_alpha1(
        &self,
        _request: Request<pb::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "ResumeWorkflowAlpha1"))
    }

    async fn raise_event_workflow_alpha1(
        &self,
        _request: Request<pb::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "RaiseEventWorkflowAlpha1"))
    }

    async fn start_workflow_beta1(
        &self,
        _request: Request<pb::StartWorkflowRequest>,
    ) -> Result<Response<pb::StartWorkflowResponse>, Status> {
        Err(not_yet("workflows", "StartWorkflowBeta1"))
    }

    async fn get_workflow_beta1(
        &self,
        _request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        Err(not_yet("workflows", "GetWorkflowBeta1"))
    }

    async fn purge_workflow_beta1(
        &self,
        _request: Request<pb::PurgeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "PurgeWorkflowBeta1"))
    }

    async fn terminate_workflow_beta1(
        &self,
        _request: Request<pb::TerminateWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "TerminateWorkflowBeta1"))
    }

    async fn pause_workflow_beta1(
        &self,
        _request: Request<pb::PauseWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "PauseWorkflowBeta1"))
    }

    async fn resume_workflow_beta1(
        &self,
        _request: Request<pb::ResumeWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "ResumeWorkflowBeta1"))
    }

    async fn raise_event_workflow_beta1(
        &self,
        _request: Request<pb::RaiseEventWorkflowRequest>,
    ) -> Result<Response<()>, Status> {
        Err(not_yet("workflows", "RaiseEventWorkflowBeta1"))
    }

    async fn schedule_job_alpha1(
        &self,
        _request: Request<pb::ScheduleJobRequest>,
    ) -> Result<Response<pb::ScheduleJobResponse>, Status> {
        Err(not_yet("jobs", "ScheduleJobAlpha1"))
    }

    async fn schedule_job(
        &self,
        _request: Request<pb::ScheduleJobRequest>,
    ) -> Result<Response<pb::ScheduleJobResponse>, Status> {
        Err(not_yet("jobs", "ScheduleJob"))
    }

    async fn get_job_alpha1(
        &self,
        _request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        Err(not_yet("jobs", "GetJobAlpha1"))
    }

    async fn get_job(
        &self,
        _request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        Err(not_yet("jobs", "GetJob"))
    }

    async fn delete_job_alpha1(
        &self,
        _request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        Err(not_yet("jobs", "DeleteJobAlpha1"))
    }

    async fn delete_job(
        &self,
        _request: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteJobResponse>, Status> {
        Err(not_yet("jobs", "DeleteJob"))
    }

    async fn delete_jobs_by_prefix_alpha1(
        &self,
        _request: Request<pb::DeleteJobsByPrefixRequestAlpha1>,
    ) -> Result<Response<pb::DeleteJobsByPrefixResponseAlpha1>, Status> {
        Err(not_yet("jobs", "DeleteJobsByPrefixAlpha1"))
    }

    async fn delete_jobs_by_prefix(
        &self,
        _request: Request<pb::DeleteJobsByPrefixRequest>,
    ) -> Result<Response<pb::DeleteJobsByPrefixResponse>, Status> {
        Err(not_yet("jobs", "DeleteJobsByPrefix"))
    }

    async fn list_jobs_alpha1(
        &self,
        _request: Request<pb::ListJobsRequestAlpha1>,
    ) -> Result<Response<pb::ListJobsResponseAlpha1>, Status> {
        Err(not_yet("jobs", "ListJobsAlpha1"))
    }

    async fn list_jobs(
        &self,
        _request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        Err(not_yet("jobs", "ListJobs"))
    }

    async fn converse_alpha1(
        &self,
        _request: Request<pb::ConversationRequest>,
    ) -> Result<Response<pb::ConversationResponse>, Status> {
        Err(not_yet("conversation", "ConverseAlpha1"))
    }

    async fn converse_alpha2(
        &self,
        _request: Request<pb::ConversationRequestAlpha2>,
    ) -> Result<Response<pb::ConversationResponseAlpha2>, Status> {
        Err(not_yet("conversation", "ConverseAlpha2"))
    }
}
