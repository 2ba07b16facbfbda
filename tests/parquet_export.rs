//! `telemetry-gateway export-parquet`: one compressed Parquet file per table, each with the
//! table's row count, readable back with values and NULLs intact.

mod support;

use std::path::Path;
use std::process::Command;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::RowAccessor;
use rusqlite::params;
use telemetry_gateway::export::parquet_export::ROW_GROUP_ROWS;
use telemetry_gateway::export::sqlite::{open_for_writing, TABLES};

fn export(db: &Path, out: &Path) -> (i32, serde_json::Value, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_telemetry-gateway"))
        .args(["export-parquet", "--db"])
        .arg(db)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        serde_json::from_slice(&o.stdout).unwrap_or_default(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn table_rows(db: &Path, table: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

#[test]
fn each_table_becomes_a_compressed_parquet_file_with_its_row_count() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    // More spans than one row group, with NULLs, written straight through the sink's schema.
    let (mut conn, _) = open_for_writing(&db).unwrap();
    let n = ROW_GROUP_ROWS + 1_000;
    let tx = conn.transaction().unwrap();
    {
        let mut ins = tx
            .prepare(
                "INSERT INTO spans (time_unix_nano, end_unix_nano, duration_ms, name, case_name, \
                 trace_id, span_id, parent_span_id, status, attributes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, 't', 's', ?6, 'ok', '{}')",
            )
            .unwrap();
        for i in 0..n as i64 {
            let parent = (i % 2 == 0).then(|| format!("p{i}"));
            ins.execute(params![
                i,
                i + 1_000_000,
                1.0,
                format!("span-{i}"),
                "workflow_run",
                parent
            ])
            .unwrap();
        }
        tx.execute(
            "INSERT INTO log_events (time_unix_nano, event_name, severity, body, attributes) \
             VALUES (1, 'app.feedback_created', 'INFO', 'feedback_created recorded', '{}')",
            [],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    drop(conn);

    let out = dir.path().join("parquet");
    let (code, summary, err) = export(&db, &out);
    assert_eq!(code, 0, "{err}");
    for t in TABLES {
        let path = out.join(format!("{t}.parquet"));
        let reader = SerializedFileReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let meta = reader.metadata();
        assert_eq!(
            meta.file_metadata().num_rows(),
            table_rows(&db, t),
            "{t}: row count"
        );
        for rg in meta.row_groups() {
            for c in rg.columns() {
                assert_eq!(c.compression(), parquet::basic::Compression::SNAPPY, "{t}");
            }
        }
        let reported = summary["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["table"] == t)
            .unwrap()["rows"]
            .as_i64();
        assert_eq!(reported, Some(table_rows(&db, t)));
    }
    let reader =
        SerializedFileReader::new(std::fs::File::open(out.join("spans.parquet")).unwrap()).unwrap();
    assert!(
        reader.metadata().num_row_groups() >= 2,
        "row groups of {ROW_GROUP_ROWS}"
    );
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let name_col = schema
        .columns()
        .iter()
        .position(|c| c.name() == "name")
        .unwrap();
    let parent_col = schema
        .columns()
        .iter()
        .position(|c| c.name() == "parent_span_id")
        .unwrap();
    let rows: Vec<_> = reader.get_row_iter(None).unwrap().take(2).collect();
    let first = rows[0].as_ref().unwrap();
    let second = rows[1].as_ref().unwrap();
    assert_eq!(first.get_string(name_col).unwrap(), "span-0");
    assert_eq!(first.get_string(parent_col).unwrap(), "p0");
    assert!(second.get_string(parent_col).is_err(), "a NULL stays NULL");
}

#[test]
fn a_gateway_written_file_exports_and_bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let (mut c, _d) = support::config();
    c.export.local_output = telemetry_gateway::config::LocalOutput::Discard;
    c.sinks.sqlite = Some(telemetry_gateway::config::SqliteSection::at(&db));
    let gw = telemetry_gateway::start(c).unwrap();
    for i in 0..20 {
        gw.emit(
            telemetry_gateway::TelemetryEnvelope::new(
                telemetry_gateway::TelemetryCase::WorkflowRun,
                telemetry_gateway::TelemetryContext::tenant("acme"),
            )
            .with_run_id(format!("run-{i}"))
            .with_payload(serde_json::json!({"status": "succeeded", "duration_ms": 5})),
        )
        .unwrap();
    }
    gw.shutdown_blocking(support::DEADLINE);
    let out = dir.path().join("out");
    let (code, summary, err) = export(&db, &out);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<i64> = summary["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["rows"].as_i64().unwrap())
        .collect();
    assert_eq!(rows[0], 20, "spans");
    assert_eq!(rows[1], 20, "their companion log events");
    assert!(rows[2] > 0, "metric points");

    let (code, _, err) = export(&dir.path().join("missing.db"), &out);
    assert_eq!(code, 2);
    assert!(err.contains("missing.db"), "{err}");
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let (code, _, err) = export(&db, &blocker);
    assert_eq!(code, 2, "an output path that is a file: {err}");
}
