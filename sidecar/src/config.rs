//! daprd's flags, with Dapr's names and defaults. Flags Dapr has but daprs does not implement
//! yet are accepted and reported once, so existing command lines keep working.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Parser, ValueEnum};
use daprs_api::cli::LogArgs;

/// Dapr's default `--max-body-size` (4Mi).
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Standalone,
    Kubernetes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AppProtocol {
    Http,
    Https,
    H2c,
    Grpc,
    Grpcs,
}

impl AppProtocol {
    pub fn name(self) -> &'static str {
        match self {
            AppProtocol::Http => "http",
            AppProtocol::Https => "https",
            AppProtocol::H2c => "h2c",
            AppProtocol::Grpc => "grpc",
            AppProtocol::Grpcs => "grpcs",
        }
    }
}

/// `daprd`: the daprs sidecar.
#[derive(Debug, Clone, Parser)]
// Repeated flags: the last one wins, as with Dapr's Go flags (tools append overrides).
#[command(
    name = "daprd",
    version,
    about = "daprd: the daprs sidecar",
    args_override_self = true
)]
pub struct Args {
    /// The app id.
    #[arg(long = "app-id", default_value = "")]
    pub app_id: String,
    /// The app's port; must differ from the API ports.
    #[arg(long = "app-port")]
    pub app_port: Option<u16>,
    /// The app's protocol.
    #[arg(long = "app-protocol", value_enum, default_value = "http")]
    pub app_protocol: AppProtocol,
    /// The app's host.
    #[arg(long = "app-channel-address", default_value = "127.0.0.1")]
    pub app_channel_address: String,
    /// Maximum in-flight calls to the app; -1 is no limit.
    #[arg(long = "app-max-concurrency", default_value_t = -1, allow_negative_numbers = true)]
    pub app_max_concurrency: i64,
    /// Run in standalone or kubernetes mode.
    #[arg(long = "mode", value_enum, default_value = "standalone")]
    pub mode: Mode,
    /// HTTP API port.
    #[arg(long = "dapr-http-port", default_value_t = 3500)]
    pub http_port: u16,
    /// gRPC API port.
    #[arg(long = "dapr-grpc-port", default_value_t = 50001)]
    pub grpc_port: u16,
    /// Public health and metadata port (off when not given).
    #[arg(long = "dapr-public-port")]
    pub public_port: Option<u16>,
    /// Bind address of the public port.
    #[arg(long = "dapr-public-listen-address", default_value = "0.0.0.0")]
    pub public_listen_address: IpAddr,
    /// Comma-separated bind addresses of the HTTP and gRPC APIs.
    #[arg(
        long = "dapr-listen-addresses",
        value_delimiter = ',',
        default_value = "0.0.0.0",
        value_parser = parse_ip,
        action = ArgAction::Set
    )]
    pub listen_addresses: Vec<IpAddr>,
    /// Serve Prometheus metrics.
    #[arg(long = "enable-metrics", default_value = "true", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_metrics: bool,
    /// Metrics port.
    #[arg(long = "metrics-port", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Bind address of the metrics port.
    #[arg(long = "metrics-listen-address", default_value = "0.0.0.0")]
    pub metrics_listen_address: IpAddr,
    /// Resources directories (repeatable or comma-separated); `--components-path` is the
    /// deprecated alias.
    #[arg(
        long = "resources-path",
        alias = "components-path",
        value_delimiter = ','
    )]
    pub resources_path: Vec<PathBuf>,
    /// Configuration file(s).
    #[arg(long = "config", value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// Grace period of a shutdown in seconds; negative means the default (5).
    #[arg(
        long = "dapr-graceful-shutdown-seconds",
        default_value_t = 5,
        allow_negative_numbers = true
    )]
    pub graceful_shutdown_seconds: i64,
    /// Request body limit of the APIs (a quantity such as 4Mi).
    #[arg(long = "max-body-size", default_value = "4Mi", value_parser = parse_quantity)]
    pub max_body_size: usize,
    /// Turn on app health probes.
    #[arg(long = "enable-app-health-check", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_app_health_check: bool,
    /// App health probe path.
    #[arg(long = "app-health-check-path", default_value = "/healthz")]
    pub app_health_check_path: String,
    /// App health probe interval in seconds.
    #[arg(long = "app-health-probe-interval", default_value_t = 5)]
    pub app_health_probe_interval: u64,
    /// App health probe timeout in milliseconds.
    #[arg(long = "app-health-probe-timeout", default_value_t = 500)]
    pub app_health_probe_timeout: u64,
    /// Consecutive failures before the app is unhealthy.
    #[arg(long = "app-health-threshold", default_value_t = 3)]
    pub app_health_threshold: u32,
    /// Watch the resources directories and swap changed components in without a gap.
    #[arg(long = "hot-reload", default_value = "true", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub hot_reload: bool,
    /// Sidecar-to-sidecar (internal gRPC) port; when not given, a stable port in 47300-49347
    /// derived from the app id (self-hosted, as Dapr). The injector passes 50002.
    #[arg(long = "dapr-internal-grpc-port")]
    pub internal_grpc_port: Option<u16>,
    /// Bind address of the internal gRPC server (all addresses when not given).
    #[arg(long = "dapr-internal-grpc-listen-address")]
    pub internal_grpc_listen_address: Option<IpAddr>,
    /// Mutual TLS between sidecars with certificates from sentry.
    #[arg(long = "enable-mtls", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub enable_mtls: bool,
    /// sentry's address (`host:port`).
    #[arg(long = "sentry-address")]
    pub sentry_address: Option<String>,
    /// The operator's address (`host:port`, kubernetes mode).
    #[arg(long = "control-plane-address")]
    pub control_plane_address: Option<String>,
    /// The control plane's trust domain; env `DAPR_CONTROLPLANE_TRUST_DOMAIN` when not given,
    /// else `localhost`.
    #[arg(long = "control-plane-trust-domain")]
    pub control_plane_trust_domain: Option<String>,
    /// The control plane's namespace; env `DAPR_CONTROLPLANE_NAMESPACE` when not given, else
    /// `default`.
    #[arg(long = "control-plane-namespace")]
    pub control_plane_namespace: Option<String>,
    /// Directory of the self-hosted name-resolution registry (daprs): each daprd writes its
    /// address there and reads the others'. Default `$HOME/.dapr/registry`.
    #[arg(long = "registry-dir", env = "DAPRS_REGISTRY_DIR")]
    pub registry_dir: Option<PathBuf>,
    /// Threads that run daprd's work (daprs). 1, the default, runs it all on one thread, which
    /// costs the least CPU and latency per request (no hand-overs between threads) and serves
    /// tens of thousands of requests/s; more spread the work over that many threads, for a
    /// sidecar that needs more than one core; 0 means one per CPU core.
    #[arg(
        long = "worker-threads",
        env = "DAPRS_WORKER_THREADS",
        default_value_t = 1
    )]
    pub worker_threads: usize,
    /// The program itself, when a container's args repeat it before the flags (`/daprd
    /// --app-id ...`, as Dapr's injector writes them, with an image whose entrypoint is
    /// daprd); any other positional argument is refused.
    #[arg(hide = true, value_name = "DAPRD")]
    pub entrypoint: Option<PathBuf>,
    /// Do not load the built-in `kubernetes` secret store (kubernetes mode).
    #[arg(long = "disable-builtin-k8s-secret-store", default_value = "false", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set)]
    pub disable_builtin_k8s_secret_store: bool,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub unsupported: Unsupported,
}

