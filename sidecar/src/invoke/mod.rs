//! Service invocation: the caller side (HTTP `/v1.0/invoke`, gRPC `InvokeService`), the
//! sidecar-to-sidecar internal API `dapr.proto.internals.v1.ServiceInvocation` (client here,
//! server in [`server`]), name resolution ([`resolve`], [`mdns`]), ACLs ([`acl`]) and the app channel
//! ([`app`]).
//!
//! Sidecars talk gRPC over HTTP/2 on the internal port: mutual TLS with the sentry SVIDs when
//! an [`Identity`] exists (the caller checks the callee's SPIFFE path `/ns/<ns>/<app-id>`, the
//! callee authorises the caller's id with the ACL), plaintext h2c otherwise (as Dapr without
//! mTLS). One multiplexed connection per peer is kept with keepalive pings (10 s, 5 s ack
//! timeout, also when idle); calls failing with `Unavailable` or `Unauthenticated` are retried
//! 3 times 1 s apart on a fresh connection and a fresh resolution (Dapr's built-in retries).
//!
//! Calls go through [`client`], a gRPC caller on the `h2` crate: `CallLocal(Stream)` calls run
//! in the invoking task; proxied gRPC calls (any service, any stream shape) stream through the
//! same connection ([`h2body`]). Plain-HTTP apps are called through [`http1`].

pub mod acl;
pub mod app;
pub mod client;
pub mod coalesce;
pub mod h2body;
pub mod http1;
pub mod mdns;
pub mod proxy;
pub mod resolve;
pub mod serve;
pub mod server;
pub mod trace;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use daprs_api::SpiffeId;
use daprs_api::grpc_frame;
use daprs_api::proto::common::{HttpExtension, InvokeRequest, StreamPayload};
use daprs_api::proto::internals::{
    ApiVersion, InternalInvokeRequest, InternalInvokeRequestStream, InternalInvokeResponse,
    InternalInvokeResponseStream, ListStringValue,
};
use daprs_api::tls::PeerMatcher;

use crate::identity::Identity;
use crate::metrics::Metrics;
pub use app::{AppChannel, AppRequest, AppResponse, AppSettings, Md};

/// Size of the payload chunks of a streamed call (Dapr's).
pub const CHUNK_BYTES: usize = 2048;
/// Dapr's built-in retries on `Unavailable`/`Unauthenticated`.
pub const RETRIES: u32 = 3;
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Keepalive of sidecar connections (Dapr's).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connect timeout to another sidecar.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an invocation failed (the HTTP and gRPC front ends render it).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("failed to invoke, id: {app_id}, err: {error}")]
    Failed { app_id: String, error: String },
    #[error("{0}")]
    Denied(String),
    #[error("invalid method: {0}")]
    BadMethod(String),
}

impl InvokeError {
    pub fn to_api(&self) -> crate::errors::ApiError {
        use http::StatusCode;
        let (status, code) = match self {
            InvokeError::Denied(_) => (StatusCode::FORBIDDEN, tonic::Code::PermissionDenied),
            InvokeError::BadMethod(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
            InvokeError::Failed { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal)
            }
        };
        crate::errors::ApiError::legacy(status, code, "ERR_DIRECT_INVOKE", self.to_string())
    }
}

/// One invocation as a caller makes it.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// `app` or `app.namespace`.
    pub target: String,
    pub method: String,
    /// HTTP verb (`None` for a gRPC caller without an HTTP extension).
    pub verb: Option<String>,
    pub query: String,
    /// The caller's headers / metadata (API token and `dapr-app-id` already removed).
    pub metadata: Md,
    pub body: Bytes,
    pub content_type: String,
}

/// What [`Invoker::new`] needs.
#[derive(Debug, Clone)]
pub struct InvokeSettings {
    pub resolver: resolve::Resolver,
    pub app: AppSettings,
}

impl Default for InvokeSettings {
    fn default() -> Self {
        Self {
            resolver: resolve::Resolver::registry(resolve::Resolver::default_registry_dir()),
            app: AppSettings::default(),
        }
    }
}

/// The invocation engine shared by the APIs and the internal server.
pub struct Invoker {
    pub app_id: String,
    pub namespace: String,
    pub app: AppChannel,
    pub acl: acl::Acl,
    pub resolver: resolve::Resolver,
    identity: Option<Arc<Identity>>,
    metrics: Arc<Metrics>,
    /// One connection per peer, for `CallLocal(Stream)` and proxied gRPC calls alike, by
    /// address and expected peer.
    peers: Mutex<HashMap<String, Arc<client::Peer>>>,
    host_ip: String,
    hostname: String,
}

