//! Trace sinks: where finished spans go, each behind its own bounded queue.
//!
//! The enterprise exporter and every community sink implement [`TraceSink`]. The batcher never
//! calls a sink directly: each sink has a `SinkWorker` (a task on the export runtime) with a
//! bounded queue of batches (`trace_batcher.sink_queue_batches`). When the enterprise sink's
//! queue is full the batcher waits for room (backpressure: the trace queue fills behind it, then
//! the gateway queue, then `emit()` refuses). A tenant sink fills only its own queue; when it is
//! full that sink's copy is dropped and counted, and the other sinks carry on.
//!
//! Event accounting: the events of one batch are split into *groups* that share a destination
//! set. Each group has a `GroupTracker`; every sink that receives the group reports to it once.
//! The first success settles the group's events as **delivered** (another destination may be
//! holding its batch through an outage); if every destination fails, the last report settles
//! them as **dropped** under the first failure's reason.

use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::sync::mpsc;

use opentelemetry_sdk::Resource;

use super::encode::Frame;
use super::wire::{WireSender, WireSignal};
use crate::config::HoldPolicy;
use crate::diagnostics::exporters::ExporterStats;
use crate::diagnostics::ledger::{Accounted, Holder, Outcome};
use crate::diagnostics::recorder::{Detail, EventRef, Stage};
use crate::diagnostics::{Counters, ReasonCode};

/// Why a sink could not take a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// A transient or unknown failure, after the sink's own retries.
    #[error("export failed: {0}")]
    Failed(String),
    /// The backend refused the data as invalid; it will never accept it, so it is not retried.
    #[error("export rejected: {0}")]
    Rejected(String),
    /// The sink did not answer within its timeout.
    #[error("export timed out after {0:?}")]
    Timeout(Duration),
}

impl SinkError {
    /// Calls `f` with `result` as a destination reports it: the reason code and the error's
    /// text on failure.
    pub(crate) fn as_report<R>(
        result: &Result<(), SinkError>,
        f: impl FnOnce(Result<(), (ReasonCode, &str)>) -> R,
    ) -> R {
        match result {
            Ok(()) => f(Ok(())),
            Err(e) => f(Err((e.reason(), &e.to_string()))),
        }
    }

    /// The reason code events are dropped under when this was the only destination.
    pub fn reason(&self) -> ReasonCode {
        match self {
            SinkError::Rejected(_) => ReasonCode::ExportRejected,
            SinkError::Failed(_) | SinkError::Timeout(_) => ReasonCode::ExportFailed,
        }
    }
}

/// A destination for finished spans. Implement it to add a community sink (a tracing provider of
/// your own); the gateway gives each sink its own bounded queue, retries nothing on its behalf
/// and never calls `export` concurrently on one sink.
pub trait TraceSink: Send + Sync + Debug + 'static {
    /// A short name for counters and logs. Must not contain credentials.
    fn name(&self) -> &str;

    /// Exports one batch. Must finish or fail in bounded time (the worker also applies a timeout).
    /// The batch is borrowed: after a transient failure the worker holds it and calls `export`
    /// again with the same spans while the backend is away.
    fn export<'a>(&'a self, batch: &'a [SpanData]) -> BoxFuture<'a, Result<(), SinkError>>;

    /// Releases resources at shutdown, after the last batch.
    fn shutdown(&self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink that accepts every batch and keeps nothing: the enterprise destination under
/// `export.local_output = "discard"`, and a baseline for benchmarks.
#[derive(Debug)]
pub struct DiscardSink {
    name: String,
}

impl DiscardSink {
    /// A discarding sink called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        DiscardSink { name: name.into() }
    }
}

