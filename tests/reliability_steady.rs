//! Reliability suite, scenario 1: steady load, 10k events/s for 20 s, to the in-test OTLP
//! receiver. Every sequence number arrives exactly once; dropped = 0.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::common::v1::any_value::Value as PValue;
use serde_json::json;
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{start, TelemetryCase, TelemetryContext, TelemetryEnvelope};

/// Rate and duration; `TELEMETRY_GATEWAY_SOAK_SECS` lengthens the run (see docs/reliability.md).
fn duration() -> Duration {
    std::env::var("TELEMETRY_GATEWAY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(20))
}

#[test]
fn steady_10k_per_second_every_sequence_number_exactly_once() {
    let rx = OtlpReceiver::start();
    let (mut cfg, _d) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.trace_batcher.flush_interval_ms = telemetry_gateway::config::DEFAULT_FLUSH_INTERVAL_MS;
    cfg.export.log_flush_interval_ms = telemetry_gateway::config::DEFAULT_LOG_FLUSH_INTERVAL_MS;
    let gw = start(cfg).unwrap();
    let rate = 10_000u64; // events per second, in ticks of 10 ms
    let per_tick = rate / 100;
    let run_for = duration();
    let started = Instant::now();
    let mut seq = 0u64;
    let mut tick = 0u64;
    while started.elapsed() < run_for {
        for _ in 0..per_tick {
            gw.emit(
                TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
                    .with_run_id(format!("r{seq}"))
                    .with_payload(json!({"seq": seq})),
            )
            .expect("steady load is within capacity: emit never refuses");
            seq += 1;
        }
        tick += 1;
        // Pace against the schedule, not against the previous tick, so drift does not add up.
        let next = started + Duration::from_millis(10 * tick);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let sent = seq;
    let achieved = sent as f64 / started.elapsed().as_secs_f64();
    let report = gw.shutdown_blocking(Duration::from_secs(60));
    let s = &report.stats;
    let r = rx.received();
    let mut seen = HashSet::with_capacity(sent as usize);
    let mut dupes = 0;
    for span in &r.spans {
        if let Some(PValue::IntValue(v)) = span
            .attributes
            .iter()
            .find(|kv| kv.key == "app.seq")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        {
            if !seen.insert(*v) {
                dupes += 1;
            }
        }
    }
    eprintln!(
        "steady: sent {sent} in {:?} ({achieved:.0}/s), received {} unique spans, {dupes} duplicates, dropped {}",
        run_for,
        seen.len(),
        s.dropped_total()
    );
    assert_eq!(s.dropped_total(), 0, "{s:?}");
    assert_eq!(dupes, 0, "a sequence number arrived twice");
    assert_eq!(seen.len() as u64, sent, "every sequence number arrives");
    assert_eq!(s.delivered, sent);
}
