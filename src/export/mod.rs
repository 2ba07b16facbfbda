//! Export: the OpenTelemetry providers, the sinks, and the runtime their I/O runs on.
//!
//! ```text
//!  TraceBatcherActor ──SinkJob──▶ SinkWorker(enterprise) ──▶ OTLP span exporter | JSON lines
//!          │          └─SinkJob─▶ SinkWorker(tenant sink) ──▶ any TraceSink
//!          │
//!          ├──LogJob──▶ LogBatcher ──▶ OTLP log exporter | JSON lines
//!  MetricHandlerActor ─┘
//!          └── instruments ──▶ SdkMeterProvider ─PeriodicReader─▶ CountingMetricExporter
//! ```
//!
//! Every exporter and worker runs on a small dedicated tokio runtime (the *export runtime*), so a
//! slow collector never stalls an actor thread, and the exporters are built inside it because
//! tonic channels bind to the runtime they are created in.
//!
//! With no `otlp.endpoint` the enterprise exporter writes spans, logs and metrics as JSON lines to
//! `export.file_path`, so the embedded default shows output without a collector.

pub(crate) mod encode;
pub(crate) mod jsonl;
pub(crate) mod logs;
pub mod mapping;
pub(crate) mod metrics;
#[cfg(feature = "analytics")]
pub mod parquet_export;
pub mod registry;
pub mod sink;
pub(crate) mod spooled;
#[cfg(feature = "analytics")]
pub mod sqlite;
#[cfg_attr(not(feature = "testing"), allow(unreachable_pub))]
pub(crate) mod wire;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SpanExporter as _;
use opentelemetry_sdk::Resource;

use crate::config::{GatewayConfig, LocalOutput, OtlpProtocol, SinkKind, SinkSection, SpoolKind};
use crate::diagnostics::Counters;
use crate::redaction::{RedactionError, Redactor};
use crate::routing::RoutingTable;
use jsonl::{JsonlLogExporter, JsonlMetricExporter, JsonlTraceSink, JsonlWriter};
use logs::{LogBackend, LogBatcher, LogBatcherSettings};

use mapping::Mapper;
use metrics::{CountingMetricExporter, MetricBackend};
use sink::{DiscardSink, OtlpTraceSink, SinkWorker, SinkWorkerParams, TraceSink};

/// What the actors need from the export pipeline.
#[derive(Debug)]
pub(crate) struct ExportHandles {
    pub(crate) enterprise_sink: SinkWorker,
    /// Tenant sinks, opened on demand (see `export::registry`).
    pub(crate) sinks: Arc<crate::export::registry::SinkRegistry>,
    pub(crate) log_batcher: LogBatcher,
    pub(crate) logger: opentelemetry_sdk::logs::SdkLogger,
    pub(crate) mapper: Mapper,
    pub(crate) sampling_ratio: f64,
    /// The enterprise destination's disk spools (`[spool] kind = "disk"`).
    pub(crate) spools: Spools,
}

/// The enterprise destination's disk spools, one per signal (none in memory mode).
#[derive(Debug, Default)]
pub(crate) struct Spools {
    pub(crate) traces: Option<Arc<spooled::SpoolControl>>,
    pub(crate) logs: Option<Arc<spooled::SpoolControl>>,
    /// The Redis Streams producer's buffer (set when the transport is built, after export).
    pub(crate) stream: std::sync::OnceLock<Arc<spooled::SpoolControl>>,
}

impl Spools {
    /// Every one of them.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<spooled::SpoolControl>> {
        self.traces
            .iter()
            .chain(self.logs.iter())
            .chain(self.stream.get())
    }
}

impl ExportHandles {
    /// At shutdown, with disk spools: every event still in flight is on disk and the backend is
    /// failing, so waiting longer only waits for the backend (the spools keep the events).
    pub(crate) fn spooled_and_stalled(&self, p: &crate::diagnostics::ledger::Pending) -> bool {
        let Spools {
            traces,
            logs,
            stream,
        } = &self.spools;
        let (Some(traces), Some(logs)) = (traces, logs) else {
            return false;
        };
        let metric_log_spools = std::iter::once(&**logs).chain(stream.get().map(|s| &**s));
        let tenants = self.sinks.spools();
        let trace_spools = std::iter::once(&**traces).chain(tenants.iter().map(|s| &**s));
        p.gateway <= 0
            && self
                .enterprise_sink
                .depth()
                .is_none_or(|(waiting, _)| waiting == 0)
            && self.sinks.depth().0 == 0
            && self.log_batcher.queued() == 0
            && spooled::SpoolControl::hold_all_of(trace_spools, p.trace)
            && spooled::SpoolControl::hold_all_of(metric_log_spools, p.metric_log)
    }

