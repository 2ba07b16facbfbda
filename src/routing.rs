//! The routing table, and the two decisions the gateway makes from it.
//!
//! One table answers both questions for every case:
//!
//! 1. **Eligibility**: may this event go anywhere right now? An enterprise-only case is dropped
//!    (`enterprise_disabled`) while the enterprise exporter is off.
//! 2. **Data type**: trace-shaped (to the `TraceBatcherActor`) or metric/log-only (to the handler
//!    pool)?
//!
//! The built-in table (community edition = eligible without enterprise):
//!
//! | case | signal | enterprise only | root span |
//! |---|---|---|---|
//! | workflow_run | trace | no | yes |
//! | message_run | trace | no | yes |
//! | node_execution, draft_node_execution, prompt_generation | trace | yes | no |
//! | the other nine | metric_log | yes | no |
//!
//! Every entry can be overridden under `[cases.<name>]` and new cases added there. The table is
//! built once at start and never changes; the two runtime switches (`gateway.enabled`,
//! `gateway.enterprise_enabled`) are captured by `emit()` with each event, so an event is routed
//! under the switches in force when the host emitted it, and keeps that decision downstream.

use std::collections::HashMap;

use crate::config::CaseSection;
use crate::contracts::{SignalType, TelemetryCase, TelemetryEnvelope};
use crate::correlation::ResolvedIds;
use crate::diagnostics::ReasonCode;

/// One row of the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Where the case goes.
    pub signal: SignalType,
    /// Dropped while the enterprise exporter is off.
    pub enterprise_only: bool,
    /// The case is the root span of its run.
    pub root_span: bool,
    /// `false`: every event of the case is dropped as `filtered` (`cases.<name>.enabled`).
    pub enabled: bool,
    /// Events kept per million (`cases.<name>.sample_ratio` × 10⁶); the rest are `sampled_out`.
    pub sample_ppm: u32,
    /// `cases.<name>.slow_threshold_ms`: a trace event slower than this also produces a
    /// slow-operation log event.
    pub slow_threshold_ms: Option<u64>,
}

/// Every event kept: `sample_ppm` of a case without `sample_ratio`.
pub(crate) const ALL_PPM: u32 = 1_000_000;

impl Route {
    /// The case's sampling decision (`cases.<name>.sample_ratio`) for an event whose ids the
    /// gateway has resolved: keyed on its trace id for a trace case, so a trace is kept or
    /// dropped whole, and on its event id for a metric/log case.
    pub fn keeps_event(&self, env: &TelemetryEnvelope) -> bool {
        if self.sample_ppm >= ALL_PPM {
            return true;
        }
        let key = match self.signal {
            SignalType::Trace => ResolvedIds::of(env).trace_id.to_bytes(),
            SignalType::MetricLog => *env.event_id.as_bytes(),
        };
        self.keeps(key)
    }

    /// Whether an event whose sampling key is `key` (its trace id for a trace case, its event
    /// id for a metric/log case) is kept under `sample_ppm`. The same mixing as
    /// `otlp.sampling_ratio`, so a trace kept here at ratio r is kept by every ratio above r.
    pub fn keeps(&self, key: [u8; 16]) -> bool {
        self.sample_ppm >= ALL_PPM
            || trace_sampled(
                opentelemetry::trace::TraceId::from_bytes(key),
                f64::from(self.sample_ppm) / f64::from(ALL_PPM),
            )
    }
}

/// What the gateway does with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send to the trace batcher.
    Trace,
    /// Send to the metric/log handler pool.
    MetricLog,
    /// Drop it, counted under this reason.
    Drop(ReasonCode),
}

/// The routing table: the built-in rows with the config's overrides and additions.
#[derive(Debug, Clone)]
pub struct RoutingTable {
    routes: HashMap<String, Route>,
    /// The rows of the built-in cases by [`TelemetryCase::built_in_index`]: `emit()` looks a
    /// built-in case up without hashing its name.
    built_in: [Option<Route>; TelemetryCase::BUILT_IN.len()],
}

/// The built-in row for a built-in case.
pub(crate) fn built_in_route(case: &TelemetryCase) -> Option<Route> {
    let facts = case.facts()?;
    Some(Route {
        signal: facts.signal,
        enterprise_only: facts.enterprise_only,
        root_span: facts.root_span,
        enabled: true,
        sample_ppm: ALL_PPM,
        slow_threshold_ms: None,
    })
}

