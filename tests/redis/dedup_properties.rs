//! Issue 4, scenario 9, as properties: for random sequences of event ids with Redis up or down,
//! each id counts exactly once per TTL while Redis is up and at least once while it is down, and
//! tenant A's ids never suppress tenant B's.
//!
//! The Redis properties drive [`DedupActor`] directly with [`CheckBatch`] messages against one
//! real `redis-server` per property run (a fresh key prefix per case keeps the cases apart).
//! "Down" is either an actor whose `redis_url` points at a closed port, or the shared server
//! killed in the middle of a sequence and started again. The memory backend's TTL is checked
//! with paused tokio time.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use telemetry_gateway::config::{DedupBackendKind, DedupSection};
use telemetry_gateway::testing::internals::{
    CheckBatch, DedupActor, DedupKey, MemoryDedup, Verdict,
};
use telemetry_gateway::testing::RedisServer;
use uuid::Uuid;

/// Two tenants sharing one small id space, so the same id under both tenants is common.
const TENANTS: [&str; 2] = ["tenant-a", "tenant-b"];
/// Event ids are drawn from `0..IDS`: small, so re-sent ids are common too.
const IDS: u128 = 6;
/// The TTL of the Redis cases: far longer than a case runs.
const REDIS_TTL_SECS: u64 = 60;
/// Nothing listens here (the `discard` port): a Redis that is down.
const CLOSED_REDIS_URL: &str = "redis://127.0.0.1:9/";

/// `(tenant index, event id)`.
type Key = (usize, u128);

fn dedup_key((tenant, id): Key) -> DedupKey {
    DedupKey {
        tenant_id: TENANTS[tenant].into(),
        event_id: Uuid::from_u128(id),
    }
}

fn keys() -> impl Strategy<Value = Vec<Key>> {
    proptest::collection::vec((0..TENANTS.len(), 0..IDS), 1..12)
}

/// A prefix no earlier case (or shrinking re-run) used.
fn fresh_prefix() -> String {
    static CASE: AtomicU64 = AtomicU64::new(0);
    format!(
        "prop:{}:{}",
        std::process::id(),
        CASE.fetch_add(1, Ordering::Relaxed)
    )
}

fn section(redis_url: &str, key_prefix: &str, timeout_ms: u64) -> DedupSection {
    DedupSection {
        backend: DedupBackendKind::Redis,
        redis_url: redis_url.to_owned(),
        ttl_secs: REDIS_TTL_SECS,
        key_prefix: key_prefix.to_owned(),
        // Generous for the live server: a loaded CI machine must not turn "up" into
        // "unavailable". The closed port refuses at once anyway.
        timeout_ms,
        reconnect_interval_ms: 20,
        ..DedupSection::default()
    }
}

