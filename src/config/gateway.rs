//! `[gateway]`: the entrance (its switches, queue and offload limit).

use serde::{Deserialize, Serialize};

use super::error::{at_least_one, ConfigError};

/// Default of `gateway.enabled`.
pub const DEFAULT_GATEWAY_ENABLED: bool = true;

/// Default of `gateway.enterprise_enabled`: the embedded default exports everything (to a local
/// file when no endpoint is set), so a new user sees every case.
pub const DEFAULT_ENTERPRISE_ENABLED: bool = true;

/// Default of `gateway.queue_capacity`: events waiting for the gateway actor.
pub const DEFAULT_GATEWAY_QUEUE_CAPACITY: usize = 65_536;

/// Default of `gateway.max_offloads_in_flight`.
pub const DEFAULT_MAX_OFFLOADS_IN_FLIGHT: usize = 16;

/// `[gateway]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// `false` gives the legacy behaviour: trace cases go straight to the batcher, metric/log
    /// cases are dropped (`gateway_disabled`). Can be flipped at runtime.
    pub enabled: bool,
    /// Whether the enterprise exporter is on; enterprise-only cases are dropped
    /// (`enterprise_disabled`) when it is off. Can be flipped at runtime.
    pub enterprise_enabled: bool,
    /// Events waiting for the gateway actor; beyond it `emit()` returns `QueueFull`.
    pub queue_capacity: usize,
    /// Payload offloads running at once; beyond it a large payload goes inline (counted).
    pub max_offloads_in_flight: usize,
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            enabled: DEFAULT_GATEWAY_ENABLED,
            enterprise_enabled: DEFAULT_ENTERPRISE_ENABLED,
            queue_capacity: DEFAULT_GATEWAY_QUEUE_CAPACITY,
            max_offloads_in_flight: DEFAULT_MAX_OFFLOADS_IN_FLIGHT,
        }
    }
}

impl GatewaySection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            ("gateway.queue_capacity", self.queue_capacity as u64),
            (
                "gateway.max_offloads_in_flight",
                self.max_offloads_in_flight as u64,
            ),
        ])
    }
}
