//! The self-metrics as OpenTelemetry instruments, so they reach the same backend as the host's
//! metrics (through the gateway's meter provider and exporter).
//!
//! Observable instruments read the same probes as `/metrics` at each collection, so the two
//! views agree. Names use OTel conventions (dots, units in `unit`), under `telemetry_gateway.`;
//! `docs/operations.md` maps them to the Prometheus names.

use std::sync::Arc;

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;

use super::probes::Probes;
use super::ReasonCode;

/// The OTel histograms of the self-metrics, recorded where the hdrhistograms are.
#[derive(Debug, Clone)]
pub struct SelfHistograms {
    export_duration: opentelemetry::metrics::Histogram<f64>,
    export_batch_size: opentelemetry::metrics::Histogram<u64>,
    emit_to_export: opentelemetry::metrics::Histogram<f64>,
}

impl SelfHistograms {
    pub(crate) fn export_call(
        &self,
        exporter: &str,
        signal: &'static str,
        items: u64,
        d: std::time::Duration,
    ) {
        let attrs = [
            KeyValue::new("exporter", exporter.to_owned()),
            KeyValue::new("signal", signal),
        ];
        self.export_duration.record(d.as_secs_f64(), &attrs);
        self.export_batch_size.record(items, &attrs);
    }

    pub(crate) fn emit_to_export(
        &self,
        signal: crate::contracts::SignalType,
        d: std::time::Duration,
    ) {
        self.emit_to_export
            .record(d.as_secs_f64(), &[KeyValue::new("signal", signal.as_str())]);
    }
}

/// The self-metric histogram names.
pub const HISTOGRAM_NAMES: [&str; 3] = [
    "telemetry_gateway.export.duration",
    "telemetry_gateway.export.batch_size",
    "telemetry_gateway.emit_to_export.duration",
];

/// Every self-metric instrument name, for the docs test.
pub const INSTRUMENT_NAMES: [&str; 10] = [
    "telemetry_gateway.events.emitted",
    "telemetry_gateway.events.delivered",
    "telemetry_gateway.events.dropped",
    "telemetry_gateway.events.degraded",
    "telemetry_gateway.events.in_flight",
    "telemetry_gateway.queue.depth",
    "telemetry_gateway.queue.capacity",
    "telemetry_gateway.export.items",
    "telemetry_gateway.ready",
    "telemetry_gateway.events.by_case",
];

