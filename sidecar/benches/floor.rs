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
//! - `threads`: blocking std sockets, one thread per connection, no event loop at all.
//!
//! A sidecar cannot use less CPU per request than these relays, nor add less latency: the
//! numbers are a floor for `invoke`'s targets on the machine that runs them.
//! Tunables: FLOOR_SECONDS (default 10), FLOOR_RATE (1000), FLOOR_CONNECTIONS (16).
//! Without `--bench` (as `cargo test --all-targets` runs it) it is a short smoke run that checks
//! every reply.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::{OpenLoop, cpu_ticks, env_or, pct};

const PAYLOAD_BYTES: usize = 1024;
const KINDS: [&str; 3] = ["tokio-mt", "tokio-ct", "threads"];

// ---- the relay process ------------------------------------------------------------------

/// `floor relay <kind> <upstream>`: prints its port, then relays until killed.
fn relay_main(kind: &str, upstream: SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    match kind {
        "threads" => loop {
            let (down, _) = listener.accept().unwrap();
            std::thread::spawn(move || relay_blocking(down, upstream));
        },
        "tokio-ct" | "tokio-mt" => {
            let runtime = if kind == "tokio-ct" {
                tokio::runtime::Builder::new_current_thread()
            } else {
                tokio::runtime::Builder::new_multi_thread()
            }
            .enable_all()
            .build()
            .unwrap();
            runtime.block_on(async move {
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let (down, _) = listener.accept().await.unwrap();
                    tokio::spawn(relay_async(down, upstream));
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

async fn read_frame(s: &mut tokio::net::TcpStream, buf: &mut [u8]) -> Option<usize> {
    s.read_exact(&mut buf[..4]).await.ok()?;
    let len = 4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    s.read_exact(&mut buf[4..len]).await.ok()?;
    Some(len)
}

async fn relay_async(mut down: tokio::net::TcpStream, upstream: SocketAddr) {
    let mut up = tokio::net::TcpStream::connect(upstream).await.unwrap();
    down.set_nodelay(true).unwrap();
    up.set_nodelay(true).unwrap();
    let mut buf = vec![0u8; 4 + PAYLOAD_BYTES * 64];
    while let Some(n) = read_frame(&mut down, &mut buf).await {
        if up.write_all(&buf[..n]).await.is_err() {
            return;
        }
        let Some(n) = read_frame(&mut up, &mut buf).await else {
            return;
        };
        if down.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

struct Relay(Child);
impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_relay(kind: &str, upstream: SocketAddr) -> (Relay, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["relay", kind, &upstream.to_string()])
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

/// Sends `rate` frames/s for `seconds` over `connections` connections to `target`, checks
/// each reply against what was sent, and returns the latencies in µs.
async fn fixed_rate(target: SocketAddr, rate: u64, seconds: f64, connections: u64) -> Vec<u64> {
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
            let mut reply = vec![0u8; 4 + PAYLOAD_BYTES];
            let mut latencies = Vec::with_capacity(per_conn as usize);
            let mut previous_done = Instant::now();
            for i in 0..per_conn {
                let since = schedule.due(i, previous_done).await;
                frame[4] = (i % 251) as u8;
                frame[5] = c as u8;
                s.write_all(&frame).await.unwrap();
                s.read_exact(&mut reply).await.unwrap();
                assert_eq!(reply, frame, "the reply is what was sent");
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
        relay_main(&args[2], args[3].parse().unwrap());
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let echo = echo_server().await;
        println!(
            "floor: {rate} req/s of {PAYLOAD_BYTES} B over {connections} connections, {seconds} s per path; load average {}",
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
        );
        println!("| relay | direct p50 / p90 / p99 ms | via two relays p50 / p90 / p99 ms | added p50 / p90 / p99 ms | caller relay CPU | callee relay CPU |");
        println!("|---|---|---|---|---|---|");
        for kind in KINDS {
            let (callee, callee_addr) = spawn_relay(kind, echo);
            let (caller, caller_addr) = spawn_relay(kind, callee_addr);
            // Warm up both paths (connections, the relays' runtimes).
            fixed_rate(echo, rate, seconds.min(1.0), connections).await;
            fixed_rate(caller_addr, rate, seconds.min(1.0), connections).await;
            let direct = fixed_rate(echo, rate, seconds, connections).await;
            let ticks = (cpu_ticks(caller.0.id()), cpu_ticks(callee.0.id()));
            let started = Instant::now();
            let relayed = fixed_rate(caller_addr, rate, seconds, connections).await;
            let elapsed = started.elapsed().as_secs_f64();
            let mcpu = |before: u64, pid: u32| (cpu_ticks(pid) - before) as f64 * 10.0 / elapsed;
            let (d, r) = (&direct, &relayed);
            println!(
                "| {kind} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {:.0} mCPU | {:.0} mCPU |",
                pct(d, 0.5), pct(d, 0.9), pct(d, 0.99),
                pct(r, 0.5), pct(r, 0.9), pct(r, 0.99),
                pct(r, 0.5) - pct(d, 0.5), pct(r, 0.9) - pct(d, 0.9), pct(r, 0.99) - pct(d, 0.99),
                mcpu(ticks.0, caller.0.id()), mcpu(ticks.1, callee.0.id()),
            );
            assert_eq!(relayed.len(), direct.len(), "every request through the relays was answered");
        }
    });
}
