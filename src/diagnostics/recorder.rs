//! The flight recorder: the last N events' journeys, for "why did event X not arrive?".
//!
//! Each journey is the ordered list of steps one event took (received, routed, offloaded,
//! deduplicated, rehydrated, batched, exported, delivered or dropped with a reason), indexed by
//! event id and by correlation id. [`FlightRecorder::explain`] answers with the journeys of an
//! event id or of every event sharing a correlation id, as a typed value that serializes to JSON.
//!
//! Bounded: at most `diagnostics.recorder_events` journeys (the oldest is evicted first) of at
//! most `diagnostics.recorder_steps_per_event` steps (further steps are counted, not kept).
//!
//! Cheap enough to stay on for every event: the index (sharded by event id, each shard behind
//! its own lock) is consulted once per event per stage that takes it from a queue
//! ([`FlightRecorder::attach`]); after that the journey travels with the event in its
//! [`EventRef`] and each step is written under the journey's own, uncontended lock. Details
//! that are literals of this crate are kept as `&'static str`, without a copy or a pass of the
//! sanitizer.
//! Nothing from a payload is recorded: only ids, the case, the tenant, stage names, reason codes,
//! destination names and sanitized error messages, so user content and secrets cannot reach it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::time::{Instant, SystemTime};

use crate::FastMap;
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use smallvec::SmallVec;
use uuid::Uuid;

use super::ReasonCode;

/// The longest detail string kept per step, in bytes (plus an ellipsis when cut).
pub const MAX_DETAIL_BYTES: usize = crate::logging::MAX_LOG_VALUE_BYTES;

/// What happened to an event at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `emit()` refused it (invalid, queue full, shut down).
    Refused,
    /// The gateway actor took it from the gateway queue.
    Received,
    /// The routing table sent it to a path (detail: `trace` or `metric_log`).
    Routed,
    /// Its payload was written to the payload store (detail: the ref).
    Offloaded,
    /// The dedup store said it is new.
    DedupChecked,
    /// Its payload was read back (detail: `store` or `fallback`).
    Rehydrated,
    /// A metric handler handled it (metrics updated, log record queued).
    Handled,
    /// It joined a trace batch (detail: number of destinations).
    Batched,
    /// One destination accepted it (detail: the destination).
    Exported,
    /// One destination failed it (detail: destination and error).
    ExportFailed,
    /// Its batch was appended to a disk spool (detail: destination and record id); it is sent
    /// from there.
    Spooled,
    /// Its record was found in a disk spool at start: an earlier process emitted it (detail:
    /// destination and record id); its outcome follows when the record is sent.
    Recovered,
    /// Final for this process: its record was still in the disk spool when the gateway shut down
    /// (detail: destination); the next process on the same spool sends it.
    LeftInSpool,
    /// Final in the flight recorder: its batch is in a disk spool (detail: destination and
    /// record), beyond the backlog the recorder follows (`diagnostics.recorder_events` events
    /// per spool); its outcome is counted in the ledger when the record is sent.
    OnDisk,
    /// Final: delivered.
    Delivered,
    /// Final: dropped with a reason.
    Dropped,
    /// Not lost, but degraded with a reason.
    Degraded,
}

impl Stage {
    fn is_final(self) -> bool {
        matches!(
            self,
            Stage::Delivered | Stage::Dropped | Stage::Refused | Stage::LeftInSpool | Stage::OnDisk
        )
    }
}

/// One step of a journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// When it happened (RFC 3339 in JSON).
    #[serde(serialize_with = "ser_time")]
    pub at: SystemTime,
    /// What happened.
    pub stage: Stage,
    /// The reason code, for drops, refusals, degrades and failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReasonCode>,
    /// Extra facts (destination, ref, sanitized error), at most [`MAX_DETAIL_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn ser_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    let text = time::OffsetDateTime::from(*t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    s.serialize_str(&text)
}

/// Everything recorded about one event id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Journey {
    /// The event id.
    pub event_id: Uuid,
    /// The correlation id the event carried (or its run id, or its event id).
    pub correlation_id: String,
    /// Other correlation ids a copy of the same event id came with (a re-send under a new
    /// request: `explain` of either id finds the journey). At most
    /// [`MAX_CORRELATIONS_PER_EVENT`]` - 1`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_correlation_ids: Vec<String>,
    /// The tenant.
    pub tenant_id: String,
    /// The case name.
    pub case: String,
    /// True when the first step kept is not `received`/`refused`: the journey was evicted and
    /// started again midway (a metric handler took the event after the eviction), or its start
    /// happened in another process (a worker behind another transport).
    pub starts_midway: bool,
    /// Steps in the order they happened.
    pub steps: Vec<Step>,
    /// Steps that happened but were not kept (the journey was full).
    pub steps_not_kept: u32,
}

