//! The seam between the gateway and the handler pool: a host-supplied transport carries the
//! whole metric/log path without any change to the handlers.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;
use telemetry_gateway::contracts::TelemetryEnvelope;
use telemetry_gateway::transport::{
    EnvelopeSource, InProcessTransport, MetricTransport, TransportError,
};
use telemetry_gateway::{GatewayBuilder, TelemetryCase, TelemetryContext};

/// A transport that puts every envelope through its JSON wire form, as an out-of-process
/// transport would, and counts what it carried.
#[derive(Debug)]
struct WireTransport {
    inner: InProcessTransport,
    carried: AtomicU64,
}

impl MetricTransport for WireTransport {
    fn try_send(&self, env: TelemetryEnvelope) -> Result<(), TransportError> {
        let text = env.to_json().map_err(|_| TransportError::Closed)?;
        let decoded = TelemetryEnvelope::from_json(&text).map_err(|_| TransportError::Closed)?;
        assert_eq!(decoded, env, "the wire form round-trips exactly");
        self.inner.try_send(decoded)?;
        self.carried.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn queued(&self) -> usize {
        self.inner.queued()
    }
    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

#[test]
fn a_custom_transport_carries_the_metric_path() {
    let (cfg, _d) = support::config();
    let (inner, sources) = InProcessTransport::new(3, 64);
    let t = Arc::new(WireTransport {
        inner,
        carried: AtomicU64::new(0),
    });
    let sources: Vec<Box<dyn EnvelopeSource>> = sources
        .into_iter()
        .map(|s| Box::new(s) as Box<dyn EnvelopeSource>)
        .collect();
    let gw = GatewayBuilder::new(cfg)
        .metric_transport(t.clone(), sources)
        .start()
        .unwrap();
    for i in 0..30 {
        gw.emit(
            TelemetryEnvelope::new(
                TelemetryCase::AppCreated,
                TelemetryContext::tenant("t").app("a"),
            )
            .with_correlation_id(format!("req-{i}"))
            .with_payload(json!({"i": i})),
        )
        .unwrap();
    }
    gw.emit(TelemetryEnvelope::new(
        TelemetryCase::WorkflowRun,
        TelemetryContext::tenant("t"),
    ))
    .unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(
        t.carried.load(Ordering::SeqCst),
        30,
        "only metric/log events use the transport"
    );
    assert_eq!(s.delivered, 31);
    assert!(s.is_settled());
}
