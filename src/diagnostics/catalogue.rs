//! The self-metrics, defined once.
//!
//! Each [`SelfMetric`] row gives a metric's Prometheus name, its OpenTelemetry name (when it is
//! exported over OTLP too), its kind, unit and help text, and the reader that takes its values
//! from a [`DiagnosticsSnapshot`]. `/metrics` ([`super::prometheus`]) renders every row in order;
//! the OTel instruments (`diagnostics::otel`) are registered from the rows with an OTel name. So the
//! two views cannot disagree on a name, a help text or a value, and a new self-metric is one row.

use opentelemetry::Value;

use super::histogram::HistSnapshot;
use super::probes::DiagnosticsSnapshot;
use super::ReasonCode;

/// What kind of metric a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// A level.
    Gauge,
    /// A distribution. Rendered from the gateway's hdrhistograms for `/metrics`; recorded as an
    /// OTel histogram where the hdrhistogram is recorded.
    Histogram,
}

/// One labelled value of a counter or gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The labels (attributes in OTel).
    pub labels: Vec<(&'static str, Value)>,
    /// The value.
    pub value: f64,
}

/// One labelled distribution of a histogram.
pub type HistPoint = (Vec<(&'static str, Value)>, HistSnapshot);

/// How a row reads its values.
#[derive(Debug, Clone, Copy)]
pub enum Read {
    /// Counter and gauge rows.
    Points(fn(&DiagnosticsSnapshot) -> Vec<Point>),
    /// Histogram rows.
    Histograms(fn(&DiagnosticsSnapshot) -> Vec<HistPoint>),
}

/// One self-metric.
#[derive(Debug, Clone, Copy)]
pub struct SelfMetric {
    /// The Prometheus family name (`telemetry_gateway_*`, unit in the name, `_total` on
    /// counters).
    pub prometheus: &'static str,
    /// The OpenTelemetry instrument name (`telemetry_gateway.*`), when the metric is also
    /// exported through the gateway's meter provider.
    pub otel: Option<&'static str>,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The OTel unit (UCUM).
    pub unit: &'static str,
    /// The help text (Prometheus `# HELP`, OTel description).
    pub help: &'static str,
    /// Its reader.
    pub read: Read,
}

fn one(value: u64) -> Vec<Point> {
    vec![Point {
        labels: Vec::new(),
        value: value as f64,
    }]
}

fn point(labels: Vec<(&'static str, Value)>, value: u64) -> Point {
    Point {
        labels,
        value: value as f64,
    }
}

fn by_signal(trace: u64, metric_log: u64) -> Vec<Point> {
    vec![
        point(vec![("signal", "trace".into())], trace),
        point(vec![("signal", "metric_log".into())], metric_log),
    ]
}

fn exporter_labels(name: &str, signal: &'static str) -> Vec<(&'static str, Value)> {
    vec![
        ("exporter", name.to_owned().into()),
        ("signal", signal.into()),
    ]
}

/// `emit()` calls.
pub const EVENTS_EMITTED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_emitted_total",
    otel: Some("telemetry_gateway.events.emitted"),
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Events passed to emit().",
    read: Read::Points(|d| one(d.stats.emitted)),
};

/// Events routed, by signal.
pub const EVENTS_ROUTED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_routed_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Events the gateway routed, by signal type.",
    read: Read::Points(|d| by_signal(d.stats.routed.trace, d.stats.routed.metric_log)),
};

/// Events delivered, by signal.
pub const EVENTS_DELIVERED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_delivered_total",
    otel: Some("telemetry_gateway.events.delivered"),
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Events whose output an exporter accepted, by signal type.",
    read: Read::Points(|d| {
        let s = &d.stats.delivered_by_signal;
        by_signal(s.trace, s.metric_log)
    }),
};

/// Events dropped, by reason.
pub const EVENTS_DROPPED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_dropped_total",
    otel: Some("telemetry_gateway.events.dropped"),
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Events dropped, by reason code; intentional=true for policy drops.",
    read: Read::Points(|d| {
        ReasonCode::ALL
            .iter()
            .map(|r| {
                let labels = vec![
                    ("reason", r.as_str().into()),
                    ("intentional", r.intentional().into()),
                ];
                point(labels, d.stats.dropped_for(*r))
            })
            .collect()
    }),
};

