//! What a host author meets in the first hour: idempotency keys, a host-declared case with its
//! handler, start errors that say what is wrong, the standard `OTEL_*` variables, the resource
//! in the JSON lines output, and the self-metrics switch.

// figment::Jail's closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{
    CaseHandler, GatewayBuilder, GatewayConfig, JsonObject, KeyValue, TelemetryCase,
    TelemetryContext, TelemetryEnvelope,
};

fn feedback(tenant: &str) -> TelemetryEnvelope {
    TelemetryEnvelope::new(
        TelemetryCase::FeedbackCreated,
        TelemetryContext::tenant(tenant).app("bot"),
    )
    .with_payload(serde_json::json!({"rating": "like"}))
}

#[test]
fn an_idempotency_key_gives_one_id_per_tenant_and_a_resend_counts_once() {
    let a = feedback("acme").with_idempotency_key("Idem-42");
    let again = feedback("acme").with_idempotency_key("Idem-42");
    let other_tenant = feedback("globex").with_idempotency_key("Idem-42");
    let other_key = feedback("acme").with_idempotency_key("Idem-43");
    assert_eq!(a.event_id, again.event_id, "same tenant, same key: same id");
    assert_ne!(a.event_id, other_tenant.event_id, "tenants never share ids");
    assert_ne!(a.event_id, other_key.event_id);
    assert_eq!(
        a.event_id,
        telemetry_gateway::idempotency_event_id("acme", "Idem-42"),
        "the documented derivation"
    );

    let (cfg, _dir) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    let first = gw
        .emit(a.with_correlation_id("fb-1"))
        .expect("the first copy is taken");
    // The re-send under a later request: emit() still says Ok (dedup is after the entrance).
    let second = gw
        .emit(again.with_correlation_id("fb-3"))
        .expect("a later copy is taken too");
    assert_eq!(first, second);
    let report = gw.shutdown_blocking(support::DEADLINE);
    let s = &report.stats;
    assert_eq!(s.emitted, 2);
    assert_eq!(s.delivered, 1, "{s:?}");
    assert_eq!(s.dropped.get("duplicate"), Some(&1), "{s:?}");
    assert_eq!(s.emitted, s.delivered + s.dropped_total());

    // `explain` of the duplicate's own correlation id finds it, with its drop.
    let by_resend = gw.explain("fb-3");
    assert_eq!(by_resend.journeys.len(), 1, "{}", by_resend.to_json());
    let j = &by_resend.journeys[0];
    assert_eq!(j.event_id, first);
    assert_eq!(j.correlation_id, "fb-1", "the first copy's correlation id");
    assert_eq!(j.other_correlation_ids, vec!["fb-3".to_owned()]);
    assert!(
        j.steps
            .iter()
            .any(|s| s.reason.map(|r| r.as_str()) == Some("duplicate")),
        "{}",
        by_resend.to_json()
    );
    // ... and the first request's id finds the same journey.
    assert_eq!(gw.explain("fb-1").journeys.len(), 1);
}

#[test]
fn the_case_handler_example_runs_and_its_attributes_reach_the_log_records() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("orders.jsonl");
    let out = std::process::Command::new(support::example("case_handler"))
        .arg(&out_file)
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("the ledger")).expect("JSON");
    assert_eq!(stats["emitted"], 4, "{stats}");
    assert_eq!(stats["delivered"], 3, "{stats}");
    assert_eq!(stats["dropped"]["duplicate"], 1, "{stats}");

    let text = std::fs::read_to_string(&out_file).expect("the output file");
    let logs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|v: &serde_json::Value| v["signal"] == "log")
        .collect();
    let mut sizes: Vec<&str> = logs
        .iter()
        .filter_map(|l| l["attributes"]["shop.order.size"].as_str())
        .collect();
    sizes.sort();
    assert_eq!(sizes, ["large", "medium", "small"], "{text}");
}

#[derive(Debug)]
struct Noop;

impl CaseHandler for Noop {
    fn handle(&self, _: &TelemetryEnvelope, _: Option<&JsonObject>) -> Vec<KeyValue> {
        Vec::new()
    }
}

