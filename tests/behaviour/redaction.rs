//! Redaction end to end: deny-listed keys and secret-looking values never reach the exported
//! spans or log records, and token counts are left alone.

use crate::support;

use serde_json::{json, Value};
use telemetry_gateway::{TelemetryCase, TelemetryContext, TelemetryEnvelope};

const API_KEY: &str = "sk-abcdefghijklmnopqrstuvwxyz123456";
const EMAIL: &str = "a@b.com";
const NESTED_PASSWORD: &str = "hunter2-nested";
const BEARER: &str = "Bearer nestedtoken0123456789";

fn payload() -> Value {
    json!({
        "api_key": API_KEY,
        "note": format!("mail me at {EMAIL}"),
        "total_tokens": 5,
        "settings": {"db_password": NESTED_PASSWORD, "headers": [BEARER], "retries": 3},
        "status": "succeeded",
    })
}

fn read_lines(path: &std::path::Path) -> (String, Vec<Value>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (text, lines)
}

fn assert_redacted(what: &str, attrs: &Value) {
    assert_eq!(attrs["app.api_key"], "[REDACTED]", "{what}: {attrs}");
    assert_eq!(
        attrs["app.note"], "mail me at [REDACTED]",
        "{what}: {attrs}"
    );
    assert_eq!(attrs["app.total_tokens"], 5, "{what}: {attrs}");
    assert_eq!(attrs["app.status"], "succeeded", "{what}: {attrs}");
    // Objects are redacted before they are serialized into one attribute.
    let settings: Value = serde_json::from_str(attrs["app.settings"].as_str().unwrap()).unwrap();
    assert_eq!(
        settings,
        json!({"db_password": "[REDACTED]", "headers": ["[REDACTED]"], "retries": 3}),
        "{what}"
    );
}

#[test]
fn secrets_are_redacted_in_span_and_log_attributes_and_counts_survive() {
    let (cfg, dir) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    let ctx = TelemetryContext::tenant("t1").app("a1");
    gw.emit(
        TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx.clone())
            .with_run_id("run-redaction")
            .with_payload(payload()),
    )
    .unwrap();
    gw.emit(TelemetryEnvelope::new(TelemetryCase::AppCreated, ctx).with_payload(payload()))
        .unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, 2, "{s:?}");

    let (text, lines) = read_lines(&dir.path().join("out.jsonl"));
    // Nothing secret anywhere in the output, whatever line it would have been on.
    for secret in [API_KEY, EMAIL, NESTED_PASSWORD, BEARER] {
        assert!(!text.contains(secret), "{secret:?} leaked:\n{text}");
    }

    let span = lines
        .iter()
        .find(|l| l["signal"] == "span" && l["name"] == "app.workflow.run")
        .expect("workflow_run span");
    assert_redacted("workflow_run span", &span["attributes"]);

    let companion = lines
        .iter()
        .find(|l| l["signal"] == "log" && l["event_name"] == "app.workflow_run")
        .expect("workflow_run companion log");
    assert_redacted("workflow_run log", &companion["attributes"]);

    let record = lines
        .iter()
        .find(|l| l["signal"] == "log" && l["event_name"] == "app.app_created")
        .expect("app_created log record");
    assert_redacted("app_created log", &record["attributes"]);

    // Metrics read the payload itself: the token count is intact there too.
    let tokens = lines
        .iter()
        .find(|l| l["signal"] == "metric" && l["name"] == "app.tokens.total")
        .expect("tokens metric");
    assert_eq!(tokens["value"], 5);
}

