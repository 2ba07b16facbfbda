//! The worker-only runtime of the Redis Streams transport (cargo feature `redis`):
//! [`GatewayBuilder::start_worker`] and the [`WorkerHandle`] whose drain stops reading, lets the
//! entries in hand settle, commits them (export, then `XACK`) and shuts the gateway down.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{
    run_on_thread, GatewayBuilder, GatewayHandle, ShutdownReport, StartError, SETTLE_POLL,
};
use crate::config::{ConfigError, TransportKind};
use crate::diagnostics::probes::DiagnosticsSnapshot;
use crate::diagnostics::recorder::Explanation;
use crate::diagnostics::StatsSnapshot;
use crate::transport::worker::{Committer, WorkerLedger};

impl GatewayBuilder {
    /// Starts a worker-only runtime (`transport.kind = "redis_streams"`): `metric_pool.pool_size`
    /// consumers of the stream's group, each with its handler, dedup and rehydrator, and the
    /// export pipeline. It has no intake of its own. See docs/deployment.md.
    pub fn start_worker(self) -> Result<WorkerHandle, StartError> {
        let invalid = |key: &str, problem: &str| {
            StartError::Config(ConfigError::Invalid {
                key: key.into(),
                problem: problem.into(),
            })
        };
        if self.config.transport.kind != TransportKind::RedisStreams {
            return Err(invalid(
                "transport.kind",
                "a worker needs transport.kind = \"redis_streams\"",
            ));
        }
        if self.transport.is_some() {
            return Err(invalid(
                "metric_transport",
                "a worker reads the configured stream; a custom transport cannot be used",
            ));
        }
        let deadline = Duration::from_millis(self.config.shutdown.deadline_ms);
        let (gateway, parts) = self.start_inner(true)?;
        let Some((stop, ledger, committer)) = parts else {
            return Err(StartError::Actors("the worker parts were not built".into()));
        };
        Ok(WorkerHandle {
            gateway,
            stop,
            ledger,
            committer: Mutex::new(Some(committer)),
            default_deadline: deadline,
        })
    }
}

/// The SDK's own metric export interval in a worker: in effect never, since the worker's
/// commits export its metrics (`transport::worker`).
pub(super) const WORKER_SDK_METRIC_INTERVAL_MS: u64 = 24 * 60 * 60 * 1000;

/// What `start_worker` adds to a started runtime: the stop flag of its consumers, its ledger
/// and its committer.
pub(super) type WorkerParts = (Arc<AtomicBool>, Arc<WorkerLedger>, Committer);

/// A worker process's handle (`GatewayBuilder::start_worker`): its consumers read the stream
/// until [`shutdown`](Self::shutdown). It has no `emit()`; its ledger counts entries read as
/// `emitted` (ADR 0003: `read == delivered + sum(dropped) + in flight`).
pub struct WorkerHandle {
    gateway: GatewayHandle,
    stop: Arc<AtomicBool>,
    ledger: Arc<WorkerLedger>,
    committer: Mutex<Option<Committer>>,
    default_deadline: Duration,
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("stopping", &self.stop.load(Ordering::Relaxed))
            .field("entries_in_hand", &self.entries_in_hand())
            .finish()
    }
}

impl WorkerHandle {
    /// The worker's ledger: `emitted` counts entries read.
    pub fn stats(&self) -> StatsSnapshot {
        self.gateway.stats()
    }

    /// See [`GatewayHandle::diagnostics`].
    pub fn diagnostics(&self) -> DiagnosticsSnapshot {
        self.gateway.diagnostics()
    }

    /// See [`GatewayHandle::diagnostics_addr`].
    pub fn diagnostics_addr(&self) -> Option<std::net::SocketAddr> {
        self.gateway.diagnostics_addr()
    }

    /// See [`GatewayHandle::explain`]: the journeys of events this worker read.
    pub fn explain(&self, id: &str) -> Explanation {
        self.gateway.explain(id)
    }

    /// Stream entries read and not yet acknowledged.
    pub fn entries_in_hand(&self) -> usize {
        self.ledger.in_hand_len()
    }

    /// Drains within `deadline`: stops reading, finishes the entries in hand, exports and
    /// acknowledges them, then shuts the runtime down and reports. Safe to await from any
    /// runtime. Entries not finished by the deadline stay pending in the group, and another
    /// worker takes them after `transport.claim_idle_ms`.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let (gw, stop, ledger) = (self.gateway.clone(), self.stop.clone(), self.ledger.clone());
        let committer = self.committer.lock().take();
        run_on_thread("telemetry-gateway-drain", move || {
            drain(&gw, &stop, &ledger, committer, deadline)
        })
        .await
        .unwrap_or_else(|| self.gateway.final_or_snapshot())
    }

    /// [`shutdown`](Self::shutdown) for callers without an async runtime; blocks this thread.
    pub fn shutdown_blocking(&self, deadline: Duration) -> ShutdownReport {
        let committer = self.committer.lock().take();
        drain(&self.gateway, &self.stop, &self.ledger, committer, deadline)
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(c) = self.committer.lock().take() {
            let _ = drain(
                &self.gateway,
                &self.stop,
                &self.ledger,
                Some(c),
                self.default_deadline,
            );
        }
    }
}

/// A worker's drain: see [`WorkerHandle::shutdown`].
fn drain(
    gw: &GatewayHandle,
    stop: &AtomicBool,
    ledger: &WorkerLedger,
    committer: Option<Committer>,
    deadline: Duration,
) -> ShutdownReport {
    let end = Instant::now() + deadline;
    stop.store(true, Ordering::SeqCst);
    // A consumer leaves once its handler asks for more with nothing in hand: every entry it
    // read has then reached its outcome (or panicked, and stays pending for redelivery).
    while ledger.open_sources.load(Ordering::SeqCst) > 0 && Instant::now() < end {
        std::thread::sleep(SETTLE_POLL);
    }
    if let Some(mut c) = committer {
        c.finish(end.saturating_duration_since(Instant::now()));
    }
    gw.shutdown_blocking(end.saturating_duration_since(Instant::now()))
}