async fn check(actor: &Addr<DedupActor>, keys: &[Key]) -> Vec<Verdict> {
    let verdicts = actor
        .send(CheckBatch(keys.iter().copied().map(dedup_key).collect()))
        .await
        .expect("dedup actor alive");
    assert_eq!(verdicts.len(), keys.len(), "one verdict per key");
    verdicts
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

fn run<S: Strategy>(
    mut runner: TestRunner,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

/// At least once, and tenants apart: the first verdict for a key is never `Duplicate`, whatever
/// state Redis is in, and the other tenant's use of the same id does not change that.
fn assert_first_verdict_processes(answers: &[(Key, Verdict)]) -> Result<(), TestCaseError> {
    let mut first: HashMap<Key, Verdict> = HashMap::new();
    for &(key, v) in answers {
        first.entry(key).or_insert(v);
    }
    for (key, v) in first {
        prop_assert_ne!(
            v,
            Verdict::Duplicate,
            "{:?} suppressed before it was ever processed",
            dedup_key(key)
        );
    }
    Ok(())
}

#[test]
fn redis_up_counts_each_id_once_redis_down_at_least_once_tenants_apart() {
    let redis = RedisServer::start();
    let conn = RefCell::new(redis.connection());
    let system = System::new();
    // Each batch goes to the live Redis (`true`) or to a Redis that is down (`false`).
    let strategy = proptest::collection::vec((any::<bool>(), keys()), 1..8);
    run(runner(64), strategy, |batches| {
        let prefix = fresh_prefix();
        let answers: Vec<(bool, Key, Verdict)> = system.block_on(async {
            let up = DedupActor::new(&section(&redis.url(), &prefix, 2_000))
                .expect("valid url")
                .start();
            let down = DedupActor::new(&section(CLOSED_REDIS_URL, &prefix, 50))
                .expect("valid url")
                .start();
            let mut answers = Vec::new();
            for (redis_up, keys) in &batches {
                let actor = if *redis_up { &up } else { &down };
                let verdicts = check(actor, keys).await;
                answers.extend(keys.iter().zip(verdicts).map(|(k, v)| (*redis_up, *k, v)));
            }
            answers
        });

        // Up: exactly once. The first sighting of (tenant, id) is new, every later one within
        // the TTL a duplicate, in order, also inside one batch; the model keys by tenant.
        let mut seen: HashSet<Key> = HashSet::new();
        for &(redis_up, key, verdict) in &answers {
            if redis_up {
                let expected = if seen.insert(key) {
                    Verdict::New
                } else {
                    Verdict::Duplicate
                };
                prop_assert_eq!(verdict, expected, "{:?} with Redis up", dedup_key(key));
            } else {
                // Down: fail-open, processed and counted.
                prop_assert_eq!(
                    verdict,
                    Verdict::Unavailable,
                    "{:?} with Redis down",
                    dedup_key(key)
                );
            }
        }
        let all: Vec<(Key, Verdict)> = answers.iter().map(|&(_, k, v)| (k, v)).collect();
        assert_first_verdict_processes(&all)?;

        // Once *per TTL*: every key Redis took carries the configured expiry.
        for key in &seen {
            let k = dedup_key(*key);
            let name = format!("{prefix}:{}:{}", k.tenant_id, k.event_id);
            let ttl: i64 = redis::cmd("TTL")
                .arg(&name)
                .query(&mut *conn.borrow_mut())
                .expect("TTL");
            prop_assert!(
                ttl > 0 && ttl <= REDIS_TTL_SECS as i64,
                "{} has TTL {}",
                name,
                ttl
            );
        }
        Ok(())
    });
}

/// The same actor across a real outage: Redis killed after some batches and started again
/// (empty, no persistence) after some more. Nothing is ever suppressed that was not processed,
/// every batch while it is dead fails open, and dedup is exact again once it answers.
#[test]
fn redis_killed_mid_sequence_fails_open_and_never_suppresses_an_unprocessed_id() {
    let redis = RefCell::new(RedisServer::start());
    let url = redis.borrow().url();
    let system = System::new();
    let strategy = (
        proptest::collection::vec(keys(), 1..4),
        proptest::collection::vec(keys(), 1..4),
        proptest::collection::vec(keys(), 1..4),
    );
    run(runner(12), strategy, |(before, during, after)| {
        let prefix = fresh_prefix();
        let actor = system.block_on(async {
            DedupActor::new(&section(&url, &prefix, 2_000))
                .expect("valid url")
                .start()
        });
        let mut all: Vec<(Key, Verdict)> = Vec::new();

        // Up: exact.
        let mut seen: HashSet<Key> = HashSet::new();
        for keys in &before {
            let verdicts = system.block_on(check(&actor, keys));
            for (k, v) in keys.iter().zip(verdicts) {
                let expected = if seen.insert(*k) {
                    Verdict::New
                } else {
                    Verdict::Duplicate
                };
                prop_assert_eq!(v, expected, "{:?} before the outage", dedup_key(*k));
                all.push((*k, v));
            }
        }

        redis.borrow_mut().kill();
        for keys in &during {
            let verdicts = system.block_on(check(&actor, keys));
            for (k, v) in keys.iter().zip(verdicts) {
                prop_assert_eq!(
                    v,
                    Verdict::Unavailable,
                    "{:?} while Redis is dead",
                    dedup_key(*k)
                );
                all.push((*k, v));
            }
        }

        // Back, empty: the actor may need a reconnect or two (each answered Unavailable), then
        // counts exactly once again from a clean slate.
        redis.borrow_mut().restart();
        let mut reconnected = false;
        let mut seen_after: HashSet<Key> = HashSet::new();
        for keys in &after {
            let mut verdicts = system.block_on(check(&actor, keys));
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !reconnected && verdicts.iter().all(|v| *v == Verdict::Unavailable) {
                // Fail-open answers are processed events: keep them, and try again.
                all.extend(keys.iter().copied().zip(verdicts.iter().copied()));
                prop_assert!(
                    std::time::Instant::now() < deadline,
                    "Redis never used again after the restart"
                );
                std::thread::sleep(Duration::from_millis(25));
                verdicts = system.block_on(check(&actor, keys));
            }
            reconnected = true;
            for (k, v) in keys.iter().zip(verdicts) {
                let expected = if seen_after.insert(*k) {
                    Verdict::New
                } else {
                    Verdict::Duplicate
                };
                prop_assert_eq!(v, expected, "{:?} after the restart", dedup_key(*k));
                all.push((*k, v));
            }
        }
        assert_first_verdict_processes(&all)
    });
}

/// "Per TTL" end to end with Redis: after the expiry the same id counts again.
#[test]
fn redis_counts_an_id_again_after_its_ttl() {
    let redis = RedisServer::start();
    let mut cfg = section(&redis.url(), &fresh_prefix(), 2_000);
    cfg.ttl_secs = 1;
    let system = System::new();
    let key = [(0, 1), (1, 1)];
    let (first, second, after) = system.block_on(async {
        let actor = DedupActor::new(&cfg).expect("valid url").start();
        let first = check(&actor, &key).await;
        let second = check(&actor, &key).await;
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        (first, second, check(&actor, &key).await)
    });
    assert_eq!(first, [Verdict::New, Verdict::New], "tenants apart");
    assert_eq!(second, [Verdict::Duplicate, Verdict::Duplicate]);
    assert_eq!(
        after,
        [Verdict::New, Verdict::New],
        "counts again after the TTL"
    );
}

/// A step of the memory property.
#[derive(Debug, Clone)]
enum Step {
    Check(Key),
    /// Let this many milliseconds pass (paused time: exact).
    Advance(u64),
}

const MEMORY_TTL_MS: u64 = 10_000;

proptest! {
    #![proptest_config(Config {
        cases: 64,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    /// The memory backend: an id counts once in `[first, first + ttl)`, again from then on;
    /// tenants never collide.
    #[test]
    fn memory_counts_each_id_once_per_ttl(
        steps in proptest::collection::vec(
            prop_oneof![
                4 => (0..TENANTS.len(), 0..IDS).prop_map(Step::Check),
                1 => prop_oneof![
                    0..MEMORY_TTL_MS,
                    Just(MEMORY_TTL_MS - 1),
                    Just(MEMORY_TTL_MS),
                    MEMORY_TTL_MS..3 * MEMORY_TTL_MS,
                ].prop_map(Step::Advance),
            ],
            1..60,
        ),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut dedup = MemoryDedup::new(1_000, Duration::from_millis(MEMORY_TTL_MS));
            // When each key last counted, in virtual milliseconds.
            let mut counted_at: HashMap<Key, u64> = HashMap::new();
            let mut now = 0u64;
            for step in &steps {
                match *step {
                    Step::Advance(ms) => {
                        tokio::time::advance(Duration::from_millis(ms)).await;
                        now += ms;
                    }
                    Step::Check(key) => {
                        let fresh = counted_at
                            .get(&key)
                            .is_none_or(|&at| now >= at + MEMORY_TTL_MS);
                        let verdict = dedup.check(dedup_key(key));
                        if fresh {
                            counted_at.insert(key, now);
                            prop_assert_eq!(verdict, Verdict::New, "{:?} at {} ms", key, now);
                        } else {
                            prop_assert_eq!(verdict, Verdict::Duplicate, "{:?} at {} ms", key, now);
                        }
                    }
                }
            }
            // After a full TTL of quiet, every id counts again.
            tokio::time::advance(Duration::from_millis(MEMORY_TTL_MS)).await;
            for key in counted_at.keys() {
                prop_assert_eq!(dedup.check(dedup_key(*key)), Verdict::New, "{:?}", key);
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}
