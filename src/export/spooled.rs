//! The enterprise destination through a disk spool (`[spool] kind = "disk"`): its spans and its
//! log records.
//!
//! Without a spool, a failing batch is held in memory and the batches behind it wait in bounded
//! queues (see `export::sink` and `export::logs`). With one, each of the two signals has a
//! [`SpoolControl`] around a [`DiskSpool`] (ADR 0004), in `{spool.path}/enterprise-traces` and
//! `{spool.path}/enterprise-logs`:
//!
//! - **storing**: the trace appender (a task reading the enterprise sink's queue; the batcher
//!   still waits for room there) and the log batcher hand each batch to [`SpoolControl::store`],
//!   which encodes it once (an OTLP `Export*ServiceRequest`) and appends it on a blocking thread.
//!   The batch's accounting (a [`RecordOwner`]) stays in memory under the record's id, and each
//!   event's journey gets a `spooled` step. A full budget answers by `spool.when_full`, and the
//!   events it costs are dropped as `spool_full`. A request the spool cannot take (an I/O error
//!   such as a full disk, or one larger than a quarter of the budget) is sent straight from
//!   memory instead, held like an unspooled batch: a disk fault costs that batch its crash
//!   safety, never its delivery.
//! - **sending**: a sender task per signal reads records in order and sends the bytes unchanged
//!   ([`WireSender`]), up to `trace_batcher.sink_concurrency` (spans) or
//!   `export.log_concurrency` (logs) at once; acknowledgements may come out of order, which the
//!   spool's watermark allows. A failing record is held and tried again with the `[retry]`
//!   backoff for as long as it takes (the budget, not an age, bounds the backlog); it is
//!   acknowledged once the backend accepted or rejected it, and its owner is told.
//!
//! **Accounting.** Records found on disk at start are *recovered*: their events are counted in
//! (`Counters::recover`) and settle when sent. At shutdown, once everything is on disk and the
//! backend is failing (or at the deadline), [`SpoolControl::leave`] stops the tasks, settles
//! every event whose record is still on disk as *spooled*, syncs the spool and releases its lock.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use super::encode::Frame;
use super::sink::{GroupTracker, SinkError, SinkJob, SinkWorker, SinkWorkerParams, SpanBatch};
use super::wire::{WireSender, WireSignal};
use crate::config::HoldPolicy;
use crate::diagnostics::exporters::ExporterStats;
use crate::diagnostics::ledger::{Holder, Outcome};
use crate::diagnostics::recorder::{Detail, EventRef, Stage};
use crate::diagnostics::{Counters, ReasonCode};
use crate::logging::LogScope;
use crate::spool::{DiskSpool, Recovery, SpoolError, SpoolOptions};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};

/// Where a spool's records go: sends one record's bytes as they were appended.
pub(crate) trait RecordSender: Send + Sync + std::fmt::Debug {
    /// Sends one record; `Rejected` acknowledges it as refused for good, `Failed` holds it.
    fn send(&self, body: Bytes) -> BoxFuture<'_, Result<(), SinkError>>;

    /// Up to `max` of the events a record carries, read back from its bytes (untrusted: from
    /// disk), for the journeys of records an earlier process left. None when it cannot tell.
    fn events_in(&self, body: &[u8], max: usize, log: &LogScope) -> Vec<EventRef> {
        let _ = (body, max, log);
        Vec::new()
    }

    /// The counter of exported items a recovered record adds to, one item per event (its
    /// item count is not kept); `None` when its items are not exported ones.
    fn items_counter<'c>(&self, counters: &'c Counters) -> Option<&'c AtomicU64> {
        let _ = counters;
        None
    }
}

/// OTLP export requests of one signal, sent as they are.
#[derive(Debug)]
pub(crate) struct OtlpRecords {
    /// The endpoint's sender.
    pub(crate) sender: WireSender,
    /// The requests' signal.
    pub(crate) signal: WireSignal,
}

impl RecordSender for OtlpRecords {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(self.sender.send(self.signal, body))
    }

    fn items_counter<'c>(&self, counters: &'c Counters) -> Option<&'c AtomicU64> {
        Some(match self.signal {
            WireSignal::Traces => &counters.exported_spans,
            WireSignal::Logs => &counters.exported_log_records,
        })
    }

    fn events_in(&self, body: &[u8], max: usize, log: &LogScope) -> Vec<EventRef> {
        use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        // Each span and log record carries its event's ids as attributes (`export::mapping`).
        match self.signal {
            WireSignal::Traces => ExportTraceServiceRequest::decode(body).map_or_else(
                |_| Vec::new(),
                |req| {
                    let spans = req
                        .resource_spans
                        .iter()
                        .flat_map(|r| &r.scope_spans)
                        .flat_map(|s| &s.spans)
                        .map(|s| (s.attributes.as_slice(), s.start_time_unix_nano));
                    events_of(spans, max, log)
                },
            ),
            WireSignal::Logs => ExportLogsServiceRequest::decode(body).map_or_else(
                |_| Vec::new(),
                |req| {
                    let records = req
                        .resource_logs
                        .iter()
                        .flat_map(|r| &r.scope_logs)
                        .flat_map(|s| &s.log_records)
                        .map(|l| (l.attributes.as_slice(), l.time_unix_nano));
                    events_of(records, max, log)
                },
            ),
        }
    }
}

