//! The internal port's HTTP/2 server, on the `h2` crate directly.
//!
//! Why not tonic's server: hyper's HTTP/2 server spawns a task for every stream and hands each
//! response back to the connection's task, and tonic adds its codec and a boxed response
//! stream, per call; together ~12 % of the callee's CPU at 1,000 calls/s. Here the two calls of
//! the internal API, `CallLocalStream` and `CallLocal`, run in the connection's own task (on
//! the default one-thread runtime; with worker threads each stream gets a task, so one busy
//! connection can use them all): the request is read, the app called and the whole response
//! (headers, messages and trailers) written in one go. A call the caller resets (its app went
//! away, its deadline passed) is dropped, and the app call with it.
//!
//! Every other path (gRPC proxying to the app, unknown methods) goes to a tower service, the
//! `fallback` (in-flight counting, the proxy, `Unimplemented` for the rest), through a small
//! adapter from h2's streams to `http` bodies that keeps to flow control both ways.
//!
//! Each connection pings its peer every [`KEEPALIVE_INTERVAL`](super::KEEPALIVE_INTERVAL) and is
//! closed when a ping is not answered in time. On shutdown the listener stops accepting and
//! each connection sends GOAWAY, then ends once its calls are done.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use daprs_api::grpc_frame::{self, FrameError};
use daprs_api::proto::internals::{InternalInvokeRequest, InternalInvokeRequestStream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http_body::Body as _;
use prost::Message;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::Status;
use tonic::body::Body;

use super::client::{CALL_LOCAL, CALL_LOCAL_STREAM, keepalive};
use super::h2body;
use super::server::Internal;
use crate::drain::InFlight;

/// Flow-control windows and the header limit we give a caller: what tonic's server set through
/// hyper before. Like it (and grpc-go's server in Dapr's daprd) no limit on concurrent streams.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Call = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What every connection of the server shares.
pub struct Shared {
    pub internal: Internal,
    pub fallback: Fallback,
    /// Counts the internal API's calls (`fallback` counts its own).
    pub in_flight: InFlight,
}

/// The service for every path but the internal API's two calls.
pub type Fallback =
    tower::util::BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// The caller of a connection, as a request extension for `fallback`: its certificate, and its
/// SPIFFE id once an ACL has asked for it (parsed once per connection, not per call).
#[derive(Debug)]
pub struct Caller {
    cert: Option<CertificateDer<'static>>,
    id: OnceLock<Option<daprs_api::SpiffeId>>,
}

impl Caller {
    pub fn new(cert: Option<CertificateDer<'static>>) -> Self {
        Self {
            cert,
            id: OnceLock::new(),
        }
    }

    /// The SPIFFE id of the caller's certificate; `None` on plaintext or without one.
    pub fn spiffe_id(&self) -> Option<daprs_api::SpiffeId> {
        self.id
            .get_or_init(|| {
                self.cert
                    .as_ref()
                    .and_then(|c| daprs_api::tls::spiffe_id_of(c).ok())
            })
            .clone()
    }
}

/// Accepts connections from `incoming` (each with the caller's certificate, if any) until
/// `stopped()` resolves, then waits for the open connections to end gracefully.
pub async fn serve<I, T, S, SF>(incoming: I, shared: Arc<Shared>, stopped: S)
where
    I: futures::Stream<Item = std::io::Result<(T, Option<CertificateDer<'static>>)>>,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Fn() -> SF,
    SF: Future<Output = ()> + Send + 'static,
{
    let mut incoming = std::pin::pin!(incoming);
    let mut connections = tokio::task::JoinSet::new();
    let mut stop = std::pin::pin!(stopped());
    loop {
        tokio::select! {
            accepted = incoming.next() => match accepted {
                Some(Ok((io, cert))) => {
                    connections.spawn(connection(io, Caller::new(cert), shared.clone(), stopped()));
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "failed to accept a connection on the internal port");
                }
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Serves one connection until it ends; once `stop` resolves, gracefully (GOAWAY, then the
/// calls in flight finish).
pub async fn connection<T>(
    io: T,
    caller: Caller,
    shared: Arc<Shared>,
    stop: impl Future<Output = ()>,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_header_list_size(MAX_HEADER_LIST)
        .handshake::<_, Bytes>(super::coalesce::Coalesce::new(io));
    let mut conn = match tokio::time::timeout(super::CONNECT_TIMEOUT, handshake).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            tracing::debug!(%error, "HTTP/2 handshake on the internal port failed");
            return;
        }
        Err(_) => {
            tracing::debug!("no HTTP/2 handshake on the internal port in time");
            return;
        }
    };
    let caller = Arc::new(caller);
    let spawn = tokio::runtime::Handle::current().runtime_flavor()
        != tokio::runtime::RuntimeFlavor::CurrentThread;
    let mut alive = std::pin::pin!(keepalive(conn.ping_pong()));
    let mut stop = std::pin::pin!(stop);
    let mut stopping = false;
    let mut calls: FuturesUnordered<Call> = FuturesUnordered::new();
    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    let call: Call = Box::pin(stream(shared.clone(), caller.clone(), request, respond));
                    if spawn {
                        tokio::spawn(call);
                    } else {
                        calls.push(call);
                    }
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "connection on the internal port failed");
                    break;
                }
                None => break,
            },
            Some(()) = calls.next(), if !calls.is_empty() => {}
            error = &mut alive => {
                tracing::debug!(%error, "connection on the internal port closed");
                break;
            }
            () = &mut stop, if !stopping => {
                stopping = true;
                conn.graceful_shutdown();
            }
        }
    }
}

