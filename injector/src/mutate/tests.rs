//! `mutate()` from JSON pod fixtures: the patch is applied with an independent JSON Patch
//! implementation and the resulting pod is inspected.

use serde_json::{Value, json};

use super::*;
use crate::admission::{AdmissionRequest, GroupVersionKind, UserInfo};

const ANCHORS: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const REPLICASET_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";

fn fixture_pod() -> Value {
    serde_json::from_str(include_str!("../../tests/fixtures/pod-deployment.json")).unwrap()
}

fn request(pod: Value) -> AdmissionRequest {
    request_by(pod, REPLICASET_CONTROLLER, &[])
}

fn request_by(pod: Value, username: &str, groups: &[&str]) -> AdmissionRequest {
    AdmissionRequest {
        uid: "uid-1".into(),
        kind: GroupVersionKind {
            group: String::new(),
            version: "v1".into(),
            kind: "Pod".into(),
        },
        namespace: Some("shop".into()),
        name: None,
        operation: "CREATE".into(),
        user_info: UserInfo {
            username: username.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        },
        object: Some(pod),
        dry_run: None,
    }
}

fn ctx() -> Context<'static> {
    Context {
        trust_anchors: Some(ANCHORS),
        mtls_enabled: true,
        components: Components::NotListed,
    }
}

fn with_annotations(pairs: &[(&str, &str)]) -> Value {
    let mut pod = fixture_pod();
    let annotations = pod["metadata"]["annotations"].as_object_mut().unwrap();
    for (k, v) in pairs {
        annotations.insert((*k).into(), json!(v));
    }
    pod
}

fn decide(pod: Value) -> Decision {
    mutate(&request(pod), &InjectorConfig::for_tests(), ctx())
}

/// Applies the decision's patch to `pod` and returns the result.
fn apply(pod: &Value, decision: &Decision) -> Value {
    let Decision::Inject { operations, .. } = decision else {
        panic!("expected an injection, got {decision:?}");
    };
    let patch: json_patch::Patch =
        serde_json::from_value(serde_json::to_value(operations).unwrap()).unwrap();
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch).expect("the patch applies to the pod");
    out
}

fn injected(pod: Value) -> Value {
    let decision = decide(pod.clone());
    apply(&pod, &decision)
}

fn daprd(pod: &Value) -> Value {
    for list in ["containers", "initContainers"] {
        if let Some(found) = pod["spec"][list]
            .as_array()
            .and_then(|l| l.iter().find(|c| c["name"] == "daprd"))
        {
            return found.clone();
        }
    }
    panic!("no daprd in {pod:#}");
}

fn args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

fn env_of(container: &Value, name: &str) -> Option<Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
}

fn has_seq(haystack: &[String], needle: &[&str]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.iter().zip(needle).all(|(a, b)| a == b))
}

fn warnings(decision: &Decision) -> &[String] {
    match decision {
        Decision::Inject { warnings, .. }
        | Decision::Skip { warnings, .. }
        | Decision::Deny { warnings, .. } => warnings,
    }
}

#[test]
fn a_deployment_pod_gets_daprd_as_dapr_injects_it() {
    let pod = injected(fixture_pod());
    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 3);
    assert_eq!(containers[2]["name"], "daprd", "daprd is appended");
    let d = daprd(&pod);
    assert_eq!(d["image"], "daprio/daprd:latest");
    assert_eq!(d["imagePullPolicy"], "IfNotPresent");
    assert!(d.get("command").is_none());
    assert!(d.get("restartPolicy").is_none() && d.get("startupProbe").is_none());
    let expected: Vec<&str> = vec![
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
        "orders",
        "--app-protocol",
        "http",
        "--log-level",
        "info",
        "--dapr-graceful-shutdown-seconds",
        "-1",
        "--mode",
        "kubernetes",
        "--control-plane-address",
        "dapr-api.dapr-system.svc.cluster.local:443",
        "--sentry-address",
        "dapr-sentry.dapr-system.svc.cluster.local:443",
        "--app-port",
        "8080",
        "--enable-metrics",
        "--metrics-port",
        "9090",
        "--config",
        "tracing",
        "--placement-host-address",
        "dapr-placement-server.dapr-system.svc.cluster.local:50005",
        "--enable-mtls",
        "--scheduler-host-address",
        "dapr-scheduler-server-a.dapr-system.svc.cluster.local:443",
    ];
    assert_eq!(args(&d), expected);

    assert_eq!(
        d["ports"],
        json!([
            {"name": "dapr-http", "containerPort": 3500, "protocol": "TCP"},
            {"name": "dapr-grpc", "containerPort": 50001, "protocol": "TCP"},
            {"name": "dapr-internal", "containerPort": 50002, "protocol": "TCP"},
            {"name": "dapr-metrics", "containerPort": 9090, "protocol": "TCP"},
        ])
    );
    assert_eq!(
        d["readinessProbe"],
        json!({"httpGet": {"path": "/v1.0/healthz", "port": 3501}, "initialDelaySeconds": 1,
               "timeoutSeconds": 1, "periodSeconds": 1, "failureThreshold": 5})
    );
    assert_eq!(
        d["livenessProbe"],
        json!({"tcpSocket": {"port": 3501}, "initialDelaySeconds": 180, "timeoutSeconds": 3,
               "periodSeconds": 10, "failureThreshold": 5})
    );
    let env_names: Vec<&str> = d["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env_names,
        [
            "NAMESPACE",
            "DAPR_TRUST_ANCHORS",
            "POD_NAME",
            "DAPR_CONTROLPLANE_NAMESPACE",
            "DAPR_CONTROLPLANE_TRUST_DOMAIN",
            "DAPR_TRUST_ANCHORS_FILE"
        ]
    );
    assert_eq!(env_of(&d, "NAMESPACE").unwrap()["value"], "shop");
    assert_eq!(env_of(&d, "DAPR_TRUST_ANCHORS").unwrap()["value"], ANCHORS);
    assert_eq!(
        env_of(&d, "POD_NAME").unwrap()["valueFrom"],
        json!({"fieldRef": {"fieldPath": "metadata.name"}})
    );
    assert_eq!(
        env_of(&d, "DAPR_CONTROLPLANE_NAMESPACE").unwrap()["value"],
        "dapr-system"
    );
    assert_eq!(
        env_of(&d, "DAPR_CONTROLPLANE_TRUST_DOMAIN").unwrap()["value"],
        "cluster.local"
    );
    assert_eq!(
        env_of(&d, "DAPR_TRUST_ANCHORS_FILE").unwrap()["value"],
        "/var/run/secrets/dapr.io/trust-anchors/ca.crt"
    );
    assert_eq!(
        d["securityContext"],
        json!({"allowPrivilegeEscalation": false, "runAsNonRoot": true, "readOnlyRootFilesystem": true})
    );
    assert!(d.get("resources").is_none());
    assert_eq!(
        d["volumeMounts"],
        json!([
            {"name": "dapr-identity-token", "mountPath": "/var/run/secrets/dapr.io/sentrytoken", "readOnly": true},
            {"name": "dapr-trust-bundle", "mountPath": "/var/run/secrets/dapr.io/trust-anchors", "readOnly": true},
        ])
    );

    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 4, "two of the pod's, two of dapr's");
    assert_eq!(
        volumes[2],
        json!({"name": "dapr-identity-token", "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"audience": "spiffe://cluster.local/ns/dapr-system/dapr-sentry",
                                     "expirationSeconds": 7200, "path": "token"}}]}})
    );
    assert_eq!(
        volumes[3],
        json!({"name": "dapr-trust-bundle", "configMap": {"name": "dapr-trust-bundle", "defaultMode": 420,
               "items": [{"key": "ca.crt", "path": "ca.crt"}], "optional": true}})
    );

    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["dapr.io/sidecar-injected"], "true");
    assert_eq!(labels["dapr.io/app-id"], "orders");
    assert_eq!(labels["dapr.io/metrics-enabled"], "true");
    assert_eq!(labels["app"], "orders", "existing labels are kept");

    for app in &containers[..2] {
        assert_eq!(env_of(app, "DAPR_HTTP_PORT").unwrap()["value"], "3500");
        assert_eq!(env_of(app, "DAPR_GRPC_PORT").unwrap()["value"], "50001");
        assert_eq!(env_of(app, "APP_PROTOCOL").unwrap()["value"], "http");
    }
    assert_eq!(
        env_of(&containers[0], "LOG_FORMAT").unwrap()["value"],
        "json",
        "existing env is kept"
    );
}

