//! Reliability suite, scenarios 10 and 11: payload store faults, and hostile payload refs.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::throttle::{ThrottleConfig, ThrottledStore};
use serde_json::json;
use telemetry_gateway::config::PayloadsSection;
use telemetry_gateway::diagnostics::Counters;
use telemetry_gateway::payload_store::PayloadStore;
use telemetry_gateway::testing::internals::{RehydrateBatch, RehydrateItem, RehydratorActor};
use telemetry_gateway::{
    GatewayBuilder, Payload, PayloadFallback, ReasonCode, TelemetryCase, TelemetryContext,
    TelemetryEnvelope,
};

fn fallback() -> PayloadFallback {
    PayloadFallback::from_object(json!({"tool_name": "from-fallback"}).as_object().unwrap())
        .unwrap()
}

fn with_ref(r: &str, fb: bool) -> TelemetryEnvelope {
    let mut e =
        TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t1"));
    e.payload = Payload::Ref(r.into());
    if fb {
        e = e.with_fallback(fallback());
    }
    e
}

/// Scenario 10: missing, slow (beyond the timeout), oversized and corrupt blobs; the fallback is
/// used and counted, rehydration never exceeds its timeout, nothing panics.
#[test]
fn payload_store_faults_fall_back_counted_within_the_timeout() {
    let (mut cfg, _d) = support::config();
    cfg.payloads.read_timeout_ms = 200;
    cfg.payloads.max_read_bytes = 1024;
    let store = PayloadStore::new(Arc::new(InMemory::new()), &cfg.payloads);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        store
            .put_raw("t1/big.json", Bytes::from(vec![b' '; 4096]))
            .await
            .unwrap();
        store
            .put_raw("t1/corrupt.json", Bytes::from_static(b"\x80\x04\x95pickle"))
            .await
            .unwrap();
    });
    let gw = GatewayBuilder::new(cfg.clone())
        .payload_store(store)
        .start()
        .unwrap();
    for r in ["t1/missing.json", "t1/big.json", "t1/corrupt.json"] {
        gw.emit(with_ref(r, true)).unwrap();
        gw.emit(with_ref(r, false)).unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.rehydrated_from_fallback, 3, "{s:?}");
    assert_eq!(s.degraded_for(ReasonCode::RehydrationFailed), 3, "{s:?}");
    assert_eq!(s.delivered, 6, "every event is still delivered: {s:?}");
    assert!(s.is_settled());

    // Slow: a store that takes 10 s per read, with a 200 ms read timeout.
    let slow = ThrottledStore::new(
        InMemory::new(),
        ThrottleConfig {
            wait_get_per_call: Duration::from_secs(10),
            ..Default::default()
        },
    );
    let slow = PayloadStore::new(Arc::new(slow), &cfg.payloads);
    let counters = Arc::new(Counters::default());
    let sys = actix::System::new();
    let (out, took) = sys.block_on(async {
        let r = RehydratorActor::new(slow, counters.clone()).start();
        let items: Vec<_> = (0..8)
            .map(|i| RehydrateItem {
                tenant_id: "t1".into(),
                payload_ref: format!("t1/slow-{i}.json"),
                fallback: Some(fallback()),
            })
            .collect();
        let started = Instant::now();
        let out = r.send(RehydrateBatch(items)).await.unwrap();
        (out, started.elapsed())
    });
    assert!(out.iter().all(|o| o.source == "fallback"));
    assert_eq!(counters.snapshot().rehydrated_from_fallback, 8);
    // Reads of a batch run concurrently, each bounded by the 200 ms timeout: the batch ends
    // near 200 ms, nowhere near the store's 10 s. (Generous bound for a loaded machine.)
    assert!(took < Duration::from_secs(3), "rehydration took {took:?}");
}

/// Scenario 11: hostile refs are refused and counted, and a canary outside the store root is
/// never opened, not even through a symlink planted inside the root.
#[test]
fn hostile_payload_refs_are_refused_and_the_canary_is_never_opened() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    std::fs::create_dir_all(root.join("t1")).unwrap();
    // The canary is a FIFO: if anything opened it for reading, a non-blocking open for writing
    // would then succeed; with no reader it fails with ENXIO.
    let canary = dir.path().join("canary");
    assert!(std::process::Command::new("mkfifo")
        .arg(&canary)
        .status()
        .unwrap()
        .success());
    std::os::unix::fs::symlink(&canary, root.join("t1").join("link.json")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("t1").join("passwd.json")).unwrap();

    let (mut cfg, _d) = support::config();
    cfg.payloads.read_timeout_ms = 300;
    let store = PayloadStore::local(
        &root,
        &PayloadsSection {
            read_timeout_ms: 300,
            ..Default::default()
        },
    )
    .unwrap();

    // At the entrance: refs that are malformed never get in.
    let gw = GatewayBuilder::new(cfg.clone())
        .payload_store(store.clone())
        .start()
        .unwrap();
    let refused_at_emit = [
        "../t1/x.json",
        "t1/../../canary",
        "t1\\..\\..\\canary",
        "t1/%2e%2e/%2e%2e/canary",
        "/etc/passwd",
        "t2/x.json",
        "file:///etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
    ];
    for r in refused_at_emit {
        let err = gw.emit(with_ref(r, false)).unwrap_err();
        assert!(err.to_string().contains("payload_ref"), "{r}: {err}");
    }
    // Well-formed refs whose file is a symlink out of the root get in, and are refused unread.
    gw.emit(with_ref("t1/link.json", true)).unwrap();
    gw.emit(with_ref("t1/passwd.json", false)).unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(
        s.dropped_for(ReasonCode::InvalidEnvelope),
        refused_at_emit.len() as u64
    );
    assert_eq!(s.degraded_for(ReasonCode::PayloadRefRefused), 2, "{s:?}");
    assert_eq!(s.rehydrated_from_store, 0);
    assert_eq!(s.rehydrated_from_fallback, 1);
    assert!(s.is_settled());

    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000; // Linux
    let probe = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(O_NONBLOCK)
        .open(&canary);
    assert!(
        probe.is_err(),
        "the canary FIFO has a reader: something opened it"
    );
    assert_eq!(
        probe.unwrap_err().raw_os_error(),
        Some(6),
        "ENXIO: no reader ever held it"
    );
}