impl std::fmt::Debug for Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Invoker")
            .field("app_id", &self.app_id)
            .field("namespace", &self.namespace)
            .field("resolver", &self.resolver)
            .field("mtls", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

fn put(md: &mut Md, key: &str, value: impl Into<String>) {
    md.insert(
        key.to_owned(),
        ListStringValue {
            values: vec![value.into()],
        },
    );
}

/// Normalises a method as Dapr does: `#`, `?`, NUL and control characters are refused, `..`
/// and `.` segments are resolved away.
pub fn normalize_method(method: &str) -> Result<String, InvokeError> {
    if method
        .chars()
        .any(|c| c == '#' || c == '?' || c.is_control())
    {
        return Err(InvokeError::BadMethod(format!(
            "{method:?} contains '#', '?' or a control character"
        )));
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in method.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let trailing = method.ends_with('/') && !out.is_empty();
    let mut joined = out.join("/");
    if trailing {
        joined.push('/');
    }
    Ok(joined)
}

impl Invoker {
    pub fn new(
        app_id: String,
        namespace: String,
        settings: InvokeSettings,
        acl: acl::Acl,
        identity: Option<Arc<Identity>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let host_ip = std::env::var("DAPR_HOST_IP")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "127.0.0.1".into());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        Self {
            app: AppChannel::new(&settings.app),
            app_id,
            namespace,
            acl,
            resolver: settings.resolver,
            identity,
            metrics,
            peers: Mutex::new(HashMap::new()),
            host_ip,
            hostname,
        }
    }

    /// Splits `app.namespace` (a bare id is in our namespace).
    fn target(&self, target: &str) -> (String, String) {
        match target.rsplit_once('.') {
            Some((app, ns)) if !app.is_empty() && !ns.is_empty() => (app.to_owned(), ns.to_owned()),
            _ => (target.to_owned(), self.namespace.clone()),
        }
    }

    /// Adds the caller-side headers Dapr stamps.
    fn stamp(&self, md: &mut Md, target_app: &str) {
        for key in [
            "dapr-caller-app-id",
            "dapr-caller-namespace",
            "dapr-callee-app-id",
        ] {
            md.remove(key);
        }
        put(md, "dapr-caller-app-id", self.app_id.clone());
        put(md, "dapr-caller-namespace", self.namespace.clone());
        put(md, "dapr-callee-app-id", target_app);
        put(md, "destination-app-id", target_app);
        md.entry("x-forwarded-for".into())
            .or_default()
            .values
            .push(self.host_ip.clone());
        md.entry("x-forwarded-host".into())
            .or_default()
            .values
            .push(self.hostname.clone());
        let ip = if self.host_ip.contains(':') {
            format!("\"[{}]\"", self.host_ip)
        } else {
            self.host_ip.clone()
        };
        md.entry("forwarded".into())
            .or_default()
            .values
            .push(format!("for={ip};by={ip};host={}", self.hostname));
    }

    /// Invokes `call`: on our own app directly, elsewhere through the target's sidecar.
    pub async fn invoke(&self, mut call: Call) -> Result<AppResponse, InvokeError> {
        let (app_id, namespace) = self.target(&call.target);
        let method = normalize_method(&call.method)?;
        self.stamp(&mut call.metadata, &app_id);
        let started = Instant::now();
        self.metrics.inc(
            "dapr_runtime_service_invocation_req_sent_total",
            &[("dst_app_id", app_id.as_str()), ("method", method.as_str())],
        );
        let result = if app_id == self.app_id && namespace == self.namespace {
            self.app
                .call(AppRequest {
                    method: method.clone(),
                    verb: call.verb,
                    query: call.query,
                    metadata: call.metadata,
                    body: call.body,
                    content_type: call.content_type,
                })
                .await
                .map_err(|e| InvokeError::Failed {
                    app_id: app_id.clone(),
                    error: e.to_string(),
                })
        } else {
            self.invoke_remote(&app_id, &namespace, &method, call).await
        };
        let status = match &result {
            Ok(r) => r.status.to_string(),
            Err(_) => "error".into(),
        };
        self.metrics.inc(
            "dapr_runtime_service_invocation_res_recv_total",
            &[("dst_app_id", app_id.as_str()), ("status", status.as_str())],
        );
        self.metrics.observe(
            "dapr_runtime_service_invocation_res_recv_latency_ms",
            &[("dst_app_id", app_id.as_str())],
            started.elapsed(),
        );
        result
    }

    /// The TLS client configuration for a call to `app_id` in `namespace`: our SVID, and the
    /// callee must present `/ns/<namespace>/<app-id>` (any trust domain). `None` without mTLS.
    fn tls_connector(
        &self,
        app_id: &str,
        namespace: &str,
    ) -> Result<Option<tokio_rustls::TlsConnector>, String> {
        let Some(identity) = &self.identity else {
            return Ok(None);
        };
        let want = SpiffeId::new(
            daprs_api::names::DEFAULT_APP_TRUST_DOMAIN,
            namespace,
            app_id,
        )
        .map_err(|e| e.to_string())?;
        let config = identity
            .client_config(PeerMatcher::Path(want))
            .map_err(|e| e.to_string())?;
        Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
    }

    /// The connection for internal calls to `app_id` at `address`, opened by its first call;
    /// one that has ended is replaced.
    pub(super) fn peer(
        &self,
        address: &str,
        app_id: &str,
        namespace: &str,
    ) -> Result<Arc<client::Peer>, String> {
        let key = pool_key(address, app_id, namespace);
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = peers.get(&key).filter(|p| !p.is_closed()) {
            return Ok(peer.clone());
        }
        let transport = match self.tls_connector(app_id, namespace)? {
            Some(connector) => client::Transport::Tls(connector),
            None => client::Transport::Plain,
        };
        let peer = Arc::new(client::Peer::new(address.to_owned(), transport));
        peers.insert(key, peer.clone());
        Ok(peer)
    }

    /// Forgets the peer's address and connection after a failed call: the next call resolves
    /// again and connects anew.
    fn drop_connection(&self, address: &str, app_id: &str, namespace: &str) {
        self.resolver.forget(app_id, namespace);
        let key = pool_key(address, app_id, namespace);
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    async fn invoke_remote(
        &self,
        app_id: &str,
        namespace: &str,
        method: &str,
        call: Call,
    ) -> Result<AppResponse, InvokeError> {
        let failed = |error: String| InvokeError::Failed {
            app_id: app_id.to_owned(),
            error,
        };
        let mut request = InternalInvokeRequest {
            ver: ApiVersion::V1 as i32,
            metadata: call.metadata,
            message: Some(InvokeRequest {
                method: method.to_owned(),
                data: None,
                content_type: call.content_type,
                http_extension: Some(HttpExtension {
                    verb: call.verb.as_deref().map(app::verb_number).unwrap_or(0),
                    querystring: call.query,
                }),
            }),
            actor: None,
        };
        let encoded = stream_request(&mut request, &call.body);
        let mut attempt = 0;
        loop {
            let address = self
                .resolver
                .resolve(app_id, namespace)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let peer = self.peer(&address, app_id, namespace).map_err(&failed)?;
            match call_stream(&peer, &request, &encoded, &call.body).await {
                Ok(response) => return Ok(response),
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Unauthenticated
                    ) && attempt < RETRIES =>
                {
                    attempt += 1;
                    tracing::debug!(app_id, %address, error = %status, attempt, "invocation failed; retrying on a new connection");
                    self.drop_connection(&address, app_id, namespace);
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
                Err(status) if status.code() == tonic::Code::PermissionDenied => {
                    return Err(InvokeError::Denied(status.message().to_owned()));
                }
                Err(status) => {
                    if status.code() == tonic::Code::Unavailable {
                        self.drop_connection(&address, app_id, namespace);
                    }
                    return Err(failed(status.message().to_owned()));
                }
            }
        }
    }
}

/// The key of a peer's connection: the same address may serve several app ids
/// (each checked for its own SPIFFE id).
fn pool_key(address: &str, app_id: &str, namespace: &str) -> String {
    format!("{address}|{namespace}|{app_id}")
}

/// `body` as a stream's payload chunks of [`CHUNK_BYTES`], numbered from 0.
fn payloads(body: &[u8]) -> impl Iterator<Item = StreamPayload> + '_ {
    body.chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(seq, data)| StreamPayload {
            data: data.to_vec(),
            seq: seq as u64,
        })
}

