//! The log batcher: a bounded queue of log records, exported in batches on the export runtime.
//!
//! The SDK's own `BatchLogProcessor` is not used because it cannot say which events a failed or
//! dropped batch carried. Here every record may carry the accounting of the metric/log event it
//! represents: when its batch is exported the event is **delivered**; when the export fails it is
//! **dropped** (`export_failed`). Companion logs of spans carry no accounting (their event is
//! accounted by its span).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

use super::encode::Frame;
use super::jsonl::JsonlLogExporter;
use super::sink::classify_otlp_error;
use super::spooled::{RecordOwner, SpoolControl, SpoolSettings, Stored};
use super::wire::{WireSender, WireSignal};
use crate::config::HoldPolicy;
use crate::diagnostics::exporters::ExporterStats;
use crate::diagnostics::ledger::{Accounted, Holder, Outcome};
use crate::diagnostics::recorder::{Detail, EventRef, Stage};
use crate::diagnostics::{Counters, ReasonCode};
use crate::spool::SpoolError;
use bytes::Bytes;

/// The log exporter in use (the SDK trait is not object safe).
#[derive(Debug)]
// One instance per gateway, built once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum LogBackend {
    /// The SDK's OTLP exporter: SDK records (with a SQLite copy, which needs them).
    Otlp(opentelemetry_otlp::LogExporter),
    /// Encoded requests straight to the OTLP endpoint (`export::encode`).
    Wire(WireSender),
    Jsonl(JsonlLogExporter),
    /// `export.local_output = "discard"`: accepted and thrown away.
    Discard,
}

impl LogBackend {
    pub(crate) fn set_resource(&mut self, r: &Resource) {
        match self {
            LogBackend::Otlp(e) => e.set_resource(r),
            LogBackend::Jsonl(e) => e.set_resource(r),
            LogBackend::Wire(_) | LogBackend::Discard => {}
        }
    }

    /// Whether it takes encoded records (see [`LogRecordForm`]).
    fn takes_encoded(&self) -> bool {
        matches!(self, LogBackend::Wire(_) | LogBackend::Discard)
    }

    fn shutdown(&self) {
        let _ = match self {
            LogBackend::Otlp(e) => e.shutdown(),
            LogBackend::Jsonl(e) => e.shutdown(),
            LogBackend::Wire(_) | LogBackend::Discard => Ok(()),
        };
    }
}

/// A log record as its producer built it: SDK values, or OTLP protobuf written straight from
/// the envelope (`export::encode`) when the destination takes encoded records
/// ([`LogBatcher::takes_encoded`]).
#[derive(Debug)]
pub(crate) enum LogRecordForm {
    /// Boxed: the encoded form is the common one, and a queue of them should not be sized for
    /// the SDK record.
    Sdk(Box<SdkLogRecord>),
    /// One complete `ScopeLogs.log_records` entry (usually a slice of a buffer the records of a
    /// whole flush share).
    Encoded(Bytes),
}

/// One record, and the metric/log event it accounts for (none for a span's companion).
pub(crate) type LogItem = (LogRecordForm, Option<EventRef>);

/// A record a producer made during a batch, until the batch's encoded records are shared out
/// ([`share_out`]).
#[derive(Debug)]
pub(crate) enum PendingRecord {
    /// Its bytes in the batch's buffer of encoded records.
    Encoded(std::ops::Range<usize>),
    /// Boxed, as in [`LogRecordForm`].
    Sdk(Box<SdkLogRecord>),
}

/// The items of a batch's records: the encoded ones become slices of one shared buffer
/// (`entries`, one allocation for the batch).
pub(crate) fn share_out(
    pending: impl IntoIterator<Item = (PendingRecord, Option<EventRef>)>,
    entries: Vec<u8>,
) -> Vec<LogItem> {
    let entries = Bytes::from(entries);
    pending
        .into_iter()
        .map(|(r, ev)| match r {
            PendingRecord::Encoded(range) => (LogRecordForm::Encoded(entries.slice(range)), ev),
            PendingRecord::Sdk(r) => (LogRecordForm::Sdk(r), ev),
        })
        .collect()
}

