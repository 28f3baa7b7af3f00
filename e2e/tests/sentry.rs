//! sentry in kubernetes mode against the real API server, running with the credentials of its
//! own ServiceAccount and only the RBAC in `fixtures/sentry-rbac.yaml`: every case of the
//! kubernetes validator, the trust bundle it creates and reuses, and clear failures without RBAC.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches fail loudly

use std::time::Duration;

use daprs_api::proto::sentry::TokenValidator;
use daprs_api::sentry_client::{self, SentryClientError, SvidRequest};
use daprs_api::tls::TrustAnchors;
use daprs_e2e::{Cluster, TempNs};
use daprs_sentry::config::CredentialNames;
use daprs_sentry::validator::Validator;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

const CP_TD: &str = "cluster.local";

fn audience(cp_ns: &str) -> String {
    daprs_api::names::sentry_audience(CP_TD, cp_ns)
}

async fn kubectl(cluster: &Cluster, args: &[&str], stdin: Option<String>) -> String {
    let mut cmd = tokio::process::Command::from(cluster.kubectl());
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        use tokio::io::AsyncWriteExt;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Grants sentry's RBAC in `ns`; returns the ClusterRole name to delete afterwards.
async fn grant_sentry_rbac(cluster: &Cluster, ns: &str) -> String {
    let cluster_role = format!("daprs-sentry-{ns}");
    let manifest = include_str!("../fixtures/sentry-rbac.yaml")
        .replace("CLUSTER_ROLE", &cluster_role)
        .replace("NAMESPACE", ns);
    kubectl(cluster, &["apply", "-f", "-"], Some(manifest)).await;
    cluster_role
}

/// The `configurations.dapr.io` CRD, minimal until the operator ships the real one.
async fn ensure_configuration_crd(cluster: &Cluster) {
    let crd = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: configurations.dapr.io
spec:
  group: dapr.io
  scope: Namespaced
  names: {kind: Configuration, plural: configurations, singular: configuration, listKind: ConfigurationList}
  versions:
    - name: v1alpha1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;
    kubectl(cluster, &["apply", "-f", "-"], Some(crd.to_owned())).await;
    kubectl(
        cluster,
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/configurations.dapr.io",
        ],
        None,
    )
    .await;
}

/// A control plane (sentry in its own namespace, with its own ServiceAccount's token) and a
/// namespace for apps.
struct Fixture {
    cluster: &'static Cluster,
    cp: TempNs,
    apps: TempNs,
    cluster_role: String,
    sentry: Option<daprs_sentry::Running>,
}

impl Fixture {
    async fn new() -> Self {
        daprs_api::tls::install_default_provider();
        let cluster = Cluster::shared().await;
        let cp = TempNs::create(cluster.connection()).await.unwrap();
        let apps = TempNs::create(cluster.connection()).await.unwrap();
        let cluster_role = grant_sentry_rbac(cluster, cp.name()).await;
        let mut fixture = Self {
            cluster,
            cp,
            apps,
            cluster_role,
            sentry: None,
        };
        fixture.start_sentry().await;
        fixture
    }

