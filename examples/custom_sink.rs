//! A community trace sink written against the public `TraceSink` trait, configured per app.
//!
//! ```text
//! cargo run --example custom_sink --features testing -- [--out DIR] [--runs N]
//! ```
//!
//! `SpanFileSink` writes one JSON line per span (name, ids, duration, attributes) to a file of
//! its own. It is registered at runtime for one app of tenant `acme` (`support-bot`) through a
//! `SinkFactory`, so the gateway can close it when it is the least recently used sink and build
//! it again later. The example emits `N` workflow runs for that app and `N` for another app of
//! the same tenant, shuts down, and prints a JSON summary: the sink received the first app's
//! spans only, while the enterprise destination (the local JSON lines file by default) received
//! both apps'.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use opentelemetry_sdk::trace::SpanData;
use parking_lot::Mutex;
use serde_json::json;
use telemetry_gateway::{
    GatewayConfig, SinkError, SinkFactory, TelemetryCase, TelemetryContext, TelemetryEnvelope,
    TraceSink,
};

/// Writes spans as JSON lines to its own file.
#[derive(Debug)]
struct SpanFileSink {
    name: String,
    file: Mutex<std::fs::File>,
}

impl TraceSink for SpanFileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn export<'a>(&'a self, batch: &'a [SpanData]) -> BoxFuture<'a, Result<(), SinkError>> {
        let mut out = Vec::with_capacity(batch.len() * 256);
        for span in batch {
            let attributes: serde_json::Map<String, serde_json::Value> = span
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), json!(kv.value.to_string())))
                .collect();
            let duration_ms = span
                .end_time
                .duration_since(span.start_time)
                .map(|d| d.as_secs_f64() * 1000.0)
                .unwrap_or(0.0);
            let line = json!({
                "name": span.name,
                "trace_id": span.span_context.trace_id().to_string(),
                "span_id": span.span_context.span_id().to_string(),
                "duration_ms": duration_ms,
                "attributes": attributes,
            });
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
        // A failure is reported, never panicked: the gateway holds the batch and retries.
        let result = self
            .file
            .lock()
            .write_all(&out)
            .map_err(|e| SinkError::Failed(format!("writing spans: {e}")));
        Box::pin(async move { result })
    }

    fn shutdown(&self) -> Result<(), SinkError> {
        self.file
            .lock()
            .flush()
            .map_err(|e| SinkError::Failed(e.to_string()))
    }
}

/// Builds the sink (at the app's first trace, and again after the gateway closed it).
#[derive(Debug)]
struct SpanFileFactory {
    path: PathBuf,
}

impl SinkFactory for SpanFileFactory {
    fn build(&self) -> Result<Arc<dyn TraceSink>, SinkError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| SinkError::Failed(format!("opening {}: {e}", self.path.display())))?;
        Ok(Arc::new(SpanFileSink {
            name: "support-bot-spans".into(),
            file: Mutex::new(file),
        }))
    }
}

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(arg("--out").unwrap_or_else(|| ".".into()));
    let runs: usize = arg("--runs").map(|r| r.parse()).transpose()?.unwrap_or(10);
    std::fs::create_dir_all(&out)?;
    let spans_path = out.join("support-bot-spans.jsonl");
    let _ = std::fs::remove_file(&spans_path);

    let mut cfg = GatewayConfig::load(None)?;
    if cfg.otlp.endpoint.is_none() {
        cfg.export.file_path = out.join("enterprise.jsonl");
    }
    let gateway = telemetry_gateway::start(cfg)?;
    // Per app: only `support-bot`'s traces go to this sink.
    gateway.register_sink_factory(
        "support-bot-spans",
        "acme",
        Some("support-bot"),
        Arc::new(SpanFileFactory {
            path: spans_path.clone(),
        }),
    )?;
    for app in ["support-bot", "sales-bot"] {
        for i in 0..runs {
            let run = TelemetryEnvelope::new(
                TelemetryCase::WorkflowRun,
                TelemetryContext::tenant("acme").app(app),
            )
            .with_run_id(format!("{app}-run-{i}"))
            .with_payload(json!({"status": "succeeded", "duration_ms": 20 + i, "total_tokens": 7}));
            gateway.emit(run)?;
        }
    }
    let sinks = gateway.sinks();
    let report = gateway.shutdown_blocking(Duration::from_secs(10));
    let lines = std::fs::read_to_string(&spans_path).unwrap_or_default();
    let in_sink = lines.lines().count();
    println!(
        "{}",
        json!({
            "emitted": report.stats.emitted,
            "delivered": report.stats.delivered,
            "dropped": report.stats.dropped,
            "spans_in_custom_sink": in_sink,
            "custom_sink_file": spans_path,
            "sinks": sinks,
        })
    );
    Ok(())
}
