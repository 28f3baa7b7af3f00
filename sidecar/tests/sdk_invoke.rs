//! Service invocation through the official SDKs, between real `daprd` processes: the Python
//! SDK (`dapr`, both of its invocation protocols) and the JavaScript SDK (`@dapr/dapr`, its
//! HTTP and gRPC clients) call apps behind other sidecars, and the apps, written with the SDKs'
//! server parts (Python: the SDK's `AppCallback` servicer on grpcio; JavaScript: `DaprServer`
//! over HTTP and over gRPC), echo what they received so the callers check it on the receiving
//! side: verb, query string, content type, body, custom headers and `dapr-caller-app-id`.
//! Once over plaintext (self-hosted default), once over mutual TLS with certificates from a real
//! sentry (in-process). `scripts/sidecar-deps.sh` installs both SDKs under ~/.cache/daprs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::Sentry;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn cache() -> PathBuf {
    PathBuf::from(std::env::var("HOME").expect("HOME is set")).join(".cache/daprs")
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

fn python() -> PathBuf {
    let python = std::env::var_os("DAPRS_SDK_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("sdk-venv/bin/python"));
    assert!(
        python.exists(),
        "{} is missing: run scripts/sidecar-deps.sh (it installs the Python SDK `dapr` under ~/.cache/daprs)",
        python.display()
    );
    python
}

fn js_modules() -> PathBuf {
    let modules = cache().join("js/node_modules");
    assert!(
        modules.join("@dapr/dapr").exists(),
        "{} is missing: run scripts/sidecar-deps.sh (it installs @dapr/dapr under ~/.cache/daprs/js)",
        modules.join("@dapr/dapr").display()
    );
    modules
}

/// A child process killed when dropped (a failed test leaves nothing running).
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Daprd {
    _proc: Proc,
    http: u16,
    grpc: u16,
}

/// An app the SDK scripts know how to check (`kind` in `DAPRS_TARGETS`).
#[derive(Clone, Copy, Debug)]
enum App {
    /// sdk/py_grpc_app.py: the Python SDK's AppCallback servicer, `--app-protocol grpc`.
    PyGrpc,
    /// sdk/js_app.mjs with DaprServer over HTTP.
    JsHttp,
    /// sdk/js_app.mjs with DaprServer over gRPC.
    JsGrpc,
}

impl App {
    fn kind(self) -> &'static str {
        match self {
            App::PyGrpc => "py-grpc",
            App::JsHttp => "js-http",
            App::JsGrpc => "js-grpc",
        }
    }

    fn protocol(self) -> &'static str {
        match self {
            App::JsHttp => "http",
            App::PyGrpc | App::JsGrpc => "grpc",
        }
    }
}

struct Mesh {
    registry: tempfile::TempDir,
    sentry: Option<Sentry>,
}

