//! The operator API (`dapr.proto.operator.v1.Operator`) over mutual TLS.
//!
//! Every call is authorised by the caller's SPIFFE id: its namespace must equal the request's
//! (`PermissionDenied` otherwise; the trust domain is not checked, as in Dapr) and its app id
//! drives scope filtering. Lists register the caller's position so the stream it opens next
//! replays what changed in between ([`crate::hub`]).

use std::pin::Pin;
use std::sync::Arc;

use daprs_api::SpiffeId;
use daprs_api::proto::operator::operator_server::Operator;
use daprs_api::proto::operator::*;
use futures::Stream;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::hub::{EventKind, Filter, Hub, Object};
use crate::metrics::Metrics;
use crate::pods::PodDirectory;
use crate::secrets::{CoalescingSecrets, Inline, SecretError};

/// The watched resources, one hub per kind.
#[derive(Clone, Debug)]
pub struct Hubs {
    pub components: Arc<Hub>,
    pub configurations: Arc<Hub>,
    pub subscriptions: Arc<Hub>,
    pub resiliencies: Arc<Hub>,
    pub http_endpoints: Arc<Hub>,
}

impl Default for Hubs {
    fn default() -> Self {
        Self {
            components: Hub::new("components"),
            configurations: Hub::new("configurations"),
            subscriptions: Hub::new("subscriptions"),
            resiliencies: Hub::new("resiliencies"),
            http_endpoints: Hub::new("httpendpoints"),
        }
    }
}

impl Hubs {
    pub fn all(&self) -> [&Arc<Hub>; 5] {
        [
            &self.components,
            &self.configurations,
            &self.subscriptions,
            &self.resiliencies,
            &self.http_endpoints,
        ]
    }

    pub fn synced(&self) -> bool {
        self.all().iter().all(|h| h.is_synced())
    }
}

/// The service behind the gRPC server.
#[derive(Clone)]
pub struct OperatorApi {
    pub hubs: Hubs,
    pub secrets: Arc<CoalescingSecrets>,
    pub pods: Arc<dyn PodDirectory>,
    pub shutdown: watch::Receiver<bool>,
    pub metrics: Arc<Metrics>,
}

pub(crate) type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Per-connection memory settings of the API's TLS: no session tickets and no session cache.
/// Sidecars hold one long-lived connection each and reconnect rarely (after an operator
/// restart, when a cache would be empty anyway), so resumption saves nothing, while rustls'
/// defaults send two TLS 1.3 tickets per handshake and keep up to 256 sessions, each with the
/// client's certificate chain, in memory.
pub fn lean_tls(config: &mut rustls::ServerConfig) {
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
}

/// The SPIFFE id of the client certificate of this call (read once per connection by
/// [`crate::grpc_server`]).
pub fn caller<T>(request: &Request<T>) -> Result<SpiffeId, Status> {
    let caller = request
        .extensions()
        .get::<crate::grpc_server::Caller>()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    caller
        .id()
        .cloned()
        .map_err(|reason| Status::unauthenticated(reason.to_owned()))
}

/// Dapr's rule: the request names a namespace, and it is the caller's.
pub fn authorize(caller: &SpiffeId, namespace: &str) -> Result<(), Status> {
    if namespace.is_empty() || caller.namespace() != namespace {
        return Err(Status::permission_denied(format!(
            "identity does not match requested namespace: {caller} may only read namespace {:?}, not {namespace:?}",
            caller.namespace()
        )));
    }
    Ok(())
}

fn authorized<T>(request: &Request<T>, namespace: &str) -> Result<SpiffeId, Status> {
    let id = caller(request)?;
    authorize(&id, namespace)?;
    Ok(id)
}

fn event_type(kind: EventKind) -> i32 {
    match kind {
        EventKind::Created => ResourceEventType::Created as i32,
        EventKind::Updated => ResourceEventType::Updated as i32,
        EventKind::Deleted => ResourceEventType::Deleted as i32,
    }
}

/// Resolves once `shutdown` is true.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

fn secret_status(e: SecretError) -> Status {
    Status::unavailable(e.to_string())
}

