//! Reliability suite, scenario 5: the backend is away for 15 s, then back. In its own test
//! binary so that the RSS it measures is this gateway's alone (tests in one binary run in
//! parallel threads of one process).

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::json;
use telemetry_gateway::testing::{OtlpReceiver, Received};
use telemetry_gateway::{start, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope};

fn seqs(r: &Received) -> HashSet<i64> {
    support::span_seqs(r).0
}

fn trace_event(seq: u64) -> TelemetryEnvelope {
    TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
        .with_run_id(format!("run-{seq}"))
        .with_payload(json!({"seq": seq}))
}

use support::rss_bytes;

/// Scenario 5: the receiver is down for 15 s, then back: memory stays within the configured bounds, what
/// did not fit is counted, what fitted arrives.
#[test]
fn backend_outage_keeps_what_fits_and_counts_the_rest() {
    let rx = OtlpReceiver::start();
    let (mut c, _d) = support::config();
    c.otlp.endpoint = Some(rx.endpoint());
    c.otlp.timeout_ms = 2_000;
    c.retry.outage_backoff_max_ms = 500;
    c.trace_batcher.max_batch_size = 50;
    c.trace_batcher.sink_queue_batches = 4;
    c.export.log_queue_capacity = 2_000;
    let gw = start(c).unwrap();
    // Warm up so the baseline RSS includes the connections and runtimes.
    for seq in 0..100 {
        gw.emit(trace_event(1_000_000 + seq)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_bytes();

    rx.fail_with(Some(tonic::Code::Unavailable));
    let outage = Instant::now();
    let mut seq = 0u64;
    let mut max_depth: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut rss_max = rss_before;
    while outage.elapsed() < Duration::from_secs(15) {
        for _ in 0..20 {
            gw.emit(trace_event(seq)).unwrap();
            seq += 1;
        }
        for q in gw.diagnostics().queues {
            let e = max_depth.entry(q.name).or_insert((0, q.capacity));
            e.0 = e.0.max(q.depth);
        }
        rss_max = rss_max.max(rss_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    rx.fail_with(None);
    let sent = seq + 100;

    // Bounded: no queue ever held more than its capacity.
    for (name, (depth, cap)) in &max_depth {
        assert!(depth <= cap, "queue {name} held {depth} > {cap}");
    }
    let end = Instant::now() + Duration::from_secs(30);
    while gw.stats().in_flight > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    let arrived = seqs(&rx.received());
    let queue_full = s.dropped_for(ReasonCode::QueueFull);
    assert!(
        queue_full > 0,
        "an outage this long must overflow the bounded buffer: {s:?}"
    );
    assert_eq!(
        s.dropped_for(ReasonCode::ExportFailed),
        0,
        "held, not failed: {s:?}"
    );
    assert_eq!(
        s.delivered + queue_full,
        sent,
        "what did not fit is counted: {s:?}"
    );
    assert_eq!(arrived.len() as u64, s.delivered, "what fitted arrives");
    assert!(s.is_settled());
    let growth = rss_max.saturating_sub(rss_before);
    eprintln!(
        "outage: sent {sent}, delivered {}, queue_full {queue_full}, RSS growth {} KiB, max depths {max_depth:?}",
        s.delivered,
        growth / 1024
    );
    // The buffer is a few hundred spans; 64 MiB leaves room for allocator noise, not a leak.
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS grew by {growth} bytes during the outage"
    );
}