/// A `CallLocalStream` request body: `request` and the first chunk of `body` in the first
/// message, the other chunks after it. Encoded once per invocation, whatever the retries;
/// `request` is moved into the message and back out, not copied.
fn stream_request(request: &mut InternalInvokeRequest, body: &Bytes) -> Bytes {
    let mut payloads = payloads(body);
    let mut messages = Vec::with_capacity(body.len() / CHUNK_BYTES + 1);
    messages.push(InternalInvokeRequestStream {
        request: Some(std::mem::take(request)),
        payload: payloads.next(),
    });
    messages.extend(payloads.map(|p| InternalInvokeRequestStream {
        request: None,
        payload: Some(p),
    }));
    let encoded = grpc_frame::encode(&messages);
    *request = messages.swap_remove(0).request.unwrap_or_default();
    encoded
}

/// Calls `CallLocalStream` with `encoded` (from [`stream_request`]); falls back to `CallLocal`
/// when the peer has no streaming.
async fn call_stream(
    peer: &client::Peer,
    request: &InternalInvokeRequest,
    encoded: &Bytes,
    body: &Bytes,
) -> Result<AppResponse, tonic::Status> {
    let received = match peer.call(client::CALL_LOCAL_STREAM, encoded.clone()).await {
        Ok(received) => received,
        Err(status) if status.code() == tonic::Code::Unimplemented => {
            // An older peer: the whole body in one message.
            let mut unary = request.clone();
            if let Some(m) = unary.message.as_mut() {
                m.data = Some(prost_types::Any {
                    type_url: String::new(),
                    value: body.to_vec(),
                });
            }
            let received = peer
                .call(client::CALL_LOCAL, grpc_frame::encode(&[unary]))
                .await?;
            let response = client::decode_frames::<InternalInvokeResponse>(received)?
                .into_iter()
                .next()
                .ok_or_else(|| tonic::Status::internal("the peer answered without a response"))?;
            return Ok(from_internal(response, None));
        }
        Err(status) => return Err(status),
    };
    let mut stream = client::decode_frames::<InternalInvokeResponseStream>(received)?.into_iter();
    let first = stream
        .next()
        .ok_or_else(|| tonic::Status::internal("the peer closed the stream without a response"))?;
    let header = first
        .response
        .ok_or_else(|| tonic::Status::internal("the first stream message has no response"))?;
    let mut body = BytesMut::new();
    for (expected, payload) in std::iter::once(first.payload)
        .chain(stream.map(|m| m.payload))
        .flatten()
        .enumerate()
    {
        if payload.seq != expected as u64 {
            return Err(tonic::Status::internal(format!(
                "payload chunk {} arrived where {expected} was expected",
                payload.seq
            )));
        }
        body.extend_from_slice(&payload.data);
    }
    Ok(from_internal(header, Some(body.freeze())))
}

