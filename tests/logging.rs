//! The gateway's own log lines, as an operator sees them: JSON, rate-limited while a collector
//! is down, with event and correlation ids, and no line an untrusted value can break.
//!
//! The gateway logs from its own threads, so a thread-scoped subscriber would miss its lines:
//! this binary installs a global one (through `logging::init_with_writer`, the helper under
//! test). It is its own process, and holds this single test, so nothing else shares the
//! subscriber or the process-wide warning limiter.

mod support;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use telemetry_gateway::config::LogFormat;
use telemetry_gateway::logging::{self, LoggingInitError};
use telemetry_gateway::{
    GatewayBuilder, SinkError, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

/// Where the global subscriber writes: a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Every line, each of which must be one JSON object.
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().clone()).expect("log output is UTF-8");
        text.lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l:?}"));
                assert!(v.is_object(), "log line is not a JSON object: {l:?}");
                v
            })
            .collect()
    }
}

fn message(line: &Value) -> &str {
    line["message"].as_str().unwrap_or_default()
}

fn count(lines: &[Value], msg: &str) -> usize {
    lines.iter().filter(|l| message(l) == msg).count()
}

/// The count of the summary lines for `key`.
fn summarised(lines: &[Value], key: &str) -> u64 {
    lines
        .iter()
        .filter(|l| l["warn_key"] == key)
        .map(|l| l["count"].as_u64().expect("a summary has a numeric count"))
        .sum()
}

/// Every string in `v`, recursively.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// Every export-failure warning. A transient failure holds the batch and logs the "batch held"
/// variant per failed call; the plain variant is logged when a batch is finally given up.
const EXPORT_FAILURES: [&str; 5] = [
    "trace sink export failed",
    "trace sink export failed; batch held",
    "log export failed",
    "log export failed; batch held",
    "metric export failed",
];

#[test]
fn gateway_logs_are_json_rate_limited_correlated_and_unbreakable() {
    // The filter comes from RUST_LOG; pin it so a developer's setting cannot hide warnings.
    std::env::set_var("RUST_LOG", "info");
    let buf = Captured::default();
    let writer = buf.clone();
    logging::init_with_writer(LogFormat::Json, move || writer.clone()).unwrap();
    assert!(matches!(
        logging::init(LogFormat::Text),
        Err(LoggingInitError::AlreadySet)
    ));

    // 1. The collector is down (nothing listens on port 9) and the payload store fails, so
    //    every trace and log batch fails, round after round.
    let (mut cfg, dir) = support::config();
    cfg.otlp.endpoint = Some("http://127.0.0.1:9".into());
    cfg.otlp.timeout_ms = 200;
    // Held batches are given up after 1 s, so both warnings (held, then given up) are exercised
    // and the test does not wait for the shutdown deadline.
    cfg.retry.max_batch_age_secs = 1;
    cfg.payloads.inline_threshold_bytes = 1024;
    let store = support::failing_payload_store(&cfg.payloads, dir.path());
    let gw = GatewayBuilder::new(cfg)
        .payload_store(store)
        .start()
        .unwrap();
    let oversize = gw
        .emit(
            TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t1"))
                .with_correlation_id("corr-oversize")
                .with_payload(json!({"outputs": "y".repeat(5000)})),
        )
        .unwrap();
    for round in 0..10 {
        for i in 0..5 {
            let case = if i % 2 == 0 {
                TelemetryCase::WorkflowRun
            } else {
                TelemetryCase::ToolExecution
            };
            gw.emit(
                TelemetryEnvelope::new(case, TelemetryContext::tenant("t1"))
                    .with_run_id(format!("run-{round}-{i}")),
            )
            .unwrap();
        }
        // Longer than the flush intervals (20 ms), so each round is its own batches.
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = gw.shutdown_blocking(support::DEADLINE);
    let failed_batches = report.stats.export_batches_failed;
    logging::flush_summaries();
    let phase1 = buf.lines();

    // 2. A community sink fails with an error that tries to forge a log line.
    let (mut cfg, _dir2) = support::config();
    cfg.retry.max_batch_age_secs = 1;
    let forging = support::RecordingSink::default();
    *forging.fail.lock() = Some(SinkError::Failed(
        "boom\r\n{\"level\":\"INFO\",\"message\":\"forged\"}\n".into(),
    ));
    let gw = GatewayBuilder::new(cfg)
        .trace_sink("t2", None, Arc::new(forging))
        .start()
        .unwrap();
    gw.emit(
        TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t2"))
            .with_run_id("run-forge"),
    )
    .unwrap();
    gw.shutdown_blocking(support::DEADLINE);
    logging::flush_summaries();
    let lines = buf.lines();

    // (a) Rate limited: one line per kind of failure, then a summary with the rest.
    assert!(
        failed_batches >= 6,
        "the test needs repeated failures; only {failed_batches} batches failed"
    );
    let mut accounted = 0;
    for key in EXPORT_FAILURES {
        let logged = count(&phase1, key);
        assert!(logged <= 1, "{key} logged {logged} times: {phase1:#?}");
        accounted += logged as u64 + summarised(&phase1, key);
    }
    assert_eq!(count(&phase1, "trace sink export failed; batch held"), 1);
    assert_eq!(count(&phase1, "log export failed; batch held"), 1);
    assert_eq!(
        accounted, failed_batches,
        "every failed batch is either logged or counted in a summary"
    );
    let summary = phase1
        .iter()
        .find(|l| l["warn_key"] == "trace sink export failed; batch held")
        .expect("a summary of the trace export failures");
    assert_eq!(summary["level"], "WARN");
    let n = summary["count"].as_u64().unwrap();
    assert!(
        message(summary).starts_with(&format!(
            "trace sink export failed; batch held: {n} more occurrences"
        )),
        "{summary}"
    );

    // (c) A line about an event carries its event id and correlation id.
    let offload = phase1
        .iter()
        .find(|l| message(l) == "payload offload failed; payload kept inline")
        .expect("the failed offload is logged");
    assert_eq!(offload["level"], "WARN");
    assert_eq!(offload["event_id"], oversize.to_string());
    assert_eq!(offload["correlation_id"], "corr-oversize");
    assert!(offload["error"].is_string(), "{offload}");

    // (d) No value breaks a line: the forging error is there, flattened.
    let forged = lines
        .iter()
        .find(|l| message(l) == "trace sink export failed; batch held" && l["sink"] == "recording")
        .expect("the forging sink's failure is logged (flush restarted the cycle)");
    assert_eq!(
        forged["error"],
        "export failed: boom  {\"level\":\"INFO\",\"message\":\"forged\"} "
    );
    assert!(!lines.iter().any(|l| message(l) == "forged"));
    for l in &lines {
        let mut values = Vec::new();
        strings(l, &mut values);
        for s in values {
            assert!(
                !s.contains('\r') && !s.contains('\n'),
                "a log value holds a line break: {l}"
            );
        }
    }
}