/// Events degraded, by reason.
pub const EVENTS_DEGRADED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_degraded_total",
    otel: Some("telemetry_gateway.events.degraded"),
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Events delivered in degraded form (or processed fail-open), by reason code.",
    read: Read::Points(|d| {
        ReasonCode::ALL
            .iter()
            .map(|r| {
                point(
                    vec![("reason", r.as_str().into())],
                    d.stats.degraded_for(*r),
                )
            })
            .collect()
    }),
};

/// Events per case and outcome.
pub const EVENTS_BY_CASE: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_by_case_total",
    otel: Some("telemetry_gateway.events.by_case"),
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Events per case: received by the gateway actor, delivered, dropped (\"other\" = unknown case names).",
    read: Read::Points(|d| {
        let mut points = Vec::with_capacity(3 * d.by_case.len());
        for (case, n) in &d.by_case {
            for (outcome, v) in [
                ("received", n.received),
                ("delivered", n.delivered),
                ("dropped", n.dropped),
            ] {
                let labels = vec![("case", case.clone().into()), ("outcome", outcome.into())];
                points.push(point(labels, v));
            }
        }
        points
    }),
};

/// Events in flight.
pub const EVENTS_IN_FLIGHT: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_in_flight",
    otel: Some("telemetry_gateway.events.in_flight"),
    kind: MetricKind::Gauge,
    unit: "{event}",
    help: "Events emitted and not yet delivered or dropped.",
    read: Read::Points(|d| one(d.stats.in_flight)),
};

/// Payloads offloaded.
pub const PAYLOADS_OFFLOADED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_payloads_offloaded_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{payload}",
    help: "Payloads written to the payload store.",
    read: Read::Points(|d| one(d.stats.offloaded)),
};

/// Rehydrations, by source.
pub const REHYDRATIONS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_rehydrations_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{payload}",
    help: "Offloaded payloads given back to their event, by source.",
    read: Read::Points(|d| {
        let s = &d.stats;
        vec![
            point(vec![("source", "store".into())], s.rehydrated_from_store),
            point(
                vec![("source", "fallback".into())],
                s.rehydrated_from_fallback,
            ),
            point(
                vec![("source", "none".into())],
                s.degraded_for(ReasonCode::RehydrationFailed),
            ),
        ]
    }),
};

/// Dedup store calls that failed.
pub const DEDUP_STORE_ERRORS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_dedup_store_errors_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{call}",
    help: "Dedup store calls that failed or timed out (their events were processed fail-open).",
    read: Read::Points(|d| one(d.stats.dedup_store_errors)),
};

/// Handler restarts.
pub const HANDLER_RESTARTS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_handler_restarts_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{restart}",
    help: "Metric handlers restarted by their supervisor.",
    read: Read::Points(|d| one(d.stats.handler_restarts)),
};

/// Stream redeliveries (workers).
pub const STREAM_REDELIVERIES: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_stream_redeliveries_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{entry}",
    help: "Worker only: stream entries read again because an earlier delivery never committed.",
    read: Read::Points(|d| one(d.stats.redelivered)),
};

/// Stream call failures (workers).
pub const STREAM_ERRORS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_stream_errors_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{call}",
    help: "Worker only: Redis Streams calls that failed (reads, dead-letter writes, acknowledgements).",
    read: Read::Points(|d| one(d.stats.stream_errors)),
};

/// Companion log records lost.
pub const COMPANION_LOGS_DROPPED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_companion_logs_dropped_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{record}",
    help: "Companion log records of spans that were not exported.",
    read: Read::Points(|d| one(d.stats.companion_logs_dropped)),
};

/// Export calls per exporter and outcome.
pub const EXPORT_BATCHES: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_export_batches_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{call}",
    help: "Export calls per exporter, by outcome.",
    read: Read::Points(|d| {
        let mut points = Vec::new();
        for e in &d.exporters {
            for (outcome, n) in [("ok", e.batches_ok), ("failed", e.batches_failed)] {
                let mut labels = exporter_labels(&e.name, e.signal);
                labels.push(("outcome", outcome.into()));
                points.push(point(labels, n));
            }
        }
        points
    }),
};

