//! `allocations`: heap allocations per event inside the running gateway, per path.
//!
//! A counting global allocator (every thread: the gateway's actors, handlers and export
//! runtime) counts allocations and bytes while a gateway (memory dedup, `local_output =
//! "discard"`, the enterprise destination on) takes a closed-loop stream of events, the same
//! events as the load generator's `--mode trace` (a workflow run of ten node executions) and
//! `--mode metric` (four metric/log cases): `testing::load_event`. The envelopes are built before counting starts, so
//! what is counted is the gateway's own work, from `emit()` to every event settled
//! (`in_flight == 0`). Each path runs at two sizes and the difference is divided by the
//! difference in events, so start-up and timer-driven work cancel out, as in
//! `scripts/instructions.sh`.
//!
//! Every run checks its ledger (`emitted == delivered + dropped`, nothing dropped): a run that
//! lost events would count less work than it should, so it fails the bench instead.
//!
//! ```text
//! cargo bench --bench allocations
//! ```
//!
//! Prints one line per path and, last, a JSON object. Not a criterion bench: the figure is a
//! count, the same on every run within a few percent, not a time.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use telemetry_gateway::config::LocalOutput;
use telemetry_gateway::testing::{load_event, LoadMix};
use telemetry_gateway::{GatewayConfig, TelemetryEnvelope};

/// Counts allocations and allocated bytes of every thread.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract for `realloc` is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations and bytes counted while `n` events go through a fresh gateway.
fn run(mix: LoadMix, n: u64) -> Result<(u64, u64), String> {
    let mut cfg = GatewayConfig::default();
    cfg.gateway.enterprise_enabled = true;
    cfg.otlp.endpoint = None;
    cfg.export.local_output = LocalOutput::Discard;
    let gateway = telemetry_gateway::start(cfg).map_err(|e| e.to_string())?;
    let events: Vec<TelemetryEnvelope> = (0..n).map(|i| load_event(mix, i, 0)).collect();
    // Closed loop, as `scripts/instructions.sh` runs the load generator: the pipeline stays
    // full and nothing is refused.
    let max_in_flight = 5_000;
    let (a0, b0) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    for (i, env) in events.into_iter().enumerate() {
        while i % 256 == 0 && gateway.stats().in_flight > max_in_flight {
            std::thread::sleep(Duration::from_micros(100));
        }
        gateway
            .emit(env)
            .map_err(|e| format!("event {i} refused: {e}"))?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while gateway.stats().in_flight > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(500));
    }
    let (a1, b1) = (
        ALLOCS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    let report = gateway.shutdown_blocking(Duration::from_secs(10));
    let s = &report.stats;
    let dropped: u64 = s.dropped.values().sum();
    if s.emitted != n || s.delivered != n || dropped != 0 {
        return Err(format!(
            "{n} events: emitted {}, delivered {}, dropped {:?}: the count would not be the \
             gateway's whole work",
            s.emitted, s.delivered, s.dropped
        ));
    }
    Ok((a1 - a0, b1 - b0))
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it with nothing and expects
    // it to be quick: a smoke run of one small size then.
    let benching = std::env::args().any(|a| a == "--bench");
    let (small, large) = if benching {
        (10_000, 30_000)
    } else {
        (1_000, 2_000)
    };
    let mut out = serde_json::Map::new();
    out.insert("small".into(), json!(small));
    out.insert("large".into(), json!(large));
    // The metric/log path's figure depends on how many events a handler batch holds, which
    // depends on thread scheduling: three measurements, the median reported with the range.
    let rounds = if benching { 3 } else { 1 };
    for (name, mix) in [
        ("trace", LoadMix::Trace),
        ("metric_log", LoadMix::MetricLog),
    ] {
        let mut per_event = Vec::new();
        let mut bytes = Vec::new();
        for _ in 0..rounds {
            let measured = run(mix, small).and_then(|a| Ok((a, run(mix, large)?)));
            let ((a_small, b_small), (a_large, b_large)) = match measured {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("allocations: {name} path: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let span = (large - small) as f64;
            per_event.push(a_large.saturating_sub(a_small) as f64 / span);
            bytes.push(b_large.saturating_sub(b_small) as f64 / span);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (lo, hi) = (
            per_event.iter().copied().fold(f64::INFINITY, f64::min),
            per_event.iter().copied().fold(0.0, f64::max),
        );
        let (m, b) = (median(&mut per_event), median(&mut bytes));
        eprintln!(
            "{name} path: {m:.1} allocations per event (median of {rounds}; {lo:.1} to {hi:.1}), \
             {b:.0} bytes allocated per event"
        );
        out.insert(
            format!("{name}_allocs_per_event"),
            json!((m * 100.0).round() / 100.0),
        );
        out.insert(
            format!("{name}_allocs_min"),
            json!((lo * 100.0).round() / 100.0),
        );
        out.insert(
            format!("{name}_allocs_max"),
            json!((hi * 100.0).round() / 100.0),
        );
        out.insert(format!("{name}_bytes_per_event"), json!(b.round()));
    }
    println!("{}", serde_json::Value::Object(out));
    ExitCode::SUCCESS
}