/// The events of OTLP items (attributes, start time): those with an `event.id`, at most `max`.
fn events_of<'a>(
    items: impl Iterator<Item = (&'a [KeyValue], u64)>,
    max: usize,
    log: &LogScope,
) -> Vec<EventRef> {
    let text = |attrs: &'a [KeyValue], key: &str| -> Option<&'a str> {
        attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
            match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            }
        })
    };
    items
        .filter_map(|(attrs, at)| {
            let id = uuid::Uuid::parse_str(text(attrs, "event.id")?).ok()?;
            let created = std::time::UNIX_EPOCH + Duration::from_nanos(at);
            Some(EventRef::recovered(
                id,
                text(attrs, "correlation.id").unwrap_or_default(),
                text(attrs, "tenant.id").unwrap_or_default(),
                text(attrs, "telemetry.case").unwrap_or_default(),
                created,
                log,
            ))
        })
        .take(max)
        .collect()
}

/// The accounting a record carries: told once how the record ended.
pub(crate) trait RecordOwner: Send + Sync + std::fmt::Debug {
    /// Events whose outcome the record decides (its header's count).
    fn events(&self) -> u64;
    /// Notes in each event's journey that the batch is on disk (`detail`: destination, record).
    fn note_spooled(&self, detail: &str);
    /// Lets the events' details go (their journeys end `on_disk` with `detail`), keeping only
    /// what the ledger needs: the spool's backlog beyond what the recorder follows.
    fn tally(&mut self, detail: &str);
    /// Notes in each event's journey that a try failed and the record is held.
    fn note_held(&self, destination: &str, error: &str);
    /// The record was accepted, rejected, or lost (`spool_full`).
    fn finish(self: Box<Self>, destination: &Arc<str>, result: Result<(), (ReasonCode, &str)>);
    /// At shutdown: the record stays on disk; its events leave the process as spooled.
    fn leave(self: Box<Self>, destination: &Detail);
}

/// A record appended by this process, and how many of its events are followed in detail.
#[derive(Debug)]
struct Owned {
    owner: Box<dyn RecordOwner>,
    detailed: u64,
}

/// A record read and being sent.
#[derive(Debug)]
enum InHand {
    /// Appended by this process.
    Owned(Owned),
    /// Found on disk at start: this many events.
    Recovered(u64),
}

/// What the tasks and the shutdown share, under one lock.
#[derive(Debug)]
struct State {
    /// `None` once [`SpoolControl::leave`] closed it.
    spool: Option<DiskSpool>,
    /// Records appended by this process and not read yet, by id.
    tracked: BTreeMap<u64, Owned>,
    /// Records being sent (read, not acknowledged), by id.
    in_hand: BTreeMap<u64, InHand>,
    /// Events of recovered records not read yet.
    recovered_unread: u64,
}

/// One spooled signal of the enterprise destination.
#[derive(Debug)]
pub(crate) struct SpoolControl {
    name: Arc<str>,
    /// The spool's directory.
    dir: std::path::PathBuf,
    /// The stage whose gauge counts this signal's events.
    holder: Holder,
    state: Mutex<State>,
    /// Wakes the sender after an append, and every held try at `leave`.
    appended: Notify,
    /// The last try failed and a record is waiting to be tried again.
    holding: AtomicBool,
    /// Batches between their hand-over and the disk.
    appending: AtomicUsize,
    stopped: AtomicBool,
    /// Events of records on disk (tracked, in hand, or recovered and unread).
    on_disk_events: AtomicU64,
    /// Events of records on disk followed in detail (journeys and all); beyond
    /// `detailed_budget` a record's events are tallied, so memory does not grow with the
    /// backlog.
    detailed: AtomicU64,
    detailed_budget: u64,
    /// Events of recovered records given journeys so far (at most `detailed_budget`).
    recovered_journeys: AtomicU64,
    counters: Arc<Counters>,
    sender: Arc<dyn RecordSender>,
    hold: HoldPolicy,
    stats: Arc<ExporterStats>,
    /// Records lost to damage found at start.
    corrupt_at_open: u64,
    io_errors: AtomicU64,
    /// The last I/O error and when (for `/readyz`).
    last_io_error: Mutex<Option<(std::time::Instant, String)>>,
    /// Set once [`leave`](SpoolControl::leave) closed the spool (its lock is released then).
    left: Mutex<bool>,
    left_cv: parking_lot::Condvar,
}

