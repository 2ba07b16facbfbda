//! Hostile writers and unlucky operators of the Redis Streams worker (issue 14, defects 1, 2,
//! 3, 5 and 6), against a real `redis-server` and the worker runtime:
//!
//! - an entry whose bytes are not an envelope (a field name that is not UTF-8, a binary
//!   envelope) is dead-lettered with its bytes, and its neighbours are handled;
//! - a dead letter that cannot be stored is never acknowledged: the entry stays pending, the
//!   failure is counted, and the batch's other entries keep their outcomes;
//! - entries that `emit()` would refuse (an undeclared case) or that a producer never writes
//!   (a trace case) are dead-lettered with the reason, never turned into log records;
//! - an idle worker's blocking reads do not time out (the connection's response timeout is
//!   above `transport.block_ms`, and validation says so);
//! - a worker's memory is bounded by `transport.max_read_bytes`, not by the size of what others
//!   wrote to the stream (defect 4).

mod support;

use std::time::{Duration, Instant};

use telemetry_gateway::config::{DedupBackendKind, LocalOutput, TransportKind};
use telemetry_gateway::testing::RedisServer;
use telemetry_gateway::{
    GatewayBuilder, GatewayConfig, ReasonCode, StatsSnapshot, TelemetryCase, TelemetryContext,
    TelemetryEnvelope, WorkerHandle,
};

const STREAM: &str = "tg:hostile";
const GROUP: &str = telemetry_gateway::config::DEFAULT_TRANSPORT_GROUP;

fn worker_config(redis: &str) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    c.transport.kind = TransportKind::RedisStreams;
    c.transport.redis_url = redis.into();
    c.transport.stream = STREAM.into();
    c.transport.claim_idle_ms = 600;
    c.transport.commit_interval_ms = 100;
    c.transport.block_ms = 200;
    c.transport.max_deliveries = 3;
    c.dedup.backend = DedupBackendKind::Redis;
    c.dedup.redis_url = redis.into();
    c.export.local_output = LocalOutput::Discard;
    c.metric_pool.pool_size = 1;
    c
}

fn start(redis: &RedisServer) -> WorkerHandle {
    GatewayBuilder::new(worker_config(&redis.url()))
        .start_worker()
        .expect("the worker starts")
}

fn good(i: u32) -> Vec<u8> {
    TelemetryEnvelope::new(
        TelemetryCase::AppCreated,
        TelemetryContext::tenant("acme").app(format!("app-{i}")),
    )
    .to_json()
    .expect("encodes")
    .into_bytes()
}

/// `XADD STREAM * name value ...` with raw bytes; returns the entry id.
fn xadd(redis: &RedisServer, fields: &[(&[u8], &[u8])]) -> String {
    let mut c = redis.connection();
    let mut cmd = redis::cmd("XADD");
    cmd.arg(STREAM).arg("*");
    for (n, v) in fields {
        cmd.arg(*n).arg(*v);
    }
    cmd.query(&mut c).expect("XADD")
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    wait_up_to(Duration::from_secs(20), what, cond);
}

fn wait_up_to(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Entries pending in the group.
fn pending(redis: &RedisServer) -> u64 {
    redis.pending(STREAM, GROUP)
}

/// Connections the server has accepted so far (`INFO stats`), this query's own included.
fn connections_received(redis: &RedisServer) -> u64 {
    let mut c = redis.connection();
    let info: String = redis::cmd("INFO").arg("stats").query(&mut c).expect("INFO");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("total_connections_received")
}

/// Every dead letter, as (field name bytes, value bytes) lists.
fn dead_letters(redis: &RedisServer) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut c = redis.connection();
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(format!("{STREAM}:dead"))
        .arg("-")
        .arg("+")
        .query(&mut c)
        .expect("XRANGE");
    let redis::Value::Array(entries) = v else {
        return Vec::new();
    };
    entries
        .into_iter()
        .map(|e| {
            let redis::Value::Array(mut parts) = e else {
                panic!("an entry")
            };
            let redis::Value::Array(flat) = parts.remove(1) else {
                panic!("fields")
            };
            flat.chunks(2)
                .map(|p| match (&p[0], &p[1]) {
                    (redis::Value::BulkString(n), redis::Value::BulkString(v)) => {
                        (n.clone(), v.clone())
                    }
                    other => panic!("{other:?}"),
                })
                .collect()
        })
        .collect()
}

fn get<'a>(fields: &'a [(Vec<u8>, Vec<u8>)], name: &[u8]) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n.as_slice() == name)
        .map(|(_, v)| v.as_slice())
}

fn balanced(s: &StatsSnapshot) {
    assert_eq!(s.emitted, s.delivered + s.dropped_total(), "{s:?}");
    assert_eq!(s.in_flight, 0, "{s:?}");
}

