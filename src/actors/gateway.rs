//! `GatewayActor`: the single entrance.
//!
//! Takes envelopes from the gateway queue (filled by `emit()`), and for each one:
//! 1. **eligibility and data type** from the routing table, under the runtime switches that were
//!    in force when `emit()` took the event, with the case's own policy (`cases.<name>.enabled`);
//!    a drop is counted with its reason, and the rule behind it (`RoutingTable::decide`, `rule`);
//! 2. resolves correlation and trace ids ([`crate::correlation::resolve`]), then the case's
//!    sampling (`Route::keeps_event`, keyed on the resolved trace id);
//! 3. **offloads** a payload above `payloads.inline_threshold_bytes` (serialized JSON) to the
//!    payload store at `{tenant_id}/{event_id}.json`, keeping a fallback of its scalar fields; if
//!    the store fails, times out or is saturated, the payload goes inline and that is counted;
//! 4. hands it to the trace batcher or the metric transport. A full queue there is waited on
//!    (`ctx.wait`: the actor takes nothing else meanwhile, so the gateway queue fills and
//!    `emit()` refuses with `QueueFull`); only a closed one is a counted drop (`shutdown`).
//!
//! The actor never blocks on I/O: offloads run as spawned futures, at most
//! `gateway.max_offloads_in_flight` at once.

use std::io::Write;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use super::trace_batcher::TraceShards;
use super::{Backpressure, GatewayItem, Shared, TraceItem};
use crate::contracts::{
    JsonObject, Payload, PayloadFallback, SignalType, TelemetryEnvelope, MAX_FALLBACK_BYTES,
};
use crate::diagnostics::ledger::{Holder, Outcome};
use crate::diagnostics::recorder::{Detail, EventRef, Interned, Stage};
use crate::diagnostics::{Counters, ReasonCode};
use crate::export::mapping::CONTENT_FIELDS;
use crate::payload_store::PayloadStore;
use crate::routing::Decision;
use crate::transport::{MetricTransport, TransportError};

/// The longest string field copied into an automatic fallback, in bytes.
pub(crate) const FALLBACK_MAX_STRING_BYTES: usize = 1024;

/// Runs whose derived ids the gateway actor keeps (about 100 bytes each): the events of a run
/// after its first one skip the hashing.
pub(crate) const RUN_ID_CACHE_RUNS: usize = 4096;

/// Tenant and run ids the gateway actor shares between the references of the events that
/// carry them (`EventRef::of_interned`; about 100 bytes each).
pub(crate) const INTERNED_IDS: usize = 4096;

/// The gateway actor.
#[derive(Debug)]
pub(crate) struct GatewayActor {
    shared: Arc<Shared>,
    trace_shards: TraceShards,
    transport: Arc<dyn MetricTransport>,
    store: PayloadStore,
    inline_threshold: usize,
    offloads_in_flight: usize,
    max_offloads: usize,
    run_ids: crate::correlation::RunIds,
    /// Tenant and run ids shared by the events' references.
    interned: Interned,
    /// Set while the actor waits for room in the trace or metric/log queue.
    backpressure: Backpressure,
}

impl GatewayActor {
    pub(crate) fn new(
        shared: Arc<Shared>,
        trace_shards: TraceShards,
        transport: Arc<dyn MetricTransport>,
        store: PayloadStore,
        inline_threshold: usize,
        max_offloads: usize,
        backpressure: Backpressure,
    ) -> Self {
        GatewayActor {
            shared,
            trace_shards,
            transport,
            store,
            inline_threshold,
            offloads_in_flight: 0,
            max_offloads,
            run_ids: crate::correlation::RunIds::new(RUN_ID_CACHE_RUNS),
            interned: Interned::new(INTERNED_IDS),
            backpressure,
        }
    }

    fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// The routing table dropped the event for `reason`: it leaves the gateway stage, its
    /// journey naming the configuration rule behind a per-case policy.
    fn refuse_by_policy(&self, ev: &EventRef, env: &TelemetryEnvelope, reason: ReasonCode) {
        self.counters().step(ev, Stage::Received, None);
        let rule = self.shared.table.rule(&env.case, reason);
        let outcome = match &rule {
            Some(detail) => Outcome::DroppedText { reason, detail },
            None => Outcome::dropped(reason),
        };
        self.counters().settle(ev, Holder::Gateway, outcome);
    }