impl TraceSink for DiscardSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn export<'a>(&'a self, _batch: &'a [SpanData]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Classifies an OTLP exporter error message. opentelemetry-otlp 0.33 reports the final status
/// after its own retries as "... with gRPC code: <Code>" or "... with status code: <NNN>". A
/// malformed-data answer (gRPC `InvalidArgument`, HTTP 400) is a rejection: the backend will never
/// accept that data, so it is counted `export_rejected` and never retried. Anything else is a
/// failure (`export_failed`).
pub(crate) fn classify_otlp_error(msg: String) -> SinkError {
    let grpc_code = msg
        .split("gRPC code:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|c| c.trim_matches(|ch: char| !ch.is_ascii_alphanumeric()));
    let http_status = msg
        .split("status code:")
        .nth(1)
        .and_then(|rest| rest.trim_start().get(..3))
        .and_then(|c| c.parse::<u16>().ok());
    let rejected = matches!(grpc_code, Some("InvalidArgument")) || http_status == Some(400);
    if rejected {
        SinkError::Rejected(msg)
    } else {
        SinkError::Failed(msg)
    }
}

/// A sink over `opentelemetry_otlp::SpanExporter` (gRPC or HTTP/protobuf).
#[derive(Debug)]
pub struct OtlpTraceSink {
    name: String,
    exporter: opentelemetry_otlp::SpanExporter,
}

impl OtlpTraceSink {
    /// Wraps a built exporter. The resource must already be set on it.
    pub fn new(name: impl Into<String>, exporter: opentelemetry_otlp::SpanExporter) -> Self {
        OtlpTraceSink {
            name: name.into(),
            exporter,
        }
    }
}

impl TraceSink for OtlpTraceSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn export<'a>(&'a self, batch: &'a [SpanData]) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            // The SDK exporter takes ownership; the copy is what lets the worker retry.
            self.exporter
                .export(batch.to_vec())
                .await
                .map_err(|e| classify_otlp_error(e.to_string()))
        })
    }

    fn shutdown(&self) -> Result<(), SinkError> {
        self.exporter
            .shutdown()
            .map_err(|e| SinkError::Failed(e.to_string()))
    }
}

/// The outcome slot of one group of trace events (see the module docs). It also writes each
/// event's journey: one step per destination, then the final outcome.
#[derive(Debug)]
pub(crate) struct GroupTracker {
    /// Its events; a disk spool may tally them (see `Accounted`) while its record waits.
    events: parking_lot::Mutex<Accounted>,
    /// How many (fixed: a tally keeps the count).
    len: usize,
    remaining: AtomicUsize,
    /// Set by the first success: the group is delivered then, whatever the other destinations
    /// do later (one of them may be holding its batch through an outage).
    settled: AtomicBool,
    first_failure: AtomicU8,
    counters: Arc<Counters>,
}

const NO_FAILURE: u8 = u8::MAX;

impl GroupTracker {
    /// A group of `events` going to `destinations` sinks.
    pub(crate) fn new(
        events: Vec<EventRef>,
        destinations: usize,
        counters: Arc<Counters>,
    ) -> Arc<Self> {
        Arc::new(GroupTracker {
            len: events.len(),
            events: parking_lot::Mutex::new(Accounted::Detailed(events)),
            remaining: AtomicUsize::new(destinations),
            settled: AtomicBool::new(false),
            first_failure: AtomicU8::new(NO_FAILURE),
            counters,
        })
    }

    /// The number of events in the group.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Notes in each event's journey that its batch is in a disk spool (`detail`: destination
    /// and record id).
    pub(crate) fn note_spooled(&self, detail: &str) {
        for ev in self.events.lock().detailed() {
            self.counters
                .recorder()
                .record(ev, Stage::Spooled, None, Some(detail));
        }
    }

    /// Lets the events go (their journeys end `on_disk`), keeping a tally: a disk spool's
    /// backlog beyond what the recorder follows.
    pub(crate) fn tally(&self, detail: &str) {
        self.events.lock().tally(self.counters.recorder(), detail);
    }

    /// At shutdown: the group's record is still in `destination`'s spool. Unless another
    /// destination delivered it already, its events leave the process as spooled.
    pub(crate) fn settle_spooled(&self, destination: &Detail) {
        if !self.settled.swap(true, Ordering::AcqRel) {
            let outcome = Outcome::Spooled {
                destination: destination.clone(),
            };
            self.counters
                .settle_accounted(&self.events.lock(), Holder::TracePath, outcome);
        }
    }

    /// Notes in each event's journey that `destination` failed and the batch is held for
    /// another try (no settlement).
    pub(crate) fn note_held(&self, destination: &str, error: &str) {
        let detail = format!("{destination}: {error}; held, retrying");
        for ev in self.events.lock().detailed() {
            self.counters.recorder().record(
                ev,
                Stage::ExportFailed,
                Some(ReasonCode::ExportFailed),
                Some(&detail),
            );
        }
    }

