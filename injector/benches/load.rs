//! Load test of `POST /mutate` over TLS: an in-process injector (certificate files, a realistic
//! Deployment pod), driven at a fixed request rate over keep-alive HTTP/1.1 connections.
//!
//! ```sh
//! cargo bench -p daprs-injector --bench load -- --rate 500 --seconds 30 --connections 4
//! ```
//!
//! Latency is measured from each request's *scheduled* start (open loop, so a slow response
//! delays the ones behind it and shows up, no coordinated omission; this includes tokio's 1 ms
//! timer granularity in dispatching) and from the moment it is sent (the round trip). `--rate 0`
//! runs closed loop for maximum throughput. `mutate()` and the router without TLS are measured
//! first, as the server-side cost.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use daprs_injector::admission::AdmissionReview;
use daprs_injector::config::InjectorConfig;
use daprs_injector::mutate::{Components, Context, Decision, mutate};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;

const REVIEW: &str = include_str!("../tests/fixtures/review-v1.json");

#[derive(Debug, Parser)]
struct Opts {
    /// Requests per second (0: as fast as the connections allow).
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Length of the measured run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Keep-alive TLS connections (as the API server keeps a few open to a webhook).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>, elapsed: Duration) {
    samples.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name}: n={} throughput={:.0}/s p50={:.3}ms p90={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
        samples.len(),
        samples.len() as f64 / elapsed.as_secs_f64(),
        ms(percentile(&samples, 0.50)),
        ms(percentile(&samples, 0.90)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 0.999)),
        ms(*samples.last().unwrap_or(&Duration::ZERO)),
    );
}

fn pure_mutate() {
    let review: AdmissionReview = serde_json::from_str(REVIEW).unwrap();
    let request = review.request.unwrap();
    let config = InjectorConfig::for_tests();
    let anchors = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let ctx = Context {
        trust_anchors: Some(anchors),
        mtls_enabled: true,
        components: Components::NotListed,
    };
    let mut samples = Vec::with_capacity(20_000);
    let start = Instant::now();
    for _ in 0..20_000 {
        let t = Instant::now();
        let decision = mutate(&request, &config, ctx);
        samples.push(t.elapsed());
        assert!(matches!(decision, Decision::Inject { .. }));
    }
    report("mutate() alone", samples, start.elapsed());
}

/// The server's own work per request without TLS or sockets: body parsing, `mutate()`,
/// response encoding, logging and metrics (the router through `oneshot`).
async fn router_alone() {
    use tower::ServiceExt;
    let live = daprs_injector::router::Live::default();
    live.set_trust_anchors("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let app = daprs_injector::router::router(daprs_injector::router::AppState {
        config: Arc::new(InjectorConfig::for_tests()),
        live: Arc::new(live),
        metrics: Arc::new(daprs_injector::metrics::Metrics::default()),
        client: None,
    });
    let mut samples = Vec::with_capacity(20_000);
    let start = Instant::now();
    for _ in 0..20_000 {
        let request = axum::http::Request::post("/mutate")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(REVIEW))
            .unwrap();
        let t = Instant::now();
        let response = app.clone().oneshot(request).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        samples.push(t.elapsed());
        assert!(!body.is_empty());
    }
    report(
        "router alone (parse, mutate, encode; no TLS)",
        samples,
        start.elapsed(),
    );
}

