//! The injection decision: a pure function from an admission request and the injector's
//! configuration to JSON Patch operations, a denial, or "no change" with the reason.

use std::collections::BTreeMap;

use daprs_api::annotations::{self as a};
use daprs_api::names;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector, Pod, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecurityContext,
    ServiceAccountTokenProjection, TCPSocketAction, Toleration, Volume, VolumeMount,
    VolumeProjection, WindowsSecurityContextOptions,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::admission::AdmissionRequest;
use crate::config::InjectorConfig;
use crate::glob;
use crate::patch::{Operation, Pointer, append_all};
use crate::sidecar::{ProbeTiming, SidecarConfig};
use crate::values;

/// Longest app id: `<app-id>-dapr` (the Service the operator creates) must fit in 63.
pub const MAX_APP_ID_LEN: usize = 63 - "-dapr".len();
/// A native sidecar's startup probe: checked every second for up to this many seconds.
pub const STARTUP_PROBE_FAILURE_THRESHOLD: i32 = 300;

/// What changes per admission but is not in the request.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// PEM of the current trust anchors; `None` when the injector could not read them.
    pub trust_anchors: Option<&'a str>,
    /// From the `daprsystem` Configuration (`spec.mtls.enabled`, default true).
    pub mtls_enabled: bool,
    /// The Components of the pod's namespace, listed by the router when the pod asks for
    /// `dapr.io/inject-pluggable-components` (see [`wants_components`]).
    pub components: Components<'a>,
}

/// A Component as `dapr.io/inject-pluggable-components` needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentInfo {
    pub name: String,
    /// App ids allowed to load it; empty means every app.
    pub scopes: Vec<String>,
    /// The raw `dapr.io/component-container` annotation: a JSON container spec.
    pub container: Option<String>,
}

/// The outcome of listing the pod namespace's Components.
#[derive(Clone, Copy, Debug)]
pub enum Components<'a> {
    /// Not listed: the pod did not ask for pluggable component injection.
    NotListed,
    Listed(&'a [ComponentInfo]),
    /// Listing failed; why.
    Failed(&'a str),
}

/// True when `request` is a pod that asks for `dapr.io/inject-pluggable-components`, so the
/// router must list the namespace's Components before calling [`mutate`].
pub fn wants_components(request: &AdmissionRequest) -> bool {
    if request.kind.kind != "Pod" || !request.kind.group.is_empty() || request.operation != "CREATE"
    {
        return false;
    }
    let annotations = request
        .object
        .as_ref()
        .and_then(|o| o.pointer("/metadata/annotations"));
    let get = |key: &str| {
        annotations
            .and_then(|a| a.get(key))
            .and_then(|v| v.as_str())
    };
    get(a::ENABLED).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        && get(a::INJECT_PLUGGABLE_COMPONENTS).and_then(a::parse_bool) == Some(true)
}

/// Why a pod was admitted unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Skip {
    NotAPod,
    /// A workload (Deployment, StatefulSet, ...) whose pod template was checked: the
    /// annotation warnings reach `kubectl apply` now, not only when its pods are created.
    WorkloadChecked,
    NotCreate,
    /// `dapr.io/enabled` is absent or not `true`.
    NotEnabled,
    /// A daprd container or init container is already there (re-invocation, or by hand).
    AlreadyInjected,
    /// The pod was created by someone who is not an allowed controller.
    CallerNotAllowed {
        username: String,
    },
}

impl Skip {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAPod => "not_a_pod",
            Self::WorkloadChecked => "workload_checked",
            Self::NotCreate => "not_create",
            Self::NotEnabled => "not_enabled",
            Self::AlreadyInjected => "already_injected",
            Self::CallerNotAllowed { .. } => "caller_not_allowed",
        }
    }
}

/// Why a pod was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    InvalidAppId,
    StrictAnnotations,
    NoTrustAnchors,
    MalformedPod,
    /// The namespace's Components could not be listed for pluggable component injection.
    ListComponents,
    /// A Component's `dapr.io/component-container` is not a usable container.
    ComponentContainer,
}

impl DenyReason {
    /// Metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::InvalidAppId => "invalid_app_id",
            Self::StrictAnnotations => "strict_annotations",
            Self::NoTrustAnchors => "no_trust_anchors",
            Self::MalformedPod => "malformed_pod",
            Self::ListComponents => "list_components",
            Self::ComponentContainer => "component_container",
        }
    }
}

/// The outcome of [`mutate`]. Every variant carries the warnings for `kubectl`.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Inject {
        app_id: String,
        native: bool,
        operations: Vec<Operation>,
        warnings: Vec<String>,
    },
    Skip {
        skip: Skip,
        warnings: Vec<String>,
    },
    Deny {
        reason: DenyReason,
        app_id: Option<String>,
        message: String,
        warnings: Vec<String>,
    },
}