#[test]
fn the_patch_creates_parents_before_children() {
    let mut pod = fixture_pod();
    let spec = pod["spec"].as_object_mut().unwrap();
    spec.remove("volumes");
    spec["containers"][0].as_object_mut().unwrap().remove("env");
    spec["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("volumeMounts");
    pod["metadata"].as_object_mut().unwrap().remove("labels");
    let decision = decide(pod.clone());
    let Decision::Inject { operations, .. } = &decision else {
        panic!("{decision:?}")
    };
    let paths: Vec<&str> = operations.iter().map(|o| o.path.as_str()).collect();
    let first = |p: &str| paths.iter().position(|x| *x == p).unwrap();
    assert!(first("/metadata/labels") < first("/metadata/labels/dapr.io~1app-id"));
    assert!(paths.contains(&"/spec/volumes"));
    assert!(paths.contains(&"/spec/containers/0/env"));
    let out = apply(&pod, &decision);
    assert_eq!(out["metadata"]["labels"]["dapr.io/app-id"], "orders");
    assert_eq!(out["spec"]["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(
        out["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn reinvocation_is_a_no_op() {
    let once = injected(fixture_pod());
    assert_eq!(decide(once), skip(Skip::AlreadyInjected));
    let mut native = fixture_pod();
    native["spec"]["initContainers"] = json!([{"name": "daprd", "image": "x"}]);
    assert_eq!(decide(native), skip(Skip::AlreadyInjected));
}

#[test]
fn pods_without_enabled_true_are_skipped() {
    let mut pod = fixture_pod();
    pod["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("dapr.io/enabled");
    assert_eq!(decide(pod), skip(Skip::NotEnabled));
    assert_eq!(
        decide(with_annotations(&[("dapr.io/enabled", "false")])),
        skip(Skip::NotEnabled)
    );
    // "TRUE" enables (any case); "yes" does not, but says why.
    assert!(matches!(
        decide(with_annotations(&[("dapr.io/enabled", "TRUE")])),
        Decision::Inject { .. }
    ));
    let yes = decide(with_annotations(&[("dapr.io/enabled", "yes")]));
    assert!(matches!(
        yes,
        Decision::Skip {
            skip: Skip::NotEnabled,
            ..
        }
    ));
    assert!(warnings(&yes)[0].contains("only \"true\" does"), "{yes:?}");
}

#[test]
fn only_allowed_callers_get_sidecars() {
    let config = InjectorConfig::for_tests();
    let bare = |user: &str, groups: &[&str]| {
        let mut pod = fixture_pod();
        pod["metadata"]["name"] = json!("debug");
        mutate(&request_by(pod, user, groups), &config, ctx())
    };
    let alice = bare("alice", &["system:authenticated"]);
    assert!(
        matches!(&alice, Decision::Skip { skip: Skip::CallerNotAllowed { username }, .. } if username == "alice"),
        "{alice:?}"
    );
    assert!(warnings(&alice)[0].contains("not injected"));
    assert!(matches!(
        bare("kubernetes-admin", &["system:masters"]),
        Decision::Inject { .. }
    ));
    for controller in [
        "deployment-controller",
        "job-controller",
        "statefulset-controller",
        "daemon-set-controller",
        "cronjob-controller",
    ] {
        let user = format!("system:serviceaccount:kube-system:{controller}");
        assert!(
            matches!(bare(&user, &[]), Decision::Inject { .. }),
            "{controller}"
        );
    }
    let mut config = InjectorConfig::for_tests();
    config.allowed_service_accounts =
        vec![crate::glob::ServiceAccountPattern::parse("argo-*:workflow-?").unwrap()];
    let mut pod = fixture_pod();
    pod["metadata"]["name"] = json!("p");
    let allowed = mutate(
        &request_by(pod.clone(), "system:serviceaccount:argo-ci:workflow-1", &[]),
        &config,
        ctx(),
    );
    assert!(matches!(allowed, Decision::Inject { .. }));
    let refused = mutate(
        &request_by(pod, "system:serviceaccount:argo-ci:workflow-12", &[]),
        &config,
        ctx(),
    );
    assert!(matches!(refused, Decision::Skip { .. }));
}

#[test]
fn app_ids_are_validated() {
    let mut nameless = fixture_pod();
    nameless["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("dapr.io/app-id");
    let Decision::Deny {
        reason, message, ..
    } = decide(nameless.clone())
    else {
        panic!()
    };
    assert_eq!(reason, DenyReason::InvalidAppId);
    assert!(message.contains("dapr.io/app-id is required"), "{message}");
    assert!(message.contains("pod template"), "{message}");

    // A bare named pod falls back to its name, with a warning.
    nameless["metadata"]["name"] = json!("debug-pod");
    let fallback = decide(nameless.clone());
    let Decision::Inject { app_id, .. } = &fallback else {
        panic!("{fallback:?}")
    };
    assert_eq!(app_id, "debug-pod");
    assert!(warnings(&fallback)[0].contains("using the pod name"));

    for bad in [
        "Orders",
        "orders_v2",
        "-orders",
        "orders.svc",
        &"a".repeat(59),
    ] {
        let d = decide(with_annotations(&[("dapr.io/app-id", bad)]));
        let Decision::Deny {
            reason, message, ..
        } = d
        else {
            panic!("{bad}: {d:?}")
        };
        assert_eq!(reason, DenyReason::InvalidAppId);
        assert!(message.contains("at most 58 characters"), "{message}");
        assert!(
            message.contains("\"<app-id>-dapr\" fits in 63"),
            "{message}"
        );
    }
    let longest = "a".repeat(58);
    assert!(matches!(
        decide(with_annotations(&[("dapr.io/app-id", &longest)])),
        Decision::Inject { .. }
    ));
}

#[test]
fn native_sidecars_are_init_containers_with_a_startup_probe() {
    let native = with_annotations(&[("dapr.io/enable-native-sidecar", "true")]);
    let decision = decide(native.clone());
    assert!(matches!(decision, Decision::Inject { native: true, .. }));
    let pod = apply(&native, &decision);
    assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 2);
    let init = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0]["name"], "daprd");
    assert_eq!(init[0]["restartPolicy"], "Always");
    assert_eq!(
        init[0]["startupProbe"],
        json!({"httpGet": {"path": "/v1.0/healthz/outbound", "port": 3501}, "initialDelaySeconds": 0,
               "timeoutSeconds": 1, "periodSeconds": 1, "failureThreshold": 300})
    );

    // The injector's default, an existing init container, and the pod opting out.
    let mut config = InjectorConfig::for_tests();
    config.native_sidecar = true;
    let mut pod = fixture_pod();
    pod["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m"}]);
    let decision = mutate(&request(pod.clone()), &config, ctx());
    let out = apply(&pod, &decision);
    let init = out["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(init[0]["name"], "migrate");
    assert_eq!(init[1]["name"], "daprd");
    let opt_out = with_annotations(&[("dapr.io/native-sidecar", "false")]);
    let decision = mutate(&request(opt_out.clone()), &config, ctx());
    assert!(matches!(decision, Decision::Inject { native: false, .. }));
    assert!(
        apply(&opt_out, &decision)["spec"]
            .get("initContainers")
            .is_none()
    );
}

#[test]
fn typos_and_bad_values_come_back_as_warnings() {
    let decision = decide(with_annotations(&[
        ("dapr.io/app-prot", "8080"),
        ("dapr.io/log-level", "verbose"),
        ("dapr.io/sidecar-memory-limit", "1GB"),
        ("dapr.io/enable-api-logging", "sure"),
    ]));
    let w = warnings(&decision);
    assert!(matches!(decision, Decision::Inject { .. }));
    assert!(
        w.contains(&"annotation dapr.io/app-prot: unknown annotation, ignored; did you mean dapr.io/app-port?".to_owned()),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|x| x.contains("\"verbose\" is not a log level"))
    );
    assert!(
        w.iter()
            .any(|x| x.contains("\"1GB\" is not a resource quantity"))
    );
    assert!(w.iter().any(|x| x.contains("\"sure\" is not a boolean")));
    assert!(
        w.iter().all(|x| x.len() <= 256),
        "kubectl shows warnings up to 256 characters"
    );
}

#[test]
fn strict_mode_denies_what_would_be_warnings() {
    let typo = [("dapr.io/app-prot", "8080")];
    let mut pairs = typo.to_vec();
    pairs.push(("dapr.io/strict-annotations", "true"));
    let d = decide(with_annotations(&pairs));
    let Decision::Deny {
        reason, message, ..
    } = &d
    else {
        panic!("{d:?}")
    };
    assert_eq!(*reason, DenyReason::StrictAnnotations);
    assert!(
        message.contains("did you mean dapr.io/app-port?"),
        "{message}"
    );

    let mut strict = InjectorConfig::for_tests();
    strict.strict_annotations = true;
    let d = mutate(&request(with_annotations(&typo)), &strict, ctx());
    assert!(matches!(
        d,
        Decision::Deny {
            reason: DenyReason::StrictAnnotations,
            ..
        }
    ));
    // Clean pods pass strict mode; a pod may opt out of the injector's strictness.
    assert!(matches!(
        mutate(&request(fixture_pod()), &strict, ctx()),
        Decision::Inject { .. }
    ));
    let mut relaxed = typo.to_vec();
    relaxed.push(("dapr.io/strict-annotations", "false"));
    assert!(matches!(
        mutate(&request(with_annotations(&relaxed)), &strict, ctx()),
        Decision::Inject { .. }
    ));
}

#[test]
fn no_trust_anchors_is_a_denial_and_mtls_follows_the_configuration() {
    let d = mutate(
        &request(fixture_pod()),
        &InjectorConfig::for_tests(),
        Context {
            trust_anchors: None,
            mtls_enabled: true,
            components: Components::NotListed,
        },
    );
    assert!(matches!(
        d,
        Decision::Deny {
            reason: DenyReason::NoTrustAnchors,
            ..
        }
    ));
    let pod = fixture_pod();
    let d = mutate(
        &request(pod.clone()),
        &InjectorConfig::for_tests(),
        Context {
            trust_anchors: Some(ANCHORS),
            mtls_enabled: false,
            components: Components::NotListed,
        },
    );
    assert!(!args(&daprd(&apply(&pod, &d))).contains(&"--enable-mtls".to_owned()));
}

#[test]
fn other_kinds_and_operations_are_skipped() {
    let mut r = request(fixture_pod());
    r.operation = "UPDATE".into();
    assert_eq!(
        mutate(&r, &InjectorConfig::for_tests(), ctx()),
        skip(Skip::NotCreate)
    );
    let mut r = request(fixture_pod());
    r.kind.kind = "Deployment".into();
    r.kind.group = "apps".into();
    assert_eq!(
        mutate(&r, &InjectorConfig::for_tests(), ctx()),
        skip(Skip::NotAPod)
    );
    let mut r =
        request(json!({"metadata": {"annotations": {"dapr.io/enabled": "true"}}, "spec": "nope"}));
    r.operation = "CREATE".into();
    assert!(matches!(
        mutate(&r, &InjectorConfig::for_tests(), ctx()),
        Decision::Deny {
            reason: DenyReason::MalformedPod,
            ..
        }
    ));
}

/// What one annotation must change; each is checked on the injected pod.
struct Effect {
    annotations: &'static [(&'static str, &'static str)],
    check: fn(&Value, &Value),
}

fn arg_seq(needle: &'static [&'static str]) -> impl Fn(&Value) {
    move |d: &Value| assert!(has_seq(&args(d), needle), "{needle:?} not in {:?}", args(d))
}

