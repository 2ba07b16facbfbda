//! OTLP protobuf written straight from the mapping, without SDK values on the way (issue 17).
//!
//! The SDK path builds a `SpanData` and an `SdkLogRecord` per event (about 25 allocations),
//! which the OTLP exporter converts into `opentelemetry-proto` structs (as many again) and then
//! encodes. Here the mapping hands over the facts of a span and its companion record (ids,
//! names, times, status, severity, body) and their attributes, and this module writes the
//! protobuf fields into buffers the batcher reuses: the attributes are encoded once and copied
//! into both messages, and nothing is allocated per event once the buffers have grown.
//!
//! The wire format is OTLP's (`opentelemetry/proto/trace/v1/trace.proto`, `logs/v1/logs.proto`,
//! `common/v1/common.proto`); the field numbers are the constants below. What the messages say
//! must equal what the SDK path sends for the same envelope: the property test in
//! `export::mapping` decodes both with the `opentelemetry-proto` types and compares them field
//! by field.
//!
//! A batch is a run of complete `ScopeSpans.spans` (or `ScopeLogs.log_records`) entries; a
//! [`Frame`] wraps a batch into an `ExportTraceServiceRequest` (or `ExportLogsServiceRequest`)
//! under the gateway's resource and scope, both encoded once at start.

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::Resource;
use prost::Message;

/// Protobuf wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;
const FIXED32: u32 = 5;

/// `ExportTraceServiceRequest.resource_spans`, `ResourceSpans.resource`,
/// `ScopeSpans.scope`, and the same three for logs: all field 1.
const FIRST: u32 = 1;
/// `ResourceSpans.scope_spans`, `ScopeSpans.spans`, and the logs' equivalents: all field 2.
const SECOND: u32 = 2;
/// `ResourceSpans.schema_url`, `ScopeSpans.schema_url` (and logs').
const SCHEMA_URL: u32 = 3;

/// `Span` fields.
mod span {
    pub(super) const TRACE_ID: u32 = 1;
    pub(super) const SPAN_ID: u32 = 2;
    pub(super) const PARENT_SPAN_ID: u32 = 4;
    pub(super) const NAME: u32 = 5;
    pub(super) const KIND: u32 = 6;
    pub(super) const START: u32 = 7;
    pub(super) const END: u32 = 8;
    pub(super) const ATTRIBUTES: u32 = 9;
    pub(super) const STATUS: u32 = 15;
    pub(super) const FLAGS: u32 = 16;
    /// `Status.message`, `Status.code`.
    pub(super) const STATUS_MESSAGE: u32 = 2;
    pub(super) const STATUS_CODE: u32 = 3;
    /// `SpanFlags.SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: the SDK's exporter always sets it.
    pub(super) const HAS_IS_REMOTE: u32 = 0x100;
}

/// `LogRecord` fields.
mod log {
    pub(super) const TIME: u32 = 1;
    pub(super) const SEVERITY_NUMBER: u32 = 2;
    pub(super) const SEVERITY_TEXT: u32 = 3;
    pub(super) const BODY: u32 = 5;
    pub(super) const ATTRIBUTES: u32 = 6;
    pub(super) const FLAGS: u32 = 8;
    pub(super) const TRACE_ID: u32 = 9;
    pub(super) const SPAN_ID: u32 = 10;
    pub(super) const OBSERVED_TIME: u32 = 11;
    pub(super) const EVENT_NAME: u32 = 12;
}

/// `KeyValue.key`, `KeyValue.value`; `AnyValue`'s oneof.
mod kv {
    pub(super) const KEY: u32 = 1;
    pub(super) const VALUE: u32 = 2;
    pub(super) const STRING: u32 = 1;
    pub(super) const BOOL: u32 = 2;
    pub(super) const INT: u32 = 3;
    pub(super) const DOUBLE: u32 = 4;
}

#[inline]
fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[inline]
fn put_tag(out: &mut Vec<u8>, field: u32, wire: u32) {
    put_varint(out, u64::from((field << 3) | wire));
}

#[inline]
fn put_bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A string field; an empty one is left out, as prost does for a plain (non-oneof) field.
#[inline]
fn put_str(out: &mut Vec<u8>, field: u32, s: &str) {
    if !s.is_empty() {
        put_bytes(out, field, s.as_bytes());
    }
}

#[inline]
fn put_fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(out, field, FIXED64);
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_fixed32(out: &mut Vec<u8>, field: u32, v: u32) {
    put_tag(out, field, FIXED32);
    out.extend_from_slice(&v.to_le_bytes());
}

