//! JSON lines output: the embedded default when no collector is configured, and the `jsonl`
//! community sink.
//!
//! One object per line with a `"signal"` field (`span`, `log`, `metric`) and a `"resource"`
//! object (`service.name`, `service.instance.id` and `export.resource_attributes`), so a new user
//! can `tail -f` or `jq` the file without running a collector and see which service wrote each
//! line, even when several processes append to one file. Writes are buffered and flushed at the
//! end of every batch; they run on the export runtime, never on the actor threads.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use opentelemetry::logs::{AnyValue, Severity};
use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::trace::SpanData;
use parking_lot::Mutex;
use serde_json::{json, Map, Value as Json};

use super::sink::{SinkError, TraceSink};

/// A shared, append-only JSON lines file.
#[derive(Debug, Clone)]
pub(crate) struct JsonlWriter {
    path: PathBuf,
    file: Arc<Mutex<BufWriter<File>>>,
    /// `,"resource":{...}}`: the tail of every line, serialized once.
    resource_tail: Arc<[u8]>,
}

impl JsonlWriter {
    /// Opens (creating, appending) `path`; creates its parent directory when missing.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(JsonlWriter {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(BufWriter::new(f))),
            resource_tail: Arc::from(&b"}"[..]),
        })
    }

    /// Adds `resource`'s attributes to every line as a `"resource"` object.
    pub(crate) fn with_resource(mut self, resource: &opentelemetry_sdk::Resource) -> Self {
        let attrs: Map<String, Json> = resource
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
            .collect();
        let mut tail = b",\"resource\":".to_vec();
        // A map of strings and numbers always serializes.
        if serde_json::to_writer(&mut tail, &attrs).is_ok() {
            tail.push(b'}');
            self.resource_tail = Arc::from(tail);
        }
        self
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `lines` and flushes.
    pub(crate) fn write_lines(&self, lines: impl IntoIterator<Item = Json>) -> std::io::Result<()> {
        let mut f = self.file.lock();
        let mut buf = Vec::with_capacity(512);
        for line in lines {
            buf.clear();
            serde_json::to_writer(&mut buf, &line)?;
            // Every line is an object: its closing brace becomes the resource tail.
            if buf.last() == Some(&b'}') {
                buf.pop();
                buf.extend_from_slice(&self.resource_tail);
            }
            buf.push(b'\n');
            f.write_all(&buf)?;
        }
        f.flush()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub(crate) fn value_to_json(v: &Value) -> Json {
    match v {
        Value::Bool(b) => json!(b),
        Value::I64(i) => json!(i),
        Value::F64(f) => json!(f),
        Value::String(s) => json!(s.as_str()),
        other => json!(other.to_string()),
    }
}

fn any_to_json(v: &AnyValue) -> Json {
    match v {
        AnyValue::Int(i) => json!(i),
        AnyValue::Double(f) => json!(f),
        AnyValue::String(s) => json!(s.as_str()),
        AnyValue::Boolean(b) => json!(b),
        AnyValue::ListAny(l) => Json::Array(l.iter().map(any_to_json).collect()),
        AnyValue::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_owned(), any_to_json(v)))
                .collect(),
        ),
        AnyValue::Bytes(b) => json!(b.len()),
        _ => Json::Null,
    }
}

fn attrs_to_json<'a>(kvs: impl IntoIterator<Item = &'a KeyValue>) -> Json {
    let mut m = Map::new();
    for kv in kvs {
        m.insert(kv.key.as_str().to_owned(), value_to_json(&kv.value));
    }
    Json::Object(m)
}

/// One span as a JSON line.
pub(crate) fn span_to_json(s: &SpanData) -> Json {
    let parent = (s.parent_span_id != opentelemetry::trace::SpanId::INVALID)
        .then(|| s.parent_span_id.to_string());
    let status = match &s.status {
        opentelemetry::trace::Status::Error { description } => {
            json!({"code": "error", "message": description.as_ref()})
        }
        opentelemetry::trace::Status::Ok => json!({"code": "ok"}),
        _ => json!({"code": "unset"}),
    };
    json!({
        "signal": "span",
        "name": s.name.as_ref(),
        "trace_id": s.span_context.trace_id().to_string(),
        "span_id": s.span_context.span_id().to_string(),
        "parent_span_id": parent,
        "start_time_unix_nano": unix_nanos(s.start_time),
        "end_time_unix_nano": unix_nanos(s.end_time),
        "attributes": attrs_to_json(&s.attributes),
        "status": status,
    })
}

/// The `jsonl` trace sink: spans appended to a file.
#[derive(Debug, Clone)]
pub(crate) struct JsonlTraceSink {
    name: String,
    writer: JsonlWriter,
}

impl JsonlTraceSink {
    /// A sink named `name` writing to `writer`.
    pub(crate) fn new(name: impl Into<String>, writer: JsonlWriter) -> Self {
        JsonlTraceSink {
            name: name.into(),
            writer,
        }
    }
}

