//! The typed messages a host sends, and their validation.
//!
//! A host builds a [`TelemetryEnvelope`] with [`TelemetryEnvelope::new`] and hands it to
//! [`GatewayHandle::emit`](crate::GatewayHandle::emit). The same type is what crosses every queue
//! inside the gateway and, serialized as JSON, what a future out-of-process transport carries. Its
//! wire format is documented in `docs/wire-format.md`.
//!
//! Everything here is cheap and synchronous: `emit()` runs [`TelemetryEnvelope::validate_cheap`]
//! on the host's request path, so nothing in this module may allocate per field, serialize the
//! payload, or block. The expensive check (the serialized payload size) happens inside the
//! gateway actor.
//!
//! This module must never accept a language-native serialization (such as Python's pickle) for any
//! field: payloads and fallbacks are JSON objects, and nothing else.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

mod case;
pub use case::{CaseFacts, CaseMetric, FieldValue, SignalType, TelemetryCase};

/// The envelope schema version this build writes and accepts.
pub const SCHEMA_VERSION: u32 = 1;

/// The largest `payload_fallback` accepted, in bytes of serialized JSON (64 KiB).
pub const MAX_FALLBACK_BYTES: usize = 64 * 1024;

/// The longest tenant, app or user id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// The longest correlation id accepted, in bytes.
pub const MAX_CORRELATION_ID_BYTES: usize = 256;

/// The largest envelope accepted by [`TelemetryEnvelope::from_json`], in bytes of JSON (a payload
/// above `payloads.inline_threshold_bytes` travels as a ref, so a legitimate envelope is far
/// smaller).
pub const MAX_ENVELOPE_JSON_BYTES: usize = 32 * 1024 * 1024;

/// A JSON object: the only shape a payload may have.
pub type JsonObject = Map<String, Value>;

// --- Payload refs ------------------------------------------------------------------------
//
// A payload ref is untrusted input: it arrives in an envelope that may have crossed a process
// boundary. Its shape is part of the envelope's contract, so it is checked here, with the rest
// of the envelope, before the payload store ever sees it.

/// The longest payload ref accepted, in bytes.
pub const MAX_REF_BYTES: usize = 512;

/// Why a payload ref was refused without being read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    /// The ref is empty.
    #[error("payload ref is empty")]
    Empty,
    /// Longer than [`MAX_REF_BYTES`].
    #[error("payload ref is {0} bytes, at most {MAX_REF_BYTES} allowed")]
    TooLong(usize),
    /// Starts with `/` or a drive letter.
    #[error("payload ref must be relative, not absolute")]
    Absolute,
    /// Contains `..`, `.`, an empty segment or a backslash.
    #[error("payload ref contains a path traversal or empty segment")]
    Traversal,
    /// Does not start with the envelope's own tenant.
    #[error("payload ref is outside the tenant's prefix")]
    OtherTenant,
    /// Contains a character outside `[A-Za-z0-9._-/]`.
    #[error("payload ref contains a character outside [A-Za-z0-9._-/]")]
    BadCharacter,
    /// Resolves (through a symlink) to a file outside the local store's root.
    #[error("payload ref resolves outside the payload store's root")]
    OutsideRoot,
}

/// Checks that `r` is a key inside `tenant_id`'s prefix. Never touches the store.
pub fn validate_ref(tenant_id: &str, r: &str) -> Result<(), RefError> {
    if r.is_empty() {
        return Err(RefError::Empty);
    }
    if r.len() > MAX_REF_BYTES {
        return Err(RefError::TooLong(r.len()));
    }
    if r.starts_with('/') || r.as_bytes().get(1) == Some(&b':') {
        return Err(RefError::Absolute);
    }
    if r.contains('\\') {
        return Err(RefError::Traversal);
    }
    let mut segments = r.split('/');
    for seg in r.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return Err(RefError::Traversal);
        }
    }
    if !r
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        return Err(RefError::BadCharacter);
    }
    if segments.next() != Some(tenant_id) || segments.next().is_none() {
        return Err(RefError::OtherTenant);
    }
    Ok(())
}