#[inline]
fn put_enum(out: &mut Vec<u8>, field: u32, v: i32) {
    if v != 0 {
        put_tag(out, field, VARINT);
        // An enum is an int32: a negative one is sign-extended to 64 bits.
        put_varint(out, i64::from(v) as u64);
    }
}

/// An attribute value, borrowed from the envelope (or from a value the mapping just built).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum AttrValue<'a> {
    Str(&'a str),
    Bool(bool),
    I64(i64),
    F64(f64),
}

/// Writes an `AnyValue` message's content (a oneof: written even when it is a default value).
#[inline]
fn put_any_value(out: &mut Vec<u8>, v: AttrValue<'_>) {
    match v {
        AttrValue::Str(s) => put_bytes(out, kv::STRING, s.as_bytes()),
        AttrValue::Bool(b) => {
            put_tag(out, kv::BOOL, VARINT);
            out.push(u8::from(b));
        }
        AttrValue::I64(i) => {
            put_tag(out, kv::INT, VARINT);
            put_varint(out, i as u64);
        }
        AttrValue::F64(f) => put_fixed64(out, kv::DOUBLE, f.to_bits()),
    }
}

/// The length of [`put_any_value`]'s output.
#[inline]
fn any_value_len(v: AttrValue<'_>) -> usize {
    match v {
        AttrValue::Str(s) => 1 + varint_len(s.len() as u64) + s.len(),
        AttrValue::Bool(_) => 2,
        AttrValue::I64(i) => 1 + varint_len(i as u64),
        AttrValue::F64(_) => 9,
    }
}

#[inline]
fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A `KeyValue` message's content.
#[inline]
fn put_key_value(out: &mut Vec<u8>, key: &str, v: AttrValue<'_>) {
    put_str(out, kv::KEY, key);
    put_tag(out, kv::VALUE, LEN);
    put_varint(out, any_value_len(v) as u64);
    put_any_value(out, v);
}

/// The attributes of one event, encoded once: each a length-delimited `KeyValue` behind a
/// one-byte tag left blank, so the span and the log record copy the whole buffer at once and
/// write their own field number into the blanks.
#[derive(Debug, Default)]
pub(crate) struct Attributes {
    buf: Vec<u8>,
    /// Where each entry starts in `buf` (its blank tag byte).
    starts: Vec<usize>,
}

impl Attributes {
    /// Empties it, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
    }

    /// Appends one attribute.
    pub(crate) fn push(&mut self, key: &str, v: AttrValue<'_>) {
        let key_len = if key.is_empty() {
            0
        } else {
            1 + varint_len(key.len() as u64) + key.len()
        };
        let value_len = any_value_len(v);
        let len = key_len + 1 + varint_len(value_len as u64) + value_len;
        self.starts.push(self.buf.len());
        self.buf.reserve(1 + varint_len(len as u64) + len);
        self.buf.push(0);
        put_varint(&mut self.buf, len as u64);
        put_key_value(&mut self.buf, key, v);
    }

    fn write(&self, out: &mut Vec<u8>, field: u32) {
        let tag = (field << 3) | LEN;
        match u8::try_from(tag) {
            // A one-byte tag (every field number below 16): one copy, then the tags.
            Ok(tag) if tag < 0x80 => {
                let base = out.len();
                out.extend_from_slice(&self.buf);
                for &start in &self.starts {
                    out[base + start] = tag;
                }
            }
            _ => {
                let ends = self.starts.iter().skip(1).copied().chain([self.buf.len()]);
                for (&start, end) in self.starts.iter().zip(ends) {
                    put_tag(out, field, LEN);
                    out.extend_from_slice(&self.buf[start + 1..end]);
                }
            }
        }
    }
}

/// What a span says besides its attributes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpanFields<'a> {
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    /// `None` for a root span.
    pub(crate) parent_span_id: Option<[u8; 8]>,
    /// W3C trace flags (`01`: sampled).
    pub(crate) trace_flags: u8,
    pub(crate) name: &'a str,
    /// `Span.SpanKind` (1: internal).
    pub(crate) kind: i32,
    pub(crate) start_unix_nano: u64,
    pub(crate) end_unix_nano: u64,
    /// `Status.StatusCode` (1: ok, 2: error).
    pub(crate) status_code: i32,
    pub(crate) status_message: &'a str,
}

/// What a log record says besides its attributes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogFields<'a> {
    pub(crate) time_unix_nano: u64,
    pub(crate) observed_unix_nano: u64,
    /// `SeverityNumber` (9: info, 13: warn, 17: error).
    pub(crate) severity_number: i32,
    pub(crate) severity_text: &'a str,
    /// A string body.
    pub(crate) body: &'a str,
    pub(crate) trace_flags: u8,
    pub(crate) trace_id: [u8; 16],
    pub(crate) span_id: [u8; 8],
    pub(crate) event_name: &'a str,
}

