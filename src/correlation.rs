//! Trace and span ids derived from the ids a host already has.
//!
//! A workflow run and its node executions must land in one trace even when the host never
//! created a span: the trace id is derived from the run id, the run's root span id from the run
//! id, and every other span id from the event id. Derivation is UUIDv5 (SHA-1 name-based) under
//! fixed namespaces, so it is stable across processes, machines and versions of this crate: a
//! worker in another process derives the same ids.
//!
//! Host-given ids always win; derivation only fills what is missing (see
//! [`Correlation`](crate::contracts::Correlation) for the table).

use opentelemetry::trace::{SpanId, TraceId};
use uuid::Uuid;

use crate::contracts::TelemetryEnvelope;

const TRACE_NS: Uuid = Uuid::from_u128(0x5f0c_1d2e_8a3b_4c5d_9e6f_7a8b_9c0d_1e2f);
const ROOT_SPAN_NS: Uuid = Uuid::from_u128(0x6a1d_2e3f_9b4c_5d6e_af70_8b9c_0d1e_2f30);
const SPAN_NS: Uuid = Uuid::from_u128(0x7b2e_3f40_ac5d_6e7f_b081_9cad_1e2f_3041);

fn nonzero_span(bytes: [u8; 8]) -> SpanId {
    if bytes == [0; 8] {
        SpanId::from_bytes([0, 0, 0, 0, 0, 0, 0, 1])
    } else {
        SpanId::from_bytes(bytes)
    }
}

