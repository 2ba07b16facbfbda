//! `[payloads]`: where large payloads wait while their reference travels, and the limits of
//! every write and read.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{at_least_one, greater_than_zero, ConfigError};
use super::urls::url_without_password;

/// Default of `payloads.store`.
pub const DEFAULT_PAYLOAD_STORE: PayloadStoreKind = PayloadStoreKind::Memory;

/// Default of `payloads.inline_threshold_bytes` (1 MiB of serialized JSON).
pub const DEFAULT_INLINE_THRESHOLD_BYTES: usize = 1024 * 1024;

/// Default of `payloads.write_timeout_ms`.
pub const DEFAULT_PAYLOAD_WRITE_TIMEOUT_MS: u64 = 2_000;

/// Default of `payloads.read_timeout_ms`.
pub const DEFAULT_PAYLOAD_READ_TIMEOUT_MS: u64 = 500;

/// Default of `payloads.max_read_bytes` (a stored blob larger than this is refused).
pub const DEFAULT_PAYLOAD_MAX_READ_BYTES: usize = 32 * 1024 * 1024;

/// Default of `payloads.memory_max_bytes`: what the in-memory payload store holds at most.
pub const DEFAULT_PAYLOAD_MEMORY_MAX_BYTES: usize = 256 * 1024 * 1024;

/// Default of `payloads.local_max_bytes`: what the local directory store keeps at most.
pub const DEFAULT_PAYLOAD_LOCAL_MAX_BYTES: usize = 1024 * 1024 * 1024;

/// Default of `payloads.local_max_age_secs`: how long the local directory store keeps a
/// payload (7 days: past any retry, redelivery or dedup window of the defaults).
pub const DEFAULT_PAYLOAD_LOCAL_MAX_AGE_SECS: u64 = 7 * 24 * 3_600;

/// Default of `payloads.local_path`.
pub const DEFAULT_PAYLOAD_LOCAL_PATH: &str = "telemetry-payloads";

/// Which payload store backs offloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadStoreKind {
    /// In process memory (lost at exit; for tests and single-process use).
    Memory,
    /// A local directory (`payloads.local_path`).
    Local,
    /// An object store URL (`payloads.url`, e.g. `s3://bucket/prefix`): needs the matching cargo
    /// feature (`aws`, `gcp`, `azure`).
    Url,
}

/// `[payloads]`
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PayloadsSection {
    /// Payloads above this size (serialized JSON) are written to the store and sent as a ref.
    pub inline_threshold_bytes: usize,
    /// `memory`, `local` or `url`.
    pub store: PayloadStoreKind,
    /// Directory for `store = "local"` (created when missing).
    pub local_path: PathBuf,
    /// Object store URL for `store = "url"`.
    pub url: Option<String>,
    /// The most one store write may take; past it the payload goes inline (counted).
    pub write_timeout_ms: u64,
    /// The most one store read may take; past it the fallback is used (counted).
    pub read_timeout_ms: u64,
    /// A stored blob larger than this is refused on read.
    pub max_read_bytes: usize,
    /// For `store = "memory"`: the most payload bytes held. Past it the oldest payloads are
    /// deleted (a later read of one uses its fallback, counted); a single payload larger than
    /// this stays inline (counted as `payload_offload_failed`).
    pub memory_max_bytes: usize,
    /// For `store = "local"`: the most payload bytes the directory keeps. Past it the oldest
    /// payloads are deleted (a later read of one uses its fallback, counted).
    pub local_max_bytes: usize,
    /// For `store = "local"`: payloads older than this are deleted (checked at each write and at
    /// start).
    pub local_max_age_secs: u64,
}

impl Default for PayloadsSection {
    fn default() -> Self {
        PayloadsSection {
            inline_threshold_bytes: DEFAULT_INLINE_THRESHOLD_BYTES,
            store: DEFAULT_PAYLOAD_STORE,
            local_path: PathBuf::from(DEFAULT_PAYLOAD_LOCAL_PATH),
            url: None,
            write_timeout_ms: DEFAULT_PAYLOAD_WRITE_TIMEOUT_MS,
            read_timeout_ms: DEFAULT_PAYLOAD_READ_TIMEOUT_MS,
            max_read_bytes: DEFAULT_PAYLOAD_MAX_READ_BYTES,
            memory_max_bytes: DEFAULT_PAYLOAD_MEMORY_MAX_BYTES,
            local_max_bytes: DEFAULT_PAYLOAD_LOCAL_MAX_BYTES,
            local_max_age_secs: DEFAULT_PAYLOAD_LOCAL_MAX_AGE_SECS,
        }
    }
}

impl std::fmt::Debug for PayloadsSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadsSection")
            .field("inline_threshold_bytes", &self.inline_threshold_bytes)
            .field("store", &self.store)
            .field("local_path", &self.local_path)
            .field("url", &self.url.as_deref().map(url_without_password))
            .field("write_timeout_ms", &self.write_timeout_ms)
            .field("read_timeout_ms", &self.read_timeout_ms)
            .field("max_read_bytes", &self.max_read_bytes)
            .field("memory_max_bytes", &self.memory_max_bytes)
            .field("local_max_bytes", &self.local_max_bytes)
            .field("local_max_age_secs", &self.local_max_age_secs)
            .finish()
    }
}

impl PayloadsSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            (
                "payloads.inline_threshold_bytes",
                self.inline_threshold_bytes as u64,
            ),
            ("payloads.max_read_bytes", self.max_read_bytes as u64),
            ("payloads.memory_max_bytes", self.memory_max_bytes as u64),
            ("payloads.local_max_bytes", self.local_max_bytes as u64),
        ])?;
        greater_than_zero(&[
            ("payloads.write_timeout_ms", self.write_timeout_ms),
            ("payloads.read_timeout_ms", self.read_timeout_ms),
        ])?;
        if self.store == PayloadStoreKind::Url && self.url.is_none() {
            return Err(ConfigError::invalid(
                "payloads.url",
                "required when payloads.store = \"url\"",
            ));
        }
        Ok(())
    }
}
