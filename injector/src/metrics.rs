//! Prometheus metrics under Dapr's names (`dapr_injector_*`), plus the skip counter Dapr lacks.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppIdLabel {
    pub app_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailedLabels {
    pub app_id: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Every metric the injector exports. Counters get the `_total` suffix when encoded.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests: Counter,
    pub succeeded: Family<AppIdLabel, Counter>,
    pub failed: Family<FailedLabels, Counter>,
    pub skipped: Family<ReasonLabel, Counter>,
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn register(&self) -> Registry {
        let mut registry = Registry::default();
        registry.register(
            "dapr_injector_sidecar_injection_requests",
            "Admission requests received by the sidecar injector",
            self.requests.clone(),
        );
        registry.register(
            "dapr_injector_sidecar_injection_succeeded",
            "Pods a sidecar was injected into, by app id",
            self.succeeded.clone(),
        );
        registry.register(
            "dapr_injector_sidecar_injection_failed",
            "Admissions denied or answered with an error, by app id and reason",
            self.failed.clone(),
        );
        registry.register(
            "daprs_injector_sidecar_injection_skipped",
            "Pods admitted without a sidecar, by reason",
            self.skipped.clone(),
        );
        registry
    }

    pub fn succeeded(&self, app_id: &str) {
        self.succeeded
            .get_or_create(&AppIdLabel {
                app_id: app_id.to_owned(),
            })
            .inc();
    }

    pub fn failed(&self, app_id: Option<&str>, reason: &str) {
        self.failed
            .get_or_create(&FailedLabels {
                app_id: app_id.unwrap_or_default().to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub fn skipped(&self, reason: &str) {
        self.skipped
            .get_or_create(&ReasonLabel {
                reason: reason.to_owned(),
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
        metrics.requests.inc();
        metrics.succeeded("orders");
        metrics.failed(Some("Bad"), "invalid_app_id");
        metrics.skipped("not_enabled");
        let text = render(&registry);
        for line in [
            "dapr_injector_sidecar_injection_requests_total 1",
            "dapr_injector_sidecar_injection_succeeded_total{app_id=\"orders\"} 1",
            "dapr_injector_sidecar_injection_failed_total{app_id=\"Bad\",reason=\"invalid_app_id\"} 1",
            "daprs_injector_sidecar_injection_skipped_total{reason=\"not_enabled\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
