//! `[metric_pool]`: the supervised pool of metric/log handlers.

use serde::{Deserialize, Serialize};

use super::error::{at_least_one, ConfigError};

/// Default of `metric_pool.pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 2;

/// Default of `metric_pool.queue_capacity` (per handler).
pub const DEFAULT_HANDLER_QUEUE_CAPACITY: usize = 16_384;

/// Default of `metric_pool.batch_size`: envelopes a handler takes at once (one dedup round trip).
pub const DEFAULT_HANDLER_BATCH_SIZE: usize = 256;

/// `[metric_pool]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricPoolSection {
    /// Number of supervised metric handlers.
    pub pool_size: usize,
    /// Envelopes waiting per handler; beyond it they are dropped (`queue_full`).
    pub queue_capacity: usize,
    /// Envelopes a handler takes at once (one dedup round trip per batch).
    pub batch_size: usize,
}

impl Default for MetricPoolSection {
    fn default() -> Self {
        MetricPoolSection {
            pool_size: DEFAULT_POOL_SIZE,
            queue_capacity: DEFAULT_HANDLER_QUEUE_CAPACITY,
            batch_size: DEFAULT_HANDLER_BATCH_SIZE,
        }
    }
}

impl MetricPoolSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            ("metric_pool.pool_size", self.pool_size as u64),
            ("metric_pool.queue_capacity", self.queue_capacity as u64),
            ("metric_pool.batch_size", self.batch_size as u64),
        ])
    }
}
