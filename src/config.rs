//! Configuration: built-in defaults, then a TOML file, then environment variables.
//!
//! One struct per TOML section, every default a named constant (a test asserts that
//! `config/gateway.toml` states the same values). Loading follows Figment's "for library
//! authors" pattern: [`GatewayConfig::figment`] merges defaults, the file and
//! `TELEMETRY_GATEWAY__<SECTION>__<KEY>` variables, and [`GatewayConfig::load`] extracts and
//! validates. Unknown keys and bad values fail at start with an error naming the key.
//!
//! The key names `otlp.endpoint`, `otlp.protocol`, `dedup.backend`, `dedup.redis_url`,
//! `dedup.ttl_secs`, `gateway.enabled`, `gateway.enterprise_enabled` and
//! `payloads.inline_threshold_bytes` are relied on by other tooling: never rename them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::contracts::SignalType;

mod otel_env;

/// Prefix of environment overrides: `TELEMETRY_GATEWAY__OTLP__ENDPOINT` sets `otlp.endpoint`.
pub const ENV_PREFIX: &str = "TELEMETRY_GATEWAY__";

/// Keys whose values are text even when they look like numbers or booleans: an environment
/// override of one of them is taken as the raw text (so `0012345` keeps its zeros and never fails
/// to parse). Every `otlp.headers.<name>` and `export.resource_attributes.<name>` is one too.
pub const STRING_KEYS: [&str; 16] = [
    "otlp.endpoint",
    "otlp.api_key",
    "dedup.redis_url",
    "dedup.key_prefix",
    "export.namespace",
    "export.service_name",
    "export.file_path",
    "payloads.url",
    "payloads.local_path",
    "redaction.replacement",
    "diagnostics.listen",
    "transport.redis_url",
    "transport.stream",
    "transport.group",
    "transport.consumer",
    "sinks.sqlite.path",
];

/// Default of `gateway.enabled`.
pub const DEFAULT_GATEWAY_ENABLED: bool = true;
/// Default of `gateway.enterprise_enabled`: the embedded default exports everything (to a local
/// file when no endpoint is set), so a new user sees every case.
pub const DEFAULT_ENTERPRISE_ENABLED: bool = true;
/// Default of `gateway.queue_capacity`: events waiting for the gateway actor.
pub const DEFAULT_GATEWAY_QUEUE_CAPACITY: usize = 65_536;
/// Default of `gateway.max_offloads_in_flight`.
pub const DEFAULT_MAX_OFFLOADS_IN_FLIGHT: usize = 16;

/// Default of `payloads.store`.
pub const DEFAULT_PAYLOAD_STORE: PayloadStoreKind = PayloadStoreKind::Memory;
/// Default of `payloads.inline_threshold_bytes` (1 MiB of serialized JSON).
pub const DEFAULT_INLINE_THRESHOLD_BYTES: usize = 1024 * 1024;
/// Default of `payloads.write_timeout_ms`.
pub const DEFAULT_PAYLOAD_WRITE_TIMEOUT_MS: u64 = 2_000;
/// Default of `payloads.read_timeout_ms`.
pub const DEFAULT_PAYLOAD_READ_TIMEOUT_MS: u64 = 500;
/// Default of `payloads.max_read_bytes` (a stored blob larger than this is refused).
pub const DEFAULT_PAYLOAD_MAX_READ_BYTES: usize = 32 * 1024 * 1024;
/// Default of `payloads.memory_max_bytes`: what the in-memory payload store holds at most.
pub const DEFAULT_PAYLOAD_MEMORY_MAX_BYTES: usize = 256 * 1024 * 1024;
/// Default of `payloads.local_max_bytes`: what the local directory store keeps at most.
pub const DEFAULT_PAYLOAD_LOCAL_MAX_BYTES: usize = 1024 * 1024 * 1024;
/// Default of `payloads.local_max_age_secs`: how long the local directory store keeps a
/// payload (7 days: past any retry, redelivery or dedup window of the defaults).
pub const DEFAULT_PAYLOAD_LOCAL_MAX_AGE_SECS: u64 = 7 * 24 * 3_600;
/// Default of `payloads.local_path`.
pub const DEFAULT_PAYLOAD_LOCAL_PATH: &str = "telemetry-payloads";

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
/// Default of `trace_batcher.max_live_sinks`: tenant sinks kept open at once; the least recently
/// used one is closed (and rebuilt on its tenant's next trace) to make room.
pub const DEFAULT_MAX_LIVE_SINKS: usize = 64;

/// Default of `metric_pool.pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 2;
/// Default of `metric_pool.queue_capacity` (per handler).
pub const DEFAULT_HANDLER_QUEUE_CAPACITY: usize = 16_384;
/// Default of `metric_pool.batch_size`: envelopes a handler takes at once (one dedup round trip).
pub const DEFAULT_HANDLER_BATCH_SIZE: usize = 256;

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
/// Default of `dedup.memory_max_entries` (per handler).
pub const DEFAULT_DEDUP_MEMORY_MAX_ENTRIES: usize = 100_000;
/// Default of `dedup.reconnect_interval_ms`: how often a down Redis is tried again.
pub const DEFAULT_DEDUP_RECONNECT_INTERVAL_MS: u64 = 1_000;

/// Default of `otlp.protocol`.
pub const DEFAULT_OTLP_PROTOCOL: OtlpProtocol = OtlpProtocol::Grpc;
/// Default of `otlp.timeout_ms`.
pub const DEFAULT_OTLP_TIMEOUT_MS: u64 = 10_000;
/// Default of `otlp.sampling_ratio`.
pub const DEFAULT_SAMPLING_RATIO: f64 = 1.0;
/// Default of `otlp.metric_interval_ms`.
pub const DEFAULT_METRIC_INTERVAL_MS: u64 = 10_000;

/// Default of `export.namespace`.
pub const DEFAULT_NAMESPACE: &str = "app";
/// Default of `export.include_content`.
pub const DEFAULT_INCLUDE_CONTENT: bool = true;
/// Default of `export.file_path`: where spans, logs and metrics go when no endpoint is set.
pub const DEFAULT_EXPORT_FILE_PATH: &str = "telemetry-gateway-output.jsonl";
/// Default of `export.local_output`: JSON lines to `export.file_path`.
pub const DEFAULT_LOCAL_OUTPUT: LocalOutput = LocalOutput::Jsonl;
/// Default of `export.log_queue_capacity`.
pub const DEFAULT_LOG_QUEUE_CAPACITY: usize = 65_536;
/// Default of `export.log_max_batch_size`.
pub const DEFAULT_LOG_MAX_BATCH_SIZE: usize = 512;
/// Default of `export.log_concurrency`: log export calls in flight at once.
pub const DEFAULT_LOG_CONCURRENCY: usize = 1;
/// Default of `export.log_flush_interval_ms`.
pub const DEFAULT_LOG_FLUSH_INTERVAL_MS: u64 = 200;
/// Default of `export.service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "telemetry-gateway";

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

/// Default of `sinks.sqlite.batch_size`: rows per transaction at most.
pub const DEFAULT_SQLITE_BATCH_SIZE: usize = 2_048;
/// Default of `sinks.sqlite.flush_interval_ms`: how long the writer gathers rows into one
/// transaction.
pub const DEFAULT_SQLITE_FLUSH_INTERVAL_MS: u64 = 200;
/// Default of `sinks.sqlite.queue_batches`: exports waiting for the writer.
pub const DEFAULT_SQLITE_QUEUE_BATCHES: usize = 64;

/// Default of `shutdown.deadline_ms`, used when the handle is dropped without `shutdown()`.
pub const DEFAULT_SHUTDOWN_DEADLINE_MS: u64 = 5_000;

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

