//! The HTTP API v1.0: Dapr's routes, status codes and error bodies, plus the router-wide rules
//! (path cleanup, query-unescaped path parameters, `metadata.*` query parameters, the API token,
//! the body limit and the fall-through of unknown paths to service invocation).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, MatchedPath, RawPathParams, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{DeleteItem, SaveItem, Shared, TxOp};
use crate::api_access::ApiAccess;
use crate::errors::{self, ApiError};
use crate::runtime::RUNTIME_VERSION;
use crate::state::{Concurrency, Consistency, StoreError};

/// Header that carries the API token.
pub const API_TOKEN_HEADER: &str = "dapr-api-token";
/// Header that makes `POST /v1.0/shutdown` exit at once.
pub const FORCE_SHUTDOWN_HEADER: &str = "dapr-force-shutdown";

/// The HTTP API as served: invocations by path (`/v1.0/invoke/<id>/method/...`) go to
/// service invocation directly, everything else through the [`router`] after [`clean_path`].
///
/// The shortcut answers exactly as the router would (no route starts with `/v1.0/invoke/`, so
/// there they fall through to invocation, after the same API token check and with the same
/// metrics), without the router's per-request work: matching, and the middleware it clones and
/// boxes per route (~40 allocations per call). When the Configuration's `spec.api` turns
/// invocation off, everything goes through the router, which answers 404.
#[derive(Clone)]
pub struct Api {
    rt: Shared,
    router: tower::util::MapRequest<Router, fn(Request) -> Request>,
    invoke_allowed: bool,
}

/// The HTTP API's service for `axum::serve` (see [`Api`]).
pub fn service(rt: Shared) -> Api {
    let access = Arc::new(ApiAccess::new(rt.configuration.api.as_ref()));
    Api {
        invoke_allowed: access.http_allows(crate::api_access::INVOKE_ROUTE),
        router: tower::util::MapRequest::new(routes(rt.clone(), access), clean_path as fn(_) -> _),
        rt,
    }
}

impl tower::Service<Request> for Api {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.router.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !(self.invoke_allowed && request.uri().path().starts_with("/v1.0/invoke/")) {
            return Box::pin(self.router.call(request));
        }
        let rt = self.rt.clone();
        Box::pin(async move {
            let handler_rt = rt.clone();
            let invoke = move |mut request: Request| async move {
                match refuse_without_api_token(&handler_rt, &mut request) {
                    Some(refused) => refused,
                    None => fallback(State(handler_rt), request).await,
                }
            };
            Ok(observed(&rt, None, request, invoke).await)
        })
    }
}

/// The API's routes, without the path cleanup and the invocation shortcut that [`service`]
/// adds in front of them. Routes the Configuration's `spec.api` turns off are served as
/// unknown paths are.
pub fn router(rt: Shared) -> Router {
    let access = Arc::new(ApiAccess::new(rt.configuration.api.as_ref()));
    routes(rt, access)
}

