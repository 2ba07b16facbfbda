//! The composition root: `start()` in the steps docs/architecture.md lists, each a function.

use super::*;

impl GatewayBuilder {
    /// `start()`, in the steps docs/architecture.md lists ("Start sequence"). Anything that can
    /// fail because of the configuration fails before a thread is started.
    pub(super) fn start_inner(
        self,
        worker: bool,
    ) -> Result<(GatewayHandle, Option<WorkerParts>), StartError> {
        let GatewayBuilder {
            config,
            case_handlers,
            payload_store,
            sinks,
            transport: custom_transport,
        } = self;
        // 1. The configuration, validated.
        let (cfg, worker_metric_interval) = effective_config(config, worker)?;
        // 2. The routing table, and the host's case handlers checked against it.
        let table = RoutingTable::new(&cfg.cases);
        check_case_handlers(&table, case_handlers.keys())?;
        // 3. The ledger: counters, per-case counts, flight recorder, log hygiene.
        let counters = new_ledger(&cfg, &table);
        // 4. The payload store.
        let store = match payload_store {
            Some(s) => s,
            None => PayloadStore::from_config(&cfg.payloads)?,
        }
        .with_log(counters.log.clone());
        // 5. The metric transport's sources (and its in-process sender).
        let worker_ledger = Arc::new(WorkerLedger::default());
        let intake = build_intake(
            &cfg,
            custom_transport,
            worker,
            &table,
            &counters,
            &worker_ledger,
        )?;
        // 6. The diagnostics endpoint's address, bound (a busy address fails here).
        let diag_listener = bind_diagnostics(&cfg)?;
        // 7. Each handler's dedup state (a bad Redis URL fails here).
        let dedups = intake
            .sources
            .iter()
            .map(|_| DedupActor::new(&cfg.dedup).map(|d| d.with_counters(counters.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        // 8. The export pipeline (its runtime, exporters, sinks), then the stream producer on it.
        let export = ExportPipeline::build(&cfg, &table, counters.clone(), sinks)?;
        let transport = metric_transport(&cfg, intake.transport, &export, &counters)?;
        let shared = Arc::new(Shared {
            counters: counters.clone(),
            table,
            gateway_enabled: AtomicBool::new(cfg.gateway.enabled),
            enterprise_enabled: AtomicBool::new(cfg.gateway.enterprise_enabled),
            closed: AtomicBool::new(false),
            worker: worker.then(|| worker_ledger.clone()),
        });
        // 9. The bounded queues, and the actor system on its own thread.
        let (gw_tx, gw_rx) = mpsc::channel::<GatewayItem>(cfg.gateway.queue_capacity);
        let (trace_txs, trace_rxs): (Vec<_>, Vec<_>) = (0..cfg.trace_batcher.shards)
            .map(|_| mpsc::channel::<TraceItem>(cfg.trace_batcher.shard_queue_capacity()))
            .unzip();
        let trace_shards = TraceShards::new(trace_txs).ok_or_else(|| {
            StartError::Config(ConfigError::invalid(
                "trace_batcher.shards",
                "must be at least 1",
            ))
        })?;
        let queues = queue_readers(&gw_tx, trace_shards.queues(), &transport, &export);
        let live = Arc::new(AtomicBool::new(true));
        let (system, thread, actors) = spawn_actor_system(
            ActorParts {
                cfg: cfg.clone(),
                shared: shared.clone(),
                export: export.handles.clone(),
                store,
                dedups,
                case_handlers: Arc::new(case_handlers),
                gw_rx,
                trace_shards,
                trace_rxs,
                transport: transport.clone(),
                sources: intake.sources,
            },
            live.clone(),
        )?;
        // 10. The probes behind stats, /metrics and the self-metrics; the endpoint served.
        let probes = probes(&cfg, &shared, &actors, queues, live, &export);
        if cfg.diagnostics.export_self_metrics {
            crate::diagnostics::otel::register(&export.meter_provider, probes.clone());
        }
        let (diag_addr, diag_stop) = serve_diagnostics(diag_listener, &export, &probes)?;
        // 11. A worker's committer.
        #[cfg(not(feature = "redis"))]
        let worker_parts = {
            let _ = (worker_metric_interval, &intake.stop);
            None
        };
        #[cfg(feature = "redis")]
        let worker_parts = if worker {
            Some(spawn_committer(
                &cfg,
                worker_ledger,
                intake.stop,
                &export,
                &counters,
                worker_metric_interval,
            )?)
        } else {
            None
        };
        // 12. The handle.
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

/// Step 1: the configuration validated; a worker's SDK metric timer set aside (its metrics are
/// exported by its commits, and at least every `otlp.metric_interval_ms` by them when idle: see
/// `transport::worker`), with the interval the commits keep.
#[cfg_attr(not(feature = "redis"), allow(unused_mut))]
fn effective_config(
    mut cfg: GatewayConfig,
    worker: bool,
) -> Result<(GatewayConfig, Duration), StartError> {
    cfg.validate()?;
    let metric_interval = Duration::from_millis(cfg.otlp.metric_interval_ms);
    #[cfg(feature = "redis")]
    if worker {
        cfg.otlp.metric_interval_ms = WORKER_SDK_METRIC_INTERVAL_MS;
    }
    #[cfg(not(feature = "redis"))]
    let _ = worker;
    Ok((cfg, metric_interval))
}

/// Step 3: the gateway's ledger.
fn new_ledger(cfg: &GatewayConfig, table: &RoutingTable) -> Arc<Counters> {
    let counters = Arc::new(Counters::default());
    counters
        .log
        .set_warn_summary_interval(Duration::from_secs(cfg.logging.warn_summary_interval_secs));
    counters.init_cases(table.rows().iter().map(|(name, _)| name.as_str()));
    counters.recorder().configure(
        cfg.diagnostics.recorder_events,
        cfg.diagnostics.recorder_steps_per_event,
    );
    counters
}

/// What the handler pool reads from, and what `emit()`'s gateway actor sends into.
struct Intake {
    /// `None`: the Redis stream producer, built on the export runtime (step 8).
    transport: Option<Arc<dyn MetricTransport>>,
    sources: Vec<Box<dyn EnvelopeSource>>,
    /// Tells a worker's stream sources to stop reading.
    stop: Arc<AtomicBool>,
}

/// The client of `transport.redis_url`; its error names the key, without the URL's password.
#[cfg(feature = "redis")]
fn stream_client(cfg: &GatewayConfig) -> Result<redis::Client, StartError> {
    redis::Client::open(cfg.transport.redis_url.as_str()).map_err(|e| {
        StartError::Config(ConfigError::Invalid {
            key: "transport.redis_url".into(),
            problem: crate::config::hide_url_in(&e.to_string(), &cfg.transport.redis_url),
        })
    })
}

/// Step 5: the host's transport, a worker's stream sources, or the in-process queues.
fn build_intake(
    cfg: &GatewayConfig,
    custom: Option<TransportParts>,
    worker: bool,
    table: &RoutingTable,
    counters: &Arc<Counters>,
    worker_ledger: &Arc<WorkerLedger>,
) -> Result<Intake, StartError> {
    let stop = Arc::new(AtomicBool::new(false));
    let (transport, sources): MaybeTransport = match custom {
        Some((t, s)) if !s.is_empty() => (Some(t), s),
        Some(_) => {
            return Err(StartError::Config(ConfigError::Invalid {
                key: "metric_transport".into(),
                problem: "a custom transport needs at least one source".into(),
            }))
        }
        #[cfg(feature = "redis")]
        None if worker => {
            let client = stream_client(cfg)?;
            let name = cfg.transport.consumer_name();
            let link = WorkerLink {
                counters: counters.clone(),
                ledger: worker_ledger.clone(),
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
            let (t, s) =
                InProcessTransport::new(cfg.metric_pool.pool_size, cfg.metric_pool.queue_capacity);
            let s = s
                .into_iter()
                .map(|s| Box::new(s) as Box<dyn EnvelopeSource>)
                .collect();
            (Some(Arc::new(t)), s)
        }
    };
    #[cfg(not(feature = "redis"))]
    let _ = (worker, table, counters, worker_ledger);
    Ok(Intake {
        transport,
        sources,
        stop,
    })
}

/// Step 6: the diagnostics endpoint's listener, bound before anything starts, so a bad or busy
/// address fails start with the key named.
fn bind_diagnostics(cfg: &GatewayConfig) -> Result<Option<std::net::TcpListener>, StartError> {
    let Some(addr) = &cfg.diagnostics.listen else {
        return Ok(None);
    };
    let bind_err = |e: std::io::Error| {
        StartError::Config(ConfigError::Invalid {
            key: "diagnostics.listen".into(),
            problem: format!("cannot listen on {addr}: {e}"),
        })
    };
    let listener = std::net::TcpListener::bind(addr.as_str()).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(Some(listener))
}

/// Step 8: the metric transport: the intake's, or the Redis stream producer on the export
/// runtime.
fn metric_transport(
    cfg: &GatewayConfig,
    transport: Option<Arc<dyn MetricTransport>>,
    export: &ExportPipeline,
    counters: &Arc<Counters>,
) -> Result<Arc<dyn MetricTransport>, StartError> {
    match transport {
        Some(t) => Ok(t),
        #[cfg(not(feature = "redis"))]
        None => {
            let _ = (cfg, export, counters);
            Err(StartError::Actors("no metric transport was built".into()))
        }
        #[cfg(feature = "redis")]
        None => {
            let client = stream_client(cfg)?;
            let settings = StreamSettings::from_config(&cfg.transport, String::new());
            let capacity = cfg.transport.buffer_capacity;
            let rt = export.rt.handle();
            let Some(dir) = cfg.spool.dir_of("stream-producer") else {
                return Ok(Arc::new(RedisStreamProducer::spawn_counted(
                    client,
                    settings,
                    capacity,
                    rt,
                    counters.clone(),
                )));
            };
            // `[spool] kind = "disk"`: the buffer on disk, with its share of the budget.
            let spool = |sender| crate::export::spooled::SpoolSettings {
                dir,
                opts: crate::export::spool_options(&cfg.spool, cfg.enterprise_spool_budget()),
                tick: Duration::from_millis(cfg.spool.sync_interval_ms),
                sender,
                hold: cfg.retry.hold_policy(),
                // One pipeline at a time: the stream keeps the order of the appends.
                concurrency: 1,
                detailed_events: cfg.diagnostics.recorder_events as u64,
                stash: None,
            };
            let producer = RedisStreamProducer::spawn_spooled(
                client,
                settings,
                capacity,
                rt,
                counters.clone(),
                spool,
            )
            .map_err(|e| {
                StartError::Export(crate::export::ExportBuildError::Spool {
                    key: "spool.path".into(),
                    error: e.to_string(),
                })
            })?;
            if let Some(control) = producer.spool() {
                let _ = export.handles.spools.stream.set(control.clone());
            }
            Ok(Arc::new(producer))
        }
    }
}

/// Step 9: how full each bounded queue is, for the probes.
fn queue_readers(
    gw_tx: &mpsc::Sender<GatewayItem>,
    trace_txs: &[mpsc::Sender<TraceItem>],
    transport: &Arc<dyn MetricTransport>,
    export: &ExportPipeline,
) -> Vec<(String, QueueReader)> {
    let transport = transport.clone();
    // Tenant sinks open and close at runtime: one queue entry sums the open ones, so the
    // number of series stays fixed.
    let registry = export.handles.sinks.clone();
    let enterprise = &export.handles.enterprise_sink;
    vec![
        ("gateway".into(), weak_reader(gw_tx)),
        ("trace".into(), weak_readers(trace_txs)),
        (
            "metric_log".into(),
            Box::new(move || Some((transport.queued(), transport.capacity()))),
        ),
        ("logs".into(), export.handles.log_batcher.depth_reader()),
        (
            format!("sink:{}", enterprise.name),
            enterprise.depth_reader(),
        ),
        (
            "sinks:tenants".into(),
            Box::new(move || Some(registry.depth())),
        ),
    ]
}

/// Step 9: the actor system on its own thread, with every actor started in it. Returns once
/// they are up (or [`START_TIMEOUT`] passed). `live` is false as soon as the thread ends,
/// however it ends.
fn spawn_actor_system(
    parts: ActorParts,
    live: Arc<AtomicBool>,
) -> Result<(actix::System, JoinHandle<()>, Actors), StartError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("telemetry-gateway-actors".into())
        .spawn(move || {
            struct Alive(Arc<AtomicBool>);
            impl Drop for Alive {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::SeqCst);
                }
            }
            let _alive = Alive(live);
            let sys = actix::System::new();
            sys.block_on(async move {
                let started = start_actors(parts);
                let _ = ready_tx.send((actix::System::current(), started));
            });
            let _ = sys.run();
        })
        .map_err(|e| StartError::Actors(e.to_string()))?;
    let (system, actors) = ready_rx
        .recv_timeout(START_TIMEOUT)
        .map_err(|e| StartError::Actors(e.to_string()))?;
    Ok((system, thread, actors))
}

/// Step 10: the readers behind `stats()`, `/metrics`, `/readyz` and the self-metrics.
fn probes(
    cfg: &GatewayConfig,
    shared: &Arc<Shared>,
    actors: &Actors,
    queues: Vec<(String, QueueReader)>,
    live: Arc<AtomicBool>,
    export: &ExportPipeline,
) -> Arc<Probes> {
    let handler_addrs = actors.handlers.clone();
    let closing = shared.clone();
    // Weak: the probes outlive the export pipeline (`stats()` after shutdown), never keep it.
    let spools = export
        .handles
        .spools
        .all()
        .map(|s| {
            let weak = Arc::downgrade(s);
            Box::new(move || weak.upgrade().and_then(|s| s.snapshot()))
                as crate::diagnostics::probes::SpoolReader
        })
        .collect();
    Arc::new(Probes {
        counters: shared.counters.clone(),
        queues,
        closed: Arc::new(move || closing.closed.load(Ordering::SeqCst)),
        live,
        handlers_up: Box::new(move || {
            let up = handler_addrs.iter().filter(|a| a.connected()).count();
            (up, handler_addrs.len())
        }),
        unready_after: Duration::from_secs(cfg.diagnostics.unready_after_failing_secs),
        spools,
        tenant_spools: {
            let sinks = Arc::downgrade(&export.handles.sinks);
            Box::new(move || {
                sinks.upgrade().map_or_else(Vec::new, |sinks| {
                    sinks.spools().iter().filter_map(|s| s.snapshot()).collect()
                })
            })
        },
    })
}

/// Step 10: the diagnostics endpoint served on the export runtime, when configured. Returns its
/// address and the sender that stops it.
fn serve_diagnostics(
    listener: Option<std::net::TcpListener>,
    export: &ExportPipeline,
    probes: &Arc<Probes>,
) -> Result<
    (
        Option<std::net::SocketAddr>,
        Option<tokio::sync::oneshot::Sender<()>>,
    ),
    StartError,
> {
    let Some(listener) = listener else {
        return Ok((None, None));
    };
    let addr = listener.local_addr().ok();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let _entered = export.rt.enter();
    let listener = tokio::net::TcpListener::from_std(listener).map_err(|e| {
        StartError::Config(ConfigError::Invalid {
            key: "diagnostics.listen".into(),
            problem: e.to_string(),
        })
    })?;
    export.rt.spawn(crate::diagnostics::http::serve(
        listener,
        probes.clone(),
        stop_rx,
    ));
    Ok((addr, Some(stop_tx)))
}

/// Step 11: a worker's committer (see `transport::worker`).
#[cfg(feature = "redis")]
fn spawn_committer(
    cfg: &GatewayConfig,
    ledger: Arc<WorkerLedger>,
    stop: Arc<AtomicBool>,
    export: &ExportPipeline,
    counters: &Arc<Counters>,
    metric_interval: Duration,
) -> Result<WorkerParts, StartError> {
    let committer = Committer::spawn(
        ledger.clone(),
        stream_client(cfg)?,
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
    Ok((stop, ledger, committer))
}

/// What a worker takes from the stream: what `emit()` would take and the producer would put
/// there. Anyone who can write to the stream could otherwise pick a case (and so metric label
/// values) the table does not know, or turn a trace case into log records (issue 14).
#[cfg(feature = "redis")]
pub(super) fn worker_admission(table: RoutingTable) -> crate::transport::redis_streams::Admission {
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
pub(super) fn check_case_handlers<'a>(
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

/// Addresses the lifecycle needs.
pub(super) struct Actors {
    #[cfg_attr(not(feature = "testing"), allow(dead_code))]
    pub(super) gateway: Addr<GatewayActor>,
    /// One per `trace_batcher.shards`.
    pub(super) batchers: Vec<Addr<TraceBatcherActor>>,
    /// Held for the gateway's lifetime: actix restarts a supervised actor only while its
    /// mailbox is connected, i.e. while some `Addr` to it is alive.
    pub(super) handlers: Vec<Addr<MetricHandlerActor>>,
    pub(super) arbiters: Vec<Arbiter>,
    /// Every actor by name, with its ping: an actor that does not answer at shutdown died or
    /// hangs (a panic inside it), and the report says so.
    pub(super) liveness: Vec<(String, AliveFn)>,
}

/// Whether one actor answers a [`Ping`](crate::actors::Ping) within the wait it is given.
pub(super) type AliveFn = Box<dyn Fn(Duration) -> futures::future::BoxFuture<'static, bool> + Send>;

pub(super) fn alive<A>(addr: &Addr<A>) -> AliveFn
where
    A: Actor + Handler<crate::actors::Ping>,
    A::Context: actix::dev::ToEnvelope<A, crate::actors::Ping>,
{
    alive_or_waiting(addr, Backpressure::default())
}

/// [`alive`] for an actor that may be waiting for room downstream: such an actor answers no
/// message until the wait ends, and is alive all the same.
pub(super) fn alive_or_waiting<A>(addr: &Addr<A>, backpressure: Backpressure) -> AliveFn
where
    A: Actor + Handler<crate::actors::Ping>,
    A::Context: actix::dev::ToEnvelope<A, crate::actors::Ping>,
{
    let addr = addr.clone();
    Box::new(move |wait| {
        let ping = addr.send(crate::actors::Ping);
        let backpressure = backpressure.clone();
        Box::pin(async move {
            matches!(tokio::time::timeout(wait, ping).await, Ok(Ok(()))) || backpressure.waiting()
        })
    })
}

pub(super) struct Lifecycle {
    pub(super) system: actix::System,
    pub(super) thread: JoinHandle<()>,
    pub(super) actors: Actors,
    pub(super) export: ExportPipeline,
    pub(super) diag_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A queue reader that does not keep the queue open.
pub(super) fn weak_reader<T: Send + 'static>(tx: &mpsc::Sender<T>) -> QueueReader {
    weak_readers(std::slice::from_ref(tx))
}

/// One reader for several queues (the trace batcher's shards): their depths and capacities
/// summed, while any of them is open.
pub(super) fn weak_readers<T: Send + 'static>(txs: &[mpsc::Sender<T>]) -> QueueReader {
    let weak: Vec<_> = txs.iter().map(mpsc::Sender::downgrade).collect();
    Box::new(move || {
        weak.iter()
            .filter_map(|w| w.upgrade())
            .map(|t| (t.max_capacity() - t.capacity(), t.max_capacity()))
            .reduce(|a, b| (a.0 + b.0, a.1 + b.1))
    })
}

/// Everything the actors are built from.
pub(super) struct ActorParts {
    pub(super) cfg: GatewayConfig,
    pub(super) shared: Arc<Shared>,
    pub(super) export: Arc<ExportHandles>,
    pub(super) store: PayloadStore,
    pub(super) dedups: Vec<DedupActor>,
    pub(super) case_handlers: Arc<crate::FastMap<String, Arc<dyn CaseHandler>>>,
    pub(super) gw_rx: mpsc::Receiver<GatewayItem>,
    /// One queue per trace batcher shard.
    pub(super) trace_shards: TraceShards,
    pub(super) trace_rxs: Vec<mpsc::Receiver<TraceItem>>,
    pub(super) transport: Arc<dyn MetricTransport>,
    pub(super) sources: Vec<Box<dyn EnvelopeSource>>,
}

/// Starts every actor in the current actix system: one arbiter per trace batcher shard, one
/// arbiter per handler with its dedup, rehydrator and supervised metric handler, then the
/// gateway actor (on the system's own thread).
pub(super) fn start_actors(parts: ActorParts) -> Actors {
    let ActorParts {
        cfg,
        shared,
        export,
        store,
        dedups,
        case_handlers,
        gw_rx,
        trace_shards,
        trace_rxs,
        transport,
        sources,
    } = parts;
    let cfg = &cfg;
    let max_batch = cfg.trace_batcher.max_batch_size;
    let interval = Duration::from_millis(cfg.trace_batcher.flush_interval_ms);
    let mut arbiters = Vec::new();
    let mut handlers = Vec::new();
    let mut liveness = Vec::new();
    let mut batchers = Vec::new();
    let sharded = trace_rxs.len() > 1;
    for (index, trace_rx) in trace_rxs.into_iter().enumerate() {
        let dedup = MemoryDedup::new(
            cfg.dedup.memory_max_entries,
            Duration::from_secs(cfg.dedup.ttl_secs),
        );
        let (shared, export) = (shared.clone(), export.clone());
        let waits = Backpressure::default();
        let batcher_waits = waits.clone();
        let arbiter = Arbiter::new();
        let batcher = TraceBatcherActor::start_in_arbiter(&arbiter.handle(), move |ctx| {
            ctx.add_stream(tokio_stream::wrappers::ReceiverStream::new(trace_rx));
            TraceBatcherActor::new(shared, export, max_batch, interval, dedup, batcher_waits)
        });
        let name = if sharded {
            format!("trace_batcher[{index}]")
        } else {
            "trace_batcher".to_owned()
        };
        liveness.push((name, alive_or_waiting(&batcher, waits)));
        batchers.push(batcher);
        arbiters.push(arbiter);
    }
    for (index, (source, dedup)) in sources.into_iter().zip(dedups).enumerate() {
        let arbiter = Arbiter::new();
        let h = arbiter.handle();
        let dedup_addr = DedupActor::start_in_arbiter(&h, move |_| dedup);
        let (handler_store, counters) = (store.clone(), shared.counters.clone());
        let rehydrator = RehydratorActor::start_in_arbiter(&h, move |_| {
            RehydratorActor::new(handler_store, counters)
        });
        liveness.push((format!("dedup[{index}]"), alive(&dedup_addr)));
        liveness.push((format!("rehydrator[{index}]"), alive(&rehydrator)));
        let handler_parts = HandlerParts {
            index,
            source,
            batch_size: cfg.metric_pool.batch_size,
            dedup: dedup_addr,
            rehydrator,
            shared: shared.clone(),
            export: export.clone(),
            case_handlers: case_handlers.clone(),
            backpressure: Backpressure::default(),
        };
        let waits = handler_parts.backpressure.clone();
        let handler =
            Supervisor::start_in_arbiter(&h, move |_| MetricHandlerActor::new(handler_parts));
        liveness.push((
            format!("metric_handler[{index}]"),
            alive_or_waiting(&handler, waits),
        ));
        handlers.push(handler);
        arbiters.push(arbiter);
    }

    let threshold = cfg.payloads.inline_threshold_bytes;
    let max_offloads = cfg.gateway.max_offloads_in_flight;
    let gateway_waits = Backpressure::default();
    let waits = gateway_waits.clone();
    let gateway = GatewayActor::create(move |ctx| {
        ctx.add_stream(tokio_stream::wrappers::ReceiverStream::new(gw_rx));
        // The gateway owns the only senders of the trace queues: when it stops, every shard's
        // stream ends and the shard flushes.
        GatewayActor::new(
            shared,
            trace_shards,
            transport,
            store,
            threshold,
            max_offloads,
            waits,
        )
    });
    liveness.push((
        "gateway".to_owned(),
        alive_or_waiting(&gateway, gateway_waits),
    ));
    Actors {
        gateway,
        batchers,
        handlers,
        arbiters,
        liveness,
    }
}
