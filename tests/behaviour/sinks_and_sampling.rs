//! Per-tenant sinks are isolated from each other; sampling keeps or drops whole traces.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use opentelemetry_sdk::trace::SpanData;
use telemetry_gateway::{
    GatewayBuilder, ReasonCode, SinkError, TelemetryCase, TelemetryContext, TelemetryEnvelope,
    TraceSink,
};

/// A sink that never finishes an export until released (a provider that hangs).
#[derive(Debug, Clone, Default)]
struct StuckSink {
    release: Arc<tokio::sync::Notify>,
}

impl TraceSink for StuckSink {
    fn name(&self) -> &str {
        "stuck"
    }
    fn export<'a>(&'a self, _batch: &'a [SpanData]) -> BoxFuture<'a, Result<(), SinkError>> {
        let r = self.release.clone();
        Box::pin(async move {
            r.notified().await;
            Ok(())
        })
    }
}

fn run(tenant: &str, i: usize) -> TelemetryEnvelope {
    TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant(tenant))
        .with_run_id(format!("{tenant}-{i}"))
}

#[test]
fn a_stuck_tenant_sink_does_not_hold_back_the_enterprise_exporter_or_other_tenants() {
    let (mut cfg, _d) = support::config();
    cfg.trace_batcher.max_batch_size = 10;
    cfg.trace_batcher.sink_queue_batches = 2;
    cfg.otlp.timeout_ms = 2_000; // the stuck export holds its worker for 2 s per batch
    let stuck = StuckSink::default();
    let healthy = support::RecordingSink::default();
    let gw = GatewayBuilder::new(cfg)
        .trace_sink("slow-tenant", None, Arc::new(stuck.clone()))
        .trace_sink("ok-tenant", None, Arc::new(healthy.clone()))
        .start()
        .unwrap();
    // Ten rounds, each one batch of five events per tenant. Every round's healthy spans arrive
    // well before the stuck sink's first 2 s timeout, while the stuck sink's queue (2 batches)
    // overflows from round four on.
    for round in 0..10 {
        for i in 0..5 {
            gw.emit(run("slow-tenant", round * 5 + i)).unwrap();
            gw.emit(run("ok-tenant", round * 5 + i)).unwrap();
        }
        // Less than the stuck sink's 2 s: a healthy sink queued behind it would miss this.
        let end = Instant::now() + Duration::from_secs(1);
        while healthy.spans().len() < (round + 1) * 5 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(healthy.spans().len(), (round + 1) * 5, "round {round}");
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    // The enterprise exporter (JSON lines) took every event, so all 100 are delivered; the
    // stuck sink's copies are counted as failed, not hidden.
    assert_eq!(s.delivered, 100, "{s:?}");
    assert!(
        s.sink_spans_failed >= 20,
        "the stuck sink's lost copies are counted: {s:?}"
    );
    assert!(s.is_settled());
    stuck.release.notify_waiters();
}

#[test]
fn a_stuck_only_destination_drops_with_reasons_and_shutdown_stays_bounded() {
    let (mut cfg, _d) = support::config();
    cfg.gateway.enterprise_enabled = false;
    cfg.trace_batcher.max_batch_size = 5;
    cfg.trace_batcher.sink_queue_batches = 1;
    cfg.otlp.timeout_ms = 200;
    // A timed-out batch is held and retried; after 1 s it is given up (export_failed).
    cfg.retry.max_batch_age_secs = 1;
    let stuck = StuckSink::default();
    let gw = GatewayBuilder::new(cfg)
        .trace_sink("t", None, Arc::new(stuck))
        .start()
        .unwrap();
    for i in 0..100 {
        gw.emit(run("t", i)).unwrap();
    }
    let report = gw.shutdown_blocking(support::DEADLINE);
    let s = &report.stats;
    assert_eq!(s.delivered, 0);
    assert_eq!(s.emitted, s.dropped_total());
    assert!(s.dropped_for(ReasonCode::QueueFull) > 0, "{s:?}");
    assert!(s.dropped_for(ReasonCode::ExportFailed) > 0, "{s:?}");
}

#[test]
fn sampling_keeps_or_drops_a_trace_whole() {
    let (mut cfg, dir) = support::config();
    cfg.otlp.sampling_ratio = 0.5;
    let gw = telemetry_gateway::start(cfg).unwrap();
    let runs = 200;
    for r in 0..runs {
        for case in [
            TelemetryCase::WorkflowRun,
            TelemetryCase::NodeExecution,
            TelemetryCase::NodeExecution,
        ] {
            gw.emit(
                TelemetryEnvelope::new(case, TelemetryContext::tenant("t"))
                    .with_run_id(format!("run-{r}")),
            )
            .unwrap();
        }
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    let sampled_out = s.dropped_for(ReasonCode::SampledOut);
    assert_eq!(sampled_out % 3, 0, "whole traces only: {sampled_out}");
    assert!(sampled_out > 0 && sampled_out < 3 * runs, "{sampled_out}");
    assert_eq!(s.delivered + sampled_out, 3 * runs);
    // Every exported trace is complete: its root and both nodes.
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let mut per_trace = std::collections::HashMap::<String, usize>::new();
    for l in text.lines().filter(|l| l.contains("\"signal\":\"span\"")) {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        *per_trace
            .entry(v["trace_id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(per_trace.values().all(|&n| n == 3), "{per_trace:?}");
    assert_eq!(per_trace.len() as u64 * 3, s.delivered);
}

#[test]
fn the_namespace_prefixes_every_name() {
    let (mut cfg, dir) = support::config();
    cfg.export.namespace = "acme".into();
    let gw = telemetry_gateway::start(cfg).unwrap();
    gw.emit(run("t", 1)).unwrap();
    gw.emit(TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant("t"),
    ))
    .unwrap();
    gw.shutdown_blocking(support::DEADLINE);
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let names: Vec<String> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|v| {
            v["name"]
                .as_str()
                .or(v["event_name"].as_str())
                .map(str::to_owned)
        })
        .collect();
    assert!(names.contains(&"acme.workflow.run".to_owned()), "{names:?}");
    assert!(names.contains(&"acme.app_created".to_owned()), "{names:?}");
    assert!(
        names.contains(&"acme.app.created.total".to_owned()),
        "{names:?}"
    );
    // Every name of the app's telemetry is namespaced; the gateway's own self-metrics keep their
    // fixed `telemetry_gateway.` names so one dashboard works for every host.
    let own = telemetry_gateway::diagnostics::catalogue::otel_names();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("acme.") || own.contains(&n.as_str())),
        "{names:?}"
    );
}

#[test]
fn sinks_from_config_receive_their_tenants_spans_with_their_headers() {
    let rx = telemetry_gateway::testing::OtlpReceiver::start();
    let (mut cfg, dir) = support::config();
    let jsonl_path = dir.path().join("tenant-b.jsonl");
    let toml = format!(
        r#"
        [[sinks]]
        name = "tenant-a-collector"
        tenant_id = "tenant-a"
        app_id = "app-1"
        kind = "otlp"
        endpoint = "{endpoint}"
        headers = {{ x-provider-key = "pk-123" }}

        [[sinks]]
        name = "tenant-b-file"
        tenant_id = "tenant-b"
        kind = "jsonl"
        path = "{path}"
        "#,
        endpoint = rx.endpoint(),
        path = jsonl_path.display()
    );
    cfg.sinks = telemetry_gateway::GatewayConfig::from_toml_str(&toml)
        .unwrap()
        .sinks;
    cfg.gateway.enterprise_enabled = false; // only the tenants' own sinks
    let gw = telemetry_gateway::start(cfg).unwrap();
    let ctx_a1 = TelemetryContext::tenant("tenant-a").app("app-1");
    let ctx_a2 = TelemetryContext::tenant("tenant-a").app("app-2");
    for i in 0..3 {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx_a1.clone())
                .with_run_id(format!("a{i}")),
        )
        .unwrap();
        gw.emit(run("tenant-b", i)).unwrap();
    }
    // app-2 of tenant-a has no sink and the enterprise exporter is off.
    gw.emit(TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx_a2).with_run_id("a-other"))
        .unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, 6, "{s:?}");
    assert_eq!(s.dropped_for(ReasonCode::NoDestination), 1);
    let r = rx.received();
    assert_eq!(
        r.spans.len(),
        3,
        "only tenant-a/app-1 spans reach tenant-a's collector"
    );
    assert_eq!(
        r.last_x_headers.get("x-provider-key").map(String::as_str),
        Some("pk-123")
    );
    let text = std::fs::read_to_string(&jsonl_path).unwrap();
    assert_eq!(text.lines().count(), 3);
    assert!(text
        .lines()
        .all(|l| l.contains("\"tenant.id\":\"tenant-b\"")));
}
