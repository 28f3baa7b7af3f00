//! gRPC proxying (Dapr's transparent proxy): a call to any service other than the ones a
//! server implements, carrying `dapr-app-id` (or `dapr-callee-app-id`) metadata, is forwarded
//! as it is, frame by frame, to the target's sidecar and from there to the target's gRPC app
//! (`--app-protocol grpc`). Unary and streaming calls alike: request and response bodies are
//! streamed through untouched, and the app's headers, trailers and status come back as the
//! app sent them.
//!
//! - Public gRPC API: the API token is checked (when `DAPR_API_TOKEN` is set) and removed; a
//!   call for our own app goes to it directly; otherwise `dapr-app-id` is removed,
//!   `dapr-caller-app-id` / `dapr-callee-app-id` are stamped (replacing any the client sent)
//!   and the call goes over the pooled sidecar connection (mutual TLS with the callee's SPIFFE
//!   check when the sidecar has an identity).
//! - Internal server: the callee checks the ACL with the caller's SPIFFE id and the full method
//!   name (`/package.Service/Method`, no verb), then forwards to its app with `APP_API_TOKEN`
//!   as `dapr-api-token` when set. A call for another app id is refused, never forwarded again.
//!
//! Not retried: the request body is a stream that cannot be replayed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue};
use tonic::body::Body;

use super::Invoker;
use super::acl::Decision;
use super::trace::{self, SpanContext};

/// The metadata naming the target app (Dapr's `GRPCProxyAppIDKey`).
pub const APP_ID_METADATA: &str = "dapr-app-id";
/// The metadata the caller's sidecar stamps with the target app (read first, as Dapr does).
pub const CALLEE_METADATA: &str = "dapr-callee-app-id";
pub const CALLER_METADATA: &str = "dapr-caller-app-id";
const API_TOKEN_METADATA: &str = "dapr-api-token";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Which server the proxy sits in front of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The public gRPC API (`dapr.proto.runtime.v1.Dapr`).
    Api,
    /// The internal sidecar-to-sidecar server (`dapr.proto.internals.v1.ServiceInvocation`).
    Internal,
}

impl Side {
    fn served(self) -> &'static str {
        match self {
            Side::Api => "dapr.proto.runtime.v1.Dapr",
            Side::Internal => "dapr.proto.internals.v1.ServiceInvocation",
        }
    }
}

