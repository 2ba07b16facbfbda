//! The export path against a real OTLP gRPC receiver: what arrives, not just that something did.

use crate::support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::any_value::Value as PValue;
use opentelemetry_proto::tonic::common::v1::KeyValue as PKeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value as NValue;
use serde_json::json;
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{start, TelemetryCase, TelemetryContext, TelemetryEnvelope};

fn attr<'a>(attrs: &'a [PKeyValue], key: &str) -> Option<&'a PValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str(attrs: &[PKeyValue], key: &str) -> Option<String> {
    match attr(attrs, key) {
        Some(PValue::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

#[test]
fn a_workflow_run_with_nodes_arrives_as_one_trace_with_logs_and_metrics() {
    let rx = OtlpReceiver::start();
    let (mut cfg, _dir) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.otlp.api_key = Some("sekret-key".into());
    cfg.export.include_content = false;
    let gw = start(cfg).unwrap();
    let ctx = TelemetryContext::tenant("acme").app("app-1");
    for n in 0..3 {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx.clone())
                .with_run_id("run-7")
                .with_correlation_id("req-1")
                .with_payload(
                    json!({"node_id": format!("n{n}"), "duration_ms": 10, "total_tokens": 5,
                                      "inputs": "private question"}),
                ),
        )
        .unwrap();
    }
    gw.emit(
        TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx.clone())
            .with_run_id("run-7")
            .with_correlation_id("req-1")
            .with_payload(json!({"status": "succeeded", "duration_ms": 1500, "total_tokens": 15})),
    )
    .unwrap();
    gw.emit(
        TelemetryEnvelope::new(TelemetryCase::AppCreated, ctx.clone())
            .with_correlation_id("req-1")
            .with_payload(json!({"app_mode": "chat"})),
    )
    .unwrap();
    let report = gw.shutdown_blocking(support::DEADLINE);
    assert_eq!(report.stats.emitted, 5);
    assert_eq!(report.stats.delivered, 5, "{:?}", report.stats);
    assert!(report.stats.is_settled());

    let r = rx.received();
    // Spans: one root and three children in one trace.
    assert_eq!(r.spans.len(), 4);
    let root = r
        .spans
        .iter()
        .find(|s| s.name == "app.workflow.run")
        .expect("root span");
    let children: Vec<_> = r
        .spans
        .iter()
        .filter(|s| s.name == "app.node.execution")
        .collect();
    assert_eq!(children.len(), 3);
    assert!(root.parent_span_id.is_empty(), "the run is the root");
    for c in &children {
        assert_eq!(c.trace_id, root.trace_id, "one trace");
        assert_eq!(c.parent_span_id, root.span_id, "children of the run");
        assert_eq!(
            attr_str(&c.attributes, "correlation.id").as_deref(),
            Some("req-1")
        );
        assert_eq!(
            attr_str(&c.attributes, "tenant.id").as_deref(),
            Some("acme")
        );
        let redacted = attr_str(&c.attributes, "app.inputs").unwrap();
        assert!(
            redacted.starts_with("ref:acme/"),
            "content redacted: {redacted}"
        );
    }
    let ids: HashSet<_> = r.spans.iter().map(|s| s.span_id.clone()).collect();
    assert_eq!(ids.len(), 4, "distinct span ids");
    assert_eq!(
        (root.end_time_unix_nano - root.start_time_unix_nano) as u128,
        Duration::from_millis(1500).as_nanos()
    );
    // Logs: four companion records and the app_created record, with trace context.
    assert_eq!(r.logs.len(), 5);
    let app_log = r
        .logs
        .iter()
        .find(|l| l.event_name == "app.app_created")
        .expect("app log");
    match app_log.body.as_ref().and_then(|b| b.value.as_ref()) {
        Some(PValue::StringValue(s)) => assert!(s.contains("app_created"), "{s}"),
        other => panic!("unexpected body {other:?}"),
    }
    let run_log = r
        .logs
        .iter()
        .find(|l| l.event_name == "app.workflow_run")
        .expect("run log");
    assert_eq!(run_log.trace_id, root.trace_id);
    assert_eq!(run_log.span_id, root.span_id);
    // Metrics: the requests counter by case.
    let mut requests: HashMap<String, f64> = HashMap::new();
    let mut saw_duration = false;
    for m in &r.metrics {
        match (&m.name[..], &m.data) {
            ("app.requests.total", Some(Data::Sum(sum))) => {
                for p in &sum.data_points {
                    let case = attr_str(&p.attributes, "case").unwrap();
                    let v = match p.value {
                        Some(NValue::AsInt(i)) => i as f64,
                        Some(NValue::AsDouble(d)) => d,
                        None => 0.0,
                    };
                    requests.insert(case, v);
                }
            }
            ("app.workflow.duration", Some(Data::Histogram(h))) => {
                saw_duration = true;
                assert_eq!(h.data_points[0].count, 1);
                assert!((h.data_points[0].sum.unwrap() - 1.5).abs() < 1e-9);
            }
            _ => {}
        }
    }
    assert_eq!(requests.get("node_execution"), Some(&3.0));
    assert_eq!(requests.get("workflow_run"), Some(&1.0));
    assert_eq!(requests.get("app_created"), Some(&1.0));
    assert!(saw_duration, "workflow duration histogram exported");
    assert_eq!(r.last_authorization.as_deref(), Some("Bearer sekret-key"));
    assert_eq!(report.stats.exported.spans, 4);
    assert_eq!(report.stats.exported.log_records, 5);
}