/// Default of `diagnostics.recorder_events`: journeys the flight recorder keeps.
pub const DEFAULT_RECORDER_EVENTS: usize = 10_000;
/// Default of `diagnostics.recorder_steps_per_event`.
pub const DEFAULT_RECORDER_STEPS_PER_EVENT: usize = 16;
/// Default of `diagnostics.unready_after_failing_secs`: export failing this long makes
/// `/readyz` answer 503.
pub const DEFAULT_UNREADY_AFTER_FAILING_SECS: u64 = 30;
/// Default of `diagnostics.metric_cardinality_limit`: distinct attribute sets per metric.
pub const DEFAULT_METRIC_CARDINALITY_LIMIT: usize = 2_000;
/// Default of `diagnostics.export_self_metrics`: on, because the ledger (emitted, delivered,
/// dropped by reason) is what proves in the backend that nothing was lost silently. They come
/// under their own instrumentation scope, `telemetry-gateway.self`, so a collector can route or
/// drop them; hosts that want none of them in their backend turn this off.
pub const DEFAULT_EXPORT_SELF_METRICS: bool = true;

/// Default of `logging.format`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// Default of `logging.warn_summary_interval_secs`.
pub const DEFAULT_WARN_SUMMARY_INTERVAL_SECS: u64 = 60;

/// Default of `redaction.replacement`.
pub const DEFAULT_REDACTION_REPLACEMENT: &str = "[REDACTED]";
/// Default of `redaction.deny_keys`: payload and attribute keys whose values never leave the
/// process (matched case-insensitively, ignoring `-` and `_`).
pub const DEFAULT_DENY_KEYS: [&str; 14] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "cookie",
    "set_cookie",
    "access_token",
    "refresh_token",
    "private_key",
    "client_secret",
    "credit_card",
];

/// The whole configuration. Each field is one TOML section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// `[gateway]`: the entrance.
    pub gateway: GatewaySection,
    /// `[cases.<name>]`: overrides of the built-in routing table and host-declared cases.
    pub cases: BTreeMap<String, CaseSection>,
    /// `[payloads]`: large-payload offload.
    pub payloads: PayloadsSection,
    /// `[trace_batcher]`: the trace path.
    pub trace_batcher: TraceBatcherSection,
    /// `[metric_pool]`: the metric/log handler pool.
    pub metric_pool: MetricPoolSection,
    /// `[dedup]`: idempotency.
    pub dedup: DedupSection,
    /// `[otlp]`: the enterprise exporter.
    pub otlp: OtlpSection,
    /// `[export]`: naming, content policy, the local file output and the log batcher.
    pub export: ExportSection,
    /// `[[sinks]]` (community trace sinks per tenant/app) and `[sinks.sqlite]`.
    pub sinks: SinksConfig,
    /// `[shutdown]`.
    pub shutdown: ShutdownSection,
    /// `[diagnostics]`: the flight recorder, the HTTP endpoint, readiness.
    pub diagnostics: DiagnosticsSection,
    /// `[logging]`: the gateway's own log lines.
    pub logging: LoggingSection,
    /// `[redaction]`: what never leaves the process.
    pub redaction: RedactionSection,
    /// `[retry]`: how exports ride out a failing backend.
    pub retry: RetrySection,
    /// `[transport]`: how metric/log events reach the handler pool (in process, or through a
    /// Redis stream to worker processes).
    pub transport: TransportSection,
    /// `[slo.<case>]`: service-level objectives `telemetry-gateway slo` checks against the
    /// SQLite sink's data (docs/local-analytics.md).
    pub slo: BTreeMap<String, SloSection>,
}

/// `[slo.<case>]`: objectives for one case. Every key is optional; a set key is checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SloSection {
    /// The median duration must not exceed this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_duration_ms: Option<f64>,
    /// The 95th percentile duration must not exceed this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_duration_ms: Option<f64>,
    /// The 99th percentile duration must not exceed this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_duration_ms: Option<f64>,
    /// The fraction of the case's events that failed must not exceed this (0.0 to 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// The fraction of the case's events the gateway dropped must not exceed this (0.0 to 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_rate: Option<f64>,
    /// At least this many of the case's events per second over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_event_rate: Option<f64>,
}

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

/// `[retry]`: two layers. Inside one export call, the OTLP exporter retries transient errors
/// (gRPC `UNAVAILABLE`, HTTP 429/502/503/504) with exponential backoff and jitter, honouring
/// `Retry-After` / `RetryInfo`, and never retries permanent ones (gRPC `INVALID_ARGUMENT`,
/// HTTP 400). Around the calls, a batch that still failed is **held** and tried again with
/// backoff while the backend is away; new batches wait in the bounded queues behind it
/// (`trace_batcher.sink_queue_batches`, `export.log_queue_capacity`), and what does not fit is
/// dropped as `queue_full` and counted.
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

/// `[diagnostics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosticsSection {
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, `/debug/events`). Off
    /// when unset. Must be a loopback address unless `allow_non_loopback = true`.
    pub listen: Option<String>,
    /// Allow `listen` on a non-loopback address (the debug routes show event journeys).
    pub allow_non_loopback: bool,
    /// Event journeys the flight recorder keeps (oldest evicted first).
    pub recorder_events: usize,
    /// Steps kept per journey (later steps of a longer journey are counted, not kept).
    pub recorder_steps_per_event: usize,
    /// An exporter failing continuously for this long makes `/readyz` answer 503.
    pub unready_after_failing_secs: u64,
    /// Distinct attribute sets kept per metric; further ones go to an overflow series.
    pub metric_cardinality_limit: usize,
    /// Whether the gateway's own metrics (`telemetry_gateway.*`, instrumentation scope
    /// `telemetry-gateway.self`) go out with the application's metrics. `/metrics` has them
    /// either way.
    pub export_self_metrics: bool,
}

impl Default for DiagnosticsSection {
    fn default() -> Self {
        DiagnosticsSection {
            listen: None,
            allow_non_loopback: false,
            recorder_events: DEFAULT_RECORDER_EVENTS,
            recorder_steps_per_event: DEFAULT_RECORDER_STEPS_PER_EVENT,
            unready_after_failing_secs: DEFAULT_UNREADY_AFTER_FAILING_SECS,
            metric_cardinality_limit: DEFAULT_METRIC_CARDINALITY_LIMIT,
            export_self_metrics: DEFAULT_EXPORT_SELF_METRICS,
        }
    }
}

/// Format of the gateway's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    /// `text` or `json` (used by `telemetry_gateway::logging::init`).
    pub format: LogFormat,
    /// A repeated warning is logged once, then counted, then summarised this often.
    pub warn_summary_interval_secs: u64,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            format: DEFAULT_LOG_FORMAT,
            warn_summary_interval_secs: DEFAULT_WARN_SUMMARY_INTERVAL_SECS,
        }
    }
}

/// `[redaction]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionSection {
    /// Keys whose values are replaced (case-insensitive, `-` and `_` ignored).
    pub deny_keys: Vec<String>,
    /// Keys the host marks safe: never redacted by key or by pattern.
    pub safe_keys: Vec<String>,
    /// Redact values that look like bearer tokens, API keys or e-mail addresses.
    pub builtin_patterns: bool,
    /// Extra regular expressions; matching parts of values are replaced.
    pub patterns: Vec<String>,
    /// What replaces a redacted value.
    pub replacement: String,
}

impl Default for RedactionSection {
    fn default() -> Self {
        RedactionSection {
            deny_keys: DEFAULT_DENY_KEYS.iter().map(|s| s.to_string()).collect(),
            safe_keys: Vec::new(),
            builtin_patterns: true,
            patterns: Vec::new(),
            replacement: DEFAULT_REDACTION_REPLACEMENT.into(),
        }
    }
}

/// `[gateway]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// `false` gives the legacy behaviour: trace cases go straight to the batcher, metric/log
    /// cases are dropped (`gateway_disabled`). Can be flipped at runtime.
    pub enabled: bool,
    /// Whether the enterprise exporter is on; enterprise-only cases are dropped
    /// (`enterprise_disabled`) when it is off. Can be flipped at runtime.
    pub enterprise_enabled: bool,
    /// Events waiting for the gateway actor; beyond it `emit()` returns `QueueFull`.
    pub queue_capacity: usize,
    /// Payload offloads running at once; beyond it a large payload goes inline (counted).
    pub max_offloads_in_flight: usize,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            enabled: DEFAULT_GATEWAY_ENABLED,
            enterprise_enabled: DEFAULT_ENTERPRISE_ENABLED,
            queue_capacity: DEFAULT_GATEWAY_QUEUE_CAPACITY,
            max_offloads_in_flight: DEFAULT_MAX_OFFLOADS_IN_FLIGHT,
        }
    }
}

