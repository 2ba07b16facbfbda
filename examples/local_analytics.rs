//! A batch job with no telemetry backend: its telemetry goes to a local SQLite file
//! (`[sinks.sqlite]`), then `telemetry-gateway slo` checks it and `export-parquet` exports it.
//!
//! ```text
//! cargo run --example local_analytics --features testing,analytics -- --db telemetry.db [--runs 200]
//!     [--slow-every 10] [--fail-every 25] [--forever]
//! telemetry-gateway slo --db telemetry.db --config config/slo-example.toml
//! telemetry-gateway export-parquet --db telemetry.db --out parquet/
//! ```
//!
//! Each run is one `workflow_run` with three `node_execution`s and a `feedback_created`. Every
//! `--slow-every`th run takes 2.5 s (in its payload), every `--fail-every`th fails. With
//! `--forever` it keeps emitting until killed (the crash test in `tests/sqlite_sink.rs` kills it
//! with SIGKILL mid-write). Otherwise it shuts down and prints a JSON summary.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;
use telemetry_gateway::config::{LocalOutput, SqliteSection};
use telemetry_gateway::{
    GatewayConfig, GatewayHandle, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

fn emit_run(gw: &GatewayHandle, i: u64, slow_every: u64, fail_every: u64) {
    let run_id = format!("run-{i}");
    let ctx = || TelemetryContext::tenant("acme").app("batch-job");
    let slow = slow_every > 0 && i.is_multiple_of(slow_every);
    let failed = fail_every > 0 && i % fail_every == 1;
    for n in 0..3 {
        let _ = gw.emit(
            TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx())
                .with_run_id(run_id.clone())
                .with_payload(json!({"node_id": format!("node-{n}"), "node_type": "llm",
                    "status": "succeeded", "duration_ms": 40 + n * 10, "total_tokens": 50})),
        );
    }
    let mut payload = json!({"status": "succeeded", "duration_ms": if slow { 2500 } else { 300 + (i % 7) * 20 },
        "total_tokens": 150});
    if failed {
        payload["status"] = json!("failed");
        payload["error"] = json!("tool timed out");
    }
    let _ = gw.emit(
        TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx())
            .with_run_id(run_id.clone())
            .with_payload(payload),
    );
    let _ = gw.emit(
        TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, ctx())
            .with_correlation_id(run_id)
            .with_payload(json!({"rating": if i.is_multiple_of(5) { "dislike" } else { "like" }})),
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = PathBuf::from(arg("--db").unwrap_or_else(|| "telemetry.db".into()));
    let runs: u64 = arg("--runs").map(|r| r.parse()).transpose()?.unwrap_or(200);
    let slow_every: u64 = arg("--slow-every")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(10);
    let fail_every: u64 = arg("--fail-every")
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(25);
    let forever = std::env::args().any(|a| a == "--forever");

    let mut cfg = GatewayConfig::load(None)?;
    if cfg.otlp.endpoint.is_none() {
        // No backend: SQLite is the output.
        cfg.export.local_output = LocalOutput::Discard;
    }
    let mut sq = SqliteSection::at(&db);
    sq.flush_interval_ms = 50;
    cfg.sinks.sqlite = Some(sq);
    cfg.otlp.metric_interval_ms = 1_000;
    cfg.trace_batcher.flush_interval_ms = 50;
    cfg.export.log_flush_interval_ms = 50;
    let gateway = telemetry_gateway::start(cfg)?;
    println!("writing to {}", db.display());
    let mut i = 0;
    while forever || i < runs {
        emit_run(&gateway, i, slow_every, fail_every);
        i += 1;
        if forever && i % 50 == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let report = gateway.shutdown_blocking(Duration::from_secs(10));
    println!(
        "{}",
        json!({
            "runs": runs,
            "emitted": report.stats.emitted,
            "delivered": report.stats.delivered,
            "dropped": report.stats.dropped,
            "db": db,
        })
    );
    Ok(())
}