/// What the log batcher is sent: records travel in batches, so a producer wakes the batcher
/// once per batch rather than once per record.
#[derive(Debug)]
pub(crate) enum LogJob {
    Records(Vec<LogItem>),
    Flush(oneshot::Sender<()>),
}

/// The sending side of the log batcher. The bound (`export.log_queue_capacity`) counts records,
/// not messages: `room` holds one permit per free record slot; a sender takes permits before it
/// sends a batch (at once with [`LogBatcher::try_send_many`], waiting with
/// [`LogBatcher::send_many`]) and the batcher gives them back when it takes the batch.
#[derive(Debug, Clone)]
pub(crate) struct LogBatcher {
    tx: mpsc::Sender<LogJob>,
    room: Arc<tokio::sync::Semaphore>,
    capacity: usize,
    stats: Arc<ExporterStats>,
    /// The disk spool the batches go to, with `[spool] kind = "disk"`.
    pub(crate) spool: Option<Arc<SpoolControl>>,
    /// Its destination takes encoded records.
    encoded: bool,
}

/// Settings of the log batcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogBatcherSettings {
    pub(crate) capacity: usize,
    pub(crate) max_batch: usize,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) hold: HoldPolicy,
    /// Export calls in flight at once (`export.log_concurrency`).
    pub(crate) concurrency: usize,
}

/// The most records the log queue holds, whatever the configuration says (a semaphore takes
/// permits in `u32`).
const MAX_LOG_QUEUE_PERMITS: usize = u32::MAX as usize;

/// The most log export calls in flight at once, whatever the configuration says (a semaphore
/// counts in `u32`).
const MAX_LOG_CONCURRENCY: usize = 1024;

