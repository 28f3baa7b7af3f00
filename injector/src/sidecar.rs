//! The sidecar's settings from a pod's annotations, with Dapr's defaults, and every problem
//! found on the way (unknown keys, values that do not parse).

use std::collections::BTreeMap;

use daprs_api::annotations as a;
use daprs_api::duration::parse_go_duration;

use crate::values;

/// Something wrong with one annotation, said so a user can fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "annotation {}: {}", self.key, self.message)
    }
}

/// daprd's resource requests and limits (quantities, already checked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

/// A probe's timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeTiming {
    pub delay_seconds: i32,
    pub timeout_seconds: i32,
    pub period_seconds: i32,
    pub failure_threshold: i32,
}

/// An env var from a Secret (`dapr.io/env-from-secret`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEnv {
    pub name: String,
    pub secret: String,
    pub key: String,
}

/// Everything the annotations say about the sidecar. Fields are Dapr's, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SidecarConfig {
    pub app_id: Option<String>,
    pub app_port: Option<u16>,
    pub config: String,
    pub app_protocol: String,
    pub app_ssl: bool,
    pub enable_profiling: bool,
    pub log_level: String,
    pub api_token_secret: String,
    pub app_token_secret: String,
    pub log_as_json: bool,
    pub app_max_concurrency: Option<i32>,
    pub enable_metrics: bool,
    pub metrics_port: u16,
    pub enable_debug: bool,
    pub debug_port: u16,
    pub env: Vec<(String, String)>,
    pub env_from_secret: Vec<SecretEnv>,
    pub grpc_port: u16,
    pub internal_grpc_port: u16,
    /// `None` when any quantity failed to parse (Dapr then sets no resources at all).
    pub resources: Option<Resources>,
    pub listen_addresses: String,
    pub liveness: ProbeTiming,
    pub readiness: ProbeTiming,
    pub image: Option<String>,
    pub seccomp_profile_type: Option<String>,
    pub http_max_request_size: Option<i32>,
    pub max_body_size: Option<String>,
    pub http_read_buffer_size: Option<i32>,
    pub read_buffer_size: Option<String>,
    pub graceful_shutdown_seconds: i32,
    pub block_shutdown_duration: Option<String>,
    pub enable_api_logging: Option<bool>,
    pub unix_domain_socket_path: Option<String>,
    pub volume_mounts: Vec<(String, String)>,
    pub volume_mounts_rw: Vec<(String, String)>,
    pub disable_builtin_k8s_secret_store: bool,
    pub enable_app_health_check: bool,
    pub app_health_check_path: String,
    pub app_health_probe_interval: i32,
    pub app_health_probe_timeout: i32,
    pub app_health_threshold: i32,
    pub app_binding_options_timeout: Option<String>,
    pub placement_host_address: Option<String>,
    pub actors_disseminate_timeout: Option<String>,
    pub scheduler_host_address: Option<String>,
    pub pluggable_components: Vec<String>,
    pub pluggable_components_sockets_folder: Option<String>,
    pub inject_pluggable_components: bool,
    pub app_channel_address: Option<String>,
    pub sentry_request_jwt_audiences: Option<String>,
    pub disable_init_endpoints: Option<String>,
    pub native_sidecar: Option<bool>,
    pub strict_annotations: Option<bool>,
}

/// Reads annotations, recording problems.
struct Reader<'a> {
    annotations: &'a BTreeMap<String, String>,
    problems: Vec<Problem>,
}