    /// Hands a routed event to its path. The downstream gauge goes up before the send and the
    /// gateway gauge down after it, so the event is always counted in some stage. `received`:
    /// the journey's `received` step is still to be written (with `routed`, under one lock).
    fn forward(
        &mut self,
        env: TelemetryEnvelope,
        ev: EventRef,
        signal: SignalType,
        to_enterprise: bool,
        received: bool,
        ctx: &mut Context<Self>,
    ) {
        let c = self.shared.counters.clone();
        let routed = |detail: &'static str| {
            let steps = [
                (Stage::Received, None),
                (Stage::Routed, Some(Detail::Static(detail))),
            ];
            let steps = if received { &steps[..] } else { &steps[1..] };
            c.recorder().record_batch([&ev], steps);
        };
        match signal {
            SignalType::Trace => {
                c.enter(Holder::TracePath);
                let detail = if to_enterprise {
                    "trace: enterprise exporter and tenant sinks"
                } else {
                    "trace: tenant sinks only (enterprise off)"
                };
                routed(detail);
                let item = TraceItem {
                    env,
                    to_enterprise,
                    ev,
                };
                let tx = self.trace_shards.queue_for(&item.env);
                match tx.try_send(item) {
                    Ok(()) => Counters::add(&c.routed_trace, 1),
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        let tx = tx.clone();
                        self.wait_for_trace_room(tx, item, ctx)
                    }
                    Err(mpsc::error::TrySendError::Closed(item)) => {
                        c.settle(&item.ev, Holder::TracePath, closed_outcome("trace queue"));
                    }
                }
            }
            SignalType::MetricLog => {
                c.enter(Holder::MetricLogPath);
                routed("metric_log");
                // A full partition is waited on before the envelope is handed over (only this
                // actor sends, so the room it waited for is still there).
                if let Some(room) = self.transport.room_for(&env) {
                    return self.wait_for_metric_room(room, env, ev, ctx);
                }
                self.send_metric(env, &ev);
            }
        }
        c.leave(Holder::Gateway);
    }

    /// The shard's trace queue is full: waits for room, taking nothing else meanwhile (see the
    /// module docs). The event stays counted on the trace path while it waits.
    fn wait_for_trace_room(
        &mut self,
        tx: mpsc::Sender<TraceItem>,
        item: TraceItem,
        ctx: &mut Context<Self>,
    ) {
        let send = self.backpressure.during(async move { tx.send(item).await });
        ctx.wait(send.into_actor(self).map(|sent, act, _ctx| {
            let c = &act.shared.counters;
            match sent {
                Ok(()) => Counters::add(&c.routed_trace, 1),
                Err(mpsc::error::SendError(item)) => {
                    c.settle(&item.ev, Holder::TracePath, closed_outcome("trace queue"));
                }
            }
        }));
    }

    /// Queues a metric/log event; a full or closed transport drops it, counted.
    fn send_metric(&self, env: TelemetryEnvelope, ev: &EventRef) {
        let c = &self.shared.counters;
        let outcome = match self.transport.try_send(env) {
            Ok(()) => return Counters::add(&c.routed_metric_log, 1),
            Err(TransportError::Full) => Outcome::Dropped {
                reason: ReasonCode::QueueFull,
                detail: Some("metric/log queue"),
            },
            Err(TransportError::Closed) => closed_outcome("metric/log queue"),
        };
        c.settle(ev, Holder::MetricLogPath, outcome);
    }

    /// The event's metric/log partition is full: waits for room (taking nothing else
    /// meanwhile), then queues the event. The gateway stage is left now; the event stays
    /// counted on the metric/log path while it waits.
    fn wait_for_metric_room(
        &mut self,
        room: futures::future::BoxFuture<'static, ()>,
        env: TelemetryEnvelope,
        ev: EventRef,
        ctx: &mut Context<Self>,
    ) {
        self.shared.counters.leave(Holder::Gateway);
        let wait = self.backpressure.during(room);
        ctx.wait(
            wait.into_actor(self)
                .map(move |(), act, _ctx| act.send_metric(env, &ev)),
        );
    }

    fn route(&mut self, item: GatewayItem, ctx: &mut Context<Self>) {
        let GatewayItem {
            mut env,
            gateway_enabled: gw,
            enterprise_enabled: ent,
        } = item;
        let mut ev = EventRef::of_interned(&env, &mut self.interned);
        self.counters().recorder().attach(&mut ev);
        self.counters().received(&ev.case);
        // Where the event goes, and why not: the routing table's decisions (`routing.rs`).
        let table = &self.shared.table;
        let signal = match table.decide(&env.case, gw, ent) {
            Decision::Drop(reason) => return self.refuse_by_policy(&ev, &env, reason),
            Decision::Trace => SignalType::Trace,
            Decision::MetricLog => SignalType::MetricLog,
        };
        let Some(route) = table.route(&env.case) else {
            return self.refuse_by_policy(&ev, &env, ReasonCode::UnknownCase);
        };
        env.signal = Some(signal);
        crate::correlation::resolve_with(&mut env, route.root_span, &mut self.run_ids);
        if !route.keeps_event(&env) {
            return self.refuse_by_policy(&ev, &env, ReasonCode::SampledOut);
        }

        let oversize = match &env.payload {
            // The cheap bound settles almost every payload; only one near the threshold is
            // serialized (into a counter, not a buffer) to measure it exactly.
            Payload::Inline(obj) => {
                object_size_bound(obj) > self.inline_threshold
                    && serialized_len(obj) > self.inline_threshold
            }
            Payload::Ref(_) => false,
        };
        if !oversize {
            return self.forward(env, ev, signal, ent, true, ctx);
        }
        self.counters().step(&ev, Stage::Received, None);
        if self.offloads_in_flight >= self.max_offloads {
            self.counters().degrade_event(
                &ev,
                ReasonCode::PayloadOffloadFailed,
                Some("offloads saturated; payload kept inline"),
            );
            self.counters().log.warn_limited("payload offload saturated; payload kept inline", || {
                tracing::warn!(
                    event_id = %env.event_id,
                    correlation_id = %self.counters().log.sanitize(&env.effective_correlation_id()),
                    "payload offload saturated; payload kept inline"
                )
            });
            return self.forward(env, ev, signal, ent, false, ctx);
        }
        let Payload::Inline(obj) = &env.payload else {
            return self.forward(env, ev, signal, ent, false, ctx);
        };
        let bytes = match serde_json::to_vec(obj) {
            Ok(b) => Bytes::from(b),
            Err(_) => return self.forward(env, ev, signal, ent, false, ctx),
        };
        if env.payload_fallback.is_none() {
            env.payload_fallback = auto_fallback(obj);
        }
        self.offloads_in_flight += 1;
        let store = self.store.clone();
        let tenant = env.context.tenant_id.clone();
        let id = env.event_id;
        let fut = async move { store.put(&tenant, &id, bytes).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.offloads_in_flight -= 1;
            match res {
                Ok(r) => {
                    act.shared.counters.step_text(&ev, Stage::Offloaded, &r);
                    env.payload = Payload::Ref(r);
                    Counters::add(&act.shared.counters.offloaded, 1);
                }
                Err(e) => {
                    act.shared.counters.degrade_event(
                        &ev,
                        ReasonCode::PayloadOffloadFailed,
                        Some(&e.to_string()),
                    );
                    act.shared.counters.log.warn_limited("payload offload failed; payload kept inline", || {
                        tracing::warn!(
                            event_id = %env.event_id,
                            correlation_id = %act.shared.counters.log.sanitize(&env.effective_correlation_id()),
                            error = %act.shared.counters.log.sanitize(&e.to_string()),
                            "payload offload failed; payload kept inline"
                        )
                    });
                }
            }
            act.forward(env, ev, signal, ent, false, ctx);
        }));
    }
}

