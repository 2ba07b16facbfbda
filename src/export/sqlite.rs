//! The SQLite sink (`[sinks.sqlite]`): what the enterprise exporter exported — spans, log
//! events and metric points — also stored in a local SQLite file, for hosts without a telemetry
//! backend (batch jobs, CLIs, small deployments, CI) and for `telemetry-gateway slo` and
//! `export-parquet`.
//!
//! **Off the request path, in batches, never in the exporters' way.** The exporters hand rows
//! to a bounded queue (`sinks.sqlite.queue_batches`) without waiting; one writer thread owns the
//! connection and writes everything that is waiting — up to `sinks.sqlite.batch_size` rows, or
//! what arrived within `sinks.sqlite.flush_interval_ms` — in **one transaction**. A full queue
//! drops that copy, counted (exporter `sqlite`, outcome `queue_full`). (A first version made the
//! exporter wait for the commit; the load generator showed it slowed the enterprise trace sink
//! until the trace path itself dropped events.) Shutdown waits for the queue to be committed.
//!
//! **Crash safety.** WAL journal, `synchronous = NORMAL`: a process killed mid-write loses at
//! most what was not yet committed (the transaction in hand and the rows still queued), and the
//! file is never corrupted (`tests/sqlite_sink.rs` kills a writer with SIGKILL and runs
//! `PRAGMA integrity_check`).
//!
//! **Schema** (docs/local-analytics.md): versioned with `PRAGMA user_version` and migrated on
//! open, in one transaction per step; a file written by a newer version is refused, naming it.
//! Retention (`retention_max_age_secs`, `retention_max_rows`) is applied by the writer after
//! each commit (indexed deletes: cheap).
//!
//! What is stored is what the enterprise exporter **exported**: a batch that failed is stored
//! when its retry succeeds, once. Tenant sinks' copies are not stored.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value as Json;