/// Counts a stream in the open-stream gauge until it is dropped.
struct OpenStream(prometheus_client::metrics::gauge::Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// What one event stream holds between two events.
struct StreamState {
    replay: std::vec::IntoIter<crate::hub::Event>,
    live: crate::hub::Receiver,
    filter: Filter,
    inline: Inline,
    secrets: Arc<CoalescingSecrets>,
    shutdown: watch::Receiver<bool>,
    _open: OpenStream,
    /// A final status was sent: the stream ends.
    done: bool,
}

impl StreamState {
    /// The next message: an event's resource (JSON) and type, or the status that ends the
    /// stream; `None` when the stream is over.
    async fn next(&mut self) -> Option<Result<(Vec<u8>, i32), Status>> {
        if self.done {
            return None;
        }
        let event = match self.replay.next() {
            Some(event) => event,
            None => tokio::select! {
                event = self.live.recv() => match event {
                    Some(event) => event,
                    None => {
                        self.done = true;
                        if !self.live.fell_behind() {
                            return None;
                        }
                        tracing::warn!(namespace = %self.filter.namespace, app_id = %self.filter.app_id, "a stream fell behind and was closed; the client will reconnect and list again");
                        return Some(Err(Status::aborted("the stream fell behind; reconnect and list again")));
                    }
                },
                () = stopped(&mut self.shutdown) => {
                    self.done = true;
                    return Some(Err(Status::unavailable("the operator is shutting down")));
                }
            },
        };
        let bytes = match crate::secrets::resolve(&event.object, self.inline, &self.secrets).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(%error, resource = %event.object.name, "sending the resource without its secrets");
                event.object.encoded.clone()
            }
        };
        Some(Ok((bytes.to_vec(), event_type(event.kind))))
    }
}

impl OperatorApi {
    fn check_running(&self) -> Result<(), Status> {
        if *self.shutdown.borrow() {
            return Err(Status::unavailable("the operator is shutting down"));
        }
        Ok(())
    }

    async fn encode_all(
        &self,
        objects: Vec<Arc<Object>>,
        inline: Inline,
    ) -> Result<Vec<Vec<u8>>, Status> {
        let mut out = Vec::with_capacity(objects.len());
        for object in objects {
            let bytes = crate::secrets::resolve(&object, inline, &self.secrets)
                .await
                .map_err(secret_status)?;
            out.push(bytes.to_vec());
        }
        Ok(out)
    }

    /// Registers a stream on `hub` and sends its events to the client.
    ///
    /// The response body is the stream itself: no task and no second channel per stream (with
    /// 1,000 sidecars each is a kilobyte or more of the operator's memory). The hub's bounded
    /// [`crate::hub::SUBSCRIBER_BUFFER`] is the stream's only buffer, and HTTP/2 flow control
    /// holds back a slow client's events there until the hub cuts it off. Dropping the body
    /// (client gone, connection closed) drops the subscription.
    fn stream<E: Send + 'static>(
        &self,
        hub: &Arc<Hub>,
        filter: Filter,
        inline: Inline,
        make: fn(Vec<u8>, i32) -> E,
    ) -> Result<Response<EventStream<E>>, Status> {
        self.check_running()?;
        let crate::hub::Subscription { replay, live } = hub.subscribe(filter.clone());
        let gauge = self.metrics.streams(hub.kind());
        gauge.inc();
        tracing::debug!(resource = hub.kind(), namespace = %filter.namespace, app_id = %filter.app_id, "stream opened");
        let state = StreamState {
            replay: replay.into_iter(),
            live,
            filter,
            inline,
            secrets: self.secrets.clone(),
            shutdown: self.shutdown.clone(),
            _open: OpenStream(gauge),
            done: false,
        };
        let events = futures::stream::unfold(state, move |mut state| async move {
            let item = state.next().await?;
            Some((item.map(|(bytes, kind)| make(bytes, kind)), state))
        });
        Ok(Response::new(Box::pin(events)))
    }

    /// A stream that never sends (resources daprs does not serve), open until shutdown.
    fn idle_stream<E: Send + 'static>(&self) -> Result<Response<EventStream<E>>, Status> {
        self.check_running()?;
        let mut shutdown = self.shutdown.clone();
        let events = futures::stream::once(async move {
            stopped(&mut shutdown).await;
            Err(Status::unavailable("the operator is shutting down"))
        });
        Ok(Response::new(Box::pin(events)))
    }

    fn filter(id: &SpiffeId, namespace: &str) -> Filter {
        Filter {
            namespace: namespace.to_owned(),
            app_id: id.app_id().to_owned(),
            name: None,
        }
    }
}

