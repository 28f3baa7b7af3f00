//! What this machine charges for the bare socket work of a sidecar, with no HTTP, no TLS and no
//! gRPC (`cargo bench -p daprs-sidecar --bench floor`). It runs the `invoke` bench's shape,
//! a fixed 1,000 requests/s of 1 KB over 16 connections, open loop, through two **relays**:
//! processes that read a length-prefixed message from one socket, write it to another, read
//! the reply and write it back, which is the least a sidecar can do per request. First straight
//! to an echo server, then client -> relay -> relay -> echo, in the same run. Reports the added
//! latency (p50/p90/p99) and the CPU of each relay (utime + stime over the run, in mCPU), for
//! each way of writing the relay:
//!
//! - `tokio-mt`: a Tokio multi-thread runtime, one task per connection (as daprd is built);
//! - `tokio-ct`: a Tokio current-thread runtime;
//! - `threads`: blocking std sockets, one thread per connection, no event loop at all;
//! - `tokio-ct + mTLS`: the current-thread relays, with the hop between them over mutual TLS
//!   1.3 set up as daprd sets it up (`daprs_api::tls`, a certificate from sentry's CA code),
//!   so the cost of the encryption a sidecar cannot skip shows on its own;
//! - `HTTP/1 + h2 + mTLS`: the protocols of daprd's invocation path and nothing of Dapr's: the
//!   client and the echo app speak HTTP/1 (the echo app is axum), the caller relay serves
//!   HTTP/1 with hyper and forwards each request as an HTTP/2 stream (h2) over one mutual-TLS
//!   connection, the callee relay serves that and forwards each stream to the app over pooled
//!   HTTP/1 connections (hyper). Bodies are gathered whole, as daprd does. No gRPC framing,
//!   protobuf, headers, metrics or name resolution: what the libraries cost, used plainly.
//!
//! A sidecar cannot use less CPU per request than these relays, nor add less latency: the
//! numbers are a floor for `invoke`'s targets on the machine that runs them. CPU is split
//! into user and system (kernel) time.
//! Tunables: FLOOR_SECONDS (default 10), FLOOR_RATE (1000), FLOOR_CONNECTIONS (16).
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a short smoke run that checks
//! every reply.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod common;
use common::{Cpu, OpenLoop, env_or, pct};

const PAYLOAD_BYTES: usize = 1024;
/// The ways of writing a relay, and how each is named in the table.
const KINDS: [(&str, &str); 5] = [
    ("tokio-mt", "tokio-mt"),
    ("tokio-ct", "tokio-ct"),
    ("threads", "threads"),
    ("tls", "tokio-ct + mTLS"),
    ("http", "HTTP/1 + h2 + mTLS"),
];

// ---- the relay process ------------------------------------------------------------------

/// `floor relay <kind> <upstream> <certificate dir>`: prints its port, then relays until
/// killed. The `tls` and `http` kinds come as `tls-in`/`http-in` (accepts mutual TLS from the
/// other relay) and `tls-out`/`http-out` (dials the other relay over mutual TLS), with the
/// certificates `main` wrote into the directory.
fn relay_main(kind: &str, upstream: SocketAddr, tls_dir: &std::path::Path) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    match kind {
        "threads" => loop {
            let (down, _) = listener.accept().unwrap();
            std::thread::spawn(move || relay_blocking(down, upstream));
        },
        "http-in" | "http-out" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (acceptor, connector) = tls::configs(tls_dir);
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                if kind == "http-out" {
                    http_relay::caller(listener, upstream, connector).await
                } else {
                    http_relay::callee(listener, upstream, acceptor).await
                }
            });
        }
        "tokio-ct" | "tokio-mt" | "tls-in" | "tls-out" => {
            let runtime = if kind != "tokio-mt" {
                tokio::runtime::Builder::new_current_thread()
            } else {
                tokio::runtime::Builder::new_multi_thread()
            }
            .enable_all()
            .build()
            .unwrap();
            let tls = kind.starts_with("tls").then(|| tls::configs(tls_dir));
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (down, _) = listener.accept().await.unwrap();
                    down.set_nodelay(true).unwrap();
                    let up = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    up.set_nodelay(true).unwrap();
                    match (kind, &tls) {
                        ("tls-in", Some((server, _))) => {
                            let down = server.accept(down).await.unwrap();
                            tokio::spawn(relay_async(down, up));
                        }
                        ("tls-out", Some((_, client))) => {
                            let name =
                                rustls::pki_types::ServerName::try_from("localhost").unwrap();
                            let up = client.connect(name, up).await.unwrap();
                            tokio::spawn(relay_async(down, up));
                        }
                        _ => {
                            tokio::spawn(relay_async(down, up));
                        }
                    }
                }
            });
        }
        other => panic!("unknown relay kind {other:?}; one of {KINDS:?}"),
    }
}

