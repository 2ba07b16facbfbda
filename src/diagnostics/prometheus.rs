//! Prometheus text exposition (format 0.0.4) of the self-metrics.
//!
//! Names are snake_case under `telemetry_gateway_`, with the unit in the name and `_total` on
//! counters. Every reason code and every fixed label set is always present (zero included), so
//! dashboards and alerts never see those series appear from nowhere; the per-exporter, per-queue
//! and per-case series exist from start; `telemetry_gateway_metric_cardinality_overflow` has a
//! series only for a metric that has overflowed. `tests/behaviour/diagnostics_http.rs` validates the output with
//! `promtool check metrics`. The families, their help and their values come from the one catalogue
//! of self-metrics (`diagnostics::catalogue`), which the OTel instruments read too. The full list
//! is in `docs/operations.md`.

use std::fmt::Write;

use super::catalogue::{MetricKind, Read, CATALOGUE};
use super::histogram::HistSnapshot;
use super::probes::DiagnosticsSnapshot;

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {}", fmt_num(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistSnapshot) {
        let bucket = format!("{name}_bucket");
        for (le, n) in &h.buckets {
            let le = fmt_num(*le);
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, *n as f64);
        }
        let mut l: Vec<(&str, &str)> = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Renders the snapshot as Prometheus text: every row of the self-metrics catalogue, in order.
pub fn render(d: &DiagnosticsSnapshot) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    for metric in CATALOGUE {
        let kind = match metric.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        o.head(metric.prometheus, kind, metric.help);
        match metric.read {
            Read::Points(read) => {
                for p in read(d) {
                    let values: Vec<_> = p.labels.iter().map(|(_, v)| v.as_str()).collect();
                    let labels: Vec<(&str, &str)> = p
                        .labels
                        .iter()
                        .zip(&values)
                        .map(|((k, _), v)| (*k, v.as_ref()))
                        .collect();
                    o.sample(metric.prometheus, &labels, p.value);
                }
            }
            Read::Histograms(read) => {
                for (labels, h) in read(d) {
                    let values: Vec<_> = labels.iter().map(|(_, v)| v.as_str()).collect();
                    let labels: Vec<(&str, &str)> = labels
                        .iter()
                        .zip(&values)
                        .map(|((k, _), v)| (*k, v.as_ref()))
                        .collect();
                    o.histogram(metric.prometheus, &labels, &h);
                }
            }
        }
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn numbers_print_like_prometheus_expects() {
        assert_eq!(fmt_num(3.0), "3");
        assert_eq!(fmt_num(0.25), "0.25");
    }
}