impl Journey {
    /// The final step (delivered, dropped or refused), if the journey has ended.
    ///
    /// An event id can travel more than once (a re-sent duplicate): if any copy was delivered,
    /// the event was delivered, and that is the outcome; the re-send's `dropped: duplicate` step
    /// stays in the journey.
    pub fn outcome(&self) -> Option<&Step> {
        self.steps
            .iter()
            .find(|s| s.stage == Stage::Delivered)
            .or_else(|| self.steps.iter().rev().find(|s| s.stage.is_final()))
    }
}

/// The answer to "what happened to X?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// What was asked: an event id or a correlation id.
    pub query: String,
    /// The journeys found, oldest first. Empty when the recorder has nothing (never seen, or
    /// evicted). At most one page ([`MAX_JOURNEYS_PER_ANSWER`]).
    pub journeys: Vec<Journey>,
    /// How many journeys the query matched in all; more than `journeys.len()` when the answer
    /// is one page of several.
    pub total: usize,
    /// Where the next page starts (`offset` of [`FlightRecorder::explain_page`], `&offset=` of
    /// `/debug/events`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
}

impl Explanation {
    /// The explanation as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".into())
    }
}

/// Identifies the event a step belongs to. Cheap to clone: the ids are shared, not copied, as
/// the reference travels with its event through every stage.
#[derive(Debug, Clone)]
pub struct EventRef {
    /// The event id.
    pub event_id: Uuid,
    /// Its correlation id.
    pub correlation_id: Arc<str>,
    /// Its tenant.
    pub tenant_id: Arc<str>,
    /// Its case name.
    pub case: Arc<str>,
    /// When the host created it (for emit-to-export latency).
    pub created_at: SystemTime,
    /// Its journey in the flight recorder, once attached ([`FlightRecorder::attach`]).
    pub(crate) journey: Option<Arc<JourneyCell>>,
}

/// Shared copies of strings that many events carry (tenant ids, run ids), so that each event's
/// [`EventRef`] clones an `Arc` instead of allocating. Bounded: when full it is cleared and
/// refilled by the events that follow.
#[derive(Debug)]
pub(crate) struct Interned {
    strings: FastMap<Arc<str>, ()>,
    capacity: usize,
}

impl Interned {
    /// At most `capacity` strings (0: nothing is kept, every call allocates).
    pub(crate) fn new(capacity: usize) -> Self {
        Interned {
            strings: FastMap::default(),
            capacity,
        }
    }

    /// The shared copy of `s`.
    pub(crate) fn get(&mut self, s: &str) -> Arc<str> {
        if let Some((kept, ())) = self.strings.get_key_value(s) {
            return kept.clone();
        }
        let fresh: Arc<str> = Arc::from(s);
        if self.capacity > 0 {
            if self.strings.len() >= self.capacity {
                self.strings.clear();
            }
            self.strings.insert(fresh.clone(), ());
        }
        fresh
    }
}

/// The name of a case as a shared string; built-in names are made once per process.
fn case_name(case: &crate::contracts::TelemetryCase) -> Arc<str> {
    static BUILT_IN: LazyLock<Vec<Arc<str>>> = LazyLock::new(|| {
        crate::contracts::TelemetryCase::BUILT_IN
            .iter()
            .map(|c| Arc::from(c.as_str()))
            .collect()
    });
    match case.built_in_index() {
        Some(i) => BUILT_IN[i].clone(),
        None => Arc::from(case.as_str()),
    }
}

impl EventRef {
    /// The reference of an envelope.
    pub fn of(env: &crate::contracts::TelemetryEnvelope) -> Self {
        Self::of_interned(env, &mut Interned::new(0))
    }

