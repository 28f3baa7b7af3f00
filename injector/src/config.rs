//! The injector's flags and environment (Dapr's names and defaults), and the typed
//! [`InjectorConfig`] that [`crate::mutate`] reads.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::ArgAction;
use clap::builder::BoolishValueParser;
use daprs_api::cli::LogArgs;
use daprs_api::names;
use k8s_openapi::api::core::v1::Toleration;

use crate::glob::ServiceAccountPattern;

/// Whether the injector talks to the Kubernetes API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Keeps the `MutatingWebhookConfiguration`'s caBundle equal to the trust anchors, follows
    /// the `daprsystem` Configuration's mTLS switch and the cluster's version.
    Kubernetes,
    /// No Kubernetes API calls (tests, benchmarks, a webhook registered by hand).
    Standalone,
}

/// How the injector proves its identity to sentry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SentryValidator {
    /// Its pod-bound service-account token (`--sentry-token-file`).
    Kubernetes,
    /// Nothing (a sentry running with the insecure validator, for tests).
    Insecure,
}

/// daprd's image pull policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    #[value(name = "Always")]
    Always,
    #[value(name = "IfNotPresent")]
    IfNotPresent,
    #[value(name = "Never")]
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// `IGNORE_ENTRYPOINT_TOLERATIONS`: a JSON list of tolerations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tolerations(pub Vec<Toleration>);

fn tolerations(value: &str) -> Result<Tolerations, String> {
    if value.trim().is_empty() {
        return Ok(Tolerations::default());
    }
    serde_json::from_str(value)
        .map(Tolerations)
        .map_err(|e| format!("expected a JSON list of tolerations: {e}"))
}

/// `injector`: the daprs sidecar injector.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "injector", version, about)]
pub struct Args {
    /// HTTPS port of `POST /mutate`.
    #[arg(long, default_value_t = 4000)]
    pub port: u16,
    /// Address `POST /mutate` listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: IpAddr,
    /// Port of `/healthz`.
    #[arg(long, default_value_t = names::HEALTHZ_PORT)]
    pub healthz_port: u16,
    /// Address `/healthz` listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub healthz_listen_address: IpAddr,
    /// Serve Prometheus metrics.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub enable_metrics: bool,
    /// Port of `/metrics`.
    #[arg(long, default_value_t = names::METRICS_PORT)]
    pub metrics_port: u16,
    /// Address `/metrics` listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub metrics_listen_address: IpAddr,
    /// Pass the scheduler's address to sidecars.
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub scheduler_enabled: bool,
    /// Kubeconfig file (default: in-cluster, then `KUBECONFIG`).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Whether the injector talks to the Kubernetes API server.
    #[arg(long, value_enum, default_value = "kubernetes")]
    pub mode: Mode,
    /// Serving certificate chain, PEM, reloaded when it changes (default: a certificate from
    /// sentry).
    #[arg(long, requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving private key, PEM, for `--tls-cert-file`.
    #[arg(long, requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// How the injector proves its identity to sentry.
    #[arg(long, value_enum, default_value = "kubernetes")]
    pub sentry_token_validator: SentryValidator,
    /// Name of the MutatingWebhookConfiguration whose caBundle the injector keeps current.
    #[arg(long, default_value = "dapr-sidecar-injector")]
    pub webhook_configuration_name: String,
    /// Deny pods with unknown `dapr.io/*` annotations or unparseable values (per pod:
    /// `dapr.io/strict-annotations`).
    #[arg(long, env = "DAPRS_STRICT_ANNOTATIONS", default_value_t = false, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", value_parser = BoolishValueParser::new())]
    pub strict_annotations: bool,