/// How a spooled signal runs.
pub(crate) struct SpoolSettings {
    /// The spool's directory.
    pub(crate) dir: std::path::PathBuf,
    /// Its budget, segments, sync policy and `when_full`.
    pub(crate) opts: SpoolOptions,
    /// How often an idle spool is synced under `sync = "interval"` (`spool.sync_interval_ms`).
    pub(crate) tick: Duration,
    /// Where records are sent.
    pub(crate) sender: Arc<dyn RecordSender>,
    /// How a failing record is retried (`[retry]`).
    pub(crate) hold: HoldPolicy,
    /// Records sent at once.
    pub(crate) concurrency: usize,
    /// Events on disk followed in detail (`diagnostics.recorder_events`); the rest are tallied.
    pub(crate) detailed_events: u64,
    /// What this spool's last closing in this process left unsettled (a tenant sink's).
    pub(crate) stash: Option<Stash>,
}

/// What [`SpoolControl::store`] came to, for the caller's own bookkeeping.
pub(crate) enum Stored<T> {
    /// On disk (or, after a disk fault, sent from memory and accepted): the encoder's extra.
    Kept(T),
    /// Refused by the budget, rejected, closed, or failed: the owner was told.
    Not,
}

impl SpoolControl {
    /// Opens the spool in `settings.dir`, counts what it recovered (held by `holder`), and
    /// starts its sender and its sync ticker on `rt`. The records of `settings.stash` keep their
    /// accounting (they are not counted recovered).
    pub(crate) fn open(
        name: &str,
        holder: Holder,
        settings: SpoolSettings,
        counters: Arc<Counters>,
        stats: Arc<ExporterStats>,
        rt: &tokio::runtime::Handle,
    ) -> Result<Arc<Self>, SpoolError> {
        let stash = settings.stash;
        let (spool, recovery) = match DiskSpool::open(&settings.dir, settings.opts.clone()) {
            Ok(opened) => opened,
            Err(e) => {
                // The stash's records cannot be sent now: they stay on disk, settled spooled.
                if let Some(stash) = stash {
                    stash.leave();
                }
                return Err(e);
            }
        };
        let (tracked, stashed_recovered) = match stash {
            Some(s) => (s.owned, s.recovered),
            None => (BTreeMap::new(), 0),
        };
        let adopted = tracked.values().map(|o| o.owner.events()).sum::<u64>() + stashed_recovered;
        let detailed: u64 = tracked.values().map(|o| o.detailed).sum();
        let fresh = recovery.events.saturating_sub(adopted);
        if fresh == recovery.events {
            report_recovery(name, &settings.dir, &recovery);
        }
        counters.recover(holder, fresh);
        // The events of damaged records an earlier process left (where their headers survived):
        // found here, lost here.
        counters.recover(holder, recovery.corrupt_events);
        counters.settle_recovered(
            holder,
            recovery.corrupt_events,
            Outcome::dropped(ReasonCode::SpoolCorrupt),
        );
        let name: Arc<str> = Arc::from(counters.log.sanitize(name).as_ref());
        let control = Arc::new(SpoolControl {
            name,
            dir: settings.dir.clone(),
            holder,
            state: Mutex::new(State {
                spool: Some(spool),
                tracked,
                in_hand: BTreeMap::new(),
                recovered_unread: fresh + stashed_recovered,
            }),
            appended: Notify::new(),
            holding: AtomicBool::new(false),
            appending: AtomicUsize::new(0),
            stopped: AtomicBool::new(false),
            on_disk_events: AtomicU64::new(fresh + adopted),
            detailed: AtomicU64::new(detailed),
            detailed_budget: settings.detailed_events,
            recovered_journeys: AtomicU64::new(0),
            counters,
            sender: settings.sender,
            hold: settings.hold,
            stats,
            corrupt_at_open: recovery.corrupt_records,
            io_errors: AtomicU64::new(0),
            last_io_error: Mutex::new(None),
            left: Mutex::new(false),
            left_cv: parking_lot::Condvar::new(),
        });
        rt.spawn(control.clone().send_loop(settings.concurrency));
        let ticker = control.clone();
        let tick = settings.tick;
        rt.spawn(async move {
            while !ticker.stopped.load(Ordering::SeqCst) {
                tokio::time::sleep(tick).await;
                if let Some(Err(e)) = ticker
                    .with_spool(|st| st.spool.as_mut().map(|s| s.tick()))
                    .await
                {
                    ticker.io_fault("spool sync failed", &e);
                }
            }
        });
        Ok(control)
    }

