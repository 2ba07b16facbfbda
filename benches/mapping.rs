//! Span mapping: a workflow run with 10 node executions into OpenTelemetry data.
//!
//! - `mapping/run_spans`: the 11 envelopes (ids resolved) into 11 `SpanData`;
//! - `mapping/run_spans_and_logs`: what the trace batcher does per event: the span and its
//!   companion log record from one computation of the attributes;
//! - `mapping/run_metrics`: the metric updates of the 11 events.
//!
//! Redaction is on with its defaults (deny-listed keys and the built-in patterns), as in
//! production.
//!
//! ```text
//! cargo bench --bench mapping
//! ```

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use serde_json::json;
use telemetry_gateway::config::{CaseSection, RedactionSection};
use telemetry_gateway::export::mapping::Mapper;
use telemetry_gateway::redaction::Redactor;
use telemetry_gateway::testing::internals::RoutingTable;
use telemetry_gateway::{Payload, TelemetryCase, TelemetryContext, TelemetryEnvelope};

/// A workflow run and its 10 node executions, ids resolved as the gateway resolves them.
fn run(table: &RoutingTable) -> Vec<TelemetryEnvelope> {
    let ctx = TelemetryContext::tenant("acme").app("app-1").user("u-1");
    let mut events = vec![
        TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx.clone())
            .with_run_id("run-42")
            .with_payload(
                json!({"status": "succeeded", "duration_ms": 900, "total_tokens": 1200,
                             "workflow_id": "wf-1", "inputs": {"question": "refunds?"}}),
            ),
    ];
    for i in 0..10 {
        events.push(
            TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx.clone())
                .with_run_id("run-42")
                .with_payload(json!({"node_id": format!("node-{i}"), "node_type": "llm",
                    "title": "LLM", "status": "succeeded", "duration_ms": 40 + i,
                    "total_tokens": 120, "model": "gpt-4o",
                    "inputs": {"question": "What is the refund policy?"},
                    "outputs": {"answer": "Within 30 days."}})),
        );
    }
    for env in &mut events {
        let route = table.route(&env.case).expect("a built-in case");
        telemetry_gateway::correlation::resolve(env, route.root_span);
    }
    events
}

fn payload(env: &TelemetryEnvelope) -> Option<&telemetry_gateway::contracts::JsonObject> {
    match &env.payload {
        Payload::Inline(p) => Some(p),
        Payload::Ref(_) => None,
    }
}

fn mapping(c: &mut Criterion) {
    let table = RoutingTable::new(&BTreeMap::<String, CaseSection>::new());
    let meter_provider = SdkMeterProvider::builder().build();
    let meter = meter_provider.meter("bench");
    let logger_provider = SdkLoggerProvider::builder().build();
    let logger = logger_provider.logger("bench");
    let redactor = Redactor::from_config(&RedactionSection::default()).expect("defaults compile");
    let mapper = Mapper::new("app", true, &table, &meter, redactor);
    let events = run(&table);

    let mut g = c.benchmark_group("mapping");
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("run_spans", |b| {
        b.iter(|| {
            let spans: Vec<_> = events.iter().map(|e| mapper.span(e, payload(e))).collect();
            black_box(spans)
        })
    });
    g.bench_function("run_spans_and_logs", |b| {
        b.iter(|| {
            let out: Vec<_> = events
                .iter()
                .map(|e| mapper.span_and_companion(&logger, e, payload(e)))
                .collect();
            black_box(out)
        })
    });
    g.bench_function("run_metrics", |b| {
        b.iter(|| {
            for e in &events {
                mapper.record_metrics(e, payload(e), None);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, mapping);
criterion_main!(benches);
