//! Per-case policy from `[cases.<name>]`: `enabled = false` drops a case as `filtered`;
//! `sample_ratio` keeps a deterministic fraction (whole runs for trace cases, stable per event id
//! for metric/log cases) and counts the rest as `sampled_out`; `slow_threshold_ms` adds a
//! `{ns}.slow_operation` log event and a counter for slow trace events. Checked at a real OTLP
//! receiver, with exact accounting.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde_json::json;
use telemetry_gateway::config::CaseSection;
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{
    GatewayConfig, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};
use uuid::Uuid;

fn with_case(mut c: GatewayConfig, name: &str, section: CaseSection) -> GatewayConfig {
    c.cases.insert(name.into(), section);
    c
}

#[test]
fn a_case_turned_off_is_dropped_as_filtered_and_explained() {
    let (c, _dir) = support::config();
    let c = with_case(
        c,
        "moderation_check",
        CaseSection {
            enabled: Some(false),
            ..Default::default()
        },
    );
    let gw = telemetry_gateway::start(c).unwrap();
    let mut off = Vec::new();
    for _ in 0..5 {
        off.push(
            gw.emit(TelemetryEnvelope::new(
                TelemetryCase::ModerationCheck,
                TelemetryContext::tenant("acme"),
            ))
            .unwrap(),
        );
        gw.emit(TelemetryEnvelope::new(
            TelemetryCase::AppCreated,
            TelemetryContext::tenant("acme"),
        ))
        .unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.emitted, 10);
    assert_eq!(s.dropped_for(ReasonCode::Filtered), 5, "{s:?}");
    assert_eq!(s.delivered, 5, "{s:?}");
    let j = gw.explain(&off[0].to_string()).to_json();
    assert!(
        j.contains("filtered") && j.contains("cases.moderation_check.enabled = false"),
        "{j}"
    );
    assert!(ReasonCode::Filtered.intentional());
}

/// Emits `runs` workflow runs of one root and five node executions each; returns the run ids.
fn emit_runs(gw: &telemetry_gateway::GatewayHandle, runs: usize) -> Vec<String> {
    (0..runs)
        .map(|i| {
            let run = format!("run-{i}");
            let ctx = || TelemetryContext::tenant("acme").app("a");
            gw.emit(
                TelemetryEnvelope::new(TelemetryCase::WorkflowRun, ctx())
                    .with_run_id(run.clone())
                    .with_payload(json!({"status": "succeeded", "duration_ms": 10})),
            )
            .unwrap();
            for n in 0..5 {
                gw.emit(
                    TelemetryEnvelope::new(TelemetryCase::NodeExecution, ctx())
                        .with_run_id(run.clone())
                        .with_payload(json!({"node_id": format!("n{n}"), "duration_ms": 2})),
                )
                .unwrap();
            }
            run
        })
        .collect()
}

/// Node spans per run at the receiver.
fn nodes_per_run(rx: &OtlpReceiver) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in rx.received().spans {
        if s.name.ends_with("node.execution") {
            if let Some(run) = support::attr_text(&s.attributes, "run.id") {
                *m.entry(run).or_default() += 1;
            }
        }
    }
    m
}

#[test]
fn a_trace_case_is_sampled_by_whole_runs_and_the_same_runs_every_time() {
    let runs = 200;
    let mut kept_sets = Vec::new();
    for _attempt in 0..2 {
        let rx = OtlpReceiver::start();
        let (mut c, _dir) = support::config();
        c.otlp.endpoint = Some(rx.endpoint());
        let c = with_case(
            c,
            "node_execution",
            CaseSection {
                sample_ratio: Some(0.3),
                ..Default::default()
            },
        );
        let gw = telemetry_gateway::start(c).unwrap();
        emit_runs(&gw, runs);
        let s = gw.shutdown_blocking(support::DEADLINE).stats;
        assert_eq!(s.emitted, runs as u64 * 6);
        assert_eq!(
            s.emitted,
            s.delivered + s.dropped_for(ReasonCode::SampledOut),
            "only sampling drops: {s:?}"
        );
        let per_run = nodes_per_run(&rx);
        for (run, n) in &per_run {
            assert_eq!(*n, 5, "{run}: a run's node executions are kept together");
        }
        let kept = per_run.len();
        assert_eq!(
            s.dropped_for(ReasonCode::SampledOut),
            ((runs - kept) * 5) as u64
        );
        let fraction = kept as f64 / runs as f64;
        assert!(
            (0.18..=0.42).contains(&fraction),
            "about 30% of runs kept: {fraction}"
        );
        kept_sets.push(per_run.into_keys().collect::<BTreeSet<_>>());
    }
    assert_eq!(kept_sets[0], kept_sets[1], "deterministic across gateways");
}