    /// Every open disk spool: the enterprise destination's and the tenant sinks'.
    pub(crate) fn all_spools(&self) -> Vec<Arc<spooled::SpoolControl>> {
        self.spools
            .all()
            .cloned()
            .chain(self.sinks.spools())
            .collect()
    }
}

/// Why the export pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ExportBuildError {
    /// An OTLP exporter could not be built from its settings.
    #[error("{key}: cannot build the OTLP {signal} exporter: {error}")]
    Otlp {
        /// The config key at fault (`otlp.endpoint`, `sinks[2].endpoint`...).
        key: String,
        /// `traces`, `logs` or `metrics`.
        signal: &'static str,
        /// The exporter's error.
        error: String,
    },
    /// A JSON lines file could not be opened.
    #[error("{key}: cannot open {path:?}: {error}")]
    File {
        /// The config key at fault.
        key: String,
        /// The path.
        path: String,
        /// The I/O error.
        error: String,
    },
    /// A sink could not be registered.
    #[error("{key}: {error}")]
    Sink {
        /// Which sink (`sinks[2]`, or `trace_sink(<tenant>)`).
        key: String,
        /// Why (never a credential).
        error: String,
    },
    /// The export runtime could not start.
    #[error("cannot start the export runtime: {0}")]
    Runtime(String),
    /// The disk spool could not be opened (held by another process, not writable...).
    #[error("{key}: {error}")]
    Spool {
        /// The config key at fault (`spool.path`).
        key: String,
        /// Why, naming the directory or file.
        error: String,
    },
    /// The `[redaction]` settings could not be compiled.
    #[error("cannot build the redactor: {error}")]
    Redaction {
        /// The config key at fault (`redaction.patterns[1]`...).
        key: String,
        /// The redactor's error (it names the key too).
        error: RedactionError,
    },
}

/// Everything export needs, built once at start.
#[derive(Debug)]
pub(crate) struct ExportPipeline {
    pub(crate) rt: tokio::runtime::Runtime,
    pub(crate) meter_provider: SdkMeterProvider,
    pub(crate) logger_provider: SdkLoggerProvider,
    pub(crate) handles: Arc<ExportHandles>,
    /// `[sinks.sqlite]`'s writer, flushed at shutdown.
    #[cfg(feature = "analytics")]
    pub(crate) sqlite: Option<sqlite::SqliteStore>,
}

fn with_signal_path(endpoint: &str, path: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with(path) {
        trimmed.to_owned()
    } else {
        format!("{trimmed}{path}")
    }
}

struct OtlpSettings<'a> {
    key: String,
    endpoint: &'a str,
    protocol: OtlpProtocol,
    headers: BTreeMap<String, String>,
    timeout: Duration,
    retry: opentelemetry_otlp::RetryPolicy,
}

