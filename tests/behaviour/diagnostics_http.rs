//! The diagnostics endpoint, scraped for real: `/metrics` (validated with `promtool`),
//! `/healthz`, `/readyz`, `/debug/events`; and the self-metrics through the OTel pipeline.

use crate::support;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{start, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope};

use support::http_get as get;

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): install the Debian package prometheus, or run scripts/test.sh")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
}

fn sample(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {line_prefix} in:\n{text}"))
}

#[test]
fn metrics_health_readiness_and_events_are_served() {
    let (mut cfg, _d) = support::config();
    cfg.diagnostics.listen = Some("127.0.0.1:0".into());
    let gw = start(cfg).unwrap();
    let addr = gw.diagnostics_addr().expect("bound");
    gw.set_enterprise_enabled(false);
    let dropped = TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("t"))
        .with_correlation_id("req-7");
    let dropped_id = dropped.event_id.to_string();
    gw.emit(dropped).unwrap();
    gw.set_enterprise_enabled(true);
    for i in 0..20 {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
                .with_run_id(format!("r{i}"))
                .with_correlation_id("req-7")
                .with_payload(json!({"duration_ms": 5})),
        )
        .unwrap();
    }
    let end = Instant::now() + support::DEADLINE;
    while gw.stats().in_flight > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }

    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    promtool_check(&text);
    assert_eq!(
        sample(&text, "telemetry_gateway_events_emitted_total "),
        21.0
    );
    assert_eq!(
        sample(&text, "telemetry_gateway_events_dropped_total{reason=\"enterprise_disabled\",intentional=\"true\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "telemetry_gateway_events_delivered_total{signal=\"trace\"}"
        ),
        20.0
    );
    assert_eq!(
        sample(&text, "telemetry_gateway_export_items_total{exporter=\"enterprise\",signal=\"traces\",outcome=\"ok\"}"),
        20.0
    );
    assert_eq!(
        sample(
            &text,
            "telemetry_gateway_queue_capacity_items{queue=\"gateway\"}"
        ),
        65536.0
    );
    assert_eq!(
        sample(
            &text,
            "telemetry_gateway_emit_to_export_seconds_count{signal=\"trace\"}"
        ),
        20.0
    );
    assert_eq!(sample(&text, "telemetry_gateway_ready "), 1.0);
    assert_eq!(
        sample(
            &text,
            "telemetry_gateway_events_by_case_total{case=\"workflow_run\",outcome=\"delivered\"}"
        ),
        20.0
    );
    assert_eq!(
        sample(
            &text,
            "telemetry_gateway_events_by_case_total{case=\"app_created\",outcome=\"dropped\"}"
        ),
        1.0
    );
    // The snapshot on the handle shows the same numbers, and per-case totals add up.
    let d = gw.diagnostics();
    assert_eq!(d.stats.emitted, 21);
    let delivered: u64 = d.by_case.values().map(|c| c.delivered).sum();
    let dropped: u64 = d.by_case.values().map(|c| c.dropped).sum();
    assert_eq!(delivered, d.stats.delivered);
    assert_eq!(dropped, d.stats.dropped_total());
    assert!(d
        .queues
        .iter()
        .any(|q| q.name == "trace" && q.capacity == 65536));

    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["ready"], true);

    // Explain by event id and by correlation id.
    let (status, body) = get(addr, &format!("/debug/events/{dropped_id}"));
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let steps = v["journeys"][0]["steps"].as_array().unwrap();
    assert_eq!(steps.last().unwrap()["reason"], "enterprise_disabled");
    let (status, body) = get(addr, "/debug/events?cid=req-7");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["journeys"].as_array().unwrap().len(), 21);
    let (status, _) = get(addr, "/debug/events/never-seen");
    assert_eq!(status, 404);
    let (status, _) = get(addr, "/nope");
    assert_eq!(status, 404);

    let report = gw.shutdown_blocking(support::DEADLINE);
    assert!(report.stats.is_settled());
    assert!(
        TcpStream::connect(addr).is_err(),
        "the endpoint closes at shutdown"
    );
}