impl LogBatcher {
    /// Starts the batcher; with `spool` the batches go through a disk spool, which can fail to
    /// open. `resource` is the one the requests carry.
    pub(crate) fn spawn(
        backend: LogBackend,
        settings: LogBatcherSettings,
        counters: Arc<Counters>,
        rt: &tokio::runtime::Handle,
        spool: Option<SpoolSettings>,
        resource: Resource,
        #[cfg(feature = "analytics")] sqlite: Option<super::sqlite::SqliteStore>,
    ) -> Result<Self, SpoolError> {
        // Each message holds at least one record, so `capacity` messages never fill before
        // `capacity` records are reserved.
        let capacity = settings.capacity.clamp(1, MAX_LOG_QUEUE_PERMITS);
        let (tx, mut rx) = mpsc::channel::<LogJob>(capacity);
        let room = Arc::new(tokio::sync::Semaphore::new(capacity));
        let scope: InstrumentationScope = super::mapping::scope();
        let stats = counters.exporters.register("enterprise", "logs");
        let queue_stats = stats.clone();
        let taken = room.clone();
        let spool = match spool {
            Some(spool_settings) => Some(SpoolControl::open(
                "enterprise logs",
                Holder::MetricLogPath,
                spool_settings,
                counters.clone(),
                stats.clone(),
                rt,
            )?),
            None => None,
        };
        let spool_control = spool.clone();
        // Encoded records go to an OTLP endpoint or a disk spool as they are; a SQLite copy
        // needs the SDK values.
        #[cfg(feature = "analytics")]
        let values_wanted = sqlite.is_some();
        #[cfg(not(feature = "analytics"))]
        let values_wanted = false;
        let encoded = (spool.is_some() || backend.takes_encoded()) && !values_wanted;
        let backend = Arc::new(Destination {
            frame: Frame::new(&resource, &scope),
            backend,
            spool,
            #[cfg(feature = "analytics")]
            sqlite,
        });
        let concurrency = settings.concurrency.clamp(1, MAX_LOG_CONCURRENCY);
        // One permit per export call in flight.
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
        rt.spawn(async move {
            let max_batch = settings.max_batch.max(1);
            let mut batch: Vec<LogItem> = Vec::with_capacity(max_batch);
            let mut flush_waiters: Vec<oneshot::Sender<()>> = Vec::new();
            let take = |job: LogJob, batch: &mut Vec<LogItem>, waiters: &mut Vec<_>| match job {
                LogJob::Records(items) => {
                    taken.add_permits(items.len());
                    batch.extend(items);
                }
                LogJob::Flush(done) => waiters.push(done),
            };
            loop {
                // Wait for the first records, then gather until the batch is full, a flush is
                // asked for, or the interval since the first records has passed: no record
                // waits for a next one to arrive.
                match rx.recv().await {
                    Some(j) => take(j, &mut batch, &mut flush_waiters),
                    None => break,
                }
                let deadline = tokio::time::Instant::now() + settings.interval;
                while batch.len() < max_batch && flush_waiters.is_empty() {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(j)) => take(j, &mut batch, &mut flush_waiters),
                        Ok(None) | Err(_) => break,
                    }
                }
                while !batch.is_empty() {
                    let chunk: Vec<LogItem> = if batch.len() > max_batch {
                        batch.drain(..max_batch).collect()
                    } else {
                        std::mem::take(&mut batch)
                    };
                    // Waits while `concurrency` exports are in flight: records keep waiting in
                    // the bounded queue meanwhile, as they would behind one export.
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let (backend, scope, counters, stats) = (
                        backend.clone(),
                        scope.clone(),
                        counters.clone(),
                        stats.clone(),
                    );
                    tokio::spawn(async move {
                        let mut chunk = chunk;
                        match &backend.spool {
                            Some(spool) => store_batch(&backend, spool, chunk, &counters).await,
                            None => {
                                export_batch(
                                    &backend,
                                    &scope,
                                    &mut chunk,
                                    settings.timeout,
                                    settings.hold,
                                    &counters,
                                    &stats,
                                )
                                .await
                            }
                        }
                        drop(permit);
                    });
                }
                if !flush_waiters.is_empty() {
                    // A flush is answered once every record taken before it is exported or
                    // failed: wait for the exports in flight.
                    let _all = permits.acquire_many(concurrency as u32).await;
                    for w in flush_waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
            }
            let _all = permits.acquire_many(concurrency as u32).await;
            backend.backend.shutdown();
        });
        Ok(LogBatcher {
            tx,
            room,
            capacity,
            stats: queue_stats,
            spool: spool_control,
            encoded,
        })
    }

    /// Whether producers should send encoded records ([`LogRecordForm::Encoded`]): the
    /// destination is an OTLP endpoint, a disk spool or nothing, with no SQLite copy.
    pub(crate) fn takes_encoded(&self) -> bool {
        self.encoded
    }

    /// Records waiting in the queue, not yet taken by the batcher.
    pub(crate) fn queued(&self) -> usize {
        self.capacity.saturating_sub(self.room.available_permits())
    }

    /// Queues as many of `items` as the bound leaves room for, in order, without waiting.
    /// Returns the ones that did not fit (queue full, or closed): the caller accounts for them,
    /// or waits for room with [`LogBatcher::send_many`].
    pub(crate) fn try_send_many(&self, mut items: Vec<LogItem>) -> Vec<LogItem> {
        let n = items.len();
        if n == 0 {
            return items;
        }
        let fit = loop {
            let fit = self.room.available_permits().min(n);
            if fit == 0 {
                break 0;
            }
            // `fit` <= the capacity, which is at most MAX_LOG_QUEUE_PERMITS (a u32).
            match self.room.try_acquire_many(fit as u32) {
                Ok(permits) => {
                    permits.forget();
                    break fit;
                }
                // Another sender took some meanwhile: look again.
                Err(tokio::sync::TryAcquireError::NoPermits) => continue,
                Err(tokio::sync::TryAcquireError::Closed) => break 0,
            }
        };
        let mut rest = items.split_off(fit);
        if fit > 0 {
            if let Err(e) = self.tx.try_send(LogJob::Records(items)) {
                self.room.add_permits(fit);
                if let LogJob::Records(mut back) = e.into_inner() {
                    back.append(&mut rest);
                    rest = back;
                }
            }
        }
        if !rest.is_empty() {
            self.stats.record_queue_full(rest.len() as u64);
        }
        rest
    }

    /// Queues `items`, waiting for room as long as it takes (backpressure: the caller is an
    /// actor that takes nothing else meanwhile). Returns the ones the closed batcher refused.
    pub(crate) async fn send_many(&self, mut items: Vec<LogItem>) -> Vec<LogItem> {
        while !items.is_empty() {
            let take = items.len().min(self.capacity);
            let Ok(permits) = self.room.acquire_many(take as u32).await else {
                return items;
            };
            permits.forget();
            let rest = items.split_off(take);
            if let Err(e) = self.tx.send(LogJob::Records(items)).await {
                self.room.add_permits(take);
                let LogJob::Records(mut back) = e.0 else {
                    return rest;
                };
                back.extend(rest);
                return back;
            }
            items = rest;
        }
        items
    }

    /// A reader of (records waiting, capacity) that does not keep the queue open.
    pub(crate) fn depth_reader(&self) -> crate::diagnostics::probes::QueueReader {
        let weak = self.tx.downgrade();
        let room = self.room.clone();
        let capacity = self.capacity;
        Box::new(move || {
            weak.upgrade()
                .map(|_| (capacity.saturating_sub(room.available_permits()), capacity))
        })
    }

    /// Waits until every record queued so far is exported (or failed).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(LogJob::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The log exporter, the disk spool in front of it (`[spool] kind = "disk"`), and the SQLite
