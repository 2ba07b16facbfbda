//! The gateway's ledger: reason codes and the counters every event is accounted in.
//!
//! Every event the host emits ends in exactly one of two columns: **delivered** (its span or log
//! record was accepted by at least one exporter) or **dropped** under one [`ReasonCode`]. Until
//! then it is *in flight*. With a disk spool (`[spool] kind = "disk"`) there is a third way out
//! of a process and a second way in: **spooled** (its export request was still on disk at
//! shutdown; the next process sends it) and **recovered** (the events of the requests a process
//! found on disk at start). So at any moment
//!
//! ```text
//! emitted + recovered == delivered + sum(dropped) + spooled + in_flight
//! ```
//!
//! and after `shutdown()` `in_flight` is zero: whatever was left is dropped under `shutdown`.
//! Problems that did not lose the event (a payload kept inline because the store failed, a dedup
//! call that failed open, a payload rebuilt from its fallback) are counted as **degraded** under
//! their reason, in addition to the event's final column.
//!
//! This module must never be the reason an event is lost. Counting is a relaxed atomic add, with
//! no lock and no allocation. The flight recorder beside the counters is not free: it takes one
//! short lock per step and allocates its journeys (bounded by `diagnostics.recorder_events`);
//! nothing on `emit()`'s accepting path touches it.

pub mod catalogue;
pub(crate) mod exporters;
pub(crate) mod histogram;
pub(crate) mod http;
pub(crate) mod ledger;
pub(crate) mod otel;
pub(crate) mod probes;
pub mod prometheus;
pub mod recorder;
pub(crate) mod striped;

pub use exporters::ExporterSnapshot;

pub use histogram::{HistSnapshot, Unit};
pub use probes::{DiagnosticsSnapshot, EmitToExport, QueueSnapshot, Readiness, SpoolSnapshot};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

pub use ledger::Pending;

use serde::Serialize;

/// Declares [`ReasonCode`] from one table: each code's variant, stable name, whether it is
/// policy (`intentional`) and its doc line sit on one row, and `ALL`, `as_str` and `intentional`
/// are generated from it. A new code is one new row; the counters, `/metrics`, the OTel
/// instruments, the journeys and the ledger's tests pick it up from `ALL`.
macro_rules! reason_codes {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, intentional: $intentional:literal; )*) => {
        /// Why an event was dropped or degraded. Stable snake_case names (see
        /// [`ReasonCode::as_str`]); new codes may be added, existing ones never renamed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[non_exhaustive]
        pub enum ReasonCode {
            $( $(#[doc = $doc])* #[serde(rename = $name)] $variant, )*
        }

        impl ReasonCode {
            /// Every reason code, for iteration and exhaustive tests.
            pub const ALL: [ReasonCode; [$($name),*].len()] = [$(ReasonCode::$variant),*];

            /// The stable snake_case name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ReasonCode::$variant => $name, )*
                }
            }

            /// Policy (the gateway did what it was configured to do) rather than a fault.
            pub fn intentional(self) -> bool {
                match self {
                    $( ReasonCode::$variant => $intentional, )*
                }
            }
        }
    };
}