impl Mesh {
    fn daprd(&self, app_id: &str, app: Option<(App, u16)>) -> Daprd {
        let (http, grpc, metrics, internal) = (free_port(), free_port(), free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_daprd"));
        command
            .args(["--app-id", app_id, "--dapr-listen-addresses", "127.0.0.1"])
            .args(["--dapr-http-port", &http.to_string()])
            .args(["--dapr-grpc-port", &grpc.to_string()])
            .args(["--metrics-port", &metrics.to_string()])
            .args(["--metrics-listen-address", "127.0.0.1"])
            .args(["--dapr-internal-grpc-port", &internal.to_string()])
            .args(["--dapr-internal-grpc-listen-address", "127.0.0.1"])
            .arg("--registry-dir")
            .arg(self.registry.path())
            .env_remove("DAPR_API_TOKEN")
            .env_remove("APP_API_TOKEN")
            .env_remove("NAMESPACE")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some((app, port)) = app {
            command
                .args(["--app-port", &port.to_string()])
                .args(["--app-protocol", app.protocol()]);
        }
        if let Some(sentry) = &self.sentry {
            command
                .args(["--enable-mtls", "--sentry-address", &sentry.address()])
                .env("DAPR_TRUST_ANCHORS_FILE", sentry.anchors_file())
                .env("DAPR_SENTRY_TOKEN_FILE", "/nonexistent");
        }
        Daprd {
            _proc: Proc(command.spawn().unwrap()),
            http,
            grpc,
        }
    }

    /// Starts `app` on a free port behind a new daprd with id `app_id`.
    fn app(&self, app_id: &str, app: App) -> (Daprd, Proc) {
        let port = free_port();
        let daprd = self.daprd(app_id, Some((app, port)));
        let mut command = match app {
            App::PyGrpc => {
                let mut c = Command::new(python());
                c.arg(sdk_dir().join("py_grpc_app.py"))
                    .arg(port.to_string());
                c
            }
            App::JsHttp | App::JsGrpc => {
                let mut c = Command::new("node");
                c.arg(sdk_dir().join("js_app.mjs"))
                    .env("DAPRS_JS_MODULES", js_modules())
                    .env("DAPRS_APP_PROTOCOL", app.protocol());
                c
            }
        };
        let proc = Proc(
            command
                .env("APP_PORT", port.to_string())
                .env("DAPR_HTTP_PORT", daprd.http.to_string())
                .env("DAPR_GRPC_PORT", daprd.grpc.to_string())
                .env("DAPR_RUNTIME_HOST", "127.0.0.1")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        wait_for(&format!("{} app on port {port}", app.kind()), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        (daprd, proc)
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn healthy(d: &Daprd) -> bool {
    Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://127.0.0.1:{}/v1.0/healthz", d.http))
        .output()
        .is_ok_and(|o| o.stdout == b"204")
}

/// Runs one SDK caller script against `caller` with `targets`; fails with its output.
fn run_caller(program: &Path, script: &str, caller: &Daprd, targets: &[(&str, App)]) {
    let targets = targets
        .iter()
        .map(|(id, app)| format!("{id}={}", app.kind()))
        .collect::<Vec<_>>()
        .join(",");
    let output = Command::new(program)
        .arg(sdk_dir().join(script))
        .env("DAPRS_JS_MODULES", js_modules())
        .env("DAPRS_CALLER", "caller")
        .env("DAPRS_TARGETS", &targets)
        .env("DAPR_HTTP_PORT", caller.http.to_string())
        .env("DAPR_GRPC_PORT", caller.grpc.to_string())
        .env("DAPR_RUNTIME_HOST", "127.0.0.1")
        .env("DAPR_HEALTH_TIMEOUT", "20")
        .output()
        .unwrap_or_else(|e| panic!("failed to run {script}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("all checks passed"),
        "{script} exited 0 without finishing:\n{stdout}"
    );
}

fn run(mesh: &Mesh, apps: &[(&str, App)]) {
    let caller = mesh.daprd("caller", None);
    let running: Vec<(Daprd, Proc)> = apps.iter().map(|(id, app)| mesh.app(id, *app)).collect();
    wait_for("caller daprd", || healthy(&caller));
    for (d, _) in &running {
        wait_for("app daprd", || healthy(d));
    }
    run_caller(&python(), "py_invoke.py", &caller, apps);
    run_caller(Path::new("node"), "js_invoke.mjs", &caller, apps);
}

#[test]
fn sdks_invoke_http_and_grpc_apps_over_plaintext() {
    let mesh = Mesh {
        registry: tempfile::tempdir().unwrap(),
        sentry: None,
    };
    run(&mesh, &[("pygrpc", App::PyGrpc), ("jshttp", App::JsHttp)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_invoke_http_and_grpc_apps_over_mutual_tls() {
    let sentry = Sentry::start(&[]).await;
    let mesh = Mesh {
        registry: tempfile::tempdir().unwrap(),
        sentry: Some(sentry),
    };
    tokio::task::block_in_place(|| {
        run(&mesh, &[("jsgrpc", App::JsGrpc), ("jshttp", App::JsHttp)]);
    });
    let Mesh { sentry, .. } = mesh;
    sentry.unwrap().stop().await;
}
