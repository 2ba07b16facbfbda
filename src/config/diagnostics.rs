//! `[diagnostics]`: the flight recorder, the HTTP endpoint, readiness and the self-metrics.

use serde::{Deserialize, Serialize};

use super::error::{at_least_one, greater_than_zero, ConfigError};

/// Default of `diagnostics.recorder_events`: journeys the flight recorder keeps.
pub const DEFAULT_RECORDER_EVENTS: usize = 10_000;

/// Default of `diagnostics.recorder_steps_per_event`.
pub const DEFAULT_RECORDER_STEPS_PER_EVENT: usize = 16;

/// Default of `diagnostics.unready_after_failing_secs`: export failing this long makes
/// `/readyz` answer 503.
pub const DEFAULT_UNREADY_AFTER_FAILING_SECS: u64 = 30;

/// Default of `diagnostics.metric_cardinality_limit`: distinct attribute sets per metric.
pub const DEFAULT_METRIC_CARDINALITY_LIMIT: usize = 2_000;

/// Default of `diagnostics.export_self_metrics`: on, because the ledger (emitted, delivered,
/// dropped by reason) is what proves in the backend that nothing was lost silently. They come
/// under their own instrumentation scope, `telemetry-gateway.self`, so a collector can route or
/// drop them; hosts that want none of them in their backend turn this off.
pub const DEFAULT_EXPORT_SELF_METRICS: bool = true;

/// `[diagnostics]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiagnosticsSection {
    /// Address of the HTTP endpoint (`/metrics`, `/healthz`, `/readyz`, `/debug/events`). Off
    /// when unset. Must be a loopback address unless `allow_non_loopback = true`.
    pub listen: Option<String>,
    /// Allow `listen` on a non-loopback address (the debug routes show event journeys).
    pub allow_non_loopback: bool,
    /// Event journeys the flight recorder keeps (oldest evicted first).
    pub recorder_events: usize,
    /// Steps kept per journey (later steps of a longer journey are counted, not kept).
    pub recorder_steps_per_event: usize,
    /// An exporter failing continuously for this long makes `/readyz` answer 503.
    pub unready_after_failing_secs: u64,
    /// Distinct attribute sets kept per metric; further ones go to an overflow series.
    pub metric_cardinality_limit: usize,
    /// Whether the gateway's own metrics (`telemetry_gateway.*`, instrumentation scope
    /// `telemetry-gateway.self`) go out with the application's metrics. `/metrics` has them
    /// either way.
    pub export_self_metrics: bool,
}

impl Default for DiagnosticsSection {
    fn default() -> Self {
        DiagnosticsSection {
            listen: None,
            allow_non_loopback: false,
            recorder_events: DEFAULT_RECORDER_EVENTS,
            recorder_steps_per_event: DEFAULT_RECORDER_STEPS_PER_EVENT,
            unready_after_failing_secs: DEFAULT_UNREADY_AFTER_FAILING_SECS,
            metric_cardinality_limit: DEFAULT_METRIC_CARDINALITY_LIMIT,
            export_self_metrics: DEFAULT_EXPORT_SELF_METRICS,
        }
    }
}

impl DiagnosticsSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if let Some(listen) = &self.listen {
            let addr: std::net::SocketAddr = listen.parse().map_err(|e| {
                ConfigError::invalid(
                    "diagnostics.listen",
                    format!("{listen:?} is not an ip:port address: {e}"),
                )
            })?;
            if !addr.ip().is_loopback() && !self.allow_non_loopback {
                return Err(ConfigError::invalid(
                    "diagnostics.listen",
                    format!(
                        "{listen} is not a loopback address; set diagnostics.allow_non_loopback = true to expose it"
                    ),
                ));
            }
        }
        at_least_one(&[
            ("diagnostics.recorder_events", self.recorder_events as u64),
            (
                "diagnostics.recorder_steps_per_event",
                self.recorder_steps_per_event as u64,
            ),
            (
                "diagnostics.metric_cardinality_limit",
                self.metric_cardinality_limit as u64,
            ),
        ])?;
        greater_than_zero(&[(
            "diagnostics.unready_after_failing_secs",
            self.unready_after_failing_secs,
        )])
    }
}
