//! The operator against the real API server, running with its own ServiceAccount's token and
//! only the RBAC in `fixtures/operator-rbac.yaml`, its certificate from an in-process sentry:
//! real Dapr manifests apply (and bad ones are refused or warned), a Component change reaches
//! a connected sidecar stream, an annotated Deployment gets its owned `<app-id>-dapr` Service,
//! sidecar reports show up in `kubectl get components`, and v1alpha1 Subscriptions convert.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use daprs_api::SpiffeId;
use daprs_api::proto::operator::operator_client::OperatorClient;
use daprs_api::proto::operator::resource_status_client::ResourceStatusClient;
use daprs_api::proto::operator::*;
use daprs_api::sentry_client::{self, SvidRequest};
use daprs_api::tls::{self, PeerMatcher, SpiffeServerVerifier, SvidResolver, TrustAnchors};
use daprs_e2e::{Cluster, TempNs, eventually, kubectl, kubectl_raw, start_sentry};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use serde_json::{Value, json};

const CP_TD: &str = "localhost";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn manifest(name: &str) -> String {
    std::fs::read_to_string(repo().join("operator/tests/fixtures/manifests").join(name)).unwrap()
}

/// The CRDs as a cluster admin installs them from the repository (`kubectl apply -f crds/`).
async fn install_crds(cluster: &Cluster) {
    static ONCE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    ONCE.get_or_init(|| async {
        let dir = repo().join("crds");
        kubectl(
            cluster,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                dir.to_str().unwrap(),
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
    })
    .await;
}

/// The Component ValidatingWebhookConfiguration of a control plane (cluster-scoped, so one
/// per test); the RBAC fixture lets the operator get and patch it alone.
fn component_webhook_name(cp: &TempNs) -> String {
    format!("daprs-components-{}", cp.name())
}

/// The caBundle of every webhook of the configuration `name` (None: no configuration, or a
/// webhook without one), and whether the `daprs-operator` field manager owns only caBundles.
async fn component_webhook_ca_bundle(client: kube::Client, name: &str) -> Option<(String, bool)> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let config = api.get_opt(name).await.ok()??;
    let mut bundles: Vec<String> = Vec::new();
    for webhook in config.webhooks.unwrap_or_default() {
        bundles.push(String::from_utf8(webhook.client_config.ca_bundle?.0).ok()?);
    }
    bundles.dedup();
    let [bundle] = <[String; 1]>::try_from(bundles).ok()?;
    let managed = serde_json::to_value(config.metadata.managed_fields.unwrap_or_default()).ok()?;
    let ours = managed
        .as_array()?
        .iter()
        .find(|m| m["manager"] == "daprs-operator")?["fieldsV1"]
        .to_string();
    let only_ca_bundle = ours.contains("f:caBundle")
        && !ours.contains("f:rules")
        && !ours.contains("f:url")
        && !ours.contains("f:failurePolicy");
    Some((bundle, only_ca_bundle))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A control plane: sentry (standalone, in-process) and the operator (in-process, with its
/// ServiceAccount's token and RBAC) in their own namespace, and a namespace for apps.
struct Fixture {
    cluster: &'static Cluster,
    cp: TempNs,
    apps: TempNs,
    cluster_role: String,
    dir: tempfile::TempDir,
    sentry: daprs_sentry::Running,
    operator: Option<daprs_operator::Running>,
    webhook_port: u16,
}

impl Fixture {
    /// `extra` operator flags; `--watch-namespace` is always the apps namespace. With
    /// `webhook_url` the CRDs' conversion webhook is reached by URL (there is no cluster DNS).
    async fn new(extra: &[&str], webhook_url: bool) -> Self {
        tls::install_default_provider();
        // The operator's logs, shown with a failing test's output (RUST_LOG overrides).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "daprs_operator=info".into()),
            )
            .with_test_writer()
            .try_init();
        let cluster = Cluster::shared().await;
        install_crds(cluster).await;
        let cp = TempNs::create(cluster.connection()).await.unwrap();
        let apps = TempNs::create(cluster.connection()).await.unwrap();
        let cluster_role = format!("daprs-operator-{}", cp.name());
        let rbac = include_str!("../fixtures/operator-rbac.yaml")
            .replace("CLUSTER_ROLE", &cluster_role)
            .replace("COMPONENT_WEBHOOK", &component_webhook_name(&cp))
            .replace("NAMESPACE", cp.name());
        kubectl(cluster, &["apply", "-f", "-"], Some(rbac)).await;

        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds");
        let sentry = start_sentry(
            cp.name(),
            None,
            &["--issuer-credentials", creds.to_str().unwrap()],
        )
        .await
        .unwrap();

        // The control plane's Configuration, pointing the operator at sentry.
        let daprsystem = json!({
            "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
            "metadata": {"name": "daprsystem"},
            "spec": {"mtls": {"enabled": true, "controlPlaneTrustDomain": CP_TD,
                              "sentryAddress": sentry.grpc_addr.to_string()}}
        });
        cp.accepts(&daprsystem).await;

        // The webhooks' serving certificate, trusted by the API server.
        let tls_dir = dir.path().join("webhook-tls");
        std::fs::create_dir_all(&tls_dir).unwrap();
        let cert = cluster
            .issue_certificate("dapr-webhook", &["127.0.0.1"])
            .unwrap();
        std::fs::write(tls_dir.join("tls.crt"), &cert.cert_pem).unwrap();
        std::fs::write(tls_dir.join("tls.key"), &cert.key_pem).unwrap();
        std::fs::write(tls_dir.join("ca.crt"), cluster.connection().ca_pem()).unwrap();

        let mut fixture = Self {
            cluster,
            cp,
            apps,
            cluster_role,
            dir,
            sentry,
            operator: None,
            webhook_port: free_port(),
        };
        let url = format!("https://127.0.0.1:{}", fixture.webhook_port);
        let mut flags = extra.to_vec();
        if webhook_url {
            flags.extend(["--webhook-url", url.as_str()]);
        }
        fixture.start_operator(&flags).await;
        fixture
    }

    fn anchors_path(&self) -> PathBuf {
        self.dir.path().join("creds/ca.crt")
    }

    async fn operator_client(&self) -> kube::Client {
        let client = self
            .cp
            .client_for_service_account("dapr-operator")
            .await
            .unwrap();
        // RBAC reaches the authorizer's cache after a moment.
        let probe: Api<daprs_api::crd::Component> =
            Api::namespaced(client.clone(), self.apps.name());
        eventually(30, "the operator's RBAC", || {
            let probe = probe.clone();
            async move { probe.list(&Default::default()).await.ok().map(|_| ()) }
        })
        .await;
        client
    }

    async fn start_operator(&mut self, extra: &[&str]) {
        let tls_dir = self.dir.path().join("webhook-tls");
        let identity = format!("operator-{}", self.cp.name());
        let running = self
            .launch(&identity, &tls_dir, self.webhook_port, extra)
            .await;
        self.operator = Some(running);
    }

    /// Starts a replica named `identity` in the control plane, its webhooks on `webhook_port`
    /// with the certificate and caBundle in `tls_dir`, and waits until it is ready.
    async fn launch(
        &self,
        identity: &str,
        tls_dir: &Path,
        webhook_port: u16,
        extra: &[&str],
    ) -> daprs_operator::Running {
        let port = webhook_port.to_string();
        let webhook_name = component_webhook_name(&self.cp);
        let anchors = self.anchors_path();
        let mut argv = vec![
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
            &port,
            "--webhook-tls-dir",
            tls_dir.to_str().unwrap(),
            "--trust-anchors-file",
            anchors.to_str().unwrap(),
            "--watch-namespace",
            self.apps.name(),
            "--component-webhook-name",
            &webhook_name,
        ];
        argv.extend_from_slice(extra);
        let args = daprs_operator::config::Args::parse_from(argv);
        let env = daprs_operator::Environment {
            namespace: self.cp.name().to_owned(),
            client: self.operator_client().await,
            identity: identity.to_owned(),
        };
        let running = daprs_operator::start_in(args, env).await.unwrap();
        let url = format!("http://{}/healthz", running.healthz_addr);
        eventually(60, "the operator to become ready", || async {
            reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status() == 200)
                .then_some(())
        })
        .await;
        running
    }

    fn operator(&self) -> &daprs_operator::Running {
        self.operator.as_ref().unwrap()
    }

    /// The operator's `/metrics` page.
    async fn metrics(&self) -> String {
        let addr = self.operator().metrics_addr.unwrap();
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A channel to the operator as the sidecar of `app_id` in the apps namespace.
    async fn sidecar_channel(&self, app_id: &str) -> tonic::transport::Channel {
        let anchors = TrustAnchors::from_pem(&std::fs::read(self.anchors_path()).unwrap()).unwrap();
        let sentry_id = SpiffeId::new(CP_TD, self.cp.name(), "dapr-sentry").unwrap();
        let channel = sentry_client::sentry_channel(
            &self.sentry.grpc_addr.to_string(),
            anchors.clone(),
            sentry_id,
        )
        .unwrap();
        let issued = sentry_client::request_svid(
            channel,
            &SvidRequest {
                app_id: app_id.into(),
                namespace: self.apps.name().into(),
                ..SvidRequest::default()
            },
        )
        .await
        .unwrap();
        let operator_id = SpiffeId::new(CP_TD, self.cp.name(), "dapr-operator").unwrap();
        let verifier = SpiffeServerVerifier::new(anchors, PeerMatcher::Exact(operator_id));
        let config = tls::client_config(verifier, Some(SvidResolver::with(issued.svid))).unwrap();
        sentry_client::tls_channel(&self.operator().grpc_addr.to_string(), config).unwrap()
    }

    async fn apply(&self, yaml: &str) -> (bool, String, String) {
        kubectl_raw(
            self.cluster,
            &["apply", "-n", self.apps.name(), "-f", "-"],
            Some(yaml.to_owned()),
        )
        .await
    }

    async fn cleanup(mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop().await.unwrap();
        }
        let _ = kubectl_raw(
            self.cluster,
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                &self.cluster_role,
            ],
            None,
        )
        .await;
        let _ = kubectl_raw(
            self.cluster,
            &[
                "delete",
                "validatingwebhookconfiguration",
                &component_webhook_name(&self.cp),
                "--ignore-not-found",
            ],
            None,
        )
        .await;
    }
}