    /// The destination's name (`enterprise`, `enterprise logs`, a tenant sink's).
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The spool's directory.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The spool's state for self-metrics and `/readyz`; `None` once it is closed. Takes the
    /// spool's lock (held at most for one append or sync).
    pub(crate) fn snapshot(&self) -> Option<crate::diagnostics::SpoolSnapshot> {
        let status = self.state.lock().spool.as_ref()?.status();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last_io_error = self
            .last_io_error
            .lock()
            .as_ref()
            .map(|(at, e)| (e.clone(), at.elapsed().as_secs()));
        Some(crate::diagnostics::SpoolSnapshot {
            name: self.name.to_string(),
            bytes: status.bytes,
            max_bytes: status.max_bytes,
            records: status.records,
            events: status.events,
            oldest_age_secs: status
                .oldest_ms
                .map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0),
            appends: status.appends,
            acks: status.acks,
            corrupt_records: self.corrupt_at_open + status.damaged_reads,
            syncs: status.syncs,
            sync_secs: status.sync_micros as f64 / 1e6,
            io_errors: self.io_errors.load(Ordering::Relaxed),
            last_io_error,
        })
    }

    /// Counts an I/O error of the spool and keeps it for `/readyz` (logged by the caller).
    fn io_error(&self, e: &SpoolError) {
        if let SpoolError::Io { .. } = e {
            self.io_errors.fetch_add(1, Ordering::Relaxed);
            let text = self.counters.log.sanitize(&e.to_string()).into_owned();
            *self.last_io_error.lock() = Some((std::time::Instant::now(), text));
        }
    }

    /// An operation of the spool failed: counted (see [`io_error`](Self::io_error)) and
    /// logged, rate-limited, under `what`.
    fn io_fault(&self, what: &'static str, e: &SpoolError) {
        self.io_error(e);
        self.counters.log.warn_limited(what, || {
            tracing::warn!(
                sink = %self.name,
                error = %self.counters.log.sanitize(&e.to_string()),
                "{what}"
            )
        });
    }

    /// Events whose records are on disk, not yet sent.
    pub(crate) fn events_on_disk(&self) -> u64 {
        self.on_disk_events.load(Ordering::SeqCst)
    }

    /// At shutdown: nothing is between a hand-over and these spools' disks, at most `pending`
    /// events of their signal are in flight and all are on disk, and every sender is holding a
    /// failing record (or has nothing): waiting longer only waits for the backends. (An event
    /// with copies in two spools counts in both: the sum is an upper bound.)
    pub(crate) fn hold_all_of<'a>(
        spools: impl IntoIterator<Item = &'a Self>,
        pending: i64,
    ) -> bool {
        let mut on_disk = 0u64;
        for s in spools {
            let here = s.events_on_disk();
            if s.appending.load(Ordering::SeqCst) != 0
                || (here != 0 && !s.holding.load(Ordering::SeqCst))
            {
                return false;
            }
            on_disk += here;
        }
        pending <= on_disk as i64
    }

    /// Whether [`leave`](Self::leave) closed the spool.
    pub(crate) fn has_left(&self) -> bool {
        *self.left.lock()
    }

    /// Waits up to `patience` for [`leave`](Self::leave) (a tenant sink's spool closing while
    /// the same sink opens again: the new spool needs the directory's lock). Whether it left.
    pub(crate) fn wait_left(&self, patience: Duration) -> bool {
        let mut left = self.left.lock();
        let until = std::time::Instant::now() + patience;
        while !*left {
            if self.left_cv.wait_until(&mut left, until).timed_out() {
                break;
            }
        }
        *left
    }

    /// Encodes a batch (`encode` runs on a blocking thread and returns the request and anything
    /// the caller wants back) and appends it; see the module docs for what happens when the
    /// spool cannot take it. The owner is told the outcome unless the batch is kept on disk.
    pub(crate) async fn store<T, F>(
        self: &Arc<Self>,
        encode: F,
        owner: Box<dyn RecordOwner>,
    ) -> Stored<T>
    where
        T: Send + 'static,
        F: FnOnce() -> (Vec<u8>, T) + Send + 'static,
    {
        // Counted until the batch is on disk or settled (one sent from memory included), so a
        // shutdown waits for it rather than leaving it unaccounted.
        self.appending.fetch_add(1, Ordering::SeqCst);
        let stored = self.store_counted(encode, owner).await;
        self.appending.fetch_sub(1, Ordering::SeqCst);
        stored
    }

    async fn store_counted<T, F>(
        self: &Arc<Self>,
        encode: F,
        owner: Box<dyn RecordOwner>,
    ) -> Stored<T>
    where
        T: Send + 'static,
        F: FnOnce() -> (Vec<u8>, T) + Send + 'static,
    {
        let me = self.clone();
        let appended = tokio::task::spawn_blocking(move || me.append_blocking(encode, owner)).await;
        let Ok(appended) = appended else {
            // The blocking task panicked (it does not; no panic reaches the host): the owner was
            // dropped with it, and its events are left to the shutdown's final count.
            return Stored::Not;
        };
        match appended {
            Appended::Stored(extra) => {
                self.appended.notify_one();
                Stored::Kept(extra)
            }
            Appended::Closed(owner) => {
                owner.finish(
                    &self.name,
                    Err((ReasonCode::Shutdown, "the spool was closed at shutdown")),
                );
                Stored::Not
            }
            Appended::Unencodable(owner) => {
                let error = "the export request could not be encoded";
                self.counters.log.warn_limited(
                    error,
                    || tracing::warn!(sink = %self.name, "{error}; batch dropped"),
                );
                owner.finish(&self.name, Err((ReasonCode::ExportFailed, error)));
                Stored::Not
            }
            Appended::Full(owner, error) => {
                owner.finish(&self.name, Err((ReasonCode::SpoolFull, &error)));
                Stored::Not
            }
            Appended::Direct(owner, body, extra) => {
                let note_held = |error: &str| owner.note_held(&self.name, error);
                match self.send_held(body, owner.events(), &note_held).await {
                    Some(result) => {
                        let ok = result.is_ok();
                        self.finish_owned(owner, &result);
                        if ok {
                            Stored::Kept(extra)
                        } else {
                            Stored::Not
                        }
                    }
                    // Stopped while the collector was away: held in memory, not on disk.
                    None => {
                        owner.finish(
                            &self.name,
                            Err((
                                ReasonCode::Shutdown,
                                "held in memory at shutdown (the spool could not take it)",
                            )),
                        );
                        Stored::Not
                    }
                }
            }
        }
    }

    fn append_blocking<T, F>(&self, encode: F, owner: Box<dyn RecordOwner>) -> Appended<T>
    where
        F: FnOnce() -> (Vec<u8>, T),
    {
        // The OTLP transforms have `unwrap`s of their own (a log record without an observed
        // timestamp): a panic there fails this batch, counted, and never reaches the host.
        let Ok((body, extra)) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(encode))
        else {
            return Appended::Unencodable(owner);
        };
        let mut st = self.state.lock();
        let Some(spool) = st.spool.as_mut() else {
            return Appended::Closed(owner);
        };
        let events = owner.events();
        let count = u32::try_from(events).unwrap_or(u32::MAX);
        match spool.append(count, &body) {
            Ok(done) => {
                self.evict(&mut st, done.evicted_through, done.evicted_events);
                let detail = format!("{}: record {}", self.name, done.id);
                let mut owner = owner;
                let detailed =
                    if self.detailed.load(Ordering::SeqCst) + events <= self.detailed_budget {
                        self.detailed.fetch_add(events, Ordering::SeqCst);
                        owner.note_spooled(&detail);
                        events
                    } else {
                        owner.tally(&detail);
                        0
                    };
                st.tracked.insert(done.id, Owned { owner, detailed });
                self.on_disk_events.fetch_add(events, Ordering::SeqCst);
                Appended::Stored(extra)
            }
            Err(e @ SpoolError::Full { .. }) => Appended::Full(owner, e.to_string()),
            Err(e) => {
                self.io_fault("spool append failed; batch sent from memory", &e);
                Appended::Direct(owner, Bytes::from(body), extra)
            }
        }
    }

    /// Settles the records an append deleted to make room (`drop_oldest`): every tracked record
    /// at or below `through` (none of them read yet), and recovered events for the rest.
    fn evict(&self, st: &mut State, through: u64, events: u64) {
        if through == 0 || events == 0 {
            return;
        }
        let keep = st.tracked.split_off(&(through + 1));
        let gone = std::mem::replace(&mut st.tracked, keep);
        let mut tracked_events = 0;
        let error = "spool full: deleted to make room (spool.when_full = \"drop_oldest\")";
        for (_, owned) in gone {
            tracked_events += owned.owner.events();
            self.release(owned)
                .finish(&self.name, Err((ReasonCode::SpoolFull, error)));
        }
        let recovered = events
            .saturating_sub(tracked_events)
            .min(st.recovered_unread);
        st.recovered_unread -= recovered;
        self.counters.settle_recovered(
            self.holder,
            recovered,
            Outcome::dropped(ReasonCode::SpoolFull),
        );
        self.take_off_disk(tracked_events + recovered);
    }

    /// Records appended by this process and damaged on disk: their events are dropped as
    /// `spool_corrupt`.
    fn lose(&self, lost: BTreeMap<u64, Owned>) {
        if lost.is_empty() {
            return;
        }
        let mut events = 0;
        for (_, owned) in lost {
            events += owned.owner.events();
            self.release(owned).finish(
                &self.name,
                Err((
                    ReasonCode::SpoolCorrupt,
                    "record damaged on disk (checksum or length), skipped",
                )),
            );
        }
        self.take_off_disk(events);
        self.counters
            .log
            .warn_limited("spool record damaged on disk", || {
                tracing::warn!(
                    sink = %self.name,
                    events,
                    "spool records damaged on disk were skipped; their events are lost"
                )
            });
    }

    /// The owner of a record leaving the spool's care; its detailed events no longer count.
    fn release(&self, owned: Owned) -> Box<dyn RecordOwner> {
        let _ = self
            .detailed
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(owned.detailed))
            });
        owned.owner
    }

    fn take_off_disk(&self, events: u64) {
        let _ = self
            .on_disk_events
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(events))
            });
    }

    /// At shutdown: stops the tasks, settles every event whose record is still on disk as
    /// spooled, syncs the spool and closes it (its lock is released). Returns those events.
    pub(crate) fn leave(&self) -> u64 {
        self.close_then(Stash::leave)
    }

    /// Stops the tasks, syncs the spool and closes it (its lock is released), and hands the
    /// accounting of the records still on disk, unsettled, to `then`: [`Stash::leave`] settles
    /// it as spooled, or it is kept for the next [`open`](Self::open) of the same directory.
    /// Whoever waits for the closing ([`wait_left`](Self::wait_left)) sees `then` done.
    pub(crate) fn close_then<R>(&self, then: impl FnOnce(Stash) -> R) -> R {
        self.stopped.store(true, Ordering::SeqCst);
        self.appended.notify_waiters();
        let mut st = self.state.lock();
        let mut stash = Stash {
            name: self.name.clone(),
            holder: self.holder,
            counters: self.counters.clone(),
            owned: std::mem::take(&mut st.tracked),
            recovered: std::mem::take(&mut st.recovered_unread),
        };
        for (id, hand) in std::mem::take(&mut st.in_hand) {
            match hand {
                InHand::Owned(owned) => {
                    stash.owned.insert(id, owned);
                }
                InHand::Recovered(n) => stash.recovered += n,
            }
        }
        if let Some(mut spool) = st.spool.take() {
            if let Err(e) = spool.sync() {
                self.io_error(&e);
                tracing::warn!(
                    spool = %self.name,
                    error = %self.counters.log.sanitize(&e.to_string()),
                    "spool sync at close failed"
                );
            }
        }
        self.on_disk_events.store(0, Ordering::SeqCst);
        self.detailed.store(0, Ordering::SeqCst);
        drop(st);
        let done = then(stash);
        *self.left.lock() = true;
        self.left_cv.notify_all();
        done
    }

    /// Runs `f` on the state on a blocking thread; `None` once the spool is closed.
    async fn with_spool<T, F>(self: &Arc<Self>, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut State) -> Option<T> + Send + 'static,
    {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut st = me.state.lock();
            st.spool.as_ref()?;
            f(&mut st)
        })
        .await
        .ok()
        .flatten()
    }

    /// Sends one encoded request, holding it while the failure is transient (`note_held` is
    /// told the first failure, for the journeys). Returns the final answer: accepted, rejected,
    /// or `None` when the spool stopped first.
    async fn send_held(
        &self,
        body: Bytes,
        events: u64,
        note_held: &(dyn Fn(&str) + Sync),
    ) -> Option<Result<(), SinkError>> {
        let mut wait = self.hold.initial;
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return None;
            }
            let started = std::time::Instant::now();
            let result = self.sender.send(body.clone()).await;
            self.stats
                .record_call(events, result.is_ok(), started.elapsed());
            match result {
                Ok(()) => {
                    self.holding.store(false, Ordering::SeqCst);
                    return Some(Ok(()));
                }
                Err(e @ SinkError::Rejected(_)) => {
                    self.holding.store(false, Ordering::SeqCst);
                    return Some(Err(e));
                }
                Err(e) => {
                    self.holding.store(true, Ordering::SeqCst);
                    Counters::add(&self.counters.export_batches_failed, 1);
                    if wait == self.hold.initial {
                        note_held(&e.to_string());
                    }
                    self.counters
                        .log
                        .warn_limited("spooled export failed; record held", || {
                            tracing::warn!(
                                sink = %self.name,
                                events,
                                error = %self.counters.log.sanitize(&e.to_string()),
                                retry_in_ms = wait.as_millis() as u64,
                                "spooled export failed; record held"
                            )
                        });
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.appended.notified(), if self.stopped.load(Ordering::SeqCst) => {}
                    }
                    wait = (wait * 2).min(self.hold.max);
                }
            }
        }
    }

    fn finish_owned(&self, owner: Box<dyn RecordOwner>, result: &Result<(), SinkError>) {
        if result.is_ok() {
            Counters::add(&self.counters.export_batches_ok, 1);
        }
        SinkError::as_report(result, |r| owner.finish(&self.name, r));
    }

    /// Reads records in order and sends up to `concurrency` at once.
    async fn send_loop(self: Arc<Self>, concurrency: usize) {
        let permits = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        loop {
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let notified = self.appended.notified();
            let me = self.clone();
            let next = self
                .with_spool(move |st| {
                    let read = st.spool.as_mut()?.read_next();
                    // Every record appended before the one read (all of them, when none is left)
                    // was read or skipped: a tracked record still here was damaged on disk.
                    let lost = match &read {
                        Ok(Some(r)) => {
                            let later = st.tracked.split_off(&r.id);
                            std::mem::replace(&mut st.tracked, later)
                        }
                        Ok(None) => std::mem::take(&mut st.tracked),
                        Err(_) => BTreeMap::new(),
                    };
                    me.lose(lost);
                    Some(read.map(|r| {
                        r.map(|r| {
                            let hand = match st.tracked.remove(&r.id) {
                                Some(owned) => InHand::Owned(owned),
                                None => {
                                    let n = u64::from(r.events).min(st.recovered_unread);
                                    st.recovered_unread -= n;
                                    InHand::Recovered(n)
                                }
                            };
                            st.in_hand.insert(r.id, hand);
                            (r.id, u64::from(r.events), Bytes::from(r.payload))
                        })
                    }))
                })
                .await;
            match next {
                None => return,
                Some(Ok(None)) => {
                    // Nothing to read: wait for an append (or look again, in case the wake-up
                    // came between the read and this wait).
                    let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                }
                Some(Ok(Some((id, events, body)))) => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.send_record(id, events, body).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    self.io_fault("spool read failed; trying again", &e);
                    tokio::time::sleep(self.hold.max).await;
                }
            }
        }
    }

    /// The journeys of a record an earlier process left, while the recorder's share of this
    /// spool lasts (`detailed_budget` events): its events read back from the record, each
    /// given a `recovered` step.
    fn recovered_journeys(&self, id: u64, body: &[u8]) -> Vec<EventRef> {
        let used = self.recovered_journeys.load(Ordering::Relaxed);
        let room = self.detailed_budget.saturating_sub(used);
        if room == 0 {
            return Vec::new();
        }
        let mut evs = self
            .sender
            .events_in(body, room as usize, &self.counters.log);
        self.recovered_journeys
            .fetch_add(evs.len() as u64, Ordering::Relaxed);
        let rec = self.counters.recorder();
        rec.attach_all(&mut evs);
        let detail = format!("{}: record {id}, from an earlier process", self.name);
        for ev in &evs {
            rec.record(ev, Stage::Recovered, None, Some(&detail));
        }
        evs
    }

    async fn send_record(self: &Arc<Self>, id: u64, events: u64, body: Bytes) {
        // The owner of a record in hand is in the state: looked up for the first failure only.
        let note_held = |error: &str| {
            if let Some(InHand::Owned(owned)) = self.state.lock().in_hand.get(&id) {
                owned.owner.note_held(&self.name, error);
            }
        };
        let recovered = matches!(
            self.state.lock().in_hand.get(&id),
            Some(InHand::Recovered(_))
        );
        let journeys = if recovered {
            self.recovered_journeys(id, &body)
        } else {
            Vec::new()
        };
        let result = self.send_held(body, events, &note_held).await;
        let Some(result) = result else {
            return; // stopped: `leave` settles the record in hand as spooled
        };
        let me = self.clone();
        let hand = self
            .with_spool(move |st| {
                // `leave` may have taken it meanwhile: then it stays on disk, unacknowledged.
                let hand = st.in_hand.remove(&id)?;
                if let Some(Err(e)) = st.spool.as_mut().map(|s| s.ack(id)) {
                    me.io_fault(
                        "spool acknowledgement failed; the record may be sent again after a \
                         restart",
                        &e,
                    );
                }
                Some(hand)
            })
            .await;
        let Some(hand) = hand else { return };
        self.take_off_disk(events);
        match hand {
            InHand::Owned(owned) => {
                let owner = self.release(owned);
                self.finish_owned(owner, &result)
            }
            InHand::Recovered(n) => {
                if result.is_ok() {
                    Counters::add(&self.counters.export_batches_ok, 1);
                    if let Some(items) = self.sender.items_counter(&self.counters) {
                        Counters::add(items, n);
                    }
                }
                let rec = self.counters.recorder();
                for ev in &journeys {
                    match &result {
                        Ok(()) => rec.record(ev, Stage::Delivered, None, Some(&self.name)),
                        Err(e) => {
                            let detail = format!("{}: {e}", self.name);
                            rec.record(ev, Stage::Dropped, Some(e.reason()), Some(&detail));
                        }
                    }
                }
                let outcome = match &result {
                    Ok(()) => Outcome::Delivered {
                        destination: Detail::Shared(self.name.clone()),
                    },
                    Err(e) => Outcome::dropped(e.reason()),
                };
                self.counters.settle_recovered(self.holder, n, outcome);
            }
        }
    }
}

