//! The `telemetry-gateway` command, run as a real process: `--help` and `--version` on every
//! subcommand; `check-config` prints the effective configuration (environment overrides
//! applied) or names the bad key; `explain` asks a running gateway's diagnostics endpoint over
//! HTTP (a summary by default, `--json` for every step, the endpoint from `diagnostics.listen`
//! when not given).

use std::process::Command;
use std::time::{Duration, Instant};

use telemetry_gateway::config::LocalOutput;
use telemetry_gateway::{GatewayConfig, TelemetryCase, TelemetryContext, TelemetryEnvelope};

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_telemetry-gateway"));
    // The test's own environment must not leak overrides into the child.
    for (k, _) in std::env::vars() {
        if k.starts_with("TELEMETRY_GATEWAY__") {
            c.env_remove(k);
        }
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn check_config_prints_the_effective_configuration_with_overrides() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/gateway.toml");
    let out = cli()
        .args(["check-config", file])
        .env("TELEMETRY_GATEWAY__OTLP__SAMPLING_RATIO", "0.25")
        .env("TELEMETRY_GATEWAY__EXPORT__NAMESPACE", "shop")
        .output()
        .expect("the command runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    // What it prints is a configuration that loads back to the same values.
    let reloaded = GatewayConfig::from_toml_str(&printed).expect("the printed TOML loads");
    assert_eq!(reloaded.otlp.sampling_ratio, 0.25);
    assert_eq!(reloaded.export.namespace, "shop");
    let mut expected =
        GatewayConfig::from_toml_str(&std::fs::read_to_string(file).expect("the shipped config"))
            .expect("the shipped config is valid");
    expected.otlp.sampling_ratio = 0.25;
    expected.export.namespace = "shop".into();
    assert_eq!(reloaded, expected);
}

#[test]
fn check_config_names_the_bad_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[gateway]\nqueue_capacity = 0\n", "gateway.queue_capacity"),
        ("[gatway]\nx = 1\n", "gatway"),
        ("[otlp]\nsampling_ratio = \"half\"\n", "sampling_ratio"),
    ];
    for (i, (body, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad-{i}.toml"));
        std::fs::write(&path, body).unwrap();
        let out = cli()
            .arg("check-config")
            .arg(&path)
            .output()
            .expect("the command runs");
        assert_eq!(out.status.code(), Some(2), "{body}");
        let err = text(&out.stderr);
        assert!(err.contains(key), "the error names `{key}`: {err}");
        assert!(out.stdout.is_empty(), "nothing printed for a bad config");
    }
    let out = cli()
        .args(["check-config", "/nonexistent/gateway.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no such file"));
}