/// One row per annotation of the reference table: a test fails when an annotation is added to
/// the registry without an effect checked here.
fn effects() -> Vec<Effect> {
    macro_rules! effect {
        ($pairs:expr, |$pod:ident, $d:ident| $body:expr) => {
            Effect {
                annotations: $pairs,
                check: |$pod: &Value, $d: &Value| {
                    let _ = ($pod, $d);
                    $body
                },
            }
        };
    }
    vec![
        effect!(&[("dapr.io/enabled", "true")], |_p, d| assert_eq!(
            d["name"],
            "daprd"
        )),
        effect!(&[("dapr.io/app-id", "checkout")], |p, d| {
            arg_seq(&["--app-id", "checkout"])(d);
            assert_eq!(p["metadata"]["labels"]["dapr.io/app-id"], "checkout");
        }),
        effect!(&[("dapr.io/app-port", "3000")], |_p, d| arg_seq(&[
            "--app-port",
            "3000"
        ])(d)),
        effect!(&[("dapr.io/config", "appconfig")], |_p, d| arg_seq(&[
            "--config",
            "appconfig"
        ])(d)),
        effect!(&[("dapr.io/app-protocol", "grpc")], |p, d| {
            arg_seq(&["--app-protocol", "grpc"])(d);
            assert_eq!(
                env_of(&p["spec"]["containers"][0], "APP_PROTOCOL").unwrap()["value"],
                "grpc"
            );
        }),
        effect!(&[("dapr.io/app-ssl", "true")], |p, d| {
            arg_seq(&["--app-ssl"])(d);
            assert_eq!(
                env_of(&p["spec"]["containers"][0], "APP_PROTOCOL").unwrap()["value"],
                "https"
            );
        }),
        effect!(&[("dapr.io/enable-profiling", "true")], |_p, d| arg_seq(&[
            "--enable-profiling"
        ])(
            d
        )),
        effect!(&[("dapr.io/log-level", "debug")], |_p, d| arg_seq(&[
            "--log-level",
            "debug"
        ])(d)),
        effect!(
            &[("dapr.io/api-token-secret", "dapr-api")],
            |_p, d| assert_eq!(
                env_of(d, "DAPR_API_TOKEN").unwrap()["valueFrom"],
                json!({"secretKeyRef": {"name": "dapr-api", "key": "token"}})
            )
        ),
        effect!(
            &[("dapr.io/app-token-secret", "app-api")],
            |_p, d| assert_eq!(
                env_of(d, "APP_API_TOKEN").unwrap()["valueFrom"],
                json!({"secretKeyRef": {"name": "app-api", "key": "token"}})
            )
        ),
        effect!(&[("dapr.io/log-as-json", "true")], |_p, d| arg_seq(&[
            "--log-as-json"
        ])(d)),
        effect!(&[("dapr.io/app-max-concurrency", "10")], |_p, d| arg_seq(
            &["--app-max-concurrency", "10"]
        )(
            d
        )),
        effect!(&[("dapr.io/enable-metrics", "false")], |p, d| {
            assert!(!args(d).contains(&"--enable-metrics".to_owned()));
            assert_eq!(p["metadata"]["labels"]["dapr.io/metrics-enabled"], "false");
        }),
        effect!(&[("dapr.io/metrics-port", "9999")], |_p, d| {
            arg_seq(&["--enable-metrics", "--metrics-port", "9999"])(d);
            assert!(
                d["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "dapr-metrics" && p["containerPort"] == 9999)
            );
        }),
        effect!(
            &[
                ("dapr.io/enable-debug", "true"),
                ("dapr.io/debug-port", "40001")
            ],
            |_p, d| {
                assert_eq!(d["command"], json!(["/dlv"]));
                arg_seq(&[
                    "--listen",
                    ":40001",
                    "--accept-multiclient",
                    "--headless=true",
                    "--log",
                    "--api-version=2",
                    "exec",
                    "/daprd",
                    "--",
                    "--dapr-http-port",
                ])(d);
                assert!(
                    d["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "dapr-debug" && p["containerPort"] == 40001)
                );
            }
        ),
        effect!(&[("dapr.io/env", "A=1,B=x,y")], |_p, d| {
            assert_eq!(env_of(d, "A").unwrap()["value"], "1");
            assert_eq!(env_of(d, "B").unwrap()["value"], "x,y");
            assert_eq!(env_of(d, "DAPR_ENV_KEYS").unwrap()["value"], "A B");
        }),
        effect!(&[("dapr.io/env-from-secret", "PW=db:password")], |_p, d| {
            assert_eq!(
                env_of(d, "PW").unwrap()["valueFrom"],
                json!({"secretKeyRef": {"name": "db", "key": "password"}})
            );
            assert_eq!(env_of(d, "DAPR_ENV_KEYS").unwrap()["value"], "PW");
        }),
        effect!(&[("dapr.io/grpc-port", "50011")], |p, d| {
            arg_seq(&["--dapr-grpc-port", "50011"])(d);
            assert_eq!(
                env_of(&p["spec"]["containers"][0], "DAPR_GRPC_PORT").unwrap()["value"],
                "50011"
            );
        }),
        effect!(&[("dapr.io/internal-grpc-port", "50012")], |_p, d| {
            arg_seq(&["--dapr-internal-grpc-port", "50012"])(d);
            assert!(
                d["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "dapr-internal" && p["containerPort"] == 50012)
            );
        }),
        effect!(
            &[
                ("dapr.io/sidecar-cpu-request", "100m"),
                ("dapr.io/sidecar-cpu-limit", "1"),
                ("dapr.io/sidecar-memory-request", "64Mi"),
                ("dapr.io/sidecar-memory-limit", "256Mi"),
            ],
            |_p, d| assert_eq!(
                d["resources"],
                json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}})
            )
        ),
        effect!(
            &[("dapr.io/sidecar-listen-addresses", "0.0.0.0")],
            |_p, d| arg_seq(&["--dapr-listen-addresses", "0.0.0.0"])(d)
        ),
        effect!(
            &[
                ("dapr.io/sidecar-liveness-probe-delay-seconds", "11"),
                ("dapr.io/sidecar-liveness-probe-timeout-seconds", "12"),
                ("dapr.io/sidecar-liveness-probe-period-seconds", "13"),
                ("dapr.io/sidecar-liveness-probe-threshold", "14"),
            ],
            |_p, d| assert_eq!(
                d["livenessProbe"],
                json!({"tcpSocket": {"port": 3501}, "initialDelaySeconds": 11, "timeoutSeconds": 12, "periodSeconds": 13, "failureThreshold": 14})
            )
        ),
        effect!(
            &[
                ("dapr.io/sidecar-readiness-probe-delay-seconds", "21"),
                ("dapr.io/sidecar-readiness-probe-timeout-seconds", "22"),
                ("dapr.io/sidecar-readiness-probe-period-seconds", "23"),
                ("dapr.io/sidecar-readiness-probe-threshold", "24"),
            ],
            |_p, d| assert_eq!(
                d["readinessProbe"],
                json!({"httpGet": {"path": "/v1.0/healthz", "port": 3501}, "initialDelaySeconds": 21, "timeoutSeconds": 22, "periodSeconds": 23, "failureThreshold": 24})
            )
        ),
        effect!(
            &[("dapr.io/sidecar-image", "ghcr.io/daprs/daprd:dev")],
            |_p, d| assert_eq!(d["image"], "ghcr.io/daprs/daprd:dev")
        ),
        effect!(
            &[("dapr.io/sidecar-seccomp-profile-type", "RuntimeDefault")],
            |_p, d| assert_eq!(
                d["securityContext"]["seccompProfile"],
                json!({"type": "RuntimeDefault"})
            )
        ),
        effect!(&[("dapr.io/http-max-request-size", "16")], |_p, d| arg_seq(
            &["--dapr-http-max-request-size", "16"]
        )(
            d
        )),
        effect!(&[("dapr.io/max-body-size", "16Mi")], |_p, d| arg_seq(&[
            "--max-body-size",
            "16Mi"
        ])(d)),
        effect!(&[("dapr.io/http-read-buffer-size", "8")], |_p, d| arg_seq(
            &["--dapr-http-read-buffer-size", "8"]
        )(
            d
        )),
        effect!(&[("dapr.io/read-buffer-size", "8Ki")], |_p, d| arg_seq(&[
            "--read-buffer-size",
            "8Ki"
        ])(d)),
        effect!(&[("dapr.io/graceful-shutdown-seconds", "30")], |_p, d| {
            arg_seq(&["--dapr-graceful-shutdown-seconds", "30"])(d)
        }),
        effect!(&[("dapr.io/block-shutdown-duration", "20s")], |_p, d| {
            arg_seq(&["--dapr-block-shutdown-duration", "20s"])(d)
        }),
        effect!(&[("dapr.io/enable-api-logging", "false")], |_p, d| arg_seq(
            &["--enable-api-logging=false"]
        )(
            d
        )),
        effect!(
            &[("dapr.io/unix-domain-socket-path", "/tmp/dapr")],
            |p, d| {
                arg_seq(&["--unix-domain-socket", "/var/run/dapr-sockets"])(d);
                assert!(d["volumeMounts"].as_array().unwrap().contains(&json!({"name": "dapr-unix-domain-socket", "mountPath": "/var/run/dapr-sockets"})));
                assert!(
                    p["spec"]["containers"][0]["volumeMounts"]
                        .as_array()
                        .unwrap()
                        .contains(
                            &json!({"name": "dapr-unix-domain-socket", "mountPath": "/tmp/dapr"})
                        )
                );
                assert!(p["spec"]["volumes"].as_array().unwrap().contains(
                    &json!({"name": "dapr-unix-domain-socket", "emptyDir": {"medium": "Memory"}})
                ));
            }
        ),
        effect!(
            &[("dapr.io/volume-mounts", "config:/etc/orders")],
            |_p, d| assert!(d["volumeMounts"].as_array().unwrap().contains(
                &json!({"name": "config", "mountPath": "/etc/orders", "readOnly": true})
            ))
        ),
        effect!(
            &[("dapr.io/volume-mounts-rw", "config:/data")],
            |_p, d| assert!(
                d["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"name": "config", "mountPath": "/data"}))
            )
        ),
        effect!(
            &[("dapr.io/disable-builtin-k8s-secret-store", "true")],
            |_p, d| arg_seq(&["--disable-builtin-k8s-secret-store"])(d)
        ),
        effect!(
            &[
                ("dapr.io/enable-app-health-check", "true"),
                ("dapr.io/app-health-check-path", "/health"),
                ("dapr.io/app-health-probe-interval", "7"),
                ("dapr.io/app-health-probe-timeout", "700"),
                ("dapr.io/app-health-threshold", "4"),
            ],
            |_p, d| arg_seq(&[
                "--enable-app-health-check",
                "--app-health-check-path",
                "/health",
                "--app-health-probe-interval",
                "7",
                "--app-health-probe-timeout",
                "700",
                "--app-health-threshold",
                "4"
            ])(d)
        ),
        effect!(&[("dapr.io/app-binding-options-timeout", "2s")], |_p, d| {
            arg_seq(&["--app-binding-options-timeout", "2s"])(d)
        }),
        effect!(
            &[("dapr.io/placement-host-address", "'placement:50005'")],
            |_p, d| arg_seq(&["--placement-host-address", "placement:50005"])(d)
        ),
        effect!(&[("dapr.io/actors-disseminate-timeout", "3s")], |_p, d| {
            arg_seq(&["--actors-disseminate-timeout", "3s"])(d)
        }),
        effect!(
            &[("dapr.io/scheduler-host-address", "sched:50006")],
            |_p, d| arg_seq(&["--scheduler-host-address", "sched:50006"])(d)
        ),
        effect!(
            &[
                ("dapr.io/pluggable-components", "log-shipper"),
                ("dapr.io/pluggable-components-sockets-folder", "/sockets")
            ],
            |p, d| {
                let shipper = &p["spec"]["containers"][1];
                assert_eq!(
                    env_of(shipper, "DAPR_COMPONENT_SOCKETS_FOLDER").unwrap()["value"],
                    "/sockets"
                );
                assert!(
                    env_of(shipper, "DAPR_HTTP_PORT").is_none(),
                    "components are not apps"
                );
                assert_eq!(
                    env_of(d, "DAPR_COMPONENT_SOCKETS_FOLDER").unwrap()["value"],
                    "/sockets"
                );
                assert!(d["volumeMounts"].as_array().unwrap().contains(
                    &json!({"name": "dapr-components-unix-domain-socket", "mountPath": "/sockets"})
                ));
            }
        ),
        effect!(&[("dapr.io/app-channel-address", "10.0.0.9")], |_p, d| {
            arg_seq(&["--app-channel-address", "10.0.0.9"])(d)
        }),
        effect!(
            &[("dapr.io/sentry-request-jwt-audiences", "aud1,aud2")],
            |_p, d| arg_seq(&["--sentry-request-jwt-audiences", "aud1,aud2"])(d)
        ),
        effect!(&[("dapr.io/disable-init-endpoints", "config")], |_p, d| {
            arg_seq(&["--disable-init-endpoints", "config"])(d)
        }),
        effect!(
            &[("dapr.io/enable-native-sidecar", "true")],
            |p, _d| assert_eq!(p["spec"]["initContainers"][0]["name"], "daprd")
        ),
        effect!(&[("dapr.io/native-sidecar", "true")], |p, _d| assert_eq!(
            p["spec"]["initContainers"][0]["name"],
            "daprd"
        )),
        effect!(
            &[("dapr.io/strict-annotations", "true")],
            |_p, d| assert_eq!(d["name"], "daprd")
        ),
        // Read elsewhere (operator, Component objects, sentry): accepted without a warning.
        effect!(
            &[("dapr.io/sidecar-svc-annotations", "a=b")],
            |_p, d| assert_eq!(d["name"], "daprd")
        ),
        effect!(
            &[("dapr.io/component-container", "{}")],
            |_p, d| assert_eq!(d["name"], "daprd")
        ),
        effect!(
            &[("dapr.io/control-plane", "injector")],
            |_p, d| assert_eq!(d["name"], "daprd")
        ),
        effect!(
            &[("dapr.io/inject-pluggable-components", "false")],
            |_p, d| assert_eq!(d["name"], "daprd")
        ),
    ]
}

#[test]
fn every_annotation_has_its_effect() {
    let effects = effects();
    for effect in &effects {
        let pod = with_annotations(effect.annotations);
        let decision = decide(pod.clone());
        assert!(
            warnings(&decision).is_empty(),
            "{:?}: {:?}",
            effect.annotations,
            warnings(&decision)
        );
        let out = apply(&pod, &decision);
        (effect.check)(&out, &daprd(&out));
    }
    let covered: Vec<&str> = effects
        .iter()
        .flat_map(|e| e.annotations.iter().map(|(k, _)| *k))
        .collect();
    for annotation in daprs_api::annotations::ANNOTATIONS {
        assert!(
            covered.contains(&annotation.key),
            "no test of {}",
            annotation.key
        );
    }
}

#[test]
fn injector_settings_shape_the_sidecar() {
    let mut config = InjectorConfig::for_tests();
    config.drop_all_capabilities = true;
    config.run_as_user = Some(1000);
    config.run_as_group = Some(3000);
    config.enable_k8s_downward_apis = true;
    config.actors_service_name = "actors".into();
    config.actors_service_address = Some("actors.svc:9000".into());
    config.reminders_service = Some(("reminders".into(), "rem.svc:9001".into()));
    config.scheduler_enabled = false;
    config.ignore_entrypoint_tolerations = vec![
        serde_json::from_value(json!({"key": "virtual-kubelet.io/provider", "operator": "Exists"}))
            .unwrap(),
    ];
    let mut pod = fixture_pod();
    pod["spec"]["tolerations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "virtual-kubelet.io/provider", "operator": "Exists"}));
    let d = daprd(&apply(&pod, &mutate(&request(pod.clone()), &config, ctx())));
    assert_eq!(d["command"], json!(["/daprd"]));
    assert_eq!(args(&d)[0], "--dapr-http-port");
    assert!(has_seq(
        &args(&d),
        &["--actors-service", "actors:actors.svc:9000"]
    ));
    assert!(has_seq(
        &args(&d),
        &["--reminders-service", "reminders:rem.svc:9001"]
    ));
    assert!(!args(&d).iter().any(|a| a.contains("scheduler")));
    assert!(!args(&d).iter().any(|a| a == "--placement-host-address"));
    assert_eq!(
        d["securityContext"]["capabilities"],
        json!({"drop": ["ALL"]})
    );
    assert_eq!(d["securityContext"]["runAsUser"], 1000);
    assert_eq!(d["securityContext"]["runAsGroup"], 3000);
    assert_eq!(
        env_of(&d, "DAPR_HOST_IP").unwrap()["valueFrom"],
        json!({"fieldRef": {"fieldPath": "status.podIP"}})
    );

    config.actors_enabled = false;
    let d = daprd(&apply(&pod, &mutate(&request(pod.clone()), &config, ctx())));
    assert!(
        !args(&d)
            .iter()
            .any(|a| a.starts_with("--actors") || a.starts_with("--placement"))
    );
}

#[test]
fn mounts_of_missing_volumes_are_skipped_with_a_warning() {
    let pod = with_annotations(&[("dapr.io/volume-mounts", "nope:/x")]);
    let decision = decide(pod.clone());
    assert!(warnings(&decision)[0].contains("the pod has no volume \"nope\""));
    let d = daprd(&apply(&pod, &decision));
    assert_eq!(d["volumeMounts"].as_array().unwrap().len(), 2);
}

fn workload_request(group: &str, kind: &str, object: Value, operation: &str) -> AdmissionRequest {
    let mut req = request_by(object, "kubernetes-admin", &["system:masters"]);
    req.kind = GroupVersionKind {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
    };
    req.operation = operation.into();
    req
}

fn deployment(annotations: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "orders"},
        "spec": {"selector": {"matchLabels": {"app": "orders"}},
            "template": {"metadata": {"labels": {"app": "orders"}, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "app"}]}}}})
}

