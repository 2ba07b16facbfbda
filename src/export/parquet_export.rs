//! `telemetry-gateway export-parquet`: one compressed Parquet file per table of the SQLite
//! sink's database, for analysis tools (DuckDB, pandas, Spark).
//!
//! Uses the `parquet` crate of the Apache Arrow Rust project (the reference implementation in
//! Rust, maintained with arrow-rs), without `arrow` itself: rows go from SQLite straight into
//! its column writers, which keeps the dependency small. Each table's columns come from its
//! schema (`PRAGMA table_info`): `INTEGER` becomes `INT64`, `REAL` `DOUBLE`, `TEXT` a UTF-8
//! `BYTE_ARRAY`, every column `OPTIONAL` (SQLite's NULLs survive). Rows are read in id order and
//! written in row groups of [`ROW_GROUP_ROWS`], snappy-compressed. The row count of each file
//! equals its table's (checked by `tests/parquet_export.rs`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

/// Rows per Parquet row group.
pub const ROW_GROUP_ROWS: usize = 65_536;

/// Why the export failed. Names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum ParquetExportError {
    /// The database could not be read.
    #[error(transparent)]
    Db(#[from] super::sqlite::SqliteError),
    /// Reading a table failed.
    #[error("reading {table}: {error}")]
    Read {
        /// The table.
        table: String,
        /// SQLite's error.
        error: String,
    },
    /// Writing a file failed.
    #[error("{path}: {error}")]
    Write {
        /// The file.
        path: String,
        /// The error.
        error: String,
    },
}

/// One exported file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ExportedTable {
    /// The table.
    pub table: String,
    /// The Parquet file.
    pub path: PathBuf,
    /// Rows written (the table's row count).
    pub rows: u64,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Real,
    Text,
}

/// A column's buffered values and definition levels (1 = present, 0 = NULL).
enum Buf {
    Int(Vec<i64>),
    Real(Vec<f64>),
    Text(Vec<ByteArray>),
}

/// Exports every table of the database at `db` into `out` (created when missing).
pub fn export(db: &Path, out: &Path) -> Result<Vec<ExportedTable>, ParquetExportError> {
    let conn = super::sqlite::open_for_reading(db)?;
    std::fs::create_dir_all(out).map_err(|e| ParquetExportError::Write {
        path: out.display().to_string(),
        error: e.to_string(),
    })?;
    super::sqlite::TABLES
        .iter()
        .map(|t| export_table(&conn, t, &out.join(format!("{t}.parquet"))))
        .collect()
}

fn columns(conn: &Connection, table: &str) -> Result<Vec<(String, Kind)>, ParquetExportError> {
    let read = |e: rusqlite::Error| ParquetExportError::Read {
        table: table.into(),
        error: e.to_string(),
    };
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({table})"))
        .map_err(read)?;
    let cols = stmt
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    Ok(cols
        .into_iter()
        .map(|(name, ty)| {
            let kind = match ty.to_ascii_uppercase().as_str() {
                "INTEGER" => Kind::Int,
                "REAL" => Kind::Real,
                _ => Kind::Text,
            };
            (name, kind)
        })
        .collect())
}

fn export_table(
    conn: &Connection,
    table: &str,
    path: &Path,
) -> Result<ExportedTable, ParquetExportError> {
    let cols = columns(conn, table)?;
    let write = |e: &dyn std::fmt::Display| ParquetExportError::Write {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    let read = |e: rusqlite::Error| ParquetExportError::Read {
        table: table.into(),
        error: e.to_string(),
    };
    let fields: Vec<String> = cols
        .iter()
        .map(|(name, kind)| match kind {
            Kind::Int => format!("OPTIONAL INT64 {name};"),
            Kind::Real => format!("OPTIONAL DOUBLE {name};"),
            Kind::Text => format!("OPTIONAL BYTE_ARRAY {name} (UTF8);"),
        })
        .collect();
    let schema = parse_message_type(&format!("message {table} {{ {} }}", fields.join(" ")))
        .map_err(|e| write(&e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let file = File::create(path).map_err(|e| write(&e))?;
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props))
        .map_err(|e| write(&e))?;
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {} FROM {table} ORDER BY id",
            names.join(", ")
        ))
        .map_err(read)?;
    let mut rows = stmt.query([]).map_err(read)?;
    let mut total = 0u64;
    loop {
        // One row group's worth of rows, column by column.
        let mut bufs: Vec<(Buf, Vec<i16>)> = cols
            .iter()
            .map(|(_, k)| {
                let b = match k {
                    Kind::Int => Buf::Int(Vec::new()),
                    Kind::Real => Buf::Real(Vec::new()),
                    Kind::Text => Buf::Text(Vec::new()),
                };
                (b, Vec::new())
            })
            .collect();
        let mut n = 0usize;
        while n < ROW_GROUP_ROWS {
            let Some(row) = rows.next().map_err(read)? else {
                break;
            };
            for (i, (buf, defs)) in bufs.iter_mut().enumerate() {
                let v = row.get_ref(i).map_err(read)?;
                let present = match (buf, v) {
                    (_, ValueRef::Null) => false,
                    (Buf::Int(b), ValueRef::Integer(x)) => {
                        b.push(x);
                        true
                    }
                    (Buf::Int(b), ValueRef::Real(x)) => {
                        b.push(x as i64);
                        true
                    }
                    (Buf::Real(b), ValueRef::Real(x)) => {
                        b.push(x);
                        true
                    }
                    (Buf::Real(b), ValueRef::Integer(x)) => {
                        b.push(x as f64);
                        true
                    }
                    (Buf::Text(b), ValueRef::Text(t) | ValueRef::Blob(t)) => {
                        b.push(ByteArray::from(t.to_vec()));
                        true
                    }
                    (Buf::Text(b), ValueRef::Integer(x)) => {
                        b.push(ByteArray::from(x.to_string().into_bytes()));
                        true
                    }
                    (Buf::Text(b), ValueRef::Real(x)) => {
                        b.push(ByteArray::from(x.to_string().into_bytes()));
                        true
                    }
                    // A value SQLite stored in a column of another affinity: kept as NULL
                    // rather than guessed.
                    _ => false,
                };
                defs.push(i16::from(present));
            }
            n += 1;
        }
        if n == 0 && total > 0 {
            break;
        }
        let mut rg = writer.next_row_group().map_err(|e| write(&e))?;
        for (buf, defs) in &bufs {
            let Some(mut col) = rg.next_column().map_err(|e| write(&e))? else {
                break;
            };
            let r = match buf {
                Buf::Int(v) => col.typed::<Int64Type>().write_batch(v, Some(defs), None),
                Buf::Real(v) => col.typed::<DoubleType>().write_batch(v, Some(defs), None),
                Buf::Text(v) => col
                    .typed::<ByteArrayType>()
                    .write_batch(v, Some(defs), None),
            };
            r.map_err(|e| write(&e))?;
            col.close().map_err(|e| write(&e))?;
        }
        rg.close().map_err(|e| write(&e))?;
        total += n as u64;
        if n < ROW_GROUP_ROWS {
            break;
        }
    }
    writer.close().map_err(|e| write(&e))?;
    Ok(ExportedTable {
        table: table.into(),
        path: path.to_path_buf(),
        rows: total,
    })
}
