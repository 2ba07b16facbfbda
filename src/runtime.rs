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

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::prelude::*;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::actors::dedup::{DedupActor, DedupBuildError, MemoryDedup};
use crate::actors::gateway::GatewayActor;
use crate::actors::metric_handler::{CaseHandler, MetricHandlerActor};
use crate::actors::rehydrator::RehydratorActor;
use crate::actors::trace_batcher::{Drain, TraceBatcherActor};
use crate::actors::{GatewayItem, Shared, TraceItem};
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

#[cfg(feature = "redis")]
mod worker;
#[cfg(feature = "redis")]
pub use worker::WorkerHandle;
#[cfg(feature = "redis")]
use worker::{WorkerParts, WORKER_SDK_METRIC_INTERVAL_MS};
/// Without the `redis` feature there is no worker runtime, so nothing to add to a gateway.
#[cfg(not(feature = "redis"))]
type WorkerParts = std::convert::Infallible;

/// How long `start()` waits for the actor threads to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How often shutdown re-checks the stage gauges.
const SETTLE_POLL: Duration = Duration::from_millis(2);

/// How often shutdown asks the log batcher to export early while events settle.
const LOG_NUDGE_INTERVAL: Duration = Duration::from_millis(20);

/// Why the gateway did not start.
///
/// Its `Debug` is its message, so `main() -> Result<(), Box<dyn Error>>` prints the sentence.
#[derive(thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The payload store could not be built.
    #[error(transparent)]
    PayloadStore(#[from] StoreBuildError),
    /// The dedup store could not be built.
    #[error(transparent)]
    Dedup(#[from] DedupBuildError),
    /// An exporter could not be built.
    #[error(transparent)]
    Export(#[from] ExportBuildError),
    /// The actor threads did not start.
    #[error("the actor system did not start: {0}")]
    Actors(String),
}

impl std::fmt::Debug for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Why `emit()` did not take an event. Each is also counted as a drop with its reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The envelope is invalid (the error names the field).
    #[error(transparent)]
    Invalid(#[from] EnvelopeError),
    /// The gateway queue is full; the event was dropped (`queue_full`).
    #[error("gateway queue is full; event dropped")]
    QueueFull,
    /// The gateway is shut down; the event was dropped (`shutdown`).
    #[error("gateway is shut down; event dropped")]
    ShutDown,
}

impl EmitError {
    /// The reason code this refusal is counted under.
    pub fn reason(&self) -> ReasonCode {
        match self {
            EmitError::Invalid(EnvelopeError::UnknownCase { .. }) => ReasonCode::UnknownCase,
            EmitError::Invalid(_) => ReasonCode::InvalidEnvelope,
            EmitError::QueueFull => ReasonCode::QueueFull,
            EmitError::ShutDown => ReasonCode::Shutdown,
        }
    }
}

/// What shutdown delivered and what it did not.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// The final ledger: `emitted == delivered + sum(dropped)`, nothing in flight.
    pub stats: StatsSnapshot,
    /// Events still unsettled at the deadline, now counted as dropped under `shutdown`.
    pub unsettled_at_deadline: u64,
    /// Whether the deadline passed before everything settled.
    pub deadline_exceeded: bool,
    /// How long shutdown took.
    pub elapsed_ms: u64,
    /// Actors that had died before shutdown began (a panic inside the gateway ends an actor's
    /// task). The ledger still adds up, but such a run is not clean: see
    /// [`ShutdownReport::is_clean`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors_lost: Vec<String>,
}

impl ShutdownReport {
    /// Whether the run ended as it should: every actor alive until shutdown and everything
    /// settled within the deadline. A balanced ledger alone does not say that.
    pub fn is_clean(&self) -> bool {
        self.actors_lost.is_empty() && !self.deadline_exceeded
    }

    /// Dropped events by reason.
    pub fn dropped(&self) -> &BTreeMap<String, u64> {
        &self.stats.dropped
    }
}

/// Builds a gateway with host-supplied parts; [`start`] is the shortcut for config alone.
#[derive(Debug)]
pub struct GatewayBuilder {
    config: GatewayConfig,
    case_handlers: HashMap<String, Arc<dyn CaseHandler>>,
    payload_store: Option<PayloadStore>,
    sinks: Vec<(String, Option<String>, Arc<dyn TraceSink>)>,
    transport: Option<TransportParts>,
}

/// A metric transport and the sources its handlers read from.
type TransportParts = (Arc<dyn MetricTransport>, Vec<Box<dyn EnvelopeSource>>);

/// [`TransportParts`] before the export runtime exists: no transport yet means the Redis
/// stream producer, which runs on that runtime.
type MaybeTransport = (
    Option<Arc<dyn MetricTransport>>,
    Vec<Box<dyn EnvelopeSource>>,
);

impl GatewayBuilder {
    /// A builder over `config`.
    pub fn new(config: GatewayConfig) -> Self {
        GatewayBuilder {
            config,
            case_handlers: HashMap::new(),
            payload_store: None,
            sinks: Vec::new(),
            transport: None,
        }
    }

    /// Replaces the in-process queue between the gateway and the handler pool: one handler is
    /// started per source (`metric_pool.pool_size` is then ignored). With the memory dedup
    /// backend the transport must deliver a given `(tenant_id, event_id)` to the same source
    /// every time, as the built-in one does; otherwise use the Redis backend.
    pub fn metric_transport(
        mut self,
        transport: Arc<dyn MetricTransport>,
        sources: Vec<Box<dyn EnvelopeSource>>,
    ) -> Self {
        self.transport = Some((transport, sources));
        self
    }

    /// Runs `handler` for every metric/log event of `case` (built-in or configured).
    pub fn case_handler(mut self, case: &str, handler: Arc<dyn CaseHandler>) -> Self {
        self.case_handlers.insert(case.to_owned(), handler);
        self
    }

    /// Uses this payload store instead of the one `[payloads]` describes.
    pub fn payload_store(mut self, store: PayloadStore) -> Self {
        self.payload_store = Some(store);
        self
    }

    /// Adds a community trace sink for `tenant_id` (and only `app_id`, when given).
    pub fn trace_sink(
        mut self,
        tenant_id: &str,
        app_id: Option<&str>,
        sink: Arc<dyn TraceSink>,
    ) -> Self {
        self.sinks
            .push((tenant_id.to_owned(), app_id.map(str::to_owned), sink));
        self
    }

    /// Starts the gateway. With `transport.kind = "redis_streams"` its metric/log events go to
    /// the stream (this process starts no metric handlers): run workers to handle them.
    pub fn start(self) -> Result<GatewayHandle, StartError> {
        self.start_inner(false).map(|(gw, _)| gw)
    }

    fn start_inner(self, worker: bool) -> Result<(GatewayHandle, Option<WorkerParts>), StartError> {
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut cfg = self.config;
        cfg.validate()?;
        // A worker's metrics are exported by its commits (and at least every
        // otlp.metric_interval_ms by them when idle), never by the SDK's own timer: see
        // `transport::worker`.
        #[cfg(feature = "redis")]
        let metric_interval = Duration::from_millis(cfg.otlp.metric_interval_ms);
        #[cfg(feature = "redis")]
        if worker {
            cfg.otlp.metric_interval_ms = WORKER_SDK_METRIC_INTERVAL_MS;
        }
        let table = RoutingTable::new(&cfg.cases);
        check_case_handlers(&table, self.case_handlers.keys())?;
        let counters = Arc::new(Counters::default());
        counters
            .log
            .set_warn_summary_interval(Duration::from_secs(cfg.logging.warn_summary_interval_secs));
        counters.init_cases(table.rows().iter().map(|(name, _)| name.as_str()));
        counters.recorder().configure(
            cfg.diagnostics.recorder_events,
            cfg.diagnostics.recorder_steps_per_event,
        );
        let store = match self.payload_store {
            Some(s) => s,
            None => PayloadStore::from_config(&cfg.payloads)?,
        }
        .with_log(counters.log.clone());
        #[cfg(feature = "redis")]
        let stream_client = || {
            redis::Client::open(cfg.transport.redis_url.as_str()).map_err(|e| {
                StartError::Config(ConfigError::Invalid {
                    key: "transport.redis_url".into(),
                    problem: crate::config::hide_url_in(&e.to_string(), &cfg.transport.redis_url),
                })
            })
        };
        let ledger = Arc::new(WorkerLedger::default());
        #[cfg(feature = "redis")]
        let stop = Arc::new(AtomicBool::new(false));
        // `None`: the stream producer, built on the export runtime below.
        let (transport, sources): MaybeTransport = match self.transport {
            Some((t, s)) if !s.is_empty() => (Some(t), s),
            Some(_) => {
                return Err(StartError::Config(ConfigError::Invalid {
                    key: "metric_transport".into(),
                    problem: "a custom transport needs at least one source".into(),
                }))
            }
            #[cfg(feature = "redis")]
            None if worker => {
                let client = stream_client()?;
                let name = cfg.transport.consumer_name();
                let link = WorkerLink {
                    counters: counters.clone(),
                    ledger: ledger.clone(),
                };
                let admit = worker_admission(table.clone());
                let sources = (0..cfg.metric_pool.pool_size)
                    .map(|i| {
                        let settings =
                            StreamSettings::from_config(&cfg.transport, format!("{name}-{i}"));
                        let s = RedisStreamSource::new(client.clone(), settings, stop.clone())
                            .with_admission(admit.clone())
                            .with_worker(link.clone());
                        Box::new(s) as Box<dyn EnvelopeSource>
                    })
                    .collect();
                // A worker has no intake: its gateway actor's transport is closed.
                let (t, _closed) = InProcessTransport::new(1, 1);
                (Some(Arc::new(t)), sources)
            }
            #[cfg(feature = "redis")]
            None if cfg.transport.kind == TransportKind::RedisStreams => (None, Vec::new()),
            None => {
                let (t, s) = InProcessTransport::new(
                    cfg.metric_pool.pool_size,
                    cfg.metric_pool.queue_capacity,
                );
                let s = s
                    .into_iter()
                    .map(|s| Box::new(s) as Box<dyn EnvelopeSource>)
                    .collect();
                (Some(Arc::new(t)), s)
            }
        };
        // Bind the diagnostics endpoint before anything starts, so a bad or busy address fails
        // start with the key named.
        let diag_listener = match &cfg.diagnostics.listen {
            Some(addr) => {
                let bind_err = |e: std::io::Error| {
                    StartError::Config(ConfigError::Invalid {
                        key: "diagnostics.listen".into(),
                        problem: format!("cannot listen on {addr}: {e}"),
                    })
                };
                let l = std::net::TcpListener::bind(addr.as_str()).map_err(bind_err)?;
                l.set_nonblocking(true).map_err(bind_err)?;
                Some(l)
            }
            None => None,
        };
        // Build every dedup actor's state up front so a bad URL fails start, not a thread.
        let pool_size = sources.len();
        let dedups = (0..pool_size)
            .map(|_| DedupActor::new(&cfg.dedup).map(|d| d.with_counters(counters.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let export = ExportPipeline::build(&cfg, &table, counters.clone(), self.sinks)?;
        let transport: Arc<dyn MetricTransport> = match transport {
            Some(t) => t,
            #[cfg(not(feature = "redis"))]
            None => return Err(StartError::Actors("no metric transport was built".into())),
            #[cfg(feature = "redis")]
            None => Arc::new(RedisStreamProducer::spawn_counted(
                stream_client()?,
                StreamSettings::from_config(&cfg.transport, String::new()),
                cfg.transport.buffer_capacity,
                export.rt.handle(),
                counters.clone(),
            )),
        };
        let shared = Arc::new(Shared {
            counters: counters.clone(),
            table,
            gateway_enabled: AtomicBool::new(cfg.gateway.enabled),
            enterprise_enabled: AtomicBool::new(cfg.gateway.enterprise_enabled),
            closed: AtomicBool::new(false),
            worker: worker.then(|| ledger.clone()),
        });

        let (gw_tx, gw_rx) = mpsc::channel::<GatewayItem>(cfg.gateway.queue_capacity);
        let (trace_tx, trace_rx) = mpsc::channel::<TraceItem>(cfg.trace_batcher.queue_capacity);
        let live = Arc::new(AtomicBool::new(true));
        let mut queues: Vec<(String, QueueReader)> = vec![
            ("gateway".into(), weak_reader(&gw_tx)),
            ("trace".into(), weak_reader(&trace_tx)),
            ("metric_log".into(), {
                let t = transport.clone();
                Box::new(move || Some((t.queued(), t.capacity())))
            }),
            ("logs".into(), export.handles.log_batcher.depth_reader()),
            (
                format!("sink:{}", export.handles.main_sink.name),
                export.handles.main_sink.depth_reader(),
            ),
        ];
        // Tenant sinks open and close at runtime: one queue entry sums the open ones, so the
        // number of series stays fixed.
        let registry = export.handles.sinks.clone();
        queues.push((
            "sinks:tenants".into(),
            Box::new(move || Some(registry.depth())),
        ));

        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handles = export.handles.clone();
        let sh = shared.clone();
        let case_handlers = Arc::new(self.case_handlers);
        let cfg2 = cfg.clone();
        let transport2 = transport.clone();
        let live_flag = live.clone();
        let thread = std::thread::Builder::new()
            .name("telemetry-gateway-actors".into())
            .spawn(move || {
                // Liveness: false as soon as this thread ends, however it ends.
                struct Alive(Arc<AtomicBool>);
                impl Drop for Alive {
                    fn drop(&mut self) {
                        self.0.store(false, Ordering::SeqCst);
                    }
                }
                let _alive = Alive(live_flag);
                let sys = actix::System::new();
                sys.block_on(async move {
                    let started = start_actors(
                        &cfg2,
                        sh,
                        handles,
                        store,
                        dedups,
                        case_handlers,
                        gw_rx,
                        trace_tx,
                        trace_rx,
                        transport2,
                        sources,
                    );
                    let _ = ready_tx.send((actix::System::current(), started));
                });
                let _ = sys.run();
            })
            .map_err(|e| StartError::Actors(e.to_string()))?;
        let (system, actors) = ready_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|e| StartError::Actors(e.to_string()))?;

        let handler_addrs = actors.handlers.clone();
        let sh = shared.clone();
        let probes = Arc::new(Probes {
            counters: counters.clone(),
            queues,
            closed: Arc::new(move || sh.closed.load(Ordering::SeqCst)),
            live,
            handlers_up: Box::new(move || {
                let up = handler_addrs.iter().filter(|a| a.connected()).count();
                (up, handler_addrs.len())
            }),
            unready_after: Duration::from_secs(cfg.diagnostics.unready_after_failing_secs),
        });
        if cfg.diagnostics.export_self_metrics {
            crate::diagnostics::otel::register(&export.meter_provider, probes.clone());
        }
        let mut diag_addr = None;
        let mut diag_stop = None;
        if let Some(l) = diag_listener {
            diag_addr = l.local_addr().ok();
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
            let _entered = export.rt.enter();
            match tokio::net::TcpListener::from_std(l) {
                Ok(listener) => {
                    export.rt.spawn(crate::diagnostics::http::serve(
                        listener,
                        probes.clone(),
                        stop_rx,
                    ));
                    diag_stop = Some(stop_tx);
                }
                Err(e) => {
                    return Err(StartError::Config(ConfigError::Invalid {
                        key: "diagnostics.listen".into(),
                        problem: e.to_string(),
                    }))
                }
            }
        }

        #[cfg(not(feature = "redis"))]
        let worker_parts = None;
        #[cfg(feature = "redis")]
        let worker_parts = if worker {
            let committer = Committer::spawn(
                ledger.clone(),
                stream_client()?,
                StreamSettings::from_config(&cfg.transport, String::new()),
                CommitParts {
                    meter_provider: export.meter_provider.clone(),
                    log_batcher: export.handles.log_batcher.clone(),
                    rt: export.rt.handle().clone(),
                    metric_interval,
                    counters: counters.clone(),
                },
                Duration::from_millis(cfg.transport.commit_interval_ms),
                crate::transport::worker::log_flush_bound(Duration::from_millis(
                    cfg.transport.claim_idle_ms,
                )),
            )
            .map_err(|e| StartError::Actors(e.to_string()))?;
            Some((stop, ledger, committer))
        } else {
            None
        };
        let gw = GatewayHandle {
            inner: Arc::new(Inner {
                tx: gw_tx,
                shared,
                transport,
                active_emits: Striped::default(),
                lifecycle: Mutex::new(Some(Lifecycle {
                    system,
                    thread,
                    actors,
                    export,
                    diag_stop,
                })),
                probes,
                diag_addr,
                default_deadline: Duration::from_millis(cfg.shutdown.deadline_ms),
                final_report: Mutex::new(None),
            }),
        };
        Ok((gw, worker_parts))
    }
}

/// Runs `work` on a new thread called `name` (where blocking is allowed, whatever runtime
/// awaits this) and awaits its result; runs it here when no thread can be started. `None` only
/// when the thread died.
async fn run_on_thread<T, F>(name: &str, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Some(work)));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let work = theirs.lock().take();
            if let Some(work) = work {
                let _ = tx.send(work());
            }
        });
    match spawned {
        Ok(_) => rx.await.ok(),
        Err(_) => {
            let work = slot.lock().take();
            work.map(|w| w())
        }
    }
}