    async fn sentry_client(&self) -> kube::Client {
        // RBAC takes a moment to reach the authorizer's cache: wait until TokenReview is allowed.
        let client = self
            .cp
            .client_for_service_account("dapr-sentry")
            .await
            .unwrap();
        for _ in 0..100 {
            let reviews: Api<k8s_openapi::api::authentication::v1::TokenReview> =
                Api::all(client.clone());
            let probe = k8s_openapi::api::authentication::v1::TokenReview {
                spec: k8s_openapi::api::authentication::v1::TokenReviewSpec {
                    token: Some("x".into()),
                    audiences: None,
                },
                ..Default::default()
            };
            if reviews.create(&PostParams::default(), &probe).await.is_ok() {
                return client;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("sentry's RBAC never took effect");
    }

    async fn start_sentry(&mut self) {
        let client = self.sentry_client().await;
        let running = daprs_e2e::start_sentry(
            self.cp.name(),
            Some(client),
            &["--mode", "kubernetes", "--trust-domain", CP_TD],
        )
        .await
        .unwrap();
        self.sentry = Some(running);
    }

    async fn stop_sentry(&mut self) {
        if let Some(sentry) = self.sentry.take() {
            sentry.stop().await.unwrap();
        }
    }

    /// The trust anchors as workloads see them: the published ConfigMap.
    async fn published_anchors(&self) -> String {
        let cms: Api<ConfigMap> = Api::namespaced(self.cluster.client(), self.cp.name());
        cms.get("dapr-trust-bundle").await.unwrap().data.unwrap()["ca.crt"].clone()
    }

    async fn request(
        &self,
        id: &str,
        namespace: &str,
        token: &str,
    ) -> Result<String, SentryClientError> {
        self.request_chain(id, namespace, token)
            .await
            .map(|(id, _)| id)
    }

    /// Requests a certificate; returns its SPIFFE id and PEM chain.
    async fn request_chain(
        &self,
        id: &str,
        namespace: &str,
        token: &str,
    ) -> Result<(String, String), SentryClientError> {
        let anchors = TrustAnchors::from_pem(self.published_anchors().await.as_bytes()).unwrap();
        let sentry_id = audience(self.cp.name()).parse().unwrap();
        let addr = self.sentry.as_ref().unwrap().grpc_addr.to_string();
        let channel = sentry_client::sentry_channel(&addr, anchors, sentry_id).unwrap();
        let issued = sentry_client::request_svid(
            channel,
            &SvidRequest {
                app_id: id.into(),
                namespace: namespace.into(),
                token: token.into(),
                validator: TokenValidator::Kubernetes,
                ..Default::default()
            },
        )
        .await?;
        Ok((issued.svid.id.to_string(), issued.chain_pem))
    }

    async fn create_pod(
        &self,
        ns: &TempNs,
        name: &str,
        service_account: &str,
        annotations: serde_json::Value,
    ) -> Pod {
        if service_account != "default" {
            let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(ns.client(), ns.name());
            let sa =
                serde_json::from_value(json!({"metadata": {"name": service_account}})).unwrap();
            let _ = sas.create(&PostParams::default(), &sa).await;
        }
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "example.invalid/app:1"}]}
        }))
        .unwrap();
        let pods: Api<Pod> = Api::namespaced(ns.client(), ns.name());
        pods.create(&PostParams::default(), &pod).await.unwrap()
    }

    async fn pod_token(&self, pod: &Pod) -> String {
        let aud = audience(self.cp.name());
        self.cluster
            .connection()
            .pod_token(pod, &[&aud], None)
            .await
            .unwrap()
    }

    async fn cleanup(mut self) {
        self.stop_sentry().await;
        kubectl(
            self.cluster,
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                &self.cluster_role,
                "--ignore-not-found",
            ],
            None,
        )
        .await;
    }
}

