//! The enterprise destination's spans through a disk spool (`[spool] kind = "disk"`).
//!
//! Without a spool, a sink worker holds its failing batch in memory and the batches behind it
//! wait in its bounded queue (see `export::sink`). With one, the worker is two tasks around a
//! [`DiskSpool`] (ADR 0004):
//!
//! - the **appender** takes each job from the destination's queue (the batcher still waits for
//!   room there), encodes the spans once as an OTLP `ExportTraceServiceRequest` and appends it
//!   on a blocking thread. The job's group trackers stay in memory under the record's id; each
//!   event's journey gets a `spooled` step. A full budget answers by `spool.when_full`, and the
//!   events it costs are dropped as `spool_full` (unless another destination delivers them).
//!   A request too large for the spool, or a spool that cannot write (disk full, I/O error), is
//!   sent straight from memory instead, held like an unspooled batch: nothing is lost to a disk
//!   fault, only the crash safety of that batch.
//! - the **sender** reads records in order and sends the bytes unchanged ([`WireSender`]), up
//!   to `trace_batcher.sink_concurrency` at once (acknowledgements may come out of order; the
//!   spool's watermark allows it). A failing record is held and tried again with the `[retry]`
//!   backoff, for as long as it takes (the budget, not an age, bounds the backlog); it is
//!   acknowledged once the backend accepted or rejected it, and its groups are told.
//!
//! **Accounting.** Records found on disk at start are *recovered*: their events are counted in
//! (`Counters::recover`) and settle when sent. At shutdown, once everything the batcher held is
//! on disk and the backend is failing (or the deadline comes), [`SpoolControl::leave`] stops
//! both tasks, syncs the spool, and settles every event whose record is still on disk as
//! *spooled*; the spool's lock is released so the next process can take it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use super::sink::{GroupTracker, SinkError, SinkJob, SinkWorker, SinkWorkerParams};
use super::wire::{encode_spans, WireSender, WireSignal};
use crate::config::HoldPolicy;
use crate::diagnostics::exporters::ExporterStats;
use crate::diagnostics::ledger::{Holder, RecoveredOutcome};
use crate::diagnostics::{Counters, ReasonCode};
use crate::spool::{DiskSpool, Recovery, SpoolError, SpoolOptions};

/// A record's groups, waiting for its send.
#[derive(Debug)]
struct Tracked {
    events: u64,
    spans: u64,
    groups: Vec<Arc<GroupTracker>>,
}

/// Whose accounting a record carries: groups of this process, or recovered events.
#[derive(Debug)]
enum Owner {
    /// Groups of this process, and the request's span count.
    Groups(Vec<Arc<GroupTracker>>, u64),
    /// Recovered events.
    Recovered(u64),
}

/// What the two tasks and the shutdown share, under one lock.
#[derive(Debug)]
struct State {
    /// `None` once [`SpoolControl::leave`] closed it.
    spool: Option<DiskSpool>,
    /// Records appended by this process and not read yet, by id.
    tracked: BTreeMap<u64, Tracked>,
    /// The records being sent (read, not acknowledged), by id.
    in_hand: BTreeMap<u64, Owner>,
    /// Events of recovered records not read yet.
    recovered_unread: u64,
}

/// The spooled destination's shared state, for the shutdown and the diagnostics.
#[derive(Debug)]
pub(crate) struct SpoolControl {
    name: Arc<str>,
    state: Mutex<State>,
    /// Wakes the sender after an append, and both tasks at `leave`.
    appended: Notify,
    /// The sender's last try failed and it is waiting to try again.
    holding: AtomicBool,
    /// A job is between the queue and the disk.
    appending: AtomicBool,
    stopped: AtomicBool,
    counters: Arc<Counters>,
    /// Events of records on disk (tracked, in hand, or recovered and unread).
    on_disk_events: AtomicU64,
}

/// Called with each batch once it is on disk (the SQLite sink's copy).
pub(crate) type OnAppended = Box<dyn Fn(&[SpanData]) + Send + Sync>;

