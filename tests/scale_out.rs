//! Scale-out over the Redis Streams transport with real processes: a producer (this test's
//! process, a gateway with `transport.kind = "redis_streams"`), worker processes running the
//! crate's binary (`telemetry-gateway worker --config FILE`), a real `redis-server`, and an
//! in-test OTLP receiver the workers export to.
//!
//! What must hold (issue 6): a worker killed with SIGKILL mid-run loses nothing and nothing is
//! counted twice (the `requests.total` counter summed over every worker process equals the
//! number of distinct events); a poison entry reaches the dead-letter stream after
//! `max_deliveries` while the rest flows; Redis restarted mid-run: the producer buffers or
//! counts drops, the workers resume, and the metric output counts each delivered event once.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde_json::json;
use telemetry_gateway::config::{DedupBackendKind, LocalOutput, TransportKind};
use telemetry_gateway::testing::{OtlpReceiver, Received, RedisServer};
use telemetry_gateway::{
    GatewayBuilder, GatewayConfig, ReasonCode, StatsSnapshot, TelemetryCase, TelemetryContext,
    TelemetryEnvelope,
};

const STREAM: &str = "tg:scale-out";
const REQUESTS: &str = "app.requests.total";

/// The transport and dedup settings every process of a test shares.
fn base(redis: &str) -> GatewayConfig {
    let mut c = GatewayConfig::default();
    c.transport.kind = TransportKind::RedisStreams;
    c.transport.redis_url = redis.into();
    c.transport.stream = STREAM.into();
    c.transport.claim_idle_ms = 1_500;
    c.transport.commit_interval_ms = 100;
    c.transport.block_ms = 200;
    c.transport.max_deliveries = 3;
    c.dedup.backend = DedupBackendKind::Redis;
    c.dedup.redis_url = redis.into();
    c.shutdown.deadline_ms = 20_000;
    c
}

/// A producer: its metric/log events go to the stream; nothing else is exported.
fn producer(redis: &str, buffer: usize) -> telemetry_gateway::GatewayHandle {
    let mut c = base(redis);
    c.export.local_output = LocalOutput::Discard;
    c.transport.buffer_capacity = buffer;
    GatewayBuilder::new(c).start().expect("producer starts")
}

/// Writes a worker configuration exporting to `otlp` and returns its path.
fn worker_config(dir: &Path, c: GatewayConfig) -> PathBuf {
    let path = dir.join("worker.toml");
    std::fs::write(&path, toml::to_string(&c).expect("config serializes")).unwrap();
    path
}

fn worker_cfg(redis: &str, otlp: &str) -> GatewayConfig {
    let mut c = base(redis);
    c.otlp.endpoint = Some(otlp.into());
    c.metric_pool.pool_size = 2;
    c
}

struct Worker {
    child: Child,
    name: String,
}

fn spawn_worker(config: &Path, name: &str) -> Worker {
    spawn_worker_with(config, name, &[])
}

/// A worker with extra `TELEMETRY_GATEWAY__*` overrides.
fn spawn_worker_with(config: &Path, name: &str, env: &[(&str, &str)]) -> Worker {
    let child = Command::new(env!("CARGO_BIN_EXE_telemetry-gateway"))
        .args(["worker", "--config"])
        .arg(config)
        .envs(env.iter().copied())
        .env("TELEMETRY_GATEWAY__TRANSPORT__CONSUMER", name)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the telemetry-gateway binary runs");
    let mut child = child;
    // Forward the worker's stderr, and wait for the line that says it is reading.
    let stderr = child.stderr.take().expect("piped stderr");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(" reading stream ") {
                let _ = ready_tx.send(());
            }
            eprintln!("{line}");
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("worker {name} started reading within 30 s"));
    Worker {
        child,
        name: name.into(),
    }
}

impl Worker {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {}", self.name);
    }

    /// SIGTERM, then the drained worker's report.
    fn drain(self) -> StatsSnapshot {
        self.signal("-TERM");
        let name = self.name.clone();
        let out = self.child.wait_with_output().expect("the worker exits");
        assert!(
            out.status.success(),
            "{name} drained and exited 0 (got {:?})",
            out.status
        );
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("the worker prints its report as JSON");
        assert_eq!(report["deadline_exceeded"], false, "{name}: {report}");
        serde_json::from_value(report["stats"].clone()).expect("stats")
    }
}

