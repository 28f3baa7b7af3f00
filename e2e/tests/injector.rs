//! The sidecar injector against the real API server: registered with `url:` on loopback, it
//! injects daprd into the pods a Deployment's ReplicaSet creates (plain and native sidecars),
//! kubectl prints its warnings, a bare Pod from an ordinary user is admitted without a sidecar
//! (and the decision is logged), strict mode denies; and in kubernetes mode, with only the RBAC
//! in `fixtures/injector-rbac.yaml`, it applies the caBundle after getting its certificate from
//! a real sentry, and injects the containers of the namespace's pluggable Components.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::Parser;
use daprs_e2e::{Cluster, TempNs};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

/// Everything the injectors of this test binary log, for assertions on decisions.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter("daprs_injector=info")
            .with_ansi(false)
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        std::io::stderr().write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn log_text() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

async fn kubectl(cluster: &Cluster, args: &[&str], stdin: &str) -> std::process::Output {
    let mut cmd = tokio::process::Command::from(cluster.kubectl());
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    use tokio::io::AsyncWriteExt;
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    child.wait_with_output().await.unwrap()
}

fn injector_args(dir: &Path, extra: &[&str]) -> daprs_injector::config::Args {
    let anchors = dir.join("anchors.pem");
    let mut argv: Vec<String> = [
        "injector",
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
        "ghcr.io/daprs/daprd:e2e",
        "--sidecar-image-pull-policy",
        "IfNotPresent",
        "--kube-cluster-domain",
        "cluster.local",
        "--trust-anchors-file",
        anchors.to_str().unwrap(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    daprs_injector::config::Args::parse_from(argv)
}

/// Applies `fixtures/injector-rbac.yaml` (the chart's injector RBAC) for a ServiceAccount
/// `dapr-injector` in `ns`, the ClusterRole named `webhook` like the webhook configuration,
/// and writes a kubeconfig with that account's token.
async fn injector_account(
    cluster: &Cluster,
    ns: &str,
    webhook: &str,
    dir: &Path,
) -> std::path::PathBuf {
    let rbac = include_str!("../fixtures/injector-rbac.yaml")
        .replace("CLUSTER_ROLE", webhook)
        .replace("WEBHOOK_CONFIGURATION", webhook)
        .replace("NAMESPACE", ns);
    let out = kubectl(cluster, &["apply", "-f", "-"], &rbac).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = cluster
        .connection()
        .service_account_token(ns, "dapr-injector", &[])
        .await
        .unwrap();
    let kubeconfig = dir.join("kubeconfig");
    cluster
        .connection()
        .write_kubeconfig_with_token(&token, &kubeconfig)
        .unwrap();
    kubeconfig
}

fn webhook_configuration(name: &str, ns: &str, url: &str, ca_bundle: Option<&str>) -> Value {
    let mut client_config = json!({ "url": url });
    if let Some(ca) = ca_bundle {
        client_config["caBundle"] = json!(BASE64.encode(ca));
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "sidecar-injector.dapr.io",
            "clientConfig": client_config,
            "rules": [
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]},
                // Workloads too, so `kubectl apply` of a Deployment shows template typos.
                {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["deployments", "statefulsets", "daemonsets"]},
                {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["jobs", "cronjobs"]}
            ],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1", "v1beta1"],
            "reinvocationPolicy": "IfNeeded",
            "timeoutSeconds": 5
        }]
    })
}

