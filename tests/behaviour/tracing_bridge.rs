//! The tracing bridge: `tracing` spans and events with a `telemetry.case` field become gateway
//! events, with tenant and app from their fields (or an enclosing span's) and the correlation
//! from the enclosing request span; what is exported reaches a real OTLP receiver. Bad ones are
//! refused and counted, never lost silently; everything else is ignored.

use crate::support;

use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::tracing_bridge::GatewayLayer;
use telemetry_gateway::ReasonCode;
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn spans_and_events_with_a_case_become_gateway_events() {
    let rx = OtlpReceiver::start();
    let (mut cfg, _dir) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    let gw = telemetry_gateway::start(cfg).unwrap();
    let layer = GatewayLayer::new(gw.clone());
    let subscriber = tracing_subscriber::registry().with(layer.clone());

    tracing::subscriber::with_default(subscriber, || {
        // A request span carries the context and the correlation for everything inside it.
        let request = tracing::info_span!(
            "request",
            tenant_id = "acme",
            app_id = "support-bot",
            correlation_id = "req-7"
        );
        let _in = request.enter();
        tracing::info!(
            telemetry.case = "feedback_created",
            rating = "like",
            score = 5,
            "user feedback"
        );
        {
            let run = tracing::info_span!(
                "workflow",
                telemetry.case = "workflow_run",
                run_id = "run-42",
                status = tracing::field::Empty,
                total_tokens = 120u64,
            );
            let _r = run.enter();
            run.record("status", "succeeded");
        }
        // Not gateway events: no telemetry.case.
        tracing::info!(rating = "like", "an ordinary log line");
        let _plain = tracing::info_span!("plain", tenant_id = "acme").entered();
        // Refused and counted: an unknown case, and (outside the request span) no tenant.
        tracing::info!(telemetry.case = "no_such_case", "typo");
    });
    let orphan = tracing_subscriber::registry().with(layer.clone());
    tracing::subscriber::with_default(orphan, || {
        tracing::info!(telemetry.case = "app_created", "no tenant anywhere");
    });

    assert_eq!(layer.emitted(), 2, "one event, one span");
    assert_eq!(layer.refused(), 2);
    let report = gw.shutdown_blocking(support::DEADLINE);
    let s = &report.stats;
    assert_eq!(s.emitted, 4, "{s:?}");
    assert_eq!(s.delivered, 2, "{s:?}");
    assert_eq!(s.dropped_for(ReasonCode::UnknownCase), 1, "{s:?}");
    assert_eq!(s.dropped_for(ReasonCode::InvalidEnvelope), 1, "{s:?}");

    let (r, ok) = rx.wait_for(support::DEADLINE, |r| {
        !r.spans.is_empty()
            && r.logs
                .iter()
                .any(|l| l.event_name == "app.feedback_created")
    });
    assert!(
        ok,
        "the span and the feedback record arrived: {} spans, {} records",
        r.spans.len(),
        r.logs.len()
    );
    let span = r
        .spans
        .iter()
        .find(|s| {
            support::attrs_text(&s.attributes)
                .get("run.id")
                .map(String::as_str)
                == Some("run-42")
        })
        .expect("the workflow_run span");
    let a = support::attrs_text(&span.attributes);
    assert_eq!(
        a["tenant.id"], "acme",
        "inherited from the request span: {a:?}"
    );
    assert_eq!(a["app.id"], "support-bot");
    assert_eq!(a["correlation.id"], "req-7");
    assert_eq!(
        a["app.status"], "succeeded",
        "recorded after creation: {a:?}"
    );
    assert_eq!(a["app.total_tokens"], "120");
    assert!(
        a.contains_key("app.duration_ms"),
        "the span's duration: {a:?}"
    );
    let feedback = r
        .logs
        .iter()
        .find(|l| l.event_name == "app.feedback_created")
        .map(|l| support::attrs_text(&l.attributes))
        .expect("the feedback record");
    assert_eq!(feedback["tenant.id"], "acme");
    assert_eq!(feedback["correlation.id"], "req-7");
    assert_eq!(feedback["app.rating"], "like");
    assert_eq!(feedback["app.message"], "user feedback");
    // Everything of the request shares its correlation id: explain finds the run, the feedback
    // and the refused typo, with why.
    let ex = gw.explain("req-7");
    assert_eq!(ex.journeys.len(), 3, "{}", ex.to_json());
    let reasons: Vec<_> = ex
        .journeys
        .iter()
        .filter_map(|j| j.outcome().and_then(|o| o.reason))
        .collect();
    assert_eq!(reasons, vec![ReasonCode::UnknownCase], "{}", ex.to_json());
}
