//! `TraceBatcherActor`: batches trace-shaped events and turns them into spans, companion logs
//! and metrics.
//!
//! A batch is flushed when `trace_batcher.max_batch_size` events wait, or when
//! `trace_batcher.flush_interval_ms` has passed since the **oldest** waiting event arrived,
//! whichever comes first: a timer starts with the first event of an empty buffer, so no event
//! waits for a next one to arrive.
//!
//! At flush, per event: memory dedup (a re-sent trace event counts once; always in memory, even
//! with `dedup.backend = "redis"`, so it catches re-sends to the same process only), metric
//! updates (for events routed to the enterprise exporter, before sampling so dashboards see all
//! traffic), trace sampling (`otlp.sampling_ratio`, decided on the trace id so a trace is kept
//! whole), destinations (the
//! enterprise exporter if the event was routed to it, plus the community sinks of its
//! tenant/app), then the span, one companion log record and the metric updates. Each destination
//! gets one job on its own bounded queue; see [`crate::export::sink`] for how the events of a
//! batch are accounted.
//!
//! Backpressure: when the enterprise sink's queue or the log queue (companion records) is full,
//! the batcher waits for room (`ctx.wait`) and takes no more events meanwhile, so events wait in
//! the trace queue instead of being dropped behind it. A full tenant sink queue drops that
//! sink's copy instead (counted), so one stuck tenant holds back no one.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use opentelemetry_sdk::trace::SpanData;
use tokio::sync::mpsc;

use super::dedup::{DedupKey, MemoryDedup, Verdict};
use super::{Backpressure, Shared, TraceItem};
use crate::contracts::{JsonObject, Payload, TelemetryEnvelope};
use crate::diagnostics::ledger::{Holder, Outcome};
use crate::diagnostics::recorder::{Detail, EventRef, Stage};
use crate::diagnostics::{Counters, ReasonCode};
use crate::export::logs::{share_out, LogItem, PendingRecord};
use crate::export::mapping::{EncodeBuffers, ResolvedIds};
use crate::export::sink::{GroupTracker, SinkJob, SinkWorker, SpanBatch};
use crate::export::ExportHandles;

/// Flush at once, and keep flushing every event at once from now on (shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Drain;

/// The queues of the batcher's shards (`trace_batcher.shards`), each read by one batcher actor
/// on its own thread. The gateway actor is the only sender: when it stops, every shard's stream
/// ends and the shard flushes.
#[derive(Debug, Clone)]
pub(crate) struct TraceShards {
    queues: Vec<mpsc::Sender<TraceItem>>,
}

impl TraceShards {
    /// `queues`: one per shard; `None` when there is none.
    pub(crate) fn new(queues: Vec<mpsc::Sender<TraceItem>>) -> Option<Self> {
        (!queues.is_empty()).then_some(TraceShards { queues })
    }

    /// The queue of the shard that takes `env`, picked by its trace id: the events of a trace
    /// (a run) stay together, and a re-sent event (same ids) goes where its first copy went, to
    /// the same memory dedup. An event without a trace id (never, once ids are resolved) goes by
    /// its event id.
    pub(crate) fn queue_for(&self, env: &TelemetryEnvelope) -> &mpsc::Sender<TraceItem> {
        let n = self.queues.len() as u64;
        let i = if n <= 1 {
            0
        } else {
            let h = match &env.correlation.trace_id {
                Some(t) => SHARD_HASH.hash_one(t.as_str()),
                None => SHARD_HASH.hash_one(env.event_id.as_u128()),
            };
            h % n
        };
        // In bounds: `new` keeps at least one queue, and `i < n`.
        &self.queues[i as usize]
    }

    /// Every shard's queue, for the probes (their depths summed).
    pub(crate) fn queues(&self) -> &[mpsc::Sender<TraceItem>] {
        &self.queues
    }
}

/// The shard hash: fixed, so a shard's share does not change between runs of a test.
const SHARD_HASH: foldhash::fast::FixedState = foldhash::fast::FixedState::with_seed(0x7472_6163);

