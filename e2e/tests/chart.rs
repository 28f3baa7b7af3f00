//! The user's path with the Helm chart, on the real API server with real `helm` and `kubectl`:
//! install (CRDs from the chart, lint, schema, server-side validation of every variant), the
//! control plane started from the pods the chart's Deployments create (as a kubelet would: their
//! volumes, env and args, and tokens of the chart's ServiceAccounts, so the chart's RBAC is all
//! they have), sentry bootstrapping the trust bundle, the injector applying the webhook's
//! caBundle, `helm test`, annotated Deployments getting injected pods whose daprd runs with
//! certificates from sentry and components from the operator, a Redis Component reaching the
//! running sidecars, one app invoking the other over mTLS, mistakes reported at
//! `kubectl apply`, HA switched on and off by `helm upgrade`, and `helm uninstall` leaving only
//! what is documented.
//!
//! The steps are the issue's (README "Kubernetes"): one function each, run in order by
//! [`the_user_path_with_the_chart`]. Needs `target/<profile>/{sentry,operator,injector,daprd}`
//! (`cargo test --workspace` builds them), `redis-server` and `curl` (scripts/sidecar-deps.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use daprs_e2e::workspace::{repo_root, workspace_binary};
use daprs_e2e::{Cluster, PodProcess, Redis, RunPod, TempNs, echo_app, has_component};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

const RELEASE: &str = "daprs";
const NAMESPACE: &str = "daprs-system";
const SIDECAR_IMAGE: &str = "ghcr.io/daprs/daprd:0.1.0";

fn chart_dir() -> PathBuf {
    repo_root().join("charts/daprs")
}

// ---------------------------------------------------------------------------------------------
// Checks that need no cluster.

/// The chart ships exactly the generated CRDs (`cargo run -p daprs-operator --bin crdgen`
/// writes `crds/`; copy them with `cp crds/*.yaml charts/daprs/crds/`).
#[test]
fn the_charts_crds_are_the_generated_ones() {
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let generated = repo_root().join("crds");
    let shipped = chart_dir().join("crds");
    assert_eq!(
        names(&generated),
        names(&shipped),
        "charts/daprs/crds/ must hold the files of crds/: run `cp crds/*.yaml charts/daprs/crds/`"
    );
    for name in names(&generated) {
        assert!(
            std::fs::read(generated.join(&name)).unwrap()
                == std::fs::read(shipped.join(&name)).unwrap(),
            "charts/daprs/crds/{name} differs from crds/{name}: run `cp crds/*.yaml charts/daprs/crds/`"
        );
    }
}

/// The chart's version and appVersion follow the workspace's.
#[test]
fn the_chart_version_is_the_workspace_version() {
    let cargo = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
    let version = cargo
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap();
    let chart = std::fs::read_to_string(chart_dir().join("Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("\nversion: {version}\n")),
        "{chart}"
    );
    assert!(
        chart.contains(&format!("\nappVersion: \"{version}\"\n")),
        "{chart}"
    );
}

/// docker/Dockerfile's build stage and scripts/test.sh build the same binaries the same way
/// (the test command is what exercises the Dockerfile's build stage).
#[test]
fn the_test_command_builds_what_the_dockerfile_builds() {
    let build = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let start = text
            .find("cargo build --profile dist --locked --target")
            .unwrap_or_else(|| panic!("{file} has no static cargo build"));
        text[start..]
            .split_whitespace()
            .take_while(|w| !w.starts_with("&&") && *w != "for")
            .filter(|w| *w != "\\")
            .map(|w| {
                w.replace("\"${TARGET}\"", "$T")
                    .replace("\"$MUSL_TARGET\"", "$T")
            })
            .collect()
    };
    let dockerfile = build("docker/Dockerfile");
    assert_eq!(dockerfile, build("scripts/test.sh"));
    for bin in ["sentry", "operator", "injector", "daprd"] {
        assert!(dockerfile.contains(&bin.to_owned()), "{dockerfile:?}");
    }
}

/// Every value in values.yaml is documented in docs/helm.md.
#[test]
fn every_value_is_documented() {
    let values = read_yaml(&chart_dir().join("values.yaml"));
    let docs = std::fs::read_to_string(repo_root().join("docs/helm.md")).unwrap();
    let mut missing = Vec::new();
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            // resources and the like are maps documented as a whole
            Value::Object(map) if !prefix.ends_with("resources") && !map.is_empty() => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut keys = Vec::new();
    walk("", &values, &mut keys);
    for key in keys {
        if !docs.contains(&format!("`{key}`")) {
            missing.push(key);
        }
    }
    assert!(missing.is_empty(), "not in docs/helm.md: {missing:?}");
}

fn read_yaml(path: &Path) -> Value {
    yaml_to_json(&std::fs::read_to_string(path).unwrap())
}

fn helm_path() -> PathBuf {
    daprs_e2e::binaries::bin_dir().unwrap().join("helm")
}

