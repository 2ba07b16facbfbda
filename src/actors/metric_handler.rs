//! `MetricHandlerActor`: handles metric/log events, one supervised actor per partition.
//!
//! Per batch taken from its [`EnvelopeSource`]: dedup (one `CheckBatch` to its `DedupActor`),
//! rehydrate the offloaded ones (one `RehydrateBatch` to its `RehydratorActor`), then for each
//! event the host's [`CaseHandler`] (if any), the metric updates and one log record, queued to
//! the log batcher which settles the event's accounting when the record is exported.
//!
//! **Supervision.** A panic in a case handler is caught at the event, never reaches the host: the
//! event is dead-lettered (`handler_panicked`, never retried), and the actor stops so its
//! `Supervisor` restarts it: a new actix context (every future the actor had spawned is dropped)
//! around the same actor value, after `Supervised::restarting` (which counts the restart). The
//! events taken in the same batch behind the poison event stay in `in_hand`, part of that value,
//! and are handled next.
//!
//! **In a worker** (Redis Streams transport, `Shared::worker`), the events a batch settles are
//! noted in the worker's ledger under the read side of its commit gate, in the same step that
//! records their metrics, so a commit exports exactly the counts of the entries it
//! acknowledges (`transport::worker`). Each work item carries its stream entry id as the owner
//! of its dedup mark: a redelivered entry whose mark is its own (an earlier delivery that never
//! committed) is handled (`Verdict::Own`), while a re-appended copy of the same event (another
//! entry) is a duplicate. (Before, any entry delivered more than once was exempt, so an entry
//! deferred while dedup was away and a re-appended copy of it could both be handled.)

use std::collections::VecDeque;
use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::prelude::*;
use opentelemetry::KeyValue;
use uuid::Uuid;

use super::dedup::{CheckOwned, DedupActor, DedupKey, Verdict};
use super::rehydrator::{RehydrateBatch, RehydrateItem, RehydratorActor};
use super::{Backpressure, Shared};
use crate::contracts::{JsonObject, Payload, TelemetryEnvelope};
use crate::diagnostics::ledger::{Holder, Outcome};
use crate::diagnostics::recorder::{EventRef, Stage};
use crate::diagnostics::{Counters, ReasonCode};
use crate::export::logs::{share_out, LogItem, PendingRecord};
use crate::export::mapping::EncodeBuffers;
use crate::export::ExportHandles;
use crate::transport::EnvelopeSource;

/// Host code run for every metric/log event of one case, before the built-in mapping.
///
/// Returns extra attributes for the event's log record. A panic here is caught: the event is
/// dead-lettered and counted (`handler_panicked`), and the handler restarted.
pub trait CaseHandler: Send + Sync + Debug + 'static {
    /// Handles one event. `payload` is `None` for a degraded event whose payload was lost.
    fn handle(&self, env: &TelemetryEnvelope, payload: Option<&JsonObject>) -> Vec<KeyValue>;
}

/// One event on its way through the handler.
#[derive(Debug)]
struct Work {
    env: TelemetryEnvelope,
    ev: EventRef,
    deduped: bool,
    payload: Option<JsonObject>,
    rehydrated: bool,
    degraded: Option<ReasonCode>,
    /// Dedup checks that found the store unavailable (a worker asks again before deferring).
    dedup_attempts: u32,
    /// In a worker: the stream entry this work item stands for, the owner of its dedup mark.
    owner: Option<String>,
}

/// How many times a worker's handler asks an unavailable dedup store about the same events
/// before it defers them (`dedup_deferred`). A Redis restart is usually over within that second,
/// and an entry deferred then would wait `transport.claim_idle_ms` to be read again.
const WORKER_DEDUP_ATTEMPTS: u32 = 10;

/// The wait between two asks (see [`WORKER_DEDUP_ATTEMPTS`]).
const WORKER_DEDUP_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The metric/log handler of one partition.
pub(crate) struct MetricHandlerActor {
    index: usize,
    source: Option<Box<dyn EnvelopeSource>>,
    in_hand: VecDeque<Work>,
    batch_size: usize,
    dedup: Addr<DedupActor>,
    rehydrator: Addr<RehydratorActor>,
    shared: Arc<Shared>,
    export: Arc<ExportHandles>,
    case_handlers: Arc<crate::FastMap<String, Arc<dyn CaseHandler>>>,
    source_closed: bool,
    /// Events of earlier batches that reached their outcome, for the source's `settle` (kept
    /// only when the source wants it).
    settled: Vec<Uuid>,
    wants_settle: bool,
    /// Set while the handler waits for room in the log queue.
    backpressure: Backpressure,
    /// The encoder's reused buffers, and the size of the last batch's encoded records.
    bufs: EncodeBuffers,
    last_size: usize,
}

