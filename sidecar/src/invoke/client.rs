//! The caller's side of the internal API: `CallLocalStream` (and `CallLocal` for peers without
//! streaming) on a connection to the callee's sidecar, HTTP/2 through the `h2` crate directly.
//!
//! Why not tonic's `Channel`: at 1,000 calls/s a call's CPU is mostly waking tasks, and the
//! channel hands each call over four times (its `Buffer` worker, hyper's connection task,
//! a task hyper spawns per call to wait for the response, then the caller). Here the calling
//! task opens the stream, writes the whole request and waits for the response itself; only
//! the connection's own task (reading and writing the socket, keepalive pings) runs apart.
//! The gRPC framing is the 5-byte prefix of each message and the status in the trailers.
//!
//! [`Peer`] is one connection, opened lazily by the first call; once its task has ended
//! (the peer went away, a keepalive ping was not answered) the next call opens a new one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use daprs_api::grpc_frame;
use prost::Message;
use tonic::{Code, Status};

use super::{CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};

/// Path of the streaming call, and of the unary one older peers have.
pub const CALL_LOCAL_STREAM: &str = "/dapr.proto.internals.v1.ServiceInvocation/CallLocalStream";
pub const CALL_LOCAL: &str = "/dapr.proto.internals.v1.ServiceInvocation/CallLocal";
/// Flow-control windows we give the peer for responses (hyper's client defaults).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// How a new connection is set up: plaintext (h2c), or TLS with this connector.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls(tokio_rustls::TlsConnector),
}

/// One HTTP/2 connection to another sidecar's internal port.
pub struct Peer {
    address: String,
    transport: Transport,
    connection: tokio::sync::OnceCell<Open>,
}

struct Open {
    send: h2::client::SendRequest<Bytes>,
    /// Set by the connection's task when it ends.
    closed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("address", &self.address)
            .field("tls", &matches!(self.transport, Transport::Tls(_)))
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A peer at `address` (`host:port`); nothing is connected until the first call.
    pub fn new(address: String, transport: Transport) -> Self {
        Self {
            address,
            transport,
            connection: tokio::sync::OnceCell::new(),
        }
    }

    /// Whether the connection was opened and has ended since (a new `Peer` is needed).
    pub fn is_closed(&self) -> bool {
        self.connection
            .get()
            .is_some_and(|open| open.closed.load(Ordering::Acquire))
    }

    async fn sender(&self) -> Result<h2::client::SendRequest<Bytes>, Status> {
        let open = self
            .connection
            .get_or_try_init(|| self.connect())
            .await
            .map_err(|e| Status::unavailable(format!("connect to {}: {e}", self.address)))?;
        Ok(open.send.clone())
    }

    async fn connect(&self) -> Result<Open, String> {
        let (host, _) = self
            .address
            .rsplit_once(':')
            .ok_or_else(|| format!("{:?} has no port", self.address))?;
        let host = host.trim_matches(['[', ']']).to_owned();
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(self.address.as_str()),
        )
        .await
        .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let closed = Arc::new(AtomicBool::new(false));
        let send = match &self.transport {
            Transport::Plain => handshake(tcp, closed.clone()).await?,
            Transport::Tls(connector) => {
                // The callee is checked by its SPIFFE id, not by name: any valid name will do.
                let name = rustls::pki_types::ServerName::try_from(host).unwrap_or_else(|_| {
                    rustls::pki_types::ServerName::try_from("daprd.invalid")
                        .expect("static name is valid")
                });
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
                    .await
                    .map_err(|_| format!("no TLS handshake within {CONNECT_TIMEOUT:?}"))?
                    .map_err(|e| super::app::error_chain(&e))?;
                handshake(tls, closed.clone()).await?
            }
        };
        Ok(Open { send, closed })
    }

    /// Sends one call of `path` whose request is `body` (prefixed messages, see [`grpc_frame::encode`])
    /// and returns the response's messages once the call has ended with status OK.
    pub async fn call(&self, path: &'static str, body: Bytes) -> Result<Bytes, Status> {
        let send = self.sender().await?;
        let mut send = send.ready().await.map_err(h2_status)?;
        let request = http::Request::post(format!("{}://{}{path}", self.scheme(), self.address))
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(())
            .map_err(|e| Status::internal(format!("invalid request: {e}")))?;
        let (response, mut request_body) = send.send_request(request, false).map_err(h2_status)?;
        request_body.send_data(body, true).map_err(h2_status)?;
        let response = response.await.map_err(h2_status)?;
        let (head, mut received) = response.into_parts();
        // A trailers-only response carries its status in the headers.
        if let Some(status) = Status::from_header_map(&head.headers) {
            return ok_or(status, Bytes::new());
        }
        if head.status != http::StatusCode::OK {
            return Err(Status::new(
                code_of_http(head.status),
                format!("the peer answered HTTP {}", head.status),
            ));
        }
        let mut messages = BytesMut::new();
        while let Some(chunk) = received.data().await {
            let chunk = chunk.map_err(h2_status)?;
            let _ = received.flow_control().release_capacity(chunk.len());
            messages.extend_from_slice(&chunk);
        }
        let trailers = received.trailers().await.map_err(h2_status)?;
        let status = trailers
            .as_ref()
            .and_then(Status::from_header_map)
            .unwrap_or_else(|| Status::internal("the peer ended the call without a gRPC status"));
        ok_or(status, messages.freeze())
    }

    /// Forwards a proxied gRPC call of any shape on this connection: the request's body is
    /// sent as it arrives (by a task of its own), and the response is returned as soon as its
    /// headers are in, with a body that streams the rest of the peer's answer.
    pub async fn forward(
        &self,
        request: http::Request<tonic::body::Body>,
    ) -> Result<http::Response<tonic::body::Body>, Status> {
        let send = self.sender().await?;
        let mut send = send.ready().await.map_err(h2_status)?;
        let (mut parts, mut body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = format!("{}://{}{path}", self.scheme(), self.address)
            .parse()
            .map_err(|e| Status::internal(format!("invalid request path {path:?}: {e}")))?;
        let ended = http_body::Body::is_end_stream(&body);
        let (response, mut stream) = send
            .send_request(http::Request::from_parts(parts, ()), ended)
            .map_err(h2_status)?;
        if !ended {
            tokio::spawn(async move {
                if let Err(reason) = super::h2body::pipe(&mut body, &mut stream).await {
                    stream.send_reset(reason);
                }
            });
        }
        let (parts, received) = response.await.map_err(h2_status)?.into_parts();
        let body = tonic::body::Body::new(super::h2body::Received::new(received));
        Ok(http::Response::from_parts(parts, body))
    }

    fn scheme(&self) -> &'static str {
        match self.transport {
            Transport::Plain => "http",
            Transport::Tls(_) => "https",
        }
    }
}