/// What a worker takes from the stream: what `emit()` would take and the producer would put
/// there. Anyone who can write to the stream could otherwise pick a case (and so metric label
/// values) the table does not know, or turn a trace case into log records (issue 14).
#[cfg(feature = "redis")]
fn worker_admission(table: RoutingTable) -> crate::transport::redis_streams::Admission {
    crate::transport::redis_streams::Admission(Arc::new(move |env: &TelemetryEnvelope| {
        env.validate_cheap()
            .map_err(|e| format!("invalid_envelope: {e}"))?;
        match table.route(&env.case) {
            None => Err(format!(
                "unknown_case: {:?} is neither a built-in case nor declared in this worker's \
                 [cases]",
                env.case.as_str()
            )),
            Some(r) if r.signal != crate::contracts::SignalType::MetricLog => Err(format!(
                "trace case {:?}: producers keep trace cases in process, never on the stream",
                env.case.as_str()
            )),
            Some(_) => Ok(()),
        }
    }))
}

/// A handler for a case the table does not know, or for a trace case, would never run: refuse
/// it at start, naming the case (a typo otherwise means a handler silently idle).
fn check_case_handlers<'a>(
    table: &RoutingTable,
    names: impl Iterator<Item = &'a String>,
) -> Result<(), StartError> {
    let mut names: Vec<&String> = names.collect();
    names.sort();
    for name in names {
        let problem = match table.route(&crate::contracts::TelemetryCase::from_name(name)) {
            None => format!(
                "{name:?} is neither a built-in case nor declared under [cases.{name}]; its \
                 handler would never run"
            ),
            Some(r) if r.signal != crate::contracts::SignalType::MetricLog => format!(
                "{name:?} is a trace case; handlers run only for metric/log cases, so this one \
                 would never run"
            ),
            Some(_) => continue,
        };
        return Err(StartError::Config(ConfigError::Invalid {
            key: format!("case_handler({name})"),
            problem,
        }));
    }
    Ok(())
}