use crate::config::SqliteSection;
use crate::diagnostics::exporters::ExporterStats;
use crate::diagnostics::Counters;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Migrations, in order: step `i` takes a file from version `i` to `i + 1`.
const MIGRATIONS: [&str; 1] = [r#"
CREATE TABLE spans (
    id              INTEGER PRIMARY KEY,
    time_unix_nano  INTEGER NOT NULL,
    end_unix_nano   INTEGER NOT NULL,
    duration_ms     REAL    NOT NULL,
    name            TEXT    NOT NULL,
    case_name       TEXT,
    tenant_id       TEXT,
    app_id          TEXT,
    event_id        TEXT,
    run_id          TEXT,
    correlation_id  TEXT,
    trace_id        TEXT    NOT NULL,
    span_id         TEXT    NOT NULL,
    parent_span_id  TEXT,
    status          TEXT    NOT NULL,
    status_message  TEXT,
    attributes      TEXT    NOT NULL
);
CREATE INDEX spans_by_case_time ON spans (case_name, time_unix_nano);
CREATE INDEX spans_by_time ON spans (time_unix_nano);
CREATE TABLE log_events (
    id              INTEGER PRIMARY KEY,
    time_unix_nano  INTEGER NOT NULL,
    event_name      TEXT,
    severity        TEXT    NOT NULL,
    body            TEXT,
    case_name       TEXT,
    tenant_id       TEXT,
    app_id          TEXT,
    event_id        TEXT,
    correlation_id  TEXT,
    trace_id        TEXT,
    span_id         TEXT,
    attributes      TEXT    NOT NULL
);
CREATE INDEX log_events_by_case_time ON log_events (case_name, time_unix_nano);
CREATE INDEX log_events_by_time ON log_events (time_unix_nano);
CREATE TABLE metric_points (
    id              INTEGER PRIMARY KEY,
    time_unix_nano  INTEGER NOT NULL,
    name            TEXT    NOT NULL,
    unit            TEXT,
    kind            TEXT    NOT NULL,
    value           REAL,
    count           INTEGER,
    sum             REAL,
    attributes      TEXT    NOT NULL
);
CREATE INDEX metric_points_by_name_time ON metric_points (name, time_unix_nano);
CREATE INDEX metric_points_by_time ON metric_points (time_unix_nano);
"#];

/// The tables, for retention, export and docs.
pub const TABLES: [&str; 3] = ["spans", "log_events", "metric_points"];

/// Why the SQLite file could not be used. Names the file.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// SQLite refused an operation.
    #[error("{path}: {error}")]
    Sqlite {
        /// The file.
        path: String,
        /// SQLite's error.
        error: String,
    },
    /// The file was written by a newer version of the gateway.
    #[error("{path}: schema version {found} is newer than this build's {supported}")]
    NewerSchema {
        /// The file.
        path: String,
        /// Its version.
        found: i64,
        /// This build's.
        supported: i64,
    },
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> SqliteError + '_ {
    move |e| SqliteError::Sqlite {
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

/// Opens `path` for writing: creates it (and its directory) if missing, sets WAL, and migrates
/// the schema to [`SCHEMA_VERSION`]. Returns the connection and the version it found.
pub fn open_for_writing(path: &Path) -> Result<(Connection, i64), SqliteError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| SqliteError::Sqlite {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
    }
    let mut conn = Connection::open(path).map_err(sql_err(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(sql_err(path))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql_err(path))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(sql_err(path))?;
    let found = migrate(&mut conn, path)?;
    Ok((conn, found))
}

/// Opens `path` read-only (the `slo` and `export-parquet` commands), checking its version.
pub fn open_for_reading(path: &Path) -> Result<Connection, SqliteError> {
    if !path.is_file() {
        return Err(SqliteError::Sqlite {
            path: path.display().to_string(),
            error: "no such file".into(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql_err(path))?;
    let v: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql_err(path))?;
    if v > SCHEMA_VERSION {
        return Err(SqliteError::NewerSchema {
            path: path.display().to_string(),
            found: v,
            supported: SCHEMA_VERSION,
        });
    }
    if v < SCHEMA_VERSION {
        return Err(SqliteError::Sqlite {
            path: path.display().to_string(),
            error: format!(
                "schema version {v}: not a telemetry-gateway database (or an old one: open it \
                 with a gateway to migrate it)"
            ),
        });
    }
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step.
fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, SqliteError> {
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql_err(path))?;
    if found > SCHEMA_VERSION {
        return Err(SqliteError::NewerSchema {
            path: path.display().to_string(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (step, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction().map_err(sql_err(path))?;
        tx.execute_batch(sql).map_err(sql_err(path))?;
        tx.pragma_update(None, "user_version", step as i64 + 1)
            .map_err(sql_err(path))?;
        tx.commit().map_err(sql_err(path))?;
    }
    Ok(found)
}

/// Which table rows go to (an index into the store's counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Spans = 0,
    Logs = 1,
    Metrics = 2,
}

/// Rows as the exporters hand them over, one variant per table: converted to JSON by the
/// writer thread, so the exporters (on the export runtime) only pay for a clone.
pub(crate) enum Raw {
    Spans(Vec<opentelemetry_sdk::trace::SpanData>),
    Logs(Vec<opentelemetry_sdk::logs::SdkLogRecord>),
    /// Metric points, already JSON (`metric_rows`).
    Metrics(Vec<Json>),
}

impl Raw {
    fn table(&self) -> Table {
        match self {
            Raw::Spans(_) => Table::Spans,
            Raw::Logs(_) => Table::Logs,
            Raw::Metrics(_) => Table::Metrics,
        }
    }

    fn len(&self) -> usize {
        match self {
            Raw::Spans(v) => v.len(),
            Raw::Logs(v) => v.len(),
            Raw::Metrics(v) => v.len(),
        }
    }

    fn into_json(self) -> Vec<Json> {
        match self {
            Raw::Spans(v) => v.iter().map(super::jsonl::span_to_json).collect(),
            Raw::Logs(v) => v.iter().map(super::jsonl::log_to_json).collect(),
            Raw::Metrics(v) => v,
        }
    }
}

/// What the writer is sent.
enum Msg {
    Rows(Raw),
    /// Commit everything received before this, then answer.
    Flush(SyncSender<()>),
}

/// The writer's handle (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct SqliteStore {
    tx: SyncSender<Msg>,
    stats: Arc<[Arc<ExporterStats>; 3]>,
    log: Arc<crate::logging::LogScope>,
}

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Raw")
            .field("table", &self.table())
            .field("rows", &self.len())
            .finish()
    }
}

impl SqliteStore {
    /// Opens (and migrates) the file and starts the writer thread.
    pub(crate) fn start(cfg: &SqliteSection, counters: &Counters) -> Result<Self, SqliteError> {
        let (conn, _found) = open_for_writing(&cfg.path)?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(cfg.queue_batches.max(1));
        let stats = Arc::new([
            counters.exporters.register("sqlite", "traces"),
            counters.exporters.register("sqlite", "logs"),
            counters.exporters.register("sqlite", "metrics"),
        ]);
        let writer = Writer {
            conn,
            path: cfg.path.clone(),
            batch_size: cfg.batch_size.max(1),
            interval: Duration::from_millis(cfg.flush_interval_ms),
            max_age: cfg.retention_max_age_secs.map(Duration::from_secs),
            max_rows: cfg.retention_max_rows,
            stats: stats.clone(),
            log: counters.log.clone(),
        };
        std::thread::Builder::new()
            .name("telemetry-gateway-sqlite".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| SqliteError::Sqlite {
                path: cfg.path.display().to_string(),
                error: e.to_string(),
            })?;
        Ok(SqliteStore {
            tx,
            stats,
            log: counters.log.clone(),
        })
    }

    /// Queues `rows` for the writer without waiting: the exporter that exported them never
    /// waits for SQLite. A full queue drops this copy, counted (exporter `sqlite`,
    /// `queue_full`).
    pub(crate) fn enqueue(&self, rows: Raw) {
        let n = rows.len() as u64;
        if n == 0 {
            return;
        }
        let table = rows.table();
        if self.tx.try_send(Msg::Rows(rows)).is_err() {
            self.stats[table as usize].record_queue_full(n);
            self.log
                .warn_limited("sqlite queue full; rows not stored", || {
                    tracing::warn!(rows = n, "sqlite queue full; rows not stored (counted)")
                });
        }
    }

    /// Waits (blocking, at most `within`) until everything queued so far is committed. For
    /// shutdown, on a thread that may block. `false` when the deadline passed first.
    pub(crate) fn flush(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        let (ack, done) = std::sync::mpsc::sync_channel(1);
        let mut msg = Msg::Flush(ack);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < end => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => return false,
            }
        }
        done.recv_timeout(end.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

struct Writer {
    conn: Connection,
    /// The gateway's log hygiene (its redactor and warning limiter).
    log: Arc<crate::logging::LogScope>,
    path: PathBuf,
    batch_size: usize,
    interval: Duration,
    max_age: Option<Duration>,
    max_rows: Option<u64>,
    stats: Arc<[Arc<ExporterStats>; 3]>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Msg>) {
        loop {
            // Wait for the first message, then gather what arrives within the interval or until
            // the batch is full (or a flush is asked for): one transaction for all of it.
            let first = match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            };
            let deadline = Instant::now() + self.interval;
            let mut jobs: Vec<Raw> = Vec::new();
            let mut flushes: Vec<SyncSender<()>> = Vec::new();
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Rows(j) => jobs.push(j),
                    Msg::Flush(ack) => flushes.push(ack),
                }
                let rows: usize = jobs.iter().map(Raw::len).sum();

                if !flushes.is_empty() || rows >= self.batch_size {
                    break;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                next = rx.recv_timeout(left).ok();
            }
            if !jobs.is_empty() {
                self.commit(jobs);
            }
            for ack in flushes {
                let _ = ack.try_send(());
            }
        }
    }

    fn commit(&mut self, jobs: Vec<Raw>) {
        let started = Instant::now();
        let jobs: Vec<(Table, Vec<Json>)> = jobs
            .into_iter()
            .map(|j| (j.table(), j.into_json()))
            .collect();
        let result = self.write(&jobs).map_err(|e| {
            let msg = format!("{}: {e}", self.path.display());
            self.log.warn_limited(
                "sqlite write failed",
                || tracing::warn!(error = %self.log.sanitize(&msg), "sqlite write failed"),
            );
            msg
        });
        let elapsed = started.elapsed();
        for (table, rows) in &jobs {
            self.stats[*table as usize].record_call(rows.len() as u64, result.is_ok(), elapsed);
        }
        if result.is_ok() && (self.max_age.is_some() || self.max_rows.is_some()) {
            if let Err(e) = self.retain() {
                self.log.warn_limited(
                    "sqlite retention failed",
                    || tracing::warn!(error = %e, "sqlite retention failed"),
                );
            }
        }
    }

    fn write(&mut self, jobs: &[(Table, Vec<Json>)]) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut spans = tx.prepare_cached(
                "INSERT INTO spans (time_unix_nano, end_unix_nano, duration_ms, name, case_name, \
                 tenant_id, app_id, event_id, run_id, correlation_id, trace_id, span_id, \
                 parent_span_id, status, status_message, attributes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
            )?;
            let mut logs = tx.prepare_cached(
                "INSERT INTO log_events (time_unix_nano, event_name, severity, body, case_name, \
                 tenant_id, app_id, event_id, correlation_id, trace_id, span_id, attributes) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?;
            let mut metrics = tx.prepare_cached(
                "INSERT INTO metric_points (time_unix_nano, name, unit, kind, value, count, sum, \
                 attributes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let now = unix_nanos(SystemTime::now());
            for (table, rows) in jobs {
                for r in rows {
                    let attrs = &r["attributes"];
                    let a = |k: &str| attrs.get(k).and_then(Json::as_str);
                    match table {
                        Table::Spans => {
                            let start = r["start_time_unix_nano"].as_i64().unwrap_or(0);
                            let end = r["end_time_unix_nano"].as_i64().unwrap_or(start);
                            spans.execute(params![
                                start,
                                end,
                                (end - start).max(0) as f64 / 1e6,
                                r["name"].as_str().unwrap_or(""),
                                a("telemetry.case"),
                                a("tenant.id"),
                                a("app.id"),
                                a("event.id"),
                                a("run.id"),
                                a("correlation.id"),
                                r["trace_id"].as_str().unwrap_or(""),
                                r["span_id"].as_str().unwrap_or(""),
                                r["parent_span_id"].as_str(),
                                r["status"]["code"].as_str().unwrap_or("unset"),
                                r["status"]["message"].as_str(),
                                attrs.to_string(),
                            ])?;
                        }
                        Table::Logs => {
                            let body = match &r["body"] {
                                Json::String(s) => Some(s.clone()),
                                Json::Null => None,
                                other => Some(other.to_string()),
                            };
                            logs.execute(params![
                                r["time_unix_nano"].as_i64().unwrap_or(now),
                                r["event_name"].as_str(),
                                r["severity"].as_str().unwrap_or("INFO"),
                                body,
                                a("telemetry.case"),
                                a("tenant.id"),
                                a("app.id"),
                                a("event.id"),
                                a("correlation.id"),
                                r["trace_id"].as_str(),
                                r["span_id"].as_str(),
                                attrs.to_string(),
                            ])?;
                        }
                        Table::Metrics => {
                            metrics.execute(params![
                                r["time_unix_nano"].as_i64().unwrap_or(now),
                                r["name"].as_str().unwrap_or(""),
                                r["unit"].as_str(),
                                r["kind"].as_str().unwrap_or("sum"),
                                r["value"].as_f64(),
                                r["count"].as_i64(),
                                r["sum"].as_f64(),
                                attrs.to_string(),
                            ])?;
                        }
                    }
                }
            }
        }
        tx.commit()
    }

    /// Deletes rows older than `max_age`, then beyond `max_rows` per table (oldest first).
    fn retain(&mut self) -> rusqlite::Result<()> {
        if let Some(age) = self.max_age {
            let cutoff = unix_nanos(SystemTime::now()).saturating_sub(age.as_nanos() as i64);
            for t in TABLES {
                self.conn.execute(
                    &format!("DELETE FROM {t} WHERE time_unix_nano < ?1"),
                    params![cutoff],
                )?;
            }
        }
        if let Some(max) = self.max_rows {
            for t in TABLES {
                let top: Option<i64> = self
                    .conn
                    .query_row(&format!("SELECT max(id) FROM {t}"), [], |r| r.get(0))
                    .optional()?
                    .flatten();
                if let Some(top) = top {
                    self.conn.execute(
                        &format!("DELETE FROM {t} WHERE id <= ?1"),
                        params![top - max as i64],
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// `t` in Unix nanoseconds, as the tables store time.
pub(crate) fn unix_nanos(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The JSON lines of metric points, stamped with `now` (the export's time).
pub(crate) fn metric_rows(
    metrics: &opentelemetry_sdk::metrics::data::ResourceMetrics,
) -> Vec<Json> {
    let now = unix_nanos(SystemTime::now());
    let mut rows = super::jsonl::resource_metrics_to_json(metrics);
    for r in &mut rows {
        r["time_unix_nano"] = Json::from(now);
    }
    rows
}

/// The enterprise trace sink with its exported spans also stored in SQLite.
#[derive(Debug)]
pub(crate) struct TeeTraceSink {
    pub(crate) enterprise: Arc<dyn super::sink::TraceSink>,
    pub(crate) store: SqliteStore,
}

impl super::sink::TraceSink for TeeTraceSink {
    fn name(&self) -> &str {
        self.enterprise.name()
    }

    fn export<'a>(
        &'a self,
        batch: &'a [opentelemetry_sdk::trace::SpanData],
    ) -> futures::future::BoxFuture<'a, Result<(), super::sink::SinkError>> {
        Box::pin(async move {
            let result = self.enterprise.export(batch).await;
            // Stored once, when exported: a held batch's failed tries store nothing. A failed
            // store is counted (exporter `sqlite`) and does not change the enterprise's outcome.
            if result.is_ok() {
                self.store.enqueue(Raw::Spans(batch.to_vec()));
            }
            result
        })
    }

    fn shutdown(&self) -> Result<(), super::sink::SinkError> {
        self.enterprise.shutdown()
    }
}
