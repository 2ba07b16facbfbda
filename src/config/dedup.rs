//! `[dedup]`: idempotency (the memory cache, or Redis `SET NX EX`, fail-open).

use serde::{Deserialize, Serialize};

use super::error::{at_least_one, greater_than_zero, ConfigError};
use super::urls::{redis_url_problem, url_without_password};

/// Default of `dedup.backend`.
pub const DEFAULT_DEDUP_BACKEND: DedupBackendKind = DedupBackendKind::Memory;

/// Default of `dedup.redis_url`.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";

/// Default of `dedup.ttl_secs`.
pub const DEFAULT_DEDUP_TTL_SECS: u64 = 3_600;

/// Default of `dedup.key_prefix`.
pub const DEFAULT_DEDUP_KEY_PREFIX: &str = "telemetry:dedup";

/// Default of `dedup.timeout_ms`: the most one dedup call may take before failing open.
pub const DEFAULT_DEDUP_TIMEOUT_MS: u64 = 50;

/// Default of `dedup.memory_max_entries` (per handler and per trace batcher shard).
pub const DEFAULT_DEDUP_MEMORY_MAX_ENTRIES: usize = 100_000;

/// Default of `dedup.reconnect_interval_ms`: how often a down Redis is tried again.
pub const DEFAULT_DEDUP_RECONNECT_INTERVAL_MS: u64 = 1_000;

/// Which dedup store is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DedupBackendKind {
    /// A bounded in-memory cache with TTL, one per handler (events are routed to handlers by
    /// tenant and event id, so a re-sent event meets its first copy).
    Memory,
    /// Redis `SET key 1 NX EX ttl`, shared by every handler and process.
    Redis,
}

/// `[dedup]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupSection {
    /// `memory` or `redis`.
    pub backend: DedupBackendKind,
    /// Redis URL for `backend = "redis"`.
    pub redis_url: String,
    /// How long an event id is remembered.
    pub ttl_secs: u64,
    /// Keys are `{key_prefix}:{tenant_id}:{event_id}`.
    pub key_prefix: String,
    /// The most one dedup call may take; past it the event is processed (fail-open) and counted.
    pub timeout_ms: u64,
    /// Entries kept per handler (and per trace batcher shard) by the memory backend.
    pub memory_max_entries: usize,
    /// How often a Redis that is down is tried again.
    pub reconnect_interval_ms: u64,
}

impl Default for DedupSection {
    fn default() -> Self {
        DedupSection {
            backend: DEFAULT_DEDUP_BACKEND,
            redis_url: DEFAULT_REDIS_URL.into(),
            ttl_secs: DEFAULT_DEDUP_TTL_SECS,
            key_prefix: DEFAULT_DEDUP_KEY_PREFIX.into(),
            timeout_ms: DEFAULT_DEDUP_TIMEOUT_MS,
            memory_max_entries: DEFAULT_DEDUP_MEMORY_MAX_ENTRIES,
            reconnect_interval_ms: DEFAULT_DEDUP_RECONNECT_INTERVAL_MS,
        }
    }
}

impl std::fmt::Debug for DedupSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupSection")
            .field("backend", &self.backend)
            .field("redis_url", &url_without_password(&self.redis_url))
            .field("ttl_secs", &self.ttl_secs)
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .field("memory_max_entries", &self.memory_max_entries)
            .field("reconnect_interval_ms", &self.reconnect_interval_ms)
            .finish()
    }
}

impl DedupSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[("dedup.memory_max_entries", self.memory_max_entries as u64)])?;
        greater_than_zero(&[
            ("dedup.ttl_secs", self.ttl_secs),
            ("dedup.timeout_ms", self.timeout_ms),
            ("dedup.reconnect_interval_ms", self.reconnect_interval_ms),
        ])?;
        if self.backend == DedupBackendKind::Redis {
            if let Some(problem) = redis_url_problem(&self.redis_url) {
                return Err(ConfigError::invalid("dedup.redis_url", problem));
            }
        }
        if self.key_prefix.is_empty() {
            return Err(ConfigError::invalid(
                "dedup.key_prefix",
                "must not be empty",
            ));
        }
        Ok(())
    }
}