/// `kubectl apply` of a Deployment shows the pod template's typos at once: its pods are created
/// later by the ReplicaSet controller, whose warnings nobody sees.
#[test]
fn workload_templates_are_checked_and_left_unchanged() {
    let config = InjectorConfig::for_tests();
    let typo = deployment(
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders", "dapr.io/app-prot": "8080"}),
    );
    for operation in ["CREATE", "UPDATE"] {
        let decision = mutate(
            &workload_request("apps", "Deployment", typo.clone(), operation),
            &config,
            ctx(),
        );
        assert!(
            matches!(
                &decision,
                Decision::Skip {
                    skip: Skip::WorkloadChecked,
                    ..
                }
            ),
            "{decision:?}"
        );
        let w = warnings(&decision);
        assert!(
            w.iter()
                .any(|x| x.starts_with("pod template: ")
                    && x.contains("did you mean dapr.io/app-port?")),
            "{w:#?}"
        );
    }

    let no_id = deployment(json!({"dapr.io/enabled": "true"}));
    let decision = mutate(
        &workload_request("apps", "StatefulSet", no_id, "CREATE"),
        &config,
        ctx(),
    );
    assert!(
        warnings(&decision)
            .iter()
            .any(|x| x.contains("its pods will be refused")),
        "{decision:?}"
    );

    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": {"metadata": {"annotations":
            {"dapr.io/enabled": "true", "dapr.io/app-id": "nightly", "dapr.io/log-level": "loud"}}, "spec": {}}}}}});
    let decision = mutate(
        &workload_request("batch", "CronJob", cron, "CREATE"),
        &config,
        ctx(),
    );
    assert!(
        warnings(&decision)
            .iter()
            .any(|x| x.contains("\"loud\" is not a log level")),
        "{decision:?}"
    );

    // Workloads without dapr.io annotations are none of the injector's business.
    let plain = deployment(json!({"team": "shop"}));
    let decision = mutate(
        &workload_request("apps", "Deployment", plain, "CREATE"),
        &config,
        ctx(),
    );
    assert_eq!(
        decision,
        Decision::Skip {
            skip: Skip::NotAPod,
            warnings: vec![]
        }
    );

    // Strict mode refuses the workload itself.
    let strict = deployment(
        json!({"dapr.io/enabled": "true", "dapr.io/app-id": "orders",
        "dapr.io/app-prot": "8080", "dapr.io/strict-annotations": "true"}),
    );
    let decision = mutate(
        &workload_request("apps", "Deployment", strict, "CREATE"),
        &config,
        ctx(),
    );
    assert!(
        matches!(
            decision,
            Decision::Deny {
                reason: DenyReason::StrictAnnotations,
                ..
            }
        ),
        "{decision:?}"
    );
}