/// YAML to JSON by helm (`toJson` of the values), the YAML reader the chart is read with.
fn yaml_to_json(yaml: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("c/templates")).unwrap();
    std::fs::write(
        dir.path().join("c/Chart.yaml"),
        "apiVersion: v2\nname: c\nversion: 0.0.1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("c/templates/out.yaml"),
        "{{ .Values | toJson }}",
    )
    .unwrap();
    std::fs::write(dir.path().join("v.yaml"), yaml).unwrap();
    let out = std::process::Command::new(helm_path())
        .args(["template", "x"])
        .arg(dir.path().join("c"))
        .arg("-f")
        .arg(dir.path().join("v.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let json = text
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("helm printed the values");
    serde_json::from_str(json).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Tools.

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn run(mut cmd: std::process::Command, stdin: Option<&str>) -> Output {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut cmd = tokio::process::Command::from(cmd);
    let mut child = cmd.spawn().expect("the command starts");
    {
        use tokio::io::AsyncWriteExt;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
    }
    let out = child.wait_with_output().await.unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn helm(cluster: &Cluster, args: &[&str]) -> Output {
    let mut cmd = cluster.helm();
    cmd.args(args);
    run(cmd, None).await
}

async fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = cluster.kubectl();
    cmd.args(args);
    run(cmd, stdin).await
}

fn must(what: &str, out: Output) -> Output {
    assert!(
        out.ok,
        "{what} failed:\n--- stdout\n{}\n--- stderr\n{}",
        out.stdout, out.stderr
    );
    out
}

async fn eventually<T, F, Fut>(seconds: u64, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The ports the control plane listens on: every process shares this machine's network, so
/// each gets its own (a real cluster gives each pod its own network namespace).
struct Ports {
    sentry: [u16; 3],
    operator: [u16; 4],
    injector: [u16; 3],
}

impl Ports {
    fn new() -> Self {
        Self {
            sentry: [free_port(), free_port(), free_port()],
            operator: [free_port(), free_port(), free_port(), free_port()],
            injector: [free_port(), free_port(), free_port()],
        }
    }

    /// The values file of the test: the testing aid (control plane on 127.0.0.1) and ports.
    fn values(&self) -> String {
        let [sentry, sentry_healthz, sentry_metrics] = self.sentry;
        let [api, webhook, operator_healthz, operator_metrics] = self.operator;
        let [injector, injector_healthz, injector_metrics] = self.injector;
        format!(
            "testing:\n  controlPlaneHost: 127.0.0.1\n\
             dapr_sentry:\n  ports: {{targetPort: {sentry}}}\n  healthzPort: {sentry_healthz}\n  metricsPort: {sentry_metrics}\n\
             dapr_operator:\n  ports: {{targetPort: {api}}}\n  webhookPort: {webhook}\n  healthzPort: {operator_healthz}\n  metricsPort: {operator_metrics}\n\
             dapr_sidecar_injector:\n  ports: {{targetPort: {injector}}}\n  healthzPort: {injector_healthz}\n  metricsPort: {injector_metrics}\n"
        )
    }
}

/// What the story carries from step to step.
struct Story {
    cluster: &'static Cluster,
    dir: tempfile::TempDir,
    values: PathBuf,
    ports: Ports,
    apps: TempNs,
}

/// The running control plane: one process per component, started from a pod of its Deployment.
struct ControlPlane {
    sentry: PodProcess,
    operator: PodProcess,
    injector: PodProcess,
}

impl Story {
    fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    fn helm_install_args(&self) -> Vec<String> {
        [
            "install",
            RELEASE,
            chart_dir().to_str().unwrap(),
            "-n",
            NAMESPACE,
            "--create-namespace",
            "-f",
            self.values.to_str().unwrap(),
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// The newest pod of a control-plane Deployment (selector `app=<app>`).
    async fn control_plane_pod(&self, app: &str) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.client(), NAMESPACE);
        eventually(30, &format!("a pod of {app}"), || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            list.items
                .into_iter()
                .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0))
        })
        .await
    }

    /// Runs `container` of `pod` as `binary` with a token of the pod's ServiceAccount (bound
    /// to the pod, as the kubelet's): the chart's RBAC is all it has.
    async fn run_control_plane_pod(&self, pod: &Pod, binary: &str, package: &str) -> PodProcess {
        let conn = self.cluster.connection();
        let token = conn.pod_token(pod, &[], None).await.unwrap();
        let kubeconfig = self.dir.path().join(format!(
            "{}.kubeconfig",
            pod.metadata.name.as_ref().unwrap()
        ));
        conn.write_kubeconfig_with_token(&token, &kubeconfig)
            .unwrap();
        RunPod::new(conn, pod, workspace_binary(binary, package).unwrap())
            .env("KUBECONFIG", kubeconfig.to_str().unwrap())
            .start()
            .await
            .unwrap()
    }

    async fn healthz(&self, port: u16) -> bool {
        reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    async fn trust_anchors(&self) -> Option<String> {
        let cms: Api<ConfigMap> = Api::namespaced(self.client(), NAMESPACE);
        cms.get_opt("dapr-trust-bundle")
            .await
            .ok()??
            .data?
            .get("ca.crt")
            .cloned()
            .filter(|a| !a.is_empty())
    }

    async fn injector_ca_bundle(&self) -> Option<String> {
        let mwcs: Api<MutatingWebhookConfiguration> = Api::all(self.client());
        let mwc = mwcs.get_opt("dapr-sidecar-injector").await.ok()??;
        let bundle = mwc.webhooks?.first()?.client_config.ca_bundle.clone()?;
        String::from_utf8(bundle.0).ok()
    }

    async fn validator_ca_bundle(&self) -> Option<String> {
        let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(self.client());
        let vwc = vwcs.get_opt("daprs-component-validator").await.ok()??;
        let bundle = vwc.webhooks?.first()?.client_config.ca_bundle.clone()?;
        String::from_utf8(bundle.0).ok()
    }
}

fn app_deployment(name: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("        {k}: \"{v}\"\n"))
        .collect();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n      annotations:\n{annotations}    spec:\n      containers:\n        - name: app\n          image: ghcr.io/example/{name}:1\n          ports: [{{containerPort: 8080}}]\n"
    )
}

