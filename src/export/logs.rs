//! The log batcher: a bounded queue of log records, exported in batches on the export runtime.
//!
//! The SDK's own `BatchLogProcessor` is not used because it cannot say which events a failed or
//! dropped batch carried. Here every record may carry the accounting of the metric/log event it
//! represents: when its batch is exported the event is **delivered**; when the export fails it is
//! **dropped** (`export_failed`). Companion logs of spans carry no accounting (their event is
//! accounted by its span).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord};
use opentelemetry_sdk::Resource;
use tokio::sync::{mpsc, oneshot};

use super::jsonl::JsonlLogExporter;
use super::sink::classify_otlp_error;
use crate::config::HoldPolicy;
use crate::diagnostics::exporters::ExporterStats;
use crate::diagnostics::recorder::{EventRef, Stage};
use crate::diagnostics::{Counters, ReasonCode};

/// The log exporter in use (the SDK trait is not object safe).
#[derive(Debug)]
// One instance per gateway, built once: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum LogBackend {
    Otlp(opentelemetry_otlp::LogExporter),
    Jsonl(JsonlLogExporter),
}

impl LogBackend {
    pub(crate) fn set_resource(&mut self, r: &Resource) {
        match self {
            LogBackend::Otlp(e) => e.set_resource(r),
            LogBackend::Jsonl(e) => e.set_resource(r),
        }
    }

    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        match self {
            LogBackend::Otlp(e) => e.export(batch).await,
            LogBackend::Jsonl(e) => e.export(batch).await,
        }
    }

    fn shutdown(&self) {
        let _ = match self {
            LogBackend::Otlp(e) => e.shutdown(),
            LogBackend::Jsonl(e) => e.shutdown(),
        };
    }
}

/// One record, and whether it accounts for a metric/log event.
#[derive(Debug)]
pub(crate) enum LogJob {
    Record {
        record: Box<SdkLogRecord>,
        /// The metric/log event this record accounts for (none for a span's companion).
        event: Option<EventRef>,
    },
    Flush(oneshot::Sender<()>),
}

/// The sending side of the log batcher.
#[derive(Debug, Clone)]
pub(crate) struct LogBatcher {
    tx: mpsc::Sender<LogJob>,
    stats: Arc<ExporterStats>,
}

/// Settings of the log batcher.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogBatcherSettings {
    pub(crate) capacity: usize,
    pub(crate) max_batch: usize,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) hold: HoldPolicy,
}