fn relay_blocking(mut down: TcpStream, upstream: SocketAddr) {
    let mut up = TcpStream::connect(upstream).unwrap();
    down.set_nodelay(true).unwrap();
    up.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 4 + PAYLOAD_BYTES * 64];
    while read_frame_blocking(&mut down, &mut buf).is_some_and(|n| up.write_all(&buf[..n]).is_ok())
    {
        let Some(n) = read_frame_blocking(&mut up, &mut buf) else {
            return;
        };
        if down.write_all(&buf[..n]).is_err() {
            return;
        }
    }
}

/// Reads one frame (4-byte big-endian length, then the payload) into `buf`; its total length.
fn read_frame_blocking(s: &mut TcpStream, buf: &mut [u8]) -> Option<usize> {
    s.read_exact(&mut buf[..4]).ok()?;
    let len = 4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    s.read_exact(&mut buf[4..len]).ok()?;
    Some(len)
}

async fn read_frame(s: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> Option<usize> {
    s.read_exact(&mut buf[..4]).await.ok()?;
    let len = 4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    s.read_exact(&mut buf[4..len]).await.ok()?;
    Some(len)
}

async fn relay_async(
    mut down: impl AsyncRead + AsyncWrite + Unpin,
    mut up: impl AsyncRead + AsyncWrite + Unpin,
) {
    let mut buf = vec![0u8; 4 + PAYLOAD_BYTES * 64];
    while let Some(n) = read_frame(&mut down, &mut buf).await {
        // `flush` hands a TLS stream's records to the socket; a plain one has none.
        if up.write_all(&buf[..n]).await.is_err() || up.flush().await.is_err() {
            return;
        }
        let Some(n) = read_frame(&mut up, &mut buf).await else {
            return;
        };
        if down.write_all(&buf[..n]).await.is_err() || down.flush().await.is_err() {
            return;
        }
    }
}

/// The `http` relays (see the module docs).
mod http_relay {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    /// Serves HTTP/1 on `listener`; each request goes to `upstream` as an HTTP/2 stream over one
    /// mutual-TLS connection.
    pub async fn caller(
        listener: tokio::net::TcpListener,
        upstream: SocketAddr,
        tls: tokio_rustls::TlsConnector,
    ) {
        let tcp = tokio::net::TcpStream::connect(upstream).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let (send, connection) = h2::client::handshake(tls.connect(name, tcp).await.unwrap())
            .await
            .unwrap();
        tokio::spawn(connection);
        loop {
            let (down, _) = listener.accept().await.unwrap();
            down.set_nodelay(true).unwrap();
            let send = send.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |request| to_h2(send.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(down), service)
                    .await;
            });
        }
    }

    async fn to_h2(
        send: h2::client::SendRequest<Bytes>,
        request: http::Request<hyper::body::Incoming>,
    ) -> Result<http::Response<Full<Bytes>>, h2::Error> {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let mut send = send.ready().await?;
        let head = http::Request::post("https://localhost/echo")
            .body(())
            .unwrap();
        let (response, mut stream) = send.send_request(head, false)?;
        stream.send_data(body, true)?;
        let answer = gather(response.await?.into_body()).await?;
        Ok(http::Response::new(Full::new(answer)))
    }

    /// The whole body of an HTTP/2 stream, its flow-control capacity handed back.
    async fn gather(mut body: h2::RecvStream) -> Result<Bytes, h2::Error> {
        let mut all = bytes::BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk?;
            let _ = body.flow_control().release_capacity(chunk.len());
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }

    /// Serves HTTP/2 over mutual TLS on `listener`; each stream goes to the app at `upstream`
    /// over pooled HTTP/1 connections.
    pub async fn callee(
        listener: tokio::net::TcpListener,
        upstream: SocketAddr,
        tls: tokio_rustls::TlsAcceptor,
    ) {
        let pool = Arc::new(Pool {
            upstream,
            idle: Mutex::default(),
        });
        loop {
            let (down, _) = listener.accept().await.unwrap();
            down.set_nodelay(true).unwrap();
            let (tls, pool) = (tls.clone(), pool.clone());
            tokio::spawn(async move {
                let io = tls.accept(down).await.unwrap();
                let mut connection = h2::server::handshake(io).await.unwrap();
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let pool = pool.clone();
                    tokio::spawn(async move {
                        let body = gather(request.into_body()).await.unwrap();
                        let answer = pool.send(body).await;
                        let head = http::Response::new(());
                        let mut stream = respond.send_response(head, false).unwrap();
                        stream.send_data(answer, true).unwrap();
                    });
                }
            });
        }
    }

    /// Idle HTTP/1 connections to the app.
    struct Pool {
        upstream: SocketAddr,
        idle: Mutex<Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    }

    impl Pool {
        /// POSTs `body` to the app on an idle connection (or a new one); the app's answer.
        async fn send(&self, body: Bytes) -> Bytes {
            let taken = self.idle.lock().unwrap().pop();
            let mut sender = match taken {
                Some(sender) if !sender.is_closed() => sender,
                _ => {
                    let tcp = tokio::net::TcpStream::connect(self.upstream).await.unwrap();
                    tcp.set_nodelay(true).unwrap();
                    let (sender, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                            .await
                            .unwrap();
                    tokio::spawn(connection);
                    sender
                }
            };
            let request = http::Request::post("/echo")
                .header(http::header::HOST, "localhost")
                .body(Full::new(body))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let answer = response.into_body().collect().await.unwrap().to_bytes();
            self.idle.lock().unwrap().push(sender);
            answer
        }
    }
}