fn skip(skip: Skip) -> Decision {
    Decision::Skip {
        skip,
        warnings: Vec::new(),
    }
}

/// Decides what to do with `request`.
pub fn mutate(request: &AdmissionRequest, config: &InjectorConfig, ctx: Context<'_>) -> Decision {
    if let Some(pointer) = pod_template_annotations(&request.kind.group, &request.kind.kind) {
        return check_workload(request, pointer, config);
    }
    if request.kind.kind != "Pod" || !request.kind.group.is_empty() {
        return skip(Skip::NotAPod);
    }
    if request.operation != "CREATE" {
        return skip(Skip::NotCreate);
    }
    let pod: Pod = match request
        .object
        .clone()
        .map(serde_json::from_value)
        .transpose()
    {
        Ok(Some(pod)) => pod,
        Ok(None) => {
            return Decision::Deny {
                reason: DenyReason::MalformedPod,
                app_id: None,
                message: "the admission request has no object".into(),
                warnings: Vec::new(),
            };
        }
        Err(e) => {
            return Decision::Deny {
                reason: DenyReason::MalformedPod,
                app_id: None,
                message: format!("the pod in the admission request does not parse: {e}"),
                warnings: Vec::new(),
            };
        }
    };
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();

    // Dapr's rule: exactly "true" (any case); the general truthy parser is not used here.
    match annotations.get(a::ENABLED) {
        Some(v) if v.trim().eq_ignore_ascii_case("true") => {}
        Some(v) if a::parse_bool(v) == Some(true) => {
            return Decision::Skip {
                skip: Skip::NotEnabled,
                warnings: vec![format!(
                    "annotation {}: {v:?} does not enable injection, only \"true\" does; no sidecar injected",
                    a::ENABLED
                )],
            };
        }
        _ => return skip(Skip::NotEnabled),
    }

    let user = &request.user_info;
    if glob::caller_allowed(
        &user.username,
        &user.groups,
        &config.allowed_service_accounts,
    )
    .is_none()
    {
        return Decision::Skip {
            skip: Skip::CallerNotAllowed {
                username: user.username.clone(),
            },
            warnings: vec![format!(
                "no dapr sidecar injected: pods created directly by {:?} are not injected; create it through a Deployment, StatefulSet, Job or DaemonSet, or allow the account with ALLOWED_SERVICE_ACCOUNTS",
                user.username
            )],
        };
    }

    let spec = pod.spec.clone().unwrap_or_default();
    let has_daprd = |containers: &[Container]| {
        containers
            .iter()
            .any(|c| c.name == a::SIDECAR_CONTAINER_NAME)
    };
    if has_daprd(&spec.containers) || has_daprd(spec.init_containers.as_deref().unwrap_or(&[])) {
        return skip(Skip::AlreadyInjected);
    }

    let (sidecar, problems) = SidecarConfig::from_annotations(&annotations);
    let mut warnings: Vec<String> = problems.iter().map(ToString::to_string).collect();

    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let app_id = match sidecar.app_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() => id.to_owned(),
        _ if !pod_name.is_empty() => {
            warnings.push(format!(
                "annotation {} is not set; using the pod name {pod_name:?} as the app id",
                a::APP_ID
            ));
            pod_name.clone()
        }
        _ => {
            return Decision::Deny {
                reason: DenyReason::InvalidAppId,
                app_id: None,
                message: format!(
                    "annotation {} is required: the pod has no name yet (pods made by a Deployment, ReplicaSet, StatefulSet or Job are named after admission), so set {} on the pod template",
                    a::APP_ID,
                    a::APP_ID
                ),
                warnings,
            };
        }
    };
    if app_id.len() > MAX_APP_ID_LEN || !values::is_dns_label(&app_id) {
        return Decision::Deny {
            reason: DenyReason::InvalidAppId,
            message: format!(
                "app id {app_id:?} is invalid: it must be a DNS label (lowercase letters, digits and '-', starting and ending with a letter or digit) of at most {MAX_APP_ID_LEN} characters, so that the Service \"<app-id>-dapr\" fits in 63; set {} accordingly",
                a::APP_ID
            ),
            app_id: Some(app_id),
            warnings,
        };
    }

    let strict = sidecar
        .strict_annotations
        .unwrap_or(config.strict_annotations);
    if strict && !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Decision::Deny {
            reason: DenyReason::StrictAnnotations,
            app_id: Some(app_id),
            message: format!(
                "strict annotation checking is on and {} annotation problem(s) were found: {}",
                list.len(),
                list.join("; ")
            ),
            warnings,
        };
    }

    let Some(trust_anchors) = ctx.trust_anchors else {
        return Decision::Deny {
            reason: DenyReason::NoTrustAnchors,
            app_id: Some(app_id),
            message: "the sidecar injector has not read the trust anchors yet; retry shortly"
                .into(),
            warnings,
        };
    };

    let native = sidecar.native_sidecar.unwrap_or(config.native_sidecar);
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_else(|| names::DEFAULT_NAMESPACE.to_owned());
    // Pluggable components from the namespace's Components: all or nothing, never half a pod.
    let injected = if sidecar.inject_pluggable_components {
        let listed = match ctx.components {
            Components::Listed(list) => list,
            Components::Failed(error) => {
                return Decision::Deny {
                    reason: DenyReason::ListComponents,
                    app_id: Some(app_id),
                    message: format!(
                        "annotation {} is true but the sidecar injector could not list the Components of namespace {namespace:?}: {error}; retry, or check that the injector may list components.dapr.io",
                        a::INJECT_PLUGGABLE_COMPONENTS
                    ),
                    warnings,
                };
            }
            Components::NotListed => {
                return Decision::Deny {
                    reason: DenyReason::ListComponents,
                    app_id: Some(app_id),
                    message: format!(
                        "annotation {} is true but the sidecar injector did not list the Components of namespace {namespace:?}; retry",
                        a::INJECT_PLUGGABLE_COMPONENTS
                    ),
                    warnings,
                };
            }
        };
        let taken: Vec<&str> = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .map(|c| c.name.as_str())
            .collect();
        match pluggable_containers(&app_id, listed, &taken) {
            Ok(containers) => containers,
            Err(message) => {
                return Decision::Deny {
                    reason: DenyReason::ComponentContainer,
                    app_id: Some(app_id),
                    message,
                    warnings,
                };
            }
        }
    } else {
        Vec::new()
    };
    let plan = Plan {
        config,
        ctx,
        sidecar: &sidecar,
        pod: &pod,
        app_id: &app_id,
        namespace: &namespace,
        trust_anchors,
        native,
        injected,
    };
    let operations = plan.operations(&mut warnings);
    Decision::Inject {
        app_id,
        native,
        operations,
        warnings,
    }
}