    /// [`EventRef::of`] with the strings events repeat (the tenant id, a run id standing for
    /// the correlation id) shared from `strings` rather than allocated for each event.
    pub(crate) fn of_interned(
        env: &crate::contracts::TelemetryEnvelope,
        strings: &mut Interned,
    ) -> Self {
        let correlation_id: Arc<str> =
            match (&env.correlation.correlation_id, &env.correlation.run_id) {
                // A host's correlation id is usually one request's: not worth keeping.
                (Some(c), _) => Arc::from(c.as_str()),
                (None, Some(run)) => strings.get(run),
                (None, None) => {
                    let mut buf = Uuid::encode_buffer();
                    Arc::from(&*env.event_id.hyphenated().encode_lower(&mut buf))
                }
            };
        EventRef {
            event_id: env.event_id,
            correlation_id,
            tenant_id: strings.get(&env.context.tenant_id),
            case: case_name(&env.case),
            created_at: env.created_at,
            journey: None,
        }
    }

    /// The reference of an envelope that failed validation: its ids are untrusted, so they are
    /// sanitized and bounded like log values before they reach the recorder.
    pub fn of_untrusted(
        env: &crate::contracts::TelemetryEnvelope,
        log: &crate::logging::LogScope,
    ) -> Self {
        let clean = |s: &str| Arc::from(log.sanitize(s).as_ref());
        EventRef {
            event_id: env.event_id,
            correlation_id: clean(&env.effective_correlation_id()),
            tenant_id: clean(&env.context.tenant_id),
            case: clean(env.case.as_str()),
            created_at: env.created_at,
            journey: None,
        }
    }

    /// The reference of an event read back from a disk spool an earlier process left: its ids
    /// come from disk, so they are sanitized and bounded like log values.
    pub(crate) fn recovered(
        event_id: Uuid,
        correlation_id: &str,
        tenant_id: &str,
        case: &str,
        created_at: SystemTime,
        log: &crate::logging::LogScope,
    ) -> Self {
        let clean = |s: &str| Arc::from(log.sanitize(s).as_ref());
        EventRef {
            event_id,
            correlation_id: clean(correlation_id),
            tenant_id: clean(tenant_id),
            case: clean(case),
            created_at,
            journey: None,
        }
    }

    /// Time since the host created the event.
    pub fn age(&self) -> std::time::Duration {
        self.created_at.elapsed().unwrap_or_default()
    }
}

/// A step's detail as held: a literal from this crate needs neither sanitizing nor a copy.
#[derive(Debug, Clone)]
pub(crate) enum Detail {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(Box<str>),
}

impl Detail {
    fn as_str(&self) -> &str {
        match self {
            Detail::Static(s) => s,
            Detail::Shared(s) => s,
            Detail::Owned(s) => s,
        }
    }
}

/// A step as held (see [`Step`] for the exported form).
#[derive(Debug, Clone)]
struct Held {
    at: SystemTime,
    stage: Stage,
    reason: Option<ReasonCode>,
    detail: Option<Detail>,
}

impl Held {
    fn export(&self) -> Step {
        Step {
            at: self.at,
            stage: self.stage,
            reason: self.reason,
            detail: self.detail.as_ref().map(|d| d.as_str().to_owned()),
        }
    }

    fn is_final(&self) -> bool {
        self.stage.is_final()
    }
}

/// The most journeys one answer holds (one page): a journey is at most
/// `recorder_steps_per_event` steps of at most [`MAX_DETAIL_BYTES`] each, so an answer stays
/// well under a megabyte whatever a client put under one correlation id.
pub const MAX_JOURNEYS_PER_ANSWER: usize = 100;

/// Steps kept inline before a journey allocates: a delivered event takes about five.
const INLINE_STEPS: usize = 6;

/// The most correlation ids one journey is indexed under: its first copy's, and those of
/// re-sent copies (each a duplicate of it) under other requests. A client that re-sends one
/// event id under endless correlation ids cannot grow the index past this.
pub const MAX_CORRELATIONS_PER_EVENT: usize = 4;

/// A journey as held (see [`Journey`] for the exported form).
#[derive(Debug)]
struct Entry {
    correlation_id: Arc<str>,
    tenant_id: Arc<str>,
    case: Arc<str>,
    steps: SmallVec<[Held; INLINE_STEPS]>,
    steps_not_kept: u32,
}

impl Entry {
    fn new(ev: &EventRef) -> Self {
        Entry {
            correlation_id: ev.correlation_id.clone(),
            tenant_id: ev.tenant_id.clone(),
            case: ev.case.clone(),
            steps: SmallVec::new(),
            steps_not_kept: 0,
        }
    }

