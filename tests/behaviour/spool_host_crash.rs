//! A host process with disk spools killed with SIGKILL (issue 16): a child process (this test
//! binary again) runs a gateway with `[spool] kind = "disk"`, `sync = "always"`, and emits
//! trace events to the parent's OTLP receiver, which is up or down; the parent kills it at a
//! random moment, 20 times, and each time starts a gateway of its own on the same spool path
//! with the receiver up.
//!
//! The child prints `safe <n>` whenever every event it emitted so far (the seqs below `n`) is
//! either delivered or in a record its spool has synced. What must hold after each kill:
//! - every seq the child reported safe arrives at the receiver (after the restart, if not
//!   before); what arrives twice was in a record in flight at the kill (sent, not yet
//!   acknowledged), and is counted;
//! - the restarted gateway opens the spool in bounded time, counts what it found in
//!   `recovered`, delivers it, and balances: `recovered == delivered + dropped`, nothing left;
//!   the only drop is the record a kill tore mid-write (never reported safe), `spool_corrupt`.

use crate::support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use telemetry_gateway::config::{SpoolKind, SpoolSync};
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{
    start, GatewayConfig, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

const CHILD_DIR: &str = "TELEMETRY_GATEWAY_HOST_CRASH_DIR";
const CHILD_ENDPOINT: &str = "TELEMETRY_GATEWAY_HOST_CRASH_ENDPOINT";
const CHILD_FIRST: &str = "TELEMETRY_GATEWAY_HOST_CRASH_FIRST";

fn spooled_config(dir: &std::ffi::OsStr, endpoint: String) -> (GatewayConfig, tempfile::TempDir) {
    let (mut c, d) = support::config();
    c.otlp.endpoint = Some(endpoint);
    c.otlp.timeout_ms = 1_000;
    c.retry.outage_backoff_max_ms = 200;
    c.trace_batcher.max_batch_size = 50;
    c.spool.kind = SpoolKind::Disk;
    c.spool.path = Some(dir.into());
    c.spool.sync = SpoolSync::Always;
    (c, d)
}

fn trace_event(seq: u64) -> TelemetryEnvelope {
    TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
        .with_run_id(format!("run-{seq}"))
        .with_payload(json!({"seq": seq}))
}

/// The child: runs only when the parent set its directory.
#[test]
fn host_child_emits_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let endpoint = std::env::var(CHILD_ENDPOINT).expect("endpoint");
    let first: u64 = std::env::var(CHILD_FIRST).expect("first").parse().unwrap();
    let (c, _d) = spooled_config(&dir, endpoint);
    let gw = start(c).expect("start");
    let mut out = std::io::stdout().lock();
    // libtest has printed "test <name> ... " without a newline.
    writeln!(out, "\nready").unwrap();
    out.flush().unwrap();
    let mut seq = first;
    loop {
        // A burst, then (kills may land in either) a wait until it is all safe: delivered or
        // on disk (synced at each append).
        for _ in 0..8 {
            for _ in 0..25 {
                gw.emit(trace_event(seq)).expect("emit");
                seq += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            // Read the delivered count on both sides of the spool's, so an acknowledgement
            // moving events between them cannot count one twice.
            let before = gw.stats().delivered;
            let on_disk: u64 = gw
                .diagnostics()
                .spools
                .iter()
                .filter(|s| s.name == "enterprise")
                .map(|s| s.events)
                .sum();
            let s = gw.stats();
            if s.delivered == before && s.delivered + s.dropped_total() + on_disk == seq - first {
                writeln!(out, "safe {seq}").unwrap();
                out.flush().unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[test]
fn a_host_killed_at_random_moments_delivers_everything_its_spool_synced() {
    let spool = tempfile::tempdir().unwrap();
    let rx = OtlpReceiver::start();
    let exe = std::env::current_exe().unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut safe_total, mut recovered_total, mut slowest_open) = (0u64, 0u64, Duration::ZERO);
    let mut per_round = Vec::new();
    let mut torn_total = 0u64;
    for round in 0..20u64 {
        let up = round % 2 == 0;
        rx.fail_with((!up).then_some(tonic::Code::Unavailable));
        let first = round * 1_000_000;
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "spool_host_crash::host_child_emits_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, spool.path())
            .env(CHILD_ENDPOINT, rx.endpoint())
            .env(CHILD_FIRST, first.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, first_safe) = std::sync::mpsc::channel::<()>();
        let reader = std::thread::spawn(move || {
            let mut safe = None;
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = l.strip_prefix("safe ") {
                    if safe.is_none() {
                        let _ = tx.send(());
                    }
                    safe = n.parse::<u64>().ok();
                }
            }
            safe
        });
        // Killed at a random moment after its first safe point (a loaded machine may take a
        // while to get there), in a burst or in a wait alike.
        first_safe
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("round {round}: the child never reached a safe point: {e}"));
        std::thread::sleep(Duration::from_millis(next() % 400));
        child.kill().unwrap();
        child.wait().unwrap();
        let safe_end = reader.join().unwrap().unwrap_or(first);

        // A gateway of our own on the same spool, the collector up.
        rx.fail_with(None);
        let (c, _d) = spooled_config(spool.path().as_os_str(), rx.endpoint());
        let began = Instant::now();
        let gw = start(c).unwrap_or_else(|e| panic!("round {round}: restart failed: {e}"));
        slowest_open = slowest_open.max(began.elapsed());
        let end = Instant::now() + Duration::from_secs(30);
        while gw.stats().in_flight > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let report = gw.shutdown_blocking(support::DEADLINE);
        let s = &report.stats;
        assert!(report.is_clean(), "round {round}: {report:?}");
        assert!(s.is_settled(), "round {round}: {s:?}");
        assert_eq!(s.emitted, 0);
        // Everything recovered is delivered, but for the record a kill tore while it was being
        // written (its append never returned, so none of its events was reported safe; Linux
        // ends a write early at a page boundary when a fatal signal is pending): skipped at
        // open and dropped as `spool_corrupt`, one batch at most.
        let torn = s.dropped_for(ReasonCode::SpoolCorrupt);
        assert!(torn <= 50, "round {round}: {s:?}");
        assert_eq!(
            (s.delivered + torn, s.dropped_total() - torn, s.spooled),
            (s.recovered, 0, 0),
            "round {round}: everything recovered is delivered: {s:?}"
        );
        recovered_total += s.recovered;
        torn_total += torn;

        let (seqs, _) = support::span_seqs(&rx.received());
        let missing: Vec<u64> = (first..safe_end)
            .filter(|q| !seqs.contains(&(*q as i64)))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round} (collector {}): {} of {} safe events never arrived, first {:?}",
            if up { "up" } else { "down" },
            missing.len(),
            safe_end - first,
            missing.first()
        );
        per_round.push(safe_end - first);
        safe_total += safe_end - first;
    }
    // What arrived twice: a record sent but not acknowledged when its process was killed.
    let (_, twice) = support::span_seqs(&rx.received());
    eprintln!(
        "host crash: 20 kills, {safe_total} events reported safe, all delivered; \
         {recovered_total} recovered by the restarts, {torn_total} of them in torn records; \
         {twice} delivered twice; slowest restart \
         {slowest_open:?}; safe per round {per_round:?}"
    );
    assert!(
        per_round.iter().all(|n| *n > 0),
        "a round has no safe point: {per_round:?}"
    );
    assert!(
        slowest_open < Duration::from_secs(5),
        "opening took {slowest_open:?}"
    );
    // At most the records in flight at each kill: `sink_concurrency` (4) batches of 50.
    assert!(twice as u64 <= 20 * 4 * 50, "{twice} delivered twice");
}