/// `[cases.<name>]`: one routing table entry. For a built-in case every key is optional and
/// overrides the built-in value; a new case must give `signal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaseSection {
    /// `"trace"` or `"metric_log"`.
    pub signal: Option<SignalType>,
    /// Dropped (`enterprise_disabled`) while the enterprise exporter is off.
    pub enterprise_only: Option<bool>,
    /// A root span of its run: its span id is derived from the run id so other cases of the
    /// run become its children.
    pub root_span: Option<bool>,
    /// `false` drops every event of the case at the gateway, counted as `filtered`. Default
    /// `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Fraction of the case's events kept (0.0 to 1.0; default 1.0); the others are dropped as
    /// `sampled_out`. Deterministic: decided on the trace id for a trace case (so a run's
    /// events are kept or dropped together) and on the event id for a metric/log case (so a
    /// re-sent event gets the same answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
    /// A trace case's event whose payload duration exceeds this also produces a
    /// `{namespace}.slow_operation` log event and counts in `{namespace}.slow_operations.total`.
    /// Unset: no slow-operation events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_threshold_ms: Option<u64>,
}

/// Which payload store backs offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadStoreKind {
    /// In process memory (lost at exit; for tests and single-process use).
    Memory,
    /// A local directory (`payloads.local_path`).
    Local,
    /// An object store URL (`payloads.url`, e.g. `s3://bucket/prefix`): needs the matching cargo
    /// feature (`aws`, `gcp`, `azure`).
    Url,
}

/// `[payloads]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PayloadsSection {
    /// Payloads above this size (serialized JSON) are written to the store and sent as a ref.
    pub inline_threshold_bytes: usize,
    /// `memory`, `local` or `url`.
    pub store: PayloadStoreKind,
    /// Directory for `store = "local"` (created when missing).
    pub local_path: PathBuf,
    /// Object store URL for `store = "url"`.
    pub url: Option<String>,
    /// The most one store write may take; past it the payload goes inline (counted).
    pub write_timeout_ms: u64,
    /// The most one store read may take; past it the fallback is used (counted).
    pub read_timeout_ms: u64,
    /// A stored blob larger than this is refused on read.
    pub max_read_bytes: usize,
    /// For `store = "memory"`: the most payload bytes held. Past it the oldest payloads are
    /// deleted (a later read of one uses its fallback, counted); a single payload larger than
    /// this stays inline (counted as `payload_offload_failed`).
    pub memory_max_bytes: usize,
    /// For `store = "local"`: the most payload bytes the directory keeps. Past it the oldest
    /// payloads are deleted (a later read of one uses its fallback, counted).
    pub local_max_bytes: usize,
    /// For `store = "local"`: payloads older than this are deleted (checked at each write and at
    /// start).
    pub local_max_age_secs: u64,
}

impl Default for PayloadsSection {
    fn default() -> Self {
        PayloadsSection {
            inline_threshold_bytes: DEFAULT_INLINE_THRESHOLD_BYTES,
            store: DEFAULT_PAYLOAD_STORE,
            local_path: PathBuf::from(DEFAULT_PAYLOAD_LOCAL_PATH),
            url: None,
            write_timeout_ms: DEFAULT_PAYLOAD_WRITE_TIMEOUT_MS,
            read_timeout_ms: DEFAULT_PAYLOAD_READ_TIMEOUT_MS,
            max_read_bytes: DEFAULT_PAYLOAD_MAX_READ_BYTES,
            memory_max_bytes: DEFAULT_PAYLOAD_MEMORY_MAX_BYTES,
            local_max_bytes: DEFAULT_PAYLOAD_LOCAL_MAX_BYTES,
            local_max_age_secs: DEFAULT_PAYLOAD_LOCAL_MAX_AGE_SECS,
        }
    }
}

/// `[trace_batcher]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceBatcherSection {
    /// Trace events waiting for the batcher; beyond it they are dropped (`queue_full`).
    pub queue_capacity: usize,
    /// A batch is flushed when this many events wait.
    pub max_batch_size: usize,
    /// ...or when the oldest waiting event has waited this long.
    pub flush_interval_ms: u64,
    /// Batches waiting for each sink; beyond it that sink's copy is dropped (`queue_full`).
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
            max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            flush_interval_ms: DEFAULT_FLUSH_INTERVAL_MS,
            sink_queue_batches: DEFAULT_SINK_QUEUE_BATCHES,
            sink_concurrency: DEFAULT_SINK_CONCURRENCY,
            max_live_sinks: DEFAULT_MAX_LIVE_SINKS,
        }
    }
}

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
    /// Entries kept per handler by the memory backend.
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

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (tonic).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// `[otlp]`: the enterprise exporter. `Debug` shows header names and never their values or the
/// API key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSection {
    /// Collector endpoint (`http://host:4317` for gRPC, `http://host:4318` for HTTP). When unset,
    /// spans, logs and metrics go as JSON lines to `export.file_path`.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// Extra headers (gRPC metadata) sent with every export.
    pub headers: BTreeMap<String, String>,
    /// Sent as `authorization: Bearer <api_key>`. Never logged.
    pub api_key: Option<String>,
    /// The most one export may take, retries included.
    pub timeout_ms: u64,
    /// Fraction of traces kept (decided on the trace id, so a trace is kept or dropped whole).
    pub sampling_ratio: f64,
    /// How often metrics are exported.
    pub metric_interval_ms: u64,
}

impl Default for OtlpSection {
    fn default() -> Self {
        OtlpSection {
            endpoint: None,
            protocol: DEFAULT_OTLP_PROTOCOL,
            headers: BTreeMap::new(),
            api_key: None,
            timeout_ms: DEFAULT_OTLP_TIMEOUT_MS,
            sampling_ratio: DEFAULT_SAMPLING_RATIO,
            metric_interval_ms: DEFAULT_METRIC_INTERVAL_MS,
        }
    }
}

/// `[export]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// Prefix of every span, metric and log name: `{namespace}.workflow.duration`.
    pub namespace: String,
    /// When false, user content (inputs, outputs, feedback text...) is replaced by a reference.
    pub include_content: bool,
    /// What is done with spans, logs and metrics when `otlp.endpoint` is unset: `jsonl` (to
    /// `file_path`) or `discard`.
    pub local_output: LocalOutput,
    /// JSON lines output used when `otlp.endpoint` is unset.
    pub file_path: PathBuf,
    /// `service.name` resource attribute (default from `OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// Extra resource attributes on every span, log record and metric, and in every JSON line
    /// (default from `OTEL_RESOURCE_ATTRIBUTES`). `service.name` and `service.instance.id`
    /// are the gateway's own and cannot be set here.
    pub resource_attributes: BTreeMap<String, String>,
    /// Log records waiting for export; beyond it they are dropped (`queue_full`).
    pub log_queue_capacity: usize,
    /// Log records per export batch.
    pub log_max_batch_size: usize,
    /// The longest a log record waits for its batch.
    pub log_flush_interval_ms: u64,
    /// Log export calls in flight at once (each batch still held and retried on its own).
    pub log_concurrency: usize,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection {
            namespace: DEFAULT_NAMESPACE.into(),
            include_content: DEFAULT_INCLUDE_CONTENT,
            local_output: DEFAULT_LOCAL_OUTPUT,
            file_path: PathBuf::from(DEFAULT_EXPORT_FILE_PATH),
            service_name: DEFAULT_SERVICE_NAME.into(),
            resource_attributes: BTreeMap::new(),
            log_queue_capacity: DEFAULT_LOG_QUEUE_CAPACITY,
            log_max_batch_size: DEFAULT_LOG_MAX_BATCH_SIZE,
            log_flush_interval_ms: DEFAULT_LOG_FLUSH_INTERVAL_MS,
            log_concurrency: DEFAULT_LOG_CONCURRENCY,
        }
    }
}