fn first8(u: Uuid) -> [u8; 8] {
    let b = u.as_bytes();
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

// Ids as hex, written and read without `core::fmt` (its machinery costs more than the digits):
// the same text as `TraceId`'s and `SpanId`'s `Display`, lowercase and zero-padded.

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// An id's bytes (8 or 16) as hex.
fn hex_of(bytes: &[u8]) -> String {
    // Digits gathered on the stack and copied once: a `String::push` per char encodes each
    // as UTF-8 on the way in.
    let mut digits = [0u8; 32];
    let n = (bytes.len() * 2).min(digits.len());
    for (pair, b) in digits[..n].chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0x0f)];
    }
    // Hex digits are ASCII: the check passes.
    std::str::from_utf8(&digits[..n])
        .map(str::to_owned)
        .unwrap_or_default()
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// `N` bytes from exactly `2 * N` hex digits.
fn bytes_of<const N: usize>(hex: &str) -> Option<[u8; N]> {
    let digits = hex.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// A trace id as 32 lowercase hex digits (what `TraceId`'s `Display` writes).
pub(crate) fn trace_hex(id: TraceId) -> String {
    hex_of(&id.to_bytes())
}

/// A span id as 16 lowercase hex digits (what `SpanId`'s `Display` writes).
pub(crate) fn span_hex(id: SpanId) -> String {
    hex_of(&id.to_bytes())
}

/// A trace id from hex: what `TraceId::from_hex` accepts (it also takes fewer digits).
pub(crate) fn parse_trace_id(hex: &str) -> Option<TraceId> {
    match bytes_of::<16>(hex) {
        Some(b) => Some(TraceId::from_bytes(b)),
        None => TraceId::from_hex(hex).ok(),
    }
}

/// A span id from hex: what `SpanId::from_hex` accepts.
pub(crate) fn parse_span_id(hex: &str) -> Option<SpanId> {
    match bytes_of::<8>(hex) {
        Some(b) => Some(SpanId::from_bytes(b)),
        None => SpanId::from_hex(hex).ok(),
    }
}

/// The HTTP header a host takes a request's correlation id from, and returns it in.
pub const CORRELATION_HEADER: &str = "x-correlation-id";

/// The longest correlation id [`accept_or_mint`] accepts from a caller.
pub const MAX_ACCEPTED_CORRELATION_ID: usize = 128;

/// A request's correlation id: the caller's (an `X-Correlation-ID` header, say) when it is
/// usable, 1 to [`MAX_ACCEPTED_CORRELATION_ID`] bytes of `A-Z a-z 0-9 - _ . :`, otherwise a new
/// UUIDv4. An untrusted header value never reaches events, logs or a response unchecked.
pub fn accept_or_mint(offered: Option<&str>) -> String {
    match offered.map(str::trim) {
        Some(v)
            if !v.is_empty()
                && v.len() <= MAX_ACCEPTED_CORRELATION_ID
                && v.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
                }) =>
        {
            v.to_owned()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// The trace id of everything that belongs to run `run_id`.
pub fn derive_trace_id(run_id: &str) -> TraceId {
    let u = Uuid::new_v5(&TRACE_NS, run_id.as_bytes());
    let id = TraceId::from_bytes(*u.as_bytes());
    if id == TraceId::INVALID {
        TraceId::from_bytes([1; 16])
    } else {
        id
    }
}

/// The span id of run `run_id`'s root span.
pub fn derive_root_span_id(run_id: &str) -> SpanId {
    nonzero_span(first8(Uuid::new_v5(&ROOT_SPAN_NS, run_id.as_bytes())))
}

/// The span id of a non-root event.
pub fn derive_span_id(event_key: &str) -> SpanId {
    nonzero_span(first8(Uuid::new_v5(&SPAN_NS, event_key.as_bytes())))
}

/// Fills the envelope's missing trace id, span id, parent span id and correlation id, following
/// the table on [`Correlation`](crate::contracts::Correlation). `root_span`: the case is the
/// root span of its run (the routing table's `root_span`).
pub fn resolve(env: &mut TelemetryEnvelope, root_span: bool) {
    resolve_with(env, root_span, &mut RunIds::new(0));
}

/// The derived ids of recent runs (trace id and root span id, as hex), so that the events of a
/// run after its first one skip two hashes and two hex formats. Bounded: when full it is
/// cleared and refilled by the runs that follow.
#[derive(Debug, Default)]
pub struct RunIds {
    ids: crate::FastMap<String, (String, String)>,
    capacity: usize,
    /// The ids of the last run asked for, when `capacity` is 0.
    last: (String, String),
}

impl RunIds {
    /// A cache of at most `capacity` runs (0: no caching).
    pub fn new(capacity: usize) -> Self {
        RunIds {
            ids: Default::default(),
            capacity,
            last: Default::default(),
        }
    }

    /// (trace id, root span id) of `run`, as hex: borrowed from the cache, or from `last`
    /// when caching is off (the cache is then empty).
    fn of(&mut self, run: &str) -> (&str, &str) {
        let derive = || {
            (
                trace_hex(derive_trace_id(run)),
                span_hex(derive_root_span_id(run)),
            )
        };
        if self.capacity == 0 {
            self.last = derive();
        } else if !self.ids.contains_key(run) {
            if self.ids.len() >= self.capacity {
                self.ids.clear();
            }
            self.ids.insert(run.to_owned(), derive());
        }
        let last = (self.last.0.as_str(), self.last.1.as_str());
        self.ids
            .get(run)
            .map_or(last, |(trace, root)| (trace.as_str(), root.as_str()))
    }
}

/// [`resolve`] with the ids of recent runs cached in `runs` (the gateway actor keeps one).
///
/// Allocates only the strings it stores: the event id is formatted on the stack, and a cached
/// run's ids are copied straight from the cache.
pub fn resolve_with(env: &mut TelemetryEnvelope, root_span: bool, runs: &mut RunIds) {
    let mut buf = Uuid::encode_buffer();
    let event_key: &str = env.event_id.hyphenated().encode_lower(&mut buf);
    let c = &mut env.correlation;
    let run_ids = c.run_id.as_deref().map(|run| runs.of(run));
    if c.trace_id.is_none() {
        c.trace_id = Some(match run_ids {
            Some((trace, _)) => trace.to_owned(),
            None => trace_hex(derive_trace_id(event_key)),
        });
    }
    let is_root = root_span && c.parent_span_id.is_none();
    if c.span_id.is_none() {
        c.span_id = Some(match (run_ids, is_root) {
            (Some((_, root)), true) => root.to_owned(),
            _ => span_hex(derive_span_id(event_key)),
        });
    }
    if c.parent_span_id.is_none() && !root_span {
        if let Some((_, root)) = run_ids {
            c.parent_span_id = Some(root.to_owned());
        }
    }
    if c.correlation_id.is_none() {
        c.correlation_id = Some(match &c.run_id {
            Some(run) => run.clone(),
            None => event_key.to_owned(),
        });
    }
}

/// The trace ids of an event, parsed from its (gateway-resolved) correlation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResolvedIds {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent_span_id: SpanId,
}

impl ResolvedIds {
    pub(crate) fn of(env: &TelemetryEnvelope) -> Self {
        let c = &env.correlation;
        let trace_id = c
            .trace_id
            .as_deref()
            .and_then(parse_trace_id)
            .unwrap_or_else(|| derive_trace_id(&env.event_id.to_string()));
        let span_id = c
            .span_id
            .as_deref()
            .and_then(parse_span_id)
            .unwrap_or_else(|| derive_span_id(&env.event_id.to_string()));
        let parent_span_id = c
            .parent_span_id
            .as_deref()
            .and_then(parse_span_id)
            .unwrap_or(SpanId::INVALID);
        ResolvedIds {
            trace_id,
            span_id,
            parent_span_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_correlation_id_is_kept_and_anything_else_replaced() {
        assert_eq!(accept_or_mint(Some("req-42")), "req-42");
        assert_eq!(accept_or_mint(Some(" req:7.a_b ")), "req:7.a_b");
        for bad in [
            None,
            Some(""),
            Some("a b"),
            Some("x\r\ny: z"),
            Some("<script>"),
        ] {
            let minted = accept_or_mint(bad);
            assert!(
                uuid::Uuid::parse_str(&minted).is_ok(),
                "{bad:?} -> {minted}"
            );
        }
        let long = "a".repeat(MAX_ACCEPTED_CORRELATION_ID + 1);
        assert_ne!(accept_or_mint(Some(&long)), long);
    }
    use crate::contracts::{TelemetryCase, TelemetryContext};

    #[test]
    fn a_run_and_its_nodes_share_one_trace() {
        let mut run =
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
                .with_run_id("run-42");
        let mut node =
            TelemetryEnvelope::new(TelemetryCase::NodeExecution, TelemetryContext::tenant("t"))
                .with_run_id("run-42");
        resolve(&mut run, true);
        resolve(&mut node, false);
        assert_eq!(run.correlation.trace_id, node.correlation.trace_id);
        assert_eq!(node.correlation.parent_span_id, run.correlation.span_id);
        assert!(run.correlation.parent_span_id.is_none());
        assert_ne!(node.correlation.span_id, run.correlation.span_id);
        assert_eq!(run.correlation.correlation_id.as_deref(), Some("run-42"));
    }

    #[test]
    fn the_run_cache_changes_no_id() {
        // Runs interleaved, more of them than the cache holds (it is cleared and refilled),
        // and events without a run: every id equals what resolution without a cache gives.
        let mut runs = RunIds::new(2);
        for i in 0..30u32 {
            let run = (i % 5 != 4).then(|| format!("run-{}", i % 4));
            let case = if i % 3 == 0 {
                TelemetryCase::WorkflowRun
            } else {
                TelemetryCase::NodeExecution
            };
            let mut env = TelemetryEnvelope::new(case, TelemetryContext::tenant("t"));
            if let Some(run) = run {
                env = env.with_run_id(run);
            }
            let root = i % 3 == 0;
            let mut plain = env.clone();
            resolve_with(&mut env, root, &mut runs);
            resolve(&mut plain, root);
            assert_eq!(env.correlation, plain.correlation, "event {i}");
            if env.correlation.run_id.is_none() {
                let key = env.event_id.to_string();
                assert_eq!(
                    env.correlation.correlation_id.as_deref(),
                    Some(key.as_str())
                );
                let span = derive_span_id(&key).to_string();
                assert_eq!(env.correlation.span_id.as_deref(), Some(span.as_str()));
            }
        }
    }

    #[test]
    fn hex_is_what_the_opentelemetry_types_write_and_read() {
        use proptest::prelude::*;
        proptest!(|(t in any::<u128>(), sp in any::<u64>(), text in "[0-9a-fA-F+]{0,34}")| {
            let (trace, span) = (TraceId::from(t), SpanId::from(sp));
            prop_assert_eq!(trace_hex(trace), trace.to_string());
            prop_assert_eq!(span_hex(span), span.to_string());
            prop_assert_eq!(parse_trace_id(&trace.to_string()), Some(trace));
            prop_assert_eq!(parse_span_id(&span.to_string()), Some(span));
            // Any text: the same answer as the SDK's parser.
            prop_assert_eq!(parse_trace_id(&text), TraceId::from_hex(&text).ok());
            prop_assert_eq!(parse_span_id(&text), SpanId::from_hex(&text).ok());
        });
    }

    #[test]
    fn derivation_is_stable() {
        // Fixed vectors, from Python's `uuid.uuid5` (an independent UUIDv5): a change here
        // breaks cross-version and cross-process trace joins.
        assert_eq!(
            derive_trace_id("run-42").to_string(),
            "a1bd150aa1725074be8ba5b06cfbbdd1"
        );
        assert_eq!(
            derive_root_span_id("run-42").to_string(),
            "ff5a63b0da295779"
        );
        assert_eq!(
            derive_span_id("01890a5d-ac96-774b-bcce-b302099a8057").to_string(),
            "4c9640fe230a56ae"
        );
        assert_ne!(derive_trace_id("run-42"), derive_trace_id("run-43"));
    }

    #[test]
    fn host_ids_win() {
        let mut e =
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
                .with_run_id("run-1");
        e.correlation.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
        resolve(&mut e, true);
        assert_eq!(
            e.correlation.trace_id.as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }
}
