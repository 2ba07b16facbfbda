//! `[transport]`: how metric/log events reach the handler pool (in process, or through a Redis
//! stream to worker processes).

use serde::{Deserialize, Serialize};

use super::dedup::DEFAULT_REDIS_URL;
use super::error::{at_least_one, greater_than_zero, ConfigError};
use super::urls::{redis_url_problem, url_without_password};

/// Default of `transport.kind`: the metric/log path stays in this process.
pub const DEFAULT_TRANSPORT_KIND: TransportKind = TransportKind::InProcess;

/// Default of `transport.stream`: the Redis stream metric/log envelopes are appended to.
pub const DEFAULT_TRANSPORT_STREAM: &str = "telemetry-gateway:metric_log";

/// Default of `transport.group`: the consumer group of the workers.
pub const DEFAULT_TRANSPORT_GROUP: &str = "telemetry-gateway-workers";

/// Default of `transport.max_len`: approximate cap on the stream's length (`XADD MAXLEN ~`).
pub const DEFAULT_TRANSPORT_MAX_LEN: usize = 1_000_000;

/// Default of `transport.buffer_capacity`: envelopes a producer holds while Redis is slow or away.
pub const DEFAULT_TRANSPORT_BUFFER_CAPACITY: usize = 65_536;

/// Default of `transport.claim_idle_ms`: an entry pending this long with a silent worker is
/// reclaimed by another.
pub const DEFAULT_TRANSPORT_CLAIM_IDLE_MS: u64 = 30_000;

/// Default of `transport.max_deliveries`: past it an entry goes to the dead-letter stream.
pub const DEFAULT_TRANSPORT_MAX_DELIVERIES: u64 = 5;

/// Default of `transport.block_ms`: how long one `XREADGROUP` waits for new entries.
pub const DEFAULT_TRANSPORT_BLOCK_MS: u64 = 1_000;

/// Default of `transport.commit_interval_ms`: how often a worker exports what it handled and
/// acknowledges it.
pub const DEFAULT_TRANSPORT_COMMIT_INTERVAL_MS: u64 = 200;

/// Default of `transport.response_timeout_ms`: the longest a stream connection waits for a
/// reply. Above `block_ms` (a blocking read answers after it) with room for a large reply.
pub const DEFAULT_TRANSPORT_RESPONSE_TIMEOUT_MS: u64 = 10_000;

/// Default of `transport.max_read_bytes`: the most entry bytes one read of one consumer brings
/// (plus at most one entry).
pub const DEFAULT_TRANSPORT_MAX_READ_BYTES: usize = 16 * 1024 * 1024;

/// Default of `transport.connect_timeout_ms`: the longest a stream connection takes to open.
pub const DEFAULT_TRANSPORT_CONNECT_TIMEOUT_MS: u64 = 2_000;

/// The least `transport.response_timeout_ms` may exceed `transport.block_ms` by: a blocking
/// read answers only after `block_ms`, then its reply must still arrive.
pub const TRANSPORT_RESPONSE_MARGIN_MS: u64 = 1_000;

/// Which transport carries metric/log events from the gateway to the handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// Bounded channels to this process's handler pool.
    InProcess,
    /// A Redis stream read by worker processes through a consumer group (ADR 0003).
    RedisStreams,
}

/// `[transport]`: see ADR 0003 and docs/deployment.md.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportSection {
    /// `in_process` or `redis_streams`.
    pub kind: TransportKind,
    /// Redis URL of the stream (may be the dedup Redis).
    pub redis_url: String,
    /// The stream key; dead letters go to `{stream}:dead`.
    pub stream: String,
    /// The workers' consumer group.
    pub group: String,
    /// This worker's consumer name, unique in the group; `{hostname}-{pid}` when unset. Each
    /// handler of the worker consumes as `{consumer}-{index}`.
    pub consumer: Option<String>,
    /// Approximate cap on the stream's length (`XADD MAXLEN ~`).
    pub max_len: usize,
    /// Envelopes a producer buffers while Redis is slow or away; past it they are dropped
    /// (`queue_full`).
    pub buffer_capacity: usize,
    /// An entry pending this long with its worker is reclaimed by another (`XAUTOCLAIM`).
    pub claim_idle_ms: u64,
    /// An entry delivered more than this many times goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// How long one `XREADGROUP` waits for new entries (also bounds how fast a worker notices
    /// a drain).
    pub block_ms: u64,
    /// How often a worker exports the metrics and log records of what it handled, then
    /// acknowledges those entries (`XACK`).
    pub commit_interval_ms: u64,
    /// The longest a stream connection waits for any reply (producer and workers). Must exceed
    /// `block_ms` by at least 1000 ms: a blocking read only answers after `block_ms`.
    pub response_timeout_ms: u64,
    /// The longest a stream connection takes to open.
    pub connect_timeout_ms: u64,
    /// The most entry bytes (field names and values) one read of one worker consumer brings,
    /// plus at most one entry: a worker's memory is bounded by this, not by what others wrote.
    pub max_read_bytes: usize,
}

