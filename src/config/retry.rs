//! `[retry]`: how exports ride out a failing backend (retries in a call, then batches held).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::{greater_than_zero, ConfigError};

/// Default of `retry.max_retries`: retries inside one export call (transient errors only).
pub const DEFAULT_RETRY_MAX_RETRIES: usize = 3;

/// Default of `retry.initial_backoff_ms`.
pub const DEFAULT_RETRY_INITIAL_BACKOFF_MS: u64 = 100;

/// Default of `retry.max_backoff_ms`.
pub const DEFAULT_RETRY_MAX_BACKOFF_MS: u64 = 1_600;

/// Default of `retry.max_jitter_ms`.
pub const DEFAULT_RETRY_MAX_JITTER_MS: u64 = 100;

/// Default of `retry.outage_backoff_max_ms`: the longest wait between two tries of a batch held
/// while the backend is away.
pub const DEFAULT_OUTAGE_BACKOFF_MAX_MS: u64 = 5_000;

/// Default of `retry.max_batch_age_secs`: a batch held longer than this is dropped
/// (`export_failed`).
pub const DEFAULT_MAX_BATCH_AGE_SECS: u64 = 300;

/// `[retry]`: two layers. Inside one export call, the OTLP exporter retries transient errors
/// (gRPC `UNAVAILABLE`, HTTP 429/502/503/504) with exponential backoff and jitter, honouring
/// `Retry-After` / `RetryInfo`, and never retries permanent ones (gRPC `INVALID_ARGUMENT`,
/// HTTP 400). Around the calls, a batch that still failed is **held** and tried again with
/// backoff while the backend is away; new batches wait in the bounded queues behind it
/// (`trace_batcher.sink_queue_batches`, `export.log_queue_capacity`), the actors before those
/// wait for room, and once every queue is full `emit()` refuses (`queue_full`, counted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySection {
    /// Retries inside one export call.
    pub max_retries: usize,
    /// First backoff inside one export call.
    pub initial_backoff_ms: u64,
    /// Longest backoff inside one export call.
    pub max_backoff_ms: u64,
    /// Random jitter added to each backoff.
    pub max_jitter_ms: u64,
    /// Longest wait between two tries of a held batch (the wait doubles from
    /// `initial_backoff_ms` up to this).
    pub outage_backoff_max_ms: u64,
    /// A batch held longer than this is dropped (`export_failed`).
    pub max_batch_age_secs: u64,
}

impl Default for RetrySection {
    fn default() -> Self {
        RetrySection {
            max_retries: DEFAULT_RETRY_MAX_RETRIES,
            initial_backoff_ms: DEFAULT_RETRY_INITIAL_BACKOFF_MS,
            max_backoff_ms: DEFAULT_RETRY_MAX_BACKOFF_MS,
            max_jitter_ms: DEFAULT_RETRY_MAX_JITTER_MS,
            outage_backoff_max_ms: DEFAULT_OUTAGE_BACKOFF_MAX_MS,
            max_batch_age_secs: DEFAULT_MAX_BATCH_AGE_SECS,
        }
    }
}

impl RetrySection {
    /// The policy for a batch held while the backend is away.
    pub fn hold_policy(&self) -> HoldPolicy {
        HoldPolicy {
            initial: Duration::from_millis(self.initial_backoff_ms.max(1)),
            max: Duration::from_millis(self.outage_backoff_max_ms.max(1)),
            max_age: Duration::from_secs(self.max_batch_age_secs),
        }
    }
}

/// When and for how long a failed batch is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldPolicy {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Give up after this long.
    pub max_age: Duration,
}

impl RetrySection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_backoff_ms < self.initial_backoff_ms {
            return Err(ConfigError::invalid(
                "retry.max_backoff_ms",
                "must be at least retry.initial_backoff_ms",
            ));
        }
        greater_than_zero(&[
            ("retry.initial_backoff_ms", self.initial_backoff_ms),
            ("retry.outage_backoff_max_ms", self.outage_backoff_max_ms),
            ("retry.max_batch_age_secs", self.max_batch_age_secs),
        ])
    }
}
