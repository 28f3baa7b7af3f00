//! Starting and stopping etcd, kube-apiserver and kube-controller-manager.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::{Api, Client};
use rcgen::{Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::OnceCell;

use crate::binaries;
use crate::pki::{self, CertifiedKey, Pki};
use crate::process::{Guard, LOG_TAIL_LINES, Process, log_tail};

/// Set to keep the cluster's directory (certificates, kubeconfig, etcd data, component logs)
/// after the cluster stops. It is always kept when start-up fails.
pub const KEEP_DIR_ENV: &str = "DAPRS_E2E_KEEP";

/// The `iss` of service-account tokens and the audience the API server accepts for itself
/// (what a token requested without audiences gets), as in a kubeadm cluster.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The Service CIDR; `kubernetes.default` gets its first address, 10.0.0.1.
const SERVICE_CLUSTER_IP_RANGE: &str = "10.0.0.0/24";

/// Controllers the controller-manager runs: the ones that turn Deployments into ReplicaSets
/// into Pods, fill new namespaces with the `default` ServiceAccount and the `kube-root-ca.crt`
/// ConfigMap, delete what a deleted namespace held, collect orphans, and fill the aggregated
/// ClusterRoles (`admin`, `edit`, `view`) that RBAC tests bind to. Node, volume and cloud
/// controllers are left out: there are no nodes.
const CONTROLLERS: &[&str] = &[
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "garbage-collector-controller",
];

const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(30);
const API_SERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);
const CONTROLLERS_READY_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How to reach a running cluster: cheap to clone, independent of the tokio runtime, so a
/// cluster shared by the tests of one binary hands each test (each with its own runtime) what
/// it needs to build its own clients.
#[derive(Clone)]
pub struct Connection {
    server: String,
    ca_pem: String,
    ca_der: Vec<u8>,
    kubeconfig: PathBuf,
    admin: kube::Config,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("kubeconfig", &self.kubeconfig)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The cluster CA certificate, PEM: it signed the API server's serving certificate, the
    /// admin client certificate and whatever [`Cluster::issue_certificate`] hands out.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The admin kubeconfig (user in `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A client configuration acting as the cluster admin.
    pub fn admin_config(&self) -> kube::Config {
        self.admin.clone()
    }

    /// A client acting as the cluster admin, bound to the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn client(&self) -> Client {
        Client::try_from(self.admin_config()).expect("a kube::Client builds from the admin config")
    }

    /// A client configuration that authenticates with the bearer `token`.
    pub fn config_with_token(&self, token: &str) -> kube::Config {
        let mut config = kube::Config::new(self.server.parse().expect("the server URL is a URI"));
        config.root_cert = Some(vec![self.ca_der.clone()]);
        config.auth_info.token = Some(token.to_owned().into());
        config
    }

    /// Writes a kubeconfig for this cluster that authenticates with the bearer `token`, e.g.
    /// to start a binary as a service account (`KUBECONFIG=<path>`) or to run kubectl as one.
    pub fn write_kubeconfig_with_token(&self, token: &str, path: &Path) -> Result<()> {
        let user = format!("    token: {token}\n");
        std::fs::write(path, kubeconfig_yaml(&self.server, &self.ca_pem, &user))
            .with_context(|| format!("failed to write {}", path.display()))
    }

    /// A client that authenticates with the bearer `token`.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn client_with_token(&self, token: &str) -> Client {
        Client::try_from(self.config_with_token(token))
            .expect("a kube::Client builds from a token config")
    }
}

