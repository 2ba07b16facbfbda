//! The ledger's only writers: one call per outcome.
//!
//! While an event is in flight one stage *holds* it ([`Holder`]: the gateway actor, the trace
//! path, the metric/log path), and that stage's in-flight gauge counts it. It leaves the ledger's
//! in-flight column by exactly one call here:
//!
//! | outcome | call |
//! |---|---|
//! | refused by `emit()` | [`Counters::refuse`] |
//! | delivered, or dropped with a reason | [`Counters::settle`] / [`Counters::settle_all`] |
//! | left in a disk spool at shutdown | [`Counters::settle_all`] with [`Outcome::Spooled`] |
//! | still unsettled when shutdown ends | [`Counters::settle_remaining`] |
//!
//! Events recovered from a disk spool at start have no journey (their ids were in the process
//! that emitted them): [`Counters::recover`] counts them in, [`Counters::settle_recovered`] out.
//!
//! Each call moves the column counter (`delivered_*` or `dropped[reason]`), the holder's gauge,
//! the per-case count and the event's journey together, so no caller can pair them wrongly. The
//! counters and gauges these calls write are private to `diagnostics`: nothing else touches them.
//! Moving an event from one stage to the next is [`Counters::enter`] then [`Counters::leave`]
//! (the next stage's gauge goes up before the hand-over, the previous one's down after, so the
//! event is always counted somewhere while it is in flight).
//!
//! Companion log records (the log records that go with spans) are not events: their own gauge is
//! moved by [`Counters::companions_queued`] and [`Counters::companions_done`].

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering, Ordering::Relaxed};

use serde::Serialize;

use super::recorder::{Detail, EventRef, Stage};
use super::{CaseCounts, Counters, ReasonCode, OTHER_CASE};
use crate::contracts::SignalType;

/// The stage that holds an in-flight event (whose gauge counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// Counted in (a worker's read of a stream entry) but not handed to any stage yet: no
    /// gauge counts it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Intake,
    /// Taken by `emit()`, not yet routed by the gateway actor.
    Gateway,
    /// Handed to the trace batcher, its sinks and the span exporter.
    TracePath,
    /// Handed to the metric/log transport, the handler pool and the log exporter (or, in a
    /// worker, read from the stream).
    MetricLogPath,
}

/// How an event leaves the ledger's in-flight column.
#[derive(Debug, Clone)]
pub(crate) enum Outcome<'a> {
    /// An exporter (or the stream, for a producer) accepted it; `destination` names it in the
    /// journey.
    Delivered {
        /// The destination that accepted it.
        destination: Detail,
    },
    /// Dropped for `reason`; `detail` is a literal of this crate.
    Dropped {
        /// Why.
        reason: ReasonCode,
        /// What the journey says beside the reason.
        detail: Option<&'static str>,
    },
    /// Dropped for `reason` with an untrusted detail (sanitized before it is kept).
    DroppedText {
        /// Why.
        reason: ReasonCode,
        /// What the journey says beside the reason.
        detail: &'a str,
    },
    /// Its export request is in a disk spool at shutdown, neither delivered nor dropped;
    /// `destination` names the spooled destination in the journey.
    Spooled {
        /// The destination whose spool holds it.
        destination: Detail,
    },
}

impl Outcome<'_> {
    /// Dropped for `reason`, nothing more to say.
    pub(crate) fn dropped(reason: ReasonCode) -> Self {
        Outcome::Dropped {
            reason,
            detail: None,
        }
    }

    /// Delivered to `destination` (a literal).
    pub(crate) fn delivered_to(destination: &'static str) -> Self {
        Outcome::Delivered {
            destination: Detail::Static(destination),
        }
    }
}

/// The events a batch decides, as the ledger needs them: each event's [`EventRef`] (its case,
/// its creation time, its journey), or, once let go, only a tally. A disk spool's backlog
/// beyond `diagnostics.recorder_events` is tallied, so the memory it takes does not grow with
/// the backlog: per case counts and the mean creation time (emit-to-export latency is recorded
/// at that mean), and each journey ends with an `on_disk` step.
#[derive(Debug)]
pub(crate) enum Accounted {
    /// Every event, journey and all.
    Detailed(Vec<EventRef>),
    /// Counts only.
    Tallied(Tally),
}

/// Per case counts of let-go events, and their mean creation time.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    cases: Vec<(std::sync::Arc<str>, u64)>,
    events: u64,
    mean_created: Option<std::time::SystemTime>,
}