/// The `daprd` container of an injected pod (a native sidecar is an init container).
fn daprd_container(pod: &Pod) -> Option<Value> {
    let spec = serde_json::to_value(pod.spec.as_ref()?).ok()?;
    ["initContainers", "containers"].iter().find_map(|list| {
        spec[list]
            .as_array()?
            .iter()
            .find(|c| c["name"] == "daprd")
            .cloned()
    })
}

// ---------------------------------------------------------------------------------------------
// The story.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_user_path_with_the_chart() {
    daprs_api::tls::install_default_provider();
    let cluster = Cluster::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let values = dir.path().join("values.yaml");
    std::fs::write(&values, ports.values()).unwrap();
    let apps = TempNs::create(cluster.connection()).await.unwrap();
    let story = Story {
        cluster,
        dir,
        values,
        ports,
        apps,
    };

    step1_install(&story).await;
    let control_plane = step2_control_plane(&story).await;
    step2_helm_test_finds_the_control_plane_answering(&story).await;
    let pods = step3_pods_are_injected(&story).await;
    let mut sidecars = step3_each_pods_daprd_runs(&story, &pods).await;
    let redis = Redis::start().unwrap();
    step4_a_component_reaches_the_running_sidecars(&story, &mut sidecars, &redis).await;
    step5_orders_invokes_checkout_over_mtls(&sidecars).await;
    sidecars.stop().await;
    step6_mistakes_are_reported(&story).await;
    let control_plane = step7_upgrade_toggles_ha(&story, control_plane).await;
    step7_uninstall_leaves_nothing_behind(&story, control_plane).await;
}