/// Export items per exporter and outcome.
pub const EXPORT_ITEMS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_export_items_total",
    otel: Some("telemetry_gateway.export.items"),
    kind: MetricKind::Counter,
    unit: "{item}",
    help: "Spans, log records or metric points per exporter, by outcome.",
    read: Read::Points(|d| {
        let mut points = Vec::new();
        for e in &d.exporters {
            for (outcome, n) in [
                ("ok", e.items_ok),
                ("failed", e.items_failed),
                ("queue_full", e.items_queue_full),
            ] {
                let mut labels = exporter_labels(&e.name, e.signal);
                labels.push(("outcome", outcome.into()));
                points.push(point(labels, n));
            }
        }
        points
    }),
};

/// Export call durations.
pub const EXPORT_DURATION: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_export_duration_seconds",
    otel: Some("telemetry_gateway.export.duration"),
    kind: MetricKind::Histogram,
    unit: "s",
    help: "Duration of export calls, retries included.",
    read: Read::Histograms(|d| {
        d.exporters
            .iter()
            .map(|e| (exporter_labels(&e.name, e.signal), e.latency.clone()))
            .collect()
    }),
};

/// Items per export call.
pub const EXPORT_BATCH_SIZE: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_export_batch_size_items",
    otel: Some("telemetry_gateway.export.batch_size"),
    kind: MetricKind::Histogram,
    unit: "{item}",
    help: "Items per export call.",
    read: Read::Histograms(|d| {
        d.exporters
            .iter()
            .map(|e| (exporter_labels(&e.name, e.signal), e.batch_size.clone()))
            .collect()
    }),
};

/// Emit-to-export latency.
pub const EMIT_TO_EXPORT: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_emit_to_export_seconds",
    otel: Some("telemetry_gateway.emit_to_export.duration"),
    kind: MetricKind::Histogram,
    unit: "s",
    help: "From an event's created_at to an exporter accepting its output.",
    read: Read::Histograms(|d| {
        vec![
            (
                vec![("signal", "trace".into())],
                d.emit_to_export.trace.clone(),
            ),
            (
                vec![("signal", "metric_log".into())],
                d.emit_to_export.metric_log.clone(),
            ),
        ]
    }),
};

/// Dedup store call durations.
pub const DEDUP_CALL_DURATION: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_dedup_call_duration_seconds",
    otel: None,
    kind: MetricKind::Histogram,
    unit: "s",
    help: "Duration of dedup store (Redis) calls, fail-open ones included.",
    read: Read::Histograms(|d| vec![(Vec::new(), d.dedup_call.clone())]),
};

/// Queue depths.
pub const QUEUE_DEPTH: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_queue_depth_items",
    otel: Some("telemetry_gateway.queue.depth"),
    kind: MetricKind::Gauge,
    unit: "{item}",
    help: "Items waiting in each bounded queue.",
    read: Read::Points(|d| {
        d.queues
            .iter()
            .map(|q| point(vec![("queue", q.name.clone().into())], q.depth as u64))
            .collect()
    }),
};

/// Queue bounds.
pub const QUEUE_CAPACITY: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_queue_capacity_items",
    otel: Some("telemetry_gateway.queue.capacity"),
    kind: MetricKind::Gauge,
    unit: "{item}",
    help: "The bound of each queue.",
    read: Read::Points(|d| {
        d.queues
            .iter()
            .map(|q| point(vec![("queue", q.name.clone().into())], q.capacity as u64))
            .collect()
    }),
};

/// Journeys held by the flight recorder.
pub const RECORDER_JOURNEYS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_flight_recorder_journeys",
    otel: None,
    kind: MetricKind::Gauge,
    unit: "{journey}",
    help: "Event journeys held by the flight recorder.",
    read: Read::Points(|d| one(d.recorder_journeys as u64)),
};

/// Journeys evicted.
pub const RECORDER_EVICTED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_flight_recorder_evicted_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{journey}",
    help: "Journeys evicted from the flight recorder (oldest first).",
    read: Read::Points(|d| one(d.recorder_evicted)),
};

/// Refusals not recorded (flood).
pub const RECORDER_REFUSALS_NOT_RECORDED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_flight_recorder_refusals_not_recorded_total",
    otel: None,
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Refusals at emit() counted but not recorded because they came in a flood.",
    read: Read::Points(|d| one(d.recorder_refusals_not_recorded)),
};

