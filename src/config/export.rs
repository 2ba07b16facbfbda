//! `[export]`: naming, content policy, the resource, the local file output and the log batcher.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{at_least_one, greater_than_zero, ConfigError};

/// Default of `export.namespace`.
pub const DEFAULT_NAMESPACE: &str = "app";

/// Default of `export.include_content`.
pub const DEFAULT_INCLUDE_CONTENT: bool = true;

/// Default of `export.file_path`: where spans, logs and metrics go when no endpoint is set.
pub const DEFAULT_EXPORT_FILE_PATH: &str = "telemetry-gateway-output.jsonl";

/// Default of `export.local_output`: JSON lines to `export.file_path`.
pub const DEFAULT_LOCAL_OUTPUT: LocalOutput = LocalOutput::Jsonl;

/// Default of `export.log_queue_capacity`.
pub const DEFAULT_LOG_QUEUE_CAPACITY: usize = 65_536;

/// Default of `export.log_max_batch_size`.
pub const DEFAULT_LOG_MAX_BATCH_SIZE: usize = 512;

/// Default of `export.log_concurrency`: log export calls in flight at once.
pub const DEFAULT_LOG_CONCURRENCY: usize = 1;

/// Default of `export.log_flush_interval_ms`.
pub const DEFAULT_LOG_FLUSH_INTERVAL_MS: u64 = 200;

/// Default of `export.service_name`.
pub const DEFAULT_SERVICE_NAME: &str = "telemetry-gateway";

/// `[export]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportSection {
    /// Prefix of every span, metric and log name: `{namespace}.workflow.duration`.
    pub namespace: String,
    /// When false, user content (inputs, outputs, feedback text...) is replaced by a reference.
    pub include_content: bool,
    /// What is done with spans, logs and metrics when `otlp.endpoint` is unset: `jsonl` (to
    /// `file_path`) or `discard`.
    pub local_output: LocalOutput,
    /// JSON lines output used when `otlp.endpoint` is unset.
    pub file_path: PathBuf,
    /// `service.name` resource attribute (default from `OTEL_SERVICE_NAME`).
    pub service_name: String,
    /// Extra resource attributes on every span, log record and metric, and in every JSON line
    /// (default from `OTEL_RESOURCE_ATTRIBUTES`). `service.name` and `service.instance.id`
    /// are the gateway's own and cannot be set here.
    pub resource_attributes: BTreeMap<String, String>,
    /// Log records waiting for export; beyond it they are dropped (`queue_full`).
    pub log_queue_capacity: usize,
    /// Log records per export batch.
    pub log_max_batch_size: usize,
    /// The longest a log record waits for its batch.
    pub log_flush_interval_ms: u64,
    /// Log export calls in flight at once (each batch still held and retried on its own).
    pub log_concurrency: usize,
}

impl Default for ExportSection {
    fn default() -> Self {
        ExportSection {
            namespace: DEFAULT_NAMESPACE.into(),
            include_content: DEFAULT_INCLUDE_CONTENT,
            local_output: DEFAULT_LOCAL_OUTPUT,
            file_path: PathBuf::from(DEFAULT_EXPORT_FILE_PATH),
            service_name: DEFAULT_SERVICE_NAME.into(),
            resource_attributes: BTreeMap::new(),
            log_queue_capacity: DEFAULT_LOG_QUEUE_CAPACITY,
            log_max_batch_size: DEFAULT_LOG_MAX_BATCH_SIZE,
            log_flush_interval_ms: DEFAULT_LOG_FLUSH_INTERVAL_MS,
            log_concurrency: DEFAULT_LOG_CONCURRENCY,
        }
    }
}

/// The enterprise destination when `otlp.endpoint` is unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalOutput {
    /// JSON lines appended to `export.file_path`.
    Jsonl,
    /// Accepted and thrown away, counted as delivered to the destination `discard`: for
    /// benchmarks (the load generator's `--exporter noop`) and for hosts that only want the case
    /// handlers, the self-metrics and the tenant sinks.
    Discard,
}

impl ExportSection {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        at_least_one(&[
            ("export.log_queue_capacity", self.log_queue_capacity as u64),
            ("export.log_max_batch_size", self.log_max_batch_size as u64),
            ("export.log_concurrency", self.log_concurrency as u64),
        ])?;
        greater_than_zero(&[("export.log_flush_interval_ms", self.log_flush_interval_ms)])?;
        let ns = &self.namespace;
        if ns.is_empty()
            || !ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        {
            return Err(ConfigError::invalid(
                "export.namespace",
                format!("{ns:?} must be non-empty lowercase letters, digits, '_' or '.'"),
            ));
        }
        for key in self.resource_attributes.keys() {
            let problem = match key.as_str() {
                "" => "an attribute name must not be empty",
                "service.name" => "set export.service_name (or OTEL_SERVICE_NAME) instead",
                "service.instance.id" => "is the gateway's own: a random id per process",
                _ => continue,
            };
            return Err(ConfigError::invalid(
                &format!("export.resource_attributes.{key}"),
                problem,
            ));
        }
        Ok(())
    }
}
