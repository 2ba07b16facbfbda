//! A handler that panics mid-stream is restarted; the events behind the poison are processed.

use crate::support;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::json;
use telemetry_gateway::{
    GatewayBuilder, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

#[test]
fn poison_events_are_dead_lettered_and_the_handler_restarts() {
    let (mut cfg, _d) = support::config();
    cfg.metric_pool.pool_size = 1; // one handler: the poison and its followers share a queue
    cfg.metric_pool.batch_size = 64;
    let h = Arc::new(support::PoisonOnFlag::default());
    let gw = GatewayBuilder::new(cfg)
        .case_handler("tool_execution", h.clone())
        .start()
        .unwrap();
    let total = 300u64;
    let mut poison = 0;
    for i in 0..total {
        let p = if i % 100 == 50 {
            poison += 1;
            json!({"poison": true})
        } else {
            json!({"i": i})
        };
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t"))
                .with_payload(p),
        )
        .unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.handler_restarts, poison, "{s:?}");
    assert_eq!(s.dropped_for(ReasonCode::HandlerPanicked), poison);
    assert_eq!(
        h.handled.load(Ordering::SeqCst),
        total - poison,
        "every non-poison event handled"
    );
    assert_eq!(s.delivered, total - poison);
    assert!(s.is_settled());
}