/// Metrics in cardinality overflow.
pub const METRIC_CARDINALITY_OVERFLOW: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_metric_cardinality_overflow",
    otel: None,
    kind: MetricKind::Gauge,
    unit: "1",
    help: "1 for each metric that exceeded diagnostics.metric_cardinality_limit attribute sets.",
    read: Read::Points(|d| {
        d.stats
            .metrics_in_overflow
            .iter()
            .map(|m| point(vec![("metric", m.clone().into())], 1))
            .collect()
    }),
};

/// Readiness.
pub const READY: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_ready",
    otel: Some("telemetry_gateway.ready"),
    kind: MetricKind::Gauge,
    unit: "1",
    help: "1 when /readyz would answer 200.",
    read: Read::Points(|d| one(u64::from(d.readiness.ready))),
};

/// Events found in a disk spool at start.
pub const EVENTS_RECOVERED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_recovered_total",
    otel: Some("telemetry_gateway.events.recovered"),
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Events of the export requests found in the disk spools at start (sent, or dropped, like emitted ones).",
    read: Read::Points(|d| one(d.stats.recovered)),
};

/// Events left in a disk spool at shutdown.
pub const EVENTS_SPOOLED: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_events_spooled_total",
    otel: Some("telemetry_gateway.events.spooled"),
    kind: MetricKind::Counter,
    unit: "{event}",
    help: "Events whose export requests were left in the disk spools at shutdown (the next process sends them).",
    read: Read::Points(|d| one(d.stats.spooled)),
};

/// One reading per spool, labelled `spool`.
fn per_spool(d: &DiagnosticsSnapshot, value: fn(&super::SpoolSnapshot) -> f64) -> Vec<Point> {
    d.spools
        .iter()
        .map(|sp| Point {
            labels: vec![("spool", sp.name.clone().into())],
            value: value(sp),
        })
        .collect()
}

/// Bytes on disk per spool.
pub const SPOOL_BYTES: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_bytes",
    otel: Some("telemetry_gateway.spool.size"),
    kind: MetricKind::Gauge,
    unit: "By",
    help: "Bytes on disk of each disk spool, segments and metadata.",
    read: Read::Points(|d| per_spool(d, |s| s.bytes as f64)),
};

/// Each spool's budget.
pub const SPOOL_BUDGET_BYTES: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_budget_bytes",
    otel: Some("telemetry_gateway.spool.budget"),
    kind: MetricKind::Gauge,
    unit: "By",
    help: "The budget of each disk spool (its share of spool.max_bytes).",
    read: Read::Points(|d| per_spool(d, |s| s.max_bytes as f64)),
};

/// Events waiting in each spool.
pub const SPOOL_EVENTS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_events",
    otel: Some("telemetry_gateway.spool.events"),
    kind: MetricKind::Gauge,
    unit: "{event}",
    help: "Events in records of each disk spool not yet acknowledged by the backend.",
    read: Read::Points(|d| per_spool(d, |s| s.events as f64)),
};

/// Age of the oldest record per spool.
pub const SPOOL_OLDEST_AGE: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_oldest_age_seconds",
    otel: Some("telemetry_gateway.spool.oldest_age"),
    kind: MetricKind::Gauge,
    unit: "s",
    help: "Age of the oldest record of each disk spool not yet acknowledged (0 when empty).",
    read: Read::Points(|d| per_spool(d, |s| s.oldest_age_secs)),
};

/// Appends per spool.
pub const SPOOL_APPENDS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_appends_total",
    otel: Some("telemetry_gateway.spool.appends"),
    kind: MetricKind::Counter,
    unit: "{record}",
    help: "Records (export requests) appended to each disk spool.",
    read: Read::Points(|d| per_spool(d, |s| s.appends as f64)),
};

/// Acknowledgements per spool.
pub const SPOOL_ACKS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_acks_total",
    otel: Some("telemetry_gateway.spool.acks"),
    kind: MetricKind::Counter,
    unit: "{record}",
    help: "Records of each disk spool the backend accepted or rejected (acknowledged).",
    read: Read::Points(|d| per_spool(d, |s| s.acks as f64)),
};

/// Corrupt records per spool.
pub const SPOOL_CORRUPT: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_corrupt_records_total",
    otel: Some("telemetry_gateway.spool.corrupt_records"),
    kind: MetricKind::Counter,
    unit: "{record}",
    help: "Records of each disk spool lost to damage (torn or failing their checksum), at start and since.",
    read: Read::Points(|d| per_spool(d, |s| s.corrupt_records as f64)),
};