reason_codes! {
    /// An enterprise-only case while the enterprise exporter is off (policy).
    EnterpriseDisabled = "enterprise_disabled", intentional: true;
    /// A metric/log case while `gateway.enabled = false` (legacy behaviour; policy).
    GatewayDisabled = "gateway_disabled", intentional: true;
    /// A bounded queue was full.
    QueueFull = "queue_full", intentional: false;
    /// The envelope failed validation.
    InvalidEnvelope = "invalid_envelope", intentional: false;
    /// The case is neither built in nor configured.
    UnknownCase = "unknown_case", intentional: false;
    /// The event id was already seen for this tenant within the dedup TTL (policy).
    Duplicate = "duplicate", intentional: true;
    /// The payload store write failed or timed out; the payload went inline (degraded).
    PayloadOffloadFailed = "payload_offload_failed", intentional: false;
    /// A payload ref pointed outside its tenant's prefix and was never read (degraded).
    PayloadRefRefused = "payload_ref_refused", intentional: false;
    /// Neither the payload store nor the fallback could supply the payload (degraded).
    RehydrationFailed = "rehydration_failed", intentional: false;
    /// The dedup store was down or slow; the event was processed anyway (degraded, fail-open).
    DedupStoreUnavailable = "dedup_store_unavailable", intentional: false;
    /// An exporter failed after its retries.
    ExportFailed = "export_failed", intentional: false;
    /// The backend refused the data as invalid (not retried).
    ExportRejected = "export_rejected", intentional: false;
    /// The gateway shut down before the event was delivered.
    Shutdown = "shutdown", intentional: false;
    /// Dropped by trace sampling (policy).
    SampledOut = "sampled_out", intentional: true;
    /// A case handler panicked on this event; it is dead-lettered, never retried.
    HandlerPanicked = "handler_panicked", intentional: false;
    /// A trace event with no destination: enterprise exporter off and no sink for its tenant.
    NoDestination = "no_destination", intentional: false;
    /// A worker moved the event's stream entry to the dead-letter stream: it was delivered more
    /// than `transport.max_deliveries` times without being handled, or did not decode.
    DeadLettered = "dead_lettered", intentional: false;
    /// The case is turned off (`cases.<name>.enabled = false`). Policy.
    Filtered = "filtered", intentional: true;
    /// Worker only: the dedup store could not be asked about the event (unreachable, slow or
    /// erroring), so the worker left its stream entry pending to be read again (`redelivered`)
    /// rather than handle it unchecked: a copy the producer re-appended would count twice.
    DedupDeferred = "dedup_deferred", intentional: false;
    /// The disk spool's budget (`spool.max_bytes`) was full: the event's export request was not
    /// stored (`when_full = "drop_newest"`) or was deleted to make room (`"drop_oldest"`).
    SpoolFull = "spool_full", intentional: false;
    /// A disk spool's record was damaged on disk (torn by a crash mid-write, a bad checksum, a
    /// disk fault): skipped, its events lost. Counted when a record is read back damaged, and at
    /// start for the events of damaged records an earlier process left (their headers say how
    /// many).
    SpoolCorrupt = "spool_corrupt", intentional: false;
}

impl ReasonCode {
    /// The position of this code in [`ReasonCode::ALL`] (its counter's index).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The code at `index` in [`ReasonCode::ALL`].
    pub(crate) fn from_index(index: usize) -> Option<ReasonCode> {
        ReasonCode::ALL.get(index).copied()
    }
}

impl std::fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const N_REASONS: usize = ReasonCode::ALL.len();

/// The live counters, shared by every actor and the handle.
#[derive(Debug)]
pub struct Counters {
    /// `emit()` calls (striped: written on every caller's thread).
    pub(crate) emitted: striped::Striped,
    pub(crate) routed_trace: AtomicU64,
    pub(crate) routed_metric_log: AtomicU64,
    delivered_trace: AtomicU64,
    delivered_metric_log: AtomicU64,
    dropped: [AtomicU64; N_REASONS],
    degraded: [AtomicU64; N_REASONS],
    pub(crate) offloaded: AtomicU64,
    pub(crate) rehydrated_from_store: AtomicU64,
    pub(crate) rehydrated_from_fallback: AtomicU64,
    pub(crate) dedup_store_errors: AtomicU64,
    pub(crate) handler_restarts: AtomicU64,
    /// Stream entries a worker read again after an earlier delivery did not commit.
    pub(crate) redelivered: AtomicU64,
    /// Redis Streams calls of a worker's consumers that failed (reads, dead-letter writes,
    /// acknowledgements), and reply elements that were not entries.
    pub(crate) stream_errors: AtomicU64,
    pub(crate) exported_spans: AtomicU64,
    pub(crate) exported_log_records: AtomicU64,
    pub(crate) exported_metric_points: AtomicU64,
    pub(crate) export_batches_ok: AtomicU64,
    pub(crate) export_batches_failed: AtomicU64,
    pub(crate) sink_spans_failed: AtomicU64,
    pub(crate) companion_logs_dropped: AtomicU64,
    /// Events of the export requests found in a disk spool at start.
    recovered: AtomicU64,
    /// Events whose export requests were left in a disk spool at shutdown.
    spooled: AtomicU64,
    /// Events accepted by `emit()` that the gateway actor has not yet routed or dropped.
    /// Striped: `emit()` adds on the caller's thread, the gateway actor subtracts on its own.
    gateway_pending: striped::Striped,
    /// Trace events handed to the batcher and not yet delivered or dropped.
    trace_pending: AtomicI64,
    /// Metric/log events handed to the pool and not yet delivered or dropped.
    metric_pending: AtomicI64,
    /// Companion log records queued for export and not yet exported or lost.
    companion_pending: AtomicI64,
    /// This gateway's log hygiene: its redactor, credentials and warning limiter. Every
    /// component reaches it here, so nothing about logging is shared between gateways.
    pub(crate) log: Arc<crate::logging::LogScope>,
    /// The last events' journeys.
    pub(crate) recorder: recorder::FlightRecorder,
    /// Every exporter's counters.
    pub(crate) exporters: exporters::ExporterRegistry,
    /// From `created_at` to the exporter accepting the event's span.
    pub(crate) emit_to_export_trace: histogram::Hist,
    /// From `created_at` to the exporter accepting the event's log record.
    pub(crate) emit_to_export_metric_log: histogram::Hist,
    /// Duration of each dedup store (Redis) call, fail-open ones included.
    pub(crate) dedup_call: histogram::Hist,
    /// Metrics that hit their cardinality limit (bounded by the number of instruments).
    pub(crate) metric_overflow: parking_lot::Mutex<std::collections::BTreeSet<String>>,
    /// Per case: received by the gateway actor, delivered, dropped. Keys are the routing table's
    /// cases (fixed at start) plus `other` for names the table does not know.
    /// Fixed at start (no key comes from input), looked up per event: the fast hasher.
    by_case: std::sync::OnceLock<crate::FastMap<String, ledger::CaseCells>>,
}