/// sink that keeps a copy of what it exported (or spooled).
#[derive(Debug)]
struct Destination {
    backend: LogBackend,
    /// With a disk spool, batches are appended there and sent from it; `backend` is unused.
    spool: Option<Arc<SpoolControl>>,
    /// The resource the requests carry and the scope, encoded.
    frame: Frame,
    #[cfg(feature = "analytics")]
    sqlite: Option<super::sqlite::SqliteStore>,
}

/// A spooled batch of log records: the metric/log events it decides, and its companions.
#[derive(Debug)]
pub(crate) struct LogRecords {
    events: Accounted,
    companions: u64,
    records: u64,
    counters: Arc<Counters>,
}

impl LogRecords {
    /// A record that decides these metric/log events and carries no log record of theirs (the
    /// Redis Streams producer's: its events are delivered once appended to the stream).
    #[cfg(feature = "redis")]
    pub(crate) fn events_only(events: Vec<EventRef>, counters: Arc<Counters>) -> Self {
        LogRecords {
            events: Accounted::Detailed(events),
            companions: 0,
            records: 0,
            counters,
        }
    }
}

impl RecordOwner for LogRecords {
    fn events(&self) -> u64 {
        self.events.len() as u64
    }

    fn note_spooled(&self, detail: &str) {
        for ev in self.events.detailed() {
            self.counters
                .recorder()
                .record(ev, Stage::Spooled, None, Some(detail));
        }
    }

    fn tally(&mut self, detail: &str) {
        self.events.tally(self.counters.recorder(), detail);
    }

    fn note_held(&self, destination: &str, error: &str) {
        let detail = format!("{destination}: {error}; held, retrying");
        for ev in self.events.detailed() {
            self.counters.recorder().record(
                ev,
                Stage::ExportFailed,
                Some(ReasonCode::ExportFailed),
                Some(&detail),
            );
        }
    }

    fn finish(self: Box<Self>, destination: &Arc<str>, result: Result<(), (ReasonCode, &str)>) {
        let c = &self.counters;
        match result {
            Ok(()) => {
                Counters::add(&c.exported_log_records, self.records);
                let outcome = Outcome::Delivered {
                    destination: Detail::Shared(destination.clone()),
                };
                c.settle_accounted(&self.events, Holder::MetricLogPath, outcome);
                c.companions_done(self.companions, false);
            }
            Err((reason, error)) => {
                let detail = format!("{destination}: {error}");
                for ev in self.events.detailed() {
                    c.recorder()
                        .record(ev, Stage::ExportFailed, Some(reason), Some(&detail));
                }
                c.settle_accounted(
                    &self.events,
                    Holder::MetricLogPath,
                    Outcome::dropped(reason),
                );
                c.companions_done(self.companions, true);
            }
        }
    }

