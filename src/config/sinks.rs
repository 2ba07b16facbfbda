//! `[[sinks]]` (community trace sinks per tenant/app) and `[sinks.sqlite]` (the local analytics
//! store).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{at_least_one, ConfigError};
use super::otlp::{default_protocol, OtlpProtocol};
use super::urls::{endpoint_problem, hidden_headers, url_without_password};

/// Default of `sinks.sqlite.batch_size`: rows per transaction at most.
pub const DEFAULT_SQLITE_BATCH_SIZE: usize = 2_048;

/// Default of `sinks.sqlite.flush_interval_ms`: how long the writer gathers rows into one
/// transaction.
pub const DEFAULT_SQLITE_FLUSH_INTERVAL_MS: u64 = 200;

/// Default of `sinks.sqlite.queue_batches`: exports waiting for the writer.
pub const DEFAULT_SQLITE_QUEUE_BATCHES: usize = 64;

/// What a community sink is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    /// OTLP to `endpoint`.
    Otlp,
    /// JSON lines appended to `path`.
    Jsonl,
}

/// The `sinks` key. In TOML either the array of tenant sinks (`[[sinks]]`, as before) or a
/// table: `[[sinks.tenants]]` for tenant sinks and `[sinks.sqlite]` for the SQLite sink (TOML
/// cannot mix `[[sinks]]` with `[sinks.sqlite]` in one file).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct SinksConfig {
    /// Tenant trace sinks.
    pub tenants: Vec<SinkSection>,
    /// `[sinks.sqlite]`: spans, log events and metric points also stored in SQLite.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<SqliteSection>,
}

impl<'de> Deserialize<'de> for SinksConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            tenants: Vec<SinkSection>,
            #[serde(default)]
            sqlite: Option<SqliteSection>,
        }
        // Decided on the shape first, so that an error inside names the field (an untagged
        // enum would only say that nothing matched).
        let v = <figment::value::Value as Deserialize>::deserialize(d)?;
        let custom = |e: figment::Error| serde::de::Error::custom(e.to_string());
        match v {
            figment::value::Value::Array(..) => Ok(SinksConfig {
                tenants: v.deserialize().map_err(custom)?,
                sqlite: None,
            }),
            _ => {
                let t: Table = v.deserialize().map_err(custom)?;
                Ok(SinksConfig {
                    tenants: t.tenants,
                    sqlite: t.sqlite,
                })
            }
        }
    }
}

/// `[sinks.sqlite]`: see docs/local-analytics.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSection {
    /// The database file (created, with its directory, when missing).
    pub path: PathBuf,
    /// Rows written per transaction at most.
    #[serde(default = "default_sqlite_batch_size")]
    pub batch_size: usize,
    /// How long the writer gathers rows into one transaction.
    #[serde(default = "default_sqlite_flush_interval_ms")]
    pub flush_interval_ms: u64,
    /// Exports waiting for the writer; beyond it a copy is dropped and counted.
    #[serde(default = "default_sqlite_queue_batches")]
    pub queue_batches: usize,
    /// Rows older than this are deleted (unset: kept).
    #[serde(default)]
    pub retention_max_age_secs: Option<u64>,
    /// At most this many rows per table, the oldest deleted first (unset: no limit).
    #[serde(default)]
    pub retention_max_rows: Option<u64>,
}

impl SqliteSection {
    /// A section for `path` with the documented defaults.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        SqliteSection {
            path: path.into(),
            batch_size: DEFAULT_SQLITE_BATCH_SIZE,
            flush_interval_ms: DEFAULT_SQLITE_FLUSH_INTERVAL_MS,
            queue_batches: DEFAULT_SQLITE_QUEUE_BATCHES,
            retention_max_age_secs: None,
            retention_max_rows: None,
        }
    }
}

fn default_sqlite_batch_size() -> usize {
    DEFAULT_SQLITE_BATCH_SIZE
}

fn default_sqlite_flush_interval_ms() -> u64 {
    DEFAULT_SQLITE_FLUSH_INTERVAL_MS
}

fn default_sqlite_queue_batches() -> usize {
    DEFAULT_SQLITE_QUEUE_BATCHES
}

/// `[[sinks]]`: a community trace sink for one tenant (and optionally one app). Also what
/// `GatewayHandle::register_sink` takes at runtime. `Debug` shows header names and never their
/// values, nor the password of an endpoint URL.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSection {
    /// A name for counters and logs (unique).
    pub name: String,
    /// The tenant whose traces go here.
    pub tenant_id: String,
    /// Only this app's traces; all the tenant's apps when unset.
    #[serde(default)]
    pub app_id: Option<String>,
    /// `otlp` or `jsonl`.
    pub kind: SinkKind,
    /// For `otlp`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// For `otlp`.
    #[serde(default = "default_protocol")]
    pub protocol: OtlpProtocol,
    /// For `otlp`: headers such as a provider's API key. Never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// For `jsonl`.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl SinkSection {
    /// Checks one entry (`[[sinks]]`, or a registration at runtime): `Err((field, problem))`
    /// names the field at fault and never quotes a credential.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.tenant_id.is_empty() {
            return Err(("tenant_id", "must not be empty".into()));
        }
        match self.kind {
            SinkKind::Otlp => match &self.endpoint {
                Some(ep) => endpoint_problem(ep).map_or(Ok(()), |p| Err(("endpoint", p))),
                None => Err(("endpoint", "required for kind = \"otlp\"".into())),
            },
            SinkKind::Jsonl if self.path.is_none() => {
                Err(("path", "required for kind = \"jsonl\"".into()))
            }
            SinkKind::Jsonl => Ok(()),
        }
    }
}

impl std::fmt::Debug for SinkSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSection")
            .field("name", &self.name)
            .field("tenant_id", &self.tenant_id)
            .field("app_id", &self.app_id)
            .field("kind", &self.kind)
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(url_without_password),
            )
            .field("protocol", &self.protocol)
            .field("headers", &hidden_headers(&self.headers))
            .field("path", &self.path)
            .finish()
    }
}

impl SinksConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(sq) = &self.sqlite {
            if sq.path.as_os_str().is_empty() {
                return Err(ConfigError::invalid(
                    "sinks.sqlite.path",
                    "must not be empty",
                ));
            }
            at_least_one(&[
                ("sinks.sqlite.batch_size", sq.batch_size as u64),
                ("sinks.sqlite.flush_interval_ms", sq.flush_interval_ms),
                ("sinks.sqlite.queue_batches", sq.queue_batches as u64),
            ])?;
            for (key, v) in [
                (
                    "sinks.sqlite.retention_max_age_secs",
                    sq.retention_max_age_secs,
                ),
                ("sinks.sqlite.retention_max_rows", sq.retention_max_rows),
            ] {
                if v == Some(0) {
                    return Err(ConfigError::invalid(
                        key,
                        "must be at least 1 (leave it unset to keep everything)",
                    ));
                }
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, s) in self.tenants.iter().enumerate() {
            let key = format!("sinks[{i}]");
            if !names.insert(s.name.clone()) {
                return Err(ConfigError::invalid(
                    &format!("{key}.name"),
                    format!("{:?} is used twice", s.name),
                ));
            }
            s.check().map_err(|(field, problem)| {
                ConfigError::invalid(&format!("{key}.{field}"), problem)
            })?;
        }
        Ok(())
    }
}
