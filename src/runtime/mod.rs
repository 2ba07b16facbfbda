//! Lifecycle: [`start`] the gateway, [`GatewayHandle::emit`] into it, [`GatewayHandle::shutdown`]
//! it with a report.
//!
//! The gateway runs on its own threads whatever the host runs: one actix system thread for the
//! gateway actor and the trace batcher, one actix arbiter thread per metric handler (with its
//! dedup and rehydrator actors), and a one-worker tokio runtime for export I/O. So the handle
//! works the same from an actix, tokio, axum or plain-threads host.
//!
//! `emit()` does cheap validation and one `try_send` on a bounded channel: it never waits, never
//! panics, and returns why when it did not take the event. Every outcome is counted (see
//! [`crate::diagnostics`]).
//!
//! Shutdown, bounded by the caller's deadline: close intake; wait for the gateway queue to empty;
//! drain the batcher and wait for every trace and metric/log event to settle (exported or
//! dropped); flush and shut down the metric provider; stop the actors and the export runtime.
//! Whatever is still unsettled at the deadline is counted as dropped under `shutdown`, so the
//! report always satisfies `emitted == delivered + sum(dropped)`.
//!
//! # Layout
//! - `builder.rs`: [`GatewayBuilder`] and its options.
//! - `start.rs`: the composition root, one function per documented step.
//! - `handle.rs`: [`GatewayHandle`] and `emit()`.
//! - `shutdown.rs`: the shutdown sequence, one function per documented step, and
//!   [`ShutdownReport`].
//! - `errors.rs`: [`StartError`], [`EmitError`].
//! - `worker.rs` (feature `redis`): the Redis Streams worker's handle.

use crate::actors::dedup::{DedupActor, DedupBuildError, MemoryDedup};
use crate::actors::gateway::GatewayActor;
use crate::actors::metric_handler::{CaseHandler, HandlerParts, MetricHandlerActor};
use crate::actors::rehydrator::RehydratorActor;
use crate::actors::trace_batcher::{Drain, TraceBatcherActor, TraceShards};
use crate::actors::{Backpressure, GatewayItem, Shared, TraceItem};
use crate::config::SinkSection;
#[cfg(feature = "redis")]
use crate::config::TransportKind;
use crate::config::{ConfigError, GatewayConfig};
use crate::contracts::{EnvelopeError, TelemetryEnvelope};
use crate::diagnostics::ledger::Holder;
use crate::diagnostics::probes::{DiagnosticsSnapshot, Probes, QueueReader};
use crate::diagnostics::recorder::{EventRef, Explanation};
use crate::diagnostics::striped::Striped;
use crate::diagnostics::{Counters, ReasonCode, StatsSnapshot};
use crate::export::registry::{SinkFactory, SinkInfo, SinkRegistryError};
use crate::export::sink::TraceSink;
use crate::export::ExportHandles;
use crate::export::{ExportBuildError, ExportPipeline};
use crate::payload_store::{PayloadStore, StoreBuildError};
use crate::routing::RoutingTable;
#[cfg(feature = "redis")]
use crate::transport::redis_streams::{RedisStreamProducer, RedisStreamSource, StreamSettings};
use crate::transport::worker::WorkerLedger;
#[cfg(feature = "redis")]
use crate::transport::worker::{CommitParts, Committer, WorkerLink};
use crate::transport::{EnvelopeSource, InProcessTransport, MetricTransport};
use actix::prelude::*;
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;
#[cfg(feature = "redis")]
pub use worker::WorkerHandle;
#[cfg(feature = "redis")]
use worker::{WorkerParts, WORKER_SDK_METRIC_INTERVAL_MS};

mod builder;
mod errors;
mod handle;
mod shutdown;
mod start;

pub use builder::GatewayBuilder;
use builder::{MaybeTransport, TransportParts};
pub use errors::{EmitError, StartError};
pub use handle::GatewayHandle;
use handle::Inner;
#[cfg(feature = "testing")]
pub use handle::IntakeFreeze;
pub use shutdown::ShutdownReport;
#[cfg(feature = "redis")]
use shutdown::{run_on_thread, SETTLE_POLL};
use start::{Actors, Lifecycle};

#[cfg(feature = "redis")]
mod worker;

/// Without the `redis` feature there is no worker runtime, so nothing to add to a gateway.
#[cfg(not(feature = "redis"))]
type WorkerParts = std::convert::Infallible;

/// How long `start()` waits for the actor threads to come up.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts the gateway from configuration alone.
pub fn start(config: GatewayConfig) -> Result<GatewayHandle, StartError> {
    GatewayBuilder::new(config).start()
}
