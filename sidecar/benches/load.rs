//! Load benchmark of daprd (`cargo bench -p daprs-sidecar --bench load`): requests/s and
//! p50/p99 latency of state GET and POST through the release `daprd` binary on the in-memory
//! and Redis stores, the same reads and writes sent straight to Redis in the same run, daprd's
//! RSS idle and under load, and the time from process start to `/v1.0/healthz` 204.
//! Needs `redis-server` (scripts/sidecar-deps.sh). Tunables: LOAD_SECONDS, LOAD_CONCURRENCY.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a quick smoke test.
fn smoke() -> bool {
    !std::env::args().any(|a| a == "--bench")
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Starts daprd on `resources`; returns it, its HTTP port and the time to healthz 204.
async fn daprd(resources: &std::path::Path, http: &reqwest::Client) -> (Proc, u16, Duration) {
    let (port, grpc, metrics) = (free_port(), free_port(), free_port());
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .args(["--app-id", "bench", "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--dapr-http-port", &port.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args([
            "--metrics-port",
            &metrics.to_string(),
            "--metrics-listen-address",
            "127.0.0.1",
        ])
        .args(["--log-level", "warn", "--resources-path"])
        .arg(resources)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/v1.0/healthz");
    loop {
        if let Ok(r) = http.get(&url).send().await
            && r.status() == 204
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "daprd did not start"
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    (Proc(child), port, started.elapsed())
}

/// One request's future.
type Op = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

struct Report {
    name: String,
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    max_rss_kib: u64,
}

/// Runs `op` from `concurrency` tasks for `seconds`; samples `pid`'s RSS meanwhile.
async fn load<F, Fut>(name: &str, pid: Option<u32>, op: F) -> Report
where
    F: Fn(u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let seconds = if smoke() {
        0
    } else {
        env_or("LOAD_SECONDS", 5)
    };
    let concurrency = env_or("LOAD_CONCURRENCY", 32);
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (op, stop, counter) = (op.clone(), stop.clone(), counter.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                op(n).await;
                latencies.push(t.elapsed().as_micros() as u64);
            }
            latencies
        }));
    }
    let started = Instant::now();
    let mut max_rss = 0;
    while started.elapsed() < Duration::from_secs(seconds).max(Duration::from_millis(200)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(pid) = pid {
            max_rss = max_rss.max(rss_kib(pid));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Report {
        name: name.to_owned(),
        rps: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_rss_kib: max_rss,
    }
}

fn http_ops(
    http: reqwest::Client,
    port: u16,
) -> (impl Fn(u64) -> Op + Clone, impl Fn(u64) -> Op + Clone) {
    let base = format!("http://127.0.0.1:{port}/v1.0/state/statestore");
    let (h1, b1) = (http.clone(), base.clone());
    let post = move |n: u64| {
        let (h, b) = (h1.clone(), b1.clone());
        Box::pin(async move {
            let body = format!(
                r#"[{{"key":"k{}","value":{{"n":{n},"text":"hello"}}}}]"#,
                n % 1000
            );
            let r = h.post(&b).body(body).send().await.unwrap();
            assert_eq!(r.status(), 204);
        }) as Op
    };
    let get = move |n: u64| {
        let (h, b) = (http.clone(), base.clone());
        Box::pin(async move {
            let r = h.get(format!("{b}/k{}", n % 1000)).send().await.unwrap();
            assert!(r.status() == 200 || r.status() == 204);
            let _ = r.bytes().await.unwrap();
        }) as Op
    };
    (post, get)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let memory = dir.path().join("memory");
    std::fs::create_dir(&memory).unwrap();
    std::fs::write(
        memory.join("s.yaml"),
        "kind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n",
    )
    .unwrap();

    // Start to ready, several times.
    let mut starts = Vec::new();
    let runs = if smoke() { 1 } else { 10 };
    for _ in 0..runs {
        let (proc_, _, t) = daprd(&memory, &http).await;
        starts.push(t);
        drop(proc_);
    }
    starts.sort();
    println!(
        "start to /v1.0/healthz 204 (in-memory store, {runs} runs): min {:?}, median {:?}, max {:?}",
        starts[0],
        starts[starts.len() / 2],
        starts[starts.len() - 1]
    );

    let redis_port = free_port();
    let redis_dir = tempfile::tempdir().unwrap();
    let _redis = Proc(
        Command::new("redis-server")
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(redis_dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is missing: run scripts/sidecar-deps.sh"),
    );
    while std::net::TcpStream::connect(("127.0.0.1", redis_port)).is_err() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let with_redis = dir.path().join("redis");
    std::fs::create_dir(&with_redis).unwrap();
    std::fs::write(
        with_redis.join("s.yaml"),
        format!("kind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  metadata:\n  - {{name: redisHost, value: 'localhost:{redis_port}'}}\n"),
    )
    .unwrap();

    let mut reports = Vec::new();
    for (label, resources) in [("in-memory", &memory), ("redis", &with_redis)] {
        let (proc_, port, _) = daprd(resources, &http).await;
        let pid = proc_.0.id();
        tokio::time::sleep(Duration::from_secs(1)).await;
        println!("daprd RSS idle ({label} store): {} KiB", rss_kib(pid));
        let (post, get) = http_ops(http.clone(), port);
        reports.push(load(&format!("daprd POST state ({label})"), Some(pid), post).await);
        reports.push(load(&format!("daprd GET state ({label})"), Some(pid), get).await);
        drop(proc_);
    }

    let client = redis::Client::open(format!("redis://127.0.0.1:{redis_port}/0")).unwrap();
    let connection = client.get_multiplexed_async_connection().await.unwrap();
    let (c1, c2) = (connection.clone(), connection);
    reports.push(
        load("redis direct HSET data+HINCRBY version", None, move |n| {
            let mut c = c1.clone();
            async move {
                let key = format!("bench||k{}", n % 1000);
                let _: () = redis::pipe()
                    .atomic()
                    .cmd("HSET")
                    .arg(&key)
                    .arg("data")
                    .arg(format!(r#"{{"n":{n},"text":"hello"}}"#))
                    .ignore()
                    .cmd("HINCRBY")
                    .arg(&key)
                    .arg("version")
                    .arg(1)
                    .ignore()
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        })
        .await,
    );
    reports.push(
        load("redis direct HMGET data version", None, move |n| {
            let mut c = c2.clone();
            async move {
                let _: (Option<Vec<u8>>, Option<String>) = redis::cmd("HMGET")
                    .arg(format!("bench||k{}", n % 1000))
                    .arg("data")
                    .arg("version")
                    .query_async(&mut c)
                    .await
                    .unwrap();
            }
        })
        .await,
    );

    println!(
        "\n{:<42} {:>10} {:>9} {:>9} {:>14}",
        "operation", "req/s", "p50 µs", "p99 µs", "max RSS KiB"
    );
    for r in reports {
        let rss = if r.max_rss_kib > 0 {
            r.max_rss_kib.to_string()
        } else {
            "-".into()
        };
        println!(
            "{:<42} {:>10.0} {:>9} {:>9} {:>14}",
            r.name, r.rps, r.p50_us, r.p99_us, rss
        );
    }
}