#[test]
fn a_handler_that_could_never_run_fails_start_naming_the_case() {
    let (cfg, _dir) = support::config();
    // A typo of a built-in case.
    let err = GatewayBuilder::new(cfg.clone())
        .case_handler("feedback_creatd", Arc::new(Noop))
        .start()
        .expect_err("an unknown case is refused");
    let msg = err.to_string();
    assert!(
        msg.contains("feedback_creatd") && msg.contains("[cases.feedback_creatd]"),
        "{msg}"
    );
    // A trace case: handlers only run for metric/log cases.
    let err = GatewayBuilder::new(cfg.clone())
        .case_handler("workflow_run", Arc::new(Noop))
        .start()
        .expect_err("a trace case is refused");
    assert!(err.to_string().contains("trace case"), "{err}");
    // Declared, metric/log: starts.
    let mut declared = GatewayConfig::from_toml_str(
        "[cases.order_placed]\nsignal = \"metric_log\"\nenterprise_only = false\n",
    )
    .unwrap();
    declared.export = cfg.export;
    let gw = GatewayBuilder::new(declared)
        .case_handler("order_placed", Arc::new(Noop))
        .case_handler("feedback_created", Arc::new(Noop))
        .start()
        .expect("known metric/log cases start");
    gw.shutdown_blocking(support::DEADLINE);
}

#[test]
fn start_and_config_errors_print_their_sentence_from_main() {
    // `main() -> Result<(), Box<dyn Error>>` prints the error's Debug.
    let err = GatewayConfig::from_toml_str("[dedup]\nttl_secs = \"an hour\"\n").unwrap_err();
    let debug = format!("{:?}", Box::<dyn std::error::Error>::from(err));
    assert!(debug.contains("for key `dedup.ttl_secs`"), "{debug}");
    assert!(
        !debug.contains("default."),
        "no figment profile prefix: {debug}"
    );
    assert!(
        !debug.contains("Parse("),
        "the sentence, not the variant: {debug}"
    );

    let (cfg, _dir) = support::config();
    let err = GatewayBuilder::new(cfg)
        .case_handler("nope", Arc::new(Noop))
        .start()
        .unwrap_err();
    assert_eq!(format!("{err:?}"), err.to_string());
}

#[cfg(not(feature = "redis"))]
#[test]
fn a_redis_setting_without_the_redis_feature_names_the_key_and_the_feature() {
    for (toml, key) in [
        ("[dedup]\nbackend = \"redis\"\n", "dedup.backend"),
        ("[transport]\nkind = \"redis_streams\"\n", "transport.kind"),
    ] {
        let err = GatewayConfig::from_toml_str(toml).unwrap_err().to_string();
        assert!(
            err.contains(key) && err.contains("cargo feature `redis`"),
            "{err}"
        );
    }
}

#[cfg(not(feature = "analytics"))]
#[test]
fn a_sqlite_sink_without_the_analytics_feature_names_the_key_and_the_feature() {
    let err = GatewayConfig::from_toml_str("[sinks.sqlite]\npath = \"t.db\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sinks.sqlite") && err.contains("cargo feature `analytics`"),
        "{err}"
    );
}

