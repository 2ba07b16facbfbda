//! `[spool]`: where the enterprise destination's export requests wait while the backend is away.
//!
//! `memory` (the default) is the bounded queues with backpressure: an outage that fits in them
//! loses nothing, a longer one makes `emit()` refuse, and a crash loses what they hold. `disk`
//! puts a durable, bounded queue (ADR 0004) between the trace batcher and the OTLP exporter:
//! each export request is encoded once, appended, and sent from the disk in order, so an outage
//! as long as the budget allows and a host crash lose nothing that was synced.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{greater_than_zero, ConfigError};

/// Default of `spool.max_bytes`: 1 GiB on disk, files and metadata together.
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1 << 30;

/// Default of `spool.segment_bytes`: 16 MiB per segment file (space comes back a segment at a
/// time as the backlog drains).
pub const DEFAULT_SPOOL_SEGMENT_BYTES: u64 = 16 << 20;

/// Default of `spool.sync_interval_ms` (under `sync = "interval"`).
pub const DEFAULT_SPOOL_SYNC_INTERVAL_MS: u64 = 500;

/// The smallest `spool.segment_bytes`: one encoded batch must fit in a few segments.
pub const MIN_SPOOL_SEGMENT_BYTES: u64 = 64 << 10;

/// Default of `spool.tenant_share_percent`: the share of `spool.max_bytes` kept for the OTLP
/// tenant sinks' spools, split evenly over `trace_batcher.max_live_sinks`.
pub const DEFAULT_SPOOL_TENANT_SHARE_PERCENT: u8 = 20;

/// The largest `spool.tenant_share_percent` (the enterprise destination keeps the rest).
pub const MAX_SPOOL_TENANT_SHARE_PERCENT: u8 = 90;

/// The smallest budget of one spool: four segments of the smallest size (space comes back a
/// whole segment at a time).
pub const MIN_SPOOL_BUDGET_BYTES: u64 = 4 * MIN_SPOOL_SEGMENT_BYTES;

/// Where export requests wait (`spool.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolKind {
    /// In the bounded in-memory queues (backpressure); lost on a crash.
    #[default]
    Memory,
    /// In a bounded segment log under `spool.path`; survives restarts and crashes.
    Disk,
}

/// When appended requests reach stable storage (`spool.sync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolSync {
    /// After every append: a power loss loses nothing that was appended.
    Always,
    /// At most every `spool.sync_interval_ms`: a power loss loses at most that much.
    #[default]
    Interval,
    /// Left to the operating system: a process crash loses nothing, a power loss may lose
    /// whatever the kernel had not written back (typically up to 30 s on Linux).
    Never,
}

/// What an append does when the budget is full (`spool.when_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolWhenFull {
    /// The new request's events are dropped (`spool_full`); the backlog is kept.
    #[default]
    DropNewest,
    /// The oldest segments' events are dropped (`spool_full`) to make room.
    DropOldest,
}

/// `[spool]`: see the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolSection {
    /// `memory` or `disk`.
    pub kind: SpoolKind,
    /// The directory (`disk` only). The enterprise spans use `<path>/enterprise-traces`, its
    /// log records `<path>/enterprise-logs`; one process at a time may use it (a second is
    /// refused at start).
    pub path: Option<PathBuf>,
    /// Bytes on disk, segment files and metadata together (half for the spans' spool, half for
    /// the log records').
    pub max_bytes: u64,
    /// Bytes per segment file.
    pub segment_bytes: u64,
    /// `always`, `interval` or `never`.
    pub sync: SpoolSync,
    /// The interval under `sync = "interval"`.
    pub sync_interval_ms: u64,
    /// `drop_newest` or `drop_oldest`.
    pub when_full: SpoolWhenFull,
    /// The share of `max_bytes` (percent) for the OTLP tenant sinks (`[[sinks]]` with
    /// `kind = "otlp"`): each open one has its own spool of
    /// `max_bytes x tenant_share_percent / 100 / trace_batcher.max_live_sinks` bytes in
    /// `<path>/tenants/`. 0: tenant sinks are not spooled (memory mode).
    pub tenant_share_percent: u8,
}

impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection {
            kind: SpoolKind::Memory,
            path: None,
            max_bytes: DEFAULT_SPOOL_MAX_BYTES,
            segment_bytes: DEFAULT_SPOOL_SEGMENT_BYTES,
            sync: SpoolSync::Interval,
            sync_interval_ms: DEFAULT_SPOOL_SYNC_INTERVAL_MS,
            when_full: SpoolWhenFull::DropNewest,
            tenant_share_percent: DEFAULT_SPOOL_TENANT_SHARE_PERCENT,
        }
    }
}

impl SpoolSection {
    /// The section's own rules (the ones that join `[otlp]` are in `GatewayConfig`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        greater_than_zero(&[("spool.sync_interval_ms", self.sync_interval_ms)])?;
        if self.segment_bytes < MIN_SPOOL_SEGMENT_BYTES {
            return Err(ConfigError::invalid(
                "spool.segment_bytes",
                format!("must be at least {MIN_SPOOL_SEGMENT_BYTES} (64 KiB)"),
            ));
        }
        if self.max_bytes < 8 * self.segment_bytes {
            return Err(ConfigError::invalid(
                "spool.max_bytes",
                format!(
                    "must be at least 8 x spool.segment_bytes ({}): two spools (spans and log \
                     records) share it, and space comes back a whole segment at a time",
                    8 * self.segment_bytes
                ),
            ));
        }
        if self.tenant_share_percent > MAX_SPOOL_TENANT_SHARE_PERCENT {
            return Err(ConfigError::invalid(
                "spool.tenant_share_percent",
                format!(
                    "must be at most {MAX_SPOOL_TENANT_SHARE_PERCENT} (the enterprise \
                     destination keeps the rest of spool.max_bytes)"
                ),
            ));
        }
        if self.kind == SpoolKind::Disk {
            match &self.path {
                None => {
                    return Err(ConfigError::invalid(
                        "spool.path",
                        "must be set with spool.kind = \"disk\" (the spool's directory)",
                    ))
                }
                Some(p) if p.as_os_str().is_empty() => {
                    return Err(ConfigError::invalid("spool.path", "must not be empty"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The budget of each of `spools` spools that share what the tenant sinks' share leaves:
    /// the enterprise destination's spans and log records, and the Redis Streams producer's
    /// buffer when there is one (see `GatewayConfig::enterprise_spool_budget`).
    pub fn enterprise_budget(&self, spools: u64) -> u64 {
        percent_of(self.max_bytes, 100 - self.tenant_share_percent) / spools.max(1)
    }

    /// The budget of one tenant sink's spool with `max_live_sinks` open at most (0: tenant
    /// sinks are not spooled).
    pub fn tenant_budget(&self, max_live_sinks: usize) -> u64 {
        percent_of(self.max_bytes, self.tenant_share_percent) / max_live_sinks.max(1) as u64
    }

    /// The segment size of a spool with `budget` bytes: `segment_bytes`, smaller for a small
    /// budget (a spool holds at least four segments), never below the minimum.
    pub fn segment_for(&self, budget: u64) -> u64 {
        self.segment_bytes
            .min(budget / 4)
            .max(MIN_SPOOL_SEGMENT_BYTES)
    }

    /// The directory of one destination's spool, when the spool is on disk.
    pub fn dir_of(&self, destination: &str) -> Option<PathBuf> {
        match (self.kind, &self.path) {
            (SpoolKind::Disk, Some(p)) => Some(p.join(destination)),
            _ => None,
        }
    }
}

/// `percent`% of `bytes`, exact to the byte.
fn percent_of(bytes: u64, percent: u8) -> u64 {
    (u128::from(bytes) * u128::from(percent) / 100) as u64
}
