//! Reliability suite, scenario 2: overload accounting. Producers emit flat out for 3 s into a
//! receiver that answers after 50 ms, through queues of 8,192 events (the gateway's and the
//! trace queue; the defaults hold 65,536 each, which only made the drain after the load take
//! 25 s of CI without changing what is checked): exported + dropped(queue_full) == sent
//! exactly, and dropped > 0. And `emit()` never waits for room, proved structurally: with the consumer
//! frozen, emit returns `QueueFull` at once; if it ever blocked, the watchdog below would have
//! to thaw the consumer, and the test fails on that, not on a clock.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{
    start, EmitError, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

#[test]
fn flat_out_producers_into_a_slow_receiver_are_accounted_exactly() {
    let rx = OtlpReceiver::start();
    rx.set_delay(Duration::from_millis(50));
    let (mut cfg, _d) = support::config();
    cfg.otlp.endpoint = Some(rx.endpoint());
    cfg.gateway.queue_capacity = 8_192;
    cfg.trace_batcher.queue_capacity = 8_192;
    let gw = start(cfg).unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(3);
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let (gw, sent, refused) = (gw.clone(), sent.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while Instant::now() < stop {
                    let e = TelemetryEnvelope::new(
                        TelemetryCase::WorkflowRun,
                        TelemetryContext::tenant("t"),
                    )
                    .with_run_id(format!("p{p}-{i}"));
                    match gw.emit(e) {
                        Ok(_) => {}
                        Err(EmitError::QueueFull) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    // Drain everything that was accepted: the bounded queues hold at most ~70k spans.
    let report = gw.shutdown_blocking(Duration::from_secs(120));
    let s = &report.stats;
    let dropped = s.dropped_for(ReasonCode::QueueFull);
    eprintln!(
        "overload: sent {sent}, refused at emit {}, exported {}, dropped(queue_full) {dropped}, shutdown {}",
        refused.load(Ordering::Relaxed),
        s.exported.spans,
        s.dropped_for(ReasonCode::Shutdown)
    );
    assert_eq!(s.emitted, sent);
    assert!(dropped > 0, "flat out into a slow receiver must overflow");
    assert_eq!(
        s.exported.spans + dropped,
        sent,
        "exported + dropped(queue_full) == sent: {s:?}"
    );
    assert_eq!(s.dropped_total(), dropped, "{s:?}");
}

#[test]
fn emit_never_waits_for_room_with_the_consumer_frozen() {
    let (mut cfg, _d) = support::config();
    cfg.gateway.queue_capacity = 100;
    let gw = start(cfg).unwrap();
    let freeze = gw
        .freeze_intake_for_tests()
        .expect("the gateway actor froze");
    // A watchdog that thaws the consumer if the test thread gets stuck in emit().
    let needed_watchdog = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (needed, done) = (needed_watchdog.clone(), done.clone());
        std::thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                if done.load(Ordering::SeqCst) {
                    return Some(freeze);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            needed.store(true, Ordering::SeqCst);
            drop(freeze);
            None
        })
    };
    let mut ok = 0;
    let mut full = 0;
    for i in 0..1_000 {
        match gw.emit(
            TelemetryEnvelope::new(TelemetryCase::AppUpdated, TelemetryContext::tenant("t"))
                .with_run_id(format!("{i}")),
        ) {
            Ok(_) => ok += 1,
            Err(EmitError::QueueFull) => full += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    done.store(true, Ordering::SeqCst);
    let freeze = watchdog.join().unwrap();
    assert!(
        !needed_watchdog.load(Ordering::SeqCst),
        "emit() blocked on a full queue"
    );
    assert_eq!(ok, 100, "exactly the queue's capacity was taken");
    assert_eq!(full, 900, "every other emit returned QueueFull at once");
    drop(freeze); // thaw
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, 100);
    assert_eq!(s.dropped_for(ReasonCode::QueueFull), 900);
    assert!(s.is_settled());
}