/// Starts the gateway from configuration alone.
pub fn start(config: GatewayConfig) -> Result<GatewayHandle, StartError> {
    GatewayBuilder::new(config).start()
}

/// Addresses the lifecycle needs.
struct Actors {
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    gateway: Addr<GatewayActor>,
    batcher: Addr<TraceBatcherActor>,
    /// Held for the gateway's lifetime: actix restarts a supervised actor only while its
    /// mailbox is connected, i.e. while some `Addr` to it is alive.
    handlers: Vec<Addr<MetricHandlerActor>>,
    arbiters: Vec<Arbiter>,
    /// Every actor by name, with its ping: an actor that does not answer at shutdown died or
    /// hangs (a panic inside it), and the report says so.
    liveness: Vec<(String, AliveFn)>,
}

/// Whether one actor answers a [`Ping`](crate::actors::Ping) within the wait it is given.
type AliveFn = Box<dyn Fn(Duration) -> futures::future::BoxFuture<'static, bool> + Send>;

fn alive<A>(addr: &Addr<A>) -> AliveFn
where
    A: Actor + Handler<crate::actors::Ping>,
    A::Context: actix::dev::ToEnvelope<A, crate::actors::Ping>,
{
    let addr = addr.clone();
    Box::new(move |wait| {
        let ping = addr.send(crate::actors::Ping);
        Box::pin(async move { matches!(tokio::time::timeout(wait, ping).await, Ok(Ok(()))) })
    })
}