#[test]
fn a_foreign_entry_is_dead_lettered_with_its_bytes_and_its_neighbours_are_handled() {
    let _alone = alone();
    let redis = RedisServer::start();
    let binary: &[u8] = b"\x00\xff\xfe{not json\xc3\x28";
    xadd(&redis, &[(b"envelope", &good(1))]);
    let foreign = xadd(&redis, &[(b"\xff\xfe", b"x"), (b"note", b"hi")]);
    let binary_id = xadd(&redis, &[(b"envelope", binary)]);
    xadd(&redis, &[(b"envelope", &good(2))]);

    let worker = start(&redis);
    wait_until(
        "both good entries are delivered and both others dead-lettered",
        || {
            let s = worker.stats();
            s.delivered == 2 && s.dropped_for(ReasonCode::DeadLettered) == 2
        },
    );
    wait_until("every entry is acknowledged", || pending(&redis) == 0);
    let report = worker.shutdown_blocking(Duration::from_secs(10));
    let s = &report.stats;
    assert!(!report.deadline_exceeded, "{s:?}");
    assert_eq!(s.emitted, 4, "every entry read and counted: {s:?}");
    balanced(s);

    let dead = dead_letters(&redis);
    assert_eq!(dead.len(), 2, "{dead:?}");
    let by_id = |id: &str| {
        dead.iter()
            .find(|d| get(d, b"entry_id") == Some(id.as_bytes()))
            .unwrap_or_else(|| panic!("a dead letter for {id}"))
    };
    let f = by_id(&foreign);
    assert_eq!(
        get(f, b"orig:\xff\xfe"),
        Some(&b"x"[..]),
        "its bytes are kept"
    );
    assert_eq!(get(f, b"orig:note"), Some(&b"hi"[..]));
    let why = String::from_utf8_lossy(get(f, b"error").unwrap_or_default()).into_owned();
    assert!(why.contains("not UTF-8"), "{why}");
    let b = by_id(&binary_id);
    assert_eq!(
        get(b, b"envelope"),
        Some(binary),
        "a binary envelope is kept byte for byte"
    );
}

#[test]
fn a_dead_letter_that_cannot_be_stored_is_never_acknowledged_and_the_rest_keep_their_outcomes() {
    let _alone = alone();
    let redis = RedisServer::start();
    // The dead-letter key holds a string: every XADD to it fails with WRONGTYPE.
    let mut c = redis.connection();
    let _: () = redis::cmd("SET")
        .arg(format!("{STREAM}:dead"))
        .arg("not a stream")
        .query(&mut c)
        .unwrap();
    xadd(&redis, &[(b"envelope", &good(1))]);
    xadd(&redis, &[(b"no-envelope", b"x")]);
    xadd(&redis, &[(b"envelope", &good(2))]);

    let worker = start(&redis);
    wait_until(
        "the good entries are delivered and the failure counted",
        || {
            let s = worker.stats();
            s.delivered == 2 && s.stream_errors >= 1
        },
    );
    wait_until("only the foreign entry is still pending", || {
        pending(&redis) == 1
    });
    let s = worker.stats();
    assert_eq!(
        s.dropped_for(ReasonCode::DeadLettered),
        0,
        "nothing was dead-lettered: {s:?}"
    );
    assert_eq!(s.emitted, 2, "the foreign entry is not taken: {s:?}");

    // The operator fixes the key: the pending entry is read again and dead-lettered.
    let _: () = redis::cmd("DEL")
        .arg(format!("{STREAM}:dead"))
        .query(&mut c)
        .unwrap();
    wait_until(
        "the entry is dead-lettered once the key is a stream",
        || worker.stats().dropped_for(ReasonCode::DeadLettered) == 1,
    );
    wait_until("nothing pending", || pending(&redis) == 0);
    let report = worker.shutdown_blocking(Duration::from_secs(10));
    let s = &report.stats;
    assert!(!report.deadline_exceeded, "the drain did not wait: {s:?}");
    assert_eq!(
        s.dropped_for(ReasonCode::Shutdown),
        0,
        "no delivered event reported as a shutdown drop: {s:?}"
    );
    assert_eq!(s.delivered, 2, "{s:?}");
    balanced(s);
    assert_eq!(dead_letters(&redis).len(), 1);
}

