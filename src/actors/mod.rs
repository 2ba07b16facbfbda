//! The actors, one per file with its messages at the top.
//!
//! ```text
//!  host threads ── emit() ──▶ [gateway queue] ──▶ GatewayActor ──┬─▶ [trace queue] ──▶ TraceBatcherActor ──▶ sinks
//!                  (try_send,                     eligibility,   │
//!                   never waits)                  data type,     └─▶ MetricTransport ──▶ MetricHandlerActor × pool_size
//!                                                 offload             (partition by       ├─ DedupActor
//!                                                                      tenant+event id)   └─ RehydratorActor
//! ```
//!
//! Data moves on bounded `tokio::sync::mpsc` channels (exact capacity); control (drain, flush)
//! moves on the actors' mailboxes with explicit replies. Nothing on the data path uses
//! `do_send`.
//!
//! **Backpressure, not drops, inside.** `emit()` never waits: a full gateway queue refuses the
//! event (`QueueFull`, the caller sees it). Behind it, an actor that meets a full queue on the
//! way to the enterprise exporter (the trace queue, the metric/log queues, the log queue, the
//! enterprise sink's batch queue) *waits* for room (`ctx.wait`, see [`Backpressure`]) rather
//! than dropping: while the collector is away, events fill the bounded queues in front of the
//! held exporter, and once those are full the gateway queue fills and `emit()` refuses. A
//! tenant sink's queue is the one exception: a full one drops that sink's copy (counted), so
//! one stuck tenant never holds back the enterprise destination or the other tenants.

pub(crate) mod dedup;
pub(crate) mod gateway;
pub(crate) mod metric_handler;
pub(crate) mod rehydrator;
pub(crate) mod trace_batcher;

/// Control: "are you running?". Every actor answers at once; one that does not answer within
/// the shutdown's liveness wait has died or hangs (a panic inside it), and the shutdown report
/// says so (`ShutdownReport::actors_lost`).
#[derive(Debug, actix::Message)]
#[rtype(result = "()")]
pub(crate) struct Ping;

/// Implements the [`Ping`] answer for an actor.
macro_rules! answers_ping {
    ($actor:ty) => {
        impl actix::Handler<$crate::actors::Ping> for $actor {
            type Result = ();

            fn handle(&mut self, _msg: $crate::actors::Ping, _ctx: &mut Self::Context) {}
        }
    };
}

answers_ping!(dedup::DedupActor);
answers_ping!(gateway::GatewayActor);
answers_ping!(metric_handler::MetricHandlerActor);
answers_ping!(rehydrator::RehydratorActor);
answers_ping!(trace_batcher::TraceBatcherActor);

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::contracts::TelemetryEnvelope;
use crate::diagnostics::Counters;
use crate::routing::RoutingTable;

/// State every actor and the handle share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) counters: Arc<Counters>,
    pub(crate) table: RoutingTable,
    pub(crate) gateway_enabled: AtomicBool,
    pub(crate) enterprise_enabled: AtomicBool,
    pub(crate) closed: AtomicBool,
    /// Set in a worker process (Redis Streams transport): the ledger its handlers note handled
    /// events in, for the worker's commit (see `transport::worker`).
    pub(crate) worker: Option<Arc<crate::transport::worker::WorkerLedger>>,
}

/// An event on the gateway queue, with the runtime switches in force when `emit()` took it: the
/// event is routed under those, whatever the switches say by the time the actor reaches it.
#[derive(Debug)]
pub(crate) struct GatewayItem {
    pub(crate) env: TelemetryEnvelope,
    pub(crate) gateway_enabled: bool,
    pub(crate) enterprise_enabled: bool,
}

/// A trace event on its way to the batcher, with the decision it was routed under.
#[derive(Debug)]
pub(crate) struct TraceItem {
    pub(crate) env: TelemetryEnvelope,
    /// Whether the enterprise exporter takes it (decided at routing time).
    pub(crate) to_enterprise: bool,
    /// The event's reference, made once at the gateway.
    pub(crate) ev: crate::diagnostics::recorder::EventRef,
}

/// An actor's waits for room downstream. While an actor waits (`ctx.wait`) it answers no
/// message, by design: that is what holds the queue in front of it. The shutdown's liveness
/// check asks [`Backpressure::waiting`] before calling a silent actor lost.
#[derive(Debug, Default, Clone)]
pub(crate) struct Backpressure(Arc<AtomicUsize>);

/// One wait in progress: the count drops when the wait ends, or when its future is dropped with
/// a dead actor.
#[derive(Debug)]
struct Waiting(Arc<AtomicUsize>);

impl Backpressure {
    /// `wait`, counted as a wait for room while it runs (the future to give `ctx.wait`).
    pub(crate) fn during<F: std::future::Future>(
        &self,
        wait: F,
    ) -> impl std::future::Future<Output = F::Output> {
        self.0.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(self.0.clone());
        async move {
            let out = wait.await;
            drop(waiting);
            out
        }
    }

    /// Whether the actor is waiting for room now.
    pub(crate) fn waiting(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}