fn component(name: &str, scopes: &[&str], container: Option<&str>) -> ComponentInfo {
    ComponentInfo {
        name: name.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        container: container.map(str::to_owned),
    }
}

fn decide_with(pod: Value, components: Components<'_>) -> Decision {
    mutate(
        &request(pod),
        &InjectorConfig::for_tests(),
        Context {
            components,
            ..ctx()
        },
    )
}

fn container_named<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
}

#[test]
fn pluggable_components_come_from_the_namespace_components() {
    let pod = with_annotations(&[("dapr.io/inject-pluggable-components", "true")]);
    assert!(wants_components(&request(pod.clone())));
    let listed = [
        component("no-container", &[], None),
        component(
            "redis-pluggable",
            &[],
            Some(r#"{"image": "registry.example/redis-pluggable:1"}"#),
        ),
        component(
            "for-billing",
            &["billing"],
            Some(r#"{"image": "registry.example/billing:1"}"#),
        ),
        // Same image as redis-pluggable: one container per image.
        component(
            "redis-again",
            &["orders"],
            Some(r#"{"image": "registry.example/redis-pluggable:1"}"#),
        ),
        component(
            "queue",
            &["billing", "orders"],
            Some(
                r#"{"name": "queue-adapter", "image": "registry.example/queue:2",
                     "env": [{"name": "MODE", "value": "fast"}],
                     "volumeMounts": [{"name": "queue-cache", "mountPath": "/cache"}]}"#,
            ),
        ),
    ];
    let decision = decide_with(pod.clone(), Components::Listed(&listed));
    let out = apply(&pod, &decision);
    let names: Vec<&str> = out["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "orders",
            "log-shipper",
            "redis-pluggable",
            "queue-adapter",
            "daprd"
        ],
        "named after the Component unless named; scoped; one per image; daprd last"
    );
    let socket_mount = json!({"name": "dapr-components-unix-domain-socket", "mountPath": "/tmp/dapr-components-sockets"});
    for name in ["redis-pluggable", "queue-adapter", "daprd"] {
        let c = container_named(&out, name).unwrap();
        assert_eq!(
            env_of(c, "DAPR_COMPONENT_SOCKETS_FOLDER").unwrap()["value"],
            "/tmp/dapr-components-sockets",
            "{name}"
        );
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .contains(&socket_mount),
            "{name}: {c:#}"
        );
        assert!(env_of(c, "DAPR_HTTP_PORT").is_none() || name == "daprd");
    }
    let queue = container_named(&out, "queue-adapter").unwrap();
    assert_eq!(env_of(queue, "MODE").unwrap()["value"], "fast");
    assert_eq!(queue["image"], "registry.example/queue:2");
    let app = container_named(&out, "orders").unwrap();
    assert!(env_of(app, "DAPR_COMPONENT_SOCKETS_FOLDER").is_none());
    assert!(env_of(app, "DAPR_HTTP_PORT").is_some());
    let volumes = out["spec"]["volumes"].as_array().unwrap();
    assert!(
        volumes.contains(&json!({"name": "dapr-components-unix-domain-socket", "emptyDir": {}}))
    );
    assert!(
        volumes.contains(&json!({"name": "queue-cache", "emptyDir": {}})),
        "a mount of a volume the pod lacks gets an emptyDir"
    );

    // The socket folder annotation moves every mount and the env.
    let pod = with_annotations(&[
        ("dapr.io/inject-pluggable-components", "true"),
        ("dapr.io/pluggable-components-sockets-folder", "/sockets"),
    ]);
    let out = apply(&pod, &decide_with(pod.clone(), Components::Listed(&listed)));
    let redis = container_named(&out, "redis-pluggable").unwrap();
    assert_eq!(
        env_of(redis, "DAPR_COMPONENT_SOCKETS_FOLDER").unwrap()["value"],
        "/sockets"
    );
    assert!(
        redis["volumeMounts"].as_array().unwrap().contains(
            &json!({"name": "dapr-components-unix-domain-socket", "mountPath": "/sockets"})
        )
    );

    // With a native sidecar the components are native sidecars ahead of daprd.
    let pod = with_annotations(&[
        ("dapr.io/inject-pluggable-components", "true"),
        ("dapr.io/enable-native-sidecar", "true"),
    ]);
    let out = apply(&pod, &decide_with(pod.clone(), Components::Listed(&listed)));
    let init = out["spec"]["initContainers"].as_array().unwrap();
    let names: Vec<&str> = init.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["redis-pluggable", "queue-adapter", "daprd"]);
    assert!(init.iter().all(|c| c["restartPolicy"] == "Always"));
    assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 2);

    // Nothing in scope: daprd alone, no socket volume.
    let only_billing = [component(
        "for-billing",
        &["billing"],
        Some(r#"{"image": "b:1"}"#),
    )];
    let pod = with_annotations(&[("dapr.io/inject-pluggable-components", "true")]);
    let out = apply(
        &pod,
        &decide_with(pod.clone(), Components::Listed(&only_billing)),
    );
    assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 3);
    assert!(env_of(&daprd(&out), "DAPR_COMPONENT_SOCKETS_FOLDER").is_none());
}