/// Registers the observable instruments on `provider`'s `telemetry-gateway.self` meter.
pub(crate) fn register(provider: &SdkMeterProvider, probes: Arc<Probes>) {
    let meter = provider.meter("telemetry-gateway.self");
    let hist = SelfHistograms {
        export_duration: meter
            .f64_histogram(HISTOGRAM_NAMES[0])
            .with_description("Duration of export calls, retries included")
            .with_unit("s")
            .build(),
        export_batch_size: meter
            .u64_histogram(HISTOGRAM_NAMES[1])
            .with_description("Items per export call")
            .with_unit("{item}")
            .build(),
        emit_to_export: meter
            .f64_histogram(HISTOGRAM_NAMES[2])
            .with_description("From an event's created_at to an exporter accepting its output")
            .with_unit("s")
            .build(),
    };
    // One instance, shared by every exporter's stats and the emit-to-export recording.
    let _ = probes.counters.exporters.otel.set(hist);
    let p = probes.clone();
    let _ = meter
        .u64_observable_counter(INSTRUMENT_NAMES[0])
        .with_description("Events passed to emit()")
        .with_unit("{event}")
        .with_callback(move |o| o.observe(p.counters.snapshot().emitted, &[]))
        .build();
    let p = probes.clone();
    let _ = meter
        .u64_observable_counter(INSTRUMENT_NAMES[1])
        .with_description("Events whose output an exporter accepted, by signal")
        .with_unit("{event}")
        .with_callback(move |o| {
            let s = p.counters.snapshot();
            o.observe(
                s.delivered_by_signal.trace,
                &[KeyValue::new("signal", "trace")],
            );
            o.observe(
                s.delivered_by_signal.metric_log,
                &[KeyValue::new("signal", "metric_log")],
            );
        })
        .build();
    let p = probes.clone();
    let _ = meter
        .u64_observable_counter(INSTRUMENT_NAMES[9])
        .with_description(
            "Events per case: received by the gateway actor, delivered, dropped (any reason)",
        )
        .with_unit("{event}")
        .with_callback(move |o| {
            for (case, n) in p.counters.by_case() {
                for (outcome, v) in [
                    ("received", n.received),
                    ("delivered", n.delivered),
                    ("dropped", n.dropped),
                ] {
                    o.observe(
                        v,
                        &[
                            KeyValue::new("case", case.clone()),
                            KeyValue::new("outcome", outcome),
                        ],
                    );
                }
            }
        })
        .build();
    let p = probes.clone();
    let _ = meter
        .u64_observable_counter(INSTRUMENT_NAMES[2])
        .with_description("Events dropped, by reason code")
        .with_unit("{event}")
        .with_callback(move |o| {
            for r in ReasonCode::ALL {
                o.observe(
                    p.counters.dropped_count(r),
                    &[
                        KeyValue::new("reason", r.as_str()),
                        KeyValue::new("intentional", r.intentional()),
                    ],
                );
            }
        })
        .build();
    let p = probes.clone();
    let _ = meter
        .u64_observable_counter(INSTRUMENT_NAMES[3])
        .with_description("Events degraded, by reason code")
        .with_unit("{event}")
        .with_callback(move |o| {
            for r in ReasonCode::ALL {
                o.observe(
                    p.counters.degraded_count(r),
                    &[KeyValue::new("reason", r.as_str())],
                );
            }
        })
        .build();
    let p = probes.clone();
    let _ = meter
        .u64_observable_gauge(INSTRUMENT_NAMES[4])
        .with_description("Events emitted and not yet delivered or dropped")
        .with_unit("{event}")
        .with_callback(move |o| o.observe(p.counters.snapshot().in_flight, &[]))
        .build();
    let p = probes.clone();
    let _ = meter
        .u64_observable_gauge(INSTRUMENT_NAMES[5])
        .with_description("Items waiting in each bounded queue")
        .with_unit("{item}")
        .with_callback(move |o| {
            for q in p.queues() {
                o.observe(q.depth as u64, &[KeyValue::new("queue", q.name)]);
            }
        })
        .build();
    let p = probes.clone();
    let _ = meter
        .u64_observable_gauge(INSTRUMENT_NAMES[6])
        .with_description("The bound of each queue")
        .with_unit("{item}")
        .with_callback(move |o| {
            for q in p.queues() {
                o.observe(q.capacity as u64, &[KeyValue::new("queue", q.name)]);
            }
        })
        .build();
    let p = probes.clone();
    let _ = meter
        .u64_observable_counter(INSTRUMENT_NAMES[7])
        .with_description("Items per exporter, by outcome")
        .with_unit("{item}")
        .with_callback(move |o| {
            for e in p.counters.exporters.snapshot() {
                for (outcome, n) in [
                    ("ok", e.items_ok),
                    ("failed", e.items_failed),
                    ("queue_full", e.items_queue_full),
                ] {
                    o.observe(
                        n,
                        &[
                            KeyValue::new("exporter", e.name.clone()),
                            KeyValue::new("signal", e.signal),
                            KeyValue::new("outcome", outcome),
                        ],
                    );
                }
            }
        })
        .build();
    let p = probes;
    let _ = meter
        .u64_observable_gauge(INSTRUMENT_NAMES[8])
        .with_description("1 when the gateway is ready")
        .with_unit("1")
        .with_callback(move |o| o.observe(u64::from(p.readiness().ready), &[]))
        .build();
}