/// [`router`] with the Configuration's `spec.api` already read.
fn routes(rt: Shared, access: Arc<ApiAccess>) -> Router {
    let max_body = rt.max_body_bytes;
    let (not_found, not_allowed) = (access.clone(), access.clone());
    let api = Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
        .route("/v1.0/metadata", get(get_metadata))
        .route("/v1.0/metadata/{key}", axum::routing::put(put_metadata))
        .route("/v1.0/shutdown", post(shutdown))
        .route("/v1.0/state/{store}", post(save_state).put(save_state))
        .route("/v1.0/state/{store}/bulk", post(bulk_state).put(bulk_state))
        .route(
            "/v1.0/state/{store}/transaction",
            post(transaction).put(transaction),
        )
        .route(
            "/v1.0/state/{store}/{key}",
            get(get_state).delete(delete_state),
        )
        .route(
            "/v1.0-alpha1/state/{store}/query",
            post(query_state).put(query_state),
        )
        .route("/v1.0/secrets/{store}/bulk", get(bulk_secrets))
        .route("/v1.0/secrets/{store}/{key}", get(get_secret))
        .route_layer(middleware::from_fn_with_state(
            (rt.clone(), access),
            api_allowed,
        ))
        .fallback(move |State(rt): State<Shared>, request: Request| {
            unrouted(rt, not_found.clone(), request, StatusCode::NOT_FOUND)
        })
        .method_not_allowed_fallback(move |State(rt): State<Shared>, request: Request| {
            unrouted(
                rt,
                not_allowed.clone(),
                request,
                StatusCode::METHOD_NOT_ALLOWED,
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(rt.clone(), api_token))
        .layer(middleware::from_fn_with_state(rt.clone(), observe));
    api.with_state(rt)
}

/// The public port: health and metadata only, without the API token.
pub fn public_router(rt: Shared) -> Router {
    let access = Arc::new(ApiAccess::new(rt.configuration.api.as_ref()));
    Router::new()
        .route("/v1.0/healthz", get(healthz))
        .route("/v1.0/healthz/outbound", get(healthz_outbound))
        .route("/v1.0/metadata", get(get_metadata))
        .route("/v1.0/metadata/{key}", axum::routing::put(put_metadata))
        .route_layer(middleware::from_fn_with_state(access, public_api_allowed))
        .with_state(rt)
}

/// Serves a matched route only when the Configuration's `spec.api` allows it; otherwise the
/// request goes where an unknown path goes.
async fn api_allowed(
    State((rt, access)): State<(Shared, Arc<ApiAccess>)>,
    request: Request,
    next: Next,
) -> Response {
    match request.extensions().get::<MatchedPath>() {
        Some(route) if !access.http_allows(route.as_str()) => {
            unrouted(rt, access, request, StatusCode::NOT_FOUND).await
        }
        _ => next.run(request).await,
    }
}

async fn public_api_allowed(
    State(access): State<Arc<ApiAccess>>,
    request: Request,
    next: Next,
) -> Response {
    match request.extensions().get::<MatchedPath>() {
        Some(route) if !access.http_allows(route.as_str()) => plain_not_found(),
        _ => next.run(request).await,
    }
}

/// A path no (allowed) route serves: service invocation's fall-through, as in Dapr, unless
/// `spec.api` turns invocation off too; then Dapr has no fall-through and answers a plain 404
/// (405 for a route that exists with another method).
async fn unrouted(
    rt: Shared,
    access: Arc<ApiAccess>,
    request: Request,
    status: StatusCode,
) -> Response {
    if access.http_allows(crate::api_access::INVOKE_ROUTE) {
        fallback(State(rt), request).await
    } else if status == StatusCode::NOT_FOUND {
        plain_not_found()
    } else {
        status.into_response()
    }
}

fn plain_not_found() -> Response {
    (StatusCode::NOT_FOUND, "404 page not found\n").into_response()
}

/// Collapses `//` runs and drops a trailing `/` (no route ends in one), before routing.
pub fn clean_path(mut request: Request) -> Request {
    let path = request.uri().path();
    let needs = path.contains("//") || (path.len() > 1 && path.ends_with('/'));
    if !needs || path.starts_with("/v1.0/invoke/") {
        return request;
    }
    let mut cleaned = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && cleaned.ends_with('/')) {
            cleaned.push(c);
        }
    }
    while cleaned.len() > 1 && cleaned.ends_with('/') {
        cleaned.pop();
    }
    let with_query = match request.uri().query() {
        Some(q) => format!("{cleaned}?{q}"),
        None => cleaned,
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = with_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

async fn api_token(State(rt): State<Shared>, mut request: Request, next: Next) -> Response {
    match refuse_without_api_token(&rt, &mut request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// With an API token configured: the 401 for a request without it (health checks are exempt);
/// otherwise `None`, the token header taken off the request.
fn refuse_without_api_token(rt: &Shared, request: &mut Request) -> Option<Response> {
    let token = rt.api_token.as_ref()?;
    let path = request.uri().path();
    let exempt = request.method() == Method::GET
        && (path == "/v1.0/healthz" || path == "/v1.0/healthz/outbound");
    if !exempt {
        let given = request
            .headers()
            .get(API_TOKEN_HEADER)
            .map(|v| v.as_bytes());
        if given != Some(token.as_bytes()) {
            return Some((StatusCode::UNAUTHORIZED, "invalid api token").into_response());
        }
    }
    request.headers_mut().remove(API_TOKEN_HEADER);
    None
}

async fn observe(State(rt): State<Shared>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    observed(&rt, route, request, |request| next.run(request)).await
}

/// `handle`d with the HTTP server metrics Dapr keeps: the request and response counts and the
/// latency, by method, route (empty for service invocation) and status.
async fn observed<F: Future<Output = Response>>(
    rt: &Shared,
    route: Option<MatchedPath>,
    request: Request,
    handle: impl FnOnce(Request) -> F,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = route.as_ref().map_or("", |r| r.as_str());
    rt.metrics.inc(
        "dapr_http_server_request_count",
        &[("method", method.as_str()), ("path", path)],
    );
    let response = handle(request).await;
    let status = response.status();
    let labels = [
        ("method", method.as_str()),
        ("path", path),
        ("status", status.as_str()),
    ];
    rt.metrics.inc("dapr_http_server_response_count", &labels);
    rt.metrics
        .observe("dapr_http_server_latency", &labels, started.elapsed());
    response
}

/// Query-unescapes a path parameter as Dapr does (`%2F` → `/`, `+` → space).
pub fn query_unescape(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid URL escape in {raw:?}"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| format!("invalid UTF-8 in {raw:?}"))
}

/// The route's parameters, query-unescaped; a bad escape is a plain-text 400.
#[allow(clippy::result_large_err)] // the error is the response itself
fn params(raw: &RawPathParams) -> Result<HashMap<String, String>, Response> {
    raw.iter()
        .map(|(k, v)| {
            query_unescape(v)
                .map(|v| (k.to_owned(), v))
                .map_err(|e| (StatusCode::BAD_REQUEST, e).into_response())
        })
        .collect()
}

fn param<'a>(p: &'a HashMap<String, String>, name: &str) -> &'a str {
    p.get(name).map(String::as_str).unwrap_or_default()
}

/// Query parameters, each with its first value.
fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (
                query_unescape(k).unwrap_or_else(|_| k.to_owned()),
                query_unescape(v).unwrap_or_else(|_| v.to_owned()),
            )
        })
        .collect()
}