/// A queue closed under the event: the gateway is shutting down.
fn closed_outcome(queue: &'static str) -> Outcome<'static> {
    Outcome::Dropped {
        reason: ReasonCode::Shutdown,
        detail: Some(queue),
    }
}

/// An upper bound of the serialized JSON size of `obj`, without formatting anything: every
/// string as if each byte needed a six-byte escape, every number at its longest.
pub(crate) fn object_size_bound(obj: &JsonObject) -> usize {
    fn str_bound(s: &str) -> usize {
        2 + 6 * s.len()
    }
    fn bound(v: &Json) -> usize {
        match v {
            Json::Null | Json::Bool(_) => 5,
            // f64 and i64/u64 print in at most 24 characters.
            Json::Number(_) => 24,
            Json::String(s) => str_bound(s),
            Json::Array(items) => 2 + items.iter().map(|i| bound(i) + 1).sum::<usize>(),
            Json::Object(map) => object_size_bound(map),
        }
    }
    2 + obj
        .iter()
        .map(|(k, v)| str_bound(k) + 1 + bound(v) + 1)
        .sum::<usize>()
}

/// The serialized JSON size of `obj`, without allocating the serialization.
pub(crate) fn serialized_len(obj: &JsonObject) -> usize {
    struct Count(usize);
    impl Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, obj);
    c.0
}

