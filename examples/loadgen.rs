//! The load generator: drives the whole gateway and a baseline side by side, in one process and
//! one run, and prints what it measured.
//!
//! ```text
//! cargo run --release --example loadgen --features testing,redis -- --mode trace|metric|mixed --events N [--rate R]
//!     [--dedup memory|redis --redis-url URL] [--exporter noop|otlp --endpoint URL]
//!     [--producers P] [--baseline otel-bsp|redis-pipeline|mpsc|none] [--duration-secs S]
//!     [--config PATH] [--outage FROM,TO] [--spool disk] [--json]
//! cargo run --release --example loadgen --features testing,redis -- --mode idle [--duration-secs 10] [--json]
//! cargo run --release --example loadgen --features testing,redis -- --mode queued --events N [--json]
//! cargo run --release --example loadgen --features testing,redis -- --mode stream --events N [--workers 1,2,4]
//!     [--redis-url URL] [--config PATH] [--json]
//! ```
//!
//! * `trace`: workflow runs of one `workflow_run` and 10 `node_execution` events each.
//!   `metric`: `app_created`, `feedback_created`, `tool_execution`, `moderation_check` in turn.
//!   `mixed`: alternately one of each.
//! * `--rate R` paces the producers to R events/s in total (default: as fast as they can).
//!   `--max-in-flight N` makes the producers closed-loop: they pause while more than N events
//!   are in flight, so the run measures the most the pipeline sustains without dropping (the
//!   baselines are closed-loop by nature: their producer does the work or waits for room).
//!   `--duration-secs S` stops producing after S seconds even if `--events` is not reached
//!   (for the overload run: `--rate` well above capacity for 30 s).
//! * `--exporter noop` (default) sets `export.local_output = "discard"`; `otlp` exports over
//!   OTLP gRPC to `--endpoint`, or to an in-process receiver that decodes and discards when no
//!   endpoint is given.
//! * `--outage FROM,TO` (with `--exporter otlp` and no `--endpoint`): the in-process receiver
//!   answers every request `Unavailable` from second FROM to second TO of the gateway's run (a
//!   collector restart); use `--baseline none`, the baseline run has no outage. The output
//!   gains `outage_secs`; `refused_at_emit` and `dropped` say what the outage cost.
//! * `--spool disk` (with `--exporter otlp`): the enterprise spans go through a disk spool in a
//!   temporary directory (`[spool] kind = "disk"`); the default baseline is then `memory-mode`,
//!   the same gateway and configuration with the in-memory queues, so `ratio` is the spool's
//!   cost. The output gains `spool_peak_bytes` (the directory's largest size, sampled every
//!   20 ms).
//! * `--payload-bytes B` adds a `B`-byte `outputs` string to every event's payload (payloads
//!   above `payloads.inline_threshold_bytes` are offloaded to the payload store).
//! * `--dedup redis` without `--redis-url` starts a private `redis-server` (it must be on PATH).
//! * Baselines (default: `otel-bsp` for trace and mixed, `redis-pipeline` with Redis dedup,
//!   `mpsc` otherwise), each given the same events and the same exporter:
//!   - `otel-bsp`: the same spans built with opentelemetry_sdk's tracer and its
//!     `BatchSpanProcessor` (same queue size, batch size and delay), no gateway;
//!   - `redis-pipeline`: the same dedup keys sent as pipelined `SET NX EX` on one multiplexed
//!     redis-rs connection, in batches of `metric_pool.batch_size`, no gateway;
//!   - `mpsc`: the same envelopes through one bare bounded `tokio::sync::mpsc` hop.
//! * `idle`: starts the gateway, does nothing for `--duration-secs` (default 10) and reports the
//!   CPU it used, as a percentage of one core.
//! * `queued`: freezes the gateway's intake, queues N events with empty payloads and reports
//!   the resident memory each one costs.
//! * `stream`: the Redis Streams transport (docs/deployment.md). For each count in `--workers`,
//!   this process is the producer (`transport.kind = "redis_streams"`) of N metric events, and
//!   that many worker processes (this binary again, running `GatewayBuilder::start_worker` with
//!   Redis dedup and the noop exporter) handle them; the run ends when the consumer group has
//!   read and acknowledged every entry. `events_per_sec` is events delivered by the workers
//!   over that time. Baselines in the same invocation and on the same Redis: `in-process` (the
//!   same events through one process's metric path with Redis dedup) and `stream-bare` (Redis
//!   alone: the same envelopes appended with pipelined `XADD` and read back with `XREADGROUP`
//!   and `XACK` by as many consumers as the largest worker count, with no handling), which is
//!   the ceiling Redis sets on this machine.
//!
//! `events_per_sec` is end to end: events delivered (an exporter accepted their output) divided
//! by the time from the first `emit()` until every event was delivered or dropped. `emit_ns` is
//! the time one `emit()` call takes, measured around every call (hdrhistogram). `e2e_ms` is the
//! gateway's own emit-to-export histogram. With `--json` the last line of stdout is one JSON
//! object: `{"mode", "events", "events_per_sec", "emit_ns": {"p50","p99","p999"},
//! "e2e_ms": {"p50","p99"}, "peak_rss_bytes", "dropped", "baseline": {"name","events_per_sec"},
//! "ratio", ...}` where `ratio` is ours / baseline and `emitted == delivered + sum(dropped)`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use telemetry_gateway::config::{DedupBackendKind, LocalOutput};
use telemetry_gateway::testing::{load_event, LoadMix, OtlpReceiver, RedisServer, Signal};
use telemetry_gateway::{GatewayConfig, TelemetryCase, TelemetryContext, TelemetryEnvelope};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Trace,
    Metric,
    Mixed,
    Idle,
    Queued,
    Stream,
}

