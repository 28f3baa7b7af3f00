//! Load tool: 1,000 concurrent `ComponentUpdate` streams against the `operator` binary (a
//! separate process, so its memory is its own) on a real API server, and the time from
//! applying a changed Component to the last stream receiving it.
//!
//! ```sh
//! export DAPRS_K8S_BIN=$(scripts/k8s-binaries.sh | tail -1)
//! cargo bench -p daprs-operator --bench streams            # STREAMS=1000 ROUNDS=20 by default
//! ```
//!
//! `DAPRS_OPERATOR_WRAPPER="heaptrack -o /tmp/opheap"` runs the operator under a profiler (the
//! RSS figures are then the wrapper's unless it execs, as `env` does); `DAPRS_OPERATOR_BIN`
//! runs another build of the operator. The RSS lines come from `/proc/<pid>/smaps_rollup`
//! (anonymous = heap and stacks, file = the binary's and libraries' pages) after each quarter
//! of the streams is open, and after the rounds; `HOLD=<seconds>` pauses with all streams
//! open, to inspect the operator from outside.
//!
//! Each round changes one metadata value of a Component all streams may see, once with a
//! server-side apply through the API (the write's own latency included) and once with
//! `kubectl apply` (process start included), and waits until every stream has the new value.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark fails loudly

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daprs_api::SpiffeId;
use daprs_api::proto::operator::ComponentUpdateRequest;
use daprs_api::proto::operator::operator_client::OperatorClient;
use daprs_api::sentry_client::{self, SvidRequest};
use daprs_api::tls::{self, PeerMatcher, SpiffeServerVerifier, SvidResolver, TrustAnchors};
use daprs_e2e::{Cluster, TempNs};
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tokio::sync::mpsc;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The operator's resident memory from `/proc/<pid>/smaps_rollup`, in KiB: (total, anonymous,
/// file-backed). RSS counts touched pages, so this is what the process really holds.
fn smaps_kib(pid: u32) -> (u64, u64, u64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (rss, anon) = (field("Rss:"), field("Anonymous:"));
    (rss, anon, rss.saturating_sub(anon))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn component(value: &str) -> serde_json::Value {
    json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": "statestore"},
        "spec": {"type": "state.redis", "version": "v1", "metadata": [
            {"name": "redisHost", "value": "redis:6379"},
            {"name": "keyPrefix", "value": value}
        ]}
    })
}

