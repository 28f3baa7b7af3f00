//! Names shared by the control plane and the sidecars, kept in one place so they cannot drift.

/// The trust domain of app identities unless a Configuration sets `accessControl.trustDomain`.
pub const DEFAULT_APP_TRUST_DOMAIN: &str = "public";

/// sentry's `--trust-domain` default (the Helm chart sets `cluster.local`).
pub const DEFAULT_CONTROL_PLANE_TRUST_DOMAIN: &str = "localhost";

/// The namespace every component assumes when `NAMESPACE` is unset (self-hosted).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Env var every component reads its own namespace from.
pub const ENV_NAMESPACE: &str = "NAMESPACE";

/// Name of the Secret and the ConfigMap that hold the CA (kubernetes mode).
pub const TRUST_BUNDLE_NAME: &str = "dapr-trust-bundle";

/// Keys in the trust bundle: trust anchors, issuer chain, issuer key.
pub const TRUST_ANCHORS_KEY: &str = "ca.crt";
pub const ISSUER_CERT_KEY: &str = "issuer.crt";
pub const ISSUER_KEY_KEY: &str = "issuer.key";

/// The name of the control plane's own Configuration.
pub const CONTROL_PLANE_CONFIGURATION: &str = "daprsystem";

/// Pod annotation that marks control-plane pods for sentry's kubernetes validator.
pub const ANNOTATION_CONTROL_PLANE: &str = "dapr.io/control-plane";
/// Pod annotation with the app id.
pub const ANNOTATION_APP_ID: &str = "dapr.io/app-id";
/// Pod annotation naming the app's Configuration.
pub const ANNOTATION_CONFIG: &str = "dapr.io/config";

/// Audiences sentry's kubernetes validator asks TokenReview to check.
/// The first is Dapr's legacy audience; the second is sentry's SPIFFE id (see [`sentry_audience`]).
pub const LEGACY_SENTRY_AUDIENCE: &str = "dapr.io/sentry";

/// Where the injector mounts the pod-bound token for sentry.
pub const SENTRY_TOKEN_PATH: &str = "/var/run/secrets/dapr.io/sentrytoken/token";

/// The control-plane components, by the value of `dapr.io/control-plane`.
pub const CONTROL_PLANE_COMPONENTS: &[&str] =
    &["operator", "placement", "injector", "sentry", "scheduler"];

/// App ids of the control-plane services.
pub const SENTRY_APP_ID: &str = "dapr-sentry";
pub const OPERATOR_APP_ID: &str = "dapr-operator";
pub const INJECTOR_APP_ID: &str = "dapr-injector";
pub const PLACEMENT_APP_ID: &str = "dapr-placement";
pub const SCHEDULER_APP_ID: &str = "dapr-scheduler";

/// Default ports.
pub const SENTRY_GRPC_PORT: u16 = 50001;
pub const HEALTHZ_PORT: u16 = 8080;
pub const METRICS_PORT: u16 = 9090;

/// The app id of a control-plane component (`operator` → `dapr-operator`).
pub fn control_plane_app_id(component: &str) -> String {
    format!("dapr-{component}")
}

/// sentry's SPIFFE id as a string: the audience tokens must carry, and the id clients verify.
pub fn sentry_audience(control_plane_trust_domain: &str, control_plane_namespace: &str) -> String {
    format!("spiffe://{control_plane_trust_domain}/ns/{control_plane_namespace}/{SENTRY_APP_ID}")
}

/// DNS names a control-plane identity gets besides its SPIFFE id (Dapr issues them for the
/// services that are reached by host name: webhooks and the scheduler's peers).
pub fn control_plane_dns_names(app_id: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    match app_id {
        INJECTOR_APP_ID => vec![format!("dapr-sidecar-injector.{namespace}.svc")],
        OPERATOR_APP_ID => vec![format!("dapr-webhook.{namespace}.svc")],
        SCHEDULER_APP_ID => (0..3)
            .map(|i| {
                format!(
                    "dapr-scheduler-server-{i}.dapr-scheduler-server.{namespace}.svc.{cluster_domain}"
                )
            })
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_plane_dns_names_match_dapr() {
        assert_eq!(
            control_plane_dns_names(INJECTOR_APP_ID, "dapr-system", "cluster.local"),
            ["dapr-sidecar-injector.dapr-system.svc"]
        );
        assert_eq!(
            control_plane_dns_names(OPERATOR_APP_ID, "x", "cluster.local"),
            ["dapr-webhook.x.svc"]
        );
        let scheduler = control_plane_dns_names(SCHEDULER_APP_ID, "x", "c.l");
        assert_eq!(scheduler.len(), 3);
        assert_eq!(
            scheduler[2],
            "dapr-scheduler-server-2.dapr-scheduler-server.x.svc.c.l"
        );
        assert!(control_plane_dns_names("orders", "x", "c.l").is_empty());
        assert!(control_plane_dns_names(SENTRY_APP_ID, "x", "c.l").is_empty());
    }

    #[test]
    fn control_plane_ids() {
        assert_eq!(control_plane_app_id("operator"), OPERATOR_APP_ID);
        assert_eq!(control_plane_app_id("sentry"), SENTRY_APP_ID);
        assert_eq!(
            sentry_audience("cluster.local", "ns"),
            "spiffe://cluster.local/ns/ns/dapr-sentry"
        );
    }
}
