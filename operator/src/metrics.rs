//! Prometheus metrics: Dapr's `dapr_operator_service_*` names for the Service reconciler, and
//! daprs' own (`daprs_operator_*`) for what Dapr does not measure.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppIdLabel {
    pub app_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Every metric the operator exports. Counters get the `_total` suffix when encoded.
#[derive(Debug, Default)]
pub struct Metrics {
    pub service_created: Family<AppIdLabel, Counter>,
    pub service_updated: Family<AppIdLabel, Counter>,
    pub service_deleted: Family<AppIdLabel, Counter>,
    pub streams: Family<ResourceLabel, Gauge>,
    pub status_reports: Family<ResultLabel, Counter>,
    pub validations: Family<ResultLabel, Counter>,
    pub conversions: Family<ResultLabel, Counter>,
    pub watchdog_pods: Family<ResultLabel, Counter>,
    pub leader: Gauge,
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn register(&self) -> Registry {
        let mut registry = Registry::default();
        let r = &mut registry;
        r.register(
            "dapr_operator_service_created",
            "<app-id>-dapr Services created",
            self.service_created.clone(),
        );
        r.register(
            "dapr_operator_service_updated",
            "<app-id>-dapr Services updated",
            self.service_updated.clone(),
        );
        r.register(
            "dapr_operator_service_deleted",
            "<app-id>-dapr Services deleted",
            self.service_deleted.clone(),
        );
        r.register(
            "daprs_operator_streams",
            "Open sidecar update streams, by resource",
            self.streams.clone(),
        );
        r.register(
            "daprs_operator_status_reports",
            "Resource load results reported by sidecars, by result",
            self.status_reports.clone(),
        );
        r.register(
            "daprs_operator_component_validations",
            "Component admission reviews, by result (allowed, warned, denied)",
            self.validations.clone(),
        );
        r.register(
            "daprs_operator_subscription_conversions",
            "Subscription conversion reviews, by result",
            self.conversions.clone(),
        );
        r.register(
            "daprs_operator_watchdog_pods",
            "Pods the watchdog acted on, by result (deleted: restarted through the injector; labelled: found with their sidecar; failed)",
            self.watchdog_pods.clone(),
        );
        r.register(
            "daprs_operator_leader",
            "1 while this replica holds the operator.dapr.io lease",
            self.leader.clone(),
        );
        registry
    }

    /// The open-stream gauge of one resource kind.
    pub fn streams(&self, resource: &str) -> Gauge {
        self.streams
            .get_or_create(&ResourceLabel {
                resource: resource.into(),
            })
            .clone()
    }

    pub fn count(family: &Family<ResultLabel, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub fn service(family: &Family<AppIdLabel, Counter>, app_id: &str) {
        family
            .get_or_create(&AppIdLabel {
                app_id: app_id.into(),
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
        Metrics::service(&metrics.service_created, "orders");
        metrics.streams("components").inc();
        let text = render(&registry);
        for line in [
            "dapr_operator_service_created_total{app_id=\"orders\"} 1",
            "daprs_operator_streams{resource=\"components\"} 1",
            "daprs_operator_leader 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