/// The enterprise destination when `otlp.endpoint` is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalOutput {
    /// JSON lines appended to `export.file_path`.
    Jsonl,
    /// Accepted and thrown away, counted as delivered to the destination `discard`: for
    /// benchmarks (the load generator's `--exporter noop`) and for hosts that only want the case
    /// handlers, the self-metrics and the tenant sinks.
    Discard,
}

/// What a community sink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// OTLP to `endpoint`.
    Otlp,
    /// JSON lines appended to `path`.
    Jsonl,
}

/// The `sinks` key. In TOML either the array of tenant sinks (`[[sinks]]`, as before) or a
/// table: `[[sinks.tenants]]` for tenant sinks and `[sinks.sqlite]` for the SQLite sink (TOML
/// cannot mix `[[sinks]]` with `[sinks.sqlite]` in one file).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SinksConfig {
    /// Tenant trace sinks.
    pub tenants: Vec<SinkSection>,
    /// `[sinks.sqlite]`: spans, log events and metric points also stored in SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteSection>,
}

impl<'de> Deserialize<'de> for SinksConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            tenants: Vec<SinkSection>,
            #[serde(default)]
            sqlite: Option<SqliteSection>,
        }
        // Decided on the shape first, so that an error inside names the field (an untagged
        // enum would only say that nothing matched).
        let v = <figment::value::Value as Deserialize>::deserialize(d)?;
        let custom = |e: figment::Error| serde::de::Error::custom(e.to_string());
        match v {
            figment::value::Value::Array(..) => Ok(SinksConfig {
                tenants: v.deserialize().map_err(custom)?,
                sqlite: None,
            }),
            _ => {
                let t: Table = v.deserialize().map_err(custom)?;
                Ok(SinksConfig {
                    tenants: t.tenants,
                    sqlite: t.sqlite,
                })
            }
        }
    }
}

/// `[sinks.sqlite]`: see docs/local-analytics.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSection {
    /// The database file (created, with its directory, when missing).
    pub path: PathBuf,
    /// Rows written per transaction at most.
    #[serde(default = "default_sqlite_batch_size")]
    pub batch_size: usize,
    /// How long the writer gathers rows into one transaction.
    #[serde(default = "default_sqlite_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Exports waiting for the writer; beyond it a copy is dropped and counted.
    #[serde(default = "default_sqlite_queue_batches")]
    pub queue_batches: usize,
    /// Rows older than this are deleted (unset: kept).
    #[serde(default)]
    pub retention_max_age_secs: Option<u64>,
    /// At most this many rows per table, the oldest deleted first (unset: no limit).
    #[serde(default)]
    pub retention_max_rows: Option<u64>,
}

impl SqliteSection {
    /// A section for `path` with the documented defaults.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        SqliteSection {
            path: path.into(),
            batch_size: DEFAULT_SQLITE_BATCH_SIZE,
            flush_interval_ms: DEFAULT_SQLITE_FLUSH_INTERVAL_MS,
            queue_batches: DEFAULT_SQLITE_QUEUE_BATCHES,
            retention_max_age_secs: None,
            retention_max_rows: None,
        }
    }
}

fn default_sqlite_batch_size() -> usize {
    DEFAULT_SQLITE_BATCH_SIZE
}
fn default_sqlite_flush_interval_ms() -> u64 {
    DEFAULT_SQLITE_FLUSH_INTERVAL_MS
}
fn default_sqlite_queue_batches() -> usize {
    DEFAULT_SQLITE_QUEUE_BATCHES
}

/// `[[sinks]]`: a community trace sink for one tenant (and optionally one app). Also what
/// `GatewayHandle::register_sink` takes at runtime. `Debug` shows header names and never their
/// values, nor the password of an endpoint URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// A name for counters and logs (unique).
    pub name: String,
    /// The tenant whose traces go here.
    pub tenant_id: String,
    /// Only this app's traces; all the tenant's apps when unset.
    #[serde(default)]
    pub app_id: Option<String>,
    /// `otlp` or `jsonl`.
    pub kind: SinkKind,
    /// For `otlp`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// For `otlp`.
    #[serde(default = "default_protocol")]
    pub protocol: OtlpProtocol,
    /// For `otlp`: headers such as a provider's API key. Never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// For `jsonl`.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

fn default_protocol() -> OtlpProtocol {
    DEFAULT_OTLP_PROTOCOL
}

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// Deadline used when the last handle is dropped without an explicit `shutdown()`.
    pub deadline_ms: u64,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        ShutdownSection {
            deadline_ms: DEFAULT_SHUTDOWN_DEADLINE_MS,
        }
    }
}

/// A configuration that cannot be used. Names the key and what is wrong.
///
/// Its `Debug` is its message, so `main() -> Result<(), Box<dyn Error>>` prints the sentence.
#[derive(thiserror::Error)]
pub enum ConfigError {
    /// The file or environment could not be parsed into the config structs (unknown key, wrong
    /// type, malformed TOML). Figment's message names the key and where it came from.
    #[error("configuration is invalid: {0}")]
    Parse(String),
    /// A value parsed but is out of range.
    #[error("configuration key `{key}` is invalid: {problem}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// What is wrong.
        problem: String,
    },
}

impl std::fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        // Figment gives one error per problem; join them so every bad key is named.
        let all: Vec<String> = e.into_iter().map(|e| describe_figment_error(&e)).collect();
        ConfigError::Parse(all.join("; "))
    }
}

/// A parse error's text without the lines it quotes from the file: the TOML parser shows the
/// offending line (`3 | api_key = "s3cr...`), which may hold a credential. What is left says
/// where (line and column) and what is wrong.
fn without_source_snippet(text: &str) -> String {
    let quoted = |l: &str| {
        let t = l.trim_start();
        t.starts_with('|')
            || t.split_once(" |")
                .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !quoted(l) && !l.trim().is_empty())
        .map(str::trim)
        .collect();
    kept.join(": ")
}

/// One figment error as `<problem> for key `a.b` [(set by VARIABLE)] in <source>`: the key as
/// the file and the docs write it, never with figment's profile prefix (`default.a.b`), and the
/// environment variable's name when one set it.
fn describe_figment_error(e: &figment::Error) -> String {
    let key = e.path.join(".");
    let mut msg = without_source_snippet(&e.kind.to_string());
    if !key.is_empty() {
        msg.push_str(&format!(" for key `{key}`"));
    }
    if let Some(md) = &e.metadata {
        if let Some(profile) = &e.profile {
            let named = md.interpolate(profile, &e.path);
            if !key.is_empty() && named != format!("{profile}.{key}") && named != key {
                msg.push_str(&format!(" (set by {named})"));
            }
        }
        msg.push_str(&format!(" in {}", md.name));
        if let Some(source) = &md.source {
            msg.push_str(&format!(" {source}"));
        }
    }
    msg
}

