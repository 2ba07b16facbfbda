//! The "diagnose in 60 seconds" walkthrough of docs/operations.md, done by a program: for three
//! failures, start from an event id (or the action's correlation id) and find the reason using
//! only the diagnostics endpoint, as an operator with `curl` would.

use crate::support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{
    GatewayBuilder, GatewayConfig, Payload, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

use support::http_get as get;

/// Step 1 of the walkthrough: `GET /debug/events/<id>`; step 2: read the last step's reason.
fn reason_of(addr: SocketAddr, id: &str) -> (String, Value) {
    let (status, body) = get(addr, &format!("/debug/events/{id}"));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let steps = v["journeys"][0]["steps"].as_array().unwrap().clone();
    let reason = steps
        .iter()
        .rev()
        .find_map(|s| s["reason"].as_str())
        .unwrap_or("none")
        .to_owned();
    (reason, v)
}

/// Step 3: the same reason is counted in `/metrics`, so a dashboard shows how often it happens.
fn counted(addr: SocketAddr, reason: &str) -> f64 {
    let (_, text) = get(addr, "/metrics");
    text.lines()
        .filter(|l| {
            (l.starts_with("telemetry_gateway_events_dropped_total{")
                || l.starts_with("telemetry_gateway_events_degraded_total{"))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn cfg() -> (GatewayConfig, tempfile::TempDir) {
    let (mut c, d) = support::config();
    c.diagnostics.listen = Some("127.0.0.1:0".into());
    (c, d)
}

fn settle(gw: &telemetry_gateway::GatewayHandle) {
    let end = std::time::Instant::now() + support::DEADLINE;
    while gw.stats().in_flight > 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_enterprise_only_case_while_enterprise_is_off() {
    let (mut c, _d) = cfg();
    c.gateway.enterprise_enabled = false;
    let gw = telemetry_gateway::start(c).unwrap();
    let e = TelemetryEnvelope::new(
        TelemetryCase::FeedbackCreated,
        TelemetryContext::tenant("acme"),
    )
    .with_correlation_id("req-1");
    let id = e.event_id.to_string();
    gw.emit(e).unwrap();
    settle(&gw);
    let addr = gw.diagnostics_addr().unwrap();
    let (reason, _) = reason_of(addr, &id);
    assert_eq!(reason, "enterprise_disabled");
    // By the action's correlation id too.
    let (status, body) = get(addr, "/debug/events?cid=req-1");
    assert_eq!(status, 200);
    assert!(body.contains("enterprise_disabled"));
    assert_eq!(counted(addr, "enterprise_disabled"), 1.0);
    gw.shutdown_blocking(support::DEADLINE);
}

#[test]
fn a_refused_payload_ref() {
    // At the entrance: emit() refuses it, naming the field.
    let (c, _d) = cfg();
    let gw = telemetry_gateway::start(c).unwrap();
    let mut e = TelemetryEnvelope::new(
        TelemetryCase::ToolExecution,
        TelemetryContext::tenant("acme"),
    );
    e.payload = Payload::Ref("../globex/secret.json".into());
    let id = e.event_id.to_string();
    assert!(gw.emit(e).is_err());
    let addr = gw.diagnostics_addr().unwrap();
    let (reason, journey) = reason_of(addr, &id);
    assert_eq!(reason, "invalid_envelope");
    assert!(journey.to_string().contains("payload_ref"), "{journey}");
    gw.shutdown_blocking(support::DEADLINE);

    // Through another transport: the handler refuses to read it.
    let (c, _d) = cfg();
    let (transport, sources) = support::ForeignRefTransport::new();
    let gw = GatewayBuilder::new(c)
        .metric_transport(transport, sources)
        .start()
        .unwrap();
    let e = TelemetryEnvelope::new(
        TelemetryCase::ToolExecution,
        TelemetryContext::tenant("acme"),
    );
    let id = e.event_id.to_string();
    gw.emit(e).unwrap();
    settle(&gw);
    let addr = gw.diagnostics_addr().unwrap();
    let (_, journey) = reason_of(addr, &id);
    assert!(
        journey.to_string().contains("payload_ref_refused"),
        "{journey}"
    );
    assert_eq!(counted(addr, "payload_ref_refused"), 1.0);
    gw.shutdown_blocking(support::DEADLINE);
}

#[test]
fn a_collector_that_rejects_the_batch() {
    let rx = OtlpReceiver::start();
    rx.fail_with(Some(tonic::Code::InvalidArgument));
    let (mut c, _d) = cfg();
    c.otlp.endpoint = Some(rx.endpoint());
    let gw = telemetry_gateway::start(c).unwrap();
    let e = TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("acme"))
        .with_run_id("run-9");
    let id = e.event_id.to_string();
    gw.emit(e).unwrap();
    settle(&gw);
    let addr = gw.diagnostics_addr().unwrap();
    let (reason, journey) = reason_of(addr, &id);
    assert_eq!(reason, "export_rejected");
    // The failing destination and its answer are in the journey.
    let text = journey.to_string();
    assert!(
        text.contains("export_failed") && text.contains("enterprise"),
        "{text}"
    );
    assert!(text.contains("InvalidArgument"), "{text}");
    assert!(counted(addr, "export_rejected") >= 1.0);
    gw.shutdown_blocking(support::DEADLINE);
}

#[test]
fn a_metric_event_rejected_by_the_collector_shows_the_collectors_answer() {
    let rx = OtlpReceiver::start();
    rx.fail_with(Some(tonic::Code::InvalidArgument));
    let (mut c, _d) = cfg();
    c.otlp.endpoint = Some(rx.endpoint());
    let gw = telemetry_gateway::start(c).unwrap();
    let e = TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("acme"));
    let id = e.event_id.to_string();
    gw.emit(e).unwrap();
    settle(&gw);
    let (reason, journey) = reason_of(gw.diagnostics_addr().unwrap(), &id);
    assert_eq!(reason, "export_rejected");
    let text = journey.to_string();
    assert!(
        text.contains("enterprise logs:") && text.contains("InvalidArgument"),
        "{text}"
    );
    gw.shutdown_blocking(support::DEADLINE);
}

#[test]
fn a_refused_event_with_hostile_ids_is_recorded_sanitized() {
    let (c, _d) = cfg();
    let gw = telemetry_gateway::start(c).unwrap();
    let e = TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant("t\r\nforged: yes"),
    )
    .with_correlation_id(format!("req\r\n{}", "x".repeat(10_000)));
    let id = e.event_id.to_string();
    assert!(gw.emit(e).is_err());
    let ex = gw.explain(&id);
    let j = &ex.journeys[0];
    assert!(!j.tenant_id.contains('\n') && !j.tenant_id.contains('\r'));
    assert!(!j.correlation_id.contains('\n'));
    assert!(j.correlation_id.len() <= telemetry_gateway::logging::MAX_LOG_VALUE_BYTES + 3);
    gw.shutdown_blocking(support::DEADLINE);
}