/// One stream (one call) of a connection.
async fn stream(
    shared: Arc<Shared>,
    caller: Arc<Caller>,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let streaming = match request.uri().path() {
        CALL_LOCAL_STREAM => true,
        CALL_LOCAL => false,
        _ => return fallback(&shared.fallback, caller, request, respond).await,
    };
    let _counted = shared.in_flight.enter();
    let result = tokio::select! {
        result = internal_call(&shared.internal, &caller, streaming, request.into_body()) => result,
        // The caller cancelled (its app went away, its deadline passed): so is the app call,
        // as hyper's server and Dapr's do.
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    match result {
        Ok(messages) => send_ok(&mut respond, messages),
        Err(status) => send_status(&mut respond, status),
    }
}

/// `CallLocalStream` or `CallLocal`: the response's messages, or the status to end with.
async fn internal_call(
    internal: &Internal,
    caller: &Caller,
    streaming: bool,
    body: h2::RecvStream,
) -> Result<Bytes, Status> {
    let caller = internal
        .acl_configured()
        .then(|| caller.spiffe_id())
        .flatten();
    let messages = grpc_frame::split(read_body(body).await?).map_err(|e| match e {
        FrameError::Compressed => Status::unimplemented(
            "the request is compressed; this server accepts uncompressed messages only",
        ),
        e => Status::internal(format!("the request body: {e}")),
    })?;
    let malformed = |e: prost::DecodeError| Status::internal(format!("malformed request: {e}"));
    if streaming {
        let messages = messages
            .into_iter()
            .map(|m| InternalInvokeRequestStream::decode(m).map_err(malformed))
            .collect::<Result<Vec<_>, _>>()?;
        internal.call_local_stream(caller, messages).await
    } else {
        let [message] = <[Bytes; 1]>::try_from(messages).map_err(|m| {
            Status::internal(format!(
                "a CallLocal request is one message, not {}",
                m.len()
            ))
        })?;
        let request = InternalInvokeRequest::decode(message).map_err(malformed)?;
        internal.call_local(caller, request).await
    }
}

/// A request body, whole; a body of one DATA frame is not copied.
async fn read_body(mut body: h2::RecvStream) -> Result<Bytes, Status> {
    let mut chunks = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Status::cancelled(format!("reading the request: {e}")))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        chunks.push(chunk);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => chunks.concat().into(),
    })
}

