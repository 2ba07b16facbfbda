//! Reliability suite, scenarios 6 and 13: handler panics at volume, and shutdown under load.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{
    GatewayBuilder, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

/// Scenario 6: a poison event every 1,000th of 100,000. Restarts == poison events, every
/// non-poison event is processed, poison events are dead-lettered (never retried), and `emit()`
/// never fails.
#[test]
fn a_poison_event_every_thousandth_of_100k() {
    // Quiet the default panic hook for the expected poison panics (100 of them).
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !info.to_string().contains("poison event") {
            default_hook(info);
        }
    }));
    let (mut cfg, _d) = support::config();
    cfg.metric_pool.pool_size = 2;
    let h = Arc::new(support::PoisonOnFlag::default());
    let gw = GatewayBuilder::new(cfg)
        .case_handler("tool_execution", h.clone())
        .start()
        .unwrap();
    let total = 100_000u64;
    let mut poison = 0u64;
    for i in 0..total {
        let payload = if i % 1_000 == 999 {
            poison += 1;
            json!({"poison": true, "i": i})
        } else {
            json!({"i": i})
        };
        // emit() never fails: the producer paces itself on the gateway's own in-flight gauge
        // rather than on a clock, so the bounded queues always have room.
        while gw.stats().in_flight > 20_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t"))
                .with_payload(payload),
        )
        .expect("emit() never fails");
    }
    let s = gw.shutdown_blocking(Duration::from_secs(60)).stats;
    assert_eq!(s.handler_restarts, poison, "{s:?}");
    assert_eq!(s.dropped_for(ReasonCode::HandlerPanicked), poison);
    assert_eq!(
        h.handled.load(Ordering::Relaxed),
        total - poison,
        "every non-poison event processed"
    );
    assert_eq!(s.delivered, total - poison);
    assert!(s.is_settled());
}

/// Scenario 13: shutdown(5 s) while 10k events are in flight: delivered + undelivered ==
/// accepted, nothing is exported after shutdown returns, emit after shutdown is a counted drop.
#[test]
fn shutdown_under_load_accounts_for_every_accepted_event() {
    let rx = OtlpReceiver::start();
    let (mut cfg, _d) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.trace_batcher.flush_interval_ms = 1_000; // keep events in flight
    let gw = telemetry_gateway::start(cfg).unwrap();
    let mut accepted = 0u64;
    for i in 0..10_000u64 {
        let case = if i % 2 == 0 {
            TelemetryCase::WorkflowRun
        } else {
            TelemetryCase::AppUpdated
        };
        if gw
            .emit(
                TelemetryEnvelope::new(case, TelemetryContext::tenant("t"))
                    .with_run_id(format!("r{i}")),
            )
            .is_ok()
        {
            accepted += 1;
        }
    }
    let in_flight_at_shutdown = gw.stats().in_flight;
    let started = Instant::now();
    let report = gw.shutdown_blocking(Duration::from_secs(5));
    let took = started.elapsed();
    let s = &report.stats;
    // Of the accepted events, each is delivered or undelivered (dropped after acceptance);
    // refusals at emit() were never accepted.
    let refused_at_emit = s.emitted - accepted;
    let undelivered = s.dropped_total() - refused_at_emit;
    assert_eq!(s.delivered + undelivered, accepted, "{s:?}");
    assert!(s.is_settled());
    // Nothing is exported after shutdown returns.
    let after = rx.received();
    std::thread::sleep(Duration::from_millis(500));
    let later = rx.received();
    assert_eq!(
        after.spans.len(),
        later.spans.len(),
        "spans exported after shutdown returned"
    );
    assert_eq!(
        after.logs.len(),
        later.logs.len(),
        "logs exported after shutdown returned"
    );
    // Emit after shutdown is a counted drop.
    assert!(gw
        .emit(TelemetryEnvelope::new(
            TelemetryCase::AppUpdated,
            TelemetryContext::tenant("t")
        ))
        .is_err());
    let final_stats = gw.stats();
    assert_eq!(
        final_stats.dropped_for(ReasonCode::Shutdown),
        s.dropped_for(ReasonCode::Shutdown) + 1
    );
    eprintln!(
        "shutdown under load: accepted {accepted}, in flight at shutdown {in_flight_at_shutdown}, delivered {}, undelivered {undelivered}, took {took:?}",
        s.delivered
    );
}
