//! The operator's flags: Dapr's names and defaults (§3.5 of the reference), plus the few
//! daprs adds (each marked).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use daprs_api::cli::LogArgs;

fn go_duration(s: &str) -> Result<Duration, String> {
    daprs_api::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

fn watch_interval(s: &str) -> Result<crate::watchdog::Interval, String> {
    crate::watchdog::Interval::parse(s)
}

fn no_argo(s: &str) -> Result<bool, String> {
    match s {
        "false" => Ok(false),
        "true" => Err("Argo Rollouts are not supported by daprs; remove the flag".into()),
        other => Err(format!("{other:?} is not a boolean")),
    }
}

/// `operator`: serves Dapr resources to sidecars and reconciles their Services.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "operator", version, about)]
pub struct Args {
    /// Name of the control plane's Configuration (in the operator's namespace); it must exist.
    #[arg(long, default_value = daprs_api::names::CONTROL_PLANE_CONFIGURATION)]
    pub config: String,
    /// Watchdog (leader only): `0` off, `once`, or how often (at least 1s, e.g. `30s`) to
    /// delete pods annotated `dapr.io/enabled` that were admitted without a sidecar.
    #[arg(long, default_value = "0", value_parser = watch_interval)]
    pub watch_interval: crate::watchdog::Interval,
    /// Watchdog: most pods deleted per minute, evenly spaced; 0: no limit.
    #[arg(long, default_value_t = 20)]
    pub max_pod_restarts_per_minute: u32,
    /// Watchdog: label pods that have their sidecar `dapr.io/watchdog-patched=true` so later
    /// passes skip them (needs `patch` on pods).
    #[arg(long, default_value_t = false)]
    pub watchdog_can_patch_pod_labels: bool,
    /// Run the reconcilers without a Lease (only safe with one replica).
    #[arg(long, default_value_t = false)]
    pub disable_leader_election: bool,
    /// Do not create `<app-id>-dapr` Services.
    #[arg(long, default_value_t = false)]
    pub disable_service_reconciler: bool,
    /// Only this namespace's resources and workloads (default: all namespaces).
    #[arg(long, default_value = "")]
    pub watch_namespace: String,
    /// Argo Rollouts support; daprs accepts only `false`.
    #[arg(long, default_value = "false", value_parser = no_argo, num_args = 0..=1, default_missing_value = "true")]
    pub enable_argo_rollout_service_reconciler: bool,
    /// The trust anchors (PEM) sidecar certificates chain to.
    #[arg(long, default_value = "/var/run/secrets/dapr.io/tls/ca.crt")]
    pub trust_anchors_file: PathBuf,
    /// The service-account token presented to sentry for the operator's own certificate
    /// (default: the projected sentry token, else the legacy service-account token, else none
    /// for sentry's insecure validator).
    #[arg(long, env = "DAPR_SENTRY_TOKEN_FILE")]
    pub sentry_token_file: Option<PathBuf>,
    /// Port of the operator API (gRPC, mutual TLS).
    #[arg(long, default_value_t = 6500)]
    pub port: u16,
    /// Address the operator API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub listen_address: IpAddr,
    /// Port of `/healthz`.
    #[arg(long, default_value_t = daprs_api::names::HEALTHZ_PORT)]
    pub healthz_port: u16,
    /// Address `/healthz` listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub healthz_listen_address: IpAddr,
    /// Port of the webhooks (Subscription conversion, Component validation; HTTPS).
    #[arg(long, default_value_t = 19443)]
    pub webhook_server_port: u16,
    /// Address the webhooks listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub webhook_server_listen_address: IpAddr,
    /// Informer resync period; watches here never resync, so only 0 changes nothing.
    #[arg(long, default_value = "0", value_parser = go_duration)]
    pub cache_sync_period: Duration,
    /// Port of the Prometheus `/metrics` endpoint.
    #[arg(long, default_value_t = daprs_api::names::METRICS_PORT)]
    pub metrics_port: u16,
    /// Address `/metrics` listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub metrics_listen_address: IpAddr,
    /// Serve Prometheus metrics.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_metrics: bool,
    /// daprs: leave the CRDs alone: no apply at start-up, no caBundle updates of the
    /// Subscription conversion webhook (for clusters whose CRDs are managed elsewhere).
    #[arg(long, default_value_t = false)]
    pub disable_crd_apply: bool,
    /// daprs: serve the webhooks with `tls.crt`/`tls.key` from this folder and publish its
    /// `ca.crt` as caBundle, instead of the operator's SVID and the trust anchors (e.g. a
    /// cert-manager Secret).
    #[arg(long)]
    pub webhook_tls_dir: Option<PathBuf>,
    /// daprs: reach the webhooks at this base URL (`https://host:port`) instead of the
    /// `dapr-webhook` Service.
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// daprs: the Component ValidatingWebhookConfiguration whose caBundle the leader keeps
    /// equal to the trust anchors (server-side apply, field manager `daprs-operator`); empty:
    /// leave every caBundle alone.
    #[arg(long, env = "DAPRS_COMPONENT_WEBHOOK_NAME", default_value = crate::component_webhook::DEFAULT_NAME)]
    pub component_webhook_name: String,
    #[command(flatten)]
    pub log: LogArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_are_daprs() {
        let args = Args::parse_from(["operator"]);
        assert_eq!(args.port, 6500);
        assert_eq!(args.webhook_server_port, 19443);
        assert_eq!(args.healthz_port, 8080);
        assert_eq!(args.metrics_port, 9090);
        assert_eq!(args.config, "daprsystem");
        assert_eq!(args.component_webhook_name, "daprs-component-validator");
        assert!(!args.disable_leader_election);
        assert_eq!(
            args.trust_anchors_file,
            PathBuf::from("/var/run/secrets/dapr.io/tls/ca.crt")
        );
    }

    #[test]
    fn the_watchdog_flags_parse_and_bad_values_are_refused_with_what_is_allowed() {
        use crate::watchdog::Interval;
        let args = Args::parse_from(["operator"]);
        assert_eq!(args.watch_interval, Interval::Off);
        assert_eq!(args.max_pod_restarts_per_minute, 20);
        assert!(!args.watchdog_can_patch_pod_labels);
        let args = Args::parse_from([
            "operator",
            "--watch-interval=30s",
            "--max-pod-restarts-per-minute=5",
            "--watchdog-can-patch-pod-labels",
        ]);
        assert_eq!(
            args.watch_interval,
            Interval::Every(Duration::from_secs(30))
        );
        assert_eq!(args.max_pod_restarts_per_minute, 5);
        assert!(args.watchdog_can_patch_pod_labels);
        assert_eq!(
            Args::parse_from(["operator", "--watch-interval", "once"]).watch_interval,
            Interval::Once
        );
        for (bad, says) in [("100ms", "shorter than 1s"), ("sometimes", "once")] {
            let err = Args::try_parse_from(["operator", "--watch-interval", bad]).unwrap_err();
            let line = daprs_api::cli::one_line(&err);
            assert!(
                line.contains("--watch-interval") && line.contains(says),
                "{line}"
            );
        }
        let err =
            Args::try_parse_from(["operator", "--max-pod-restarts-per-minute=-1"]).unwrap_err();
        assert!(
            daprs_api::cli::one_line(&err).contains("--max-pod-restarts-per-minute"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_features_are_refused_with_the_reason() {
        let err = Args::try_parse_from(["operator", "--enable-argo-rollout-service-reconciler"])
            .unwrap_err();
        assert!(daprs_api::cli::one_line(&err).contains("Argo"));
    }
}
