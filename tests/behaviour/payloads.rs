//! Offload and rehydration: ref, then fallback, then a counted degraded event; traversal refused.

use crate::support;

use std::sync::Arc;

use actix::Actor;
use object_store::memory::InMemory;
use serde_json::json;
use telemetry_gateway::diagnostics::Counters;
use telemetry_gateway::payload_store::PayloadStore;
use telemetry_gateway::testing::internals::{RehydrateBatch, RehydrateItem, RehydratorActor};
use telemetry_gateway::{
    GatewayBuilder, Payload, PayloadFallback, ReasonCode, TelemetryCase, TelemetryContext,
    TelemetryEnvelope,
};

fn read_lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_large_payload_is_offloaded_then_rehydrated_from_the_store() {
    let (mut cfg, dir) = support::config();
    cfg.payloads.inline_threshold_bytes = 1024;
    let store = PayloadStore::new(Arc::new(InMemory::new()), &cfg.payloads);
    let gw = GatewayBuilder::new(cfg.clone())
        .payload_store(store.clone())
        .start()
        .unwrap();
    let env = TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t1"))
        .with_payload(json!({"tool_name": "big", "outputs": "x".repeat(5000)}));
    let id = gw.emit(env).unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.offloaded, 1);
    assert_eq!(s.rehydrated_from_store, 1);
    assert_eq!(s.delivered, 1);
    assert!(s.is_settled());
    // The blob is where the contract says, and the exported record was built from it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let blob = rt
        .block_on(store.get("t1", &format!("t1/{id}.json")))
        .unwrap();
    assert_eq!(blob["tool_name"], "big");
    let logs = read_lines(&dir.path().join("out.jsonl"));
    let rec = logs.iter().find(|l| l["signal"] == "log").unwrap();
    assert_eq!(rec["attributes"]["app.tool_name"], "big");
    assert_eq!(
        rec["attributes"]["app.payload_ref"],
        format!("t1/{id}.json")
    );
}

#[test]
fn a_failing_store_keeps_the_payload_inline_and_counts_it() {
    let (mut cfg, dir) = support::config();
    cfg.payloads.inline_threshold_bytes = 1024;
    // A store rooted at a regular file: every write fails, even as root.
    let store = support::failing_payload_store(&cfg.payloads, dir.path());
    let gw = GatewayBuilder::new(cfg)
        .payload_store(store)
        .start()
        .unwrap();
    gw.emit(
        TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t1"))
            .with_payload(json!({"outputs": "y".repeat(5000)})),
    )
    .unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.offloaded, 0);
    assert_eq!(s.degraded_for(ReasonCode::PayloadOffloadFailed), 1);
    assert_eq!(s.delivered, 1, "the event still arrives, inline");
    assert!(s.is_settled());
}

#[test]
fn a_missing_blob_falls_back_then_degrades_counted() {
    let (cfg, dir) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    let fallback =
        PayloadFallback::from_object(json!({"tool_name": "from-fallback"}).as_object().unwrap())
            .unwrap();
    let mut with_fb =
        TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t1"))
            .with_fallback(fallback);
    with_fb.payload = Payload::Ref("t1/missing-1.json".into());
    let mut without =
        TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t1"));
    without.payload = Payload::Ref("t1/missing-2.json".into());
    gw.emit(with_fb).unwrap();
    gw.emit(without).unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.rehydrated_from_fallback, 1);
    assert_eq!(s.degraded_for(ReasonCode::RehydrationFailed), 1);
    assert_eq!(
        s.delivered, 2,
        "a degraded event is still delivered, as a degraded record"
    );
    assert!(s.is_settled());
    let logs = read_lines(&dir.path().join("out.jsonl"));
    let names: Vec<_> = logs
        .iter()
        .filter(|l| l["signal"] == "log")
        .map(|l| l["event_name"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"app.tool_execution".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"app.event.degraded".to_owned()),
        "{names:?}"
    );
}

