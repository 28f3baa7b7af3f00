//! The app channel: how daprd calls its own app for an invocation (HTTP `VERB /<method>?<qs>`
//! or gRPC `AppCallback.OnInvoke`), with Dapr's header rules, `--app-max-concurrency` and the
//! app health probes (`--enable-app-health-check`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dapr::dapr::proto::common::v1 as dcommon;
use dapr::dapr::proto::runtime::v1 as druntime;
use daprs_api::proto::internals::ListStringValue;

use super::trace::{self, SpanContext};
use tokio::sync::Semaphore;

/// Metadata / headers of an invocation, as the internal API carries them.
pub type Md = HashMap<String, ListStringValue>;

/// Headers that belong to one connection and are never forwarded.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "http2-settings",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Standard HTTP headers that get a `dapr-` prefix for gRPC apps.
const HTTP_STANDARD: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "cache-control",
    "content-type",
    "content-length",
    "cookie",
    "date",
    "expect",
    "forwarded",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "max-forwards",
    "origin",
    "pragma",
    "range",
    "referer",
    "user-agent",
    "via",
    "warning",
];

/// A header name in Go's canonical form (`CanonicalMIMEHeaderKey`): the first letter and each
/// letter after a `-` upper case, the others lower case.
pub fn canonical_header(name: &str) -> String {
    let mut upper = true;
    name.chars()
        .map(|c| {
            let out = if upper {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            upper = c == '-';
            out
        })
        .collect()
}

/// True for a hop-by-hop header, including those named by `Connection`.
pub fn is_hop_by_hop(name: &str, connection_listed: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || name
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case("proxy-"))
        || connection_listed
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name))
}

/// The header names listed in `Connection`.
pub fn connection_listed(md: &Md) -> Vec<String> {
    md.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| v.values.iter())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One call to the app.
#[derive(Debug, Clone, Default)]
pub struct AppRequest {
    pub method: String,
    /// HTTP verb name; `None` (Dapr's `NONE`) means POST for HTTP apps.
    pub verb: Option<String>,
    pub query: String,
    pub metadata: Md,
    pub body: Bytes,
    pub content_type: String,
}

/// The app's answer: an HTTP status (>= 100) or a gRPC code (<= 16).
#[derive(Debug, Clone, Default)]
pub struct AppResponse {
    pub status: i32,
    pub message: String,
    pub headers: Md,
    pub trailers: Md,
    pub body: Bytes,
    pub content_type: String,
}

/// Why the app could not be called.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("no app channel: daprd was started without --app-port")]
    NoApp,
    #[error("app is not in a healthy state")]
    Unhealthy,
    #[error("failed to call the app: {0}")]
    Call(String),
    #[error(
        "the app is not a gRPC app (--app-protocol {0}); gRPC proxying needs --app-protocol grpc"
    )]
    NotGrpc(String),
}

enum Channel {
    Http {
        client: reqwest::Client,
        base: String,
        /// Plain `http` apps: connections driven by the calling task ([`super::http1`]);
        /// `https` and `h2c` go through `client`.
        plain: Option<super::http1::Http1Pool>,
    },
    Grpc {
        channel: tonic::transport::Channel,
    },
}

/// How daprd calls its app.
pub struct AppChannel {
    channel: Option<Channel>,
    protocol: String,
    limit: Option<Arc<Semaphore>>,
    healthy: Arc<AtomicBool>,
    app_token: Option<String>,
}

impl std::fmt::Debug for AppChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppChannel")
            .field("connected", &self.channel.is_some())
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the app channel is built from.
#[derive(Debug, Clone, Default)]
pub struct AppSettings {
    pub port: Option<u16>,
    /// `http`, `https`, `h2c`, `grpc`, `grpcs`.
    pub protocol: String,
    pub address: String,
    pub max_concurrency: i64,
    pub health: Option<crate::runtime::AppHealth>,
}