    /// The default daprd image.
    #[arg(long, env = "SIDECAR_IMAGE")]
    pub sidecar_image: String,
    /// daprd's imagePullPolicy.
    #[arg(
        long,
        env = "SIDECAR_IMAGE_PULL_POLICY",
        value_enum,
        default_value = "Always"
    )]
    pub sidecar_image_pull_policy: PullPolicy,
    /// The control-plane namespace (sidecars reach sentry, the operator and placement there).
    #[arg(long, env = "NAMESPACE")]
    pub namespace: String,
    /// Cluster DNS domain (default: from `/etc/resolv.conf`, else `cluster.local`).
    #[arg(long, env = "KUBE_CLUSTER_DOMAIN")]
    pub kube_cluster_domain: Option<String>,
    /// Extra `namespace:serviceaccount` glob patterns whose pods get sidecars.
    #[arg(long, env = "ALLOWED_SERVICE_ACCOUNTS", value_delimiter = ',', value_parser = ServiceAccountPattern::parse)]
    pub allowed_service_accounts: Vec<ServiceAccountPattern>,
    /// Deprecated alias of `--allowed-service-accounts`.
    #[arg(long, env = "ALLOWED_SERVICE_ACCOUNTS_PREFIX_NAMES", value_delimiter = ',', value_parser = ServiceAccountPattern::parse)]
    pub allowed_service_accounts_prefix_names: Vec<ServiceAccountPattern>,
    /// JSON list of tolerations; pods with one get daprd's entrypoint as `command`.
    #[arg(long, env = "IGNORE_ENTRYPOINT_TOLERATIONS", value_parser = tolerations, default_value = "")]
    pub ignore_entrypoint_tolerations: Tolerations,
    /// Pass the placement (actors) address to sidecars.
    #[arg(long, env = "ACTORS_ENABLED", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub actors_enabled: bool,
    /// The actors service: `placement` (the built-in) or another name.
    #[arg(long, env = "ACTORS_SERVICE_NAME", default_value = "placement")]
    pub actors_service_name: String,
    /// Address of a non-placement actors service.
    #[arg(long, env = "ACTORS_SERVICE_ADDRESS")]
    pub actors_service_address: Option<String>,
    /// A reminders service name (default: built in).
    #[arg(long, env = "REMINDERS_SERVICE_NAME")]
    pub reminders_service_name: Option<String>,
    /// Address of the reminders service.
    #[arg(long, env = "REMINDERS_SERVICE_ADDRESS")]
    pub reminders_service_address: Option<String>,
    /// daprd's `securityContext.runAsNonRoot`.
    #[arg(long, env = "SIDECAR_RUN_AS_NON_ROOT", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub sidecar_run_as_non_root: bool,
    /// daprd's `securityContext.runAsUser`.
    #[arg(long, env = "SIDECAR_RUN_AS_USER")]
    pub sidecar_run_as_user: Option<i64>,
    /// daprd's `securityContext.runAsGroup`.
    #[arg(long, env = "SIDECAR_RUN_AS_GROUP")]
    pub sidecar_run_as_group: Option<i64>,
    /// daprd's `securityContext.readOnlyRootFilesystem`.
    #[arg(long, env = "SIDECAR_READ_ONLY_ROOT_FILESYSTEM", default_value_t = true, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub sidecar_read_only_root_filesystem: bool,
    /// Drop all Linux capabilities of daprd.
    #[arg(long, env = "SIDECAR_DROP_ALL_CAPABILITIES", default_value_t = false, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub sidecar_drop_all_capabilities: bool,
    /// Give daprd `DAPR_HOST_IP` from the downward API.
    #[arg(long, env = "ENABLE_K8S_DOWNWARD_APIS", default_value_t = false, action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub enable_k8s_downward_apis: bool,
    /// Inject daprd as a native sidecar (default: when the API server is Kubernetes 1.29 or
    /// newer; per pod: `dapr.io/enable-native-sidecar`).
    #[arg(long, env = "NATIVE_SIDECAR_ENABLED", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub native_sidecar_enabled: Option<bool>,
    /// The injector's own trust anchors (the `dapr-trust-bundle` ConfigMap, mounted).
    #[arg(
        long,
        env = "DAPR_TRUST_ANCHORS_FILE",
        default_value = "/var/run/dapr.io/tls/ca.crt"
    )]
    pub trust_anchors_file: PathBuf,
    /// The control plane's trust domain.
    #[arg(
        long,
        env = "DAPR_CONTROL_PLANE_TRUST_DOMAIN",
        default_value = "cluster.local"
    )]
    pub control_plane_trust_domain: String,
    /// sentry, for the injector's own certificate (default
    /// `dapr-sentry.<namespace>.svc.<cluster-domain>:443`).
    #[arg(long, env = "DAPR_SENTRY_ADDRESS")]
    pub sentry_address: Option<String>,
    /// The injector's own pod-bound token for sentry.
    #[arg(long, env = "DAPR_SENTRY_TOKEN_FILE", default_value = names::SENTRY_TOKEN_PATH)]
    pub sentry_token_file: PathBuf,
    /// Default socket folder of pluggable components.
    #[arg(long, env = "DAPR_COMPONENT_SOCKETS_FOLDER", default_value = daprs_api::annotations::DEFAULT_COMPONENTS_SOCKETS_FOLDER)]
    pub component_sockets_folder: String,

    #[command(flatten)]
    pub log: LogArgs,
}

