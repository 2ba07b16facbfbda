//! Batch by size or time, bounded queues, and shutdown that leaves nothing behind.

use crate::support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_gateway::{
    EmitError, GatewayBuilder, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

fn run(i: usize) -> TelemetryEnvelope {
    TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t1"))
        .with_run_id(format!("run-{i}"))
}

#[test]
fn batches_flush_by_size_and_a_lone_event_flushes_by_time() {
    let (mut cfg, _d) = support::config();
    cfg.gateway.enterprise_enabled = false; // only the recording sink
    cfg.trace_batcher.max_batch_size = 10;
    cfg.trace_batcher.flush_interval_ms = 200;
    let sink = support::RecordingSink::default();
    let gw = GatewayBuilder::new(cfg)
        .trace_sink("t1", None, Arc::new(sink.clone()))
        .start()
        .unwrap();
    for i in 0..20 {
        gw.emit(run(i)).unwrap();
    }
    // Two full batches go by size, without waiting for the timer or another event.
    let end = Instant::now() + support::DEADLINE;
    while sink.batch_sizes().len() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sink.batch_sizes(), vec![10, 10]);
    // A lone event is flushed by the timer: no next event is needed.
    gw.emit(run(99)).unwrap();
    let end = Instant::now() + support::DEADLINE;
    while sink.batch_sizes().len() < 3 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(sink.batch_sizes(), vec![10, 10, 1]);
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, 21);
    assert!(s.is_settled());
}

#[test]
fn sharded_batchers_deliver_each_event_once_and_catch_every_resend() {
    // Four batcher shards: a trace event goes to the shard its trace id picks, so a re-sent
    // event meets its first copy in that shard's memory dedup. If the shard were picked any
    // other way, about three resends in four would reach a shard that never saw the event,
    // and be delivered twice.
    let (mut cfg, dir) = support::config(); // spans to the JSON lines file
    cfg.trace_batcher.shards = 4;
    cfg.trace_batcher.queue_capacity = 64; // 16 per shard: the gateway waits for room too
    let gw = telemetry_gateway::start(cfg).unwrap();
    let mut sent = Vec::new();
    // 61 runs of 6 events: 366, not a multiple of the shard count, so not even a round robin
    // would send a resend where its first copy went.
    for r in 0..61 {
        sent.push(run(r));
        for _ in 0..5 {
            sent.push(
                TelemetryEnvelope::new(
                    TelemetryCase::NodeExecution,
                    TelemetryContext::tenant("t1"),
                )
                .with_run_id(format!("run-{r}")),
            );
        }
    }
    let n = sent.len() as u64;
    for env in sent.iter().chain(&sent) {
        gw.emit(env.clone()).unwrap();
    }
    let s = support::shut_down_balanced(&gw).stats;
    assert_eq!(s.emitted, 2 * n);
    assert_eq!(s.delivered, n, "{s:?}");
    assert_eq!(s.dropped_for(ReasonCode::Duplicate), n, "{s:?}");
    assert_eq!(s.dropped_total(), n, "{s:?}");
    assert_eq!(s.exported.spans, n);
    // Each event's span once, and the spans of a run in one trace.
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    let spans: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("\"signal\":\"span\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids = |field: &str| -> std::collections::HashSet<String> {
        spans.iter().map(|s| s[field].to_string()).collect()
    };
    assert_eq!(spans.len() as u64, n);
    assert_eq!(ids("span_id").len() as u64, n);
    assert_eq!(ids("trace_id").len(), 61);
}

#[test]
fn shutdown_exports_everything_and_later_emits_are_counted_drops() {
    let (cfg, dir) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    let n = 2_000;
    for i in 0..n {
        let case = if i % 2 == 0 {
            TelemetryCase::WorkflowRun
        } else {
            TelemetryCase::AppUpdated
        };
        gw.emit(
            TelemetryEnvelope::new(case, TelemetryContext::tenant("t1"))
                .with_run_id(format!("r{i}")),
        )
        .unwrap();
    }
    let report = gw.shutdown_blocking(support::DEADLINE);
    let s = &report.stats;
    assert_eq!(s.emitted, n);
    assert_eq!(s.delivered, n, "{s:?}");
    assert_eq!(report.unsettled_at_deadline, 0);
    assert!(!report.deadline_exceeded);
    assert_eq!(s.exported.spans, n / 2);
    // Every span and log record is in the file.
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"signal\":\"span\""))
            .count() as u64,
        n / 2
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"signal\":\"log\""))
            .count() as u64,
        n
    );
    // After shutdown: a counted drop, not a panic.
    assert_eq!(gw.emit(run(1)), Err(EmitError::ShutDown));
    let after = gw.stats();
    assert_eq!(after.dropped_for(ReasonCode::Shutdown), 1);
    assert_eq!(after.emitted, after.delivered + after.dropped_total());
    // A second shutdown returns the first report.
    let again = gw.shutdown_blocking(support::DEADLINE);
    assert_eq!(again.stats.delivered, n);
}