impl OtlpSettings<'_> {
    fn header_map(&self) -> http::HeaderMap {
        let mut map = HashMap::new();
        for (k, v) in &self.headers {
            map.insert(k.to_ascii_lowercase(), v.clone());
        }
        http::HeaderMap::try_from(&map).unwrap_or_default()
    }

    fn metadata(&self) -> tonic::metadata::MetadataMap {
        tonic::metadata::MetadataMap::from_headers(self.header_map())
    }

    fn http_headers(&self) -> HashMap<String, String> {
        self.headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The sender of encoded requests to this endpoint (a disk spool's).
    fn wire(&self) -> Result<wire::WireSender, ExportBuildError> {
        match self.protocol {
            OtlpProtocol::Grpc => {
                wire::WireSender::grpc(self.endpoint, self.metadata(), self.timeout)
            }
            OtlpProtocol::HttpProtobuf => {
                wire::WireSender::http(self.endpoint, self.header_map(), self.timeout)
            }
        }
        .map_err(|e| self.err("traces", e))
    }

    fn err(&self, signal: &'static str, e: impl std::fmt::Display) -> ExportBuildError {
        // The exporter's message may echo the endpoint, never the headers: credentials stay out.
        ExportBuildError::Otlp {
            key: self.key.clone(),
            signal,
            error: crate::config::hide_url_in(&e.to_string(), self.endpoint),
        }
    }

    /// The settings every signal's gRPC builder gets: one chain for spans, logs and metrics.
    fn grpc<B>(&self, builder: B) -> B
    where
        B: WithExportConfig + WithTonicConfig,
    {
        builder
            .with_endpoint(self.endpoint)
            .with_timeout(self.timeout)
            .with_metadata(self.metadata())
            .with_retry_policy(self.retry.clone())
    }

    /// The settings every signal's HTTP builder gets; `path` is the signal's (`/v1/traces`).
    fn http<B>(&self, builder: B, path: &str) -> B
    where
        B: WithExportConfig + WithHttpConfig,
    {
        builder
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(with_signal_path(self.endpoint, path))
            .with_timeout(self.timeout)
            .with_headers(self.http_headers())
            .with_retry_policy(self.retry.clone())
    }

    fn spans(&self) -> Result<opentelemetry_otlp::SpanExporter, ExportBuildError> {
        let b = opentelemetry_otlp::SpanExporter::builder();
        match self.protocol {
            OtlpProtocol::Grpc => self.grpc(b.with_tonic()).build(),
            OtlpProtocol::HttpProtobuf => self.http(b.with_http(), "/v1/traces").build(),
        }
        .map_err(|e| self.err("traces", e))
    }

    fn logs(&self) -> Result<opentelemetry_otlp::LogExporter, ExportBuildError> {
        let b = opentelemetry_otlp::LogExporter::builder();
        match self.protocol {
            OtlpProtocol::Grpc => self.grpc(b.with_tonic()).build(),
            OtlpProtocol::HttpProtobuf => self.http(b.with_http(), "/v1/logs").build(),
        }
        .map_err(|e| self.err("logs", e))
    }

    fn metrics(&self) -> Result<opentelemetry_otlp::MetricExporter, ExportBuildError> {
        let b = opentelemetry_otlp::MetricExporter::builder();
        match self.protocol {
            OtlpProtocol::Grpc => self.grpc(b.with_tonic()).build(),
            OtlpProtocol::HttpProtobuf => self.http(b.with_http(), "/v1/metrics").build(),
        }
        .map_err(|e| self.err("metrics", e))
    }
}

impl ExportPipeline {
    /// Builds the runtime, exporters, workers and providers from `cfg`, in the order below:
    /// whatever can fail because of the configuration (the redactor, the enterprise exporter,
    /// the SQLite file, a tenant sink) fails here, naming its key. `extra_sinks` are community
    /// sinks the host registered in code, keyed by (tenant, app).
    pub(crate) fn build(
        cfg: &GatewayConfig,
        table: &RoutingTable,
        counters: Arc<Counters>,
        extra_sinks: Vec<(String, Option<String>, Arc<dyn TraceSink>)>,
    ) -> Result<Self, ExportBuildError> {
        // 1. The redactor: the gateway's log lines, journey details and reported errors are
        //    redacted from here on.
        let redactor = build_redactor(cfg)?;
        counters.log.set_redactor(redactor.clone());
        // 2. The export runtime, and the resource every signal carries.
        let rt = export_runtime()?;
        let handle = rt.handle().clone();
        let _entered = rt.enter();
        let resource = resource_of(cfg);
        // 3. The enterprise destination's three backends (OTLP, the local file, or nothing),
        //    with `[sinks.sqlite]` storing a copy of what it exports.
        let backends = enterprise_backends(cfg, &resource)?;
        #[cfg(feature = "analytics")]
        let sqlite = sqlite_store(cfg, &counters)?;
        #[cfg(feature = "analytics")]
        let enterprise_sink = match (&sqlite, backends.spans) {
            // `[sinks.sqlite]` makes the destination one of SDK values (`enterprise_backends`).
            (Some(store), sink::Target::Sink(enterprise)) => {
                sink::Target::Sink(Arc::new(sqlite::TeeTraceSink {
                    enterprise,
                    store: store.clone(),
                }))
            }
            (_, spans) => spans,
        };
        #[cfg(not(feature = "analytics"))]
        let enterprise_sink = backends.spans;
        // 4. The sink workers: the enterprise sink's, and the registry of tenant sinks.
        let workers = SinkWorkerParams {
            queue_batches: cfg.trace_batcher.sink_queue_batches,
            concurrency: cfg.trace_batcher.sink_concurrency,
            timeout: Duration::from_millis(cfg.otlp.timeout_ms),
            hold: cfg.retry.hold_policy(),
            counters: counters.clone(),
            rt: handle.clone(),
        };
        let spool_err = |e: crate::spool::SpoolError| ExportBuildError::Spool {
            key: "spool.path".into(),
            error: e.to_string(),
        };
        // With `[spool] kind = "disk"`, one spool per signal, each with its share of what the
        // tenant sinks' share leaves.
        let spool_settings = |dir: &str, signal: wire::WireSignal, concurrency: usize| {
            let sender = spooled::OtlpRecords {
                sender: backends.wire.clone()?,
                signal,
            };
            Some(spooled::SpoolSettings {
                dir: cfg.spool.dir_of(dir)?,
                opts: spool_options(&cfg.spool, cfg.enterprise_spool_budget()),
                tick: Duration::from_millis(cfg.spool.sync_interval_ms),
                sender: Arc::new(sender),
                hold: cfg.retry.hold_policy(),
                concurrency,
                detailed_events: cfg.diagnostics.recorder_events as u64,
                stash: None,
            })
        };
        let (enterprise_sink, trace_spool) = match spool_settings(
            "enterprise-traces",
            wire::WireSignal::Traces,
            cfg.trace_batcher.sink_concurrency,
        ) {
            Some(settings) => {
                #[cfg(feature = "analytics")]
                let on_appended = sqlite.clone().map(|store| {
                    Box::new(move |spans: &[opentelemetry_sdk::trace::SpanData]| {
                        store.enqueue(sqlite::Raw::Spans(spans.to_vec()))
                    }) as spooled::OnAppended
                });
                #[cfg(not(feature = "analytics"))]
                let on_appended = None;
                let spec = spooled::TraceSpoolSpec {
                    name: "enterprise".into(),
                    stats: counters.exporters.register("enterprise", "traces"),
                    on_close: None,
                };
                let (worker, control) =
                    spooled::spawn_traces(spec, settings, resource.clone(), &workers, on_appended)
                        .map_err(spool_err)?;
                (worker, Some(control))
            }
            None => (SinkWorker::spawn(enterprise_sink, &workers), None),
        };
        let sinks = tenant_sinks(cfg, extra_sinks, workers, &resource)?;
        // 5. The log batcher.
        let log_batcher = LogBatcher::spawn(
            backends.logs,
            LogBatcherSettings {
                capacity: cfg.export.log_queue_capacity,
                max_batch: cfg.export.log_max_batch_size,
                interval: Duration::from_millis(cfg.export.log_flush_interval_ms),
                timeout: Duration::from_millis(cfg.otlp.timeout_ms),
                hold: cfg.retry.hold_policy(),
                concurrency: cfg.export.log_concurrency,
            },
            counters.clone(),
            &handle,
            spool_settings(
                "enterprise-logs",
                wire::WireSignal::Logs,
                cfg.export.log_concurrency,
            ),
            resource.clone(),
            #[cfg(feature = "analytics")]
            sqlite.clone(),
        )
        .map_err(spool_err)?;
        let log_batcher_spool = log_batcher.spool.clone();
        // 6. The meter provider behind the counting exporter, and the logger provider.
        let metric_exporter =
            CountingMetricExporter::new(backends.metrics, counters.clone(), handle.clone());
        #[cfg(feature = "analytics")]
        let metric_exporter = metric_exporter.with_sqlite(sqlite.clone());
        let meter_provider = meter_provider(cfg, metric_exporter, &resource);
        let logger_provider = SdkLoggerProvider::builder().with_resource(resource).build();
        // 7. The mapping from cases to spans, log records and metrics.
        let mapper = Mapper::new(
            &cfg.export.namespace,
            cfg.export.include_content,
            table,
            &meter_provider.meter("telemetry-gateway"),
            redactor,
        );
        let logger = logger_provider.logger("telemetry-gateway");
        drop(_entered);
        Ok(ExportPipeline {
            #[cfg(feature = "analytics")]
            sqlite,
            rt,
            meter_provider,
            logger_provider,
            handles: Arc::new(ExportHandles {
                enterprise_sink,
                sinks,
                log_batcher,
                logger,
                mapper,
                sampling_ratio: cfg.otlp.sampling_ratio,
                spools: Spools {
                    traces: trace_spool,
                    logs: log_batcher_spool,
                    stream: std::sync::OnceLock::new(),
                },
            }),
        })
    }
}

/// The enterprise destination's backends, one per signal.
struct EnterpriseBackends {
    spans: sink::Target,
    logs: LogBackend,
    metrics: MetricBackend,
    /// Encoded requests' sender, for a disk spool (built only with one).
    wire: Option<wire::WireSender>,
}

/// `[spool]` as the options of a spool with `budget` bytes (its share of `spool.max_bytes`).
pub(crate) fn spool_options(
    s: &crate::config::SpoolSection,
    budget: u64,
) -> crate::spool::SpoolOptions {
    use crate::config::{SpoolSync, SpoolWhenFull};
    use crate::spool::{SpoolOptions, SyncPolicy, WhenFull};
    SpoolOptions {
        max_bytes: budget,
        segment_bytes: s.segment_for(budget),
        sync: match s.sync {
            SpoolSync::Always => SyncPolicy::Always,
            SpoolSync::Interval => SyncPolicy::Interval(Duration::from_millis(s.sync_interval_ms)),
            SpoolSync::Never => SyncPolicy::Never,
        },
        when_full: match s.when_full {
            SpoolWhenFull::DropNewest => WhenFull::DropNewest,
            SpoolWhenFull::DropOldest => WhenFull::DropOldest,
        },
    }
}

/// Step 1: the redactor, compiled before anything starts so a bad pattern fails cheaply.
fn build_redactor(cfg: &GatewayConfig) -> Result<Redactor, ExportBuildError> {
    Redactor::from_config(&cfg.redaction).map_err(|error| ExportBuildError::Redaction {
        key: error.key().to_owned(),
        error,
    })
}

/// Step 2: the export runtime: one worker thread for every exporter's I/O.
fn export_runtime() -> Result<tokio::runtime::Runtime, ExportBuildError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("telemetry-gateway-export")
        .enable_all()
        .build()
        .map_err(|e| ExportBuildError::Runtime(e.to_string()))
}