/// Time spent syncing per spool.
pub const SPOOL_SYNC_SECONDS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_sync_seconds_total",
    otel: Some("telemetry_gateway.spool.sync_duration"),
    kind: MetricKind::Counter,
    unit: "s",
    help: "Seconds each disk spool spent syncing to stable storage (with _syncs_total: the mean sync).",
    read: Read::Points(|d| per_spool(d, |s| s.sync_secs)),
};

/// Syncs per spool.
pub const SPOOL_SYNCS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_syncs_total",
    otel: Some("telemetry_gateway.spool.syncs"),
    kind: MetricKind::Counter,
    unit: "{sync}",
    help: "Syncs of each disk spool to stable storage.",
    read: Read::Points(|d| per_spool(d, |s| s.syncs as f64)),
};

/// I/O errors per spool.
pub const SPOOL_IO_ERRORS: SelfMetric = SelfMetric {
    prometheus: "telemetry_gateway_spool_io_errors_total",
    otel: Some("telemetry_gateway.spool.io_errors"),
    kind: MetricKind::Counter,
    unit: "{error}",
    help: "I/O errors of each disk spool (a failed append sends its batch from memory).",
    read: Read::Points(|d| per_spool(d, |s| s.io_errors as f64)),
};

/// Every self-metric, in `/metrics` order.
pub const CATALOGUE: [&SelfMetric; 39] = [
    &EVENTS_EMITTED,
    &EVENTS_ROUTED,
    &EVENTS_DELIVERED,
    &EVENTS_DROPPED,
    &EVENTS_DEGRADED,
    &EVENTS_BY_CASE,
    &EVENTS_IN_FLIGHT,
    &EVENTS_RECOVERED,
    &EVENTS_SPOOLED,
    &PAYLOADS_OFFLOADED,
    &REHYDRATIONS,
    &DEDUP_STORE_ERRORS,
    &HANDLER_RESTARTS,
    &STREAM_REDELIVERIES,
    &STREAM_ERRORS,
    &COMPANION_LOGS_DROPPED,
    &EXPORT_BATCHES,
    &EXPORT_ITEMS,
    &EXPORT_DURATION,
    &EXPORT_BATCH_SIZE,
    &EMIT_TO_EXPORT,
    &DEDUP_CALL_DURATION,
    &QUEUE_DEPTH,
    &QUEUE_CAPACITY,
    &SPOOL_BYTES,
    &SPOOL_BUDGET_BYTES,
    &SPOOL_EVENTS,
    &SPOOL_OLDEST_AGE,
    &SPOOL_APPENDS,
    &SPOOL_ACKS,
    &SPOOL_CORRUPT,
    &SPOOL_SYNC_SECONDS,
    &SPOOL_SYNCS,
    &SPOOL_IO_ERRORS,
    &RECORDER_JOURNEYS,
    &RECORDER_EVICTED,
    &RECORDER_REFUSALS_NOT_RECORDED,
    &METRIC_CARDINALITY_OVERFLOW,
    &READY,
];

/// Every OTel self-metric name (observable instruments and histograms).
pub fn otel_names() -> Vec<&'static str> {
    CATALOGUE.iter().filter_map(|m| m.otel).collect()
}

/// Every Prometheus family name.
pub fn prometheus_names() -> Vec<&'static str> {
    CATALOGUE.iter().map(|m| m.prometheus).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_each_convention() {
        let prom = prometheus_names();
        let otel = otel_names();
        let unique = |v: &[&str]| v.iter().collect::<std::collections::BTreeSet<_>>().len();
        assert_eq!(unique(&prom), prom.len());
        assert_eq!(unique(&otel), otel.len());
        for m in CATALOGUE {
            assert!(m.prometheus.starts_with("telemetry_gateway_"));
            assert_eq!(
                m.prometheus.ends_with("_total"),
                m.kind == MetricKind::Counter,
                "{}",
                m.prometheus
            );
            if let Some(o) = m.otel {
                assert!(o.starts_with("telemetry_gateway."), "{o}");
            }
            assert!(matches!(
                (m.kind, m.read),
                (MetricKind::Histogram, Read::Histograms(_))
                    | (MetricKind::Counter | MetricKind::Gauge, Read::Points(_))
            ));
        }
    }
}