#[tokio::main]
async fn main() {
    let streams = env_or("STREAMS", 1000);
    let rounds = env_or("ROUNDS", 20);
    tls::install_default_provider();
    let cluster = Cluster::start().await.unwrap();
    let crds = repo().join("crds");
    run(cluster
        .kubectl()
        .args(["apply", "--server-side", "-f", crds.to_str().unwrap()]));
    run(cluster.kubectl().args([
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=dapr",
    ]));
    let cp = TempNs::create(cluster.connection()).await.unwrap();
    let apps = TempNs::create(cluster.connection()).await.unwrap();
    let rbac = std::fs::read_to_string(repo().join("e2e/fixtures/operator-rbac.yaml"))
        .unwrap()
        .replace("CLUSTER_ROLE", "daprs-operator-bench")
        .replace(
            "COMPONENT_WEBHOOK",
            daprs_operator::component_webhook::DEFAULT_NAME,
        )
        .replace("NAMESPACE", cp.name());
    let mut apply = cluster.kubectl();
    apply
        .args(["apply", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut child = apply.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), rbac.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());

    // sentry, in-process and standalone, in the operator's namespace.
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let sentry = daprs_e2e::start_sentry(
        cp.name(),
        None,
        &["--issuer-credentials", creds.to_str().unwrap()],
    )
    .await
    .unwrap();
    let anchors_file = creds.join("ca.crt");
    for _ in 0..200 {
        if anchors_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cp.accepts(&json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "daprsystem"},
        "spec": {"mtls": {"enabled": true, "controlPlaneTrustDomain": "localhost", "sentryAddress": sentry.grpc_addr.to_string()}}
    }))
    .await;
    apps.accepts(&component("v0")).await;

    // The operator binary, as its ServiceAccount.
    let token = cluster
        .connection()
        .service_account_token(cp.name(), "dapr-operator", &[])
        .await
        .unwrap();
    let kubeconfig = dir.path().join("operator.kubeconfig");
    cluster
        .connection()
        .write_kubeconfig_with_token(&token, &kubeconfig)
        .unwrap();
    let (grpc_port, healthz_port) = (free_port(), free_port());
    // DAPRS_OPERATOR_WRAPPER="heaptrack -o /tmp/operator" runs the operator under a profiler
    // (the RSS figures are then the wrapper's, not the operator's).
    // DAPRS_OPERATOR_BIN=<path> measures another build of the operator (another profile or
    // target) instead of the one cargo built for this bench.
    let binary = std::env::var("DAPRS_OPERATOR_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_operator").to_owned());
    let wrapper = std::env::var("DAPRS_OPERATOR_WRAPPER").unwrap_or_default();
    let mut wrapper = wrapper.split_whitespace();
    let mut command = match wrapper.next() {
        Some(program) => {
            let mut command = std::process::Command::new(program);
            command.args(wrapper).arg(&binary);
            command
        }
        None => std::process::Command::new(&binary),
    };
    // Its own process group, so that a wrapper's child is stopped with it.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut operator = command
        .args([
            "--listen-address",
            "127.0.0.1",
            "--port",
            &grpc_port.to_string(),
            "--healthz-listen-address",
            "127.0.0.1",
            "--healthz-port",
            &healthz_port.to_string(),
            "--enable-metrics=false",
            "--trust-anchors-file",
            anchors_file.to_str().unwrap(),
            "--watch-namespace",
            apps.name(),
            "--disable-crd-apply",
            "--log-level",
            "warn",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env("NAMESPACE", cp.name())
        .env("POD_NAME", "operator-bench")
        .env("ENABLE_WEBHOOKS", "false")
        .spawn()
        .unwrap();
    let pid = operator.id();
    let health = format!("http://127.0.0.1:{healthz_port}/healthz");
    let started = Instant::now();
    while !reqwest::get(&health).await.is_ok_and(|r| r.status() == 200) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the operator did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle = rss_kib(pid);
    let mut steps = vec![(0, smaps_kib(pid))];

    // 10 app ids, `streams` connections (one per simulated sidecar), one stream each.
    let anchors = TrustAnchors::from_pem(&std::fs::read(&anchors_file).unwrap()).unwrap();
    let sentry_id = SpiffeId::new("localhost", cp.name(), "dapr-sentry").unwrap();
    let operator_id = SpiffeId::new("localhost", cp.name(), "dapr-operator").unwrap();
    let mut svids = Vec::new();
    for i in 0..10 {
        let channel = sentry_client::sentry_channel(
            &sentry.grpc_addr.to_string(),
            anchors.clone(),
            sentry_id.clone(),
        )
        .unwrap();
        let request = SvidRequest {
            app_id: format!("app-{i}"),
            namespace: apps.name().into(),
            ..SvidRequest::default()
        };
        svids.push(
            sentry_client::request_svid(channel, &request)
                .await
                .unwrap()
                .svid,
        );
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let connect_started = Instant::now();
    let mut opened = Vec::new();
    for i in 0..streams {
        // RSS at each quarter of the streams, after they are all open.
        if i > 0 && i % (streams / 4).max(1) == 0 {
            for handle in opened.drain(..) {
                let handle: tokio::task::JoinHandle<()> = handle;
                handle.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            steps.push((i, smaps_kib(pid)));
        }
        let verifier =
            SpiffeServerVerifier::new(anchors.clone(), PeerMatcher::Exact(operator_id.clone()));
        let config =
            tls::client_config(verifier, Some(SvidResolver::with(svids[i % 10].clone()))).unwrap();
        let channel =
            sentry_client::tls_channel(&format!("127.0.0.1:{grpc_port}"), config).unwrap();
        let ns = apps.name().to_owned();
        let tx = tx.clone();
        opened.push(tokio::spawn(async move {
            let mut client = OperatorClient::new(channel);
            let mut stream = client
                .component_update(ComponentUpdateRequest { namespace: ns })
                .await
                .unwrap()
                .into_inner();
            tokio::spawn(async move {
                while let Ok(Some(event)) = stream.message().await {
                    let value: serde_json::Value =
                        serde_json::from_slice(&event.component).unwrap();
                    let prefix = value["spec"]["metadata"][1]["value"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = tx.send((prefix, Instant::now()));
                }
            });
        }));
    }
    for handle in opened {
        handle.await.unwrap();
    }
    let connect_time = connect_started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = rss_kib(pid);
    steps.push((streams, smaps_kib(pid)));
    // HOLD=<seconds> pauses here, all streams open, to look at the operator from outside.
    let hold = env_or("HOLD", 0);
    if hold > 0 {
        println!("holding {hold} s with all streams open: operator pid {pid}");
        tokio::time::sleep(Duration::from_secs(hold as u64)).await;
    }

    let components: kube::Api<daprs_api::crd::Component> =
        kube::Api::namespaced(cluster.client(), apps.name());
    let mut last_api = Vec::new();
    let mut last_kubectl = Vec::new();
    let mut all = Vec::new();
    for round in 0..rounds * 2 {
        let value = format!("v{}", round + 1);
        let via_kubectl = round % 2 == 1;
        let t0 = Instant::now();
        if via_kubectl {
            let yaml = serde_json::to_string(&component(&value)).unwrap();
            let mut cmd = cluster.kubectl();
            cmd.args(["apply", "-n", apps.name(), "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null());
            let mut child = cmd.spawn().unwrap();
            std::io::Write::write_all(&mut child.stdin.take().unwrap(), yaml.as_bytes()).unwrap();
            assert!(child.wait().unwrap().success());
        } else {
            components
                .patch(
                    "statestore",
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(component(&value)),
                )
                .await
                .unwrap();
        }
        let mut received = 0;
        let mut last = Duration::ZERO;
        while received < streams {
            let (prefix, at) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("all streams receive the change")
                .unwrap();
            if prefix == value {
                received += 1;
                let latency = at.saturating_duration_since(t0);
                all.push(latency);
                last = last.max(latency);
            }
        }
        if via_kubectl {
            last_kubectl.push(last)
        } else {
            last_api.push(last)
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let end = rss_kib(pid);
    let after_rounds = smaps_kib(pid);
    last_api.sort();
    last_kubectl.sort();
    all.sort();
    println!(
        "streams: {streams} ({} app ids), rounds: {rounds} per method, connect+subscribe: {connect_time:?}",
        10
    );
    println!(
        "apply → last stream, API server-side apply: p50 {:?}  p99 {:?}  max {:?}",
        percentile(&last_api, 0.5),
        percentile(&last_api, 0.99),
        last_api.last().unwrap()
    );
    println!(
        "apply → last stream, kubectl apply:         p50 {:?}  p99 {:?}  max {:?}",
        percentile(&last_kubectl, 0.5),
        percentile(&last_kubectl, 0.99),
        last_kubectl.last().unwrap()
    );
    println!(
        "apply → each stream (all deliveries):       p50 {:?}  p99 {:?}",
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
    println!(
        "operator RSS: idle {} KiB, {streams} streams {} KiB, after rounds {} KiB (peak {} KiB)",
        idle.0, connected.0, end.0, end.1
    );
    for (open, (rss, anon, file)) in &steps {
        println!("operator RSS with {open:>5} streams: {rss} KiB (anonymous {anon}, file {file})");
    }
    let (rss, anon, file) = after_rounds;
    println!("operator RSS after the rounds:    {rss} KiB (anonymous {anon}, file {file})");
    if let [(_, first), .., (last_open, last)] = steps.as_slice()
        && *last_open > 0
    {
        println!(
            "per stream (one connection each): {:.1} KiB",
            (last.0 as f64 - first.0 as f64) / *last_open as f64
        );
    }
    // SIGTERM to the group: the operator drains and exits (and a profiler writes its data).
    // The `--` matters: procps' kill reads `-TERM -12345` as the group `-1`, which is every
    // process we may signal (it killed the whole test run).
    let _ = std::process::Command::new("kill")
        .args(["-s", "TERM", "--", &format!("-{pid}")])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while operator.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = operator.kill();
    let _ = operator.wait();
    run(cluster.kubectl().args([
        "delete",
        "clusterrole,clusterrolebinding",
        "daprs-operator-bench",
        "--ignore-not-found",
    ]));
}