/// What [`crate::mutate::mutate`] needs to know about the injector; fixed at start-up.
#[derive(Clone, Debug)]
pub struct InjectorConfig {
    pub sidecar_image: String,
    pub pull_policy: PullPolicy,
    pub control_plane_namespace: String,
    pub control_plane_trust_domain: String,
    pub cluster_domain: String,
    pub allowed_service_accounts: Vec<ServiceAccountPattern>,
    pub ignore_entrypoint_tolerations: Vec<Toleration>,
    pub actors_enabled: bool,
    pub actors_service_name: String,
    pub actors_service_address: Option<String>,
    pub reminders_service: Option<(String, String)>,
    pub scheduler_enabled: bool,
    pub run_as_non_root: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub read_only_root_filesystem: bool,
    pub drop_all_capabilities: bool,
    pub enable_k8s_downward_apis: bool,
    /// Resolved: the flag, else the cluster's version.
    pub native_sidecar: bool,
    pub strict_annotations: bool,
    pub component_sockets_folder: String,
}

impl InjectorConfig {
    /// Dapr's defaults, for tests and tools: image `daprio/daprd:latest`, namespace
    /// `dapr-system`, trust domain and cluster domain `cluster.local`.
    pub fn for_tests() -> Self {
        Self {
            sidecar_image: "daprio/daprd:latest".into(),
            pull_policy: PullPolicy::IfNotPresent,
            control_plane_namespace: "dapr-system".into(),
            control_plane_trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            allowed_service_accounts: Vec::new(),
            ignore_entrypoint_tolerations: Vec::new(),
            actors_enabled: true,
            actors_service_name: "placement".into(),
            actors_service_address: None,
            reminders_service: None,
            scheduler_enabled: true,
            run_as_non_root: true,
            run_as_user: None,
            run_as_group: None,
            read_only_root_filesystem: true,
            drop_all_capabilities: false,
            enable_k8s_downward_apis: false,
            native_sidecar: false,
            strict_annotations: false,
            component_sockets_folder: daprs_api::annotations::DEFAULT_COMPONENTS_SOCKETS_FOLDER
                .into(),
        }
    }

    /// The configuration from flags; `native_sidecar_default` applies when the flag is unset.
    pub fn from_args(args: &Args, cluster_domain: String, native_sidecar_default: bool) -> Self {
        let mut allowed = args.allowed_service_accounts.clone();
        allowed.extend(args.allowed_service_accounts_prefix_names.iter().cloned());
        Self {
            sidecar_image: args.sidecar_image.clone(),
            pull_policy: args.sidecar_image_pull_policy,
            control_plane_namespace: args.namespace.clone(),
            control_plane_trust_domain: args.control_plane_trust_domain.clone(),
            cluster_domain,
            allowed_service_accounts: allowed,
            ignore_entrypoint_tolerations: args.ignore_entrypoint_tolerations.0.clone(),
            actors_enabled: args.actors_enabled,
            actors_service_name: args.actors_service_name.clone(),
            actors_service_address: args.actors_service_address.clone(),
            reminders_service: args
                .reminders_service_name
                .clone()
                .zip(args.reminders_service_address.clone()),
            scheduler_enabled: args.scheduler_enabled,
            run_as_non_root: args.sidecar_run_as_non_root,
            run_as_user: args.sidecar_run_as_user,
            run_as_group: args.sidecar_run_as_group,
            read_only_root_filesystem: args.sidecar_read_only_root_filesystem,
            drop_all_capabilities: args.sidecar_drop_all_capabilities,
            enable_k8s_downward_apis: args.enable_k8s_downward_apis,
            native_sidecar: args
                .native_sidecar_enabled
                .unwrap_or(native_sidecar_default),
            strict_annotations: args.strict_annotations,
            component_sockets_folder: args.component_sockets_folder.clone(),
        }
    }

    /// `<service>.<control-plane ns>.svc.<cluster domain>:<port>`.
    pub fn control_plane_address(&self, service: &str, port: u16) -> String {
        format!(
            "{service}.{}.svc.{}:{port}",
            self.control_plane_namespace, self.cluster_domain
        )
    }
}