/// Where a batch's encoded log records go while it is handled.
struct Encoding<'a> {
    bufs: &'a mut EncodeBuffers,
    entries: &'a mut Vec<u8>,
}

impl Debug for MetricHandlerActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricHandlerActor")
            .field("index", &self.index)
            .field("in_hand", &self.in_hand.len())
            .finish()
    }
}

/// What a metric handler is built from.
pub(crate) struct HandlerParts {
    /// Its position in the pool (log lines, liveness names).
    pub(crate) index: usize,
    /// Where its events come from.
    pub(crate) source: Box<dyn EnvelopeSource>,
    /// Events taken per turn (`metric_pool.batch_size`).
    pub(crate) batch_size: usize,
    /// Its own dedup actor.
    pub(crate) dedup: Addr<DedupActor>,
    /// Its own rehydrator actor.
    pub(crate) rehydrator: Addr<RehydratorActor>,
    /// The gateway's shared state.
    pub(crate) shared: Arc<Shared>,
    /// The export pipeline's handles.
    pub(crate) export: Arc<ExportHandles>,
    /// The host's case handlers, by case name.
    pub(crate) case_handlers: Arc<crate::FastMap<String, Arc<dyn CaseHandler>>>,
    /// Its waits for room in the log queue (for the shutdown's liveness check).
    pub(crate) backpressure: Backpressure,
}

