//! Dedup: the idempotency check every metric/log event passes.
//!
//! - `dedup/memory_check`: one key through the memory backend's LRU + TTL cache;
//! - `dedup/actor_memory_batch64` and `dedup/actor_redis_batch64`: one handler batch of 64
//!   fresh keys through the `DedupActor` (a message round trip), with the memory backend and
//!   with Redis (`SET key 1 NX EX ttl`, pipelined, on one multiplexed connection).
//!
//! Redis: `BENCH_REDIS_URL` if set; otherwise a private `redis-server` is started when one is on
//! PATH. With neither, the Redis case is skipped and says so on stdout: never silently.
//!
//! ```text
//! cargo bench --bench dedup
//! ```

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use telemetry_gateway::config::{DedupBackendKind, DedupSection};
use telemetry_gateway::testing::internals::{
    CheckBatch, DedupActor, DedupKey, MemoryDedup, Verdict,
};
use uuid::Uuid;

const BATCH: usize = 64;

fn keys(n: usize) -> Vec<DedupKey> {
    (0..n)
        .map(|_| DedupKey {
            tenant_id: "acme".into(),
            event_id: Uuid::now_v7(),
        })
        .collect()
}

fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// Times `iters` batches through the actor at `addr`.
fn batches(sys: &actix::SystemRunner, addr: &Addr<DedupActor>, iters: u64) -> Duration {
    sys.block_on(async {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let k = keys(BATCH);
            let start = Instant::now();
            let verdicts = addr.send(CheckBatch(k)).await.expect("the actor answers");
            total += start.elapsed();
            black_box(verdicts);
        }
        total
    })
}

fn dedup(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup");
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(3));

    g.throughput(Throughput::Elements(1));
    let mut mem = MemoryDedup::new(100_000, Duration::from_secs(3600));
    g.bench_function("memory_check", |b| {
        b.iter_batched(
            || keys(1).remove(0),
            |k| black_box(mem.check(k)),
            criterion::BatchSize::SmallInput,
        )
    });

    let sys = actix::System::new();
    g.throughput(Throughput::Elements(BATCH as u64));
    let cfg = DedupSection::default();
    let addr = sys.block_on(async { DedupActor::new(&cfg).expect("memory backend").start() });
    g.bench_function("actor_memory_batch64", |b| {
        b.iter_custom(|iters| batches(&sys, &addr, iters))
    });

    let mut _server = None;
    let url = match std::env::var("BENCH_REDIS_URL") {
        Ok(u) => Some(u),
        Err(_) if on_path("redis-server") => {
            let s = telemetry_gateway::testing::RedisServer::start();
            let u = s.url();
            _server = Some(s);
            Some(u)
        }
        Err(_) => None,
    };
    match url {
        Some(url) => {
            let cfg = DedupSection {
                backend: DedupBackendKind::Redis,
                redis_url: url.clone(),
                ..DedupSection::default()
            };
            let addr = sys.block_on(async { DedupActor::new(&cfg).expect("a Redis URL").start() });
            // Redis is connected lazily and fails open meanwhile: wait for real answers.
            let connected = sys.block_on(async {
                let deadline = Instant::now() + Duration::from_secs(10);
                while Instant::now() < deadline {
                    let v = addr
                        .send(CheckBatch(keys(1)))
                        .await
                        .expect("the actor answers");
                    if v.contains(&Verdict::New) {
                        return true;
                    }
                    actix_rt::time::sleep(Duration::from_millis(50)).await;
                }
                false
            });
            assert!(connected, "the dedup actor never reached Redis at {url}");
            g.bench_function("actor_redis_batch64", |b| {
                b.iter_custom(|iters| batches(&sys, &addr, iters))
            });
            println!("dedup/actor_redis_batch64 ran against {url}");
        }
        None => println!(
            "NOTICE dedup/actor_redis_batch64 SKIPPED: no BENCH_REDIS_URL and no redis-server on \
             PATH (apt-get install redis-server)"
        ),
    }
    g.finish();
}

criterion_group!(benches, dedup);
criterion_main!(benches);