/// Step 2: the resource. `service.instance.id` tells this process's cumulative metric series
/// from those of other processes with the same service name (workers of one stream, replicas).
/// `export.resource_attributes` first, so `service.name` and `service.instance.id` are always the
/// gateway's own.
fn resource_of(cfg: &GatewayConfig) -> Resource {
    Resource::builder()
        .with_attributes(
            cfg.export
                .resource_attributes
                .iter()
                .map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(cfg.export.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            uuid::Uuid::new_v4().to_string(),
        ))
        .build()
}

/// Step 3: OTLP exporters when `otlp.endpoint` is set, else the local JSON lines file (or
/// nothing, with `export.local_output = "discard"`).
fn enterprise_backends(
    cfg: &GatewayConfig,
    resource: &Resource,
) -> Result<EnterpriseBackends, ExportBuildError> {
    // Spans and log records are encoded straight from the envelopes (`export::encode`) and sent
    // as they are, unless a destination needs SDK values: the JSON lines file, or the copy
    // `[sinks.sqlite]` keeps of what is exported.
    let values = cfg.sinks.sqlite.is_some();
    let frame = || encode::Frame::new(resource, &mapping::scope());
    let encoded = |sender: Option<wire::WireSender>| sink::Target::Wire {
        sender,
        frame: frame(),
        resource: resource.clone(),
    };
    let mut backends = match &cfg.otlp.endpoint {
        Some(endpoint) => {
            let mut headers = cfg.otlp.headers.clone();
            if let Some(key) = &cfg.otlp.api_key {
                headers.insert("authorization".into(), format!("Bearer {key}"));
            }
            let settings = OtlpSettings {
                key: "otlp.endpoint".into(),
                endpoint,
                protocol: cfg.otlp.protocol,
                headers,
                timeout: Duration::from_millis(cfg.otlp.timeout_ms),
                retry: retry_policy(&cfg.retry),
            };
            let metrics = MetricBackend::Otlp(settings.metrics()?);
            // With disk spools, spans and log records are sent as encoded requests from the
            // spools: no SDK span or log exporter is built (nothing would call it).
            match cfg.spool.kind {
                SpoolKind::Disk => EnterpriseBackends {
                    spans: sink::Target::Sink(Arc::new(DiscardSink::new("enterprise"))),
                    logs: LogBackend::Discard,
                    metrics,
                    wire: Some(settings.wire()?),
                },
                SpoolKind::Memory if !values => EnterpriseBackends {
                    spans: encoded(Some(settings.wire()?)),
                    logs: LogBackend::Wire(settings.wire()?),
                    metrics,
                    wire: None,
                },
                SpoolKind::Memory => {
                    let mut spans = settings.spans()?;
                    spans.set_resource(resource);
                    EnterpriseBackends {
                        spans: sink::Target::Sink(Arc::new(OtlpTraceSink::new(
                            "enterprise",
                            spans,
                        ))),
                        logs: LogBackend::Otlp(settings.logs()?),
                        metrics,
                        wire: None,
                    }
                }
            }
        }
        None if cfg.export.local_output == LocalOutput::Discard => EnterpriseBackends {
            spans: if values {
                sink::Target::Sink(Arc::new(DiscardSink::new("discard")))
            } else {
                encoded(None)
            },
            logs: LogBackend::Discard,
            metrics: MetricBackend::Discard,
            wire: None,
        },
        None => {
            let path = &cfg.export.file_path;
            let writer = JsonlWriter::open(path)
                .map_err(|e| ExportBuildError::File {
                    key: "export.file_path".into(),
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?
                .with_resource(resource);
            EnterpriseBackends {
                spans: sink::Target::Sink(Arc::new(JsonlTraceSink::new(
                    "enterprise",
                    writer.clone(),
                ))),
                logs: LogBackend::Jsonl(JsonlLogExporter::new(writer.clone())),
                metrics: MetricBackend::Jsonl(JsonlMetricExporter::new(writer)),
                wire: None,
            }
        }
    };
    backends.logs.set_resource(resource);
    Ok(backends)
}

#[cfg(feature = "analytics")]
fn sqlite_store(
    cfg: &GatewayConfig,
    counters: &Counters,
) -> Result<Option<sqlite::SqliteStore>, ExportBuildError> {
    let Some(sq) = &cfg.sinks.sqlite else {
        return Ok(None);
    };
    sqlite::SqliteStore::start(sq, counters)
        .map(Some)
        .map_err(|e| ExportBuildError::File {
            key: "sinks.sqlite.path".into(),
            path: sq.path.display().to_string(),
            error: e.to_string(),
        })
}

/// Step 4: the registry of tenant sinks, with `[[sinks]]` built now (so that a bad entry fails
/// start naming its key; the registry opens it, with this very sink the first time, when its
/// tenant's traces need it) and the host's sink instances.
fn tenant_sinks(
    cfg: &GatewayConfig,
    extra_sinks: Vec<(String, Option<String>, Arc<dyn TraceSink>)>,
    workers: SinkWorkerParams,
    resource: &Resource,
) -> Result<Arc<registry::SinkRegistry>, ExportBuildError> {
    let timeout = workers.timeout;
    let max_live = cfg.trace_batcher.max_live_sinks.max(1);
    // With a disk spool, each open OTLP tenant sink has a spool of its own share.
    let spool = match cfg.spool.dir_of("tenants") {
        Some(root) if cfg.spool.tenant_share_percent > 0 => Some(registry::TenantSpooling {
            root,
            opts: spool_options(&cfg.spool, cfg.spool.tenant_budget(max_live)),
            tick: Duration::from_millis(cfg.spool.sync_interval_ms),
            detailed_events: (cfg.diagnostics.recorder_events / max_live) as u64,
        }),
        _ => None,
    };
    let sinks = Arc::new(registry::SinkRegistry::new(
        max_live,
        registry::WorkerParams {
            worker: workers,
            retry: cfg.retry.clone(),
            resource: resource.clone(),
            spool,
        },
    ));
    for (i, s) in cfg.sinks.tenants.iter().enumerate() {
        let label = format!("sinks[{i}]");
        let registered = if sinks.sends_through_spool(s) {
            // Sent from its spool: checked by building its sender (the registry builds its own
            // at each opening), never an SDK exporter nothing would call.
            community_wire(&label, s, timeout, &cfg.retry)?;
            sinks.register_section(s.clone())
        } else {
            let built = build_community_sink(&label, s, timeout, &cfg.retry, resource)?;
            sinks.register_built_section(s.clone(), built)
        };
        registered.map_err(|e| ExportBuildError::Sink {
            key: label,
            error: e.to_string(),
        })?;
    }
    for (tenant_id, app_id, sink) in extra_sinks {
        sinks
            .register_instance(&tenant_id, app_id.as_deref(), sink)
            .map_err(|e| ExportBuildError::Sink {
                key: format!("trace_sink({tenant_id})"),
                error: e.to_string(),
            })?;
    }
    sinks.open_backlogged();
    Ok(sinks)
}

/// Step 6: the meter provider, reading every `otlp.metric_interval_ms` into the counting
/// exporter. Every instrument keeps at most `diagnostics.metric_cardinality_limit` attribute
/// sets; the SDK folds the rest into one `otel.metric.overflow = true` series, which the counting
/// exporter detects and reports (`telemetry_gateway_metric_cardinality_overflow`).
fn meter_provider(
    cfg: &GatewayConfig,
    exporter: CountingMetricExporter,
    resource: &Resource,
) -> SdkMeterProvider {
    let reader = PeriodicReader::builder(exporter)
        .with_interval(Duration::from_millis(cfg.otlp.metric_interval_ms))
        .build();
    let limit = cfg.diagnostics.metric_cardinality_limit;
    SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource.clone())
        .with_view(move |_: &opentelemetry_sdk::metrics::Instrument| {
            opentelemetry_sdk::metrics::Stream::builder()
                .with_cardinality_limit(limit)
                .build()
                .ok()
        })
        .build()
}

/// The OTLP exporter's own retry policy, from `[retry]`.
fn retry_policy(r: &crate::config::RetrySection) -> opentelemetry_otlp::RetryPolicy {
    opentelemetry_otlp::RetryPolicy::recommended()
        .with_max_retries(r.max_retries)
        .with_initial_delay(Duration::from_millis(r.initial_backoff_ms))
        .with_max_delay(Duration::from_millis(r.max_backoff_ms))
        .with_max_jitter(Duration::from_millis(r.max_jitter_ms))
}

/// The sender of a `kind = "otlp"` tenant sink's encoded requests (its disk spool's).
pub(crate) fn community_wire(
    label: &str,
    s: &SinkSection,
    timeout: Duration,
    retry: &crate::config::RetrySection,
) -> Result<wire::WireSender, ExportBuildError> {
    OtlpSettings {
        key: format!("{label}.endpoint"),
        endpoint: s.endpoint.as_deref().unwrap_or_default(),
        protocol: s.protocol,
        headers: s.headers.clone(),
        timeout,
        retry: retry_policy(retry),
    }
    .wire()
}

/// Builds the sink `s` describes; `label` names it in errors (`sinks[2]`, or a runtime sink's
/// name).
pub(crate) fn build_community_sink(
    label: &str,
    s: &SinkSection,
    timeout: Duration,
    retry: &crate::config::RetrySection,
    resource: &Resource,
) -> Result<Arc<dyn TraceSink>, ExportBuildError> {
    // A tenant's JSON lines carry the same resource as its OTLP exports would.
    match s.kind {
        SinkKind::Otlp => {
            let endpoint = s.endpoint.as_deref().unwrap_or_default();
            let settings = OtlpSettings {
                key: format!("{label}.endpoint"),
                endpoint,
                protocol: s.protocol,
                headers: s.headers.clone(),
                timeout,
                retry: retry_policy(retry),
            };
            let mut e = settings.spans()?;
            e.set_resource(resource);
            Ok(Arc::new(OtlpTraceSink::new(s.name.clone(), e)))
        }
        SinkKind::Jsonl => {
            let path = s.path.clone().unwrap_or_default();
            let w = JsonlWriter::open(&path)
                .map_err(|e| ExportBuildError::File {
                    key: format!("{label}.path"),
                    path: path.display().to_string(),
                    error: e.to_string(),
                })?
                .with_resource(resource);
            Ok(Arc::new(JsonlTraceSink::new(s.name.clone(), w)))
        }
    }
}
