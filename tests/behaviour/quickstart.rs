//! Runs the real quickstart example binary and checks that its summary adds up, on the embedded
//! defaults and against a collector set by environment.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use telemetry_gateway::testing::OtlpReceiver;

/// Builds the quickstart example with the features and profile of this test run (a no-op when it
/// is fresh) and returns its path. `cargo test --all-targets` does not refresh
/// `target/<profile>/examples/quickstart` itself, so without this a stale binary could be tested.
fn quickstart_bin() -> PathBuf {
    // target/<profile>/deps/quickstart-<hash> -> target/<profile>/examples/quickstart
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--quiet",
        "--example",
        "quickstart",
        "--all-features",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo build --example quickstart");
    assert!(status.success(), "building the quickstart example failed");
    profile_dir.join("examples").join("quickstart")
}

fn run(envs: &[(&str, String)]) -> serde_json::Value {
    run_with(envs, None)
}

fn run_with(envs: &[(&str, String)], config_toml: Option<&str>) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(quickstart_bin());
    cmd.arg("--json").current_dir(dir.path());
    if let Some(toml) = config_toml {
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, toml).unwrap();
        cmd.arg("--config").arg(&path);
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run quickstart");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn check_ledger(s: &serde_json::Value) {
    let dropped: u64 = s["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let emitted = s["emitted"].as_u64().unwrap();
    let delivered = s["delivered"].as_u64().unwrap();
    assert_eq!(emitted, delivered + dropped, "{s}");
    assert!(
        s["dropped"]["duplicate"].as_u64().unwrap() > 0,
        "re-sent feedback deduplicated: {s}"
    );
    assert_eq!(s["dropped"]["enterprise_disabled"], 1, "{s}");
    assert_eq!(s["offloaded"], 1, "{s}");
    let routed = &s["routed"];
    assert!(routed["trace"].as_u64().unwrap() > 0 && routed["metric_log"].as_u64().unwrap() > 0);
    let exported = &s["exported"];
    assert_eq!(exported["spans"], routed["trace"], "{s}");
    // One log record per delivered metric/log event plus one companion record per span.
    assert_eq!(
        exported["log_records"].as_u64().unwrap() + s["companion_logs_dropped"].as_u64().unwrap(),
        exported["spans"].as_u64().unwrap()
            + s["delivered_by_signal"]["metric_log"].as_u64().unwrap(),
        "{s}"
    );
    assert_eq!(s["companion_logs_dropped"], 0, "{s}");
    assert!(exported["metric_points"].as_u64().unwrap() > 0);
}

#[test]
fn the_quickstart_summary_adds_up_on_embedded_defaults() {
    let s = run(&[]);
    check_ledger(&s);
    assert_eq!(s["output"], "telemetry-gateway-output.jsonl");
}

#[test]
fn the_quickstart_exports_to_a_collector_set_by_environment() {
    let rx = OtlpReceiver::start();
    let s = run(&[("TELEMETRY_GATEWAY__OTLP__ENDPOINT", rx.endpoint())]);
    check_ledger(&s);
    let (r, ok) = rx.wait_for(Duration::from_secs(5), |r| {
        r.spans.len() as u64 == s["exported"]["spans"].as_u64().unwrap()
    });
    assert!(
        ok,
        "spans at the collector: {} vs summary {}",
        r.spans.len(),
        s["exported"]["spans"]
    );
    assert_eq!(
        r.logs.len() as u64,
        s["exported"]["log_records"].as_u64().unwrap()
    );
}

#[test]
fn the_quickstart_exports_to_a_collector_set_in_a_config_file() {
    let rx = OtlpReceiver::start_http();
    let toml = format!(
        "[otlp]\nendpoint = \"{}\"\nprotocol = \"http/protobuf\"\n",
        rx.endpoint()
    );
    let s = run_with(&[], Some(&toml));
    check_ledger(&s);
    let (r, ok) = rx.wait_for(Duration::from_secs(5), |r| {
        r.spans.len() as u64 == s["exported"]["spans"].as_u64().unwrap()
    });
    assert!(ok, "spans at the collector: {}", r.spans.len());
}

#[test]
fn the_quickstart_serves_diagnostics_until_interrupted() {
    use std::io::{BufRead, BufReader, Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(quickstart_bin())
        .args(["--json", "--serve"])
        .env("TELEMETRY_GATEWAY__DIAGNOSTICS__LISTEN", "127.0.0.1:0")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut addr = None;
    let mut explain_path = None;
    for _ in 0..200 {
        let mut l = String::new();
        if out.read_line(&mut l).unwrap() == 0 {
            break;
        }
        if let Some(rest) = l.trim().strip_prefix("serving diagnostics on http://") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(p) = l.trim().split_once("/debug/events/") {
            explain_path = Some(format!("/debug/events/{}", p.1.trim()));
            lines.push(l);
            break;
        }
        lines.push(l);
    }
    let addr = addr.unwrap_or_else(|| panic!("no serving line in {lines:?}"));
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).unwrap();
        raw
    };
    assert!(get("/metrics").contains("telemetry_gateway_events_emitted_total 529"));
    assert!(get(&explain_path.unwrap()).contains("enterprise_disabled"));
    // Ctrl-C: the run shuts down and prints its summary.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let summary: serde_json::Value = serde_json::from_str(rest.lines().last().unwrap()).unwrap();
    check_ledger(&summary);
    assert_eq!(summary["explained"]["reason"], "enterprise_disabled");
}