fn dapr_pod(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}
    })
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    pod["spec"][list]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn args_of(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

async fn wait_for_pods(pods: &Api<Pod>, selector: &str) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        if !list.items.is_empty() {
            return list
                .items
                .iter()
                .map(|p| serde_json::to_value(p).unwrap())
                .collect();
        }
        assert!(Instant::now() < deadline, "no pods for {selector}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn deployment(name: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "ghcr.io/example/orders:1", "ports": [{"containerPort": 8080}]}]}
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_come_out_of_admission_with_daprd() {
    logs();
    daprs_api::tls::install_default_provider();
    let cluster = Cluster::shared().await;
    let ns = TempNs::create(cluster.connection()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = cluster
        .issue_certificate("injector", &["127.0.0.1"])
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &cert.key_pem).unwrap();
    // Any root will do as the anchors sidecars are given; the cluster CA is at hand.
    let anchors = cluster.connection().ca_pem().to_owned();
    std::fs::write(dir.path().join("anchors.pem"), &anchors).unwrap();
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    let injector = daprs_injector::start(injector_args(
        dir.path(),
        &[
            "--mode",
            "standalone",
            "--namespace",
            "dapr-system",
            "--tls-cert-file",
            cert_file.to_str().unwrap(),
            "--tls-key-file",
            key_file.to_str().unwrap(),
        ],
    ))
    .await
    .unwrap();
    while injector.live.trust_anchors().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let client = ns.client();
    let url = format!("https://{}/mutate", injector.webhook_addr);
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(webhook_configuration(
        ns.name(),
        ns.name(),
        &url,
        Some(cluster.connection().ca_pem()),
    ))
    .unwrap();
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mwcs.create(&PostParams::default(), &mwc).await.unwrap();

    // Wait until the API server calls the webhook (admin dry-runs are injected).
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let probe: Pod = serde_json::from_value(dapr_pod(
        "probe",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "probe"}),
    ))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let created = pods.create(&dry_run, &probe).await.unwrap();
        if created
            .spec
            .unwrap()
            .containers
            .iter()
            .any(|c| c.name == "daprd")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the webhook never took effect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A Deployment: the ReplicaSet controller's pods get daprd exactly as specified.
    let annotations = json!({
        "dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-port": "8080",
        "dapr.io/sidecar-cpu-request": "50m", "dapr.io/log-level": "debug"
    });
    ns.accepts(&deployment("orders", annotations)).await;
    let pod = &wait_for_pods(&pods, "app=orders").await[0];
    let daprd = container(pod, "containers", "daprd").expect("daprd injected");
    let args = args_of(daprd);
    assert_eq!(
        &args[..13],
        [
            "/daprd",
            "--dapr-http-port",
            "3500",
            "--dapr-grpc-port",
            "50001",
            "--dapr-internal-grpc-port",
            "50002",
            "--dapr-listen-addresses",
            "[::1],127.0.0.1",
            "--dapr-public-port",
            "3501",
            "--app-id",
            "orders"
        ]
    );
    for expected in [
        "--log-level debug",
        "--sentry-address dapr-sentry.dapr-system.svc.cluster.local:443",
        "--control-plane-address dapr-api.dapr-system.svc.cluster.local:443",
        "--app-port 8080",
        "--enable-mtls",
    ] {
        assert!(
            args.join(" ").contains(expected),
            "{expected} not in {args:?}"
        );
    }
    assert_eq!(daprd["image"], "ghcr.io/daprs/daprd:e2e");
    assert_eq!(daprd["resources"], json!({"requests": {"cpu": "50m"}}));
    let env = |name: &str| {
        daprd["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(env("NAMESPACE")["value"], ns.name());
    assert_eq!(env("DAPR_TRUST_ANCHORS")["value"], anchors.as_str());
    assert_eq!(env("DAPR_CONTROLPLANE_NAMESPACE")["value"], "dapr-system");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let token = volumes
        .iter()
        .find(|v| v["name"] == "dapr-identity-token")
        .expect("the token volume");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "spiffe://cluster.local/ns/dapr-system/dapr-sentry"
    );
    assert!(volumes.iter().any(|v| v["name"] == "dapr-trust-bundle"));
    assert_eq!(
        pod["metadata"]["labels"]["dapr.io/sidecar-injected"],
        "true"
    );
    assert_eq!(pod["metadata"]["labels"]["dapr.io/app-id"], "orders");
    let app = container(pod, "containers", "app").unwrap();
    assert!(
        app["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "DAPR_HTTP_PORT")
    );

    // A native sidecar passes the API server's validation of restartable init containers.
    ns.accepts(&deployment(
        "native",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "native", "dapr.io/enable-native-sidecar": "true"}),
    ))
    .await;
    let pod = &wait_for_pods(&pods, "app=native").await[0];
    let daprd = container(pod, "initContainers", "daprd").expect("daprd as an init container");
    assert_eq!(daprd["restartPolicy"], "Always");
    assert_eq!(
        daprd["startupProbe"]["httpGet"]["path"],
        "/v1.0/healthz/outbound"
    );
    assert!(container(pod, "containers", "daprd").is_none());

    // kubectl prints the warnings for a typo.
    let typo = dapr_pod(
        "typo",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "typo", "dapr.io/app-prot": "8080"}),
    );
    let out = kubectl(
        cluster,
        &["create", "-n", ns.name(), "-f", "-"],
        &typo.to_string(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: annotation dapr.io/app-prot: unknown annotation, ignored; did you mean dapr.io/app-port?"),
        "{stderr}"
    );

    // `kubectl apply` of a Deployment shows its pod template's typo at once.
    let typo_deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "typo-deployment"},
        "spec": {"selector": {"matchLabels": {"app": "typo-deployment"}},
            "template": {"metadata": {"labels": {"app": "typo-deployment"},
                "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "typod", "dapr.io/app-prot": "8080"}},
                "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}}});
    let out = kubectl(
        cluster,
        &["apply", "-n", ns.name(), "-f", "-"],
        &typo_deployment.to_string(),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Warning: pod template: annotation dapr.io/app-prot: unknown annotation, ignored; did you mean dapr.io/app-port?"),
        "{stderr}"
    );

    // Strict mode turns the same warning into a denial.
    let mut strict = typo.clone();
    strict["metadata"]["name"] = json!("strict");
    strict["metadata"]["annotations"]["dapr.io/strict-annotations"] = json!("true");
    let message = ns.rejects(&strict).await;
    assert!(message.contains("strict annotation checking"), "{message}");
    assert!(
        message.contains("did you mean dapr.io/app-port?"),
        "{message}"
    );

    // An invalid app id is refused with what is allowed.
    let message = ns
        .rejects(&dapr_pod(
            "bad",
            json!({"dapr.io/enabled": "true", "dapr.io/app-id": "Bad_Id"}),
        ))
        .await;
    assert!(message.contains("must be a DNS label"), "{message}");

    // A bare Pod from an ordinary user: admitted without a sidecar, and the decision logged.
    let rbac = format!(
        r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: developer, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-creator, namespace: {ns}}}
rules: [{{apiGroups: [""], resources: [pods], verbs: [create, get]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: developer-pods, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-creator}}
subjects: [{{kind: ServiceAccount, name: developer, namespace: {ns}}}]
"#,
        ns = ns.name()
    );
    let out = kubectl(cluster, &["apply", "-f", "-"], &rbac).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let developer = ns.client_for_service_account("developer").await.unwrap();
    let developer_pods: Api<Pod> = Api::namespaced(developer, ns.name());
    let bare: Pod = serde_json::from_value(dapr_pod(
        "bare",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "bare"}),
    ))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let created = loop {
        match developer_pods.create(&PostParams::default(), &bare).await {
            Ok(created) => break created,
            // RBAC takes a moment to reach the authorizer's cache.
            Err(kube::Error::Api(status)) if status.code == 403 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the developer could not create a pod: {e}"),
        }
    };
    assert!(
        created
            .spec
            .unwrap()
            .containers
            .iter()
            .all(|c| c.name != "daprd")
    );
    let user = format!("system:serviceaccount:{}:developer", ns.name());
    let logged = log_text();
    assert!(
        logged
            .lines()
            .any(|l| l.contains("admitted without a sidecar")
                && l.contains("CallerNotAllowed")
                && l.contains(&user)),
        "no log line for the skipped pod in:\n{logged}"
    );
    let metrics = daprs_injector::metrics::render(&injector.metrics.register());
    assert!(
        metrics.contains(
            "daprs_injector_sidecar_injection_skipped_total{reason=\"caller_not_allowed\"} 1"
        ),
        "{metrics}"
    );

    mwcs.delete(ns.name(), &DeleteParams::default())
        .await
        .unwrap();
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_ca_bundle_is_applied_after_a_certificate_from_sentry() {
    logs();
    daprs_api::tls::install_default_provider();
    let cluster = Cluster::shared().await;
    let ns = TempNs::create(cluster.connection()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A real sentry (its own files, insecure validator: the kubernetes validator has its own
    // e2e tests), whose anchors the injector reads from its mounted trust bundle.
    let creds = dir.path().join("creds");
    let sentry = daprs_sentry::start(daprs_sentry::config::Args::parse_from([
        "sentry",
        "--issuer-credentials",
        creds.to_str().unwrap(),
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
    ]))
    .await
    .unwrap();
    let anchors_file = creds.join("ca.crt");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !anchors_file.exists() {
        assert!(Instant::now() < deadline, "sentry wrote no CA");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let anchors = std::fs::read_to_string(&anchors_file).unwrap();
    std::fs::write(dir.path().join("anchors.pem"), &anchors).unwrap();

    // The configuration as Helm would install it: no caBundle, applied by Helm's manager.
    let name = format!("{}-injector", ns.name());
    let manifest = webhook_configuration(&name, ns.name(), "https://127.0.0.1:1/mutate", None);
    let out = kubectl(
        cluster,
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "helm",
            "-f",
            "-",
        ],
        &manifest.to_string(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The injector runs as its own ServiceAccount with only the RBAC the chart grants it.
    let kubeconfig = injector_account(cluster, ns.name(), &name, dir.path()).await;

    let sentry_address = sentry.grpc_addr.to_string();
    let mut injector = daprs_injector::start(injector_args(
        dir.path(),
        &[
            "--mode",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            "default",
            "--control-plane-trust-domain",
            "localhost",
            "--sentry-address",
            &sentry_address,
            "--sentry-token-validator",
            "insecure",
            "--webhook-configuration-name",
            &name,
        ],
    ))
    .await
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        injector.certificates_issued.wait_for(|n| *n >= 1),
    )
    .await
    .expect("a certificate from sentry")
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        injector.ca_bundle_applied.wait_for(|applied| *applied),
    )
    .await
    .expect("the caBundle applied (RBAC may still be propagating; the injector retries)")
    .unwrap();

    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(cluster.client());
    let stored = mwcs.get(&name).await.unwrap();
    let webhook = &stored.webhooks.as_ref().unwrap()[0];
    assert_eq!(
        webhook
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone()),
        Some(anchors.clone().into_bytes())
    );
    // The injector's manager owns the caBundle and nothing else, so Helm sees no drift.
    let managed = serde_json::to_value(stored.metadata.managed_fields.unwrap()).unwrap();
    let ours = managed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "daprs-injector")
        .expect("an entry for daprs-injector");
    assert_eq!(ours["operation"], "Apply");
    let owned = ours["fieldsV1"].to_string();
    assert!(owned.contains("f:caBundle"), "{owned}");
    for not_ours in ["f:url", "f:rules", "f:failurePolicy", "f:namespaceSelector"] {
        assert!(!owned.contains(not_ours), "{not_ours} in {owned}");
    }
    let out = kubectl(
        cluster,
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "helm",
            "-f",
            "-",
        ],
        &manifest.to_string(),
    )
    .await;
    assert!(
        out.status.success(),
        "Helm's re-apply conflicts: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = mwcs.get(&name).await.unwrap();
    assert_eq!(
        again.webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .as_ref()
            .map(|b| b.0.clone()),
        Some(anchors.clone().into_bytes()),
        "Helm's apply leaves the caBundle alone"
    );

    // A rotated trust bundle (new root appended) reaches the caBundle.
    let rotated = format!("{anchors}{}", cluster.connection().ca_pem());
    std::fs::write(dir.path().join("anchors.pem"), &rotated).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let current = mwcs.get(&name).await.unwrap().webhooks.unwrap()[0]
            .client_config
            .ca_bundle
            .clone()
            .map(|b| b.0);
        if current == Some(rotated.clone().into_bytes()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the caBundle did not follow the rotation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    injector.stop().await;
    sentry.stop().await.unwrap();
    mwcs.delete(&name, &DeleteParams::default()).await.unwrap();
    let _ = kubectl(
        cluster,
        &[
            "delete",
            "clusterrole,clusterrolebinding",
            &name,
            "--ignore-not-found",
        ],
        "",
    )
    .await;
}

fn pluggable_component(name: &str, scopes: &[&str], container: &str) -> Value {
    let mut component = json!({
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name, "annotations": {"dapr.io/component-container": container}},
        "spec": {"type": "state.my-pluggable", "version": "v1", "metadata": []}
    });
    if !scopes.is_empty() {
        component["scopes"] = json!(scopes);
    }
    component
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_namespace_pluggable_components_are_injected() {
    logs();
    daprs_api::tls::install_default_provider();
    let cluster = Cluster::shared().await;
    let ns = TempNs::create(cluster.connection()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The Component CRD, as the operator (or the chart) installs it.
    let crd = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/components.dapr.io.yaml");
    for args in [
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crd.to_str().unwrap(),
        ][..],
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/components.dapr.io",
        ][..],
    ] {
        let out = kubectl(cluster, args, "").await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Kubernetes mode as the injector's own ServiceAccount (the chart's RBAC); the serving
    // certificate from files (the cluster CA, which the caBundle then carries).
    let name = format!("{}-pluggable", ns.name());
    let kubeconfig = injector_account(cluster, ns.name(), &name, dir.path()).await;
    let cert = cluster
        .issue_certificate("injector", &["127.0.0.1"])
        .unwrap();
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    std::fs::write(
        dir.path().join("anchors.pem"),
        cluster.connection().ca_pem(),
    )
    .unwrap();
    let injector = daprs_injector::start(injector_args(
        dir.path(),
        &[
            "--mode",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--namespace",
            ns.name(),
            "--tls-cert-file",
            cert_file.to_str().unwrap(),
            "--tls-key-file",
            key_file.to_str().unwrap(),
            "--webhook-configuration-name",
            &name,
        ],
    ))
    .await
    .unwrap();
    let url = format!("https://{}/mutate", injector.webhook_addr);
    let mwc: MutatingWebhookConfiguration = serde_json::from_value(webhook_configuration(
        &name,
        ns.name(),
        &url,
        Some(cluster.connection().ca_pem()),
    ))
    .unwrap();
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(cluster.client());
    mwcs.create(&PostParams::default(), &mwc).await.unwrap();

    ns.accepts(&pluggable_component(
        "redis-pluggable",
        &[],
        r#"{"image": "ghcr.io/example/redis-pluggable:1", "env": [{"name": "LOG", "value": "debug"}]}"#,
    ))
    .await;
    ns.accepts(&pluggable_component(
        "billing-queue",
        &["billing"],
        r#"{"image": "ghcr.io/example/billing-queue:1"}"#,
    ))
    .await;

    // Wait until the webhook answers and the injector's RBAC has reached the authorizer
    // (until then the listing is forbidden and the pod is denied, which the API server
    // reports as an error).
    let pods: Api<Pod> = Api::namespaced(ns.client(), ns.name());
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let billing: Pod = serde_json::from_value(dapr_pod(
        "billing",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "billing",
               "dapr.io/inject-pluggable-components": "true"}),
    ))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let billing = loop {
        match pods.create(&dry_run, &billing).await {
            // Kubernetes 1.35: the injector chose native sidecars.
            Ok(pod)
                if pod
                    .spec
                    .as_ref()
                    .unwrap()
                    .init_containers
                    .iter()
                    .flatten()
                    .any(|c| c.name == "daprd") =>
            {
                break serde_json::to_value(pod).unwrap();
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "the webhook never injected: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Scoped to billing: it gets both containers, as native sidecars ahead of daprd.
    let names: Vec<&str> = billing["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["billing-queue", "redis-pluggable", "daprd"],
        "in the API server's order (by name)"
    );

    // A Deployment of another app (plain sidecar, as Dapr injects it): its pod gets the
    // unscoped Component's container, set up as Dapr sets it up, and not the one scoped to
    // billing.
    ns.accepts(&deployment(
        "orders",
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders",
               "dapr.io/inject-pluggable-components": "true",
               "dapr.io/enable-native-sidecar": "false"}),
    ))
    .await;
    let pod = &wait_for_pods(&pods, "app=orders").await[0];
    assert!(
        container(pod, "containers", "billing-queue").is_none(),
        "scoped to another app: {pod:#}"
    );
    let plugged =
        container(pod, "containers", "redis-pluggable").expect("the component's container");
    assert_eq!(plugged["image"], "ghcr.io/example/redis-pluggable:1");
    let env = plugged["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "LOG", "value": "debug"})));
    assert!(env.contains(
        &json!({"name": "DAPR_COMPONENT_SOCKETS_FOLDER", "value": "/tmp/dapr-components-sockets"})
    ));
    let socket = json!({"name": "dapr-components-unix-domain-socket", "mountPath": "/tmp/dapr-components-sockets"});
    assert!(
        plugged["volumeMounts"]
            .as_array()
            .unwrap()
            .contains(&socket)
    );
    let daprd = container(pod, "containers", "daprd").expect("daprd");
    assert!(daprd["volumeMounts"].as_array().unwrap().contains(&socket));
    assert!(
        pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "dapr-components-unix-domain-socket"
                && v.get("emptyDir").is_some())
    );

    // A broken annotation on a Component in scope: the pod is refused, naming the Component.
    ns.accepts(&pluggable_component(
        "broken",
        &["orders"],
        r#"{"image": "x:1""#,
    ))
    .await;
    let message = ns
        .rejects(&dapr_pod(
            "orders-bare",
            json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders",
                   "dapr.io/inject-pluggable-components": "true"}),
        ))
        .await;
    assert!(
        message.contains(
            "Component \"broken\": annotation dapr.io/component-container is not valid JSON"
        ),
        "{message}"
    );

    mwcs.delete(&name, &DeleteParams::default()).await.unwrap();
    let _ = kubectl(
        cluster,
        &[
            "delete",
            "clusterrole,clusterrolebinding",
            &name,
            "--ignore-not-found",
        ],
        "",
    )
    .await;
    injector.stop().await;
}
