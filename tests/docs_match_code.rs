//! The reference docs are checked against the code, so they cannot drift silently.

// figment::Jail's closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::path::Path;

use telemetry_gateway::diagnostics::ReasonCode;
use telemetry_gateway::export::mapping::instrument_names;
use telemetry_gateway::GatewayConfig;

fn doc(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_instrument_is_in_the_catalogue() {
    let text = doc("telemetry-catalogue.md");
    for name in instrument_names("app") {
        assert!(
            text.contains(&format!("`{name}`")),
            "docs/telemetry-catalogue.md lacks `{name}`"
        );
    }
}

#[test]
fn every_reason_code_is_in_operations() {
    let text = doc("operations.md");
    for r in ReasonCode::ALL {
        assert!(
            text.contains(&format!("`{}`", r.as_str())),
            "docs/operations.md lacks `{}`",
            r.as_str()
        );
    }
}

#[test]
fn every_config_key_is_in_configuration() {
    let text = doc("configuration.md");
    let defaults = figment::value::Value::serialize(GatewayConfig::default()).unwrap();
    for (section, value) in defaults.into_dict().unwrap() {
        let Some(keys) = value.into_dict() else {
            continue;
        };
        for key in keys.keys() {
            let dotted = format!("{section}.{key}");
            assert!(
                text.contains(&format!("`{dotted}`")) || text.contains(&format!("`{key}`")),
                "docs/configuration.md lacks `{dotted}`"
            );
        }
    }
    // Keys whose default is "unset" do not appear in the serialized defaults.
    for key in ["endpoint", "api_key", "url"] {
        assert!(
            text.contains(&format!("`{key}`")),
            "docs/configuration.md lacks `{key}`"
        );
    }
}

#[test]
fn every_self_metric_is_in_operations() {
    let text = doc("operations.md");
    // Every Prometheus family rendered by the gateway, read from a real exposition.
    let (cfg, _d) = {
        let dir = tempfile::tempdir().unwrap();
        let mut c = GatewayConfig::default();
        c.export.file_path = dir.path().join("out.jsonl");
        (c, dir)
    };
    let gw = telemetry_gateway::start(cfg).unwrap();
    let exposition = telemetry_gateway::diagnostics::prometheus::render(&gw.diagnostics());
    gw.shutdown_blocking(std::time::Duration::from_secs(5));
    let families: std::collections::BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() >= 20, "{families:?}");
    for f in families {
        assert!(
            text.contains(&format!("`{f}`")),
            "docs/operations.md lacks `{f}`"
        );
    }
    for n in telemetry_gateway::diagnostics::catalogue::otel_names() {
        assert!(
            text.contains(&format!("`{n}`")),
            "docs/operations.md lacks `{n}`"
        );
    }
}

/// The text of `docs/configuration.md` between its "String-typed keys" bullet and the next
/// bullet.
fn string_keys_paragraph(text: &str) -> &str {
    let start = text
        .find("String-typed keys are taken as the raw text")
        .expect("docs/configuration.md explains the string-typed keys");
    let rest = &text[start..];
    let end = rest.find("\n- ").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn the_string_key_list_in_configuration_is_the_codes() {
    let text = doc("configuration.md");
    let paragraph = string_keys_paragraph(&text);
    let documented: std::collections::BTreeSet<&str> = paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|k| k.contains('.') && !k.contains('<') && !k.contains('=') && !k.contains(':'))
        .collect();
    let code: std::collections::BTreeSet<&str> =
        telemetry_gateway::config::STRING_KEYS.into_iter().collect();
    assert_eq!(
        documented, code,
        "docs/configuration.md's string-typed keys differ from config::STRING_KEYS"
    );
    // What the paragraph promises of such a key holds: digits stay text.
    figment::Jail::expect_with(|jail| {
        jail.set_env("TELEMETRY_GATEWAY__OTLP__API_KEY", "0012345");
        jail.set_env("TELEMETRY_GATEWAY__EXPORT__NAMESPACE", "12345");
        let c = GatewayConfig::load(None).expect("digits in a string key load");
        assert_eq!(c.otlp.api_key.as_deref(), Some("0012345"));
        assert_eq!(c.export.namespace, "12345");
        Ok(())
    });
    assert!(
        !text.contains("is read as a number"),
        "docs/configuration.md still says a string key can be read as a number"
    );
}

#[test]
fn the_shipped_config_names_every_key_a_case_may_override() {
    // Every key of [cases.<name>], from the struct itself.
    let all = telemetry_gateway::config::CaseSection {
        signal: Some(telemetry_gateway::SignalType::MetricLog),
        enterprise_only: Some(true),
        root_span: Some(false),
        enabled: Some(true),
        sample_ratio: Some(1.0),
        slow_threshold_ms: Some(1),
    };
    let keys: Vec<String> = figment::value::Value::serialize(all)
        .unwrap()
        .into_dict()
        .unwrap()
        .into_keys()
        .collect();
    let shipped =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml"))
            .unwrap();
    let line = shipped
        .lines()
        .position(|l| l.contains("A built-in case may override"))
        .expect("config/gateway.toml says what a built-in case may override");
    let sentence: String = shipped.lines().skip(line).take(2).collect();
    assert!(
        !sentence.contains("three keys"),
        "a stale count: {sentence}"
    );
    for key in &keys {
        assert!(
            sentence.contains(key.as_str()),
            "config/gateway.toml's [cases] comment lacks `{key}`: {sentence}"
        );
    }
    let text = doc("configuration.md");
    for key in &keys {
        assert!(
            text.contains(&format!("| `{key}` |")),
            "docs/configuration.md's [cases] table lacks `{key}`"
        );
    }
}

#[test]
fn every_otel_variable_read_is_documented() {
    let text = doc("configuration.md");
    for var in [
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ] {
        assert!(
            text.contains(&format!("| `{var}`")),
            "docs/configuration.md lacks {var}"
        );
        // And it is really read: set alone, it changes the loaded config.
        figment::Jail::expect_with(|jail| {
            let value = match var {
                "OTEL_EXPORTER_OTLP_PROTOCOL" => "http/protobuf",
                "OTEL_EXPORTER_OTLP_TIMEOUT" => "1234",
                "OTEL_EXPORTER_OTLP_ENDPOINT" => "http://127.0.0.1:4317",
                _ => "x=y",
            };
            jail.set_env(var, value);
            let loaded = GatewayConfig::load(None).expect("loads");
            assert_ne!(loaded, GatewayConfig::default(), "{var} was not read");
            Ok(())
        });
    }
}