/// 1. `helm lint` is clean, the schema refuses typos, `helm install` puts the CRDs and every
///    object through the API server's validation, and the other variants (HA, bring-your-own
///    CA, a Dapr-style values file) pass a server-side dry run.
async fn step1_install(story: &Story) {
    let cluster = story.cluster;
    let chart = chart_dir();
    let chart = chart.to_str().unwrap();
    let lint = must(
        "helm lint",
        helm(cluster, &["lint", chart, "--strict"]).await,
    );
    assert!(
        lint.stdout.contains("0 chart(s) failed")
            && !lint.stdout.contains("[WARNING]")
            && !lint.stdout.contains("[ERROR]"),
        "{}",
        lint.stdout
    );

    // A misspelled value fails, naming it.
    let typo = helm(cluster, &["lint", chart, "--set", "global.ha.enabeld=true"]).await;
    assert!(!typo.ok, "a typo in values was accepted");
    let said = format!("{}{}", typo.stdout, typo.stderr);
    assert!(said.contains("enabeld"), "{said}");

    // Install: Helm applies the chart's CRDs first, then every object.
    let args = story.helm_install_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let install = must("helm install", helm(cluster, &args).await);
    assert!(
        !install.stdout.contains("helm upgrade") && install.stdout.contains("caBundle current"),
        "the NOTES ask for no upgrade: the operator keeps the Component webhook's caBundle: {}",
        install.stdout
    );
    for crd in [
        "components.dapr.io",
        "configurations.dapr.io",
        "subscriptions.dapr.io",
        "resiliencies.dapr.io",
        "httpendpoints.dapr.io",
    ] {
        must(
            "the CRD is established",
            kubectl(
                cluster,
                &[
                    "wait",
                    "--for=condition=Established",
                    "--timeout=30s",
                    &format!("crd/{crd}"),
                ],
                None,
            )
            .await,
        );
    }

    // Every variant the chart renders is valid for this API server.
    let root_pem = cluster.connection().ca_pem().to_owned();
    let pem_file = story.dir.path().join("root.pem");
    std::fs::write(&pem_file, &root_pem).unwrap();
    let pem = format!("={}", pem_file.display());
    let dapr_style = story.dir.path().join("dapr-values.yaml");
    std::fs::write(
        &dapr_style,
        "global:\n  registry: registry.example.com/dapr\n  tag: 1.16.0\n  logAsJson: true\n  imagePullSecrets: regcred\n  mtls:\n    workloadCertTTL: 12h\n    allowedClockSkew: 5m\ndapr_sidecar_injector:\n  webhookFailurePolicy: Fail\n  sidecarDropALLCapabilities: true\n  nativeSidecar: false\ndapr_operator:\n  logLevel: debug\n",
    )
    .unwrap();
    let variants: Vec<Vec<String>> = vec![
        vec![],
        vec!["--set".into(), "global.ha.enabled=true".into()],
        vec![
            "--set-file".into(),
            format!("dapr_sentry.tls.root.certPEM{pem}"),
            "--set-file".into(),
            format!("dapr_sentry.tls.issuer.certPEM{pem}"),
            "--set-file".into(),
            format!("dapr_sentry.tls.issuer.keyPEM{pem}"),
        ],
        vec!["-f".into(), dapr_style.display().to_string()],
    ];
    // In a namespace of their own: applied over the installed release, server-side apply would
    // merge lists (container ports) of two different renderings.
    let check_ns = TempNs::create(cluster.connection()).await.unwrap();
    for variant in variants {
        let mut args = vec![
            "template".to_owned(),
            "check".into(),
            chart.into(),
            "-n".into(),
            check_ns.name().into(),
        ];
        args.extend(variant.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let rendered = must("helm template", helm(cluster, &args).await);
        // The helm test pod is rendered by `template` too; a dry run checks it as well.
        must(
            &format!("server-side dry run of {variant:?}"),
            kubectl(
                cluster,
                &[
                    "apply",
                    "--dry-run=server",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=chart-check",
                    "-f",
                    "-",
                ],
                Some(&rendered.stdout),
            )
            .await,
        );
    }
    // A partial bring-your-own CA is refused with what to do.
    let partial = helm(
        cluster,
        &[
            "template",
            RELEASE,
            chart,
            "--set-file",
            &format!("dapr_sentry.tls.root.certPEM{pem}"),
        ],
    )
    .await;
    assert!(
        !partial.ok && partial.stderr.contains("set all of root.certPEM"),
        "{}",
        partial.stderr
    );
}

/// 2. The control plane runs from its pods with the chart's ServiceAccounts: sentry creates the
///    trust bundle, the operator and the injector get certificates from it, the injector
///    applies the webhook's caBundle (owning only that field), and the operator does the same
///    for the Component webhook, so a broken Component is refused right after `helm install`.
async fn step2_control_plane(story: &Story) -> ControlPlane {
    let sentry_pod = story.control_plane_pod("dapr-sentry").await;
    let sentry = story
        .run_control_plane_pod(&sentry_pod, "sentry", "daprs-sentry")
        .await;
    let anchors = eventually(60, "sentry to create the trust bundle", || async {
        story.trust_anchors().await
    })
    .await;
    assert!(anchors.contains("BEGIN CERTIFICATE"), "{anchors}");
    let secrets: Api<Secret> = Api::namespaced(story.client(), NAMESPACE);
    let secret = secrets.get("dapr-trust-bundle").await.unwrap();
    let data = secret.data.unwrap();
    for key in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(data.contains_key(key), "the Secret lacks {key}");
    }
    assert_eq!(data["ca.crt"].0, anchors.as_bytes());
    let [_, sentry_healthz, _] = story.ports.sentry;
    eventually(30, "sentry's healthz", || async {
        story.healthz(sentry_healthz).await.then_some(())
    })
    .await;

    // The operator and the injector mount the trust bundle sentry just created.
    let operator_pod = story.control_plane_pod("dapr-operator").await;
    let operator = story
        .run_control_plane_pod(&operator_pod, "operator", "daprs-operator")
        .await;
    let injector_pod = story.control_plane_pod("dapr-sidecar-injector").await;
    let injector = story
        .run_control_plane_pod(&injector_pod, "injector", "daprs-injector")
        .await;
    let control_plane = ControlPlane {
        sentry,
        operator,
        injector,
    };

    let bundle = eventually(60, "the injector to apply the caBundle", || async {
        story.injector_ca_bundle().await
    })
    .await;
    assert_eq!(bundle, anchors, "caBundle = the trust anchors");
    let mwcs: Api<MutatingWebhookConfiguration> = Api::all(story.client());
    let mwc = mwcs.get("dapr-sidecar-injector").await.unwrap();
    let managed = serde_json::to_value(mwc.metadata.managed_fields.unwrap()).unwrap();
    let injector_fields = managed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "daprs-injector")
        .expect("the injector's field manager")["fieldsV1"]
        .to_string();
    assert!(injector_fields.contains("f:caBundle"), "{injector_fields}");
    assert!(!injector_fields.contains("f:rules"), "{injector_fields}");

    let [_, _, operator_healthz, _] = story.ports.operator;
    let [_, injector_healthz, _] = story.ports.injector;
    for (what, port) in [
        ("operator", operator_healthz),
        ("injector", injector_healthz),
    ] {
        eventually(90, &format!("the {what}'s healthz"), || async {
            story.healthz(port).await.then_some(())
        })
        .await;
    }

    // The operator applied (upgrades) the CRDs Helm installed from the chart.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(story.client());
    eventually(30, "the operator to apply the CRDs", || async {
        let crd = crds.get("components.dapr.io").await.ok()?;
        let managers = serde_json::to_value(crd.metadata.managed_fields?).ok()?;
        managers
            .as_array()?
            .iter()
            .any(|m| m["manager"] == "daprs-operator")
            .then_some(())
    })
    .await;

    // No `helm upgrade`: the operator's leader applies the Component webhook's caBundle
    // (server-side apply, field manager daprs-operator, owning only that field).
    let bundle = eventually(
        60,
        "the operator to apply the Component webhook's caBundle",
        || async { story.validator_ca_bundle().await },
    )
    .await;
    assert_eq!(bundle, anchors, "caBundle = the trust anchors");
    let vwcs: Api<ValidatingWebhookConfiguration> = Api::all(story.client());
    let vwc = vwcs.get("daprs-component-validator").await.unwrap();
    let managed = serde_json::to_value(vwc.metadata.managed_fields.unwrap()).unwrap();
    let operator_fields = managed
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "daprs-operator")
        .expect("the operator's field manager")["fieldsV1"]
        .to_string();
    assert!(operator_fields.contains("f:caBundle"), "{operator_fields}");
    assert!(!operator_fields.contains("f:rules"), "{operator_fields}");
    a_broken_component_is_refused(story).await;
    control_plane
}