/// A tower layer for the gRPC servers: proxies calls for services the server does not
/// implement, hands everything else to the server.
#[derive(Clone)]
pub struct Layer {
    invoker: Arc<Invoker>,
    side: Side,
    api_token: Option<Arc<str>>,
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("proxy::Layer")
            .field("side", &self.side)
            .field("api_token", &self.api_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Layer {
    /// In front of the public gRPC API; `api_token` is `DAPR_API_TOKEN`.
    pub fn api(invoker: Arc<Invoker>, api_token: Option<String>) -> Self {
        Self {
            invoker,
            side: Side::Api,
            api_token: api_token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }

    /// In front of the internal server.
    pub fn internal(invoker: Arc<Invoker>) -> Self {
        Self {
            invoker,
            side: Side::Internal,
            api_token: None,
        }
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = Proxy<S>;
    fn layer(&self, inner: S) -> Proxy<S> {
        Proxy {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`Layer`].
#[derive(Clone, Debug)]
pub struct Proxy<S> {
    inner: S,
    layer: Layer,
}

/// The service part of a gRPC path `/package.Service/Method`.
fn service_of(path: &str) -> &str {
    path.trim_start_matches('/')
        .split_once('/')
        .map(|(service, _)| service)
        .unwrap_or("")
}

/// The target app of a call: `dapr-callee-app-id`, else `dapr-app-id`.
fn target_of(headers: &HeaderMap) -> Option<String> {
    [CALLEE_METADATA, APP_ID_METADATA]
        .iter()
        .find_map(|k| headers.get(*k))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn status_response(status: tonic::Status) -> http::Response<Body> {
    status.into_http()
}

impl<S> tower::Service<http::Request<Body>> for Proxy<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = service_of(request.uri().path());
        let ours = service == self.layer.side.served();
        if ours || target_of(request.headers()).is_none() {
            let missing = !ours && self.layer.side == Side::Api;
            let future = self.inner.call(request);
            return Box::pin(async move {
                let response = future.await.map_err(Into::into)?;
                if missing
                    && response
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|s| s == "12")
                {
                    // An unknown service without a target: say how proxying is asked for.
                    return Ok(status_response(tonic::Status::unimplemented(format!(
                        "unknown service; to call a service of another app through its sidecar \
                         (gRPC proxying), set the metadata {APP_ID_METADATA}: <app-id>"
                    ))));
                }
                Ok(response)
            });
        }
        let layer = self.layer.clone();
        Box::pin(async move { Ok(layer.proxy(request).await) })
    }
}

impl Layer {
    async fn proxy(&self, mut request: http::Request<Body>) -> http::Response<Body> {
        match self.forward(&mut request).await {
            Ok(response) => response,
            Err(status) => status_response(status),
        }
    }

    async fn forward(
        &self,
        request: &mut http::Request<Body>,
    ) -> Result<http::Response<Body>, tonic::Status> {
        let headers = request.headers_mut();
        if self.side == Side::Api
            && let Some(token) = &self.api_token
            && headers.get(API_TOKEN_METADATA).map(HeaderValue::as_bytes) != Some(token.as_bytes())
        {
            return Err(tonic::Status::unauthenticated(
                "authentication error: api token mismatch",
            ));
        }
        headers.remove(API_TOKEN_METADATA);
        let target = target_of(headers).unwrap_or_default();
        let (app_id, namespace) = self.invoker.target(&target);
        let invoker = &self.invoker;
        let method = request.uri().path().to_owned();
        let local = app_id == invoker.app_id
            && (namespace == invoker.namespace || self.side == Side::Internal);
        if local {
            return self.to_app(request, &method).await;
        }
        if self.side == Side::Internal {
            return Err(tonic::Status::failed_precondition(format!(
                "failed to proxy request: the call is for app {target:?} but arrived at the \
                 sidecar of {:?}; check the name resolution of {target:?}",
                invoker.app_id
            )));
        }
        self.to_sidecar(request, &app_id, &namespace, &method).await
    }

    /// The last hop: our own gRPC app.
    async fn to_app(
        &self,
        request: &mut http::Request<Body>,
        method: &str,
    ) -> Result<http::Response<Body>, tonic::Status> {
        let invoker = &self.invoker;
        if invoker.acl.is_configured() {
            let caller = request
                .extensions()
                .get::<Arc<super::serve::Caller>>()
                .and_then(|c| c.spiffe_id());
            if let Decision::Deny(why) = invoker.acl.check(caller.as_ref(), method, None) {
                invoker.metrics.inc(
                    "dapr_runtime_acl_app_policy_action_blocked_total",
                    &[("src_app_id", caller_of(request.headers()).as_str())],
                );
                return Err(tonic::Status::permission_denied(why));
            }
        }
        let headers = request.headers_mut();
        headers.remove(APP_ID_METADATA);
        complete_trace_context(headers);
        let request = std::mem::take(request);
        invoker
            .app
            .forward_grpc(request)
            .await
            .map_err(|e| match e {
                super::app::AppError::Unhealthy => tonic::Status::unavailable(e.to_string()),
                e => tonic::Status::unavailable(format!(
                    "failed to proxy request to app {:?}: {e}",
                    invoker.app_id
                )),
            })
    }

    /// The first hop: the target's sidecar.
    async fn to_sidecar(
        &self,
        request: &mut http::Request<Body>,
        app_id: &str,
        namespace: &str,
        method: &str,
    ) -> Result<http::Response<Body>, tonic::Status> {
        let invoker = &self.invoker;
        let failed = |error: String| {
            tonic::Status::unavailable(format!(
                "failed to proxy request: failed to invoke, id: {app_id}, err: {error}"
            ))
        };
        let address = invoker
            .resolver
            .resolve(app_id, namespace)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let peer = invoker.peer(&address, app_id, namespace).map_err(&failed)?;
        let headers = request.headers_mut();
        headers.remove(APP_ID_METADATA);
        for (key, value) in [
            (CALLER_METADATA, invoker.app_id.as_str()),
            (CALLEE_METADATA, app_id),
        ] {
            let value = HeaderValue::from_str(value)
                .map_err(|_| failed(format!("{value:?} is not a valid metadata value")))?;
            headers.insert(key, value);
        }
        invoker.metrics.inc(
            "dapr_runtime_service_invocation_req_sent_total",
            &[("dst_app_id", app_id), ("method", method)],
        );
        match peer.forward(std::mem::take(request)).await {
            Ok(response) => Ok(response),
            Err(status) => {
                // Only a lost connection (or one never made) is given up; one stream's reset
                // leaves the connection to the calls it carries.
                if status.code() == tonic::Code::Unavailable {
                    invoker.drop_connection(&address, app_id, namespace);
                }
                Err(failed(status.message().to_owned()))
            }
        }
    }
}

/// Gives a gRPC app the caller's trace context both ways, as Dapr does: `grpc-trace-bin` made
/// from `traceparent`, or `traceparent` from `grpc-trace-bin`, whichever is missing.
fn complete_trace_context(headers: &mut HeaderMap) {
    use base64::Engine as _;
    let text = |k: &str| headers.get(k).and_then(|v| v.to_str().ok());
    let has_bin = headers.contains_key(trace::GRPC_TRACE_BIN);
    if let Some(sc) = text(trace::TRACEPARENT).and_then(SpanContext::from_traceparent) {
        if !has_bin {
            let bin = base64::engine::general_purpose::STANDARD_NO_PAD.encode(sc.to_binary());
            if let Ok(v) = HeaderValue::from_str(&bin) {
                headers.insert(trace::GRPC_TRACE_BIN, v);
            }
        }
    } else if let Some(sc) = text(trace::GRPC_TRACE_BIN)
        .and_then(super::app::decode_binary)
        .and_then(|b| SpanContext::from_binary(&b))
        && let Ok(v) = HeaderValue::from_str(&sc.to_traceparent())
    {
        headers.insert(trace::TRACEPARENT, v);
    }
}

fn caller_of(headers: &HeaderMap) -> String {
    headers
        .get(CALLER_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoke::{InvokeSettings, resolve::Resolver};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn services_and_targets() {
        assert_eq!(service_of("/pkg.Echo/Say"), "pkg.Echo");
        assert_eq!(service_of("/"), "");
        let mut h = HeaderMap::new();
        assert_eq!(target_of(&h), None);
        h.insert(APP_ID_METADATA, HeaderValue::from_static("b"));
        assert_eq!(target_of(&h).as_deref(), Some("b"));
        h.insert(CALLEE_METADATA, HeaderValue::from_static("c"));
        assert_eq!(target_of(&h).as_deref(), Some("c"));
    }

    #[test]
    fn trace_context_is_completed() {
        const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let mut h = HeaderMap::new();
        h.insert(trace::TRACEPARENT, HeaderValue::from_static(TP));
        complete_trace_context(&mut h);
        let bin = h[trace::GRPC_TRACE_BIN].to_str().unwrap().to_owned();
        let sc = SpanContext::from_binary(&crate::invoke::app::decode_binary(&bin).unwrap());
        assert_eq!(sc.unwrap().to_traceparent(), TP);
        let mut h = HeaderMap::new();
        h.insert(trace::GRPC_TRACE_BIN, HeaderValue::from_str(&bin).unwrap());
        complete_trace_context(&mut h);
        assert_eq!(h[trace::TRACEPARENT], TP);
    }

    /// A target sidecar speaking plain HTTP/2 that resets every stream for `/pkg.Flaky/Reset`
    /// before answering and answers every other call with gRPC status 0; counts connections.
    async fn flaky_sidecar() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut connection = h2::server::handshake(tcp).await.unwrap();
                    while let Some(Ok((request, mut respond))) = connection.accept().await {
                        if request.uri().path() == "/pkg.Flaky/Reset" {
                            respond.send_reset(h2::Reason::INTERNAL_ERROR);
                        } else {
                            let answer = http::Response::builder()
                                .header("content-type", "application/grpc")
                                .header("grpc-status", "0")
                                .body(())
                                .unwrap();
                            respond.send_response(answer, true).unwrap();
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    fn call(path: &str) -> http::Request<Body> {
        http::Request::builder()
            .uri(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header(APP_ID_METADATA, "target")
            .body(Body::empty())
            .unwrap()
    }

    #[tokio::test]
    async fn a_reset_stream_keeps_the_connection_for_the_next_call() {
        let (address, accepted) = flaky_sidecar().await;
        let registry = tempfile::tempdir().unwrap();
        let resolver = Resolver::registry(registry.path().to_owned());
        resolver.register("target", "default", &address).unwrap();
        let settings = InvokeSettings {
            resolver,
            ..Default::default()
        };
        let invoker = Invoker::new(
            "caller".into(),
            "default".into(),
            settings,
            Default::default(),
            None,
            Arc::new(crate::metrics::Metrics::new("caller")),
        );
        let layer = Layer::api(Arc::new(invoker), None);

        let reset = layer.proxy(call("/pkg.Flaky/Reset")).await;
        let status = tonic::Status::from_header_map(reset.headers()).unwrap();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("target"), "{status:?}");
        let ok = layer.proxy(call("/pkg.Flaky/Ok")).await;
        assert_eq!(ok.headers()["grpc-status"], "0");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the second call went over the same connection"
        );
    }
}