#[derive(Debug, Clone)]
struct Args {
    mode: Mode,
    events: u64,
    rate: Option<f64>,
    dedup: DedupBackendKind,
    redis_url: Option<String>,
    otlp: bool,
    endpoint: Option<String>,
    producers: usize,
    baseline: Option<String>,
    duration: Option<Duration>,
    max_in_flight: Option<u64>,
    payload_bytes: usize,
    config: Option<PathBuf>,
    json: bool,
    workers: Vec<usize>,
    outage: Option<(f64, f64)>,
    spool: bool,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut a = Args {
        mode: Mode::Trace,
        events: 200_000,
        rate: None,
        dedup: DedupBackendKind::Memory,
        redis_url: None,
        otlp: false,
        endpoint: None,
        producers: 1,
        baseline: None,
        duration: None,
        max_in_flight: None,
        payload_bytes: 0,
        config: None,
        json: false,
        workers: vec![1],
        outage: None,
        spool: false,
    };
    let mut it = std::env::args().skip(1);
    let value = |name: &str, it: &mut dyn Iterator<Item = String>| {
        it.next().ok_or_else(|| format!("{name} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--mode" => {
                a.mode = match value("--mode", &mut it)?.as_str() {
                    "trace" => Mode::Trace,
                    "metric" => Mode::Metric,
                    "mixed" => Mode::Mixed,
                    "idle" => Mode::Idle,
                    "queued" => Mode::Queued,
                    "stream" => Mode::Stream,
                    other => return Err(format!("--mode: unknown mode {other:?}").into()),
                }
            }
            "--events" => a.events = value("--events", &mut it)?.parse()?,
            "--rate" => a.rate = Some(value("--rate", &mut it)?.parse()?),
            "--dedup" => {
                a.dedup = match value("--dedup", &mut it)?.as_str() {
                    "memory" => DedupBackendKind::Memory,
                    "redis" => DedupBackendKind::Redis,
                    other => return Err(format!("--dedup: unknown backend {other:?}").into()),
                }
            }
            "--redis-url" => a.redis_url = Some(value("--redis-url", &mut it)?),
            "--exporter" => {
                a.otlp = match value("--exporter", &mut it)?.as_str() {
                    "noop" => false,
                    "otlp" => true,
                    other => return Err(format!("--exporter: unknown exporter {other:?}").into()),
                }
            }
            "--endpoint" => a.endpoint = Some(value("--endpoint", &mut it)?),
            "--producers" => a.producers = value("--producers", &mut it)?.parse::<usize>()?.max(1),
            "--baseline" => a.baseline = Some(value("--baseline", &mut it)?),
            "--duration-secs" => {
                a.duration = Some(Duration::from_secs_f64(
                    value("--duration-secs", &mut it)?.parse()?,
                ))
            }
            "--max-in-flight" => {
                a.max_in_flight = Some(value("--max-in-flight", &mut it)?.parse()?)
            }
            "--payload-bytes" => a.payload_bytes = value("--payload-bytes", &mut it)?.parse()?,
            "--config" => a.config = Some(PathBuf::from(value("--config", &mut it)?)),
            "--json" => a.json = true,
            "--outage" => {
                let v = value("--outage", &mut it)?;
                let (from, to) = v
                    .split_once(',')
                    .ok_or("--outage: FROM,TO in seconds, for example 10,40")?;
                let (from, to): (f64, f64) = (from.trim().parse()?, to.trim().parse()?);
                if !(from >= 0.0 && to > from) {
                    return Err("--outage: FROM,TO with 0 <= FROM < TO".into());
                }
                a.outage = Some((from, to));
            }
            "--spool" => {
                a.spool = match value("--spool", &mut it)?.as_str() {
                    "disk" => true,
                    "memory" => false,
                    other => return Err(format!("--spool: memory or disk, not {other:?}").into()),
                }
            }
            "--workers" => {
                a.workers = value("--workers", &mut it)?
                    .split(',')
                    .map(|w| w.trim().parse::<usize>())
                    .collect::<Result<Vec<_>, _>>()?;
                if a.workers.is_empty() || a.workers.contains(&0) {
                    return Err(
                        "--workers: a comma-separated list of counts, each at least 1".into(),
                    );
                }
            }
            other => {
                return Err(format!("unknown argument {other:?} (see the example's docs)").into())
            }
        }
    }
    if let Some(r) = a.rate {
        if !(r.is_finite() && r > 0.0) {
            return Err("--rate must be a positive number of events per second".into());
        }
    }
    Ok(a)
}

/// The in-process receiver and the `--outage` window, for the gateway's run.
static OUTAGE: std::sync::OnceLock<(Arc<OtlpReceiver>, f64, f64)> = std::sync::OnceLock::new();

/// Starts the `--outage` window (if any) now: the receiver fails every request from FROM to TO.
fn start_outage(start: Instant) {
    if let Some((rx, from, to)) = OUTAGE.get() {
        let (rx, from, to) = (rx.clone(), *from, *to);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(from).saturating_sub(start.elapsed()));
            rx.fail_with(Some(tonic::Code::Unavailable));
            std::thread::sleep(Duration::from_secs_f64(to).saturating_sub(start.elapsed()));
            rx.fail_with(None);
        });
    }
}

/// With `--spool disk --outage FROM,TO`: the backlog on disk when the collector came back, how
/// fast it drained (against `--rate`), and the resident memory through the outage (a tenth in,
/// and at its end: flat when the backlog is on disk).
fn spool_outage_summary(timeline: &[(f64, u64, u64)], args: &Args) -> Value {
    let (Some((from, to)), true) = (args.outage, args.spool) else {
        return Value::Null;
    };
    let at = |t: f64| timeline.iter().find(|(s, _, _)| *s >= t);
    let backlog = at(to).map_or(0, |(_, e, _)| *e);
    let drained = timeline
        .iter()
        .find(|(s, e, _)| *s > to && *e <= backlog / 100)
        .map(|(s, _, _)| s - to);
    let drain_rate = drained.map(|d| backlog as f64 / d.max(1.0));
    let mib = |b: u64| b / (1 << 20);
    json!({
        "backlog_events_at_outage_end": backlog,
        "drain_secs": drained,
        "drain_events_per_sec": drain_rate,
        "drain_vs_rate": drain_rate.zip(args.rate).map(|(d, r)| d / r),
        "rss_mib_tenth_into_outage": at(from + (to - from) / 10.0).map(|(_, _, r)| mib(*r)),
        "rss_mib_at_outage_end": at(to).map(|(_, _, r)| mib(*r)),
        "rss_mib_max": timeline.iter().map(|(_, _, r)| mib(*r)).max(),
    })
}

/// Samples the size of a directory (`--spool disk`) every 20 ms on a thread of its own.
struct DirSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl DirSampler {
    fn start(dir: &std::path::Path) -> Self {
        fn size(dir: &std::path::Path) -> u64 {
            let mut total = 0;
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                match e.metadata() {
                    Ok(m) if m.is_dir() => total += size(&e.path()),
                    Ok(m) => total += m.len(),
                    Err(_) => {}
                }
            }
            total
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, dir) = (stop.clone(), dir.to_owned());
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(size(&dir));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        DirSampler { stop, thread }
    }

    /// Stops sampling; the largest size seen.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// Extra payload text (`--payload-bytes`), added to every event as its `outputs` field.