#[test]
fn a_metric_case_is_sampled_by_event_id_so_a_re_send_gets_the_same_answer() {
    let ids: Vec<Uuid> = (0..400).map(|_| Uuid::now_v7()).collect();
    let mut delivered_sets = Vec::new();
    for _attempt in 0..2 {
        let (c, dir) = support::config();
        let c = with_case(
            c,
            "feedback_created",
            CaseSection {
                sample_ratio: Some(0.5),
                ..Default::default()
            },
        );
        let out = c.export.file_path.clone();
        let gw = telemetry_gateway::start(c).unwrap();
        for id in &ids {
            gw.emit(
                TelemetryEnvelope::new(
                    TelemetryCase::FeedbackCreated,
                    TelemetryContext::tenant("acme"),
                )
                .with_event_id(*id)
                .with_payload(json!({"rating": "like"})),
            )
            .unwrap();
        }
        let s = gw.shutdown_blocking(support::DEADLINE).stats;
        assert_eq!(s.emitted, 400);
        assert_eq!(
            s.emitted,
            s.delivered + s.dropped_for(ReasonCode::SampledOut)
        );
        assert!((120..=280).contains(&s.delivered), "about half: {s:?}");
        let text = std::fs::read_to_string(out).unwrap();
        let delivered: BTreeSet<String> = ids
            .iter()
            .map(|id| id.to_string())
            .filter(|id| text.contains(id.as_str()))
            .collect();
        assert_eq!(delivered.len() as u64, s.delivered);
        delivered_sets.push(delivered);
        drop(dir);
    }
    assert_eq!(delivered_sets[0], delivered_sets[1], "the same events kept");
}

#[test]
fn a_slow_trace_event_also_produces_a_slow_operation_event_and_a_count() {
    let rx = OtlpReceiver::start();
    let (mut c, _dir) = support::config();
    c.otlp.endpoint = Some(rx.endpoint());
    c.otlp.metric_interval_ms = 100;
    let c = with_case(
        c,
        "workflow_run",
        CaseSection {
            slow_threshold_ms: Some(100),
            ..Default::default()
        },
    );
    let gw = telemetry_gateway::start(c).unwrap();
    let mut slow = BTreeSet::new();
    for i in 0..10 {
        let took = if i % 3 == 0 { 500 } else { 50 };
        let id = gw
            .emit(
                TelemetryEnvelope::new(
                    TelemetryCase::WorkflowRun,
                    TelemetryContext::tenant("acme").app("a"),
                )
                .with_run_id(format!("run-{i}"))
                .with_correlation_id(format!("req-{i}"))
                .with_payload(json!({"status": "succeeded", "duration_ms": took})),
            )
            .unwrap();
        if took > 100 {
            slow.insert(id.to_string());
        }
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!((s.emitted, s.delivered), (10, 10), "{s:?}");
    assert_eq!(s.companion_logs_dropped, 0);
    let r = rx.received();
    let events: Vec<_> = r
        .logs
        .iter()
        .filter(|l| l.event_name == "app.slow_operation")
        .collect();
    let flagged: BTreeSet<String> = events
        .iter()
        .filter_map(|l| support::attr_text(&l.attributes, "event.id"))
        .collect();
    assert_eq!(flagged, slow, "exactly the slow runs are flagged");
    for l in &events {
        assert_eq!(
            support::attr_text(&l.attributes, "threshold_ms").as_deref(),
            Some("100")
        );
        assert_eq!(
            support::attr_text(&l.attributes, "duration_ms").as_deref(),
            Some("500")
        );
        assert!(support::attr_text(&l.attributes, "correlation.id")
            .is_some_and(|c| c.starts_with("req-")));
        assert!(support::attr_text(&l.attributes, "run.id").is_some());
    }
    let count: i64 = r
        .metrics
        .iter()
        .rev()
        .find(|m| m.name == "app.slow_operations.total")
        .and_then(|m| match &m.data {
            Some(Data::Sum(sum)) => Some(
                sum.data_points
                    .iter()
                    .map(|p| support::point_value(p) as i64)
                    .sum(),
            ),
            _ => None,
        })
        .expect("app.slow_operations.total exported");
    assert_eq!(count, slow.len() as i64);
}