impl Default for TransportSection {
    fn default() -> Self {
        TransportSection {
            kind: DEFAULT_TRANSPORT_KIND,
            redis_url: DEFAULT_REDIS_URL.into(),
            stream: DEFAULT_TRANSPORT_STREAM.into(),
            group: DEFAULT_TRANSPORT_GROUP.into(),
            consumer: None,
            max_len: DEFAULT_TRANSPORT_MAX_LEN,
            buffer_capacity: DEFAULT_TRANSPORT_BUFFER_CAPACITY,
            claim_idle_ms: DEFAULT_TRANSPORT_CLAIM_IDLE_MS,
            max_deliveries: DEFAULT_TRANSPORT_MAX_DELIVERIES,
            block_ms: DEFAULT_TRANSPORT_BLOCK_MS,
            response_timeout_ms: DEFAULT_TRANSPORT_RESPONSE_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_TRANSPORT_CONNECT_TIMEOUT_MS,
            max_read_bytes: DEFAULT_TRANSPORT_MAX_READ_BYTES,
            commit_interval_ms: DEFAULT_TRANSPORT_COMMIT_INTERVAL_MS,
        }
    }
}

impl TransportSection {
    /// The consumer name: `transport.consumer`, or `{hostname}-{pid}`.
    pub fn consumer_name(&self) -> String {
        match &self.consumer {
            Some(c) => c.clone(),
            None => {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .or_else(|| std::env::var("HOSTNAME").ok())
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "worker".into());
                format!("{host}-{}", std::process::id())
            }
        }
    }
}

impl std::fmt::Debug for TransportSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportSection")
            .field("kind", &self.kind)
            .field("redis_url", &url_without_password(&self.redis_url))
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .field("max_len", &self.max_len)
            .field("buffer_capacity", &self.buffer_capacity)
            .field("claim_idle_ms", &self.claim_idle_ms)
            .field("max_deliveries", &self.max_deliveries)
            .field("block_ms", &self.block_ms)
            .field("commit_interval_ms", &self.commit_interval_ms)
            .field("response_timeout_ms", &self.response_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("max_read_bytes", &self.max_read_bytes)
            .finish()
    }
}

impl TransportSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            ("transport.max_read_bytes", self.max_read_bytes as u64),
            ("transport.max_len", self.max_len as u64),
            ("transport.buffer_capacity", self.buffer_capacity as u64),
        ])?;
        greater_than_zero(&[
            ("transport.claim_idle_ms", self.claim_idle_ms),
            ("transport.max_deliveries", self.max_deliveries),
            ("transport.block_ms", self.block_ms),
            ("transport.commit_interval_ms", self.commit_interval_ms),
            ("transport.response_timeout_ms", self.response_timeout_ms),
            ("transport.connect_timeout_ms", self.connect_timeout_ms),
        ])?;
        if self.kind != TransportKind::RedisStreams {
            return Ok(());
        }
        if let Some(problem) = redis_url_problem(&self.redis_url) {
            return Err(ConfigError::invalid("transport.redis_url", problem));
        }
        for (key, v) in [
            ("transport.stream", &self.stream),
            ("transport.group", &self.group),
        ] {
            if v.is_empty() {
                return Err(ConfigError::invalid(key, "must not be empty"));
            }
        }
        if self.consumer.as_deref() == Some("") {
            return Err(ConfigError::invalid(
                "transport.consumer",
                "must not be empty when set",
            ));
        }
        let least_response = self.block_ms.saturating_add(TRANSPORT_RESPONSE_MARGIN_MS);
        if self.response_timeout_ms < least_response {
            return Err(ConfigError::invalid(
                "transport.response_timeout_ms",
                format!(
                    "must be at least transport.block_ms + {TRANSPORT_RESPONSE_MARGIN_MS} \
                     ({least_response} ms): a blocking read answers only after block_ms, so a \
                     shorter timeout fails every idle read"
                ),
            ));
        }
        if self.claim_idle_ms <= self.commit_interval_ms.saturating_mul(2) {
            return Err(ConfigError::invalid(
                "transport.claim_idle_ms",
                format!(
                    "must be more than twice transport.commit_interval_ms ({} ms), or live \
                     workers' entries would be reclaimed before they are acknowledged",
                    self.commit_interval_ms
                ),
            ));
        }
        Ok(())
    }
}