    fn push(&mut self, step: Held, max_steps: usize) {
        if self.steps.len() < max_steps {
            self.steps.push(step);
            return;
        }
        // Full: a final step still replaces the last non-final one, so a journey never loses
        // its outcome to its own length.
        self.steps_not_kept += 1;
        if step.is_final() {
            if let Some(slot) = self.steps.iter().rposition(|s| !s.is_final()) {
                self.steps.remove(slot);
                self.steps.push(step);
            }
        }
    }

    fn export(&self, event_id: Uuid, correlations: &[Arc<str>]) -> Journey {
        Journey {
            event_id,
            correlation_id: self.correlation_id.to_string(),
            other_correlation_ids: correlations
                .iter()
                .filter(|c| **c != self.correlation_id)
                .map(|c| c.to_string())
                .collect(),
            tenant_id: self.tenant_id.to_string(),
            case: self.case.to_string(),
            starts_midway: self
                .steps
                .first()
                .is_some_and(|s| !matches!(s.stage, Stage::Received | Stage::Refused)),
            steps: self.steps.iter().map(Held::export).collect(),
            steps_not_kept: self.steps_not_kept,
        }
    }

    fn has_outcome(&self) -> bool {
        self.steps.iter().any(Held::is_final)
    }
}

/// One event's journey. The recorder's index points to it, and so does the event's
/// [`EventRef`] while the event travels: a step is written through the reference under the
/// journey's own (uncontended) lock, without touching the index.
#[derive(Debug)]
pub struct JourneyCell(Mutex<Entry>);

/// One shard of the index: its own lock, bound and eviction order.
#[derive(Debug, Default)]
struct Shard {
    /// Each journey with the correlation ids it is indexed under (kept here so that evicting it
    /// touches neither the journey nor its lock): its first copy's, then re-sent copies'.
    journeys: FastMap<Uuid, (Correlations, Arc<JourneyCell>)>,
    order: VecDeque<Uuid>,
    by_correlation: FastMap<Arc<str>, SmallVec<[Uuid; 1]>>,
    max_events: usize,
    evicted: u64,
}

impl Shard {
    /// The journey of `ev`, created (evicting the oldest when full) if the index has none.
    fn cell(&mut self, ev: &EventRef) -> Arc<JourneyCell> {
        if let Some((cids, c)) = self.journeys.get_mut(&ev.event_id) {
            let cell = c.clone();
            // A copy under another correlation id (a duplicate re-sent by a later request):
            // index it there too, so `explain` of that request finds the duplicate's outcome.
            if cids.len() < MAX_CORRELATIONS_PER_EVENT && !cids.contains(&ev.correlation_id) {
                cids.push(ev.correlation_id.clone());
                self.by_correlation
                    .entry(ev.correlation_id.clone())
                    .or_default()
                    .push(ev.event_id);
            }
            return cell;
        }
        while self.journeys.len() >= self.max_events {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((cids, _cell)) = self.journeys.remove(&old) {
                for cid in &cids {
                    if let Some(ids) = self.by_correlation.get_mut(cid) {
                        ids.retain(|id| *id != old);
                        if ids.is_empty() {
                            self.by_correlation.remove(cid);
                        }
                    }
                }
                self.evicted += 1;
            }
        }
        self.order.push_back(ev.event_id);
        self.by_correlation
            .entry(ev.correlation_id.clone())
            .or_default()
            .push(ev.event_id);
        let cell = Arc::new(JourneyCell(Mutex::new(Entry::new(ev))));
        let mut cids = Correlations::new();
        cids.push(ev.correlation_id.clone());
        self.journeys.insert(ev.event_id, (cids, cell.clone()));
        cell
    }
}

/// The correlation ids one journey is indexed under (one, unless re-sent under others).
type Correlations = SmallVec<[Arc<str>; 1]>;

/// Journeys per shard below which the recorder is not split (small recorders keep an exact,
/// global eviction order).
const MIN_EVENTS_PER_SHARD: usize = 256;
/// The most shards: enough that the gateway, the batcher, the handlers and the exporters
/// rarely meet on one lock.
const MAX_SHARDS: usize = 16;
/// At most one refusal per this many nanoseconds is recorded when refusals come in a flood
/// (`emit()` already told the caller which event it refused).
const REFUSAL_RECORD_INTERVAL_NANOS: u64 = 100_000;