    fn leave(self: Box<Self>, destination: &Detail) {
        let outcome = Outcome::Spooled {
            destination: destination.clone(),
        };
        self.counters
            .settle_accounted(&self.events, Holder::MetricLogPath, outcome);
        // On disk, not lost: the next process sends them.
        self.counters.companions_done(self.companions, false);
    }
}

/// What one try of a log export sends.
enum Prepared<'a> {
    Sdk(Vec<(&'a SdkLogRecord, &'a InstrumentationScope)>),
    Request(Bytes),
    Discard,
    /// Encoded records for a destination that takes values: never, by construction; failed,
    /// counted, if it ever happens.
    Mismatch,
}

/// The records of a batch as SDK values, for a destination that takes them; `None` if one is
/// encoded (never, by construction: producers build what [`LogBatcher::takes_encoded`] says).
fn sdk_records(batch: &[LogItem]) -> Option<Vec<&SdkLogRecord>> {
    batch
        .iter()
        .map(|(r, _)| match r {
            LogRecordForm::Sdk(r) => Some(&**r),
            LogRecordForm::Encoded(_) => None,
        })
        .collect()
}

/// The `ExportLogsServiceRequest` of a batch: encoded records as they are, SDK ones through
/// the `opentelemetry-proto` transform.
fn request_of(frame: &Frame, batch: &[LogItem]) -> Vec<u8> {
    let mut converted = Vec::new();
    let mut ranges = Vec::with_capacity(batch.len());
    for (r, _) in batch {
        if let LogRecordForm::Sdk(r) = r {
            let start = converted.len();
            super::encode::write_sdk_log(&mut converted, r);
            ranges.push(start..converted.len());
        }
    }
    let mut sdk = ranges.into_iter();
    let parts = batch.iter().map(|(r, _)| match r {
        LogRecordForm::Encoded(b) => &b[..],
        LogRecordForm::Sdk(_) => sdk.next().map_or(&[][..], |range| &converted[range]),
    });
    // `request` walks the parts twice (their length, then their bytes).
    let parts: Vec<&[u8]> = parts.collect();
    frame.request(parts.into_iter())
}

/// Appends one batch to the disk spool (see `export::spooled`).
async fn store_batch(
    dest: &Arc<Destination>,
    spool: &Arc<SpoolControl>,
    mut chunk: Vec<LogItem>,
    counters: &Arc<Counters>,
) {
    let records = chunk.len() as u64;
    // The accounting moves to the spool's record.
    let events: Vec<EventRef> = chunk.iter_mut().filter_map(|(_, ev)| ev.take()).collect();
    let owner = Box::new(LogRecords {
        companions: records - events.len() as u64,
        events: Accounted::Detailed(events),
        records,
        counters: counters.clone(),
    });
    let d = dest.clone();
    let encode = move || (request_of(&d.frame, &chunk), chunk);
    if let Stored::Kept(_kept) = spool.store(encode, owner).await {
        // `[sinks.sqlite]`: a copy of what was spooled, once, never waited for.
        #[cfg(feature = "analytics")]
        if let Some(store) = &dest.sqlite {
            let records = _kept
                .into_iter()
                .filter_map(|(r, _)| match r {
                    LogRecordForm::Sdk(r) => Some(*r),
                    LogRecordForm::Encoded(_) => None,
                })
                .collect();
            store.enqueue(super::sqlite::Raw::Logs(records));
        }
    }
}

