//! A worker process's side of the Redis Streams transport: what its consumers share, and the
//! commit that exports what they handled before acknowledging it.
//!
//! **Why a commit, not an acknowledgement per event.** A worker's metric effect lives in the
//! OTel SDK's cumulative counters until they are exported. If a worker acknowledged an entry
//! before the counters that include it were exported, a `kill -9` would lose the count; if it
//! exported counters that include an entry it had not acknowledged, another worker would
//! reclaim that entry and count it again. So a worker acknowledges in **commits**, every
//! `transport.commit_interval_ms`:
//!
//! 1. under the write side of [`WorkerLedger::gate`], take the list of events handled since
//!    the last commit, flush the log batcher (so their log records are exported; bounded by
//!    [`log_flush_bound`]), and export the metrics (`force_flush`). Handlers hold the read side
//!    while they record an event's metrics and note it handled, so the exported counters
//!    contain exactly the handled list, no more and no less. Handlers wait while a commit holds
//!    the write side: with a stream, a pause leaves entries waiting in Redis, not dropped;
//! 2. `XACK` their entries at once; an acknowledgement that fails is kept and sent again at the
//!    next commit.
//!
//! A worker killed between commits loses nothing: its uncommitted entries are pending in the
//! group, another worker reclaims them, and since their earlier delivery never committed, that
//! worker handles them even though the dedup store has seen their ids (see
//! `MetricHandlerActor`). The one window left is a crash between step 1's metric export and
//! step 2's acknowledgement (one Redis round trip): those entries are handled again
//! (docs/deployment.md).
//!
//! Without the `redis` cargo feature only the ledger is built (the handlers' `Shared::worker`
//! names it, and is never set).

// Without `redis` nothing sets a ledger, so its methods are unused there.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(feature = "redis")]
use std::sync::Arc;
#[cfg(feature = "redis")]
use std::thread::JoinHandle;
#[cfg(feature = "redis")]
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

#[cfg(feature = "redis")]
use super::redis_streams::StreamSettings;
#[cfg(feature = "redis")]
use crate::diagnostics::Counters;
#[cfg(feature = "redis")]
use crate::export::logs::LogBatcher;

/// An entry handed to a handler: its stream id, and whether a work item took it as its owner.
#[derive(Debug, Clone)]
struct HeldEntry {
    entry_id: String,
    /// Whether a handler took this entry's id as the owner of its dedup mark (each copy of an
    /// event in hand is given to one handler work item).
    given: bool,
}

/// What a worker's consumers, handlers and committer share.
#[derive(Debug, Default)]
pub(crate) struct WorkerLedger {
    /// Entries handed to handlers and not yet acknowledged, by event id (a re-sent event can
    /// be in hand twice). Bounded by what the handlers hold: `pool_size × batch_size` read,
    /// plus what waits for the next commit.
    in_hand: Mutex<HashMap<Uuid, Vec<HeldEntry>>>,
    /// Events that reached their outcome since the last commit, one id per copy.
    handled: Mutex<Vec<Uuid>>,
    /// Entry ids whose `XACK` failed, sent again at the next commit.
    unacked: Mutex<Vec<String>>,
    /// Read side: a handler recording metrics and noting events handled. Write side: the
    /// commit taking the handled list and exporting the metrics.
    pub(crate) gate: RwLock<()>,
    /// Consumers still reading (a consumer leaves when the worker drains).
    pub(crate) open_sources: AtomicUsize,
}

impl WorkerLedger {
    /// A consumer handed stream entry `entry_id` (for event `id`) to its handler.
    pub(crate) fn hold(&self, id: Uuid, entry_id: String) {
        let mut in_hand = self.in_hand.lock();
        let held = in_hand.entry(id).or_default();
        // The same entry again (reclaimed after its handler panicked): one hold, to be given
        // to the handler again.
        match held.iter_mut().find(|e| e.entry_id == entry_id) {
            Some(e) => e.given = false,
            None => held.push(HeldEntry {
                entry_id,
                given: false,
            }),
        }
    }

