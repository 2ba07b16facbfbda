//! The seam between the gateway and the handler pool: a host-supplied transport carries the
//! whole metric/log path without any change to the handlers.

use crate::support;

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

/// A source that asks to settle, and records what it was told, as a transport with
/// acknowledgements (a Redis Streams consumer group) would acknowledge it.
#[derive(Debug)]
struct SettlingSource {
    inner: telemetry_gateway::transport::InProcessSource,
    settled: Arc<std::sync::Mutex<Vec<uuid::Uuid>>>,
    /// Ids received but not yet settled; a settle must only name ids received before it.
    received: std::collections::HashSet<uuid::Uuid>,
    misordered: Arc<AtomicU64>,
}

impl EnvelopeSource for SettlingSource {
    fn recv_batch(
        &mut self,
        max: usize,
    ) -> futures::future::BoxFuture<'_, Option<Vec<TelemetryEnvelope>>> {
        Box::pin(async move {
            let batch = self.inner.recv_batch(max).await;
            if let Some(b) = &batch {
                self.received.extend(b.iter().map(|e| e.event_id));
            }
            batch
        })
    }

    fn wants_settle(&self) -> bool {
        true
    }

    fn settle(&mut self, handled: Vec<uuid::Uuid>) -> futures::future::BoxFuture<'_, ()> {
        for id in &handled {
            if !self.received.contains(id) {
                self.misordered.fetch_add(1, Ordering::SeqCst);
            }
        }
        self.settled.lock().unwrap().extend(handled);
        Box::pin(async {})
    }
}

#[test]
fn a_source_is_told_which_events_reached_their_outcome_and_never_a_panicked_one() {
    let (cfg, _d) = support::config();
    let (transport, sources) = InProcessTransport::new(2, 64);
    let settled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let misordered = Arc::new(AtomicU64::new(0));
    let sources: Vec<Box<dyn EnvelopeSource>> = sources
        .into_iter()
        .map(|inner| {
            Box::new(SettlingSource {
                inner,
                settled: settled.clone(),
                received: Default::default(),
                misordered: misordered.clone(),
            }) as Box<dyn EnvelopeSource>
        })
        .collect();
    let gw = GatewayBuilder::new(cfg)
        .metric_transport(Arc::new(transport), sources)
        .case_handler("app_created", Arc::new(support::PoisonOnFlag::default()))
        .start()
        .unwrap();
    let ctx = || TelemetryContext::tenant("t").app("a");
    let mut ids = Vec::new();
    for i in 0..40 {
        let env =
            TelemetryEnvelope::new(TelemetryCase::AppCreated, ctx()).with_payload(json!({"i": i}));
        ids.push(gw.emit(env).unwrap());
    }
    // One re-sent event (a duplicate) and one that makes its case handler panic.
    let resent =
        TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, ctx()).with_payload(json!({}));
    let resent_id = gw.emit(resent.clone()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    gw.emit(resent).unwrap();
    let poison = TelemetryEnvelope::new(TelemetryCase::AppCreated, ctx())
        .with_payload(json!({"poison": true}));
    let poison_id = gw.emit(poison).unwrap();
    // Settles happen before a handler's next batch: keep events coming until the last ones are
    // settled too.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut filler = Vec::new();
    while std::time::Instant::now() < deadline {
        let done = {
            let s = settled.lock().unwrap();
            ids.iter().all(|id| s.contains(id))
                && s.iter().filter(|x| **x == resent_id).count() == 2
        };
        if done {
            break;
        }
        let env = TelemetryEnvelope::new(TelemetryCase::AppUpdated, ctx());
        filler.push(gw.emit(env).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert!(s.is_settled());
    let settled = settled.lock().unwrap();
    for id in &ids {
        assert_eq!(
            settled.iter().filter(|x| *x == id).count(),
            1,
            "{id} settled once"
        );
    }
    assert_eq!(
        settled.iter().filter(|x| **x == resent_id).count(),
        2,
        "the first copy when handled, the re-send when dropped as a duplicate"
    );
    assert!(
        !settled.contains(&poison_id),
        "an event whose handler panicked is left for redelivery"
    );
    assert_eq!(
        s.dropped_for(telemetry_gateway::ReasonCode::HandlerPanicked),
        1
    );
    assert_eq!(
        misordered.load(Ordering::SeqCst),
        0,
        "only received ids are settled"
    );
}