#[test]
fn an_error_message_is_redacted_in_the_span_status_and_the_log_body() {
    let (cfg, dir) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    gw.emit(
        TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t1"))
            .with_run_id("run-error")
            .with_payload(json!({"error": format!("no account for {EMAIL}")})),
    )
    .unwrap();
    gw.shutdown_blocking(support::DEADLINE);
    let (text, lines) = read_lines(&dir.path().join("out.jsonl"));
    assert!(!text.contains(EMAIL), "{text}");
    let span = lines.iter().find(|l| l["signal"] == "span").unwrap();
    assert_eq!(
        span["status"],
        json!({"code": "error", "message": "no account for [REDACTED]"})
    );
    let log = lines.iter().find(|l| l["signal"] == "log").unwrap();
    assert_eq!(
        log["body"],
        "workflow_run failed: no account for [REDACTED]"
    );
}

#[test]
fn a_bad_custom_pattern_fails_start_naming_its_key() {
    // A regex that does not compile, and one that would match between every character.
    for (patterns, key) in [
        (vec!["(unclosed"], "redaction.patterns[0]"),
        (vec!["ok", "x*"], "redaction.patterns[1]"),
    ] {
        let (mut cfg, _dir) = support::config();
        cfg.redaction.patterns = patterns.iter().map(|p| p.to_string()).collect();
        let err = telemetry_gateway::start(cfg).unwrap_err().to_string();
        assert!(err.contains(key), "{patterns:?}: {err}");
    }
}

#[test]
fn log_lines_and_recorder_details_are_redacted_after_start() {
    let (cfg, _d) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    let line = gw.log_scope().sanitize(
        "export failed: auth Bearer abcdefghijklmnop rejected for ops@example.com\r\nforged",
    );
    assert!(!line.contains("abcdefghijklmnop"), "{line}");
    assert!(!line.contains("ops@example.com"), "{line}");
    assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
    gw.shutdown_blocking(support::DEADLINE);
}

/// Two gateways in one process, with different redaction settings and warning intervals: each
/// applies its own to its log values and journey details, and a credential one was given never
/// changes what the other writes. (Before, the last gateway started set them for the process.)
#[test]
fn two_gateways_in_one_process_each_apply_their_own_redaction() {
    let (mut strict_cfg, _d1) = support::config();
    strict_cfg.redaction.patterns = vec![r"order-\d{6}".into()];
    strict_cfg.logging.warn_summary_interval_secs = 7;
    let (mut plain_cfg, _d2) = support::config();
    plain_cfg.redaction.builtin_patterns = false;
    plain_cfg.logging.warn_summary_interval_secs = 90;
    let strict = telemetry_gateway::start(strict_cfg).unwrap();
    // Started second: it used to win for both.
    let plain = telemetry_gateway::start(plain_cfg).unwrap();

    let text = "failed for order-123456, auth Bearer abcdefghijklmnop";
    let by_strict = strict.log_scope().sanitize(text).into_owned();
    let by_plain = plain.log_scope().sanitize(text).into_owned();
    assert!(!by_strict.contains("order-123456"), "{by_strict}");
    assert!(!by_strict.contains("abcdefghijklmnop"), "{by_strict}");
    assert_eq!(
        by_plain, text,
        "the second gateway redacts nothing by pattern"
    );

    // Journey details follow the gateway that recorded them: a refusal's message carries the
    // tenant id it refused.
    let refused = |gw: &telemetry_gateway::GatewayHandle| {
        let env = TelemetryEnvelope::new(
            TelemetryCase::WorkflowRun,
            TelemetryContext::tenant("tenant order-654321 ".repeat(20).as_str()),
        );
        let id = env.event_id.to_string();
        assert!(gw.emit(env).is_err());
        gw.explain(&id).to_json()
    };
    let strict_journey = refused(&strict);
    let plain_journey = refused(&plain);
    assert!(!strict_journey.contains("order-654321"), "{strict_journey}");
    assert!(plain_journey.contains("order-654321"), "{plain_journey}");

    assert_eq!(
        strict.log_scope().warn_summary_interval(),
        std::time::Duration::from_secs(7)
    );
    assert_eq!(
        plain.log_scope().warn_summary_interval(),
        std::time::Duration::from_secs(90)
    );
    strict.shutdown_blocking(support::DEADLINE);
    plain.shutdown_blocking(support::DEADLINE);
}
