//! How a telemetry case becomes OpenTelemetry data: span, log record, metric updates.
//!
//! The catalogue of names (all under `export.namespace`, default `app`) is documented in
//! `docs/telemetry-catalogue.md`; a test checks that every instrument name built here appears
//! there. Payload field conventions read by the mapping:
//!
//! | field | meaning |
//! |---|---|
//! | `status` | `succeeded`, `failed`, ... (`failed`, `error` and `exception` mark the span as an error) |
//! | `error` | error message (also marks the span as an error) |
//! | `duration_ms` / `elapsed_time` | duration in milliseconds / seconds |
//! | `total_tokens` / `tokens` | tokens used |
//! | `rating` | feedback rating (`like`, `dislike`) |
//! | `flagged` | moderation outcome |
//!
//! With `export.include_content = false` the user-content fields ([`CONTENT_FIELDS`]) are
//! replaced by a reference string `ref:{tenant_id}/{event_id}#{field}` before they reach any
//! span, log or sink.
//!
//! Every payload field that becomes an attribute goes through the [`Redactor`] first (a denied
//! key's value becomes the replacement; strings lose the parts matching a secret pattern;
//! objects and arrays are redacted before they are serialized), and so does the error text that
//! becomes a span status or a log body. Redaction always comes before truncation.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub(crate) use crate::correlation::ResolvedIds;
use crate::FastMap;
use parking_lot::RwLock;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, Severity};
use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::trace::{SpanContext, SpanKind, Status, TraceFlags, TraceState};
use opentelemetry::{InstrumentationScope, Key, KeyValue, Value};
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLogger};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};
use serde_json::Value as Json;

use super::encode::{self, AttrValue};
use crate::contracts::{
    CaseMetric, FieldValue, JsonObject, Payload, TelemetryCase, TelemetryEnvelope,
};
use crate::diagnostics::ReasonCode;
use crate::redaction::{KeyRule, Redactor};
use crate::routing::RoutingTable;

/// Payload fields that hold user content, redacted when `export.include_content = false`.
pub const CONTENT_FIELDS: [&str; 12] = [
    "inputs",
    "outputs",
    "query",
    "answer",
    "prompt",
    "message",
    "content",
    "text",
    "feedback",
    "process_data",
    "instruction",
    "conversation_name",
];

/// The longest string attribute value kept, in bytes; longer values are cut at a char boundary.
pub const MAX_ATTRIBUTE_BYTES: usize = 8 * 1024;

/// The instrumentation scope of everything the gateway produces.
pub(crate) fn scope() -> InstrumentationScope {
    InstrumentationScope::builder("telemetry-gateway")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The metric instruments of the catalogue.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    requests: Counter<u64>,
    tokens: Counter<u64>,
    degraded: Counter<u64>,
    slow_operations: Counter<u64>,
    /// The metric of each built-in case, by [`TelemetryCase::built_in_index`] (from the case
    /// table: `contracts::CaseFacts::metric`). Cases that share an instrument share it here.
    by_case: Vec<CaseInstrument>,
}

