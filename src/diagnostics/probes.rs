//! One place that can read everything about the running gateway: the ledger, queue depths,
//! exporters, histograms, the flight recorder and readiness. The handle's `diagnostics()`, the
//! HTTP endpoint and the OTel self-metrics all read through it, so the three views agree.
//!
//! It holds no handle to the gateway (only shared counters and weak queue senders), so serving
//! diagnostics never keeps the gateway alive nor runs its shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::exporters::ExporterSnapshot;
use super::histogram::HistSnapshot;
use super::{Counters, StatsSnapshot};

/// Reads a queue's (depth, capacity).
pub(crate) type QueueReader = Box<dyn Fn() -> Option<(usize, usize)> + Send + Sync>;

/// One bounded queue's fill level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueSnapshot {
    /// `gateway`, `trace`, `metric_log`, `logs`, or `sink:<name>`.
    pub name: String,
    /// Items waiting.
    pub depth: usize,
    /// The queue's bound.
    pub capacity: usize,
}

/// Whether the gateway is alive and ready, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// The actor system is running.
    pub live: bool,
    /// Live, not shutting down, every handler up, no exporter in sustained failure.
    pub ready: bool,
    /// Why not ready (empty when ready).
    pub reasons: Vec<String>,
}

/// Emit-to-export latency per signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmitToExport {
    /// Trace events: `created_at` to the first destination accepting the span.
    pub trace: HistSnapshot,
    /// Metric/log events: `created_at` to the exporter accepting the log record.
    pub metric_log: HistSnapshot,
}

/// One disk spool's state (`[spool] kind = "disk"`; see docs/operations.md, "The disk spool").
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpoolSnapshot {
    /// The destination it holds (`enterprise`, `enterprise logs`).
    pub name: String,
    /// Bytes on disk, segments and metadata.
    pub bytes: u64,
    /// Its budget (its share of `spool.max_bytes`).
    pub max_bytes: u64,
    /// Records on disk not yet acknowledged.
    pub records: u64,
    /// Events in them.
    pub events: u64,
    /// Age of the oldest record not yet acknowledged, in seconds (0 when there is none).
    pub oldest_age_secs: f64,
    /// Records appended since start.
    pub appends: u64,
    /// Records acknowledged since start (accepted or rejected by the backend).
    pub acks: u64,
    /// Records lost to damage: found at start, and read back damaged since.
    pub corrupt_records: u64,
    /// Syncs to stable storage since start.
    pub syncs: u64,
    /// Seconds spent in them.
    pub sync_secs: f64,
    /// I/O errors since start (appends, reads, acknowledgements, syncs).
    pub io_errors: u64,
    /// The last I/O error, and how many seconds ago, when there was one.
    pub last_io_error: Option<(String, u64)>,
}

/// Everything the gateway knows about itself, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiagnosticsSnapshot {
    /// The event ledger.
    pub stats: StatsSnapshot,
    /// Per case: received, delivered, dropped.
    pub by_case: std::collections::BTreeMap<String, super::CaseCounts>,
    /// Every bounded queue.
    pub queues: Vec<QueueSnapshot>,
    /// Every exporter.
    pub exporters: Vec<ExporterSnapshot>,
    /// Every disk spool (none in memory mode).
    pub spools: Vec<SpoolSnapshot>,
    /// Emit-to-export latency.
    pub emit_to_export: EmitToExport,
    /// Duration of dedup store (Redis) calls.
    pub dedup_call: HistSnapshot,
    /// Journeys held by the flight recorder.
    pub recorder_journeys: usize,
    /// Journeys evicted from the flight recorder so far.
    pub recorder_evicted: u64,
    /// Refusals at `emit()` counted but not recorded, because they came in a flood (more than
    /// one per 100 µs); `emit()` returned the error to the caller for each of them.
    pub recorder_refusals_not_recorded: u64,
    /// Liveness and readiness.
    pub readiness: Readiness,
}

/// The readers behind [`DiagnosticsSnapshot`].
pub(crate) struct Probes {
    pub(crate) counters: Arc<Counters>,
    pub(crate) queues: Vec<(String, QueueReader)>,
    pub(crate) closed: Arc<dyn Fn() -> bool + Send + Sync>,
    pub(crate) live: Arc<AtomicBool>,
    pub(crate) handlers_up: Box<dyn Fn() -> (usize, usize) + Send + Sync>,
    pub(crate) unready_after: Duration,
    /// The enterprise destination's disk spools' readers (`None` once a spool is closed).
    pub(crate) spools: Vec<SpoolReader>,
    /// The open tenant sinks' disk spools (shown, never a reason to be unready: a tenant's
    /// collector being away is the tenant's business).
    pub(crate) tenant_spools: Box<dyn Fn() -> Vec<SpoolSnapshot> + Send + Sync>,
}