    /// The stream entry id a handler's work item for event `id` stands for: the first copy in
    /// hand not yet given out (copies are held and taken in read order). It is the owner of the
    /// event's dedup mark, so a redelivery of this entry finds its own mark (`Verdict::Own`)
    /// while a re-appended copy (another entry) finds a duplicate.
    pub(crate) fn take_owner(&self, id: &Uuid) -> Option<String> {
        let mut in_hand = self.in_hand.lock();
        let e = in_hand.get_mut(id)?.iter_mut().find(|e| !e.given)?;
        e.given = true;
        Some(e.entry_id.clone())
    }

    /// Events that reached their outcome (call with the read side of `gate` held when their
    /// metrics were recorded under it).
    pub(crate) fn note_handled(&self, ids: impl IntoIterator<Item = Uuid>) {
        self.handled.lock().extend(ids);
    }

    /// Entries in hand, for diagnostics and tests.
    pub(crate) fn in_hand_len(&self) -> usize {
        self.in_hand.lock().values().map(Vec::len).sum()
    }

    /// Takes the handled list and maps it to entry ids, plus the acknowledgements still owed.
    fn take_entry_ids(&self, handled: Vec<Uuid>) -> Vec<String> {
        let mut ids = std::mem::take(&mut *self.unacked.lock());
        let mut in_hand = self.in_hand.lock();
        for id in handled {
            if let Some(v) = in_hand.get_mut(&id) {
                if let Some(e) = v.pop() {
                    ids.push(e.entry_id);
                }
                if v.is_empty() {
                    in_hand.remove(&id);
                }
            }
        }
        ids
    }
}

/// A consumer's link to its worker: the ledger and the counters it reads into.
#[cfg(feature = "redis")]
#[derive(Debug, Clone)]
pub(crate) struct WorkerLink {
    pub(crate) counters: Arc<Counters>,
    pub(crate) ledger: Arc<WorkerLedger>,
}

/// What a commit needs from the export pipeline.
#[cfg(feature = "redis")]
#[derive(Debug, Clone)]
pub(crate) struct CommitParts {
    pub(crate) meter_provider: opentelemetry_sdk::metrics::SdkMeterProvider,
    pub(crate) log_batcher: LogBatcher,
    pub(crate) rt: tokio::runtime::Handle,
    /// When nothing was handled, the metrics (the gateway's own among them) are still exported
    /// this often (`otlp.metric_interval_ms`).
    pub(crate) metric_interval: Duration,
    /// Where failed acknowledgements are counted (`stream_errors`).
    pub(crate) counters: Arc<Counters>,
}

/// The committer's thread (see the module docs).
#[cfg(feature = "redis")]
#[derive(Debug)]
pub(crate) struct Committer {
    stop: std::sync::mpsc::Sender<Duration>,
    thread: Option<JoinHandle<()>>,
}

