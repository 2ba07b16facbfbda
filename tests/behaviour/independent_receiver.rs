//! What the gateway sends over OTLP gRPC, decoded by a receiver that is not ours: the
//! OpenTelemetry project's Python protobuf types under Google's protobuf runtime and `grpcio`
//! (`tests/support/otlp_receiver.py`, in a virtualenv that `scripts/test.sh` makes). The same
//! events go to two gateways, one exporting to that receiver and one to the in-test receiver
//! (`testing::OtlpReceiver`: prost and tonic, the same crates the gateway encodes with), and
//! every span and log record must read the same on both, field by field (ids, parent links,
//! names, kinds, times, status, attributes, events, log bodies and severities, trace context;
//! a log record's observed time is the time of export and is left out). Spans and log records
//! are written by the gateway's own encoder (`export::encode`, ADR 0005), so a field the two
//! decoders read differently is a defect of that encoder.

use crate::support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{json, Map, Value};
use telemetry_gateway::testing::{load_event, LoadMix, OtlpReceiver};
use telemetry_gateway::{
    Correlation, GatewayConfig, SignalType, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

/// The virtualenv's interpreter: `TELEMETRY_GATEWAY_TEST_PYTHON`, else the one
/// `scripts/test.sh` makes under `target/`.
fn python() -> PathBuf {
    let path = std::env::var_os("TELEMETRY_GATEWAY_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/otlp-py/bin/python")
        });
    assert!(
        path.exists(),
        "{} not found: run scripts/test.sh, which makes a virtualenv with the PyPI packages \
         grpcio and opentelemetry-proto there (or set TELEMETRY_GATEWAY_TEST_PYTHON)",
        path.display()
    );
    path
}

/// The Python receiver, writing what it decodes to a file.
struct PyReceiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl PyReceiver {
    fn start(dir: &std::path::Path) -> Self {
        let out = dir.join("python-received.jsonl");
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/otlp_receiver.py");
        let mut child = Command::new(python())
            .arg(&script)
            .arg(&out)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the Python receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("its stdout"))
            .read_line(&mut line)
            .expect("its port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the Python receiver printed {line:?}, not a port")
        });
        PyReceiver { child, port, out }
    }

    /// Stops the receiver; everything it decoded.
    fn stop(mut self) -> Vec<Value> {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("the Python receiver ends");
        assert!(status.success(), "the Python receiver failed: {status}");
        std::fs::read_to_string(&self.out)
            .expect("its output")
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    }
}

impl Drop for PyReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An `AnyValue` as the Python side writes it (`value` in otlp_receiver.py).
fn any(v: Option<&AnyValue>) -> Value {
    use any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        None => Value::Null,
        Some(V::StringValue(s)) => json!({ "s": s }),
        Some(V::IntValue(i)) => json!({ "i": i }),
        Some(V::DoubleValue(d)) => json!({ "d": d }),
        Some(V::BoolValue(b)) => json!({ "b": b }),
        Some(V::BytesValue(b)) => json!({ "bytes": hex(b) }),
        Some(V::ArrayValue(a)) => {
            json!({ "a": a.values.iter().map(|x| any(Some(x))).collect::<Vec<_>>() })
        }
        Some(V::KvlistValue(kv)) => json!({ "kv": attributes(&kv.values) }),
        Some(V::StringValueStrindex(i)) => json!({ "strindex": i }),
    }
}

fn attributes(kvs: &[KeyValue]) -> Value {
    let mut out = Map::new();
    for kv in kvs {
        let before = out.insert(kv.key.clone(), any(kv.value.as_ref()));
        assert!(before.is_none(), "attribute {} twice", kv.key);
    }
    Value::Object(out)
}

/// A span as the Python side writes it (`canonical_span`).
fn span_json(s: &Span) -> Value {
    let status = s.status.as_ref();
    json!({
        "signal": "span",
        "trace_id": hex(&s.trace_id),
        "span_id": hex(&s.span_id),
        "parent_span_id": hex(&s.parent_span_id),
        "trace_state": s.trace_state,
        "flags": s.flags,
        "name": s.name,
        "kind": s.kind,
        "start": s.start_time_unix_nano,
        "end": s.end_time_unix_nano,
        "attributes": attributes(&s.attributes),
        "dropped_attributes": s.dropped_attributes_count,
        "events": s.events.iter().map(|e| json!({
            "name": e.name,
            "time": e.time_unix_nano,
            "attributes": attributes(&e.attributes),
            "dropped_attributes": e.dropped_attributes_count,
        })).collect::<Vec<_>>(),
        "dropped_events": s.dropped_events_count,
        "links": s.links.len(),
        "status": [status.map_or(0, |s| s.code), status.map_or("", |s| s.message.as_str())],
    })
}

/// A log record as the Python side writes it (`canonical_log`).
fn log_json(r: &LogRecord) -> Value {
    json!({
        "signal": "log",
        "time": r.time_unix_nano,
        "severity_number": r.severity_number,
        "severity_text": r.severity_text,
        "body": any(r.body.as_ref()),
        "attributes": attributes(&r.attributes),
        "dropped_attributes": r.dropped_attributes_count,
        "flags": r.flags,
        "trace_id": hex(&r.trace_id),
        "span_id": hex(&r.span_id),
        "event_name": r.event_name,
    })
}