/// Reused buffers for writing messages: grown by the first events, then no allocation.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    msg: Vec<u8>,
    nested: Vec<u8>,
}

/// Appends `msg` to `out` as one length-delimited entry of field 2 (`ScopeSpans.spans`,
/// `ScopeLogs.log_records`).
fn put_entry(out: &mut Vec<u8>, msg: &[u8]) {
    put_bytes(out, SECOND, msg);
}

/// Appends one span, as a `ScopeSpans.spans` entry, to `out`.
pub(crate) fn write_span(
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
    f: &SpanFields<'_>,
    attrs: &Attributes,
) {
    let m = &mut scratch.msg;
    m.clear();
    put_bytes(m, span::TRACE_ID, &f.trace_id);
    put_bytes(m, span::SPAN_ID, &f.span_id);
    if let Some(parent) = &f.parent_span_id {
        put_bytes(m, span::PARENT_SPAN_ID, parent);
    }
    put_str(m, span::NAME, f.name);
    put_enum(m, span::KIND, f.kind);
    put_fixed64(m, span::START, f.start_unix_nano);
    put_fixed64(m, span::END, f.end_unix_nano);
    attrs.write(m, span::ATTRIBUTES);
    let s = &mut scratch.nested;
    s.clear();
    put_str(s, span::STATUS_MESSAGE, f.status_message);
    put_enum(s, span::STATUS_CODE, f.status_code);
    put_bytes(m, span::STATUS, s);
    put_fixed32(
        m,
        span::FLAGS,
        span::HAS_IS_REMOTE | u32::from(f.trace_flags),
    );
    put_entry(out, m);
}

/// Appends one log record, as a `ScopeLogs.log_records` entry, to `out`; `first` is an
/// attribute written before `attrs` (`degraded.reason`).
pub(crate) fn write_log(
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
    f: &LogFields<'_>,
    first: Option<(&str, AttrValue<'_>)>,
    attrs: &Attributes,
) {
    let m = &mut scratch.msg;
    m.clear();
    put_fixed64(m, log::TIME, f.time_unix_nano);
    put_enum(m, log::SEVERITY_NUMBER, f.severity_number);
    put_str(m, log::SEVERITY_TEXT, f.severity_text);
    let s = &mut scratch.nested;
    s.clear();
    put_any_value(s, AttrValue::Str(f.body));
    put_bytes(m, log::BODY, s);
    if let Some((key, v)) = first {
        s.clear();
        put_key_value(s, key, v);
        put_bytes(m, log::ATTRIBUTES, s);
    }
    attrs.write(m, log::ATTRIBUTES);
    put_fixed32(m, log::FLAGS, u32::from(f.trace_flags));
    put_bytes(m, log::TRACE_ID, &f.trace_id);
    put_bytes(m, log::SPAN_ID, &f.span_id);
    put_fixed64(m, log::OBSERVED_TIME, f.observed_unix_nano);
    put_str(m, log::EVENT_NAME, f.event_name);
    put_entry(out, m);
}

/// Appends an SDK log record (one the mapping built as a value: a slow operation's) to `out`
/// as a `ScopeLogs.log_records` entry, through the `opentelemetry-proto` transform the SDK's
/// exporter uses: a batch of encoded records may carry it.
pub(crate) fn write_sdk_log(out: &mut Vec<u8>, record: &opentelemetry_sdk::logs::SdkLogRecord) {
    let proto = opentelemetry_proto::tonic::logs::v1::LogRecord::from(record);
    put_entry(out, &proto.encode_to_vec());
}

/// Nanoseconds since the Unix epoch, as OTLP carries times (0 before the epoch, as the SDK's
/// exporter does).
pub(crate) fn unix_nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// The gateway's resource and scope, encoded once: wraps batches of encoded spans or log
/// records into export requests.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The `Resource` message.
    resource: Vec<u8>,
    resource_schema_url: String,
    /// The `InstrumentationScope` message.
    scope: Vec<u8>,
    scope_schema_url: String,
}