#[tokio::test]
async fn real_dapr_manifests_apply_and_bad_ones_are_refused_with_the_reason() {
    let f = Fixture::new(&["--disable-crd-apply"], false).await;
    for name in [
        "redis-statestore.yaml",
        "kafka-pubsub.yaml",
        "configuration.yaml",
        "subscription-v2alpha1.yaml",
        "resiliency.yaml",
        "httpendpoint.yaml",
    ] {
        let (ok, out, err) = f.apply(&manifest(name)).await;
        assert!(ok, "{name}: {err}");
        assert!(
            out.contains("created") || out.contains("configured"),
            "{name}: {out}"
        );
    }
    // The printer columns work.
    let listed = kubectl(f.cluster, &["get", "components", "-n", f.apps.name()], None).await;
    assert!(
        listed.contains("TYPE")
            && listed.contains("state.redis")
            && listed.contains("pubsub.kafka"),
        "{listed}"
    );

    // CEL rules and the schema catch real mistakes, with a message that says what to do.
    let empty_secret = manifest("redis-statestore.yaml").replace("name: redis\n", "name: \"\"\n");
    let (ok, _, err) = f.apply(&empty_secret).await;
    assert!(
        !ok && err.contains("secretKeyRef.name must name a secret"),
        "{err}"
    );
    let bad_type = manifest("kafka-pubsub.yaml").replace("type: pubsub.kafka", "type: kafka");
    let (ok, _, err) = f.apply(&bad_type).await;
    assert!(
        !ok && err.contains("spec.type must be <building block>.<name>"),
        "{err}"
    );
    let bad_url = manifest("httpendpoint.yaml").replace("https://api.payments", "api.payments");
    let (ok, _, err) = f.apply(&bad_url).await;
    assert!(
        !ok && err.contains("spec.baseUrl must start with http:// or https://"),
        "{err}"
    );
    let typo = manifest("configuration.yaml").replace("samplingRate:", "samplingRat:");
    let (ok, _, err) = f.apply(&typo).await;
    assert!(
        !ok && err.contains("samplingRat"),
        "strict field validation names the unknown field: {err}"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn the_component_webhook_denies_broken_components_and_warns_about_typos() {
    let f = Fixture::new(&["--disable-crd-apply"], false).await;
    // As the chart renders it: no caBundle; the operator's leader applies it (here the
    // ca.crt of --webhook-tls-dir, the CA of the certificate its webhooks serve).
    let name = component_webhook_name(&f.cp);
    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "components.operator.daprs.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": f.apps.name()}},
            "rules": [{"apiGroups": ["dapr.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"], "resources": ["components"]}],
            "clientConfig": {
                "url": format!("https://127.0.0.1:{}{}", f.webhook_port, daprs_operator::webhook::VALIDATE_PATH),
            }
        }]
    });
    kubectl(f.cluster, &["apply", "-f", "-"], Some(webhook.to_string())).await;
    let (bundle, only_ca_bundle) = eventually(30, "the operator to apply the caBundle", || {
        component_webhook_ca_bundle(f.cluster.client(), &name)
    })
    .await;
    assert_eq!(bundle, f.cluster.connection().ca_pem());
    assert!(
        only_ca_bundle,
        "the field manager daprs-operator owns only caBundle"
    );
    let missing_host = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: broken\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n    - name: redisHots\n      value: redis:6379\n";
    // The configuration reaches the API server's informer after a moment.
    let err = eventually(30, "the webhook to answer", || async {
        let (ok, _, err) = f.apply(missing_host).await;
        (!ok && err.contains("denied the request")).then_some(err)
    })
    .await;
    assert!(
        err.contains("\"redisHost\"") && err.contains("\"redisHots\" looks like a misspelling"),
        "{err}"
    );

    let typo = "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: warned\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n    - name: redisHost\n      value: redis:6379\n    - name: redisPasword\n      value: x\n";
    let (ok, _, err) = f.apply(typo).await;
    assert!(ok, "{err}");
    assert!(
        err.contains("Warning") && err.contains("did you mean \"redisPassword\"?"),
        "{err}"
    );
    let (ok, _, err) = f.apply(&manifest("kafka-pubsub.yaml")).await;
    assert!(
        ok && err.contains("not one daprs implements"),
        "unknown types are a warning: {err}"
    );
    f.cleanup().await;
}

