//! Prometheus text exposition (format 0.0.4) of the self-metrics.
//!
//! Names are snake_case under `telemetry_gateway_`, with the unit in the name and `_total` on
//! counters. Every reason code and every fixed label set is always present (zero included), so
//! dashboards and alerts never see those series appear from nowhere; the per-exporter, per-queue
//! and per-case series exist from start; `telemetry_gateway_metric_cardinality_overflow` has a
//! series only for a metric that has overflowed. `tests/diagnostics_http.rs` validates the output with
//! `promtool check metrics`. The full list is in `docs/operations.md`.

use std::fmt::Write;

use super::histogram::HistSnapshot;
use super::probes::DiagnosticsSnapshot;
use super::ReasonCode;

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

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.head(name, "counter", help);
        self.sample(name, &[], value as f64);
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

/// Renders the snapshot as Prometheus text.
pub fn render(d: &DiagnosticsSnapshot) -> String {
    let s = &d.stats;
    let mut o = Out(String::with_capacity(16 * 1024));
    o.counter(
        "telemetry_gateway_events_emitted_total",
        "Events passed to emit().",
        s.emitted,
    );
    o.head(
        "telemetry_gateway_events_routed_total",
        "counter",
        "Events the gateway routed, by signal type.",
    );
    o.sample(
        "telemetry_gateway_events_routed_total",
        &[("signal", "trace")],
        s.routed.trace as f64,
    );
    o.sample(
        "telemetry_gateway_events_routed_total",
        &[("signal", "metric_log")],
        s.routed.metric_log as f64,
    );
    o.head(
        "telemetry_gateway_events_delivered_total",
        "counter",
        "Events whose output an exporter accepted, by signal type.",
    );
    o.sample(
        "telemetry_gateway_events_delivered_total",
        &[("signal", "trace")],
        s.delivered_by_signal.trace as f64,
    );
    o.sample(
        "telemetry_gateway_events_delivered_total",
        &[("signal", "metric_log")],
        s.delivered_by_signal.metric_log as f64,
    );
    o.head(
        "telemetry_gateway_events_dropped_total",
        "counter",
        "Events dropped, by reason code; intentional=true for policy drops.",
    );
    for r in ReasonCode::ALL {
        let n = s.dropped_for(r);
        let intentional = if r.intentional() { "true" } else { "false" };
        o.sample(
            "telemetry_gateway_events_dropped_total",
            &[("reason", r.as_str()), ("intentional", intentional)],
            n as f64,
        );
    }
    o.head(
        "telemetry_gateway_events_degraded_total",
        "counter",
        "Events delivered in degraded form (or processed fail-open), by reason code.",
    );
    for r in ReasonCode::ALL {
        o.sample(
            "telemetry_gateway_events_degraded_total",
            &[("reason", r.as_str())],
            s.degraded_for(r) as f64,
        );
    }
    o.head(
        "telemetry_gateway_events_by_case_total",
        "counter",
        "Events per case: received by the gateway actor, delivered, dropped (\"other\" = unknown case names).",
    );
    for (case, n) in &d.by_case {
        for (outcome, v) in [
            ("received", n.received),
            ("delivered", n.delivered),
            ("dropped", n.dropped),
        ] {
            o.sample(
                "telemetry_gateway_events_by_case_total",
                &[("case", case), ("outcome", outcome)],
                v as f64,
            );
        }
    }
    o.head(
        "telemetry_gateway_events_in_flight",
        "gauge",
        "Events emitted and not yet delivered or dropped.",
    );
    o.sample(
        "telemetry_gateway_events_in_flight",
        &[],
        s.in_flight as f64,
    );
    o.counter(
        "telemetry_gateway_payloads_offloaded_total",
        "Payloads written to the payload store.",
        s.offloaded,
    );
    o.head(
        "telemetry_gateway_rehydrations_total",
        "counter",
        "Offloaded payloads given back to their event, by source.",
    );
    o.sample(
        "telemetry_gateway_rehydrations_total",
        &[("source", "store")],
        s.rehydrated_from_store as f64,
    );
    o.sample(
        "telemetry_gateway_rehydrations_total",
        &[("source", "fallback")],
        s.rehydrated_from_fallback as f64,
    );
    o.sample(
        "telemetry_gateway_rehydrations_total",
        &[("source", "none")],
        s.degraded_for(ReasonCode::RehydrationFailed) as f64,
    );
    o.counter(
        "telemetry_gateway_dedup_store_errors_total",
        "Dedup store calls that failed or timed out (their events were processed fail-open).",
        s.dedup_store_errors,
    );
    o.counter(
        "telemetry_gateway_handler_restarts_total",
        "Metric handlers restarted by their supervisor.",
        s.handler_restarts,
    );
    o.counter(
        "telemetry_gateway_stream_redeliveries_total",
        "Worker only: stream entries read again because an earlier delivery never committed.",
        s.redelivered,
    );
    o.counter(
        "telemetry_gateway_stream_errors_total",
        "Worker only: Redis Streams calls that failed (reads, dead-letter writes, acknowledgements).",
        s.stream_errors,
    );
    o.counter(
        "telemetry_gateway_companion_logs_dropped_total",
        "Companion log records of spans that were not exported.",
        s.companion_logs_dropped,
    );

    o.head(
        "telemetry_gateway_export_batches_total",
        "counter",
        "Export calls per exporter, by outcome.",
    );
    for e in &d.exporters {
        for (outcome, n) in [("ok", e.batches_ok), ("failed", e.batches_failed)] {
            o.sample(
                "telemetry_gateway_export_batches_total",
                &[
                    ("exporter", &e.name),
                    ("signal", e.signal),
                    ("outcome", outcome),
                ],
                n as f64,
            );
        }
    }
    o.head(
        "telemetry_gateway_export_items_total",
        "counter",
        "Spans, log records or metric points per exporter, by outcome.",
    );
    for e in &d.exporters {
        for (outcome, n) in [
            ("ok", e.items_ok),
            ("failed", e.items_failed),
            ("queue_full", e.items_queue_full),
        ] {
            o.sample(
                "telemetry_gateway_export_items_total",
                &[
                    ("exporter", &e.name),
                    ("signal", e.signal),
                    ("outcome", outcome),
                ],
                n as f64,
            );
        }
    }
    o.head(
        "telemetry_gateway_export_duration_seconds",
        "histogram",
        "Duration of export calls, retries included.",
    );
    for e in &d.exporters {
        o.histogram(
            "telemetry_gateway_export_duration_seconds",
            &[("exporter", &e.name), ("signal", e.signal)],
            &e.latency,
        );
    }
    o.head(
        "telemetry_gateway_export_batch_size_items",
        "histogram",
        "Items per export call.",
    );
    for e in &d.exporters {
        o.histogram(
            "telemetry_gateway_export_batch_size_items",
            &[("exporter", &e.name), ("signal", e.signal)],
            &e.batch_size,
        );
    }
    o.head(
        "telemetry_gateway_emit_to_export_seconds",
        "histogram",
        "From an event's created_at to an exporter accepting its output.",
    );
    o.histogram(
        "telemetry_gateway_emit_to_export_seconds",
        &[("signal", "trace")],
        &d.emit_to_export.trace,
    );
    o.histogram(
        "telemetry_gateway_emit_to_export_seconds",
        &[("signal", "metric_log")],
        &d.emit_to_export.metric_log,
    );
    o.head(
        "telemetry_gateway_dedup_call_duration_seconds",
        "histogram",
        "Duration of dedup store (Redis) calls, fail-open ones included.",
    );
    o.histogram(
        "telemetry_gateway_dedup_call_duration_seconds",
        &[],
        &d.dedup_call,
    );
    o.head(
        "telemetry_gateway_queue_depth_items",
        "gauge",
        "Items waiting in each bounded queue.",
    );
    for q in &d.queues {
        o.sample(
            "telemetry_gateway_queue_depth_items",
            &[("queue", &q.name)],
            q.depth as f64,
        );
    }
    o.head(
        "telemetry_gateway_queue_capacity_items",
        "gauge",
        "The bound of each queue.",
    );
    for q in &d.queues {
        o.sample(
            "telemetry_gateway_queue_capacity_items",
            &[("queue", &q.name)],
            q.capacity as f64,
        );
    }
    o.head(
        "telemetry_gateway_flight_recorder_journeys",
        "gauge",
        "Event journeys held by the flight recorder.",
    );
    o.sample(
        "telemetry_gateway_flight_recorder_journeys",
        &[],
        d.recorder_journeys as f64,
    );
    o.counter(
        "telemetry_gateway_flight_recorder_evicted_total",
        "Journeys evicted from the flight recorder (oldest first).",
        d.recorder_evicted,
    );
    o.counter(
        "telemetry_gateway_flight_recorder_refusals_not_recorded_total",
        "Refusals at emit() counted but not recorded because they came in a flood.",
        d.recorder_refusals_not_recorded,
    );
    o.head(
        "telemetry_gateway_metric_cardinality_overflow",
        "gauge",
        "1 for each metric that exceeded diagnostics.metric_cardinality_limit attribute sets.",
    );
    for m in &s.metrics_in_overflow {
        o.sample(
            "telemetry_gateway_metric_cardinality_overflow",
            &[("metric", m)],
            1.0,
        );
    }
    o.head(
        "telemetry_gateway_ready",
        "gauge",
        "1 when /readyz would answer 200.",
    );
    o.sample(
        "telemetry_gateway_ready",
        &[],
        if d.readiness.ready { 1.0 } else { 0.0 },
    );
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