fn event(case: TelemetryCase, i: usize) -> TelemetryEnvelope {
    TelemetryEnvelope::new(case, TelemetryContext::tenant("acme")).with_payload(json!({"n": i}))
}

/// Event ids of the received log records.
fn logged_ids(r: &Received) -> Vec<String> {
    r.logs
        .iter()
        .filter_map(|l| support::attr_text(&l.attributes, "event.id"))
        .collect()
}

/// `requests.total` summed over every process's latest cumulative value of each series.
fn requests_total(r: &Received) -> u64 {
    requests_per_instance(r).values().sum()
}

/// `requests.total` per process (`service.instance.id`): the latest cumulative value of each
/// series, summed.
fn requests_per_instance(r: &Received) -> BTreeMap<String, u64> {
    let mut latest: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (instance, m) in &r.metrics_by_instance {
        if m.name != REQUESTS {
            continue;
        }
        if let Some(Data::Sum(sum)) = &m.data {
            for p in &sum.data_points {
                let key = (instance.clone(), format!("{:?}", p.attributes));
                let v = support::point_value(p) as u64;
                let e = latest.entry(key).or_default();
                *e = (*e).max(v);
            }
        }
    }
    let mut per: BTreeMap<String, u64> = BTreeMap::new();
    for ((instance, _), v) in latest {
        *per.entry(instance).or_default() += v;
    }
    per
}

fn redis_count(redis: &RedisServer, args: &[&str]) -> u64 {
    let mut c = redis.connection();
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut c).expect("redis answers")
}

/// Entries pending in the workers' group.
fn pending(redis: &RedisServer) -> u64 {
    redis.pending(STREAM, telemetry_gateway::config::DEFAULT_TRANSPORT_GROUP)
}

fn balanced(who: &str, s: &StatsSnapshot) {
    assert_eq!(
        s.emitted,
        s.delivered + s.dropped_total(),
        "{who}: emitted == delivered + dropped: {s:?}"
    );
    assert_eq!(s.in_flight, 0, "{who}: nothing in flight after shutdown");
}

#[test]
fn a_worker_killed_mid_run_loses_nothing_and_counts_nothing_twice() {
    let redis = RedisServer::start();
    let rx = OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut wc = worker_cfg(&redis.url(), &rx.endpoint());
    wc.transport.claim_idle_ms = 3_000;
    let config = worker_config(dir.path(), wc);
    // Worker A commits once a second, so when it is killed it surely holds handled entries
    // it has not acknowledged (and metric counts it has not exported). It is killed half way
    // between two of its commits: the one moment this test cannot cover is the Redis round
    // trip between a commit's metric export and its XACK (docs/deployment.md).
    let mut a = spawn_worker_with(
        &config,
        "worker-a",
        &[("TELEMETRY_GATEWAY__TRANSPORT__COMMIT_INTERVAL_MS", "1000")],
    );
    let a_started = Instant::now();
    let b = spawn_worker(&config, "worker-b");

    let gw = producer(&redis.url(), 65_536);
    let n = 3_000;
    let mut ids = HashSet::new();
    let mut a_killed = false;
    for i in 0..n {
        let case = if i % 2 == 0 {
            TelemetryCase::AppCreated
        } else {
            TelemetryCase::FeedbackCreated
        };
        ids.insert(gw.emit(event(case, i)).expect("the producer takes it"));
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(100));
        }
        if !a_killed && a_started.elapsed() >= Duration::from_millis(2_500) {
            // A has committed twice by now, and holds half a second of uncommitted work.
            a.signal("-KILL");
            let _ = a.child.wait();
            a_killed = true;
        }
    }
    assert!(a_killed, "worker A was killed mid-run");
    let report = gw.shutdown_blocking(Duration::from_secs(20));
    balanced("producer", &report.stats);
    assert_eq!(report.stats.emitted, n as u64);
    assert_eq!(
        report.stats.delivered, n as u64,
        "every event appended to the stream: {:?}",
        report.stats
    );

    // Worker B handles the rest, and reclaims what A held after transport.claim_idle_ms.
    let (r, ok) = rx.wait_for(Duration::from_secs(90), |r| {
        requests_total(r) >= n as u64
            && logged_ids(r).into_iter().collect::<HashSet<_>>().len() >= n
    });
    assert!(
        ok,
        "all {n} events handled: requests.total {}, distinct logged {}",
        requests_total(&r),
        logged_ids(&r).into_iter().collect::<HashSet<_>>().len()
    );
    let stats_b = b.drain();
    balanced("worker-b", &stats_b);
    assert_eq!(stats_b.dropped_for(ReasonCode::DeadLettered), 0);
    assert!(
        stats_b.redelivered > 0,
        "worker B reclaimed entries A held uncommitted: {stats_b:?}"
    );
    assert_eq!(
        stats_b.dropped_for(ReasonCode::Duplicate),
        0,
        "a reclaimed entry is handled, not dropped as a duplicate of its own mark: {stats_b:?}"
    );

    let r = rx.received();
    let per = requests_per_instance(&r);
    assert_eq!(per.len(), 2, "both workers committed counts: {per:?}");
    assert!(
        per.values().any(|&v| v == stats_b.delivered),
        "worker B's metric output matches its ledger: {per:?} vs {stats_b:?}"
    );
    let logged: HashSet<String> = logged_ids(&r).into_iter().collect();
    for id in &ids {
        assert!(
            logged.contains(&id.to_string()),
            "event {id} has a log record"
        );
    }
    assert_eq!(logged.len(), n, "no log record of an unknown event");
    assert_eq!(
        requests_total(&r),
        n as u64,
        "requests.total over both workers counts each distinct event exactly once"
    );
    assert_eq!(pending(&redis), 0, "every entry acknowledged");
    assert_eq!(redis_count(&redis, &["XLEN", &format!("{STREAM}:dead")]), 0);
    eprintln!(
        "kill -9: {n} events; worker-b read {} ({} reclaimed from A); log records {} for {} distinct events",
        stats_b.emitted,
        stats_b.redelivered,
        r.logs.len(),
        logged.len()
    );
}