#[tokio::test]
async fn a_component_change_reaches_a_connected_stream_with_its_secret_inlined() {
    let f = Fixture::new(&["--disable-crd-apply"], false).await;
    kubectl(
        f.cluster,
        &[
            "create",
            "secret",
            "generic",
            "redis",
            "-n",
            f.apps.name(),
            "--from-literal=redis-password=s3cret",
        ],
        None,
    )
    .await;
    let (ok, _, err) = f.apply(&manifest("redis-statestore.yaml")).await;
    assert!(ok, "{err}");
    let mut client = OperatorClient::new(f.sidecar_channel("orders").await);
    let listed = eventually(20, "the component in the list", || {
        let mut client = client.clone();
        let ns = f.apps.name().to_owned();
        async move {
            let list = client
                .list_components(ListComponentsRequest { namespace: ns })
                .await
                .ok()?
                .into_inner();
            (!list.components.is_empty()).then_some(list.components)
        }
    })
    .await;
    let component: Value = serde_json::from_slice(&listed[0]).unwrap();
    assert_eq!(
        component["spec"]["metadata"][1]["value"], "czNjcmV0",
        "base64 of the Secret's value"
    );

    let mut stream = client
        .component_update(ComponentUpdateRequest {
            namespace: f.apps.name().into(),
        })
        .await
        .unwrap()
        .into_inner();
    let changed = manifest("redis-statestore.yaml").replace(
        "keyPrefix\n      value: name",
        "keyPrefix\n      value: appid",
    );
    let applied_at = std::time::Instant::now();
    let (ok, _, err) = f.apply(&changed).await;
    assert!(ok, "{err}");
    let event = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    eprintln!("kubectl apply → stream event: {:?}", applied_at.elapsed());
    let value: Value = serde_json::from_slice(&event.component).unwrap();
    assert_eq!(event.r#type, ResourceEventType::Updated as i32);
    assert_eq!(value["spec"]["metadata"][3]["value"], "appid");
    assert_eq!(value["spec"]["metadata"][1]["value"], "czNjcmV0");

    // Another app, outside the scopes, sees nothing of it.
    let mut other = OperatorClient::new(f.sidecar_channel("billing").await);
    let list = other
        .list_components(ListComponentsRequest {
            namespace: f.apps.name().into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(list.components.is_empty());
    f.cleanup().await;
}

#[tokio::test]
async fn an_annotated_deployment_gets_an_owned_headless_service_and_the_leader_holds_the_lease() {
    let f = Fixture::new(&["--disable-crd-apply"], false).await;
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "orders"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "orders"}},
            "template": {
                "metadata": {"labels": {"app": "orders"},
                             "annotations": {"dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/metrics-port": "9999"}},
                "spec": {"containers": [{"name": "app", "image": "example/orders:1"}]}
            }
        }
    });
    let created = f.apps.accepts(&deployment).await;
    let services: Api<Service> = Api::namespaced(f.cluster.client(), f.apps.name());
    let service = eventually(30, "the orders-dapr Service", || {
        let services = services.clone();
        async move { services.get_opt("orders-dapr").await.ok().flatten() }
    })
    .await;
    let owner = &service.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "orders")
    );
    assert_eq!(Some(owner.uid.as_str()), created.metadata.uid.as_deref());
    let spec = service.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    let ports: Vec<_> = spec
        .ports
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.port))
        .collect();
    assert_eq!(
        ports,
        [
            ("dapr-http".into(), 80),
            ("dapr-grpc".into(), 50001),
            ("dapr-internal".into(), 50002),
            ("dapr-metrics".into(), 9999)
        ]
    );
    let metrics = f.metrics().await;
    assert!(
        metrics.contains("dapr_operator_service_created_total{app_id=\"orders\"} 1"),
        "{metrics}"
    );

    // The trust anchors are published in the app's namespace for the sidecar to mount, and
    // follow a change of the anchors (a rotation).
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(f.cluster.client(), f.apps.name());
    let anchors = std::fs::read_to_string(f.anchors_path()).unwrap();
    let published = |want: String| {
        let configmaps = configmaps.clone();
        move || {
            let (configmaps, want) = (configmaps.clone(), want.clone());
            async move {
                let cm = configmaps
                    .get_opt("dapr-trust-bundle")
                    .await
                    .ok()
                    .flatten()?;
                (cm.data?.get("ca.crt")? == &want).then_some(())
            }
        }
    };
    eventually(
        30,
        "the trust anchors in the app namespace",
        published(anchors.clone()),
    )
    .await;
    let rotated = format!("{anchors}{anchors}");
    std::fs::write(f.anchors_path(), &rotated).unwrap();
    eventually(
        30,
        "the rotated trust anchors in the app namespace",
        published(rotated),
    )
    .await;

    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(f.cluster.client(), f.cp.name());
    let lease = leases.get("operator.dapr.io").await.unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        Some(format!("operator-{}", f.cp.name()))
    );

    // Deleting the Deployment takes the Service with it (garbage collection by owner).
    kubectl(
        f.cluster,
        &["delete", "deployment", "orders", "-n", f.apps.name()],
        None,
    )
    .await;
    eventually(60, "the Service to be collected", || {
        let services = services.clone();
        async move {
            services
                .get_opt("orders-dapr")
                .await
                .ok()
                .and_then(|s| s.is_none().then_some(()))
        }
    })
    .await;
    f.cleanup().await;
}