async fn export_batch(
    dest: &Destination,
    scope: &InstrumentationScope,
    batch: &mut Vec<LogItem>,
    timeout: Duration,
    hold: HoldPolicy,
    counters: &Counters,
    stats: &ExporterStats,
) {
    let events = batch.iter().filter(|(_, e)| e.is_some()).count() as u64;
    let n = batch.len() as u64;
    // What each try sends, built once.
    let prepared = match &dest.backend {
        LogBackend::Discard => Prepared::Discard,
        LogBackend::Wire(_) => Prepared::Request(request_of(&dest.frame, batch).into()),
        LogBackend::Otlp(_) | LogBackend::Jsonl(_) => match sdk_records(batch) {
            Some(records) => Prepared::Sdk(records.into_iter().map(|r| (r, scope)).collect()),
            None => Prepared::Mismatch,
        },
    };
    // While the failure is transient, the batch is held and tried again with backoff (records
    // arriving meanwhile wait in the bounded queue); a rejection is final at once.
    let held_since = std::time::Instant::now();
    let mut wait = hold.initial;
    let result = loop {
        let started = std::time::Instant::now();
        let sdk_error = |e: opentelemetry_sdk::error::OTelSdkError| {
            let msg = e.to_string();
            (classify_otlp_error(msg.clone()).reason(), msg)
        };
        let call = async {
            match (&dest.backend, &prepared) {
                (LogBackend::Otlp(e), Prepared::Sdk(refs)) => {
                    e.export(LogBatch::new(refs)).await.map_err(sdk_error)
                }
                (LogBackend::Jsonl(e), Prepared::Sdk(refs)) => {
                    e.export(LogBatch::new(refs)).await.map_err(sdk_error)
                }
                (LogBackend::Wire(w), Prepared::Request(body)) => w
                    .send(WireSignal::Logs, body.clone())
                    .await
                    .map_err(|e| (e.reason(), e.to_string())),
                (_, Prepared::Discard) => Ok(()),
                _ => Err((
                    ReasonCode::ExportRejected,
                    "internal: log records in a form this destination does not take".to_owned(),
                )),
            }
        };
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(r) => r,
            Err(_) => Err((
                ReasonCode::ExportFailed,
                format!("timed out after {timeout:?}"),
            )),
        };
        stats.record_call(n, result.is_ok(), started.elapsed());
        match &result {
            Ok(()) | Err((ReasonCode::ExportRejected, _)) => break result,
            Err(_) if held_since.elapsed() + wait > hold.max_age => break result,
            Err((_, error)) => {
                Counters::add(&counters.export_batches_failed, 1);
                if wait == hold.initial {
                    let detail = format!("enterprise logs: {error}; held, retrying");
                    for (_, ev) in batch.iter() {
                        if let Some(ev) = ev {
                            counters.recorder().record(
                                ev,
                                Stage::ExportFailed,
                                Some(ReasonCode::ExportFailed),
                                Some(&detail),
                            );
                        }
                    }
                }
                counters
                    .log
                    .warn_limited("log export failed; batch held", || {
                        tracing::warn!(
                            records = n,
                            error = %counters.log.sanitize(error),
                            retry_in_ms = wait.as_millis() as u64,
                            "log export failed; batch held"
                        )
                    });
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(hold.max);
            }
        }
    };
    drop(prepared);
    let companions = n - events;
    match result {
        Ok(()) => {
            // `[sinks.sqlite]`: a copy of what was exported, once, never waited for.
            #[cfg(feature = "analytics")]
            if let Some(store) = &dest.sqlite {
                let records = sdk_records(batch)
                    .unwrap_or_default()
                    .into_iter()
                    .cloned()
                    .collect();
                store.enqueue(super::sqlite::Raw::Logs(records));
            }
            Counters::add(&counters.exported_log_records, n);
            Counters::add(&counters.export_batches_ok, 1);
            counters.settle_all(
                batch.iter().filter_map(|(_, e)| e.as_ref()),
                Holder::MetricLogPath,
                Outcome::delivered_to("enterprise logs"),
            );
            counters.companions_done(companions, false);
        }
        Err((reason, error)) => {
            Counters::add(&counters.export_batches_failed, 1);
            let detail = format!("enterprise logs: {error}");
            let failed = batch.iter().filter_map(|(_, e)| e.as_ref());
            for ev in failed.clone() {
                counters
                    .recorder()
                    .record(ev, Stage::ExportFailed, Some(reason), Some(&detail));
            }
            counters.settle_all(failed, Holder::MetricLogPath, Outcome::dropped(reason));
            counters.companions_done(companions, true);
            counters.log.warn_limited(
                "log export failed",
                || tracing::warn!(records = n, events, reason = %reason, "log export failed"),
            );
        }
    }
    batch.clear();
}
