//! The two decisions, end to end through the running gateway, including runtime flips.

use crate::support;

use std::sync::Arc;

use serde_json::json;
use telemetry_gateway::{
    EmitError, GatewayBuilder, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

fn ev(case: TelemetryCase) -> TelemetryEnvelope {
    TelemetryEnvelope::new(case, TelemetryContext::tenant("t1").app("a1"))
        .with_payload(json!({"k": 1}))
}

#[test]
fn enterprise_off_drops_enterprise_cases_and_keeps_community_traces() {
    let (mut cfg, _d) = support::config();
    cfg.gateway.enterprise_enabled = false;
    let sink = support::RecordingSink::default();
    let gw = GatewayBuilder::new(cfg)
        .trace_sink("t1", None, Arc::new(sink.clone()))
        .start()
        .unwrap();
    for case in TelemetryCase::BUILT_IN.iter() {
        gw.emit(ev(case.clone())).unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.emitted, 14);
    assert_eq!(s.dropped_for(ReasonCode::EnterpriseDisabled), 12);
    assert_eq!(
        s.delivered, 2,
        "workflow_run and message_run reach the tenant's sink"
    );
    let mut names: Vec<_> = sink.spans().iter().map(|s| s.name.to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["app.message.run", "app.workflow.run"]);
    assert!(s.is_settled());
}

#[test]
fn community_trace_without_any_destination_is_counted() {
    let (mut cfg, _d) = support::config();
    cfg.gateway.enterprise_enabled = false;
    let gw = telemetry_gateway::start(cfg).unwrap();
    gw.emit(ev(TelemetryCase::WorkflowRun)).unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.dropped_for(ReasonCode::NoDestination), 1);
    assert!(s.is_settled());
}

#[test]
fn legacy_mode_passes_traces_and_drops_metric_cases_and_flips_at_runtime() {
    let (cfg, _d) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    gw.set_gateway_enabled(false);
    gw.emit(ev(TelemetryCase::WorkflowRun)).unwrap();
    gw.emit(ev(TelemetryCase::NodeExecution)).unwrap();
    gw.emit(ev(TelemetryCase::AppCreated)).unwrap();
    // Wait until those three are routed, then flip back on: later events use the new rule.
    let end = std::time::Instant::now() + support::DEADLINE;
    while gw.stats().routed.trace + gw.stats().dropped_total() < 3
        && std::time::Instant::now() < end
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    gw.set_gateway_enabled(true);
    gw.emit(ev(TelemetryCase::AppCreated)).unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.dropped_for(ReasonCode::GatewayDisabled), 1);
    assert_eq!(s.routed.trace, 2);
    assert_eq!(s.routed.metric_log, 1);
    assert_eq!(s.delivered, 3);
    assert!(s.is_settled());
}

#[test]
fn custom_cases_from_config_are_routed_and_unknown_ones_refused() {
    let (mut cfg, _d) = support::config();
    cfg.cases.insert(
        "billing_event".into(),
        telemetry_gateway::config::CaseSection {
            signal: Some(telemetry_gateway::SignalType::MetricLog),
            ..Default::default()
        },
    );
    let gw = telemetry_gateway::start(cfg).unwrap();
    gw.emit(ev(TelemetryCase::custom("billing_event"))).unwrap();
    let err = gw.emit(ev(TelemetryCase::custom("mystery"))).unwrap_err();
    assert!(err.to_string().contains("case"), "{err}");
    assert_eq!(err.reason(), ReasonCode::UnknownCase);
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, 1);
    assert_eq!(s.dropped_for(ReasonCode::UnknownCase), 1);
    assert!(s.is_settled());
}

#[test]
fn invalid_envelopes_are_refused_naming_the_field_and_counted() {
    let (cfg, _d) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    let err = gw
        .emit(TelemetryEnvelope::new(
            TelemetryCase::AppCreated,
            TelemetryContext::tenant(""),
        ))
        .unwrap_err();
    assert!(matches!(err, EmitError::Invalid(_)));
    assert!(err.to_string().contains("context.tenant_id"), "{err}");
    let mut bad_version = ev(TelemetryCase::AppCreated);
    bad_version.schema_version = 7;
    assert!(gw
        .emit(bad_version)
        .unwrap_err()
        .to_string()
        .contains("schema_version"));
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.dropped_for(ReasonCode::InvalidEnvelope), 2);
    assert!(s.is_settled());
}

#[test]
fn each_event_follows_the_switches_in_force_when_it_was_emitted() {
    let (cfg, _d) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    // Flip back and forth with no pause: the gateway actor reaches most of these events after
    // the switch has changed again, and must still use the value from emit() time.
    let mut expected_dropped = 0;
    for i in 0..2_000 {
        let off = i % 2 == 0;
        gw.set_enterprise_enabled(!off);
        gw.emit(ev(TelemetryCase::AppUpdated)).unwrap();
        if off {
            expected_dropped += 1;
        }
    }
    gw.set_enterprise_enabled(true);
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(
        s.dropped_for(ReasonCode::EnterpriseDisabled),
        expected_dropped
    );
    assert_eq!(s.delivered, 2_000 - expected_dropped);
    assert!(s.is_settled());
}