#[tokio::test]
async fn sidecar_reports_show_in_kubectl_get_components() {
    let f = Fixture::new(&["--disable-crd-apply"], false).await;
    let (ok, _, err) = f.apply(&manifest("redis-statestore.yaml")).await;
    assert!(ok, "{err}");
    let components: Api<daprs_api::crd::Component> =
        Api::namespaced(f.cluster.client(), f.apps.name());
    let generation = components
        .get("statestore")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    let report = |app: &'static str, condition: ResourceConditionStatus, message: &'static str| {
        let f = &f;
        async move {
            let mut client = ResourceStatusClient::new(f.sidecar_channel(app).await);
            client
                .report_resources(ReportResourcesRequest {
                    namespace: f.apps.name().into(),
                    results: vec![ResourceResult {
                        resource_type: ResourceType::ResourceComponent as i32,
                        event_type: EventType::EventInit as i32,
                        name: "statestore".into(),
                        condition: condition as i32,
                        reason: Some("Init".into()),
                        message: Some(message.into()),
                        observed_generation: generation,
                        last_transaction_time: None,
                    }],
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert!(
        report("orders", ResourceConditionStatus::StatusSuccess, "")
            .await
            .rejected
            .is_empty()
    );
    assert!(
        report("checkout", ResourceConditionStatus::StatusSuccess, "")
            .await
            .rejected
            .is_empty()
    );
    let table = eventually(30, "Ready=True with 2 loaded", || async {
        let out = kubectl(
            f.cluster,
            &[
                "get",
                "components",
                "statestore",
                "-n",
                f.apps.name(),
                "--no-headers",
            ],
            None,
        )
        .await;
        let cols: Vec<_> = out.split_whitespace().collect();
        (cols.get(2) == Some(&"True") && cols.get(3) == Some(&"2")).then_some(out)
    })
    .await;
    assert!(
        table.starts_with("statestore") && table.contains("state.redis"),
        "{table}"
    );

    assert!(
        report(
            "checkout",
            ResourceConditionStatus::StatusFailure,
            "dial tcp: connection refused"
        )
        .await
        .rejected
        .is_empty()
    );
    let component = eventually(30, "Ready=False", || {
        let components = components.clone();
        async move {
            let c = components.get("statestore").await.ok()?;
            let ready = c
                .status
                .as_ref()?
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")?
                .clone();
            (ready.status == "False").then_some(c)
        }
    })
    .await;
    let status = component.status.unwrap();
    assert_eq!((status.loaded, status.failed), (Some(1), Some(1)));
    assert!(
        status.conditions[0].message.contains("checkout: dial tcp"),
        "{:?}",
        status.conditions
    );
    assert_eq!(
        status.apps.len(),
        2,
        "one entry per app, each its own: {:?}",
        status.apps
    );
    f.cleanup().await;
}

/// The tests that let the operator point the (cluster-scoped) Subscription conversion webhook
/// at themselves run one at a time.
static CONVERSION_WEBHOOK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn the_operator_applies_its_crds_and_converts_v1alpha1_subscriptions() {
    let _alone = CONVERSION_WEBHOOK.lock().await;
    let f = Fixture::new(&[], true).await;
    // It applied (upgraded) the CRDs the admin installed without a daprs version.
    let crd = kubectl(
        f.cluster,
        &["get", "crd", "subscriptions.dapr.io", "-o", "json"],
        None,
    )
    .await;
    let crd: Value = serde_json::from_str(&crd).unwrap();
    assert_eq!(
        crd["metadata"]["annotations"]["daprs.dev/version"],
        env!("CARGO_PKG_VERSION")
    );
    let client_config = &crd["spec"]["conversion"]["webhook"]["clientConfig"];
    assert_eq!(
        client_config["url"],
        format!("https://127.0.0.1:{}/convert", f.webhook_port),
        "{client_config}"
    );

    let (ok, _, err) = f.apply(&manifest("subscription-v1alpha1.yaml")).await;
    assert!(
        ok,
        "a v1alpha1 Subscription is stored through the conversion webhook: {err}"
    );
    let stored = kubectl(
        f.cluster,
        &[
            "get",
            "subscriptions.v2alpha1.dapr.io",
            "order-sub-v1",
            "-n",
            f.apps.name(),
            "-o",
            "json",
        ],
        None,
    )
    .await;
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["spec"]["routes"]["default"], "/orders");
    let (ok, _, err) = f.apply(&manifest("subscription-v2alpha1.yaml")).await;
    assert!(ok, "{err}");
    let old = kubectl(
        f.cluster,
        &[
            "get",
            "subscriptions.v1alpha1.dapr.io",
            "order-sub",
            "-n",
            f.apps.name(),
            "-o",
            "json",
        ],
        None,
    )
    .await;
    let old: Value = serde_json::from_str(&old).unwrap();
    assert_eq!(
        old["spec"]["route"], "/orders",
        "read back as v1alpha1, rules dropped"
    );
    f.cleanup().await;
}

/// Creates (as admin) a pod that is never run, for its pod-bound token with the audience of
/// the sentry of control plane `cp`.
async fn token_pod(ns: &TempNs, cp: &str, name: &str, account: &str, annotations: Value) -> String {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"serviceAccountName": account,
                 "containers": [{"name": "main", "image": "example.invalid/unused:1"}]}
    }))
    .unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ns.client(), ns.name());
    let created = pods.create(&Default::default(), &pod).await.unwrap();
    let audience = daprs_api::names::sentry_audience(CP_TD, cp);
    ns.connection()
        .pod_token(&created, &[&audience], None)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_operator_gets_its_certificate_from_sentry_with_its_service_account_token() {
    tls::install_default_provider();
    let cluster = Cluster::shared().await;
    install_crds(cluster).await;
    let cp = TempNs::create(cluster.connection()).await.unwrap();
    let apps = TempNs::create(cluster.connection()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // sentry in kubernetes mode with its own RBAC: it validates tokens by TokenReview and
    // keeps its CA in the dapr-trust-bundle Secret and ConfigMap of the control plane.
    let sentry_role = format!("daprs-sentry-{}", cp.name());
    let rbac = include_str!("../fixtures/sentry-rbac.yaml")
        .replace("CLUSTER_ROLE", &sentry_role)
        .replace("NAMESPACE", cp.name());
    kubectl(cluster, &["apply", "-f", "-"], Some(rbac)).await;
    let operator_role = format!("daprs-operator-{}", cp.name());
    let webhook_name = component_webhook_name(&cp);
    let rbac = include_str!("../fixtures/operator-rbac.yaml")
        .replace("CLUSTER_ROLE", &operator_role)
        .replace("COMPONENT_WEBHOOK", &webhook_name)
        .replace("NAMESPACE", cp.name());
    kubectl(cluster, &["apply", "-f", "-"], Some(rbac)).await;
    let sentry_client = cp.client_for_service_account("dapr-sentry").await.unwrap();
    let reviews: Api<k8s_openapi::api::authentication::v1::TokenReview> =
        Api::all(sentry_client.clone());
    eventually(30, "sentry's RBAC", || {
        let reviews = reviews.clone();
        async move {
            let probe = k8s_openapi::api::authentication::v1::TokenReview {
                spec: k8s_openapi::api::authentication::v1::TokenReviewSpec {
                    token: Some("x".into()),
                    audiences: None,
                },
                ..Default::default()
            };
            reviews
                .create(&Default::default(), &probe)
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
    // The anchors as the chart mounts them: the ConfigMap sentry published.
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(cluster.client(), cp.name());
    let bundle = configmaps
        .get(daprs_api::names::TRUST_BUNDLE_NAME)
        .await
        .unwrap();
    let anchors_pem = bundle.data.unwrap()[daprs_api::names::TRUST_ANCHORS_KEY].clone();
    let anchors_file = dir.path().join("ca.crt");
    std::fs::write(&anchors_file, &anchors_pem).unwrap();
    let anchors = TrustAnchors::from_pem(anchors_pem.as_bytes()).unwrap();
    let sentry_id = SpiffeId::new(CP_TD, cp.name(), "dapr-sentry").unwrap();
    let sentry_channel = || {
        sentry_client::sentry_channel(
            &sentry.grpc_addr.to_string(),
            anchors.clone(),
            sentry_id.clone(),
        )
        .unwrap()
    };

    // No shortcut: without a token sentry refuses the operator's identity.
    let refused = sentry_client::request_svid(
        sentry_channel(),
        &SvidRequest {
            app_id: "dapr-operator".into(),
            namespace: cp.name().into(),
            trust_domain: CP_TD.into(),
            ..SvidRequest::default()
        },
    )
    .await;
    assert!(
        refused.is_err(),
        "sentry issued dapr-operator without a token"
    );

    cp.accepts(&json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Configuration",
        "metadata": {"name": "daprsystem"},
        "spec": {"mtls": {"enabled": true, "controlPlaneTrustDomain": CP_TD,
                          "sentryAddress": sentry.grpc_addr.to_string()}}
    }))
    .await;

    // The operator's pod (never run): its ServiceAccount, the control-plane annotation, and
    // the pod-bound token the chart projects for sentry's audience.
    let token = token_pod(
        &cp,
        cp.name(),
        "dapr-operator-0",
        "dapr-operator",
        json!({"dapr.io/control-plane": "operator"}),
    )
    .await;
    let token_file = dir.path().join("sentry-token");
    std::fs::write(&token_file, token).unwrap();
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
    let args = daprs_operator::config::Args::parse_from([
        "operator",
        "--listen-address",
        "127.0.0.1",
        "--port",
        "0",
        "--healthz-listen-address",
        "127.0.0.1",
        "--healthz-port",
        "0",
        "--enable-metrics=false",
        "--webhook-server-listen-address",
        "127.0.0.1",
        "--webhook-server-port",
        "0",
        "--trust-anchors-file",
        anchors_file.to_str().unwrap(),
        "--sentry-token-file",
        token_file.to_str().unwrap(),
        "--watch-namespace",
        apps.name(),
        "--disable-crd-apply",
        "--component-webhook-name",
        &webhook_name,
    ]);
    let operator = daprs_operator::start_in(
        args,
        daprs_operator::Environment {
            namespace: cp.name().to_owned(),
            client: operator_client,
            identity: "dapr-operator-0".into(),
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}/healthz", operator.healthz_addr);
    eventually(60, "the operator to become ready", || async {
        reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status() == 200)
            .then_some(())
    })
    .await;

    // A sidecar of app orders, its SVID also from sentry by its pod-bound token, lists the
    // Components of its namespace from the operator, which it verifies as dapr-operator.
    apps.accepts(&json!({
        "apiVersion": "dapr.io/v1alpha1", "kind": "Component",
        "metadata": {"name": "statestore"},
        "spec": {"type": "state.redis", "version": "v1",
                 "metadata": [{"name": "redisHost", "value": "redis:6379"}]}
    }))
    .await;
    let app_token = token_pod(
        &apps,
        cp.name(),
        "orders-0",
        "default",
        json!({"dapr.io/app-id": "orders"}),
    )
    .await;
    let issued = sentry_client::request_svid(
        sentry_channel(),
        &SvidRequest {
            app_id: "orders".into(),
            namespace: apps.name().into(),
            trust_domain: String::new(),
            token: app_token,
            validator: daprs_api::proto::sentry::TokenValidator::Kubernetes,
        },
    )
    .await
    .unwrap();
    let operator_id = SpiffeId::new(CP_TD, cp.name(), "dapr-operator").unwrap();
    let verifier = SpiffeServerVerifier::new(anchors.clone(), PeerMatcher::Exact(operator_id));
    let config = tls::client_config(verifier, Some(SvidResolver::with(issued.svid))).unwrap();
    let channel = sentry_client::tls_channel(&operator.grpc_addr.to_string(), config).unwrap();
    let listed = eventually(20, "the Component in the operator's list", || {
        let mut client = OperatorClient::new(channel.clone());
        let namespace = apps.name().to_owned();
        async move {
            let response = client
                .list_components(ListComponentsRequest { namespace })
                .await
                .ok()?
                .into_inner();
            (!response.components.is_empty()).then_some(response.components)
        }
    })
    .await;
    let component: Value = serde_json::from_slice(&listed[0]).unwrap();
    assert_eq!(component["metadata"]["name"], "statestore");

    // The Component webhook, as the chart renders it (no caBundle), is given the trust anchors
    // the operator's webhooks serve their SVID under, and follows a rotation of the anchors
    // file, with no helm upgrade.
    let webhook = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": webhook_name},
        "webhooks": [{
            "name": "components.operator.daprs.dev",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": apps.name()}},
            "rules": [{"apiGroups": ["dapr.io"], "apiVersions": ["v1alpha1"], "operations": ["CREATE", "UPDATE"], "resources": ["components"]}],
            "clientConfig": {"service": {"namespace": cp.name(), "name": "dapr-webhook",
                                         "path": daprs_operator::webhook::VALIDATE_PATH}}
        }]
    });
    kubectl(cluster, &["apply", "-f", "-"], Some(webhook.to_string())).await;
    let bundle_is = |want: String| {
        let name = webhook_name.clone();
        move || {
            let (name, want) = (name.clone(), want.clone());
            async move {
                let (bundle, only_ca_bundle) =
                    component_webhook_ca_bundle(cluster.client(), &name).await?;
                assert!(
                    only_ca_bundle,
                    "the field manager daprs-operator owns only caBundle"
                );
                (bundle == want).then_some(())
            }
        }
    };
    eventually(
        30,
        "the caBundle to be the trust anchors",
        bundle_is(anchors_pem.clone()),
    )
    .await;
    let rotated = format!("{anchors_pem}{anchors_pem}");
    std::fs::write(&anchors_file, &rotated).unwrap();
    eventually(
        40,
        "the caBundle to follow the rotated anchors file",
        bundle_is(rotated),
    )
    .await;

    operator.stop().await.unwrap();
    sentry.stop().await.unwrap();
    let _ = kubectl_raw(
        cluster,
        &[
            "delete",
            "clusterrole,clusterrolebinding",
            &sentry_role,
            &operator_role,
        ],
        None,
    )
    .await;
    let _ = kubectl_raw(
        cluster,
        &[
            "delete",
            "validatingwebhookconfiguration",
            &webhook_name,
            "--ignore-not-found",
        ],
        None,
    )
    .await;
}

