//! The metric exporter wrapper: counts exported data points and drives network I/O on the export
//! runtime.
//!
//! The SDK's `PeriodicReader` calls the exporter from its own thread with a plain executor; the
//! OTLP exporters need a tokio reactor for their sockets. [`InRuntime`] enters the export
//! runtime's context on every poll, so the I/O is driven by that runtime whichever thread polls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;

use super::jsonl::JsonlMetricExporter;
use crate::diagnostics::exporters::ExporterStats;
use crate::diagnostics::Counters;

/// Polls `fut` inside the context of a tokio runtime.
pub(crate) struct InRuntime<F> {
    handle: tokio::runtime::Handle,
    fut: Pin<Box<F>>,
}

impl<F> InRuntime<F> {
    pub(crate) fn new(handle: tokio::runtime::Handle, fut: F) -> Self {
        InRuntime {
            handle,
            fut: Box::pin(fut),
        }
    }
}

impl<F: Future> Future for InRuntime<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let _guard = self.handle.clone();
        let _entered = _guard.enter();
        self.fut.as_mut().poll(cx)
    }
}

/// The metric exporter in use.
#[derive(Debug)]
// One instance per gateway, built once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum MetricBackend {
    Otlp(opentelemetry_otlp::MetricExporter),
    Jsonl(JsonlMetricExporter),
    /// `export.local_output = "discard"`: accepted and thrown away.
    Discard,
}

/// Counts data points on success; see the module docs.
#[derive(Debug)]
pub(crate) struct CountingMetricExporter {
    backend: MetricBackend,
    counters: Arc<Counters>,
    stats: Arc<ExporterStats>,
    rt: tokio::runtime::Handle,
    /// `[sinks.sqlite]`: exported points also stored there.
    #[cfg(feature = "analytics")]
    sqlite: Option<super::sqlite::SqliteStore>,
}

impl CountingMetricExporter {
    pub(crate) fn new(
        backend: MetricBackend,
        counters: Arc<Counters>,
        rt: tokio::runtime::Handle,
    ) -> Self {
        let stats = counters.exporters.register("enterprise", "metrics");
        CountingMetricExporter {
            backend,
            counters,
            stats,
            rt,
            #[cfg(feature = "analytics")]
            sqlite: None,
        }
    }

    /// Also stores every exported collection in SQLite.
    #[cfg(feature = "analytics")]
    pub(crate) fn with_sqlite(mut self, store: Option<super::sqlite::SqliteStore>) -> Self {
        self.sqlite = store;
        self
    }
}

fn points<T>(d: &MetricData<T>) -> u64 {
    match d {
        MetricData::Gauge(g) => g.data_points().count() as u64,
        MetricData::Sum(s) => s.data_points().count() as u64,
        MetricData::Histogram(h) => h.data_points().count() as u64,
        MetricData::ExponentialHistogram(h) => h.data_points().count() as u64,
    }
}

/// Data points in a collection.
pub(crate) fn count_points(metrics: &ResourceMetrics) -> u64 {
    metrics
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .map(|m| match m.data() {
            AggregatedMetrics::F64(d) => points(d),
            AggregatedMetrics::U64(d) => points(d),
            AggregatedMetrics::I64(d) => points(d),
        })
        .sum()
}

/// Names of the metrics that have an overflow series (`otel.metric.overflow = true`): more
/// distinct attribute sets than `diagnostics.metric_cardinality_limit`.
pub(crate) fn overflowing(metrics: &ResourceMetrics) -> Vec<String> {
    fn has_overflow<'a>(mut attrs: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> bool {
        attrs.any(|kv| kv.key.as_str() == "otel.metric.overflow")
    }
    fn data_overflows<T>(d: &MetricData<T>) -> bool {
        match d {
            MetricData::Gauge(g) => g.data_points().any(|p| has_overflow(p.attributes())),
            MetricData::Sum(s) => s.data_points().any(|p| has_overflow(p.attributes())),
            MetricData::Histogram(h) => h.data_points().any(|p| has_overflow(p.attributes())),
            MetricData::ExponentialHistogram(h) => {
                h.data_points().any(|p| has_overflow(p.attributes()))
            }
        }
    }
    metrics
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .filter(|m| match m.data() {
            AggregatedMetrics::F64(d) => data_overflows(d),
            AggregatedMetrics::U64(d) => data_overflows(d),
            AggregatedMetrics::I64(d) => data_overflows(d),
        })
        .map(|m| m.name().to_owned())
        .collect()
}

impl PushMetricExporter for CountingMetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let n = count_points(metrics);
        for name in overflowing(metrics) {
            self.counters.note_metric_overflow(name);
        }
        let started = std::time::Instant::now();
        let result = match &self.backend {
            MetricBackend::Otlp(e) => InRuntime::new(self.rt.clone(), e.export(metrics)).await,
            MetricBackend::Jsonl(e) => e.export(metrics).await,
            MetricBackend::Discard => Ok(()),
        };
        self.stats.record_call(n, result.is_ok(), started.elapsed());
        #[cfg(feature = "analytics")]
        if let (Ok(()), Some(store)) = (&result, &self.sqlite) {
            store.enqueue(super::sqlite::Raw::Metrics(super::sqlite::metric_rows(
                metrics,
            )));
        }
        match &result {
            Ok(()) => {
                Counters::add(&self.counters.exported_metric_points, n);
                Counters::add(&self.counters.export_batches_ok, 1);
            }
            Err(e) => {
                Counters::add(&self.counters.export_batches_failed, 1);
                self.counters.log.warn_limited("metric export failed", || {
                    tracing::warn!(
                        points = n,
                        error = %self.counters.log.sanitize(&e.to_string()),
                        "metric export failed"
                    )
                });
            }
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        match &self.backend {
            MetricBackend::Otlp(e) => e.force_flush(),
            MetricBackend::Jsonl(e) => e.force_flush(),
            MetricBackend::Discard => Ok(()),
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        match &self.backend {
            MetricBackend::Otlp(e) => e.shutdown_with_timeout(timeout),
            MetricBackend::Jsonl(e) => e.shutdown_with_timeout(timeout),
            MetricBackend::Discard => Ok(()),
        }
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}