/// The per-case counter bucket of a case name the routing table does not know.
pub const OTHER_CASE: &str = "other";

/// Counts of one case.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CaseCounts {
    /// Taken by the gateway actor (refusals at `emit()` are not received).
    pub received: u64,
    /// Delivered.
    pub delivered: u64,
    /// Dropped, for any reason (refusals at `emit()` included).
    pub dropped: u64,
}

impl Default for Counters {
    fn default() -> Self {
        let log = Arc::new(crate::logging::LogScope::default());
        Counters {
            emitted: striped::Striped::default(),
            routed_trace: AtomicU64::new(0),
            routed_metric_log: AtomicU64::new(0),
            delivered_trace: AtomicU64::new(0),
            delivered_metric_log: AtomicU64::new(0),
            dropped: Default::default(),
            degraded: Default::default(),
            offloaded: AtomicU64::new(0),
            rehydrated_from_store: AtomicU64::new(0),
            rehydrated_from_fallback: AtomicU64::new(0),
            dedup_store_errors: AtomicU64::new(0),
            handler_restarts: AtomicU64::new(0),
            redelivered: AtomicU64::new(0),
            stream_errors: AtomicU64::new(0),
            exported_spans: AtomicU64::new(0),
            exported_log_records: AtomicU64::new(0),
            exported_metric_points: AtomicU64::new(0),
            export_batches_ok: AtomicU64::new(0),
            export_batches_failed: AtomicU64::new(0),
            sink_spans_failed: AtomicU64::new(0),
            companion_logs_dropped: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            gateway_pending: striped::Striped::default(),
            trace_pending: AtomicI64::new(0),
            metric_pending: AtomicI64::new(0),
            companion_pending: AtomicI64::new(0),
            recorder: recorder::FlightRecorder::default().with_log(log.clone()),
            log,
            exporters: exporters::ExporterRegistry::default(),
            emit_to_export_trace: histogram::Hist::new(histogram::Unit::Seconds),
            emit_to_export_metric_log: histogram::Hist::new(histogram::Unit::Seconds),
            dedup_call: histogram::Hist::new(histogram::Unit::Seconds),
            metric_overflow: Default::default(),
            by_case: std::sync::OnceLock::new(),
        }
    }
}

impl Counters {
    /// Counts `n` events degraded for `reason` (they still reach a final column).
    pub fn degraded(&self, reason: ReasonCode, n: u64) {
        self.degraded[reason.index()].fetch_add(n, Relaxed);
    }