impl AppChannel {
    pub fn new(settings: &AppSettings) -> Self {
        let channel = settings.port.map(|port| {
            let host = if settings.address.contains(':') {
                format!("[{}]", settings.address)
            } else {
                settings.address.clone()
            };
            match settings.protocol.as_str() {
                "grpc" | "grpcs" => {
                    let scheme = if settings.protocol == "grpcs" {
                        "https"
                    } else {
                        "http"
                    };
                    let endpoint = tonic::transport::Endpoint::from_shared(format!(
                        "{scheme}://{host}:{port}"
                    ))
                    .unwrap_or_else(|_| {
                        tonic::transport::Endpoint::from_static("http://127.0.0.1:1")
                    })
                    .tcp_nodelay(true)
                    .connect_timeout(Duration::from_secs(5));
                    Channel::Grpc {
                        channel: endpoint.connect_lazy(),
                    }
                }
                protocol => {
                    let scheme = if protocol == "https" { "https" } else { "http" };
                    let client = reqwest::Client::builder()
                        .tcp_nodelay(true)
                        .pool_idle_timeout(Duration::from_secs(90))
                        .pool_max_idle_per_host(1024)
                        .redirect(reqwest::redirect::Policy::none())
                        .build()
                        .unwrap_or_default();
                    Channel::Http {
                        client,
                        base: format!("{scheme}://{host}:{port}"),
                        plain: (protocol == "http" || protocol.is_empty())
                            .then(|| super::http1::Http1Pool::new(format!("{host}:{port}"))),
                    }
                }
            }
        });
        let limit = (settings.max_concurrency > 0)
            .then(|| Arc::new(Semaphore::new(settings.max_concurrency as usize)));
        Self {
            channel,
            protocol: settings.protocol.clone(),
            limit,
            healthy: Arc::new(AtomicBool::new(true)),
            app_token: std::env::var("APP_API_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        }
    }

    /// `--app-protocol`.
    pub fn protocol(&self) -> String {
        self.protocol.clone()
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }

    /// Starts the health probes (`--enable-app-health-check`): the app is unhealthy after
    /// `threshold` consecutive failures and healthy again at the first success.
    pub fn start_health_probes(
        &self,
        health: &crate::runtime::AppHealth,
        stopped: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let Some(channel) = &self.channel else {
            return;
        };
        let healthy = self.healthy.clone();
        let failures = Arc::new(AtomicU32::new(0));
        let interval = Duration::from_secs(health.interval_seconds.max(1));
        let timeout = Duration::from_millis(health.timeout_ms.max(1));
        let threshold = health.threshold.max(1);
        let probe: Box<dyn Fn() -> futures::future::BoxFuture<'static, bool> + Send + Sync> =
            match channel {
                Channel::Http { client, base, .. } => {
                    let client = client.clone();
                    let url = format!("{base}{}", health.path);
                    Box::new(move || {
                        let request = client.get(&url).timeout(timeout).send();
                        Box::pin(
                            async move { request.await.is_ok_and(|r| r.status().is_success()) },
                        )
                    })
                }
                Channel::Grpc { channel } => {
                    let channel = channel.clone();
                    Box::new(move || {
                        let mut client = druntime::app_callback_health_check_client::AppCallbackHealthCheckClient::new(channel.clone());
                        Box::pin(async move {
                            tokio::time::timeout(timeout, client.health_check(()))
                                .await
                                .is_ok_and(|r| r.is_ok())
                        })
                    })
                }
            };
        tokio::spawn(async move {
            let run = async {
                loop {
                    if probe().await {
                        failures.store(0, Ordering::SeqCst);
                        if !healthy.swap(true, Ordering::SeqCst) {
                            tracing::info!("the app is healthy again");
                        }
                    } else if failures.fetch_add(1, Ordering::SeqCst) + 1 >= threshold
                        && healthy.swap(false, Ordering::SeqCst)
                    {
                        tracing::warn!("the app is unhealthy");
                    }
                    tokio::time::sleep(interval).await;
                }
            };
            tokio::select! {
                () = run => {}
                () = stopped => {}
            }
        });
    }

    /// Calls the app.
    pub async fn call(&self, request: AppRequest) -> Result<AppResponse, AppError> {
        let channel = self.channel.as_ref().ok_or(AppError::NoApp)?;
        if !self.is_healthy() {
            return Err(AppError::Unhealthy);
        }
        let _permit = match &self.limit {
            Some(limit) => Some(
                limit
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| AppError::Call(e.to_string()))?,
            ),
            None => None,
        };
        match channel {
            Channel::Http {
                client,
                base,
                plain,
            } => self.call_http(client, base, plain.as_ref(), request).await,
            Channel::Grpc { channel } => self.call_grpc(channel.clone(), request).await,
        }
    }

    /// Forwards a proxied gRPC call as it is (frames, metadata, trailers) to a gRPC app, under
    /// the same health and `--app-max-concurrency` rules as every app call (the permit is held
    /// until the app's response headers arrive).
    pub async fn forward_grpc(
        &self,
        mut request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, AppError> {
        let channel = match self.channel.as_ref().ok_or(AppError::NoApp)? {
            Channel::Grpc { channel } => channel.clone(),
            Channel::Http { .. } => return Err(AppError::NotGrpc(self.protocol.clone())),
        };
        if !self.is_healthy() {
            return Err(AppError::Unhealthy);
        }
        let _permit = match &self.limit {
            Some(limit) => Some(
                limit
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| AppError::Call(e.to_string()))?,
            ),
            None => None,
        };
        if let Some(token) = &self.app_token
            && let Ok(v) = http::HeaderValue::from_str(token)
        {
            request.headers_mut().insert("dapr-api-token", v);
        }
        tower::ServiceExt::oneshot(channel, request)
            .await
            .map_err(|e| AppError::Call(error_chain(&e)))
    }

    async fn call_http(
        &self,
        client: &reqwest::Client,
        base: &str,
        plain: Option<&super::http1::Http1Pool>,
        request: AppRequest,
    ) -> Result<AppResponse, AppError> {
        let verb = request.verb.as_deref().unwrap_or("POST");
        let method = http::Method::from_bytes(verb.as_bytes())
            .map_err(|_| AppError::Call(format!("invalid HTTP verb {verb:?}")))?;
        let mut path = format!("/{}", request.method.trim_start_matches('/'));
        if !request.query.is_empty() {
            path.push('?');
            path.push_str(&request.query);
        }
        let mut headers = http::HeaderMap::new();
        for (name, value) in http_app_headers(request.metadata) {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_maybe_shared(Bytes::from(value)),
            ) {
                headers.append(n, v);
            }
        }
        if !request.content_type.is_empty()
            && let Ok(v) = http::HeaderValue::from_str(&request.content_type)
        {
            headers.insert(http::header::CONTENT_TYPE, v);
        }
        if let Some(token) = &self.app_token
            && let Ok(v) = http::HeaderValue::from_str(token)
        {
            headers.insert("dapr-api-token", v);
        }
        let response = match plain {
            Some(pool) => {
                let uri = http::Uri::try_from(path.as_str())
                    .map_err(|e| AppError::Call(format!("invalid method {path:?}: {e}")))?;
                let mut outgoing = http::Request::new(http_body_util::Full::new(request.body));
                *outgoing.method_mut() = method;
                *outgoing.uri_mut() = uri;
                *outgoing.headers_mut() = headers;
                pool.send(outgoing).await.map_err(AppError::Call)?
            }
            None => {
                let response = client
                    .request(method, format!("{base}{path}"))
                    .headers(headers)
                    .body(request.body)
                    .send()
                    .await
                    .map_err(|e| AppError::Call(e.to_string()))?;
                let mut head = http::Response::builder().status(response.status());
                if let Some(h) = head.headers_mut() {
                    *h = response.headers().clone();
                }
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| AppError::Call(e.to_string()))?;
                head.body(body).map_err(|e| AppError::Call(e.to_string()))?
            }
        };
        let status = i32::from(response.status().as_u16());
        let mut out = AppResponse {
            status,
            ..AppResponse::default()
        };
        // As Dapr's HTTP channel: the app's headers in canonical form (`Content-Type`,
        // `X-App`), Content-Type among them, so a Dapr caller sees them as it would from a
        // Dapr callee (its gRPC API gives `Content-Type` and the like a `dapr-` prefix, and
        // matches them case-sensitively).
        for (name, value) in response.headers() {
            let name = name.as_str();
            if name == "content-type" {
                out.content_type = value.to_str().unwrap_or_default().to_owned();
            }
            if is_hop_by_hop(name, &[]) || name == "content-length" {
                continue;
            }
            out.headers
                .entry(canonical_header(name))
                .or_default()
                .values
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        out.body = response.into_body();
        Ok(out)
    }