impl RoutingTable {
    /// The built-in table with `overrides` applied (config has validated that a new case names
    /// its signal).
    pub fn new<'a>(overrides: impl IntoIterator<Item = (&'a String, &'a CaseSection)>) -> Self {
        let mut routes: HashMap<String, Route> = TelemetryCase::BUILT_IN
            .iter()
            .filter_map(|c| built_in_route(c).map(|r| (c.as_str().to_owned(), r)))
            .collect();
        for (name, o) in overrides {
            let base = routes.get(name.as_str()).copied().unwrap_or(Route {
                signal: o.signal.unwrap_or(SignalType::MetricLog),
                enterprise_only: false,
                root_span: false,
                enabled: true,
                sample_ppm: ALL_PPM,
                slow_threshold_ms: None,
            });
            routes.insert(
                name.clone(),
                Route {
                    signal: o.signal.unwrap_or(base.signal),
                    enterprise_only: o.enterprise_only.unwrap_or(base.enterprise_only),
                    root_span: o.root_span.unwrap_or(base.root_span),
                    enabled: o.enabled.unwrap_or(base.enabled),
                    sample_ppm: o
                        .sample_ratio
                        .map(|r| (r.clamp(0.0, 1.0) * f64::from(ALL_PPM)).round() as u32)
                        .unwrap_or(base.sample_ppm),
                    slow_threshold_ms: o.slow_threshold_ms.or(base.slow_threshold_ms),
                },
            );
        }
        let built_in =
            std::array::from_fn(|i| routes.get(TelemetryCase::BUILT_IN[i].as_str()).copied());
        RoutingTable { routes, built_in }
    }

    /// The row for `case`, or `None` when the case is unknown.
    pub fn route(&self, case: &TelemetryCase) -> Option<Route> {
        match case.built_in_index() {
            Some(i) => self.built_in[i],
            None => self.routes.get(case.as_str()).copied(),
        }
    }

    /// Every (case name, row), sorted by name.
    pub fn rows(&self) -> Vec<(String, Route)> {
        let mut v: Vec<_> = self.routes.iter().map(|(k, r)| (k.clone(), *r)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The two decisions for one event, under the switches in force now.
    ///
    /// With the gateway disabled (legacy behaviour) trace cases pass straight to the batcher,
    /// whatever their eligibility, and metric/log cases are dropped (`gateway_disabled`).
    pub fn decide(
        &self,
        case: &TelemetryCase,
        gateway_enabled: bool,
        enterprise_enabled: bool,
    ) -> Decision {
        let Some(route) = self.route(case) else {
            return Decision::Drop(ReasonCode::UnknownCase);
        };
        if !gateway_enabled {
            return match route.signal {
                SignalType::Trace if !route.enabled => Decision::Drop(ReasonCode::Filtered),
                SignalType::Trace => Decision::Trace,
                SignalType::MetricLog => Decision::Drop(ReasonCode::GatewayDisabled),
            };
        }
        if route.enterprise_only && !enterprise_enabled {
            return Decision::Drop(ReasonCode::EnterpriseDisabled);
        }
        if !route.enabled {
            return Decision::Drop(ReasonCode::Filtered);
        }
        match route.signal {
            SignalType::Trace => Decision::Trace,
            SignalType::MetricLog => Decision::MetricLog,
        }
    }

    /// The configuration rule behind a per-case policy drop (`filtered`, `sampled_out`), for
    /// the event's journey; `None` for other reasons.
    pub fn rule(&self, case: &TelemetryCase, reason: ReasonCode) -> Option<String> {
        let route = self.route(case)?;
        match reason {
            ReasonCode::Filtered => Some(format!("cases.{case}.enabled = false")),
            ReasonCode::SampledOut => {
                let ratio = f64::from(route.sample_ppm) / f64::from(ALL_PPM);
                Some(format!("cases.{case}.sample_ratio = {ratio}"))
            }
            _ => None,
        }
    }
}

/// Whether a trace is kept at `ratio`: decided on the trace id alone, so every span of a trace
/// gets the same answer in every process. All 128 bits are mixed (splitmix64 finalizer) before
/// the comparison: derived trace ids are UUIDv5, whose version and variant bits would otherwise
/// bias a decision read from raw bytes.
pub(crate) fn trace_sampled(trace_id: opentelemetry::trace::TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 {
        return false;
    }
    let b = trace_id.to_bytes();
    let hi = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let lo = u64::from_be_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    let mut z = hi ^ lo.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    // Compare the top 53 bits as a fraction in [0, 1).
    ((z >> 11) as f64 / (1u64 << 53) as f64) < ratio
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn sampling_is_deterministic_and_close_to_the_ratio() {
        for ratio in [0.1, 0.5, 0.9] {
            let kept = (0..10_000)
                .filter(|i| {
                    trace_sampled(
                        crate::correlation::derive_trace_id(&format!("run-{i}")),
                        ratio,
                    )
                })
                .count() as f64
                / 10_000.0;
            assert!((kept - ratio).abs() < 0.03, "ratio {ratio}: kept {kept}");
        }
        let id =
            opentelemetry::trace::TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap();
        assert_eq!(trace_sampled(id, 0.5), trace_sampled(id, 0.5));
        assert!(trace_sampled(id, 1.0));
        assert!(!trace_sampled(id, 0.0));
    }

    fn table() -> RoutingTable {
        RoutingTable::new(&BTreeMap::new())
    }

    #[test]
    fn built_in_table_matches_the_spec() {
        let t = table();
        let trace_community = ["workflow_run", "message_run"];
        let trace_enterprise = [
            "node_execution",
            "draft_node_execution",
            "prompt_generation",
        ];
        for case in TelemetryCase::BUILT_IN.iter() {
            let r = t.route(case).unwrap();
            let name = case.as_str();
            if trace_community.contains(&name) {
                assert_eq!(
                    (r.signal, r.enterprise_only),
                    (SignalType::Trace, false),
                    "{name}"
                );
            } else if trace_enterprise.contains(&name) {
                assert_eq!(
                    (r.signal, r.enterprise_only),
                    (SignalType::Trace, true),
                    "{name}"
                );
            } else {
                assert_eq!(
                    (r.signal, r.enterprise_only),
                    (SignalType::MetricLog, true),
                    "{name}"
                );
            }
        }
        assert_eq!(t.rows().len(), 14);
    }

    #[test]
    fn every_case_under_every_switch() {
        let t = table();
        for case in TelemetryCase::BUILT_IN.iter() {
            let r = t.route(case).unwrap();
            for gw in [true, false] {
                for ent in [true, false] {
                    let d = t.decide(case, gw, ent);
                    let expected = match (gw, r.signal, r.enterprise_only && !ent) {
                        (false, SignalType::Trace, _) => Decision::Trace,
                        (false, SignalType::MetricLog, _) => {
                            Decision::Drop(ReasonCode::GatewayDisabled)
                        }
                        (true, _, true) => Decision::Drop(ReasonCode::EnterpriseDisabled),
                        (true, SignalType::Trace, false) => Decision::Trace,
                        (true, SignalType::MetricLog, false) => Decision::MetricLog,
                    };
                    assert_eq!(d, expected, "{case} gw={gw} ent={ent}");
                }
            }
        }
    }

    #[test]
    fn per_case_policy_overrides_and_nests() {
        let mut o = BTreeMap::new();
        o.insert(
            "node_execution".to_string(),
            CaseSection {
                sample_ratio: Some(0.25),
                slow_threshold_ms: Some(500),
                ..Default::default()
            },
        );
        o.insert(
            "app_created".to_string(),
            CaseSection {
                enabled: Some(false),
                ..Default::default()
            },
        );
        let t = RoutingTable::new(&o);
        let node = t.route(&TelemetryCase::NodeExecution).unwrap();
        assert_eq!(node.sample_ppm, 250_000);
        assert_eq!(node.slow_threshold_ms, Some(500));
        assert!(!t.route(&TelemetryCase::AppCreated).unwrap().enabled);
        // A case turned off is dropped by the decision itself, under either switch setting,
        // after the eligibility rules, and the journey gets the rule's text.
        for (gw, ent, expected) in [
            (true, true, ReasonCode::Filtered),
            (false, true, ReasonCode::GatewayDisabled),
            (true, false, ReasonCode::EnterpriseDisabled),
        ] {
            assert_eq!(
                t.decide(&TelemetryCase::AppCreated, gw, ent),
                Decision::Drop(expected)
            );
        }
        assert_eq!(
            t.rule(&TelemetryCase::AppCreated, ReasonCode::Filtered)
                .as_deref(),
            Some("cases.app_created.enabled = false")
        );
        assert_eq!(
            t.rule(&TelemetryCase::NodeExecution, ReasonCode::SampledOut)
                .as_deref(),
            Some("cases.node_execution.sample_ratio = 0.25")
        );
        let run = t.route(&TelemetryCase::WorkflowRun).unwrap();
        assert_eq!((run.enabled, run.sample_ppm), (true, ALL_PPM));
        // A key kept at 0.25 is kept at every higher ratio (nested sampling).
        let half = Route {
            sample_ppm: 500_000,
            ..node
        };
        for i in 0u32..2000 {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&i.to_be_bytes());
            if node.keeps(key) {
                assert!(half.keeps(key) && run.keeps(key), "key {i}");
            }
        }
    }

    #[test]
    fn overrides_and_new_cases() {
        let mut o = BTreeMap::new();
        o.insert(
            "app_created".to_string(),
            CaseSection {
                enterprise_only: Some(false),
                ..Default::default()
            },
        );
        o.insert(
            "billing_event".to_string(),
            CaseSection {
                signal: Some(SignalType::MetricLog),
                ..Default::default()
            },
        );
        let t = RoutingTable::new(&o);
        assert_eq!(
            t.decide(&TelemetryCase::AppCreated, true, false),
            Decision::MetricLog
        );
        assert_eq!(
            t.decide(&TelemetryCase::custom("billing_event"), true, false),
            Decision::MetricLog
        );
        assert_eq!(
            t.decide(&TelemetryCase::custom("nope"), true, true),
            Decision::Drop(ReasonCode::UnknownCase)
        );
    }
}