/// The accounting of a closed spool's records still on disk, not settled yet: a tenant sink's
/// spool keeps it while the sink is closed, so that its next opening settles those records when
/// they are sent, exactly as if the spool had stayed open.
#[derive(Debug)]
pub(crate) struct Stash {
    name: Arc<str>,
    holder: Holder,
    counters: Arc<Counters>,
    /// Records this process appended, by id.
    owned: BTreeMap<u64, Owned>,
    /// Events of records recovered at an opening and not sent yet (counted in already).
    recovered: u64,
}

impl Stash {
    /// Events whose records it accounts for.
    pub(crate) fn events(&self) -> u64 {
        self.owned.values().map(|o| o.owner.events()).sum::<u64>() + self.recovered
    }

    /// At shutdown: the records stay on disk; their events leave the process as spooled.
    /// Returns those events.
    pub(crate) fn leave(self) -> u64 {
        let left = self.events();
        let destination = Detail::Shared(self.name.clone());
        for (_, owned) in self.owned {
            owned.owner.leave(&destination);
        }
        let spooled = Outcome::Spooled { destination };
        self.counters
            .settle_recovered(self.holder, self.recovered, spooled);
        left
    }
}

/// What [`SpoolControl::append_blocking`] came to.
enum Appended<T> {
    Stored(T),
    Full(Box<dyn RecordOwner>, String),
    /// The spool could not write it (logged and counted): sent from memory.
    Direct(Box<dyn RecordOwner>, Bytes, T),
    /// Encoding the request panicked.
    Unencodable(Box<dyn RecordOwner>),
    Closed(Box<dyn RecordOwner>),
}

