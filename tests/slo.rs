//! `telemetry-gateway slo`: indicators computed from data the SQLite sink stored, checked against
//! `[slo.<case>]` objectives built to pass and to fail each one; exit 0 / 1 / 2.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use telemetry_gateway::config::{CaseSection, LocalOutput, SqliteSection};
use telemetry_gateway::{TelemetryCase, TelemetryContext, TelemetryEnvelope};

/// Stores known data: 100 workflow runs of 10, 20 .. 1000 ms (5 failed), 50 feedbacks, and 10
/// app_created events the routing table drops (`enabled = false`).
fn stored(dir: &Path) -> PathBuf {
    let db = dir.join("slo.db");
    let (mut c, _d) = support::config();
    c.export.local_output = LocalOutput::Discard;
    let mut sq = SqliteSection::at(&db);
    sq.flush_interval_ms = 20;
    c.sinks.sqlite = Some(sq);
    c.cases.insert(
        "app_created".into(),
        CaseSection {
            enabled: Some(false),
            ..Default::default()
        },
    );
    let gw = telemetry_gateway::start(c).unwrap();
    let ctx = || TelemetryContext::tenant("acme").app("a");
    for i in 1..=100u64 {
        let mut p = json!({"status": "succeeded", "duration_ms": i * 10});
        if i % 20 == 0 {
            p = json!({"status": "failed", "error": "boom", "duration_ms": i * 10});
        }
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx())
                .with_run_id(format!("run-{i}"))
                .with_payload(p),
        )
        .unwrap();
    }
    for _ in 0..50 {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, ctx())
                .with_payload(json!({"rating": "like"})),
        )
        .unwrap();
    }
    for _ in 0..10 {
        gw.emit(TelemetryEnvelope::new(TelemetryCase::AppCreated, ctx()))
            .unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!((s.emitted, s.delivered), (160, 150), "{s:?}");
    db
}

fn slo(db: &Path, config: Option<&str>, extra: &[&str]) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_telemetry-gateway"));
    cmd.args(["slo", "--db"]).arg(db).arg("--json").args(extra);
    if let Some(body) = config {
        let p = dir.path().join("slo.toml");
        std::fs::write(&p, body).unwrap();
        cmd.arg("--config").arg(p);
    }
    let out = cmd.output().expect("the command runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let v = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const PASSING: &str = r#"
[slo.workflow_run]
p50_duration_ms = 500
p95_duration_ms = 950
p99_duration_ms = 990
error_rate = 0.05

[slo.feedback_created]
min_event_rate = 0.001

[slo.app_created]
drop_rate = 1.0
"#;

#[test]
fn objectives_built_to_pass_pass_and_each_built_to_fail_fails() {
    let dir = tempfile::tempdir().unwrap();
    let db = stored(dir.path());

    let (code, v, err) = slo(&db, Some(PASSING), &[]);
    assert_eq!(code, 0, "{v} {err}");
    let run = &v["report"]["cases"]["workflow_run"];
    assert_eq!(run["events"], 100);
    assert_eq!(run["p50_duration_ms"], 500.0);
    assert_eq!(run["p95_duration_ms"], 950.0);
    assert_eq!(run["p99_duration_ms"], 990.0);
    assert_eq!(run["error_rate"], 0.05);
    assert_eq!(v["report"]["cases"]["feedback_created"]["events"], 50);
    assert_eq!(v["report"]["cases"]["app_created"]["drop_rate"], 1.0);
    assert_eq!(v["report"]["drops_by_reason"]["filtered"], 10);
    assert_eq!(v["objectives"].as_array().map(Vec::len), Some(6));

    let failing = [
        (
            "[slo.workflow_run]\np50_duration_ms = 499\n",
            "p50_duration_ms",
        ),
        (
            "[slo.workflow_run]\np95_duration_ms = 949\n",
            "p95_duration_ms",
        ),
        (
            "[slo.workflow_run]\np99_duration_ms = 989\n",
            "p99_duration_ms",
        ),
        ("[slo.workflow_run]\nerror_rate = 0.04\n", "error_rate"),
        (
            "[slo.feedback_created]\nmin_event_rate = 1e9\n",
            "min_event_rate",
        ),
        ("[slo.app_created]\ndrop_rate = 0.5\n", "drop_rate"),
        // No data never passes.
        (
            "[slo.message_run]\np95_duration_ms = 1e9\n",
            "p95_duration_ms",
        ),
    ];
    for (config, indicator) in failing {
        let (code, v, err) = slo(&db, Some(config), &[]);
        assert_eq!(code, 1, "{config}: {v} {err}");
        let objectives = v["objectives"].as_array().cloned().unwrap_or_default();
        assert_eq!(objectives.len(), 1, "{v}");
        assert_eq!(objectives[0]["indicator"], indicator);
        assert_eq!(objectives[0]["ok"], false);
        assert_eq!(v["ok"], false);
    }

    // The window: everything is recent; after a pause, the last second holds nothing.
    let (code, _, _) = slo(&db, Some(PASSING), &["--since", "1h"]);
    assert_eq!(code, 0);
    std::thread::sleep(Duration::from_millis(1_500));
    let (code, v, _) = slo(&db, Some(PASSING), &["--since", "1s"]);
    assert_eq!(code, 1, "no data in the window fails: {v}");
}

#[test]
fn bad_input_exits_2_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let (code, _, err) = slo(&missing, None, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("missing.db"), "{err}");

    let not_ours = dir.path().join("other.db");
    rusqlite::Connection::open(&not_ours)
        .unwrap()
        .execute_batch("CREATE TABLE t (x INTEGER);")
        .unwrap();
    let (code, _, err) = slo(&not_ours, None, &[]);
    assert_eq!(code, 2);
    assert!(err.contains("schema version 0"), "{err}");

    let db = stored(dir.path());
    let (code, _, err) = slo(&db, None, &["--since", "soon"]);
    assert_eq!(code, 2);
    assert!(err.contains("soon"), "{err}");
    let (code, _, err) = slo(&db, Some("[slo.workflow_run]\np96_duration_ms = 1\n"), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("p96_duration_ms"), "{err}");
    let (code, _, err) = slo(&db, Some("[slo.workflow_run]\nerror_rate = 2.0\n"), &[]);
    assert_eq!(code, 2);
    assert!(err.contains("slo.workflow_run.error_rate"), "{err}");
}
