//! The CI counterparts of the cargo-fuzz targets in `fuzz/` (see `docs/fuzzing.md`): the same
//! properties, checked on a few hundred generated inputs in every `cargo test`.
//!
//! - Decoding untrusted input never panics: `TelemetryEnvelope::from_json` on arbitrary text,
//!   bytes and mutated envelopes; `GatewayConfig::from_toml_str` on arbitrary text and mutated
//!   configuration files. What is accepted is valid and (envelopes) round-trips.
//! - Every valid envelope round-trips through `to_json` / `from_json` exactly.
//! - A field given a value of the wrong JSON type is refused with an error naming the field.
//!
//! Two of these properties guard fixed findings (docs/fuzzing.md, "Findings"):
//!
//! - F1: floats in payloads changed in their last bit through `to_json` / `from_json`;
//!   fixed by `serde_json`'s `float_roundtrip` feature.
//! - F2: a wrong JSON type was refused with serde's message, which named the column, not the
//!   field; fixed by decoding through `serde_path_to_error`.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence};
use serde_json::{json, Map, Value};
use telemetry_gateway::contracts::{Correlation, Payload, PayloadFallback, SignalType};
use telemetry_gateway::{GatewayConfig, TelemetryCase, TelemetryContext, TelemetryEnvelope};
use uuid::Uuid;

/// The shipped configuration: every key, so mutating one line reaches every section.
const GATEWAY_TOML: &str = include_str!("../../config/gateway.toml");

/// Finding F1 (docs/fuzzing.md): a float survives `to_json` / `from_json` bit for bit, now that
/// `serde_json`'s `float_roundtrip` feature is on.
const FLOATS_ROUND_TRIP: bool = true;

/// Proptest's defaults (256 cases, or `PROPTEST_CASES`), with regressions kept next to this
/// file (`tests/fuzz_properties.proptest-regressions`).
fn config() -> Config {
    Config {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    }
}

/// Whether a JSON text holds a number that is neither an `i64` nor a `u64`.
fn has_float(json: &str) -> bool {
    fn walk(v: &Value) -> bool {
        match v {
            Value::Number(n) => n.is_f64(),
            Value::Array(a) => a.iter().any(walk),
            Value::Object(o) => o.values().any(walk),
            _ => false,
        }
    }
    serde_json::from_str::<Value>(json).is_ok_and(|v| walk(&v))
}

/// What the `envelope_decode` fuzz target checks for one input (the exact comparison only for
/// float-free input while F1 is open).
fn check_decode(text: &str) {
    let Ok(env) = TelemetryEnvelope::from_json(text) else {
        return;
    };
    env.validate_cheap()
        .unwrap_or_else(|e| panic!("accepted but invalid: {e}\n{text}"));
    let wire = env
        .to_json()
        .unwrap_or_else(|e| panic!("to_json failed on an accepted envelope: {e}\n{text}"));
    let back = TelemetryEnvelope::from_json(&wire)
        .unwrap_or_else(|e| panic!("from_json refused its own output: {e}\n{wire}"));
    if FLOATS_ROUND_TRIP || !has_float(&wire) {
        assert_eq!(back, env, "round trip changed the envelope\n{wire}");
    }
}

/// What the `config_parse` fuzz target checks for one input.
fn check_config(text: &str) {
    if let Ok(cfg) = GatewayConfig::from_toml_str(text) {
        cfg.validate()
            .unwrap_or_else(|e| panic!("accepted but invalid: {e}\n{text}"));
    }
}

// --- strategies for valid envelopes ---------------------------------------------------------

/// Tenant and app ids: the allowed alphabet, 1..=128 bytes, never `.` or `..`.
fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.-]{1,128}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

/// Free text without control characters; `max_chars` * 4 bytes stays within the field's limit.
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[^\\p{{Cc}}]{{0,{max_chars}}}")).expect("regex")
}

fn hex_id(len: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[0-9a-f]{{{len}}}"))
        .expect("regex")
        .prop_filter("not all zero", |s| s.bytes().any(|b| b != b'0'))
}