impl Reader<'_> {
    fn raw(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message,
        });
    }

    fn default_of(key: &str) -> &'static str {
        a::find(key).and_then(|x| x.default).unwrap_or_default()
    }

    fn string(&self, key: &str) -> String {
        self.raw(key)
            .map(str::to_owned)
            .unwrap_or_else(|| Self::default_of(key).to_owned())
    }

    fn opt_string(&self, key: &str) -> Option<String> {
        self.raw(key).map(str::to_owned)
    }

    fn opt_bool(&mut self, key: &str) -> Option<bool> {
        let raw = self.raw(key)?.to_owned();
        Some(a::parse_bool(&raw).unwrap_or_else(|| {
            self.problem(
                key,
                format!("{raw:?} is not a boolean (use \"true\" or \"false\"); treated as false"),
            );
            false
        }))
    }

    fn bool(&mut self, key: &str) -> bool {
        self.opt_bool(key)
            .unwrap_or_else(|| a::parse_bool(Self::default_of(key)).unwrap_or(false))
    }

    fn opt_int(&mut self, key: &str) -> Option<i32> {
        let raw = self.raw(key)?.to_owned();
        match raw.trim().parse::<i32>() {
            Ok(v) => Some(v),
            Err(_) => {
                let default = match Self::default_of(key) {
                    "" => "left unset".to_owned(),
                    d => format!("using the default {d}"),
                };
                self.problem(key, format!("{raw:?} is not an integer; {default}"));
                None
            }
        }
    }

    fn int(&mut self, key: &str) -> i32 {
        self.opt_int(key)
            .unwrap_or_else(|| Self::default_of(key).parse().unwrap_or(0))
    }

    fn opt_port(&mut self, key: &str) -> Option<u16> {
        let raw = self.raw(key)?.to_owned();
        match raw.trim().parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                let default = match Self::default_of(key) {
                    "" => "left unset".to_owned(),
                    d => format!("using the default {d}"),
                };
                self.problem(
                    key,
                    format!("{raw:?} is not a port number (1 to 65535); {default}"),
                );
                None
            }
        }
    }

    fn port(&mut self, key: &str) -> u16 {
        self.opt_port(key)
            .unwrap_or_else(|| Self::default_of(key).parse().unwrap_or(0))
    }

    fn quantity(&mut self, key: &str) -> Result<Option<String>, ()> {
        let Some(raw) = self.raw(key).map(str::to_owned) else {
            return Ok(None);
        };
        let value = raw.trim();
        if values::is_quantity(value) {
            Ok(Some(value.to_owned()))
        } else {
            self.problem(
                key,
                format!("{raw:?} is not a resource quantity (such as 100m, 0.5, 256Mi or 1Gi)"),
            );
            Err(())
        }
    }

    fn duration(&mut self, key: &str) -> Option<String> {
        let raw = self.raw(key)?.to_owned();
        match parse_go_duration(raw.trim()) {
            Ok(_) => Some(raw.trim().to_owned()),
            Err(e) => {
                self.problem(
                    key,
                    format!("{raw:?} is not a duration such as 5s or 1m30s ({e}); left unset"),
                );
                None
            }
        }
    }

    fn address(&self, key: &str) -> Option<String> {
        self.raw(key)
            .map(|v| v.trim().trim_matches(['"', '\'']).trim().to_owned())
    }

    fn mounts(&mut self, key: &str) -> Vec<(String, String)> {
        let Some(raw) = self.raw(key).map(str::to_owned) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.split_once(':') {
                Some((volume, path))
                    if !volume.trim().is_empty() && path.trim().starts_with('/') =>
                {
                    out.push((volume.trim().to_owned(), path.trim().to_owned()));
                }
                _ => self.problem(
                    key,
                    format!("{item:?} is not volume:/absolute/path; that mount is skipped"),
                ),
            }
        }
        out
    }
}

impl SidecarConfig {
    /// Dapr's defaults, as if the pod had no annotations.
    pub fn defaults() -> Self {
        Self::from_annotations(&BTreeMap::new()).0
    }

    /// The settings from `annotations`, and every problem found: unknown `dapr.io/*` keys
    /// (with the nearest known key) and values that do not parse (with what was used instead).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> (Self, Vec<Problem>) {
        let mut r = Reader {
            annotations,
            problems: Vec::new(),
        };
        for key in annotations.keys() {
            let dapr = key
                .get(..a::PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(a::PREFIX));
            if dapr && !values::is_known_key(key) {
                let message = match values::nearest_key(key) {
                    Some(near) => format!("unknown annotation, ignored; did you mean {near}?"),
                    None => "unknown annotation, ignored".to_owned(),
                };
                r.problem(key, message);
            }
        }