impl MetricHandlerActor {
    pub(crate) fn new(parts: HandlerParts) -> Self {
        let HandlerParts {
            index,
            source,
            batch_size,
            dedup,
            rehydrator,
            shared,
            export,
            case_handlers,
            backpressure,
        } = parts;
        let wants_settle = source.wants_settle();
        MetricHandlerActor {
            index,
            settled: Vec::new(),
            wants_settle,
            source: Some(source),
            in_hand: VecDeque::new(),
            batch_size,
            dedup,
            rehydrator,
            shared,
            export,
            case_handlers,
            source_closed: false,
            backpressure,
            bufs: EncodeBuffers::default(),
            last_size: 0,
        }
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// `id` reached its outcome here: the source (or the worker's commit) may acknowledge it.
    fn note_settled(&mut self, id: Uuid) {
        if let Some(w) = &self.shared.worker {
            w.note_handled([id]);
        } else if self.wants_settle {
            self.settled.push(id);
        }
    }

    /// The next step of the pump: take, dedup, rehydrate or handle, whichever is due.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        if self.in_hand.iter().any(|w| !w.deduped) {
            return self.dedup_step(ctx);
        }
        if self.in_hand.iter().any(|w| !w.rehydrated) {
            return self.rehydrate_step(ctx);
        }
        if !self.in_hand.is_empty() {
            return self.handle_step(ctx);
        }
        self.take_step(ctx);
    }

    fn take_step(&mut self, ctx: &mut Context<Self>) {
        let Some(mut source) = self.source.take() else {
            return;
        };
        let max = self.batch_size;
        let handled = std::mem::take(&mut self.settled);
        let fut = async move {
            if !handled.is_empty() {
                source.settle(handled).await;
            }
            let batch = source.recv_batch(max).await;
            (source, batch)
        };
        ctx.spawn(fut.into_actor(self).map(|(source, batch), act, ctx| {
            act.source = Some(source);
            match batch {
                Some(envs) => {
                    // Each event's journey is found once (or started, for an event whose
                    // start was in another process); its later steps go straight to it.
                    let mut evs: Vec<EventRef> = envs.iter().map(EventRef::of).collect();
                    act.shared.counters.recorder().attach_all(&mut evs);
                    let worker = act.shared.worker.clone();
                    act.in_hand
                        .extend(envs.into_iter().zip(evs).map(|(env, ev)| Work {
                            rehydrated: !matches!(env.payload, Payload::Ref(_)),
                            payload: None,
                            owner: worker.as_ref().and_then(|w| w.take_owner(&env.event_id)),
                            ev,
                            env,
                            deduped: false,
                            degraded: None,
                            dedup_attempts: 0,
                        }));
                    act.pump(ctx);
                }
                None => act.source_closed = true,
            }
        }));
    }

    fn dedup_step(&mut self, ctx: &mut Context<Self>) {
        let keys: Vec<DedupKey> = self
            .in_hand
            .iter()
            .filter(|w| !w.deduped)
            .map(|w| DedupKey {
                tenant_id: w.ev.tenant_id.clone(),
                event_id: w.env.event_id,
            })
            .collect();
        let n = keys.len();
        // In a worker each key carries its stream entry as the mark's owner (see `Verdict::Own`).
        let owners: Vec<Option<String>> = self
            .in_hand
            .iter()
            .filter(|w| !w.deduped)
            .map(|w| w.owner.clone())
            .collect();
        let ask = self.dedup.send(CheckOwned { keys, owners });
        ctx.spawn(ask.into_actor(self).map(move |res, act, ctx| {
            let verdicts = res.unwrap_or_else(|_| vec![Verdict::Unavailable; n]);
            if verdicts.contains(&Verdict::Unavailable) {
                // One failed or timed-out store call; its events are counted as
                // degraded (`dedup_store_unavailable`) one by one below.
                Counters::add(&act.shared.counters.dedup_store_errors, 1);
            }
            let mut verdicts = verdicts.into_iter();
            let mut kept = VecDeque::with_capacity(act.in_hand.len());
            let mut checked: Vec<EventRef> = Vec::with_capacity(act.in_hand.len());
            let mut duplicates: Vec<Uuid> = Vec::new();
            let mut deferred = 0u64;
            let mut ask_again = false;
            for mut w in act.in_hand.drain(..) {
                if w.deduped {
                    kept.push_back(w);
                    continue;
                }
                let verdict = verdicts.next().unwrap_or(Verdict::Unavailable);
                // A worker asks again (briefly) before deferring: see
                // WORKER_DEDUP_ATTEMPTS.
                if verdict == Verdict::Unavailable
                    && act.shared.worker.is_some()
                    && w.dedup_attempts + 1 < WORKER_DEDUP_ATTEMPTS
                {
                    w.dedup_attempts += 1;
                    ask_again = true;
                    kept.push_back(w);
                    continue;
                }
                w.deduped = true;
                match verdict {
                    Verdict::Own => {
                        // Its id was marked by this entry's delivery that never
                        // committed (the mark's owner is this stream entry).
                        act.shared.counters.step(
                            &w.ev,
                            Stage::DedupChecked,
                            Some(
                                "redelivered: the dedup store's mark is this entry's own \
                                     earlier delivery, which never committed; handled",
                            ),
                        );
                    }
                    Verdict::Duplicate => {
                        act.shared.counters.settle(
                            &w.ev,
                            Holder::MetricLogPath,
                            Outcome::dropped(ReasonCode::Duplicate),
                        );
                        duplicates.push(w.ev.event_id);
                        continue;
                    }
                    // A worker does not fail open: its stream delivers the entry again
                    // (after `transport.claim_idle_ms`), when the store can be asked.
                    // Handled unchecked, a copy the producer re-appended (its XADD
                    // applied, the reply lost) would count twice.
                    Verdict::Unavailable if act.shared.worker.is_some() => {
                        act.shared.counters.settle(
                            &w.ev,
                            Holder::MetricLogPath,
                            Outcome::Dropped {
                                reason: ReasonCode::DedupDeferred,
                                detail: Some(
                                    "dedup store unavailable: the entry stays pending \
                                             and is read again",
                                ),
                            },
                        );
                        deferred += 1;
                        continue;
                    }
                    Verdict::Unavailable => {
                        act.shared.counters.degrade_event(
                            &w.ev,
                            ReasonCode::DedupStoreUnavailable,
                            Some("processed without dedup (fail-open)"),
                        );
                    }
                    Verdict::New => checked.push(w.ev.clone()),
                }
                kept.push_back(w);
            }
            act.shared
                .counters
                .recorder()
                .record_batch(&checked, &[(Stage::DedupChecked, None)]);
            act.in_hand = kept;
            for id in duplicates {
                act.note_settled(id);
            }
            if deferred > 0 {
                act.shared.counters.log.warn_limited(
                    "dedup store unavailable; worker entries left pending",
                    || {
                        tracing::warn!(
                            handler = act.index,
                            entries = deferred,
                            "dedup store unavailable; worker entries left pending to be \
                                     read again"
                        )
                    },
                );
            }
            if ask_again {
                // The events wait in hand; nothing else is taken meanwhile.
                ctx.run_later(WORKER_DEDUP_RETRY, |act, ctx| act.pump(ctx));
                return;
            }
            act.pump(ctx);
        }));
    }

    fn rehydrate_step(&mut self, ctx: &mut Context<Self>) {
        let items: Vec<RehydrateItem> = self
            .in_hand
            .iter()
            .filter(|w| !w.rehydrated)
            .filter_map(|w| match &w.env.payload {
                Payload::Ref(r) => Some(RehydrateItem {
                    tenant_id: w.env.context.tenant_id.clone(),
                    payload_ref: r.clone(),
                    fallback: w.env.payload_fallback.clone(),
                }),
                Payload::Inline(_) => None,
            })
            .collect();
        ctx.spawn(
            self.rehydrator
                .send(RehydrateBatch(items))
                .into_actor(self)
                .map(|res, act, ctx| {
                    let mut results = res.unwrap_or_default().into_iter();
                    for w in act.in_hand.iter_mut().filter(|w| !w.rehydrated) {
                        w.rehydrated = true;
                        let rec = act.shared.counters.recorder();
                        match results.next() {
                            Some(r) => {
                                // The rehydrator counted any degrade; the journey notes it here.
                                if let Some(why) = &r.ref_refused {
                                    if r.degraded != Some(ReasonCode::PayloadRefRefused) {
                                        rec.record(
                                            &w.ev,
                                            Stage::Degraded,
                                            Some(ReasonCode::PayloadRefRefused),
                                            Some(why),
                                        );
                                    }
                                }
                                match r.degraded {
                                    Some(reason) => rec.record(
                                        &w.ev,
                                        Stage::Degraded,
                                        Some(reason),
                                        Some(r.source),
                                    ),
                                    None => {
                                        rec.record(&w.ev, Stage::Rehydrated, None, Some(r.source))
                                    }
                                }
                                w.payload = r.payload;
                                w.degraded = r.degraded;
                            }
                            None => {
                                act.shared.counters.degrade_event(
                                    &w.ev,
                                    ReasonCode::RehydrationFailed,
                                    Some("rehydrator unavailable"),
                                );
                                w.degraded = Some(ReasonCode::RehydrationFailed);
                            }
                        }
                    }
                    act.pump(ctx);
                }),
        );
    }

    fn handle_step(&mut self, ctx: &mut Context<Self>) {
        // In a worker, the commit must not export metrics recorded here before these events
        // are noted handled: both happen under the read side of the gate.
        let worker = self.shared.worker.clone();
        let _gate = worker.as_ref().map(|w| w.gate.read());
        // The batch's log records go to the log batcher in one message; encoded (when the log
        // destination takes them) into one buffer the records share.
        let mut pending: Vec<(PendingRecord, Option<EventRef>)> =
            Vec::with_capacity(self.in_hand.len());
        let encode = self.export.log_batcher.takes_encoded();
        let mut bufs = std::mem::take(&mut self.bufs);
        let mut entries = Vec::with_capacity(if encode { self.last_size } else { 0 });
        // The batch's counter increments, summed and applied once (before the records go).
        let mut metrics = crate::export::mapping::MetricBatch::default();
        while let Some(w) = self.in_hand.pop_front() {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let encoding = encode.then_some(Encoding {
                    bufs: &mut bufs,
                    entries: &mut entries,
                });
                self.handle_one(&w, &mut metrics, encoding)
            }));
            match outcome {
                Ok(record) => pending.push((record, Some(w.ev))),
                Err(_) => {
                    self.export
                        .mapper
                        .apply_metrics(std::mem::take(&mut metrics));
                    // A record the panic interrupted wrote past the last complete one: the
                    // ranges of the complete ones hold.
                    let records = share_out(pending, entries);
                    // The actor stops next, so it cannot wait for room: what the log queue
                    // has no room for now is dropped, counted.
                    for (_, ev) in self.queue_records(records) {
                        if let Some(ev) = ev {
                            let outcome = Outcome::dropped(ReasonCode::QueueFull);
                            self.counters().settle(&ev, Holder::MetricLogPath, outcome);
                        }
                    }
                    // Counted here, but not settled: a transport with acknowledgements delivers
                    // it again (up to its dead-letter limit).
                    self.counters().settle(
                        &w.ev,
                        Holder::MetricLogPath,
                        Outcome::dropped(ReasonCode::HandlerPanicked),
                    );
                    tracing::error!(
                        handler = self.index,
                        event_id = %w.env.event_id,
                        correlation_id = %self.counters().log.sanitize(&w.env.effective_correlation_id()),
                        case = %w.env.case,
                        "case handler panicked; event dead-lettered, handler restarting"
                    );
                    // The supervisor restarts us; `in_hand` keeps the events behind this one.
                    ctx.stop();
                    return;
                }
            }
        }
        self.export.mapper.apply_metrics(metrics);
        self.bufs = bufs;
        self.last_size = entries.len();
        let records = share_out(pending, entries);
        let rest = self.queue_records(records);
        if !rest.is_empty() {
            self.wait_for_room(rest, ctx);
        }
        self.pump(ctx);
    }

    /// The log queue is full: waits for room, taking no more events meanwhile (the next `pump`
    /// runs after the wait), so events wait in this handler's queue instead of being dropped.
    /// Records a closed queue refuses (shutdown) are dropped, counted.
    fn wait_for_room(&mut self, records: Vec<LogItem>, ctx: &mut Context<Self>) {
        let log_batcher = self.export.log_batcher.clone();
        let send = self
            .backpressure
            .during(async move { log_batcher.send_many(records).await });
        ctx.wait(send.into_actor(self).map(|refused, act, _ctx| {
            for (_, ev) in refused {
                if let Some(ev) = ev {
                    let outcome = Outcome::Dropped {
                        reason: ReasonCode::Shutdown,
                        detail: Some("log queue closed"),
                    };
                    act.counters().settle(&ev, Holder::MetricLogPath, outcome);
                }
            }
        }));
    }

    /// Queues handled events' records for export as far as the log queue has room now, and
    /// returns the rest (the caller waits for room, or drops them).
    fn queue_records(&mut self, records: Vec<LogItem>) -> Vec<LogItem> {
        self.counters().recorder().record_batch(
            records.iter().filter_map(|(_, ev)| ev.as_ref()),
            &[(Stage::Handled, None)],
        );
        let ids = records
            .iter()
            .filter_map(|(_, ev)| ev.as_ref().map(|e| e.event_id));
        // Queued for export (now or after a wait), or dropped: either way settled here.
        if let Some(w) = &self.shared.worker {
            w.note_handled(ids);
        } else if self.wants_settle {
            self.settled.extend(ids);
        }
        self.export.log_batcher.try_send_many(records)
    }

    /// Handles one event: its metrics, its case handler, and its log record.
    /// With `encoding`, the record is written there (OTLP protobuf) instead of built as an SDK
    /// value.
    fn handle_one(
        &self,
        w: &Work,
        metrics: &mut crate::export::mapping::MetricBatch,
        encoding: Option<Encoding<'_>>,
    ) -> PendingRecord {
        let env = &w.env;
        let payload: Option<&JsonObject> = match &env.payload {
            Payload::Inline(p) => Some(p),
            Payload::Ref(_) => w.payload.as_ref(),
        };
        let extra = match self.case_handlers.get(env.case.as_str()) {
            Some(h) => h.handle(env, payload),
            None => Vec::new(),
        };
        let m = &self.export.mapper;
        m.add_metrics(metrics, env, payload, w.degraded);
        if let Some(Encoding { bufs, entries }) = encoding {
            let start = entries.len();
            m.encode_log_record(env, payload, w.degraded, &extra, bufs, entries);
            return PendingRecord::Encoded(start..entries.len());
        }
        let mut record = m.log_record(&self.export.logger, env, payload, w.degraded);
        if !extra.is_empty() {
            use opentelemetry::logs::LogRecord as _;
            record.add_attributes(
                extra
                    .into_iter()
                    .map(|kv| (kv.key, crate::export::mapping::value_to_any(kv.value))),
            );
        }
        PendingRecord::Sdk(Box::new(record))
    }
}

impl Actor for MetricHandlerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.pump(ctx);
    }
}

impl Supervised for MetricHandlerActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        Counters::add(&self.shared.counters.handler_restarts, 1);
    }
}