impl LogBatcher {
    pub(crate) fn spawn(
        backend: LogBackend,
        settings: LogBatcherSettings,
        counters: Arc<Counters>,
        rt: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<LogJob>(settings.capacity);
        let scope: InstrumentationScope = super::mapping::scope();
        let stats = counters.exporters.register("enterprise", "logs");
        let queue_stats = stats.clone();
        rt.spawn(async move {
            let mut batch: Vec<(Box<SdkLogRecord>, Option<EventRef>)> =
                Vec::with_capacity(settings.max_batch);
            let mut flush_waiters: Vec<oneshot::Sender<()>> = Vec::new();
            loop {
                // Wait for the first record, then gather until the batch is full or the interval
                // since the first record has passed: no record waits for a next one to arrive.
                let first = if batch.is_empty() {
                    match rx.recv().await {
                        Some(j) => Some(j),
                        None => break,
                    }
                } else {
                    None
                };
                let deadline = tokio::time::Instant::now() + settings.interval;
                let mut job = first;
                loop {
                    match job.take() {
                        Some(LogJob::Record { record, event }) => batch.push((record, event)),
                        Some(LogJob::Flush(done)) => {
                            flush_waiters.push(done);
                            break;
                        }
                        None => {}
                    }
                    if batch.len() >= settings.max_batch {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(j)) => job = Some(j),
                        Ok(None) | Err(_) => break,
                    }
                }
                if !batch.is_empty() {
                    export_batch(
                        &backend,
                        &scope,
                        &mut batch,
                        settings.timeout,
                        settings.hold,
                        &counters,
                        &stats,
                    )
                    .await;
                }
                for w in flush_waiters.drain(..) {
                    let _ = w.send(());
                }
                if rx.is_closed() && rx.is_empty() {
                    break;
                }
            }
            backend.shutdown();
        });
        LogBatcher {
            tx,
            stats: queue_stats,
        }
    }

    /// Queues a record without waiting; fails when the queue is full or closed.
    pub(crate) fn try_send(
        &self,
        record: SdkLogRecord,
        event: Option<EventRef>,
    ) -> Result<(), QueueFull> {
        self.tx
            .try_send(LogJob::Record {
                record: Box::new(record),
                event,
            })
            .map_err(|_| {
                self.stats.record_queue_full(1);
                QueueFull
            })
    }

    /// A reader of (records waiting, capacity) that does not keep the queue open.
    pub(crate) fn depth_reader(&self) -> crate::diagnostics::probes::QueueReader {
        let weak = self.tx.downgrade();
        Box::new(move || {
            weak.upgrade()
                .map(|tx| (tx.max_capacity() - tx.capacity(), tx.max_capacity()))
        })
    }

    /// Waits until every record queued so far is exported (or failed).
    pub(crate) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(LogJob::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A bounded queue had no room (or was closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueFull;

async fn export_batch(
    backend: &LogBackend,
    scope: &InstrumentationScope,
    batch: &mut Vec<(Box<SdkLogRecord>, Option<EventRef>)>,
    timeout: Duration,
    hold: HoldPolicy,
    counters: &Counters,
    stats: &ExporterStats,
) {
    let events = batch.iter().filter(|(_, e)| e.is_some()).count() as u64;
    let n = batch.len() as u64;
    let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
        batch.iter().map(|(r, _)| (r.as_ref(), scope)).collect();
    // While the failure is transient, the batch is held and tried again with backoff (records
    // arriving meanwhile wait in the bounded queue); a rejection is final at once.
    let held_since = std::time::Instant::now();
    let mut wait = hold.initial;
    let result = loop {
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(timeout, backend.export(LogBatch::new(&refs))).await
        {
            Ok(r) => r.map_err(|e| {
                let msg = e.to_string();
                (classify_otlp_error(msg.clone()).reason(), msg)
            }),
            Err(_) => Err((
                ReasonCode::ExportFailed,
                format!("timed out after {timeout:?}"),
            )),
        };
        stats.record_call(n, result.is_ok(), started.elapsed());
        match &result {
            Ok(()) | Err((ReasonCode::ExportRejected, _)) => break result,
            Err(_) if held_since.elapsed() + wait > hold.max_age => break result,
            Err((_, error)) => {
                Counters::add(&counters.export_batches_failed, 1);
                if wait == hold.initial {
                    let detail = format!("enterprise logs: {error}; held, retrying");
                    for (_, ev) in batch.iter() {
                        if let Some(ev) = ev {
                            counters.recorder().record(
                                ev,
                                Stage::ExportFailed,
                                Some(ReasonCode::ExportFailed),
                                Some(&detail),
                            );
                        }
                    }
                }
                crate::logging::warn_limited("log export failed; batch held", || {
                    tracing::warn!(
                        records = n,
                        error = %crate::logging::sanitize(error),
                        retry_in_ms = wait.as_millis() as u64,
                        "log export failed; batch held"
                    )
                });
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(hold.max);
            }
        }
    };
    drop(refs);
    let companions = n - events;
    match result {
        Ok(()) => {
            Counters::add(&counters.exported_log_records, n);
            Counters::add(&counters.export_batches_ok, 1);
            Counters::add(&counters.delivered_metric_log, events);
            for ev in batch.iter().filter_map(|(_, e)| e.as_ref()) {
                counters.case_delivered(&ev.case);
                counters.emit_to_export(crate::contracts::SignalType::MetricLog, ev.age());
                counters.step(ev, Stage::Exported, Some("enterprise logs"));
                counters.step(ev, Stage::Delivered, None);
            }
        }
        Err((reason, error)) => {
            Counters::add(&counters.export_batches_failed, 1);
            let detail = format!("enterprise logs: {error}");
            for ev in batch.iter().filter_map(|(_, e)| e.as_ref()) {
                counters
                    .recorder()
                    .record(ev, Stage::ExportFailed, Some(reason), Some(&detail));
                counters.drop_event(ev, reason, None);
            }
            Counters::add(&counters.companion_logs_dropped, companions);
            crate::logging::warn_limited(
                "log export failed",
                || tracing::warn!(records = n, events, reason = %reason, "log export failed"),
            );
        }
    }
    counters.metric_pending_sub(events);
    Counters::pending_sub(&counters.companion_pending, companions);
    batch.clear();
}
