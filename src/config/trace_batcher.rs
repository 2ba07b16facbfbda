//! `[trace_batcher]`: the trace path (its queue, batches and tenant sink workers).

use serde::{Deserialize, Serialize};

use super::error::{at_least_one, greater_than_zero, ConfigError};

/// Default of `trace_batcher.queue_capacity`.
pub const DEFAULT_TRACE_QUEUE_CAPACITY: usize = 65_536;

/// Default of `trace_batcher.max_batch_size`.
pub const DEFAULT_MAX_BATCH_SIZE: usize = 512;

/// Default of `trace_batcher.flush_interval_ms`.
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 200;

/// Default of `trace_batcher.sink_queue_batches`: batches waiting per sink.
pub const DEFAULT_SINK_QUEUE_BATCHES: usize = 16;

/// Default of `trace_batcher.sink_concurrency`: export calls in flight per sink.
pub const DEFAULT_SINK_CONCURRENCY: usize = 4;

/// Default of `trace_batcher.shards`: batcher actors, each on its own thread.
pub const DEFAULT_TRACE_SHARDS: usize = 1;

/// Default of `trace_batcher.max_live_sinks`: tenant sinks kept open at once; the least recently
/// used one is closed (and rebuilt on its tenant's next trace) to make room.
pub const DEFAULT_MAX_LIVE_SINKS: usize = 64;

/// `[trace_batcher]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceBatcherSection {
    /// Trace events waiting for the batcher, across its shards (each shard's queue holds an
    /// equal part, rounded up); when a shard's is full the gateway actor waits for room (the
    /// gateway queue fills, then `emit()` refuses).
    pub queue_capacity: usize,
    /// Batcher actors, each on its own thread with its own queue, batches and memory dedup
    /// (`dedup.memory_max_entries` each, as for a handler). An event goes to the shard its trace
    /// id picks, so the events of one trace (a run) stay together and a re-sent event meets
    /// its first copy. More shards map and encode spans on more cores.
    pub shards: usize,
    /// A batch is flushed when this many events wait.
    pub max_batch_size: usize,
    /// ...or when the oldest waiting event has waited this long.
    pub flush_interval_ms: u64,
    /// Batches waiting for each sink. When the enterprise sink's is full the batcher waits for
    /// room; beyond it for a tenant sink, that sink's copy is dropped (`queue_full`).
    pub sink_queue_batches: usize,
    /// Export calls in flight at once per sink (each batch is still held and retried on its
    /// own). More than 1 lets a sink overlap encoding, the network and the collector's work.
    pub sink_concurrency: usize,
    /// Tenant sinks (`[[sinks]]` and those registered at runtime) open at once. Past it the
    /// least recently used one is closed after its queue drains, and rebuilt when its tenant
    /// sends traces again.
    pub max_live_sinks: usize,
}

impl Default for TraceBatcherSection {
    fn default() -> Self {
        TraceBatcherSection {
            queue_capacity: DEFAULT_TRACE_QUEUE_CAPACITY,
            shards: DEFAULT_TRACE_SHARDS,
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            sink_queue_batches: DEFAULT_SINK_QUEUE_BATCHES,
            sink_concurrency: DEFAULT_SINK_CONCURRENCY,
            max_live_sinks: DEFAULT_MAX_LIVE_SINKS,
        }
    }
}

impl TraceBatcherSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            ("trace_batcher.queue_capacity", self.queue_capacity as u64),
            ("trace_batcher.max_batch_size", self.max_batch_size as u64),
            ("trace_batcher.shards", self.shards as u64),
            (
                "trace_batcher.sink_queue_batches",
                self.sink_queue_batches as u64,
            ),
            (
                "trace_batcher.sink_concurrency",
                self.sink_concurrency as u64,
            ),
            ("trace_batcher.max_live_sinks", self.max_live_sinks as u64),
        ])?;
        greater_than_zero(&[("trace_batcher.flush_interval_ms", self.flush_interval_ms)])
    }

    /// Each shard's queue: an equal part of `queue_capacity`, rounded up (at least 1).
    pub(crate) fn shard_queue_capacity(&self) -> usize {
        self.queue_capacity.div_ceil(self.shards.max(1)).max(1)
    }
}