#[test]
fn a_ref_outside_the_tenant_is_refused_at_emit() {
    let (cfg, _d) = support::config();
    let gw = telemetry_gateway::start(cfg).unwrap();
    for bad in ["../t2/x.json", "/etc/passwd", "t2/x.json", "t1/../../x"] {
        let mut e =
            TelemetryEnvelope::new(TelemetryCase::ToolExecution, TelemetryContext::tenant("t1"));
        e.payload = Payload::Ref(bad.into());
        let err = gw.emit(e).unwrap_err();
        assert!(err.to_string().contains("payload_ref"), "{bad}: {err}");
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.dropped_for(ReasonCode::InvalidEnvelope), 4);
}

#[actix::test]
async fn the_rehydrator_never_reads_a_ref_outside_the_tenant() {
    // An envelope from another transport skips emit(); the rehydrator checks again.
    let store = PayloadStore::new(Arc::new(InMemory::new()), &Default::default());
    store
        .put_raw(
            "t2/secret.json",
            bytes::Bytes::from_static(br#"{"secret": 1}"#),
        )
        .await
        .unwrap();
    let counters = Arc::new(Counters::default());
    let r = RehydratorActor::new(store, counters.clone()).start();
    let out = r
        .send(RehydrateBatch(vec![RehydrateItem {
            tenant_id: "t1".into(),
            payload_ref: "t1/../t2/secret.json".into(),
            fallback: None,
        }]))
        .await
        .unwrap();
    assert_eq!(out[0].payload, None);
    assert_eq!(out[0].degraded, Some(ReasonCode::RehydrationFailed));
    assert_eq!(counters.degraded_count(ReasonCode::PayloadRefRefused), 1);
    assert_eq!(counters.snapshot().rehydrated_from_store, 0);
}

/// Payload files under a local store's root.
fn files_under(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for tenant in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(tenant.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.path());
        }
    }
    out
}

#[tokio::test]
async fn the_local_store_keeps_within_its_byte_and_age_limits_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("payloads");
    let mut cfg = telemetry_gateway::config::PayloadsSection {
        local_max_bytes: 3_500,
        ..Default::default()
    };
    // What an earlier run left: one file a year old, one fresh.
    std::fs::create_dir_all(root.join("acme")).unwrap();
    let old = root
        .join("acme")
        .join("00000000-0000-7000-8000-000000000001.json");
    let fresh = root
        .join("acme")
        .join("00000000-0000-7000-8000-000000000002.json");
    std::fs::write(&old, vec![b' '; 1_000]).unwrap();
    std::fs::write(&fresh, vec![b' '; 1_000]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(365 * 86_400))
        .unwrap();

    let store = PayloadStore::local(&root, &cfg).expect("opens");
    assert!(!old.exists(), "past local_max_age_secs: deleted at start");
    assert!(fresh.exists());
    assert_eq!(store.evicted(), 1);

    // Ten payloads of about 1,000 bytes: never more than 3,500 bytes on disk.
    let body = bytes::Bytes::from(format!("{{\"x\":\"{}\"}}", "y".repeat(990)));
    for _ in 0..10 {
        store
            .put("acme", &uuid::Uuid::now_v7(), body.clone())
            .await
            .expect("written");
        let on_disk: u64 = files_under(&root)
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
            .sum();
        assert!(on_disk <= 3_500, "{on_disk} bytes on disk");
    }
    assert!(!fresh.exists(), "the oldest went first");
    assert_eq!(files_under(&root).len(), 3);
    drop(store);

    // A new run on the same directory counts what is there: still within the budget.
    cfg.local_max_age_secs = 1;
    let store = PayloadStore::local(&root, &cfg).expect("opens");
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    store
        .put("acme", &uuid::Uuid::now_v7(), body.clone())
        .await
        .expect("written");
    assert_eq!(
        files_under(&root).len(),
        1,
        "everything older than local_max_age_secs was deleted at this write"
    );
}