static EXTRA_PAYLOAD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Adds the `--payload-bytes` text to an event.
fn with_extra(env: TelemetryEnvelope) -> TelemetryEnvelope {
    match (EXTRA_PAYLOAD.get(), &env.payload) {
        (Some(text), telemetry_gateway::Payload::Inline(obj)) if !text.is_empty() => {
            let mut obj = obj.clone();
            obj.insert("outputs".into(), Value::String(text.clone()));
            env.with_payload(Value::Object(obj))
        }
        _ => env,
    }
}

/// The i-th event of a workload. Runs of 11 trace events (1 workflow run, 10 nodes); the metric
/// cases cycle. Every event gets a fresh UUIDv7, so dedup never hits.
fn make_event(mode: Mode, i: u64, producer: usize) -> TelemetryEnvelope {
    with_extra(make_plain_event(mode, i, producer))
}

fn make_plain_event(mode: Mode, i: u64, producer: usize) -> TelemetryEnvelope {
    let mix = match mode {
        Mode::Trace => LoadMix::Trace,
        Mode::Mixed => LoadMix::Mixed,
        _ => LoadMix::MetricLog,
    };
    load_event(mix, i, producer)
}

fn new_hist() -> Histogram<u64> {
    // 1 ns .. 10 s, 3 significant digits.
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("fixed valid bounds")
}

/// Paces one producer: event `i` is due at `start + i / per_producer_rate`.
fn pace(start: Instant, i: u64, per_producer_rate: Option<f64>) {
    if let Some(r) = per_producer_rate {
        let due = start + Duration::from_secs_f64(i as f64 / r);
        let now = Instant::now();
        if due > now + Duration::from_micros(200) {
            std::thread::sleep(due - now);
        }
    }
}

/// Peak resident set size of this process, in bytes (Linux `VmHWM`).
fn peak_rss() -> u64 {
    proc_status_kb("VmHWM:") * 1024
}

/// Current resident set size, in bytes (Linux `VmRSS`).
fn rss() -> u64 {
    proc_status_kb("VmRSS:") * 1024
}

fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets `VmHWM` so the peak measured belongs to what runs next (Linux >= 4.0).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which is in parentheses and may hold spaces).
            let rest = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the full line: 12 and 13 after ')'.
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

/// What one run of the gateway measured.
#[derive(Debug, Default)]
struct GatewayRun {
    emitted: u64,
    delivered: u64,
    dropped: BTreeMap<String, u64>,
    elapsed: Duration,
    emit_ns: Option<Histogram<u64>>,
    e2e_p50_ms: f64,
    e2e_p99_ms: f64,
    peak_rss: u64,
    exported_spans: u64,
    exported_logs: u64,
    deadline_exceeded: bool,
    refused_at_emit: u64,
    exporter_queue_full: BTreeMap<String, u64>,
    /// `--spool disk`: (seconds since the start, events on disk, resident bytes), once a second.
    timeline: Vec<(f64, u64, u64)>,
}

fn configure(
    args: &Args,
    redis_url: Option<&str>,
    endpoint: Option<&str>,
) -> Result<GatewayConfig, BoxError> {
    let mut cfg = GatewayConfig::load(args.config.as_deref())?;
    cfg.gateway.enterprise_enabled = true;
    cfg.dedup.backend = args.dedup;
    if let Some(url) = redis_url {
        cfg.dedup.redis_url = url.to_owned();
    }
    match endpoint {
        Some(ep) => cfg.otlp.endpoint = Some(ep.to_owned()),
        None => {
            cfg.otlp.endpoint = None;
            cfg.export.local_output = LocalOutput::Discard;
        }
    }
    Ok(cfg)
}