#[test]
fn a_batch_of_durations_arrives_whole_in_each_status_histogram() {
    // One flush of 50 node executions, two statuses: each status's values are recorded through
    // a handle bound to its attribute set (`Mapper::apply_metrics`); every value must arrive,
    // under the right attributes.
    let rx = OtlpReceiver::start();
    let (mut cfg, _dir) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.trace_batcher.flush_interval_ms = 2_000; // one flush, at shutdown
    let gw = start(cfg).unwrap();
    let ctx = TelemetryContext::tenant("acme").app("a");
    for i in 1..=50u64 {
        let (status, ms) = if i <= 40 {
            ("succeeded", i)
        } else {
            ("failed", 100)
        };
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx.clone())
                .with_run_id("run-d")
                .with_payload(
                    json!({"node_id": format!("n{i}"), "status": status, "duration_ms": ms}),
                ),
        )
        .unwrap();
    }
    let s = support::shut_down_balanced(&gw).stats;
    assert_eq!(s.delivered, 50);
    let r = rx.received();
    let metric = r
        .metrics
        .iter()
        .rev()
        .find(|m| m.name == "app.node.duration")
        .expect("the node duration histogram arrived");
    let Some(Data::Histogram(h)) = &metric.data else {
        panic!("not a histogram: {metric:?}")
    };
    let mut by_status = HashMap::new();
    for p in &h.data_points {
        assert_eq!(
            attr_str(&p.attributes, "case").as_deref(),
            Some("node_execution")
        );
        assert_eq!(
            attr_str(&p.attributes, "tenant.id").as_deref(),
            Some("acme")
        );
        assert_eq!(attr_str(&p.attributes, "app.id").as_deref(), Some("a"));
        let status = attr_str(&p.attributes, "status").expect("a status");
        by_status.insert(status, (p.count, p.sum.unwrap_or_default()));
    }
    assert_eq!(by_status.len(), 2, "{by_status:?}");
    let (n, sum) = by_status["succeeded"];
    assert_eq!(n, 40);
    assert!((sum - 0.820).abs() < 1e-9, "{sum}"); // (1 + ... + 40) ms
    let (n, sum) = by_status["failed"];
    assert_eq!(n, 10);
    assert!((sum - 1.0).abs() < 1e-9, "{sum}");
}

/// Ten workflow runs against a collector that answers every export with INVALID_ARGUMENT
/// (HTTP 400 for the HTTP receiver): all ten are dropped as `export_rejected`, none retried.
fn rejected_by(rx: &OtlpReceiver, protocol: telemetry_gateway::config::OtlpProtocol) {
    rx.fail_with(Some(tonic::Code::InvalidArgument));
    let (mut cfg, _dir) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.otlp.protocol = protocol;
    cfg.otlp.timeout_ms = 2_000;
    let gw = start(cfg).unwrap();
    for i in 0..10 {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
                .with_run_id(format!("r{i}")),
        )
        .unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.emitted, 10);
    assert_eq!(s.delivered, 0);
    assert_eq!(
        s.dropped_for(telemetry_gateway::ReasonCode::ExportRejected),
        10,
        "a malformed-data answer is a rejection, not a transient failure: {s:?}"
    );
    assert_eq!(s.emitted, s.dropped_total());
    assert!(rx.received().spans.is_empty());
}

#[test]
fn a_rejecting_grpc_collector_is_accounted_as_rejected() {
    rejected_by(
        &OtlpReceiver::start(),
        telemetry_gateway::config::OtlpProtocol::Grpc,
    );
}