/// Where a workload kind keeps its pod template's annotations, if it has a pod template.
fn pod_template_annotations(group: &str, kind: &str) -> Option<&'static str> {
    match (group, kind) {
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") | ("batch", "Job") => {
            Some("/spec/template/metadata/annotations")
        }
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template/metadata/annotations"),
        _ => None,
    }
}

/// Checks a workload's pod template annotations so that `kubectl apply` of a Deployment shows
/// typos and bad values at once (its pods are admitted later, by a controller, where nobody
/// sees the warnings). Nothing is changed; strict mode denies.
fn check_workload(request: &AdmissionRequest, pointer: &str, config: &InjectorConfig) -> Decision {
    if !matches!(request.operation.as_str(), "CREATE" | "UPDATE") {
        return skip(Skip::NotCreate);
    }
    let annotations: BTreeMap<String, String> = request
        .object
        .as_ref()
        .and_then(|o| o.pointer(pointer))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    if !annotations.keys().any(|k| k.starts_with("dapr.io/")) {
        return skip(Skip::NotAPod);
    }
    let (sidecar, problems) = SidecarConfig::from_annotations(&annotations);
    let mut warnings: Vec<String> = problems
        .iter()
        .map(|p| format!("pod template: {p}"))
        .collect();
    let enabled = annotations
        .get(a::ENABLED)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    if enabled {
        match sidecar.app_id.as_deref().map(str::trim) {
            None | Some("") => warnings.push(format!(
                "pod template: annotation {} is missing; its pods will be refused: set {} on the pod template",
                a::APP_ID,
                a::APP_ID
            )),
            Some(id) if id.len() > MAX_APP_ID_LEN || !values::is_dns_label(id) => warnings.push(format!(
                "pod template: app id {id:?} is invalid (a DNS label of at most {MAX_APP_ID_LEN} characters is needed); its pods will be refused"
            )),
            Some(_) => {}
        }
    }
    let strict = sidecar
        .strict_annotations
        .unwrap_or(config.strict_annotations);
    if strict && !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Decision::Deny {
            reason: DenyReason::StrictAnnotations,
            app_id: sidecar.app_id.clone(),
            message: format!(
                "strict annotation checking is on and the pod template has {} annotation problem(s): {}",
                list.len(),
                list.join("; ")
            ),
            warnings,
        };
    }
    Decision::Skip {
        skip: Skip::WorkloadChecked,
        warnings,
    }
}