    /// One destination's result. The first success settles the group as delivered; if every
    /// destination fails, the last report settles it as dropped under the first failure's
    /// reason.
    pub(crate) fn report(&self, destination: &Arc<str>, result: Result<(), (ReasonCode, &str)>) {
        let rec = self.counters.recorder();
        match result {
            Ok(()) => {
                let destination = Detail::Shared(destination.clone());
                let events = self.events.lock();
                if !self.settled.swap(true, Ordering::AcqRel) {
                    let outcome = Outcome::Delivered { destination };
                    self.counters
                        .settle_accounted(&events, Holder::TracePath, outcome);
                } else {
                    rec.record_batch(events.detailed(), &[(Stage::Exported, Some(destination))]);
                }
            }
            Err((reason, error)) => {
                let _ = self.first_failure.compare_exchange(
                    NO_FAILURE,
                    reason.index() as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
                let detail = format!("{destination}: {error}");
                for ev in self.events.lock().detailed() {
                    rec.record(ev, Stage::ExportFailed, Some(reason), Some(&detail));
                }
            }
        }
        let last = self.remaining.fetch_sub(1, Ordering::AcqRel) == 1;
        if last && !self.settled.swap(true, Ordering::AcqRel) {
            let idx = self.first_failure.load(Ordering::Acquire);
            let reason = ReasonCode::from_index(idx as usize).unwrap_or(ReasonCode::ExportFailed);
            self.counters.settle_accounted(
                &self.events.lock(),
                Holder::TracePath,
                Outcome::dropped(reason),
            );
        }
    }
}

/// The spans of one job, in the form its destination takes (`SinkWorker::takes_encoded`).
#[derive(Debug)]
pub(crate) enum SpanBatch {
    /// SDK values: what a [`TraceSink`] (JSON lines, SQLite, Parquet, a host's sink) takes.
    Values(Vec<SpanData>),
    /// OTLP protobuf written straight from the envelopes (`export::encode`): a run of complete
    /// `ScopeSpans.spans` entries, `count` spans. What an OTLP destination (sent as they are)
    /// and the disk spool (stored as they are) take.
    Encoded { entries: Vec<u8>, count: usize },
}

impl SpanBatch {
    /// How many spans.
    pub(crate) fn len(&self) -> usize {
        match self {
            SpanBatch::Values(v) => v.len(),
            SpanBatch::Encoded { count, .. } => *count,
        }
    }

    /// The `ExportTraceServiceRequest` of these spans under `frame`'s resource and scope.
    pub(crate) fn request(&self, frame: &Frame, resource: &Resource) -> Vec<u8> {
        match self {
            SpanBatch::Values(v) => super::wire::encode_spans(v, resource),
            SpanBatch::Encoded { entries, .. } => frame.request(std::iter::once(&entries[..])),
        }
    }
}

/// What a sink worker is asked to do.
#[derive(Debug)]
pub(crate) enum SinkJob {
    /// Export these spans and report to these groups.
    Export {
        spans: SpanBatch,
        groups: Vec<Arc<GroupTracker>>,
    },
}

/// Where a worker sends: a [`TraceSink`] (SDK values), or encoded requests straight to an
/// OTLP endpoint (`None`: `export.local_output = "discard"`, accepted and thrown away).
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per destination at start, never queued or copied"
)]
pub(crate) enum Target {
    Sink(Arc<dyn TraceSink>),
    Wire {
        sender: Option<WireSender>,
        frame: Frame,
        resource: Resource,
    },
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Target::Sink(s) => s.name(),
            Target::Wire {
                sender: Some(_), ..
            } => "enterprise",
            Target::Wire { sender: None, .. } => "discard",
        }
    }

    /// Whether jobs for it should carry encoded spans.
    fn takes_encoded(&self) -> bool {
        matches!(self, Target::Wire { .. })
    }

    fn shutdown(&self) {
        if let Target::Sink(s) = self {
            let _ = s.shutdown();
        }
    }
}

/// What one export attempt sends: built once per job, sent again unchanged while held.
enum Prepared {
    Values(Vec<SpanData>),
    Request(bytes::Bytes),
    Discard,
    /// Encoded spans for a sink that takes values: cannot happen (the batcher builds what the
    /// worker takes); failed, counted, if it ever does.
    Mismatch,
}

/// What one worker task owns.
struct WorkerState {
    name: Arc<str>,
    target: Target,
    timeout: Duration,
    hold: HoldPolicy,
    counters: Arc<Counters>,
    stats: Arc<ExporterStats>,
}

