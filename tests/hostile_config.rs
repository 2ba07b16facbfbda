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
        ("[trace_batcher]\nshards = 100000\n", "trace_batcher.shards"),
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
    // The panic ends the gateway actor's task, and sometimes the whole actor thread: then
    // emit() refuses (`ShutDown`, counted); either way the event is accounted for.
    std::thread::sleep(Duration::from_millis(200));
    let _ = gw.emit(TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant("acme"),
    ));
    let report = gw.shutdown_blocking(Duration::from_secs(2));
    let s = &report.stats;
    assert_eq!(s.emitted, s.delivered + s.dropped_total(), "{s:?}");
    assert!(
        report.actors_lost.iter().any(|a| a.contains("gateway")),
        "{report:?}"
    );
    assert!(!report.is_clean());
}

/// Every credential-bearing key, each with its own secret.
const SECRETS_TOML: &str = r#"
[otlp]
endpoint = "http://otlp-user:otlp-pass-1@collector:4317"
api_key = "api-key-2"
[otlp.headers]
x-token = "header-3"
[dedup]
backend = "redis"
redis_url = "redis://:redis-pass-4@127.0.0.1:6379/0"
[transport]
kind = "redis_streams"
redis_url = "redis://stream-user:stream-pass-5@127.0.0.1:6380"
[payloads]
store = "url"
url = "s3://bucket/prefix?region=eu&secret_access_key=s3-secret-6"
[[sinks.tenants]]
name = "acme"
tenant_id = "acme"
kind = "otlp"
endpoint = "https://sink-user:sink-pass-7@acme.example:4318"
[sinks.tenants.headers]
authorization = "Bearer sink-token-8"
"#;

const SECRETS: [&str; 8] = [
    "otlp-pass-1",
    "api-key-2",
    "header-3",
    "redis-pass-4",
    "stream-pass-5",
    "s3-secret-6",
    "sink-pass-7",
    "sink-token-8",
];

fn assert_hidden(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
    assert!(
        !text.contains("%5BREDACTED%5D"),
        "{what} percent-encodes the marker:\n{text}"
    );
}

#[test]
fn every_credential_is_hidden_in_every_output() {
    use figment::providers::{Format, Serialized, Toml};
    // Extracted without validation: the point is what is printed, whatever the build's features.
    let cfg: GatewayConfig = figment::Figment::from(Serialized::defaults(GatewayConfig::default()))
        .merge(Toml::string(SECRETS_TOML))
        .extract()
        .expect("extracts");
    // check-config's output.
    let printed = toml::to_string_pretty(&cfg.with_credentials_hidden()).unwrap();
    assert_hidden("check-config", &printed);
    assert!(printed.contains("[REDACTED]"), "{printed}");
    assert!(printed.contains("otlp-user"), "user names stay: {printed}");
    assert!(
        printed.contains("region=eu"),
        "other query parameters stay: {printed}"
    );
    // Debug, of the whole and of each section.
    assert_hidden("Debug", &format!("{cfg:?}"));
    assert_hidden("Debug", &format!("{:?}", cfg.dedup));
    assert_hidden("Debug", &format!("{:?}", cfg.transport));
    assert_hidden("Debug", &format!("{:?}", cfg.payloads));

    // A syntax error on a credential's line does not quote the line.
    let err = GatewayConfig::from_toml_str("[otlp]\napi_key = \"api-key-2\nmore\n")
        .unwrap_err()
        .to_string();
    assert_hidden("a TOML syntax error", &err);
    assert!(err.contains("line 2"), "it still says where: {err}");

    // An endpoint that is not a URL at all, with a password in it.
    let err = telemetry_gateway::config::url_without_password("http://u:otlp-pass-1@[not a host");
    assert_hidden("an unparsable URL", &err);
    let mut bad = GatewayConfig::default();
    bad.otlp.endpoint = Some("ftp://u:otlp-pass-1@collector".into());
    assert_hidden(
        "a validation error",
        &bad.validate().unwrap_err().to_string(),
    );
    let (mut cfg, _dir) = support::config();
    cfg.otlp.endpoint = Some("http://u:otlp-pass-1@[not a host".into());
    match telemetry_gateway::start(cfg) {
        Ok(gw) => {
            gw.shutdown_blocking(Duration::from_secs(1));
        }
        Err(e) => {
            assert_hidden("a start error", &e.to_string());
            assert_hidden("a start error's Debug", &format!("{e:?}"));
        }
    }
}

#[cfg(feature = "redis")]
#[test]
fn a_tls_redis_url_is_refused_at_load_naming_the_key() {
    let err = GatewayConfig::from_toml_str(
        "[dedup]\nbackend = \"redis\"\nredis_url = \"rediss://:pw@127.0.0.1:6379\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("dedup.redis_url") && err.contains("TLS"),
        "{err}"
    );
}