/// Who an event belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryContext {
    /// The tenant (workspace) the event belongs to. Required: it scopes dedup keys, payload
    /// store keys and per-tenant sinks.
    pub tenant_id: String,
    /// The app the event belongs to, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The end user or account that caused the event, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl TelemetryContext {
    /// A context for `tenant_id`, with no app or user.
    pub fn tenant(tenant_id: impl Into<String>) -> Self {
        TelemetryContext {
            tenant_id: tenant_id.into(),
            app_id: None,
            user_id: None,
        }
    }

    /// Sets the app id.
    pub fn app(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// Sets the user id.
    pub fn user(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// How an event links to the others of the same action and to its trace.
///
/// Every field is optional. What the gateway derives when a field is missing:
///
/// | field | when missing |
/// |---|---|
/// | `trace_id` | derived from `run_id` (so a run and its nodes share one trace), else from `event_id` |
/// | `span_id` | for a root case (`workflow_run`, `message_run`) with a `run_id`: derived from the run id, so children can name it as parent; otherwise derived from `event_id` |
/// | `parent_span_id` | for a non-root case with a `run_id`: the run's derived root span id |
/// | `correlation_id` | the `run_id` when there is one, else the event id |
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Correlation {
    /// Links every event of one action (for example one HTTP request) end to end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The run (workflow run or message) this event belongs to: the source of derived trace ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// A W3C trace id (32 lowercase hex digits) the host already has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// This event's span id (16 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// The parent span id (16 lowercase hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
}

/// Where the event's payload is: inline, or in the payload store.
#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// The payload travels with the envelope.
    Inline(JsonObject),
    /// The payload was written to the payload store under this key (`{tenant_id}/{event_id}.json`).
    Ref(String),
}

impl Default for Payload {
    fn default() -> Self {
        Payload::Inline(JsonObject::new())
    }
}

/// A serialized JSON object of at most [`MAX_FALLBACK_BYTES`], kept with an offloaded payload so
/// the handler can still do its work when the payload store cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PayloadFallback(Arc<str>);

impl PayloadFallback {
    /// Serializes `object` as a fallback, refusing it when it is larger than
    /// [`MAX_FALLBACK_BYTES`].
    pub fn from_object(object: &JsonObject) -> Result<Self, EnvelopeError> {
        let text = serde_json::to_string(object).map_err(|e| EnvelopeError::InvalidField {
            field: "payload_fallback",
            reason: e.to_string(),
        })?;
        Self::from_json_text(text)
    }

    /// Takes already-serialized JSON text, checking its size and that it is a JSON object.
    pub fn from_json_text(text: String) -> Result<Self, EnvelopeError> {
        if text.len() > MAX_FALLBACK_BYTES {
            return Err(EnvelopeError::FallbackTooLarge {
                size: text.len(),
                max: MAX_FALLBACK_BYTES,
            });
        }
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(_)) => Ok(PayloadFallback(Arc::from(text))),
            Ok(_) => Err(EnvelopeError::InvalidField {
                field: "payload_fallback",
                reason: "must be a JSON object".into(),
            }),
            Err(e) => Err(EnvelopeError::InvalidField {
                field: "payload_fallback",
                reason: format!("not valid JSON: {e}"),
            }),
        }
    }

    /// The serialized JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The size in bytes of the serialized JSON.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the fallback is empty text (never true for a valid fallback).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the fallback back into an object.
    pub fn to_object(&self) -> Option<JsonObject> {
        match serde_json::from_str::<Value>(&self.0) {
            Ok(Value::Object(o)) => Some(o),
            _ => None,
        }
    }
}