/// The trace batcher.
#[derive(Debug)]
pub(crate) struct TraceBatcherActor {
    shared: Arc<Shared>,
    export: Arc<ExportHandles>,
    buffer: Vec<TraceItem>,
    max_batch: usize,
    flush_interval: Duration,
    timer: Option<SpawnHandle>,
    draining: bool,
    dedup: MemoryDedup,
    /// Set while the batcher waits for room in the enterprise sink's or the log queue.
    backpressure: Backpressure,
    /// The encoder's reused buffers.
    bufs: EncodeBuffers,
    /// The encoded spans' and companions' size at the last flush: the next flush's first guess.
    last_sizes: (usize, usize),
}

/// What a flush could not hand over without waiting: companion records the log queue had no
/// room for, and the enterprise job its full queue refused.
#[derive(Debug, Default)]
struct Leftover {
    companions: Vec<LogItem>,
    enterprise: Option<SinkJob>,
}

impl TraceBatcherActor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        export: Arc<ExportHandles>,
        max_batch: usize,
        flush_interval: Duration,
        dedup: MemoryDedup,
        backpressure: Backpressure,
    ) -> Self {
        TraceBatcherActor {
            shared,
            export,
            buffer: Vec::with_capacity(max_batch),
            max_batch,
            flush_interval,
            timer: None,
            draining: false,
            dedup,
            backpressure,
            bufs: EncodeBuffers::default(),
            last_sizes: (0, 0),
        }
    }

    fn flush(&mut self, ctx: &mut Context<Self>) {
        if let Some(t) = self.timer.take() {
            ctx.cancel_future(t);
        }
        if self.buffer.is_empty() {
            return;
        }
        let items = std::mem::replace(&mut self.buffer, Vec::with_capacity(self.max_batch));
        let leftover = self.export_items(items);
        if !leftover.companions.is_empty() || leftover.enterprise.is_some() {
            self.wait_for_room(leftover, ctx);
        }
    }

    /// Hands over what a flush could not without waiting, taking no more events until it is
    /// done (see the module docs). A queue closed meanwhile (shutdown) loses what it refused,
    /// counted.
    fn wait_for_room(&mut self, leftover: Leftover, ctx: &mut Context<Self>) {
        let export = self.export.clone();
        let counters = self.shared.counters.clone();
        let send = self.backpressure.during(async move {
            let Leftover {
                companions,
                enterprise,
            } = leftover;
            if !companions.is_empty() {
                let refused = export.log_batcher.send_many(companions).await.len();
                if refused > 0 {
                    counters.companions_done(refused as u64, true);
                }
            }
            if let Some(job) = enterprise {
                let worker = &export.enterprise_sink;
                if let Err(SinkJob::Export { groups, .. }) = worker.send(job).await {
                    for g in groups {
                        g.report(&worker.name, Err((ReasonCode::Shutdown, "sink closed")));
                    }
                }
            }
        });
        ctx.wait(send.into_actor(self));
    }

    fn export_items(&mut self, items: Vec<TraceItem>) -> Leftover {
        let mut leftover = Leftover::default();
        let counters = self.shared.counters.clone();
        let export = self.export.clone();
        // Group events by destination set: (enterprise?, tenant sink registration ids).
        type Group = (Vec<SpanData>, Vec<EventRef>);
        let mut groups: BTreeMap<(bool, Vec<u64>), Group> = BTreeMap::new();
        // The tenant sinks of each (tenant, app) in this flush: resolved once per flush.
        // (tenant, app) -> (open sink ids, why a sink could not be opened).
        type TenantApp = (String, Option<String>);
        let mut resolved: HashMap<TenantApp, (Vec<u64>, Option<String>)> = HashMap::new();
        let mut workers: HashMap<u64, crate::export::sink::SinkWorker> = HashMap::new();
        let no_sinks = export.sinks.is_empty();
        let mut companions: Vec<(PendingRecord, Option<EventRef>)> =
            Vec::with_capacity(items.len());
        // Where the enterprise destination and the log batcher take encoded data, spans and
        // companions are written straight from the envelopes (`export::encode`); SDK values are
        // built only for a destination that takes them (a tenant sink, JSON lines, SQLite).
        let encode_spans = export.enterprise_sink.takes_encoded();
        let encode_logs = export.log_batcher.takes_encoded();
        let mut enterprise_spans = Vec::with_capacity(self.last_sizes.0);
        let mut enterprise_count = 0usize;
        let mut log_entries = Vec::with_capacity(self.last_sizes.1);
        // The batch's counter increments, summed and applied once after the loop.
        let mut metrics = crate::export::mapping::MetricBatch::default();
        for item in items {
            let env = &item.env;
            let ev = item.ev;
            let key = DedupKey {
                tenant_id: ev.tenant_id.clone(),
                event_id: env.event_id,
            };
            if self.dedup.check(key) == Verdict::Duplicate {
                counters.settle(
                    &ev,
                    Holder::TracePath,
                    Outcome::dropped(ReasonCode::Duplicate),
                );
                continue;
            }
            let payload: Option<Cow<'_, JsonObject>> = match &env.payload {
                Payload::Inline(p) => Some(Cow::Borrowed(p)),
                // Spans carry scalars only; an offloaded payload is represented by its fallback
                // and its ref attribute, the full payload stays in the store.
                Payload::Ref(_) => env
                    .payload_fallback
                    .as_ref()
                    .and_then(|f| f.to_object())
                    .map(Cow::Owned),
            };
            let payload = payload.as_deref();
            // Metrics go to the enterprise metric pipeline, so only for events routed there.
            // They are recorded before sampling on purpose: trace sampling thins traces, never
            // the counts and durations dashboards are built on.
            if item.to_enterprise {
                export.mapper.add_metrics(&mut metrics, env, payload, None);
            }
            // Parsed once: for sampling here and for the span below.
            let ids = ResolvedIds::of(env);
            if !crate::routing::trace_sampled(ids.trace_id, export.sampling_ratio) {
                let detail = format!("otlp.sampling_ratio = {}", export.sampling_ratio);
                let outcome = Outcome::DroppedText {
                    reason: ReasonCode::SampledOut,
                    detail: &detail,
                };
                counters.settle(&ev, Holder::TracePath, outcome);
                continue;
            }
            let (sinks, open_failure) = if no_sinks {
                (Vec::new(), None)
            } else {
                let key = (env.context.tenant_id.clone(), env.context.app_id.clone());
                resolved
                    .entry(key)
                    .or_insert_with(|| {
                        let (open, failed) = export
                            .sinks
                            .resolve(&env.context.tenant_id, env.context.app_id.as_deref());
                        let ids = open.iter().map(|r| r.id).collect();
                        for r in open {
                            workers.insert(r.id, r.worker);
                        }
                        let failure = failed
                            .first()
                            .map(|(name, e)| format!("sink {name} could not be opened: {e}"));
                        (ids, failure)
                    })
                    .clone()
            };
            if !item.to_enterprise && sinks.is_empty() {
                let outcome = match &open_failure {
                    Some(why) => {
                        Counters::add(&counters.sink_spans_failed, 1);
                        Outcome::DroppedText {
                            reason: ReasonCode::ExportFailed,
                            detail: why,
                        }
                    }
                    None => Outcome::Dropped {
                        reason: ReasonCode::NoDestination,
                        detail: Some("enterprise exporter off and no sink for this tenant/app"),
                    },
                };
                counters.settle(&ev, Holder::TracePath, outcome);
                continue;
            }

            let need_values = !sinks.is_empty() || (item.to_enterprise && !encode_spans);
            let mut span = None;
            if need_values || !encode_logs {
                if encode_logs {
                    span = Some(export.mapper.span_with(env, payload, &ids));
                } else {
                    let (s, companion) =
                        export
                            .mapper
                            .span_and_companion_with(&export.logger, env, payload, &ids);
                    span = Some(s);
                    companions.push((PendingRecord::Sdk(Box::new(companion)), None));
                }
            }
            let span_out = (item.to_enterprise && encode_spans).then_some(&mut enterprise_spans);
            enterprise_count += usize::from(span_out.is_some());
            let log_start = log_entries.len();
            let log_out = encode_logs.then_some(&mut log_entries);
            if span_out.is_some() || log_out.is_some() {
                export.mapper.encode_span_and_companion(
                    env,
                    payload,
                    &ids,
                    &mut self.bufs,
                    span_out,
                    log_out,
                );
            }
            if encode_logs {
                companions.push((PendingRecord::Encoded(log_start..log_entries.len()), None));
            }
            // A slow operation also gets a log event of its own (`cases.<name>.slow_threshold_ms`).
            if let Some(threshold) = self
                .shared
                .table
                .route(&env.case)
                .and_then(|r| r.slow_threshold_ms)
                .map(Duration::from_millis)
            {
                if let Some(took) = export.mapper.slower_than(payload, threshold) {
                    let slow = export
                        .mapper
                        .slow_operation(&export.logger, env, took, threshold);
                    companions.push((PendingRecord::Sdk(Box::new(slow)), None));
                }
            }
            let group = groups.entry((item.to_enterprise, sinks)).or_default();
            group.0.extend(span);
            group.1.push(ev);
        }
        export.mapper.apply_metrics(metrics);
        self.last_sizes = (enterprise_spans.len(), log_entries.len());
        // The flush's encoded records share one buffer: each companion is a slice of it.
        let companions = share_out(companions, log_entries);
        // Companion logs go to the log batcher in one message per flush.
        counters.companions_queued(companions.len() as u64);
        leftover.companions = export.log_batcher.try_send_many(companions);
        if groups.is_empty() {
            return leftover;
        }
        // One job per destination, carrying every group that goes there.
        let mut enterprise_job: (Vec<SpanData>, Vec<Arc<GroupTracker>>) = (Vec::new(), Vec::new());
        let mut sink_jobs: BTreeMap<u64, (Vec<SpanData>, Vec<Arc<GroupTracker>>)> = BTreeMap::new();
        for ((to_enterprise, sinks), (spans, events)) in groups {
            let destinations = sinks.len() + usize::from(to_enterprise);
            let detail = match destinations {
                1 => Detail::Static("1 destination"),
                2 => Detail::Static("2 destinations"),
                n => Detail::Owned(format!("{n} destinations").into()),
            };
            counters
                .recorder()
                .record_batch(&events, &[(Stage::Batched, Some(detail))]);
            let tracker = GroupTracker::new(events, destinations, counters.clone());
            for &i in &sinks {
                let job = sink_jobs.entry(i).or_default();
                job.0.extend(spans.iter().cloned());
                job.1.push(tracker.clone());
            }
            if to_enterprise {
                enterprise_job.0.extend(spans);
                enterprise_job.1.push(tracker);
            }
        }
        if !enterprise_job.1.is_empty() {
            let spans = if encode_spans {
                SpanBatch::Encoded {
                    entries: enterprise_spans,
                    count: enterprise_count,
                }
            } else {
                SpanBatch::Values(enterprise_job.0)
            };
            let job = SinkJob::Export {
                spans,
                groups: enterprise_job.1,
            };
            // A full enterprise queue is waited on (`wait_for_room`), never dropped.
            leftover.enterprise = export.enterprise_sink.try_send(job).err();
        }
        for (i, (spans, trackers)) in sink_jobs {
            if let Some(w) = workers.get(&i) {
                send_job(w, spans, trackers, &counters);
            } else {
                let unknown: Arc<str> = Arc::from("unknown sink");
                for t in trackers {
                    t.report(&unknown, Err((ReasonCode::NoDestination, "sink not found")));
                }
            }
        }
        leftover
    }
}