/// 2 (continued). `helm test` creates its pod; run as a kubelet would (its container here is
/// the local curl, the in-cluster Service names mapped to where the control plane listens),
/// its exit status becomes the pod's phase, which is what `helm test` reports.
async fn step2_helm_test_finds_the_control_plane_answering(story: &Story) {
    let mut cmd = story.cluster.helm();
    cmd.args(["test", RELEASE, "-n", NAMESPACE, "--timeout", "90s"]);
    let helm_test = tokio::spawn(run(cmd, None));

    let pods: Api<Pod> = Api::namespaced(story.client(), NAMESPACE);
    let name = format!("{RELEASE}-test-control-plane");
    let pod = eventually(30, "helm test's pod", || async {
        pods.get_opt(&name).await.ok()?
    })
    .await;
    let curl = which("curl");
    let [sentry, ..] = story.ports.sentry;
    let [_, webhook, ..] = story.ports.operator;
    let [injector, ..] = story.ports.injector;
    let svc = |name: &str, port: u16| format!("{name}.{NAMESPACE}.svc:{port}");
    let mut process = RunPod::new(story.cluster.connection(), &pod, curl)
        .map_address(svc("dapr-sentry", 443), format!("127.0.0.1:{sentry}"))
        .map_address(
            svc("dapr-sidecar-injector", 443),
            format!("127.0.0.1:{injector}"),
        )
        .map_address(svc("dapr-webhook", 443), format!("127.0.0.1:{webhook}"))
        .start()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), process.child().wait())
        .await
        .expect("curl finishes")
        .unwrap();
    let log = process.logs();
    assert!(status.success(), "the helm test pod failed: {log}");
    assert_eq!(log.matches(" answered ").count(), 3, "{log}");
    // What the kubelet reports when the container exits 0.
    pods.patch_status(
        &name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"status": {"phase": "Succeeded"}})),
    )
    .await
    .unwrap();
    let out = must("helm test", helm_test.await.unwrap());
    assert!(out.stdout.contains("Succeeded"), "{}", out.stdout);
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!("{program} is not on PATH (scripts/sidecar-deps.sh installs curl)")
        })
}

/// 3 (up to injection). Two annotated Deployments, applied as a user would, get pods with
/// daprd (the chart's sidecar image, the control plane's addresses); the operator creates
/// their `<app-id>-dapr` Services and publishes the trust anchors into their namespace.
async fn step3_pods_are_injected(story: &Story) -> InjectedPods {
    let ns = story.apps.name();
    // checkout's app: a small HTTP server here that echoes what it gets (step 5).
    let checkout_app_port = echo_app().await.unwrap().to_string();
    for (app, app_port) in [("orders", None), ("checkout", Some(&checkout_app_port))] {
        let mut annotations = vec![("dapr.io/enabled", "true"), ("dapr.io/app-id", app)];
        if let Some(port) = app_port {
            annotations.push(("dapr.io/app-port", port.as_str()));
        }
        let manifest = app_deployment(app, &annotations);
        let out = must(
            "kubectl apply",
            kubectl(
                story.cluster,
                &["apply", "-n", ns, "-f", "-"],
                Some(&manifest),
            )
            .await,
        );
        assert!(!out.stderr.contains("Warning"), "{}", out.stderr);
    }
    let pods: Api<Pod> = Api::namespaced(story.client(), ns);
    let mut injected = Vec::new();
    for app in ["orders", "checkout"] {
        let pod = eventually(60, &format!("an injected pod of {app}"), || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            list.items
                .into_iter()
                .find(|p| daprd_container(p).is_some())
        })
        .await;
        let daprd = daprd_container(&pod).unwrap();
        assert_eq!(daprd["image"], SIDECAR_IMAGE);
        let args = daprd["args"].to_string();
        for expected in [
            format!("\"--app-id\",\"{app}\""),
            format!("\"--control-plane-address\",\"dapr-api.{NAMESPACE}.svc.cluster.local:443\""),
            format!("\"--sentry-address\",\"dapr-sentry.{NAMESPACE}.svc.cluster.local:443\""),
        ] {
            assert!(args.contains(&expected), "{expected} not in {args}");
        }
        let services: Api<Service> = Api::namespaced(story.client(), ns);
        eventually(
            60,
            &format!("the operator to create {app}-dapr"),
            || async { services.get_opt(&format!("{app}-dapr")).await.ok()? },
        )
        .await;
        injected.push(pod);
    }
    let anchors = story.trust_anchors().await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(story.client(), ns);
    eventually(60, "the operator to publish the trust anchors", || async {
        let cm = cms.get_opt("dapr-trust-bundle").await.ok()??;
        (cm.data?.get("ca.crt")? == &anchors).then_some(())
    })
    .await;
    let checkout = injected.pop().unwrap();
    let orders = injected.pop().unwrap();
    InjectedPods { orders, checkout }
}

struct InjectedPods {
    orders: Pod,
    checkout: Pod,
}

/// The running sidecars of the two injected pods.
struct Sidecars {
    orders: PodProcess,
    orders_http: u16,
    checkout: PodProcess,
    checkout_http: u16,
    /// The name orders resolves checkout's sidecar by (`checkout-dapr.<ns>.svc...:50002`).
    checkout_name: String,
    checkout_ip: std::net::Ipv4Addr,
}

impl Sidecars {
    async fn stop(self) {
        self.orders.stop().await;
        self.checkout.stop().await;
    }
}