    async fn call_grpc(
        &self,
        channel: tonic::transport::Channel,
        request: AppRequest,
    ) -> Result<AppResponse, AppError> {
        let mut client = druntime::app_callback_client::AppCallbackClient::new(channel);
        let verb = request.verb.as_deref().map(verb_number).unwrap_or_default();
        let mut call = tonic::Request::new(dcommon::InvokeRequest {
            method: request.method.clone(),
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: request.body.to_vec(),
            }),
            content_type: request.content_type.clone(),
            http_extension: Some(dcommon::HttpExtension {
                verb,
                querystring: request.query.clone(),
            }),
        });
        let md = call.metadata_mut();
        for (name, value) in grpc_app_metadata(&request.metadata) {
            match value {
                MdValue::Ascii(value) => {
                    if let (Ok(k), Ok(v)) = (
                        tonic::metadata::MetadataKey::from_bytes(name.as_bytes()),
                        tonic::metadata::MetadataValue::try_from(value.as_str()),
                    ) {
                        md.append(k, v);
                    }
                }
                MdValue::Binary(value) => {
                    if let Ok(k) = tonic::metadata::BinaryMetadataKey::from_bytes(name.as_bytes()) {
                        md.append_bin(k, tonic::metadata::BinaryMetadataValue::from_bytes(&value));
                    }
                }
            }
        }
        if let Some(token) = &self.app_token
            && let Ok(v) = tonic::metadata::MetadataValue::try_from(token.as_str())
        {
            md.insert("dapr-api-token", v);
        }
        match client.on_invoke(call).await {
            Ok(response) => {
                let headers = metadata_to_md(response.metadata());
                let response = response.into_inner();
                Ok(AppResponse {
                    status: 0,
                    message: String::new(),
                    headers,
                    trailers: Md::new(),
                    body: response
                        .data
                        .map(|d| Bytes::from(d.value))
                        .unwrap_or_default(),
                    content_type: response.content_type,
                })
            }
            Err(status) => Ok(AppResponse {
                status: status.code() as i32,
                message: status.message().to_owned(),
                headers: metadata_to_md(status.metadata()),
                ..AppResponse::default()
            }),
        }
    }
}