/// The UUIDv5 namespace of ids derived from idempotency keys
/// ([`TelemetryEnvelope::with_idempotency_key`]). Never change it: ids made by an older version
/// must stay equal to a newer version's for the same key.
pub const IDEMPOTENCY_KEY_NAMESPACE: Uuid =
    Uuid::from_u128(0x5b7d_3c2e_9f41_4a6b_8d0e_71c4_a9f2_36e8);

/// The event id of `key` for `tenant_id`: UUIDv5 of `tenant_id`, a NUL byte and `key` (a tenant
/// id cannot hold a NUL, so no two (tenant, key) pairs share an input).
pub fn idempotency_event_id(tenant_id: &str, key: &str) -> Uuid {
    let mut name = Vec::with_capacity(tenant_id.len() + 1 + key.len());
    name.extend_from_slice(tenant_id.as_bytes());
    name.push(0);
    name.extend_from_slice(key.as_bytes());
    Uuid::new_v5(&IDEMPOTENCY_KEY_NAMESPACE, &name)
}

/// One telemetry event, as the host sends it and as it crosses the gateway's queues.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryEnvelope {
    /// The event's id. A host may supply its own as an idempotency key: a re-sent event with the
    /// same id (and tenant) counts once. When the host supplies none the gateway makes a UUIDv7.
    pub event_id: Uuid,
    /// The envelope schema version; see [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Which case this is.
    pub case: TelemetryCase,
    /// Trace or metric/log. Set by the gateway's routing table; a host value is ignored.
    pub signal: Option<SignalType>,
    /// Tenant, app and user.
    pub context: TelemetryContext,
    /// Correlation and trace ids.
    pub correlation: Correlation,
    /// The payload, inline or as a store reference.
    pub payload: Payload,
    /// What the handler uses when an offloaded payload cannot be read back.
    pub payload_fallback: Option<PayloadFallback>,
    /// When the host created the event.
    pub created_at: SystemTime,
}

impl TelemetryEnvelope {
    /// A new event of `case` for `context`, with a fresh UUIDv7, an empty payload and
    /// `created_at` now.
    pub fn new(case: TelemetryCase, context: TelemetryContext) -> Self {
        TelemetryEnvelope {
            event_id: Uuid::now_v7(),
            schema_version: SCHEMA_VERSION,
            case,
            signal: None,
            context,
            correlation: Correlation::default(),
            payload: Payload::default(),
            payload_fallback: None,
            created_at: SystemTime::now(),
        }
    }

    /// Sets the payload. A `Value` that is not an object is wrapped as `{"value": ...}` so that a
    /// payload is always an object.
    pub fn with_payload(mut self, payload: Value) -> Self {
        self.payload = Payload::Inline(match payload {
            Value::Object(map) => map,
            other => {
                let mut map = JsonObject::new();
                map.insert("value".into(), other);
                map
            }
        });
        self
    }

    /// Uses the host's own event id (an idempotency key).
    pub fn with_event_id(mut self, event_id: Uuid) -> Self {
        self.event_id = event_id;
        self
    }

    /// Derives the event id from a host's idempotency key (for example an HTTP
    /// `Idempotency-Key` header): the same key of the same tenant always gives the same id, so a
    /// re-sent event counts once, and two tenants' keys never meet. The id is a UUIDv5 of the
    /// tenant id and the key under [`IDEMPOTENCY_KEY_NAMESPACE`]; set the context's tenant first
    /// (as [`TelemetryEnvelope::new`] does).
    ///
    /// Deduplication happens after the entrance: `emit()` of a later copy still returns `Ok`,
    /// and the copy is then dropped under `duplicate` (counted, and shown by `explain`).
    pub fn with_idempotency_key(mut self, key: &str) -> Self {
        self.event_id = idempotency_event_id(&self.context.tenant_id, key);
        self
    }

    /// Sets the run this event belongs to (the source of derived trace ids).
    pub fn with_run_id(mut self, run_id: impl Into<String>) -> Self {
        self.correlation.run_id = Some(run_id.into());
        self
    }