#[test]
fn readiness_fails_with_a_reason_while_the_collector_keeps_failing() {
    let rx = OtlpReceiver::start();
    rx.fail_with(Some(tonic::Code::Unavailable));
    let (mut cfg, _d) = support::config();
    cfg.diagnostics.listen = Some("127.0.0.1:0".into());
    cfg.diagnostics.unready_after_failing_secs = 1;
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.otlp.timeout_ms = 300;
    cfg.trace_batcher.flush_interval_ms = 20;
    let gw = start(cfg).unwrap();
    let addr = gw.diagnostics_addr().unwrap();
    // Keep traffic flowing so the exporter keeps trying and failing.
    let end = Instant::now() + Duration::from_secs(15);
    let mut unready = None;
    let mut i = 0;
    while Instant::now() < end {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
                .with_run_id(format!("r{i}")),
        )
        .unwrap();
        i += 1;
        // Any failing exporter makes it 503 (logs may cross the window first); wait until the
        // trace exporter is named too.
        let (status, body) = get(addr, "/readyz");
        if status == 503 && body.contains("(traces)") {
            unready = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = unready.expect("/readyz never turned 503 while every export failed");
    let v: Value = serde_json::from_str(&body).unwrap();
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("exporter enterprise (traces) failing"),
        "{reasons}"
    );
    // Recovery: the collector comes back, the next successful export makes it ready again.
    rx.fail_with(None);
    let end = Instant::now() + Duration::from_secs(15);
    let mut ready = false;
    while Instant::now() < end && !ready {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
                .with_run_id(format!("r{i}")),
        )
        .unwrap();
        i += 1;
        std::thread::sleep(Duration::from_millis(100));
        // Logs and metrics exporters must have succeeded too; only traces are checked here.
        let v: Value = serde_json::from_str(&get(addr, "/readyz").1).unwrap();
        ready = !v["reasons"].to_string().contains("(traces)");
    }
    assert!(
        ready,
        "readiness did not recover after the collector came back"
    );
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    // Batches that failed during the outage were held and delivered once it ended: nothing was
    // dropped as export_failed; only what did not fit in the bounded queues may be queue_full.
    assert_eq!(s.dropped_for(ReasonCode::ExportFailed), 0, "{s:?}");
    assert_eq!(
        s.delivered + s.dropped_for(ReasonCode::QueueFull),
        s.emitted,
        "{s:?}"
    );
    assert!(s.is_settled());
}

#[test]
fn self_metrics_reach_the_collector_through_the_otel_pipeline() {
    let rx = OtlpReceiver::start();
    let (mut cfg, d) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    // With disk spools, so that the per-spool instruments have points too.
    cfg.spool.kind = telemetry_gateway::config::SpoolKind::Disk;
    cfg.spool.path = Some(d.path().join("spool"));
    let gw = start(cfg).unwrap();
    gw.emit(TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant("t"),
    ))
    .unwrap();
    gw.shutdown_blocking(support::DEADLINE);
    let r = rx.received();
    let names: std::collections::BTreeSet<_> = r.metrics.iter().map(|m| m.name.as_str()).collect();
    for n in telemetry_gateway::diagnostics::catalogue::otel_names() {
        assert!(names.contains(n), "{n} not exported; got {names:?}");
    }
}

/// With disk spools, `/metrics` has each spool's series (and passes `promtool`), counting what
/// was appended and acknowledged.
#[test]
fn the_disk_spools_are_scraped() {
    let rx = OtlpReceiver::start();
    let (mut cfg, d) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.diagnostics.listen = Some("127.0.0.1:0".into());
    cfg.spool.kind = telemetry_gateway::config::SpoolKind::Disk;
    cfg.spool.path = Some(d.path().join("spool"));
    let gw = start(cfg).unwrap();
    let addr = gw.diagnostics_addr().expect("bound");
    for case in [TelemetryCase::WorkflowRun, TelemetryCase::AppCreated] {
        gw.emit(TelemetryEnvelope::new(case, TelemetryContext::tenant("t")))
            .unwrap();
    }
    let end = Instant::now() + Duration::from_secs(10);
    while gw.stats().in_flight > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let (status, text) = get(addr, "/metrics");
    assert_eq!(status, 200);
    promtool_check(&text);
    for spool in ["enterprise", "enterprise logs"] {
        let appends = sample(
            &text,
            &format!("telemetry_gateway_spool_appends_total{{spool=\"{spool}\"}}"),
        );
        let acks = sample(
            &text,
            &format!("telemetry_gateway_spool_acks_total{{spool=\"{spool}\"}}"),
        );
        assert!(appends >= 1.0 && acks == appends, "{spool}: {text}");
        assert_eq!(
            sample(
                &text,
                &format!("telemetry_gateway_spool_events{{spool=\"{spool}\"}}")
            ),
            0.0
        );
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!((s.delivered, s.spooled), (2, 0), "{s:?}");
}