/// Logs what recovery found at start, damage included.
fn report_recovery(name: &str, dir: &std::path::Path, r: &Recovery) {
    if r.records > 0 || r.corrupt_records > 0 || r.stale_segments > 0 {
        tracing::info!(
            spool = name,
            dir = %dir.display(),
            records = r.records,
            events = r.events,
            corrupt_records = r.corrupt_records,
            corrupt_events = r.corrupt_events,
            skipped_bytes = r.skipped_bytes,
            "spool recovered records from an earlier process; sending them"
        );
    }
}

/// A batch of spans: its groups, and how many spans the request carries.
#[derive(Debug)]
struct SpanRecord {
    groups: Vec<Arc<GroupTracker>>,
    spans: u64,
    counters: Arc<Counters>,
}

impl RecordOwner for SpanRecord {
    fn events(&self) -> u64 {
        self.groups.iter().map(|g| g.len() as u64).sum()
    }

    fn note_spooled(&self, detail: &str) {
        for g in &self.groups {
            g.note_spooled(detail);
        }
    }

    fn tally(&mut self, detail: &str) {
        for g in &self.groups {
            g.tally(detail);
        }
    }

    fn note_held(&self, destination: &str, error: &str) {
        for g in &self.groups {
            g.note_held(destination, error);
        }
    }