impl Accounted {
    /// The number of events.
    pub(crate) fn len(&self) -> usize {
        match self {
            Accounted::Detailed(v) => v.len(),
            Accounted::Tallied(t) => t.events as usize,
        }
    }

    /// The events whose journeys can still take steps.
    pub(crate) fn detailed(&self) -> &[EventRef] {
        match self {
            Accounted::Detailed(v) => v,
            Accounted::Tallied(_) => &[],
        }
    }

    /// Lets the events go: each journey ends with an `on_disk` step (`detail`), and only a tally
    /// is kept. Does nothing to a tally.
    pub(crate) fn tally(&mut self, recorder: &super::recorder::FlightRecorder, detail: &str) {
        let Accounted::Detailed(events) = self else {
            return;
        };
        let mut cases: Vec<(std::sync::Arc<str>, u64)> = Vec::new();
        let mut sum_ms: u128 = 0;
        for ev in events.iter() {
            recorder.record(ev, Stage::OnDisk, None, Some(detail));
            match cases.iter_mut().find(|(c, _)| *c == ev.case) {
                Some((_, n)) => *n += 1,
                None => cases.push((ev.case.clone(), 1)),
            }
            sum_ms += ev
                .created_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
        }
        let n = events.len() as u64;
        let mean_created = (n > 0).then(|| {
            let ms = (sum_ms / u128::from(n)).min(u128::from(u64::MAX)) as u64;
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)
        });
        *self = Accounted::Tallied(Tally {
            cases,
            events: n,
            mean_created,
        });
    }
}

/// One case's counters.
#[derive(Debug, Default)]
pub(crate) struct CaseCells {
    received: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
}

impl CaseCells {
    pub(super) fn counts(&self) -> CaseCounts {
        CaseCounts {
            received: self.received.load(Relaxed),
            delivered: self.delivered.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
        }
    }
}

/// Work in each stage (see [`Counters::pending`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// Events taken by `emit()` that the gateway actor has not routed or dropped yet.
    pub gateway: i64,
    /// Trace events handed to the batcher and not yet delivered or dropped.
    pub trace: i64,
    /// Metric/log events handed to the pool and not yet delivered or dropped.
    pub metric_log: i64,
    /// Companion log records queued for export and not yet exported or lost.
    pub companion_logs: i64,
}

impl Pending {
    /// Events in flight in any stage (companion records are not events).
    pub fn events(&self) -> i64 {
        self.gateway + self.trace + self.metric_log
    }

    /// No stage holds an event. (Each gauge on its own: a sum could hide one stage's transient
    /// negative reading behind another's event.)
    pub fn no_event_held(&self) -> bool {
        self.gateway <= 0 && self.trace <= 0 && self.metric_log <= 0
    }
}

impl Counters {
    fn gauge_add(&self, holder: Holder, n: i64) {
        match holder {
            Holder::Intake => {}
            // Striped: `emit()` adds on the caller's thread, the gateway actor subtracts on its own.
            Holder::Gateway => self.gateway_pending.add(n, Ordering::SeqCst),
            Holder::TracePath => {
                self.trace_pending.fetch_add(n, Ordering::SeqCst);
            }
            Holder::MetricLogPath => {
                self.metric_pending.fetch_add(n, Ordering::SeqCst);
            }
        }
    }

    fn case_cells(&self, case: &str) -> Option<&CaseCells> {
        let map = self.by_case.get()?;
        map.get(case).or_else(|| map.get(OTHER_CASE))
    }

    /// An event enters `holder` (its gauge goes up). Before the hand-over that may fail.
    pub(crate) fn enter(&self, holder: Holder) {
        self.gauge_add(holder, 1);
    }

    /// An event has left `holder` for the next stage (its gauge goes down). After the hand-over.
    pub(crate) fn leave(&self, holder: Holder) {
        self.gauge_add(holder, -1);
    }

    /// The gateway actor took an event of `case` from its queue.
    pub(crate) fn received(&self, case: &str) {
        if let Some(c) = self.case_cells(case) {
            c.received.fetch_add(1, Relaxed);
        }
    }

    /// `emit()` refused an event: dropped for `reason`, never held by any stage. `message` is the
    /// error the caller got; the journey keeps it unless `flood` (a full queue, emits during
    /// shutdown) and the recorder is shedding refusals (see `FlightRecorder::admit_refusal`).
    pub(crate) fn refuse(&self, ev: &EventRef, reason: ReasonCode, message: &str, flood: bool) {
        self.dropped[reason.index()].fetch_add(1, Relaxed);
        // Unknown or invalid case names are counted under `other` (bounded cardinality).
        if let Some(c) = self.case_cells(&ev.case) {
            c.dropped.fetch_add(1, Relaxed);
        }
        if !flood || self.recorder.admit_refusal() {
            self.recorder
                .record(ev, Stage::Refused, Some(reason), Some(message));
        }
    }

