//! `[cases.<name>]`: overrides of the built-in routing table, and host-declared cases.

use serde::{Deserialize, Serialize};

use super::error::ConfigError;
use crate::contracts::SignalType;

/// `[cases.<name>]`: one routing table entry. For a built-in case every key is optional and
/// overrides the built-in value; a new case must give `signal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CaseSection {
    /// `"trace"` or `"metric_log"`.
    pub signal: Option<SignalType>,
    /// Dropped (`enterprise_disabled`) while the enterprise exporter is off.
    pub enterprise_only: Option<bool>,
    /// A root span of its run: its span id is derived from the run id so other cases of the
    /// run become its children.
    pub root_span: Option<bool>,
    /// `false` drops every event of the case at the gateway, counted as `filtered`. Default
    /// `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Fraction of the case's events kept (0.0 to 1.0; default 1.0); the others are dropped as
    /// `sampled_out`. Deterministic: decided on the trace id for a trace case (so a run's
    /// events are kept or dropped together) and on the event id for a metric/log case (so a
    /// re-sent event gets the same answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_ratio: Option<f64>,
    /// A trace case's event whose payload duration exceeds this also produces a
    /// `{namespace}.slow_operation` log event and counts in `{namespace}.slow_operations.total`.
    /// Unset: no slow-operation events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_threshold_ms: Option<u64>,
}

impl CaseSection {
    /// The rules of one `[cases.<name>]` entry.
    pub(crate) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = format!("cases.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(ConfigError::invalid(
                &key,
                "case names are lowercase letters, digits and '_'",
            ));
        }
        let built_in = crate::contracts::TelemetryCase::from_name(name)
            .facts()
            .is_some();
        if !built_in && self.signal.is_none() {
            return Err(ConfigError::invalid(
                &format!("{key}.signal"),
                "a new case must say its signal: \"trace\" or \"metric_log\"",
            ));
        }
        if let Some(r) = self.sample_ratio {
            if !(0.0..=1.0).contains(&r) || r.is_nan() {
                return Err(ConfigError::invalid(
                    &format!("{key}.sample_ratio"),
                    format!("{r} is not between 0.0 and 1.0"),
                ));
            }
        }
        if self.slow_threshold_ms == Some(0) {
            return Err(ConfigError::invalid(
                &format!("{key}.slow_threshold_ms"),
                "must be greater than 0 (leave it unset for no slow-operation events)",
            ));
        }
        Ok(())
    }
}