/// Queues a tenant sink's job; a full queue drops this sink's copy, counted.
fn send_job(
    worker: &SinkWorker,
    spans: Vec<SpanData>,
    groups: Vec<Arc<GroupTracker>>,
    counters: &Counters,
) {
    let n = spans.len() as u64;
    let spans = SpanBatch::Values(spans);
    if let Err(SinkJob::Export { groups, .. }) = worker.try_send(SinkJob::Export { spans, groups })
    {
        // This sink's copy is lost; the events may still be delivered by another destination,
        // so the sink's loss is counted on its own.
        Counters::add(&counters.sink_spans_failed, n);
        worker.stats.record_queue_full(n);
        counters
            .log
            .warn_limited("sink queue full; batch dropped for this sink", || {
                tracing::warn!(
                    sink = %counters.log.sanitize(&worker.name),
                    spans = n,
                    "sink queue full; batch dropped for this sink"
                )
            });
        for g in groups {
            g.report(
                &worker.name,
                Err((ReasonCode::QueueFull, "sink queue full")),
            );
        }
    }
}

impl Actor for TraceBatcherActor {
    type Context = Context<Self>;
}

impl StreamHandler<TraceItem> for TraceBatcherActor {
    fn handle(&mut self, item: TraceItem, ctx: &mut Context<Self>) {
        self.buffer.push(item);
        if self.buffer.len() >= self.max_batch {
            self.flush(ctx);
        } else if self.timer.is_none() {
            let wait = if self.draining {
                Duration::ZERO
            } else {
                self.flush_interval
            };
            self.timer = Some(ctx.run_later(wait, |act, ctx| {
                act.timer = None;
                act.flush(ctx);
            }));
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        self.flush(ctx);
    }
}

impl Handler<Drain> for TraceBatcherActor {
    type Result = ();

