//! Hostile or unlucky configuration (issue 14, defect 9): every duration and size key has a
//! ceiling that validation enforces naming the key (from a file and from the environment), a
//! configuration at the ceilings runs cleanly, and a run in which an actor died is never
//! reported as clean.

// figment::Jail's closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]

mod support;

use std::time::Duration;

use telemetry_gateway::config::{ceiling_of, MAX_DURATION_MS, MAX_DURATION_SECS};
use telemetry_gateway::{GatewayConfig, TelemetryCase, TelemetryContext, TelemetryEnvelope};

#[test]
fn an_out_of_range_value_in_a_file_names_the_key() {
    for (toml, key) in [
        (
            "[dedup]\nttl_secs = 9223372036854775807\n",
            "dedup.ttl_secs",
        ),
        (
            "[shutdown]\ndeadline_ms = 9223372036854775807\n",
            "shutdown.deadline_ms",
        ),
        (
            "[trace_batcher]\nmax_batch_size = 4000000000\n",
            "trace_batcher.max_batch_size",
        ),
        (
            "[metric_pool]\npool_size = 100000\n",
            "metric_pool.pool_size",
        ),
        (
            "[gateway]\nqueue_capacity = 9223372036854775807\n",
            "gateway.queue_capacity",
        ),
        (
            "[payloads]\nmax_read_bytes = 9223372036854775807\n",
            "payloads.max_read_bytes",
        ),
        (
            "[cases.workflow_run]\nslow_threshold_ms = 9223372036854775807\n",
            "cases.workflow_run.slow_threshold_ms",
        ),
    ] {
        let err = GatewayConfig::from_toml_str(toml).unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{key}`")) && err.contains("too large"),
            "{toml}: {err}"
        );
    }
    // The ceilings themselves are accepted.
    let at = format!(
        "[dedup]\nttl_secs = {MAX_DURATION_SECS}\n[shutdown]\ndeadline_ms = {MAX_DURATION_MS}\n"
    );
    GatewayConfig::from_toml_str(&at).expect("values at the ceilings are valid");
    assert_eq!(ceiling_of("retry.max_backoff_ms").0, MAX_DURATION_MS);
}

#[test]
fn an_out_of_range_environment_value_names_the_key() {
    figment::Jail::expect_with(|jail| {
        jail.set_env(
            "TELEMETRY_GATEWAY__SHUTDOWN__DEADLINE_MS",
            "18446744073709551615",
        );
        let err = GatewayConfig::load(None).unwrap_err().to_string();
        assert!(err.contains("shutdown.deadline_ms"), "{err}");
        jail.set_env(
            "TELEMETRY_GATEWAY__SHUTDOWN__DEADLINE_MS",
            "18446744073709551616",
        );
        let err = GatewayConfig::load(None).unwrap_err().to_string();
        assert!(err.contains("shutdown.deadline_ms"), "{err}");
        Ok(())
    });
}

#[test]
fn a_configuration_at_the_ceilings_runs_cleanly() {
    let (mut cfg, _dir) = support::config();
    // The values that crashed three actor threads before they had a ceiling, now at it.
    cfg.dedup.ttl_secs = MAX_DURATION_SECS;
    cfg.retry.max_batch_age_secs = MAX_DURATION_SECS;
    cfg.diagnostics.unready_after_failing_secs = MAX_DURATION_SECS;
    let gw = telemetry_gateway::start(cfg).expect("starts");
    for i in 0..20 {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("acme"))
                .with_run_id(format!("run-{i}"))
                .with_payload(serde_json::json!({"status": "succeeded", "duration_ms": 3})),
        )
        .unwrap();
        gw.emit(TelemetryEnvelope::new(
            TelemetryCase::AppCreated,
            TelemetryContext::tenant("acme"),
        ))
        .unwrap();
    }
    let report = gw.shutdown_blocking(support::DEADLINE);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.stats.delivered, 40, "{:?}", report.stats);
}

#[test]
fn a_run_in_which_an_actor_died_is_never_reported_clean() {
    let (cfg, _dir) = support::config();
    let gw = telemetry_gateway::start(cfg).expect("starts");
    gw.emit(TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant("acme"),
    ))
    .unwrap();
    assert!(gw.panic_an_actor_for_tests());
    // The panic ends the gateway actor's task.
    std::thread::sleep(Duration::from_millis(200));
    gw.emit(TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant("acme"),
    ))
    .unwrap();
    let report = gw.shutdown_blocking(Duration::from_secs(2));
    let s = &report.stats;
    assert_eq!(s.emitted, s.delivered + s.dropped_total(), "{s:?}");
    assert!(
        report.actors_lost.iter().any(|a| a.contains("gateway")),
        "{report:?}"
    );
    assert!(!report.is_clean());
}
