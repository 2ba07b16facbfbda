//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

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
    fn export(&self, batch: Vec<SpanData>) -> BoxFuture<'_, Result<(), SinkError>> {
        let fail = self.fail.lock().clone();
        if fail.is_none() {
            self.batches.lock().push(batch);
        }
        Box::pin(async move {
            match fail {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }
}