impl WorkerState {
    /// Exports one batch; while the failure is transient, holds it and tries again with
    /// exponential backoff (up to `retry.max_batch_age_secs`). Batches behind it wait in the
    /// bounded queue meanwhile. A rejection is final at once.
    async fn export_held(&self, spans: SpanBatch, groups: Vec<Arc<GroupTracker>>) {
        let n = spans.len() as u64;
        let prepared = match (&self.target, spans) {
            (Target::Sink(_), SpanBatch::Values(v)) => Prepared::Values(v),
            (Target::Sink(_), SpanBatch::Encoded { .. }) => Prepared::Mismatch,
            (Target::Wire { sender: None, .. }, _) => Prepared::Discard,
            (
                Target::Wire {
                    frame, resource, ..
                },
                spans,
            ) => Prepared::Request(spans.request(frame, resource).into()),
        };
        let held_since = std::time::Instant::now();
        let mut wait = self.hold.initial;
        let result = loop {
            let started = std::time::Instant::now();
            let result = match (&self.target, &prepared) {
                (Target::Sink(sink), Prepared::Values(spans)) => {
                    match tokio::time::timeout(self.timeout, sink.export(spans)).await {
                        Ok(r) => r,
                        Err(_) => Err(SinkError::Timeout(self.timeout)),
                    }
                }
                (
                    Target::Wire {
                        sender: Some(sender),
                        ..
                    },
                    Prepared::Request(body),
                ) => sender.send(WireSignal::Traces, body.clone()).await,
                (_, Prepared::Discard) => Ok(()),
                _ => Err(SinkError::Rejected(
                    "internal: spans in a form this destination does not take".into(),
                )),
            };
            self.stats.record_call(n, result.is_ok(), started.elapsed());
            match &result {
                Ok(()) => break result,
                Err(SinkError::Rejected(_)) => break result,
                // Held long enough: give up on this batch.
                Err(_) if held_since.elapsed() + wait > self.hold.max_age => break result,
                Err(e) => {
                    Counters::add(&self.counters.export_batches_failed, 1);
                    if wait == self.hold.initial {
                        let error = e.to_string();
                        for g in &groups {
                            g.note_held(&self.name, &error);
                        }
                    }
                    self.counters
                        .log
                        .warn_limited("trace sink export failed; batch held", || {
                            tracing::warn!(
                                sink = %self.counters.log.sanitize(&self.name),
                                spans = n,
                                error = %self.counters.log.sanitize(&e.to_string()),
                                retry_in_ms = wait.as_millis() as u64,
                                "trace sink export failed; batch held"
                            )
                        });
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(self.hold.max);
                }
            }
        };
        match &result {
            Ok(()) => {
                Counters::add(&self.counters.exported_spans, n);
                Counters::add(&self.counters.export_batches_ok, 1);
            }
            Err(e) => {
                Counters::add(&self.counters.export_batches_failed, 1);
                Counters::add(&self.counters.sink_spans_failed, n);
                self.counters
                    .log
                    .warn_limited("trace sink export failed", || {
                        tracing::warn!(
                            sink = %self.counters.log.sanitize(&self.name),
                            spans = n,
                            error = %self.counters.log.sanitize(&e.to_string()),
                            "trace sink export failed"
                        )
                    });
            }
        }
        SinkError::as_report(&result, |r| {
            for g in groups {
                g.report(&self.name, r);
            }
        });
    }
}

/// The sending side of one sink's queue.
#[derive(Debug, Clone)]
pub(crate) struct SinkWorker {
    pub(crate) name: Arc<str>,
    tx: mpsc::Sender<SinkJob>,
    pub(crate) stats: Arc<ExporterStats>,
    /// It takes encoded spans ([`SpanBatch::Encoded`]).
    encoded: bool,
}

/// How every sink worker of a gateway runs (`[trace_batcher]`, `[otlp]`, `[retry]`).
#[derive(Debug, Clone)]
pub(crate) struct SinkWorkerParams {
    /// Batches its queue holds (`trace_batcher.sink_queue_batches`).
    pub(crate) queue_batches: usize,
    /// Batches exported (or held) at once (`trace_batcher.sink_concurrency`).
    pub(crate) concurrency: usize,
    /// One export call's limit (`otlp.timeout_ms`).
    pub(crate) timeout: Duration,
    /// How a failing batch is held and retried (`[retry]`).
    pub(crate) hold: HoldPolicy,
    /// The gateway's ledger.
    pub(crate) counters: Arc<Counters>,
    /// The export runtime the worker runs on.
    pub(crate) rt: tokio::runtime::Handle,
}

