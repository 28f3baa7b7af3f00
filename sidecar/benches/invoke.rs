//! Service-invocation benchmark (`cargo bench -p daprs-sidecar --bench invoke`), Dapr's
//! perf-test shape: a fixed 1,000 requests/s of 1 KB POSTs over 16 connections, open loop
//! (a request delayed by the previous one on its connection counts from its scheduled time,
//! so a stall is not hidden; the others from when they are sent, so the timer's up-to-1 ms
//! lateness in waking the load generator is not counted), first
//! straight to the app, then app -> daprd -> mTLS -> daprd -> app, in the same run. Reports
//! p50/p90/p99 of both and the added latency, plus CPU (mCPU over the run, split into user
//! and system time) and RSS of each
//! sidecar (sampled every 100 ms during the run: mean and maximum; and the process's peak),
//! and the machine's load average before and after (other work on the machine skews the
//! numbers). sentry runs in-process; the sidecars are the release `daprd` binary.
//! Tunables: INVOKE_SECONDS (default 20), INVOKE_RATE (1000), INVOKE_CONNECTIONS (16),
//! INVOKE_DAPRD, another daprd binary to measure (e.g. a size-optimised or static build), and
//! INVOKE_DAPR_DAPRD, Dapr's own daprd (as `scripts/dapr-daprd.sh` builds it) to measure in the
//! same shape for comparison: started with Dapr's flags, finding its peer through mDNS (Dapr's
//! self-hosted default), with the same sentry.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Cpu, OpenLoop, env_or, pct};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Samples VmRSS (KiB) of `pids` every 100 ms until `stop` is set; per pid (mean, max).
fn sample_rss(
    pids: Vec<u32>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<(u64, u64)>> {
    std::thread::spawn(move || {
        let mut sums = vec![(0u64, 0u64, 0u64); pids.len()]; // (sum, count, max)
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            for (pid, acc) in pids.iter().zip(sums.iter_mut()) {
                let rss = status_kib(*pid, "VmRSS:");
                acc.0 += rss;
                acc.1 += 1;
                acc.2 = acc.2.max(rss);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        sums.into_iter()
            .map(|(sum, n, max)| (sum / n.max(1), max))
            .collect()
    })
}

async fn echo_app() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(|body: axum::body::Bytes| async move { body });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// The flags both implementations share: ports on loopback, mTLS with `sentry`, quiet logs.
fn sidecar_command(
    binary: &std::ffi::OsStr,
    app_id: &str,
    app_port: u16,
    http: u16,
    sentry: &support::Sentry,
) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--app-id", app_id, "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--app-port", &app_port.to_string()])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &free_port().to_string()])
        .args(["--metrics-port", &free_port().to_string()])
        .args(["--dapr-internal-grpc-port", &free_port().to_string()])
        .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
        .args(["--enable-mtls", "--sentry-address", &sentry.address()])
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Dapr's daprd (`INVOKE_DAPR_DAPRD`) with Dapr's flags: no components, no placement or
/// scheduler, mDNS name resolution, the trust anchors in `DAPR_TRUST_ANCHORS`.
fn dapr_daprd(
    binary: &std::ffi::OsStr,
    app_id: &str,
    app_port: u16,
    sentry: &support::Sentry,
    dir: &std::path::Path,
) -> (Proc, u16) {
    let http = free_port();
    let resources = dir.join(format!("{app_id}-resources"));
    std::fs::create_dir_all(&resources).unwrap();
    let child = sidecar_command(binary, app_id, app_port, http, sentry)
        .args(["--placement-host-address", ""])
        .args(["--scheduler-host-address", ""])
        .arg("--resources-path")
        .arg(&resources)
        .env("DAPR_TRUST_ANCHORS", sentry.anchors_pem())
        .env("DAPR_HOST_IP", "127.0.0.1")
        .spawn()
        .unwrap();
    (Proc(child), http)
}

/// Our daprd (or `INVOKE_DAPRD`, or Dapr's with `INVOKE_DAPR_DAPRD`), found by its peer through
/// the registry directory `registry`.
fn daprd(
    app_id: &str,
    app_port: u16,
    sentry: &support::Sentry,
    registry: &std::path::Path,
) -> (Proc, u16) {
    if let Some(binary) = std::env::var_os("INVOKE_DAPR_DAPRD") {
        return dapr_daprd(&binary, app_id, app_port, sentry, registry);
    }
    let http = free_port();
    let binary =
        std::env::var_os("INVOKE_DAPRD").unwrap_or_else(|| env!("CARGO_BIN_EXE_daprd").into());
    let child = sidecar_command(&binary, app_id, app_port, http, sentry)
        .args(["--metrics-listen-address", "127.0.0.1"])
        .arg("--registry-dir")
        .arg(registry)
        .env("DAPR_TRUST_ANCHORS_FILE", sentry.anchors_file())
        .env("DAPR_SENTRY_TOKEN_FILE", "/nonexistent")
        .spawn()
        .unwrap();
    (Proc(child), http)
}

/// A daprd from [`daprd`], once `/v1.0/healthz` answers 204. `free_port` only finds ports that
/// were free a moment ago: a daprd that exits before it is ready (its output is not kept, but
/// a port taken meanwhile is the one way that happens here) is started again on new ports.
async fn ready_daprd(
    app_id: &str,
    app_port: u16,
    sentry: &support::Sentry,
    registry: &std::path::Path,
) -> (Proc, u16) {
    for _ in 0..3 {
        let (mut proc, http) = daprd(app_id, app_port, sentry, registry);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if reqwest::get(format!("http://127.0.0.1:{http}/v1.0/healthz"))
                .await
                .is_ok_and(|r| r.status() == 204)
            {
                return (proc, http);
            }
            if proc.0.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "daprd {app_id} did not become ready within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("daprd {app_id} exited before it was ready three times in a row (ports taken?)");
}

struct Run {
    latencies_us: Vec<u64>,
    errors: u64,
    elapsed: Duration,
}

/// Sends `rate` req/s for `seconds` over `connections` connections to `url`.
async fn fixed_rate(url: &str, rate: u64, seconds: u64, connections: u64) -> Run {
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    let total_per_conn = rate * seconds / connections;
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .tcp_nodelay(true)
            .build()
            .unwrap();
        let url = url.to_owned();
        let body = body.clone();
        let schedule = OpenLoop::new(start, rate, connections, c);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total_per_conn as usize);
            let mut errors = 0;
            let mut previous_done = Instant::now();
            for i in 0..total_per_conn {
                let since = schedule.due(i, previous_done).await;
                let ok = client
                    .post(&url)
                    .body(body.clone())
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200);
                match ok {
                    Some(r) => {
                        let _ = r.bytes().await;
                        latencies.push(since.elapsed().as_micros() as u64);
                    }
                    None => errors += 1,
                }
                previous_done = Instant::now();
            }
            (latencies, errors)
        }));
    }
    let mut run = Run {
        latencies_us: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let (l, e) = t.await.unwrap();
        run.latencies_us.extend(l);
        run.errors += e;
    }
    run.elapsed = start.elapsed();
    run.latencies_us.sort_unstable();
    run
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

