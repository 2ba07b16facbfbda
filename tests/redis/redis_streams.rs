//! The Redis Streams transport at the transport level, against a real `redis-server`: entries
//! are read once and acknowledged only when settled; an entry left unsettled is reclaimed by
//! another consumer and, past `max_deliveries`, dead-lettered while the rest keeps flowing;
//! with Redis away the producer's bounded buffer fills and `try_send` says `Full`, never waits,
//! and appending resumes when Redis is back.

use crate::support;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_gateway::testing::RedisServer;
use telemetry_gateway::transport::redis_streams::{
    RedisStreamProducer, RedisStreamSource, StreamSettings,
};
use telemetry_gateway::transport::{EnvelopeSource, MetricTransport, TransportError};
use telemetry_gateway::{TelemetryCase, TelemetryContext, TelemetryEnvelope};
use uuid::Uuid;

fn settings(consumer: &str) -> StreamSettings {
    StreamSettings {
        stream: "tg:test".into(),
        group: "workers".into(),
        consumer: consumer.into(),
        max_len: 100_000,
        claim_idle: Duration::from_millis(200),
        max_deliveries: 2,
        block: Duration::from_millis(100),
        response_timeout: Duration::from_millis(1_100),
        connect_timeout: Duration::from_millis(1_000),
        max_read_bytes: 16 << 20,
    }
}

fn event() -> TelemetryEnvelope {
    TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("acme"))
}

/// Sends `n` fresh events and returns their ids.
fn send(producer: &RedisStreamProducer, n: usize) -> Vec<Uuid> {
    (0..n)
        .map(|_| {
            let e = event();
            let id = e.event_id;
            producer.try_send(e).unwrap();
            id
        })
        .collect()
}

async fn wait_appended(p: &RedisStreamProducer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while p.appended() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(p.appended(), n, "every envelope appended");
}

fn pending(redis: &RedisServer, consumer_group: &str) -> u64 {
    redis.pending("tg:test", consumer_group)
}

#[test]
fn two_consumers_share_the_stream_and_each_entry_is_read_and_acknowledged_once() {
    let redis = RedisServer::start();
    let rt = support::runtime();
    let client = redis::Client::open(redis.url()).unwrap();
    let producer =
        RedisStreamProducer::spawn(client.clone(), settings("producer"), 10_000, rt.handle());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = send(&producer, 500);
    rt.block_on(async {
        wait_appended(&producer, 500).await;
        let mut a = RedisStreamSource::new(client.clone(), settings("a"), stop.clone());
        let mut b = RedisStreamSource::new(client.clone(), settings("b"), stop.clone());
        let mut seen: HashMap<Uuid, u32> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while seen.len() < 500 && Instant::now() < deadline {
            for src in [&mut a, &mut b] {
                let batch = tokio::time::timeout(Duration::from_secs(1), src.recv_batch(64))
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                for id in &ids {
                    *seen.entry(*id).or_default() += 1;
                }
                src.settle(ids).await;
            }
        }
        assert_eq!(seen.len(), 500);
        assert!(seen.values().all(|n| *n == 1), "no entry read twice");
        assert!(sent.iter().all(|id| seen.contains_key(id)));
    });
    assert_eq!(
        pending(&redis, "workers"),
        0,
        "everything settled was acknowledged"
    );
}

#[test]
fn an_unsettled_entry_is_reclaimed_then_dead_lettered_and_the_rest_keeps_flowing() {
    let redis = RedisServer::start();
    let rt = support::runtime();
    let client = redis::Client::open(redis.url()).unwrap();
    let producer =
        RedisStreamProducer::spawn(client.clone(), settings("producer"), 1_000, rt.handle());
    let stop = Arc::new(AtomicBool::new(false));
    let poison = event();
    let poison_id = poison.event_id;
    producer.try_send(poison).unwrap();
    let good = send(&producer, 20);
    rt.block_on(async {
        wait_appended(&producer, 21).await;
        // Two consumers that settle everything except the poison entry, as a handler whose
        // case handler panics on it would.
        let mut a = RedisStreamSource::new(client.clone(), settings("a"), stop.clone());
        let mut b = RedisStreamSource::new(client.clone(), settings("b"), stop.clone());
        let dead = a.dead_lettered();
        let dead_b = b.dead_lettered();
        let mut poison_deliveries = 0;
        let mut handled: HashMap<Uuid, u32> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            for src in [&mut a, &mut b] {
                let batch = tokio::time::timeout(Duration::from_secs(1), src.recv_batch(8))
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let mut settle = Vec::new();
                for e in batch {
                    if e.event_id == poison_id {
                        poison_deliveries += 1;
                    } else {
                        *handled.entry(e.event_id).or_default() += 1;
                        settle.push(e.event_id);
                    }
                }
                src.settle(settle).await;
            }
            let dl = dead.load(std::sync::atomic::Ordering::Relaxed)
                + dead_b.load(std::sync::atomic::Ordering::Relaxed);
            if dl == 1 && handled.len() == 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            handled.len(),
            20,
            "the good entries flowed past the poison one"
        );
        assert!(good.iter().all(|id| handled.contains_key(id)));
        assert!(handled.values().all(|n| *n == 1));
        assert_eq!(
            poison_deliveries, 2,
            "delivered max_deliveries times, then dead-lettered instead of a third time"
        );
        let dl = dead.load(std::sync::atomic::Ordering::Relaxed)
            + dead_b.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(dl, 1);
    });
    let mut c = redis.connection();
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("tg:test:dead")
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    let entry = &dead.ids[0];
    let raw: String = entry.get("envelope").unwrap();
    assert_eq!(
        TelemetryEnvelope::from_json(&raw).unwrap().event_id,
        poison_id,
        "the dead letter carries the envelope"
    );
    let error: String = entry.get("error").unwrap();
    assert!(error.contains("without being settled"), "{error}");
    assert_eq!(pending(&redis, "workers"), 0);
}

