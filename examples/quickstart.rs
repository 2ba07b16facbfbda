//! The five-minute tour: start the gateway on its embedded defaults, emit a realistic mixed
//! workload, shut down, and print what happened to every event.
//!
//! ```text
//! cargo run --release --example quickstart [-- --config PATH] [--json] [--serve]
//! ```
//!
//! No Redis and no collector are needed: with no `otlp.endpoint` the spans, log records and
//! metric points go as JSON lines to `telemetry-gateway-output.jsonl`. Set `otlp.endpoint` in
//! the config file or `TELEMETRY_GATEWAY__OTLP__ENDPOINT=http://127.0.0.1:4317` to send the same
//! run to a collector. With `--json` the last line of stdout is one JSON object with `emitted`,
//! `delivered`, `routed`, `exported`, `offloaded`, `deduplicated` and `dropped`, such that
//! `emitted == delivered + sum(dropped)`.
//!
//! With `diagnostics.listen` set (for example
//! `TELEMETRY_GATEWAY__DIAGNOSTICS__LISTEN=127.0.0.1:9464`) the run serves `/metrics`,
//! `/readyz` and `/debug/events`; add `--serve` to keep serving after the workload until Ctrl-C,
//! so you can look around before the summary is printed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use telemetry_gateway::{start, GatewayConfig, TelemetryCase, TelemetryContext, TelemetryEnvelope};
use uuid::Uuid;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config_path: Option<PathBuf> = None;
    let mut as_json = false;
    let mut serve = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => as_json = true,
            "--serve" => serve = true,
            "--config" => config_path = args.next().map(PathBuf::from),
            other => {
                return Err(format!(
                    "unknown argument {other:?} (use --config PATH, --json, --serve)"
                )
                .into())
            }
        }
    }
    let config = GatewayConfig::load(config_path.as_deref())?;
    let output = match &config.otlp.endpoint {
        Some(ep) => format!("OTLP {ep}"),
        None => config.export.file_path.display().to_string(),
    };
    let gateway = start(config)?;

    let mut emitted = 0u64;
    let mut refused: BTreeMap<String, u64> = BTreeMap::new();
    let mut emit = |env: TelemetryEnvelope| {
        emitted += 1;
        if let Err(e) = gateway.emit(env) {
            *refused.entry(e.reason().as_str().to_owned()).or_default() += 1;
        }
    };

    let tenants = ["acme", "globex"];
    for (t, tenant) in tenants.iter().enumerate() {
        let ctx = TelemetryContext::tenant(*tenant)
            .app(format!("app-{t}"))
            .user("u-1");
        // Workflow runs, each with its node executions: one trace per run.
        for run in 0..20 {
            let run_id = format!("{tenant}-run-{run}");
            for node in 0..5 {
                emit(
                    TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx.clone())
                        .with_run_id(&run_id)
                        .with_payload(json!({
                            "node_id": format!("node-{node}"), "node_type": "llm",
                            "status": if node == 4 && run % 7 == 0 { "failed" } else { "succeeded" },
                            "duration_ms": 40 + node * 10, "total_tokens": 120,
                            "inputs": {"question": "What is the refund policy?"},
                        })),
                );
            }
            emit(
                TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx.clone())
                    .with_run_id(&run_id)
                    .with_payload(
                        json!({"status": "succeeded", "duration_ms": 400, "total_tokens": 600}),
                    ),
            );
        }
        // Chat messages with a tool call, a retrieval and a moderation check each.
        for m in 0..30 {
            let run_id = format!("{tenant}-msg-{m}");
            emit(
                TelemetryEnvelope::new(TelemetryCase::MessageRun, ctx.clone())
                    .with_run_id(&run_id)
                    .with_payload(
                        json!({"status": "succeeded", "duration_ms": 900, "total_tokens": 350,
                                          "query": "hello", "answer": "hi there"}),
                    ),
            );
            emit(
                TelemetryEnvelope::new(TelemetryCase::ToolExecution, ctx.clone())
                    .with_run_id(&run_id)
                    .with_payload(json!({"tool_name": "web_search", "duration_ms": 120})),
            );
            emit(
                TelemetryEnvelope::new(TelemetryCase::DatasetRetrieval, ctx.clone())
                    .with_run_id(&run_id)
                    .with_payload(json!({"dataset_id": "ds-1", "documents": 4})),
            );
            emit(
                TelemetryEnvelope::new(TelemetryCase::ModerationCheck, ctx.clone())
                    .with_run_id(&run_id)
                    .with_payload(json!({"flagged": m % 10 == 0})),
            );
        }
        // App lifecycle.
        for kind in [
            TelemetryCase::AppCreated,
            TelemetryCase::AppUpdated,
            TelemetryCase::AppDeleted,
        ] {
            emit(
                TelemetryEnvelope::new(kind, ctx.clone())
                    .with_payload(json!({"app_mode": "workflow"})),
            );
        }
        // Feedback, each re-sent once with the same event id (a client retry): counts once.
        for f in 0..10 {
            let id = Uuid::now_v7();
            let fb = TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, ctx.clone())
                .with_event_id(id)
                .with_payload(
                    json!({"rating": if f % 3 == 0 { "dislike" } else { "like" },
                                      "content": "user feedback text"}),
                );
            emit(fb.clone());
            emit(fb);
        }
    }
    // One payload over 1 MiB: offloaded to the payload store, only its ref travels.
    emit(
        TelemetryEnvelope::new(
            TelemetryCase::ToolExecution,
            TelemetryContext::tenant("acme").app("app-0"),
        )
        .with_payload(json!({"tool_name": "pdf_extract", "duration_ms": 3000,
                                  "outputs": "x".repeat(1_200_000)})),
    );
    // An enterprise-only case while the enterprise exporter is off: dropped, counted.
    gateway.set_enterprise_enabled(false);
    let off_case = TelemetryEnvelope::new(
        TelemetryCase::PromptGeneration,
        TelemetryContext::tenant("acme"),
    )
    .with_payload(json!({"total_tokens": 80}));
    let off_case_id = off_case.event_id.to_string();
    emit(off_case);
    gateway.set_enterprise_enabled(true);
    // An event that fails validation: refused at emit(), counted.
    emit(TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant(""),
    ));

    // Where to look while it runs.
    let diagnostics = gateway.diagnostics_addr();
    if serve {
        let Some(addr) = diagnostics else {
            return Err("--serve needs diagnostics.listen (for example \
                        TELEMETRY_GATEWAY__DIAGNOSTICS__LISTEN=127.0.0.1:9464)"
                .into());
        };
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while gateway.stats().in_flight > 0 && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        println!("serving diagnostics on http://{addr} until Ctrl-C:");
        println!("  curl http://{addr}/metrics");
        println!("  curl http://{addr}/readyz");
        println!("  curl http://{addr}/debug/events/{off_case_id}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(tokio::signal::ctrl_c())?;
    }

    let report = gateway.shutdown_blocking(Duration::from_secs(10));
    let s = &report.stats;
    let dropped_total: u64 = s.dropped.values().sum();
    let summary = json!({
        "emitted": s.emitted,
        "delivered": s.delivered,
        "delivered_by_signal": {"trace": s.delivered_by_signal.trace,
                                "metric_log": s.delivered_by_signal.metric_log},
        "companion_logs_dropped": s.companion_logs_dropped,
        "routed": {"trace": s.routed.trace, "metric_log": s.routed.metric_log},
        "exported": {"spans": s.exported.spans, "log_records": s.exported.log_records,
                     "metric_points": s.exported.metric_points},
        "offloaded": s.offloaded,
        "deduplicated": s.deduplicated,
        "dropped": s.dropped,
        "degraded": s.degraded,
        "refused_at_emit": refused,
        "balanced": s.emitted == s.delivered + dropped_total,
        "clean": report.is_clean(),
        "actors_lost": report.actors_lost,
        "explained": {"event_id": off_case_id,
                      "reason": why_reason(&gateway, &off_case_id)},
        "output": output,
    });
    assert_eq!(s.emitted, emitted, "the gateway counted every emit() call");
    println!("telemetry-gateway quickstart");
    println!("  emitted      {}", s.emitted);
    println!("  delivered    {}", s.delivered);
    println!(
        "  routed       trace {} / metric_log {}",
        s.routed.trace, s.routed.metric_log
    );
    println!(
        "  exported     spans {} / log records {} / metric points {}",
        s.exported.spans, s.exported.log_records, s.exported.metric_points
    );
    println!("  offloaded    {}", s.offloaded);
    println!("  deduplicated {}", s.deduplicated);
    for (reason, n) in &s.dropped {
        println!("  dropped      {reason}: {n}");
    }
    println!(
        "  check        emitted {} == delivered {} + dropped {}: {}",
        s.emitted,
        s.delivered,
        dropped_total,
        if s.emitted == s.delivered + dropped_total {
            "ok"
        } else {
            "MISMATCH"
        }
    );
    println!("  output       {output}");
    // Why was an event not delivered? The flight recorder knows.
    println!(
        "  explain      {off_case_id}: dropped ({})",
        why_reason(&gateway, &off_case_id).unwrap_or("not recorded")
    );
    match diagnostics {
        Some(addr) => println!(
            "  look         http://{addr}/metrics, http://{addr}/debug/events/<event id>"
        ),
        None => println!(
            "  look         handle.explain(<event id>); set diagnostics.listen to serve /metrics and /debug/events"
        ),
    }
    if as_json {
        println!("{summary}");
    }
    if !report.actors_lost.is_empty() {
        eprintln!(
            "quickstart: actors died during the run ({:?}): the ledger adds up, but the run is \
             not clean; see the log above",
            report.actors_lost
        );
    }
    if s.emitted != s.delivered + dropped_total || !report.is_clean() {
        std::process::exit(1);
    }
    Ok(())
}

/// The reason code that ended an event's journey, from the flight recorder.
fn why_reason(gateway: &telemetry_gateway::GatewayHandle, id: &str) -> Option<&'static str> {
    gateway
        .explain(id)
        .journeys
        .first()
        .and_then(|j| j.outcome())
        .and_then(|o| o.reason)
        .map(|r| r.as_str())
}