/// The bounded recorder (see the module docs).
#[derive(Debug)]
pub struct FlightRecorder {
    shards: RwLock<Vec<Mutex<Shard>>>,
    max_steps: AtomicUsize,
    epoch: Instant,
    last_refusal_nanos: AtomicU64,
    refusals_not_recorded: AtomicU64,
    /// The gateway's sanitizer for untrusted details.
    log: Arc<crate::logging::LogScope>,
}

impl Default for FlightRecorder {
    fn default() -> Self {
        Self::new(
            crate::config::DEFAULT_RECORDER_EVENTS,
            crate::config::DEFAULT_RECORDER_STEPS_PER_EVENT,
        )
    }
}

/// Details go through the gateway's sanitizer for log lines: secrets redacted, line breaks and
/// control characters removed, length bounded.
fn clip(log: &crate::logging::LogScope, detail: &str) -> Detail {
    Detail::Owned(log.sanitize(detail).into())
}

fn shards_for(max_events: usize) -> Vec<Mutex<Shard>> {
    let max_events = max_events.max(1);
    let n = (max_events / MIN_EVENTS_PER_SHARD).clamp(1, MAX_SHARDS);
    // Shard capacities sum to exactly `max_events`.
    (0..n)
        .map(|i| {
            Mutex::new(Shard {
                max_events: max_events / n + usize::from(i < max_events % n),
                ..Default::default()
            })
        })
        .collect()
}

fn shard_of(id: &Uuid, n: usize) -> usize {
    // UUIDv7 and v4 ids end in random bits.
    (id.as_u128() as usize) % n
}

impl FlightRecorder {
    /// A recorder of at most `max_events` journeys of `max_steps` steps.
    pub fn new(max_events: usize, max_steps: usize) -> Self {
        FlightRecorder {
            shards: RwLock::new(shards_for(max_events)),
            max_steps: AtomicUsize::new(max_steps.max(1)),
            epoch: Instant::now(),
            last_refusal_nanos: AtomicU64::new(0),
            refusals_not_recorded: AtomicU64::new(0),
            log: Arc::default(),
        }
    }

    /// This recorder sanitizes details with `log` (its gateway's scope).
    pub(crate) fn with_log(mut self, log: Arc<crate::logging::LogScope>) -> Self {
        self.log = log;
        self
    }

    /// Changes the bounds (at start, before any event).
    pub fn configure(&self, max_events: usize, max_steps: usize) {
        *self.shards.write() = shards_for(max_events);
        self.max_steps.store(max_steps.max(1), Relaxed);
    }

    /// Links `ev` to its journey (found, or started), so that its later steps are written
    /// through it. The gateway does this once per event, a metric handler once per event it
    /// takes from its transport.
    pub fn attach(&self, ev: &mut EventRef) {
        // One event (the gateway actor's case): no ordering to build.
        let shards = self.shards.read();
        let cell = shards[shard_of(&ev.event_id, shards.len())].lock().cell(ev);
        ev.journey = Some(cell);
    }

    /// [`FlightRecorder::attach`] for a batch, taking each shard's lock once.
    pub fn attach_all(&self, events: &mut [EventRef]) {
        let shards = self.shards.read();
        let n = shards.len();
        // (shard, position), stable: events keep their order within a shard.
        let mut order: Vec<(usize, usize)> = events
            .iter()
            .enumerate()
            .map(|(i, ev)| (shard_of(&ev.event_id, n), i))
            .collect();
        order.sort_by_key(|&(s, _)| s);
        for run in order.chunk_by(|a, b| a.0 == b.0) {
            let mut shard = shards[run[0].0].lock();
            for &(_, i) in run {
                let cell = shard.cell(&events[i]);
                events[i].journey = Some(cell);
            }
        }
    }

    fn put(&self, ev: &EventRef, step: Held) {
        let max_steps = self.max_steps.load(Relaxed);
        match &ev.journey {
            Some(cell) => cell.0.lock().push(step, max_steps),
            None => {
                let shards = self.shards.read();
                let i = shard_of(&ev.event_id, shards.len());
                let cell = shards[i].lock().cell(ev);
                cell.0.lock().push(step, max_steps);
            }
        }
    }

