//! Reliability suite, scenario 12: hostile envelopes. Each gets a clear error naming the field
//! (or, for a syntax error, saying where), nothing panics, and the events around it are
//! unaffected.

mod support;

use serde_json::{json, Value};
use telemetry_gateway::contracts::{EnvelopeError, MAX_ENVELOPE_JSON_BYTES};
use telemetry_gateway::{start, TelemetryCase, TelemetryContext, TelemetryEnvelope};

fn good(i: u64) -> String {
    TelemetryEnvelope::new(TelemetryCase::AppUpdated, TelemetryContext::tenant("t1"))
        .with_payload(json!({"i": i}))
        .to_json()
        .unwrap()
}

fn with(field: &str, value: Value) -> String {
    let mut v: Value = serde_json::from_str(&good(0)).unwrap();
    let mut target = &mut v;
    let parts: Vec<&str> = field.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        target = &mut target[*p];
    }
    target[parts[parts.len() - 1]] = value;
    v.to_string()
}

fn nested(depth: usize) -> String {
    let mut s = String::new();
    for _ in 0..depth {
        s.push_str("{\"a\":");
    }
    s.push('1');
    for _ in 0..depth {
        s.push('}');
    }
    let g = good(0);
    g.replacen("\"payload\":{\"i\":0}", &format!("\"payload\":{s}"), 1)
}

#[test]
fn hostile_envelopes_get_errors_naming_the_field_and_nothing_else_is_affected() {
    let g = good(0);
    let hostile: Vec<(&str, String, &str)> = vec![
        ("truncated JSON", g[..g.len() / 2].to_owned(), "EOF"),
        (
            "wrong type: event_id",
            with("event_id", json!(5)),
            "event_id",
        ),
        (
            "wrong type: tenant",
            with("context.tenant_id", json!(7)),
            "context.tenant_id",
        ),
        (
            "wrong type: created_at",
            with("created_at", json!(true)),
            "created_at",
        ),
        (
            "wrong type: payload",
            with("payload", json!([1, 2])),
            "payload",
        ),
        (
            "wrong type: correlation",
            with("correlation", json!("x")),
            "correlation",
        ),
        (
            "huge tenant id",
            with("context.tenant_id", json!("t".repeat(1_000_000))),
            "context.tenant_id",
        ),
        (
            "huge envelope",
            with("payload", json!({"x": "y".repeat(MAX_ENVELOPE_JSON_BYTES)})),
            "bytes",
        ),
        ("deep nesting", nested(100_000), "recursion limit"),
        (
            "pickle in the fallback",
            with(
                "payload_fallback",
                json!("\u{80}\u{4}\u{95}\u{1}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}}\u{94}."),
            ),
            "payload_fallback",
        ),
        (
            "unknown schema_version",
            with("schema_version", json!(99)),
            "schema_version",
        ),
        ("unknown field", with("pickled", json!("gASV")), "pickled"),
        (
            "not JSON at all",
            "\u{80}\u{04}\u{95}pickle".to_owned(),
            "line 1",
        ),
    ];
    let (cfg, _d) = support::config();
    let gw = start(cfg).unwrap();
    let mut good_sent = 0;
    for (i, (what, text, must_name)) in hostile.iter().enumerate() {
        // A good envelope before and after each hostile one, decoded from the same stream.
        for t in [good(2 * i as u64), text.clone(), good(2 * i as u64 + 1)] {
            match TelemetryEnvelope::from_json(&t) {
                Ok(env) => {
                    gw.emit(env).unwrap();
                    good_sent += 1;
                }
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(must_name), "{what}: {msg}");
                    assert!(
                        msg.len() < 1_000,
                        "{what}: the error echoes too much ({} bytes)",
                        msg.len()
                    );
                    if let EnvelopeError::WrongField { field, .. } = &e {
                        assert!(!field.is_empty(), "{what}");
                    }
                }
            }
        }
    }
    assert_eq!(
        good_sent,
        2 * hostile.len() as u64,
        "every good envelope decoded"
    );
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(
        s.delivered, good_sent,
        "the events around the hostile ones are unaffected"
    );
    assert!(s.is_settled());
}