/// `metadata.<k>=<v>` query parameters as component metadata (first value wins).
pub fn request_metadata(uri: &Uri) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in query_pairs(uri) {
        if let Some(name) = k.strip_prefix("metadata.") {
            out.entry(name.to_owned()).or_insert(v);
        }
    }
    out
}

fn query_value(uri: &Uri, name: &str) -> String {
    query_pairs(uri)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_default()
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The `options` of a state item (names matched case-insensitively, as Dapr does). A value
/// other than Dapr's is refused with the store's error, which `bad_option` builds.
fn options_of(
    options: Option<&Value>,
    bad_option: &dyn Fn(String) -> ApiError,
) -> Result<(Concurrency, Consistency), ApiError> {
    let get = |name: &str| -> String {
        options
            .and_then(Value::as_object)
            .and_then(|o| {
                o.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.as_str())
            })
            .unwrap_or_default()
            .to_owned()
    };
    let concurrency = Concurrency::parse(&get("concurrency")).map_err(bad_option)?;
    let consistency = Consistency::parse(&get("consistency")).map_err(bad_option)?;
    Ok((concurrency, consistency))
}

fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The JSON body of a state item (`{key, value, etag, metadata, options}`).
fn save_item(
    value: &Value,
    query_meta: &BTreeMap<String, String>,
    bad_option: &dyn Fn(String) -> ApiError,
) -> Result<SaveItem, ApiError> {
    let key = value
        .get("key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| errors::malformed("\"key\" is a required field"))?;
    let data = value.get("value").cloned().unwrap_or(Value::Null);
    let (concurrency, consistency) = options_of(value.get("options"), bad_option)?;
    let mut metadata = string_map(value.get("metadata"));
    for (k, v) in query_meta {
        metadata.entry(k.clone()).or_insert_with(|| v.clone());
    }
    let etag = match value.get("etag") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    Ok(SaveItem {
        key: key.to_owned(),
        value: Bytes::from(data.to_string()),
        etag,
        metadata,
        concurrency,
        consistency,
    })
}

fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| errors::malformed(format!("failed deserializing HTTP body: {e}")))
}

// ---- handlers ----------------------------------------------------------------------------

#[derive(Deserialize)]
struct HealthQuery {
    appid: Option<String>,
}