/// The injector's internal (sidecar-to-sidecar) port, kept in every daprd started here.
const INTERNAL_PORT: u16 = 50002;

/// A random loopback address (all of 127/8 is local on Linux), standing for a pod's IP.
fn loopback_ip() -> std::net::Ipv4Addr {
    use rand::Rng;
    let mut rng = rand::rng();
    std::net::Ipv4Addr::new(
        127,
        rng.random_range(1..=254),
        rng.random_range(0..=255),
        rng.random_range(1..=254),
    )
}

/// 3 (continued). The harness runs each injected pod's daprd as a kubelet would (its pod-bound
/// token, the trust anchors from the ConfigMap the operator published), with the chart's
/// control-plane addresses mapped to where the control plane runs. Each gets its certificate
/// from sentry (TokenReview of the pod's token) and connects to the operator. Pods share this
/// machine's network, so the API ports are free ports on 127.0.0.1 and each internal server
/// is port 50002 (the injector's) of its own loopback address; orders is told checkout's
/// kubernetes name through daprd's testing aid `DAPRS_TESTING_RESOLVE_MAP` (no cluster DNS).
async fn step3_each_pods_daprd_runs(story: &Story, pods: &InjectedPods) -> Sidecars {
    let ns = story.apps.name();
    let checkout_ip = loopback_ip();
    let checkout_name = format!("checkout-dapr.{ns}.svc.cluster.local:{INTERNAL_PORT}");
    let (orders, orders_http) = run_daprd(
        story,
        &pods.orders,
        loopback_ip(),
        &[(
            "DAPRS_TESTING_RESOLVE_MAP",
            format!("{checkout_name}={checkout_ip}:{INTERNAL_PORT}"),
        )],
    )
    .await;
    let (checkout, checkout_http) = run_daprd(story, &pods.checkout, checkout_ip, &[]).await;
    for (app, process) in [("orders", &orders), ("checkout", &checkout)] {
        let id = format!("spiffe://public/ns/{ns}/{app}");
        assert!(
            process.logs().contains(&id),
            "{app}'s certificate from sentry ({id}):\n{}",
            process.logs()
        );
    }
    Sidecars {
        orders,
        orders_http,
        checkout,
        checkout_http,
        checkout_name,
        checkout_ip,
    }
}

async fn run_daprd(
    story: &Story,
    pod: &Pod,
    internal_ip: std::net::Ipv4Addr,
    env: &[(&str, String)],
) -> (PodProcess, u16) {
    let [sentry, ..] = story.ports.sentry;
    let [api, ..] = story.ports.operator;
    let run = RunPod::new(
        story.cluster.connection(),
        pod,
        workspace_binary("daprd", "daprs-sidecar").unwrap(),
    )
    .map_address(
        format!("dapr-sentry.{NAMESPACE}.svc.cluster.local:443"),
        format!("127.0.0.1:{sentry}"),
    )
    .map_address(
        format!("dapr-api.{NAMESPACE}.svc.cluster.local:443"),
        format!("127.0.0.1:{api}"),
    );
    let daprd = run
        .envs(env.iter().cloned())
        .start_daprd(internal_ip)
        .await
        .unwrap();
    assert_eq!(
        daprd.internal_port(),
        Some(INTERNAL_PORT),
        "the injector's internal port: {:?}",
        daprd.process.args()
    );
    (daprd.process, daprd.http_port)
}