#[cfg(feature = "redis")]
impl Committer {
    /// Starts committing every `interval` on a thread of its own (the metric export blocks).
    pub(crate) fn spawn(
        ledger: Arc<WorkerLedger>,
        client: redis::Client,
        settings: StreamSettings,
        parts: CommitParts,
        interval: Duration,
        log_flush_bound: Duration,
    ) -> std::io::Result<Self> {
        let (stop, rx) = std::sync::mpsc::channel::<Duration>();
        let thread = std::thread::Builder::new()
            .name("telemetry-gateway-commit".into())
            .spawn(move || {
                let mut conn: Option<redis::aio::MultiplexedConnection> = None;
                let mut last_export = Instant::now();
                loop {
                    match rx.recv_timeout(interval) {
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                            let c = Commit {
                                ledger: &ledger,
                                client: &client,
                                settings: &settings,
                                parts: &parts,
                            };
                            c.run(&mut conn, &mut last_export, log_flush_bound);
                        }
                        Ok(bound) => {
                            // The final commit of a drain: everything handled is exported and
                            // acknowledged, within what is left of the deadline.
                            let c = Commit {
                                ledger: &ledger,
                                client: &client,
                                settings: &settings,
                                parts: &parts,
                            };
                            c.run(&mut conn, &mut last_export, bound);
                            return;
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            })?;
        Ok(Committer {
            stop,
            thread: Some(thread),
        })
    }

    /// Runs the final commit (bounded by `bound`) and stops.
    pub(crate) fn finish(&mut self, bound: Duration) {
        let _ = self.stop.send(bound);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one commit works with.
#[cfg(feature = "redis")]
struct Commit<'a> {
    ledger: &'a WorkerLedger,
    client: &'a redis::Client,
    settings: &'a StreamSettings,
    parts: &'a CommitParts,
}

#[cfg(feature = "redis")]
impl Commit<'_> {
    /// One commit (see the module docs). Runs on the committer's thread, never on a runtime.
    fn run(
        &self,
        conn: &mut Option<redis::aio::MultiplexedConnection>,
        last_export: &mut Instant,
        log_flush_bound: Duration,
    ) {
        let Commit {
            ledger,
            client,
            settings,
            parts,
        } = *self;
        // Connected first, so that the acknowledgement follows the metric export at once.
        parts.rt.block_on(async {
            if conn.is_none() {
                *conn = settings.open(client).await.ok();
            }
        });
        let handled =
            {
                let _closed = ledger.gate.write();
                let handled = std::mem::take(&mut *ledger.handled.lock());
                if !handled.is_empty() {
                    // Their log records were queued before they were noted handled: export them
                    // before their metrics, so that a crash after the metric export leaves only the
                    // `XACK` undone.
                    let lb = parts.log_batcher.clone();
                    let flushed = parts.rt.block_on(async move {
                        tokio::time::timeout(log_flush_bound, lb.flush()).await
                    });
                    if flushed.is_err() {
                        parts
                            .counters
                            .log
                            .warn_limited("worker commit: log export slow", || {
                                tracing::warn!(
                                    bound_ms = log_flush_bound.as_millis() as u64,
                                    "worker commit: log records not exported within the bound; \
                             committing anyway (the records stay held and are counted when \
                             they settle)"
                                )
                            });
                    }
                }
                if !handled.is_empty() || last_export.elapsed() >= parts.metric_interval {
                    *last_export = Instant::now();
                    // A failed export leaves the counts in the SDK's cumulative state: the next
                    // successful export carries them, so the entries are still acknowledged.
                    if let Err(e) = parts.meter_provider.force_flush() {
                        parts.counters.log.warn_limited("worker commit: metric export failed", || {
                        tracing::warn!(
                            error = %e,
                            "worker commit: metric export failed; the counts are kept for the \
                             next export"
                        )
                    });
                    }
                }
                handled
            };
        let ids = ledger.take_entry_ids(handled);
        if ids.is_empty() {
            return;
        }
        let acked = parts.rt.block_on(async {
            if conn.is_none() {
                *conn = settings.open(client).await.ok();
            }
            let Some(c) = conn.as_mut() else {
                return false;
            };
            let mut ok = true;
            for chunk in ids.chunks(1024) {
                let r: redis::RedisResult<u64> = redis::cmd("XACK")
                    .arg(&settings.stream)
                    .arg(&settings.group)
                    .arg(chunk)
                    .query_async(c)
                    .await;
                ok &= r.is_ok();
            }
            ok
        });
        if !acked {
            *conn = None;
            parts
                .counters
                .log
                .warn_limited("worker commit: acknowledgement failed", || {
                    tracing::warn!(
                    entries = ids.len(),
                    "worker commit: XACK failed; the entries are acknowledged at the next commit"
                )
                });
            Counters::add(&parts.counters.stream_errors, 1);
            ledger.unacked.lock().extend(ids);
        }
    }
}

/// How long a commit waits for the log records of what it commits: a quarter of
/// `transport.claim_idle_ms`, at most 5 s. Past it the commit goes on, and the records stay held
/// by the log batcher and are counted when they settle.
#[cfg(feature = "redis")]
pub(crate) fn log_flush_bound(claim_idle: Duration) -> Duration {
    (claim_idle / 4).min(Duration::from_secs(5))
}

impl WorkerLedger {
    /// A consumer started reading; it calls [`WorkerLedger::source_closed`] once.
    pub(crate) fn source_opened(&self) {
        self.open_sources.fetch_add(1, Ordering::SeqCst);
    }

    /// A consumer stopped reading.
    pub(crate) fn source_closed(&self) {
        self.open_sources.fetch_sub(1, Ordering::SeqCst);
    }
}