async fn healthz(
    State(rt): State<Shared>,
    axum::extract::Query(q): axum::extract::Query<HealthQuery>,
) -> Response {
    if q.appid.is_some_and(|a| !a.is_empty() && a != rt.app_id) {
        return errors::health_appid_mismatch().into_response();
    }
    if rt.is_ready() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        errors::health_not_ready(&["runtime"]).into_response()
    }
}

async fn healthz_outbound(State(rt): State<Shared>) -> Response {
    if rt.is_outbound_ready() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        errors::outbound_not_ready().into_response()
    }
}

/// The metadata API document (§4.6).
pub fn metadata_document(rt: &Shared) -> Value {
    let components: Vec<Value> = rt
        .component_list()
        .into_iter()
        .map(|(name, type_, version, caps)| {
            json!({"name": name, "type": type_, "version": version, "capabilities": caps})
        })
        .collect();
    let mut extended: Map<String, Value> = rt
        .extended()
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    extended.insert("daprRuntimeVersion".into(), RUNTIME_VERSION.into());
    let mut app = json!({
        "protocol": rt.app.protocol,
        "channelAddress": rt.app.channel_address,
    });
    if let Some(port) = rt.app.port {
        app["port"] = port.into();
    }
    if rt.app.max_concurrency > 0 {
        app["maxConcurrency"] = rt.app.max_concurrency.into();
    }
    if let Some(h) = &rt.app.health_check {
        app["health"] = json!({
            "healthCheckPath": h.path,
            "healthProbeInterval": format!("{}s", h.interval_seconds),
            "healthProbeTimeout": format!("{}ms", h.timeout_ms),
            "healthThreshold": h.threshold,
        });
    }
    json!({
        "id": rt.app_id,
        "runtimeVersion": RUNTIME_VERSION,
        "enabledFeatures": [],
        "actors": [],
        "components": components,
        "extended": extended,
        "subscriptions": [],
        "httpEndpoints": [],
        "appConnectionProperties": app,
    })
}

async fn get_metadata(State(rt): State<Shared>) -> Response {
    json_response(StatusCode::OK, &metadata_document(&rt))
}

async fn put_metadata(State(rt): State<Shared>, raw: RawPathParams, body: Bytes) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match String::from_utf8(body.to_vec()) {
        Ok(value) => {
            rt.set_extended(param(&p, "key").to_owned(), value);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => errors::body_read(e).into_response(),
    }
}

