//! Encoded export requests sent as bytes (`export::wire`, the seam the disk spool and the
//! encode-once work stand on): what arrives at a real gRPC receiver is what the SDK's own OTLP
//! exporter delivers for the same spans, field for field; the receiver's answers are classified
//! as the SDK exporter's are.

use crate::support;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use prost::Message;
use serde_json::json;
use telemetry_gateway::config::{CaseSection, RedactionSection};
use telemetry_gateway::export::mapping::Mapper;
use telemetry_gateway::redaction::Redactor;
use telemetry_gateway::testing::internals::{
    encode_logs, encode_spans, RoutingTable, WireSender, WireSignal,
};
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{SinkError, TelemetryCase, TelemetryContext, TelemetryEnvelope};

/// Gateway spans for a workflow run of `n` nodes, as the batcher would export them.
fn spans(n: usize) -> Vec<SpanData> {
    let table = RoutingTable::new(&BTreeMap::<String, CaseSection>::new());
    let meter_provider = SdkMeterProvider::builder().build();
    let meter = meter_provider.meter("wire");
    let _logs = SdkLoggerProvider::builder().build().logger("wire");
    let redactor = Redactor::from_config(&RedactionSection::default()).unwrap();
    let mapper = Mapper::new("app", true, &table, &meter, redactor);
    let mut out = Vec::new();
    for i in 0..n {
        let case = if i == 0 {
            TelemetryCase::WorkflowRun
        } else {
            TelemetryCase::NodeExecution
        };
        let mut env = TelemetryEnvelope::new(case, TelemetryContext::tenant("t"))
            .with_run_id("run-wire")
            .with_payload(json!({"seq": i, "status": "succeeded", "tokens": 7 * i}));
        let route = table.route(&env.case).unwrap();
        telemetry_gateway::correlation::resolve(&mut env, route.root_span);
        let payload = match &env.payload {
            telemetry_gateway::Payload::Inline(p) => Some(p.clone()),
            _ => None,
        };
        out.push(mapper.span(&env, payload.as_ref()));
    }
    out
}

fn resource() -> Resource {
    Resource::builder_empty()
        .with_service_name("wire-test")
        .build()
}

#[test]
fn bytes_sent_as_they_are_arrive_as_the_sdk_exporter_sends_them() {
    let spans = spans(11);
    let rt = support::runtime();
    // The SDK's own exporter, to one receiver.
    let by_sdk = OtlpReceiver::start();
    rt.block_on(async {
        use opentelemetry_otlp::WithExportConfig;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(by_sdk.endpoint())
            .build()
            .unwrap();
        exporter.set_resource(&resource());
        exporter.export(spans.clone()).await.unwrap();
    });
    // The encoded request as bytes, to another.
    let by_wire = OtlpReceiver::start();
    let body = encode_spans(&spans, &resource());
    let _in_runtime = rt.enter();
    let sender = WireSender::grpc(
        &by_wire.endpoint(),
        Default::default(),
        Duration::from_secs(5),
    )
    .unwrap();
    rt.block_on(sender.send(WireSignal::Traces, Bytes::from(body.clone())))
        .unwrap();

    let (a, b) = (by_sdk.received(), by_wire.received());
    assert_eq!(a.spans.len(), 11);
    assert_eq!(a.spans, b.spans, "the same spans, field for field");
    // And the bytes decode to exactly those spans.
    let decoded =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
            body.as_slice(),
        )
        .unwrap();
    let sent: Vec<_> = decoded
        .resource_spans
        .iter()
        .flat_map(|r| r.scope_spans.iter())
        .flat_map(|s| s.spans.iter().cloned())
        .collect();
    assert_eq!(sent, b.spans);
}