fn grpc_response() -> http::Response<()> {
    let mut response = http::Response::new(());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Headers, the response's messages and an OK status, handed to h2 together so that they
/// leave in one write. (h2 buffers data beyond the flow-control window until the caller
/// grants more; a response is in memory whole anyway.)
fn send_ok(respond: &mut h2::server::SendResponse<Bytes>, messages: Bytes) {
    let Ok(mut send) = respond.send_response(grpc_response(), false) else {
        return; // the caller reset the stream
    };
    let mut trailers = http::HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let _ = send.send_data(messages, false);
    let _ = send.send_trailers(trailers);
}

/// A trailers-only response: the status in the headers, and nothing else.
fn send_status(respond: &mut h2::server::SendResponse<Bytes>, status: Status) {
    let (parts, ()) = status.into_http::<()>().into_parts();
    let _ = respond.send_response(http::Response::from_parts(parts, ()), true);
}

/// Any other call: through `service`, its request and response bodies streamed both ways.
async fn fallback(
    service: &Fallback,
    caller: Arc<Caller>,
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let (mut parts, body) = request.into_parts();
    parts.extensions.insert(caller);
    let request = http::Request::from_parts(parts, Body::new(h2body::Received::new(body)));
    let response = tokio::select! {
        response = tower::ServiceExt::oneshot(service.clone(), request) => response,
        _ = std::future::poll_fn(|cx| respond.poll_reset(cx)) => return,
    };
    let response = match response {
        Ok(response) => response,
        Err(error) => {
            send_status(&mut respond, Status::internal(error.to_string()));
            return;
        }
    };
    let (parts, mut body) = response.into_parts();
    let ended = body.is_end_stream();
    let Ok(mut send) = respond.send_response(http::Response::from_parts(parts, ()), ended) else {
        return;
    };
    if ended {
        return;
    }
    if let Err(reason) = h2body::pipe(&mut body, &mut send).await {
        send.send_reset(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invoke::client::{Peer, Transport, decode_frames};
    use crate::invoke::{CHUNK_BYTES, InvokeSettings, Invoker, stream_request};
    use daprs_api::proto::common::{HttpExtension, InvokeRequest, StreamPayload, http_extension};
    use daprs_api::proto::internals::{
        ApiVersion, InternalInvokeResponse, InternalInvokeResponseStream,
    };
    use tonic::Code;

    /// An HTTP app answering with the request's body and its path in `x-path`.
    async fn echo_app() -> u16 {
        let app = axum::Router::new().fallback(|uri: http::Uri, body: Bytes| async move {
            ([("x-path", uri.path().to_owned())], body)
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    }

    /// `service` as a fallback.
    fn boxed<S>(service: S) -> Fallback
    where
        S: tower::Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Fallback::new(tower::ServiceExt::map_err(service, BoxError::from))
    }

    fn unimplemented() -> Fallback {
        boxed(tower::service_fn(|_: http::Request<Body>| async {
            Ok(Status::unimplemented("fallback").into_http())
        }))
    }

    struct Server {
        address: String,
        stop: tokio::sync::oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
        /// How many connections it has accepted.
        accepted: Arc<std::sync::atomic::AtomicUsize>,
        /// The internal API's calls in flight.
        in_flight: InFlight,
    }

    /// The server on a loopback port (plaintext), for an HTTP app on `app_port`.
    async fn server(app_port: u16, fallback: Fallback) -> Server {
        let mut settings = InvokeSettings::default();
        settings.app.port = Some(app_port);
        settings.app.protocol = "http".into();
        settings.app.address = "127.0.0.1".into();
        let metrics = Arc::new(crate::metrics::Metrics::new("callee"));
        let invoker = Invoker::new(
            "callee".into(),
            "default".into(),
            settings,
            Default::default(),
            None,
            metrics,
        );
        let in_flight = InFlight::default();
        let shared = Arc::new(Shared {
            internal: Internal::new(Arc::new(invoker)),
            fallback,
            in_flight: in_flight.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = futures::FutureExt::shared(async move {
            let _ = stopped.await;
        });
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = accepted.clone();
        let incoming =
            tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |accepted| {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                accepted.map(|tcp| (tcp, None))
            });
        let task = tokio::spawn(serve(incoming, shared, move || stopped.clone()));
        Server {
            address,
            stop,
            task,
            accepted,
            in_flight,
        }
    }

    fn request(method: &str) -> InternalInvokeRequest {
        InternalInvokeRequest {
            ver: ApiVersion::V1 as i32,
            message: Some(InvokeRequest {
                method: method.into(),
                http_extension: Some(HttpExtension {
                    verb: http_extension::Verb::Post as i32,
                    querystring: String::new(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn internal_calls_reach_the_app_and_come_back_whole() {
        let server = server(echo_app().await, unimplemented()).await;
        let peer = Peer::new(server.address.clone(), Transport::Plain);
        // Over 16 KB: the request arrives in several DATA frames, the answer in several chunks.
        let body = Bytes::from(
            (0..CHUNK_BYTES * 10 + 5)
                .map(|i| i as u8)
                .collect::<Vec<_>>(),
        );
        let encoded = stream_request(&mut request("orders/1"), &body);
        let received = peer.call(CALL_LOCAL_STREAM, encoded).await.unwrap();
        let messages = decode_frames::<InternalInvokeResponseStream>(received).unwrap();
        let header = messages[0]
            .response
            .clone()
            .expect("the first message has the head");
        assert_eq!(header.status.unwrap().code, 200);
        assert_eq!(header.headers["X-Path"].values, ["/orders/1"]);
        let payloads: Vec<StreamPayload> =
            messages.iter().filter_map(|m| m.payload.clone()).collect();
        assert!(payloads.iter().enumerate().all(|(i, p)| p.seq == i as u64));
        assert_eq!(payloads.concat_data(), body);

        let mut unary = request("orders/2");
        unary.message.as_mut().unwrap().data = Some(prost_types::Any {
            type_url: String::new(),
            value: b"hello".to_vec(),
        });
        let received = peer
            .call(CALL_LOCAL, grpc_frame::encode(&[unary]))
            .await
            .unwrap();
        let response = decode_frames::<InternalInvokeResponse>(received).unwrap();
        let message = response[0].message.clone().unwrap();
        assert_eq!(message.data.unwrap().value, b"hello");
        assert_eq!(response[0].headers["X-Path"].values, ["/orders/2"]);
        server.stop.send(()).unwrap();
        server.task.await.unwrap();
    }

    trait ConcatData {
        fn concat_data(&self) -> Vec<u8>;
    }
    impl ConcatData for Vec<StreamPayload> {
        fn concat_data(&self) -> Vec<u8> {
            self.iter().flat_map(|p| p.data.clone()).collect()
        }
    }

    #[tokio::test]
    async fn bad_requests_get_a_status_that_names_the_problem() {
        let server = server(echo_app().await, unimplemented()).await;
        let peer = Peer::new(server.address.clone(), Transport::Plain);
        let cases: Vec<(&'static str, Bytes, Code, &str)> = vec![
            (
                CALL_LOCAL_STREAM,
                Bytes::from_static(&[1, 0, 0, 0, 0]),
                Code::Unimplemented,
                "compressed",
            ),
            (
                CALL_LOCAL_STREAM,
                Bytes::from_static(&[0, 0, 0, 0, 9, 1]),
                Code::Internal,
                "request body",
            ),
            (
                CALL_LOCAL_STREAM,
                Bytes::from_static(&[0, 0, 0, 0, 2, 0xff, 0xff]),
                Code::Internal,
                "malformed",
            ),
            (
                CALL_LOCAL_STREAM,
                Bytes::new(),
                Code::InvalidArgument,
                "no request",
            ),
            (
                CALL_LOCAL_STREAM,
                grpc_frame::encode(&[InternalInvokeRequestStream::default()]),
                Code::InvalidArgument,
                "carries no request",
            ),
            (
                CALL_LOCAL_STREAM,
                grpc_frame::encode(&[
                    InternalInvokeRequestStream {
                        request: Some(request("a")),
                        payload: Some(StreamPayload {
                            data: b"x".to_vec(),
                            seq: 0,
                        }),
                    },
                    InternalInvokeRequestStream {
                        request: None,
                        payload: Some(StreamPayload {
                            data: b"y".to_vec(),
                            seq: 2,
                        }),
                    },
                ]),
                Code::InvalidArgument,
                "chunk 2 arrived where 1 was expected",
            ),
            (
                CALL_LOCAL,
                grpc_frame::encode(&[request("a"), request("b")]),
                Code::Internal,
                "one message, not 2",
            ),
            (
                "/dapr.proto.internals.v1.ServiceInvocation/CallElsewhere",
                Bytes::new(),
                Code::Unimplemented,
                "fallback",
            ),
        ];
        for (path, body, code, says) in cases {
            let status = peer.call(path, body.clone()).await.unwrap_err();
            assert_eq!(status.code(), code, "{path} {body:?}: {status:?}");
            assert!(
                status.message().contains(says),
                "{path} {body:?}: {status:?}"
            );
        }
        // The connection survived every one of them.
        assert!(!peer.is_closed());
        server.stop.send(()).unwrap();
        server.task.await.unwrap();
    }

    /// An h2 client connection to `address`.
    async fn h2_client(address: &str) -> h2::client::SendRequest<Bytes> {
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.await;
        });
        send
    }

    fn grpc_request(path: &str) -> http::Request<()> {
        http::Request::post(format!("http://callee{path}"))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(())
            .unwrap()
    }

    async fn next_data(body: &mut h2::RecvStream) -> Bytes {
        let data = body.data().await.expect("more data").unwrap();
        let _ = body.flow_control().release_capacity(data.len());
        data
    }

    #[tokio::test]
    async fn other_calls_stream_through_the_fallback_both_ways() {
        // Answers with the request's own body: each message comes back as it arrives, and
        // the request's trailers end the response.
        let echo = tower::service_fn(|request: http::Request<Body>| async move {
            assert!(request.extensions().get::<Arc<Caller>>().is_some());
            Ok::<_, std::convert::Infallible>(http::Response::new(request.into_body()))
        });
        let server = server(echo_app().await, boxed(echo)).await;
        let mut send = h2_client(&server.address).await.ready().await.unwrap();
        let (response, mut body) = send
            .send_request(grpc_request("/pkg.Echo/Chat"), false)
            .unwrap();
        body.send_data(Bytes::from_static(b"one"), false).unwrap();
        let (head, mut received) = response.await.unwrap().into_parts();
        assert_eq!(head.status, http::StatusCode::OK);
        assert_eq!(next_data(&mut received).await, "one");
        // Sent only once the first answer is back: a server that waited for the whole
        // request would never answer.
        body.send_data(Bytes::from_static(b"two"), false).unwrap();
        assert_eq!(next_data(&mut received).await, "two");
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        body.send_trailers(trailers.clone()).unwrap();
        assert!(received.data().await.is_none());
        assert_eq!(received.trailers().await.unwrap(), Some(trailers));
        server.stop.send(()).unwrap();
        server.task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_lets_calls_in_flight_finish() {
        let (arrived, mut arrivals) = tokio::sync::mpsc::channel::<()>(1);
        let release = Arc::new(tokio::sync::Notify::new());
        let hold = {
            let release = release.clone();
            tower::service_fn(move |_: http::Request<Body>| {
                let (arrived, release) = (arrived.clone(), release.clone());
                async move {
                    arrived.send(()).await.unwrap();
                    release.notified().await;
                    Ok::<_, std::convert::Infallible>(Status::ok("").into_http())
                }
            })
        };
        let server = server(echo_app().await, boxed(hold)).await;
        let mut send = h2_client(&server.address).await.ready().await.unwrap();
        let (response, _body) = send
            .send_request(grpc_request("/pkg.Slow/Wait"), true)
            .unwrap();
        arrivals.recv().await.unwrap();
        server.stop.send(()).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(
            !server.task.is_finished(),
            "the server ended with a call in flight"
        );
        release.notify_one();
        let head = response.await.expect("the call in flight is answered");
        assert_eq!(head.headers()["grpc-status"], "0");
        tokio::time::timeout(std::time::Duration::from_secs(10), server.task)
            .await
            .expect("the server ends once its calls are done")
            .unwrap();
    }

    #[tokio::test]
    async fn proxied_calls_share_the_connection_of_internal_calls() {
        let echo = tower::service_fn(|request: http::Request<Body>| async move {
            Ok::<_, std::convert::Infallible>(http::Response::new(request.into_body()))
        });
        let server = server(echo_app().await, boxed(echo)).await;
        let peer = Peer::new(server.address.clone(), Transport::Plain);
        let encoded = stream_request(&mut request("orders"), &Bytes::from_static(b"a"));
        peer.call(CALL_LOCAL_STREAM, encoded.clone()).await.unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, Status>>(1);
        let body = Body::new(http_body_util::StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ));
        let forwarded = grpc_request("/pkg.Echo/Chat").map(|()| body);
        let response = peer.forward(forwarded).await.unwrap();
        // The answer streams back while the request is still open.
        tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"one"))))
            .await
            .unwrap();
        let mut answer = response.into_body();
        let frame = std::future::poll_fn(|cx| Pin::new(&mut answer).poll_frame(cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), "one");
        drop(tx);
        let rest = http_body_util::BodyExt::collect(answer).await.unwrap();
        assert!(rest.to_bytes().is_empty());
        peer.call(CALL_LOCAL_STREAM, encoded).await.unwrap();
        assert_eq!(
            server.accepted.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "internal and proxied calls use one connection"
        );
        server.stop.send(()).unwrap();
        server.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_call_stops_waiting_for_the_app() {
        // An app that answers only when told to.
        let release = Arc::new(tokio::sync::Notify::new());
        let (arrived, mut arrivals) = tokio::sync::mpsc::channel::<()>(1);
        let app = {
            let release = release.clone();
            axum::Router::new().fallback(move || {
                let (release, arrived) = (release.clone(), arrived.clone());
                async move {
                    arrived.send(()).await.unwrap();
                    release.notified().await;
                    "late"
                }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app_port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let server = server(app_port, unimplemented()).await;
        let in_flight = server.in_flight.clone();
        let mut send = h2_client(&server.address).await.ready().await.unwrap();
        let (_response, mut body) = send
            .send_request(grpc_request(CALL_LOCAL_STREAM), false)
            .unwrap();
        body.send_data(stream_request(&mut request("slow"), &Bytes::new()), true)
            .unwrap();
        arrivals.recv().await.unwrap();
        assert_eq!(in_flight.count(), 1);
        body.send_reset(h2::Reason::CANCEL);
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while in_flight.count() != 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the cancelled call ends while the app still holds it");
        release.notify_one();
        server.stop.send(()).unwrap();
        server.task.await.unwrap();
    }
}
