//! Prometheus metrics under Dapr's exact names (`dapr_http_server_request_count`, not
//! `..._total`: Dapr's OpenCensus exporter adds no suffix, so a small exposition of our own
//! keeps existing dashboards working).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Dapr's default latency buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [f64; 34] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 13.0, 16.0, 20.0, 25.0, 30.0, 40.0, 50.0, 65.0, 80.0,
    100.0, 130.0, 160.0, 200.0, 250.0, 300.0, 400.0, 500.0, 650.0, 800.0, 1000.0, 2000.0, 5000.0,
    10000.0, 20000.0, 50000.0, 100000.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    gauges: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
}

/// Every metric of the sidecar.
#[derive(Debug)]
pub struct Metrics {
    app_id: String,
    inner: Mutex<Inner>,
}

fn help(name: &str) -> &'static str {
    match name {
        "dapr_http_server_request_count" => "Number of HTTP requests started in server.",
        "dapr_http_server_response_count" => "The number of HTTP responses",
        "dapr_http_server_latency" => "HTTP request end-to-end latency in server.",
        "dapr_grpc_io_server_completed_rpcs" => "Count of RPCs by method and status.",
        "dapr_grpc_io_server_server_latency" => "Distribution of server latency in milliseconds",
        "dapr_component_state_count" => "The number of operations performed on the state component",
        "dapr_component_state_latencies" => {
            "The latency of the operations performed on the state component"
        }
        "dapr_component_secret_count" => {
            "The number of operations performed on the secret component"
        }
        "dapr_component_secret_latencies" => {
            "The latency of the operations performed on the secret component"
        }
        "dapr_runtime_component_loaded" => "The number of successfully loaded components.",
        "dapr_runtime_component_init_total" => "The number of initialized components.",
        "dapr_runtime_component_init_fail_total" => {
            "The number of component initialization failures."
        }
        "daprs_runtime_component_reload_total" => "Hot reloads of components, by result.",
        _ => "",
    }
}

impl Metrics {
    pub fn new(app_id: &str) -> Self {
        Metrics {
            app_id: app_id.to_owned(),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn labels(&self, extra: &[(&'static str, &str)]) -> Labels {
        std::iter::once(("app_id", self.app_id.clone()))
            .chain(extra.iter().map(|(k, v)| (*k, (*v).to_owned())))
            .collect()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner)
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let labels = self.labels(labels);
        self.with(|i| {
            *i.counters
                .entry(name)
                .or_default()
                .entry(labels)
                .or_default() += 1.0
        });
    }

    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        let labels = self.labels(labels);
        self.with(|i| {
            i.gauges.entry(name).or_default().insert(labels, value);
        });
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], elapsed: Duration) {
        let labels = self.labels(labels);
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.with(|i| {
            let h = i
                .histograms
                .entry(name)
                .or_default()
                .entry(labels)
                .or_insert_with(|| Histogram {
                    buckets: vec![0; LATENCY_BUCKETS_MS.len()],
                    ..Histogram::default()
                });
            for (slot, bound) in h.buckets.iter_mut().zip(LATENCY_BUCKETS_MS) {
                if ms <= bound {
                    *slot += 1;
                }
            }
            h.sum += ms;
            h.count += 1;
        });
    }

    /// A state or secret component call: `dapr_component_<block>_count` and `_latencies`.
    pub fn component(
        &self,
        block: Block,
        component: &str,
        operation: &str,
        success: bool,
        elapsed: Duration,
    ) {
        let success = if success { "true" } else { "false" };
        let labels = [
            ("component", component),
            ("operation", operation),
            ("success", success),
        ];
        let (count, latency) = match block {
            Block::State => (
                "dapr_component_state_count",
                "dapr_component_state_latencies",
            ),
            Block::Secret => (
                "dapr_component_secret_count",
                "dapr_component_secret_latencies",
            ),
        };
        self.inc(count, &labels);
        self.observe(latency, &labels, elapsed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let label_text = |labels: &Labels, extra: Option<(&str, String)>| {
            let parts: Vec<String> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .chain(extra.map(|(k, v)| (k.to_owned(), v)))
                .map(|(k, v)| format!("{k}=\"{}\"", escape(&v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        };
        self.with(|i| {
            for (kind, series) in [("counter", &i.counters), ("gauge", &i.gauges)] {
                for (name, values) in series {
                    let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", help(name));
                    for (labels, value) in values {
                        let _ = writeln!(out, "{name}{} {value}", label_text(labels, None));
                    }
                }
            }
            for (name, values) in &i.histograms {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", help(name));
                for (labels, h) in values {
                    for (count, bound) in h.buckets.iter().zip(LATENCY_BUCKETS_MS) {
                        let l = label_text(labels, Some(("le", bound.to_string())));
                        let _ = writeln!(out, "{name}_bucket{l} {count}");
                    }
                    let l = label_text(labels, Some(("le", "+Inf".into())));
                    let _ = writeln!(out, "{name}_bucket{l} {}", h.count);
                    let _ = writeln!(out, "{name}_sum{} {}", label_text(labels, None), h.sum);
                    let _ = writeln!(out, "{name}_count{} {}", label_text(labels, None), h.count);
                }
            }
        });
        out
    }
}

/// The building block of a component metric.
#[derive(Debug, Clone, Copy)]
pub enum Block {
    State,
    Secret,
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_dapr_names_without_suffixes() {
        let m = Metrics::new("app");
        m.inc(
            "dapr_http_server_request_count",
            &[("method", "GET"), ("path", "/v1.0/state")],
        );
        m.inc(
            "dapr_http_server_request_count",
            &[("method", "GET"), ("path", "/v1.0/state")],
        );
        m.component(Block::State, "store", "get", true, Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains(
                r#"dapr_http_server_request_count{app_id="app",method="GET",path="/v1.0/state"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE dapr_http_server_request_count counter"));
        assert!(text.contains(r#"dapr_component_state_latencies_bucket{app_id="app",component="store",operation="get",success="true",le="3"} 1"#), "{text}");
        assert!(text.contains(r#"dapr_component_state_latencies_bucket{app_id="app",component="store",operation="get",success="true",le="2"} 0"#));
        assert!(!text.contains("_total{"));
    }
}
