//! Fuzzes `GatewayConfig::from_toml_str` with arbitrary text: it must never panic, and whatever
//! it accepts must pass `validate()`.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run config_parse` (see docs/fuzzing.md).

#![no_main]

use libfuzzer_sys::fuzz_target;
use telemetry_gateway::GatewayConfig;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cfg) = GatewayConfig::from_toml_str(text) {
        if let Err(e) = cfg.validate() {
            panic!("from_toml_str accepted a config that validate refuses: {e}\n{text}");
        }
    }
});