/// A running control plane: etcd, kube-apiserver and kube-controller-manager as child
/// processes on free loopback ports, with everything they need in one temporary directory.
///
/// Dropping it kills the processes and removes the directory; so does the end of the test
/// process in any other way (see [`Cluster::shared`]).
pub struct Cluster {
    connection: Connection,
    bin_dir: PathBuf,
    dir: PathBuf,
    keep_dir: bool,
    ca: Issuer<'static, KeyPair>,
    service_account_key_pem: String,
    processes: Vec<Process>,
    guard: Option<Guard>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.connection.server)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts a new cluster and waits until it serves requests and its controllers run (the
    /// `default` ServiceAccount exists). Finds the binaries through [`binaries::bin_dir`],
    /// which may build them first. Takes about 10 s once the binaries are there.
    ///
    /// On failure, the error names the component, quotes the end of its log and gives the
    /// directory with all logs, which is then kept.
    pub async fn start() -> Result<Self> {
        // kube's rustls needs a process-wide provider when more than one is compiled in.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let bin_dir = binaries::bin_dir()?;
        let started = Instant::now();
        let keep_dir = std::env::var_os(KEEP_DIR_ENV).is_some();
        let dir = tempfile::Builder::new()
            .prefix("daprs-e2e-")
            .tempdir()
            .context("failed to create the cluster's temporary directory")?
            .keep();
        let pki = Pki::generate()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let files = write_files(&dir, &pki, &server)?;
        let admin = admin_config(&server, &pki)?;
        let mut cluster = Self {
            connection: Connection {
                server,
                ca_pem: pki.ca_pem.clone(),
                ca_der: pki.ca_der.clone(),
                kubeconfig: files.kubeconfig.clone(),
                admin,
            },
            bin_dir,
            dir: dir.clone(),
            keep_dir,
            ca: pki.ca,
            service_account_key_pem: pki.service_account_key_pem,
            processes: Vec::new(),
            guard: None,
        };
        match cluster.boot(&files, api_port).await {
            Ok(()) => {
                tracing::info!(
                    server = %cluster.connection.server,
                    dir = %dir.display(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "e2e cluster ready"
                );
                Ok(cluster)
            }
            Err(e) => {
                cluster.keep_dir = true;
                Err(e.context(format!(
                    "the e2e cluster failed to start; its logs are kept in {}",
                    dir.display()
                )))
            }
        }
    }

    /// The cluster shared by all tests of this test binary, started by the first caller.
    ///
    /// Rust never drops a `static`, so the cluster's processes are stopped by a guard
    /// process (`sh`) that waits on a pipe from this process: when the test binary exits,
    /// however it exits, the kernel closes the pipe and the guard kills the components'
    /// process group and removes the directory.
    ///
    /// # Panics
    /// When the cluster cannot start: the message has the reason and the logs. Every test
    /// that asks for it afterwards fails the same way without trying again.
    pub async fn shared() -> &'static Cluster {
        static SHARED: OnceCell<Result<Cluster, String>> = OnceCell::const_new();
        let cluster = SHARED
            .get_or_init(|| async { Cluster::start().await.map_err(|e| format!("{e:?}")) })
            .await;
        match cluster {
            Ok(cluster) => cluster,
            Err(e) => panic!("{e}"),
        }
    }

    /// How to reach the cluster, for clients in any runtime.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// A client acting as the cluster admin, bound to the current tokio runtime.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn client(&self) -> Client {
        self.connection.client()
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        self.connection.kubeconfig()
    }

    /// The directory with the certificates, the kubeconfig, etcd's data and a `<component>.log`
    /// per process.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log file of `component` (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }

    /// The directory with etcd, kube-apiserver, kube-controller-manager, kubectl and helm.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// `kubectl`, pointed at this cluster as admin through `KUBECONFIG`.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.env("KUBECONFIG", self.kubeconfig());
        cmd
    }

    /// `helm`, pointed at this cluster as admin, with its cache, config and data directories
    /// inside the cluster's directory so that runs do not share repositories or plugins.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("helm"));
        cmd.env("KUBECONFIG", self.kubeconfig())
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"));
        cmd
    }

    /// Issues a certificate from the cluster CA for TLS servers and clients, e.g. a webhook
    /// on `127.0.0.1` that the API server calls with [`Connection::ca_pem`] as `caBundle`.
    pub fn issue_certificate(&self, common_name: &str, sans: &[&str]) -> Result<CertifiedKey> {
        pki::issue(&self.ca, common_name, None, sans)
    }

    /// The private key (PKCS#8 PEM) the API server signs service-account tokens with, for
    /// tests that must forge a token the API server cannot be asked for (an expired one).
    pub fn service_account_signing_key_pem(&self) -> &str {
        &self.service_account_key_pem
    }

    /// Stops the cluster now; the same as dropping it.
    pub fn stop(self) {}

    async fn boot(&mut self, files: &Files, api_port: u16) -> Result<()> {
        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd_args = [
            "--name=e2e".to_owned(),
            format!("--data-dir={}", self.dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={etcd_peer_url}"),
            format!("--initial-advertise-peer-urls={etcd_peer_url}"),
            format!("--initial-cluster=e2e={etcd_peer_url}"),
            // The data is thrown away with the cluster: no need to wait for the disk.
            "--unsafe-no-fsync".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let etcd = self.spawn("etcd", &etcd_args, None)?;
        self.guard = Some(Guard::spawn(etcd, &self.dir, !self.keep_dir)?);
        self.wait_until("etcd", "to report healthy", ETCD_READY_TIMEOUT, || {
            etcd_healthy(etcd_port)
        })
        .await?;

        let path = |p: &Path| p.display().to_string();
        let api_args = [
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_owned(),
            "--advertise-address=127.0.0.1".to_owned(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", self.dir.join("apiserver").display()),
            format!("--tls-cert-file={}", path(&files.serving_cert)),
            format!("--tls-private-key-file={}", path(&files.serving_key)),
            format!("--client-ca-file={}", path(&files.ca_cert)),
            format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
            format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
            format!("--service-account-key-file={}", path(&files.sa_public)),
            format!("--service-account-signing-key-file={}", path(&files.sa_key)),
            "--authorization-mode=Node,RBAC".to_owned(),
            // On top of the default set (which has ServiceAccount, webhooks and PodSecurity in
            // 1.35); named so a change of defaults cannot drop them.
            "--enable-admission-plugins=NodeRestriction,ServiceAccount,MutatingAdmissionWebhook,ValidatingAdmissionWebhook".to_owned(),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            "--allow-privileged=true".to_owned(),
            "--profiling=false".to_owned(),
        ];
        self.spawn("kube-apiserver", &api_args, Some(etcd))?;
        let connection = self.connection.clone();
        self.wait_until(
            "kube-apiserver",
            "to answer /readyz",
            API_SERVER_READY_TIMEOUT,
            || {
                let client = connection.client();
                async move {
                    let req = http::Request::get("/readyz").body(Vec::new())?;
                    client.request_text(req).await?;
                    Ok(())
                }
            },
        )
        .await?;

        let kcm_args = [
            format!("--kubeconfig={}", path(&files.kubeconfig)),
            format!("--controllers={}", CONTROLLERS.join(",")),
            "--leader-elect=false".to_owned(),
            // 0: no HTTPS endpoint, so no port to pick and nothing to clash.
            "--secure-port=0".to_owned(),
            format!("--service-account-private-key-file={}", path(&files.sa_key)),
            format!("--root-ca-file={}", path(&files.ca_cert)),
            format!("--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}"),
            // Each controller acts as its own ServiceAccount, as in real clusters: pods of a
            // Deployment are created by `kube-system:replicaset-controller`, not by an admin.
            "--use-service-account-credentials=true".to_owned(),
        ];
        self.spawn("kube-controller-manager", &kcm_args, Some(etcd))?;
        self.wait_until(
            "kube-controller-manager",
            "to create the default ServiceAccount",
            CONTROLLERS_READY_TIMEOUT,
            || {
                let api: Api<ServiceAccount> = Api::namespaced(connection.client(), "default");
                async move {
                    match api.get_opt("default").await? {
                        Some(_) => Ok(()),
                        None => bail!("serviceaccount default/default does not exist yet"),
                    }
                }
            },
        )
        .await
    }

    fn spawn(&mut self, name: &'static str, args: &[String], group: Option<u32>) -> Result<u32> {
        let process = Process::spawn(name, &self.bin_dir.join(name), args, &self.dir, group)?;
        let id = process.id();
        self.processes.push(process);
        Ok(id)
    }

    /// Polls `probe` until it succeeds, failing early when a component exits and after
    /// `timeout` with the probe's last error and the end of `component`'s log.
    async fn wait_until<F, Fut>(
        &mut self,
        component: &str,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            for process in &mut self.processes {
                process.ensure_running()?;
            }
            let last = match tokio::time::timeout(POLL_INTERVAL * 10, probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(_) => anyhow!("no answer within {:?}", POLL_INTERVAL * 10),
            };
            if Instant::now() > deadline {
                let log = self.log_path(component);
                bail!(
                    "timed out after {timeout:?} waiting for {component} {what} (last error: {last:#}); last lines of {}:\n{}",
                    log.display(),
                    log_tail(&log, LOG_TAIL_LINES)
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for process in self.processes.iter_mut().rev() {
            process.stop();
        }
        if let Some(guard) = self.guard.take() {
            guard.release(self.keep_dir);
        } else if !self.keep_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

struct Files {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_public: PathBuf,
    kubeconfig: PathBuf,
}

fn write_files(dir: &Path, pki: &Pki, server: &str) -> Result<Files> {
    let files = Files {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        sa_key: dir.join("service-account.key"),
        sa_public: dir.join("service-account.pub"),
        kubeconfig: dir.join("kubeconfig"),
    };
    let write = |path: &Path, contents: &str| {
        std::fs::write(path, contents)
            .with_context(|| format!("failed to write {}", path.display()))
    };
    let admin_user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}\n",
        BASE64.encode(&pki.admin.cert_pem),
        BASE64.encode(&pki.admin.key_pem),
    );
    write(&files.ca_cert, &pki.ca_pem)?;
    write(&files.serving_cert, &pki.serving.cert_pem)?;
    write(&files.serving_key, &pki.serving.key_pem)?;
    write(&files.sa_key, &pki.service_account_key_pem)?;
    write(&files.sa_public, &pki.service_account_public_pem)?;
    write(
        &files.kubeconfig,
        &kubeconfig_yaml(server, &pki.ca_pem, &admin_user),
    )?;
    Ok(files)
}

/// A self-contained kubeconfig (CA inline) whose one user has the `user` fields (indented
/// YAML lines).
fn kubeconfig_yaml(server: &str, ca_pem: &str, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: daprs-e2e
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: daprs-e2e
  user:
{user}contexts:
- name: daprs-e2e
  context:
    cluster: daprs-e2e
    user: daprs-e2e
    namespace: default
current-context: daprs-e2e
",
        ca = BASE64.encode(ca_pem),
    )
}

fn admin_config(server: &str, pki: &Pki) -> Result<kube::Config> {
    let mut config = kube::Config::new(server.parse().context("invalid API server URL")?);
    config.root_cert = Some(vec![pki.ca_der.clone()]);
    config.auth_info.client_certificate_data = Some(BASE64.encode(&pki.admin.cert_pem));
    config.auth_info.client_key_data = Some(BASE64.encode(&pki.admin.key_pem).into());
    Ok(config)
}

/// A loopback port that was free a moment ago. Another process may take it before ours
/// binds it; the component then fails to start with "address already in use" in its log.
fn free_port() -> Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("failed to find a free port")?;
    Ok(listener.local_addr()?.port())
}

/// etcd's `/health` over plain HTTP/1.0: no HTTP client needed for one request.
async fn etcd_healthy(port: u16) -> Result<()> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    if response.contains(r#""health":"true""#) {
        Ok(())
    } else {
        bail!("unhealthy: {}", response.lines().last().unwrap_or_default())
    }
}