fn from_internal(response: InternalInvokeResponse, body: Option<Bytes>) -> AppResponse {
    let status = response.status.unwrap_or_default();
    let message = response.message.unwrap_or_default();
    AppResponse {
        status: status.code,
        message: status.message,
        headers: response.headers,
        trailers: response.trailers,
        body: body.unwrap_or_else(|| {
            message
                .data
                .map(|d| Bytes::from(d.value))
                .unwrap_or_default()
        }),
        content_type: message.content_type,
    }
}

/// The HTTP status of a gRPC code (Dapr's mapping, `HTTPStatusFromCode`).
pub fn http_status_of_grpc(code: i32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        2 => 500,
        3 => 400,
        4 => 504,
        5 => 404,
        6 => 409,
        7 => 403,
        8 => 429,
        9 => 400,
        10 => 409,
        11 => 400,
        12 => 501,
        13 => 500,
        14 => 503,
        15 => 500,
        16 => 401,
        _ => 500,
    }
}

/// The gRPC code of an HTTP status (for gRPC callers of HTTP apps).
pub fn grpc_code_of_http(status: u16) -> tonic::Code {
    match status {
        200..=299 => tonic::Code::Ok,
        400 => tonic::Code::InvalidArgument,
        401 => tonic::Code::Unauthenticated,
        403 => tonic::Code::PermissionDenied,
        404 => tonic::Code::NotFound,
        409 => tonic::Code::Aborted,
        429 => tonic::Code::ResourceExhausted,
        499 => tonic::Code::Cancelled,
        501 => tonic::Code::Unimplemented,
        503 => tonic::Code::Unavailable,
        504 => tonic::Code::DeadlineExceeded,
        _ => tonic::Code::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_normalised() {
        assert_eq!(normalize_method("a/b/../c").unwrap(), "a/c");
        assert_eq!(normalize_method("/a//./b/").unwrap(), "a/b/");
        assert_eq!(normalize_method("../../x").unwrap(), "x");
        assert!(normalize_method("a#b").is_err());
        assert!(normalize_method("a\u{0}b").is_err());
    }

    #[test]
    fn a_stream_request_is_encoded_and_the_request_kept() {
        let mut request = InternalInvokeRequest {
            ver: ApiVersion::V1 as i32,
            message: Some(InvokeRequest {
                method: "orders".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let original = request.clone();
        let body = Bytes::from(vec![9u8; CHUNK_BYTES + 10]);
        let encoded = stream_request(&mut request, &body);
        assert_eq!(
            request, original,
            "the request is back for a CallLocal fallback"
        );
        let messages = client::decode_frames::<InternalInvokeRequestStream>(encoded).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].request.as_ref(), Some(&original));
        assert!(messages[1].request.is_none());
        let payloads: Vec<_> = messages
            .iter()
            .map(|m| m.payload.clone().unwrap())
            .collect();
        assert_eq!((payloads[0].seq, payloads[0].data.len()), (0, CHUNK_BYTES));
        assert_eq!((payloads[1].seq, payloads[1].data.len()), (1, 10));
    }

    #[test]
    fn status_mappings() {
        assert_eq!(http_status_of_grpc(7), 403);
        assert_eq!(http_status_of_grpc(0), 200);
        assert_eq!(grpc_code_of_http(404), tonic::Code::NotFound);
    }
}
