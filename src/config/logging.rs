//! `[logging]`: the gateway's own log lines.

use serde::{Deserialize, Serialize};

use super::error::{greater_than_zero, ConfigError};

/// Default of `logging.format`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;

/// Default of `logging.warn_summary_interval_secs`.
pub const DEFAULT_WARN_SUMMARY_INTERVAL_SECS: u64 = 60;

/// Format of the gateway's own log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[logging]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    /// `text` or `json` (used by `telemetry_gateway::logging::init`).
    pub format: LogFormat,
    /// A repeated warning is logged once, then counted, then summarised this often.
    pub warn_summary_interval_secs: u64,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection {
            format: DEFAULT_LOG_FORMAT,
            warn_summary_interval_secs: DEFAULT_WARN_SUMMARY_INTERVAL_SECS,
        }
    }
}

impl LoggingSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        greater_than_zero(&[(
            "logging.warn_summary_interval_secs",
            self.warn_summary_interval_secs,
        )])
    }
}