/// How long shutdown waits for every actor's answer to a ping (at most a quarter of its
/// deadline): an actor that is running answers at once.
const LIVENESS_WAIT: Duration = Duration::from_secs(1);

/// Below this wait the pings are skipped: a live actor may not answer that fast.
const MIN_LIVENESS_WAIT: Duration = Duration::from_millis(20);

struct Lifecycle {
    system: actix::System,
    thread: JoinHandle<()>,
    actors: Actors,
    export: ExportPipeline,
    diag_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A queue reader that does not keep the queue open.
fn weak_reader<T: Send + 'static>(tx: &mpsc::Sender<T>) -> QueueReader {
    let weak = tx.downgrade();
    Box::new(move || {
        weak.upgrade()
            .map(|t| (t.max_capacity() - t.capacity(), t.max_capacity()))
    })
}

#[allow(clippy::too_many_arguments)]
fn start_actors(
    cfg: &GatewayConfig,
    shared: Arc<Shared>,
    export: Arc<ExportHandles>,
    store: PayloadStore,
    dedups: Vec<DedupActor>,
    case_handlers: Arc<HashMap<String, Arc<dyn CaseHandler>>>,
    gw_rx: mpsc::Receiver<GatewayItem>,
    trace_tx: mpsc::Sender<TraceItem>,
    trace_rx: mpsc::Receiver<TraceItem>,
    transport: Arc<dyn MetricTransport>,
    sources: Vec<Box<dyn EnvelopeSource>>,
) -> Actors {
    let batcher_dedup = MemoryDedup::new(
        cfg.dedup.memory_max_entries,
        Duration::from_secs(cfg.dedup.ttl_secs),
    );
    let (sh, ex) = (shared.clone(), export.clone());
    let max_batch = cfg.trace_batcher.max_batch_size;
    let interval = Duration::from_millis(cfg.trace_batcher.flush_interval_ms);
    let batcher = TraceBatcherActor::create(move |ctx| {
        ctx.add_stream(tokio_stream::wrappers::ReceiverStream::new(trace_rx));
        TraceBatcherActor::new(sh, ex, max_batch, interval, batcher_dedup)
    });

    let mut arbiters = Vec::new();
    let mut handlers = Vec::new();
    let mut liveness = vec![("trace_batcher".to_owned(), alive(&batcher))];
    for (index, (source, dedup)) in sources.into_iter().zip(dedups).enumerate() {
        let arbiter = Arbiter::new();
        let h = arbiter.handle();
        let dedup_addr = DedupActor::start_in_arbiter(&h, move |_| dedup);
        let (st, c) = (store.clone(), shared.counters.clone());
        let rehydrator =
            RehydratorActor::start_in_arbiter(&h, move |_| RehydratorActor::new(st, c));
        liveness.push((format!("dedup[{index}]"), alive(&dedup_addr)));
        liveness.push((format!("rehydrator[{index}]"), alive(&rehydrator)));
        let (sh, ex, ch) = (shared.clone(), export.clone(), case_handlers.clone());
        let batch_size = cfg.metric_pool.batch_size;
        let handler = Supervisor::start_in_arbiter(&h, move |_| {
            MetricHandlerActor::new(
                index, source, batch_size, dedup_addr, rehydrator, sh, ex, ch,
            )
        });
        liveness.push((format!("metric_handler[{index}]"), alive(&handler)));
        handlers.push(handler);
        arbiters.push(arbiter);
    }

    let threshold = cfg.payloads.inline_threshold_bytes;
    let max_offloads = cfg.gateway.max_offloads_in_flight;
    let gateway = GatewayActor::create(move |ctx| {
        ctx.add_stream(tokio_stream::wrappers::ReceiverStream::new(gw_rx));
        // The gateway owns the only sender of the trace queue: when it stops, the batcher's
        // stream ends and the batcher flushes.
        GatewayActor::new(shared, trace_tx, transport, store, threshold, max_offloads)
    });
    liveness.push(("gateway".to_owned(), alive(&gateway)));
    Actors {
        gateway,
        batcher,
        handlers,
        arbiters,
        liveness,
    }
}