#[test]
fn entries_emit_would_refuse_or_a_producer_never_writes_are_dead_lettered_with_the_reason() {
    let _alone = alone();
    let redis = RedisServer::start();
    let undeclared = TelemetryEnvelope::new(
        TelemetryCase::custom("zzz_not_declared"),
        TelemetryContext::tenant("acme"),
    );
    let trace =
        TelemetryEnvelope::new(TelemetryCase::WorkflowRun, TelemetryContext::tenant("acme"))
            .with_run_id("run-1");
    let unknown_id = xadd(
        &redis,
        &[(b"envelope", undeclared.to_json().unwrap().as_bytes())],
    );
    let trace_id = xadd(
        &redis,
        &[(b"envelope", trace.to_json().unwrap().as_bytes())],
    );
    xadd(&redis, &[(b"envelope", &good(1))]);

    let worker = start(&redis);
    wait_until("one delivered, two dead-lettered", || {
        let s = worker.stats();
        s.delivered == 1 && s.dropped_for(ReasonCode::DeadLettered) == 2
    });
    let journey = worker.explain(&trace.event_id.to_string());
    let report = worker.shutdown_blocking(Duration::from_secs(10));
    balanced(&report.stats);
    assert_eq!(
        report.stats.exported.log_records, 1,
        "only the metric/log case became a log record: {:?}",
        report.stats
    );
    assert!(
        journey.to_json().contains("dead_lettered"),
        "{}",
        journey.to_json()
    );
    let dead = dead_letters(&redis);
    let error_of = |id: &str| {
        let d = dead
            .iter()
            .find(|d| get(d, b"entry_id") == Some(id.as_bytes()))
            .expect("a dead letter");
        String::from_utf8_lossy(get(d, b"error").unwrap_or_default()).into_owned()
    };
    assert!(error_of(&unknown_id).contains("unknown_case"), "{dead:?}");
    assert!(error_of(&trace_id).contains("trace case"), "{dead:?}");
}

#[test]
fn an_idle_worker_never_times_out_its_blocking_reads() {
    let _alone = alone();
    let redis = RedisServer::start();
    let mut cfg = worker_config(&redis.url());
    cfg.transport.block_ms = 1_000;
    // A read lost to a timeout leaves its entry pending with this consumer: only a reclaim,
    // after claim_idle_ms, would bring it back. Long here, so such a loss shows.
    cfg.transport.claim_idle_ms = 30_000;
    let worker = GatewayBuilder::new(cfg.clone())
        .start_worker()
        .expect("the worker starts");
    // Three blocking reads' worth of idling: with the client's 500 ms default response timeout
    // every one of them failed and reconnected.
    std::thread::sleep(Duration::from_millis(500));
    let connections_before = connections_received(&redis);
    std::thread::sleep(Duration::from_millis(3_500));
    // Less the second query's own connection.
    let reconnects = connections_received(&redis) - connections_before - 1;
    let idle = worker.stats();
    xadd(&redis, &[(b"envelope", &good(1))]);
    let started = Instant::now();
    wait_until("the new entry is delivered", || {
        worker.stats().delivered == 1
    });
    let waited = started.elapsed();
    let report = worker.shutdown_blocking(Duration::from_secs(10));
    assert_eq!(report.stats.redelivered, 0, "{:?}", report.stats);
    assert_eq!(idle.stream_errors, 0, "no read failed while idle: {idle:?}");
    assert!(
        reconnects == 0,
        "an idle worker keeps its connection: {reconnects} new connections in 3.5 s"
    );
    assert!(
        waited < Duration::from_millis(900),
        "a new entry is read by the blocking read in progress, not after a reconnect: {waited:?}"
    );

    // Validation keeps the two consistent, naming the key.
    cfg.transport.response_timeout_ms = 1_500;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("transport.response_timeout_ms"), "{err}");
}

/// The memory test measures this process's resident size: the other tests of this file wait
/// while it runs, and it waits for them.
static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn a_worker_reading_large_entries_stays_within_its_read_budget() {
    let _alone = alone();
    let redis = RedisServer::start();
    // 48 entries of about 512 KiB each, already in the stream when the worker starts: before
    // the byte bound, one read took all of them at once (and a batch of 256 entries of 1 MB
    // took a worker to 528 MB).
    let blob = "x".repeat(1 << 19);
    for i in 0..48 {
        let env = TelemetryEnvelope::new(
            TelemetryCase::AppCreated,
            TelemetryContext::tenant("acme").app(format!("app-{i}")),
        )
        .with_payload(serde_json::json!({ "blob": blob }));
        xadd(&redis, &[(b"envelope", env.to_json().unwrap().as_bytes())]);
    }
    drop(blob);
    let mut cfg = worker_config(&redis.url());
    cfg.transport.max_read_bytes = 2 << 20;
    // The log records would otherwise carry the payloads to the (discarding) exporter.
    cfg.export.include_content = false;
    let base = support::rss_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(support::rss_bytes(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let worker = GatewayBuilder::new(cfg.clone())
        .start_worker()
        .expect("the worker starts");
    // A debug build decodes and maps 24 MiB of JSON slowly: a generous wait.
    wait_up_to(
        Duration::from_secs(90),
        "every large entry is delivered",
        || worker.stats().delivered == 48,
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let report = worker.shutdown_blocking(Duration::from_secs(10));
    balanced(&report.stats);
    let growth = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(base);
    eprintln!("large entries: resident growth {} MiB", growth >> 20);
    // The documented bound: pool_size × 4 copies × (max_read_bytes + one entry), plus the
    // runtime's own start-up (threads, exporters): 10 MiB + 24 MiB here.
    let bound = cfg.metric_pool.pool_size as u64 * 4 * ((2 << 20) + (1 << 19)) + (24 << 20);
    assert!(
        growth < bound,
        "resident memory grew by {} MiB reading 24 MiB of entries (bound {} MiB)",
        growth >> 20,
        bound >> 20
    );
}