impl GatewayConfig {
    /// Defaults, then the standard `OTEL_*` variables (`OTEL_SERVICE_NAME`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, ...: see docs/configuration.md), then the TOML file at
    /// `path` (when given), then `TELEMETRY_GATEWAY__*` environment variables.
    pub fn figment(path: Option<&Path>) -> Figment {
        let mut f = Figment::from(Serialized::defaults(GatewayConfig::default()))
            .merge(otel_env::OtelEnv::from_env());
        if let Some(p) = path {
            f = f.merge(Toml::file_exact(p));
        }
        f = f.merge(Env::prefixed(ENV_PREFIX).split("__"));
        // Figment parses every environment value (`0012` becomes the number 12, `true` a bool).
        // String-typed keys are merged again as the raw text, so an all-digit API key or header
        // value is kept exactly and never fails to parse (a parse error would echo the value).
        for (key, value) in std::env::vars() {
            let Some(rest) = key
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &key[ENV_PREFIX.len()..])
            else {
                continue;
            };
            let path = rest
                .split("__")
                .collect::<Vec<_>>()
                .join(".")
                .to_ascii_lowercase();
            if STRING_KEYS.contains(&path.as_str())
                || path.starts_with("otlp.headers.")
                || path.starts_with("export.resource_attributes.")
            {
                f = f.merge(Serialized::default(&path, value));
            }
        }
        f
    }

    /// Loads and validates: see [`figment`](Self::figment).
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(Self::figment(path))
    }

    /// Extracts and validates from any figment (for hosts with their own providers).
    pub fn from_figment(f: Figment) -> Result<Self, ConfigError> {
        let cfg: GatewayConfig = f.extract()?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string on top of the defaults (no environment), for tests and examples.
    pub fn from_toml_str(toml: &str) -> Result<Self, ConfigError> {
        Self::from_figment(
            Figment::from(Serialized::defaults(GatewayConfig::default())).merge(Toml::string(toml)),
        )
    }

    /// Checks every range and cross-key rule, naming the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A part this build does not have is the first thing to say: no other rule about it
        // can be met.
        self.check_features()?;
        // No configured number is so large that arithmetic on it could overflow or an
        // allocation sized by it could abort.
        self.check_ceilings()?;
        fn bad(key: &str, problem: impl Into<String>) -> ConfigError {
            ConfigError::Invalid {
                key: key.into(),
                problem: problem.into(),
            }
        }
        let positive = [
            ("gateway.queue_capacity", self.gateway.queue_capacity),
            (
                "gateway.max_offloads_in_flight",
                self.gateway.max_offloads_in_flight,
            ),
            (
                "payloads.inline_threshold_bytes",
                self.payloads.inline_threshold_bytes,
            ),
            ("payloads.max_read_bytes", self.payloads.max_read_bytes),
            ("payloads.memory_max_bytes", self.payloads.memory_max_bytes),
            ("payloads.local_max_bytes", self.payloads.local_max_bytes),
            ("transport.max_read_bytes", self.transport.max_read_bytes),
            (
                "trace_batcher.queue_capacity",
                self.trace_batcher.queue_capacity,
            ),
            (
                "trace_batcher.max_batch_size",
                self.trace_batcher.max_batch_size,
            ),
            (
                "trace_batcher.sink_queue_batches",
                self.trace_batcher.sink_queue_batches,
            ),
            (
                "trace_batcher.sink_concurrency",
                self.trace_batcher.sink_concurrency,
            ),
            (
                "trace_batcher.max_live_sinks",
                self.trace_batcher.max_live_sinks,
            ),
            ("metric_pool.pool_size", self.metric_pool.pool_size),
            (
                "metric_pool.queue_capacity",
                self.metric_pool.queue_capacity,
            ),
            ("metric_pool.batch_size", self.metric_pool.batch_size),
            ("dedup.memory_max_entries", self.dedup.memory_max_entries),
            ("export.log_queue_capacity", self.export.log_queue_capacity),
            ("export.log_max_batch_size", self.export.log_max_batch_size),
            ("export.log_concurrency", self.export.log_concurrency),
            ("transport.max_len", self.transport.max_len),
            ("transport.buffer_capacity", self.transport.buffer_capacity),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        let positive_ms = [
            ("payloads.write_timeout_ms", self.payloads.write_timeout_ms),
            ("payloads.read_timeout_ms", self.payloads.read_timeout_ms),
            (
                "trace_batcher.flush_interval_ms",
                self.trace_batcher.flush_interval_ms,
            ),
            ("dedup.ttl_secs", self.dedup.ttl_secs),
            ("dedup.timeout_ms", self.dedup.timeout_ms),
            (
                "dedup.reconnect_interval_ms",
                self.dedup.reconnect_interval_ms,
            ),
            ("otlp.timeout_ms", self.otlp.timeout_ms),
            ("otlp.metric_interval_ms", self.otlp.metric_interval_ms),
            (
                "export.log_flush_interval_ms",
                self.export.log_flush_interval_ms,
            ),
            ("shutdown.deadline_ms", self.shutdown.deadline_ms),
            ("transport.claim_idle_ms", self.transport.claim_idle_ms),
            ("transport.max_deliveries", self.transport.max_deliveries),
            ("transport.block_ms", self.transport.block_ms),
            (
                "transport.commit_interval_ms",
                self.transport.commit_interval_ms,
            ),
            (
                "transport.response_timeout_ms",
                self.transport.response_timeout_ms,
            ),
            (
                "transport.connect_timeout_ms",
                self.transport.connect_timeout_ms,
            ),
        ];
        for (key, v) in positive_ms {
            if v == 0 {
                return Err(bad(key, "must be greater than 0"));
            }
        }
        if !(0.0..=1.0).contains(&self.otlp.sampling_ratio) || self.otlp.sampling_ratio.is_nan() {
            return Err(bad(
                "otlp.sampling_ratio",
                format!("{} is not between 0.0 and 1.0", self.otlp.sampling_ratio),
            ));
        }
        if let Some(ep) = &self.otlp.endpoint {
            check_endpoint("otlp.endpoint", ep)?;
        }
        if self.dedup.backend == DedupBackendKind::Redis {
            if let Some(problem) = redis_url_problem(&self.dedup.redis_url) {
                return Err(bad("dedup.redis_url", problem));
            }
        }
        if self.transport.kind == TransportKind::RedisStreams {
            let t = &self.transport;
            if let Some(problem) = redis_url_problem(&t.redis_url) {
                return Err(bad("transport.redis_url", problem));
            }
            for (key, v) in [
                ("transport.stream", &t.stream),
                ("transport.group", &t.group),
            ] {
                if v.is_empty() {
                    return Err(bad(key, "must not be empty"));
                }
            }
            if t.consumer.as_deref() == Some("") {
                return Err(bad("transport.consumer", "must not be empty when set"));
            }
            if self.dedup.backend == DedupBackendKind::Memory {
                return Err(bad(
                    "dedup.backend",
                    "must be \"redis\" with transport.kind = \"redis_streams\": a memory cache \
                     cannot see the events other workers handled, so a redelivered event would \
                     count twice",
                ));
            }
            if t.response_timeout_ms < t.block_ms.saturating_add(TRANSPORT_RESPONSE_MARGIN_MS) {
                return Err(bad(
                    "transport.response_timeout_ms",
                    format!(
                        "must be at least transport.block_ms + {TRANSPORT_RESPONSE_MARGIN_MS} \
                         ({} ms): a blocking read answers only after block_ms, so a shorter \
                         timeout fails every idle read",
                        t.block_ms.saturating_add(TRANSPORT_RESPONSE_MARGIN_MS)
                    ),
                ));
            }
            if t.claim_idle_ms <= t.commit_interval_ms.saturating_mul(2) {
                return Err(bad(
                    "transport.claim_idle_ms",
                    format!(
                        "must be more than twice transport.commit_interval_ms ({} ms), or live \
                         workers' entries would be reclaimed before they are acknowledged",
                        t.commit_interval_ms
                    ),
                ));
            }
        }
        if self.dedup.key_prefix.is_empty() {
            return Err(bad("dedup.key_prefix", "must not be empty"));
        }
        let ns = &self.export.namespace;
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        {
            return Err(bad(
                "export.namespace",
                format!("{ns:?} must be non-empty lowercase letters, digits, '_' or '.'"),
            ));
        }
        if self.payloads.store == PayloadStoreKind::Url && self.payloads.url.is_none() {
            return Err(bad(
                "payloads.url",
                "required when payloads.store = \"url\"",
            ));
        }
        for (name, slo) in &self.slo {
            let key = format!("slo.{name}");
            for (k, v) in [
                ("p50_duration_ms", slo.p50_duration_ms),
                ("p95_duration_ms", slo.p95_duration_ms),
                ("p99_duration_ms", slo.p99_duration_ms),
                ("min_event_rate", slo.min_event_rate),
            ] {
                if let Some(v) = v {
                    if !(v.is_finite() && v >= 0.0) {
                        return Err(bad(
                            &format!("{key}.{k}"),
                            format!("{v} is not a number >= 0"),
                        ));
                    }
                }
            }
            for (k, v) in [("error_rate", slo.error_rate), ("drop_rate", slo.drop_rate)] {
                if let Some(v) = v {
                    if !(0.0..=1.0).contains(&v) || v.is_nan() {
                        return Err(bad(
                            &format!("{key}.{k}"),
                            format!("{v} is not between 0.0 and 1.0"),
                        ));
                    }
                }
            }
        }
        for (name, case) in &self.cases {
            let key = format!("cases.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(bad(
                    &key,
                    "case names are lowercase letters, digits and '_'",
                ));
            }
            let built_in = crate::contracts::TelemetryCase::BUILT_IN
                .iter()
                .any(|c| c.as_str() == name);
            if !built_in && case.signal.is_none() {
                return Err(bad(
                    &format!("{key}.signal"),
                    "a new case must say its signal: \"trace\" or \"metric_log\"",
                ));
            }
            if let Some(r) = case.sample_ratio {
                if !(0.0..=1.0).contains(&r) || r.is_nan() {
                    return Err(bad(
                        &format!("{key}.sample_ratio"),
                        format!("{r} is not between 0.0 and 1.0"),
                    ));
                }
            }
            if case.slow_threshold_ms == Some(0) {
                return Err(bad(
                    &format!("{key}.slow_threshold_ms"),
                    "must be greater than 0 (leave it unset for no slow-operation events)",
                ));
            }
        }
        if let Some(listen) = &self.diagnostics.listen {
            let addr: std::net::SocketAddr = listen.parse().map_err(|e| {
                bad(
                    "diagnostics.listen",
                    format!("{listen:?} is not an ip:port address: {e}"),
                )
            })?;
            if !addr.ip().is_loopback() && !self.diagnostics.allow_non_loopback {
                return Err(bad(
                    "diagnostics.listen",
                    format!(
                        "{listen} is not a loopback address; set diagnostics.allow_non_loopback = true to expose it"
                    ),
                ));
            }
        }
        for (key, v) in [
            (
                "diagnostics.recorder_events",
                self.diagnostics.recorder_events,
            ),
            (
                "diagnostics.recorder_steps_per_event",
                self.diagnostics.recorder_steps_per_event,
            ),
            (
                "diagnostics.metric_cardinality_limit",
                self.diagnostics.metric_cardinality_limit,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        if self.retry.max_backoff_ms < self.retry.initial_backoff_ms {
            return Err(bad(
                "retry.max_backoff_ms",
                "must be at least retry.initial_backoff_ms",
            ));
        }
        for (key, v) in [
            ("retry.initial_backoff_ms", self.retry.initial_backoff_ms),
            (
                "retry.outage_backoff_max_ms",
                self.retry.outage_backoff_max_ms,
            ),
            ("retry.max_batch_age_secs", self.retry.max_batch_age_secs),
            (
                "diagnostics.unready_after_failing_secs",
                self.diagnostics.unready_after_failing_secs,
            ),
            (
                "logging.warn_summary_interval_secs",
                self.logging.warn_summary_interval_secs,
            ),
        ] {
            if v == 0 {
                return Err(bad(key, "must be greater than 0"));
            }
        }
        for (i, p) in self.redaction.patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(p) {
                return Err(bad(
                    &format!("redaction.patterns[{i}]"),
                    format!("invalid regex: {e}"),
                ));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        if let Some(sq) = &self.sinks.sqlite {
            if sq.path.as_os_str().is_empty() {
                return Err(bad("sinks.sqlite.path", "must not be empty"));
            }
            for (key, v) in [
                ("sinks.sqlite.batch_size", sq.batch_size as u64),
                ("sinks.sqlite.flush_interval_ms", sq.flush_interval_ms),
                ("sinks.sqlite.queue_batches", sq.queue_batches as u64),
            ] {
                if v == 0 {
                    return Err(bad(key, "must be at least 1"));
                }
            }
            for (key, v) in [
                (
                    "sinks.sqlite.retention_max_age_secs",
                    sq.retention_max_age_secs,
                ),
                ("sinks.sqlite.retention_max_rows", sq.retention_max_rows),
            ] {
                if v == Some(0) {
                    return Err(bad(
                        key,
                        "must be at least 1 (leave it unset to keep everything)",
                    ));
                }
            }
        }
        for (i, s) in self.sinks.tenants.iter().enumerate() {
            let key = format!("sinks[{i}]");
            if !names.insert(s.name.clone()) {
                return Err(bad(
                    &format!("{key}.name"),
                    format!("{:?} is used twice", s.name),
                ));
            }
            s.check()
                .map_err(|(field, problem)| bad(&format!("{key}.{field}"), problem))?;
        }
        for key in self.export.resource_attributes.keys() {
            let problem = match key.as_str() {
                "" => "an attribute name must not be empty",
                "service.name" => "set export.service_name (or OTEL_SERVICE_NAME) instead",
                "service.instance.id" => "is the gateway's own: a random id per process",
                _ => continue,
            };
            return Err(bad(&format!("export.resource_attributes.{key}"), problem));
        }
        Ok(())
    }

    /// Every numeric key against its ceiling ([`ceiling_of`]), found by walking the serialized
    /// configuration, so a key added later is covered without a line here.
    fn check_ceilings(&self) -> Result<(), ConfigError> {
        fn walk(prefix: &str, v: &figment::value::Value) -> Result<(), ConfigError> {
            use figment::value::Value;
            match v {
                Value::Dict(_, d) => d.iter().try_for_each(|(k, v)| {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v)
                }),
                Value::Array(_, a) => a
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, v)| walk(&format!("{prefix}[{i}]"), v)),
                Value::Num(_, n) => match (n.to_u128(), ceiling_of(prefix)) {
                    (Some(value), (max, what)) if value > u128::from(max) => {
                        Err(ConfigError::Invalid {
                            key: prefix.to_owned(),
                            problem: format!("{value} is too large: at most {max} ({what})"),
                        })
                    }
                    _ => Ok(()),
                },
                _ => Ok(()),
            }
        }
        // A config that cannot be serialized has nothing numeric to check.
        match figment::value::Value::serialize(self) {
            Ok(v) => walk("", &v),
            Err(_) => Ok(()),
        }
    }

    /// A part this build left out (its cargo feature is off) cannot be configured: the error
    /// names the key and the feature to enable.
    fn check_features(&self) -> Result<(), ConfigError> {
        let needs = |key: &str, what: &str, feature: &str| ConfigError::Invalid {
            key: key.into(),
            problem: format!(
                "{what} needs the cargo feature `{feature}` of telemetry-gateway, which this \
                 build does not have (add `features = [\"{feature}\"]` to the dependency)"
            ),
        };
        if !cfg!(feature = "redis") {
            if self.dedup.backend == DedupBackendKind::Redis {
                return Err(needs("dedup.backend", "\"redis\"", "redis"));
            }
            if self.transport.kind == TransportKind::RedisStreams {
                return Err(needs("transport.kind", "\"redis_streams\"", "redis"));
            }
        }
        if !cfg!(feature = "analytics") && self.sinks.sqlite.is_some() {
            return Err(needs("sinks.sqlite", "the SQLite sink", "analytics"));
        }
        Ok(())
    }

    /// `dedup.timeout_ms` as a duration.
    pub fn dedup_timeout(&self) -> Duration {
        Duration::from_millis(self.dedup.timeout_ms)
    }
}