/// 4. `kubectl apply` of a Redis state store (a real redis-server) reaches both running
///    sidecars through the operator, without a restart; state round-trips and lands in Redis;
///    `kubectl get components` shows it Ready and loaded by both apps.
async fn step4_a_component_reaches_the_running_sidecars(
    story: &Story,
    sidecars: &mut Sidecars,
    redis: &Redis,
) {
    let ns = story.apps.name();
    let component = format!(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n    - name: redisHost\n      value: 127.0.0.1:{}\n",
        redis.port
    );
    must(
        "kubectl apply (Component)",
        kubectl(
            story.cluster,
            &["apply", "-n", ns, "-f", "-"],
            Some(&component),
        )
        .await,
    );
    let client = reqwest::Client::new();
    for (app, http) in [
        ("orders", sidecars.orders_http),
        ("checkout", sidecars.checkout_http),
    ] {
        let base = format!("http://127.0.0.1:{http}");
        eventually(60, &format!("the Redis store in {app}'s daprd"), || async {
            has_component(&base, "statestore", "state.redis")
                .await
                .then_some(())
        })
        .await;
    }
    let base = format!("http://127.0.0.1:{}", sidecars.orders_http);
    let saved = client
        .post(format!("{base}/v1.0/state/statestore"))
        .json(&json!([{"key": "order-1", "value": {"total": 12}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(saved.status(), 204, "{}", saved.text().await.unwrap());
    assert!(redis.exists("orders||order-1").unwrap(), "saved in Redis");
    let got: Value = client
        .get(format!("{base}/v1.0/state/statestore/order-1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, json!({"total": 12}));
    for (app, process) in [
        ("orders", &mut sidecars.orders),
        ("checkout", &mut sidecars.checkout),
    ] {
        assert!(
            process.child().try_wait().unwrap().is_none(),
            "{app}'s daprd never restarted"
        );
    }
    let table = eventually(60, "READY True, LOADED 2", || async {
        let out = kubectl(
            story.cluster,
            &["get", "components", "statestore", "-n", ns, "--no-headers"],
            None,
        )
        .await;
        let cols: Vec<_> = out.stdout.split_whitespace().collect();
        (cols.get(2) == Some(&"True") && cols.get(3) == Some(&"2")).then_some(out.stdout)
    })
    .await;
    assert!(table.contains("state.redis"), "{table}");
    let out = must(
        "kubectl get component -o json",
        kubectl(
            story.cluster,
            &["get", "components", "statestore", "-n", ns, "-o", "json"],
            None,
        )
        .await,
    );
    let component: Value = serde_json::from_str(&out.stdout).unwrap();
    let apps: BTreeSet<&str> = component["status"]["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["appId"].as_str())
        .collect();
    assert_eq!(apps, BTreeSet::from(["checkout", "orders"]), "{component}");
}

/// 5. orders invokes checkout through the sidecars: by checkout's kubernetes name, over mutual
///    TLS with both SVIDs from sentry; checkout's app sees the call and who made it.
async fn step5_orders_invokes_checkout_over_mtls(sidecars: &Sidecars) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/v1.0/invoke/checkout/method/pay?x=1",
            sidecars.orders_http
        ))
        .header("content-type", "application/json")
        .header("x-order", "order-1")
        .body(r#"{"amount":12}"#)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(
        status,
        200,
        "{text}\norders:\n{}\ncheckout:\n{}",
        sidecars.orders.logs(),
        sidecars.checkout.logs()
    );
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(seen["method"], "POST", "{seen}");
    assert_eq!(seen["path"], "/pay", "{seen}");
    assert_eq!(seen["body"], r#"{"amount":12}"#, "{seen}");
    assert_eq!(seen["headers"]["dapr-caller-app-id"], "orders", "{seen}");
    assert_eq!(seen["headers"]["x-order"], "order-1", "{seen}");
    let logs = sidecars.orders.logs();
    assert!(
        logs.contains(&sidecars.checkout_name)
            && logs.contains(&format!("{}:{INTERNAL_PORT}", sidecars.checkout_ip)),
        "orders resolved {}:\n{logs}",
        sidecars.checkout_name
    );
}

/// 6. A misspelled annotation is a warning in `kubectl apply`'s output; a broken Component is
///    refused with the field and the nearest valid name.
async fn step6_mistakes_are_reported(story: &Story) {
    let ns = story.apps.name();
    let typo = app_deployment(
        "typo",
        &[
            ("dapr.io/enabled", "true"),
            ("dapr.io/app-id", "typo"),
            ("dapr.io/app-prot", "8080"),
        ],
    );
    let out = must(
        "kubectl apply (typo)",
        kubectl(story.cluster, &["apply", "-n", ns, "-f", "-"], Some(&typo)).await,
    );
    assert!(
        out.stderr.contains("Warning") && out.stderr.contains("dapr.io/app-port"),
        "no warning naming the right annotation: {}",
        out.stderr
    );

    a_broken_component_is_refused(story).await;
}

/// A Component missing `redisHost` (misspelled `redisHots`) is refused by the operator's
/// webhook, naming the field and the misspelling.
async fn a_broken_component_is_refused(story: &Story) {
    let ns = story.apps.name();
    let broken = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: statestore\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n    - name: redisHots\n      value: localhost:6379\n";
    // The API server picks up webhook configurations after a moment.
    let refused = eventually(30, "the Component webhook to refuse", || async {
        let out = kubectl(story.cluster, &["apply", "-n", ns, "-f", "-"], Some(broken)).await;
        (!out.ok && out.stderr.contains("denied")).then_some(out.stderr)
    })
    .await;
    assert!(
        refused.contains("redisHost") && refused.contains("redisHots"),
        "{refused}"
    );
}

/// 7. `helm upgrade` switches HA on (replicas, PodDisruptionBudgets, anti-affinity) and off
///    again without touching selectors or the runtime-owned caBundle; a control plane started
///    from the HA pods works.
async fn step7_upgrade_toggles_ha(story: &Story, control_plane: ControlPlane) -> ControlPlane {
    let deployments: Api<Deployment> = Api::namespaced(story.client(), NAMESPACE);
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(story.client(), NAMESPACE);
    let anchors = story.trust_anchors().await.unwrap();
    let selector =
        |d: &Deployment| serde_json::to_value(&d.spec.as_ref().unwrap().selector).unwrap();
    let before: Vec<Value> = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(selector)
        .collect();
    let old_injector_pods: Vec<String> = Api::<Pod>::namespaced(story.client(), NAMESPACE)
        .list(&ListParams::default().labels("app=dapr-sidecar-injector"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();

    let upgrade = |ha: &'static str| async move {
        must(
            &format!("helm upgrade global.ha.enabled={ha}"),
            helm(
                story.cluster,
                &[
                    "upgrade",
                    RELEASE,
                    chart_dir().to_str().unwrap(),
                    "-n",
                    NAMESPACE,
                    "--reuse-values",
                    "--set",
                    &format!("global.ha.enabled={ha}"),
                ],
            )
            .await,
        );
    };
    upgrade("true").await;
    for name in ["dapr-sentry", "dapr-operator", "dapr-sidecar-injector"] {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3), "{name}");
        let affinity =
            serde_json::to_value(&d.spec.unwrap().template.spec.unwrap().affinity).unwrap();
        assert!(
            affinity["podAntiAffinity"].is_object(),
            "{name}: {affinity}"
        );
    }
    let names: BTreeSet<String> = pdbs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "dapr-operator-disruption-budget".to_owned(),
            "dapr-sentry-budget".to_owned(),
            "dapr-sidecar-injector-disruption-budget".to_owned(),
        ])
    );
    assert_eq!(story.injector_ca_bundle().await.as_deref(), Some(&*anchors));
    assert_eq!(
        story.validator_ca_bundle().await.as_deref(),
        Some(&*anchors)
    );

    // The injector from a pod of the HA template (the new ReplicaSet) takes over.
    let ControlPlane {
        sentry,
        operator,
        injector,
    } = control_plane;
    injector.stop().await;
    // New pods of the HA template (the old ReplicaSet may be scaled up too, proportionally).
    let pods: Api<Pod> = Api::namespaced(story.client(), NAMESPACE);
    let ha_pod = eventually(30, "a pod of the HA template", || async {
        let list = pods
            .list(&ListParams::default().labels("app=dapr-sidecar-injector"))
            .await
            .ok()?;
        list.items.into_iter().find(|p| {
            !old_injector_pods.contains(p.metadata.name.as_ref().unwrap())
                && serde_json::to_value(&p.spec.as_ref().unwrap().affinity).unwrap()
                    ["podAntiAffinity"]
                    .is_object()
        })
    })
    .await;
    let injector = story
        .run_control_plane_pod(&ha_pod, "injector", "daprs-injector")
        .await;
    let [_, injector_healthz, _] = story.ports.injector;
    eventually(90, "the HA injector's healthz", || async {
        story.healthz(injector_healthz).await.then_some(())
    })
    .await;
    let ns = story.apps.name();
    must(
        "kubectl apply",
        kubectl(
            story.cluster,
            &["apply", "-n", ns, "-f", "-"],
            Some(&app_deployment(
                "payments",
                &[("dapr.io/enabled", "true"), ("dapr.io/app-id", "payments")],
            )),
        )
        .await,
    );
    let pods: Api<Pod> = Api::namespaced(story.client(), ns);
    eventually(60, "an injected pod of payments", || async {
        let list = pods
            .list(&ListParams::default().labels("app=payments"))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| daprd_container(p).is_some())
    })
    .await;

    upgrade("false").await;
    for name in ["dapr-sentry", "dapr-operator", "dapr-sidecar-injector"] {
        let d = deployments.get(name).await.unwrap();
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1), "{name}");
    }
    assert!(
        pdbs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "the PodDisruptionBudgets are gone"
    );
    let after: Vec<Value> = deployments
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(selector)
        .collect();
    assert_eq!(before, after, "selectors never change");
    assert_eq!(story.injector_ca_bundle().await.as_deref(), Some(&*anchors));
    ControlPlane {
        sentry,
        operator,
        injector,
    }
}

