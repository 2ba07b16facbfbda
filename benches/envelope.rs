//! Routing and the envelope: what the gateway does to each event before any queue.
//!
//! - `route/<case>`: build one event of each of the 14 cases, validate it (the checks `emit()`
//!   makes), decide eligibility and data type from the routing table, and resolve its
//!   correlation and trace ids;
//! - `envelope/to_json` and `envelope/from_json`: the strict JSON wire form of a node execution
//!   with a typical payload (the form the Redis Streams transport and other processes use).
//!
//! ```text
//! cargo bench --bench envelope
//! ```

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use telemetry_gateway::config::CaseSection;
use telemetry_gateway::testing::internals::RoutingTable;
use telemetry_gateway::{TelemetryCase, TelemetryContext, TelemetryEnvelope};

fn envelope(case: &TelemetryCase) -> TelemetryEnvelope {
    TelemetryEnvelope::new(
        case.clone(),
        TelemetryContext::tenant("acme").app("app-1").user("u-1"),
    )
    .with_run_id("run-42")
    .with_payload(json!({"status": "succeeded", "duration_ms": 40, "total_tokens": 120}))
}

fn routing(c: &mut Criterion) {
    let table = RoutingTable::new(&BTreeMap::<String, CaseSection>::new());
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    for case in TelemetryCase::BUILT_IN.iter() {
        g.bench_function(case.as_str(), |b| {
            b.iter(|| {
                let mut env = envelope(case);
                env.validate_cheap().expect("a valid event");
                let decision = table.decide(&env.case, true, true);
                let route = table.route(&env.case).expect("a built-in case");
                telemetry_gateway::correlation::resolve(&mut env, route.root_span);
                black_box((decision, env))
            })
        });
    }
    g.finish();
}

fn wire(c: &mut Criterion) {
    let env = TelemetryEnvelope::new(
        TelemetryCase::NodeExecution,
        TelemetryContext::tenant("acme").app("app-1").user("u-1"),
    )
    .with_run_id("run-42")
    .with_payload(json!({
        "node_id": "node-1", "node_type": "llm", "status": "succeeded", "duration_ms": 40,
        "total_tokens": 120, "inputs": {"question": "What is the refund policy?"},
        "outputs": {"answer": "Refunds are possible within 30 days."},
    }));
    let text = env.to_json().expect("serializable");
    let mut g = c.benchmark_group("envelope");
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("to_json", |b| b.iter(|| black_box(env.to_json())));
    g.bench_function("from_json", |b| {
        b.iter(|| black_box(TelemetryEnvelope::from_json(black_box(&text))))
    });
    g.finish();
}

criterion_group!(benches, routing, wire);
criterion_main!(benches);
