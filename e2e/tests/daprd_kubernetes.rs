//! daprd in kubernetes mode on the real API server: a pod admitted by the injector is run by
//! the harness as a `daprd` process with its pod-bound token. It gets its certificate from
//! sentry (kubernetes mode: TokenReview), its components from the operator (its own
//! ServiceAccount and RBAC), picks up a `kubectl apply`-ed Component change without a restart
//! (a state round trip through a real `redis-server` started here), and the Component's
//! status shows it loaded. A second injected pod (app id `payments`, its app a small HTTP
//! server in this test) runs the same way, and `orders` invokes it through the kubernetes
//! naming `payments-dapr.<ns>.svc.cluster.local:50002`, over mutual TLS with both SVIDs from
//! sentry; the app sees `dapr-caller-app-id: orders`.
//!
//! Pods have no IPs of their own here, so each daprd's internal server listens on port 50002
//! (the injector's) of its own random loopback address `127.x.y.z`, and the caller is told,
//! through daprd's testing aid `DAPRS_TESTING_RESOLVE_MAP`, that the callee's name is that
//! address (there is no cluster DNS; the harness's `map_address` rewrites only argv and env,
//! and this name is computed inside daprd). A refused SPIFFE id and an ACL denial are
//! covered by `sidecar/tests/invoke.rs`.
//!
//! The operator runs in this process, so its sentry token would have to be a file at a fixed
//! path: it gets its certificate instead from a second sentry (standalone, insecure) that
//! signs with the same CA, read from the trust bundle the first one created. The pod is a
//! bare Pod (no `<app-id>-dapr` Service), so the test publishes the `dapr-trust-bundle`
//! ConfigMap copy the operator publishes for Deployments.
//!
//! Needs `target/<profile>/daprd` (`cargo test --workspace` builds it; else
//! `cargo build -p daprs-sidecar --bin daprd`) and `redis-server` (scripts/sidecar-deps.sh).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use daprs_e2e::{
    Cluster, Redis, TempNs, echo_app, eventually, has_component, kubectl, kubectl_raw, start_sentry,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

