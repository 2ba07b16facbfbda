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
use crate::contracts::{SignalType, TelemetryCase};
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
pub fn built_in_route(case: &TelemetryCase) -> Option<Route> {
    use TelemetryCase::*;
    let (signal, enterprise_only, root_span) = match case {
        WorkflowRun | MessageRun => (SignalType::Trace, false, true),
        NodeExecution | DraftNodeExecution | PromptGeneration => (SignalType::Trace, true, false),
        ToolExecution | ModerationCheck | SuggestedQuestion | DatasetRetrieval | GenerateName
        | AppCreated | AppUpdated | AppDeleted | FeedbackCreated => {
            (SignalType::MetricLog, true, false)
        }
        Custom(_) => return None,
    };
    Some(Route {
        signal,
        enterprise_only,
        root_span,
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
            });
            routes.insert(
                name.clone(),
                Route {
                    signal: o.signal.unwrap_or(base.signal),
                    enterprise_only: o.enterprise_only.unwrap_or(base.enterprise_only),
                    root_span: o.root_span.unwrap_or(base.root_span),
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
                SignalType::Trace => Decision::Trace,
                SignalType::MetricLog => Decision::Drop(ReasonCode::GatewayDisabled),
            };
        }
        if route.enterprise_only && !enterprise_enabled {
            return Decision::Drop(ReasonCode::EnterpriseDisabled);
        }
        match route.signal {
            SignalType::Trace => Decision::Trace,
            SignalType::MetricLog => Decision::MetricLog,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