async fn shutdown(State(rt): State<Shared>, headers: HeaderMap) -> Response {
    let forced = headers
        .get(FORCE_SHUTDOWN_HEADER)
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
        rt.request_stop();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn get_state(State(rt): State<Shared>, raw: RawPathParams, uri: Uri) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    // Reads ignore an unknown consistency, as Dapr's stores do.
    let consistency = Consistency::parse(&query_value(&uri, "consistency")).unwrap_or_default();
    let metadata = request_metadata(&uri);
    match rt
        .get_state(param(&p, "store"), param(&p, "key"), consistency, &metadata)
        .await
    {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(item)) => {
            let mut response = (StatusCode::OK, item.data).into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Some(etag) = item.etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
                headers.insert(header::ETAG, etag);
            }
            for (k, v) in item.metadata {
                if let (Ok(name), Ok(value)) = (
                    http::HeaderName::try_from(format!("metadata.{k}")),
                    HeaderValue::from_str(&v),
                ) {
                    headers.insert(name, value);
                }
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn save_state(
    State(rt): State<Shared>,
    raw: RawPathParams,
    uri: Uri,
    body: Bytes,
) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let value = parse_json(&body)?;
        let list = value.as_array().ok_or_else(|| {
            errors::malformed(
                "failed deserializing HTTP body: expected a JSON array of state items",
            )
        })?;
        let meta = request_metadata(&uri);
        let store = param(&p, "store");
        let bad_option = |m: String| {
            rt.state_option_error(store, errors::state_save(store, &StoreError::BadRequest(m)))
        };
        let items = list
            .iter()
            .map(|v| save_item(v, &meta, &bad_option))
            .collect::<Result<Vec<_>, _>>()?;
        rt.save_state(store, items).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn delete_state(
    State(rt): State<Shared>,
    raw: RawPathParams,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let (store, key) = (param(&p, "store"), param(&p, "key"));
        let bad_option = |m: String| {
            rt.state_option_error(store, errors::state_delete(key, &StoreError::BadRequest(m)))
        };
        let concurrency =
            Concurrency::parse(&query_value(&uri, "concurrency")).map_err(bad_option)?;
        let consistency =
            Consistency::parse(&query_value(&uri, "consistency")).map_err(bad_option)?;
        let etag = headers
            .get(header::IF_MATCH)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        rt.delete_state(
            param(&p, "store"),
            DeleteItem {
                key: param(&p, "key").to_owned(),
                etag,
                metadata: request_metadata(&uri),
                concurrency,
                consistency,
            },
        )
        .await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Stored bytes as JSON when they are JSON, else as a string.
fn data_value(data: &[u8]) -> Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

async fn bulk_state(
    State(rt): State<Shared>,
    raw: RawPathParams,
    uri: Uri,
    body: Bytes,
) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let value = parse_json(&body)?;
        let keys: Vec<String> = value
            .get("keys")
            .and_then(Value::as_array)
            .map(|k| {
                k.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let parallelism = value
            .get("parallelism")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        let mut metadata = string_map(value.get("metadata"));
        for (k, v) in request_metadata(&uri) {
            metadata.entry(k).or_insert(v);
        }
        let items = rt
            .bulk_get_state(param(&p, "store"), keys, parallelism, &metadata)
            .await?;
        let body: Vec<Value> = items
            .into_iter()
            .map(|b| {
                let mut o = json!({"key": b.key});
                if let Some(item) = b.item {
                    o["data"] = data_value(&item.data);
                    if let Some(etag) = item.etag {
                        o["etag"] = etag.into();
                    }
                    if !item.metadata.is_empty() {
                        o["metadata"] = json!(item.metadata);
                    }
                }
                if let Some(error) = b.error {
                    o["error"] = error.into();
                }
                o
            })
            .collect();
        Ok::<_, ApiError>(Value::Array(body))
    }
    .await;
    match result {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(e) => e.into_response(),
    }
}

async fn transaction(
    State(rt): State<Shared>,
    raw: RawPathParams,
    uri: Uri,
    body: Bytes,
) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let result = async {
        let value = parse_json(&body)?;
        let mut metadata = string_map(value.get("metadata"));
        for (k, v) in request_metadata(&uri) {
            metadata.entry(k).or_insert(v);
        }
        let store = param(&p, "store");
        let bad_option = |m: String| {
            rt.state_option_error(store, errors::state_transaction(&StoreError::BadRequest(m)))
        };
        let mut ops = Vec::new();
        for op in value
            .get("operations")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let kind = op
                .get("operation")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let request = op.get("request").cloned().unwrap_or(Value::Null);
            match kind {
                "upsert" => ops.push(TxOp::Upsert(save_item(
                    &request,
                    &BTreeMap::new(),
                    &bad_option,
                )?)),
                "delete" => {
                    let item = save_item(&request, &BTreeMap::new(), &bad_option)?;
                    ops.push(TxOp::Delete(DeleteItem {
                        key: item.key,
                        etag: item.etag,
                        metadata: item.metadata,
                        concurrency: item.concurrency,
                        consistency: item.consistency,
                    }));
                }
                other => return Err(errors::unsupported_operation(other)),
            }
        }
        rt.transact_state(store, ops, &metadata).await
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn query_state(State(rt): State<Shared>, raw: RawPathParams, body: Bytes) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match rt.query_state(param(&p, "store"), &body).await {
        Ok(result) if result.results.is_empty() => StatusCode::NO_CONTENT.into_response(),
        Ok(result) => {
            let results: Vec<Value> = result
                .results
                .into_iter()
                .map(|(key, data, etag)| {
                    let mut o = json!({"key": key, "data": data_value(&data)});
                    if let Some(etag) = etag {
                        o["etag"] = etag.into();
                    }
                    o
                })
                .collect();
            let mut body = json!({ "results": results });
            if let Some(token) = result.token {
                body["token"] = token.into();
            }
            json_response(StatusCode::OK, &body)
        }
        Err(e) => e.into_response(),
    }
}

async fn get_secret(State(rt): State<Shared>, raw: RawPathParams, uri: Uri) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let metadata = request_metadata(&uri);
    match rt
        .get_secret(param(&p, "store"), param(&p, "key"), &metadata)
        .await
    {
        Ok(secret) => json_response(StatusCode::OK, &json!(secret)),
        Err(e) => e.into_response(),
    }
}

async fn bulk_secrets(State(rt): State<Shared>, raw: RawPathParams, uri: Uri) -> Response {
    let p = match params(&raw) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match rt
        .bulk_secrets(param(&p, "store"), &request_metadata(&uri))
        .await
    {
        Ok(all) => json_response(StatusCode::OK, &json!(all)),
        Err(e) => e.into_response(),
    }
}

/// Where an HTTP request names the target app (Dapr's order): the `dapr-app-id` header (the
/// path is the method), `Authorization: Basic base64("dapr-app-id:<id>")` (likewise), or the
/// path `/v1.0/invoke/<id>/method/<method>`. Returns the id, the method and whether the
/// `Authorization` header carried the id (so it is not forwarded).
fn invocation_target(headers: &HeaderMap, path: &str) -> Option<(String, String, bool)> {
    let path_method = || path.trim_start_matches('/').to_owned();
    if let Some(id) = headers
        .get("dapr-app-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        return Some((id.to_owned(), path_method(), false));
    }
    if let Some(id) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
        .and_then(|b64| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|user| user.strip_prefix("dapr-app-id:").map(str::to_owned))
        .filter(|id| !id.is_empty())
    {
        return Some((id, path_method(), true));
    }
    let rest = path.strip_prefix("/v1.0/invoke/")?;
    let (id, method) = rest.split_once("/method/")?;
    Some((query_unescape(id).ok()?, method.to_owned(), false))
}

/// Unknown paths and methods go to service invocation, as in Dapr.
async fn fallback(State(rt): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some((target, method, auth_used)) = invocation_target(&parts.headers, parts.uri.path())
    else {
        return errors::direct_invoke_no_app_id().into_response();
    };
    let body = match axum::body::to_bytes(body, rt.max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return errors::body_read(e).into_response(),
    };
    let mut metadata = crate::invoke::Md::new();
    let mut content_type = String::new();
    for (name, value) in &parts.headers {
        let name = name.as_str();
        if name == "dapr-app-id"
            || name == API_TOKEN_HEADER
            || (auth_used && name == "authorization")
        {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "content-type" {
            content_type = value.clone();
        }
        metadata
            .entry(name.to_owned())
            .or_default()
            .values
            .push(value);
    }
    let call = crate::invoke::Call {
        target: target.clone(),
        method,
        verb: Some(parts.method.as_str().to_owned()),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        metadata,
        body,
        content_type,
    };
    match rt.invoker.invoke(call).await {
        Ok(response) => invoke_response(response),
        Err(e) => e.to_api().into_response(),
    }
}

/// The callee's answer as the caller's HTTP response: an HTTP app's status, headers and body
/// as they are; a gRPC app's code as an HTTP status, with the Status as JSON when not OK.
fn invoke_response(r: crate::invoke::AppResponse) -> Response {
    if r.status < 100 {
        let status = StatusCode::from_u16(crate::invoke::http_status_of_grpc(r.status))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if r.status != 0 {
            return json_response(
                status,
                &json!({"code": r.status, "message": r.message, "details": []}),
            );
        }
    }
    let status = if r.status < 100 {
        StatusCode::OK
    } else {
        StatusCode::from_u16(r.status as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    };
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, values) in &r.headers {
        if crate::invoke::app::is_hop_by_hop(name, &[])
            || name.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        for v in &values.values {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(name.clone(), v);
            }
        }
    }
    if !r.content_type.is_empty()
        && let Ok(v) = HeaderValue::from_str(&r.content_type)
    {
        headers.insert(header::CONTENT_TYPE, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescaping_is_query_style() {
        assert_eq!(query_unescape("a%2Fb+c").unwrap(), "a/b c");
        assert!(query_unescape("a%zz").is_err());
    }

    #[test]
    fn metadata_query_params_first_value_wins() {
        let uri: Uri = "/x?metadata.a=1&metadata.a=2&metadata.ttlInSeconds=5&other=3"
            .parse()
            .unwrap();
        let m = request_metadata(&uri);
        assert_eq!(m.len(), 2);
        assert_eq!(m["a"], "1");
        assert_eq!(m["ttlInSeconds"], "5");
    }
}