impl Frame {
    /// The frame of requests under `resource`, from `scope`.
    pub(crate) fn new(resource: &Resource, scope: &InstrumentationScope) -> Self {
        use opentelemetry_proto::tonic::common::v1::InstrumentationScope as ProtoScope;
        use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
        use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
        let with_schema = ResourceAttributesWithSchema::from(resource);
        let resource_msg = ProtoResource {
            attributes: with_schema.attributes.0,
            dropped_attributes_count: 0,
            entity_refs: Vec::new(),
        };
        Frame {
            resource: resource_msg.encode_to_vec(),
            resource_schema_url: with_schema.schema_url.unwrap_or_default(),
            scope: ProtoScope::from((scope, None)).encode_to_vec(),
            scope_schema_url: scope.schema_url().unwrap_or_default().to_owned(),
        }
    }

    /// An export request (traces or logs: the two have the same shape) of the entries in
    /// `batches`, each a run of complete `spans`/`log_records` entries.
    pub(crate) fn request<'a>(&self, batches: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
        let entries: usize = batches.clone().map(<[u8]>::len).sum();
        let mut scope_part = Vec::with_capacity(self.scope.len() + 16);
        put_bytes(&mut scope_part, FIRST, &self.scope);
        let scope_len = scope_part.len()
            + entries
            + if self.scope_schema_url.is_empty() {
                0
            } else {
                1 + varint_len(self.scope_schema_url.len() as u64) + self.scope_schema_url.len()
            };
        let mut head = Vec::with_capacity(self.resource.len() + 32);
        put_bytes(&mut head, FIRST, &self.resource);
        put_tag(&mut head, SECOND, LEN);
        put_varint(&mut head, scope_len as u64);
        let mut tail = Vec::new();
        put_str(&mut tail, SCHEMA_URL, &self.resource_schema_url);
        let resource_len = head.len() + scope_len + tail.len();
        let mut out = Vec::with_capacity(resource_len + 16);
        put_tag(&mut out, FIRST, LEN);
        put_varint(&mut out, resource_len as u64);
        out.extend_from_slice(&head);
        out.extend_from_slice(&scope_part);
        for b in batches {
            out.extend_from_slice(b);
        }
        put_str(&mut out, SCHEMA_URL, &self.scope_schema_url);
        out.extend_from_slice(&tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_is_a_key_value_behind_a_blank_tag() {
        use proptest::prelude::*;
        let value = prop_oneof![
            ".{0,300}".prop_map(|s: String| (s, 0u8, 0i64, 0f64)),
            any::<bool>().prop_map(|b| (String::new(), 1 + u8::from(b), 0, 0.0)),
            any::<i64>().prop_map(|i| (String::new(), 3, i, 0.0)),
            any::<f64>().prop_map(|f| (String::new(), 4, 0, f)),
        ];
        proptest!(|(key in ".{0,200}", (s, kind, i, f) in value)| {
            let v = match kind {
                0 => AttrValue::Str(&s),
                1 | 2 => AttrValue::Bool(kind == 2),
                3 => AttrValue::I64(i),
                _ => AttrValue::F64(f),
            };
            let mut attrs = Attributes::default();
            attrs.push(&key, v);
            let mut kv = Vec::new();
            put_key_value(&mut kv, &key, v);
            let mut expected = vec![0];
            put_varint(&mut expected, kv.len() as u64);
            expected.extend_from_slice(&kv);
            prop_assert_eq!(&attrs.buf, &expected);
            prop_assert_eq!(&attrs.starts, &vec![0]);
        });
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
        }
        for v in [
            AttrValue::Str(""),
            AttrValue::Str("x"),
            AttrValue::Bool(false),
            AttrValue::I64(-1),
            AttrValue::I64(0),
            AttrValue::F64(0.0),
        ] {
            let mut out = Vec::new();
            put_any_value(&mut out, v);
            assert_eq!(out.len(), any_value_len(v), "{v:?}");
        }
    }

    #[test]
    fn attributes_are_the_key_values_under_any_field_number() {
        let long = "v".repeat(200);
        let attrs: [(&str, AttrValue<'_>); 5] = [
            ("a", AttrValue::Str("x")),
            ("", AttrValue::Bool(true)),
            ("n", AttrValue::I64(-7)),
            ("long", AttrValue::Str(&long)),
            ("f", AttrValue::F64(1.5)),
        ];
        let mut set = Attributes::default();
        for (k, v) in attrs {
            set.push(k, v);
        }
        // Fields 9 and 6 (one-byte tags, the copy-then-tag path) and 20 (a two-byte tag).
        for field in [9, 6, 20] {
            let mut expected = Vec::new();
            for (k, v) in attrs {
                let mut kv = Vec::new();
                put_key_value(&mut kv, k, v);
                put_bytes(&mut expected, field, &kv);
            }
            let mut out = vec![0xAA];
            set.write(&mut out, field);
            assert_eq!(&out[1..], &expected[..], "field {field}");
        }
    }
}