fn case() -> impl Strategy<Value = TelemetryCase> {
    prop_oneof![
        proptest::sample::select(TelemetryCase::BUILT_IN.to_vec()),
        "[a-z][a-z0-9_]{0,24}".prop_map(|n| TelemetryCase::from_name(&n)),
        // A host may name a case anything on the wire; only the routing table decides.
        text(16)
            .prop_filter("not empty", |s| !s.is_empty())
            .prop_map(|n| TelemetryCase::from_name(&n)),
    ]
}

fn context() -> impl Strategy<Value = TelemetryContext> {
    (
        id(),
        proptest::option::of(id()),
        proptest::option::of(text(32)),
    )
        .prop_map(|(tenant_id, app_id, user_id)| TelemetryContext {
            tenant_id,
            app_id,
            user_id,
        })
}

fn correlation() -> impl Strategy<Value = Correlation> {
    (
        proptest::option::of(text(64)),
        proptest::option::of(text(64)),
        proptest::option::of(hex_id(32)),
        proptest::option::of(hex_id(16)),
        proptest::option::of(hex_id(16)),
    )
        .prop_map(
            |(correlation_id, run_id, trace_id, span_id, parent_span_id)| Correlation {
                correlation_id,
                run_id,
                trace_id,
                span_id,
                parent_span_id,
            },
        )
}

/// Small JSON values: every JSON type (floats of every finite magnitude when `floats`), nested a
/// few levels.
fn json_value(floats: bool) -> impl Strategy<Value = Value> {
    let number = if floats {
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from)
            .boxed()
    } else {
        any::<i64>().prop_map(Value::from).boxed()
    };
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        number,
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            json_object_of(inner).prop_map(Value::Object),
        ]
    })
}

fn json_object_of(
    values: impl Strategy<Value = Value>,
) -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(".{0,8}", values, 0..5).prop_map(|m| m.into_iter().collect())
}

fn json_object(floats: bool) -> impl Strategy<Value = Map<String, Value>> {
    json_object_of(json_value(floats))
}

/// Any instant RFC 3339 can write: years 0000 to 9999, with nanoseconds.
fn created_at() -> impl Strategy<Value = SystemTime> {
    (-62_167_219_200i64..=253_402_300_799i64, 0u32..1_000_000_000).prop_map(|(secs, nanos)| {
        let whole = if secs >= 0 {
            UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        };
        whole + Duration::from_nanos(u64::from(nanos))
    })
}

/// Any envelope `validate_cheap` accepts; payloads and fallbacks hold floats when `floats`.
fn valid_envelope(floats: bool) -> impl Strategy<Value = TelemetryEnvelope> {
    (
        any::<u128>(),
        case(),
        proptest::option::of(prop_oneof![
            Just(SignalType::Trace),
            Just(SignalType::MetricLog)
        ]),
        context(),
        correlation(),
        (json_object(floats), any::<bool>()),
        proptest::option::of(json_object(floats)),
        created_at(),
    )
        .prop_map(
            |(
                id,
                case,
                signal,
                context,
                correlation,
                (payload, offloaded),
                fallback,
                created_at,
            )| {
                let event_id = Uuid::from_u128(id);
                let payload = if offloaded {
                    Payload::Ref(format!("{}/{event_id}.json", context.tenant_id))
                } else {
                    Payload::Inline(payload)
                };
                TelemetryEnvelope {
                    event_id,
                    schema_version: telemetry_gateway::contracts::SCHEMA_VERSION,
                    case,
                    signal,
                    context,
                    correlation,
                    payload,
                    payload_fallback: fallback
                        .map(|o| PayloadFallback::from_object(&o).expect("small fallback")),
                    created_at,
                }
            },
        )
}

// --- wrong types ----------------------------------------------------------------------------

/// The JSON type a wire field has.
#[derive(Debug, Clone, Copy)]
enum Kind {
    String,
    Integer,
    Object,
}