/// A fallback for an offloaded payload: its scalar fields (no user content, no long strings),
/// within [`MAX_FALLBACK_BYTES`]. Enough for the metrics (tokens, durations, status) when the
/// store cannot be read back.
pub(crate) fn auto_fallback(obj: &JsonObject) -> Option<PayloadFallback> {
    let mut fb = JsonObject::new();
    let mut size = 2usize;
    for (k, v) in obj {
        if CONTENT_FIELDS.contains(&k.as_str()) {
            continue;
        }
        let keep = match v {
            Json::Bool(_) | Json::Number(_) => true,
            Json::String(s) => s.len() <= FALLBACK_MAX_STRING_BYTES,
            _ => false,
        };
        if !keep {
            continue;
        }
        let add = k.len() + serialized_value_len(v) + 4;
        if size + add > MAX_FALLBACK_BYTES {
            break;
        }
        size += add;
        fb.insert(k.clone(), v.clone());
    }
    if fb.is_empty() {
        // Nothing useful to fall back on: a failed read then yields a counted degraded event
        // rather than a silently empty payload.
        return None;
    }
    PayloadFallback::from_object(&fb).ok()
}

fn serialized_value_len(v: &Json) -> usize {
    serde_json::to_string(v).map(|s| s.len()).unwrap_or(0)
}

impl Actor for GatewayActor {
    type Context = Context<Self>;
}

/// Test hook (feature `testing`): blocks the gateway actor's thread until `release` is dropped,
/// after acknowledging on `frozen`. Lets a test prove that `emit()` never waits for room.
#[cfg(feature = "testing")]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct Freeze {
    pub(crate) frozen: std::sync::mpsc::Sender<()>,
    pub(crate) release: std::sync::mpsc::Receiver<()>,
}

#[cfg(feature = "testing")]
impl Handler<Freeze> for GatewayActor {
    type Result = ();

    fn handle(&mut self, msg: Freeze, _ctx: &mut Context<Self>) {
        let _ = msg.frozen.send(());
        // Blocks until the test drops its guard (the sender side).
        let _ = msg.release.recv();
    }
}

/// Test hook (feature `testing`): the gateway actor panics on this message, as a bug in it
/// would, so tests can check that such a run is never reported clean.
#[cfg(feature = "testing")]
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub(crate) struct PanicForTests;

#[cfg(feature = "testing")]
impl Handler<PanicForTests> for GatewayActor {
    type Result = ();

    fn handle(&mut self, _msg: PanicForTests, _ctx: &mut Context<Self>) {
        panic!("a panic injected by GatewayHandle::panic_an_actor_for_tests");
    }
}

impl StreamHandler<GatewayItem> for GatewayActor {
    fn handle(&mut self, item: GatewayItem, ctx: &mut Context<Self>) {
        self.route(item, ctx);
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // The gateway queue closed (every handle dropped): nothing more will arrive.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_size_bound_is_never_below_the_real_size() {
        let cases = [
            json!({}),
            json!({"a": "x".repeat(100), "b": [1, 2.5e300, -3], "c": {"d": null, "e": true}}),
            json!({"esc": "\u{1}\"\\\n\t", "uni": "héllo ✓", "n": u64::MAX, "f": -1.0e-300}),
            json!({"deep": [[[{"k": ["v", {"w": false}]}]]]}),
        ];
        for v in cases {
            let obj = v.as_object().unwrap();
            assert!(
                object_size_bound(obj) >= serialized_len(obj),
                "{} < {} for {v}",
                object_size_bound(obj),
                serialized_len(obj)
            );
        }
    }

    #[test]
    fn serialized_len_matches_serde() {
        let v = json!({"a": "x".repeat(100), "b": [1, 2, 3], "c": {"d": null}});
        let obj = v.as_object().unwrap();
        assert_eq!(
            serialized_len(obj),
            serde_json::to_string(obj).unwrap().len()
        );
    }

    #[test]
    fn auto_fallback_is_none_when_nothing_qualifies() {
        let v = json!({"inputs": "secret", "nested": {"a": 1}});
        assert!(auto_fallback(v.as_object().unwrap()).is_none());
    }

    #[test]
    fn auto_fallback_keeps_scalars_not_content() {
        let v = json!({"total_tokens": 10, "status": "succeeded", "inputs": "secret",
                       "big": "x".repeat(5000), "nested": {"a": 1}});
        let fb = auto_fallback(v.as_object().unwrap())
            .unwrap()
            .to_object()
            .unwrap();
        assert_eq!(fb.len(), 2);
        assert_eq!(fb["total_tokens"], 10);
        assert!(!fb.contains_key("inputs"));
    }
}