fn pod_json(name: &str, annotations: Value, labels: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "annotations": annotations, "labels": labels},
           "spec": spec})
}

#[tokio::test]
async fn the_watchdog_deletes_pods_that_missed_injection_once_the_injector_is_ready() {
    use k8s_openapi::api::core::v1::Pod;
    let f = Fixture::new(
        &[
            "--disable-crd-apply",
            "--watch-interval",
            "1s",
            "--watchdog-can-patch-pod-labels",
            "--max-pod-restarts-per-minute",
            "0",
        ],
        false,
    )
    .await;
    // Pods as the API server stores them when no injector answered (none is registered here).
    let enabled = json!({"dapr.io/enabled": "true"});
    let app = json!({"name": "app", "image": "example/app:1"});
    let daprd = json!({"name": "daprd", "image": "example/daprd:1"});
    let native = json!({"name": "daprd", "image": "example/daprd:1", "restartPolicy": "Always"});
    for pod in [
        pod_json(
            "missed",
            enabled.clone(),
            json!({}),
            json!({"containers": [app]}),
        ),
        pod_json(
            "sidecar",
            enabled.clone(),
            json!({}),
            json!({"containers": [app, daprd]}),
        ),
        pod_json(
            "native",
            enabled.clone(),
            json!({}),
            json!({"initContainers": [native], "containers": [app]}),
        ),
        pod_json("plain", json!({}), json!({}), json!({"containers": [app]})),
        pod_json(
            "injected",
            enabled.clone(),
            json!({"dapr.io/sidecar-injected": "true"}),
            json!({"containers": [app]}),
        ),
    ] {
        f.apps.accepts(&pod).await;
    }
    // The injector's Deployment, labelled as the chart labels it; no pod of it is ready yet.
    f.cp.accepts(&json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "dapr-sidecar-injector",
                     "labels": {"app.kubernetes.io/part-of": "daprs", "app.kubernetes.io/component": "injector"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "dapr-sidecar-injector"}},
                 "template": {"metadata": {"labels": {"app": "dapr-sidecar-injector"}},
                              "spec": {"containers": [{"name": "injector", "image": "example/injector:1"}]}}}
    }))
    .await;
    let pods: Api<Pod> = Api::namespaced(f.cluster.client(), f.apps.name());
    let names = |pods: Api<Pod>| async move {
        let mut listed: Vec<(String, bool)> = pods
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|p| {
                let patched = p
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("dapr.io/watchdog-patched"))
                    == Some(&"true".to_owned());
                (p.metadata.name.unwrap(), patched)
            })
            .collect();
        listed.sort();
        listed
    };
    eventually(30, "the operator to lead", || async {
        (*f.operator().leading.borrow()).then_some(())
    })
    .await;
    // Leading with the watchdog on, but without a ready injector it touches nothing: a pod
    // deleted now would come back without a sidecar again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let untouched: Vec<(String, bool)> = ["injected", "missed", "native", "plain", "sidecar"]
        .iter()
        .map(|n| (n.to_string(), false))
        .collect();
    assert_eq!(names(pods.clone()).await, untouched);

    // The injector's pod becomes ready (there is no kubelet: its status is written as one
    // would), so its Deployment counts a ready replica.
    let cp_pods: Api<Pod> = Api::namespaced(f.cluster.client(), f.cp.name());
    let injector_pod = eventually(30, "the injector's pod", || {
        let cp_pods = cp_pods.clone();
        async move {
            let listed = cp_pods
                .list(&kube::api::ListParams::default().labels("app=dapr-sidecar-injector"))
                .await
                .ok()?;
            listed.items.into_iter().next()?.metadata.name
        }
    })
    .await;
    cp_pods
        .patch_status(
            &injector_pod,
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}]}})),
        )
        .await
        .unwrap();

    let expected: Vec<(String, bool)> = [
        ("injected", false),
        ("native", true),
        ("plain", false),
        ("sidecar", true),
    ]
    .iter()
    .map(|(n, p)| (n.to_string(), *p))
    .collect();
    let seen = eventually(60, "the watchdog's pass", || {
        let (pods, expected) = (pods.clone(), expected.clone());
        async move {
            let seen = names(pods).await;
            (seen == expected).then_some(seen)
        }
    })
    .await;
    assert_eq!(
        seen, expected,
        "only the pod without its sidecar was deleted"
    );
    // Each pod acted on is counted once: passes after the first find nothing to do.
    let metrics = f.metrics().await;
    for line in [
        "daprs_operator_watchdog_pods_total{result=\"deleted\"} 1",
        "daprs_operator_watchdog_pods_total{result=\"labelled\"} 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
    assert!(!metrics.contains("result=\"failed\""), "{metrics}");
    f.cleanup().await;
}