/// A built-in case's instrument.
#[derive(Debug, Clone)]
enum CaseInstrument {
    Duration(Histogram<f64>),
    Count(Counter<u64>, Option<(&'static str, FieldValue)>),
}

/// The instruments every event may update, whatever its case: (name, description, unit).
const COMMON_INSTRUMENTS: [(&str, &str, &str); 4] = [
    (
        "requests.total",
        "Telemetry events handled, by case and status",
        "{event}",
    ),
    ("tokens.total", "Model tokens used", "{token}"),
    (
        "events.degraded.total",
        "Metric/log events handled without their payload, by reason (rehydration_failed, payload_ref_refused)",
        "{event}",
    ),
    (
        "slow_operations.total",
        "Trace events slower than their case's slow_threshold_ms, by case",
        "{event}",
    ),
];

/// Every instrument name the mapping creates, for the catalogue test.
pub fn instrument_names(ns: &str) -> Vec<String> {
    let mut names: Vec<&str> = COMMON_INSTRUMENTS.iter().map(|(n, _, _)| *n).collect();
    for case in TelemetryCase::BUILT_IN.iter() {
        if let Some(facts) = case.facts() {
            let name = facts.metric.instrument();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.iter().map(|s| format!("{ns}.{s}")).collect()
}

impl Instruments {
    pub(crate) fn new(meter: &Meter, ns: &str) -> Self {
        let counter = |(name, desc, unit): (&str, &'static str, &'static str)| {
            meter
                .u64_counter(format!("{ns}.{name}"))
                .with_description(desc)
                .with_unit(unit)
                .build()
        };
        let mut built: HashMap<&'static str, CaseInstrument> = HashMap::new();
        let by_case = TelemetryCase::BUILT_IN
            .iter()
            .filter_map(|case| case.facts())
            .map(|facts| {
                let metric = facts.metric;
                built
                    .entry(metric.instrument())
                    .or_insert_with(|| match metric {
                        CaseMetric::Duration {
                            instrument,
                            description,
                        } => CaseInstrument::Duration(
                            meter
                                .f64_histogram(format!("{ns}.{instrument}"))
                                .with_description(description)
                                .with_unit("s")
                                .build(),
                        ),
                        CaseMetric::Count {
                            instrument,
                            description,
                            unit,
                        } => CaseInstrument::Count(counter((instrument, description, unit)), None),
                        CaseMetric::CountBy {
                            instrument,
                            description,
                            unit,
                            field,
                            value,
                        } => CaseInstrument::Count(
                            counter((instrument, description, unit)),
                            Some((field, value)),
                        ),
                    })
                    .clone()
            })
            .collect();
        let [requests, tokens, degraded, slow_operations] = COMMON_INSTRUMENTS.map(counter);
        Instruments {
            requests,
            tokens,
            degraded,
            slow_operations,
            by_case,
        }
    }
}

/// What one log record is built from: the parts a span shares with its companion record are
/// worked out once, by the caller.
struct RecordParts<'a> {
    env: &'a TelemetryEnvelope,
    payload: Option<&'a JsonObject>,
    /// Set when the record is built without its payload.
    degraded: Option<ReasonCode>,
    attrs: &'a [KeyValue],
    ids: &'a ResolvedIds,
    /// The payload's failure message, redacted.
    failed: Option<&'a str>,
}

/// The reused buffers of the encoder (`Mapper::encode_span_and_companion`): one per batcher,
/// grown by the first events of a batch and kept.
#[derive(Debug, Default)]
pub(crate) struct EncodeBuffers {
    attrs: encode::Attributes,
    scratch: encode::Scratch,
    body: String,
}

/// Span and log names for one case, computed once at start.
#[derive(Debug, Clone)]
struct CaseNames {
    span: &'static str,
    event: &'static str,
}

/// What the mapper knows about a payload key, worked out once per distinct key: the attribute
/// key `{ns}.{key}` (shared, not copied, by every attribute that uses it) and how its values
/// are redacted.
#[derive(Debug, Clone)]
struct KeyInfo {
    key: Key,
    /// A user-content field while `export.include_content = false`: replaced by a reference.
    content: bool,
    /// A deny-listed key: its value is replaced.
    denied: bool,
    /// A key the host marked safe: its value is never redacted by pattern.
    safe: bool,
}

/// Distinct payload keys whose attribute key and redaction verdicts are kept; further keys are
/// worked out each time.
pub const MAX_CACHED_KEYS: usize = 4096;

/// Turns envelopes into spans, log records and metric updates (the catalogue in
/// `docs/telemetry-catalogue.md`). Public so that a host, or a benchmark, can use the mapping
/// without the runtime; the runtime builds one per gateway.
#[derive(Debug, Clone)]
pub struct Mapper {
    ns: String,
    include_content: bool,
    /// Keys fixed at start: the fast hasher.
    names: FastMap<String, CaseNames>,
    degraded_event: &'static str,
    slow_event: &'static str,
    instruments: Instruments,
    scope: InstrumentationScope,
    /// Applied to every payload value before it becomes an attribute, a status or a body.
    redactor: Redactor,
    /// The redaction rules of the payload's `status` and `error` (every event reads them).
    status_rule: KeyRule,
    error_rule: KeyRule,
    /// Payload keys seen so far (bounded by [`MAX_CACHED_KEYS`]).
    keys: Arc<RwLock<FastMap<Box<str>, KeyInfo>>>,
    /// `{ns}.payload_ref`, the attribute of an offloaded payload's reference.
    payload_ref_key: Key,
}

/// An attribute's key: a fixed name, or a payload key's `{ns}.{key}` (shared).
#[derive(Debug, Clone, Copy)]
enum AttrKey<'a> {
    Static(&'static str),
    Shared(&'a Key),
}

impl AttrKey<'_> {
    fn as_str(&self) -> &str {
        match self {
            AttrKey::Static(k) => k,
            AttrKey::Shared(k) => k.as_str(),
        }
    }
}

/// A case's span name below the namespace: its row's `span_name`, or a custom case's name.
fn span_suffix(case: &TelemetryCase) -> &str {
    case.facts().map_or(case.as_str(), |f| f.span_name)
}

/// Leaks a name once. Log event names must be `&'static str` in the OTel API; the names are
/// built once per routing-table row at start, so the leak is bounded by the config.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

impl Mapper {
    /// A mapper naming everything `{ns}.*`, with the cases of `table`, its instruments on
    /// `meter`, and `redactor` applied to every payload value.
    pub fn new(
        ns: &str,
        include_content: bool,
        table: &RoutingTable,
        meter: &Meter,
        redactor: Redactor,
    ) -> Self {
        let names = table
            .rows()
            .into_iter()
            .map(|(name, _)| {
                let case = TelemetryCase::from_name(&name);
                let names = CaseNames {
                    span: leak(format!("{ns}.{}", span_suffix(&case))),
                    event: leak(format!("{ns}.{name}")),
                };
                (name, names)
            })
            .collect();
        Mapper {
            ns: ns.to_owned(),
            include_content,
            names,
            degraded_event: leak(format!("{ns}.event.degraded")),
            slow_event: leak(format!("{ns}.slow_operation")),
            instruments: Instruments::new(meter, ns),
            scope: scope(),
            status_rule: redactor.rule_of("status"),
            error_rule: redactor.rule_of("error"),
            redactor,
            keys: Arc::default(),
            payload_ref_key: Key::from(format!("{ns}.payload_ref")),
        }
    }

    fn key_info(&self, k: &str) -> KeyInfo {
        if let Some(info) = self.keys.read().get(k) {
            return info.clone();
        }
        let info = KeyInfo {
            key: Key::from(Arc::<str>::from(format!("{}.{k}", self.ns))),
            content: !self.include_content && CONTENT_FIELDS.contains(&k),
            denied: self.redactor.key_denied(k),
            safe: self.redactor.key_safe(k),
        };
        let mut keys = self.keys.write();
        if keys.len() < MAX_CACHED_KEYS {
            keys.insert(k.into(), info.clone());
        }
        info
    }

    fn span_name(&self, case: &TelemetryCase) -> Cow<'static, str> {
        match self.names.get(case.as_str()) {
            Some(n) => Cow::Borrowed(n.span),
            None => Cow::Owned(format!("{}.{}", self.ns, case.as_str())),
        }
    }

    fn event_name(&self, case: &TelemetryCase) -> &'static str {
        self.names
            .get(case.as_str())
            .map_or(self.degraded_event, |n| n.event)
    }

    /// The attributes every span and log record of `env` carries.
    pub fn attributes(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
    ) -> Vec<KeyValue> {
        let mut a = Vec::with_capacity(8 + payload.map_or(0, |p| p.len()));
        self.visit_attributes(env, payload, |key, v| {
            let key = match key {
                AttrKey::Static(k) => Key::from_static_str(k),
                AttrKey::Shared(k) => k.clone(),
            };
            // String values are shared (`Arc<str>`): the span and its companion log record
            // carry the same attributes without copying them.
            let value = match v {
                AttrValue::Str(s) => Value::from(Arc::<str>::from(s)),
                AttrValue::Bool(b) => Value::Bool(b),
                AttrValue::I64(i) => Value::I64(i),
                AttrValue::F64(f) => Value::F64(f),
            };
            a.push(KeyValue::new(key, value));
        });
        a
    }

    /// Calls `f` with each attribute of `env`, in order: the one statement of what a span and
    /// a log record carry, for the SDK values ([`attributes`](Self::attributes)) and the
    /// encoder alike.
    fn visit_attributes<F>(&self, env: &TelemetryEnvelope, payload: Option<&JsonObject>, mut f: F)
    where
        F: FnMut(AttrKey<'_>, AttrValue<'_>),
    {
        f(
            AttrKey::Static("telemetry.case"),
            AttrValue::Str(env.case.as_str()),
        );
        // Formatted once, on the stack, and shared by `event.id` and the correlation fallback.
        let mut id_buf = uuid::Uuid::encode_buffer();
        let event_id: &str = env.event_id.hyphenated().encode_lower(&mut id_buf);
        f(AttrKey::Static("event.id"), AttrValue::Str(event_id));
        f(
            AttrKey::Static("tenant.id"),
            AttrValue::Str(&env.context.tenant_id),
        );
        if let Some(app) = &env.context.app_id {
            f(AttrKey::Static("app.id"), AttrValue::Str(app));
        }
        if let Some(user) = &env.context.user_id {
            f(AttrKey::Static("user.id"), AttrValue::Str(user));
        }
        let c = &env.correlation;
        let correlation = match (&c.correlation_id, &c.run_id) {
            (Some(id), _) | (None, Some(id)) => id.as_str(),
            (None, None) => event_id,
        };
        f(
            AttrKey::Static("correlation.id"),
            AttrValue::Str(correlation),
        );
        if let Some(run) = &c.run_id {
            f(AttrKey::Static("run.id"), AttrValue::Str(run));
        }
        if let Payload::Ref(r) = &env.payload {
            f(AttrKey::Shared(&self.payload_ref_key), AttrValue::Str(r));
        }
        let Some(p) = payload else {
            return;
        };
        for (k, v) in p {
            let info = self.key_info(k);
            let key = AttrKey::Shared(&info.key);
            if info.content {
                let r = format!("ref:{}/{}#{k}", env.context.tenant_id, env.event_id);
                f(key, AttrValue::Str(&r));
                continue;
            }
            if info.denied {
                if !v.is_null() {
                    f(key, AttrValue::Str(self.redactor.replacement()));
                }
                continue;
            }
            match v {
                Json::Null => {}
                Json::Bool(b) => f(key, AttrValue::Bool(*b)),
                Json::Number(n) => match n.as_i64() {
                    Some(i) => f(key, AttrValue::I64(i)),
                    None => f(key, AttrValue::F64(n.as_f64().unwrap_or(0.0))),
                },
                Json::String(s) => {
                    let clean = if info.safe {
                        Cow::Borrowed(s.as_str())
                    } else {
                        self.redactor.redact_patterns(s)
                    };
                    f(key, AttrValue::Str(&truncate(&clean)));
                }
                other => {
                    let json = self.redactor.redacted_json(k, other).to_string();
                    f(key, AttrValue::Str(&truncate(&json)));
                }
            }
        }
    }

    /// The event's duration when it exceeds `threshold` (from its payload's `duration_ms`, or
    /// `elapsed_time` in seconds).
    pub fn slower_than(
        &self,
        payload: Option<&JsonObject>,
        threshold: Duration,
    ) -> Option<Duration> {
        duration_of(payload).filter(|d| *d > threshold)
    }

    /// The `{ns}.slow_operation` log event of a trace event that took `took`, over `threshold`,
    /// and its count in `{ns}.slow_operations.total`. It carries the case, both durations, and
    /// the event, run, trace and correlation ids, so slow runs are findable in the logs alone.
    pub fn slow_operation(
        &self,
        logger: &SdkLogger,
        env: &TelemetryEnvelope,
        took: Duration,
        threshold: Duration,
    ) -> SdkLogRecord {
        self.instruments.slow_operations.add(
            1,
            &[
                KeyValue::new("case", env.case.as_str().to_owned()),
                KeyValue::new("tenant.id", env.context.tenant_id.clone()),
            ],
        );
        let ids = ResolvedIds::of(env);
        let mut r = logger.create_log_record();
        r.set_event_name(self.slow_event);
        r.set_timestamp(env.created_at);
        r.set_observed_timestamp(SystemTime::now());
        r.set_severity_number(Severity::Warn);
        r.set_severity_text("WARN");
        let took_ms = took.as_secs_f64() * 1000.0;
        let threshold_ms = threshold.as_millis() as u64;
        r.set_body(AnyValue::from(format!(
            "{} took {took_ms:.0} ms, over its {threshold_ms} ms threshold",
            env.case
        )));
        r.set_trace_context(ids.trace_id, ids.span_id, Some(TraceFlags::SAMPLED));
        let mut buf = uuid::Uuid::encode_buffer();
        let event_id = env.event_id.hyphenated().encode_lower(&mut buf).to_owned();
        r.add_attribute("telemetry.case", env.case.as_str().to_owned());
        r.add_attribute("event.id", event_id);
        r.add_attribute("tenant.id", env.context.tenant_id.clone());
        if let Some(app) = &env.context.app_id {
            r.add_attribute("app.id", app.clone());
        }
        r.add_attribute("correlation.id", env.effective_correlation_id());
        if let Some(run) = &env.correlation.run_id {
            r.add_attribute("run.id", run.clone());
        }
        r.add_attribute("duration_ms", took_ms);
        r.add_attribute("threshold_ms", threshold_ms as i64);
        r
    }

    /// The span of a trace-shaped event. The envelope's correlation ids must be resolved.
    pub fn span(&self, env: &TelemetryEnvelope, payload: Option<&JsonObject>) -> SpanData {
        let ids = ResolvedIds::of(env);
        let failed = self.error_of(payload);
        self.span_from(env, payload, self.attributes(env, payload), &ids, failed)
    }

    /// [`span`](Self::span) with the event's ids parsed already.
    pub(crate) fn span_with(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        ids: &ResolvedIds,
    ) -> SpanData {
        let failed = self.error_of(payload);
        self.span_from(env, payload, self.attributes(env, payload), ids, failed)
    }

    /// The span of a trace-shaped event and its companion log record, sharing one computation
    /// of the attributes, ids and failure message.
    pub fn span_and_companion(
        &self,
        logger: &SdkLogger,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
    ) -> (SpanData, SdkLogRecord) {
        self.span_and_companion_with(logger, env, payload, &ResolvedIds::of(env))
    }

    /// [`span_and_companion`](Self::span_and_companion) with the event's ids parsed already
    /// (the batcher parses them once, for sampling and for the span).
    pub(crate) fn span_and_companion_with(
        &self,
        logger: &SdkLogger,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        ids: &ResolvedIds,
    ) -> (SpanData, SdkLogRecord) {
        let failed = self.error_of(payload);
        let attrs = self.attributes(env, payload);
        let log = self.log_from(
            logger,
            RecordParts {
                env,
                payload,
                degraded: None,
                attrs: &attrs,
                ids,
                failed: failed.as_deref(),
            },
        );
        let span = self.span_from(env, payload, attrs, ids, failed);
        (span, log)
    }

    /// A span's start and end: it ends when the event was created and starts its duration
    /// (`duration_ms` or `elapsed_time`) earlier.
    fn span_times(
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
    ) -> (SystemTime, SystemTime) {
        let end = env.created_at;
        let start = duration_of(payload)
            .and_then(|d| end.checked_sub(d))
            .unwrap_or(end);
        (start, end)
    }

    fn span_from(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        attributes: Vec<KeyValue>,
        ids: &ResolvedIds,
        failed: Option<String>,
    ) -> SpanData {
        let (start, end) = Self::span_times(env, payload);
        let status = match failed {
            Some(msg) => Status::error(msg),
            None => Status::Ok,
        };
        SpanData {
            span_context: SpanContext::new(
                ids.trace_id,
                ids.span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: ids.parent_span_id,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: self.span_name(&env.case),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// The log record of an event: the companion log of a span, or the record of a metric/log
    /// event. `degraded` marks a record built without its payload.
    pub fn log_record(
        &self,
        logger: &SdkLogger,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        degraded: Option<ReasonCode>,
    ) -> SdkLogRecord {
        let ids = ResolvedIds::of(env);
        let failed = self.error_of(payload);
        let attrs = self.attributes(env, payload);
        self.log_from(
            logger,
            RecordParts {
                env,
                payload,
                degraded,
                attrs: &attrs,
                ids: &ids,
                failed: failed.as_deref(),
            },
        )
    }

    /// A log record's event name, severity and body (written into `body`): the one statement
    /// of them, for the SDK record and the encoder alike.
    fn log_facts(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        degraded: Option<ReasonCode>,
        failed: Option<&str>,
        body: &mut String,
    ) -> (&'static str, Severity, &'static str) {
        let event_name = if degraded.is_some() {
            self.degraded_event
        } else {
            self.event_name(&env.case)
        };
        let (sev, text) = match (degraded.is_some(), failed.is_some()) {
            (true, _) => (Severity::Warn, "WARN"),
            (false, true) => (Severity::Error, "ERROR"),
            _ => (Severity::Info, "INFO"),
        };
        // Written piece by piece: `core::fmt` costs more than these few copies.
        body.clear();
        body.push_str(env.case.as_str());
        match (&degraded, failed) {
            (Some(reason), _) => {
                body.push_str(" event degraded: ");
                body.push_str(reason.as_str());
            }
            (None, Some(err)) => {
                body.push_str(" failed: ");
                body.push_str(&truncate(err));
            }
            _ => {
                body.push(' ');
                match status_of(payload) {
                    Some(s) => body.push_str(&self.redactor.redact_by(self.status_rule, s)),
                    None => body.push_str("recorded"),
                }
            }
        }
        (event_name, sev, text)
    }

    fn log_from(&self, logger: &SdkLogger, parts: RecordParts<'_>) -> SdkLogRecord {
        let RecordParts {
            env,
            payload,
            degraded,
            attrs,
            ids,
            failed,
        } = parts;
        let mut r = logger.create_log_record();
        let mut body = String::new();
        let (event_name, sev, text) = self.log_facts(env, payload, degraded, failed, &mut body);
        r.set_event_name(event_name);
        r.set_timestamp(env.created_at);
        r.set_observed_timestamp(SystemTime::now());
        r.set_severity_number(sev);
        r.set_severity_text(text);
        r.set_body(AnyValue::from(body));
        r.set_trace_context(ids.trace_id, ids.span_id, Some(TraceFlags::SAMPLED));
        if let Some(reason) = degraded {
            r.add_attribute("degraded.reason", reason.as_str());
        }
        r.add_attributes(
            attrs
                .iter()
                .map(|kv| (kv.key.clone(), value_to_any(kv.value.clone()))),
        );
        r
    }

    /// The span of a trace event and its companion log record, encoded (OTLP protobuf): the
    /// span appended to `spans` and the record to `logs` (each when given: the destination
    /// takes encoded data), each as one entry of a batch (see `export::encode`).
    /// The attributes are encoded once, for both. The same data as
    /// [`span_and_companion`](Self::span_and_companion).
    pub(crate) fn encode_span_and_companion(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        ids: &ResolvedIds,
        bufs: &mut EncodeBuffers,
        spans: Option<&mut Vec<u8>>,
        logs: Option<&mut Vec<u8>>,
    ) {
        let failed = self.error_of(payload);
        self.encode_attributes(env, payload, bufs);
        if let Some(spans) = spans {
            let (start, end) = Self::span_times(env, payload);
            let name = self.span_name(&env.case);
            let fields = encode::SpanFields {
                trace_id: ids.trace_id.to_bytes(),
                span_id: ids.span_id.to_bytes(),
                parent_span_id: (ids.parent_span_id != opentelemetry::trace::SpanId::INVALID)
                    .then(|| ids.parent_span_id.to_bytes()),
                trace_flags: TraceFlags::SAMPLED.to_u8(),
                name: &name,
                // `Span.SpanKind.SPAN_KIND_INTERNAL`, as `SpanKind::Internal` above.
                kind: 1,
                start_unix_nano: encode::unix_nanos(start),
                end_unix_nano: encode::unix_nanos(end),
                // `Status.StatusCode`: ERROR with the failure message, else OK.
                status_code: if failed.is_some() { 2 } else { 1 },
                status_message: failed.as_deref().unwrap_or(""),
            };
            encode::write_span(spans, &mut bufs.scratch, &fields, &bufs.attrs);
        }
        if let Some(logs) = logs {
            self.encode_record(env, payload, None, ids, failed.as_deref(), bufs, logs);
        }
    }

    /// The log record of a metric/log event, encoded: appended to `out` as one entry of a
    /// batch. The same data as [`log_record`](Self::log_record).
    /// `extra` are attributes a case handler added, after the mapping's.
    pub(crate) fn encode_log_record(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        degraded: Option<ReasonCode>,
        extra: &[KeyValue],
        bufs: &mut EncodeBuffers,
        out: &mut Vec<u8>,
    ) {
        let ids = ResolvedIds::of(env);
        let failed = self.error_of(payload);
        self.encode_attributes(env, payload, bufs);
        for kv in extra {
            let key = kv.key.as_str();
            match &kv.value {
                Value::Bool(b) => bufs.attrs.push(key, AttrValue::Bool(*b)),
                Value::I64(i) => bufs.attrs.push(key, AttrValue::I64(*i)),
                Value::F64(f) => bufs.attrs.push(key, AttrValue::F64(*f)),
                Value::String(s) => bufs.attrs.push(key, AttrValue::Str(s.as_str())),
                // As `value_to_any` does for the SDK record: other values as their text.
                other => bufs.attrs.push(key, AttrValue::Str(&other.to_string())),
            }
        }
        self.encode_record(env, payload, degraded, &ids, failed.as_deref(), bufs, out);
    }

    fn encode_attributes(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        bufs: &mut EncodeBuffers,
    ) {
        let attrs = &mut bufs.attrs;
        attrs.clear();
        self.visit_attributes(env, payload, |k, v| attrs.push(k.as_str(), v));
    }

    /// Writes a record whose attributes are in `bufs.attrs` already.
    #[allow(clippy::too_many_arguments)]
    fn encode_record(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        degraded: Option<ReasonCode>,
        ids: &ResolvedIds,
        failed: Option<&str>,
        bufs: &mut EncodeBuffers,
        out: &mut Vec<u8>,
    ) {
        let (event_name, sev, text) =
            self.log_facts(env, payload, degraded, failed, &mut bufs.body);
        let fields = encode::LogFields {
            time_unix_nano: encode::unix_nanos(env.created_at),
            observed_unix_nano: encode::unix_nanos(SystemTime::now()),
            severity_number: sev as i32,
            severity_text: text,
            body: &bufs.body,
            trace_flags: TraceFlags::SAMPLED.to_u8(),
            trace_id: ids.trace_id.to_bytes(),
            span_id: ids.span_id.to_bytes(),
            event_name,
        };
        let first = degraded.map(|r| ("degraded.reason", AttrValue::Str(r.as_str())));
        encode::write_log(out, &mut bufs.scratch, &fields, first, &bufs.attrs);
    }

    /// The failure message of a payload, redacted: it becomes a span status and a log body.
    fn error_of(&self, payload: Option<&JsonObject>) -> Option<String> {
        error_of(payload).map(|e| match self.redactor.redact_by(self.error_rule, &e) {
            Cow::Borrowed(_) => e,
            Cow::Owned(r) => r,
        })
    }

    /// The metric updates of an event, applied at once.
    pub fn record_metrics(
        &self,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        degraded: Option<ReasonCode>,
    ) {
        let mut batch = MetricBatch::default();
        self.add_metrics(&mut batch, env, payload, degraded);
        self.apply_metrics(batch);
    }

    /// The metric updates of an event, into `batch`: increments are summed and duration values
    /// kept per instrument and attribute set until [`apply_metrics`](Self::apply_metrics), so
    /// an event costs a lookup of its (case, tenant, app) in the batch and no allocation once
    /// that set has been seen in the batch.
    pub fn add_metrics(
        &self,
        batch: &mut MetricBatch,
        env: &TelemetryEnvelope,
        payload: Option<&JsonObject>,
        degraded: Option<ReasonCode>,
    ) {
        let g = batch.group(env);
        if let Some(reason) = degraded {
            match g.degraded.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 1,
                None => g.degraded.push((reason, 1)),
            }
        }
        let status: &str = if error_of(payload).is_some() {
            "failed"
        } else {
            status_of(payload).unwrap_or("ok")
        };
        let status = match g.requests.iter().position(|(s, _)| s.as_ref() == status) {
            Some(i) => {
                g.requests[i].1 += 1;
                i
            }
            None => {
                let label = match status {
                    "failed" => Cow::Borrowed("failed"),
                    "ok" => Cow::Borrowed("ok"),
                    other => Cow::Owned(other.to_owned()),
                };
                g.requests.push((label, 1));
                g.requests.len() - 1
            }
        };
        if let Some(t) = tokens_of(payload) {
            *g.tokens.get_or_insert(0) += t;
        }
        let instrument = g.row.and_then(|row| self.instruments.by_case.get(row));
        match instrument {
            None => {}
            Some(CaseInstrument::Duration(_)) => {
                if let Some(d) = duration_of(payload) {
                    g.durations.push((status, d.as_secs_f64()));
                }
            }
            Some(CaseInstrument::Count(_, None)) => g.count_label(CountLabel::None),
            Some(CaseInstrument::Count(_, Some((field, value)))) => {
                let v = payload.and_then(|p| p.get(*field));
                match value {
                    FieldValue::Text { default } => {
                        let text = v.and_then(Json::as_str).unwrap_or(default);
                        match g
                            .counts
                            .iter_mut()
                            .find(|(l, _)| matches!(l, CountLabel::Text(t) if t.as_ref() == text))
                        {
                            Some((_, n)) => *n += 1,
                            None => g
                                .counts
                                .push((CountLabel::Text(Cow::Owned(text.to_owned())), 1)),
                        }
                    }
                    FieldValue::Flag => {
                        g.count_label(CountLabel::Flag(v.and_then(Json::as_bool).unwrap_or(false)))
                    }
                }
            }
        }
    }

    /// Applies a batch: one SDK update per instrument and attribute set, however many events
    /// share it, and each duration value recorded with its set built once.
    pub fn apply_metrics(&self, batch: MetricBatch) {
        let i = &self.instruments;
        for g in batch.groups {
            let mut base = Vec::with_capacity(4);
            base.push(KeyValue::new("case", g.case.clone()));
            base.push(KeyValue::new("tenant.id", g.tenant.clone()));
            if let Some(app) = &g.app {
                base.push(KeyValue::new("app.id", app.clone()));
            }
            let with = |kv: KeyValue| {
                let mut attrs = base.clone();
                attrs.push(kv);
                attrs
            };
            for (reason, n) in &g.degraded {
                i.degraded
                    .add(*n, &with(KeyValue::new("reason", reason.as_str())));
            }
            let by_status: Vec<Vec<KeyValue>> = g
                .requests
                .iter()
                .map(|(s, _)| with(KeyValue::new("status", s.clone())))
                .collect();
            if let Some(t) = g.tokens {
                i.tokens.add(t, &base);
            }
            match g.row.and_then(|row| i.by_case.get(row)) {
                Some(CaseInstrument::Duration(h)) => {
                    // A status with several values records them through a handle bound to its
                    // attribute set: the SDK sorts, hashes and looks the set up once, not per
                    // value (a histogram takes each value; a batch holds hundreds).
                    for (status, attrs) in by_status.iter().enumerate() {
                        let mut values = g
                            .durations
                            .iter()
                            .filter(|(s, _)| *s == status)
                            .map(|(_, v)| *v);
                        match (values.next(), values.next()) {
                            (Some(v), None) => h.record(v, attrs),
                            (Some(first), Some(second)) => {
                                let bound = h.bind(attrs);
                                for v in [first, second].into_iter().chain(values) {
                                    bound.record(v);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Some(CaseInstrument::Count(c, field)) => {
                    for (label, n) in &g.counts {
                        match (label, field) {
                            (CountLabel::None, _) | (_, None) => c.add(*n, &base),
                            (CountLabel::Text(t), Some((f, _))) => {
                                c.add(*n, &with(KeyValue::new(*f, t.clone())))
                            }
                            (CountLabel::Flag(b), Some((f, _))) => {
                                c.add(*n, &with(KeyValue::new(*f, *b)))
                            }
                        }
                    }
                }
                None => {}
            }
            for ((_, n), attrs) in g.requests.iter().zip(&by_status) {
                i.requests.add(*n, attrs);
            }
        }
    }
}

/// The label a case's count carries: none, a payload field's text, or a flag.
#[derive(Debug, Clone, PartialEq)]
enum CountLabel {
    None,
    Text(Cow<'static, str>),
    Flag(bool),
}

/// The metric updates of one (case, tenant, app) in a batch.
#[derive(Debug)]
struct MetricGroup {
    case: Cow<'static, str>,
    tenant: String,
    app: Option<String>,
    /// The built-in case's row in the case table.
    row: Option<usize>,
    /// The next group whose key hashes the same (a chain in `MetricBatch::groups`).
    next: Option<usize>,
    /// `requests.total` by status.
    requests: Vec<(Cow<'static, str>, u64)>,
    tokens: Option<u64>,
    degraded: Vec<(ReasonCode, u64)>,
    /// The case's counter, by label.
    counts: Vec<(CountLabel, u64)>,
    /// The case's duration values, with their status (an index into `requests`).
    durations: Vec<(usize, f64)>,
}

impl MetricGroup {
    fn count_label(&mut self, label: CountLabel) {
        match self.counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => self.counts.push((label, 1)),
        }
    }
}

/// The metric updates of a batch of events (see [`Mapper::add_metrics`]), grouped by (case,
/// tenant, app): a batch of 512 events of a few tenants and cases makes a few SDK counter
/// updates instead of 1,500, each of which sorts, hashes and looks up its attribute set, and
/// builds each attribute set once.
#[derive(Debug, Default)]
pub struct MetricBatch {
    groups: Vec<MetricGroup>,
    /// The first group of each key hash.
    index: FastMap<u64, usize>,
}

impl MetricBatch {
    /// The group of `env`'s (case, tenant, app), made on first sight.
    fn group(&mut self, env: &TelemetryEnvelope) -> &mut MetricGroup {
        use std::hash::BuildHasher;
        let case = env.case.as_str();
        let tenant = env.context.tenant_id.as_str();
        let app = env.context.app_id.as_deref();
        let hash = self.index.hasher().hash_one((case, tenant, app));
        let mut at = self.index.get(&hash).copied();
        let mut last = None;
        while let Some(i) = at {
            let g = &self.groups[i];
            if g.case == case && g.tenant == tenant && g.app.as_deref() == app {
                return &mut self.groups[i];
            }
            last = Some(i);
            at = g.next;
        }
        let i = self.groups.len();
        self.groups.push(MetricGroup {
            case: match env.case.static_name() {
                Some(n) => Cow::Borrowed(n),
                None => Cow::Owned(case.to_owned()),
            },
            tenant: tenant.to_owned(),
            app: app.map(str::to_owned),
            row: env.case.built_in_index(),
            next: None,
            requests: Vec::new(),
            tokens: None,
            degraded: Vec::new(),
            counts: Vec::new(),
            durations: Vec::new(),
        });
        match last {
            Some(l) => self.groups[l].next = Some(i),
            None => {
                self.index.insert(hash, i);
            }
        }
        &mut self.groups[i]
    }
}

/// An attribute value as a log attribute value.
pub fn value_to_any(v: opentelemetry::Value) -> AnyValue {
    match v {
        opentelemetry::Value::Bool(b) => AnyValue::Boolean(b),
        opentelemetry::Value::I64(i) => AnyValue::Int(i),
        opentelemetry::Value::F64(f) => AnyValue::Double(f),
        opentelemetry::Value::String(s) => AnyValue::String(s),
        other => AnyValue::String(other.to_string().into()),
    }
}

fn truncate(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_ATTRIBUTE_BYTES {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_ATTRIBUTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

fn duration_of(p: Option<&JsonObject>) -> Option<Duration> {
    let p = p?;
    if let Some(ms) = p.get("duration_ms").and_then(Json::as_f64) {
        return (ms.is_finite() && ms >= 0.0).then(|| Duration::from_secs_f64(ms / 1000.0));
    }
    let s = p.get("elapsed_time").and_then(Json::as_f64)?;
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s))
}

fn status_of(p: Option<&JsonObject>) -> Option<&str> {
    p?.get("status").and_then(Json::as_str)
}

fn error_of(p: Option<&JsonObject>) -> Option<String> {
    let p = p?;
    if let Some(e) = p
        .get("error")
        .and_then(Json::as_str)
        .filter(|e| !e.is_empty())
    {
        return Some(e.to_owned());
    }
    match status_of(Some(p)) {
        Some(s @ ("failed" | "error" | "exception")) => Some(s.to_owned()),
        _ => None,
    }
}

fn tokens_of(p: Option<&JsonObject>) -> Option<u64> {
    let p = p?;
    p.get("total_tokens")
        .or_else(|| p.get("tokens"))
        .and_then(Json::as_u64)
}

/// Item 2 of issue 17: the encoder says what the SDK path says. Random envelopes go both ways
/// (SDK values encoded by the `opentelemetry-proto` transform the OTLP exporter uses, and
/// [`Mapper::encode_span_and_companion`] / [`Mapper::encode_log_record`]); both requests are
/// decoded with the `opentelemetry-proto` types and compared whole: ids, parent links, names,
/// kinds, times, status, attributes (with redaction, truncation and content references),
/// events, links, resource, scope, log bodies, severities and event names. Only a log record's
/// observed time differs (each path reads the clock), so it is compared for being set and then
/// cleared.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CaseSection, RedactionSection};
    use crate::contracts::{Correlation, TelemetryContext};
    use opentelemetry::logs::LoggerProvider as _;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use proptest::prelude::*;
    use prost::Message as _;
    use std::collections::BTreeMap;

    fn case() -> impl Strategy<Value = TelemetryCase> {
        prop_oneof![
            proptest::sample::select(TelemetryCase::BUILT_IN.to_vec()),
            "[a-z_]{1,12}".prop_map(|n| TelemetryCase::from_name(&n)),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 ._-]{0,24}",
            // Unicode, secrets the patterns find, and values over the attribute limit.
            "\\PC{0,16}",
            Just("Bearer abcdefghijklmnopqrstuvwxyz0123456789".to_owned()),
            Just("mail me: someone@example.com".to_owned()),
            (1usize..3).prop_map(|n| "é".repeat(MAX_ATTRIBUTE_BYTES / 2 * n + 1)),
        ]
    }

    fn json_value() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            (-1e12f64..1e12).prop_map(Json::from),
            text().prop_map(Json::from),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Json::Array),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    fn payload() -> impl Strategy<Value = serde_json::Map<String, Json>> {
        let key = prop_oneof![
            "[a-z_]{1,10}",
            // Content fields, denied keys, and the fields the mapping reads.
            proptest::sample::select(vec![
                "query",
                "answer",
                "password",
                "api_key",
                "status",
                "error",
                "duration_ms",
                "elapsed_time",
                "total_tokens",
                "rating",
            ])
            .prop_map(str::to_owned),
        ];
        let status = proptest::sample::select(vec!["succeeded", "failed", "error", "running"]);
        (
            proptest::collection::btree_map(key, json_value(), 0..8),
            proptest::option::of(status),
            proptest::option::of(0.0f64..1e7),
        )
            .prop_map(|(m, status, ms)| {
                let mut p: serde_json::Map<String, Json> = m.into_iter().collect();
                if let Some(s) = status {
                    p.insert("status".into(), Json::from(s));
                }
                if let Some(ms) = ms {
                    p.insert("duration_ms".into(), Json::from(ms));
                }
                p
            })
    }

    prop_compose! {
        fn envelope()(
            case in case(),
            tenant in "[a-z0-9-]{1,12}",
            app in proptest::option::of("[a-z0-9]{1,8}"),
            user in proptest::option::of("[a-z0-9@.]{1,12}"),
            correlation_id in proptest::option::of("[a-z0-9-]{1,16}"),
            run_id in proptest::option::of("[a-z0-9-]{1,16}"),
            trace_id in proptest::option::of("[0-9a-f]{32}"),
            parent in proptest::option::of("[0-9a-f]{16}"),
            payload in payload(),
            by_ref in proptest::option::of("[a-z0-9/]{1,20}"),
            created_secs in 0u64..4_000_000_000,
            root in any::<bool>(),
        ) -> TelemetryEnvelope {
            let mut ctx = TelemetryContext::tenant(&tenant);
            ctx.app_id = app;
            ctx.user_id = user;
            let mut env = TelemetryEnvelope::new(case, ctx)
                .with_correlation(Correlation {
                    correlation_id,
                    run_id,
                    trace_id,
                    parent_span_id: parent,
                    ..Correlation::default()
                })
                .with_payload(Json::Object(payload));
            if let Some(r) = by_ref {
                env.payload = Payload::Ref(r);
            }
            env.created_at = std::time::UNIX_EPOCH + Duration::from_millis(created_secs * 1000 + 7);
            crate::correlation::resolve(&mut env, root);
            env
        }
    }

    struct Fixture {
        mapper: Mapper,
        logger: SdkLogger,
        resource: opentelemetry_sdk::Resource,
        frame: encode::Frame,
    }

    fn fixture(include_content: bool) -> Fixture {
        let table = RoutingTable::new(&BTreeMap::<String, CaseSection>::new());
        let meter = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
            .build()
            .meter("encode-test");
        let redaction = RedactionSection {
            patterns: vec!["secret-[0-9]+".into()],
            ..RedactionSection::default()
        };
        let redactor = Redactor::from_config(&redaction).expect("redactor");
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("encode-test")
            .with_attribute(KeyValue::new("deployment.environment", "test"))
            .build();
        let logger = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
            .with_resource(resource.clone())
            .build()
            .logger("telemetry-gateway");
        Fixture {
            mapper: Mapper::new("app", include_content, &table, &meter, redactor),
            logger,
            frame: encode::Frame::new(&resource, &scope()),
            resource,
        }
    }

    fn payload_of(env: &TelemetryEnvelope) -> Option<JsonObject> {
        match &env.payload {
            Payload::Inline(p) => Some(p.clone()),
            Payload::Ref(_) => None,
        }
    }

    /// Clears the observed times (each path reads the clock) after checking they are set.
    fn without_observed_time(mut r: ExportLogsServiceRequest) -> ExportLogsServiceRequest {
        for rl in &mut r.resource_logs {
            for sl in &mut rl.scope_logs {
                for l in &mut sl.log_records {
                    assert!(l.observed_time_unix_nano > 0);
                    l.observed_time_unix_nano = 0;
                }
            }
        }
        r
    }

    fn check_trace_batch(envs: &[TelemetryEnvelope], include_content: bool) {
        let f = fixture(include_content);
        let scope = scope();
        let (mut spans, mut logs) = (Vec::new(), Vec::new());
        let (mut enc_spans, mut enc_logs, mut bufs) =
            (Vec::new(), Vec::new(), EncodeBuffers::default());
        for env in envs {
            let payload = payload_of(env);
            let (span, log) = f
                .mapper
                .span_and_companion(&f.logger, env, payload.as_ref());
            spans.push(span);
            logs.push(log);
            let ids = ResolvedIds::of(env);
            f.mapper.encode_span_and_companion(
                env,
                payload.as_ref(),
                &ids,
                &mut bufs,
                Some(&mut enc_spans),
                Some(&mut enc_logs),
            );
        }
        let sdk = ExportTraceServiceRequest::decode(
            &super::super::wire::encode_spans(&spans, &f.resource)[..],
        )
        .expect("SDK request decodes");
        let ours = ExportTraceServiceRequest::decode(
            &f.frame.request(std::iter::once(&enc_spans[..]))[..],
        )
        .expect("encoded request decodes");
        assert_eq!(ours, sdk);
        let records: Vec<_> = logs.iter().map(|l| (l, &scope)).collect();
        let sdk = ExportLogsServiceRequest::decode(
            &super::super::wire::encode_logs(&records, &f.resource)[..],
        )
        .expect("SDK request decodes");
        let ours =
            ExportLogsServiceRequest::decode(&f.frame.request(std::iter::once(&enc_logs[..]))[..])
                .expect("encoded request decodes");
        assert_eq!(without_observed_time(ours), without_observed_time(sdk));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn encoded_spans_and_companions_equal_the_sdk_path(
            envs in proptest::collection::vec(envelope(), 1..5),
            include_content in any::<bool>(),
        ) {
            check_trace_batch(&envs, include_content);
        }

        #[test]
        fn encoded_log_records_equal_the_sdk_path(
            envs in proptest::collection::vec(envelope(), 1..5),
            degraded in proptest::option::of(proptest::sample::select(vec![
                ReasonCode::RehydrationFailed,
                ReasonCode::PayloadRefRefused,
            ])),
        ) {
            let f = fixture(true);
            let scope = scope();
            let mut sdk_logs = Vec::new();
            // Two batches: a request is the concatenation of its batches.
            let (mut a, mut b, mut bufs) = (Vec::new(), Vec::new(), EncodeBuffers::default());
            for (i, env) in envs.iter().enumerate() {
                let payload = payload_of(env);
                sdk_logs.push(f.mapper.log_record(&f.logger, env, payload.as_ref(), degraded));
                let out = if i < envs.len() / 2 { &mut a } else { &mut b };
                f.mapper.encode_log_record(env, payload.as_ref(), degraded, &[], &mut bufs, out);
            }
            let records: Vec<_> = sdk_logs.iter().map(|l| (l, &scope)).collect();
            let sdk = ExportLogsServiceRequest::decode(&super::super::wire::encode_logs(&records, &f.resource)[..])
                .expect("SDK request decodes");
            let ours = ExportLogsServiceRequest::decode(&f.frame.request([&a[..], &b[..]].into_iter())[..])
                .expect("encoded request decodes");
            prop_assert_eq!(without_observed_time(ours), without_observed_time(sdk));
        }
    }
}