/// Reads one disk spool's state.
pub(crate) type SpoolReader = Box<dyn Fn() -> Option<SpoolSnapshot> + Send + Sync>;

/// A spool above this share of its budget makes the gateway unready.
const SPOOL_NEARLY_FULL: f64 = 0.9;

impl std::fmt::Debug for Probes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probes")
            .field("queues", &self.queues.len())
            .finish()
    }
}

impl Probes {
    /// Liveness and readiness, with reasons.
    pub(crate) fn readiness(&self) -> Readiness {
        let live = self.live.load(Ordering::SeqCst);
        let mut reasons = Vec::new();
        if !live {
            reasons.push("actor system is not running".to_owned());
        }
        if (self.closed)() {
            reasons.push("shutting down".to_owned());
        }
        let (up, total) = (self.handlers_up)();
        if up < total {
            reasons.push(format!(
                "{} of {total} metric handlers are down",
                total - up
            ));
        }
        for (name, signal, d) in self
            .counters
            .exporters
            .failing_longer_than(self.unready_after)
        {
            reasons.push(format!(
                "exporter {name} ({signal}) failing for {}s",
                d.as_secs()
            ));
        }
        for sp in self.spools.iter().filter_map(|read| read()) {
            reasons.extend(spool_reasons(&sp, self.unready_after));
        }
        Readiness {
            live,
            ready: reasons.is_empty(),
            reasons,
        }
    }

    /// Every open disk spool's state: the enterprise destination's, then the tenant sinks'.
    pub(crate) fn spools(&self) -> Vec<SpoolSnapshot> {
        let mut all: Vec<SpoolSnapshot> = self.spools.iter().filter_map(|read| read()).collect();
        all.extend((self.tenant_spools)());
        all
    }

    /// Every queue's fill level (a queue already closed is left out).
    pub(crate) fn queues(&self) -> Vec<QueueSnapshot> {
        self.queues
            .iter()
            .filter_map(|(name, read)| {
                read().map(|(depth, capacity)| QueueSnapshot {
                    name: name.clone(),
                    depth,
                    capacity,
                })
            })
            .collect()
    }

    /// The whole snapshot.
    pub(crate) fn snapshot(&self) -> DiagnosticsSnapshot {
        self.snapshot_if(true)
    }

    /// The snapshot without its histograms (empty in it) unless `with_histograms`: what the
    /// OTel self-metrics' callbacks read, once per instrument at every collection (a worker
    /// collects at every commit), so they never compute a bucket.
    pub(crate) fn snapshot_if(&self, with_histograms: bool) -> DiagnosticsSnapshot {
        let c = &self.counters;
        let (recorder_journeys, recorder_evicted) = c.recorder.usage();
        DiagnosticsSnapshot {
            stats: c.snapshot(),
            by_case: c.by_case(),
            queues: self.queues(),
            exporters: c.exporters.snapshot_if(with_histograms),
            spools: self.spools(),
            emit_to_export: EmitToExport {
                trace: c.emit_to_export_trace.snapshot_if(with_histograms),
                metric_log: c.emit_to_export_metric_log.snapshot_if(with_histograms),
            },
            dedup_call: c.dedup_call.snapshot_if(with_histograms),
            recorder_journeys,
            recorder_evicted,
            recorder_refusals_not_recorded: c.recorder.refusals_not_recorded(),
            readiness: self.readiness(),
        }
    }
}

/// Why one spool makes the gateway unready: nearly full, a backlog older than `unready_after`
/// (the backend has not taken anything for that long), or an I/O error within `unready_after`.
fn spool_reasons(sp: &SpoolSnapshot, unready_after: Duration) -> Vec<String> {
    let mut reasons = Vec::new();
    if sp.max_bytes > 0 && sp.bytes as f64 >= SPOOL_NEARLY_FULL * sp.max_bytes as f64 {
        reasons.push(format!(
            "spool {} nearly full: {} of {} bytes",
            sp.name, sp.bytes, sp.max_bytes
        ));
    }
    if sp.oldest_age_secs >= unready_after.as_secs_f64() {
        reasons.push(format!(
            "spool {} backlog growing: {} events waiting, the oldest for {}s",
            sp.name, sp.events, sp.oldest_age_secs as u64
        ));
    }
    if let Some((error, ago)) = &sp.last_io_error {
        if *ago < unready_after.as_secs().max(1) {
            reasons.push(format!("spool {} failing: {error}", sp.name));
        }
    }
    reasons
}
