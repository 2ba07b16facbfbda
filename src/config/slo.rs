//! `[slo.<case>]`: service-level objectives `telemetry-gateway slo` checks against the SQLite
//! sink's data (docs/local-analytics.md).

use serde::{Deserialize, Serialize};

use super::error::ConfigError;

/// `[slo.<case>]`: objectives for one case. Every key is optional; a set key is checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SloSection {
    /// The median duration must not exceed this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_duration_ms: Option<f64>,
    /// The 95th percentile duration must not exceed this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95_duration_ms: Option<f64>,
    /// The 99th percentile duration must not exceed this (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_duration_ms: Option<f64>,
    /// The fraction of the case's events that failed must not exceed this (0.0 to 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<f64>,
    /// The fraction of the case's events the gateway dropped must not exceed this (0.0 to 1.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_rate: Option<f64>,
    /// At least this many of the case's events per second over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_event_rate: Option<f64>,
}

impl SloSection {
    /// The rules of one `[slo.<name>]` entry.
    pub(crate) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = format!("slo.{name}");
        for (k, v) in [
            ("p50_duration_ms", self.p50_duration_ms),
            ("p95_duration_ms", self.p95_duration_ms),
            ("p99_duration_ms", self.p99_duration_ms),
            ("min_event_rate", self.min_event_rate),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    return Err(ConfigError::invalid(
                        &format!("{key}.{k}"),
                        format!("{v} is not a number >= 0"),
                    ));
                }
            }
        }
        for (k, v) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) || v.is_nan() {
                    return Err(ConfigError::invalid(
                        &format!("{key}.{k}"),
                        format!("{v} is not between 0.0 and 1.0"),
                    ));
                }
            }
        }
        Ok(())
    }
}