/// An error with its sources, `a: b: c`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// gRPC metadata as internal metadata (binary keys skipped).
pub fn metadata_to_md(md: &tonic::metadata::MetadataMap) -> Md {
    let mut out = Md::new();
    for kv in md.iter() {
        if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv
            && let Ok(v) = v.to_str()
        {
            out.entry(k.as_str().to_owned())
                .or_default()
                .values
                .push(v.to_owned());
        }
    }
    out
}

/// A caller's gRPC metadata as internal metadata: binary (`-bin`) values base64-encoded, as
/// Dapr carries them between sidecars.
pub fn request_metadata_to_md(md: &tonic::metadata::MetadataMap) -> Md {
    use base64::Engine as _;
    let mut out = metadata_to_md(md);
    for kv in md.iter() {
        if let tonic::metadata::KeyAndValueRef::Binary(k, v) = kv
            && let Ok(bytes) = v.to_bytes()
        {
            out.entry(k.as_str().to_owned())
                .or_default()
                .values
                .push(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
    }
    out
}

/// The first value of `key` (case-insensitive).
fn first<'a>(md: &'a Md, key: &str) -> Option<&'a str> {
    md.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .and_then(|(_, v)| v.values.first())
        .map(String::as_str)
}

/// Decodes a base64 metadata value, padded or not.
pub fn decode_binary(value: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let value = value.trim().trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(value)
        .ok()
}