#[test]
fn the_receivers_answers_are_classified_as_the_sdk_exporter_does() {
    let rt = support::runtime();
    let rx = OtlpReceiver::start();
    let body = Bytes::from(encode_spans(&spans(2), &resource()));
    // Outside a runtime: an error, not a panic.
    let outside = WireSender::grpc(&rx.endpoint(), Default::default(), Duration::from_secs(1));
    assert!(
        outside.is_err_and(|e| e.to_string().contains("tokio runtime")),
        "built outside a runtime"
    );
    let _in_runtime = rt.enter();
    let sender =
        WireSender::grpc(&rx.endpoint(), Default::default(), Duration::from_secs(5)).unwrap();
    rx.fail_with(Some(tonic::Code::InvalidArgument));
    let r = rt.block_on(sender.send(WireSignal::Traces, body.clone()));
    assert!(matches!(r, Err(SinkError::Rejected(_))), "{r:?}");
    rx.fail_with(Some(tonic::Code::Unavailable));
    let r = rt.block_on(sender.send(WireSignal::Traces, body.clone()));
    assert!(matches!(r, Err(SinkError::Failed(_))), "{r:?}");
    rx.fail_with(None);
    rt.block_on(sender.send(WireSignal::Traces, body)).unwrap();
    assert_eq!(rx.received().spans.len(), 2);
    // Nobody listening: a failure (held and retried by the caller), within the time limit.
    let dead = WireSender::grpc(
        "http://127.0.0.1:9",
        Default::default(),
        Duration::from_millis(500),
    )
    .unwrap();
    let r = rt.block_on(dead.send(WireSignal::Traces, Bytes::from_static(b"")));
    assert!(
        matches!(r, Err(SinkError::Failed(_) | SinkError::Timeout(_))),
        "{r:?}"
    );
    // An endpoint that is not a URI is refused when the sender is built, naming it.
    let err =
        WireSender::grpc("not a uri", Default::default(), Duration::from_secs(1)).unwrap_err();
    assert!(err.to_string().contains("not a uri"), "{err}");
}

/// Log records of the gateway's shape (a body, a severity, attributes), as the log batcher
/// exports them.
fn log_records(n: usize) -> Vec<opentelemetry_sdk::logs::SdkLogRecord> {
    use opentelemetry::logs::{LogRecord as _, Logger as _, Severity};
    let provider = SdkLoggerProvider::builder().build();
    let logger = provider.logger("wire");
    (0..n)
        .map(|i| {
            let mut r = logger.create_log_record();
            r.set_body(format!("event {i}").into());
            r.set_severity_number(Severity::Info);
            r.set_severity_text("INFO");
            // The OTLP transform (the SDK exporter's and ours) needs it; the mapping sets it.
            r.set_observed_timestamp(std::time::SystemTime::now());
            r.set_event_name("app.created");
            r.add_attribute("tenant.id", "t");
            r.add_attribute("seq", i as i64);
            r
        })
        .collect()
}

/// Over HTTP/protobuf too, and for log records: what `WireSender` posts is what the SDK's OTLP
/// exporters deliver, field for field; a 400 is a rejection, a 503 a failure.
#[test]
fn over_http_and_for_logs_the_bytes_arrive_as_the_sdk_exporters_send_them() {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
    use opentelemetry_sdk::logs::{LogBatch, LogExporter as _};
    let rt = support::runtime();
    let spans = spans(5);
    let records = log_records(4);
    let scope = opentelemetry::InstrumentationScope::builder("telemetry-gateway").build();
    let refs: Vec<_> = records.iter().map(|r| (r, &scope)).collect();

    let by_sdk = OtlpReceiver::start_http();
    rt.block_on(async {
        let mut spans_out = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/traces", by_sdk.endpoint()))
            .build()
            .unwrap();
        spans_out.set_resource(&resource());
        spans_out.export(spans.clone()).await.unwrap();
        let mut logs_out = opentelemetry_otlp::LogExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(format!("{}/v1/logs", by_sdk.endpoint()))
            .with_headers(Default::default())
            .build()
            .unwrap();
        logs_out.set_resource(&resource());
        logs_out.export(LogBatch::new(&refs)).await.unwrap();
    });

    let by_wire = OtlpReceiver::start_http();
    let sender = WireSender::http(
        &by_wire.endpoint(),
        Default::default(),
        Duration::from_secs(5),
    )
    .unwrap();
    let trace_body = Bytes::from(encode_spans(&spans, &resource()));
    let log_body = Bytes::from(encode_logs(&refs, &resource()));
    rt.block_on(sender.send(WireSignal::Traces, trace_body.clone()))
        .unwrap();
    rt.block_on(sender.send(WireSignal::Logs, log_body))
        .unwrap();

    let (a, b) = (by_sdk.received(), by_wire.received());
    assert_eq!((a.spans.len(), a.logs.len()), (5, 4));
    assert_eq!(a.spans, b.spans, "the same spans, field for field");
    assert_eq!(a.logs, b.logs, "the same log records, field for field");

    by_wire.fail_with(Some(tonic::Code::InvalidArgument));
    let r = rt.block_on(sender.send(WireSignal::Traces, trace_body.clone()));
    assert!(matches!(r, Err(SinkError::Rejected(_))), "{r:?}");
    by_wire.fail_with(Some(tonic::Code::Unavailable));
    let r = rt.block_on(sender.send(WireSignal::Traces, trace_body));
    assert!(matches!(r, Err(SinkError::Failed(_))), "{r:?}");
}
