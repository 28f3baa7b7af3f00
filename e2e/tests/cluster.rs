//! The harness itself, against the real control plane: each test fails if the part of the
//! cluster it names is missing or misconfigured.

use std::time::{Duration, Instant};

use daprs_e2e::{Cluster, TEMP_NS_LABEL, bound_token_claims, with_temp_ns};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `check` every 100 ms until it returns `Some`, panicking with `what` after `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod(name: &str, extra_spec: serde_json::Value) -> Pod {
    let mut spec = json!({"containers": [{"name": "app", "image": "example.invalid/app:1"}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a valid Pod")
}

/// The Kubernetes version pinned in e2e/versions.env.
fn pinned_kubernetes_version() -> &'static str {
    include_str!("../versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("KUBERNETES_VERSION="))
        .expect("versions.env pins KUBERNETES_VERSION")
}

#[tokio::test]
async fn kubectl_talks_to_the_cluster_through_the_kubeconfig() {
    let cluster = Cluster::shared().await;
    let out = tokio::process::Command::from(cluster.kubectl())
        .args(["get", "ns", "-o", "name"])
        .output()
        .await
        .expect("kubectl runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl get ns failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().any(|l| l == "namespace/default"), "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "namespace/kube-system"),
        "{stdout}"
    );

    // Both sides report the pinned release, not a development version.
    let out = tokio::process::Command::from(cluster.kubectl())
        .args(["version", "-o", "json"])
        .output()
        .await
        .expect("kubectl runs");
    let version: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("kubectl version prints JSON");
    let pinned = pinned_kubernetes_version();
    assert_eq!(version["clientVersion"]["gitVersion"], pinned, "{version}");
    assert_eq!(version["serverVersion"]["gitVersion"], pinned, "{version}");
}

#[tokio::test]
async fn helm_installs_a_chart_into_the_cluster() {
    let cluster = Cluster::shared().await;
    with_temp_ns(|client, ns| async move {
        let chart = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(chart.path().join("templates")).expect("templates dir");
        std::fs::write(
            chart.path().join("Chart.yaml"),
            "apiVersion: v2\nname: e2e\nversion: 0.1.0\n",
        )
        .expect("Chart.yaml");
        std::fs::write(
            chart.path().join("templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  kube: {{ .Capabilities.KubeVersion.Version | quote }}\n",
        )
        .expect("template");
        let out = tokio::process::Command::from(cluster.helm())
            .args(["install", "demo", "--namespace", ns.name(), "--wait"])
            .arg(chart.path())
            .output()
            .await
            .expect("helm runs");
        assert!(
            out.status.success(),
            "helm install failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cm = Api::<ConfigMap>::namespaced(client, ns.name())
            .get("demo-cm")
            .await
            .expect("the chart's ConfigMap exists");
        // helm asked the real API server for its version.
        assert_eq!(
            cm.data.unwrap_or_default().get("kube").map(String::as_str),
            Some(pinned_kubernetes_version())
        );
    })
    .await;
}

#[tokio::test]
async fn a_deployment_gets_a_replicaset_that_creates_pods() {
    with_temp_ns(|client, ns| async move {
        let deployment: Deployment = serde_json::from_value(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}
                }
            }
        }))
        .expect("a valid Deployment");
        ns.accepts(&deployment).await;

        let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns.name());
        let rs = eventually("the deployment's replicaset", CONTROLLER_TIMEOUT, || {
            let replicasets = replicasets.clone();
            async move {
                replicasets
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .into_iter()
                    .next()
            }
        })
        .await;
        assert_eq!(rs.owner_references()[0].name, "web");

        let pods: Api<Pod> = Api::namespaced(client, ns.name());
        let created = eventually("two pods from the replicaset", CONTROLLER_TIMEOUT, || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?;
                (list.items.len() == 2).then_some(list.items)
            }
        })
        .await;
        for pod in created {
            assert_eq!(pod.owner_references()[0].name, rs.name_any());
            // The ServiceAccount admission plugin mounted the projected API token.
            let volumes = pod.spec.and_then(|s| s.volumes).unwrap_or_default();
            assert!(
                volumes
                    .iter()
                    .any(|v| v.name.starts_with("kube-api-access-")),
                "{volumes:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_pod_bound_token_authenticates_until_the_pod_is_deleted() {
    const AUDIENCE: &str = "daprs-e2e-test";
    // The API server caches a successful authentication for 10 s, keyed by token and
    // audiences: reviewing for an audience not asked for before sees the deletion at once.
    const FRESH_AUDIENCE: &str = "daprs-e2e-after-deletion";
    with_temp_ns(|client, ns| async move {
        let created = ns.accepts(&pod("bound", json!({}))).await;
        let pods: Api<Pod> = Api::namespaced(client, ns.name());
        let pod = pods.get("bound").await.expect("the pod exists");
        assert_eq!(pod.uid(), created.uid());

        let connection = ns.connection();
        let token = connection
            .pod_token(&pod, &[AUDIENCE, FRESH_AUDIENCE], None)
            .await
            .expect("TokenRequest bound to the pod");

        let review = connection
            .review_token(&token, &[AUDIENCE])
            .await
            .expect("TokenReview");
        assert_eq!(review.authenticated, Some(true), "{review:?}");
        assert_eq!(
            review.audiences.as_deref(),
            Some(&[AUDIENCE.to_owned()][..])
        );
        let user = review.user.expect("an authenticated user");
        assert_eq!(
            user.username.as_deref(),
            Some(format!("system:serviceaccount:{}:default", ns.name()).as_str())
        );
        let extra = user.extra.unwrap_or_default();
        assert_eq!(
            extra.get("authentication.kubernetes.io/pod-name"),
            Some(&vec!["bound".to_owned()]),
            "{extra:?}"
        );
        assert_eq!(
            extra.get("authentication.kubernetes.io/pod-uid"),
            Some(&vec![pod.uid().expect("a uid")]),
            "{extra:?}"
        );
        assert!(
            extra.contains_key("authentication.kubernetes.io/credential-id"),
            "{extra:?}"
        );

        // Another audience is refused.
        let review = connection
            .review_token(&token, &["someone-else"])
            .await
            .expect("TokenReview");
        assert_ne!(review.authenticated, Some(true), "{review:?}");

        pods.delete("bound", &DeleteParams::default().grace_period(0))
            .await
            .expect("delete the pod");
        let error = eventually(
            "the token to stop authenticating",
            Duration::from_secs(30),
            || {
                let token = token.clone();
                async move {
                    let review = connection
                        .review_token(&token, &[FRESH_AUDIENCE])
                        .await
                        .ok()?;
                    (review.authenticated != Some(true)).then(|| review.error.unwrap_or_default())
                }
            },
        )
        .await;
        assert!(error.contains("invalidated"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn forged_tokens_are_judged_like_issued_ones() {
    const AUDIENCE: &str = "daprs-e2e-forged";
    let cluster = Cluster::shared().await;
    with_temp_ns(|client, ns| async move {
        ns.accepts(&pod("forged", json!({}))).await;
        let pod = Api::<Pod>::namespaced(client.clone(), ns.name())
            .get("forged")
            .await
            .expect("the pod exists");
        let sa = Api::<ServiceAccount>::namespaced(client, ns.name())
            .get("default")
            .await
            .expect("the default service account");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs() as i64;

        // A forgery of a valid token is accepted: the recipe matches what the API server signs.
        let valid = cluster
            .sign_service_account_token(&bound_token_claims(
                &pod,
                &sa,
                &[AUDIENCE],
                now - 60,
                now + 600,
            ))
            .expect("sign");
        let review = ns
            .connection()
            .review_token(&valid, &[AUDIENCE])
            .await
            .expect("TokenReview");
        assert_eq!(review.authenticated, Some(true), "{review:?}");
        let extra = review.user.and_then(|u| u.extra).unwrap_or_default();
        assert_eq!(
            extra.get("authentication.kubernetes.io/pod-name"),
            Some(&vec!["forged".to_owned()])
        );

        // Expired beyond the API server's minute of leeway: refused, saying so.
        let expired = cluster
            .sign_service_account_token(&bound_token_claims(
                &pod,
                &sa,
                &[AUDIENCE],
                now - 900,
                now - 120,
            ))
            .expect("sign");
        let review = ns
            .connection()
            .review_token(&expired, &[AUDIENCE])
            .await
            .expect("TokenReview");
        assert_ne!(review.authenticated, Some(true), "{review:?}");
        assert!(
            review
                .error
                .as_deref()
                .unwrap_or_default()
                .contains("expired"),
            "{review:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_service_account_client_has_only_what_rbac_grants() {
    let cluster = Cluster::shared().await;
    with_temp_ns(|_client, ns| async move {
        let sa: ServiceAccount = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}
        }))
        .expect("a valid ServiceAccount");
        ns.accepts(&sa).await;
        let as_sa = ns
            .client_for_service_account("reader")
            .await
            .expect("a client as the service account");
        let pods: Api<Pod> = Api::namespaced(as_sa, ns.name());
        match pods.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{status:?}");
                assert!(
                    status
                        .message
                        .contains(&format!("system:serviceaccount:{}:reader", ns.name())),
                    "{status:?}"
                );
            }
            other => panic!("expected 403 Forbidden, got {other:?}"),
        }

        // Granting the permission makes the same client work: it really is that account.
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
        });
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "reader-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns.name()}]
        });
        ns.accepts(&role).await;
        ns.accepts(&binding).await;
        eventually("the RoleBinding to take effect", Duration::from_secs(10), || {
            let pods = pods.clone();
            async move { pods.list(&ListParams::default()).await.ok() }
        })
        .await;

        // The same account through a kubeconfig, as a binary or kubectl would use it.
        let token = ns
            .connection()
            .service_account_token(ns.name(), "reader", &[])
            .await
            .expect("a token");
        let dir = tempfile::tempdir().expect("a temp dir");
        let kubeconfig = dir.path().join("kubeconfig");
        ns.connection()
            .write_kubeconfig_with_token(&token, &kubeconfig)
            .expect("write the kubeconfig");
        let out = tokio::process::Command::from(cluster.kubectl())
            .env("KUBECONFIG", &kubeconfig)
            .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
            .output()
            .await
            .expect("kubectl runs");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("system:serviceaccount:{}:reader", ns.name()),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = tokio::process::Command::from(cluster.kubectl())
            .env("KUBECONFIG", &kubeconfig)
            .args(["get", "secrets", "-n", ns.name()])
            .output()
            .await
            .expect("kubectl runs");
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Forbidden"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
}

#[tokio::test]
async fn accepts_and_rejects_report_what_the_api_server_said() {
    with_temp_ns(|_client, ns| async move {
        ns.accepts(&json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fine"}, "data": {"a": "b"}
        }))
        .await;
        // Validation is enforced by the API server, and its message comes back.
        let message = ns
            .rejects(&json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Not_A_Name"}
            }))
            .await;
        assert!(message.contains("Not_A_Name"), "{message}");
        // A duplicate is refused too.
        let message = ns
            .rejects(&json!({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "fine"}
            }))
            .await;
        assert!(message.contains("already exists"), "{message}");
    })
    .await;
}

#[tokio::test]
async fn run_pod_starts_a_container_like_a_kubelet() {
    const AUDIENCE: &str = "daprs-e2e-run-pod";
    with_temp_ns(|client, ns| async move {
        let spec = json!({
            "containers": [{
                "name": "app",
                "image": "example.invalid/app:1",
                "command": ["/app"],
                "args": [
                    "-c",
                    "echo \"pod=$POD_NAME ns=$NAMESPACE sentry=$SENTRY arg=$0\"; cat /var/run/secrets/e2e/token; echo; echo done",
                    "$(POD_NAME)"
                ],
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "SENTRY", "value": "dapr-sentry.dapr-system.svc.cluster.local:443"}
                ],
                "volumeMounts": [{"name": "e2e-token", "mountPath": "/var/run/secrets/e2e", "readOnly": true}]
            }],
            "volumes": [{
                "name": "e2e-token",
                "projected": {"sources": [{"serviceAccountToken": {
                    "audience": AUDIENCE, "expirationSeconds": 600, "path": "token"
                }}]}
            }]
        });
        ns.accepts(&pod("runner", spec)).await;
        let pod = Api::<Pod>::namespaced(client, ns.name())
            .get("runner")
            .await
            .expect("the pod exists");

        let mut process = ns
            .run_pod(&pod, "/bin/sh")
            .map_address("dapr-sentry.dapr-system.svc.cluster.local:443", "127.0.0.1:4443")
            .start()
            .await
            .expect("the pod's container starts");
        process
            .wait_for_log("done", Duration::from_secs(10))
            .await
            .expect("the container ran");
        let logs = process.logs();
        let first = logs.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            format!("pod=runner ns={} sentry=127.0.0.1:4443 arg=runner", ns.name())
        );
        let token = logs.lines().nth(1).unwrap_or_default().trim();
        let on_disk = std::fs::read_to_string(
            process
                .host_path("/var/run/secrets/e2e/token")
                .expect("the mount is mapped"),
        )
        .expect("the token file");
        assert_eq!(token, on_disk);

        let review = ns
            .connection()
            .review_token(token, &[AUDIENCE])
            .await
            .expect("TokenReview");
        assert_eq!(review.authenticated, Some(true), "{review:?}");
        let extra = review.user.and_then(|u| u.extra).unwrap_or_default();
        assert_eq!(
            extra.get("authentication.kubernetes.io/pod-name"),
            Some(&vec!["runner".to_owned()])
        );
    })
    .await;
}

#[tokio::test]
async fn temp_namespaces_are_deleted_afterwards() {
    let name = with_temp_ns(|client, ns| async move {
        // Something inside, for the namespace controller to clean up.
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "leftover"}}))
            .expect("a valid ServiceAccount");
        Api::<ServiceAccount>::namespaced(client.clone(), ns.name())
            .create(&PostParams::default(), &sa)
            .await
            .expect("create in the namespace");
        let found = Api::<Namespace>::all(client)
            .get(ns.name())
            .await
            .expect("the namespace exists during the test");
        assert_eq!(
            found.labels().get(TEMP_NS_LABEL).map(String::as_str),
            Some("true")
        );
        ns.name().to_owned()
    })
    .await;

    let namespaces: Api<Namespace> = Api::all(Cluster::shared().await.client());
    eventually("the namespace to be gone", CONTROLLER_TIMEOUT, || {
        let namespaces = namespaces.clone();
        let name = name.clone();
        async move {
            namespaces
                .get_opt(&name)
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
}
