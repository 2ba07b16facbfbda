//! `hop`: what one event costs the caller, side by side with what a caller would use instead.
//!
//! One group, the same small event (`app_created` with a one-field payload):
//! - `mpsc_try_send`: a bare bounded `tokio::sync::mpsc` `try_send` to a task draining it;
//! - `actix_try_send`: a bare actix `Addr::try_send` to a trivial actor;
//! - `gateway_emit`: `GatewayHandle::emit()` into the running gateway (discard exporter).
//!
//! Each sample times chunks of [`CHUNK`] calls and lets the consumer drain between chunks
//! (untimed), so every timed call meets a queue with room, as on a healthy request path, while
//! the consumer runs concurrently. The envelopes are built before the clock starts.
//!
//! A counting global allocator reports heap allocations per call on the calling thread, printed
//! after the group (`allocations per call`). The target (issue 5): `emit()` median at most 1.5x
//! `actix_try_send` and at most 300 ns, at most 2 allocations beyond the payload.
//!
//! ```text
//! cargo bench --bench hop
//! ```

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;
use telemetry_gateway::config::LocalOutput;
use telemetry_gateway::{GatewayConfig, TelemetryCase, TelemetryContext, TelemetryEnvelope};

/// Counts allocations made by the current thread (cheap: a thread-local cell).
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// Calls timed back to back before the consumer is let to drain.
const CHUNK: u64 = 256;

fn event() -> TelemetryEnvelope {
    TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant("acme").app("app-1").user("u-1"),
    )
    .with_payload(json!({"app_mode": "workflow"}))
}

/// Builds `n` envelopes with fresh ids (untimed).
fn events(n: u64) -> Vec<TelemetryEnvelope> {
    (0..n).map(|_| event()).collect()
}

/// Times `iters` calls of `call` in chunks, waiting (untimed) for `drained` between chunks.
/// Returns the total time and the allocations per call on this thread.
fn timed<T>(
    iters: u64,
    make: impl Fn(u64) -> Vec<T>,
    mut call: impl FnMut(T),
    drained: impl Fn() -> bool,
) -> (Duration, f64) {
    let mut total = Duration::ZERO;
    let mut done = 0;
    let mut allocated = 0;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let items = make(n);
        let before = allocs();
        let start = Instant::now();
        for item in items {
            call(item);
        }
        total += start.elapsed();
        allocated += allocs() - before;
        done += n;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !drained() && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }
    (total, allocated as f64 / iters.max(1) as f64)
}

/// The trivial actor of the actix baseline.
struct Sink;

impl Actor for Sink {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(65_536);
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Event(#[allow(dead_code)] TelemetryEnvelope);

impl Handler<Event> for Sink {
    type Result = ();
    fn handle(&mut self, msg: Event, _ctx: &mut Self::Context) {
        black_box(msg);
        RECEIVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn hop(c: &mut Criterion) {
    let mut report: Vec<(&str, f64)> = Vec::new();
    let mut g = c.benchmark_group("hop");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(3));

    // Raw tokio mpsc, a consumer task on its own runtime thread.
    {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("a runtime");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<TelemetryEnvelope>(65_536);
        rt.spawn(async move { while rx.recv().await.is_some() {} });
        let mut per_call = 0.0;
        g.bench_function("mpsc_try_send", |b| {
            b.iter_custom(|iters| {
                let (t, a) = timed(
                    iters,
                    events,
                    |e| {
                        let _ = black_box(tx.try_send(e));
                    },
                    || tx.capacity() == tx.max_capacity(),
                );
                per_call = a;
                t
            })
        });
        report.push(("mpsc_try_send", per_call));
    }

    // Raw actix: a trivial actor on its own arbiter.
    {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let _system = std::thread::spawn(move || {
            let sys = actix::System::new();
            sys.block_on(async move {
                let _ = addr_tx.send(Sink.start());
            });
            sys.run()
        });
        let addr: Addr<Sink> = addr_rx.recv().expect("the actor's address");
        let mut per_call = 0.0;
        let sent = Cell::new(0u64);
        g.bench_function("actix_try_send", |b| {
            b.iter_custom(|iters| {
                let (t, a) = timed(
                    iters,
                    events,
                    |e| {
                        if addr.try_send(Event(e)).is_ok() {
                            sent.set(sent.get() + 1);
                        }
                    },
                    || RECEIVED.load(std::sync::atomic::Ordering::Relaxed) >= sent.get(),
                );
                per_call = a;
                t
            })
        });
        report.push(("actix_try_send", per_call));
    }

    // The gateway.
    {
        let mut cfg = GatewayConfig::default();
        cfg.export.local_output = LocalOutput::Discard;
        cfg.gateway.enterprise_enabled = true;
        // Settle quickly between chunks (the log batcher would otherwise wait for its 200 ms).
        cfg.export.log_flush_interval_ms = 1;
        let gw = telemetry_gateway::start(cfg).expect("the gateway starts");
        let mut per_call = 0.0;
        g.bench_function("gateway_emit", |b| {
            b.iter_custom(|iters| {
                let (t, a) = timed(
                    iters,
                    events,
                    |e| {
                        let _ = black_box(gw.emit(e));
                    },
                    // Every event settled: the next chunk meets an idle gateway, like a
                    // request path on a gateway that keeps up with its traffic.
                    || gw.stats().in_flight == 0,
                );
                per_call = a;
                t
            })
        });
        report.push(("gateway_emit", per_call));
        let report_of_run = gw.shutdown_blocking(Duration::from_secs(10));
        let s = &report_of_run.stats;
        let dropped: u64 = s.dropped.values().sum();
        assert_eq!(
            s.emitted,
            s.delivered + dropped,
            "every event accounted for"
        );
        println!(
            "gateway_emit: {} emitted = {} delivered + {} dropped {:?}",
            s.emitted, s.delivered, dropped, s.dropped
        );
    }
    g.finish();
    for (name, a) in report {
        println!("allocations per call on the caller's thread: {name}: {a:.2}");
    }
}

criterion_group!(benches, hop);
criterion_main!(benches);