impl TraceSink for JsonlTraceSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn export<'a>(&'a self, batch: &'a [SpanData]) -> BoxFuture<'a, Result<(), SinkError>> {
        let res = self
            .writer
            .write_lines(batch.iter().map(span_to_json))
            .map_err(|e| SinkError::Failed(format!("{}: {e}", self.writer.path().display())));
        Box::pin(async move { res })
    }
}

/// Log records as JSON lines.
#[derive(Debug, Clone)]
pub(crate) struct JsonlLogExporter {
    writer: JsonlWriter,
}

impl JsonlLogExporter {
    /// A log exporter writing to `writer`.
    pub(crate) fn new(writer: JsonlWriter) -> Self {
        JsonlLogExporter { writer }
    }
}

fn severity_text(s: Option<Severity>) -> &'static str {
    match s {
        Some(Severity::Error) => "ERROR",
        Some(Severity::Warn) => "WARN",
        Some(Severity::Debug) => "DEBUG",
        _ => "INFO",
    }
}

/// One log record as a JSON line.
pub(crate) fn log_to_json(r: &opentelemetry_sdk::logs::SdkLogRecord) -> Json {
    let mut attrs = Map::new();
    for (k, v) in r.attributes_iter() {
        attrs.insert(k.as_str().to_owned(), any_to_json(v));
    }
    let (trace_id, span_id) = match r.trace_context() {
        Some(tc) => (Some(tc.trace_id.to_string()), Some(tc.span_id.to_string())),
        None => (None, None),
    };
    json!({
        "signal": "log",
        "event_name": r.event_name(),
        "severity": severity_text(r.severity_number()),
        "time_unix_nano": r.timestamp().map(unix_nanos),
        "trace_id": trace_id,
        "span_id": span_id,
        "body": r.body().map(any_to_json),
        "attributes": Json::Object(attrs),
    })
}

impl LogExporter for JsonlLogExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let lines = batch.iter().map(|(r, _scope)| log_to_json(r));
        self.writer
            .write_lines(lines.collect::<Vec<_>>())
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }
}

/// Metric data points as JSON lines (cumulative temporality).
#[derive(Debug, Clone)]
pub(crate) struct JsonlMetricExporter {
    writer: JsonlWriter,
}

impl JsonlMetricExporter {
    /// A metric exporter writing to `writer`.
    pub(crate) fn new(writer: JsonlWriter) -> Self {
        JsonlMetricExporter { writer }
    }
}

/// A metric value type the JSON output can print.
pub(crate) trait JsonNumber: Copy {
    fn to_json(self) -> Json;
}

impl JsonNumber for f64 {
    fn to_json(self) -> Json {
        json!(self)
    }
}

impl JsonNumber for u64 {
    fn to_json(self) -> Json {
        json!(self)
    }
}

impl JsonNumber for i64 {
    fn to_json(self) -> Json {
        json!(self)
    }
}

fn metric_lines<T: JsonNumber>(name: &str, unit: &str, data: &MetricData<T>, out: &mut Vec<Json>) {
    match data {
        MetricData::Sum(s) => {
            for p in s.data_points() {
                out.push(
                    json!({"signal": "metric", "name": name, "unit": unit, "kind": "sum",
                    "value": p.value().to_json(), "attributes": attrs_to_json(p.attributes())}),
                );
            }
        }
        MetricData::Gauge(g) => {
            for p in g.data_points() {
                out.push(
                    json!({"signal": "metric", "name": name, "unit": unit, "kind": "gauge",
                    "value": p.value().to_json(), "attributes": attrs_to_json(p.attributes())}),
                );
            }
        }
        MetricData::Histogram(h) => {
            for p in h.data_points() {
                out.push(
                    json!({"signal": "metric", "name": name, "unit": unit, "kind": "histogram",
                    "count": p.count(), "sum": p.sum().to_json(),
                    "attributes": attrs_to_json(p.attributes())}),
                );
            }
        }
        MetricData::ExponentialHistogram(h) => {
            for p in h.data_points() {
                out.push(json!({"signal": "metric", "name": name, "unit": unit,
                    "kind": "exponential_histogram", "count": p.count(),
                    "attributes": attrs_to_json(p.attributes())}));
            }
        }
    }
}

/// JSON lines for every data point of `metrics`.
pub(crate) fn resource_metrics_to_json(metrics: &ResourceMetrics) -> Vec<Json> {
    let mut out = Vec::new();
    for scope in metrics.scope_metrics() {
        for m in scope.metrics() {
            match m.data() {
                AggregatedMetrics::F64(d) => metric_lines(m.name(), m.unit(), d, &mut out),
                AggregatedMetrics::U64(d) => metric_lines(m.name(), m.unit(), d, &mut out),
                AggregatedMetrics::I64(d) => metric_lines(m.name(), m.unit(), d, &mut out),
            }
        }
    }
    out
}

impl PushMetricExporter for JsonlMetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        self.writer
            .write_lines(resource_metrics_to_json(metrics))
            .map_err(|e| OTelSdkError::InternalFailure(e.to_string()))
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: std::time::Duration) -> OTelSdkResult {
        Ok(())
    }

    fn temporality(&self) -> Temporality {
        Temporality::Cumulative
    }
}