    /// Records one step. `detail` is untrusted text (an error, a ref): it is sanitized and
    /// copied. For a literal, [`FlightRecorder::record_static`] does neither.
    pub fn record(
        &self,
        ev: &EventRef,
        stage: Stage,
        reason: Option<ReasonCode>,
        detail: Option<&str>,
    ) {
        let step = Held {
            at: SystemTime::now(),
            stage,
            reason,
            detail: detail.map(|d| clip(&self.log, d)),
        };
        self.put(ev, step);
    }

    /// Records one step whose detail is a literal of this crate.
    pub fn record_static(
        &self,
        ev: &EventRef,
        stage: Stage,
        reason: Option<ReasonCode>,
        detail: Option<&'static str>,
    ) {
        let step = Held {
            at: SystemTime::now(),
            stage,
            reason,
            detail: detail.map(Detail::Static),
        };
        self.put(ev, step);
    }

    /// Records `steps` for every event of `events`, in order (a handler batch, an exported log
    /// batch, a delivered trace group), with one clock reading for the batch.
    pub(crate) fn record_batch<'a>(
        &self,
        events: impl IntoIterator<Item = &'a EventRef>,
        steps: &[(Stage, Option<Detail>)],
    ) {
        let at = SystemTime::now();
        let max_steps = self.max_steps.load(Relaxed);
        for ev in events {
            let push = |e: &mut Entry| {
                for (stage, detail) in steps {
                    let step = Held {
                        at,
                        stage: *stage,
                        reason: None,
                        detail: detail.clone(),
                    };
                    e.push(step, max_steps);
                }
            };
            match &ev.journey {
                Some(cell) => push(&mut cell.0.lock()),
                None => {
                    let shards = self.shards.read();
                    let i = shard_of(&ev.event_id, shards.len());
                    let cell = shards[i].lock().cell(ev);
                    push(&mut cell.0.lock());
                }
            }
        }
    }

    /// Whether a refusal at `emit()` should be recorded now: always, unless refusals come
    /// faster than one per 100 µs (a flood: queue full, or emits during shutdown), when the
    /// rest are only counted ([`FlightRecorder::refusals_not_recorded`]). A flood of refusals
    /// would otherwise evict every useful journey, and slow the caller it is refusing.
    pub fn admit_refusal(&self) -> bool {
        let now = (self.epoch.elapsed().as_nanos() as u64).max(1);
        let last = self.last_refusal_nanos.load(Relaxed);
        if last != 0 && now.saturating_sub(last) < REFUSAL_RECORD_INTERVAL_NANOS {
            self.refusals_not_recorded.fetch_add(1, Relaxed);
            return false;
        }
        if self
            .last_refusal_nanos
            .compare_exchange(last, now, Relaxed, Relaxed)
            .is_err()
        {
            self.refusals_not_recorded.fetch_add(1, Relaxed);
            return false;
        }
        true
    }

    /// Refusals counted but not recorded because they came in a flood.
    pub fn refusals_not_recorded(&self) -> u64 {
        self.refusals_not_recorded.load(Relaxed)
    }

    /// The journeys of an event id, or of every event with that correlation id: the first
    /// [`MAX_JOURNEYS_PER_ANSWER`], oldest first (see [`FlightRecorder::explain_page`]).
    pub fn explain(&self, query: &str) -> Explanation {
        self.explain_page(query, 0, MAX_JOURNEYS_PER_ANSWER)
    }

    /// At most `limit` journeys of `query` (an event id or a correlation id), oldest first,
    /// starting at `offset`; [`Explanation::total`] says how many there are, and
    /// [`Explanation::next_offset`] where the next page starts. Only the page is copied out, so
    /// a correlation id that a client put on thousands of events costs one page, not all of
    /// them.
    pub fn explain_page(&self, query: &str, offset: usize, limit: usize) -> Explanation {
        let limit = limit.clamp(1, MAX_JOURNEYS_PER_ANSWER);
        let shards = self.shards.read();
        let mut found: Vec<(Uuid, Correlations, Arc<JourneyCell>)> = Vec::new();
        if let Ok(id) = Uuid::parse_str(query) {
            let i = (id.as_u128() as usize) % shards.len();
            if let Some((cids, c)) = shards[i].lock().journeys.get(&id) {
                found.push((id, cids.clone(), c.clone()));
            }
        }
        let by_event_id = found.first().map(|(id, _, _)| *id);
        for shard in shards.iter() {
            let s = shard.lock();
            let Some(ids) = s.by_correlation.get(query) else {
                continue;
            };
            for id in ids {
                // Only the event-id hit (at most one, first) can also be under this
                // correlation id: one comparison, not a scan of everything found.
                if by_event_id == Some(*id) {
                    continue;
                }
                if let Some((cids, c)) = s.journeys.get(id) {
                    found.push((*id, cids.clone(), c.clone()));
                }
            }
        }
        drop(shards);
        // Oldest first across shards: by the first step's time, read without copying a journey.
        let mut keyed: Vec<(Option<SystemTime>, Uuid, Correlations, Arc<JourneyCell>)> = found
            .into_iter()
            .map(|(id, cids, c)| {
                let first = c.0.lock().steps.first().map(|s| s.at);
                (first, id, cids, c)
            })
            .collect();
        keyed.sort_by_key(|(first, id, _, _)| (*first, *id));
        let total = keyed.len();
        let journeys = keyed
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, id, cids, c)| c.0.lock().export(id, &cids))
            .collect();
        let end = offset.saturating_add(limit);
        Explanation {
            query: query.to_owned(),
            journeys,
            total,
            next_offset: (end < total).then_some(end),
        }
    }

    /// Ends every journey that has no final step yet with `dropped` under `reason` (shutdown).
    /// Returns the case of each journey it closed.
    pub fn close_open_journeys(&self, reason: ReasonCode) -> Vec<String> {
        let shards = self.shards.read();
        let max_steps = self.max_steps.load(Relaxed);
        let mut closed = Vec::new();
        for shard in shards.iter() {
            let s = shard.lock();
            for (_, cell) in s.journeys.values() {
                let mut j = cell.0.lock();
                if j.has_outcome() {
                    continue;
                }
                let step = Held {
                    at: SystemTime::now(),
                    stage: Stage::Dropped,
                    reason: Some(reason),
                    detail: None,
                };
                if j.steps.len() < max_steps {
                    j.steps.push(step);
                } else if let Some(last) = j.steps.last_mut() {
                    // Keep the outcome even in a full journey: it is the one step that matters.
                    *last = step;
                    j.steps_not_kept += 1;
                }
                closed.push(j.case.to_string());
            }
        }
        closed
    }

    /// (journeys held, journeys evicted so far).
    pub fn usage(&self) -> (usize, u64) {
        let shards = self.shards.read();
        shards.iter().fold((0, 0), |(n, e), s| {
            let s = s.lock();
            (n + s.journeys.len(), e + s.evicted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interned_reference_equals_the_plain_one_and_shares_its_strings() {
        use crate::contracts::{TelemetryCase, TelemetryContext, TelemetryEnvelope};
        let mut strings = Interned::new(2);
        let run = |tenant: &str, run: Option<&str>, cid: Option<&str>| {
            let mut e = TelemetryEnvelope::new(
                TelemetryCase::NodeExecution,
                TelemetryContext::tenant(tenant),
            );
            e.correlation.run_id = run.map(str::to_owned);
            e.correlation.correlation_id = cid.map(str::to_owned);
            e
        };
        let events = [
            run("acme", Some("run-1"), None),
            run("acme", Some("run-1"), None),
            run("globex", None, Some("req-7")),
            run("acme", None, None),
            run("initech", Some("run-2"), None),
        ];
        let mut refs = Vec::new();
        for e in &events {
            let (a, b) = (EventRef::of(e), EventRef::of_interned(e, &mut strings));
            assert_eq!(
                (
                    a.event_id,
                    &a.correlation_id,
                    &a.tenant_id,
                    &a.case,
                    a.created_at
                ),
                (
                    b.event_id,
                    &b.correlation_id,
                    &b.tenant_id,
                    &b.case,
                    b.created_at
                )
            );
            refs.push(b);
        }
        // The same run and tenant: one allocation shared.
        assert!(Arc::ptr_eq(&refs[0].tenant_id, &refs[1].tenant_id));
        assert!(Arc::ptr_eq(
            &refs[0].correlation_id,
            &refs[1].correlation_id
        ));
        // Bounded: at most 2 strings kept, whatever came through.
        assert!(strings.strings.len() <= 2);
        let mut none = Interned::new(0);
        let (x, y) = (none.get("acme"), none.get("acme"));
        assert!(!Arc::ptr_eq(&x, &y) && none.strings.is_empty());
    }

    fn ev(id: u128, cid: &str) -> EventRef {
        EventRef {
            event_id: Uuid::from_u128(id),
            correlation_id: cid.into(),
            tenant_id: "t".into(),
            case: "app_created".into(),
            created_at: SystemTime::now(),
            journey: None,
        }
    }

    #[test]
    fn journeys_are_found_by_event_and_by_correlation_id() {
        let r = FlightRecorder::new(10, 8);
        r.record(&ev(1, "req-1"), Stage::Received, None, None);
        r.record(
            &ev(1, "req-1"),
            Stage::Dropped,
            Some(ReasonCode::EnterpriseDisabled),
            None,
        );
        r.record(&ev(2, "req-1"), Stage::Received, None, None);
        r.record(&ev(2, "req-1"), Stage::Delivered, None, None);
        let by_id = r.explain(&Uuid::from_u128(1).to_string());
        assert_eq!(by_id.journeys.len(), 1);
        let out = by_id.journeys[0].outcome().unwrap();
        assert_eq!(out.reason, Some(ReasonCode::EnterpriseDisabled));
        let by_cid = r.explain("req-1");
        assert_eq!(by_cid.journeys.len(), 2);
        assert!(by_cid.to_json().contains("\"enterprise_disabled\""));
        assert!(r.explain("nope").journeys.is_empty());
    }

    #[test]
    fn bounded_in_events_and_steps() {
        let r = FlightRecorder::new(3, 2);
        for i in 0..10 {
            r.record(&ev(i, &format!("c{i}")), Stage::Received, None, None);
        }
        assert_eq!(r.usage(), (3, 7));
        assert!(
            r.explain("c0").journeys.is_empty(),
            "evicted from the cid index too"
        );
        for _ in 0..5 {
            r.record(&ev(9, "c9"), Stage::Batched, None, None);
        }
        let j = &r.explain("c9").journeys[0];
        assert_eq!(j.steps.len(), 2);
        assert_eq!(j.steps_not_kept, 4);
        assert_eq!(r.close_open_journeys(ReasonCode::Shutdown).len(), 3);
        let j = &r.explain("c9").journeys[0];
        assert_eq!(j.outcome().unwrap().reason, Some(ReasonCode::Shutdown));
    }

    #[test]
    fn a_resend_after_delivery_keeps_the_delivered_outcome() {
        let r = FlightRecorder::new(10, 16);
        let e = ev(1, "c");
        r.record(&e, Stage::Received, None, None);
        r.record(&e, Stage::Delivered, None, None);
        r.record(&e, Stage::Received, None, None);
        r.record(&e, Stage::Dropped, Some(ReasonCode::Duplicate), None);
        let j = &r.explain("c").journeys[0];
        assert_eq!(j.outcome().unwrap().stage, Stage::Delivered);
        assert!(j
            .steps
            .iter()
            .any(|s| s.reason == Some(ReasonCode::Duplicate)));
    }

    #[test]
    fn a_full_journey_keeps_its_outcome_and_is_not_closed_at_shutdown() {
        let r = FlightRecorder::new(10, 3);
        let e = ev(1, "c");
        for _ in 0..5 {
            r.record(&e, Stage::Exported, None, Some("sink"));
        }
        r.record(&e, Stage::Delivered, None, None);
        assert!(r.close_open_journeys(ReasonCode::Shutdown).is_empty());
        let j = &r.explain("c").journeys[0];
        assert_eq!(j.steps.len(), 3);
        assert_eq!(j.outcome().unwrap().stage, Stage::Delivered);
        assert_eq!(j.steps_not_kept, 3);
    }

    #[test]
    fn a_journey_seen_first_midway_says_so() {
        let r = FlightRecorder::new(10, 4);
        r.record(&ev(1, "a"), Stage::Received, None, None);
        r.record(&ev(2, "b"), Stage::Exported, None, None);
        assert!(!r.explain("a").journeys[0].starts_midway);
        assert!(r.explain("b").journeys[0].starts_midway);
    }

    #[test]
    fn details_are_clipped_and_have_no_line_breaks() {
        let r = FlightRecorder::new(3, 4);
        let long = format!("bad\r\nthing {}", "x".repeat(1000));
        r.record(&ev(1, "c"), Stage::ExportFailed, None, Some(&long));
        let d = r.explain("c").journeys[0].steps[0].detail.clone().unwrap();
        assert!(!d.contains('\n') && !d.contains('\r'));
        assert!(d.len() <= MAX_DETAIL_BYTES + crate::logging::TRUNCATION_MARKER.len());
    }
}