/// Events with every kind of field the encoder writes: the load generator's mix, a failed node
/// with an error, nested objects, arrays, floats and booleans in payloads, host-given trace
/// ids and parents, content fields, a key the redaction masks.
fn events() -> Vec<TelemetryEnvelope> {
    let mut out: Vec<TelemetryEnvelope> =
        (0..88).map(|i| load_event(LoadMix::Mixed, i, 0)).collect();
    let ctx = TelemetryContext::tenant("acme").app("app-9").user("u-9");
    out.push(
        TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx.clone())
            .with_run_id("run-failed")
            .with_payload(json!({
                "node_id": "n-err", "node_type": "tool", "status": "failed",
                "error": "tool timed out after 30 s", "duration_ms": 30000.5,
                "total_tokens": 0, "retry": true, "tags": ["a", "b", 3],
                "metadata": {"model": "m-1", "temperature": 0.25, "nested": {"deep": 1}},
                "inputs": "what is the weather", "outputs": "unknown",
                "password": "hunter2", "api_key": "sk-secret",
            })),
    );
    out.push(
        TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx.clone())
            .with_correlation(Correlation {
                trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
                parent_span_id: Some("00f067aa0ba902b7".into()),
                ..Correlation::default()
            })
            .with_payload(json!({"status": "failed", "error": "boom", "duration_ms": 12})),
    );
    out.push(
        TelemetryEnvelope::new(TelemetryCase::ToolExecution, ctx)
            .with_correlation_id("req-42")
            .with_payload(
                json!({"tool_name": "search", "duration_ms": -1, "ok": false,
                                 "score": 1e-9, "unicode": "żółć ✓"}),
            ),
    );
    out
}

/// The same events through a gateway exporting to `endpoint`: they must all be delivered.
fn run(endpoint: String, events: &[TelemetryEnvelope]) {
    let (mut cfg, _dir): (GatewayConfig, _) = support::config();
    cfg.otlp.endpoint = Some(endpoint);
    cfg.export.include_content = true;
    let gw = telemetry_gateway::start(cfg).unwrap();
    for e in events {
        gw.emit(e.clone()).unwrap();
    }
    let s = support::shut_down_balanced(&gw).stats;
    assert_eq!(s.delivered, events.len() as u64, "{s:?}");
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|x| x.to_string());
    v
}

#[test]
fn an_independent_receiver_decodes_the_same_spans_and_log_records() {
    let dir = tempfile::tempdir().unwrap();
    let py = PyReceiver::start(dir.path());
    let ours = OtlpReceiver::start();
    let events = events();
    run(format!("http://127.0.0.1:{}", py.port), &events);
    run(ours.endpoint(), &events);
    let theirs = py.stop();
    let received = ours.received();

    let (resources, theirs): (Vec<_>, Vec<_>) =
        theirs.into_iter().partition(|v| v["signal"] == "resource");
    let of_signal = |signal: &str| {
        sorted(
            theirs
                .iter()
                .filter(|v| v["signal"] == signal)
                .cloned()
                .collect(),
        )
    };
    let (their_spans, their_logs) = (of_signal("span"), of_signal("log"));
    let our_spans = sorted(received.spans.iter().map(span_json).collect());
    let our_logs = sorted(received.logs.iter().map(log_json).collect());

    // As many as the events call for: a span per trace event, a log record per event.
    let traces = events
        .iter()
        .filter(|e| e.case.facts().map(|f| f.signal) == Some(SignalType::Trace))
        .count();
    assert!(traces > 40 && traces < events.len(), "{traces}");
    assert_eq!(our_spans.len(), traces);
    assert!(our_logs.len() >= events.len(), "{}", our_logs.len());
    // Field by field, every one.
    for (theirs, ours) in [(&their_spans, &our_spans), (&their_logs, &our_logs)] {
        assert_eq!(theirs.len(), ours.len());
        for (a, b) in theirs.iter().zip(ours) {
            assert_eq!(a, b);
        }
    }
    // What was compared holds what the events said: the failed node is an error with its
    // message, its attributes keep their types, the redaction held, a host's ids were kept.
    let failed = our_spans
        .iter()
        .find(|s| s["attributes"]["app.node_id"] == json!({"s": "n-err"}))
        .expect("the failed node's span");
    assert_eq!(failed["status"], json!([2, "tool timed out after 30 s"]));
    let a = &failed["attributes"];
    assert_eq!(a["app.duration_ms"], json!({"d": 30000.5}));
    assert_eq!(a["app.retry"], json!({"b": true}));
    assert_eq!(a["app.total_tokens"], json!({"i": 0}));
    assert_eq!(a["app.password"], json!({"s": "[REDACTED]"}));
    assert_eq!(a["app.api_key"], json!({"s": "[REDACTED]"}));
    assert_eq!(
        failed["end"].as_u64().unwrap() - failed["start"].as_u64().unwrap(),
        30_000_500_000
    );
    assert!(our_spans
        .iter()
        .any(|s| s["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
            && s["parent_span_id"] == "00f067aa0ba902b7"));
    assert!(our_logs
        .iter()
        .any(|l| l["attributes"]["app.unicode"] == json!({"s": "żółć ✓"})));
    // The resource and scope of every request.
    assert!(!resources.is_empty());
    for r in &resources {
        assert_eq!(
            r["resource"]["service.name"],
            json!({"s": telemetry_gateway::config::DEFAULT_SERVICE_NAME}),
            "{r}"
        );
        assert!(r["resource"]["service.instance.id"]["s"].is_string(), "{r}");
        assert!(r["scope"][0].as_str().is_some_and(|s| !s.is_empty()), "{r}");
    }
}
