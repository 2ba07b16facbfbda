//! `[shutdown]`: the deadline of a shutdown nobody asked for (the last handle dropped).

use serde::{Deserialize, Serialize};

use super::error::{greater_than_zero, ConfigError};

/// Default of `shutdown.deadline_ms`, used when the handle is dropped without `shutdown()`.
pub const DEFAULT_SHUTDOWN_DEADLINE_MS: u64 = 5_000;

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownSection {
    /// Deadline used when the last handle is dropped without an explicit `shutdown()`.
    pub deadline_ms: u64,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        ShutdownSection {
            deadline_ms: DEFAULT_SHUTDOWN_DEADLINE_MS,
        }
    }
}

impl ShutdownSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        greater_than_zero(&[("shutdown.deadline_ms", self.deadline_ms)])
    }
}