#[test]
fn a_poison_entry_is_dead_lettered_after_max_deliveries_while_the_rest_flows() {
    let redis = RedisServer::start();
    let mut wc = base(&redis.url());
    wc.export.local_output = LocalOutput::Discard;
    wc.metric_pool.pool_size = 2;
    wc.transport.max_deliveries = 2;
    // Long enough that the commit of the good events (every 100 ms) always comes before another
    // consumer may reclaim them, even on a loaded 2-core machine (at 400 ms the good events
    // were once reclaimed before their commit and handled twice: at-least-once, but not what
    // this test is about).
    wc.transport.claim_idle_ms = 1_000;
    let poison_handler = Arc::new(support::PoisonOnFlag::default());
    let worker = GatewayBuilder::new(wc)
        .case_handler("app_created", poison_handler.clone())
        .start_worker()
        .expect("the worker starts");

    let gw = producer(&redis.url(), 1_000);
    let poison =
        TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("acme"))
            .with_payload(json!({"poison": true}));
    let poison_id = gw.emit(poison).unwrap();
    for i in 0..50 {
        gw.emit(event(TelemetryCase::AppCreated, i)).unwrap();
    }
    let produced = gw.shutdown_blocking(Duration::from_secs(10));
    assert_eq!(produced.stats.delivered, 51);

    let end = Instant::now() + Duration::from_secs(30);
    while worker.stats().dropped_for(ReasonCode::DeadLettered) < 1 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let journey = serde_json::to_string(&worker.explain(&poison_id.to_string())).unwrap();
    let report = worker.shutdown_blocking(Duration::from_secs(10));
    let s = &report.stats;
    balanced("worker", s);
    assert_eq!(s.dropped_for(ReasonCode::DeadLettered), 1, "{s:?}");
    assert_eq!(
        s.dropped_for(ReasonCode::HandlerPanicked),
        2,
        "delivered max_deliveries times, panicking each time: {s:?}"
    );
    assert_eq!(s.delivered, 50, "the rest flowed: {s:?}");
    assert_eq!(
        poison_handler
            .handled
            .load(std::sync::atomic::Ordering::SeqCst),
        50
    );
    assert!(journey.contains("dead_lettered"), "{journey}");

    let mut c = redis.connection();
    let dead: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(format!("{STREAM}:dead"))
        .arg("-")
        .arg("+")
        .query(&mut c)
        .unwrap();
    assert_eq!(dead.ids.len(), 1);
    let entry = &dead.ids[0];
    let envelope: String = entry.get("envelope").unwrap();
    let decoded = TelemetryEnvelope::from_json(&envelope).unwrap();
    assert_eq!(decoded.event_id, poison_id);
    let deliveries: String = entry.get("deliveries").unwrap();
    assert_eq!(deliveries, "3");
    let error: String = entry.get("error").unwrap();
    assert!(error.contains("delivered 3 times"), "{error}");
    assert_eq!(pending(&redis), 0, "the dead letter is acknowledged too");
}

