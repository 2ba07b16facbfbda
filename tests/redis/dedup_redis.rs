//! Dedup against a real `redis-server` that each test starts on a free port.

use crate::support;

use std::time::Duration;

use serde_json::json;
use telemetry_gateway::config::DedupBackendKind;
use telemetry_gateway::testing::RedisServer;
use telemetry_gateway::{start, ReasonCode, TelemetryCase, TelemetryContext, TelemetryEnvelope};
use uuid::Uuid;

fn cfg_for(redis: &RedisServer) -> (telemetry_gateway::GatewayConfig, tempfile::TempDir) {
    let (mut cfg, d) = support::config();
    cfg.dedup.backend = DedupBackendKind::Redis;
    cfg.dedup.redis_url = redis.url();
    cfg.dedup.reconnect_interval_ms = 50;
    (cfg, d)
}

fn fb(tenant: &str, id: Uuid) -> TelemetryEnvelope {
    TelemetryEnvelope::new(
        TelemetryCase::FeedbackCreated,
        TelemetryContext::tenant(tenant),
    )
    .with_event_id(id)
    .with_payload(json!({"rating": "like"}))
}

#[test]
fn the_same_event_twice_counts_once_and_tenants_never_collide() {
    let redis = RedisServer::start();
    let (cfg, _d) = cfg_for(&redis);
    let gw = start(cfg).unwrap();
    let id = Uuid::now_v7();
    gw.emit(fb("t1", id)).unwrap();
    gw.emit(fb("t1", id)).unwrap();
    gw.emit(fb("t2", id)).unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, 2, "{s:?}");
    assert_eq!(s.dropped_for(ReasonCode::Duplicate), 1);
    assert_eq!(s.dedup_store_errors, 0);
    assert!(s.is_settled());
    // The keys are the documented ones, with the TTL set.
    let mut c = redis.connection();
    let key = format!("telemetry:dedup:t1:{id}");
    let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut c).unwrap();
    assert!(ttl > 3500 && ttl <= 3600, "ttl {ttl}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("telemetry:dedup:t2:{id}"))
        .query(&mut c)
        .unwrap();
    assert!(exists);
}

#[test]
fn redis_down_means_processed_and_counted_then_used_again_when_back() {
    let mut redis = RedisServer::start();
    let (cfg, _d) = cfg_for(&redis);
    let gw = start(cfg).unwrap();
    redis.kill();
    let id = Uuid::now_v7();
    gw.emit(fb("t1", id)).unwrap();
    gw.emit(fb("t1", id)).unwrap();
    let end = std::time::Instant::now() + support::DEADLINE;
    while gw.stats().delivered < 2 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    let s = gw.stats();
    assert_eq!(
        s.delivered, 2,
        "fail-open: both processed while Redis is down: {s:?}"
    );
    assert_eq!(s.degraded_for(ReasonCode::DedupStoreUnavailable), 2);
    assert!(
        s.dedup_store_errors >= 1 && s.dedup_store_errors <= 2,
        "{s:?}"
    );

    redis.restart();
    // Dedup works again without a restart of the gateway, within a few attempts.
    let id2 = Uuid::now_v7();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let before = gw.stats();
        gw.emit(fb("t1", id2)).unwrap();
        let end = std::time::Instant::now() + support::DEADLINE;
        while gw.stats().in_flight > 0 && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(5));
        }
        let after = gw.stats();
        if after.dedup_store_errors == before.dedup_store_errors {
            break;
        }
        assert!(attempts < 50, "Redis never used again");
        std::thread::sleep(Duration::from_millis(60));
    }
    gw.emit(fb("t1", id2)).unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert!(
        s.dropped_for(ReasonCode::Duplicate) >= 1,
        "dedup works again: {s:?}"
    );
    assert!(s.is_settled());
}

fn info_field(c: &mut redis::Connection, section: &str, field: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg(section).query(c).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| {
            // cmdstat lines look like "calls=12,usec=...": take the calls.
            let v = v.trim();
            v.strip_prefix("calls=")
                .map(|r| r.split(',').next().unwrap_or("0"))
                .unwrap_or(v)
                .parse()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn under_load_dedup_pipelines_instead_of_one_round_trip_per_event() {
    let redis = RedisServer::start();
    let (mut cfg, _d) = cfg_for(&redis);
    cfg.metric_pool.pool_size = 1;
    cfg.metric_pool.batch_size = 256;
    let mut c = redis.connection();
    let reads_before = info_field(&mut c, "stats", "total_reads_processed");
    let gw = start(cfg).unwrap();
    let n = 5_000u64;
    for _ in 0..n {
        gw.emit(fb("t1", Uuid::now_v7())).unwrap();
    }
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, n, "{s:?}");
    assert_eq!(s.dedup_store_errors, 0);
    let sets = info_field(&mut c, "commandstats", "cmdstat_set");
    let reads = info_field(&mut c, "stats", "total_reads_processed") - reads_before;
    assert_eq!(sets, n, "one SET NX EX per event");
    // Our own INFO calls and the connection handshake are a handful of reads; the rest carry
    // pipelines. One round trip per event would make reads >= sets.
    eprintln!("pipelining: {reads} socket reads for {sets} SETs");
    assert!(
        reads * 4 <= sets,
        "{reads} socket reads for {sets} SETs: not pipelined"
    );
}

#[test]
fn memory_dedup_counts_a_resent_event_once() {
    let (cfg, _d) = support::config();
    let gw = start(cfg).unwrap();
    let id = Uuid::now_v7();
    for _ in 0..5 {
        gw.emit(fb("t1", id)).unwrap();
    }
    gw.emit(fb("t2", id)).unwrap();
    let s = gw.shutdown_blocking(support::DEADLINE).stats;
    assert_eq!(s.delivered, 2);
    assert_eq!(s.dropped_for(ReasonCode::Duplicate), 4);
    assert!(s.is_settled());
}