async fn run() {
    let (seconds, rate, connections) = if smoke() {
        (1, 100, 4)
    } else {
        (
            env_or("INVOKE_SECONDS", 20),
            env_or("INVOKE_RATE", 1000),
            env_or("INVOKE_CONNECTIONS", 16),
        )
    };
    let mut sentry = support::Sentry::start(&[]).await;
    let registry = tempfile::tempdir().unwrap();
    let app = echo_app().await;
    let (caller, caller_http) = ready_daprd("bench-caller", app, &sentry, registry.path()).await;
    let (callee, _) = ready_daprd("bench-callee", app, &sentry, registry.path()).await;
    let via = format!("http://127.0.0.1:{caller_http}/v1.0/invoke/bench-callee/method/echo");
    let direct = format!("http://127.0.0.1:{app}/echo");
    // Warm-up: connections and pools.
    let _ = fixed_rate(&via, 200, 1, connections).await;
    let _ = fixed_rate(&direct, 200, 1, connections).await;

    let load_before = loadavg();
    let own0 = Cpu::of(std::process::id());
    let direct_run = fixed_rate(&direct, rate, seconds, connections).await;
    let own = Cpu::of(std::process::id()).since(own0);
    let (c0, s0) = (Cpu::of(caller.0.id()), Cpu::of(callee.0.id()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_rss(vec![caller.0.id(), callee.0.id()], stop.clone());
    let via_run = fixed_rate(&via, rate, seconds, connections).await;
    let (c1, s1) = (Cpu::of(caller.0.id()), Cpu::of(callee.0.id()));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let rss = sampler.join().unwrap();
    let load_after = loadavg();
    let rss_split: Vec<(u64, u64)> = [caller.0.id(), callee.0.id()]
        .iter()
        .map(|pid| (status_kib(*pid, "RssAnon:"), status_kib(*pid, "RssFile:")))
        .collect();
    let secs = via_run.elapsed.as_secs_f64();

    println!(
        "service invocation, {rate} req/s, 1 KB POST, {connections} connections, {seconds} s each, open loop"
    );
    println!("load average (1/5/15 min): {load_before} before, {load_after} after");
    for variable in ["INVOKE_DAPRD", "INVOKE_DAPR_DAPRD"] {
        if let Some(binary) = std::env::var_os(variable) {
            println!(
                "daprd: {} ({variable})",
                std::path::Path::new(&binary).display()
            );
        }
    }
    println!("| path | requests | errors | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for (name, r) in [
        ("direct to the app", &direct_run),
        ("through two daprd (mTLS)", &via_run),
    ] {
        println!(
            "| {name} | {} | {} | {:.3} | {:.3} | {:.3} |",
            r.latencies_us.len(),
            r.errors,
            pct(&r.latencies_us, 0.5),
            pct(&r.latencies_us, 0.9),
            pct(&r.latencies_us, 0.99)
        );
    }
    println!(
        "| added by the sidecars | | | {:.3} | {:.3} | {:.3} |",
        pct(&via_run.latencies_us, 0.5) - pct(&direct_run.latencies_us, 0.5),
        pct(&via_run.latencies_us, 0.9) - pct(&direct_run.latencies_us, 0.9),
        pct(&via_run.latencies_us, 0.99) - pct(&direct_run.latencies_us, 0.99)
    );
    for (((name, p, cpu), (rss_mean, rss_max)), (anon, file)) in [
        ("caller", &caller, c1.since(c0)),
        ("callee", &callee, s1.since(s0)),
    ]
    .into_iter()
    .zip(rss)
    .zip(rss_split)
    {
        println!(
            "{name} daprd: CPU {}; RSS during the run mean {rss_mean} KiB, max {rss_max} KiB (process peak {} KiB; at the end {anon} KiB anonymous, {file} KiB file-backed)",
            cpu.describe(secs),
            status_kib(p.0.id(), "VmHWM:")
        );
    }
    println!(
        "for scale: this process (load generator and echo app, plain HTTP) used {:.0} mCPU during the direct run",
        own.mcpu(direct_run.elapsed.as_secs_f64())
    );
    assert!(
        !via_run.latencies_us.is_empty() && !direct_run.latencies_us.is_empty(),
        "no request succeeded"
    );
    drop((caller, callee));
    sentry.stop().await;
}