/// The Subscription CRD's conversion webhook: (url, caBundle).
async fn conversion_target(cluster: &Cluster) -> (String, String) {
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(cluster.client());
    let crd = crds.get("subscriptions.dapr.io").await.unwrap();
    let config = crd
        .spec
        .conversion
        .and_then(|c| c.webhook)
        .and_then(|w| w.client_config)
        .unwrap();
    (
        config.url.unwrap_or_default(),
        String::from_utf8(config.ca_bundle.map(|b| b.0).unwrap_or_default()).unwrap(),
    )
}

#[tokio::test]
async fn only_the_leader_points_the_conversion_webhook_at_itself() {
    let _alone = CONVERSION_WEBHOOK.lock().await;
    let mut f = Fixture::new(&[], true).await;
    let ca = f.cluster.connection().ca_pem().to_owned();
    let url_a = format!("https://127.0.0.1:{}/convert", f.webhook_port);
    let a = eventually(30, "the leader's conversion webhook", || async {
        let target = conversion_target(f.cluster).await;
        (target == (url_a.clone(), ca.clone())).then_some(target)
    })
    .await;

    // A hand-edited caBundle (valid PEM, as the API server insists, but not the operator's)
    // is put back by the leader within one poll.
    use base64::Engine as _;
    let crds: Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    > = Api::all(f.cluster.client());
    crds.patch(
        "subscriptions.dapr.io",
        &Default::default(),
        &kube::api::Patch::Merge(json!({"spec": {"conversion": {"webhook": {"clientConfig":
            {"caBundle": base64::engine::general_purpose::STANDARD.encode(format!("{ca}{ca}"))}}}}})),
    )
    .await
    .unwrap();
    assert_ne!(conversion_target(f.cluster).await, a, "the edit took");
    eventually(30, "the caBundle restored", || async {
        (conversion_target(f.cluster).await == a).then_some(())
    })
    .await;

    // A second replica whose webhooks would be trusted under another bundle (still the
    // cluster CA, twice) and reached at another URL; the first holds the lease.
    let tls_b = f.dir.path().join("webhook-tls-b");
    std::fs::create_dir_all(&tls_b).unwrap();
    for file in ["tls.crt", "tls.key"] {
        std::fs::copy(
            f.dir.path().join("webhook-tls").join(file),
            tls_b.join(file),
        )
        .unwrap();
    }
    let bundle_b = format!("{ca}{ca}");
    std::fs::write(tls_b.join("ca.crt"), &bundle_b).unwrap();
    let port_b = free_port();
    let url_b = format!("https://127.0.0.1:{port_b}");
    let identity_b = format!("operator-{}-b", f.cp.name());
    let b = f
        .launch(&identity_b, &tls_b, port_b, &["--webhook-url", &url_b])
        .await;
    assert!(!*b.leading.borrow(), "the first replica holds the lease");
    // A replica that is not the leader leaves the CRD alone (before, every replica patched
    // it at start-up, so the two would have taken turns).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(conversion_target(f.cluster).await, a);
    assert!(!*b.leading.borrow());

    // When the leader stops, the second replica takes the lease and points the webhook at
    // itself with its bundle.
    f.operator.take().unwrap().stop().await.unwrap();
    let want = (format!("{url_b}/convert"), bundle_b);
    eventually(60, "the new leader's conversion webhook", || async {
        (conversion_target(f.cluster).await == want).then_some(())
    })
    .await;
    assert!(*b.leading.borrow());
    b.stop().await.unwrap();
    f.cleanup().await;
}