/// The caller's span context: `traceparent`, else `grpc-trace-bin`.
fn span_context(md: &Md) -> Option<(SpanContext, bool)> {
    first(md, trace::TRACEPARENT)
        .and_then(SpanContext::from_traceparent)
        .map(|sc| (sc, true))
        .or_else(|| {
            first(md, trace::GRPC_TRACE_BIN)
                .and_then(decode_binary)
                .and_then(|b| SpanContext::from_binary(&b))
                .map(|sc| (sc, false))
        })
}

/// Dapr's HTTPExtension verb number of an HTTP method name.
pub fn verb_number(verb: &str) -> i32 {
    match verb.to_ascii_uppercase().as_str() {
        "GET" => 1,
        "HEAD" => 2,
        "POST" => 3,
        "PUT" => 4,
        "DELETE" => 5,
        "CONNECT" => 6,
        "OPTIONS" => 7,
        "TRACE" => 8,
        "PATCH" => 9,
        _ => 0,
    }
}

/// The HTTP method name of a HTTPExtension verb number (`None` for NONE).
pub fn verb_name(verb: i32) -> Option<&'static str> {
    Some(match verb {
        1 => "GET",
        2 => "HEAD",
        3 => "POST",
        4 => "PUT",
        5 => "DELETE",
        6 => "CONNECT",
        7 => "OPTIONS",
        8 => "TRACE",
        9 => "PATCH",
        _ => return None,
    })
}

/// Internal metadata as request headers of an HTTP app (Dapr's callee-side rules).
///
/// Takes the metadata by value: names and values are moved, not copied (a call carries ~10).
pub fn http_app_headers(md: Md) -> Vec<(String, String)> {
    let listed = connection_listed(&md);
    let trace = span_context(&md);
    let mut out = Vec::with_capacity(md.len() + 1);
    for (mut lower, values) in md {
        lower.make_ascii_lowercase();
        if lower == "content-length"
            || lower == "content-type"
            || lower == "host"
            || lower == "destination-app-id"
            || lower.ends_with("-bin")
            || is_hop_by_hop(&lower, &listed)
        {
            continue;
        }
        let mut name = if let Some(pseudo) = lower.strip_prefix(':') {
            format!("dapr-{pseudo}")
        } else if lower.starts_with("grpc-") {
            format!("dapr-{lower}")
        } else {
            lower
        };
        let mut values = values.values.into_iter().peekable();
        while let Some(value) = values.next() {
            let this = if values.peek().is_some() {
                name.clone()
            } else {
                std::mem::take(&mut name)
            };
            out.push((this, value));
        }
    }
    // A gRPC caller's grpc-trace-bin becomes the HTTP app's traceparent.
    if let Some((sc, false)) = trace {
        out.push((trace::TRACEPARENT.to_owned(), sc.to_traceparent()));
    }
    out
}

/// Dapr's permanent HTTP headers (`isPermanentHTTPHeader`): in the response headers of a call
/// they get a `dapr-` prefix before reaching an `InvokeService` caller as gRPC metadata.
const PERMANENT_HTTP: &[&str] = &[
    "accept",
    "accept-charset",
    "accept-language",
    "accept-ranges",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "cache-control",
    "content-type",
    "content-length",
    "cookie",
    "date",
    "expect",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-schedule-tag-match",
    "if-unmodified-since",
    "max-forwards",
    "origin",
    "pragma",
    "referer",
    "via",
    "warning",
];

