//! The SQLite sink: every exported span, log event and metric point lands in the documented
//! tables, written in batches; the schema is versioned and migrated on open (a newer file is
//! refused, naming it); retention bounds the tables; and a writer killed with SIGKILL mid-write
//! leaves a file that passes `PRAGMA integrity_check` and can be written again.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use serde_json::json;
use telemetry_gateway::config::{LocalOutput, SqliteSection};
use telemetry_gateway::export::sqlite::{open_for_reading, SCHEMA_VERSION, TABLES};
use telemetry_gateway::{
    GatewayConfig, GatewayHandle, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

fn config(db: &Path) -> (GatewayConfig, tempfile::TempDir) {
    let (mut c, dir) = support::config();
    c.export.local_output = LocalOutput::Discard;
    let mut sq = SqliteSection::at(db);
    sq.flush_interval_ms = 20;
    c.sinks.sqlite = Some(sq);
    c.otlp.metric_interval_ms = 200;
    (c, dir)
}

/// One run: a workflow_run, three node executions, a feedback.
fn emit_runs(gw: &GatewayHandle, from: u64, n: u64) {
    for i in from..from + n {
        let run = format!("run-{i}");
        let ctx = || TelemetryContext::tenant("acme").app("job");
        for k in 0..3 {
            gw.emit(
                TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx())
                    .with_run_id(run.clone())
                    .with_payload(json!({"node_id": format!("n{k}"), "duration_ms": 10})),
            )
            .unwrap();
        }
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx())
                .with_run_id(run.clone())
                .with_payload(json!({"status": "succeeded", "duration_ms": 100})),
        )
        .unwrap();
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, ctx())
                .with_correlation_id(run)
                .with_payload(json!({"rating": "like"})),
        )
        .unwrap();
    }
}

fn count(c: &Connection, table: &str) -> i64 {
    c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn every_exported_signal_lands_in_the_documented_tables_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (c, _d) = config(&db);
    let gw = telemetry_gateway::start(c).unwrap();
    emit_runs(&gw, 0, 100);
    let report = gw.shutdown_blocking(support::DEADLINE);
    assert_eq!(report.stats.delivered, 500, "{:?}", report.stats);
    let d = gw.diagnostics();

    let c = open_for_reading(&db).unwrap();
    assert_eq!(count(&c, "spans"), 400, "one row per exported span");
    // 400 companion records of the spans, 100 feedback records.
    assert_eq!(count(&c, "log_events"), 500);
    let requests: i64 = c
        .query_row(
            "SELECT count(*) FROM metric_points WHERE name = 'app.requests.total'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(requests > 0, "metric points stored");
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let v: i64 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, SCHEMA_VERSION);
    // Columns carry the ids, so questions need no JSON parsing.
    let (case, tenant, run): (String, String, String) = c
        .query_row(
            "SELECT case_name, tenant_id, run_id FROM spans WHERE case_name = 'workflow_run' \
             LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((case.as_str(), tenant.as_str()), ("workflow_run", "acme"));
    assert!(run.starts_with("run-"));
    // Batched: many rows per write, never one transaction per event.
    let sqlite_traces = d
        .exporters
        .iter()
        .find(|e| e.name == "sqlite" && e.signal == "traces")
        .expect("the sqlite exporter's counters");
    assert_eq!(sqlite_traces.items_ok, 400);
    assert!(
        sqlite_traces.batches_ok * 10 <= sqlite_traces.items_ok,
        "at least 10 spans per write on average: {sqlite_traces:?}"
    );
}

#[test]
fn the_schema_is_versioned_migrated_on_open_and_a_newer_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // An empty file (version 0) is migrated.
    let old = dir.path().join("old.db");
    Connection::open(&old).unwrap();
    assert!(
        open_for_reading(&old).is_err(),
        "version 0 is not readable yet"
    );
    let (c, _d) = config(&old);
    let gw = telemetry_gateway::start(c).unwrap();
    emit_runs(&gw, 0, 1);
    gw.shutdown_blocking(support::DEADLINE);
    let c = open_for_reading(&old).expect("migrated");
    for t in TABLES {
        count(&c, t);
    }
    // A file from a newer version is refused at start, naming the key and the file.
    let newer = dir.path().join("newer.db");
    {
        let c = Connection::open(&newer).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
    }
    let (c, _d) = config(&newer);
    let err = telemetry_gateway::start(c).unwrap_err().to_string();
    assert!(
        err.contains("sinks.sqlite.path") && err.contains("newer") && err.contains("newer.db"),
        "{err}"
    );
    let err = open_for_reading(&newer).unwrap_err().to_string();
    assert!(err.contains("99"), "{err}");
}

#[test]
fn retention_keeps_the_newest_rows_within_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let (mut c, _d) = config(&db);
    if let Some(sq) = c.sinks.sqlite.as_mut() {
        sq.retention_max_rows = Some(50);
    }
    let gw = telemetry_gateway::start(c).unwrap();
    emit_runs(&gw, 0, 100);
    gw.shutdown_blocking(support::DEADLINE);
    let c = open_for_reading(&db).unwrap();
    assert!(count(&c, "spans") <= 50, "{}", count(&c, "spans"));
    let newest: i64 = c
        .query_row("SELECT max(id) FROM spans", [], |r| r.get(0))
        .unwrap();
    assert_eq!(newest, 400, "the newest rows are the ones kept");

    // By age: rows older than a second go.
    let db = dir.path().join("a.db");
    let (mut c, _d) = config(&db);
    if let Some(sq) = c.sinks.sqlite.as_mut() {
        sq.retention_max_age_secs = Some(1);
    }
    let gw = telemetry_gateway::start(c).unwrap();
    emit_runs(&gw, 0, 10);
    let end = Instant::now() + Duration::from_secs(10);
    while gw.stats().in_flight > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(1_500));
    emit_runs(&gw, 10, 10);
    gw.shutdown_blocking(support::DEADLINE);
    let c = open_for_reading(&db).unwrap();
    let runs: i64 = c
        .query_row(
            "SELECT count(*) FROM spans WHERE case_name = 'workflow_run'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(runs, 10, "only the second, recent half is kept");
}

#[test]
fn a_writer_killed_mid_write_leaves_an_intact_file_that_can_be_written_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    for round in 0..3 {
        let mut child = Command::new(support::example("local_analytics"))
            .args(["--forever", "--db"])
            .arg(&db)
            .env_remove("TELEMETRY_GATEWAY__OTLP__ENDPOINT")
            .stdout(Stdio::null())
            .spawn()
            .expect("the example runs");
        // Kill it while it writes: once rows are arriving, at a different point each round.
        let end = Instant::now() + Duration::from_secs(60);
        let before = rows(&db);
        while rows(&db) < before + 2_000 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(7 * round));
        assert!(Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
        let _ = child.wait();
        let c = Connection::open(&db).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "round {round}");
        assert!(
            count(&c, "spans") > before,
            "round {round}: rows were committed"
        );
    }
    // Still a good database for the gateway: opened, appended to.
    let n = rows(&db);
    let (c, _d) = config(&db);
    let gw = telemetry_gateway::start(c).unwrap();
    emit_runs(&gw, 0, 10);
    gw.shutdown_blocking(support::DEADLINE);
    assert_eq!(rows(&db), n + 40);
}

/// Spans committed so far (0 before the file exists).
fn rows(db: &Path) -> i64 {
    if !db.is_file() {
        return 0;
    }
    Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row("SELECT count(*) FROM spans", [], |r| r.get(0)))
        .unwrap_or(0)
}
