//! Why `start()` or `emit()` said no.

use super::*;

/// Why the gateway did not start.
///
/// Its `Debug` is its message, so `main() -> Result<(), Box<dyn Error>>` prints the sentence.
#[derive(thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The payload store could not be built.
    #[error(transparent)]
    PayloadStore(#[from] StoreBuildError),
    /// The dedup store could not be built.
    #[error(transparent)]
    Dedup(#[from] DedupBuildError),
    /// An exporter could not be built.
    #[error(transparent)]
    Export(#[from] ExportBuildError),
    /// The actor threads did not start.
    #[error("the actor system did not start: {0}")]
    Actors(String),
}

impl std::fmt::Debug for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Why `emit()` did not take an event. Each is also counted as a drop with its reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The envelope is invalid (the error names the field).
    #[error(transparent)]
    Invalid(#[from] EnvelopeError),
    /// The gateway queue is full; the event was dropped (`queue_full`).
    #[error("gateway queue is full; event dropped")]
    QueueFull,
    /// The gateway is shut down; the event was dropped (`shutdown`).
    #[error("gateway is shut down; event dropped")]
    ShutDown,
}

impl EmitError {
    /// The reason code this refusal is counted under.
    pub fn reason(&self) -> ReasonCode {
        match self {
            EmitError::Invalid(EnvelopeError::UnknownCase { .. }) => ReasonCode::UnknownCase,
            EmitError::Invalid(_) => ReasonCode::InvalidEnvelope,
            EmitError::QueueFull => ReasonCode::QueueFull,
            EmitError::ShutDown => ReasonCode::Shutdown,
        }
    }
}
