//! `[otlp]`: the enterprise exporter (endpoint, protocol, credentials, sampling).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{greater_than_zero, ConfigError};
use super::urls::{check_endpoint, hidden_headers, url_without_password, HIDDEN};

/// Default of `otlp.protocol`.
pub const DEFAULT_OTLP_PROTOCOL: OtlpProtocol = OtlpProtocol::Grpc;

/// Default of `otlp.timeout_ms`.
pub const DEFAULT_OTLP_TIMEOUT_MS: u64 = 10_000;

/// Default of `otlp.sampling_ratio`.
pub const DEFAULT_SAMPLING_RATIO: f64 = 1.0;

/// Default of `otlp.metric_interval_ms`.
pub const DEFAULT_METRIC_INTERVAL_MS: u64 = 10_000;

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (tonic).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP over HTTP with protobuf bodies.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

/// `[otlp]`: the enterprise exporter. `Debug` shows header names and never their values or the
/// API key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpSection {
    /// Collector endpoint (`http://host:4317` for gRPC, `http://host:4318` for HTTP). When unset,
    /// spans, logs and metrics go as JSON lines to `export.file_path`.
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: OtlpProtocol,
    /// Extra headers (gRPC metadata) sent with every export.
    pub headers: BTreeMap<String, String>,
    /// Sent as `authorization: Bearer <api_key>`. Never logged.
    pub api_key: Option<String>,
    /// The most one export may take, retries included.
    pub timeout_ms: u64,
    /// Fraction of traces kept (decided on the trace id, so a trace is kept or dropped whole).
    pub sampling_ratio: f64,
    /// How often metrics are exported.
    pub metric_interval_ms: u64,
}

impl Default for OtlpSection {
    fn default() -> Self {
        OtlpSection {
            endpoint: None,
            protocol: DEFAULT_OTLP_PROTOCOL,
            headers: BTreeMap::new(),
            api_key: None,
            timeout_ms: DEFAULT_OTLP_TIMEOUT_MS,
            sampling_ratio: DEFAULT_SAMPLING_RATIO,
            metric_interval_ms: DEFAULT_METRIC_INTERVAL_MS,
        }
    }
}

pub(super) fn default_protocol() -> OtlpProtocol {
    DEFAULT_OTLP_PROTOCOL
}

impl std::fmt::Debug for OtlpSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSection")
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(url_without_password),
            )
            .field("protocol", &self.protocol)
            .field("headers", &hidden_headers(&self.headers))
            .field("api_key", &self.api_key.as_ref().map(|_| HIDDEN))
            .field("timeout_ms", &self.timeout_ms)
            .field("sampling_ratio", &self.sampling_ratio)
            .field("metric_interval_ms", &self.metric_interval_ms)
            .finish()
    }
}

impl OtlpSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        greater_than_zero(&[
            ("otlp.timeout_ms", self.timeout_ms),
            ("otlp.metric_interval_ms", self.metric_interval_ms),
        ])?;
        if !(0.0..=1.0).contains(&self.sampling_ratio) || self.sampling_ratio.is_nan() {
            return Err(ConfigError::invalid(
                "otlp.sampling_ratio",
                format!("{} is not between 0.0 and 1.0", self.sampling_ratio),
            ));
        }
        if let Some(ep) = &self.endpoint {
            check_endpoint("otlp.endpoint", ep)?;
        }
        Ok(())
    }
}
