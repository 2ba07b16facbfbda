//! A host-declared case with its own handler: an online shop's `order_placed` event.
//!
//! ```text
//! cargo run --example case_handler [-- OUTPUT.jsonl]
//! ```
//!
//! The case is declared in configuration (`[cases.order_placed]`, a metric/log case), the host
//! registers a [`CaseHandler`] for it with `GatewayBuilder::case_handler`, and the handler's
//! attributes land on the event's log record. Everything a handler needs comes from this crate
//! (`KeyValue`, `JsonObject`, `Uuid`), so the host needs no `opentelemetry` or `uuid` of its
//! own. The checkout retries its request once with the same `Idempotency-Key`: the re-sent
//! event is counted once (dropped as `duplicate`). The output goes as JSON lines to OUTPUT
//! (default `case-handler-output.jsonl`); the last line printed is the ledger as JSON.

use std::sync::Arc;
use std::time::Duration;

use telemetry_gateway::{
    CaseHandler, GatewayBuilder, GatewayConfig, JsonObject, KeyValue, TelemetryCase,
    TelemetryContext, TelemetryEnvelope, Uuid,
};

/// Turns an order's payload into log attributes: the order's size class and its currency.
#[derive(Debug)]
struct OrderPlaced;

impl CaseHandler for OrderPlaced {
    fn handle(&self, env: &TelemetryEnvelope, payload: Option<&JsonObject>) -> Vec<KeyValue> {
        let Some(p) = payload else {
            // A degraded event (its payload could not be read back): say so, never panic.
            return vec![KeyValue::new("shop.order.payload", "missing")];
        };
        let cents = p.get("total_cents").and_then(|v| v.as_i64()).unwrap_or(0);
        let size = match cents {
            c if c >= 100_000 => "large",
            c if c >= 10_000 => "medium",
            _ => "small",
        };
        let currency = p
            .get("currency")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_owned();
        let id: Uuid = env.event_id;
        vec![
            KeyValue::new("shop.order.size", size),
            KeyValue::new("shop.order.currency", currency),
            KeyValue::new("shop.order.event_version", id.get_version_num() as i64),
        ]
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let output = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "case-handler-output.jsonl".into());
    let mut config = GatewayConfig::from_toml_str(
        r#"
        [cases.order_placed]
        signal = "metric_log"
        enterprise_only = false
        "#,
    )?;
    config.export.file_path = output.clone().into();
    let gateway = GatewayBuilder::new(config)
        .case_handler("order_placed", Arc::new(OrderPlaced))
        .start()?;

    let orders = [
        ("key-1001", 2_599, "EUR"),
        ("key-1002", 149_000, "USD"),
        ("key-1003", 12_000, "EUR"),
    ];
    for (key, cents, currency) in orders {
        let event = TelemetryEnvelope::new(
            TelemetryCase::custom("order_placed"),
            TelemetryContext::tenant("shop").app("checkout"),
        )
        .with_idempotency_key(key)
        .with_correlation_id(format!("req-{key}"))
        .with_payload(serde_json::json!({"total_cents": cents, "currency": currency}));
        gateway.emit(event)?;
    }
    // The client timed out and retried its first request: same key, a new request id.
    let retry = TelemetryEnvelope::new(
        TelemetryCase::custom("order_placed"),
        TelemetryContext::tenant("shop").app("checkout"),
    )
    .with_idempotency_key("key-1001")
    .with_correlation_id("req-key-1001-retry")
    .with_payload(serde_json::json!({"total_cents": 2_599, "currency": "EUR"}));
    gateway.emit(retry)?;

    let report = gateway.shutdown_blocking(Duration::from_secs(5));
    let s = &report.stats;
    println!(
        "emitted {}, delivered {}, dropped {:?}; log records in {output}",
        s.emitted, s.delivered, s.dropped
    );
    println!("{}", serde_json::to_string(&report.stats)?);
    Ok(())
}