    fn finish(self: Box<Self>, destination: &Arc<str>, result: Result<(), (ReasonCode, &str)>) {
        if result.is_ok() {
            Counters::add(&self.counters.exported_spans, self.spans);
        } else {
            Counters::add(&self.counters.sink_spans_failed, self.spans);
        }
        for g in &self.groups {
            g.report(destination, result);
        }
    }

    fn leave(self: Box<Self>, destination: &Detail) {
        for g in &self.groups {
            g.settle_spooled(destination);
        }
    }
}

/// Called with each batch of spans once it is on disk (the SQLite sink's copy).
pub(crate) type OnAppended = Box<dyn Fn(&[SpanData]) + Send + Sync>;

/// Where a spooled trace destination is, and how it is seen.
pub(crate) struct TraceSpoolSpec {
    /// The destination's name (`enterprise`, or a tenant sink's).
    pub(crate) name: String,
    /// Its exporter counters.
    pub(crate) stats: Arc<ExporterStats>,
    /// A tenant sink's spool closes when its sink does (its appender's queue ends): its backlog
    /// stays on disk and its unsettled accounting goes here, for the next opening. The
    /// enterprise spool is left by the shutdown instead (`None`).
    pub(crate) on_close: Option<Box<dyn FnOnce(Stash) + Send>>,
}