/// Everything needed to build the patch of one pod.
struct Plan<'a> {
    config: &'a InjectorConfig,
    ctx: Context<'a>,
    sidecar: &'a SidecarConfig,
    pod: &'a Pod,
    app_id: &'a str,
    namespace: &'a str,
    trust_anchors: &'a str,
    native: bool,
    /// Containers of pluggable components to add (from their Components' annotation).
    injected: Vec<Container>,
}

/// The containers of the Components in scope for `app_id` that carry
/// `dapr.io/component-container`, as Dapr injects them: the name defaults to the Component's,
/// one container per image. `taken` are the container names the pod already uses. A
/// Component in scope whose annotation is not a usable container is an error naming it.
pub fn pluggable_containers(
    app_id: &str,
    components: &[ComponentInfo],
    taken: &[&str],
) -> Result<Vec<Container>, String> {
    let mut out: Vec<Container> = Vec::new();
    for component in components {
        let Some(raw) = component
            .container
            .as_deref()
            .filter(|r| !r.trim().is_empty())
        else {
            continue;
        };
        if !daprs_api::crd::in_scope(&component.scopes, app_id) {
            continue;
        }
        let bad = |problem: String| {
            format!(
                "Component {:?}: annotation {} {problem}; fix the annotation on the Component (a JSON container spec such as {{\"image\": \"registry.example/my-component:1\"}})",
                component.name,
                a::COMPONENT_CONTAINER
            )
        };
        let mut value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
        let Some(object) = value.as_object_mut() else {
            return Err(bad("must be a JSON object (a container spec)".into()));
        };
        if object
            .get("name")
            .and_then(|n| n.as_str())
            .is_none_or(str::is_empty)
        {
            object.insert("name".into(), component.name.clone().into());
        }
        let container: Container = serde_json::from_value(value)
            .map_err(|e| bad(format!("is not a valid container spec: {e}")))?;
        let Some(image) = container.image.as_deref().filter(|i| !i.trim().is_empty()) else {
            return Err(bad("has no image".into()));
        };
        if out.iter().any(|c| c.image.as_deref() == Some(image)) {
            continue;
        }
        if container.name == a::SIDECAR_CONTAINER_NAME
            || taken.contains(&container.name.as_str())
            || out.iter().any(|c| c.name == container.name)
        {
            return Err(bad(format!(
                "names its container {:?}, which the pod already uses; set another \"name\"",
                container.name
            )));
        }
        out.push(container);
    }
    Ok(out)
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_env(name: &str, field: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field.to_owned(),
                api_version: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

fn timing(probe: Probe, t: ProbeTiming) -> Probe {
    Probe {
        initial_delay_seconds: Some(t.delay_seconds),
        timeout_seconds: Some(t.timeout_seconds),
        period_seconds: Some(t.period_seconds),
        failure_threshold: Some(t.failure_threshold),
        ..probe
    }
}

fn http_probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(a::SIDECAR_PUBLIC_PORT)),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    }
}

fn same_toleration(a: &Toleration, b: &Toleration) -> bool {
    a.key == b.key && a.operator == b.operator && a.value == b.value && a.effect == b.effect
}