async fn connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::main]
async fn main() {
    let opts = Opts::parse();
    daprs_api::tls::install_default_provider();
    pure_mutate();
    router_alone().await;

    // PKI and an injector serving from files.
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(path("tls.key"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(path("ca.crt"), ca.pem()).unwrap();
    let args = daprs_injector::config::Args::parse_from([
        "injector",
        "--mode",
        "standalone",
        "--port",
        "0",
        "--healthz-port",
        "0",
        "--metrics-port",
        "0",
        "--listen-address",
        "127.0.0.1",
        "--healthz-listen-address",
        "127.0.0.1",
        "--metrics-listen-address",
        "127.0.0.1",
        "--sidecar-image",
        "daprio/daprd:1.16.0",
        "--namespace",
        "dapr-system",
        "--kube-cluster-domain",
        "cluster.local",
        "--trust-anchors-file",
        &path("ca.crt"),
        "--tls-cert-file",
        &path("tls.crt"),
        "--tls-key-file",
        &path("tls.key"),
        "--log-level",
        "warn",
    ]);
    let running = daprs_injector::start(args).await.unwrap();
    while running.live.trust_anchors().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(daprs_api::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let body = Bytes::from_static(REVIEW.as_bytes());
    let request = move || {
        hyper::Request::post("/mutate")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(body.clone()))
            .unwrap()
    };

    // Warm-up, then the measured run.
    let mut warm = connect(running.webhook_addr, client.clone()).await;
    for _ in 0..500 {
        warm.ready().await.unwrap();
        let response = warm.send_request(request()).await.unwrap();
        response.into_body().collect().await.unwrap();
    }

    let total = if opts.rate == 0 {
        u64::MAX
    } else {
        opts.rate * opts.seconds
    };
    let deadline = Instant::now() + Duration::from_secs(opts.seconds);
    let (tx, rx) = async_channel(opts.connections);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..opts.connections {
        let mut sender = connect(running.webhook_addr, client.clone()).await;
        let rx = rx.clone();
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut service = Vec::new();
            let mut errors = 0u64;
            while let Ok(scheduled) = rx.recv().await {
                let scheduled: Instant = scheduled;
                if sender.ready().await.is_err() {
                    errors += 1;
                    continue;
                }
                let sent = Instant::now();
                match sender.send_request(request()).await {
                    Ok(response) if response.status() == 200 => {
                        response.into_body().collect().await.unwrap();
                        samples.push(scheduled.elapsed());
                        service.push(sent.elapsed());
                    }
                    _ => errors += 1,
                }
            }
            (samples, service, errors)
        }));
    }
    drop(rx);
    let interval = if opts.rate == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(1.0 / opts.rate as f64)
    };
    for i in 0..total {
        let scheduled = if opts.rate == 0 {
            Instant::now()
        } else {
            start + interval * u32::try_from(i).unwrap_or(u32::MAX)
        };
        if scheduled > deadline {
            break;
        }
        if let Some(wait) = scheduled.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        if tx.send(scheduled).await.is_err() {
            break;
        }
    }
    drop(tx);
    let mut samples = Vec::new();
    let mut service = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (s, v, e) = worker.await.unwrap();
        samples.extend(s);
        service.extend(v);
        errors += e;
    }
    let elapsed = start.elapsed();
    let label = if opts.rate == 0 {
        format!(
            "POST /mutate over TLS, closed loop, {} connections",
            opts.connections
        )
    } else {
        format!(
            "POST /mutate over TLS at {}/s, {} connections",
            opts.rate, opts.connections
        )
    };
    // Closed loop has no schedule: the queue is always full, so only the round trip means anything.
    if opts.rate > 0 {
        report(&format!("{label}, from scheduled start"), samples, elapsed);
    }
    report(
        &format!("{label}, from send (round trip)"),
        service,
        elapsed,
    );
    println!("errors: {errors}");
    running.stop().await;
}

/// A multi-consumer queue of scheduled start times (bounded, so a stalled server shows up as
/// growing latency rather than growing memory).
fn async_channel(workers: usize) -> (Sender, Receiver) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Instant>(workers * 1024);
    (Sender(tx), Receiver(Arc::new(tokio::sync::Mutex::new(rx))))
}

struct Sender(tokio::sync::mpsc::Sender<Instant>);

impl Sender {
    async fn send(&self, at: Instant) -> Result<(), ()> {
        self.0.send(at).await.map_err(|_| ())
    }
}

#[derive(Clone)]
struct Receiver(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Instant>>>);

impl Receiver {
    async fn recv(&self) -> Result<Instant, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}