/// Dapr flags daprs accepts but does not act on yet; each given one is reported once.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Unsupported {
    #[arg(long = "app-ssl", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub app_ssl: Option<String>,
    #[arg(long = "placement-host-address", hide = true)]
    pub placement_host_address: Option<String>,
    #[arg(long = "scheduler-host-address", hide = true)]
    pub scheduler_host_address: Option<String>,
    #[arg(long = "scheduler-job-streams", hide = true)]
    pub scheduler_job_streams: Option<String>,
    #[arg(long = "sentry-request-jwt-audiences", hide = true)]
    pub sentry_request_jwt_audiences: Option<String>,
    #[arg(long = "allowed-origins", hide = true)]
    pub allowed_origins: Option<String>,
    #[arg(long = "read-buffer-size", hide = true)]
    pub read_buffer_size: Option<String>,
    #[arg(long = "dapr-http-max-request-size", hide = true)]
    pub dapr_http_max_request_size: Option<String>,
    #[arg(long = "dapr-http-read-buffer-size", hide = true)]
    pub dapr_http_read_buffer_size: Option<String>,
    #[arg(long = "unix-domain-socket", hide = true)]
    pub unix_domain_socket: Option<String>,
    #[arg(long = "dapr-block-shutdown-duration", hide = true)]
    pub dapr_block_shutdown_duration: Option<String>,
    #[arg(long = "enable-api-logging", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_api_logging: Option<String>,
    #[arg(long = "enable-profiling", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub enable_profiling: Option<String>,
    #[arg(long = "profile-port", hide = true)]
    pub profile_port: Option<String>,
    #[arg(long = "log-file", hide = true)]
    pub log_file: Option<String>,
    #[arg(long = "disable-init-endpoints", hide = true)]
    pub disable_init_endpoints: Option<String>,
    #[arg(long = "app-binding-options-timeout", hide = true)]
    pub app_binding_options_timeout: Option<String>,
    #[arg(long = "actors-disseminate-timeout", hide = true)]
    pub actors_disseminate_timeout: Option<String>,
    #[arg(long = "hot-reload-reconcile-interval", hide = true)]
    pub hot_reload_reconcile_interval: Option<String>,
    #[arg(long = "wait", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub wait: Option<String>,
    #[arg(long = "build-info", hide = true, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub build_info: Option<String>,
    #[arg(long = "actors-service", hide = true)]
    pub actors_service: Option<String>,
    #[arg(long = "reminders-service", hide = true)]
    pub reminders_service: Option<String>,
}