#[test]
fn redis_restarted_mid_run_the_producer_buffers_or_counts_and_nothing_counts_twice() {
    let mut redis = RedisServer::start_persistent();
    let rx = OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut wc = worker_cfg(&redis.url(), &rx.endpoint());
    // Longer than the outage, so a live worker's entries are not reclaimed while its
    // acknowledgements wait for Redis.
    wc.transport.claim_idle_ms = 10_000;
    // A copy the producer re-appended (its XADD applied, the reply lost in the restart) must
    // meet the first copy's dedup mark: so dedup must be back as soon as Redis is, and not fail
    // open on a loaded machine's slow answer. With the defaults (1 s between reconnects, 50 ms
    // per call) a CI run under load once counted 244 of 2,856 events twice: dedup's fail-open
    // is at-least-once by design (docs/deployment.md), which is not what this test is about.
    wc.dedup.reconnect_interval_ms = 50;
    wc.dedup.timeout_ms = 1_000;
    let config = worker_config(dir.path(), wc);
    let a = spawn_worker(&config, "worker-a");
    let b = spawn_worker(&config, "worker-b");

    // A small buffer, so the outage overflows it: those events are counted queue_full.
    let gw = producer(&redis.url(), 300);
    let n = 4_000;
    let mut accepted = 0u64;
    for i in 0..n {
        if gw.emit(event(TelemetryCase::FeedbackCreated, i)).is_ok() {
            accepted += 1;
        }
        if i % 100 == 99 {
            std::thread::sleep(Duration::from_millis(25));
        }
        if i == n / 2 {
            redis.kill();
            std::thread::sleep(Duration::from_millis(300));
            redis.restart();
        }
    }
    let report = gw.shutdown_blocking(Duration::from_secs(30));
    let p = &report.stats;
    balanced("producer", p);
    assert_eq!(p.emitted, n as u64);
    assert_eq!(
        accepted, n as u64,
        "emit() never refuses: the buffer is behind the gateway"
    );
    for reason in p.dropped.keys() {
        assert_eq!(reason, "queue_full", "only the buffer drops: {p:?}");
    }
    let delivered = p.delivered;
    assert!(delivered > 0);

    let (r, ok) = rx.wait_for(Duration::from_secs(90), |r| requests_total(r) >= delivered);
    assert!(
        ok,
        "every appended event handled: requests.total {} of {delivered}",
        requests_total(&r)
    );
    // An entry whose read reply was lost in the restart (or a copy deferred while dedup was
    // away) is pending until a consumer reclaims it, `claim_idle_ms` after its delivery: wait
    // for that before the workers drain, so the check below sees the reclaim at work.
    let settled_by = std::time::Instant::now() + Duration::from_secs(30);
    while pending(&redis) > 0 && std::time::Instant::now() < settled_by {
        std::thread::sleep(Duration::from_millis(100));
    }
    let (sa, sb) = (a.drain(), b.drain());
    balanced("worker-a", &sa);
    balanced("worker-b", &sb);
    assert_eq!(
        sa.delivered + sb.delivered,
        delivered,
        "the workers delivered each appended event once (a re-appended copy is a duplicate): \
         a {sa:?} b {sb:?}"
    );
    let r = rx.received();
    assert_eq!(
        requests_total(&r),
        delivered,
        "nothing handled twice in the metric output"
    );
    let logged: HashSet<String> = logged_ids(&r).into_iter().collect();
    assert_eq!(logged.len() as u64, delivered);
    assert_eq!(pending(&redis), 0);
    eprintln!(
        "redis restart: {n} emitted, {delivered} appended, {} dropped queue_full; workers read {} + {}",
        p.dropped_for(ReasonCode::QueueFull),
        sa.emitted,
        sb.emitted
    );
}
