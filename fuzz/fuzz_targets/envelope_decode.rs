//! Fuzzes `TelemetryEnvelope::from_json` with arbitrary bytes: it must never panic, and whatever
//! it accepts must be valid and survive `to_json` / `from_json` unchanged.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run envelope_decode` (see docs/fuzzing.md).

#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_gateway::TelemetryEnvelope;

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 is the transport's problem, not the decoder's: only text reaches it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(env) = TelemetryEnvelope::from_json(text) else {
        return;
    };
    if let Err(e) = env.validate_cheap() {
        panic!("from_json accepted an envelope that validate_cheap refuses: {e}\n{text}");
    }
    let json = env
        .to_json()
        .unwrap_or_else(|e| panic!("to_json failed on an accepted envelope: {e}\n{text}"));
    let back = TelemetryEnvelope::from_json(&json)
        .unwrap_or_else(|e| panic!("from_json refused its own to_json output: {e}\n{json}"));
    assert_eq!(
        back, env,
        "round trip changed the envelope\ninput: {text}\nwire: {json}"
    );
});
