//! Reliability suite, scenario 5: the collector is away, then back. In its own test binary so
//! that the RSS it measures is this gateway's alone (tests in one binary run in parallel threads
//! of one process).
//!
//! The memory mode uses the memory it has: while the exporter is held, events wait in the bounded
//! queues in front of it (each actor waits for room rather than dropping), and once every queue
//! is full `emit()` refuses with `QueueFull`: the caller sees each refusal, nothing is dropped
//! inside.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use telemetry_gateway::diagnostics::recorder::Stage;
use telemetry_gateway::testing::{OtlpReceiver, Received};
use telemetry_gateway::{
    start, EmitError, GatewayConfig, GatewayHandle, ReasonCode, TelemetryCase, TelemetryContext,
    TelemetryEnvelope,
};

fn seqs(r: &Received) -> HashSet<i64> {
    support::span_seqs(r).0
}

fn trace_event(seq: u64) -> TelemetryEnvelope {
    TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
        .with_run_id(format!("run-{seq}"))
        .with_payload(json!({"seq": seq}))
}

fn metric_event(seq: u64) -> TelemetryEnvelope {
    TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("t"))
        .with_payload(json!({"seq": seq}))
}

use support::rss_bytes;

/// The tests of this binary run one at a time, so the RSS one measures is its gateway's alone.
static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// The capacities a test gives the queues (batches of 50 trace events).
struct Queues {
    trace: usize,
    sink_batches: usize,
    logs: usize,
    metric_per_handler: usize,
    gateway: usize,
}

/// A gateway exporting to `rx` with short retries (a test's outage ends in seconds) and these
/// queue capacities.
fn outage_config(rx: &OtlpReceiver, q: Queues) -> (GatewayConfig, tempfile::TempDir) {
    let (mut c, d) = support::config();
    c.otlp.endpoint = Some(rx.endpoint());
    c.otlp.timeout_ms = 2_000;
    c.retry.outage_backoff_max_ms = 500;
    c.trace_batcher.queue_capacity = q.trace;
    c.trace_batcher.max_batch_size = 50;
    c.trace_batcher.sink_queue_batches = q.sink_batches;
    c.export.log_queue_capacity = q.logs;
    c.metric_pool.queue_capacity = q.metric_per_handler;
    c.gateway.queue_capacity = q.gateway;
    (c, d)
}

/// Waits (up to a minute) until nothing is in flight, then shuts down.
fn settle_and_shut_down(gw: GatewayHandle) -> telemetry_gateway::ShutdownReport {
    let end = Instant::now() + Duration::from_secs(60);
    while gw.stats().in_flight > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.shutdown_blocking(support::DEADLINE)
}

/// What one outage run saw from the host's side.
#[derive(Debug, Default)]
struct Emitted {
    accepted_traces: u64,
    accepted_metrics: u64,
    refused: u64,
    max_depth: BTreeMap<String, (usize, usize)>,
    rss_max: u64,
}