/// Keeps the gateway actor frozen while alive (see `freeze_intake_for_tests`).
#[cfg(feature = "testing")]
#[derive(Debug)]
pub struct IntakeFreeze {
    _release: std::sync::mpsc::Sender<()>,
}

/// The state behind every clone of the handle.
struct Inner {
    tx: mpsc::Sender<GatewayItem>,
    shared: Arc<Shared>,
    transport: Arc<dyn MetricTransport>,
    /// `emit()` calls in progress (striped: see `diagnostics::striped`).
    active_emits: Striped,
    lifecycle: Mutex<Option<Lifecycle>>,
    default_deadline: Duration,
    final_report: Mutex<Option<ShutdownReport>>,
    probes: Arc<Probes>,
    diag_addr: Option<std::net::SocketAddr>,
}

/// The host's handle: cheap to clone, `Send + Sync`, usable from any thread or runtime.
#[derive(Clone)]
pub struct GatewayHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("closed", &self.inner.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// Decrements the active-emit gauge on every exit path of `emit()`.
struct EmitGuard<'a>(&'a Striped);

impl Drop for EmitGuard<'_> {
    fn drop(&mut self) {
        self.0.add(-1, Ordering::SeqCst);
    }
}

impl GatewayHandle {
    /// Sends an event. Never waits and never panics: `Ok(event_id)` when the gateway took it,
    /// otherwise why not. Every refusal is counted as a drop with its reason code.
    pub fn emit(&self, env: TelemetryEnvelope) -> Result<Uuid, EmitError> {
        let inner = &*self.inner;
        let c = &inner.shared.counters;
        inner.active_emits.add(1, Ordering::SeqCst);
        let _guard = EmitGuard(&inner.active_emits);
        c.emitted.add(1, Ordering::Relaxed);
        // A refusal is always counted, and the caller gets the error at once. The recorder keeps
        // it too, unless refusals come in a flood (a full queue, emits during shutdown): then
        // recording each one would evict every useful journey and slow down the very caller
        // the gateway is shedding load from (see `FlightRecorder::admit_refusal`).
        let refuse = |env: &TelemetryEnvelope, e: EmitError| {
            let flood = matches!(e, EmitError::QueueFull | EmitError::ShutDown);
            let ev = EventRef::of_untrusted(env, &c.log);
            c.refuse(&ev, e.reason(), &e.to_string(), flood);
            Err(e)
        };
        if inner.shared.closed.load(Ordering::SeqCst) {
            return refuse(&env, EmitError::ShutDown);
        }
        if let Err(e) = env.validate_cheap() {
            return refuse(&env, EmitError::Invalid(e));
        }
        if inner.shared.table.route(&env.case).is_none() {
            let e = EmitError::Invalid(EnvelopeError::UnknownCase {
                case: env.case.as_str().to_owned(),
            });
            return refuse(&env, e);
        }
        let id = env.event_id;
        c.enter(Holder::Gateway);
        let item = GatewayItem {
            env,
            gateway_enabled: inner.shared.gateway_enabled.load(Ordering::SeqCst),
            enterprise_enabled: inner.shared.enterprise_enabled.load(Ordering::SeqCst),
        };
        match inner.tx.try_send(item) {
            Ok(()) => Ok(id),
            Err(e) => {
                c.leave(Holder::Gateway);
                match e {
                    mpsc::error::TrySendError::Full(item) => {
                        refuse(&item.env, EmitError::QueueFull)
                    }
                    mpsc::error::TrySendError::Closed(item) => {
                        refuse(&item.env, EmitError::ShutDown)
                    }
                }
            }
        }
    }