/// 7. `helm uninstall` removes everything it installed, cluster-scoped objects included; what
///    stays is documented (docs/helm.md): the CRDs and custom resources, and what the control
///    plane created at run time (the CA, the trust-anchor copies, the leader Lease).
async fn step7_uninstall_leaves_nothing_behind(story: &Story, control_plane: ControlPlane) {
    let cluster = story.cluster;
    must(
        "helm uninstall",
        helm(
            cluster,
            &[
                "uninstall",
                RELEASE,
                "-n",
                NAMESPACE,
                "--wait",
                "--timeout",
                "60s",
            ],
        )
        .await,
    );
    control_plane.injector.stop().await;
    control_plane.operator.stop().await;
    control_plane.sentry.stop().await;

    let instance = format!("app.kubernetes.io/instance={RELEASE}");
    let left = must(
        "kubectl get",
        kubectl(
            cluster,
            &[
                "get",
                "deployments,replicasets,pods,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets,configmaps,secrets,configurations.dapr.io,clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingwebhookconfigurations",
                "-A",
                "-l",
                &instance,
                "-o",
                "name",
            ],
            None,
        )
        .await,
    );
    assert_eq!(left.stdout.trim(), "", "left behind by helm uninstall");
    for (kind, name) in [
        ("mutatingwebhookconfiguration", "dapr-sidecar-injector"),
        (
            "validatingwebhookconfiguration",
            "daprs-component-validator",
        ),
        ("clusterrole", "dapr-operator-admin"),
        ("clusterrole", "dapr-sentry"),
        ("clusterrole", "dapr-injector"),
    ] {
        let out = kubectl(cluster, &["get", kind, name], None).await;
        assert!(!out.ok, "{kind}/{name} is still there");
    }
    let remaining = must(
        "kubectl get",
        kubectl(
            cluster,
            &[
                "get",
                "deployments,pods,services,serviceaccounts,roles,rolebindings,configmaps,secrets,configurations.dapr.io,leases",
                "-n",
                NAMESPACE,
                "-o",
                "name",
            ],
            None,
        )
        .await,
    );
    let remaining: BTreeSet<&str> = remaining.stdout.lines().collect();
    let documented = BTreeSet::from([
        // Kubernetes' own in every namespace.
        "serviceaccount/default",
        "configmap/kube-root-ca.crt",
        // Created by sentry at run time: the CA survives a reinstall.
        "secret/dapr-trust-bundle",
        "configmap/dapr-trust-bundle",
        // The operator's leader election.
        "lease.coordination.k8s.io/operator.dapr.io",
    ]);
    assert_eq!(remaining, documented);
}
