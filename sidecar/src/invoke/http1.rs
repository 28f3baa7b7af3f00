//! The app channel's connections to a plain-HTTP app (`--app-protocol http`): HTTP/1.1 with
//! keep-alive, each connection driven by the task whose call it carries.
//!
//! A pooled client (reqwest, hyper-util) gives each connection a task of its own: a call hands
//! its request to that task and is woken again with the response, two task switches per call
//! that at 1,000 calls/s cost more CPU than the HTTP/1 exchange. Here a call takes an idle
//! connection (or opens one), writes, reads and returns it to the pool, all in the calling
//! task. An idle connection is polled by nobody; before reuse it is checked once, so one the
//! app has closed meanwhile is dropped instead of used.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a connection may stay idle before it is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept at most.
pub const MAX_IDLE: usize = 1024;
/// Connect timeout to the app.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Connection = http1::Connection<TokioIo<TcpStream>, Full<Bytes>>;

struct Idle {
    send: http1::SendRequest<Full<Bytes>>,
    connection: Connection,
    since: Instant,
}

/// HTTP/1.1 connections to one `host:port`.
pub struct Http1Pool {
    /// `host:port`, also the `Host` header.
    authority: String,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Http1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Pool")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl Http1Pool {
    pub fn new(authority: String) -> Self {
        Self {
            authority,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends `request` (origin-form URI: path and query) and reads the whole response.
    pub async fn send(
        &self,
        mut request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<Bytes>, String> {
        if let Ok(host) = http::HeaderValue::from_str(&self.authority) {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let (mut send, connection) = match self.take_idle() {
            Some(idle) => (idle.send, idle.connection),
            None => self.connect().await?,
        };
        let mut connection = Some(connection);
        let response = drive(&mut connection, send.send_request(request))
            .await
            .map_err(|e| super::app::error_chain(&e))?;
        let (head, body) = response.into_parts();
        let body = drive(&mut connection, body.collect())
            .await
            .map_err(|e| format!("reading the response body: {}", super::app::error_chain(&e)))?
            .to_bytes();
        if let Some(connection) = connection {
            self.put_idle(send, connection);
        }
        Ok(http::Response::from_parts(head, body))
    }

    async fn connect(&self) -> Result<(http1::SendRequest<Full<Bytes>>, Connection), String> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.authority))
            .await
            .map_err(|_| {
                format!(
                    "no connection to {} within {CONNECT_TIMEOUT:?}",
                    self.authority
                )
            })?
            .map_err(|e| format!("connect to {}: {e}", self.authority))?;
        tcp.set_nodelay(true)
            .map_err(|e| format!("connect to {}: {e}", self.authority))?;
        http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| super::app::error_chain(&e))
    }

    /// The most recently used idle connection that is still open and not too old.
    fn take_idle(&self) -> Option<Idle> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(mut candidate) = idle.pop() {
            if candidate.since.elapsed() < IDLE_TIMEOUT && usable(&mut candidate) {
                return Some(candidate);
            }
        }
        None
    }

    fn put_idle(&self, send: http1::SendRequest<Full<Bytes>>, connection: Connection) {
        let mut candidate = Idle {
            send,
            connection,
            since: Instant::now(),
        };
        // The response is read; the connection takes a request again once it has seen that
        // (`Connection: close` from the app ends it instead).
        if !usable(&mut candidate) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(candidate);
        }
    }
}

/// Polls an idle connection once without a task to wake: it reads what the app sent meanwhile
/// (an end of stream, or an unrequested response) and is usable if it is still open and ready
/// for a request.
fn usable(idle: &mut Idle) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut idle.connection).poll(&mut cx) {
        Poll::Ready(_) => false,
        Poll::Pending => idle.send.is_ready(),
    }
}

/// Awaits `call` while polling the connection that carries it. If the connection ends first
/// (the app closed it), `call` still completes: with what was received, or the error.
async fn drive<F: Future>(connection: &mut Option<Connection>, call: F) -> F::Output {
    let mut call = pin!(call);
    if let Some(conn) = connection.as_mut() {
        tokio::select! {
            biased;
            output = &mut call => return output,
            result = conn => {
                if let Err(error) = result {
                    tracing::debug!(error = %error, "app connection ended");
                }
                *connection = None;
            }
        }
    }
    call.await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// How the test app treats a connection after each response.
    #[derive(Clone, Copy)]
    enum After {
        KeepOpen,
        /// Answers with `Connection: close` and closes.
        SayClose,
        /// Closes without saying so, as an app whose idle timeout is shorter than ours.
        CloseSilently,
    }

    /// A plain-TCP HTTP/1.1 app answering each request with its `Host` header as the body.
    /// Returns its address and the number of connections it accepted.
    async fn app(after: After) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = Vec::new();
                    loop {
                        let mut chunk = [0u8; 1024];
                        let n = tcp.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buffer.extend_from_slice(&chunk[..n]);
                        let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buffer[..end]).to_string();
                        buffer.drain(..end + 4);
                        let host = head
                            .lines()
                            .find_map(|l| l.strip_prefix("host: "))
                            .unwrap_or("none")
                            .to_string();
                        let close = matches!(after, After::SayClose);
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n{}\r\n{host}",
                            host.len(),
                            if close { "connection: close\r\n" } else { "" }
                        );
                        tcp.write_all(response.as_bytes()).await.unwrap();
                        if !matches!(after, After::KeepOpen) {
                            return;
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    fn get(path: &str) -> http::Request<Full<Bytes>> {
        let mut request = http::Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = http::Uri::try_from(path).unwrap();
        request
    }

    async fn three_calls(pool: &Http1Pool, address: &str) {
        for i in 0..3 {
            let response = pool.send(get(&format!("/m{i}?q=1"))).await.unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.body().as_ref(), address.as_bytes(), "Host header");
            // Give the app's close, if any, time to arrive before the next call.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn sequential_calls_reuse_one_connection() {
        let (address, accepted) = app(After::KeepOpen).await;
        let pool = Http1Pool::new(address.clone());
        three_calls(&pool, &address).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn connection_close_from_the_app_is_honoured() {
        let (address, accepted) = app(After::SayClose).await;
        let pool = Http1Pool::new(address.clone());
        three_calls(&pool, &address).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(pool.idle.lock().unwrap().len(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_app_closed_while_idle_is_not_used() {
        let (address, accepted) = app(After::CloseSilently).await;
        let pool = Http1Pool::new(address.clone());
        three_calls(&pool, &address).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn concurrent_calls_open_connections_and_keep_them() {
        let (address, accepted) = app(After::KeepOpen).await;
        let pool = Arc::new(Http1Pool::new(address.clone()));
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.send(get(&format!("/c{i}"))).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().status(), 200);
        }
        let opened = accepted.load(Ordering::SeqCst);
        assert!((1..=4).contains(&opened), "{opened} connections");
        assert_eq!(pool.idle.lock().unwrap().len(), opened);
        three_calls(&pool, &address).await;
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            opened,
            "idle connections reused"
        );
    }

    #[tokio::test]
    async fn an_app_that_is_not_listening_is_named_in_the_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let error = Http1Pool::new(address.clone())
            .send(get("/x"))
            .await
            .unwrap_err();
        assert!(error.contains(&format!("connect to {address}")), "{error}");
    }
}