/// Every field of the wire form: its JSON pointer, the name an error must mention, its type.
const FIELDS: [(&str, &str, Kind); 17] = [
    ("/event_id", "event_id", Kind::String),
    ("/schema_version", "schema_version", Kind::Integer),
    ("/case", "case", Kind::String),
    ("/signal", "signal", Kind::String),
    ("/context", "context", Kind::Object),
    ("/context/tenant_id", "tenant_id", Kind::String),
    ("/context/app_id", "app_id", Kind::String),
    ("/context/user_id", "user_id", Kind::String),
    ("/correlation", "correlation", Kind::Object),
    (
        "/correlation/correlation_id",
        "correlation_id",
        Kind::String,
    ),
    ("/correlation/run_id", "run_id", Kind::String),
    ("/correlation/trace_id", "trace_id", Kind::String),
    ("/correlation/span_id", "span_id", Kind::String),
    (
        "/correlation/parent_span_id",
        "parent_span_id",
        Kind::String,
    ),
    ("/payload", "payload", Kind::Object),
    ("/payload_fallback", "payload_fallback", Kind::Object),
    ("/created_at", "created_at", Kind::String),
];

/// A value of any JSON type except `kind` (and except null, which means "absent" for the
/// optional fields).
fn wrong_value(kind: Kind) -> BoxedStrategy<Value> {
    let int = any::<i32>().prop_map(Value::from);
    let float = (-1e6f64..1e6).prop_map(|f| json!(f + 0.5));
    let boolean = any::<bool>().prop_map(Value::from);
    let string = "[a-z0-9]{0,8}".prop_map(Value::from);
    let array =
        proptest::collection::vec(any::<u8>().prop_map(Value::from), 0..3).prop_map(Value::Array);
    let object = Just(json!({"k": 1}));
    match kind {
        Kind::String => prop_oneof![int, float, boolean, array, object].boxed(),
        Kind::Integer => prop_oneof![float, boolean, string, array, object].boxed(),
        Kind::Object => prop_oneof![int, float, boolean, string, array].boxed(),
    }
}

fn wrong_type_mutation() -> impl Strategy<Value = (usize, Value)> {
    (0..FIELDS.len()).prop_flat_map(|i| (Just(i), wrong_value(FIELDS[i].2)))
}

/// Sets the field at `pointer` (creating it in its parent object when absent).
fn set_field(root: &mut Value, pointer: &str, value: Value) {
    let (parent, leaf) = pointer.rsplit_once('/').expect("pointer");
    let parent = root
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .expect("parent object");
    parent.insert(leaf.to_owned(), value);
}

