//! Per-exporter statistics: what each destination accepted, failed and lost, how long its calls
//! take, and how long it has been failing (which `/readyz` uses).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::histogram::{Hist, HistSnapshot, Unit};

/// Counters of one exporter (the enterprise exporter of one signal, or one tenant sink).
#[derive(Debug)]
pub(crate) struct ExporterStats {
    name: Arc<str>,
    signal: &'static str,
    batches_ok: AtomicU64,
    batches_failed: AtomicU64,
    items_ok: AtomicU64,
    items_failed: AtomicU64,
    items_queue_full: AtomicU64,
    failing_since: Mutex<Option<Instant>>,
    /// A tenant's own sink: its failures do not make the gateway unready.
    tenant_sink: std::sync::atomic::AtomicBool,
    latency: Hist,
    batch_size: Hist,
    otel: std::sync::Arc<std::sync::OnceLock<super::otel::SelfHistograms>>,
}

/// A copy of one exporter's counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExporterSnapshot {
    /// `enterprise` or the sink's name.
    pub name: String,
    /// `traces`, `logs` or `metrics`.
    pub signal: &'static str,
    /// Export calls that succeeded.
    pub batches_ok: u64,
    /// Export calls that failed (after the exporter's own retries).
    pub batches_failed: u64,
    /// Items (spans, log records, metric points) accepted.
    pub items_ok: u64,
    /// Items in failed calls.
    pub items_failed: u64,
    /// Items that never reached the exporter because its queue was full.
    pub items_queue_full: u64,
    /// How long every call has been failing, if the last one failed.
    pub failing_for_secs: Option<f64>,
    /// Duration of export calls.
    pub latency: HistSnapshot,
    /// Items per export call.
    pub batch_size: HistSnapshot,
}

impl ExporterStats {
    fn new(
        name: &str,
        signal: &'static str,
        otel: std::sync::Arc<std::sync::OnceLock<super::otel::SelfHistograms>>,
    ) -> Self {
        ExporterStats {
            name: Arc::from(name),
            signal,
            batches_ok: AtomicU64::new(0),
            batches_failed: AtomicU64::new(0),
            items_ok: AtomicU64::new(0),
            items_failed: AtomicU64::new(0),
            items_queue_full: AtomicU64::new(0),
            failing_since: Mutex::new(None),
            tenant_sink: std::sync::atomic::AtomicBool::new(false),
            latency: Hist::new(Unit::Seconds),
            batch_size: Hist::new(Unit::Count),
            otel,
        }
    }

    /// One export call of `items` that took `elapsed`.
    pub(crate) fn record_call(&self, items: u64, ok: bool, elapsed: Duration) {
        self.latency.record_duration(elapsed);
        self.batch_size.record_count(items);
        if let Some(h) = self.otel.get() {
            h.export_call(&self.name, self.signal, items, elapsed);
        }
        if ok {
            self.batches_ok.fetch_add(1, Relaxed);
            self.items_ok.fetch_add(items, Relaxed);
            *self.failing_since.lock() = None;
        } else {
            self.batches_failed.fetch_add(1, Relaxed);
            self.items_failed.fetch_add(items, Relaxed);
            self.failing_since.lock().get_or_insert_with(Instant::now);
        }
    }

    /// `items` lost because this exporter's queue was full.
    pub(crate) fn record_queue_full(&self, items: u64) {
        self.items_queue_full.fetch_add(items, Relaxed);
    }

    /// How long every call has been failing, if the last one failed.
    pub(crate) fn failing_for(&self) -> Option<Duration> {
        self.failing_since.lock().map(|t| t.elapsed())
    }

    /// A copy of the counters, with its histograms only when `with_histograms` (computing their
    /// buckets is the costly part).
    pub(crate) fn snapshot_if(&self, with_histograms: bool) -> ExporterSnapshot {
        ExporterSnapshot {
            name: self.name.to_string(),
            signal: self.signal,
            batches_ok: self.batches_ok.load(Relaxed),
            batches_failed: self.batches_failed.load(Relaxed),
            items_ok: self.items_ok.load(Relaxed),
            items_failed: self.items_failed.load(Relaxed),
            items_queue_full: self.items_queue_full.load(Relaxed),
            failing_for_secs: self.failing_for().map(|d| d.as_secs_f64()),
            latency: self.latency.snapshot_if(with_histograms),
            batch_size: self.batch_size.snapshot_if(with_histograms),
        }
    }
}

/// Every exporter of the gateway. Registration happens at start (and, later, when a sink is
/// added at runtime); reads take a short lock.
#[derive(Debug, Default)]
pub(crate) struct ExporterRegistry {
    exporters: Mutex<Vec<Arc<ExporterStats>>>,
    /// The OTel histograms, shared with every exporter registered and used by
    /// `Counters::emit_to_export`; set once the meter provider exists.
    pub(crate) otel: Arc<std::sync::OnceLock<super::otel::SelfHistograms>>,
}

impl ExporterRegistry {
    /// Registers an exporter and returns its counters.
    pub(crate) fn register(&self, name: &str, signal: &'static str) -> Arc<ExporterStats> {
        let s = Arc::new(ExporterStats::new(name, signal, self.otel.clone()));
        self.exporters.lock().push(s.clone());
        s
    }

    /// Registers a tenant's sink (`[[sinks]]`, or one registered at runtime): counted like any
    /// exporter, but its failures do not make the gateway unready (one tenant's provider must
    /// not take the gateway out of a load balancer). A name already registered this way gets
    /// the same counters back.
    pub(crate) fn register_tenant_sink(
        &self,
        name: &str,
        signal: &'static str,
    ) -> Arc<ExporterStats> {
        let mut all = self.exporters.lock();
        if let Some(s) = all.iter().find(|e| {
            e.tenant_sink.load(std::sync::atomic::Ordering::Relaxed)
                && e.signal == signal
                && &*e.name == name
        }) {
            return s.clone();
        }
        let s = Arc::new(ExporterStats::new(name, signal, self.otel.clone()));
        s.tenant_sink
            .store(true, std::sync::atomic::Ordering::Relaxed);
        all.push(s.clone());
        s
    }

    /// Forgets an exporter (a tenant sink that was removed), so the list stays bounded by the
    /// sinks registered now.
    pub(crate) fn unregister(&self, stats: &Arc<ExporterStats>) {
        self.exporters.lock().retain(|e| !Arc::ptr_eq(e, stats));
    }

    /// Every exporter's counters, with histograms only when `with_histograms`.
    pub(crate) fn snapshot_if(&self, with_histograms: bool) -> Vec<ExporterSnapshot> {
        self.exporters
            .lock()
            .iter()
            .map(|e| e.snapshot_if(with_histograms))
            .collect()
    }

    /// Exporters whose every call has failed for at least `window`.
    pub(crate) fn failing_longer_than(
        &self,
        window: Duration,
    ) -> Vec<(String, &'static str, Duration)> {
        self.exporters
            .lock()
            .iter()
            .filter(|e| !e.tenant_sink.load(std::sync::atomic::Ordering::Relaxed))
            .filter_map(|e| {
                e.failing_for()
                    .filter(|d| *d >= window)
                    .map(|d| (e.name.to_string(), e.signal, d))
            })
            .collect()
    }
}