const CP_TD: &str = "cluster.local";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/<profile>/daprd` beside this test binary (or `$DAPRD`).
fn daprd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("DAPRD") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("daprd");
    assert!(
        path.is_file(),
        "{} does not exist: build it with `cargo build -p daprs-sidecar --bin daprd` (cargo test --workspace builds it)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(url: &str, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn statestore(spec_metadata: Value, type_: &str) -> String {
    json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": "statestore"},
        "spec": {"type": type_, "version": "v1", "metadata": spec_metadata}
    })
    .to_string()
}

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

/// The injector's internal (sidecar-to-sidecar) port, kept in every daprd started here.
const INTERNAL_PORT: u16 = 50002;

/// Starts the daprd container of an admitted pod (`run` already has the control plane's
/// addresses mapped) with `env` added, checks it kept the injector's internal port, and
/// returns the healthy process and its HTTP port.
async fn run_daprd(
    run: daprs_e2e::RunPod,
    internal_ip: std::net::Ipv4Addr,
    env: &[(&str, String)],
) -> (daprs_e2e::PodProcess, u16) {
    let run = run.env("RUST_LOG", "info");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_injected_pod_runs_daprd_with_components_from_the_operator() {
    daprs_api::tls::install_default_provider();
    let daprd = daprd_binary();
    let redis = Redis::start().unwrap();
    let cluster = Cluster::shared().await;
    kubectl(
        cluster,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            repo().join("crds").to_str().unwrap(),
        ],
        None,
    )
    .await;
    kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=dapr",
        ],
        None,
    )
    .await;
    let cp = TempNs::create(cluster.connection()).await.unwrap();
    let apps = TempNs::create(cluster.connection()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // sentry, kubernetes mode, as its own ServiceAccount: validates pod-bound tokens.
    let sentry_role = format!("daprs-sentry-{}", cp.name());
    kubectl(
        cluster,
        &["apply", "-f", "-"],
        Some(
            include_str!("../fixtures/sentry-rbac.yaml")
                .replace("CLUSTER_ROLE", &sentry_role)
                .replace("NAMESPACE", cp.name()),
        ),
    )
    .await;
    let sentry_client = cp.client_for_service_account("dapr-sentry").await.unwrap();
    let reviews: Api<k8s_openapi::api::authentication::v1::TokenReview> =
        Api::all(sentry_client.clone());
    eventually(30, "sentry's RBAC", || {
        let reviews = reviews.clone();
        async move {
            let probe: k8s_openapi::api::authentication::v1::TokenReview =
                serde_json::from_value(json!({"spec": {"token": "x"}})).unwrap();
            reviews
                .create(&PostParams::default(), &probe)
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await;
    let sentry = start_sentry(
        cp.name(),
        Some(sentry_client),
        &["--mode", "kubernetes", "--trust-domain", CP_TD],
    )
    .await
    .unwrap();

    // The operator's sentry: standalone, the same CA (from the trust bundle sentry created).
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), cp.name());
    let bundle = secrets
        .get("dapr-trust-bundle")
        .await
        .unwrap()
        .data
        .unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    for key in ["ca.crt", "issuer.crt", "issuer.key"] {
        std::fs::write(creds.join(key), &bundle[key].0).unwrap();
    }
    let anchors = String::from_utf8(bundle["ca.crt"].0.clone()).unwrap();
    let operator_sentry = start_sentry(
        cp.name(),
        None,
        &[
            "--issuer-credentials",
            creds.to_str().unwrap(),
            "--trust-domain",
            CP_TD,
        ],
    )
    .await
    .unwrap();

    // The operator, as its own ServiceAccount with the chart's RBAC.
    cp.accepts(&json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
        "metadata": {"name": "daprsystem"},
        "spec": {"mtls": {"enabled": true, "controlPlaneTrustDomain": CP_TD,
                          "sentryAddress": operator_sentry.grpc_addr.to_string()}}
    }))
    .await;
    let operator_role = format!("daprs-operator-{}", cp.name());
    kubectl(
        cluster,
        &["apply", "-f", "-"],
        Some(
            include_str!("../fixtures/operator-rbac.yaml")
                .replace("CLUSTER_ROLE", &operator_role)
                .replace("NAMESPACE", cp.name())
                // No webhook configuration in this test: the operator finds none and says so.
                .replace("COMPONENT_WEBHOOK", "daprs-component-validator"),
        ),
    )
    .await;
    let operator_client = cp
        .client_for_service_account("dapr-operator")
        .await
        .unwrap();
    let probe: Api<daprs_api::crd::Component> =
        Api::namespaced(operator_client.clone(), apps.name());
    eventually(30, "the operator's RBAC", || {
        let probe = probe.clone();
        async move { probe.list(&Default::default()).await.ok().map(|_| ()) }
    })
    .await;
    let anchors_file = creds.join("ca.crt");
    let webhook_tls = dir.path().join("webhook-tls");
    std::fs::create_dir_all(&webhook_tls).unwrap();
    let cert = cluster
        .issue_certificate("dapr-webhook", &["127.0.0.1"])
        .unwrap();
    std::fs::write(webhook_tls.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(webhook_tls.join("tls.key"), &cert.key_pem).unwrap();
    std::fs::write(webhook_tls.join("ca.crt"), cluster.connection().ca_pem()).unwrap();
    let webhook_port = free_port().to_string();
    let operator = daprs_operator::start_in(
        daprs_operator::config::Args::parse_from([
            "operator",
            "--listen-address",
            "127.0.0.1",
            "--port",
            "0",
            "--healthz-listen-address",
            "127.0.0.1",
            "--healthz-port",
            "0",
            "--metrics-listen-address",
            "127.0.0.1",
            "--metrics-port",
            "0",
            "--webhook-server-listen-address",
            "127.0.0.1",
            "--webhook-server-port",
            &webhook_port,
            "--webhook-tls-dir",
            webhook_tls.to_str().unwrap(),
            "--trust-anchors-file",
            anchors_file.to_str().unwrap(),
            "--watch-namespace",
            apps.name(),
            "--disable-crd-apply",
            "--disable-leader-election",
        ]),
        daprs_operator::Environment {
            namespace: cp.name().to_owned(),
            client: operator_client,
            identity: format!("operator-{}", cp.name()),
        },
    )
    .await
    .unwrap();
    assert!(
        wait_healthy(&format!("http://{}/healthz", operator.healthz_addr), 60).await,
        "the operator did not become ready"
    );

    // The injector, its webhook registered for the apps namespace.
    let injector_dir = dir.path().join("injector");
    std::fs::create_dir_all(&injector_dir).unwrap();
    let cert = cluster
        .issue_certificate("injector", &["127.0.0.1"])
        .unwrap();
    std::fs::write(injector_dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(injector_dir.join("tls.key"), &cert.key_pem).unwrap();
    std::fs::write(injector_dir.join("anchors.pem"), &anchors).unwrap();
    let injector = daprs_injector::start(daprs_injector::config::Args::parse_from([
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
        "--kube-cluster-domain",
        "cluster.local",
        "--mode",
        "standalone",
        "--namespace",
        cp.name(),
        "--control-plane-trust-domain",
        CP_TD,
        "--trust-anchors-file",
        injector_dir.join("anchors.pem").to_str().unwrap(),
        "--tls-cert-file",
        injector_dir.join("tls.crt").to_str().unwrap(),
        "--tls-key-file",
        injector_dir.join("tls.key").to_str().unwrap(),
    ]))
    .await
    .unwrap();
    while injector.live.trust_anchors().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    use base64::Engine;
    let webhook_name = format!("{}-injector", apps.name());
    apps.accepts(&json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": webhook_name},
        "webhooks": [{
            "name": "sidecar-injector.dapr.io",
            "clientConfig": {"url": format!("https://{}/mutate", injector.webhook_addr),
                             "caBundle": base64::engine::general_purpose::STANDARD.encode(cluster.connection().ca_pem())},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": apps.name()}},
            "failurePolicy": "Fail", "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "reinvocationPolicy": "IfNeeded", "timeoutSeconds": 5
        }]
    }))
    .await;

    // What the operator publishes for Deployments' namespaces (see the module docs).
    apps.accepts(&json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "dapr-trust-bundle"}, "data": {"ca.crt": anchors}
    }))
    .await;
    // The app's component: in memory first.
    kubectl(
        cluster,
        &["apply", "-n", apps.name(), "-f", "-"],
        Some(statestore(json!([]), "state.in-memory")),
    )
    .await;

    // A pod, admitted with daprd (retrying until the webhook configuration is in effect).
    let pods: Api<Pod> = Api::namespaced(cluster.client(), apps.name());
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "orders", "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "orders"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/orders:1"}]}
    }))
    .unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    eventually(20, "the injector's webhook", || {
        let (pods, pod, dry_run) = (pods.clone(), pod.clone(), dry_run.clone());
        async move {
            let created = pods.create(&dry_run, &pod).await.ok()?;
            created
                .spec?
                .containers
                .iter()
                .any(|c| c.name == "daprd")
                .then_some(())
        }
    })
    .await;
    let admitted = pods.create(&PostParams::default(), &pod).await.unwrap();

    // The harness runs the daprd container with its pod-bound token.
    let mapped = |run: daprs_e2e::RunPod| {
        run.map_address(
            format!("dapr-sentry.{}.svc.cluster.local:443", cp.name()),
            sentry.grpc_addr.to_string(),
        )
        .map_address(
            format!("dapr-api.{}.svc.cluster.local:443", cp.name()),
            operator.grpc_addr.to_string(),
        )
    };
    // Where payments' sidecar will listen; orders is told its kubernetes name maps there.
    let payments_ip = loopback_ip();
    let payments_name = format!(
        "payments-dapr.{}.svc.cluster.local:{INTERNAL_PORT}",
        apps.name()
    );
    let (mut orders, http) = run_daprd(
        mapped(apps.run_pod(&admitted, &daprd)),
        loopback_ip(),
        &[(
            "DAPRS_TESTING_RESOLVE_MAP",
            format!("{payments_name}={payments_ip}:{INTERNAL_PORT}"),
        )],
    )
    .await;
    let base = format!("http://127.0.0.1:{http}");
    let logs = orders.logs();
    let own_id = format!("spiffe://public/ns/{}/orders", apps.name());
    assert!(
        logs.contains(&own_id),
        "the certificate from sentry ({own_id}):\n{logs}"
    );

    let client = reqwest::Client::new();
    let save = |key: &'static str| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            client
                .post(format!("{base}/v1.0/state/statestore"))
                .json(&json!([{"key": key, "value": {"n": key}}]))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(save("k1").await, 204);

    // kubectl apply: the same Component, now Redis; picked up without a restart.
    kubectl(
        cluster,
        &["apply", "-n", apps.name(), "-f", "-"],
        Some(statestore(
            json!([{"name": "redisHost", "value": format!("127.0.0.1:{}", redis.port)}]),
            "state.redis",
        )),
    )
    .await;
    eventually(30, "the Redis store in daprd", || async {
        has_component(&base, "statestore", "state.redis")
            .await
            .then_some(())
    })
    .await;
    assert_eq!(save("k2").await, 204);
    assert!(redis.exists("orders||k2").unwrap(), "saved in Redis");
    let got = client
        .get(format!("{base}/v1.0/state/statestore/k2"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(got, json!({"n": "k2"}));
    assert!(
        orders.child().try_wait().unwrap().is_none(),
        "daprd never restarted"
    );

    // The Component's status: loaded by this app, at its current generation.
    let table = eventually(30, "READY True, LOADED 1", || async {
        let out = kubectl(
            cluster,
            &[
                "get",
                "components",
                "statestore",
                "-n",
                apps.name(),
                "--no-headers",
            ],
            None,
        )
        .await;
        let cols: Vec<_> = out.split_whitespace().collect();
        (cols.get(2) == Some(&"True") && cols.get(3) == Some(&"1")).then_some(out)
    })
    .await;
    assert!(table.contains("state.redis"), "{table}");
    let component = kubectl(
        cluster,
        &[
            "get",
            "components",
            "statestore",
            "-n",
            apps.name(),
            "-o",
            "json",
        ],
        None,
    )
    .await;
    let component: Value = serde_json::from_str(&component).unwrap();
    assert_eq!(
        component["status"]["apps"][0]["appId"], "orders",
        "{component}"
    );
    assert_eq!(
        component["status"]["apps"][0]["observedGeneration"], component["metadata"]["generation"],
        "{component}"
    );

    // A second injected pod, app id payments, its app a small HTTP server here. Its
    // Configuration admits orders' SPIFFE id alone: the call below only passes if orders'
    // client certificate (its SVID) reached payments' internal server.
    apps.accepts(&json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
        "metadata": {"name": "payments-config"},
        "spec": {"accessControl": {"defaultAction": "deny", "trustDomain": "public",
                 "policies": [{"appId": "orders", "defaultAction": "allow",
                               "trustDomain": "public", "namespace": apps.name()}]}}
    }))
    .await;
    let app_port = echo_app().await.unwrap();
    let payments_pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "payments", "annotations": {
            "dapr.io/enabled": "true", "dapr.io/app-id": "payments",
            "dapr.io/app-port": app_port.to_string(), "dapr.io/config": "payments-config"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/payments:1"}]}
    }))
    .unwrap();
    let payments_admitted = pods
        .create(&PostParams::default(), &payments_pod)
        .await
        .unwrap();
    let (payments, _) = run_daprd(
        mapped(apps.run_pod(&payments_admitted, &daprd)),
        payments_ip,
        &[],
    )
    .await;
    let payments_id = format!("spiffe://public/ns/{}/payments", apps.name());
    assert!(
        payments.logs().contains(&payments_id),
        "payments' certificate from sentry ({payments_id}):\n{}",
        payments.logs()
    );

    let response = client
        .post(format!(
            "http://127.0.0.1:{http}/v1.0/invoke/payments/method/charge?x=1"
        ))
        .header("content-type", "application/json")
        .header("x-order", "o-1")
        .body(r#"{"amount":12}"#)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(
        status,
        200,
        "{text}\norders:\n{}\npayments:\n{}",
        orders.logs(),
        payments.logs()
    );
    let seen: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(seen["method"], "POST", "{seen}");
    assert_eq!(seen["path"], "/charge", "{seen}");
    assert_eq!(seen["body"], r#"{"amount":12}"#, "{seen}");
    assert_eq!(seen["headers"]["dapr-caller-app-id"], "orders", "{seen}");
    assert_eq!(seen["headers"]["dapr-callee-app-id"], "payments", "{seen}");
    assert_eq!(seen["headers"]["x-order"], "o-1", "{seen}");
    // The name was the kubernetes one (the testing aid maps only that name, and logs it).
    let logs = orders.logs();
    assert!(
        logs.contains(&payments_name) && logs.contains(&format!("{payments_ip}:{INTERNAL_PORT}")),
        "orders resolved {payments_name}:\n{logs}"
    );

    orders.stop().await;
    payments.stop().await;
    operator.stop().await.unwrap();
    injector.stop().await;
    sentry.stop().await.unwrap();
    operator_sentry.stop().await.unwrap();
    let _ = kubectl_raw(
        cluster,
        &["delete", "mutatingwebhookconfiguration", &webhook_name],
        None,
    )
    .await;
    let _ = kubectl_raw(
        cluster,
        &[
            "delete",
            "clusterrole,clusterrolebinding",
            &sentry_role,
            &operator_role,
            "--ignore-not-found",
        ],
        None,
    )
    .await;
}