impl Plan<'_> {
    fn is_component(&self, container: &Container) -> bool {
        self.sidecar.pluggable_components.contains(&container.name)
    }

    fn sockets_folder(&self) -> &str {
        self.sidecar
            .pluggable_components_sockets_folder
            .as_deref()
            .unwrap_or(&self.config.component_sockets_folder)
    }

    fn has_components(&self) -> bool {
        let spec = self.pod.spec.as_ref();
        !self.injected.is_empty()
            || spec.is_some_and(|s| s.containers.iter().any(|c| self.is_component(c)))
    }

    /// An injected component container with the socket folder in env and the shared socket
    /// volume mounted, as Dapr sets them.
    fn component_container(&self, container: &Container) -> Container {
        let mut container = container.clone();
        let env_list = container.env.get_or_insert_with(Vec::new);
        if !env_list
            .iter()
            .any(|e| e.name == a::ENV_COMPONENT_SOCKETS_FOLDER)
        {
            env_list.push(env(a::ENV_COMPONENT_SOCKETS_FOLDER, self.sockets_folder()));
        }
        let mounts = container.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts.iter().any(|m| {
            m.name == a::COMPONENTS_SOCKETS_VOLUME_NAME || m.mount_path == self.sockets_folder()
        }) {
            mounts.push(mount(
                a::COMPONENTS_SOCKETS_VOLUME_NAME,
                self.sockets_folder(),
                false,
            ));
        }
        container
    }

    fn operations(&self, warnings: &mut Vec<String>) -> Vec<Operation> {
        let mut ops = Vec::new();
        let spec = self.pod.spec.clone().unwrap_or_default();

        // Labels: create the map first when the pod has none.
        let labels = Pointer::root().push("metadata").push("labels");
        if self.pod.metadata.labels.is_none() {
            ops.push(Operation::add(&labels, BTreeMap::<String, String>::new()));
        }
        for (key, value) in [
            (a::LABEL_SIDECAR_INJECTED, "true".to_owned()),
            (a::LABEL_APP_ID, self.app_id.to_owned()),
            (
                a::LABEL_METRICS_ENABLED,
                self.sidecar.enable_metrics.to_string(),
            ),
        ] {
            ops.push(Operation::add(&labels.push(key), value));
        }

        // Volumes the sidecar needs, skipping names the pod already uses.
        let existing: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        let volumes: Vec<Volume> = self
            .volumes()
            .into_iter()
            .filter(|v| !existing.contains(&v.name.as_str()))
            .collect();
        append_all(
            &mut ops,
            &Pointer::root().push("spec").push("volumes"),
            spec.volumes.is_some(),
            &volumes,
        );

        // App containers: ports in env, the socket folder; component containers: sockets.
        let containers = Pointer::root().push("spec").push("containers");
        for (index, container) in spec.containers.iter().enumerate() {
            let path = containers.index(index);
            let (env, mounts) = if self.is_component(container) {
                (
                    vec![env(a::ENV_COMPONENT_SOCKETS_FOLDER, self.sockets_folder())],
                    vec![mount(
                        a::COMPONENTS_SOCKETS_VOLUME_NAME,
                        self.sockets_folder(),
                        false,
                    )],
                )
            } else {
                let env_vars = vec![
                    env(a::ENV_APP_HTTP_PORT, a::SIDECAR_HTTP_PORT.to_string()),
                    env(a::ENV_APP_GRPC_PORT, self.sidecar.grpc_port.to_string()),
                    env(a::ENV_APP_PROTOCOL, self.sidecar.effective_app_protocol()),
                ];
                let mounts = match &self.sidecar.unix_domain_socket_path {
                    Some(path) => vec![mount(a::UDS_VOLUME_NAME, path, false)],
                    None => Vec::new(),
                };
                (env_vars, mounts)
            };
            let defined: Vec<&str> = container
                .env
                .iter()
                .flatten()
                .map(|e| e.name.as_str())
                .collect();
            let env: Vec<EnvVar> = env
                .into_iter()
                .filter(|e| !defined.contains(&e.name.as_str()))
                .collect();
            append_all(&mut ops, &path.push("env"), container.env.is_some(), &env);
            let used = |m: &VolumeMount| {
                container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|x| x.name == m.name || x.mount_path == m.mount_path)
            };
            let mounts: Vec<VolumeMount> = mounts.into_iter().filter(|m| !used(m)).collect();
            append_all(
                &mut ops,
                &path.push("volumeMounts"),
                container.volume_mounts.is_some(),
                &mounts,
            );
        }

        // Injected pluggable components, then the sidecar itself, last in its list. A native
        // sidecar starts before the app containers, so its components become native sidecars
        // too, ahead of it: daprd finds their sockets when it starts (Dapr appends them to the
        // app containers, after a native daprd).
        let daprd = self.container(&existing, warnings);
        let (list, exists) = if self.native {
            (
                Pointer::root().push("spec").push("initContainers"),
                spec.init_containers.is_some(),
            )
        } else {
            (containers, true)
        };
        if !exists {
            ops.push(Operation::add(&list, Vec::<Container>::new()));
        }
        for container in &self.injected {
            let mut container = self.component_container(container);
            if self.native {
                container.restart_policy = Some("Always".into());
            }
            ops.push(Operation::add(&list.end(), container));
        }
        ops.push(Operation::add(&list.end(), daprd));
        ops
    }

    fn volumes(&self) -> Vec<Volume> {
        let mut volumes = vec![
            Volume {
                name: a::TOKEN_VOLUME_NAME.into(),
                projected: Some(ProjectedVolumeSource {
                    default_mode: Some(0o644),
                    sources: Some(vec![VolumeProjection {
                        service_account_token: Some(ServiceAccountTokenProjection {
                            audience: Some(names::sentry_audience(
                                &self.config.control_plane_trust_domain,
                                &self.config.control_plane_namespace,
                            )),
                            expiration_seconds: Some(a::TOKEN_EXPIRATION_SECONDS),
                            path: "token".into(),
                        }),
                        ..VolumeProjection::default()
                    }]),
                }),
                ..Volume::default()
            },
            Volume {
                name: a::TRUST_BUNDLE_VOLUME_NAME.into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::TRUST_BUNDLE_NAME.into(),
                    default_mode: Some(0o644),
                    items: Some(vec![KeyToPath {
                        key: names::TRUST_ANCHORS_KEY.into(),
                        path: names::TRUST_ANCHORS_KEY.into(),
                        mode: None,
                    }]),
                    // The env var still carries the anchors where the ConfigMap is missing.
                    optional: Some(true),
                }),
                ..Volume::default()
            },
        ];
        if self.sidecar.unix_domain_socket_path.is_some() {
            volumes.push(Volume {
                name: a::UDS_VOLUME_NAME.into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: None,
                }),
                ..Volume::default()
            });
        }
        if self.has_components() {
            volumes.push(Volume {
                name: a::COMPONENTS_SOCKETS_VOLUME_NAME.into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            });
        }
        // An injected component's own mounts of volumes the pod lacks get an emptyDir, as in
        // Dapr (existing volumes are filtered out by the caller).
        for mount in self
            .injected
            .iter()
            .flat_map(|c| c.volume_mounts.iter().flatten())
        {
            if !volumes.iter().any(|v| v.name == mount.name) {
                volumes.push(Volume {
                    name: mount.name.clone(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                });
            }
        }
        volumes
    }

    fn args(&self) -> Vec<String> {
        let s = self.sidecar;
        let c = self.config;
        let mut args: Vec<String> = Vec::with_capacity(48);
        let mut push = |items: &[&str]| args.extend(items.iter().map(|s| (*s).to_owned()));
        push(&[
            "--dapr-http-port",
            &a::SIDECAR_HTTP_PORT.to_string(),
            "--dapr-grpc-port",
            &s.grpc_port.to_string(),
            "--dapr-internal-grpc-port",
            &s.internal_grpc_port.to_string(),
            "--dapr-listen-addresses",
            &s.listen_addresses,
            "--dapr-public-port",
            &a::SIDECAR_PUBLIC_PORT.to_string(),
            "--app-id",
            self.app_id,
            "--app-protocol",
            &s.app_protocol,
            "--log-level",
            &s.log_level,
            "--dapr-graceful-shutdown-seconds",
            &s.graceful_shutdown_seconds.to_string(),
            "--mode",
            "kubernetes",
            "--control-plane-address",
            &c.control_plane_address("dapr-api", 443),
            "--sentry-address",
            &c.control_plane_address("dapr-sentry", 443),
        ]);
        if let Some(p) = s.app_port {
            push(&["--app-port", &p.to_string()]);
        }
        if s.enable_metrics {
            push(&[
                "--enable-metrics",
                "--metrics-port",
                &s.metrics_port.to_string(),
            ]);
        }
        if !s.config.is_empty() {
            push(&["--config", &s.config]);
        }
        if let Some(addr) = &s.app_channel_address {
            push(&["--app-channel-address", addr]);
        }
        match &s.placement_host_address {
            Some(addr) => push(&["--placement-host-address", addr]),
            None if c.actors_enabled => {
                match (&*c.actors_service_name, &c.actors_service_address) {
                    ("placement", _) | (_, None) => push(&[
                        "--placement-host-address",
                        &c.control_plane_address("dapr-placement-server", 50005),
                    ]),
                    (name, Some(addr)) => push(&["--actors-service", &format!("{name}:{addr}")]),
                }
            }
            None => {}
        }
        if let Some((name, addr)) = &c.reminders_service {
            push(&["--reminders-service", &format!("{name}:{addr}")]);
        }
        if let Some(aud) = &s.sentry_request_jwt_audiences {
            push(&["--sentry-request-jwt-audiences", aud]);
        }
        if let Some(on) = s.enable_api_logging {
            push(&[&format!("--enable-api-logging={on}")]);
        }
        if s.disable_builtin_k8s_secret_store {
            push(&["--disable-builtin-k8s-secret-store"]);
        }
        if s.enable_app_health_check {
            push(&[
                "--enable-app-health-check",
                "--app-health-check-path",
                &s.app_health_check_path,
                "--app-health-probe-interval",
                &s.app_health_probe_interval.to_string(),
                "--app-health-probe-timeout",
                &s.app_health_probe_timeout.to_string(),
                "--app-health-threshold",
                &s.app_health_threshold.to_string(),
            ]);
        }
        if let Some(t) = &s.app_binding_options_timeout {
            push(&["--app-binding-options-timeout", t]);
        }
        if s.log_as_json {
            push(&["--log-as-json"]);
        }
        if s.enable_profiling {
            push(&["--enable-profiling"]);
        }
        if self.ctx.mtls_enabled {
            push(&["--enable-mtls"]);
        }
        if s.app_ssl {
            push(&["--app-ssl"]);
        }
        if let Some(n) = s.app_max_concurrency {
            push(&["--app-max-concurrency", &n.to_string()]);
        }
        if let Some(n) = s.http_max_request_size {
            push(&["--dapr-http-max-request-size", &n.to_string()]);
        }
        if let Some(q) = &s.max_body_size {
            push(&["--max-body-size", q]);
        }
        if let Some(n) = s.http_read_buffer_size {
            push(&["--dapr-http-read-buffer-size", &n.to_string()]);
        }
        if let Some(q) = &s.read_buffer_size {
            push(&["--read-buffer-size", q]);
        }
        if s.unix_domain_socket_path.is_some() {
            push(&["--unix-domain-socket", a::UDS_MOUNT_DIR]);
        }
        if let Some(d) = &s.block_shutdown_duration {
            push(&["--dapr-block-shutdown-duration", d]);
        }
        if let Some(d) = &s.actors_disseminate_timeout {
            push(&["--actors-disseminate-timeout", d]);
        }
        match &s.scheduler_host_address {
            Some(addr) => push(&["--scheduler-host-address", addr]),
            None if c.scheduler_enabled => push(&[
                "--scheduler-host-address",
                &c.control_plane_address("dapr-scheduler-server-a", 443),
            ]),
            None => {}
        }
        if let Some(v) = &s.disable_init_endpoints {
            push(&["--disable-init-endpoints", v]);
        }
        args
    }

    fn env(&self) -> Vec<EnvVar> {
        let s = self.sidecar;
        let mut env = vec![
            env(a::ENV_NAMESPACE, self.namespace),
            env(a::ENV_TRUST_ANCHORS, self.trust_anchors),
            field_env(a::ENV_POD_NAME, "metadata.name"),
            env(
                a::ENV_CONTROL_PLANE_NAMESPACE,
                &*self.config.control_plane_namespace,
            ),
            env(
                a::ENV_CONTROL_PLANE_TRUST_DOMAIN,
                &*self.config.control_plane_trust_domain,
            ),
            env(
                a::ENV_TRUST_ANCHORS_FILE,
                format!("{}/{}", a::TRUST_BUNDLE_MOUNT_DIR, names::TRUST_ANCHORS_KEY),
            ),
        ];
        if self.config.enable_k8s_downward_apis {
            env.push(field_env(a::ENV_HOST_IP, "status.podIP"));
        }
        let mut keys = Vec::new();
        for (name, value) in &s.env {
            env.push(self::env(name, value.as_str()));
            keys.push(name.as_str());
        }
        for secret in &s.env_from_secret {
            env.push(secret_env(&secret.name, &secret.secret, &secret.key));
            keys.push(secret.name.as_str());
        }
        if !keys.is_empty() {
            env.push(self::env(a::ENV_ENV_KEYS, keys.join(" ")));
        }
        if self.has_components() {
            env.push(self::env(
                a::ENV_COMPONENT_SOCKETS_FOLDER,
                self.sockets_folder(),
            ));
        }
        if let Some(secret) = non_empty(&s.api_token_secret) {
            env.push(secret_env(a::ENV_API_TOKEN, secret, "token"));
        }
        if let Some(secret) = non_empty(&s.app_token_secret) {
            env.push(secret_env(a::ENV_APP_API_TOKEN, secret, "token"));
        }
        env
    }

    fn container(&self, pod_volumes: &[&str], warnings: &mut Vec<String>) -> Container {
        let s = self.sidecar;
        let c = self.config;
        let daprd_args = self.args();
        let tolerated = self
            .pod
            .spec
            .as_ref()
            .and_then(|spec| spec.tolerations.as_ref());
        let ignore_entrypoint = tolerated.is_some_and(|tolerations| {
            tolerations.iter().any(|t| {
                c.ignore_entrypoint_tolerations
                    .iter()
                    .any(|x| same_toleration(t, x))
            })
        });
        let (command, args) = if s.enable_debug {
            let mut args: Vec<String> = [
                "--listen".to_owned(),
                format!(":{}", s.debug_port),
                "--accept-multiclient".into(),
                "--headless=true".into(),
                "--log".into(),
                "--api-version=2".into(),
                "exec".into(),
                "/daprd".into(),
                "--".into(),
            ]
            .into();
            args.extend(daprd_args);
            (Some(vec!["/dlv".to_owned()]), args)
        } else if ignore_entrypoint {
            (Some(vec!["/daprd".to_owned()]), daprd_args)
        } else {
            let mut args = vec!["/daprd".to_owned()];
            args.extend(daprd_args);
            (None, args)
        };

        let mut ports = vec![
            port(a::PORT_NAME_HTTP, a::SIDECAR_HTTP_PORT),
            port(a::PORT_NAME_GRPC, s.grpc_port),
            port(a::PORT_NAME_INTERNAL, s.internal_grpc_port),
            port(a::PORT_NAME_METRICS, s.metrics_port),
        ];
        if s.enable_debug {
            ports.push(port(a::PORT_NAME_DEBUG, s.debug_port));
        }

        let mut mounts = vec![
            mount(a::TOKEN_VOLUME_NAME, a::TOKEN_MOUNT_DIR, true),
            mount(a::TRUST_BUNDLE_VOLUME_NAME, a::TRUST_BUNDLE_MOUNT_DIR, true),
        ];
        if s.unix_domain_socket_path.is_some() {
            mounts.push(mount(a::UDS_VOLUME_NAME, a::UDS_MOUNT_DIR, false));
        }
        if self.has_components() {
            mounts.push(mount(
                a::COMPONENTS_SOCKETS_VOLUME_NAME,
                self.sockets_folder(),
                false,
            ));
        }
        for (list, read_only, key) in [
            (&s.volume_mounts, true, a::VOLUME_MOUNTS),
            (&s.volume_mounts_rw, false, a::VOLUME_MOUNTS_RW),
        ] {
            for (volume, path) in list {
                if pod_volumes.contains(&volume.as_str()) {
                    mounts.push(mount(volume, path, read_only));
                } else {
                    warnings.push(format!(
                        "annotation {key}: the pod has no volume {volume:?}; that mount is skipped"
                    ));
                }
            }
        }

        let env = self.env();
        let windows = env.iter().any(|e| e.name == "SSL_CERT_DIR");
        let security_context = SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(c.run_as_non_root && !windows),
            run_as_user: c.run_as_user.filter(|_| !windows),
            run_as_group: c.run_as_group.filter(|_| !windows),
            read_only_root_filesystem: Some(c.read_only_root_filesystem && !windows),
            seccomp_profile: s.seccomp_profile_type.as_ref().map(|t| SeccompProfile {
                type_: t.clone(),
                localhost_profile: None,
            }),
            capabilities: c.drop_all_capabilities.then(|| Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            windows_options: windows.then(|| WindowsSecurityContextOptions {
                run_as_user_name: Some("ContainerAdministrator".into()),
                ..WindowsSecurityContextOptions::default()
            }),
            ..SecurityContext::default()
        };

        let resources = s.resources.as_ref().and_then(|r| {
            let pick = |pairs: [(&str, &Option<String>); 2]| {
                let map: BTreeMap<String, Quantity> = pairs
                    .into_iter()
                    .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_owned(), Quantity(v.clone()))))
                    .collect();
                (!map.is_empty()).then_some(map)
            };
            let requests = pick([("cpu", &r.cpu_request), ("memory", &r.memory_request)]);
            let limits = pick([("cpu", &r.cpu_limit), ("memory", &r.memory_limit)]);
            (requests.is_some() || limits.is_some()).then(|| ResourceRequirements {
                requests,
                limits,
                ..ResourceRequirements::default()
            })
        });

        Container {
            name: a::SIDECAR_CONTAINER_NAME.into(),
            image: Some(s.image.clone().unwrap_or_else(|| c.sidecar_image.clone())),
            image_pull_policy: Some(c.pull_policy.as_str().into()),
            command,
            args: Some(args),
            ports: Some(ports),
            env: Some(env),
            volume_mounts: Some(mounts),
            readiness_probe: Some(timing(http_probe(a::HEALTHZ_PATH), s.readiness)),
            liveness_probe: Some(timing(
                Probe {
                    tcp_socket: Some(TCPSocketAction {
                        port: IntOrString::Int(i32::from(a::SIDECAR_PUBLIC_PORT)),
                        host: None,
                    }),
                    ..Probe::default()
                },
                s.liveness,
            )),
            // A native sidecar must be up before the app starts; it is healthy for that as
            // soon as its outbound APIs work (its full health waits for the app).
            startup_probe: self.native.then(|| {
                timing(
                    http_probe(a::HEALTHZ_OUTBOUND_PATH),
                    ProbeTiming {
                        delay_seconds: 0,
                        timeout_seconds: 1,
                        period_seconds: 1,
                        failure_threshold: STARTUP_PROBE_FAILURE_THRESHOLD,
                    },
                )
            }),
            restart_policy: self.native.then(|| "Always".to_owned()),
            security_context: Some(security_context),
            resources,
            ..Container::default()
        }
    }
}

fn non_empty(s: &str) -> Option<&str> {
    let s = s.trim();
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests;