impl Unsupported {
    /// The flags that were given, by their Dapr name.
    pub fn given(&self) -> Vec<&'static str> {
        let Unsupported {
            app_ssl,
            placement_host_address,
            scheduler_host_address,
            scheduler_job_streams,
            sentry_request_jwt_audiences,
            allowed_origins,
            read_buffer_size,
            dapr_http_max_request_size,
            dapr_http_read_buffer_size,
            unix_domain_socket,
            dapr_block_shutdown_duration,
            enable_api_logging,
            enable_profiling,
            profile_port,
            log_file,
            disable_init_endpoints,
            app_binding_options_timeout,
            actors_disseminate_timeout,
            hot_reload_reconcile_interval,
            wait,
            build_info,
            actors_service,
            reminders_service,
        } = self;
        [
            ("--app-ssl", app_ssl),
            ("--placement-host-address", placement_host_address),
            ("--scheduler-host-address", scheduler_host_address),
            ("--scheduler-job-streams", scheduler_job_streams),
            (
                "--sentry-request-jwt-audiences",
                sentry_request_jwt_audiences,
            ),
            ("--allowed-origins", allowed_origins),
            ("--read-buffer-size", read_buffer_size),
            ("--dapr-http-max-request-size", dapr_http_max_request_size),
            ("--dapr-http-read-buffer-size", dapr_http_read_buffer_size),
            ("--unix-domain-socket", unix_domain_socket),
            (
                "--dapr-block-shutdown-duration",
                dapr_block_shutdown_duration,
            ),
            ("--enable-api-logging", enable_api_logging),
            ("--enable-profiling", enable_profiling),
            ("--profile-port", profile_port),
            ("--log-file", log_file),
            ("--disable-init-endpoints", disable_init_endpoints),
            ("--app-binding-options-timeout", app_binding_options_timeout),
            ("--actors-disseminate-timeout", actors_disseminate_timeout),
            (
                "--hot-reload-reconcile-interval",
                hot_reload_reconcile_interval,
            ),
            ("--wait", wait),
            ("--build-info", build_info),
            ("--actors-service", actors_service),
            ("--reminders-service", reminders_service),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(name, _)| name)
        .collect()
    }
}

impl Args {
    /// The shutdown grace period (negative means Dapr's default of 5 s).
    pub fn grace_period(&self) -> Duration {
        let seconds = if self.graceful_shutdown_seconds < 0 {
            5
        } else {
            self.graceful_shutdown_seconds.unsigned_abs()
        };
        Duration::from_secs(seconds)
    }

