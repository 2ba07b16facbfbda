//! The seam between the gateway actor and the metric/log handler pool.
//!
//! The gateway only sees [`MetricTransport`] (a non-blocking `try_send`), and each handler only
//! sees an [`EnvelopeSource`] (an async `recv_batch`). The built-in transport is in process:
//! one bounded channel per handler, an envelope's channel chosen by a hash of
//! `(tenant_id, event_id)`, so that a re-sent event meets its first copy in the same handler's
//! memory dedup. The Redis Streams transport (`redis_streams`, cargo feature `redis`) implements both traits; in a
//! worker process its acknowledgements go through the worker's commit (`worker`) rather than
//! [`EnvelopeSource::settle`], since they must follow the metric export.

#[cfg(feature = "redis")]
pub mod redis_streams;
#[cfg(feature = "redis")]
pub(crate) mod stream_entry;
pub(crate) mod worker;

use std::fmt::Debug;
use std::hash::BuildHasher;

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use uuid::Uuid;

use crate::contracts::TelemetryEnvelope;

/// Why the transport did not take an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The destination queue is full.
    #[error("metric/log queue is full")]
    Full,
    /// The transport is shut down.
    #[error("metric/log transport is closed")]
    Closed,
}

/// The producer side: `try_send` never waits; a caller that would rather wait than drop asks
/// [`MetricTransport::room_for`] first.
pub trait MetricTransport: Send + Sync + Debug + 'static {
    /// Queues `env` or says why not.
    fn try_send(&self, env: TelemetryEnvelope) -> Result<(), TransportError>;

    /// `None` when `env` can be queued now (or the transport has no way to wait: `try_send`
    /// then says `Full`); otherwise a future that resolves when the queue `env` goes to has
    /// room, or is closed. The gateway actor, the only sender, waits on it instead of dropping
    /// (backpressure: its own queue fills and `emit()` refuses). The default never waits.
    fn room_for(&self, env: &TelemetryEnvelope) -> Option<BoxFuture<'static, ()>> {
        let _ = env;
        None
    }
    /// Envelopes waiting, summed over partitions.
    fn queued(&self) -> usize;
    /// Total capacity, summed over partitions.
    fn capacity(&self) -> usize;
}

/// The consumer side, one per handler.
pub trait EnvelopeSource: Send + Debug + 'static {
    /// Waits for at least one envelope and returns up to `max`; `None` when the transport is
    /// closed and empty.
    fn recv_batch(&mut self, max: usize) -> BoxFuture<'_, Option<Vec<TelemetryEnvelope>>>;

    /// Whether this source wants [`EnvelopeSource::settle`] calls. A transport with
    /// acknowledgements (a Redis Streams consumer group) says yes; the in-process one does not,
    /// and its handler then keeps no list of ids.
    fn wants_settle(&self) -> bool {
        false
    }

    /// The events of earlier batches that reached their outcome in this process (their log
    /// records queued for export, or dropped with a reason): a transport with acknowledgements
    /// acknowledges them now. An event never settled (its case handler panicked) is left for
    /// such a transport to deliver again. Called by the handler before it asks for its next
    /// batch, so at most two batches are unsettled at once.
    fn settle(&mut self, handled: Vec<Uuid>) -> BoxFuture<'_, ()> {
        drop(handled);
        Box::pin(async {})
    }
}

/// The in-process transport: bounded channels, one per handler.
#[derive(Debug, Clone)]
pub struct InProcessTransport {
    partitions: Vec<mpsc::Sender<TelemetryEnvelope>>,
    /// Picks an event's partition: seeded per process (as the dedup maps are), and about a
    /// tenth of SipHash's instructions for a tenant id and an event id.
    hasher: foldhash::fast::RandomState,
}

/// One handler's end of the in-process transport.
#[derive(Debug)]
pub struct InProcessSource {
    rx: mpsc::Receiver<TelemetryEnvelope>,
}

impl InProcessTransport {
    /// `partitions` channels of `capacity` each, and their sources.
    pub fn new(partitions: usize, capacity: usize) -> (Self, Vec<InProcessSource>) {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..partitions.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(capacity.max(1));
                (tx, InProcessSource { rx })
            })
            .unzip();
        let transport = InProcessTransport {
            partitions: txs,
            hasher: foldhash::fast::RandomState::default(),
        };
        (transport, rxs)
    }

    /// The partition `env` goes to.
    pub fn partition_of(&self, env: &TelemetryEnvelope) -> usize {
        let h = self
            .hasher
            .hash_one((env.context.tenant_id.as_str(), env.event_id));
        (h % self.partitions.len() as u64) as usize
    }
}

/// [`MetricTransport::room_for`] of a bounded channel: `None` when it has room (or is closed),
/// else a future that resolves once it has. The permit is given back at once: the caller sends
/// right after, and nothing else sends in between.
pub(crate) fn room_in<T: Send + 'static>(tx: &mpsc::Sender<T>) -> Option<BoxFuture<'static, ()>> {
    if tx.capacity() > 0 || tx.is_closed() {
        return None;
    }
    let tx = tx.clone();
    Some(Box::pin(async move {
        let _ = tx.reserve_owned().await;
    }))
}

impl MetricTransport for InProcessTransport {
    fn try_send(&self, env: TelemetryEnvelope) -> Result<(), TransportError> {
        let p = self.partition_of(&env);
        self.partitions[p].try_send(env).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TransportError::Full,
            mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
        })
    }

    fn room_for(&self, env: &TelemetryEnvelope) -> Option<BoxFuture<'static, ()>> {
        room_in(&self.partitions[self.partition_of(env)])
    }

    fn queued(&self) -> usize {
        self.partitions
            .iter()
            .map(|t| t.max_capacity() - t.capacity())
            .sum()
    }

    fn capacity(&self) -> usize {
        self.partitions.iter().map(|t| t.max_capacity()).sum()
    }
}

impl EnvelopeSource for InProcessSource {
    fn recv_batch(&mut self, max: usize) -> BoxFuture<'_, Option<Vec<TelemetryEnvelope>>> {
        Box::pin(async move {
            let mut buf = Vec::with_capacity(max.min(1024));
            let n = self.rx.recv_many(&mut buf, max.max(1)).await;
            (n > 0).then_some(buf)
        })
    }
}
