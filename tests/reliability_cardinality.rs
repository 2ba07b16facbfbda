//! Reliability suite, scenario 14: a cardinality attack. Distinct attribute values (one tenant
//! id per event; 200,000 in CI, a million or more with `TELEMETRY_GATEWAY_CARDINALITY_EVENTS`):
//! the series count stays at the limit + 1 overflow series, the sum is preserved, and memory
//! plateaus. Its own test binary, so the RSS it samples is this gateway's alone.

mod support;

use std::time::Duration;

use telemetry_gateway::testing::{OtlpReceiver, Signal};
use telemetry_gateway::{start, TelemetryCase, TelemetryContext, TelemetryEnvelope};

use support::rss_bytes;

/// Distinct values; `TELEMETRY_GATEWAY_CARDINALITY_EVENTS` changes it (docs/reliability.md).
/// 200,000 keeps CI short: every bound under test (100 series, 10,000 dedup entries, 1,000
/// recorder events) is full long before the first RSS sample at 40%.
fn events() -> u64 {
    std::env::var("TELEMETRY_GATEWAY_CARDINALITY_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000)
}

#[test]
fn distinct_values_beyond_every_bound_keep_the_series_count_and_the_sum() {
    let rx = OtlpReceiver::start();
    rx.discard(Signal::Logs); // only the metrics are under test; keep the receiver's memory flat
    let (mut cfg, _d) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    let limit = 100;
    cfg.diagnostics.metric_cardinality_limit = limit;
    // The recorder and memory dedup are bounded too; small bounds make the plateau come early.
    cfg.diagnostics.recorder_events = 1_000;
    cfg.dedup.memory_max_entries = 10_000;
    let gw = start(cfg).unwrap();
    let n = events();
    let mut samples = Vec::new();
    for i in 0..n {
        while gw.stats().in_flight > 20_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        gw.emit(TelemetryEnvelope::new(
            TelemetryCase::AppCreated,
            TelemetryContext::tenant(format!("tenant-{i}")),
        ))
        .expect("paced below capacity");
        if (i + 1) % (n / 5) == 0 {
            samples.push(rss_bytes());
        }
    }
    let s = gw.shutdown_blocking(Duration::from_secs(60)).stats;
    assert_eq!(s.delivered, n, "{s:?}");
    assert!(s
        .metrics_in_overflow
        .iter()
        .any(|m| m == "app.requests.total"));

    let r = rx.received();
    let points = support::last_sum_points(&r, "app.requests.total");
    assert_eq!(
        points.len(),
        limit + 1,
        "the limit plus one overflow series"
    );
    let total: f64 = points.iter().map(support::point_value).sum();
    assert_eq!(total, n as f64, "the sum is preserved");

    // Memory plateaus: the last 60% of the run adds little to what the first 40% reached.
    let mib = |b: u64| b / (1024 * 1024);
    eprintln!(
        "cardinality: {n} distinct tenants, RSS at each fifth: {:?} MiB",
        samples.iter().map(|b| mib(*b)).collect::<Vec<_>>()
    );
    let growth = samples[4].saturating_sub(samples[1]);
    assert!(
        growth < 64 * 1024 * 1024,
        "RSS kept growing: +{} MiB",
        mib(growth)
    );
}
