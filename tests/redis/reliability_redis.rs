//! Reliability suite, scenarios 7 and 8: Redis killed for 10 s (then restarted on the same port)
//! and Redis frozen for 10 s (SIGSTOP, then SIGCONT), mid-run. Criteria for both: no dedup call
//! waits much past its timeout (p99 at most twice it, from the call-duration histogram), no event
//! stalls or is lost (fail-open, counted), and dedup works again within 5 attempts of Redis
//! returning.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::json;
use telemetry_gateway::config::DedupBackendKind;
use telemetry_gateway::testing::RedisServer;
use telemetry_gateway::{
    start, GatewayHandle, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};
use uuid::Uuid;

#[derive(Clone, Copy, Debug)]
enum Outage {
    Killed,
    Frozen,
}

fn feedback(id: Uuid) -> TelemetryEnvelope {
    TelemetryEnvelope::new(
        TelemetryCase::FeedbackCreated,
        TelemetryContext::tenant("t"),
    )
    .with_event_id(id)
    .with_payload(json!({"rating": "like"}))
}

fn settle(gw: &GatewayHandle) {
    let end = Instant::now() + Duration::from_secs(10);
    while gw.stats().in_flight > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Emits `per_tick` new events every 100 ms for `dur`, plus one re-sent id per tick.
fn traffic(gw: &GatewayHandle, dur: Duration, sent: &mut u64) {
    let end = Instant::now() + dur;
    while Instant::now() < end {
        let first = Uuid::now_v7();
        gw.emit(feedback(first)).expect("emit never fails");
        gw.emit(feedback(first)).expect("emit never fails"); // a re-send
        for _ in 0..18 {
            gw.emit(feedback(Uuid::now_v7())).expect("emit never fails");
        }
        *sent += 20;
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(outage: Outage) {
    let mut redis = RedisServer::start();
    let (mut cfg, _d) = support::config();
    cfg.dedup.backend = DedupBackendKind::Redis;
    cfg.dedup.redis_url = redis.url();
    cfg.dedup.reconnect_interval_ms = 200;
    let timeout = Duration::from_millis(cfg.dedup.timeout_ms);
    let gw = start(cfg).unwrap();
    let mut sent = 0u64;

    traffic(&gw, Duration::from_secs(2), &mut sent);
    match outage {
        Outage::Killed => redis.kill(),
        Outage::Frozen => redis.freeze(),
    }
    traffic(&gw, Duration::from_secs(10), &mut sent);
    match outage {
        Outage::Killed => redis.restart(),
        Outage::Frozen => redis.thaw(),
    }
    settle(&gw);

    // Dedup works again within 5 attempts of Redis returning: an attempt sends a fresh id twice.
    let mut attempts = 0;
    let worked = loop {
        attempts += 1;
        let before = gw.stats().dropped_for(ReasonCode::Duplicate);
        let id = Uuid::now_v7();
        gw.emit(feedback(id)).unwrap();
        settle(&gw);
        gw.emit(feedback(id)).unwrap();
        settle(&gw);
        sent += 2;
        if gw.stats().dropped_for(ReasonCode::Duplicate) == before + 1 {
            break true;
        }
        if attempts == 5 {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        worked,
        "{outage:?}: dedup did not work again within 5 attempts"
    );

    let d = gw.diagnostics();
    let report = gw.shutdown_blocking(support::DEADLINE);
    let s = &report.stats;
    assert_eq!(s.emitted, sent);
    // Nothing stalled or was lost: every event is delivered, or dropped as a true duplicate.
    assert_eq!(
        s.delivered + s.dropped_for(ReasonCode::Duplicate),
        sent,
        "{outage:?}: {s:?}"
    );
    assert_eq!(
        s.dropped_total(),
        s.dropped_for(ReasonCode::Duplicate),
        "{s:?}"
    );
    assert!(s.is_settled());
    // Fail-open during the outage, counted.
    assert!(
        s.degraded_for(ReasonCode::DedupStoreUnavailable) > 0,
        "{s:?}"
    );
    assert!(s.dedup_store_errors > 0);
    // No dedup call waited much past its timeout.
    let calls = &d.dedup_call;
    eprintln!(
        "{outage:?}: {} dedup calls, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (timeout {} ms); {} events degraded; dedup back after {attempts} attempt(s)",
        calls.count,
        calls.p50 * 1e3,
        calls.p99 * 1e3,
        calls.max * 1e3,
        timeout.as_millis(),
        s.degraded_for(ReasonCode::DedupStoreUnavailable)
    );
    assert!(
        calls.p99 <= 2.0 * timeout.as_secs_f64(),
        "{outage:?}: dedup call p99 {} s exceeds twice the timeout",
        calls.p99
    );
}

#[test]
fn redis_killed_for_10_s_then_restarted() {
    run(Outage::Killed);
}

#[test]
fn redis_frozen_for_10_s_then_thawed() {
    run(Outage::Frozen);
}
