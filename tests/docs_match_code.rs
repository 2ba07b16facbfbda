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

/// The keys docs/configuration.md's validation table lists in the row whose problem text is
/// `problem`.
fn validation_row(text: &str, problem: &str) -> std::collections::BTreeSet<String> {
    let end = format!("| `{problem}` |");
    let row = text
        .lines()
        .find(|l| l.starts_with("| ") && l.ends_with(&end))
        .unwrap_or_else(|| panic!("docs/configuration.md has no row for `{problem}`"));
    let keys = row.split(" | ").nth(1).expect("a keys cell");
    keys.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// Every numeric key of `value`, dotted (arrays left out).
fn numeric_keys(prefix: &str, value: &figment::value::Value, out: &mut Vec<String>) {
    use figment::value::Value;
    match value {
        Value::Dict(_, d) => {
            for (k, v) in d {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                numeric_keys(&key, v, out);
            }
        }
        Value::Num(..) => out.push(prefix.to_owned()),
        _ => {}
    }
}

/// Each numeric key of a full configuration is set to 0 on its own: the keys the code then
/// refuses with "must be at least 1" and "must be greater than 0" are exactly the table's rows of
/// those texts, and every other key it refuses is named in the table.
#[test]
fn the_validation_table_is_the_codes() {
    use figment::providers::Serialized;
    use telemetry_gateway::config::ConfigError;
    let text = doc("configuration.md");
    let mut base = GatewayConfig::default();
    if cfg!(feature = "analytics") {
        base.sinks.sqlite = Some(telemetry_gateway::config::SqliteSection::at("x.db"));
    }
    base.validate().expect("the base configuration is valid");
    let mut keys = Vec::new();
    numeric_keys(
        "",
        &figment::value::Value::serialize(&base).unwrap(),
        &mut keys,
    );
    assert!(keys.len() > 40, "{keys:?}");
    let mut by_problem: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for key in &keys {
        let zeroed =
            figment::Figment::from(Serialized::defaults(&base)).merge(Serialized::default(key, 0));
        match GatewayConfig::from_figment(zeroed) {
            Err(ConfigError::Invalid {
                key: named,
                problem,
            }) if &named == key => {
                by_problem.entry(problem).or_default().insert(named);
            }
            Err(e) => panic!("{key} = 0: an error about another key: {e}"),
            Ok(_) => {}
        }
    }
    for problem in ["must be at least 1", "must be greater than 0"] {
        let mut code = by_problem.remove(problem).unwrap_or_default();
        let mut documented = validation_row(&text, problem);
        // `[sinks.sqlite]` exists only in a build with the `analytics` feature.
        if !cfg!(feature = "analytics") {
            documented.retain(|k| !k.starts_with("sinks.sqlite."));
            code.retain(|k| !k.starts_with("sinks.sqlite."));
        }
        assert_eq!(
            code, documented,
            "the `{problem}` row of the validation table"
        );
    }
    for (problem, keys) in by_problem {
        for key in keys {
            assert!(
                text.contains(&format!("`{key}`")),
                "docs/configuration.md's validation table lacks `{key}` ({problem})"
            );
        }
    }
}

/// Every thread the gateway names is in docs/architecture.md's threads table, and the control
/// messages are described as they are sent.
#[test]
fn the_threads_and_control_messages_of_architecture_are_the_codes() {
    let text = doc("architecture.md");
    let threads = &text[text.find("## Threads").expect("a Threads section")..];
    let threads = &threads[..threads[3..].find("\n## ").map_or(threads.len(), |i| i + 3)];
    let mut files = Vec::new();
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let mut named = std::collections::BTreeSet::new();
    let mut drain_by_try_send = false;
    for file in &files {
        let code = std::fs::read_to_string(file).unwrap();
        drain_by_try_send |= code.contains("try_send(Drain)");
        assert!(
            !code.contains(".send(Drain)"),
            "{}: Drain is awaited now; docs/architecture.md says it is not",
            file.display()
        );
        for line in code.lines() {
            if !(line.contains(".name(")
                || line.contains("run_on_thread(")
                || line.contains("thread_name("))
            {
                continue;
            }
            if let Some(start) = line.find("\"telemetry-gateway-") {
                let name: String = line[start + 1..]
                    .chars()
                    .take_while(|c| *c != '"')
                    .collect();
                named.insert(name);
            }
        }
    }
    assert!(named.len() >= 7, "{named:?}");
    for name in &named {
        assert!(
            threads.contains(&format!("`{name}`")),
            "docs/architecture.md's threads table lacks `{name}`"
        );
    }
    assert!(drain_by_try_send, "the code sends Drain with try_send");
    let control = &text[text
        .find("**Control** messages")
        .expect("the control paragraph")..];
    let control = &control[..control.find("\n\n").unwrap_or(control.len())];
    assert!(
        control.contains("`Drain`") && control.contains("`try_send`"),
        "docs/architecture.md must say Drain is sent with try_send: {control}"
    );
}

/// docs/architecture.md's start and shutdown sequences name the functions that do each step,
/// and every one of them exists in the file the section names.
#[test]
fn the_start_and_shutdown_steps_are_functions_of_the_runtime() {
    let text = doc("architecture.md");
    for (section, file) in [
        ("## Start sequence", "src/runtime/start.rs"),
        ("## Shutdown sequence", "src/runtime/shutdown.rs"),
    ] {
        let body = &text[text.find(section).expect(section)..];
        let body = &body[..body[3..].find("\n## ").map_or(body.len(), |i| i + 3)];
        let code = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let named: Vec<&str> = body
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|w| {
                w.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                    && w.contains('_')
                    && body.contains(&format!("(`{w}`"))
            })
            .collect();
        assert!(named.len() >= 5, "{section}: {named:?}");
        for name in named {
            assert!(
                code.contains(&format!("fn {name}(")) || code.contains(&format!("fn {name}<")),
                "{section} names `{name}`, which {file} does not define"
            );
        }
    }
}