/// The relays' mutual TLS, built as daprd builds it: a certificate from sentry's CA code with
/// a SPIFFE id, daprd's key type, and `daprs_api::tls`'s configurations (the callee's SPIFFE
/// id checked by the caller, the caller's chain checked by the callee).
mod tls {
    use std::path::Path;
    use std::time::Duration;

    use daprs_api::spiffe::SpiffeId;
    use daprs_api::tls::{
        PeerMatcher, SpiffeClientVerifier, SpiffeServerVerifier, Svid, SvidResolver, TrustAnchors,
    };
    use daprs_sentry::ca;

    /// The id both relays hold.
    fn id() -> SpiffeId {
        SpiffeId::new("public", "default", "floor").unwrap()
    }

    /// Writes the trust anchors of a new CA, and a certificate and key it issued, into `dir`.
    pub fn make(dir: &Path) {
        let now = time::OffsetDateTime::now_utc();
        let (day, skew) = (Duration::from_secs(86_400), Duration::from_secs(60));
        let options = ca::GenerateOptions {
            trust_domain: "public",
            namespace: "dapr-system",
            algorithm: ca::KeyAlgorithm::Ed25519,
            ttl: day,
            skew,
        };
        let bundle = ca::generate(&options, now).unwrap();
        let authority = ca::Authority::load(&bundle, now).unwrap();
        let (key, _csr) = daprs_api::sentry_client::new_key_and_csr().unwrap();
        let request = ca::IssueRequest {
            id: &id(),
            public_key: &key,
            dns_names: &[],
            ttl: day,
            skew,
        };
        let issued = authority.issue(&request, now).unwrap();
        std::fs::write(dir.join("anchors.pem"), &bundle.trust_anchors).unwrap();
        std::fs::write(dir.join("chain.pem"), &issued.chain_pem).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    /// The acceptor and connector built from what [`make`] wrote into `dir`.
    pub fn configs(dir: &Path) -> (tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector) {
        let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
        let anchors = TrustAnchors::from_pem(&read("anchors.pem")).unwrap();
        let svid =
            SvidResolver::with(Svid::from_pem(&read("chain.pem"), &read("key.pem")).unwrap());
        let clients = SpiffeClientVerifier::new(anchors.clone(), PeerMatcher::Any);
        let server = daprs_api::tls::server_config(svid.clone(), Some(clients)).unwrap();
        let peer = SpiffeServerVerifier::new(anchors, PeerMatcher::Path(id()));
        let client = daprs_api::tls::client_config(peer, Some(svid)).unwrap();
        (
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server)),
            tokio_rustls::TlsConnector::from(std::sync::Arc::new(client)),
        )
    }
}

struct Relay(Child);
impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_relay(kind: &str, upstream: SocketAddr, tls_dir: &std::path::Path) -> (Relay, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["relay", kind, &upstream.to_string()])
        .arg(tls_dir)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    while out.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        line.push(byte[0] as char);
    }
    let port: u16 = line.trim().parse().expect("the relay printed its port");
    (Relay(child), SocketAddr::from(([127, 0, 0, 1], port)))
}

// ---- the echo server and the load generator ------------------------------------------------

async fn echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4 + PAYLOAD_BYTES * 64];
                while let Some(n) = read_frame(&mut s, &mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// The echo app of the `http` relays: axum, answering each request with its body.
async fn http_echo_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|body: bytes::Bytes| async move { body });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// What the load generator speaks: length-prefixed frames, or HTTP/1 POSTs of the frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    Frames,
    Http,
}

