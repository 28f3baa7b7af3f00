//! The official SDKs as acceptance tests: the real `daprd` binary on free ports, driven by
//! the Python SDK (and the JavaScript SDK when installed by `scripts/sidecar-deps.sh`), then
//! stopped with SIGTERM. `scripts/sidecar-deps.sh` installs the SDKs under ~/.cache/daprs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cache() -> PathBuf {
    let home = std::env::var("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/daprs")
}

struct Daprd {
    child: Child,
    stopped: bool,
    http: u16,
    grpc: u16,
    _dir: tempfile::TempDir,
}

fn start_daprd() -> Daprd {
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secrets.json");
    std::fs::write(
        &secrets,
        r#"{"db": {"password": "s3cret", "user": "admin"}}"#,
    )
    .unwrap();
    let resources = dir.path().join("components");
    std::fs::create_dir(&resources).unwrap();
    std::fs::write(
        resources.join("statestore.yaml"),
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.in-memory\n  version: v1\n  metadata: []\n",
    )
    .unwrap();
    std::fs::write(
        resources.join("secrets.yaml"),
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: localsecrets\nspec:\n  type: secretstores.local.file\n  version: v1\n  metadata:\n  - name: secretsFile\n    value: {}\n",
            secrets.display()
        ),
    )
    .unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata:\n  name: c\nspec:\n  secrets:\n    scopes:\n    - storeName: localsecrets\n      defaultAccess: deny\n      allowedSecrets: [\"db:password\"]\n",
    )
    .unwrap();
    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_daprd"))
        .args([
            "--app-id",
            "sdktest",
            "--dapr-listen-addresses",
            "127.0.0.1",
        ])
        .args(["--dapr-http-port", &http.to_string()])
        .args(["--dapr-grpc-port", &grpc.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .args(["--metrics-listen-address", "127.0.0.1"])
        .arg("--resources-path")
        .arg(&resources)
        .arg("--config")
        .arg(&config)
        // A Dapr flag daprs does not implement yet must not stop the process.
        .args(["--placement-host-address", "localhost:50005"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daprd = Daprd {
        child,
        stopped: false,
        http,
        grpc,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{http}/v1.0/healthz"))
            .output()
            .map(|o| o.stdout == b"204")
            .unwrap_or(false);
        if ready {
            return daprd;
        }
        assert!(Instant::now() < deadline, "daprd did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Daprd {
    fn run(&self, program: &Path, args: &[&Path]) {
        let output = Command::new(program)
            .args(args)
            .env("DAPRS_JS_MODULES", cache().join("js/node_modules"))
            .env("DAPR_HTTP_PORT", self.http.to_string())
            .env("DAPR_GRPC_PORT", self.grpc.to_string())
            .env("DAPR_RUNTIME_HOST", "127.0.0.1")
            .env("DAPR_HEALTH_TIMEOUT", "20")
            .output()
            .unwrap_or_else(|e| panic!("failed to run {}: {e}", program.display()));
        assert!(
            output.status.success(),
            "{} failed:\nstdout:\n{}\nstderr:\n{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// SIGTERM, then a clean exit within the grace period.
    fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.stopped = true;
                assert!(status.success(), "daprd exited with {status} after SIGTERM");
                return;
            }
            assert!(Instant::now() < deadline, "daprd ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daprd {
    /// A failed test must not leave daprd running.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

#[test]
fn python_sdk_state_and_secrets() {
    let python = std::env::var_os("DAPRS_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("sdk-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run scripts/sidecar-deps.sh (it installs the Python SDK `dapr` under ~/.cache/daprs)",
        python.display()
    );
    let mut daprd = start_daprd();
    daprd.run(&python, &[&sdk_dir().join("python_sdk.py")]);
    daprd.terminate();
}

#[test]
fn javascript_sdk_state_and_secrets() {
    let modules = cache().join("js/node_modules/@dapr/dapr");
    assert!(
        modules.exists(),
        "{} is missing: run scripts/sidecar-deps.sh (it installs @dapr/dapr under ~/.cache/daprs/js)",
        modules.display()
    );
    let mut daprd = start_daprd();
    daprd.run(Path::new("node"), &[&sdk_dir().join("js_sdk.mjs")]);
    daprd.terminate();
}