    /// This gateway's log hygiene: [`LogScope::sanitize`](crate::logging::LogScope::sanitize)
    /// makes a value safe to log the way the gateway's own lines are (its `[redaction]` rules
    /// and the credentials it was given), for a host logging an error the gateway returned.
    pub fn log_scope(&self) -> &crate::logging::LogScope {
        &self.inner.shared.counters.log
    }

    /// What happened to an event: the journey of `id` if it is an event id, and the journeys of
    /// every recorded event whose correlation id is `id`. Empty when the flight recorder holds
    /// nothing for it (never seen, or evicted: see `diagnostics.recorder_events`).
    pub fn explain(&self, id: &str) -> Explanation {
        self.inner.shared.counters.recorder().explain(id)
    }

    /// Everything the gateway knows about itself: the ledger, queue depths, exporters,
    /// latency histograms, the flight recorder's usage and readiness. The same numbers
    /// `/metrics` and the OTel self-metrics show.
    pub fn diagnostics(&self) -> DiagnosticsSnapshot {
        self.inner.probes.snapshot()
    }

    /// The address the diagnostics endpoint listens on (`diagnostics.listen`; useful with port 0).
    pub fn diagnostics_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.diag_addr
    }

    /// Test hook (feature `testing`): freezes the gateway actor (its consumer stops taking from
    /// the gateway queue) until the returned guard is dropped.
    #[cfg(feature = "testing")]
    pub fn freeze_intake_for_tests(&self) -> Option<IntakeFreeze> {
        let addr = self.inner.lifecycle.lock().as_ref()?.actors.gateway.clone();
        let (frozen_tx, frozen_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        addr.try_send(crate::actors::gateway::Freeze {
            frozen: frozen_tx,
            release: release_rx,
        })
        .ok()?;
        frozen_rx.recv_timeout(START_TIMEOUT).ok()?;
        Some(IntakeFreeze {
            _release: release_tx,
        })
    }

    /// Test hook (feature `testing`): makes the gateway actor panic, as a bug in it would.
    /// Returns whether the message was delivered.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn panic_an_actor_for_tests(&self) -> bool {
        let Some(addr) = self
            .inner
            .lifecycle
            .lock()
            .as_ref()
            .map(|lc| lc.actors.gateway.clone())
        else {
            return false;
        };
        addr.try_send(crate::actors::gateway::PanicForTests).is_ok()
    }

    /// A copy of the ledger.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.shared.counters.snapshot()
    }

    /// Turns the gateway on or off at runtime (`gateway.enabled`). Takes effect for the next
    /// `emit()`: every event is routed under the switches in force when it was emitted, even if
    /// they change before the gateway actor reaches it.
    pub fn set_gateway_enabled(&self, enabled: bool) {
        self.inner
            .shared
            .gateway_enabled
            .store(enabled, Ordering::SeqCst);
    }

    /// Turns the enterprise exporter on or off at runtime (`gateway.enterprise_enabled`).
    pub fn set_enterprise_enabled(&self, enabled: bool) {
        self.inner
            .shared
            .enterprise_enabled
            .store(enabled, Ordering::SeqCst);
    }

    /// Registers the trace sink of a tenant (or of one of its apps, `sink.app_id`), replacing the
    /// one registered for the same tenant and app: no restart. The sink is opened when the
    /// tenant's traces first need it, with its own bounded queue and retry; the batches the
    /// replaced sink holds are still exported by it. Header values and URL passwords are kept
    /// out of logs, errors and the flight recorder. See docs/integration.md.
    pub fn register_sink(&self, sink: SinkSection) -> Result<(), SinkRegistryError> {
        self.registry()?.register_section(sink)
    }

    /// Registers a sink built by host code (again after it was closed for being least recently
    /// used), replacing the one registered for the same tenant and app.
    pub fn register_sink_factory(
        &self,
        name: &str,
        tenant_id: &str,
        app_id: Option<&str>,
        factory: Arc<dyn SinkFactory>,
    ) -> Result<(), SinkRegistryError> {
        self.registry()?
            .register_factory(name, tenant_id, app_id, factory)
    }

    /// Removes the sink of `tenant_id` (and `app_id`): later traces no longer go to it, and the
    /// batches it holds are still exported. `false` when none was registered.
    pub fn remove_sink(&self, tenant_id: &str, app_id: Option<&str>) -> bool {
        self.registry()
            .map(|r| r.remove(tenant_id, app_id))
            .unwrap_or(false)
    }

    /// Every registered tenant sink, open or not (no credentials).
    pub fn sinks(&self) -> Vec<SinkInfo> {
        self.registry().map(|r| r.list()).unwrap_or_default()
    }

    fn registry(&self) -> Result<Arc<crate::export::registry::SinkRegistry>, SinkRegistryError> {
        self.inner
            .lifecycle
            .lock()
            .as_ref()
            .map(|lc| lc.export.handles.sinks.clone())
            .ok_or(SinkRegistryError::ShutDown)
    }

    /// Metric/log envelopes waiting in the transport.
    pub fn metric_queue_depth(&self) -> usize {
        self.inner.transport.queued()
    }

    /// Shuts down within `deadline` and reports. The work runs on a gateway-owned thread, so
    /// this is safe to await from any async runtime. A second call returns the first report.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let me = self.clone();
        run_on_thread("telemetry-gateway-shutdown", move || {
            me.shutdown_now(deadline)
        })
        .await
        .unwrap_or_else(|| self.final_or_snapshot())
    }

    /// [`shutdown`](Self::shutdown) for callers without an async runtime; blocks this thread
    /// until done or `deadline`. Also safe inside an async runtime (the work runs on its own
    /// thread, where blocking is allowed), though it then blocks that runtime's thread.
    pub fn shutdown_blocking(&self, deadline: Duration) -> ShutdownReport {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("telemetry-gateway-shutdown".into())
            .spawn(move || me.shutdown_now(deadline));
        match spawned {
            Ok(h) => h.join().unwrap_or_else(|_| self.final_or_snapshot()),
            Err(_) => self.shutdown_now(deadline),
        }
    }

    fn final_or_snapshot(&self) -> ShutdownReport {
        self.inner
            .final_report
            .lock()
            .clone()
            .unwrap_or_else(|| ShutdownReport {
                stats: self.stats(),
                unsettled_at_deadline: 0,
                deadline_exceeded: true,
                elapsed_ms: 0,
                actors_lost: Vec::new(),
            })
    }

    /// The shutdown sequence; runs on a thread with no async runtime context.
    fn shutdown_now(&self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        let end = started + deadline;
        let inner = &*self.inner;
        let Some(lc) = inner.lifecycle.lock().take() else {
            return self.final_or_snapshot();
        };
        let c = inner.shared.counters.clone();
        // Before anything is told to stop: an actor that does not answer a ping now died or
        // hangs (a panic inside it), and the thread of the actor system must still run.
        let mut actors_lost: Vec<String> = Vec::new();
        if lc.thread.is_finished() {
            actors_lost.push("actor system thread".to_owned());
        }
        // A deadline too short to wait for answers skips the pings (nothing is claimed then).
        let wait = LIVENESS_WAIT.min(deadline / 4);
        let answers = if wait >= MIN_LIVENESS_WAIT {
            lc.export.rt.block_on(futures::future::join_all(
                lc.actors.liveness.iter().map(|(_, alive)| alive(wait)),
            ))
        } else {
            vec![true; lc.actors.liveness.len()]
        };
        actors_lost.extend(
            lc.actors
                .liveness
                .iter()
                .zip(answers)
                .filter(|(_, answered)| !answered)
                .map(|((name, _), _)| name.clone()),
        );
        if !actors_lost.is_empty() {
            tracing::error!(
                actors = ?actors_lost,
                "actors died before shutdown (a panic in the gateway); the run is not clean"
            );
        }
        inner.shared.closed.store(true, Ordering::SeqCst);
        let wait_until = |cond: &dyn Fn() -> bool, nudge: &dyn Fn()| -> bool {
            loop {
                if cond() {
                    return true;
                }
                if Instant::now() >= end {
                    return false;
                }
                nudge();
                std::thread::sleep(SETTLE_POLL);
            }
        };
        let no_emits = || inner.active_emits.sum(Ordering::SeqCst) == 0;
        let mut settled = wait_until(&no_emits, &|| {});
        settled &= wait_until(&|| c.pending().gateway <= 0, &|| {});
        // From here on the batcher flushes every event as it arrives. A control message, not
        // awaited: its effect is observed through the gauges below.
        let drain_sent = AtomicBool::new(lc.actors.batcher.try_send(Drain).is_ok());
        let handles = lc.export.handles.clone();
        let rt = lc.export.rt.handle().clone();
        let last_nudge = Mutex::new(Instant::now() - LOG_NUDGE_INTERVAL);
        let nudge_logs = || {
            if !drain_sent.load(Ordering::Relaxed) {
                drain_sent.store(lc.actors.batcher.try_send(Drain).is_ok(), Ordering::Relaxed);
            }
            // Ask the log batcher to export what it holds now rather than at its interval.
            let mut last = last_nudge.lock();
            if last.elapsed() >= LOG_NUDGE_INTERVAL {
                *last = Instant::now();
                let lb = handles.log_batcher.clone();
                rt.spawn(async move { lb.flush().await });
            }
        };
        settled &= wait_until(
            &|| {
                let p = c.pending();
                p.gateway <= 0 && p.trace <= 0 && p.metric_log <= 0
            },
            &nudge_logs,
        );
        // Companion log records carry no event, so the gauges above do not wait for them: flush
        // the log batcher until it holds none (or the deadline passes).
        let lb = handles.log_batcher.clone();
        let flushed = wait_until(&|| c.pending().companion_logs <= 0, &|| {
            let lb = lb.clone();
            let _ = lc.export.rt.block_on(async move {
                tokio::time::timeout(LOG_NUDGE_INTERVAL, lb.flush()).await
            });
        });
        settled &= flushed;
        // Final metric collection and export. The SDK ignores its own timeout argument, so the
        // call runs on a helper thread and is abandoned (not awaited) past the deadline.
        let provider = lc.export.meter_provider.clone();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let _ = std::thread::Builder::new()
            .name("telemetry-gateway-metrics-shutdown".into())
            .spawn(move || {
                let _ = done_tx.send(provider.shutdown());
            });
        if done_rx
            .recv_timeout(end.saturating_duration_since(Instant::now()))
            .is_err()
        {
            settled = false;
            tracing::warn!("final metric export did not finish before the shutdown deadline");
        }
        let _ = lc.export.logger_provider.shutdown();
        // The SQLite sink's queue (the last spans, records and the final metric export).
        #[cfg(feature = "analytics")]
        if let Some(store) = &lc.export.sqlite {
            if !store.flush(end.saturating_duration_since(Instant::now())) {
                tracing::warn!("the SQLite sink's queue was not committed before the deadline");
            }
        }
        drop(lc.actors.handlers);
        for a in &lc.actors.arbiters {
            a.stop();
        }
        lc.system.stop();
        let _ = lc.thread.join();
        let remaining = end.saturating_duration_since(Instant::now());
        if let Some(stop) = lc.diag_stop {
            let _ = stop.send(());
        }
        // Tenant sinks: each worker finishes what it holds and shuts its sink down.
        lc.export.handles.sinks.close_all();
        lc.export
            .rt
            .shutdown_timeout(remaining.max(Duration::from_millis(10)));
        // Anything not settled now never will be: count it, so the ledger adds up.
        wait_until(&no_emits, &|| {});
        let unsettled = c.settle_remaining(ReasonCode::Shutdown);
        if unsettled > 0 {
            tracing::warn!(
                events = unsettled,
                "events unsettled at the shutdown deadline, counted as dropped"
            );
        }
        let report = ShutdownReport {
            stats: c.snapshot(),
            unsettled_at_deadline: unsettled,
            deadline_exceeded: !settled,
            elapsed_ms: started.elapsed().as_millis() as u64,
            actors_lost,
        };
        *inner.final_report.lock() = Some(report.clone());
        // Repeated warnings still being counted get their summary line now, not never.
        c.log.flush_summaries();
        report
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.lifecycle.lock().is_some() {
            // The last handle went away without shutdown(): settle what we can, bounded.
            let handle = GatewayHandle {
                inner: Arc::new(Inner {
                    tx: self.tx.clone(),
                    shared: self.shared.clone(),
                    transport: self.transport.clone(),
                    active_emits: Striped::default(),
                    lifecycle: Mutex::new(self.lifecycle.lock().take()),
                    default_deadline: self.default_deadline,
                    final_report: Mutex::new(None),
                    probes: self.probes.clone(),
                    diag_addr: self.diag_addr,
                }),
            };
            let _ = handle.shutdown_blocking(self.default_deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handle_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<GatewayHandle>();
    }
}