fn run_gateway(args: &Args, cfg: GatewayConfig) -> Result<GatewayRun, BoxError> {
    reset_peak_rss();
    let gateway = Arc::new(telemetry_gateway::start(cfg)?);
    let per_producer_rate = args.rate.map(|r| r / args.producers as f64);
    let per_producer = args.events / args.producers as u64;
    let extra = args.events % args.producers as u64;
    let stop_at = args.duration.map(|d| Instant::now() + d);
    let start = Instant::now();
    start_outage(start);
    // With --spool disk: the backlog on disk and the resident memory, once a second.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(args.spool));
    let sampler = {
        let (gateway, sampling) = (gateway.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                let events: u64 = gateway.diagnostics().spools.iter().map(|s| s.events).sum();
                samples.push((start.elapsed().as_secs_f64(), events, rss()));
                std::thread::sleep(Duration::from_secs(1));
            }
            samples
        })
    };
    let mut threads = Vec::new();
    for p in 0..args.producers {
        let gateway = gateway.clone();
        let mode = args.mode;
        let max_in_flight = args.max_in_flight;
        let n = per_producer + u64::from((p as u64) < extra);
        threads.push(std::thread::spawn(move || {
            let mut hist = new_hist();
            let mut emitted = 0u64;
            let mut refused = 0u64;
            for i in 0..n {
                if i.is_multiple_of(1024) && stop_at.is_some_and(|s| Instant::now() >= s) {
                    break;
                }
                pace(start, i, per_producer_rate);
                if let Some(max) = max_in_flight {
                    // Closed loop: keep the pipeline full, never overflowing.
                    while i.is_multiple_of(256) && gateway.stats().in_flight > max {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
                let env = make_event(mode, i, p);
                let t = Instant::now();
                if gateway.emit(env).is_err() {
                    refused += 1;
                }
                hist.saturating_record(t.elapsed().as_nanos() as u64);
                emitted += 1;
            }
            (hist, emitted, refused)
        }));
    }
    let mut hist = new_hist();
    let mut refused_at_emit = 0;
    for t in threads {
        let (h, _, refused) = t.join().map_err(|_| "a producer thread panicked")?;
        hist.add(h)
            .map_err(|e| format!("merging histograms: {e}"))?;
        refused_at_emit += refused;
    }
    // Settled: every emitted event delivered or dropped.
    let settle_deadline = Instant::now() + Duration::from_secs(60);
    while gateway.stats().in_flight > 0 && Instant::now() < settle_deadline {
        std::thread::sleep(Duration::from_micros(500));
    }
    let elapsed = start.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let timeline = sampler.join().unwrap_or_default();
    let diag = gateway.diagnostics();
    // Where queue_full drops happened inside the pipeline (the exporters' own queues).
    let exporter_queue_full: BTreeMap<String, u64> = diag
        .exporters
        .iter()
        .filter(|e| e.items_queue_full > 0)
        .map(|e| (format!("{}/{}", e.name, e.signal), e.items_queue_full))
        .collect();
    let peak = peak_rss();
    let report = gateway.shutdown_blocking(Duration::from_secs(10));
    let s = &report.stats;
    let e2e = match args.mode {
        Mode::Metric => &diag.emit_to_export.metric_log,
        _ => &diag.emit_to_export.trace,
    };
    Ok(GatewayRun {
        emitted: s.emitted,
        delivered: s.delivered,
        dropped: s.dropped.clone(),
        elapsed,
        emit_ns: Some(hist),
        e2e_p50_ms: e2e.p50 * 1000.0,
        e2e_p99_ms: e2e.p99 * 1000.0,
        peak_rss: peak,
        exported_spans: s.exported.spans,
        exported_logs: s.exported.log_records,
        deadline_exceeded: report.deadline_exceeded,
        refused_at_emit,
        exporter_queue_full,
        timeline,
    })
}

/// A baseline's result.
#[derive(Debug)]
struct BaselineRun {
    name: String,
    events: u64,
    elapsed: Duration,
    dropped: u64,
}

impl BaselineRun {
    fn per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

mod otel_bsp {
    //! The `otel-bsp` baseline: the same spans through the SDK's own batching.

    use super::*;
    use opentelemetry::trace::{
        SpanContext, SpanKind, TraceContextExt, TraceFlags, TraceState, Tracer, TracerProvider,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
    };

    /// Counts what its inner exporter accepted. The OTLP exporter runs on a tokio runtime
    /// (the SDK's batch thread has none), as a host would have to arrange too.
    #[derive(Debug)]
    pub(super) struct Counting {
        pub(super) inner: Option<Arc<opentelemetry_otlp::SpanExporter>>,
        pub(super) rt: Option<tokio::runtime::Handle>,
        pub(super) ok: Arc<AtomicU64>,
    }

    impl SpanExporter for Counting {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let n = batch.len() as u64;
            let res = match (&self.inner, &self.rt) {
                (Some(e), Some(rt)) => {
                    // The SDK's batch thread already runs its own executor: hand the export to
                    // the tokio runtime tonic needs and wait on a plain channel.
                    let (tx, rx) = std::sync::mpsc::channel();
                    let e = e.clone();
                    rt.spawn(async move {
                        let _ = tx.send(e.export(batch).await);
                    });
                    rx.recv().unwrap_or_else(|_| {
                        Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                            "export task lost".into(),
                        ))
                    })
                }
                _ => Ok(()),
            };
            if res.is_ok() {
                self.ok.fetch_add(n, Ordering::Relaxed);
            }
            res
        }
    }

    pub(super) fn run(
        args: &Args,
        cfg: &GatewayConfig,
        endpoint: Option<&str>,
    ) -> Result<BaselineRun, BoxError> {
        let ok = Arc::new(AtomicU64::new(0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let inner = match endpoint {
            Some(ep) => {
                let _g = rt.enter();
                use opentelemetry_otlp::WithExportConfig;
                Some(Arc::new(
                    opentelemetry_otlp::SpanExporter::builder()
                        .with_tonic()
                        .with_endpoint(ep)
                        .build()?,
                ))
            }
            None => None,
        };
        let exporter = Counting {
            inner,
            rt: Some(rt.handle().clone()),
            ok: ok.clone(),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(cfg.trace_batcher.queue_capacity)
            .with_max_export_batch_size(cfg.trace_batcher.max_batch_size)
            .with_scheduled_delay(Duration::from_millis(cfg.trace_batcher.flush_interval_ms))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(
                BatchSpanProcessor::builder(exporter)
                    .with_batch_config(batch)
                    .build(),
            )
            .build();
        let tracer = Arc::new(provider.tracer("loadgen-baseline"));
        let per_producer_rate = args.rate.map(|r| r / args.producers as f64);
        let per_producer = args.events / args.producers as u64;
        let ns = cfg.export.namespace.clone();
        let start = Instant::now();
        let mut threads = Vec::new();
        for p in 0..args.producers {
            let tracer = tracer.clone();
            let ns = ns.clone();
            let mode = args.mode;
            threads.push(std::thread::spawn(move || {
                let mut root = Context::new();
                let mut made = 0u64;
                for i in 0..per_producer {
                    pace(start, i, per_producer_rate);
                    let env = make_event(mode, i, p);
                    if !matches!(
                        env.case,
                        TelemetryCase::WorkflowRun | TelemetryCase::NodeExecution
                    ) {
                        continue;
                    }
                    made += 1;
                    let mut attrs = vec![
                        KeyValue::new("telemetry.case", env.case.as_str().to_owned()),
                        KeyValue::new("event.id", env.event_id.to_string()),
                        KeyValue::new("tenant.id", env.context.tenant_id.clone()),
                        KeyValue::new("app.id", env.context.app_id.clone().unwrap_or_default()),
                        KeyValue::new("user.id", env.context.user_id.clone().unwrap_or_default()),
                        KeyValue::new("correlation.id", env.effective_correlation_id()),
                        KeyValue::new("run.id", env.correlation.run_id.clone().unwrap_or_default()),
                    ];
                    if let telemetry_gateway::Payload::Inline(obj) = &env.payload {
                        for (k, v) in obj {
                            let key = format!("{ns}.{k}");
                            match v {
                                Value::Number(n) => {
                                    attrs.push(KeyValue::new(key, n.as_i64().unwrap_or(0)))
                                }
                                Value::Bool(b) => attrs.push(KeyValue::new(key, *b)),
                                Value::String(s) => attrs.push(KeyValue::new(key, s.clone())),
                                other => attrs.push(KeyValue::new(key, other.to_string())),
                            }
                        }
                    }
                    let end = env.created_at;
                    let begin = end.checked_sub(Duration::from_millis(40)).unwrap_or(end);
                    let name = if env.case == TelemetryCase::WorkflowRun {
                        format!("{ns}.workflow.run")
                    } else {
                        format!("{ns}.node.execution")
                    };
                    let builder = tracer
                        .span_builder(name)
                        .with_kind(SpanKind::Internal)
                        .with_start_time(begin)
                        .with_attributes(attrs);
                    if env.case == TelemetryCase::WorkflowRun {
                        let mut span = builder.start_with_context(&*tracer, &Context::new());
                        let sc = opentelemetry::trace::Span::span_context(&span).clone();
                        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
                        root = Context::new().with_remote_span_context(SpanContext::new(
                            sc.trace_id(),
                            sc.span_id(),
                            TraceFlags::SAMPLED,
                            false,
                            TraceState::default(),
                        ));
                    } else {
                        let mut span = builder.start_with_context(&*tracer, &root);
                        opentelemetry::trace::Span::end_with_timestamp(&mut span, end);
                    }
                }
                made
            }));
        }
        let mut made = 0;
        for t in threads {
            made += t.join().map_err(|_| "a baseline thread panicked")?;
        }
        let _ = provider.force_flush();
        let elapsed = start.elapsed();
        let exported = ok.load(Ordering::Relaxed);
        let _ = provider.shutdown();
        drop(rt);
        Ok(BaselineRun {
            name: "otel-bsp".into(),
            events: exported,
            elapsed,
            dropped: made.saturating_sub(exported),
        })
    }
}

/// The `redis-pipeline` baseline: the same keys, pipelined `SET NX EX` on one multiplexed
/// connection, `metric_pool.pool_size` batches in flight at once, no gateway.
fn redis_pipeline(args: &Args, cfg: &GatewayConfig, url: &str) -> Result<BaselineRun, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let batch = cfg.metric_pool.batch_size.max(1);
    let tasks = cfg.metric_pool.pool_size.max(1);
    let ttl = cfg.dedup.ttl_secs;
    let prefix = format!("{}-baseline", cfg.dedup.key_prefix);
    let events = args.events;
    let mode = args.mode;
    rt.block_on(async move {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        let start = Instant::now();
        let per_task = events / tasks as u64;
        let mut joins = Vec::new();
        for t in 0..tasks {
            let mut conn = conn.clone();
            let prefix = prefix.clone();
            joins.push(tokio::spawn(async move {
                let mut done = 0u64;
                let mut i = 0u64;
                while i < per_task {
                    let mut pipe = redis::pipe();
                    let end = (i + batch as u64).min(per_task);
                    for k in i..end {
                        let env = make_event(mode, k, t);
                        let key = format!("{prefix}:{}:{}", env.context.tenant_id, env.event_id);
                        pipe.cmd("SET").arg(key).arg(1).arg("NX").arg("EX").arg(ttl);
                    }
                    let res: redis::RedisResult<Vec<Option<String>>> =
                        pipe.query_async(&mut conn).await;
                    if res.is_ok() {
                        done += end - i;
                    }
                    i = end;
                }
                done
            }));
        }
        let mut done = 0;
        for j in joins {
            done += j.await?;
        }
        Ok(BaselineRun {
            name: "redis-pipeline".into(),
            events: done,
            elapsed: start.elapsed(),
            dropped: events - done,
        })
    })
}

/// The `mpsc` baseline: the same envelopes through one bare bounded tokio channel, the
/// consumer counting them.
fn mpsc_hop(args: &Args, cfg: &GatewayConfig) -> Result<BaselineRun, BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<TelemetryEnvelope>(cfg.gateway.queue_capacity);
    let consumer = rt.spawn(async move {
        let mut n = 0u64;
        while rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    let per_producer_rate = args.rate.map(|r| r / args.producers as f64);
    let per_producer = args.events / args.producers as u64;
    let start = Instant::now();
    let mut threads = Vec::new();
    for p in 0..args.producers {
        let tx = tx.clone();
        let mode = args.mode;
        threads.push(std::thread::spawn(move || {
            for i in 0..per_producer {
                pace(start, i, per_producer_rate);
                // Waits for room: the ceiling of one hop, with nothing dropped.
                if tx.blocking_send(make_event(mode, i, p)).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    for t in threads {
        t.join().map_err(|_| "a baseline thread panicked")?;
    }
    let n = rt.block_on(consumer)?;
    Ok(BaselineRun {
        name: "mpsc".into(),
        events: n,
        elapsed: start.elapsed(),
        dropped: args.events - n,
    })
}

fn idle(args: &Args) -> Result<Value, BoxError> {
    let cfg = configure(args, None, None)?;
    let gateway = telemetry_gateway::start(cfg)?;
    // Let start-up work finish before measuring.
    std::thread::sleep(Duration::from_millis(500));
    let secs = args.duration.unwrap_or(Duration::from_secs(10));
    let (cpu0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(secs);
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    let report = gateway.shutdown_blocking(Duration::from_secs(5));
    let pct = 100.0 * cpu.as_secs_f64() / wall.as_secs_f64();
    Ok(json!({
        "mode": "idle", "events": 0, "events_per_sec": 0.0,
        "emit_ns": {"p50": 0, "p99": 0, "p999": 0}, "e2e_ms": {"p50": 0.0, "p99": 0.0},
        "peak_rss_bytes": peak_rss(), "dropped": report.stats.dropped,
        "emitted": report.stats.emitted, "delivered": report.stats.delivered,
        "baseline": Value::Null, "ratio": Value::Null,
        "idle_secs": wall.as_secs_f64(), "cpu_secs": cpu.as_secs_f64(),
        "cpu_percent_of_one_core": pct,
    }))
}

fn queued(args: &Args) -> Result<Value, BoxError> {
    let mut cfg = configure(args, None, None)?;
    let n = args.events.max(1);
    cfg.gateway.queue_capacity = cfg.gateway.queue_capacity.max(n as usize);
    let gateway = telemetry_gateway::start(cfg)?;
    let freeze = gateway
        .freeze_intake_for_tests()
        .ok_or("could not freeze the gateway's intake")?;
    // Warm the allocator and the channel's first blocks, then measure.
    let ctx = TelemetryContext::tenant("acme").app("app-1").user("u-1");
    let template = TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx).with_run_id("run-1");
    let before = rss();
    let mut accepted = 0u64;
    for _ in 0..n {
        let mut env = template.clone();
        env.event_id = uuid::Uuid::now_v7();
        if gateway.emit(env).is_ok() {
            accepted += 1;
        }
    }
    let after = rss();
    drop(freeze);
    let report = gateway.shutdown_blocking(Duration::from_secs(30));
    let per_event = after.saturating_sub(before) as f64 / accepted.max(1) as f64;
    Ok(json!({
        "mode": "queued", "events": n, "events_per_sec": 0.0,
        "emit_ns": {"p50": 0, "p99": 0, "p999": 0}, "e2e_ms": {"p50": 0.0, "p99": 0.0},
        "peak_rss_bytes": peak_rss(), "dropped": report.stats.dropped,
        "emitted": report.stats.emitted, "delivered": report.stats.delivered,
        "baseline": Value::Null, "ratio": Value::Null,
        "queued": accepted, "rss_before_bytes": before, "rss_after_bytes": after,
        "bytes_per_queued_event": per_event,
        "envelope_struct_bytes": std::mem::size_of::<TelemetryEnvelope>(),
    }))
}

fn main() -> Result<(), BoxError> {
    // A worker process of `--mode stream` (started by this binary itself).
    let raw: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, config] = raw.as_slice() {
        if flag == stream::AS_WORKER {
            return stream::as_worker(config);
        }
    }
    let args = parse_args()?;
    let _ = EXTRA_PAYLOAD.set("x".repeat(args.payload_bytes));
    let out = match args.mode {
        Mode::Idle => idle(&args)?,
        Mode::Queued => queued(&args)?,
        Mode::Stream => stream::run(&args)?,
        _ => throughput(&args)?,
    };
    if !args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

fn throughput(args: &Args) -> Result<Value, BoxError> {
    // A private redis-server and OTLP receiver when none is given; kept alive for both runs.
    let mut _redis = None;
    let redis_url = match (&args.redis_url, args.dedup) {
        (Some(u), _) => Some(u.clone()),
        (None, DedupBackendKind::Redis) => {
            let r = RedisServer::start();
            let u = r.url();
            _redis = Some(r);
            Some(u)
        }
        (None, DedupBackendKind::Memory) => None,
    };
    let mut _receiver = None;
    let endpoint = match (&args.endpoint, args.otlp) {
        (Some(e), true) => Some(e.clone()),
        (None, true) => {
            let r = Arc::new(OtlpReceiver::start());
            for s in [Signal::Traces, Signal::Logs, Signal::Metrics] {
                r.discard(s);
            }
            let e = r.endpoint();
            if let Some((from, to)) = args.outage {
                let _ = OUTAGE.set((r.clone(), from, to));
            }
            _receiver = Some(r);
            Some(e)
        }
        (_, false) => None,
    };
    if args.outage.is_some() && OUTAGE.get().is_none() {
        return Err("--outage needs --exporter otlp without --endpoint".into());
    }
    let mut cfg = configure(args, redis_url.as_deref(), endpoint.as_deref())?;
    let memory_cfg = cfg.clone();
    let spool_dir = if args.spool {
        if !args.otlp {
            return Err("--spool disk needs --exporter otlp".into());
        }
        let dir = tempfile::tempdir()?;
        cfg.spool.kind = telemetry_gateway::config::SpoolKind::Disk;
        cfg.spool.path = Some(dir.path().to_owned());
        Some(dir)
    } else {
        None
    };
    let baseline_name = args.baseline.clone().unwrap_or_else(|| {
        if args.spool {
            return "memory-mode".to_owned();
        }
        match (args.mode, args.dedup) {
            (Mode::Metric, DedupBackendKind::Redis) => "redis-pipeline",
            (Mode::Metric, DedupBackendKind::Memory) => "mpsc",
            _ => "otel-bsp",
        }
        .to_owned()
    });

    let sampler = spool_dir.as_ref().map(|d| DirSampler::start(d.path()));
    let ours = run_gateway(args, cfg.clone())?;
    let spool_peak_bytes = sampler.map(DirSampler::stop);
    let baseline = match baseline_name.as_str() {
        "none" => None,
        "memory-mode" => {
            let m = run_gateway(args, memory_cfg)?;
            Some(BaselineRun {
                name: "memory-mode".into(),
                events: m.delivered,
                dropped: m.dropped.values().sum(),
                elapsed: m.elapsed,
            })
        }
        "otel-bsp" => Some(otel_bsp::run(args, &cfg, endpoint.as_deref())?),
        "redis-pipeline" => {
            let url = redis_url
                .as_deref()
                .ok_or("--baseline redis-pipeline needs --dedup redis")?;
            Some(redis_pipeline(args, &cfg, url)?)
        }
        "mpsc" => Some(mpsc_hop(args, &cfg)?),
        other => return Err(format!("--baseline: unknown baseline {other:?}").into()),
    };

    let per_sec = ours.delivered as f64 / ours.elapsed.as_secs_f64().max(1e-9);
    let h = ours.emit_ns.as_ref().map(|h| {
        (
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
        )
    });
    let (p50, p99, p999) = h.unwrap_or((0, 0, 0));
    let dropped_total: u64 = ours.dropped.values().sum();
    let mode = match args.mode {
        Mode::Trace => "trace",
        Mode::Metric => "metric",
        _ => "mixed",
    };
    Ok(json!({
        "mode": mode,
        "events": args.events,
        "emitted": ours.emitted,
        "delivered": ours.delivered,
        "events_per_sec": per_sec,
        "emit_ns": {"p50": p50, "p99": p99, "p999": p999},
        "e2e_ms": {"p50": ours.e2e_p50_ms, "p99": ours.e2e_p99_ms},
        "peak_rss_bytes": ours.peak_rss,
        "dropped": ours.dropped,
        "dropped_total": dropped_total,
        "refused_at_emit": ours.refused_at_emit,
        "exporter_queue_full": ours.exporter_queue_full,
        "max_in_flight": args.max_in_flight,
        "outage_secs": args.outage.map(|(from, to)| json!([from, to])),
        "spool_peak_bytes": spool_peak_bytes,
        "spool_outage": spool_outage_summary(&ours.timeline, args),
        "accounted": ours.emitted == ours.delivered + dropped_total,
        "elapsed_secs": ours.elapsed.as_secs_f64(),
        "exported": {"spans": ours.exported_spans, "log_records": ours.exported_logs},
        "shutdown_deadline_exceeded": ours.deadline_exceeded,
        "producers": args.producers,
        "rate": args.rate,
        "dedup": match args.dedup { DedupBackendKind::Redis => "redis", DedupBackendKind::Memory => "memory" },
        "exporter": if args.otlp { "otlp" } else { "noop" },
        "baseline": baseline.as_ref().map(|b| json!({
            "name": b.name, "events_per_sec": b.per_sec(), "events": b.events,
            "dropped": b.dropped, "elapsed_secs": b.elapsed.as_secs_f64(),
        })),
        "ratio": baseline.as_ref().map(|b| per_sec / b.per_sec().max(1e-9)),
    }))
}

mod stream {
    //! `--mode stream`: producer here, workers in child processes, Redis between them.

    use std::io::{BufRead, Write};
    use std::process::{Child, Command, Stdio};

    use telemetry_gateway::config::TransportKind;

    use super::*;

    /// The hidden argument that makes this binary a worker: `loadgen --as-worker CONFIG`.
    pub(super) const AS_WORKER: &str = "--as-worker";

    /// A worker process: starts the worker runtime from CONFIG, says `ready`, and drains when
    /// its stdin closes or says `stop`; prints its ledger as one JSON line.
    pub(super) fn as_worker(config: &str) -> Result<(), BoxError> {
        let cfg = GatewayConfig::load(Some(std::path::Path::new(config)))?;
        let worker = telemetry_gateway::GatewayBuilder::new(cfg).start_worker()?;
        println!("ready");
        std::io::stdout().flush()?;
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line)? > 0 && line.trim() != "stop" {
            line.clear();
        }
        let report = worker.shutdown_blocking(Duration::from_secs(60));
        println!("{}", serde_json::to_string(&report.stats)?);
        Ok(())
    }

    /// The consumer group's `entries-read`, `lag` and `pending` (`XINFO GROUPS`).
    fn group_state(
        c: &mut redis::Connection,
        stream: &str,
        group: &str,
    ) -> Option<(u64, u64, u64)> {
        let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query(c)
            .ok()?;
        for g in groups {
            let mut fields: BTreeMap<String, redis::Value> = BTreeMap::new();
            for pair in g.chunks(2) {
                if let [k, v] = pair {
                    if let Ok(k) = redis::from_redis_value::<String>(k.clone()) {
                        fields.insert(k, v.clone());
                    }
                }
            }
            let name: Option<String> = fields
                .get("name")
                .and_then(|v| redis::from_redis_value(v.clone()).ok());
            if name.as_deref() != Some(group) {
                continue;
            }
            let n = |k: &str| -> u64 {
                fields
                    .get(k)
                    .and_then(|v| redis::from_redis_value::<u64>(v.clone()).ok())
                    .unwrap_or(u64::MAX)
            };
            return Some((n("entries-read"), n("lag"), n("pending")));
        }
        None
    }

    fn stream_config(base: &GatewayConfig, url: &str, stream: &str) -> GatewayConfig {
        let mut c = base.clone();
        c.transport.kind = TransportKind::RedisStreams;
        c.transport.redis_url = url.to_owned();
        c.transport.stream = stream.to_owned();
        c.dedup.backend = DedupBackendKind::Redis;
        c.dedup.redis_url = url.to_owned();
        c
    }

    struct WorkerProc {
        child: Child,
    }

    impl WorkerProc {
        fn spawn(config: &std::path::Path, name: &str) -> Result<Self, BoxError> {
            let mut child = Command::new(std::env::current_exe()?)
                .arg(AS_WORKER)
                .arg(config)
                .env("TELEMETRY_GATEWAY__TRANSPORT__CONSUMER", name)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            // Wait for `ready`, so the run's clock does not include start-up.
            let out = child.stdout.as_mut().ok_or("worker stdout")?;
            let mut line = String::new();
            std::io::BufReader::new(out).read_line(&mut line)?;
            if line.trim() != "ready" {
                return Err(format!("worker {name} did not start: {line:?}").into());
            }
            Ok(WorkerProc { child })
        }

        /// Drains the worker and returns its ledger.
        fn stop(mut self) -> Result<Value, BoxError> {
            if let Some(mut stdin) = self.child.stdin.take() {
                let _ = writeln!(stdin, "stop");
            }
            let out = self.child.wait_with_output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let last = text.lines().last().ok_or("the worker printed no ledger")?;
            Ok(serde_json::from_str(last)?)
        }
    }

    /// One run with `workers` worker processes.
    fn with_workers(
        args: &Args,
        base: &GatewayConfig,
        url: &str,
        workers: usize,
        dir: &std::path::Path,
    ) -> Result<Value, BoxError> {
        let stream = format!("loadgen:{}:{workers}", uuid::Uuid::new_v4());
        let mut wc = stream_config(base, url, &stream);
        wc.export.local_output = LocalOutput::Discard;
        wc.otlp.endpoint = None;
        let path = dir.join(format!("worker-{workers}.toml"));
        std::fs::write(&path, toml::to_string(&wc)?)?;
        let procs = (0..workers)
            .map(|i| WorkerProc::spawn(&path, &format!("loadgen-{workers}-{i}")))
            .collect::<Result<Vec<_>, _>>()?;

        let mut pc = stream_config(base, url, &stream);
        pc.export.local_output = LocalOutput::Discard;
        pc.otlp.endpoint = None;
        let producer = telemetry_gateway::start(pc)?;
        let mut c = redis::Client::open(url)?.get_connection()?;
        let group = wc.transport.group.clone();
        let start = Instant::now();
        let mut refused = 0u64;
        for i in 0..args.events {
            if let Some(max) = args.max_in_flight {
                while i.is_multiple_of(256) && producer.stats().in_flight > max {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            if producer.emit(make_event(Mode::Metric, i, 0)).is_err() {
                refused += 1;
            }
        }
        let produced = producer.shutdown_blocking(Duration::from_secs(60));
        let appended = produced.stats.delivered;
        // Drained: every appended entry read by the group and acknowledged.
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some((read, lag, pending)) = group_state(&mut c, &stream, &group) {
                if read >= appended && lag == 0 && pending == 0 {
                    break;
                }
            }
            if Instant::now() >= deadline {
                return Err(format!("the workers did not drain {stream} within 600 s").into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let elapsed = start.elapsed();
        let ledgers = procs
            .into_iter()
            .map(WorkerProc::stop)
            .collect::<Result<Vec<_>, _>>()?;
        let sum = |k: &str| -> u64 { ledgers.iter().map(|l| l[k].as_u64().unwrap_or(0)).sum() };
        let mut worker_dropped: BTreeMap<String, u64> = BTreeMap::new();
        for l in &ledgers {
            if let Some(d) = l["dropped"].as_object() {
                for (k, v) in d {
                    *worker_dropped.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
                }
            }
        }
        let (w_read, w_delivered) = (sum("emitted"), sum("delivered"));
        let w_dropped: u64 = worker_dropped.values().sum();
        let _: u64 = redis::cmd("DEL").arg(&stream).query(&mut c).unwrap_or(0);
        let p = &produced.stats;
        Ok(json!({
            "workers": workers,
            "events_per_sec": w_delivered as f64 / elapsed.as_secs_f64().max(1e-9),
            "elapsed_secs": elapsed.as_secs_f64(),
            "producer": {"emitted": p.emitted, "appended": appended, "dropped": p.dropped,
                         "refused_at_emit": refused},
            "workers_read": w_read,
            "workers_delivered": w_delivered,
            "workers_dropped": worker_dropped,
            "accounted": p.emitted == p.delivered + p.dropped_total()
                && w_read == w_delivered + w_dropped
                && w_delivered == appended,
        }))
    }

    /// Redis alone: the same envelopes through `XADD` and `XREADGROUP` + `XACK`.
    fn stream_bare(
        args: &Args,
        url: &str,
        consumers: usize,
        batch: usize,
    ) -> Result<BaselineRun, BoxError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let events = args.events;
        let stream = format!("loadgen:bare:{}", uuid::Uuid::new_v4());
        rt.block_on(async move {
            let client = redis::Client::open(url)?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let _: () = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg("g")
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut conn)
                .await?;
            let start = Instant::now();
            let producer = {
                let (mut conn, stream) = (conn.clone(), stream.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while i < events {
                        let end = (i + 256).min(events);
                        let mut pipe = redis::pipe();
                        for k in i..end {
                            let json = make_event(Mode::Metric, k, 0).to_json().unwrap_or_default();
                            pipe.cmd("XADD")
                                .arg(&stream)
                                .arg("*")
                                .arg("envelope")
                                .arg(json)
                                .ignore();
                        }
                        let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
                        i = end;
                    }
                })
            };
            let done = Arc::new(AtomicU64::new(0));
            let mut joins = Vec::new();
            for k in 0..consumers {
                let (client, stream, done) = (client.clone(), stream.clone(), done.clone());
                joins.push(tokio::spawn(async move {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    while done.load(Ordering::Relaxed) < events {
                        let r: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                            .arg("GROUP")
                            .arg("g")
                            .arg(format!("c{k}"))
                            .arg("COUNT")
                            .arg(batch)
                            .arg("BLOCK")
                            .arg(50)
                            .arg("STREAMS")
                            .arg(&stream)
                            .arg(">")
                            .query_async(&mut conn)
                            .await?;
                        let ids: Vec<String> = r
                            .keys
                            .into_iter()
                            .flat_map(|k| k.ids.into_iter().map(|e| e.id))
                            .collect();
                        if ids.is_empty() {
                            continue;
                        }
                        let _: u64 = redis::cmd("XACK")
                            .arg(&stream)
                            .arg("g")
                            .arg(&ids)
                            .query_async(&mut conn)
                            .await?;
                        done.fetch_add(ids.len() as u64, Ordering::Relaxed);
                    }
                    Ok::<_, redis::RedisError>(())
                }));
            }
            producer.await?;
            for j in joins {
                j.await??;
            }
            let elapsed = start.elapsed();
            let _: u64 = redis::cmd("DEL")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .unwrap_or(0);
            let n = done.load(Ordering::Relaxed);
            Ok(BaselineRun {
                name: "stream-bare".into(),
                events: n,
                elapsed,
                dropped: events.saturating_sub(n),
            })
        })
    }

    pub(super) fn run(args: &Args) -> Result<Value, BoxError> {
        let mut _redis = None;
        let url = match &args.redis_url {
            Some(u) => u.clone(),
            None => {
                let r = RedisServer::start();
                let u = r.url();
                _redis = Some(r);
                u
            }
        };
        let dir = tempfile::tempdir()?;
        let mut base = GatewayConfig::load(args.config.as_deref())?;
        base.gateway.enterprise_enabled = true;

        // Baselines first, on the same Redis.
        let mut in_process_args = args.clone();
        in_process_args.mode = Mode::Metric;
        in_process_args.dedup = DedupBackendKind::Redis;
        let ours_in_process = run_gateway(
            &in_process_args,
            configure(&in_process_args, Some(&url), None)?,
        )?;
        let in_process_rate =
            ours_in_process.delivered as f64 / ours_in_process.elapsed.as_secs_f64().max(1e-9);
        let max_workers = args.workers.iter().copied().max().unwrap_or(1);
        let bare = stream_bare(
            args,
            &url,
            max_workers * base.metric_pool.pool_size.max(1),
            base.metric_pool.batch_size.max(1),
        )?;

        let mut runs = Vec::new();
        for &w in &args.workers {
            runs.push(with_workers(args, &base, &url, w, dir.path())?);
        }
        let first = runs
            .first()
            .and_then(|r| r["events_per_sec"].as_f64())
            .unwrap_or(0.0);
        for r in &mut runs {
            let rate = r["events_per_sec"].as_f64().unwrap_or(0.0);
            r["ratio_vs_in_process"] = json!(rate / in_process_rate.max(1e-9));
            r["ratio_vs_stream_bare"] = json!(rate / bare.per_sec().max(1e-9));
            r["ratio_vs_first_run"] = json!(rate / first.max(1e-9));
        }
        let accounted = runs.iter().all(|r| r["accounted"] == true);
        let best = runs
            .iter()
            .filter_map(|r| r["events_per_sec"].as_f64())
            .fold(0.0, f64::max);
        Ok(json!({
            "mode": "stream",
            "events": args.events,
            "events_per_sec": best,
            "accounted": accounted,
            "pool_size_per_worker": base.metric_pool.pool_size,
            "runs": runs,
            "baseline": {
                "in_process": {"name": "in-process", "events_per_sec": in_process_rate,
                               "delivered": ours_in_process.delivered,
                               "dropped": ours_in_process.dropped},
                "stream_bare": {"name": bare.name, "events_per_sec": bare.per_sec(),
                                "events": bare.events, "consumers": max_workers * base.metric_pool.pool_size.max(1)},
            },
        }))
    }
}
