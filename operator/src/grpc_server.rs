//! The operator API's connections: TLS streams served by hyper's HTTP/2 server directly,
//! each request tagged with the caller's SPIFFE id and routed by tonic's [`Routes`]. The
//! accept loop, [`serve_connections`], serves the webhooks too ([`crate::webhook::serve_tls`]).
//!
//! Every sidecar holds one connection for its whole life, so what a connection keeps while
//! idle is multiplied by the number of sidecars (`docs/performance.md`, the operator). tonic's
//! transport server keeps more than this API needs:
//! - a copy of the client's certificate chain in each connection's `TlsConnectInfo`; here the
//!   connection keeps only the SPIFFE id, read once after the handshake ([`Caller`]);
//! - a connection task sized for HTTP/1 and HTTP/2 both; here HTTP/2 only, as gRPC is, and
//!   the task holds the connection once (an `async` block awaiting it is sized for two, which
//!   alone cost ~2.9 KiB per connection);
//! - a task per stream sized for its middleware's futures; here the service's future is boxed,
//!   so an open stream's task holds only the response body and hyper's stream state.
//!
//! What the transport server did and this does too: HTTP/2 keepalive pings (every 30 s,
//! 20 s to answer), `Unimplemented` for an unknown service, a graceful stop (GOAWAY, then
//! in-flight calls get [`crate::GRACEFUL_STOP`]). What it does not: `grpc-timeout` is not
//! enforced on the server (the client's deadline still ends its call), as no call here
//! waits on anything slow.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use daprs_api::SpiffeId;
use daprs_api::tls::ServerTlsStream;
use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use tokio::sync::watch;
use tonic::service::Routes;
use tower::Service as _;

/// How often an idle connection is pinged, and how long the client has to answer.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Streams one connection may have open at once (a sidecar opens five update streams).
const MAX_STREAMS_PER_CONNECTION: u32 = 200;

/// The SPIFFE id of a connection's client certificate, or why it has none; a request
/// extension on every call of the connection (see [`crate::api::caller`]).
#[derive(Clone, Debug)]
pub struct Caller(Arc<Result<SpiffeId, String>>);

impl Caller {
    /// Reads the id from the client certificate of a finished handshake.
    pub fn of(stream: &ServerTlsStream) -> Self {
        let id = match stream.get_ref().1.peer_certificates() {
            Some([leaf, ..]) => {
                daprs_api::tls::spiffe_id_of(leaf).map_err(|e| format!("client certificate: {e}"))
            }
            _ => Err("a client certificate is required".to_owned()),
        };
        Self(Arc::new(id))
    }

    pub fn id(&self) -> Result<&SpiffeId, &str> {
        self.0.as_ref().as_ref().map_err(String::as_str)
    }
}

/// One connection's service: tags each request with the [`Caller`] and routes it.
#[derive(Clone)]
struct Connection {
    routes: Routes,
    caller: Caller,
}

impl hyper::service::Service<http::Request<Incoming>> for Connection {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    // Boxed, so that a stream's task is not sized for the routing future (see above).
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.caller.clone());
        let mut routes = self.routes.clone();
        Box::pin(routes.call(request))
    }
}

/// Serves `routes` on each connection of `incoming` until `shutdown`, then stops gracefully.
pub async fn serve(
    incoming: impl Stream<Item = std::io::Result<ServerTlsStream>>,
    routes: Routes,
    shutdown: watch::Receiver<bool>,
) {
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // gRPC has no use for `date`, and each value would take a slot in the connection's
        // HPACK table.
        .auto_date_header(false);
    let routes = routes.prepare();
    serve_connections("API", incoming, shutdown, |stream| {
        let service = Connection {
            routes: routes.clone(),
            caller: Caller::of(&stream),
        };
        http2.serve_connection(TokioIo::new(stream), service)
    })
    .await;
}

/// Runs `serve(stream)` for each connection of `incoming`, each in a task of its own, until
/// `shutdown`; then closes the listener, asks every connection to finish (HTTP/2 GOAWAY,
/// HTTP/1 closes after the response in flight) and aborts those still open after
/// [`crate::GRACEFUL_STOP`]. `what` names the server in logs.
pub async fn serve_connections<C>(
    what: &'static str,
    incoming: impl Stream<Item = std::io::Result<ServerTlsStream>>,
    mut shutdown: watch::Receiver<bool>,
    mut serve: impl FnMut(ServerTlsStream) -> C,
) where
    C: GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display + Send,
{
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    {
        let mut incoming = std::pin::pin!(incoming);
        loop {
            tokio::select! {
                next = incoming.next() => {
                    let stream = match next {
                        Some(Ok(stream)) => stream,
                        Some(Err(error)) => {
                            tracing::debug!(%error, server = what, "failed to accept a connection");
                            continue;
                        }
                        None => break,
                    };
                    // `map`, not an `async` block: a block holding the connection across its
                    // `.await` is sized for two of them, and the task keeps that size.
                    connections.spawn(graceful.watch(serve(stream)).map(move |result| {
                        if let Err(error) = result {
                            tracing::debug!(%error, server = what, "connection ended with an error");
                        }
                    }));
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                () = crate::api::stopped(&mut shutdown) => break,
            }
        }
        // Dropping `incoming` closes the listener: no new connections while stopping.
    }
    if tokio::time::timeout(crate::GRACEFUL_STOP, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            server = what,
            "in-flight calls did not finish in time; closing their connections"
        );
    }
    connections.shutdown().await;
}
