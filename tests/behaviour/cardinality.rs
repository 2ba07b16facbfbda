//! A tenant flood cannot blow up metric memory: each metric keeps at most
//! `diagnostics.metric_cardinality_limit` attribute sets; the rest is aggregated in one overflow
//! series, and the overflow is reported.

use crate::support;

use opentelemetry_proto::tonic::common::v1::any_value::Value as PValue;
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{start, TelemetryCase, TelemetryContext, TelemetryEnvelope};

#[test]
fn distinct_attribute_sets_are_capped_with_a_counted_overflow_series() {
    let rx = OtlpReceiver::start();
    let (mut cfg, _d) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.diagnostics.metric_cardinality_limit = 10;
    let gw = start(cfg).unwrap();
    let tenants = 100;
    for t in 0..tenants {
        gw.emit(TelemetryEnvelope::new(
            TelemetryCase::AppCreated,
            TelemetryContext::tenant(format!("tenant-{t}")),
        ))
        .unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, tenants);
    assert!(
        s.metrics_in_overflow
            .iter()
            .any(|m| m == "app.requests.total"),
        "overflow reported: {:?}",
        s.metrics_in_overflow
    );
    // The last export of app.requests.total: `limit` attribute sets plus the overflow series.
    let r = rx.received();
    let points = support::last_sum_points(&r, "app.requests.total");
    assert!(points.len() <= 10 + 1, "{} points", points.len());
    let overflow: f64 = points
        .iter()
        .filter(|p| {
            p.attributes.iter().any(|kv| {
                kv.key == "otel.metric.overflow"
                    && matches!(
                        kv.value.as_ref().and_then(|v| v.value.as_ref()),
                        Some(PValue::BoolValue(true))
                    )
            })
        })
        .map(support::point_value)
        .sum();
    let total: f64 = points.iter().map(support::point_value).sum();
    assert!(overflow > 0.0, "an overflow series carries the excess");
    assert_eq!(
        total, tenants as f64,
        "nothing is lost: the overflow series adds up"
    );
}