#[test]
fn explain_asks_a_running_gateway() {
    let mut cfg = GatewayConfig::default();
    cfg.diagnostics.listen = Some("127.0.0.1:0".into());
    cfg.export.local_output = LocalOutput::Discard;
    cfg.export.log_flush_interval_ms = 10;
    let gw = telemetry_gateway::start(cfg).expect("the gateway starts");
    let addr = gw.diagnostics_addr().expect("the endpoint is up");
    let env = TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("acme"))
        .with_correlation_id("req-42");
    let id = gw.emit(env).expect("accepted").to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.stats().in_flight > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let endpoint = format!("http://{addr}");

    // By event id, --json: the journey, through to its outcome.
    let out = cli()
        .args(["explain", "--json", "--endpoint", &endpoint, &id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["journeys"][0]["event_id"], id.as_str());
    let stages: Vec<&str> = v["journeys"][0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["stage"].as_str())
        .collect();
    assert_eq!(stages.first(), Some(&"received"), "{stages:?}");
    assert_eq!(stages.last(), Some(&"delivered"), "{stages:?}");

    // By correlation id, the summary: one line per event with its case, id and outcome.
    let out = cli()
        .args(["explain", "--endpoint", &endpoint, "req-42"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let summary = text(&out.stdout);
    let lines: Vec<&str> = summary.lines().collect();
    assert_eq!(lines.len(), 1, "{summary}");
    assert!(
        lines[0].contains("app_created") && lines[0].contains(&id),
        "{summary}"
    );
    assert!(lines[0].contains("delivered"), "{summary}");

    // With no --endpoint: diagnostics.listen from the environment.
    let out = cli()
        .args(["explain", "req-42"])
        .env("TELEMETRY_GATEWAY__DIAGNOSTICS__LISTEN", addr.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&id));
    // ... or from a configuration file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, format!("[diagnostics]\nlisten = \"{addr}\"\n")).unwrap();
    let out = cli()
        .args(["explain", "--config"])
        .arg(&file)
        .arg(&id)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("delivered"));

    // Unknown: exit 1, and why.
    let out = cli()
        .args(["explain", "--endpoint", &endpoint, "never-seen"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not in the flight recorder"));

    gw.shutdown_blocking(Duration::from_secs(5));

    // Nobody listening: exit 2, naming the endpoint.
    let out = cli()
        .args(["explain", "--endpoint", &endpoint, &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&addr.to_string()));
    let out = cli()
        .args(["explain", "--endpoint", "not a url", &id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["explain"][..],
        &["worker"][..],
        &["slo", "--frob"][..],
    ] {
        let out = cli().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(text(&out.stderr).contains("Usage:"), "{args:?}");
    }
    // Well formed, but nothing says where the endpoint is.
    let out = cli().args(["explain", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("diagnostics.listen"));
}

#[test]
fn every_subcommand_answers_help_and_the_tool_its_version() {
    let out = cli().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("telemetry-gateway {}", env!("CARGO_PKG_VERSION"))
    );
    let out = cli().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = text(&out.stdout);
    let subcommands = ["check-config", "explain", "worker", "slo", "export-parquet"];
    for sub in subcommands {
        assert!(help.contains(sub), "--help lists {sub}: {help}");
        for flag in ["--help", "-h"] {
            let out = cli().args([sub, flag]).output().unwrap();
            assert!(out.status.success(), "{sub} {flag}: {}", text(&out.stderr));
            let text = text(&out.stdout);
            assert!(
                text.contains("Usage: telemetry-gateway"),
                "{sub} {flag}: {text}"
            );
        }
        let out = cli().args(["help", sub]).output().unwrap();
        assert!(out.status.success(), "help {sub}");
    }
}

#[test]
fn worker_refuses_a_configuration_it_cannot_run_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // The default transport is in process: a worker has nothing to read.
        ("[transport]\nkind = \"in_process\"\n", "transport.kind"),
        // A memory dedup cannot see other workers' events.
        (
            "[transport]\nkind = \"redis_streams\"\n[dedup]\nbackend = \"memory\"\n",
            "dedup.backend",
        ),
        (
            "[transport]\nkind = \"redis_streams\"\nclaim_idle_ms = 100\n[dedup]\nbackend = \"redis\"\n",
            "transport.claim_idle_ms",
        ),
    ];
    for (i, (body, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("worker-{i}.toml"));
        std::fs::write(&path, body).unwrap();
        let out = cli()
            .args(["worker", "--config"])
            .arg(&path)
            .output()
            .expect("the command runs");
        assert_eq!(out.status.code(), Some(2), "{body}");
        let err = text(&out.stderr);
        assert!(err.contains(key), "the error names `{key}`: {err}");
    }
    let out = cli().args(["worker", "--config"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing FILE is a usage error"
    );
}

#[test]
fn check_config_never_prints_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret.toml");
    std::fs::write(
        &path,
        "[otlp]\nendpoint = \"http://127.0.0.1:4317\"\napi_key = \"key-0123456789\"\n\
         headers = { \"x-api-key\" = \"hdr-0123456789\" }\n\n\
         [[sinks.tenants]]\nname = \"t\"\ntenant_id = \"acme\"\nkind = \"otlp\"\n\
         endpoint = \"http://127.0.0.1:4317\"\nheaders = { \"authorization\" = \"Bearer tok-0123456789\" }\n",
    )
    .unwrap();
    let out = cli().arg("check-config").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for secret in ["key-0123456789", "hdr-0123456789", "tok-0123456789"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
    }
    assert!(printed.contains("[REDACTED]"));
    assert!(printed.contains("x-api-key"), "header names stay");
}