    /// One event held by `holder` leaves the in-flight column with `outcome`.
    pub(crate) fn settle(&self, ev: &EventRef, holder: Holder, outcome: Outcome<'_>) {
        self.settle_all(std::iter::once(ev), holder, outcome);
    }

    /// Every event of `events`, all held by `holder`, leaves the in-flight column with the same
    /// `outcome` (a delivered or failed export batch).
    pub(crate) fn settle_all<'e, I>(&self, events: I, holder: Holder, outcome: Outcome<'_>)
    where
        I: IntoIterator<Item = &'e EventRef>,
        I::IntoIter: Clone,
    {
        let events = events.into_iter();
        let mut n = 0u64;
        match outcome {
            Outcome::Delivered { destination } => {
                let signal = match holder {
                    Holder::TracePath => SignalType::Trace,
                    // An event the gateway delivers itself goes the metric/log way.
                    Holder::MetricLogPath | Holder::Gateway | Holder::Intake => {
                        SignalType::MetricLog
                    }
                };
                for ev in events.clone() {
                    n += 1;
                    if let Some(c) = self.case_cells(&ev.case) {
                        c.delivered.fetch_add(1, Relaxed);
                    }
                    self.emit_to_export(signal, ev.age());
                }
                let column = match signal {
                    SignalType::Trace => &self.delivered_trace,
                    SignalType::MetricLog => &self.delivered_metric_log,
                };
                column.fetch_add(n, Relaxed);
                self.recorder.record_batch(
                    events,
                    &[
                        (Stage::Exported, Some(destination)),
                        (Stage::Delivered, None),
                    ],
                );
            }
            Outcome::Dropped { reason, detail } => {
                for ev in events {
                    n += 1;
                    self.count_drop(&ev.case, reason);
                    self.recorder
                        .record_static(ev, Stage::Dropped, Some(reason), detail);
                }
            }
            Outcome::DroppedText { reason, detail } => {
                for ev in events {
                    n += 1;
                    self.count_drop(&ev.case, reason);
                    self.recorder
                        .record(ev, Stage::Dropped, Some(reason), Some(detail));
                }
            }
            Outcome::Spooled { destination } => {
                n = events.clone().count() as u64;
                self.spooled.fetch_add(n, Relaxed);
                self.recorder
                    .record_batch(events, &[(Stage::LeftInSpool, Some(destination))]);
            }
        }
        self.gauge_add(holder, -(n as i64));
    }

    /// The events of `accounted`, all held by `holder`, leave the in-flight column with the same
    /// `outcome`: [`Counters::settle_all`] for detailed events; for a tally, the same columns,
    /// per case counts and latency (at the tally's mean), without journeys.
    pub(crate) fn settle_accounted(
        &self,
        accounted: &Accounted,
        holder: Holder,
        outcome: Outcome<'_>,
    ) {
        let t = match accounted {
            Accounted::Detailed(events) => return self.settle_all(events, holder, outcome),
            Accounted::Tallied(t) => t,
        };
        match outcome {
            Outcome::Delivered { .. } => {
                let (signal, column) = match holder {
                    Holder::TracePath => (SignalType::Trace, &self.delivered_trace),
                    _ => (SignalType::MetricLog, &self.delivered_metric_log),
                };
                column.fetch_add(t.events, Relaxed);
                for (case, n) in &t.cases {
                    if let Some(c) = self.case_cells(case) {
                        c.delivered.fetch_add(*n, Relaxed);
                    }
                }
                // Recovered events have no creation time here: no latency for them.
                if let Some(age) = t.mean_created.map(|m| m.elapsed().unwrap_or_default()) {
                    for _ in 0..t.events {
                        self.emit_to_export(signal, age);
                    }
                }
            }
            Outcome::Dropped { reason, .. } | Outcome::DroppedText { reason, .. } => {
                self.dropped[reason.index()].fetch_add(t.events, Relaxed);
                for (case, n) in &t.cases {
                    if let Some(c) = self.case_cells(case) {
                        c.dropped.fetch_add(*n, Relaxed);
                    }
                }
            }
            Outcome::Spooled { .. } => {
                self.spooled.fetch_add(t.events, Relaxed);
            }
        }
        self.gauge_add(holder, -(t.events as i64));
    }

    /// `n` events of export requests found in a disk spool at start enter `holder` (they are
    /// sent, or dropped, like emitted ones).
    pub(crate) fn recover(&self, holder: Holder, n: u64) {
        self.recovered.fetch_add(n, Relaxed);
        self.gauge_add(holder, n as i64);
    }

    /// `n` recovered events (no journey, no case) leave `holder` with `outcome`: a tally of
    /// them, settled as [`Counters::settle_accounted`] does.
    pub(crate) fn settle_recovered(&self, holder: Holder, n: u64, outcome: Outcome<'_>) {
        if n == 0 {
            return;
        }
        let tally = Tally {
            cases: Vec::new(),
            events: n,
            mean_created: None,
        };
        self.settle_accounted(&Accounted::Tallied(tally), holder, outcome);
    }

    /// An event that never had an [`EventRef`] (a stream entry that did not decode) is dropped
    /// for `reason`, counted under the `other` case. It was held by `holder`.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn settle_unnamed(&self, holder: Holder, reason: ReasonCode) {
        self.count_drop(OTHER_CASE, reason);
        self.gauge_add(holder, -1);
    }

    fn count_drop(&self, case: &str, reason: ReasonCode) {
        self.dropped[reason.index()].fetch_add(1, Relaxed);
        if let Some(c) = self.case_cells(case) {
            c.dropped.fetch_add(1, Relaxed);
        }
    }

    /// At the end of shutdown: every event still in flight never will be delivered. Each is
    /// dropped for `reason` with its journey closed, per case where the recorder still holds its
    /// journey and under `other` where it was evicted. Companion records still queued are lost.
    /// Returns the number of events settled.
    pub(crate) fn settle_remaining(&self, reason: ReasonCode) -> u64 {
        let closed_cases = self.recorder.close_open_journeys(reason);
        let lost_companions = self.companion_pending.swap(0, Ordering::SeqCst);
        if lost_companions > 0 {
            self.companions_lost(lost_companions as u64);
        }
        let unsettled = self.snapshot().in_flight;
        if unsettled == 0 {
            return 0;
        }
        self.dropped[reason.index()].fetch_add(unsettled, Relaxed);
        let named = closed_cases.iter().take(unsettled as usize);
        let evicted = unsettled.saturating_sub(closed_cases.len() as u64);
        for case in named
            .map(String::as_str)
            .chain((0..evicted).map(|_| OTHER_CASE))
        {
            if let Some(c) = self.case_cells(case) {
                c.dropped.fetch_add(1, Relaxed);
            }
        }
        unsettled
    }

    /// `n` companion log records were queued for export.
    pub(crate) fn companions_queued(&self, n: u64) {
        self.companion_pending.fetch_add(n as i64, Ordering::SeqCst);
    }

    /// `n` queued companion log records are done with: exported (counted with their batch's
    /// records), or lost (`lost`: counted in `companion_logs_dropped`).
    pub(crate) fn companions_done(&self, n: u64, lost: bool) {
        self.companion_pending.fetch_sub(n as i64, Ordering::SeqCst);
        if lost {
            self.companions_lost(n);
        }
    }

    /// `n` companion log records never queued (no room).
    pub(crate) fn companions_lost(&self, n: u64) {
        self.companion_logs_dropped.fetch_add(n, Relaxed);
    }

    /// Work in each stage: events held by the gateway, the trace path, the metric/log path, and
    /// companion log records waiting for export.
    pub fn pending(&self) -> Pending {
        let load = |g: &AtomicI64| g.load(Ordering::SeqCst);
        Pending {
            gateway: self.gateway_pending.sum(Ordering::SeqCst),
            trace: load(&self.trace_pending),
            metric_log: load(&self.metric_pending),
            companion_logs: load(&self.companion_pending),
        }
    }

    /// Events dropped for `reason` so far.
    pub fn dropped_count(&self, reason: ReasonCode) -> u64 {
        self.dropped[reason.index()].load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{TelemetryCase, TelemetryContext, TelemetryEnvelope};
    use crate::diagnostics::recorder::EventRef;

    fn event(c: &Counters, case: TelemetryCase) -> EventRef {
        let env = TelemetryEnvelope::new(case, TelemetryContext::tenant("t1"));
        let mut ev = EventRef::of(&env);
        c.recorder().attach(&mut ev);
        c.emitted.add(1, Relaxed);
        c.enter(Holder::Gateway);
        c.received(&ev.case);
        ev
    }

    fn counters() -> Counters {
        let c = Counters::default();
        c.init_cases(["workflow_run", "tool_execution"]);
        c
    }

    /// Every reason code, through every holder, is counted in its column and its case,
    /// explained in the journey and balanced in the ledger, by the one call. A code added to
    /// `reason_codes!` is in `ReasonCode::ALL`, so this test covers it with no edit here.
    #[test]
    fn every_outcome_is_counted_explained_and_balanced_by_one_call() {
        for holder in [Holder::Gateway, Holder::TracePath, Holder::MetricLogPath] {
            for reason in ReasonCode::ALL {
                let c = counters();
                let ev = event(&c, TelemetryCase::WorkflowRun);
                if holder != Holder::Gateway {
                    c.enter(holder);
                    c.leave(Holder::Gateway);
                }
                assert_eq!(c.pending().events(), 1);
                c.settle(&ev, holder, Outcome::dropped(reason));

                let snap = c.snapshot();
                assert_eq!(snap.dropped_for(reason), 1, "{reason} counted");
                assert!(snap.is_settled(), "{reason} balanced: {snap:?}");
                assert_eq!(c.pending(), Pending::default(), "{reason} left its holder");
                assert_eq!(c.by_case()["workflow_run"].dropped, 1, "{reason} per case");
                let journey = &c.recorder().explain(&ev.event_id.to_string()).journeys[0];
                let outcome = journey.outcome().expect("the journey ended");
                assert_eq!(outcome.stage, Stage::Dropped);
                assert_eq!(outcome.reason, Some(reason), "{reason} explained");
            }
        }
    }

    #[test]
    fn delivery_counts_its_signal_case_and_journey() {
        let c = counters();
        let trace = event(&c, TelemetryCase::WorkflowRun);
        let log = event(&c, TelemetryCase::ToolExecution);
        c.enter(Holder::TracePath);
        c.leave(Holder::Gateway);
        c.enter(Holder::MetricLogPath);
        c.leave(Holder::Gateway);
        c.settle(
            &trace,
            Holder::TracePath,
            Outcome::delivered_to("collector"),
        );
        c.settle_all([&log], Holder::MetricLogPath, Outcome::delivered_to("logs"));

        let snap = c.snapshot();
        assert_eq!(snap.delivered_by_signal.trace, 1);
        assert_eq!(snap.delivered_by_signal.metric_log, 1);
        assert!(snap.is_settled());
        assert_eq!(c.pending(), Pending::default());
        assert_eq!(c.by_case()["workflow_run"].delivered, 1);
        assert_eq!(c.by_case()["tool_execution"].received, 1);
        let journey = &c.recorder().explain(&trace.event_id.to_string()).journeys[0];
        let exported = journey.steps.iter().find(|s| s.stage == Stage::Exported);
        assert_eq!(
            exported.and_then(|s| s.detail.as_deref()),
            Some("collector")
        );
        assert_eq!(journey.outcome().map(|s| s.stage), Some(Stage::Delivered));
    }

    #[test]
    fn refusals_unnamed_drops_and_shutdown_balance() {
        let c = counters();
        // Refused at emit(): never held.
        let env = TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant(""));
        c.emitted.add(1, Relaxed);
        c.refuse(
            &EventRef::of_untrusted(&env, &c.log),
            ReasonCode::InvalidEnvelope,
            "bad",
            false,
        );
        // A stream entry that did not decode.
        c.emitted.add(1, Relaxed);
        c.settle_unnamed(Holder::Intake, ReasonCode::DeadLettered);
        // Held at shutdown, with companion records still queued.
        let _held = event(&c, TelemetryCase::WorkflowRun);
        c.companions_queued(3);
        assert!(!c.snapshot().is_settled());

        assert_eq!(c.settle_remaining(ReasonCode::Shutdown), 1);
        let snap = c.snapshot();
        assert!(snap.is_settled(), "{snap:?}");
        assert_eq!(snap.dropped_for(ReasonCode::InvalidEnvelope), 1);
        assert_eq!(snap.dropped_for(ReasonCode::DeadLettered), 1);
        assert_eq!(snap.dropped_for(ReasonCode::Shutdown), 1);
        assert_eq!(snap.companion_logs_dropped, 3);
        assert_eq!(c.pending().companion_logs, 0);
        let cases = c.by_case();
        assert_eq!(cases["workflow_run"].dropped, 2);
        assert_eq!(cases["other"].dropped, 1);
    }
}