#[test]
fn a_full_gateway_queue_refuses_at_once_and_every_event_is_accounted() {
    let (mut cfg, _d) = support::config();
    cfg.gateway.queue_capacity = 8;
    cfg.trace_batcher.queue_capacity = 8;
    cfg.metric_pool.queue_capacity = 8;
    let gw = telemetry_gateway::start(cfg).unwrap();
    let mut refused = 0u64;
    let n = 20_000u64;
    for i in 0..n {
        let case = if i % 2 == 0 {
            TelemetryCase::WorkflowRun
        } else {
            TelemetryCase::AppUpdated
        };
        match gw.emit(
            TelemetryEnvelope::new(case, TelemetryContext::tenant("t1"))
                .with_run_id(format!("r{i}")),
        ) {
            Ok(_) => {}
            Err(EmitError::QueueFull) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert!(refused > 0, "a tiny queue under a flood must refuse some");
    assert_eq!(s.emitted, n);
    assert!(s.dropped_for(ReasonCode::QueueFull) >= refused);
    assert_eq!(s.emitted, s.delivered + s.dropped_total(), "{s:?}");
    assert!(s.is_settled());
}

#[test]
fn the_handle_works_from_a_tokio_host_and_many_threads() {
    let (cfg, _d) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..4 {
            let gw = gw.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..250 {
                    gw.emit(
                        TelemetryEnvelope::new(
                            TelemetryCase::AppCreated,
                            TelemetryContext::tenant(format!("t{t}")),
                        )
                        .with_run_id(format!("{t}-{i}")),
                    )
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let report = gw.shutdown(support::DEADLINE).await;
        assert_eq!(report.stats.delivered, 1000);
        assert!(report.stats.is_settled());
    });
}

#[test]
fn blocking_shutdown_and_a_dropped_handle_are_safe_inside_an_async_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (cfg, _d) = support::config();
        let gw = telemetry_gateway::start(cfg).unwrap();
        gw.emit(run(1)).unwrap();
        let report = gw.shutdown_blocking(support::DEADLINE);
        assert_eq!(report.stats.delivered, 1);

        // The last handle dropped without shutdown(), inside a task: settled, no panic.
        let (cfg, _d2) = support::config();
        let gw = telemetry_gateway::start(cfg).unwrap();
        gw.emit(run(2)).unwrap();
        drop(gw);
    });
}

#[test]
fn shutdown_honours_a_short_deadline_and_counts_what_was_left() {
    // A sink that never answers, a long export timeout and a 300 ms deadline: shutdown must
    // return near the deadline and count the unsettled events under `shutdown`.
    #[derive(Debug)]
    struct Hang;
    impl telemetry_gateway::TraceSink for Hang {
        fn name(&self) -> &str {
            "hang"
        }
        fn export<'a>(
            &'a self,
            _b: &'a [opentelemetry_sdk::trace::SpanData],
        ) -> futures::future::BoxFuture<'a, Result<(), telemetry_gateway::SinkError>> {
            Box::pin(futures::future::pending())
        }
    }
    let (mut cfg, _d) = support::config();
    cfg.gateway.enterprise_enabled = false;
    cfg.otlp.timeout_ms = 60_000;
    let gw = GatewayBuilder::new(cfg)
        .trace_sink("t1", None, Arc::new(Hang))
        .start()
        .unwrap();
    for i in 0..10 {
        gw.emit(run(i)).unwrap();
    }
    let started = Instant::now();
    let report = gw.shutdown_blocking(Duration::from_millis(300));
    let took = started.elapsed();
    assert!(report.deadline_exceeded);
    assert_eq!(report.unsettled_at_deadline, 10);
    assert_eq!(report.stats.dropped_for(ReasonCode::Shutdown), 10);
    assert!(report.stats.is_settled());
    // Per case too: the shutdown residue is attributed to its case.
    let by_case = gw.diagnostics().by_case;
    assert_eq!(by_case["workflow_run"].dropped, 10, "{by_case:?}");
    // Generous slack for a loaded machine; the point is "not the 60 s export timeout".
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
}