/// The `Valid` and `Ready` conditions and `observedGeneration` of `plural/name` once the
/// status is written for the current generation.
async fn conditions_of(f: &Fixture, plural: &str, name: &str) -> Option<(Value, Value, i64)> {
    let out = kubectl(
        f.cluster,
        &["get", plural, name, "-n", f.apps.name(), "-o", "json"],
        None,
    )
    .await;
    let object: Value = serde_json::from_str(&out).ok()?;
    let generation = object["metadata"]["generation"].as_i64()?;
    let status = &object["status"];
    if status["observedGeneration"].as_i64()? != generation {
        return None;
    }
    let find = |t: &str| {
        status["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
    };
    let ready = find("Ready")?;
    if ready["status"] == "Unknown" {
        return None;
    }
    Some((find("Valid")?, ready, generation))
}

#[tokio::test]
async fn configurations_subscriptions_resiliencies_and_http_endpoints_get_a_status() {
    let f = Fixture::new(&["--disable-crd-apply"], false).await;
    for (file, plural, name) in [
        ("configuration.yaml", "configurations", "appconfig"),
        ("subscription-v2alpha1.yaml", "subscriptions", "order-sub"),
        ("resiliency.yaml", "resiliencies", "myresiliency"),
        ("httpendpoint.yaml", "httpendpoints", "payments"),
    ] {
        let (ok, _, err) = f.apply(&manifest(file)).await;
        assert!(ok, "{file}: {err}");
        let (valid, ready, generation) =
            eventually(30, &format!("the status of {plural}/{name}"), || {
                conditions_of(&f, plural, name)
            })
            .await;
        assert_eq!(
            (&valid["status"], &valid["reason"]),
            (&json!("True"), &json!("Parsed")),
            "{plural}: {valid}"
        );
        assert_eq!(
            (&ready["status"], &ready["reason"]),
            (&json!("True"), &json!("Served")),
            "{plural}: {ready}"
        );
        assert_eq!(ready["observedGeneration"], generation);
        // `kubectl get` shows it in the READY column (columns are aligned; a header such as
        // BASE URL has a space, so read the row at the header's offset).
        let table = kubectl(f.cluster, &["get", plural, name, "-n", f.apps.name()], None).await;
        let mut lines = table.lines();
        let (header, row) = (lines.next().unwrap(), lines.next().unwrap());
        let ready_column = header
            .find("READY")
            .and_then(|at| row.get(at..))
            .and_then(|rest| rest.split_whitespace().next());
        assert_eq!(ready_column, Some("True"), "kubectl get {plural}:\n{table}");
        if plural == "subscriptions" {
            assert!(
                valid["message"]
                    .as_str()
                    .unwrap()
                    .contains("routing rule(s) are dropped"),
                "what a dapr.io/v1alpha1 reader loses is said: {valid}"
            );
        }
    }

    // A Resiliency target naming a policy that is not defined: not valid, with where and
    // what; still served (sidecars load it).
    let typo = manifest("resiliency.yaml").replace(
        "        retry: retryForever\n        circuitBreaker: simpleCB\n        circuitBreakerCacheSize: 100",
        "        retry: retryForEver\n        circuitBreaker: simpleCB\n        circuitBreakerCacheSize: 100",
    );
    assert_ne!(typo, manifest("resiliency.yaml"));
    let (ok, _, err) = f.apply(&typo).await;
    assert!(ok, "{err}");
    let (valid, ready, generation) = eventually(30, "the new generation's status", || async {
        let seen = conditions_of(&f, "resiliencies", "myresiliency").await?;
        (seen.2 > 1).then_some(seen)
    })
    .await;
    assert_eq!(generation, 2);
    assert_eq!(
        (&valid["status"], &valid["reason"]),
        (&json!("False"), &json!("UnknownPolicy")),
        "{valid}"
    );
    assert!(
        valid["message"].as_str().unwrap().contains(
            "spec.targets.apps.appB.retry names \"retryForEver\", which spec.policies.retries does not define"
        ),
        "{valid}"
    );
    assert_eq!(ready["status"], "True", "{ready}");

    // The writes belong to the operator's field manager.
    let out = kubectl(
        f.cluster,
        &[
            "get",
            "configurations",
            "appconfig",
            "-n",
            f.apps.name(),
            "-o",
            "json",
            "--show-managed-fields",
        ],
        None,
    )
    .await;
    let object: Value = serde_json::from_str(&out).unwrap();
    assert!(
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["manager"] == "daprs-operator" && m["subresource"] == "status"),
        "{}",
        object["metadata"]["managedFields"]
    );
    f.cleanup().await;
}
