//! Prometheus metrics under Dapr's names (`dapr_sentry_*`), plus the root expiry Dapr lacks.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Every metric sentry exports. Counters get the `_total` suffix when encoded.
#[derive(Debug, Default)]
pub struct Metrics {
    pub sign_requests: Counter,
    pub sign_success: Counter,
    pub sign_failure: Family<ReasonLabel, Counter>,
    pub servercert_issue_failed: Family<ReasonLabel, Counter>,
    pub issuer_changed: Counter,
    pub issuer_expiry: Gauge,
    pub root_expiry: Gauge,
    pub ca_rotations: Counter,
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn register(&self) -> Registry {
        let mut registry = Registry::default();
        let r = &mut registry;
        r.register(
            "dapr_sentry_cert_sign_request_received",
            "Certificate signing requests received",
            self.sign_requests.clone(),
        );
        r.register(
            "dapr_sentry_cert_sign_success",
            "Certificates signed",
            self.sign_success.clone(),
        );
        r.register(
            "dapr_sentry_cert_sign_failure",
            "Certificate signing requests refused or failed, by reason",
            self.sign_failure.clone(),
        );
        r.register(
            "dapr_sentry_servercert_issue_failed",
            "Failures to issue sentry's own serving certificate",
            self.servercert_issue_failed.clone(),
        );
        r.register(
            "dapr_sentry_issuercert_changed",
            "Times the issuer certificate changed (reload or rotation)",
            self.issuer_changed.clone(),
        );
        r.register(
            "dapr_sentry_issuercert_expiry_timestamp",
            "NotAfter of the active issuer certificate, unix seconds",
            self.issuer_expiry.clone(),
        );
        r.register(
            "dapr_sentry_rootcert_expiry_timestamp",
            "NotAfter of the root the active issuer chains to, unix seconds",
            self.root_expiry.clone(),
        );
        r.register(
            "daprs_sentry_ca_rotation_steps",
            "Automatic CA rotation steps taken (publish, switch, retire)",
            self.ca_rotations.clone(),
        );
        registry
    }

    pub fn failure(&self, reason: &str) {
        self.sign_failure
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }
}

/// Renders the registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_daprs() {
        let metrics = Metrics::default();
        let registry = metrics.register();
        metrics.sign_requests.inc();
        metrics.failure("sign");
        metrics.issuer_expiry.set(1_900_000_000);
        let text = render(&registry);
        for name in [
            "dapr_sentry_cert_sign_request_received_total 1",
            "dapr_sentry_cert_sign_failure_total{reason=\"sign\"} 1",
            "dapr_sentry_cert_sign_success_total 0",
            "dapr_sentry_issuercert_changed_total 0",
            "dapr_sentry_issuercert_expiry_timestamp 1900000000",
            "dapr_sentry_rootcert_expiry_timestamp 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
