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

/// A series' labels as the exposition prints them, `{app_id="a",method="GET"}`: the key of
/// its value. Updating a series builds its key in a buffer kept for the purpose and looks it
/// up by `&str`, so only a series seen for the first time allocates (there are ~10 updates
/// per request).
type SeriesKey = Box<str>;

#[derive(Debug, Clone)]
struct Histogram {
    /// Observations at or under each bound of [`LATENCY_BUCKETS_MS`].
    buckets: [u64; LATENCY_BUCKETS_MS.len()],
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: [0; LATENCY_BUCKETS_MS.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<&'static str, BTreeMap<SeriesKey, f64>>,
    gauges: BTreeMap<&'static str, BTreeMap<SeriesKey, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<SeriesKey, Histogram>>,
    /// Where the key of the series being updated is built.
    key: String,
}

/// Every metric of the sidecar.
#[derive(Debug)]
pub struct Metrics {
    /// The start of every series key: `{app_id="<app id>"`.
    key_prefix: String,
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
        let mut key_prefix = String::from("{app_id=\"");
        escape_into(&mut key_prefix, app_id);
        key_prefix.push('"');
        Metrics {
            key_prefix,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Runs `f` on the series map and the key of `labels` (built in `Inner::key`).
    fn with<T>(&self, labels: &[(&'static str, &str)], f: impl FnOnce(&mut Inner, &str) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = std::mem::take(&mut inner.key);
        key.clear();
        key.push_str(&self.key_prefix);
        for (name, value) in labels {
            key.push(',');
            key.push_str(name);
            key.push_str("=\"");
            escape_into(&mut key, value);
            key.push('"');
        }
        key.push('}');
        let result = f(&mut inner, &key);
        inner.key = key;
        result
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        self.with(labels, |i, key| {
            *series(i.counters.entry(name).or_default(), key) += 1.0;
        });
    }

    pub fn set_gauge(&self, name: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.with(labels, |i, key| {
            *series(i.gauges.entry(name).or_default(), key) = value;
        });
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], elapsed: Duration) {
        let ms = elapsed.as_secs_f64() * 1000.0;
        self.with(labels, |i, key| {
            let h = series(i.histograms.entry(name).or_default(), key);
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
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (kind, series) in [("counter", &inner.counters), ("gauge", &inner.gauges)] {
            for (name, values) in series {
                let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", help(name));
                for (key, value) in values {
                    let _ = writeln!(out, "{name}{key} {value}");
                }
            }
        }
        for (name, values) in &inner.histograms {
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} histogram", help(name));
            for (key, h) in values {
                // The key's labels and then `le`, inside the same braces.
                let open = &key[..key.len() - 1];
                for (count, bound) in h.buckets.iter().zip(LATENCY_BUCKETS_MS) {
                    let _ = writeln!(out, "{name}_bucket{open},le=\"{bound}\"}} {count}");
                }
                let _ = writeln!(out, "{name}_bucket{open},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{key} {}", h.sum);
                let _ = writeln!(out, "{name}_count{key} {}", h.count);
            }
        }
        out
    }
}

/// The value of the series `key` in `values`, created (zero) if new; only then is the key
/// copied.
fn series<'a, V: Default>(values: &'a mut BTreeMap<SeriesKey, V>, key: &str) -> &'a mut V {
    if !values.contains_key(key) {
        values.insert(key.into(), V::default());
    }
    values.get_mut(key).expect("inserted above if missing")
}

/// The building block of a component metric.
#[derive(Debug, Clone, Copy)]
pub enum Block {
    State,
    Secret,
}

/// Appends a label value escaped as the text exposition wants it.
fn escape_into(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
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

    #[test]
    fn series_are_told_apart_by_every_label_and_values_are_escaped() {
        let m = Metrics::new("a\"pp");
        m.inc("dapr_http_server_request_count", &[("method", "GET")]);
        m.inc("dapr_http_server_request_count", &[("method", "POST")]);
        m.inc("dapr_http_server_request_count", &[("method", "GET")]);
        m.inc(
            "dapr_http_server_request_count",
            &[("method", "GET"), ("path", "x\\y\n\"z\"")],
        );
        m.set_gauge("dapr_runtime_component_loaded", &[], 3.0);
        m.set_gauge("dapr_runtime_component_loaded", &[], 2.0);
        m.observe(
            "dapr_http_server_latency",
            &[("status", "200")],
            Duration::from_micros(1500),
        );
        let text = m.render();
        for line in [
            r#"dapr_http_server_request_count{app_id="a\"pp",method="GET"} 2"#,
            r#"dapr_http_server_request_count{app_id="a\"pp",method="POST"} 1"#,
            r#"dapr_http_server_request_count{app_id="a\"pp",method="GET",path="x\\y\n\"z\""} 1"#,
            r#"dapr_runtime_component_loaded{app_id="a\"pp"} 2"#,
            r#"dapr_http_server_latency_bucket{app_id="a\"pp",status="200",le="1"} 0"#,
            r#"dapr_http_server_latency_bucket{app_id="a\"pp",status="200",le="2"} 1"#,
            r#"dapr_http_server_latency_bucket{app_id="a\"pp",status="200",le="+Inf"} 1"#,
            r#"dapr_http_server_latency_sum{app_id="a\"pp",status="200"} 1.5"#,
            r#"dapr_http_server_latency_count{app_id="a\"pp",status="200"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
