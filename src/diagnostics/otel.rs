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

use super::catalogue::{self, MetricKind, Read, SelfMetric};
use super::probes::Probes;

/// The OTel histograms of the self-metrics, recorded where the hdrhistograms are.
#[derive(Debug, Clone)]
pub(crate) struct SelfHistograms {
    export_duration: opentelemetry::metrics::Histogram<f64>,
    export_batch_size: opentelemetry::metrics::Histogram<u64>,
    /// Bound to `signal = "trace"` and `signal = "metric_log"`: recorded once per delivered
    /// event, so the SDK's attribute lookup is done once here instead of at every record.
    emit_to_export: [opentelemetry::metrics::BoundHistogram<f64>; 2],
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
        let i = match signal {
            crate::contracts::SignalType::Trace => 0,
            crate::contracts::SignalType::MetricLog => 1,
        };
        self.emit_to_export[i].record(d.as_secs_f64());
    }
}

/// Registers the self-metrics on `provider`'s `telemetry-gateway.self` meter: the histograms of
/// the catalogue's histogram rows (recorded where the hdrhistograms are), and one observable
/// instrument per counter and gauge row with an OTel name, reading the same snapshot as
/// `/metrics` at each collection.
pub(crate) fn register(provider: &SdkMeterProvider, probes: Arc<Probes>) {
    let meter = provider.meter("telemetry-gateway.self");
    let described = |m: &SelfMetric| (m.otel.unwrap_or(m.prometheus), m.help, m.unit);
    let f64_histogram = |m: &SelfMetric| {
        let (name, help, unit) = described(m);
        meter
            .f64_histogram(name)
            .with_description(help)
            .with_unit(unit)
            .build()
    };
    let (name, help, unit) = described(&catalogue::EXPORT_BATCH_SIZE);
    let hist = SelfHistograms {
        export_duration: f64_histogram(&catalogue::EXPORT_DURATION),
        export_batch_size: meter
            .u64_histogram(name)
            .with_description(help)
            .with_unit(unit)
            .build(),
        emit_to_export: {
            let h = f64_histogram(&catalogue::EMIT_TO_EXPORT);
            [
                crate::contracts::SignalType::Trace,
                crate::contracts::SignalType::MetricLog,
            ]
            .map(|s| h.bind(&[KeyValue::new("signal", s.as_str())]))
        },
    };
    // One instance, shared by every exporter's stats and the emit-to-export recording.
    let _ = probes.counters.exporters.otel.set(hist);
    for metric in catalogue::CATALOGUE {
        let (Some(name), Read::Points(read)) = (metric.otel, metric.read) else {
            continue;
        };
        let p = probes.clone();
        let observe = move |o: &dyn opentelemetry::metrics::AsyncInstrument<u64>| {
            for point in read(&p.snapshot_if(false)) {
                let attrs: Vec<KeyValue> = point
                    .labels
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect();
                o.observe(point.value as u64, &attrs);
            }
        };
        match metric.kind {
            MetricKind::Counter => {
                let _ = meter
                    .u64_observable_counter(name)
                    .with_description(metric.help)
                    .with_unit(metric.unit)
                    .with_callback(observe)
                    .build();
            }
            MetricKind::Gauge | MetricKind::Histogram => {
                let _ = meter
                    .u64_observable_gauge(name)
                    .with_description(metric.help)
                    .with_unit(metric.unit)
                    .with_callback(observe)
                    .build();
            }
        }
    }
}