/// The longest configurable duration in milliseconds: 7 days.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3_600 * 1_000;
/// The longest configurable duration in seconds: 10 years (dedup windows, retention).
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3_600;
/// The largest configurable size in bytes: 1 TiB.
pub const MAX_BYTES: u64 = 1 << 40;
/// The most threads, tasks or calls in flight a key may ask for.
pub const MAX_PARALLELISM: u64 = 1_024;
/// The most items one batch may hold (batches are allocated whole).
pub const MAX_BATCH_ITEMS: u64 = 1_000_000;
/// The most items a queue, cache or recorder may hold.
pub const MAX_ITEMS: u64 = 10_000_000;
/// The most tries a key may ask for.
pub const MAX_TRIES: u64 = 1_000;
/// The most rows or entries kept outside this process (Redis stream length, SQLite rows).
pub const MAX_STORED_ITEMS: u64 = 1_000_000_000_000;

/// The ceiling of a numeric key, by what its name says it is, and the reason for the message.
pub fn ceiling_of(key: &str) -> (u64, &'static str) {
    let field = key.rsplit('.').next().unwrap_or(key);
    if field.ends_with("_ms") {
        (MAX_DURATION_MS, "milliseconds; 7 days")
    } else if field.ends_with("_secs") {
        (MAX_DURATION_SECS, "seconds; 10 years")
    } else if field.ends_with("_bytes") {
        (MAX_BYTES, "bytes; 1 TiB")
    } else if matches!(
        field,
        "pool_size" | "sink_concurrency" | "log_concurrency" | "max_offloads_in_flight"
    ) || field == "max_live_sinks"
    {
        (MAX_PARALLELISM, "threads, tasks or calls at once")
    } else if matches!(field, "max_retries" | "max_deliveries") {
        (MAX_TRIES, "tries")
    } else if matches!(field, "max_len" | "retention_max_rows") {
        (MAX_STORED_ITEMS, "entries stored outside the process")
    } else if field.contains("batch_size") || field == "recorder_steps_per_event" {
        (MAX_BATCH_ITEMS, "items per batch, allocated whole")
    } else {
        (MAX_ITEMS, "items held in memory")
    }
}