    /// Sets the correlation id that links every event of one action.
    pub fn with_correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.correlation.correlation_id = Some(correlation_id.into());
        self
    }

    /// Sets all correlation fields at once.
    pub fn with_correlation(mut self, correlation: Correlation) -> Self {
        self.correlation = correlation;
        self
    }

    /// Sets the fallback used when an offloaded payload cannot be read back.
    pub fn with_fallback(mut self, fallback: PayloadFallback) -> Self {
        self.payload_fallback = Some(fallback);
        self
    }

    /// The correlation id the gateway records: the host's, else the run id, else the event id.
    pub fn effective_correlation_id(&self) -> String {
        self.correlation
            .correlation_id
            .clone()
            .or_else(|| self.correlation.run_id.clone())
            .unwrap_or_else(|| self.event_id.to_string())
    }

    /// The checks `emit()` makes on the request path: every field except the payload size.
    ///
    /// Whether the case is known is the routing table's decision, made by the caller.
    pub fn validate_cheap(&self) -> Result<(), EnvelopeError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(EnvelopeError::UnsupportedSchemaVersion {
                found: self.schema_version,
                supported: SCHEMA_VERSION,
            });
        }
        if self.context.tenant_id.is_empty() {
            return Err(EnvelopeError::MissingField {
                field: "context.tenant_id",
            });
        }
        validate_id("context.tenant_id", &self.context.tenant_id)?;
        if let Some(app) = &self.context.app_id {
            validate_id("context.app_id", app)?;
        }
        if let Some(user) = &self.context.user_id {
            check_len("context.user_id", user, MAX_ID_BYTES)?;
        }
        if self.case.as_str().is_empty() {
            return Err(EnvelopeError::MissingField { field: "case" });
        }
        let c = &self.correlation;
        if let Some(cid) = &c.correlation_id {
            check_len("correlation.correlation_id", cid, MAX_CORRELATION_ID_BYTES)?;
        }
        if let Some(run) = &c.run_id {
            check_len("correlation.run_id", run, MAX_CORRELATION_ID_BYTES)?;
        }
        if let Some(t) = &c.trace_id {
            check_hex("correlation.trace_id", t, 32)?;
        }
        if let Some(s) = &c.span_id {
            check_hex("correlation.span_id", s, 16)?;
        }
        if let Some(p) = &c.parent_span_id {
            check_hex("correlation.parent_span_id", p, 16)?;
        }
        if let Some(fb) = &self.payload_fallback {
            if fb.len() > MAX_FALLBACK_BYTES {
                return Err(EnvelopeError::FallbackTooLarge {
                    size: fb.len(),
                    max: MAX_FALLBACK_BYTES,
                });
            }
        }
        if let Payload::Ref(r) = &self.payload {
            validate_ref(&self.context.tenant_id, r).map_err(|e| EnvelopeError::InvalidField {
                field: "payload_ref",
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), EnvelopeError> {
    if value.len() > max {
        return Err(EnvelopeError::InvalidField {
            field,
            reason: format!("{} bytes, at most {max} allowed", value.len()),
        });
    }
    if value.chars().any(|ch| ch.is_control()) {
        return Err(EnvelopeError::InvalidField {
            field,
            reason: "contains a control character".into(),
        });
    }
    Ok(())
}

/// Ids that become parts of store keys and dedup keys: a conservative alphabet, so that no id
/// can smuggle a path separator, `..` or a Redis key separator into a key.
fn validate_id(field: &'static str, value: &str) -> Result<(), EnvelopeError> {
    if value.is_empty() {
        return Err(EnvelopeError::MissingField { field });
    }
    check_len(field, value, MAX_ID_BYTES)?;
    if value == "." || value == ".." {
        return Err(EnvelopeError::InvalidField {
            field,
            reason: "must not be '.' or '..'".into(),
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.')))
    {
        return Err(EnvelopeError::InvalidField {
            field,
            reason: format!("character {bad:?} not allowed (use A-Z, a-z, 0-9, '-', '_', '.')"),
        });
    }
    Ok(())
}

fn check_hex(field: &'static str, value: &str, len: usize) -> Result<(), EnvelopeError> {
    let ok = value.len() == len
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && value.bytes().any(|b| b != b'0');
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::InvalidField {
            field,
            reason: format!("must be {len} lowercase hex digits, not all zero"),
        })
    }
}

/// Why an envelope was refused. Every variant names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A required field is missing or empty.
    #[error("field `{field}` is required")]
    MissingField {
        /// The dotted path of the field.
        field: &'static str,
    },
    /// A field has a value the gateway does not accept.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The dotted path of the field.
        field: &'static str,
        /// What is wrong with the value.
        reason: String,
    },
    /// `payload_fallback` is larger than [`MAX_FALLBACK_BYTES`].
    #[error("field `payload_fallback` is {size} bytes of JSON, at most {max} allowed")]
    FallbackTooLarge {
        /// The fallback's size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The case is neither built in nor declared in `[cases]`.
    #[error("field `case` is invalid: unknown case {case:?} (declare it under [cases.{case}] in the config)")]
    UnknownCase {
        /// The case name the host sent.
        case: String,
    },
    /// The envelope was written by a schema this build does not read.
    #[error("field `schema_version` is {found}, this gateway supports {supported}")]
    UnsupportedSchemaVersion {
        /// The version the envelope carries.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// The JSON wire form could not be decoded.
    #[error("envelope JSON is invalid: {0}")]
    Decode(String),
    /// A field of the JSON wire form has the wrong type or value.
    #[error("field `{field}` is invalid: {reason}")]
    WrongField {
        /// The dotted path of the field, as decoded (`context.tenant_id`, `payload_fallback`).
        field: String,
        /// What the decoder expected.
        reason: String,
    },
    /// The JSON is larger than [`MAX_ENVELOPE_JSON_BYTES`].
    #[error("envelope JSON is {size} bytes, at most {max} allowed")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// `created_at` on the wire: RFC 3339, written in UTC with nanoseconds; read with any offset.
fn format_rfc3339(t: SystemTime) -> Result<String, EnvelopeError> {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| EnvelopeError::InvalidField {
            field: "created_at",
            reason: e.to_string(),
        })
}

fn parse_rfc3339(s: &str) -> Result<SystemTime, EnvelopeError> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| EnvelopeError::InvalidField {
            field: "created_at",
            reason: format!("not an RFC 3339 timestamp: {e}"),
        })
}

// ---------------------------------------------------------------------------------------------
// JSON wire format. A separate, explicit struct so that the wire shape is reviewed in one place
// and decoding untrusted JSON goes through `deny_unknown_fields` and the same validation.

/// Deserializes a struct from a JSON object only. serde's derived struct deserializers also
/// accept the array form (`"correlation": []`, `"context": ["t1"]`), which the wire format does
/// not allow; the map is forwarded as is, so nested field paths are still reported.
fn object_only<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectOnly<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectOnly<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_map(ObjectOnly(std::marker::PhantomData))
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEnvelope {
    event_id: Uuid,
    schema_version: u32,
    case: TelemetryCase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signal: Option<SignalType>,
    #[serde(deserialize_with = "object_only")]
    context: TelemetryContext,
    #[serde(default, deserialize_with = "object_only")]
    correlation: Correlation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload: Option<JsonObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    payload_fallback: Option<JsonObject>,
    created_at: String,
}

impl TelemetryEnvelope {
    /// Serializes the envelope to its JSON wire form (see `docs/wire-format.md`).
    pub fn to_json(&self) -> Result<String, EnvelopeError> {
        let (payload, payload_ref) = match &self.payload {
            Payload::Inline(o) => (Some(o.clone()), None),
            Payload::Ref(r) => (None, Some(r.clone())),
        };
        let wire = WireEnvelope {
            event_id: self.event_id,
            schema_version: self.schema_version,
            case: self.case.clone(),
            signal: self.signal,
            context: self.context.clone(),
            correlation: self.correlation.clone(),
            payload,
            payload_ref,
            payload_fallback: self.payload_fallback.as_ref().and_then(|f| f.to_object()),
            created_at: format_rfc3339(self.created_at)?,
        };
        serde_json::to_string(&wire).map_err(|e| EnvelopeError::Decode(e.to_string()))
    }

    /// Decodes and validates an envelope from untrusted JSON. Unknown fields, a payload that is
    /// both inline and a ref, an oversize fallback, a malformed ref and every check of
    /// [`validate_cheap`](Self::validate_cheap) are refused with an error naming the field.
    pub fn from_json(text: &str) -> Result<Self, EnvelopeError> {
        if text.len() > MAX_ENVELOPE_JSON_BYTES {
            return Err(EnvelopeError::TooLarge {
                size: text.len(),
                max: MAX_ENVELOPE_JSON_BYTES,
            });
        }
        // Decode through serde_path_to_error so an error names the field it happened in (a wrong
        // type, an enum given a number, JSON truncated inside a field); an error before any
        // field (not JSON at all) says where it is instead.
        let de = &mut serde_json::Deserializer::from_str(text);
        let wire: WireEnvelope = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                EnvelopeError::Decode(inner.to_string())
            } else {
                EnvelopeError::WrongField {
                    field: path,
                    reason: inner.to_string(),
                }
            }
        })?;
        let payload = match (wire.payload, wire.payload_ref) {
            (Some(_), Some(_)) => {
                return Err(EnvelopeError::InvalidField {
                    field: "payload_ref",
                    reason: "an envelope has either `payload` or `payload_ref`, not both".into(),
                })
            }
            (Some(o), None) => Payload::Inline(o),
            (None, Some(r)) => Payload::Ref(r),
            (None, None) => Payload::Inline(JsonObject::new()),
        };
        let payload_fallback = match wire.payload_fallback {
            Some(o) => Some(PayloadFallback::from_object(&o)?),
            None => None,
        };
        let created_at = parse_rfc3339(&wire.created_at)?;
        let env = TelemetryEnvelope {
            event_id: wire.event_id,
            schema_version: wire.schema_version,
            case: wire.case,
            signal: wire.signal,
            context: wire.context,
            correlation: wire.correlation,
            payload,
            payload_fallback,
            created_at,
        };
        env.validate_cheap()?;
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_index_and_static_name_agree_with_the_list() {
        for (i, case) in TelemetryCase::BUILT_IN.iter().enumerate() {
            assert_eq!(case.built_in_index(), Some(i));
            assert_eq!(case.static_name(), Some(case.as_str()));
        }
        assert_eq!(TelemetryCase::custom("x").built_in_index(), None);
        assert_eq!(TelemetryCase::custom("x").static_name(), None);
    }
    use serde_json::json;

    fn env() -> TelemetryEnvelope {
        TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("t1"))
            .with_payload(json!({"name": "demo"}))
    }

    #[test]
    fn built_in_names_round_trip() {
        for case in TelemetryCase::BUILT_IN.iter() {
            assert_eq!(&TelemetryCase::from_name(case.as_str()), case);
        }
        assert_eq!(
            TelemetryCase::from_name("billing_event"),
            TelemetryCase::Custom(Arc::from("billing_event"))
        );
    }

    #[test]
    fn missing_tenant_names_the_field() {
        let mut e = env();
        e.context.tenant_id.clear();
        let err = e.validate_cheap().unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::MissingField {
                field: "context.tenant_id"
            }
        );
        assert!(err.to_string().contains("context.tenant_id"));
    }

    #[test]
    fn tenant_with_path_characters_is_refused() {
        for bad in ["..", "a/b", "a:b", "t\n1"] {
            let mut e = env();
            e.context.tenant_id = bad.into();
            let err = e.validate_cheap().unwrap_err();
            assert!(
                err.to_string().contains("context.tenant_id"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn oversize_fallback_is_refused_with_sizes() {
        let mut big = JsonObject::new();
        big.insert("x".into(), Value::String("a".repeat(MAX_FALLBACK_BYTES)));
        let err = PayloadFallback::from_object(&big).unwrap_err();
        assert!(
            matches!(err, EnvelopeError::FallbackTooLarge { max, .. } if max == MAX_FALLBACK_BYTES)
        );
        assert!(err.to_string().contains("payload_fallback"));
    }

    #[test]
    fn non_object_fallback_is_refused() {
        let err = PayloadFallback::from_json_text("[1,2]".into()).unwrap_err();
        assert!(err.to_string().contains("payload_fallback"));
    }

    #[test]
    fn unsupported_schema_version_names_the_field() {
        let mut e = env();
        e.schema_version = 99;
        let err = e.validate_cheap().unwrap_err();
        assert!(err.to_string().contains("schema_version"));
    }

    #[test]
    fn bad_trace_id_is_refused() {
        let e = env().with_correlation(Correlation {
            trace_id: Some("XYZ".into()),
            ..Default::default()
        });
        assert!(e
            .validate_cheap()
            .unwrap_err()
            .to_string()
            .contains("correlation.trace_id"));
    }

    #[test]
    fn json_round_trip_preserves_everything() {
        let fb = PayloadFallback::from_object(json!({"tokens": 3}).as_object().unwrap()).unwrap();
        let e = env()
            .with_run_id("run-1")
            .with_correlation_id("req-1")
            .with_fallback(fb);
        let text = e.to_json().unwrap();
        let back = TelemetryEnvelope::from_json(&text).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn created_at_offsets_are_honoured() {
        let utc = parse_rfc3339("2026-11-23T08:00:00.5Z").unwrap();
        for same in [
            "2026-11-23T10:00:00.5+02:00",
            "2026-11-23T03:00:00.500-05:00",
        ] {
            assert_eq!(parse_rfc3339(same).unwrap(), utc, "{same}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-23T10:00:00+02:00").unwrap(),
            parse_rfc3339("2026-11-23T08:00:00Z").unwrap()
        );
        let err = parse_rfc3339("23/11/2026").unwrap_err();
        assert!(err.to_string().contains("created_at"));
        let now = SystemTime::now();
        assert_eq!(parse_rfc3339(&format_rfc3339(now).unwrap()).unwrap(), now);
    }

    #[test]
    fn struct_fields_must_be_objects_not_arrays() {
        let mut v: Value = serde_json::from_str(&env().to_json().unwrap()).unwrap();
        v["correlation"] = json!([]);
        let err = TelemetryEnvelope::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("correlation"), "{err}");
        let mut v: Value = serde_json::from_str(&env().to_json().unwrap()).unwrap();
        v["context"] = json!(["t1"]);
        let err = TelemetryEnvelope::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("context"), "{err}");
        // Nested paths are still named.
        let mut v: Value = serde_json::from_str(&env().to_json().unwrap()).unwrap();
        v["context"]["tenant_id"] = json!(7);
        let err = TelemetryEnvelope::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("context.tenant_id"), "{err}");
    }

    #[test]
    fn json_with_unknown_field_is_refused() {
        let mut v: Value = serde_json::from_str(&env().to_json().unwrap()).unwrap();
        v["pickle"] = json!("gASVAAAA");
        let err = TelemetryEnvelope::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("pickle"), "{err}");
    }

    #[test]
    fn json_with_foreign_payload_ref_is_refused() {
        let mut v: Value = serde_json::from_str(&env().to_json().unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("payload");
        v["payload_ref"] = json!("../t2/x.json");
        let err = TelemetryEnvelope::from_json(&v.to_string()).unwrap_err();
        assert!(err.to_string().contains("payload_ref"), "{err}");
    }
}
