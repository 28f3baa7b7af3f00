//! The `dapr.io/*` pod annotations, labels and sidecar names shared by the injector (which reads
//! them) and the sidecar (which is configured from them), with Dapr's defaults.
//!
//! [`ANNOTATIONS`] is the registry: every key the injector knows, its value type and its default.
//! A `dapr.io/*` key not in it is unknown (a typo, or a key from a newer Dapr).

/// Prefix of every Dapr annotation and label.
pub const PREFIX: &str = "dapr.io/";

/// What a value must look like; the injector warns (or, strict, denies) when it does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Truthy parser: `y`, `yes`, `true`, `t`, `on`, `1` (any case) are true; `n`, `no`,
    /// `false`, `f`, `off`, `0` are false.
    Bool,
    /// A 32-bit signed integer.
    Int,
    /// A TCP port, 1 to 65535.
    Port,
    /// Free text.
    String,
    /// A Kubernetes resource quantity (`100m`, `1Gi`, `0.5`).
    Quantity,
    /// A daprd log level.
    LogLevel,
    /// A Go duration (`5s`, `1m30s`).
    Duration,
    /// `http`, `https`, `grpc`, `grpcs` or `h2c`.
    AppProtocol,
    /// `K=V,K2=V2`.
    EnvList,
    /// `K=secret` or `K=secret:key`, comma-separated.
    EnvFromSecret,
    /// `volume:path`, comma-separated.
    VolumeMounts,
    /// An absolute path.
    AbsolutePath,
    /// `Unconfined`, `RuntimeDefault` or `Localhost`.
    SeccompProfileType,
    /// `config`, `subscribe` or both, comma-separated.
    InitEndpoints,
    /// Comma-separated names.
    List,
}

/// One known annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Annotation {
    pub key: &'static str,
    pub kind: Kind,
    /// Dapr's default as text; `None` when unset means "not passed".
    pub default: Option<&'static str>,
}

