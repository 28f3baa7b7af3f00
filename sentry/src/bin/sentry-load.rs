//! `sentry-load`: drives `SignCertificate` over TLS with N concurrent clients at a fixed total
//! rate and reports throughput and latency (p50/p90/p99/max).
//!
//! Latency is measured from each request's *scheduled* send time, so a slow server cannot hide
//! queueing delay (no coordinated omission). Bounded by `--duration`; loopback only in practice.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use daprs_api::proto::sentry::{SignCertificateRequest, ca_client::CaClient};
use daprs_api::sentry_client;
use daprs_api::tls::TrustAnchors;

/// Load-test a sentry.
#[derive(Debug, clap::Parser)]
#[command(name = "sentry-load", version)]
struct Args {
    /// sentry's gRPC address (host:port).
    #[arg(long, default_value = "127.0.0.1:50001")]
    sentry_address: String,
    /// PEM file with the trust anchors (sentry's `ca.crt`).
    #[arg(long)]
    trust_anchors: PathBuf,
    /// sentry's SPIFFE id.
    #[arg(long, default_value = "spiffe://localhost/ns/default/dapr-sentry")]
    sentry_id: String,
    /// Concurrent clients, each with its own TLS connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Total requests per second across all clients (0: as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Requests sent before measuring, per client.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    daprs_api::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    daprs_api::tls::install_default_provider();
    let args: Args = daprs_api::cli::parse_or_exit();
    let anchors = TrustAnchors::from_pem(
        &std::fs::read(&args.trust_anchors)
            .with_context(|| format!("failed to read {}", args.trust_anchors.display()))?,
    )?;
    let sentry_id: daprs_api::SpiffeId = args.sentry_id.parse()?;
    let interval =
        (args.rate > 0).then(|| Duration::from_secs_f64(args.clients as f64 / args.rate as f64));

    let mut tasks = Vec::new();
    let start = Instant::now() + Duration::from_millis(500);
    for n in 0..args.clients {
        let channel = sentry_client::sentry_channel(
            &args.sentry_address,
            anchors.clone(),
            sentry_id.clone(),
        )?;
        let (_, csr) = sentry_client::new_key_and_csr()?;
        let request = SignCertificateRequest {
            id: format!("load-{n}"),
            namespace: "default".into(),
            certificate_signing_request: csr.into_bytes(),
            ..Default::default()
        };
        let (duration, warmup, clients) = (args.duration, args.warmup, args.clients);
        tasks.push(tokio::spawn(async move {
            let mut client = CaClient::new(channel);
            for _ in 0..warmup {
                client.sign_certificate(request.clone()).await?;
            }
            // Spread clients over one interval so their sends interleave.
            let offset = interval
                .map(|i| i.mul_f64(n as f64 / clients as f64))
                .unwrap_or_default();
            let begin = tokio::time::Instant::from_std(start) + offset;
            tokio::time::sleep_until(begin).await;
            let (mut latencies, mut errors) = (Vec::new(), 0usize);
            let mut scheduled = begin;
            while scheduled.duration_since(begin) < duration {
                if interval.is_some() {
                    tokio::time::sleep_until(scheduled).await;
                } else {
                    scheduled = tokio::time::Instant::now();
                }
                match client.sign_certificate(request.clone()).await {
                    Ok(_) => latencies.push(scheduled.elapsed()),
                    Err(_) => errors += 1,
                }
                scheduled += interval.unwrap_or_default();
            }
            Ok::<_, tonic::Status>((latencies, errors))
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await?.context("a client failed during warm-up")?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort();
    let total = latencies.len();
    anyhow::ensure!(total > 0, "no request succeeded");
    let pct = |p: f64| latencies[((total as f64 * p).ceil() as usize).clamp(1, total) - 1];
    let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1000.0);
    println!(
        "sentry-load: {} clients, target {} req/s, {:?}",
        args.clients,
        if args.rate == 0 {
            "max".to_string()
        } else {
            args.rate.to_string()
        },
        args.duration
    );
    println!("  requests:   {total} ok, {errors} failed");
    println!(
        "  throughput: {:.0} req/s",
        total as f64 / args.duration.as_secs_f64()
    );
    println!(
        "  latency:    p50 {}  p90 {}  p99 {}  max {}",
        ms(pct(0.50)),
        ms(pct(0.90)),
        ms(pct(0.99)),
        ms(latencies[total - 1])
    );
    Ok(())
}