#[test]
fn pluggable_component_injection_is_all_or_nothing() {
    let pod = with_annotations(&[("dapr.io/inject-pluggable-components", "true")]);
    let deny = |d: Decision| match d {
        Decision::Deny {
            reason, message, ..
        } => (reason, message),
        other => panic!("expected a denial, got {other:?}"),
    };

    // Listing failed: a denial that says so, not a pod without its components.
    let (reason, message) = deny(decide_with(
        pod.clone(),
        Components::Failed("components.dapr.io is forbidden"),
    ));
    assert_eq!(reason, DenyReason::ListComponents);
    assert!(
        message.contains("could not list the Components of namespace \"shop\"")
            && message.contains("components.dapr.io is forbidden"),
        "{message}"
    );
    let (reason, _) = deny(decide_with(pod.clone(), Components::NotListed));
    assert_eq!(reason, DenyReason::ListComponents);

    // Bad JSON: the Component and the parse error are named.
    let bad = [component("broken", &[], Some(r#"{"image": "x:1",}"#))];
    let (reason, message) = deny(decide_with(pod.clone(), Components::Listed(&bad)));
    assert_eq!(reason, DenyReason::ComponentContainer);
    assert!(
        message.starts_with("Component \"broken\": annotation dapr.io/component-container is not valid JSON: trailing comma"),
        "{message}"
    );
    for (json, expected) in [
        ("[1]", "must be a JSON object"),
        (r#"{"name": "x"}"#, "has no image"),
        (
            r#"{"image": "x:1", "ports": "80"}"#,
            "is not a valid container spec",
        ),
        (
            r#"{"image": "x:1", "name": "orders"}"#,
            "names its container \"orders\", which the pod already uses",
        ),
        (
            r#"{"image": "x:1", "name": "daprd"}"#,
            "names its container \"daprd\"",
        ),
    ] {
        let listed = [component("c1", &[], Some(json))];
        let (_, message) = deny(decide_with(pod.clone(), Components::Listed(&listed)));
        assert!(message.contains(expected), "{json}: {message}");
    }
    // A broken Component out of this app's scope is not this pod's problem.
    let elsewhere = [component("broken", &["billing"], Some("{not json"))];
    assert!(matches!(
        decide_with(pod.clone(), Components::Listed(&elsewhere)),
        Decision::Inject { .. }
    ));

    // Without the annotation (or with it false) nothing is listed or needed.
    let plain = fixture_pod();
    assert!(!wants_components(&request(plain.clone())));
    assert!(matches!(
        decide_with(plain, Components::NotListed),
        Decision::Inject { .. }
    ));
    let off = with_annotations(&[("dapr.io/inject-pluggable-components", "false")]);
    assert!(!wants_components(&request(off)));
    let disabled = with_annotations(&[
        ("dapr.io/inject-pluggable-components", "true"),
        ("dapr.io/enabled", "false"),
    ]);
    assert!(!wants_components(&request(disabled)));
}
