//! The load generator at small N, in CI: its JSON has the documented shape and its accounting
//! adds up (`emitted == delivered + sum(dropped)`). Not a speed test: speed lives in
//! `cargo run --release --example loadgen` and `cargo bench` (docs/performance.md).
//!
//! Runs the `loadgen` example binary that `cargo test --all-targets` builds beside the tests
//! (built here with `cargo build --example loadgen` when it is missing, for example when this
//! file is run alone).

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn loadgen() -> PathBuf {
    support::example("loadgen")
}

/// Runs loadgen with `args` (plus `--json`) and returns the JSON object on its last line.
fn run(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("a temp dir");
    let out = Command::new(loadgen())
        .args(args)
        .arg("--json")
        .current_dir(dir.path())
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not a count: {v}"))
}

/// The documented shape, and exact accounting.
fn check(v: &Value, mode: &str, events: u64, baseline: Option<&str>) {
    assert_eq!(v["mode"], mode);
    assert_eq!(u(v, "events"), events);
    assert!(v["events_per_sec"].as_f64().is_some_and(|r| r > 0.0), "{v}");
    for q in ["p50", "p99", "p999"] {
        assert!(v["emit_ns"][q].as_u64().is_some(), "emit_ns.{q}: {v}");
    }
    for q in ["p50", "p99"] {
        assert!(v["e2e_ms"][q].as_f64().is_some(), "e2e_ms.{q}: {v}");
    }
    assert!(u(v, "peak_rss_bytes") > 0);
    let dropped: u64 = v["dropped"]
        .as_object()
        .expect("dropped is an object of reason -> count")
        .values()
        .map(|n| n.as_u64().expect("a count"))
        .sum();
    assert_eq!(u(v, "emitted"), events, "every event was emitted once");
    assert_eq!(
        u(v, "emitted"),
        u(v, "delivered") + dropped,
        "emitted == delivered + sum(dropped): {v}"
    );
    assert_eq!(v["accounted"], true);
    match baseline {
        Some(name) => {
            assert_eq!(v["baseline"]["name"], name);
            let b = v["baseline"]["events_per_sec"].as_f64().expect("a rate");
            assert!(b > 0.0, "{v}");
            let ratio = v["ratio"].as_f64().expect("a ratio");
            let expected = v["events_per_sec"].as_f64().unwrap_or(0.0) / b;
            assert!((ratio - expected).abs() <= 1e-9 * expected.max(1.0), "{v}");
        }
        None => {
            assert!(v["baseline"].is_null());
            assert!(v["ratio"].is_null());
        }
    }
}

#[test]
fn trace_against_otel_bsp() {
    let v = run(&[
        "--mode",
        "trace",
        "--events",
        "2200",
        "--baseline",
        "otel-bsp",
    ]);
    check(&v, "trace", 2200, Some("otel-bsp"));
    assert_eq!(v["exporter"], "noop");
    assert_eq!(
        u(&v["baseline"], "events"),
        2200,
        "the SDK exported every span"
    );
}

#[test]
fn metric_against_mpsc_closed_loop() {
    let v = run(&[
        "--mode",
        "metric",
        "--events",
        "3000",
        "--baseline",
        "mpsc",
        "--max-in-flight",
        "1000",
        "--producers",
        "2",
    ]);
    check(&v, "metric", 3000, Some("mpsc"));
    assert_eq!(
        u(&v, "delivered"),
        3000,
        "closed loop at a small N drops nothing"
    );
}

#[test]
fn mixed_over_otlp_to_a_local_receiver() {
    let v = run(&[
        "--mode",
        "mixed",
        "--events",
        "2000",
        "--exporter",
        "otlp",
        "--baseline",
        "none",
    ]);
    check(&v, "mixed", 2000, None);
    assert_eq!(v["exporter"], "otlp");
    assert!(u(&v["exported"], "spans") > 0);
}

#[test]
fn metric_with_redis_dedup_against_the_pipeline_baseline() {
    let v = run(&[
        "--mode",
        "metric",
        "--events",
        "2000",
        "--dedup",
        "redis",
        "--baseline",
        "redis-pipeline",
    ]);
    check(&v, "metric", 2000, Some("redis-pipeline"));
    assert_eq!(v["dedup"], "redis");
    assert_eq!(u(&v["baseline"], "events"), 2000, "every key was set");
}

#[test]
fn idle_and_queued_report_their_measures() {
    let idle = run(&["--mode", "idle", "--duration-secs", "1"]);
    assert_eq!(idle["mode"], "idle");
    assert!(idle["cpu_percent_of_one_core"].as_f64().is_some(), "{idle}");
    let queued = run(&["--mode", "queued", "--events", "2000"]);
    assert_eq!(queued["mode"], "queued");
    assert_eq!(u(&queued, "queued"), 2000);
    assert!(
        queued["bytes_per_queued_event"].as_f64().is_some(),
        "{queued}"
    );
    // Every queued event is delivered once the intake is released.
    assert_eq!(u(&queued, "delivered"), 2000, "{queued}");
}

#[test]
fn stream_mode_with_worker_processes_accounts_in_every_process() {
    let v = run(&["--mode", "stream", "--events", "2000", "--workers", "1,2"]);
    assert_eq!(v["mode"], "stream");
    assert_eq!(u(&v, "events"), 2000);
    assert_eq!(v["accounted"], true, "{v}");
    let runs = v["runs"].as_array().expect("one entry per worker count");
    assert_eq!(runs.len(), 2, "{v}");
    let in_process = v["baseline"]["in_process"]["events_per_sec"]
        .as_f64()
        .expect("the in-process baseline's rate");
    let bare = v["baseline"]["stream_bare"]["events_per_sec"]
        .as_f64()
        .expect("the bare stream's rate");
    assert!(in_process > 0.0 && bare > 0.0, "{v}");
    assert_eq!(u(&v["baseline"]["stream_bare"], "events"), 2000, "{v}");
    for (r, workers) in runs.iter().zip([1, 2]) {
        assert_eq!(u(r, "workers"), workers);
        let p = &r["producer"];
        assert_eq!(u(p, "emitted"), 2000, "{r}");
        assert_eq!(u(p, "appended"), 2000, "a large buffer drops nothing: {r}");
        assert_eq!(
            u(r, "workers_delivered"),
            2000,
            "the workers delivered each appended event once: {r}"
        );
        assert_eq!(u(r, "workers_read"), 2000, "{r}");
        let rate = r["events_per_sec"].as_f64().expect("a rate");
        let ratio = r["ratio_vs_in_process"].as_f64().expect("a ratio");
        assert!(
            (ratio - rate / in_process).abs() <= 1e-9 * ratio.max(1.0),
            "{r}"
        );
        let ratio = r["ratio_vs_stream_bare"].as_f64().expect("a ratio");
        assert!((ratio - rate / bare).abs() <= 1e-9 * ratio.max(1.0), "{r}");
    }
}
