//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

pub mod source;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use opentelemetry_sdk::trace::SpanData;
use parking_lot::Mutex;
use telemetry_gateway::{GatewayConfig, SinkError, TraceSink};

/// Defaults with the JSON lines output in a temp dir (kept alive by the returned guard).
pub fn config() -> (GatewayConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = GatewayConfig::default();
    c.export.file_path = dir.path().join("out.jsonl");
    c.payloads.local_path = dir.path().join("payloads");
    c.trace_batcher.flush_interval_ms = 20;
    c.export.log_flush_interval_ms = 20;
    (c, dir)
}

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A small multi-threaded tokio runtime for a test that drives async parts itself.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A trace sink that records every batch it gets.
#[derive(Debug, Default, Clone)]
pub struct RecordingSink {
    pub batches: Arc<Mutex<Vec<Vec<SpanData>>>>,
    pub fail: Arc<Mutex<Option<SinkError>>>,
}

impl RecordingSink {
    pub fn spans(&self) -> Vec<SpanData> {
        self.batches.lock().iter().flatten().cloned().collect()
    }
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().iter().map(Vec::len).collect()
    }
}

impl TraceSink for RecordingSink {
    fn name(&self) -> &str {
        "recording"
    }
    fn export<'a>(&'a self, batch: &'a [SpanData]) -> BoxFuture<'a, Result<(), SinkError>> {
        let fail = self.fail.lock().clone();
        if fail.is_none() {
            self.batches.lock().push(batch.to_vec());
        }
        Box::pin(async move {
            match fail {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }
}

/// A minimal HTTP/1.1 GET against the diagnostics endpoint: (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the diagnostics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read response");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A payload store whose every write fails, even as root: its root is a regular file.
pub fn failing_payload_store(
    cfg: &telemetry_gateway::config::PayloadsSection,
    dir: &std::path::Path,
) -> telemetry_gateway::payload_store::PayloadStore {
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").expect("write the blocking file");
    let local = object_store::local::LocalFileSystem::new_with_prefix(&file).expect("local store");
    telemetry_gateway::payload_store::PayloadStore::new(Arc::new(local), cfg)
}

/// A metric transport that rewrites every payload into a ref into another tenant, as an
/// envelope decoded from another process could carry; and its handler sources.
#[derive(Debug)]
pub struct ForeignRefTransport(telemetry_gateway::transport::InProcessTransport);

impl ForeignRefTransport {
    /// One partition; the sources to give `GatewayBuilder::metric_transport`.
    pub fn new() -> (
        Arc<Self>,
        Vec<Box<dyn telemetry_gateway::transport::EnvelopeSource>>,
    ) {
        let (inner, sources) = telemetry_gateway::transport::InProcessTransport::new(1, 16);
        let sources = sources
            .into_iter()
            .map(|s| Box::new(s) as Box<dyn telemetry_gateway::transport::EnvelopeSource>)
            .collect();
        (Arc::new(ForeignRefTransport(inner)), sources)
    }
}

impl telemetry_gateway::transport::MetricTransport for ForeignRefTransport {
    fn try_send(
        &self,
        mut env: telemetry_gateway::TelemetryEnvelope,
    ) -> Result<(), telemetry_gateway::transport::TransportError> {
        env.payload = telemetry_gateway::Payload::Ref("other-tenant/secret.json".into());
        self.0.try_send(env)
    }
    fn queued(&self) -> usize {
        self.0.queued()
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// This process's resident memory, from /proc (0 when unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// The `app.seq` attribute of every span received: (distinct values, repeats).
pub fn span_seqs(
    r: &telemetry_gateway::testing::Received,
) -> (std::collections::HashSet<i64>, usize) {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as PValue;
    let mut all = std::collections::HashSet::new();
    let mut repeats = 0;
    for s in &r.spans {
        let seq = s
            .attributes
            .iter()
            .find(|kv| kv.key == "app.seq")
            .and_then(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(PValue::IntValue(i)) => Some(*i),
                    _ => None,
                },
            );
        if let Some(seq) = seq {
            if !all.insert(seq) {
                repeats += 1;
            }
        }
    }
    (all, repeats)
}

/// A number data point's value as f64.
pub fn point_value(p: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match p.value {
        Some(Value::AsInt(i)) => i as f64,
        Some(Value::AsDouble(d)) => d,
        None => 0.0,
    }
}

/// A case handler that panics on any payload with a `poison` key and counts the rest.
#[derive(Debug, Default)]
pub struct PoisonOnFlag {
    pub handled: std::sync::atomic::AtomicU64,
}

impl telemetry_gateway::CaseHandler for PoisonOnFlag {
    fn handle(
        &self,
        _env: &telemetry_gateway::TelemetryEnvelope,
        payload: Option<&telemetry_gateway::contracts::JsonObject>,
    ) -> Vec<opentelemetry::KeyValue> {
        if payload.and_then(|p| p.get("poison")).is_some() {
            panic!("poison event");
        }
        self.handled
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        vec![opentelemetry::KeyValue::new("handled.by", "test")]
    }
}

/// The data points of the last export of the sum metric `name`.
pub fn last_sum_points(
    r: &telemetry_gateway::testing::Received,
    name: &str,
) -> Vec<opentelemetry_proto::tonic::metrics::v1::NumberDataPoint> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let last = r
        .metrics
        .iter()
        .rev()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("{name} exported"));
    match &last.data {
        Some(Data::Sum(sum)) => sum.data_points.clone(),
        other => panic!("{name} is not a sum: {other:?}"),
    }
}

/// The binary of the example `name`, built beside the tests by `cargo test --all-targets` (built
/// here when missing, for example when one test file runs alone).
pub fn example(name: &str) -> std::path::PathBuf {
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    let bin = profile_dir.join("examples").join(name);
    if !bin.is_file() {
        // The features this test was built with, so the library already built is reused (and an
        // example's `required-features` are met exactly when this test's are).
        let features: Vec<&str> = [
            ("testing", true),
            ("redis", cfg!(feature = "redis")),
            ("analytics", cfg!(feature = "analytics")),
            ("cli", cfg!(feature = "cli")),
            ("aws", cfg!(feature = "aws")),
            ("gcp", cfg!(feature = "gcp")),
            ("azure", cfg!(feature = "azure")),
        ]
        .into_iter()
        .filter_map(|(f, on)| on.then_some(f))
        .collect();
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--example",
                name,
                "--features",
                &features.join(","),
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the {name} example failed");
    }
    assert!(bin.is_file(), "no {name} binary at {}", bin.display());
    bin
}

/// An OTLP attribute's value as text (strings as they are; numbers and booleans printed).
pub fn any_text(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    Some(match v.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// The attribute `key` of an OTLP span, log record or point, as text.
pub fn attr_text(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
    key: &str,
) -> Option<String> {
    kvs.iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| any_text(kv.value.as_ref()?))
}

/// Every attribute as text, by key.
pub fn attrs_text(
    kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> std::collections::BTreeMap<String, String> {
    kvs.iter()
        .filter_map(|kv| Some((kv.key.clone(), any_text(kv.value.as_ref()?)?)))
        .collect()
}

/// Shuts `gw` down and checks the run was clean and its ledger balances
/// (`emitted + recovered == delivered + dropped + spooled`); returns the report.
pub fn shut_down_balanced(
    gw: &telemetry_gateway::GatewayHandle,
) -> telemetry_gateway::ShutdownReport {
    let report = gw.shutdown_blocking(DEADLINE);
    assert!(report.is_clean(), "{report:?}");
    assert!(report.stats.is_settled(), "{:?}", report.stats);
    report
}