    fn handle(&mut self, _msg: Drain, ctx: &mut Context<Self>) {
        self.draining = true;
        self.flush(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{TelemetryCase, TelemetryContext};

    fn shards(n: usize) -> (TraceShards, Vec<mpsc::Receiver<TraceItem>>) {
        let (txs, rxs) = (0..n).map(|_| mpsc::channel(1)).unzip();
        (TraceShards::new(txs).expect("at least one shard"), rxs)
    }

    fn shard_of(s: &TraceShards, env: &TelemetryEnvelope) -> usize {
        let q = s.queue_for(env);
        s.queues()
            .iter()
            .position(|t| t.same_channel(q))
            .expect("one of the shards")
    }

    #[test]
    fn a_trace_keeps_its_shard_and_traces_spread_over_every_shard() {
        assert!(TraceShards::new(Vec::new()).is_none());
        let (s, _rxs) = shards(4);
        let mut per_shard = [0usize; 4];
        for run in 0..400 {
            let event = |case, root| {
                let mut env = TelemetryEnvelope::new(case, TelemetryContext::tenant("t"))
                    .with_run_id(format!("run-{run}"));
                crate::correlation::resolve(&mut env, root);
                env
            };
            let first = shard_of(&s, &event(TelemetryCase::WorkflowRun, true));
            for _ in 0..3 {
                assert_eq!(
                    shard_of(&s, &event(TelemetryCase::NodeExecution, false)),
                    first
                );
            }
            per_shard[first] += 1;
        }
        // 400 traces over 4 shards: each shard gets a fair share (100 expected).
        assert!(
            per_shard.iter().all(|&c| (60..=140).contains(&c)),
            "{per_shard:?}"
        );
        // One shard takes everything, an event without a trace id too.
        let (one, _rx) = shards(1);
        let env = TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("t"));
        assert_eq!(shard_of(&one, &env), 0);
        // With several, such an event goes by its event id, the same way every time.
        assert_eq!(shard_of(&s, &env), shard_of(&s, &env));
    }
}