/// The cluster domain from the search list of a `resolv.conf` (the entry after `svc.`), as
/// Dapr autodetects it; `None` if there is none.
pub fn cluster_domain_from_resolv_conf(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("search"))
        .flat_map(str::split_whitespace)
        .find_map(|domain| domain.strip_prefix("svc.").map(str::to_owned))
        .filter(|d| !d.is_empty())
}

/// Kubernetes 1.29 made native sidecars (init containers with `restartPolicy: Always`) beta and
/// on by default.
pub const NATIVE_SIDECAR_MIN_MINOR: u32 = 29;

/// True when a `major`.`minor` API server version supports native sidecars by default. Minor
/// versions such as `29+` (managed clusters) count.
pub fn supports_native_sidecars(major: &str, minor: &str) -> bool {
    let digits = |s: &str| s.trim().trim_end_matches('+').parse::<u32>().ok();
    match (digits(major), digits(minor)) {
        (Some(major), _) if major > 1 => true,
        (Some(1), Some(minor)) => minor >= NATIVE_SIDECAR_MIN_MINOR,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Result<Args, clap::Error> {
        let mut argv = vec![
            "injector",
            "--sidecar-image",
            "daprio/daprd:1.16",
            "--namespace",
            "dapr-system",
        ];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)
    }

    #[test]
    fn defaults_are_daprs() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.port, 4000);
        assert_eq!(args.healthz_port, 8080);
        assert_eq!(args.metrics_port, 9090);
        assert!(args.enable_metrics && args.scheduler_enabled && args.actors_enabled);
        assert!(args.sidecar_run_as_non_root && args.sidecar_read_only_root_filesystem);
        assert!(!args.sidecar_drop_all_capabilities && !args.strict_annotations);
        assert_eq!(args.sidecar_image_pull_policy, PullPolicy::Always);
        assert_eq!(args.native_sidecar_enabled, None);
        assert_eq!(args.control_plane_trust_domain, "cluster.local");
        assert_eq!(args.mode, Mode::Kubernetes);
        let config = InjectorConfig::from_args(&args, "cluster.local".into(), true);
        assert!(config.native_sidecar, "unset flag follows the cluster");
        assert_eq!(
            config.control_plane_address("dapr-api", 443),
            "dapr-api.dapr-system.svc.cluster.local:443"
        );
    }

    #[test]
    fn flags_parse_into_types() {
        let args = parse(&[
            "--allowed-service-accounts",
            "ci:builder,team-*:*",
            "--ignore-entrypoint-tolerations",
            r#"[{"key":"virtual-kubelet.io/provider","operator":"Equal","value":"azure","effect":"NoSchedule"}]"#,
            "--native-sidecar-enabled",
            "false",
            "--strict-annotations",
            "--sidecar-image-pull-policy",
            "IfNotPresent",
        ])
        .unwrap();
        assert_eq!(args.allowed_service_accounts.len(), 2);
        assert_eq!(args.ignore_entrypoint_tolerations.0.len(), 1);
        assert!(args.strict_annotations);
        let config = InjectorConfig::from_args(&args, "c.l".into(), true);
        assert!(!config.native_sidecar, "the flag wins over the cluster");
    }

    #[test]
    fn bad_flags_are_refused() {
        for bad in [
            &["--allowed-service-accounts", "no-colon"][..],
            &["--ignore-entrypoint-tolerations", "{not json"],
            &["--sidecar-image-pull-policy", "Sometimes"],
            &["--tls-cert-file", "/c.pem"],
            &["--port", "99999"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(Args::try_parse_from(["injector", "--namespace", "x"]).is_err());
    }

    #[test]
    fn cluster_domain_is_read_from_the_search_list() {
        let conf = "nameserver 10.0.0.10\nsearch dapr-system.svc.corp.local svc.corp.local corp.local\noptions ndots:5\n";
        assert_eq!(
            cluster_domain_from_resolv_conf(conf).as_deref(),
            Some("corp.local")
        );
        assert_eq!(
            cluster_domain_from_resolv_conf("nameserver 1.1.1.1\n"),
            None
        );
    }

    #[test]
    fn native_sidecars_from_1_29() {
        assert!(supports_native_sidecars("1", "29"));
        assert!(supports_native_sidecars("1", "35+"));
        assert!(!supports_native_sidecars("1", "28"));
        assert!(!supports_native_sidecars("1", "x"));
        assert!(supports_native_sidecars("2", ""));
    }
}