    /// The internal gRPC port: the flag, or a stable port in 47300-49347 derived from the app id
    /// (FNV-1a; Dapr derives one in the same range, so self-hosted sidecars keep their port
    /// across restarts).
    pub fn internal_port(&self) -> u16 {
        if let Some(port) = self.internal_grpc_port.filter(|p| *p != 0) {
            return port;
        }
        let mut hash: u32 = 0x811c_9dc5;
        for b in self.app_id.bytes() {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        47300 + (hash % 2048) as u16
    }

    /// The control plane's trust domain: flag, env `DAPR_CONTROLPLANE_TRUST_DOMAIN`, `localhost`.
    pub fn control_plane_trust_domain(&self) -> String {
        self.control_plane_trust_domain
            .clone()
            .or_else(|| env_nonempty("DAPR_CONTROLPLANE_TRUST_DOMAIN"))
            .unwrap_or_else(|| daprs_api::names::DEFAULT_CONTROL_PLANE_TRUST_DOMAIN.to_owned())
    }

    /// The control plane's namespace: flag, env `DAPR_CONTROLPLANE_NAMESPACE`, `default`.
    pub fn control_plane_namespace(&self) -> String {
        self.control_plane_namespace
            .clone()
            .or_else(|| env_nonempty("DAPR_CONTROLPLANE_NAMESPACE"))
            .unwrap_or_else(|| daprs_api::names::DEFAULT_NAMESPACE.to_owned())
    }

    /// True when daprd needs a certificate from sentry: mTLS on, or kubernetes mode (Dapr
    /// always gets one there; the operator connection is mutual TLS).
    pub fn needs_identity(&self) -> bool {
        self.enable_mtls || self.mode == Mode::Kubernetes
    }

    /// Flags that are valid separately but not together; the message names them.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(port) = self.app_port
            && (port == self.http_port || port == self.grpc_port)
        {
            return Err(format!(
                "--app-port {port} must differ from --dapr-http-port ({}) and --dapr-grpc-port ({})",
                self.http_port, self.grpc_port
            ));
        }
        if self.http_port != 0 && self.http_port == self.grpc_port {
            return Err(format!(
                "--dapr-http-port and --dapr-grpc-port are both {}; give them different ports",
                self.http_port
            ));
        }
        if self.mode == Mode::Standalone && !self.app_id.is_empty() {
            let valid = self
                .app_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
            if !valid || self.app_id.contains("||") {
                return Err(format!(
                    "--app-id {:?} may contain only letters, digits, '-', '_' and '.'",
                    self.app_id
                ));
            }
        }
        if self.needs_identity() && self.sentry_address.as_deref().unwrap_or("").is_empty() {
            return Err(format!(
                "{} needs --sentry-address (host:port of sentry) to obtain a certificate",
                if self.enable_mtls {
                    "--enable-mtls"
                } else {
                    "--mode kubernetes"
                }
            ));
        }
        if self.needs_identity() && self.app_id.is_empty() {
            return Err("mutual TLS needs --app-id: the certificate names the app".into());
        }
        if self.mode == Mode::Kubernetes
            && self
                .control_plane_address
                .as_deref()
                .is_none_or(str::is_empty)
        {
            return Err("--mode kubernetes needs --control-plane-address: the operator's address, e.g. dapr-api.dapr-system.svc.cluster.local:443".into());
        }
        if let Some(program) = &self.entrypoint
            && program.file_name().is_none_or(|n| n != "daprd")
        {
            return Err(format!(
                "unexpected argument {:?}: daprd takes only flags",
                program.display().to_string()
            ));
        }
        if self.listen_addresses.is_empty() {
            return Err("--dapr-listen-addresses must name at least one address".into());
        }
        Ok(())
    }
}

