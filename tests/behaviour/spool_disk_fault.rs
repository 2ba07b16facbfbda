//! The wired path under a disk fault (issue 16): a child process (this test binary again) whose
//! files may not grow past 256 KiB (`RLIMIT_FSIZE`, with `SIGXFSZ` ignored, so a write past it
//! fails with `EFBIG` as a full disk would) runs a gateway with `[spool] kind = "disk"` and
//! emits trace and metric/log events to the parent's OTLP receiver, which refuses everything for
//! its first two seconds, so a backlog builds on disk. Once a spool's first segment reaches the
//! limit every append fails: each batch must then be held and sent from memory, the fault must
//! be counted and shown in `/readyz`, `emit()` must neither fail nor hang, and no event may be
//! lost or the process panic.

use crate::support;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use telemetry_gateway::config::SpoolKind;
use telemetry_gateway::testing::OtlpReceiver;
use telemetry_gateway::{start, TelemetryCase, TelemetryContext, TelemetryEnvelope};

const CHILD_DIR: &str = "TELEMETRY_GATEWAY_DISK_FAULT_DIR";
const CHILD_ENDPOINT: &str = "TELEMETRY_GATEWAY_DISK_FAULT_ENDPOINT";

/// Trace events and metric/log events the child emits, each.
const EVENTS: u64 = 3_000;

/// The child: runs only when the parent set its directory.
#[test]
fn child_runs_a_gateway_on_a_disk_that_refuses() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let endpoint = std::env::var(CHILD_ENDPOINT).expect("endpoint");
    super::spool_crash::limit_file_size(256 * 1024);
    let (mut c, _d) = support::config();
    c.otlp.endpoint = Some(endpoint);
    c.trace_batcher.max_batch_size = 50;
    // Held batches are tried again within 200 ms once the receiver is back.
    c.retry.outage_backoff_max_ms = 200;
    c.spool.kind = SpoolKind::Disk;
    c.spool.path = Some(dir.into());
    let gw = start(c).expect("start");
    let mut longest_emit = Duration::ZERO;
    let mut failing_reason = String::new();
    for seq in 0..EVENTS {
        let trace =
            TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("t"))
                .with_run_id(format!("run-{seq}"))
                .with_payload(json!({"seq": seq}));
        let metric =
            TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("t"))
                .with_payload(json!({"seq": seq}));
        for env in [trace, metric] {
            let began = Instant::now();
            gw.emit(env).expect("emit never fails for a disk fault");
            longest_emit = longest_emit.max(began.elapsed());
        }
        if seq % 100 == 99 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let end = Instant::now() + Duration::from_secs(60);
    while gw.stats().in_flight > 0 && Instant::now() < end {
        let r = gw.diagnostics().readiness;
        if let Some(f) = r.reasons.iter().find(|r| r.contains("failing:")) {
            failing_reason.clone_from(f);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let d = gw.diagnostics();
    let io_errors: u64 = d.spools.iter().map(|s| s.io_errors).sum();
    let appends: u64 = d.spools.iter().map(|s| s.appends).sum();
    let report = gw.shutdown_blocking(support::DEADLINE);
    let s = &report.stats;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\nsummary emitted {} delivered {} dropped {} clean {} settled {} io_errors {io_errors} \
         appends {appends} longest_emit_us {} companions_dropped {} exported_logs {}\nreason \
         {failing_reason}",
        s.emitted,
        s.delivered,
        s.dropped_total(),
        report.is_clean(),
        s.is_settled(),
        longest_emit.as_micros(),
        s.companion_logs_dropped,
        s.exported.log_records,
    )
    .unwrap();
    out.flush().unwrap();
}

#[test]
fn a_disk_that_refuses_writes_loses_nothing_and_says_so() {
    let rx = OtlpReceiver::start();
    rx.fail_with(Some(tonic::Code::Unavailable));
    let dir = tempfile::tempdir().unwrap();
    // The receiver comes back after two seconds, while the child waits for its backlog.
    let out = std::thread::scope(|scope| {
        scope.spawn(|| {
            std::thread::sleep(Duration::from_secs(2));
            rx.fail_with(None);
        });
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "spool_disk_fault::child_runs_a_gateway_on_a_disk_that_refuses",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path().join("spool"))
            .env(CHILD_ENDPOINT, rx.endpoint())
            .output()
            .unwrap()
    });
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the child failed (a panic?): {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line: {text}"))
            .to_owned()
    };
    let summary = line("summary ");
    let reason = line("reason ");
    eprintln!("disk fault, wired: {summary}; /readyz said: {reason}");
    let f: Vec<&str> = summary.split(' ').collect();
    let field = |name: &str| -> &str {
        let i = f.iter().position(|w| *w == name).unwrap();
        f[i + 1]
    };
    let n = |name: &str| -> u64 { field(name).parse().unwrap() };
    assert_eq!(n("emitted"), 2 * EVENTS, "{summary}");
    assert_eq!(
        n("delivered"),
        2 * EVENTS,
        "every event delivered: {summary}"
    );
    assert_eq!(n("dropped"), 0, "{summary}");
    assert_eq!(
        (n("exported_logs"), n("companions_dropped")),
        (2 * EVENTS, 0),
        "every log record (companions too) exported: {summary}"
    );
    assert_eq!(
        (field("clean"), field("settled")),
        ("true", "true"),
        "{summary}"
    );
    assert!(n("io_errors") > 0, "the fault is counted: {summary}");
    assert!(
        n("appends") > 0,
        "appends went to disk before the limit: {summary}"
    );
    assert!(
        reason.starts_with("spool enterprise")
            && reason.contains("failing")
            && reason.contains("File too large"),
        "/readyz names the spool and the error: {reason}"
    );
    let r = rx.received();
    assert_eq!(
        support::span_seqs(&r).0.len() as u64,
        EVENTS,
        "every span arrived"
    );
    assert!(
        r.log_count >= 2 * EVENTS,
        "every log record arrived: {}",
        r.log_count
    );
}
