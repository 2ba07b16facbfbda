//! The events of the load generator (`examples/loadgen.rs`) and of the allocation bench
//! (`benches/allocations.rs`): one definition, so the two measure the same work.

use serde_json::json;

use crate::contracts::{TelemetryCase, TelemetryContext, TelemetryEnvelope};

/// Which events [`load_event`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadMix {
    /// Workflow runs of ten node executions each: the trace path.
    Trace,
    /// Four metric/log cases in turn (app created, feedback, tool execution, moderation).
    MetricLog,
    /// Every other event of each.
    Mixed,
}

/// Event `i` of producer `producer` under `mix`: tenants alternate between two, a run's events
/// share its run id (`p<producer>-run-<n>`), payloads are small and fixed.
pub fn load_event(mix: LoadMix, i: u64, producer: usize) -> TelemetryEnvelope {
    let tenant = if i.is_multiple_of(2) {
        "acme"
    } else {
        "globex"
    };
    let ctx = TelemetryContext::tenant(tenant).app("app-1").user("u-1");
    let trace = match mix {
        LoadMix::Trace => true,
        LoadMix::Mixed => i.is_multiple_of(2),
        LoadMix::MetricLog => false,
    };
    if trace {
        let k = if mix == LoadMix::Mixed { i / 2 } else { i };
        let run = k / 11;
        let run_id = format!("p{producer}-run-{run}");
        if k.is_multiple_of(11) {
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx)
                .with_run_id(run_id)
                .with_payload(
                    json!({"status": "succeeded", "duration_ms": 400, "total_tokens": 600}),
                )
        } else {
            TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx)
                .with_run_id(run_id)
                .with_payload(json!({"node_id": "node-1", "node_type": "llm",
                    "status": "succeeded", "duration_ms": 40, "total_tokens": 120}))
        }
    } else {
        match (i / 2) % 4 {
            0 => TelemetryEnvelope::new(TelemetryCase::AppCreated, ctx)
                .with_payload(json!({"app_mode": "workflow"})),
            1 => TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, ctx)
                .with_payload(json!({"rating": "like"})),
            2 => TelemetryEnvelope::new(TelemetryCase::ToolExecution, ctx)
                .with_payload(json!({"tool_name": "web_search", "duration_ms": 120})),
            _ => TelemetryEnvelope::new(TelemetryCase::ModerationCheck, ctx)
                .with_payload(json!({"flagged": false})),
        }
    }
}