        let app_protocol = {
            let raw = r.string(a::APP_PROTOCOL);
            let lower = raw.trim().to_ascii_lowercase();
            if a::APP_PROTOCOLS.contains(&lower.as_str()) {
                lower
            } else {
                r.problem(
                    a::APP_PROTOCOL,
                    format!(
                        "{raw:?} is not one of {}; using http",
                        a::APP_PROTOCOLS.join(", ")
                    ),
                );
                "http".to_owned()
            }
        };
        let log_level = {
            let raw = r.string(a::LOG_LEVEL);
            let lower = raw.trim().to_ascii_lowercase();
            if a::LOG_LEVELS.contains(&lower.as_str()) {
                lower
            } else {
                r.problem(
                    a::LOG_LEVEL,
                    format!(
                        "{raw:?} is not a log level ({}); using info",
                        a::LOG_LEVELS.join(", ")
                    ),
                );
                "info".to_owned()
            }
        };
        let env = match r.raw(a::ENV).map(values::split_env) {
            None => Vec::new(),
            Some(Ok(env)) => env,
            Some(Err(e)) => {
                r.problem(
                    a::ENV,
                    format!("{e}; expected NAME=value,NAME2=value2; ignored"),
                );
                Vec::new()
            }
        };
        let env_from_secret = {
            let raw = r.string(a::ENV_FROM_SECRET);
            let mut out = Vec::new();
            for item in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let parsed = item.split_once('=').and_then(|(name, source)| {
                    let (secret, key) = source.split_once(':').unwrap_or((source, source));
                    (values::is_env_name(name.trim())
                        && !secret.trim().is_empty()
                        && !key.trim().is_empty())
                    .then(|| SecretEnv {
                        name: name.trim().to_owned(),
                        secret: secret.trim().to_owned(),
                        key: key.trim().to_owned(),
                    })
                });
                match parsed {
                    Some(s) => out.push(s),
                    None => r.problem(
                        a::ENV_FROM_SECRET,
                        format!("{item:?} is not NAME=secret or NAME=secret:key; skipped"),
                    ),
                }
            }
            out
        };
        let resources = {
            let cpu_request = r.quantity(a::CPU_REQUEST);
            let cpu_limit = r.quantity(a::CPU_LIMIT);
            let memory_request = r.quantity(a::MEMORY_REQUEST);
            let memory_limit = r.quantity(a::MEMORY_LIMIT);
            match (cpu_request, cpu_limit, memory_request, memory_limit) {
                (Ok(cpu_request), Ok(cpu_limit), Ok(memory_request), Ok(memory_limit)) => {
                    Some(Resources {
                        cpu_request,
                        cpu_limit,
                        memory_request,
                        memory_limit,
                    })
                }
                // Dapr's rule: one bad quantity and daprd gets no resources at all.
                _ => {
                    r.problem(
                        "dapr.io/sidecar-*",
                        "because a resource quantity is invalid, daprd gets no resources at all"
                            .to_owned(),
                    );
                    None
                }
            }
        };
        let max_body_size = r.quantity(a::MAX_BODY_SIZE).ok().flatten();
        let read_buffer_size = r.quantity(a::READ_BUFFER_SIZE).ok().flatten();
        let seccomp_profile_type = match r.raw(a::SECCOMP_PROFILE_TYPE).map(str::trim) {
            None | Some("") => None,
            Some(v @ ("Unconfined" | "RuntimeDefault" | "Localhost")) => Some(v.to_owned()),
            Some(v) => {
                let v = v.to_owned();
                r.problem(
                    a::SECCOMP_PROFILE_TYPE,
                    format!("{v:?} is not Unconfined, RuntimeDefault or Localhost; not set"),
                );
                None
            }
        };
        let unix_domain_socket_path = match r.raw(a::UNIX_DOMAIN_SOCKET_PATH).map(str::trim) {
            None | Some("") => None,
            Some(p) if p.starts_with('/') => Some(p.to_owned()),
            Some(p) => {
                let p = p.to_owned();
                r.problem(
                    a::UNIX_DOMAIN_SOCKET_PATH,
                    format!("{p:?} is not an absolute path; no socket volume is added"),
                );
                None
            }
        };
        let disable_init_endpoints = r.opt_string(a::DISABLE_INIT_ENDPOINTS);
        if let Some(v) = &disable_init_endpoints {
            let bad: Vec<&str> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty() && !matches!(*s, "config" | "subscribe"))
                .collect();
            if !bad.is_empty() {
                let message = format!(
                    "{} not an init endpoint (config, subscribe); daprd will refuse it",
                    bad.join(", ")
                );
                r.problem(a::DISABLE_INIT_ENDPOINTS, message);
            }
        }
        let pluggable_components = r
            .string(a::PLUGGABLE_COMPONENTS)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let pluggable_components_sockets_folder = r
            .opt_string(a::PLUGGABLE_COMPONENTS_SOCKETS_FOLDER)
            .filter(|s| !s.trim().is_empty());
        if let Some(folder) = &pluggable_components_sockets_folder
            && !folder.starts_with('/')
        {
            let message = format!("{folder:?} is not an absolute path");
            r.problem(a::PLUGGABLE_COMPONENTS_SOCKETS_FOLDER, message);
        }
        let app_id = r.opt_string(a::APP_ID);

        let config = Self {
            app_id,
            app_port: r.opt_port(a::APP_PORT),
            config: r.string(a::CONFIG),
            app_protocol,
            app_ssl: r.bool(a::APP_SSL),
            enable_profiling: r.bool(a::ENABLE_PROFILING),
            log_level,
            api_token_secret: r.string(a::API_TOKEN_SECRET),
            app_token_secret: r.string(a::APP_TOKEN_SECRET),
            log_as_json: r.bool(a::LOG_AS_JSON),
            app_max_concurrency: r.opt_int(a::APP_MAX_CONCURRENCY),
            enable_metrics: r.bool(a::ENABLE_METRICS),
            metrics_port: r.port(a::METRICS_PORT),
            enable_debug: r.bool(a::ENABLE_DEBUG),
            debug_port: r.port(a::DEBUG_PORT),
            env,
            env_from_secret,
            grpc_port: r.port(a::GRPC_PORT),
            internal_grpc_port: r.port(a::INTERNAL_GRPC_PORT),
            resources,
            listen_addresses: r.string(a::LISTEN_ADDRESSES),
            liveness: ProbeTiming {
                delay_seconds: r.int(a::LIVENESS_PROBE_DELAY_SECONDS),
                timeout_seconds: r.int(a::LIVENESS_PROBE_TIMEOUT_SECONDS),
                period_seconds: r.int(a::LIVENESS_PROBE_PERIOD_SECONDS),
                failure_threshold: r.int(a::LIVENESS_PROBE_THRESHOLD),
            },
            readiness: ProbeTiming {
                delay_seconds: r.int(a::READINESS_PROBE_DELAY_SECONDS),
                timeout_seconds: r.int(a::READINESS_PROBE_TIMEOUT_SECONDS),
                period_seconds: r.int(a::READINESS_PROBE_PERIOD_SECONDS),
                failure_threshold: r.int(a::READINESS_PROBE_THRESHOLD),
            },
            image: r
                .opt_string(a::SIDECAR_IMAGE)
                .filter(|s| !s.trim().is_empty()),
            seccomp_profile_type,
            http_max_request_size: r.opt_int(a::HTTP_MAX_REQUEST_SIZE),
            max_body_size,
            http_read_buffer_size: r.opt_int(a::HTTP_READ_BUFFER_SIZE),
            read_buffer_size,
            graceful_shutdown_seconds: r.int(a::GRACEFUL_SHUTDOWN_SECONDS),
            block_shutdown_duration: r.duration(a::BLOCK_SHUTDOWN_DURATION),
            enable_api_logging: r.opt_bool(a::ENABLE_API_LOGGING),
            unix_domain_socket_path,
            volume_mounts: r.mounts(a::VOLUME_MOUNTS),
            volume_mounts_rw: r.mounts(a::VOLUME_MOUNTS_RW),
            disable_builtin_k8s_secret_store: r.bool(a::DISABLE_BUILTIN_K8S_SECRET_STORE),
            enable_app_health_check: r.bool(a::ENABLE_APP_HEALTH_CHECK),
            app_health_check_path: r.string(a::APP_HEALTH_CHECK_PATH),
            app_health_probe_interval: r.int(a::APP_HEALTH_PROBE_INTERVAL),
            app_health_probe_timeout: r.int(a::APP_HEALTH_PROBE_TIMEOUT),
            app_health_threshold: r.int(a::APP_HEALTH_THRESHOLD),
            app_binding_options_timeout: r.duration(a::APP_BINDING_OPTIONS_TIMEOUT),
            placement_host_address: r.address(a::PLACEMENT_HOST_ADDRESS),
            actors_disseminate_timeout: r.duration(a::ACTORS_DISSEMINATE_TIMEOUT),
            scheduler_host_address: r.address(a::SCHEDULER_HOST_ADDRESS),
            pluggable_components,
            pluggable_components_sockets_folder,
            inject_pluggable_components: r.bool(a::INJECT_PLUGGABLE_COMPONENTS),
            app_channel_address: r
                .opt_string(a::APP_CHANNEL_ADDRESS)
                .filter(|s| !s.is_empty()),
            sentry_request_jwt_audiences: r
                .opt_string(a::SENTRY_REQUEST_JWT_AUDIENCES)
                .filter(|s| !s.is_empty()),
            disable_init_endpoints,
            native_sidecar: r
                .opt_bool(a::ENABLE_NATIVE_SIDECAR)
                .or_else(|| r.opt_bool(a::NATIVE_SIDECAR)),
            strict_annotations: r.opt_bool(a::STRICT_ANNOTATIONS),
        };
        (config, r.problems)
    }

    /// `APP_PROTOCOL` as app containers see it: `app-ssl` upgrades http and grpc.
    pub fn effective_app_protocol(&self) -> String {
        match (self.app_ssl, self.app_protocol.as_str()) {
            (true, "http") => "https".into(),
            (true, "grpc") => "grpcs".into(),
            (_, p) => p.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> (SidecarConfig, Vec<Problem>) {
        let map = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SidecarConfig::from_annotations(&map)
    }

    #[test]
    fn defaults_are_daprs() {
        let d = SidecarConfig::defaults();
        assert_eq!(d.app_protocol, "http");
        assert_eq!(d.log_level, "info");
        assert!(d.enable_metrics);
        assert_eq!(d.metrics_port, 9090);
        assert_eq!((d.grpc_port, d.internal_grpc_port), (50001, 50002));
        assert_eq!(d.debug_port, 40000);
        assert_eq!(d.listen_addresses, "[::1],127.0.0.1");
        assert_eq!(
            d.liveness,
            ProbeTiming {
                delay_seconds: 180,
                timeout_seconds: 3,
                period_seconds: 10,
                failure_threshold: 5
            }
        );
        assert_eq!(
            d.readiness,
            ProbeTiming {
                delay_seconds: 1,
                timeout_seconds: 1,
                period_seconds: 1,
                failure_threshold: 5
            }
        );
        assert_eq!(d.graceful_shutdown_seconds, -1);
        assert_eq!(d.app_health_check_path, "/healthz");
        assert_eq!(
            (
                d.app_health_probe_interval,
                d.app_health_probe_timeout,
                d.app_health_threshold
            ),
            (5, 500, 3)
        );
        assert_eq!(d.resources, Some(Resources::default()));
        assert_eq!(d.app_port, None);
        assert_eq!(d.enable_api_logging, None);
        assert_eq!(d.native_sidecar, None);
    }

    #[test]
    fn bad_values_keep_defaults_and_say_so() {
        let (c, problems) = parse(&[
            ("dapr.io/app-port", "-1"),
            ("dapr.io/metrics-port", "abc"),
            ("dapr.io/log-level", "verbose"),
            ("dapr.io/enable-metrics", "ture"),
            ("dapr.io/sidecar-liveness-probe-delay-seconds", "3.5"),
            ("dapr.io/block-shutdown-duration", "10 seconds"),
            ("dapr.io/app-protocol", "tcp"),
        ]);
        assert_eq!(c.app_port, None);
        assert_eq!(c.metrics_port, 9090);
        assert_eq!(c.log_level, "info");
        assert!(
            !c.enable_metrics,
            "an unparseable boolean is false, as in Dapr"
        );
        assert_eq!(c.liveness.delay_seconds, 180);
        assert_eq!(c.block_shutdown_duration, None);
        assert_eq!(c.app_protocol, "http");
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 7, "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.contains("dapr.io/app-port: \"-1\" is not a port"))
        );
        assert!(text.iter().any(|t| t.contains("using the default 9090")));
        assert!(
            text.iter()
                .any(|t| t.contains("\"verbose\" is not a log level"))
        );
        assert!(text.iter().any(|t| t.contains("\"ture\" is not a boolean")));
    }

    #[test]
    fn one_bad_quantity_drops_all_resources() {
        let (c, problems) = parse(&[
            ("dapr.io/sidecar-cpu-request", "100m"),
            ("dapr.io/sidecar-memory-limit", "1GB"),
        ]);
        assert_eq!(c.resources, None);
        assert!(
            problems
                .iter()
                .any(|p| p.key == "dapr.io/sidecar-memory-limit")
        );
        let (c, problems) = parse(&[
            ("dapr.io/sidecar-cpu-request", "100m"),
            ("dapr.io/sidecar-memory-limit", "1Gi"),
        ]);
        assert!(problems.is_empty());
        assert_eq!(
            c.resources,
            Some(Resources {
                cpu_request: Some("100m".into()),
                memory_limit: Some("1Gi".into()),
                ..Resources::default()
            })
        );
    }

    #[test]
    fn unknown_keys_are_reported_with_the_nearest_key() {
        let (_, problems) = parse(&[
            ("dapr.io/app-prot", "8080"),
            ("Dapr.io/zzzzzzzzzzzzzzzzzzz", "x"),
            ("example.com/app-prot", "8080"),
            ("dapr.io/sidecar-injected", "true"),
        ]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(
            problems[1].to_string(),
            "annotation dapr.io/app-prot: unknown annotation, ignored; did you mean dapr.io/app-port?"
        );
        assert_eq!(problems[0].message, "unknown annotation, ignored");
    }

    #[test]
    fn lists_and_addresses_parse() {
        let (c, problems) = parse(&[
            ("dapr.io/env", "A=1,B=2,3"),
            ("dapr.io/env-from-secret", "TOKEN=creds:token,PW=pw, bad"),
            ("dapr.io/volume-mounts", "data:/data, nope"),
            ("dapr.io/placement-host-address", " \"p:50005\" "),
            ("dapr.io/native-sidecar", "true"),
            ("dapr.io/disable-init-endpoints", "config,bogus"),
        ]);
        assert_eq!(
            c.env,
            [("A".into(), "1".into()), ("B".into(), "2,3".into())]
        );
        assert_eq!(
            c.env_from_secret,
            [
                SecretEnv {
                    name: "TOKEN".into(),
                    secret: "creds".into(),
                    key: "token".into()
                },
                SecretEnv {
                    name: "PW".into(),
                    secret: "pw".into(),
                    key: "pw".into()
                }
            ]
        );
        assert_eq!(c.volume_mounts, [("data".into(), "/data".into())]);
        assert_eq!(c.placement_host_address.as_deref(), Some("p:50005"));
        assert_eq!(c.native_sidecar, Some(true));
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "dapr.io/env-from-secret",
                "dapr.io/disable-init-endpoints",
                "dapr.io/volume-mounts"
            ]
        );
    }

    #[test]
    fn app_ssl_upgrades_the_protocol() {
        let (c, _) = parse(&[
            ("dapr.io/app-ssl", "true"),
            ("dapr.io/app-protocol", "GRPC"),
        ]);
        assert_eq!(c.app_protocol, "grpc");
        assert_eq!(c.effective_app_protocol(), "grpcs");
    }
}