    /// Sets the case names counted per case (once, at start).
    pub(crate) fn init_cases<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut map: crate::FastMap<String, ledger::CaseCells> = names
            .into_iter()
            .map(|n| (n.to_owned(), Default::default()))
            .collect();
        map.entry(OTHER_CASE.to_owned()).or_default();
        let _ = self.by_case.set(map);
    }

    /// Records one event's emit-to-export latency in both views (hdrhistogram and OTel).
    fn emit_to_export(&self, signal: crate::contracts::SignalType, age: std::time::Duration) {
        match signal {
            crate::contracts::SignalType::Trace => self.emit_to_export_trace.record_duration(age),
            crate::contracts::SignalType::MetricLog => {
                self.emit_to_export_metric_log.record_duration(age)
            }
        }
        if let Some(h) = self.exporters.otel.get() {
            h.emit_to_export(signal, age);
        }
    }

    /// Counts per case, sorted by case name.
    pub fn by_case(&self) -> BTreeMap<String, CaseCounts> {
        self.by_case
            .get()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.counts())).collect())
            .unwrap_or_default()
    }

    pub(crate) fn note_metric_overflow(&self, metric: String) {
        let mut set = self.metric_overflow.lock();
        if !set.contains(&metric) {
            tracing::warn!(
                metric = %metric,
                "metric hit diagnostics.metric_cardinality_limit; further attribute sets go to its overflow series"
            );
            set.insert(metric);
        }
    }

    /// The flight recorder.
    pub fn recorder(&self) -> &recorder::FlightRecorder {
        &self.recorder
    }

    /// Counts one event degraded for `reason` and notes it in its journey.
    pub(crate) fn degrade_event(
        &self,
        ev: &recorder::EventRef,
        reason: ReasonCode,
        detail: Option<&str>,
    ) {
        self.degraded(reason, 1);
        self.recorder
            .record(ev, recorder::Stage::Degraded, Some(reason), detail);
    }

    /// Notes a step of an event's journey. `detail` is a literal.
    pub(crate) fn step(
        &self,
        ev: &recorder::EventRef,
        stage: recorder::Stage,
        detail: Option<&'static str>,
    ) {
        self.recorder.record_static(ev, stage, None, detail);
    }

    /// [`Counters::step`] with an untrusted detail (sanitized before it is kept).
    pub(crate) fn step_text(&self, ev: &recorder::EventRef, stage: recorder::Stage, detail: &str) {
        self.recorder.record(ev, stage, None, Some(detail));
    }

    /// Events degraded for `reason` so far.
    pub fn degraded_count(&self, reason: ReasonCode) -> u64 {
        self.degraded[reason.index()].load(Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A consistent-enough copy of every counter (each read is atomic; the set is not a
    /// transaction, so in-flight work may move between columns while it is taken).
    pub fn snapshot(&self) -> StatsSnapshot {
        let by_reason = |arr: &[AtomicU64; N_REASONS]| {
            ReasonCode::ALL
                .iter()
                .filter_map(|r| {
                    let v = arr[r.index()].load(Relaxed);
                    (v > 0).then(|| (r.as_str().to_owned(), v))
                })
                .collect::<BTreeMap<_, _>>()
        };
        let dropped = by_reason(&self.dropped);
        let delivered_trace = self.delivered_trace.load(Relaxed);
        let delivered_metric_log = self.delivered_metric_log.load(Relaxed);
        let emitted = self.emitted.sum(Relaxed).max(0) as u64;
        let dropped_total: u64 = dropped.values().sum();
        let delivered = delivered_trace + delivered_metric_log;
        let recovered = self.recovered.load(Relaxed);
        let spooled = self.spooled.load(Relaxed);
        StatsSnapshot {
            emitted,
            delivered,
            delivered_by_signal: SignalCounts {
                trace: delivered_trace,
                metric_log: delivered_metric_log,
            },
            recovered,
            spooled,
            in_flight: (emitted + recovered).saturating_sub(delivered + dropped_total + spooled),
            routed: SignalCounts {
                trace: self.routed_trace.load(Relaxed),
                metric_log: self.routed_metric_log.load(Relaxed),
            },
            exported: ExportedCounts {
                spans: self.exported_spans.load(Relaxed),
                log_records: self.exported_log_records.load(Relaxed),
                metric_points: self.exported_metric_points.load(Relaxed),
            },
            deduplicated: self.dropped_count(ReasonCode::Duplicate),
            offloaded: self.offloaded.load(Relaxed),
            rehydrated_from_store: self.rehydrated_from_store.load(Relaxed),
            rehydrated_from_fallback: self.rehydrated_from_fallback.load(Relaxed),
            dedup_store_errors: self.dedup_store_errors.load(Relaxed),
            handler_restarts: self.handler_restarts.load(Relaxed),
            redelivered: self.redelivered.load(Relaxed),
            stream_errors: self.stream_errors.load(Relaxed),
            export_batches_ok: self.export_batches_ok.load(Relaxed),
            export_batches_failed: self.export_batches_failed.load(Relaxed),
            sink_spans_failed: self.sink_spans_failed.load(Relaxed),
            companion_logs_dropped: self.companion_logs_dropped.load(Relaxed),
            metrics_in_overflow: self.metric_overflow.lock().iter().cloned().collect(),
            dropped,
            degraded: by_reason(&self.degraded),
        }
    }
}

/// A count per signal type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SignalCounts {
    /// Trace-shaped events.
    pub trace: u64,
    /// Metric/log events.
    pub metric_log: u64,
}

/// What the exporters accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ExportedCounts {
    /// Spans accepted by an exporter (every destination counted).
    pub spans: u64,
    /// Log records accepted by an exporter.
    pub log_records: u64,
    /// Metric data points accepted by an exporter.
    pub metric_points: u64,
}