/// What is wrong with a Redis URL, the one check for `dedup.redis_url` and
/// `transport.redis_url`. `rediss://` (TLS) is refused here, not at start: the Redis client is
/// built without TLS (no TLS stack in the dependency tree); reach a TLS Redis through a local
/// TLS tunnel, or a `unix://` socket.
fn redis_url_problem(url: &str) -> Option<&'static str> {
    if url.starts_with("rediss://") {
        Some(
            "rediss:// (TLS) is not supported: the Redis client is built without TLS; use \
             redis:// through a TLS tunnel, or unix://",
        )
    } else if url.starts_with("redis://") || url.starts_with("unix://") {
        None
    } else {
        Some("must start with redis:// or unix://")
    }
}

fn check_endpoint(key: &str, ep: &str) -> Result<(), ConfigError> {
    endpoint_problem(ep).map_or(Ok(()), |problem| {
        Err(ConfigError::Invalid {
            key: key.into(),
            problem,
        })
    })
}

/// What is wrong with an OTLP endpoint, if anything. Quotes it without its password.
fn endpoint_problem(ep: &str) -> Option<String> {
    (!(ep.starts_with("http://") || ep.starts_with("https://"))).then(|| {
        format!(
            "{:?} must start with http:// or https://",
            url_without_password(ep)
        )
    })
}

impl SinkSection {
    /// Checks one entry (`[[sinks]]`, or a registration at runtime): `Err((field, problem))`
    /// names the field at fault and never quotes a credential.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.tenant_id.is_empty() {
            return Err(("tenant_id", "must not be empty".into()));
        }
        match self.kind {
            SinkKind::Otlp => match &self.endpoint {
                Some(ep) => endpoint_problem(ep).map_or(Ok(()), |p| Err(("endpoint", p))),
                None => Err(("endpoint", "required for kind = \"otlp\"".into())),
            },
            SinkKind::Jsonl if self.path.is_none() => {
                Err(("path", "required for kind = \"jsonl\"".into()))
            }
            SinkKind::Jsonl => Ok(()),
        }
    }
}

/// What `Debug` shows for a credential.
const HIDDEN: &str = "[REDACTED]";

/// A stand-in the URL parser leaves as it is, swapped for [`HIDDEN`] once printed (the parser
/// would percent-encode `[REDACTED]` into `%5BREDACTED%5D`).
const HIDDEN_IN_URL: &str = "REDACTEDPASSWORD0";

/// Query parameters whose values are credentials in object store and Redis URLs.
const SECRET_QUERY_KEYS: [&str; 8] = [
    "password",
    "secret",
    "token",
    "access_key",
    "secret_access_key",
    "account_key",
    "sas",
    "sig",
];

/// `url` with every credential hidden: the password of its user info and the values of
/// credential query parameters (`?secret_access_key=...`). A URL that does not parse is still
/// cut at its user info (`scheme://user:[REDACTED]@...`): an error must not quote a password
/// just because the URL around it is malformed. The one function every output and error uses
/// for URLs (`check-config`, `Debug`, validation and build errors).
pub fn url_without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some(HIDDEN_IN_URL));
            }
            let secret_query = u.query_pairs().any(|(k, _)| is_secret_key(&k));
            if secret_query {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_key(&k) {
                            HIDDEN_IN_URL.to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string().replace(HIDDEN_IN_URL, HIDDEN)
        }
        Err(_) => hide_userinfo_unparsed(url),
    }
}

/// `text` (an error message from a client library) with `url` and its password hidden
/// wherever it quotes them, whole or in part.
pub fn hide_url_in(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &url_without_password(url));
    if let Some(password) = password_of(url).filter(|p| !p.is_empty()) {
        out = out.replace(&password, HIDDEN);
    }
    out
}

/// The password in `url`'s user info, parsed or not (`scheme://user:password@host`).
fn password_of(url: &str) -> Option<String> {
    if let Ok(u) = url::Url::parse(url) {
        return u.password().map(str::to_owned);
    }
    let (start, at) = userinfo_span(url)?;
    url[start..at].split_once(':').map(|(_, p)| p.to_owned())
}

/// Where the user info of text that looks like a URL lies: `(start, end)` byte offsets, between
/// `://` and the last `@` before the path, query or fragment. For text that does not parse as a
/// URL (the parser's own accessors cover the rest).
fn userinfo_span(text: &str) -> Option<(usize, usize)> {
    let start = text.find("://")? + 3;
    let rest = &text[start..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    Some((start, start + authority.rfind('@')?))
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_QUERY_KEYS
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("_{s}")))
}

/// `scheme://user:password@rest` → `scheme://user:[REDACTED]@rest` for text that is not a URL.
fn hide_userinfo_unparsed(text: &str) -> String {
    let Some((start, at)) = userinfo_span(text) else {
        return text.to_owned();
    };
    let userinfo = &text[start..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
    format!("{}{user}:{HIDDEN}{}", &text[..start], &text[at..])
}

/// The credentials in `headers` and `endpoint` (header values; a URL's password), for the log
/// sanitizer to hide wherever they might surface (an exporter's error message, say).
pub(crate) fn credentials<'a>(
    headers: &'a BTreeMap<String, String>,
    endpoint: Option<&'a str>,
) -> Vec<String> {
    let mut out: Vec<String> = headers.values().cloned().collect();
    for v in headers.values() {
        // `Bearer <token>`: the token alone may surface too.
        if let Some((_, token)) = v.split_once(' ') {
            out.push(token.to_owned());
        }
    }
    if let Some(p) = endpoint.and_then(password_of).filter(|p| !p.is_empty()) {
        out.push(p);
    }
    out
}