macro_rules! annotations {
    ($($(#[$doc:meta])* $name:ident = $key:literal, $kind:ident, $default:expr;)*) => {
        $( $(#[$doc])* pub const $name: &str = $key; )*
        /// Every annotation the injector reads, in Dapr's order.
        pub const ANNOTATIONS: &[Annotation] = &[
            $( Annotation { key: $key, kind: Kind::$kind, default: $default }, )*
        ];
    };
}

annotations! {
    /// Must be `true` (any case) for the sidecar to be injected.
    ENABLED = "dapr.io/enabled", Bool, Some("false");
    /// `--app-id`; defaults to the pod name (empty for controller-made pods).
    APP_ID = "dapr.io/app-id", String, None;
    APP_PORT = "dapr.io/app-port", Port, None;
    CONFIG = "dapr.io/config", String, Some("");
    APP_PROTOCOL = "dapr.io/app-protocol", AppProtocol, Some("http");
    /// Deprecated: turns `http` into `https` and `grpc` into `grpcs`.
    APP_SSL = "dapr.io/app-ssl", Bool, Some("false");
    ENABLE_PROFILING = "dapr.io/enable-profiling", Bool, Some("false");
    LOG_LEVEL = "dapr.io/log-level", LogLevel, Some("info");
    API_TOKEN_SECRET = "dapr.io/api-token-secret", String, Some("");
    APP_TOKEN_SECRET = "dapr.io/app-token-secret", String, Some("");
    LOG_AS_JSON = "dapr.io/log-as-json", Bool, Some("false");
    APP_MAX_CONCURRENCY = "dapr.io/app-max-concurrency", Int, None;
    ENABLE_METRICS = "dapr.io/enable-metrics", Bool, Some("true");
    METRICS_PORT = "dapr.io/metrics-port", Port, Some("9090");
    ENABLE_DEBUG = "dapr.io/enable-debug", Bool, Some("false");
    DEBUG_PORT = "dapr.io/debug-port", Port, Some("40000");
    ENV = "dapr.io/env", EnvList, Some("");
    ENV_FROM_SECRET = "dapr.io/env-from-secret", EnvFromSecret, Some("");
    GRPC_PORT = "dapr.io/grpc-port", Port, Some("50001");
    INTERNAL_GRPC_PORT = "dapr.io/internal-grpc-port", Port, Some("50002");
    CPU_REQUEST = "dapr.io/sidecar-cpu-request", Quantity, None;
    CPU_LIMIT = "dapr.io/sidecar-cpu-limit", Quantity, None;
    MEMORY_REQUEST = "dapr.io/sidecar-memory-request", Quantity, None;
    MEMORY_LIMIT = "dapr.io/sidecar-memory-limit", Quantity, None;
    LISTEN_ADDRESSES = "dapr.io/sidecar-listen-addresses", String, Some("[::1],127.0.0.1");
    LIVENESS_PROBE_DELAY_SECONDS = "dapr.io/sidecar-liveness-probe-delay-seconds", Int, Some("180");
    LIVENESS_PROBE_TIMEOUT_SECONDS = "dapr.io/sidecar-liveness-probe-timeout-seconds", Int, Some("3");
    LIVENESS_PROBE_PERIOD_SECONDS = "dapr.io/sidecar-liveness-probe-period-seconds", Int, Some("10");
    LIVENESS_PROBE_THRESHOLD = "dapr.io/sidecar-liveness-probe-threshold", Int, Some("5");
    READINESS_PROBE_DELAY_SECONDS = "dapr.io/sidecar-readiness-probe-delay-seconds", Int, Some("1");
    READINESS_PROBE_TIMEOUT_SECONDS = "dapr.io/sidecar-readiness-probe-timeout-seconds", Int, Some("1");
    READINESS_PROBE_PERIOD_SECONDS = "dapr.io/sidecar-readiness-probe-period-seconds", Int, Some("1");
    READINESS_PROBE_THRESHOLD = "dapr.io/sidecar-readiness-probe-threshold", Int, Some("5");
    SIDECAR_IMAGE = "dapr.io/sidecar-image", String, None;
    SECCOMP_PROFILE_TYPE = "dapr.io/sidecar-seccomp-profile-type", SeccompProfileType, Some("");
    /// Legacy, in MB.
    HTTP_MAX_REQUEST_SIZE = "dapr.io/http-max-request-size", Int, None;
    MAX_BODY_SIZE = "dapr.io/max-body-size", Quantity, None;
    /// Legacy, in KB.
    HTTP_READ_BUFFER_SIZE = "dapr.io/http-read-buffer-size", Int, None;
    READ_BUFFER_SIZE = "dapr.io/read-buffer-size", Quantity, None;
    GRACEFUL_SHUTDOWN_SECONDS = "dapr.io/graceful-shutdown-seconds", Int, Some("-1");
    BLOCK_SHUTDOWN_DURATION = "dapr.io/block-shutdown-duration", Duration, None;
    ENABLE_API_LOGGING = "dapr.io/enable-api-logging", Bool, None;
    UNIX_DOMAIN_SOCKET_PATH = "dapr.io/unix-domain-socket-path", AbsolutePath, Some("");
    VOLUME_MOUNTS = "dapr.io/volume-mounts", VolumeMounts, Some("");
    VOLUME_MOUNTS_RW = "dapr.io/volume-mounts-rw", VolumeMounts, Some("");
    DISABLE_BUILTIN_K8S_SECRET_STORE = "dapr.io/disable-builtin-k8s-secret-store", Bool, Some("false");
    ENABLE_APP_HEALTH_CHECK = "dapr.io/enable-app-health-check", Bool, Some("false");
    APP_HEALTH_CHECK_PATH = "dapr.io/app-health-check-path", String, Some("/healthz");
    /// Seconds.
    APP_HEALTH_PROBE_INTERVAL = "dapr.io/app-health-probe-interval", Int, Some("5");
    /// Milliseconds.
    APP_HEALTH_PROBE_TIMEOUT = "dapr.io/app-health-probe-timeout", Int, Some("500");
    APP_HEALTH_THRESHOLD = "dapr.io/app-health-threshold", Int, Some("3");
    APP_BINDING_OPTIONS_TIMEOUT = "dapr.io/app-binding-options-timeout", Duration, None;
    PLACEMENT_HOST_ADDRESS = "dapr.io/placement-host-address", String, None;
    ACTORS_DISSEMINATE_TIMEOUT = "dapr.io/actors-disseminate-timeout", Duration, None;
    SCHEDULER_HOST_ADDRESS = "dapr.io/scheduler-host-address", String, None;
    PLUGGABLE_COMPONENTS = "dapr.io/pluggable-components", List, Some("");
    PLUGGABLE_COMPONENTS_SOCKETS_FOLDER = "dapr.io/pluggable-components-sockets-folder", AbsolutePath, None;
    /// On a Component, not a pod: the container to inject for it.
    COMPONENT_CONTAINER = "dapr.io/component-container", String, None;
    INJECT_PLUGGABLE_COMPONENTS = "dapr.io/inject-pluggable-components", Bool, Some("false");
    APP_CHANNEL_ADDRESS = "dapr.io/app-channel-address", String, None;
    SENTRY_REQUEST_JWT_AUDIENCES = "dapr.io/sentry-request-jwt-audiences", String, None;
    /// Read by the operator (extra annotations on the `<app-id>-dapr` Service), not the injector.
    SIDECAR_SVC_ANNOTATIONS = "dapr.io/sidecar-svc-annotations", String, None;
    DISABLE_INIT_ENDPOINTS = "dapr.io/disable-init-endpoints", InitEndpoints, None;
    /// Inject daprd as a native sidecar; defaults to the injector's setting.
    ENABLE_NATIVE_SIDECAR = "dapr.io/enable-native-sidecar", Bool, None;
    /// daprs: a shorter alias of [`ENABLE_NATIVE_SIDECAR`].
    NATIVE_SIDECAR = "dapr.io/native-sidecar", Bool, None;
    /// daprs: deny pods whose `dapr.io/*` annotations have unknown keys or unparseable values.
    STRICT_ANNOTATIONS = "dapr.io/strict-annotations", Bool, Some("false");
    /// Marks control-plane pods for sentry (not read by the injector).
    CONTROL_PLANE = "dapr.io/control-plane", String, None;
}

/// Pod label set on every injected pod.
pub const LABEL_SIDECAR_INJECTED: &str = "dapr.io/sidecar-injected";
/// Pod label with the app id.
pub const LABEL_APP_ID: &str = "dapr.io/app-id";
/// Pod label telling whether daprd serves metrics.
pub const LABEL_METRICS_ENABLED: &str = "dapr.io/metrics-enabled";
/// Label the operator's watchdog puts on pods it found with their sidecar (with
/// `--watchdog-can-patch-pod-labels`), so later passes skip them.
pub const LABEL_WATCHDOG_PATCHED: &str = "dapr.io/watchdog-patched";

/// Name of the injected container.
pub const SIDECAR_CONTAINER_NAME: &str = "daprd";

/// daprd's default ports.
pub const SIDECAR_HTTP_PORT: u16 = 3500;
pub const SIDECAR_PUBLIC_PORT: u16 = 3501;
pub const SIDECAR_GRPC_PORT: u16 = 50001;
pub const SIDECAR_INTERNAL_GRPC_PORT: u16 = 50002;
pub const SIDECAR_METRICS_PORT: u16 = 9090;
pub const SIDECAR_DEBUG_PORT: u16 = 40000;

/// Container port names of daprd.
pub const PORT_NAME_HTTP: &str = "dapr-http";
pub const PORT_NAME_GRPC: &str = "dapr-grpc";
pub const PORT_NAME_INTERNAL: &str = "dapr-internal";
pub const PORT_NAME_METRICS: &str = "dapr-metrics";
pub const PORT_NAME_DEBUG: &str = "dapr-debug";

/// daprd's health endpoints on the public port.
pub const HEALTHZ_PATH: &str = "/v1.0/healthz";
/// Healthy as soon as the outbound APIs work, independent of the app (startup probe).
pub const HEALTHZ_OUTBOUND_PATH: &str = "/v1.0/healthz/outbound";

/// Env set on daprd.
pub const ENV_NAMESPACE: &str = "NAMESPACE";
pub const ENV_POD_NAME: &str = "POD_NAME";
pub const ENV_TRUST_ANCHORS: &str = "DAPR_TRUST_ANCHORS";
/// daprs: the path of the mounted trust-anchor file, which follows root rotation.
pub const ENV_TRUST_ANCHORS_FILE: &str = "DAPR_TRUST_ANCHORS_FILE";
pub const ENV_CONTROL_PLANE_NAMESPACE: &str = "DAPR_CONTROLPLANE_NAMESPACE";
pub const ENV_CONTROL_PLANE_TRUST_DOMAIN: &str = "DAPR_CONTROLPLANE_TRUST_DOMAIN";
pub const ENV_HOST_IP: &str = "DAPR_HOST_IP";
pub const ENV_ENV_KEYS: &str = "DAPR_ENV_KEYS";
pub const ENV_COMPONENT_SOCKETS_FOLDER: &str = "DAPR_COMPONENT_SOCKETS_FOLDER";
pub const ENV_API_TOKEN: &str = "DAPR_API_TOKEN";
pub const ENV_APP_API_TOKEN: &str = "APP_API_TOKEN";

/// Env set on app containers (unless they already define it).
pub const ENV_APP_HTTP_PORT: &str = "DAPR_HTTP_PORT";
pub const ENV_APP_GRPC_PORT: &str = "DAPR_GRPC_PORT";
pub const ENV_APP_PROTOCOL: &str = "APP_PROTOCOL";

/// The projected service-account token daprd shows sentry.
pub const TOKEN_VOLUME_NAME: &str = "dapr-identity-token";
pub const TOKEN_MOUNT_DIR: &str = "/var/run/secrets/dapr.io/sentrytoken";
pub const TOKEN_EXPIRATION_SECONDS: i64 = 7200;

/// daprs: the trust bundle ConfigMap projected into the pod, so a rotated root reaches daprd
/// without a restart.
pub const TRUST_BUNDLE_VOLUME_NAME: &str = "dapr-trust-bundle";
pub const TRUST_BUNDLE_MOUNT_DIR: &str = "/var/run/secrets/dapr.io/trust-anchors";

/// Unix domain sockets between daprd and the app.
pub const UDS_VOLUME_NAME: &str = "dapr-unix-domain-socket";
pub const UDS_MOUNT_DIR: &str = "/var/run/dapr-sockets";

/// Sockets shared with pluggable-component containers.
pub const COMPONENTS_SOCKETS_VOLUME_NAME: &str = "dapr-components-unix-domain-socket";
pub const DEFAULT_COMPONENTS_SOCKETS_FOLDER: &str = "/tmp/dapr-components-sockets";

/// daprd's log levels.
pub const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error", "fatal"];
/// Values of `dapr.io/app-protocol`.
pub const APP_PROTOCOLS: &[&str] = &["http", "https", "grpc", "grpcs", "h2c"];

/// The annotation `key`, if known.
pub fn find(key: &str) -> Option<&'static Annotation> {
    ANNOTATIONS.iter().find(|a| a.key == key)
}

/// Dapr's truthy parser: `Some(true)` for y/yes/true/t/on/1, `Some(false)` for
/// n/no/false/f/off/0 (any case, surrounding space ignored), `None` for anything else.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" | "true" | "t" | "on" | "1" => Some(true),
        "n" | "no" | "false" | "f" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_has_unique_prefixed_keys() {
        let mut keys: Vec<_> = ANNOTATIONS.iter().map(|a| a.key).collect();
        assert!(keys.iter().all(|k| k.starts_with(PREFIX)));
        let n = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), n, "duplicate annotation key");
        assert_eq!(find(APP_PORT).map(|a| a.kind), Some(Kind::Port));
        assert_eq!(find("dapr.io/app-prot"), None);
    }

    #[test]
    fn truthy_values_match_dapr() {
        for v in ["y", "YES", "true", "T", "on", "1", " true "] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["n", "No", "false", "F", "off", "0"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        for v in ["", "enabled", "2", "truee"] {
            assert_eq!(parse_bool(v), None, "{v}");
        }
    }
}
