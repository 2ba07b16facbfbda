//! Every reason code is reachable, counted, and explained: for each one a scenario makes it
//! happen for real, then the test finds the reason from the counters and from the flight
//! recorder's journey of one affected event, as an operator would.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use serde_json::json;
use telemetry_gateway::config::{DedupBackendKind, LocalOutput, SpoolKind, TransportKind};
use telemetry_gateway::contracts::JsonObject;
use telemetry_gateway::diagnostics::recorder::Explanation;
use telemetry_gateway::diagnostics::recorder::Stage;
use telemetry_gateway::testing::{OtlpReceiver, RedisServer};
use telemetry_gateway::{
    CaseHandler, GatewayBuilder, GatewayConfig, GatewayHandle, Payload, ReasonCode, StatsSnapshot,
    TelemetryCase, TelemetryContext, TelemetryEnvelope, WorkerHandle,
};

fn ev(case: TelemetryCase, tenant: &str) -> TelemetryEnvelope {
    TelemetryEnvelope::new(case, TelemetryContext::tenant(tenant)).with_payload(json!({"k": 1}))
}

/// Emits, shuts down, and returns the final stats with the handle (for `explain`).
fn run(
    gw: GatewayHandle,
    events: Vec<TelemetryEnvelope>,
) -> (StatsSnapshot, GatewayHandle, Vec<String>) {
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    for e in events {
        let _ = gw.emit(e);
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    (s, gw, ids)
}

fn cfg() -> (GatewayConfig, tempfile::TempDir) {
    support::config()
}

#[derive(Debug)]
struct Panics;

impl CaseHandler for Panics {
    fn handle(&self, _: &TelemetryEnvelope, _: Option<&JsonObject>) -> Vec<KeyValue> {
        panic!("poison");
    }
}

/// Whichever runtime saw the event, to ask it what happened.
enum Explainer {
    Gateway(GatewayHandle),
    /// A worker of the Redis Streams transport, and the Redis it read from (kept running
    /// until the checks are done).
    Worker(WorkerHandle, #[allow(dead_code)] RedisServer),
}

impl Explainer {
    fn explain(&self, id: &str) -> Explanation {
        match self {
            Explainer::Gateway(gw) => gw.explain(id),
            Explainer::Worker(w, _) => w.explain(id),
        }
    }
}

/// A producer appends one `app_created` event to a fresh stream; a worker configured by
/// `worker` (on top of the shared stream settings, `claim_idle_ms` given) and built by `build`
/// reads it until `reason` is counted, then shuts down.
fn worker_scenario(
    reason: ReasonCode,
    claim_idle_ms: u64,
    worker: impl FnOnce(&mut GatewayConfig),
    build: impl FnOnce(GatewayBuilder) -> GatewayBuilder,
) -> (StatsSnapshot, Explainer, String) {
    let redis = RedisServer::start();
    let base = |c: &mut GatewayConfig| {
        c.transport.kind = TransportKind::RedisStreams;
        c.transport.redis_url = redis.url();
        c.transport.max_deliveries = 1;
        c.transport.claim_idle_ms = claim_idle_ms;
        c.transport.commit_interval_ms = 100;
        c.transport.block_ms = 100;
        c.dedup.backend = DedupBackendKind::Redis;
        c.dedup.redis_url = redis.url();
        c.export.local_output = LocalOutput::Discard;
    };
    let (mut pc, _pd) = cfg();
    base(&mut pc);
    let producer = telemetry_gateway::start(pc).unwrap();
    let e = ev(TelemetryCase::AppCreated, "t");
    let id = e.event_id.to_string();
    producer.emit(e).unwrap();
    producer.shutdown_blocking(support::DEADLINE);
    let (mut wc, _wd) = cfg();
    base(&mut wc);
    worker(&mut wc);
    let worker = build(GatewayBuilder::new(wc)).start_worker().unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while worker.stats().dropped_for(reason) == 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = worker.shutdown_blocking(support::DEADLINE).stats;
    (s, Explainer::Worker(worker, redis), id)
}

/// `dedup_deferred`: a worker whose dedup store cannot be reached (the stream's Redis can) leaves
/// the entry pending instead of handling it unchecked. Read once in this test: the redelivery
/// comes long after its shutdown.
fn dedup_deferred() -> (StatsSnapshot, Explainer, String) {
    let (s, explainer, id) = worker_scenario(
        ReasonCode::DedupDeferred,
        60_000,
        // Nothing listens on port 9.
        |c| c.dedup.redis_url = "redis://127.0.0.1:9/".into(),
        |b| b,
    );
    assert_eq!(s.delivered, 0, "nothing handled unchecked: {s:?}");
    (s, explainer, id)
}

/// `dead_lettered`: a worker whose case handler panics on every delivery of an entry moves it
/// to the dead-letter stream after `transport.max_deliveries`.
fn dead_lettered() -> (StatsSnapshot, Explainer, String) {
    worker_scenario(
        ReasonCode::DeadLettered,
        300,
        |_| {},
        |b| b.case_handler("app_created", Arc::new(Panics)),
    )
}

/// The id of one event among `ids` whose journey shows `reason` (the newest first).
fn affected(gw: &GatewayHandle, ids: &[String], reason: ReasonCode) -> String {
    ids.iter()
        .rev()
        .find(|id| {
            gw.explain(id)
                .journeys
                .iter()
                .any(|j| j.steps.iter().any(|st| st.reason == Some(reason)))
        })
        .cloned()
        .unwrap_or_else(|| panic!("{reason}: no affected event is in the recorder"))
}

/// A receiver that answers every request `Unavailable`, and `c` exporting to it through disk
/// spools under `dir`.
fn spooled_to_a_failing_receiver(c: &mut GatewayConfig, dir: &std::path::Path) -> OtlpReceiver {
    let rx = OtlpReceiver::start();
    rx.fail_with(Some(tonic::Code::Unavailable));
    c.otlp.endpoint = Some(rx.endpoint());
    c.spool.kind = SpoolKind::Disk;
    c.spool.path = Some(dir.join("spool"));
    rx
}

/// Makes `reason` happen; returns the stats and the id of one affected event.
fn scenario(reason: ReasonCode) -> (StatsSnapshot, Explainer, String) {
    if reason == ReasonCode::DeadLettered {
        return dead_lettered();
    }
    if reason == ReasonCode::DedupDeferred {
        return dedup_deferred();
    }
    let (mut c, dir) = cfg();
    let leak = |d: tempfile::TempDir| std::mem::forget(d); // keep output dirs for the run
    let (s, gw, ids) = match reason {
        ReasonCode::EnterpriseDisabled => {
            c.gateway.enterprise_enabled = false;
            run(
                telemetry_gateway::start(c).unwrap(),
                vec![ev(TelemetryCase::AppCreated, "t")],
            )
        }
        ReasonCode::GatewayDisabled => {
            c.gateway.enabled = false;
            run(
                telemetry_gateway::start(c).unwrap(),
                vec![ev(TelemetryCase::AppCreated, "t")],
            )
        }
        ReasonCode::QueueFull => {
            c.gateway.queue_capacity = 1;
            let gw = telemetry_gateway::start(c).unwrap();
            let events: Vec<_> = (0..5_000)
                .map(|_| ev(TelemetryCase::AppCreated, "t"))
                .collect();
            let (s, gw, ids) = run(gw, events);
            let id = affected(&gw, &ids, ReasonCode::QueueFull);
            (s, gw, vec![id])
        }
        ReasonCode::InvalidEnvelope => run(
            telemetry_gateway::start(c).unwrap(),
            vec![ev(TelemetryCase::AppCreated, "")],
        ),
        ReasonCode::UnknownCase => run(
            telemetry_gateway::start(c).unwrap(),
            vec![ev(TelemetryCase::custom("nobody_declared_this"), "t")],
        ),
        ReasonCode::Duplicate => {
            let e = ev(TelemetryCase::FeedbackCreated, "t");
            run(telemetry_gateway::start(c).unwrap(), vec![e.clone(), e])
        }
        ReasonCode::PayloadOffloadFailed => {
            c.payloads.inline_threshold_bytes = 16;
            let store = support::failing_payload_store(&c.payloads, dir.path());
            let gw = GatewayBuilder::new(c).payload_store(store).start().unwrap();
            run(
                gw,
                vec![TelemetryEnvelope::new(
                    TelemetryCase::ToolExecution,
                    TelemetryContext::tenant("t"),
                )
                .with_payload(json!({"outputs": "x".repeat(100)}))],
            )
        }
        ReasonCode::PayloadRefRefused => {
            let (transport, sources) = support::ForeignRefTransport::new();
            let gw = GatewayBuilder::new(c)
                .metric_transport(transport, sources)
                .start()
                .unwrap();
            run(gw, vec![ev(TelemetryCase::ToolExecution, "t")])
        }
        ReasonCode::RehydrationFailed => {
            let mut e =
                TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t"));
            e.payload = Payload::Ref("t/missing.json".into());
            run(telemetry_gateway::start(c).unwrap(), vec![e])
        }
        ReasonCode::DedupStoreUnavailable => {
            c.dedup.backend = DedupBackendKind::Redis;
            c.dedup.redis_url = "redis://127.0.0.1:9/".into(); // nothing listens on port 9
            run(
                telemetry_gateway::start(c).unwrap(),
                vec![ev(TelemetryCase::AppCreated, "t")],
            )
        }
        ReasonCode::ExportFailed => {
            c.otlp.endpoint = Some("http://127.0.0.1:9".into()); // connection refused
            c.otlp.timeout_ms = 300;
            // A failing batch is held and retried; past its age limit it is given up.
            c.retry.max_batch_age_secs = 1;
            c.retry.max_retries = 0;
            run(
                telemetry_gateway::start(c).unwrap(),
                vec![ev(TelemetryCase::WorkflowRun, "t")],
            )
        }
        ReasonCode::ExportRejected => {
            let rx = OtlpReceiver::start();
            rx.fail_with(Some(tonic::Code::InvalidArgument));
            c.otlp.endpoint = Some(rx.endpoint());
            let r = run(
                telemetry_gateway::start(c).unwrap(),
                vec![ev(TelemetryCase::WorkflowRun, "t")],
            );
            drop(rx);
            r
        }
        ReasonCode::Shutdown => {
            let gw = telemetry_gateway::start(c).unwrap();
            gw.shutdown_blocking(support::DEADLINE);
            // After shutdown: a counted refusal. (A second shutdown returns the first report,
            // so read the live stats.)
            let e = ev(TelemetryCase::AppCreated, "t");
            let id = e.event_id.to_string();
            assert!(gw.emit(e).is_err());
            (gw.stats(), gw, vec![id])
        }
        ReasonCode::SampledOut => {
            c.otlp.sampling_ratio = 0.0;
            run(
                telemetry_gateway::start(c).unwrap(),
                vec![ev(TelemetryCase::WorkflowRun, "t")],
            )
        }
        ReasonCode::HandlerPanicked => {
            let gw = GatewayBuilder::new(c)
                .case_handler("app_created", Arc::new(Panics))
                .start()
                .unwrap();
            run(gw, vec![ev(TelemetryCase::AppCreated, "t")])
        }
        ReasonCode::NoDestination => {
            c.gateway.enterprise_enabled = false;
            run(
                telemetry_gateway::start(c).unwrap(),
                vec![ev(TelemetryCase::WorkflowRun, "t")],
            )
        }
        ReasonCode::Filtered => {
            c.cases.insert(
                "moderation_check".into(),
                telemetry_gateway::config::CaseSection {
                    enabled: Some(false),
                    ..Default::default()
                },
            );
            run(
                telemetry_gateway::start(c).unwrap(),
                vec![ev(TelemetryCase::ModerationCheck, "t")],
            )
        }
        ReasonCode::SpoolFull => {
            // Disk spools of 512 KiB (256 KiB for the spans) with the collector down: the
            // batches that do not fit are refused (`when_full = "drop_newest"`).
            let rx = spooled_to_a_failing_receiver(&mut c, dir.path());
            c.spool.segment_bytes = 64 << 10;
            c.spool.max_bytes = 512 << 10;
            c.spool.tenant_share_percent = 0;
            c.trace_batcher.max_batch_size = 50;
            let gw = telemetry_gateway::start(c).unwrap();
            let events: Vec<_> = (0..3_000)
                .map(|_| ev(TelemetryCase::WorkflowRun, "t"))
                .collect();
            let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
            for e in events {
                gw.emit(e).unwrap();
            }
            let s = gw
                .shutdown_blocking(std::time::Duration::from_secs(2))
                .stats;
            drop(rx);
            let id = affected(&gw, &ids, ReasonCode::SpoolFull);
            (s, gw, vec![id])
        }
        ReasonCode::SpoolCorrupt => {
            // Batches wait in a disk spool while the collector is down; the newest record is
            // damaged on disk; when the collector is back it is read back, fails its checksum
            // and is skipped.
            let rx = spooled_to_a_failing_receiver(&mut c, dir.path());
            c.trace_batcher.max_batch_size = 5;
            let gw = telemetry_gateway::start(c).unwrap();
            let events: Vec<_> = (0..40)
                .map(|_| ev(TelemetryCase::WorkflowRun, "t"))
                .collect();
            let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
            for e in events {
                gw.emit(e).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
            let traces = dir.path().join("spool").join("enterprise-traces");
            let newest = std::fs::read_dir(&traces)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "seg"))
                .max()
                .expect("a segment");
            let mut bytes = std::fs::read(&newest).unwrap();
            let at = bytes.len() - 5;
            bytes[at] ^= 0xff;
            std::fs::write(&newest, bytes).unwrap();
            rx.fail_with(None);
            let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while gw.stats().in_flight > 0 && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let s = gw.shutdown_blocking(support::DEADLINE).stats;
            drop(rx);
            let id = affected(&gw, &ids, ReasonCode::SpoolCorrupt);
            (s, gw, vec![id])
        }
        other => panic!("no scenario for reason code {other}: add one"),
    };
    leak(dir);
    let id = ids.last().cloned().unwrap();
    (s, Explainer::Gateway(gw), id)
}

#[test]
fn every_reason_code_is_reachable_counted_and_explained() {
    for reason in ReasonCode::ALL {
        let (s, gw, id) = scenario(reason);
        let counted = s.dropped_for(reason) + s.degraded_for(reason);
        assert!(counted > 0, "{reason}: not counted: {s:?}");
        assert!(s.is_settled(), "{reason}: ledger does not add up: {s:?}");
        let explanation = gw.explain(&id);
        assert_eq!(
            explanation.journeys.len(),
            1,
            "{reason}: no journey for {id}"
        );
        let journey = &explanation.journeys[0];
        assert!(
            journey.steps.iter().any(|st| st.reason == Some(reason)),
            "{reason}: the journey does not show it: {}",
            explanation.to_json()
        );
        // Drops end the journey with the reason; degrades do not end it.
        let outcome = journey.outcome().expect("the journey has an outcome");
        if reason == ReasonCode::Duplicate {
            // One journey per event id: the first copy was delivered, the re-send dropped.
            assert_eq!(outcome.stage, Stage::Delivered, "{}", explanation.to_json());
            assert!(journey
                .steps
                .iter()
                .any(|st| st.stage == Stage::Dropped && st.reason == Some(reason)));
        } else if s.dropped_for(reason) > 0 {
            assert_eq!(
                outcome.reason,
                Some(reason),
                "{reason}: {}",
                explanation.to_json()
            );
        } else {
            assert_eq!(
                outcome.stage,
                Stage::Delivered,
                "{reason}: {}",
                explanation.to_json()
            );
        }
    }
}

#[test]
fn a_correlation_id_finds_every_event_of_an_action() {
    let (c, _d) = cfg();
    let gw = telemetry_gateway::start(c).unwrap();
    gw.set_enterprise_enabled(false);
    let mut sent = Vec::new();
    for case in [
        TelemetryCase::WorkflowRun,
        TelemetryCase::NodeExecution,
        TelemetryCase::AppUpdated,
    ] {
        let e = ev(case, "t").with_correlation_id("req-42");
        sent.push(e.event_id);
        gw.emit(e).unwrap();
    }
    gw.shutdown_blocking(Duration::from_secs(10));
    let ex = gw.explain("req-42");
    let mut found: Vec<_> = ex.journeys.iter().map(|j| j.event_id).collect();
    found.sort();
    sent.sort();
    assert_eq!(found, sent);
    let reasons: Vec<_> = ex
        .journeys
        .iter()
        .filter_map(|j| j.outcome().and_then(|o| o.reason))
        .collect();
    assert!(
        reasons.contains(&ReasonCode::NoDestination),
        "{}",
        ex.to_json()
    );
    assert!(
        reasons.contains(&ReasonCode::EnterpriseDisabled),
        "{}",
        ex.to_json()
    );
}