impl GatewayConfig {
    /// A copy with every credential replaced by `[REDACTED]`: `otlp.api_key`, header values
    /// (`otlp.headers`, each tenant sink's `headers`), and the passwords and secret query
    /// parameters of every URL (`otlp.endpoint`, `sinks[i].endpoint`, `dedup.redis_url`,
    /// `transport.redis_url`, `payloads.url`). For printing (`telemetry-gateway check-config`);
    /// `Debug` hides the same.
    pub fn with_credentials_hidden(&self) -> GatewayConfig {
        let mut c = self.clone();
        let hide = |h: &mut BTreeMap<String, String>| {
            h.values_mut().for_each(|v| *v = HIDDEN.to_owned());
        };
        if let Some(k) = c.otlp.api_key.as_mut() {
            *k = HIDDEN.to_owned();
        }
        hide(&mut c.otlp.headers);
        c.otlp.endpoint = c.otlp.endpoint.as_deref().map(url_without_password);
        for s in &mut c.sinks.tenants {
            hide(&mut s.headers);
            s.endpoint = s.endpoint.as_deref().map(url_without_password);
        }
        c.dedup.redis_url = url_without_password(&c.dedup.redis_url);
        c.transport.redis_url = url_without_password(&c.transport.redis_url);
        c.payloads.url = c.payloads.url.as_deref().map(url_without_password);
        c
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

impl std::fmt::Debug for PayloadsSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadsSection")
            .field("inline_threshold_bytes", &self.inline_threshold_bytes)
            .field("store", &self.store)
            .field("local_path", &self.local_path)
            .field("url", &self.url.as_deref().map(url_without_password))
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("read_timeout_ms", &self.read_timeout_ms)
            .field("max_read_bytes", &self.max_read_bytes)
            .field("memory_max_bytes", &self.memory_max_bytes)
            .field("local_max_bytes", &self.local_max_bytes)
            .field("local_max_age_secs", &self.local_max_age_secs)
            .finish()
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

fn hidden_headers(headers: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    headers.keys().map(|k| (k.as_str(), HIDDEN)).collect()
}

impl std::fmt::Debug for OtlpSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSection")
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(url_without_password),
            )
            .field("protocol", &self.protocol)
            .field("headers", &hidden_headers(&self.headers))
            .field("api_key", &self.api_key.as_ref().map(|_| HIDDEN))
            .field("timeout_ms", &self.timeout_ms)
            .field("sampling_ratio", &self.sampling_ratio)
            .field("metric_interval_ms", &self.metric_interval_ms)
            .finish()
    }
}

impl std::fmt::Debug for SinkSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSection")
            .field("name", &self.name)
            .field("tenant_id", &self.tenant_id)
            .field("app_id", &self.app_id)
            .field("kind", &self.kind)
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(url_without_password),
            )
            .field("protocol", &self.protocol)
            .field("headers", &hidden_headers(&self.headers))
            .field("path", &self.path)
            .finish()
    }
}

#[cfg(test)]
// Figment's `Jail` closures return figment's own (large) error type; that is its API.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_endpoint_is_named_without_its_password() {
        let c = GatewayConfig::from_toml_str(
            "[otlp]\nendpoint = \"grpc://user:pw-0123456789@collector:4317\"\n",
        );
        let err = c.unwrap_err().to_string();
        assert!(
            err.contains("otlp.endpoint") && err.contains("collector"),
            "{err}"
        );
        assert!(!err.contains("pw-0123456789"), "{err}");
    }
    use figment::Jail;

    #[test]
    fn defaults_are_the_documented_constants() {
        let c = GatewayConfig::default();
        assert_eq!(c.payloads.inline_threshold_bytes, 1024 * 1024);
        assert_eq!(c.dedup.ttl_secs, 3600);
        assert_eq!(c.dedup.key_prefix, "telemetry:dedup");
        assert_eq!(c.dedup.timeout_ms, 50);
        assert_eq!(c.export.namespace, "app");
        assert_eq!(c.dedup.backend, DedupBackendKind::Memory);
        assert!(c.otlp.endpoint.is_none());
        c.validate().unwrap();
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "gw.toml",
                r#"
                [otlp]
                endpoint = "http://file:4317"
                [dedup]
                ttl_secs = 60
                "#,
            )?;
            jail.set_env("TELEMETRY_GATEWAY__OTLP__ENDPOINT", "http://env:4317");
            jail.set_env("TELEMETRY_GATEWAY__GATEWAY__ENABLED", "false");
            let c = GatewayConfig::load(Some(Path::new("gw.toml"))).unwrap();
            assert_eq!(c.otlp.endpoint.as_deref(), Some("http://env:4317"));
            assert_eq!(c.dedup.ttl_secs, 60);
            assert!(!c.gateway.enabled);
            assert_eq!(c.dedup.timeout_ms, DEFAULT_DEDUP_TIMEOUT_MS);
            Ok(())
        });
    }

    #[test]
    fn env_strings_that_look_like_numbers_stay_strings() {
        Jail::expect_with(|jail| {
            jail.set_env("TELEMETRY_GATEWAY__OTLP__API_KEY", "0012345");
            jail.set_env("TELEMETRY_GATEWAY__OTLP__HEADERS__X_TENANT", "42");
            jail.set_env("TELEMETRY_GATEWAY__DEDUP__KEY_PREFIX", "true");
            jail.set_env("TELEMETRY_GATEWAY__REDACTION__REPLACEMENT", "[HIDDEN]");
            let c = GatewayConfig::load(None).unwrap();
            assert_eq!(c.otlp.api_key.as_deref(), Some("0012345"));
            assert_eq!(
                c.otlp.headers.get("x_tenant").map(String::as_str),
                Some("42")
            );
            assert_eq!(c.dedup.key_prefix, "true");
            assert_eq!(c.redaction.replacement, "[HIDDEN]");
            // Typed keys are still typed.
            jail.set_env("TELEMETRY_GATEWAY__DEDUP__TTL_SECS", "abc");
            let err = GatewayConfig::load(None).unwrap_err().to_string();
            assert!(err.to_lowercase().contains("dedup.ttl_secs"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        let err = GatewayConfig::from_toml_str("[dedup]\nttl_sec = 5\n").unwrap_err();
        assert!(err.to_string().contains("ttl_sec"), "{err}");
    }

    #[test]
    fn unknown_env_key_is_named() {
        Jail::expect_with(|jail| {
            jail.set_env("TELEMETRY_GATEWAY__OTLP__ENDPONT", "http://x:1");
            let err = GatewayConfig::load(None).unwrap_err();
            assert!(err.to_string().contains("endpont"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[metric_pool]\npool_size = 0\n", "metric_pool.pool_size"),
            ("[otlp]\nsampling_ratio = 1.5\n", "otlp.sampling_ratio"),
            ("[otlp]\nendpoint = \"localhost:4317\"\n", "otlp.endpoint"),
            ("[otlp]\nprotocol = \"thrift\"\n", "protocol"),
            ("[dedup]\nbackend = \"memcached\"\n", "backend"),
            (
                "[cases.billing]\nenterprise_only = true\n",
                "cases.billing.signal",
            ),
            ("[export]\nnamespace = \"My App\"\n", "export.namespace"),
        ];
        for (toml, key) in cases {
            let err = GatewayConfig::from_toml_str(toml).unwrap_err();
            assert!(err.to_string().contains(key), "{toml}: {err}");
        }
    }

    #[test]
    fn shipped_config_file_matches_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml");
        let text = std::fs::read_to_string(path).unwrap();
        let from_file = GatewayConfig::from_figment(
            Figment::from(Serialized::defaults(GatewayConfig::default()))
                .merge(Toml::string(&text)),
        )
        .unwrap();
        assert_eq!(from_file, GatewayConfig::default());
        // Every key of every section is spelled out in the file (as a value or, for keys whose
        // default is "unset", as a commented example), so the file is the reference.
        let defaults = figment::value::Value::serialize(GatewayConfig::default()).unwrap();
        let dict = defaults.into_dict().unwrap();
        for (section, value) in dict {
            let Some(keys) = value.into_dict() else {
                continue;
            };
            assert!(
                text.contains(&format!("[{section}]")) || text.contains(&format!("[[{section}]]")),
                "config/gateway.toml lacks section [{section}]"
            );
            for key in keys.keys() {
                let found = text.lines().any(|l| {
                    let l = l.trim_start_matches('#').trim();
                    l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
                });
                assert!(found, "config/gateway.toml lacks key {section}.{key}");
            }
        }
    }
}
