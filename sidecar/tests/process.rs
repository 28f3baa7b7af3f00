//! The `daprd` binary as users run it: flags, exit codes, the API token on both APIs, the
//! public port, start-up failures, `ignoreErrors`, and the shutdown API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dapr::dapr::proto::runtime::v1 as pb;

const DAPRD: &str = env!("CARGO_BIN_EXE_daprd");
const STORE: &str =
    "kind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daprd {
    child: Child,
    http: u16,
    grpc: u16,
    public: u16,
}

impl Drop for Daprd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(resources: &Path, token: Option<&str>, extra: &[&str]) -> Daprd {
    let (http, grpc, public, metrics) = (free_port(), free_port(), free_port(), free_port());
    let mut command = Command::new(DAPRD);
    command
        .args(["--app-id", "proc", "--dapr-listen-addresses", "127.0.0.1"])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--dapr-public-port", &public.to_string()])
        .args(["--dapr-public-listen-address", "127.0.0.1"])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--metrics-listen-address", "127.0.0.1", "--log-as-json"])
        .arg("--resources-path")
        .arg(resources)
        .args(extra)
        .env_remove("DAPR_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(token) = token {
        command.env("DAPR_API_TOKEN", token);
    }
    Daprd {
        child: command.spawn().unwrap(),
        http,
        grpc,
        public,
    }
}

/// Waits for `/v1.0/healthz` 204; the logs of a daprd that exited first, or was killed after
/// 20 s without becoming ready, are the error.
async fn try_ready(d: &mut Daprd) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{}/v1.0/healthz", d.http)).await
            && r.status() == 204
        {
            return Ok(());
        }
        let exited = d.child.try_wait().unwrap();
        if exited.is_none() && Instant::now() >= deadline {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        if exited.is_some() || Instant::now() >= deadline {
            let mut logs = format!("exit: {exited:?}\n");
            if let Some(mut out) = d.child.stdout.take() {
                let _ = out.read_to_string(&mut logs);
            }
            return Err(logs);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`spawn`], then [`try_ready`]; any failure but a taken port fails the test with the logs.
/// `free_port` only finds ports that were free a moment ago: a daprd that exits because one
/// was taken since is started again on new ones.
async fn spawn_ready(resources: &Path, token: Option<&str>, extra: &[&str]) -> Daprd {
    for _ in 0..3 {
        let mut d = spawn(resources, token, extra);
        match try_ready(&mut d).await {
            Ok(()) => return d,
            Err(logs) if logs.contains("failed to listen") => continue,
            Err(logs) => panic!("daprd did not become ready:\n{logs}"),
        }
    }
    panic!("three daprd in a row found one of their ports taken");
}

fn wait_exit(d: &mut Daprd) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "daprd did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn token_public_port_unsupported_flags_and_shutdown_api() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.yaml"), STORE).unwrap();
    let mut d = spawn_ready(
        dir.path(),
        Some("s3cr3t"),
        &[
            "--placement-host-address",
            "localhost:50005",
            "--allowed-origins",
            "*",
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let state = format!("http://127.0.0.1:{}/v1.0/state/statestore/k", d.http);
    let r = http.get(&state).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), "invalid api token");
    let r = http
        .get(&state)
        .header("dapr-api-token", "s3cr3t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // The public port answers health and metadata without the token, and nothing else.
    let public = format!("http://127.0.0.1:{}", d.public);
    assert_eq!(
        http.get(format!("{public}/v1.0/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    let meta = http
        .get(format!("{public}/v1.0/metadata"))
        .send()
        .await
        .unwrap();
    assert_eq!(meta.status(), 200);
    assert_eq!(
        meta.json::<serde_json::Value>().await.unwrap()["id"],
        "proc"
    );
    assert_eq!(
        http.get(format!("{public}/v1.0/state/statestore/k"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    let mut grpc = pb::dapr_client::DaprClient::connect(format!("http://127.0.0.1:{}", d.grpc))
        .await
        .unwrap();
    let err = grpc
        .get_metadata(pb::GetMetadataRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut request = tonic::Request::new(pb::GetMetadataRequest::default());
    request
        .metadata_mut()
        .insert("dapr-api-token", "s3cr3t".parse().unwrap());
    assert_eq!(
        grpc.get_metadata(request).await.unwrap().into_inner().id,
        "proc"
    );

    let r = http
        .post(format!("http://127.0.0.1:{}/v1.0/shutdown", d.http))
        .header("dapr-api-token", "s3cr3t")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let status = wait_exit(&mut d);
    assert!(status.success(), "{status}");
    let mut logs = String::new();
    d.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    for flag in ["--placement-host-address", "--allowed-origins"] {
        let reports = logs
            .lines()
            .filter(|l| l.contains("not supported yet") && l.contains(flag))
            .count();
        assert_eq!(reports, 1, "{flag} is reported once:\n{logs}");
    }
    assert!(!logs.contains("s3cr3t"), "the token is never logged");
}

#[test]
fn bad_flags_exit_64_with_one_line() {
    let out = Command::new(DAPRD)
        .args(["--dapr-http-port", "http"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--dapr-http-port"), "{stderr}");
    let out = Command::new(DAPRD)
        .args(["--app-port", "3500"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--app-port"));
    let out = Command::new(DAPRD)
        .env("DAPRS_WORKER_THREADS", "many")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--worker-threads") && stderr.contains("many"),
        "{stderr}"
    );
}

#[tokio::test]
async fn broken_components_stop_start_up_unless_ignore_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.yaml"),
        "kind: Component\nmetadata:\n  name: files\nspec:\n  type: secretstores.local.file\n  metadata:\n  - name: secretsFile\n    value: /does/not/exist.json\n",
    )
    .unwrap();
    let mut d = spawn(dir.path(), None, &[]);
    let status = wait_exit(&mut d);
    assert_eq!(status.code(), Some(1));
    let mut logs = String::new();
    d.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.contains("broken.yaml") && logs.contains("files") && logs.contains("exist.json"),
        "{logs}"
    );

    std::fs::write(
        dir.path().join("broken.yaml"),
        "kind: Component\nmetadata:\n  name: files\nspec:\n  type: secretstores.local.file\n  ignoreErrors: true\n  metadata:\n  - name: secretsFile\n    value: /does/not/exist.json\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("s.yaml"), STORE).unwrap();
    let d = spawn_ready(dir.path(), None, &[]).await;
    let meta: serde_json::Value =
        reqwest::get(format!("http://127.0.0.1:{}/v1.0/metadata", d.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    let names: Vec<_> = meta["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["statestore"]);
}