/// A copy of the ledger; see the module docs for the equation it satisfies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// `emit()` calls.
    pub emitted: u64,
    /// Events whose output an exporter accepted.
    pub delivered: u64,
    /// `delivered` split by signal type.
    pub delivered_by_signal: SignalCounts,
    /// Events of the export requests this process found in its disk spool at start (sent, or
    /// dropped, like emitted ones). Zero without a disk spool.
    #[serde(default)]
    pub recovered: u64,
    /// Events whose export requests were still in the disk spool when this process shut down:
    /// neither delivered nor dropped; the next process on the spool counts them in `recovered`.
    #[serde(default)]
    pub spooled: u64,
    /// Emitted or recovered, not yet delivered, dropped or spooled.
    pub in_flight: u64,
    /// Events the gateway routed, by signal type.
    pub routed: SignalCounts,
    /// Spans, log records and metric points the exporters accepted.
    pub exported: ExportedCounts,
    /// Events dropped as duplicates (also in `dropped["duplicate"]`).
    pub deduplicated: u64,
    /// Payloads written to the payload store.
    pub offloaded: u64,
    /// Payload refs read back from the store.
    pub rehydrated_from_store: u64,
    /// Payloads rebuilt from their fallback.
    pub rehydrated_from_fallback: u64,
    /// Dedup store calls (one per handler batch) that failed or timed out; the events of those
    /// batches are in `degraded["dedup_store_unavailable"]`.
    pub dedup_store_errors: u64,
    /// Metric handlers restarted by their supervisor.
    pub handler_restarts: u64,
    /// Worker only: stream entries read again because an earlier delivery never committed (its
    /// worker died, or its case handler panicked). Each is also in `emitted` (entries read).
    #[serde(default)]
    pub redelivered: u64,
    /// Worker only: Redis Streams calls that failed (a read that timed out or was refused, a
    /// dead letter that could not be stored, an acknowledgement that failed) and reply elements
    /// that were not entries. Each is logged (rate-limited); an entry whose dead letter failed
    /// stays pending in the group, neither acknowledged nor counted as read.
    #[serde(default)]
    pub stream_errors: u64,
    /// Export calls that succeeded.
    pub export_batches_ok: u64,
    /// Export calls that failed.
    pub export_batches_failed: u64,
    /// Spans a sink failed to export or had no queue room for (the event may still be delivered
    /// by another destination; its own outcome is in `delivered` / `dropped`).
    pub sink_spans_failed: u64,
    /// Companion log records of spans that were not exported: log queue full, export failed, or
    /// still queued at the shutdown deadline (their events are accounted by their spans).
    pub companion_logs_dropped: u64,
    /// Metrics that exceeded `diagnostics.metric_cardinality_limit` distinct attribute sets (the
    /// excess is aggregated in their `otel.metric.overflow = true` series).
    pub metrics_in_overflow: Vec<String>,
    /// Dropped events by reason code (only non-zero reasons).
    pub dropped: BTreeMap<String, u64>,
    /// Degraded events by reason code (only non-zero reasons).
    pub degraded: BTreeMap<String, u64>,
}

impl StatsSnapshot {
    /// Sum of `dropped`.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Dropped events for one reason.
    pub fn dropped_for(&self, reason: ReasonCode) -> u64 {
        self.dropped.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// Degraded events for one reason.
    pub fn degraded_for(&self, reason: ReasonCode) -> u64 {
        self.degraded.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// `emitted + recovered == delivered + sum(dropped) + spooled + in_flight` (always) and
    /// nothing in flight.
    pub fn is_settled(&self) -> bool {
        self.in_flight == 0
            && self.emitted + self.recovered == self.delivered + self.dropped_total() + self.spooled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in ReasonCode::ALL {
            assert!(seen.insert(r.as_str()));
            assert!(r
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_'));
            assert_eq!(ReasonCode::ALL[r.index()], r);
        }
    }

    #[test]
    fn serialized_name_is_the_stable_name() {
        for r in ReasonCode::ALL {
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(json, format!("\"{}\"", r.as_str()));
            assert_eq!(ReasonCode::from_index(r.index()), Some(r));
        }
    }
}