// --- properties -----------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn from_json_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_decode(&text);
    }

    #[test]
    fn from_json_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        check_decode(&String::from_utf8_lossy(&bytes));
    }

    /// Arbitrary text almost never gets past the first `{`: edits of a valid envelope reach the
    /// field checks.
    #[test]
    fn from_json_never_panics_on_mutated_envelopes(
        env in valid_envelope(true),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), 0u8..3, ".{0,4}"), 1..4),
    ) {
        let mut text = env.to_json().expect("to_json");
        for (at, op, s) in edits {
            let boundaries: Vec<usize> =
                (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
            let pos = boundaries[at.index(boundaries.len())];
            match op {
                0 => text.insert_str(pos, &s),
                1 => {
                    let end = boundaries
                        .iter()
                        .copied()
                        .find(|&b| b > pos)
                        .unwrap_or(pos);
                    text.replace_range(pos..end, "");
                }
                _ => text.truncate(pos),
            }
        }
        check_decode(&text);
    }

    #[test]
    fn from_toml_str_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_config(&text);
    }

    #[test]
    fn from_toml_str_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        check_config(&String::from_utf8_lossy(&bytes));
    }

    /// One line of the shipped file replaced: reaches every key's type and range checks.
    #[test]
    fn from_toml_str_never_panics_on_mutated_config(
        line in any::<proptest::sample::Index>(),
        replacement in prop_oneof![
            ".{0,24}",
            "[a-z_]{1,12} = (-?[0-9]{1,20}|\"[^\"]{0,8}\"|true|false|nan|inf|\\[\\]|\\{\\})",
            "\\[\\[?[a-z_.]{0,16}\\]\\]?",
        ],
        keep_key in any::<bool>(),
    ) {
        let mut lines: Vec<String> = GATEWAY_TOML.lines().map(str::to_owned).collect();
        let i = line.index(lines.len());
        lines[i] = match (keep_key, lines[i].split_once(" = ")) {
            // Keep the key, change the value: a wrong type or an out-of-range value.
            (true, Some((key, _))) => {
                let value = replacement.rsplit(" = ").next().unwrap_or_default().to_owned();
                format!("{key} = {value}")
            }
            _ => replacement,
        };
        check_config(&lines.join("\n"));
    }

    #[test]
    fn valid_envelopes_round_trip_exactly(env in valid_envelope(false)) {
        round_trip_exactly(&env)?;
    }

    /// Finding F1: guarded by `serde_json`'s `float_roundtrip` feature.
    #[test]
    fn valid_envelopes_with_floats_round_trip_exactly(env in valid_envelope(true)) {
        round_trip_exactly(&env)?;
    }

    /// Issue 4's "errors name the field", for the wire form (finding F2, fixed by decoding
    /// through `serde_path_to_error`).
    #[test]
    fn a_field_of_the_wrong_type_is_named_in_the_error(
        env in valid_envelope(false),
        (field, value) in wrong_type_mutation(),
    ) {
        let (pointer, name, _) = FIELDS[field];
        let mut wire: Value = serde_json::from_str(&env.to_json().expect("to_json")).expect("json");
        set_field(&mut wire, pointer, value);
        let err = TelemetryEnvelope::from_json(&wire.to_string())
            .expect_err("a wrong type must be refused");
        let message = err.to_string();
        prop_assert!(message.contains(name), "{} not named in: {}", name, message);
    }
}

fn round_trip_exactly(env: &TelemetryEnvelope) -> Result<(), TestCaseError> {
    prop_assert_eq!(env.validate_cheap(), Ok(()));
    let wire = env.to_json().expect("to_json");
    let back = TelemetryEnvelope::from_json(&wire)
        .unwrap_or_else(|e| panic!("refused its own output: {e}\n{wire}"));
    prop_assert_eq!(&back, env, "{}", wire);
    prop_assert_eq!(back.to_json().expect("to_json"), wire);
    Ok(())
}

/// The seed corpus of the fuzz targets stays valid input, so the fuzzers start from inputs that
/// reach the deepest checks.
#[test]
fn the_fuzz_seed_corpus_is_valid() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut seen = 0;
    for (target, parse) in [
        (
            "envelope_decode",
            (|t: &str| {
                TelemetryEnvelope::from_json(t)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }) as fn(&str) -> Result<(), String>,
        ),
        ("config_parse", |t: &str| {
            match GatewayConfig::from_toml_str(t) {
                Ok(_) => Ok(()),
                // A seed that configures Redis or SQLite is valid; a lean build (without those
                // features) refuses it for that reason alone.
                Err(e)
                    if e.to_string().contains("needs the cargo feature")
                        && !cfg!(all(feature = "redis", feature = "analytics")) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }),
    ] {
        for entry in std::fs::read_dir(corpus.join(target)).expect("corpus dir") {
            let path = entry.expect("entry").path();
            if !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("seed");
            if let Err(e) = parse(&text) {
                panic!("{}: {e}", path.display());
            }
            if target == "envelope_decode" {
                check_decode(&text);
            }
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} seeds");
}

/// Finding F1's minimised crasher, replayed: it decodes, and round-trips exactly.
#[test]
fn the_float_crasher_round_trips() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/artifacts/envelope_decode/float-roundtrip.json");
    let text = std::fs::read_to_string(path).expect("the committed crasher");
    let env = TelemetryEnvelope::from_json(&text).expect("it decodes");
    let again =
        TelemetryEnvelope::from_json(&env.to_json().expect("to_json")).expect("it decodes again");
    assert_eq!(again, env, "the number changed on the round trip");
}