#[test]
fn with_redis_away_the_buffer_fills_and_then_refuses_and_appending_resumes() {
    let mut redis = RedisServer::start();
    let rt = support::runtime();
    let client = redis::Client::open(redis.url()).unwrap();
    let producer =
        RedisStreamProducer::spawn(client.clone(), settings("producer"), 50, rt.handle());
    rt.block_on(async {
        producer.try_send(event()).unwrap();
        wait_appended(&producer, 1).await;
    });
    redis.kill();
    // The task takes what it can into its batch in hand; then the buffer fills.
    let mut accepted = 0u64;
    let mut refused = 0u64;
    let started = Instant::now();
    for _ in 0..2_000 {
        match producer.try_send(event()) {
            Ok(()) => accepted += 1,
            Err(TransportError::Full) => refused += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "try_send never waits for Redis"
    );
    assert!(refused > 0, "a bounded buffer refuses when full");
    assert!(
        accepted <= 50 + 256,
        "at most the buffer and one batch in hand: {accepted}"
    );
    redis.restart();
    rt.block_on(async { wait_appended(&producer, 1 + accepted).await });
    assert!(producer.failed_calls() > 0);
    let mut c = redis.connection();
    let len: u64 = redis::cmd("XLEN").arg("tg:test").query(&mut c).unwrap();
    // The server was restarted without persistence: only what was appended after it is there.
    assert_eq!(
        len, accepted,
        "the held entries arrived once Redis was back"
    );
}

/// With `[spool] kind = "disk"` the producer's buffer is on disk. With Redis away, a gateway
/// whose buffer holds 50 envelopes takes 2,000 metric events and drops none (the gateway actor
/// waits for room, the buffer drains to disk); when Redis is back every one is on the stream,
/// once. A shutdown with Redis away leaves the next 500 on disk (`spooled`), and the next
/// gateway on the same path appends them (`recovered`). Each process balances.
#[test]
fn with_a_disk_spool_the_producer_buffer_survives_redis_away_and_a_restart() {
    use telemetry_gateway::config::{DedupBackendKind, SpoolKind, TransportKind};
    let mut redis = RedisServer::start();
    let rx = telemetry_gateway::testing::OtlpReceiver::start();
    let (mut c, dir) = support::config();
    c.otlp.endpoint = Some(rx.endpoint());
    c.transport.kind = TransportKind::RedisStreams;
    c.transport.redis_url = redis.url();
    c.transport.stream = "tg:spooled".into();
    c.transport.buffer_capacity = 50;
    c.dedup.backend = DedupBackendKind::Redis;
    c.dedup.redis_url = redis.url();
    c.spool.kind = SpoolKind::Disk;
    c.spool.path = Some(dir.path().join("spool"));
    c.retry.outage_backoff_max_ms = 200;
    let xlen = |redis: &RedisServer| -> u64 {
        let mut conn = redis.connection();
        redis::cmd("XLEN")
            .arg("tg:spooled")
            .query(&mut conn)
            .unwrap()
    };
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(30);
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let gw = telemetry_gateway::start(c.clone()).unwrap();
    redis.kill();
    let n = 2_000u64;
    for _ in 0..n {
        gw.emit(event()).unwrap();
    }
    let on_disk = |gw: &telemetry_gateway::GatewayHandle, want: u64| {
        gw.diagnostics()
            .spools
            .iter()
            .any(|s| s.name == "redis stream" && s.events == want)
    };
    wait_for("the backlog on disk", &|| on_disk(&gw, n));
    assert_eq!(gw.stats().dropped_total(), 0, "{:?}", gw.stats());
    redis.restart();
    // Restarted without persistence: the stream holds what was appended since.
    wait_for("every entry on the stream", &|| xlen(&redis) == n);
    wait_for("every event delivered", &|| gw.stats().delivered == n);

    redis.kill();
    let m = 500u64;
    for _ in 0..m {
        gw.emit(event()).unwrap();
    }
    let first = support::shut_down_balanced(&gw);
    let s1 = &first.stats;
    assert_eq!(
        (s1.emitted, s1.delivered, s1.spooled, s1.dropped_total()),
        (n + m, n, m, 0),
        "{s1:?}"
    );

    redis.restart();
    let gw = telemetry_gateway::start(c).unwrap();
    wait_for("the left entries on the stream", &|| xlen(&redis) == m);
    wait_for("the recovered events delivered", &|| {
        gw.stats().delivered == m
    });
    let second = support::shut_down_balanced(&gw);
    let s2 = &second.stats;
    assert_eq!(
        (s2.emitted, s2.recovered, s2.delivered, s2.dropped_total()),
        (0, m, m, 0),
        "{s2:?}"
    );
    assert_eq!(xlen(&redis), m, "appended once");
}