/// How the spooled worker runs.
pub(crate) struct SpooledParams {
    /// The spool's directory (`<spool.path>/enterprise-traces`).
    pub(crate) dir: std::path::PathBuf,
    /// Its budget, segments, sync policy and `when_full`.
    pub(crate) opts: SpoolOptions,
    /// `spool.sync_interval_ms` (how often an idle spool is synced under `interval`).
    pub(crate) tick: Duration,
    /// Where records are sent.
    pub(crate) sender: WireSender,
    /// The resource the requests carry.
    pub(crate) resource: Resource,
    /// What every sink worker of the gateway shares: its queue's size, `[retry]`'s hold policy,
    /// the ledger, the export runtime (the concurrency and the timeout are the sender's own).
    pub(crate) worker: SinkWorkerParams,
    /// Called with each batch once it is on disk (the SQLite sink's copy).
    pub(crate) on_appended: Option<OnAppended>,
}

/// Why the spooled worker could not start.
#[derive(Debug, thiserror::Error)]
#[error("spool.path: {0}")]
pub(crate) struct SpooledStartError(#[from] SpoolError);

impl SpoolControl {
    /// The destination's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Events whose records are on disk, not yet sent.
    pub(crate) fn events_on_disk(&self) -> u64 {
        self.on_disk_events.load(Ordering::SeqCst)
    }

    /// Nothing is between the queue and the disk, and the sender is holding a failing record:
    /// waiting longer at shutdown only waits for the backend.
    pub(crate) fn stalled(&self) -> bool {
        self.holding.load(Ordering::SeqCst) && !self.appending.load(Ordering::SeqCst)
    }

    /// At shutdown: stops both tasks, settles every event whose record is still on disk as
    /// spooled, syncs the spool and closes it (its lock is released). Returns those events.
    pub(crate) fn leave(&self) -> u64 {
        self.stopped.store(true, Ordering::SeqCst);
        self.appended.notify_waiters();
        let mut st = self.state.lock();
        let mut left = 0u64;
        let destination = crate::diagnostics::recorder::Detail::Shared(self.name.clone());
        for (_, t) in std::mem::take(&mut st.tracked) {
            left += t.events;
            for g in t.groups {
                g.settle_spooled(&destination);
            }
        }
        for (_, owner) in std::mem::take(&mut st.in_hand) {
            match owner {
                Owner::Groups(groups, _) => {
                    left += groups.iter().map(|g| g.len() as u64).sum::<u64>();
                    for g in groups {
                        g.settle_spooled(&destination);
                    }
                }
                Owner::Recovered(n) => {
                    left += n;
                    self.counters
                        .settle_recovered(Holder::TracePath, n, RecoveredOutcome::Spooled);
                }
            }
        }
        let recovered = std::mem::take(&mut st.recovered_unread);
        self.counters
            .settle_recovered(Holder::TracePath, recovered, RecoveredOutcome::Spooled);
        left += recovered;
        if let Some(mut spool) = st.spool.take() {
            if let Err(e) = spool.sync() {
                tracing::warn!(
                    spool = %self.name,
                    error = %self.counters.log.sanitize(&e.to_string()),
                    "spool sync at shutdown failed"
                );
            }
        }
        self.on_disk_events.store(0, Ordering::SeqCst);
        left
    }

    /// Runs `f` on the spool on a blocking thread; `None` once the spool is closed.
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
}

/// Opens the spool, counts what it recovered, and starts the appender and the sender. Returns
/// the destination's queue (as a [`SinkWorker`]) and its control.
pub(crate) fn spawn(
    name: &str,
    params: SpooledParams,
) -> Result<(SinkWorker, Arc<SpoolControl>), SpooledStartError> {
    let SpooledParams {
        dir,
        opts,
        tick,
        sender,
        resource,
        worker,
        on_appended,
    } = params;
    let SinkWorkerParams {
        queue_batches,
        concurrency,
        hold,
        counters,
        rt,
        ..
    } = worker;
    let (spool, recovery) = DiskSpool::open(&dir, opts)?;
    report_recovery(name, &dir, &recovery, &counters);
    let name: Arc<str> = Arc::from(counters.log.sanitize(name).as_ref());
    let stats = counters.exporters.register(&name, "traces");
    let control = Arc::new(SpoolControl {
        name: name.clone(),
        state: Mutex::new(State {
            spool: Some(spool),
            tracked: BTreeMap::new(),
            in_hand: BTreeMap::new(),
            recovered_unread: recovery.events,
        }),
        appended: Notify::new(),
        holding: AtomicBool::new(false),
        appending: AtomicBool::new(false),
        stopped: AtomicBool::new(false),
        counters: counters.clone(),
        on_disk_events: AtomicU64::new(recovery.events),
    });
    let (tx, rx) = mpsc::channel::<SinkJob>(queue_batches.max(1));
    let link = Arc::new(Link {
        control: control.clone(),
        sender,
        hold,
        stats: stats.clone(),
    });
    let appender = Appender {
        link: link.clone(),
        resource,
        on_appended,
    };
    rt.spawn(appender.run(rx));
    rt.spawn(Sender { link, concurrency }.run());
    let ticker = control.clone();
    rt.spawn(async move {
        while !ticker.stopped.load(Ordering::SeqCst) {
            tokio::time::sleep(tick).await;
            let _ = ticker
                .with_spool(|st| st.spool.as_mut().map(|s| s.tick()))
                .await;
        }
    });
    Ok((SinkWorker::from_channel(name, tx, stats), control))
}

/// Counts the records found on disk at start (their events enter the trace path) and logs what
/// recovery found, damage included.
fn report_recovery(name: &str, dir: &std::path::Path, r: &Recovery, counters: &Counters) {
    counters.recover(Holder::TracePath, r.events);
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

/// What both tasks send with: the spool's control, the sender, the hold policy, the counters.
struct Link {
    control: Arc<SpoolControl>,
    sender: WireSender,
    hold: HoldPolicy,
    stats: Arc<ExporterStats>,
}

impl Link {
    /// Sends one encoded request, holding it while the failure is transient (see the module docs).
    /// Returns the final answer: accepted, rejected, or `None` when the worker stopped first.
    async fn send_held(
        &self,
        body: Bytes,
        events: u64,
        groups: &[Arc<GroupTracker>],
    ) -> Option<Result<(), SinkError>> {
        let (control, sender, hold, stats) =
            (&*self.control, &self.sender, self.hold, &*self.stats);
        let mut wait = hold.initial;
        loop {
            if control.stopped.load(Ordering::SeqCst) {
                return None;
            }
            let started = std::time::Instant::now();
            let result = sender.send(WireSignal::Traces, body.clone()).await;
            stats.record_call(events, result.is_ok(), started.elapsed());
            match result {
                Ok(()) => {
                    control.holding.store(false, Ordering::SeqCst);
                    return Some(Ok(()));
                }
                Err(e @ SinkError::Rejected(_)) => {
                    control.holding.store(false, Ordering::SeqCst);
                    return Some(Err(e));
                }
                Err(e) => {
                    control.holding.store(true, Ordering::SeqCst);
                    Counters::add(&control.counters.export_batches_failed, 1);
                    if wait == hold.initial {
                        let error = e.to_string();
                        for g in groups {
                            g.note_held(&control.name, &error);
                        }
                    }
                    control
                        .counters
                        .log
                        .warn_limited("spooled export failed; record held", || {
                            tracing::warn!(
                                sink = %control.name,
                                events,
                                error = %control.counters.log.sanitize(&e.to_string()),
                                retry_in_ms = wait.as_millis() as u64,
                                "spooled export failed; record held"
                            )
                        });
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = control.appended.notified(), if control.stopped.load(Ordering::SeqCst) => {}
                    }
                    wait = (wait * 2).min(hold.max);
                }
            }
        }
    }
}

/// Tells `groups` how their request ended.
fn report(name: &Arc<str>, groups: &[Arc<GroupTracker>], result: &Result<(), SinkError>) {
    let error = result
        .as_ref()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let r = result
        .as_ref()
        .map(|_| ())
        .map_err(|e| (e.reason(), error.as_str()));
    for g in groups {
        g.report(name, r);
    }
}

struct Appender {
    link: Arc<Link>,
    resource: Resource,
    on_appended: Option<OnAppended>,
}

/// What an append came to.
enum Appended {
    /// On disk as this record.
    Stored,
    /// The budget refused it (`drop_newest`).
    Full(String),
    /// The spool cannot take it (too large, I/O error): send it from memory.
    Direct(Bytes, String),
    /// The spool is closed (shutdown).
    Closed,
}

impl Appender {
    async fn run(self, rx: mpsc::Receiver<SinkJob>) {
        let mut rx = rx;
        while let Some(SinkJob::Export { spans, groups }) = rx.recv().await {
            if self.link.control.stopped.load(Ordering::SeqCst) {
                // Left to the shutdown's final count (`shutdown`): not on disk.
                continue;
            }
            self.link.control.appending.store(true, Ordering::SeqCst);
            self.append(spans, groups).await;
            self.link.control.appending.store(false, Ordering::SeqCst);
        }
    }

    async fn append(&self, spans: Vec<SpanData>, groups: Vec<Arc<GroupTracker>>) {
        let events: u64 = groups.iter().map(|g| g.len() as u64).sum();
        let n_spans = spans.len() as u64;
        let resource = self.resource.clone();
        let control = self.link.control.clone();
        let groups_in = groups.clone();
        let (spans, outcome) = match tokio::task::spawn_blocking(move || {
            let body = encode_spans(&spans, &resource);
            let mut st = control.state.lock();
            let Some(spool) = st.spool.as_mut() else {
                return (spans, Appended::Closed);
            };
            let count = u32::try_from(events).unwrap_or(u32::MAX);
            let outcome = match spool.append(count, &body) {
                Ok(done) => {
                    let st = &mut *st;
                    evict(&control, st, done.evicted_through, done.evicted_events);
                    st.tracked.insert(
                        done.id,
                        Tracked {
                            events,
                            spans: n_spans,
                            groups: groups_in,
                        },
                    );
                    control.on_disk_events.fetch_add(events, Ordering::SeqCst);
                    let detail = format!("{}: record {}", control.name, done.id);
                    for g in &st.tracked[&done.id].groups {
                        g.note_spooled(&detail);
                    }
                    Appended::Stored
                }
                Err(e @ SpoolError::Full { .. }) => Appended::Full(e.to_string()),
                Err(e) => Appended::Direct(Bytes::from(body), e.to_string()),
            };
            (spans, outcome)
        })
        .await
        {
            Ok(r) => r,
            // The blocking task panicked (it does not, but no panic reaches the host): the
            // groups are left to the shutdown's count.
            Err(_) => return,
        };
        match outcome {
            Appended::Stored => {
                if let Some(f) = &self.on_appended {
                    f(&spans);
                }
                self.link.control.appended.notify_one();
            }
            Appended::Closed => {}
            Appended::Full(error) => {
                Counters::add(&self.link.control.counters.sink_spans_failed, n_spans);
                let r: Result<(), (ReasonCode, &str)> = Err((ReasonCode::SpoolFull, &error));
                for g in &groups {
                    g.report(&self.link.control.name, r);
                }
            }
            Appended::Direct(body, error) => {
                self.link.control.counters.log.warn_limited(
                    "spool append failed; batch sent from memory",
                    || {
                        tracing::warn!(
                            sink = %self.link.control.name,
                            error = %self.link.control.counters.log.sanitize(&error),
                            "spool append failed; batch sent from memory"
                        )
                    },
                );
                let result = self.link.send_held(body, events, &groups).await;
                if let Some(result) = result {
                    if result.is_ok() {
                        Counters::add(&self.link.control.counters.exported_spans, n_spans);
                        Counters::add(&self.link.control.counters.export_batches_ok, 1);
                        if let Some(f) = &self.on_appended {
                            f(&spans);
                        }
                    }
                    report(&self.link.control.name, &groups, &result);
                }
            }
        }
    }
}

/// Settles the records an append deleted to make room (`drop_oldest`): every tracked record at
/// or below `through` (none of them read yet), and recovered events for the rest.
fn evict(control: &SpoolControl, st: &mut State, through: u64, events: u64) {
    if through == 0 || events == 0 {
        return;
    }
    let keep = st.tracked.split_off(&(through + 1));
    let gone = std::mem::replace(&mut st.tracked, keep);
    let mut tracked_events = 0;
    let error = "spool full: deleted to make room (spool.when_full = \"drop_oldest\")";
    for (_, t) in gone {
        tracked_events += t.events;
        for g in t.groups {
            g.report(&control.name, Err((ReasonCode::SpoolFull, error)));
        }
    }
    let recovered = events
        .saturating_sub(tracked_events)
        .min(st.recovered_unread);
    st.recovered_unread -= recovered;
    control.counters.settle_recovered(
        Holder::TracePath,
        recovered,
        RecoveredOutcome::Dropped(ReasonCode::SpoolFull),
    );
    control.on_disk_events.fetch_sub(
        (tracked_events + recovered).min(control.events_on_disk()),
        Ordering::SeqCst,
    );
}

struct Sender {
    link: Arc<Link>,
    /// Records sent at once (`trace_batcher.sink_concurrency`); acknowledgements may then come
    /// out of order, which the spool's watermark allows.
    concurrency: usize,
}

impl Sender {
    async fn run(self) {
        let me = Arc::new(self);
        let permits = Arc::new(tokio::sync::Semaphore::new(me.concurrency.max(1)));
        loop {
            if me.link.control.stopped.load(Ordering::SeqCst) {
                return;
            }
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let notified = me.link.control.appended.notified();
            let next = me
                .link
                .control
                .with_spool(move |st| {
                    let read = st.spool.as_mut()?.read_next();
                    Some(read.map(|r| {
                        r.map(|r| {
                            let owner = match st.tracked.remove(&r.id) {
                                Some(t) => Owner::Groups(t.groups, t.spans),
                                None => {
                                    let n = u64::from(r.events).min(st.recovered_unread);
                                    st.recovered_unread -= n;
                                    Owner::Recovered(n)
                                }
                            };
                            let groups = match &owner {
                                Owner::Groups(g, _) => g.clone(),
                                Owner::Recovered(_) => Vec::new(),
                            };
                            st.in_hand.insert(r.id, owner);
                            (r.id, u64::from(r.events), Bytes::from(r.payload), groups)
                        })
                    }))
                })
                .await;
            match next {
                None => return,
                Some(Ok(None)) => {
                    // Nothing to read: wait for an append (or a periodic look, in case a wake-up
                    // came between the read and this wait).
                    let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
                }
                Some(Ok(Some((id, events, body, groups)))) => {
                    let me = me.clone();
                    tokio::spawn(async move {
                        me.send(id, events, body, groups).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    let c = &me.link.control;
                    c.counters.log.warn_limited("spool read failed", || {
                        tracing::warn!(
                            sink = %c.name,
                            error = %c.counters.log.sanitize(&e.to_string()),
                            "spool read failed; trying again"
                        )
                    });
                    tokio::time::sleep(me.link.hold.max).await;
                }
            }
        }
    }

    async fn send(&self, id: u64, events: u64, body: Bytes, groups: Vec<Arc<GroupTracker>>) {
        let Some(result) = self.link.send_held(body, events, &groups).await else {
            return; // stopped: `leave` settles the record in hand as spooled
        };
        let control = self.link.control.clone();
        let owner = self
            .link
            .control
            .with_spool(move |st| {
                // `leave` may have taken it meanwhile: then it stays on disk, unacknowledged.
                let owner = st.in_hand.remove(&id)?;
                if let Some(spool) = st.spool.as_mut() {
                    if let Err(e) = spool.ack(id) {
                        control.counters.log.warn_limited("spool ack failed", || {
                            tracing::warn!(
                                sink = %control.name,
                                error = %control.counters.log.sanitize(&e.to_string()),
                                "spool acknowledgement failed; the record may be sent again \
                                 after a restart"
                            )
                        });
                    }
                }
                Some(owner)
            })
            .await;
        let Some(owner) = owner else { return };
        self.link.control.on_disk_events.fetch_sub(
            events.min(self.link.control.events_on_disk()),
            Ordering::SeqCst,
        );
        if result.is_ok() {
            Counters::add(&self.link.control.counters.export_batches_ok, 1);
        }
        match owner {
            Owner::Groups(groups, spans) => {
                if result.is_ok() {
                    Counters::add(&self.link.control.counters.exported_spans, spans);
                }
                report(&self.link.control.name, &groups, &result);
            }
            Owner::Recovered(n) => {
                if result.is_ok() {
                    // A recovered request's span count is not kept: one span per event.
                    Counters::add(&self.link.control.counters.exported_spans, n);
                }
                let outcome = match &result {
                    Ok(()) => RecoveredOutcome::Delivered,
                    Err(e) => RecoveredOutcome::Dropped(e.reason()),
                };
                self.link
                    .control
                    .counters
                    .settle_recovered(Holder::TracePath, n, outcome);
            }
        }
    }
}