/// Parses an IP address, IPv6 with or without brackets (`[::1]`, as Dapr's injector passes it).
pub fn parse_ip(value: &str) -> Result<IpAddr, String> {
    let bare = value
        .trim()
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value.trim());
    bare.parse()
        .map_err(|_| format!("{value:?} is not an IP address; use e.g. 127.0.0.1 or [::1]"))
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Parses a Kubernetes-style quantity (`4Mi`, `512Ki`, `1M`, `1048576`) into bytes.
pub fn parse_quantity(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{value:?} is not a quantity; use a size such as 4Mi or 512Ki"))?;
    let factor: usize = match unit {
        "" => 1,
        "k" | "K" => 1000,
        "Ki" => 1 << 10,
        "M" => 1_000_000,
        "Mi" => 1 << 20,
        "G" => 1_000_000_000,
        "Gi" => 1 << 30,
        _ => {
            return Err(format!(
                "{value:?} has an unknown unit; use Ki, Mi, Gi, k, M or G"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{value:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("daprd").chain(args.iter().copied()))
    }

    #[test]
    fn dapr_defaults() {
        let a = parse(&[]).unwrap();
        assert_eq!(
            (a.http_port, a.grpc_port, a.metrics_port),
            (3500, 50001, 9090)
        );
        assert!(a.enable_metrics);
        assert_eq!(a.max_body_size, DEFAULT_MAX_BODY_BYTES);
        assert_eq!(a.grace_period(), Duration::from_secs(5));
        assert_eq!(a.mode, Mode::Standalone);
    }

    #[test]
    fn dapr_command_lines_parse() {
        let a = parse(&[
            "--app-id",
            "orders",
            "--app-port",
            "8080",
            "--dapr-http-port",
            "3600",
            "--components-path",
            "/a,/b",
            "--resources-path",
            "/c",
            "--enable-metrics=false",
            "--dapr-graceful-shutdown-seconds",
            "-1",
            "--enable-mtls",
            "--sentry-address",
            "localhost:50001",
            "--dapr-internal-grpc-port",
            "50002",
            "--log-as-json",
            "--max-body-size",
            "16Mi",
            "--enable-app-health-check=true",
        ])
        .unwrap();
        assert_eq!(a.resources_path.len(), 3);
        assert!(!a.enable_metrics && a.enable_app_health_check);
        assert_eq!(a.grace_period(), Duration::from_secs(5));
        assert_eq!(a.max_body_size, 16 << 20);
        assert!(a.unsupported.given().is_empty());
        assert!(a.enable_mtls);
        assert_eq!(a.sentry_address.as_deref(), Some("localhost:50001"));
        assert_eq!(a.internal_grpc_port, Some(50002));
        assert!(a.validate().is_ok());
    }

    #[test]
    fn bad_values_are_refused_with_the_flag() {
        let err = daprs_api::cli::one_line(&parse(&["--mode", "cloud"]).unwrap_err());
        assert!(
            err.contains("--mode") && err.contains("standalone"),
            "{err}"
        );
        let err = daprs_api::cli::one_line(&parse(&["--max-body-size", "4Xi"]).unwrap_err());
        assert!(err.contains("--max-body-size"), "{err}");
        let a = parse(&["--app-port", "3500"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--app-port"));
        let a = parse(&["--app-id", "a b"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--app-id"));
        let a = parse(&["--app-id", "a", "--enable-mtls"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--sentry-address"));
        let a = parse(&["--app-id", "a", "--mode", "kubernetes"]).unwrap();
        assert!(a.validate().unwrap_err().contains("--sentry-address"));
        let a = parse(&[
            "--app-id",
            "a",
            "--mode",
            "kubernetes",
            "--sentry-address",
            "s:443",
        ])
        .unwrap();
        assert!(
            a.validate()
                .unwrap_err()
                .contains("--control-plane-address")
        );
    }

    #[test]
    fn internal_port_is_stable_per_app_id() {
        let a = parse(&["--app-id", "orders"]).unwrap();
        let port = a.internal_port();
        assert!((47300..47300 + 2048).contains(&port));
        assert_eq!(
            port,
            parse(&["--app-id", "orders"]).unwrap().internal_port()
        );
        assert_ne!(
            port,
            parse(&["--app-id", "payments"]).unwrap().internal_port()
        );
        let a = parse(&["--app-id", "x", "--dapr-internal-grpc-port", "50002"]).unwrap();
        assert_eq!(a.internal_port(), 50002);
    }

    #[test]
    fn the_injectors_command_line_parses_and_later_flags_win() {
        let a = parse(&[
            "/daprd",
            "--mode",
            "kubernetes",
            "--dapr-listen-addresses",
            "[::1],127.0.0.1",
            "--control-plane-address",
            "dapr-api.dapr-system.svc.cluster.local:443",
            "--control-plane-namespace",
            "dapr-system",
            "--dapr-http-port",
            "3500",
            "--dapr-http-port",
            "3600",
        ])
        .unwrap();
        assert_eq!(a.mode, Mode::Kubernetes);
        assert_eq!(
            a.listen_addresses,
            ["::1".parse::<IpAddr>().unwrap(), [127, 0, 0, 1].into()]
        );
        assert_eq!(a.http_port, 3600);
        let again = parse(&[
            "--dapr-listen-addresses",
            "[::1],127.0.0.1",
            "--dapr-listen-addresses",
            "127.0.0.1",
        ])
        .unwrap();
        assert_eq!(again.listen_addresses, [IpAddr::from([127, 0, 0, 1])]);
        assert_eq!(a.control_plane_namespace(), "dapr-system");
        assert!(!a.disable_builtin_k8s_secret_store);
        assert!(parse_ip("[::1").is_err());
        let a = parse(&["/bin/sh", "--app-id", "x"]).unwrap();
        assert!(a.validate().unwrap_err().contains("/bin/sh"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("4Mi"), Ok(4 << 20));
        assert_eq!(parse_quantity("1k"), Ok(1000));
        assert_eq!(parse_quantity("77"), Ok(77));
        assert!(parse_quantity("x").is_err());
    }
}