/// The response headers of a call (internal metadata, from our app channel or from another
/// sidecar, Dapr's included) as gRPC response metadata for an `InvokeService` caller, by
/// Dapr's rules (`InternalMetadataToGrpcMetadata`): permanent HTTP headers get a `dapr-`
/// prefix (so an HTTP app's `Content-Length` never reaches an HTTP/2 response, where it would
/// be a protocol error), trace headers and `destination-app-id` are dropped, `-bin` values are
/// base64-decoded.
pub fn grpc_caller_metadata(md: &Md) -> Vec<(String, MdValue)> {
    let mut out = Vec::new();
    for (key, values) in md {
        let lower = key.to_ascii_lowercase();
        if lower == trace::TRACEPARENT
            || lower == trace::TRACESTATE
            || lower == trace::GRPC_TRACE_BIN
            || lower == "destination-app-id"
        {
            continue;
        }
        let name = if PERMANENT_HTTP.contains(&lower.as_str()) {
            format!("dapr-{lower}")
        } else {
            lower
        };
        for v in &values.values {
            if name.ends_with("-bin") {
                if let Some(bytes) = decode_binary(v) {
                    out.push((name.clone(), MdValue::Binary(bytes)));
                }
            } else {
                out.push((name.clone(), MdValue::Ascii(v.clone())));
            }
        }
    }
    out
}

/// A metadata value for a gRPC app.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum MdValue {
    Ascii(String),
    Binary(Vec<u8>),
}

