//! # telemetry-gateway
//!
//! One safe entrance for a Rust service's telemetry. The host starts the gateway, then sends
//! typed events ([`TelemetryEnvelope`]) from its request path with [`GatewayHandle::emit`], which
//! never blocks and never panics. Inside, an actix actor system routes each event by one table
//! (eligibility, then trace vs metric/log), batches trace-shaped events into OpenTelemetry spans,
//! handles metric/log events in a supervised pool with idempotency and payload rehydration, and
//! exports over OTLP (or to a local JSON lines file when no collector is configured). Every event
//! ends delivered or dropped with a [`ReasonCode`]; nothing is lost silently.
//!
//! ```no_run
//! use telemetry_gateway::{start, GatewayConfig, TelemetryCase, TelemetryContext, TelemetryEnvelope};
//! use std::time::Duration;
//!
//! let gateway = start(GatewayConfig::load(None)?)?;
//! let event = TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t1").app("a1"))
//!     .with_run_id("run-1")
//!     .with_payload(serde_json::json!({"status": "succeeded", "duration_ms": 1200, "total_tokens": 42}));
//! gateway.emit(event)?;
//! let report = gateway.shutdown_blocking(Duration::from_secs(5));
//! assert_eq!(report.stats.emitted, report.stats.delivered + report.stats.dropped_total());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - [`contracts`]: the typed messages (case, context, correlation, envelope) and validation.
//! - [`config`]: figment configuration, one struct per TOML section, defaults as constants.
//! - `routing` (private): the routing table and its decisions.
//! - [`correlation`]: trace and span ids derived from run and event ids.
//! - `runtime` (private; its types are re-exported here): [`start`], [`GatewayHandle`] and
//!   `emit`, shutdown and its [`ShutdownReport`].
//! - `actors` (private): `GatewayActor`, `TraceBatcherActor`, `MetricHandlerActor`, `DedupActor`,
//!   `RehydratorActor`.
//! - [`transport`]: the seam between the gateway and the handler pool.
//! - [`payload_store`]: offload and read-back of large payloads, with ref validation.
//! - `spool` (private): the disk spool, a durable bounded queue of encoded export requests.
//! - [`export`]: OTLP and JSON lines exporters, trace sinks, the case mapping.
//! - [`redaction`]: the `Redactor`: deny-listed keys and secret-looking values never leave the
//!   process.
//! - [`diagnostics`]: reason codes and the ledger of counters.
//! - [`logging`]: the gateway's own log lines: `sanitize`, the warning rate limiter, `init`.
//! - `slo` (feature `analytics`): service-level indicators from the SQLite sink's data, checked against
//!   `[slo.<case>]` objectives.
//! - [`tracing_bridge`]: a `tracing_subscriber::Layer` turning spans and events with a
//!   `telemetry.case` field into gateway events.
//! - [`integration_guide`]: docs/integration.md (hosts, tracing bridge, tenant sinks), whose
//!   examples are compiled with the crate.
//! - `testing` (feature `testing`): an in-test OTLP receiver and a `redis-server` guard.
//!
//! # Features
//! The default build is lean: no C code, no Redis client, no Parquet. `redis` adds the Redis
//! dedup backend and the Redis Streams transport (`transport::redis_streams`,
//! `WorkerHandle`); `analytics` adds the SQLite sink (`export::sqlite`), `slo` and Parquet
//! export; `cli` builds the `telemetry-gateway` binary. A configuration that names a part whose
//! feature is off fails at start, naming the key and the feature.

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

// The actor shape, the routing table and the composition root are how the
// gateway works, not what a host calls: private. `testing::internals` (feature `testing`,
// hidden from the docs) re-exports the few parts property tests and benchmarks drive directly.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod actors;
pub mod config;
pub mod contracts;
pub mod correlation;
pub mod diagnostics;
pub mod export;
pub mod logging;
pub mod payload_store;
pub mod redaction;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod routing;
mod runtime;
#[cfg(feature = "analytics")]
pub mod slo;
// The disk spool (ADR 0004): the enterprise destination's durable queue under
// `[spool] kind = "disk"`; tests reach it through `testing::internals`.
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
mod spool;
pub mod tracing_bridge;

/// docs/integration.md: actix-web, axum, plain tokio, the tracing bridge, per-tenant sinks at
/// runtime, shutdown in each host. Included here so that its examples compile with the crate.
#[doc = include_str!("../docs/integration.md")]
pub mod integration_guide {}
pub mod transport;

#[cfg(feature = "testing")]
pub mod testing;

pub use actors::metric_handler::CaseHandler;
/// What a [`CaseHandler`] returns (attributes for the event's log record), at the version the
/// gateway uses, so a host needs no second copy of `opentelemetry`.
pub use opentelemetry::KeyValue;
/// Event ids, at the version the gateway uses.
pub use uuid::Uuid;

/// The hash map of the hot paths: foldhash, seeded per process (see `Cargo.toml`).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub use config::GatewayConfig;
pub use contracts::{
    idempotency_event_id, Correlation, EnvelopeError, JsonObject, Payload, PayloadFallback,
    SignalType, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};
pub use diagnostics::{ReasonCode, StatsSnapshot};
pub use export::registry::{SinkFactory, SinkInfo, SinkRegistryError};
pub use export::sink::{DiscardSink, SinkError, TraceSink};
#[cfg(feature = "testing")]
pub use runtime::IntakeFreeze;
#[cfg(feature = "redis")]
pub use runtime::WorkerHandle;
pub use runtime::{start, EmitError, GatewayBuilder, GatewayHandle, ShutdownReport, StartError};