impl SinkWorker {
    /// Starts the worker for `target`.
    pub(crate) fn spawn(target: Target, params: &SinkWorkerParams) -> Self {
        let name = params.counters.log.sanitize(target.name()).into_owned();
        let stats = params.counters.exporters.register(&name, "traces");
        Self::spawn_with_stats(target, params, stats)
    }

    /// [`spawn`](Self::spawn) with counters the caller registered (a tenant sink keeps its
    /// counters across closing and reopening).
    pub(crate) fn spawn_with_stats(
        target: Target,
        params: &SinkWorkerParams,
        stats: Arc<ExporterStats>,
    ) -> Self {
        let SinkWorkerParams {
            queue_batches,
            concurrency,
            timeout,
            hold,
            counters,
            rt,
        } = params.clone();
        let (tx, rx) = mpsc::channel::<SinkJob>(queue_batches);
        // Sanitized once here: every journey step names its destination with this string.
        let name: Arc<str> = Arc::from(counters.log.sanitize(target.name()).as_ref());
        let encoded = target.takes_encoded();
        let worker = WorkerState {
            name: name.clone(),
            target,
            timeout,
            hold,
            counters,
            stats: stats.clone(),
        };
        rt.spawn(async move {
            // Up to `concurrency` batches are exported (or held) at once; with 1 this is the
            // plain sequential loop of the OTel exporter contract.
            let worker = &worker;
            futures::StreamExt::for_each_concurrent(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                concurrency.max(1),
                |job| async move {
                    match job {
                        SinkJob::Export { spans, groups } => {
                            worker.export_held(spans, groups).await
                        }
                    }
                },
            )
            .await;
            worker.target.shutdown();
        });
        SinkWorker {
            name,
            tx,
            stats,
            encoded,
        }
    }

    /// A destination whose queue is read by a worker of its own (the spooled one), taking
    /// encoded spans or SDK values.
    pub(crate) fn from_channel(
        name: Arc<str>,
        tx: mpsc::Sender<SinkJob>,
        stats: Arc<ExporterStats>,
        encoded: bool,
    ) -> Self {
        SinkWorker {
            name,
            tx,
            stats,
            encoded,
        }
    }

    /// Whether it takes encoded spans ([`SpanBatch::Encoded`]): an OTLP destination or a disk
    /// spool without a SQLite copy. Every worker takes SDK values.
    pub(crate) fn takes_encoded(&self) -> bool {
        self.encoded
    }

    /// (batches waiting, capacity) now; `None` once the queue is closed.
    pub(crate) fn depth(&self) -> Option<(usize, usize)> {
        (!self.tx.is_closed()).then(|| {
            (
                self.tx.max_capacity() - self.tx.capacity(),
                self.tx.max_capacity(),
            )
        })
    }

    /// A reader of (batches waiting, capacity) that does not keep the queue open.
    pub(crate) fn depth_reader(&self) -> crate::diagnostics::probes::QueueReader {
        let weak = self.tx.downgrade();
        Box::new(move || {
            weak.upgrade()
                .map(|tx| (tx.max_capacity() - tx.capacity(), tx.max_capacity()))
        })
    }

    /// Queues a job, waiting for room as long as it takes (the enterprise destination:
    /// backpressure). A closed queue gives the job back.
    pub(crate) async fn send(&self, job: SinkJob) -> Result<(), SinkJob> {
        self.tx.send(job).await.map_err(|e| e.0)
    }

    /// Queues a job without waiting; a full queue gives the job back.
    pub(crate) fn try_send(&self, job: SinkJob) -> Result<(), SinkJob> {
        self.tx.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => j,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_errors_are_classified_from_their_real_messages() {
        let rejected = [
            "Operation failed: TonicTracesClient export failed with gRPC code: InvalidArgument",
            "Operation failed: HTTP export failed with status code: 400",
        ];
        for m in rejected {
            assert!(
                matches!(classify_otlp_error(m.into()), SinkError::Rejected(_)),
                "{m}"
            );
        }
        let failed = [
            "Operation failed: TonicTracesClient export failed with gRPC code: Unavailable",
            "Operation failed: HTTP export failed with status code: 503",
            "Operation failed: HTTP export failed with status code: 429",
            "connection refused",
        ];
        for m in failed {
            assert!(
                matches!(classify_otlp_error(m.into()), SinkError::Failed(_)),
                "{m}"
            );
        }
    }
}
