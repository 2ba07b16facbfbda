//! The reference docs are checked against the code, so they cannot drift silently.

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
    let otel = telemetry_gateway::diagnostics::otel::INSTRUMENT_NAMES;
    let hist = telemetry_gateway::diagnostics::otel::HISTOGRAM_NAMES;
    for n in otel.iter().chain(hist.iter()) {
        assert!(
            text.contains(&format!("`{n}`")),
            "docs/operations.md lacks `{n}`"
        );
    }
}