#[tonic::async_trait]
impl Operator for OperatorApi {
    type ComponentUpdateStream = EventStream<ComponentUpdateEvent>;
    type SubscriptionUpdateStream = EventStream<SubscriptionUpdateEvent>;
    type HTTPEndpointUpdateStream = EventStream<HttpEndpointUpdateEvent>;
    type MCPServerUpdateStream = EventStream<McpServerUpdateEvent>;
    type ConfigurationUpdateStream = EventStream<ConfigurationUpdateEvent>;
    type ResiliencyUpdateStream = EventStream<ResiliencyUpdateEvent>;
    type WorkflowAccessPolicyUpdateStream = EventStream<WorkflowAccessPolicyUpdateEvent>;

    async fn component_update(
        &self,
        request: Request<ComponentUpdateRequest>,
    ) -> Result<Response<Self::ComponentUpdateStream>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        self.stream(
            &self.hubs.components,
            Self::filter(&id, ns),
            Inline::Base64,
            |component, r#type| ComponentUpdateEvent { component, r#type },
        )
    }

    async fn list_components(
        &self,
        request: Request<ListComponentsRequest>,
    ) -> Result<Response<ListComponentResponse>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        let objects = self
            .hubs
            .components
            .list(ns, Some(id.app_id()))
            .into_iter()
            .filter(|o| o.in_scope(id.app_id()))
            .collect();
        let components = self.encode_all(objects, Inline::Base64).await?;
        Ok(Response::new(ListComponentResponse { components }))
    }

    async fn get_configuration(
        &self,
        request: Request<GetConfigurationRequest>,
    ) -> Result<Response<GetConfigurationResponse>, Status> {
        let GetConfigurationRequest { name, namespace } = request.get_ref();
        authorized(&request, namespace)?;
        let object = self.hubs.configurations.get(namespace, name).ok_or_else(|| {
            Status::not_found(format!(
                "Configuration {name:?} not found in namespace {namespace:?}: create it, or fix the dapr.io/config annotation"
            ))
        })?;
        let configuration = crate::secrets::resolve(&object, Inline::Raw, &self.secrets)
            .await
            .map_err(secret_status)?
            .to_vec();
        Ok(Response::new(GetConfigurationResponse { configuration }))
    }

    async fn list_subscriptions(
        &self,
        _request: Request<()>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        Err(Status::permission_denied(
            "identity does not match requested namespace: ListSubscriptions carries no namespace; use ListSubscriptionsV2",
        ))
    }

    async fn get_resiliency(
        &self,
        request: Request<GetResiliencyRequest>,
    ) -> Result<Response<GetResiliencyResponse>, Status> {
        let GetResiliencyRequest { name, namespace } = request.get_ref();
        authorized(&request, namespace)?;
        let object = self.hubs.resiliencies.get(namespace, name).ok_or_else(|| {
            Status::not_found(format!(
                "Resiliency {name:?} not found in namespace {namespace:?}"
            ))
        })?;
        Ok(Response::new(GetResiliencyResponse {
            resiliency: object.encoded.to_vec(),
        }))
    }

    async fn list_resiliency(
        &self,
        request: Request<ListResiliencyRequest>,
    ) -> Result<Response<ListResiliencyResponse>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        let resiliencies = self
            .hubs
            .resiliencies
            .list(ns, Some(id.app_id()))
            .iter()
            .map(|o| o.encoded.to_vec())
            .collect();
        Ok(Response::new(ListResiliencyResponse { resiliencies }))
    }

    async fn list_subscriptions_v2(
        &self,
        request: Request<ListSubscriptionsRequest>,
    ) -> Result<Response<ListSubscriptionsResponse>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        let subscriptions = self
            .hubs
            .subscriptions
            .list(ns, Some(id.app_id()))
            .iter()
            .map(|o| o.encoded.to_vec())
            .collect();
        Ok(Response::new(ListSubscriptionsResponse { subscriptions }))
    }

    async fn subscription_update(
        &self,
        request: Request<SubscriptionUpdateRequest>,
    ) -> Result<Response<Self::SubscriptionUpdateStream>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        self.stream(
            &self.hubs.subscriptions,
            Self::filter(&id, ns),
            Inline::None,
            |subscription, r#type| SubscriptionUpdateEvent {
                subscription,
                r#type,
            },
        )
    }

    async fn list_http_endpoints(
        &self,
        request: Request<ListHttpEndpointsRequest>,
    ) -> Result<Response<ListHttpEndpointsResponse>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        let objects = self.hubs.http_endpoints.list(ns, Some(id.app_id()));
        let http_endpoints = self.encode_all(objects, Inline::Base64).await?;
        Ok(Response::new(ListHttpEndpointsResponse { http_endpoints }))
    }

    async fn http_endpoint_update(
        &self,
        request: Request<HttpEndpointUpdateRequest>,
    ) -> Result<Response<Self::HTTPEndpointUpdateStream>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        self.stream(
            &self.hubs.http_endpoints,
            Self::filter(&id, ns),
            Inline::Base64,
            |http_endpoints, r#type| HttpEndpointUpdateEvent {
                http_endpoints,
                r#type,
            },
        )
    }

    async fn list_mcp_servers(
        &self,
        request: Request<ListMcpServersRequest>,
    ) -> Result<Response<ListMcpServersResponse>, Status> {
        authorized(&request, &request.get_ref().namespace)?;
        Ok(Response::new(ListMcpServersResponse::default()))
    }

    async fn mcp_server_update(
        &self,
        request: Request<McpServerUpdateRequest>,
    ) -> Result<Response<Self::MCPServerUpdateStream>, Status> {
        authorized(&request, &request.get_ref().namespace)?;
        self.idle_stream()
    }

    async fn configuration_update(
        &self,
        request: Request<ConfigurationUpdateRequest>,
    ) -> Result<Response<Self::ConfigurationUpdateStream>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        let name = self
            .pods
            .config_of(ns, id.app_id())
            .await
            .map_err(Status::unavailable)?;
        let Some(name) = name else {
            // The app uses the default configuration: nothing will ever change.
            return self.idle_stream();
        };
        let filter = Filter {
            name: Some(name),
            ..Self::filter(&id, ns)
        };
        self.stream(
            &self.hubs.configurations,
            filter,
            Inline::Raw,
            |configuration, r#type| ConfigurationUpdateEvent {
                configuration,
                r#type,
            },
        )
    }

    async fn resiliency_update(
        &self,
        request: Request<ResiliencyUpdateRequest>,
    ) -> Result<Response<Self::ResiliencyUpdateStream>, Status> {
        let ns = &request.get_ref().namespace;
        let id = authorized(&request, ns)?;
        self.stream(
            &self.hubs.resiliencies,
            Self::filter(&id, ns),
            Inline::None,
            |resiliency, r#type| ResiliencyUpdateEvent { resiliency, r#type },
        )
    }

    async fn list_workflow_access_policy(
        &self,
        request: Request<ListWorkflowAccessPolicyRequest>,
    ) -> Result<Response<ListWorkflowAccessPolicyResponse>, Status> {
        authorized(&request, &request.get_ref().namespace)?;
        Ok(Response::new(ListWorkflowAccessPolicyResponse::default()))
    }

    async fn workflow_access_policy_update(
        &self,
        request: Request<WorkflowAccessPolicyUpdateRequest>,
    ) -> Result<Response<Self::WorkflowAccessPolicyUpdateStream>, Status> {
        authorized(&request, &request.get_ref().namespace)?;
        self.idle_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use prost::Message;

    /// The test resources reference no Secret, so nothing is ever looked up.
    struct NoSecrets;

    #[async_trait::async_trait]
    impl crate::secrets::SecretSource for NoSecrets {
        async fn get(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<crate::secrets::SecretData>, SecretError> {
            panic!("no Secret is referenced, yet {namespace}/{name} was looked up")
        }
    }

    fn api() -> (OperatorApi, watch::Sender<bool>) {
        let (stop, shutdown) = watch::channel(false);
        let hubs = Hubs::default();
        for hub in hubs.all() {
            hub.relist_start();
            hub.relist_done();
        }
        let api = OperatorApi {
            hubs,
            secrets: Arc::new(CoalescingSecrets::new(Arc::new(NoSecrets))),
            pods: Arc::new(crate::pods::StaticPods::default()),
            shutdown,
            metrics: Arc::new(Metrics::default()),
        };
        (api, stop)
    }

    fn component(revision: usize) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
            "metadata": {"name": "store", "namespace": "ns", "resourceVersion": revision.to_string()},
            "spec": {"type": "state.redis", "version": "v1", "metadata": [{"name": "revision", "value": revision.to_string()}]}
        })
    }

    fn open(api: &OperatorApi) -> EventStream<ComponentUpdateEvent> {
        let filter = Filter {
            namespace: "ns".into(),
            app_id: "app".into(),
            name: None,
        };
        api.stream(
            &api.hubs.components,
            filter,
            Inline::Base64,
            |component, r#type| ComponentUpdateEvent { component, r#type },
        )
        .unwrap()
        .into_inner()
    }

    #[tokio::test]
    async fn a_stream_sends_changes_and_dropping_it_unsubscribes() {
        let (api, _stop) = api();
        let gauge = api.metrics.streams("components");
        let mut events = open(&api);
        assert_eq!(gauge.get(), 1);
        api.hubs.components.apply(component(1));
        let event = events.next().await.unwrap().unwrap();
        assert_eq!(event.r#type, ResourceEventType::Created as i32);
        let value: serde_json::Value = serde_json::from_slice(&event.component).unwrap();
        assert_eq!(value["spec"]["metadata"][0]["value"], "1");
        api.hubs.components.apply(component(2));
        let event = events.next().await.unwrap().unwrap();
        assert_eq!(event.r#type, ResourceEventType::Updated as i32);

        drop(events);
        assert_eq!(gauge.get(), 0, "a dropped stream leaves the gauge");
        api.hubs.components.apply(component(3));
        assert_eq!(
            api.hubs.components.subscribers(),
            0,
            "the hub forgets a dropped stream"
        );
    }

    #[tokio::test]
    async fn a_stream_that_falls_behind_gets_its_buffered_events_then_aborted() {
        let (api, _stop) = api();
        let mut events = open(&api);
        for revision in 1..=crate::hub::SUBSCRIBER_BUFFER + 1 {
            api.hubs.components.apply(component(revision));
        }
        for revision in 1..=crate::hub::SUBSCRIBER_BUFFER {
            let event = events.next().await.unwrap().unwrap();
            let value: serde_json::Value = serde_json::from_slice(&event.component).unwrap();
            assert_eq!(value["spec"]["metadata"][0]["value"], revision.to_string());
        }
        let status = events.next().await.unwrap().unwrap_err();
        assert_eq!(status.code(), tonic::Code::Aborted);
        assert!(
            events.next().await.is_none(),
            "the stream ends after its status"
        );
        assert_eq!(api.metrics.streams("components").get(), 0);
    }

    #[tokio::test]
    async fn shutdown_ends_event_and_idle_streams_with_unavailable() {
        let (api, stop) = api();
        let mut events = open(&api);
        let mut idle = api
            .idle_stream::<ComponentUpdateEvent>()
            .unwrap()
            .into_inner();
        stop.send(true).unwrap();
        for stream in [&mut events, &mut idle] {
            let status = stream.next().await.unwrap().unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert!(stream.next().await.is_none());
        }
        assert_eq!(
            open_after_shutdown(&api).unwrap_err().code(),
            tonic::Code::Unavailable
        );
    }

    fn open_after_shutdown(api: &OperatorApi) -> Result<(), Status> {
        api.idle_stream::<ComponentUpdateEvent>().map(drop)
    }

    #[test]
    fn the_namespace_must_be_the_callers() {
        let id: SpiffeId = "spiffe://public/ns/a/orders".parse().unwrap();
        assert!(authorize(&id, "a").is_ok());
        let err = authorize(&id, "b").unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(
            err.message()
                .contains("identity does not match requested namespace")
        );
        assert_eq!(
            authorize(&id, "").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let other_domain: SpiffeId = "spiffe://elsewhere/ns/a/orders".parse().unwrap();
        assert!(
            authorize(&other_domain, "a").is_ok(),
            "the trust domain is not checked"
        );
    }

    #[test]
    fn field_numbers_match_daprs() {
        // ListSubscriptionsRequest.namespace is field 2 (tag 0x12), the others field 1 (0x0a).
        let bytes = ListSubscriptionsRequest {
            namespace: "n".into(),
        }
        .encode_to_vec();
        assert_eq!(bytes, [0x12, 1, b'n']);
        let bytes = ListComponentsRequest {
            namespace: "n".into(),
        }
        .encode_to_vec();
        assert_eq!(bytes, [0x0a, 1, b'n']);
        let bytes = GetConfigurationRequest {
            name: "c".into(),
            namespace: "n".into(),
        }
        .encode_to_vec();
        assert_eq!(bytes, [0x0a, 1, b'c', 0x12, 1, b'n']);
        let bytes = ComponentUpdateEvent {
            component: b"{}".to_vec(),
            r#type: 3,
        }
        .encode_to_vec();
        assert_eq!(bytes, [0x0a, 2, b'{', b'}', 0x10, 3]);
        let bytes = HttpEndpointUpdateEvent {
            http_endpoints: b"x".to_vec(),
            r#type: 1,
        }
        .encode_to_vec();
        assert_eq!(bytes, [0x0a, 1, b'x', 0x10, 1]);
        let result = ResourceResult {
            observed_generation: 7,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(result, [0x38, 7]);
    }
}