/// Sends `frame` over `s` and checks that the answer carries it back.
async fn exchange(s: &mut tokio::net::TcpStream, wire: Wire, frame: &[u8], buf: &mut Vec<u8>) {
    if wire == Wire::Frames {
        s.write_all(frame).await.unwrap();
        buf.resize(frame.len(), 0);
        s.read_exact(buf).await.unwrap();
        assert_eq!(buf, frame, "the reply is what was sent");
        return;
    }
    let head = format!(
        "POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n",
        frame.len()
    );
    s.write_all(&[head.as_bytes(), frame].concat())
        .await
        .unwrap();
    buf.clear();
    let mut chunk = [0u8; 4096];
    let (head_len, body_len) = loop {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])
                .unwrap()
                .to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("a content-length")
                .trim()
                .parse::<usize>()
                .unwrap();
            break (end + 4, length);
        }
    };
    while buf.len() < head_len + body_len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    assert_eq!(&buf[head_len..], frame, "the reply is what was sent");
}

/// Sends `rate` frames/s for `seconds` over `connections` connections to `target`, checks
/// each reply against what was sent, and returns the latencies in µs.
async fn fixed_rate(
    target: SocketAddr,
    wire: Wire,
    rate: u64,
    seconds: f64,
    connections: u64,
) -> Vec<u64> {
    let per_conn = ((rate as f64 * seconds) / connections as f64) as u64;
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let schedule = OpenLoop::new(start, rate, connections, c);
        tasks.push(tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(target).await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut frame = vec![0u8; 4 + PAYLOAD_BYTES];
            frame[..4].copy_from_slice(&(PAYLOAD_BYTES as u32).to_be_bytes());
            let mut reply = Vec::new();
            let mut latencies = Vec::with_capacity(per_conn as usize);
            let mut previous_done = Instant::now();
            for i in 0..per_conn {
                let since = schedule.due(i, previous_done).await;
                frame[4] = (i % 251) as u8;
                frame[5] = c as u8;
                exchange(&mut s, wire, &frame, &mut reply).await;
                previous_done = Instant::now();
                latencies.push((previous_done - since).as_micros() as u64);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    all
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("relay") {
        relay_main(
            &args[2],
            args[3].parse().unwrap(),
            std::path::Path::new(&args[4]),
        );
        return;
    }
    let bench = args.iter().any(|a| a == "--bench");
    let (rate, seconds, connections) = if bench {
        (
            env_or("FLOOR_RATE", 1000),
            env_or("FLOOR_SECONDS", 10) as f64,
            env_or("FLOOR_CONNECTIONS", 16),
        )
    } else {
        (200, 0.25, 4)
    };
    let tls_dir = tempfile::tempdir().unwrap();
    tls::make(tls_dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (echo, http_echo) = (echo_server().await, http_echo_server().await);
        println!(
            "floor: {rate} req/s of {PAYLOAD_BYTES} B over {connections} connections, {seconds} s per path; load average {}",
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
        );
        println!("| relay | direct p50 / p90 / p99 ms | via two relays p50 / p90 / p99 ms | added p50 / p90 / p99 ms | caller relay CPU | callee relay CPU |");
        println!("|---|---|---|---|---|---|");
        for (kind, name) in KINDS {
            let (callee_kind, caller_kind) = match kind {
                "tls" => ("tls-in", "tls-out"),
                "http" => ("http-in", "http-out"),
                other => (other, other),
            };
            let (echo, wire) = if kind == "http" {
                (http_echo, Wire::Http)
            } else {
                (echo, Wire::Frames)
            };
            let (callee, callee_addr) = spawn_relay(callee_kind, echo, tls_dir.path());
            let (caller, caller_addr) = spawn_relay(caller_kind, callee_addr, tls_dir.path());
            // Warm up both paths (connections, the relays' runtimes).
            fixed_rate(echo, wire, rate, seconds.min(1.0), connections).await;
            fixed_rate(caller_addr, wire, rate, seconds.min(1.0), connections).await;
            let direct = fixed_rate(echo, wire, rate, seconds, connections).await;
            let before = (Cpu::of(caller.0.id()), Cpu::of(callee.0.id()));
            let started = Instant::now();
            let relayed = fixed_rate(caller_addr, wire, rate, seconds, connections).await;
            let elapsed = started.elapsed().as_secs_f64();
            let cpu = |before: Cpu, pid: u32| Cpu::of(pid).since(before).describe(elapsed);
            let (d, r) = (&direct, &relayed);
            println!(
                "| {name} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {} | {} |",
                pct(d, 0.5), pct(d, 0.9), pct(d, 0.99),
                pct(r, 0.5), pct(r, 0.9), pct(r, 0.99),
                pct(r, 0.5) - pct(d, 0.5), pct(r, 0.9) - pct(d, 0.9), pct(r, 0.99) - pct(d, 0.99),
                cpu(before.0, caller.0.id()), cpu(before.1, callee.0.id()),
            );
            assert_eq!(relayed.len(), direct.len(), "every request through the relays was answered");
        }
    });
}