#[test]
fn http_protobuf_export_delivers_spans_logs_and_metrics() {
    let rx = OtlpReceiver::start_http();
    let (mut cfg, _dir) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.otlp.protocol = telemetry_gateway::config::OtlpProtocol::HttpProtobuf;
    cfg.otlp.api_key = Some("k-http".into());
    let gw = start(cfg).unwrap();
    let ctx = TelemetryContext::tenant("acme").app("a");
    gw.emit(TelemetryEnvelope::new(TelemetryCase::MessageRun, ctx.clone()).with_run_id("m1"))
        .unwrap();
    gw.emit(
        TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, ctx)
            .with_payload(json!({"rating": "like"})),
    )
    .unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, 2, "{s:?}");
    let r = rx.received();
    assert_eq!(r.spans.len(), 1);
    assert_eq!(r.spans[0].name, "app.message.run");
    assert_eq!(r.logs.len(), 2);
    assert!(r.metrics.iter().any(|m| m.name == "app.feedback.total"));
    assert_eq!(r.last_authorization.as_deref(), Some("Bearer k-http"));
}

#[test]
fn a_rejecting_http_collector_is_accounted_as_rejected() {
    rejected_by(
        &OtlpReceiver::start_http(),
        telemetry_gateway::config::OtlpProtocol::HttpProtobuf,
    );
}

/// Every built-in case records its row's metric (`contracts::CaseFacts::metric`): one event of
/// each case, and each instrument arrives at a real receiver with the right count and, for the
/// counters by a payload field, that field's value (or its default) as an attribute. Cases that
/// share an instrument (node and draft node executions) share its series.
#[test]
fn every_built_in_case_records_its_metric() {
    use telemetry_gateway::contracts::{CaseMetric, FieldValue};
    let rx = OtlpReceiver::start();
    let (mut cfg, _dir) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    let gw = start(cfg).unwrap();
    let ctx = TelemetryContext::tenant("acme").app("a");
    for case in TelemetryCase::BUILT_IN.iter() {
        let payload = match case {
            TelemetryCase::FeedbackCreated => json!({"rating": "like", "duration_ms": 10}),
            TelemetryCase::ModerationCheck => json!({"flagged": true}),
            _ => json!({"duration_ms": 250}),
        };
        gw.emit(
            TelemetryEnvelope::new(case.clone(), ctx.clone())
                .with_run_id("r1")
                .with_payload(payload),
        )
        .unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert!(s.is_settled() && s.dropped_total() == 0, "{s:?}");
    let r = rx.received();
    /// Per instrument: events expected, and the attribute (field, value) of a count by field.
    type Expected<'a> = HashMap<String, (u64, Option<(&'a str, PValue)>)>;
    let mut expected: Expected = HashMap::new();
    for case in TelemetryCase::BUILT_IN.iter() {
        let facts = case.facts().unwrap();
        let name = format!("app.{}", facts.metric.instrument());
        let attr = match facts.metric {
            CaseMetric::CountBy {
                field,
                value: FieldValue::Text { .. },
                ..
            } => Some((field, PValue::StringValue("like".into()))),
            CaseMetric::CountBy {
                field,
                value: FieldValue::Flag,
                ..
            } => Some((field, PValue::BoolValue(true))),
            _ => None,
        };
        expected.entry(name).or_insert((0, attr)).0 += 1;
    }
    assert_eq!(expected["app.node.duration"].0, 2, "two cases share it");
    for (name, (count, by_field)) in &expected {
        let metric = r
            .metrics
            .iter()
            .rev()
            .find(|m| &m.name == name)
            .unwrap_or_else(|| panic!("{name} arrived"));
        let (got, attrs) = match &metric.data {
            Some(Data::Histogram(h)) => (
                h.data_points.iter().map(|p| p.count).sum::<u64>(),
                h.data_points.first().map(|p| p.attributes.clone()),
            ),
            Some(Data::Sum(sum)) => (
                sum.data_points
                    .iter()
                    .map(|p| match p.value {
                        Some(NValue::AsInt(i)) => i as u64,
                        _ => 0,
                    })
                    .sum(),
                sum.data_points.first().map(|p| p.attributes.clone()),
            ),
            other => panic!("{name}: unexpected data {other:?}"),
        };
        assert_eq!(got, *count, "{name}");
        if let Some((field, value)) = by_field {
            let attrs = attrs.unwrap_or_default();
            assert_eq!(attr(&attrs, field), Some(value), "{name} by {field}");
        }
    }
}