/// Starts a destination's span spool and its appender: the returned [`SinkWorker`] is the
/// destination's queue, as the batcher knows it.
pub(crate) fn spawn_traces(
    spec: TraceSpoolSpec,
    settings: SpoolSettings,
    resource: Resource,
    worker: &SinkWorkerParams,
    on_appended: Option<OnAppended>,
) -> Result<(SinkWorker, Arc<SpoolControl>), SpoolError> {
    let TraceSpoolSpec {
        name,
        stats,
        on_close,
    } = spec;
    let control = SpoolControl::open(
        &name,
        Holder::TracePath,
        settings,
        worker.counters.clone(),
        stats.clone(),
        &worker.rt,
    )?;
    let (tx, mut rx) = mpsc::channel::<SinkJob>(worker.queue_batches.max(1));
    let appender = control.clone();
    let counters = worker.counters.clone();
    // Encoded spans are stored as they are; a copy for SQLite needs the SDK values.
    let encoded = on_appended.is_none();
    let frame = Arc::new(Frame::new(&resource, &super::mapping::scope()));
    worker.rt.spawn(async move {
        while let Some(SinkJob::Export { spans, groups }) = rx.recv().await {
            if appender.stopped.load(Ordering::SeqCst) {
                continue; // not on disk: left to the shutdown's final count (`shutdown`)
            }
            let owner = Box::new(SpanRecord {
                groups,
                spans: spans.len() as u64,
                counters: counters.clone(),
            });
            let (resource, frame) = (resource.clone(), frame.clone());
            let encode = move || (spans.request(&frame, &resource), spans);
            if let Stored::Kept(SpanBatch::Values(spans)) = appender.store(encode, owner).await {
                if let Some(f) = &on_appended {
                    f(&spans);
                }
            }
        }
        if let Some(on_close) = on_close {
            let control = appender.clone();
            let _ = tokio::task::spawn_blocking(move || {
                control.close_then(|stash| {
                    if stash.events() > 0 {
                        tracing::info!(
                            spool = control.name(),
                            events = stash.events(),
                            "sink closed with events in its disk spool; its next opening sends \
                             them"
                        );
                    }
                    on_close(stash)
                })
            })
            .await;
        }
    });
    let name: Arc<str> = control.name.clone();
    Ok((SinkWorker::from_channel(name, tx, stats, encoded), control))
}