fn refused(result: Result<String, SentryClientError>, code: tonic::Code, needle: &str) {
    match result {
        Err(SentryClientError::Sign { code: got, message }) => {
            assert_eq!(got, code, "{message}");
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            );
        }
        other => panic!("expected {code:?} mentioning {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_pod_bound_token_for_the_right_pod_and_app_id_gets_a_certificate() {
    let f = Fixture::new().await;
    let pod = f
        .create_pod(
            &f.apps,
            "orders-6b7c9",
            "default",
            json!({"dapr.io/app-id": "orders"}),
        )
        .await;
    let token = f.pod_token(&pod).await;
    let id = f.request("orders", f.apps.name(), &token).await.unwrap();
    assert_eq!(id, format!("spiffe://public/ns/{}/orders", f.apps.name()));
    f.cleanup().await;
}

#[tokio::test]
async fn wrong_audience_unbound_token_other_namespace_and_wrong_app_id_are_refused() {
    let f = Fixture::new().await;
    let pod = f
        .create_pod(
            &f.apps,
            "orders-1",
            "default",
            json!({"dapr.io/app-id": "orders"}),
        )
        .await;
    let conn = f.cluster.connection();
    let apps = f.apps.name();

    let wrong_audience = conn
        .pod_token(&pod, &["https://example.invalid"], None)
        .await
        .unwrap();
    refused(
        f.request("orders", apps, &wrong_audience).await,
        tonic::Code::PermissionDenied,
        "not authenticated for audience",
    );

    let unbound = conn
        .service_account_token(apps, "default", &[&audience(f.cp.name())])
        .await
        .unwrap();
    refused(
        f.request("orders", apps, &unbound).await,
        tonic::Code::PermissionDenied,
        "not bound to a pod",
    );

    let token = f.pod_token(&pod).await;
    refused(
        f.request("orders", f.cp.name(), &token).await,
        tonic::Code::PermissionDenied,
        "belongs to namespace",
    );
    refused(
        f.request("payments", apps, &token).await,
        tonic::Code::PermissionDenied,
        "app id mismatch",
    );
    refused(
        f.request("orders", apps, "").await,
        tonic::Code::PermissionDenied,
        "no token was sent",
    );
    f.cleanup().await;
}

#[tokio::test]
async fn a_deleted_pods_token_is_refused() {
    let f = Fixture::new().await;
    let pod = f
        .create_pod(
            &f.apps,
            "short-lived",
            "default",
            json!({"dapr.io/app-id": "short"}),
        )
        .await;
    let token = f.pod_token(&pod).await;
    let pods: Api<Pod> = Api::namespaced(f.apps.client(), f.apps.name());
    pods.delete("short-lived", &DeleteParams::default())
        .await
        .unwrap();
    for _ in 0..100 {
        if pods.get_opt("short-lived").await.unwrap().is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let result = f.request("short", f.apps.name(), &token).await;
    // The API server says "invalidated"; if its pod cache lags, sentry's own pod check answers.
    match result {
        Err(SentryClientError::Sign { code, message }) => {
            assert_eq!(code, tonic::Code::PermissionDenied, "{message}");
            assert!(
                message.contains("invalidated") || message.contains("no longer exists"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    f.cleanup().await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let f = Fixture::new().await;
    let pod = f
        .create_pod(
            &f.apps,
            "orders-2",
            "default",
            json!({"dapr.io/app-id": "orders"}),
        )
        .await;
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(f.apps.client(), f.apps.name());
    let sa = sas.get("default").await.unwrap();
    let aud = audience(f.cp.name());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sign = |issued_at, expires_at| {
        let claims = daprs_e2e::bound_token_claims(&pod, &sa, &[&aud], issued_at, expires_at);
        f.cluster.sign_service_account_token(&claims).unwrap()
    };
    // The same forged claims with a valid lifetime work: only the expiry differs.
    f.request("orders", f.apps.name(), &sign(now - 60, now + 600))
        .await
        .unwrap();
    refused(
        f.request("orders", f.apps.name(), &sign(now - 7200, now - 3600))
            .await,
        tonic::Code::PermissionDenied,
        "expired",
    );
    f.cleanup().await;
}

#[tokio::test]
async fn the_apps_configuration_sets_the_trust_domain() {
    let f = Fixture::new().await;
    ensure_configuration_crd(f.cluster).await;
    let pod = f
        .create_pod(
            &f.apps,
            "orders-3",
            "default",
            json!({"dapr.io/app-id": "orders", "dapr.io/config": "appconfig"}),
        )
        .await;
    let token = f.pod_token(&pod).await;
    refused(
        f.request("orders", f.apps.name(), &token).await,
        tonic::Code::PermissionDenied,
        "appconfig named by the pod's dapr.io/config annotation does not exist",
    );
    f.apps
        .accepts(&json!({"apiVersion": "dapr.io/v1alpha1", "kind": "Configuration", "metadata": {"name": "appconfig"},
            "spec": {"accessControl": {"trustDomain": "shop.example"}}}))
        .await;
    let id = f.request("orders", f.apps.name(), &token).await.unwrap();
    assert_eq!(
        id,
        format!("spiffe://shop.example/ns/{}/orders", f.apps.name())
    );
    f.cleanup().await;
}

#[tokio::test]
async fn control_plane_pods_get_control_plane_identities() {
    let f = Fixture::new().await;
    let operator = f
        .create_pod(
            &f.cp,
            "dapr-operator-0",
            "dapr-operator",
            json!({"dapr.io/control-plane": "operator"}),
        )
        .await;
    let token = f.pod_token(&operator).await;
    let id = f
        .request("dapr-operator", f.cp.name(), &token)
        .await
        .unwrap();
    assert_eq!(
        id,
        format!("spiffe://{CP_TD}/ns/{}/dapr-operator", f.cp.name())
    );

    let outside = f
        .create_pod(
            &f.apps,
            "fake-operator",
            "default",
            json!({"dapr.io/control-plane": "operator"}),
        )
        .await;
    let token = f.pod_token(&outside).await;
    refused(
        f.request("dapr-operator", f.apps.name(), &token).await,
        tonic::Code::PermissionDenied,
        "not in the control-plane namespace",
    );
    f.cleanup().await;
}

#[tokio::test]
async fn sentry_creates_the_trust_bundle_and_reuses_it_after_a_restart() {
    let mut f = Fixture::new().await;
    let secrets: Api<Secret> = Api::namespaced(f.cluster.client(), f.cp.name());
    let secret = secrets.get("dapr-trust-bundle").await.unwrap();
    let data = secret.data.clone().unwrap();
    for key in ["ca.crt", "issuer.crt", "issuer.key"] {
        assert!(data.contains_key(key), "Secret lacks {key}");
    }
    let anchors = String::from_utf8(data["ca.crt"].0.clone()).unwrap();
    assert_eq!(
        f.published_anchors().await,
        anchors,
        "ConfigMap publishes the Secret's anchors"
    );

    f.stop_sentry().await;
    f.start_sentry().await;
    let again = secrets.get("dapr-trust-bundle").await.unwrap();
    assert_eq!(
        String::from_utf8(again.data.unwrap()["ca.crt"].0.clone()).unwrap(),
        anchors,
        "no regeneration"
    );
    let pod = f
        .create_pod(
            &f.apps,
            "orders-4",
            "default",
            json!({"dapr.io/app-id": "orders"}),
        )
        .await;
    let token = f.pod_token(&pod).await;
    f.request("orders", f.apps.name(), &token).await.unwrap();
    f.cleanup().await;
}

#[tokio::test]
async fn without_its_rbac_sentry_fails_clearly() {
    daprs_api::tls::install_default_provider();
    let cluster = Cluster::shared().await;
    let ns = TempNs::create(cluster.connection()).await.unwrap();
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(ns.client(), ns.name());
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap(),
    )
    .await
    .unwrap();
    let client = ns.client_for_service_account("nobody").await.unwrap();

    let store =
        daprs_sentry::store::KubeStore::new(client.clone(), ns.name(), CredentialNames::default());
    let manager = daprs_sentry::manager::CaManager {
        store: Box::new(store),
        trust_domain: CP_TD.into(),
        namespace: ns.name().into(),
        algorithm: daprs_sentry::ca::KeyAlgorithm::Ed25519,
        ca_ttl: Duration::from_secs(86_400 * 365),
        rotation: None,
        workload_ttl: Duration::from_secs(86_400),
        skew: Duration::from_secs(900),
        current: Default::default(),
        serving: Default::default(),
        metrics: Default::default(),
        clock: daprs_sentry::manager::system_clock(),
        last_expiry_warning: Default::default(),
        serving_issued: Default::default(),
    };
    let err = manager.reconcile().await.unwrap_err().to_string();
    assert!(err.contains("Secret") && err.contains("forbidden"), "{err}");

    let validator =
        daprs_sentry::validator::kubernetes::KubernetesValidator::new(client, ns.name(), CP_TD);
    let denial = validator
        .validate(&daprs_api::proto::sentry::SignCertificateRequest {
            id: "orders".into(),
            namespace: ns.name().into(),
            token: "some.token.value".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&denial, daprs_sentry::validator::Denial::Unavailable(m) if m.contains("lacks RBAC")),
        "{denial:?}"
    );
}

#[tokio::test]
async fn a_replaced_trust_bundle_secret_is_picked_up_without_a_restart() {
    let f = Fixture::new().await;
    let secrets: Api<Secret> = Api::namespaced(f.cluster.client(), f.cp.name());
    let configmaps: Api<ConfigMap> = Api::namespaced(f.cluster.client(), f.cp.name());
    let old_anchors = f.published_anchors().await;

    // An operator brings a CA of their own, keeping the old root trusted while workloads move.
    let new = daprs_sentry::ca::generate(
        &daprs_sentry::ca::GenerateOptions {
            trust_domain: CP_TD,
            namespace: f.cp.name(),
            algorithm: daprs_sentry::ca::KeyAlgorithm::EcdsaP256,
            ttl: Duration::from_secs(86_400 * 30),
            skew: Duration::from_secs(60),
        },
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let both = format!("{old_anchors}{}", new.trust_anchors);
    let mut cm = configmaps.get("dapr-trust-bundle").await.unwrap();
    cm.data
        .as_mut()
        .unwrap()
        .insert("ca.crt".into(), both.clone());
    configmaps
        .replace("dapr-trust-bundle", &PostParams::default(), &cm)
        .await
        .unwrap();
    let mut secret = secrets.get("dapr-trust-bundle").await.unwrap();
    let data = secret.data.as_mut().unwrap();
    data.remove("rotation.json");
    for (key, value) in [
        ("ca.crt", &both),
        ("issuer.crt", &new.issuer_chain),
        ("issuer.key", &new.issuer_key),
    ] {
        data.insert(
            key.into(),
            k8s_openapi::ByteString(value.clone().into_bytes()),
        );
    }
    secrets
        .replace("dapr-trust-bundle", &PostParams::default(), &secret)
        .await
        .unwrap();

    let pod = f
        .create_pod(
            &f.apps,
            "orders-5",
            "default",
            json!({"dapr.io/app-id": "orders"}),
        )
        .await;
    let token = f.pod_token(&pod).await;
    let mut switched = false;
    for _ in 0..100 {
        let (_, chain) = f
            .request_chain("orders", f.apps.name(), &token)
            .await
            .unwrap();
        if chain.contains(new.issuer_chain.trim()) {
            switched = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "sentry never signed with the replaced issuer");
    let secret = secrets.get("dapr-trust-bundle").await.unwrap();
    assert!(
        !secret.data.unwrap().contains_key("rotation.json"),
        "a user-supplied CA is not taken over"
    );
    f.cleanup().await;
}

/// cert-manager's layout: a `kubernetes.io/tls` Secret (its type cannot change) and the
/// chart's empty ConfigMap. sentry uses the CA, publishes its anchors, and never writes the Secret.
#[tokio::test]
async fn a_cert_manager_secret_is_used_and_left_untouched() {
    daprs_api::tls::install_default_provider();
    let cluster = Cluster::shared().await;
    let cp = TempNs::create(cluster.connection()).await.unwrap();
    let apps = TempNs::create(cluster.connection()).await.unwrap();
    let cluster_role = grant_sentry_rbac(cluster, cp.name()).await;
    let ca = daprs_sentry::ca::generate(
        &daprs_sentry::ca::GenerateOptions {
            trust_domain: CP_TD,
            namespace: cp.name(),
            algorithm: daprs_sentry::ca::KeyAlgorithm::EcdsaP256,
            ttl: Duration::from_secs(86_400 * 90),
            skew: Duration::from_secs(60),
        },
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    let b = |s: &str| k8s_openapi::ByteString(s.as_bytes().to_vec());
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "dapr-trust-bundle", "labels": {"controller.cert-manager.io/fao": "true"}},
        "type": "kubernetes.io/tls",
    }))
    .unwrap();
    let secret = Secret {
        data: Some(
            [
                ("tls.crt", b(&ca.issuer_chain)),
                ("tls.key", b(&ca.issuer_key)),
                ("ca.crt", b(&ca.trust_anchors)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ),
        ..secret
    };
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), cp.name());
    let created = secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client(), cp.name());
    configmaps
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "dapr-trust-bundle"}})).unwrap(),
        )
        .await
        .unwrap();

    let mut f = Fixture {
        cluster,
        cp,
        apps,
        cluster_role,
        sentry: None,
    };
    f.start_sentry().await;
    assert_eq!(
        f.published_anchors().await,
        ca.trust_anchors,
        "the root is published"
    );
    let pod = f
        .create_pod(
            &f.apps,
            "orders-6",
            "default",
            json!({"dapr.io/app-id": "orders"}),
        )
        .await;
    let token = f.pod_token(&pod).await;
    let (_, chain) = f
        .request_chain("orders", f.apps.name(), &token)
        .await
        .unwrap();
    assert!(
        chain.contains(ca.issuer_chain.trim()),
        "signed by the cert-manager issuer"
    );
    let after = secrets.get("dapr-trust-bundle").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, created.metadata.resource_version,
        "the Secret was not written"
    );
    f.cleanup().await;
}