/// Emits `per_tick` trace events and as many metric/log events every 10 ms for `outage`, with
/// the receiver failing every request; then lets the receiver accept again.
fn emit_through_outage(
    gw: &GatewayHandle,
    rx: &OtlpReceiver,
    outage: Duration,
    per_tick: u64,
) -> Emitted {
    let mut seen = Emitted {
        rss_max: rss_bytes(),
        ..Emitted::default()
    };
    rx.fail_with(Some(tonic::Code::Unavailable));
    let started = Instant::now();
    let mut seq = 0u64;
    let mut tick = 0u32;
    while started.elapsed() < outage {
        for _ in 0..per_tick {
            match gw.emit(trace_event(seq)) {
                Ok(_) => seen.accepted_traces += 1,
                Err(EmitError::QueueFull) => seen.refused += 1,
                Err(e) => panic!("emit failed otherwise: {e}"),
            }
            match gw.emit(metric_event(seq)) {
                Ok(_) => seen.accepted_metrics += 1,
                Err(EmitError::QueueFull) => seen.refused += 1,
                Err(e) => panic!("emit failed otherwise: {e}"),
            }
            seq += 1;
        }
        tick += 1;
        if tick.is_multiple_of(10) {
            for q in gw.diagnostics().queues {
                let e = seen.max_depth.entry(q.name).or_insert((0, q.capacity));
                e.0 = e.0.max(q.depth);
            }
            seen.rss_max = seen.rss_max.max(rss_bytes());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    rx.fail_with(None);
    seen
}

/// Every queue stayed within its capacity.
fn assert_bounded(seen: &Emitted) {
    for (name, (depth, cap)) in &seen.max_depth {
        assert!(depth <= cap, "queue {name} held {depth} > {cap}");
    }
}

/// An outage shorter than the queues' capacity over the event rate loses nothing, even when the
/// queues inside are small: each full one makes the actor before it wait, and the gateway
/// queue holds the rest. Every span and every log record (companions and metric/log events)
/// arrives once the collector is back.
#[test]
fn an_outage_that_fits_in_the_queues_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock();
    let rx = OtlpReceiver::start();
    // Small queues inside, so every wait for room is exercised; the gateway queue holds all.
    let queues = Queues {
        trace: 300,
        sink_batches: 2,
        logs: 400,
        metric_per_handler: 50,
        gateway: 20_000,
    };
    let (mut c, _d) = outage_config(&rx, queues);
    c.export.log_max_batch_size = 100;
    let gw = start(c).unwrap();
    let seen = emit_through_outage(&gw, &rx, Duration::from_secs(6), 10);
    assert_eq!(seen.refused, 0, "everything fitted: {seen:?}");
    assert_bounded(&seen);
    let events = seen.accepted_traces + seen.accepted_metrics;
    let report = settle_and_shut_down(gw);
    let s = &report.stats;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(s.emitted, events, "{s:?}");
    assert_eq!(s.delivered, events, "nothing dropped: {s:?}");
    assert_eq!(s.dropped_total(), 0, "{s:?}");
    assert_eq!(s.companion_logs_dropped, 0, "{s:?}");
    let r = rx.received();
    assert_eq!(
        seqs(&r).len() as u64,
        seen.accepted_traces,
        "every span arrived"
    );
    // One companion record per span and one record per metric/log event.
    assert_eq!(r.log_count, events, "every log record arrived");
    eprintln!(
        "outage that fits: {events} events, max depths {:?}",
        seen.max_depth
    );
}

/// An outage longer than the queues hold: once every queue in front of the held exporter is
/// full, `emit()` refuses (`QueueFull`, counted), nothing is dropped inside, memory stays within
/// the bounds, and everything accepted arrives after the outage.
#[test]
fn an_outage_longer_than_the_queues_refuses_at_emit_and_drops_nothing_inside() {
    let _one = ONE_AT_A_TIME.lock();
    let rx = OtlpReceiver::start();
    let queues = Queues {
        trace: 500,
        sink_batches: 4,
        logs: 2_000,
        metric_per_handler: 100,
        gateway: 1_000,
    };
    let (c, _d) = outage_config(&rx, queues);
    let gw = start(c).unwrap();
    // Warm up so the baseline RSS includes the connections and runtimes.
    for seq in 0..100 {
        gw.emit(trace_event(1_000_000 + seq)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_bytes();
    let seen = emit_through_outage(&gw, &rx, Duration::from_secs(8), 5);
    assert_bounded(&seen);
    assert!(
        seen.refused > 0,
        "an outage this long must fill every queue: {seen:?}"
    );
    let report = settle_and_shut_down(gw);
    let s = &report.stats;
    assert!(report.is_clean(), "{report:?}");
    let accepted = seen.accepted_traces + seen.accepted_metrics + 100;
    assert_eq!(
        s.dropped_for(ReasonCode::QueueFull),
        seen.refused,
        "the refusals at emit() are the only drops: {s:?}"
    );
    assert_eq!(s.dropped_total(), seen.refused, "{s:?}");
    assert_eq!(s.delivered, accepted, "everything accepted arrives: {s:?}");
    assert_eq!(s.companion_logs_dropped, 0, "{s:?}");
    let r = rx.received();
    assert_eq!(seqs(&r).len() as u64, seen.accepted_traces + 100);
    assert_eq!(r.log_count, accepted);
    let growth = seen.rss_max.saturating_sub(rss_before);
    eprintln!(
        "outage: accepted {accepted}, refused {}, RSS growth {} KiB, max depths {:?}",
        seen.refused,
        growth / 1024,
        seen.max_depth
    );
    // The queues hold a few thousand events; 64 MiB leaves room for allocator noise, not a leak.
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS grew by {growth} bytes during the outage"
    );
}

/// Shutdown while the collector is still away and every queue is full: it returns within its
/// deadline, calls no actor lost (the actors waiting for room are alive), and counts the backlog
/// as `shutdown`, so the ledger balances.
#[test]
fn shutdown_during_an_outage_with_full_queues_is_bounded_and_balanced() {
    let _one = ONE_AT_A_TIME.lock();
    let rx = OtlpReceiver::start();
    let queues = Queues {
        trace: 200,
        sink_batches: 2,
        logs: 200,
        metric_per_handler: 50,
        gateway: 500,
    };
    let (c, _d) = outage_config(&rx, queues);
    let gw = start(c).unwrap();
    rx.fail_with(Some(tonic::Code::Unavailable));
    let mut refused = 0u64;
    let mut seq = 0u64;
    while refused < 100 {
        for env in [trace_event(seq), metric_event(seq)] {
            if let Err(EmitError::QueueFull) = gw.emit(env) {
                refused += 1;
            }
        }
        seq += 1;
        if seq.is_multiple_of(100) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let deadline = Duration::from_secs(2);
    let began = Instant::now();
    let report = gw.shutdown_blocking(deadline);
    let took = began.elapsed();
    let s = &report.stats;
    assert!(
        took < deadline + Duration::from_secs(2),
        "shutdown took {took:?}"
    );
    assert!(report.actors_lost.is_empty(), "{report:?}");
    assert!(s.is_settled(), "{s:?}");
    assert_eq!(s.emitted, s.delivered + s.dropped_total(), "{s:?}");
    assert_eq!(s.dropped_for(ReasonCode::QueueFull), refused, "{s:?}");
    assert!(s.dropped_for(ReasonCode::Shutdown) > 0, "{s:?}");
}

/// A gateway whose enterprise spans and log records go through disk spools under `dir`.
fn spooled(c: &mut GatewayConfig, dir: &std::path::Path) {
    c.spool.kind = telemetry_gateway::config::SpoolKind::Disk;
    c.spool.path = Some(dir.to_owned());
}

/// Emits `n` trace events and `n` metric/log events (seq from `first`), paced at about 2,000
/// a second; returns how many `emit()` refused.
fn emit_both(gw: &GatewayHandle, first: u64, n: u64) -> u64 {
    let mut refused = 0;
    for seq in first..first + n {
        for env in [trace_event(seq), metric_event(seq)] {
            match gw.emit(env) {
                Ok(_) => {}
                Err(EmitError::QueueFull) => refused += 1,
                Err(e) => panic!("emit failed otherwise: {e}"),
            }
        }
        if seq % 10 == 9 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    refused
}

/// With disk spools the same small queues carry an outage that would fill them: spans and log
/// records wait on disk, `emit()` refuses nothing, and every span and every log record (the
/// companions and the metric/log events') arrives once the collector is back.
#[test]
fn a_disk_spool_carries_an_outage_longer_than_the_queues() {
    let _one = ONE_AT_A_TIME.lock();
    let rx = OtlpReceiver::start();
    let queues = Queues {
        trace: 300,
        sink_batches: 2,
        logs: 400,
        metric_per_handler: 50,
        gateway: 1_000,
    };
    let (mut c, d) = outage_config(&rx, queues);
    spooled(&mut c, &d.path().join("spool"));
    c.diagnostics.unready_after_failing_secs = 1;
    // The spools follow 1,000 events each in detail; the rest of the backlog is tallied (its
    // memory does not grow with the backlog), and must count the same.
    c.diagnostics.recorder_events = 1_000;
    let gw = start(c).unwrap();
    rx.fail_with(Some(tonic::Code::Unavailable));
    let n = 4_000;
    let refused = emit_both(&gw, 0, n);
    let last_id = {
        let e = trace_event(n);
        let id = e.event_id.to_string();
        gw.emit(e).unwrap();
        gw.emit(metric_event(n)).unwrap();
        id
    };
    let n = n + 1;
    let on_disk = dir_bytes(&d.path().join("spool"));
    // Visible: both spools hold a backlog, and /readyz says so.
    let during = gw.diagnostics();
    let names: Vec<&str> = during.spools.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["enterprise", "enterprise logs"], "{during:?}");
    for sp in &during.spools {
        assert!(sp.events > 0 && sp.appends > 0 && sp.bytes > 0, "{sp:?}");
        assert!(
            sp.bytes <= sp.max_bytes && sp.oldest_age_secs >= 1.0,
            "{sp:?}"
        );
        assert_eq!((sp.corrupt_records, sp.io_errors), (0, 0), "{sp:?}");
    }
    let disk_events: u64 = during.spools.iter().map(|s| s.events).sum();
    assert!(disk_events <= 2 * n, "{during:?}");
    let reasons = during.readiness.reasons.join("; ");
    assert!(
        reasons.contains("spool enterprise backlog growing")
            && reasons.contains("spool enterprise logs backlog growing"),
        "{reasons}"
    );
    let text = telemetry_gateway::diagnostics::prometheus::render(&during);
    assert!(
        text.contains("telemetry_gateway_spool_events{spool=\"enterprise logs\"}"),
        "{text}"
    );
    rx.fail_with(None);
    assert_eq!(refused, 0, "the spools took the backlog");
    let end = Instant::now() + Duration::from_secs(60);
    while gw.stats().in_flight > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = gw.diagnostics();
    for case in ["workflow_run", "app_created"] {
        let counts = after.by_case[case];
        assert_eq!(
            (counts.received, counts.delivered, counts.dropped),
            (n, n, 0),
            "{case}: tallied events count per case too"
        );
    }
    // The last events' journeys: tallied ones end `on_disk`, the others `delivered`.
    let last = gw.explain(&last_id);
    let stages: Vec<_> = last.journeys[0].steps.iter().map(|s| s.stage).collect();
    assert!(
        stages.contains(&Stage::OnDisk) || stages.contains(&Stage::Delivered),
        "{stages:?}"
    );
    for sp in &after.spools {
        assert_eq!(sp.events, 0, "drained: {sp:?}");
        assert_eq!(sp.acks, sp.appends, "every record acknowledged: {sp:?}");
    }
    assert!(after.readiness.ready, "{:?}", after.readiness);
    let report = settle_and_shut_down(gw);
    let s = &report.stats;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(s.emitted, 2 * n, "{s:?}");
    assert_eq!(s.delivered, 2 * n, "{s:?}");
    assert_eq!(s.dropped_total() + s.spooled + s.recovered, 0, "{s:?}");
    assert_eq!(s.companion_logs_dropped, 0, "{s:?}");
    let r = rx.received();
    assert_eq!(seqs(&r).len() as u64, n, "every span arrived");
    assert_eq!(r.log_count, 2 * n, "every log record arrived");
    eprintln!(
        "disk spool outage: {} events, {on_disk} bytes on disk at the end of the outage \
         ({} B/event, span and log record)",
        2 * n,
        on_disk / (2 * n)
    );
}

/// Bytes of the files in `dir` and below.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_bytes(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// Shutdown with the collector down leaves the backlog on disk (`spooled`) and returns as soon
/// as it is there, not at its deadline; the next gateway on the same path counts it
/// `recovered` and delivers it. Each process balances:
/// `emitted + recovered == delivered + dropped + spooled`.
#[test]
fn the_next_process_delivers_what_a_shutdown_left_in_the_spool() {
    left_in_the_spool_then_delivered(false);
}

/// The same over OTLP/HTTP with protobuf bodies.
#[test]
fn the_next_process_delivers_what_a_shutdown_left_in_the_spool_over_http() {
    left_in_the_spool_then_delivered(true);
}

fn left_in_the_spool_then_delivered(http: bool) {
    let _one = ONE_AT_A_TIME.lock();
    let rx = if http {
        OtlpReceiver::start_http()
    } else {
        OtlpReceiver::start()
    };
    let queues = Queues {
        trace: 2_000,
        sink_batches: 2,
        logs: 400,
        metric_per_handler: 50,
        gateway: 5_000,
    };
    let (mut c, d) = outage_config(&rx, queues);
    if http {
        c.otlp.protocol = telemetry_gateway::config::OtlpProtocol::HttpProtobuf;
    }
    let path = d.path().join("spool");
    spooled(&mut c, &path);
    rx.fail_with(Some(tonic::Code::Unavailable));
    let gw = start(c.clone()).unwrap();
    let n = 999;
    assert_eq!(emit_both(&gw, 0, n), 0);
    // Two events whose journeys the next process must show.
    let (t, m) = (trace_event(n), metric_event(n));
    let ids = [t.event_id.to_string(), m.event_id.to_string()];
    gw.emit(t).unwrap();
    gw.emit(m).unwrap();
    let n = n + 1;
    let deadline = Duration::from_secs(10);
    let began = Instant::now();
    let first = gw.shutdown_blocking(deadline);
    let took = began.elapsed();
    let s1 = &first.stats;
    assert!(first.is_clean(), "{first:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(s1.is_settled(), "{s1:?}");
    assert_eq!(s1.emitted, 2 * n);
    assert_eq!(s1.spooled, 2 * n, "the whole backlog stays on disk: {s1:?}");
    assert_eq!(s1.delivered + s1.dropped_total(), 0, "{s1:?}");
    assert_eq!(s1.companion_logs_dropped, 0, "{s1:?}");
    let r = rx.received();
    assert!(seqs(&r).is_empty() && r.log_count == 0);

    rx.fail_with(None);
    let gw = start(c).unwrap();
    let second = settle_and_shut_down(gw.clone());
    // The flight recorder shows where they came from: `recovered` (read back from the spool
    // the first process left), then `delivered`.
    for id in &ids {
        let steps: Vec<Stage> = gw.explain(id).journeys[0]
            .steps
            .iter()
            .map(|s| s.stage)
            .collect();
        assert_eq!(steps.first(), Some(&Stage::Recovered), "{id}: {steps:?}");
        assert!(steps.contains(&Stage::Delivered), "{id}: {steps:?}");
    }
    let s2 = &second.stats;
    assert!(second.is_clean(), "{second:?}");
    assert!(s2.is_settled(), "{s2:?}");
    assert_eq!(s2.emitted, 0);
    assert_eq!(s2.recovered, 2 * n, "{s2:?}");
    assert_eq!(s2.delivered, 2 * n, "{s2:?}");
    assert_eq!(s2.spooled + s2.dropped_total(), 0, "{s2:?}");
    let r = rx.received();
    assert_eq!(
        seqs(&r).len() as u64,
        n,
        "every span arrived after the restart"
    );
    assert_eq!(
        r.log_count,
        2 * n,
        "every log record arrived after the restart"
    );
    eprintln!(
        "restart (http: {http}): first shutdown {took:?}, {} spooled; second delivered {}",
        s1.spooled, s2.delivered
    );
}