fn ok_or(status: Status, messages: Bytes) -> Result<Bytes, Status> {
    if status.code() == Code::Ok {
        Ok(messages)
    } else {
        Err(status)
    }
}

/// The HTTP/2 handshake on `io`, then a task driving the connection and pinging it every
/// [`KEEPALIVE_INTERVAL`] (also while idle); a ping not answered within
/// [`KEEPALIVE_TIMEOUT`] ends it. `closed` is set when the task ends.
async fn handshake<T>(
    io: T,
    closed: Arc<AtomicBool>,
) -> Result<h2::client::SendRequest<Bytes>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .enable_push(false)
        .handshake::<_, Bytes>(super::coalesce::Coalesce::new(io))
        .await
        .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
    let pings = connection.ping_pong();
    tokio::spawn(async move {
        let ended = tokio::select! {
            result = &mut connection => result.err().map(|e| e.to_string()),
            error = keepalive(pings) => Some(error),
        };
        closed.store(true, Ordering::Release);
        if let Some(error) = ended {
            tracing::debug!(%error, "connection to another sidecar ended");
        }
    });
    Ok(send)
}

/// Pings every [`KEEPALIVE_INTERVAL`]; returns why the connection is to be dropped.
pub(super) async fn keepalive(pings: Option<h2::PingPong>) -> String {
    let Some(mut pings) = pings else {
        // Only taken once per connection, so always there; without it, never end.
        return futures::future::pending().await;
    };
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        if let Err(e) = pings.send_ping(h2::Ping::opaque()) {
            return format!("keepalive ping: {e}");
        }
        match tokio::time::timeout(
            KEEPALIVE_TIMEOUT,
            std::future::poll_fn(|cx| pings.poll_pong(cx)),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return format!("keepalive ping: {e}"),
            Err(_) => return format!("keepalive ping not answered within {KEEPALIVE_TIMEOUT:?}"),
        }
    }
}

/// The messages of a response body, decoded in order.
pub fn decode_frames<M: Message + Default>(body: Bytes) -> Result<Vec<M>, Status> {
    grpc_frame::split(body)
        .map_err(|e| Status::internal(format!("the peer's response: {e}")))?
        .into_iter()
        .map(|message| {
            M::decode(message)
                .map_err(|e| Status::internal(format!("malformed response message: {e}")))
        })
        .collect()
}

/// The gRPC code for an HTTP status other than 200 (gRPC's HTTP-to-gRPC status mapping).
fn code_of_http(status: http::StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// An HTTP/2 error as a status: a connection that failed, went away or refused the stream is
/// `Unavailable` (so the call is retried on a new connection); a reset stream gets the code of
/// its reason, as gRPC maps them.
fn h2_status(error: h2::Error) -> Status {
    let message = format!("connection to the peer: {error}");
    if error.is_io() || error.is_go_away() {
        return Status::unavailable(message);
    }
    let code = match error.reason() {
        Some(h2::Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(h2::Reason::CANCEL) => Code::Cancelled,
        Some(h2::Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(h2::Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        _ => Code::Internal,
    };
    Status::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use daprs_api::proto::common::StreamPayload;

    #[test]
    fn bad_response_bodies_are_named() {
        let body = grpc_frame::encode(&[StreamPayload {
            data: b"abc".to_vec(),
            seq: 0,
        }]);
        let cut = decode_frames::<StreamPayload>(body.slice(..body.len() - 1)).unwrap_err();
        assert!(cut.message().contains("bytes but"), "{cut:?}");
        let garbage = grpc_frame::encode(&[StreamPayload::default()]);
        let mut garbage = BytesMut::from(&garbage[..]);
        garbage.extend_from_slice(&[0, 0, 0, 0, 2, 0xff, 0xff]);
        let malformed = decode_frames::<StreamPayload>(garbage.freeze()).unwrap_err();
        assert!(malformed.message().contains("malformed"), "{malformed:?}");
        assert!(
            decode_frames::<StreamPayload>(Bytes::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn http_statuses_and_stream_resets_map_to_grpc_codes() {
        assert_eq!(
            code_of_http(http::StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(
            code_of_http(http::StatusCode::NOT_FOUND),
            Code::Unimplemented
        );
        assert_eq!(code_of_http(http::StatusCode::IM_A_TEAPOT), Code::Unknown);
        assert_eq!(
            h2_status(h2::Reason::REFUSED_STREAM.into()).code(),
            Code::Unavailable
        );
        assert_eq!(h2_status(h2::Reason::CANCEL.into()).code(), Code::Cancelled);
        assert_eq!(
            h2_status(h2::Reason::PROTOCOL_ERROR.into()).code(),
            Code::Internal
        );
    }
}