#[test]
fn otel_variables_are_defaults_beneath_the_file_and_the_gateways_own() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("OTEL_SERVICE_NAME", "checkout");
        jail.set_env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod,team=pay%2Cments",
        );
        jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        jail.set_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf");
        jail.set_env("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,x-token=a%3Db");
        jail.set_env("OTEL_EXPORTER_OTLP_TIMEOUT", "2500");
        let c = GatewayConfig::load(None).expect("loads");
        assert_eq!(c.export.service_name, "checkout");
        assert_eq!(
            c.export.resource_attributes.get("team").map(String::as_str),
            Some("pay,ments")
        );
        assert_eq!(c.otlp.endpoint.as_deref(), Some("http://collector:4318"));
        assert_eq!(
            c.otlp.protocol,
            telemetry_gateway::config::OtlpProtocol::HttpProtobuf
        );
        assert_eq!(
            c.otlp.headers.get("x-token").map(String::as_str),
            Some("a=b")
        );
        assert_eq!(c.otlp.timeout_ms, 2500);

        // The file wins over OTEL_*, and its headers join theirs.
        jail.create_file(
            "gw.toml",
            "[export]\nservice_name = \"from-file\"\n[otlp.headers]\nx-extra = \"1\"\n",
        )?;
        let c = GatewayConfig::load(Some(std::path::Path::new("gw.toml"))).expect("loads");
        assert_eq!(c.export.service_name, "from-file");
        assert_eq!(c.otlp.headers.len(), 3, "{:?}", c.otlp.headers.keys());
        assert_eq!(c.otlp.endpoint.as_deref(), Some("http://collector:4318"));

        // TELEMETRY_GATEWAY__* wins over both.
        jail.set_env("TELEMETRY_GATEWAY__EXPORT__SERVICE_NAME", "from-env");
        let c = GatewayConfig::load(Some(std::path::Path::new("gw.toml"))).expect("loads");
        assert_eq!(c.export.service_name, "from-env");

        // A value the gateway cannot use names the key and the variable.
        jail.set_env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json");
        let err = GatewayConfig::load(None).unwrap_err().to_string();
        assert!(
            err.contains("otlp.protocol") && err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn every_json_line_says_which_service_wrote_it() {
    let (mut cfg, dir) = support::config();
    cfg.export.service_name = "shop-api".into();
    cfg.export
        .resource_attributes
        .insert("deployment.environment".into(), "test".into());
    cfg.otlp.metric_interval_ms = 50;
    let gw = telemetry_gateway::start(cfg).unwrap();
    gw.emit(feedback("acme")).unwrap();
    gw.emit(
        TelemetryEnvelope::new(
            TelemetryCase::WorkflowRun,
            TelemetryContext::tenant("acme").app("bot"),
        )
        .with_run_id("run-1")
        .with_payload(serde_json::json!({"status": "succeeded", "duration_ms": 5})),
    )
    .unwrap();
    let report = gw.shutdown_blocking(support::DEADLINE);
    assert_eq!(report.stats.delivered, 2, "{:?}", report.stats);
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let mut signals = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert_eq!(v["resource"]["service.name"], "shop-api", "{line}");
        assert_eq!(v["resource"]["deployment.environment"], "test", "{line}");
        assert!(v["resource"]["service.instance.id"].is_string(), "{line}");
        signals.insert(v["signal"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(
        signals.into_iter().collect::<Vec<_>>(),
        ["log", "metric", "span"]
    );
}

/// The metric names a gateway exported to a real OTLP receiver, with self-metrics on or off.
fn exported_metric_names(export_self_metrics: bool) -> std::collections::BTreeSet<String> {
    let receiver = OtlpReceiver::start();
    let (mut cfg, _dir) = support::config();
    cfg.otlp.endpoint = Some(receiver.endpoint());
    cfg.otlp.metric_interval_ms = 100;
    cfg.diagnostics.export_self_metrics = export_self_metrics;
    let gw = telemetry_gateway::start(cfg).unwrap();
    gw.emit(feedback("acme")).unwrap();
    let report = gw.shutdown_blocking(support::DEADLINE);
    assert_eq!(report.stats.delivered, 1, "{:?}", report.stats);
    let (received, _) = receiver.wait_for(Duration::from_secs(5), |r| !r.metrics.is_empty());
    received.metrics.iter().map(|m| m.name.clone()).collect()
}

#[test]
fn self_metrics_go_out_by_default_and_can_be_kept_out() {
    let on = exported_metric_names(true);
    assert!(
        on.iter().any(|n| n.starts_with("telemetry_gateway.")),
        "{on:?}"
    );
    let off = exported_metric_names(false);
    assert!(
        !off.iter().any(|n| n.starts_with("telemetry_gateway.")),
        "{off:?}"
    );
    assert!(!off.is_empty(), "the application's metrics still go out");
}