/// Internal metadata as gRPC metadata of a gRPC app (Dapr's callee-side rules). The trace
/// context goes as both `traceparent` (with `tracestate`) and `grpc-trace-bin`, whichever of
/// them the caller sent; other `-bin` values are base64-decoded.
pub fn grpc_app_metadata(md: &Md) -> Vec<(String, MdValue)> {
    let listed = connection_listed(md);
    let mut out = Vec::new();
    for (key, values) in md {
        let lower = key.to_ascii_lowercase();
        if lower.starts_with(':')
            || lower == "destination-app-id"
            || lower == trace::TRACEPARENT
            || lower == trace::TRACESTATE
            || lower.starts_with("grpc-")
            || (is_hop_by_hop(&lower, &listed) && lower != "te")
        {
            continue;
        }
        if lower.ends_with("-bin") {
            for v in &values.values {
                if let Some(bytes) = decode_binary(v) {
                    out.push((lower.clone(), MdValue::Binary(bytes)));
                }
            }
            continue;
        }
        let name = if HTTP_STANDARD.contains(&lower.as_str()) || lower == "te" {
            format!("dapr-{lower}")
        } else {
            lower
        };
        for v in &values.values {
            out.push((name.clone(), MdValue::Ascii(v.clone())));
        }
    }
    if let Some((sc, from_traceparent)) = span_context(md) {
        out.push((
            trace::TRACEPARENT.to_owned(),
            MdValue::Ascii(sc.to_traceparent()),
        ));
        if from_traceparent && let Some(state) = first(md, trace::TRACESTATE) {
            out.push((
                trace::TRACESTATE.to_owned(),
                MdValue::Ascii(state.to_owned()),
            ));
        }
        out.push((
            trace::GRPC_TRACE_BIN.to_owned(),
            MdValue::Binary(sc.to_binary().to_vec()),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_in_any_case() {
        let listed = vec!["x-private".to_owned()];
        for name in [
            "Connection",
            "te",
            "TRANSFER-ENCODING",
            "Proxy-Foo",
            "x-private",
            "X-Private",
        ] {
            assert!(is_hop_by_hop(name, &listed), "{name}");
        }
        for name in [
            "content-type",
            "x-custom",
            "prox",
            "proxy",
            "traceparent",
            "ü-x",
        ] {
            assert!(!is_hop_by_hop(name, &listed), "{name}");
        }
    }

    fn md(pairs: &[(&str, &str)]) -> Md {
        let mut m = Md::new();
        for (k, v) in pairs {
            m.entry((*k).to_owned())
                .or_default()
                .values
                .push((*v).to_owned());
        }
        m
    }

    #[test]
    fn http_app_header_rules() {
        let m = md(&[
            ("Connection", "keep-alive, x-drop"),
            ("x-drop", "1"),
            ("x-keep", "2"),
            ("content-length", "5"),
            ("destination-app-id", "b"),
            ("grpc-timeout", "1S"),
            (":authority", "h"),
            ("trace-bin", "x"),
            ("dapr-caller-app-id", "a"),
            ("transfer-encoding", "chunked"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
        ]);
        let mut h = http_app_headers(m);
        h.sort();
        assert_eq!(
            h,
            [
                ("dapr-authority".to_owned(), "h".to_owned()),
                ("dapr-caller-app-id".into(), "a".into()),
                ("dapr-grpc-timeout".into(), "1S".into()),
                ("x-keep".into(), "2".into()),
                ("x-multi".into(), "one".into()),
                ("x-multi".into(), "two".into()),
            ]
        );
    }

    #[test]
    fn grpc_app_metadata_rules() {
        let m = md(&[
            ("Content-Type", "application/json"),
            ("User-Agent", "curl"),
            ("x-custom", "1"),
            ("connection", "close"),
        ]);
        let mut h = grpc_app_metadata(&m);
        h.sort();
        let ascii = |k: &str, v: &str| (k.to_owned(), MdValue::Ascii(v.to_owned()));
        assert_eq!(
            h,
            [
                ascii("dapr-content-type", "application/json"),
                ascii("dapr-user-agent", "curl"),
                ascii("x-custom", "1"),
            ]
        );
    }

    const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn trace_context_for_grpc_apps() {
        let sc = SpanContext::from_traceparent(TP).unwrap();
        // From an HTTP caller: traceparent + tracestate, and grpc-trace-bin made from them.
        let h = grpc_app_metadata(&md(&[
            ("traceparent", TP),
            ("tracestate", "k=v"),
            ("x-key-bin", "AAEC"),
        ]));
        assert!(h.contains(&("traceparent".into(), MdValue::Ascii(TP.into()))));
        assert!(h.contains(&("tracestate".into(), MdValue::Ascii("k=v".into()))));
        assert!(h.contains(&(
            "grpc-trace-bin".into(),
            MdValue::Binary(sc.to_binary().to_vec())
        )));
        assert!(h.contains(&("x-key-bin".into(), MdValue::Binary(vec![0, 1, 2]))));
        // From a gRPC caller with only grpc-trace-bin (base64 in internal metadata).
        use base64::Engine as _;
        let bin = base64::engine::general_purpose::STANDARD.encode(sc.to_binary());
        let h = grpc_app_metadata(&md(&[("grpc-trace-bin", &bin)]));
        assert!(h.contains(&("traceparent".into(), MdValue::Ascii(TP.into()))));
        assert!(h.contains(&(
            "grpc-trace-bin".into(),
            MdValue::Binary(sc.to_binary().to_vec())
        )));
        // ... and an HTTP app gets the traceparent.
        assert!(
            http_app_headers(md(&[("grpc-trace-bin", &bin)]))
                .contains(&("traceparent".into(), TP.into()))
        );
        // An invalid traceparent is not forwarded.
        let h = grpc_app_metadata(&md(&[("traceparent", "00-zz")]));
        assert!(
            h.iter()
                .all(|(k, _)| k != "traceparent" && k != "grpc-trace-bin")
        );
    }

    #[test]
    fn verbs() {
        for v in ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            assert_eq!(verb_name(verb_number(v)), Some(v));
        }
        assert_eq!(verb_name(0), None);
    }

    #[test]
    fn response_headers_for_grpc_callers_follow_dapr() {
        assert_eq!(canonical_header("x-app"), "X-App");
        assert_eq!(canonical_header("content-TYPE"), "Content-Type");
        let got = grpc_caller_metadata(&md(&[
            ("Content-Length", "513"),
            ("Content-Type", "application/json"),
            ("X-App", "beta"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("destination-app-id", "beta"),
            ("x-raw-bin", "AQI="),
        ]));
        let mut got: Vec<_> = got.into_iter().collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                ("dapr-content-length".into(), MdValue::Ascii("513".into())),
                (
                    "dapr-content-type".into(),
                    MdValue::Ascii("application/json".into())
                ),
                ("x-app".into(), MdValue::Ascii("beta".into())),
                ("x-raw-bin".into(), MdValue::Binary(vec![1, 2])),
            ]
        );
    }
}
