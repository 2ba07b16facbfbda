//! `DedupActor`: idempotency for the metric/log path. One per handler.
//!
//! A host may send the same event twice (a retry after a timeout, a re-delivered queue message);
//! it must count once. The actor answers a whole batch at a time:
//!
//! - `memory`: a bounded LRU with TTL (`dedup.memory_max_entries`, `dedup.ttl_secs`). Events are
//!   routed to handlers by `(tenant_id, event_id)`, so a re-sent event meets its first copy here.
//! - `redis`: one pipelined round trip of `SET {prefix}:{tenant}:{event_id} 1 NX EX ttl` per
//!   batch, shared by every handler and process.
//!
//! **Fail-open**: a Redis that is down, slow (past `dedup.timeout_ms`) or erroring never delays
//! or loses an event: the batch is answered [`Verdict::Unavailable`], processed, and counted.
//! While Redis is down the connection is retried at most every `dedup.reconnect_interval_ms`, so
//! a Redis that comes back is used again without a restart.

use std::num::NonZeroUsize;
use std::time::Duration;

use actix::prelude::*;
use lru::LruCache;
#[cfg(feature = "redis")]
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;
use uuid::Uuid;

use crate::config::{DedupBackendKind, DedupSection};

/// What identifies an event for dedup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// The tenant: two tenants' ids never collide. Shared with the event's reference
    /// (`EventRef::tenant_id`), so a check allocates no copy of it.
    pub tenant_id: std::sync::Arc<str>,
    /// The event id.
    pub event_id: Uuid,
}

/// The answer for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// First time seen within the TTL: process it.
    New,
    /// Seen before within the TTL: drop it as a duplicate.
    Duplicate,
    /// The store could not answer: process it (fail-open) and count.
    Unavailable,
    /// Seen before, and the mark is this same owner's (see `CheckOwned`): an earlier delivery
    /// of the same stream entry set it and never committed, so the entry is handled.
    Own,
}

/// [`CheckBatch`] with an owner per key (a stream entry id, in a worker): the Redis backend
/// stores the owner as the mark's value (the memory backend a hash of it) and answers
/// [`Verdict::Own`] when a key's mark is that owner's, so a redelivered entry is told from a
/// re-appended copy of its event.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Verdict>")]
pub struct CheckOwned {
    /// The keys.
    pub keys: Vec<DedupKey>,
    /// One owner per key (`None`: no owner, as [`CheckBatch`]).
    pub owners: Vec<Option<String>>,
}

/// Check a batch of keys; the reply has one verdict per key, in order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Verdict>")]
pub struct CheckBatch(pub Vec<DedupKey>);

/// The in-memory backend: bounded, with TTL.
#[derive(Debug)]
pub struct MemoryDedup {
    /// Each key's expiry and its owner's hash (0: no owner).
    seen: LruCache<DedupKey, (Instant, u64), foldhash::fast::RandomState>,
    ttl: Duration,
}

/// A nonzero hash of an owner (0 stands for "no owner").
fn owner_hash(owner: Option<&str>) -> u64 {
    use std::hash::{Hash, Hasher};
    owner.map_or(0, |o| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        o.hash(&mut h);
        h.finish().max(1)
    })
}

impl MemoryDedup {
    /// At most `max_entries` keys, each remembered for `ttl`.
    pub fn new(max_entries: usize, ttl: Duration) -> Self {
        let cap = NonZeroUsize::new(max_entries.max(1)).unwrap_or(NonZeroUsize::MIN);
        MemoryDedup {
            seen: LruCache::with_hasher(cap, foldhash::fast::RandomState::default()),
            ttl,
        }
    }

    /// Marks `key` as seen and says whether it was new.
    pub fn check(&mut self, key: DedupKey) -> Verdict {
        self.check_owned(key, None)
    }

    /// [`check`](Self::check) with an owner: a mark set by the same owner answers
    /// [`Verdict::Own`].
    pub fn check_owned(&mut self, key: DedupKey, owner: Option<&str>) -> Verdict {
        let now = Instant::now();
        let mine = owner_hash(owner);
        match self.seen.get_mut(&key) {
            Some((expires, by)) if *expires > now => {
                if mine != 0 && *by == mine {
                    Verdict::Own
                } else {
                    Verdict::Duplicate
                }
            }
            Some(mark) => {
                // Seen, but longer ago than the TTL: new again, remembered afresh.
                *mark = (now + self.ttl, mine);
                Verdict::New
            }
            None => {
                self.seen.put(key, (now + self.ttl, mine));
                Verdict::New
            }
        }
    }

    /// Keys currently held.
    #[cfg(any(test, feature = "testing"))]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no key is held.
    #[cfg(any(test, feature = "testing"))]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The Redis backend's connection state.
#[cfg(feature = "redis")]
#[derive(Debug)]
struct RedisDedup {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    next_attempt: Instant,
    connecting: bool,
}

#[derive(Debug)]
enum Backend {
    Memory(MemoryDedup),
    #[cfg(feature = "redis")]
    Redis(RedisDedup),
}

/// The dedup actor of one handler.
#[derive(Debug)]
// Without the `redis` feature only the memory backend exists, which needs none of the Redis
// settings below.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub struct DedupActor {
    backend: Backend,
    key_prefix: String,
    ttl_secs: u64,
    timeout: Duration,
    reconnect_interval: Duration,
    /// Where the duration of each Redis call is recorded (`dedup_call_duration_seconds`).
    counters: Option<std::sync::Arc<crate::diagnostics::Counters>>,
}

/// Why the dedup actor could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DedupBuildError {
    /// `dedup.redis_url` is not a usable Redis URL.
    #[error("dedup.redis_url is invalid: {0}")]
    RedisUrl(String),
    /// `dedup.backend = "redis"` in a build without the `redis` cargo feature.
    #[error("dedup.backend = \"redis\" needs the cargo feature `redis` of telemetry-gateway")]
    RedisFeatureOff,
}

impl DedupActor {
    /// Builds the backend named by `dedup.backend`. Redis is connected lazily, so a Redis that is
    /// down at start does not stop the gateway (events fail open until it is up).
    pub fn new(cfg: &DedupSection) -> Result<Self, DedupBuildError> {
        let backend = match cfg.backend {
            DedupBackendKind::Memory => Backend::Memory(MemoryDedup::new(
                cfg.memory_max_entries,
                Duration::from_secs(cfg.ttl_secs),
            )),
            #[cfg(feature = "redis")]
            DedupBackendKind::Redis => Backend::Redis(RedisDedup {
                client: redis::Client::open(cfg.redis_url.as_str()).map_err(|e| {
                    // The client's message may quote the URL: never with its password.
                    DedupBuildError::RedisUrl(crate::config::hide_url_in(
                        &e.to_string(),
                        &cfg.redis_url,
                    ))
                })?,
                conn: None,
                next_attempt: Instant::now(),
                connecting: false,
            }),
            #[cfg(not(feature = "redis"))]
            DedupBackendKind::Redis => return Err(DedupBuildError::RedisFeatureOff),
        };
        Ok(DedupActor {
            backend,
            key_prefix: cfg.key_prefix.clone(),
            ttl_secs: cfg.ttl_secs,
            timeout: Duration::from_millis(cfg.timeout_ms),
            reconnect_interval: Duration::from_millis(cfg.reconnect_interval_ms),
            counters: None,
        })
    }

    /// Records every Redis call's duration in `counters` (the runtime does this).
    pub fn with_counters(mut self, counters: std::sync::Arc<crate::diagnostics::Counters>) -> Self {
        self.counters = Some(counters);
        self
    }

    #[cfg(feature = "redis")]
    fn record_call(&self, d: Duration) {
        if let Some(c) = &self.counters {
            c.dedup_call.record_duration(d);
        }
    }

    #[cfg(feature = "redis")]
    fn redis_key(&self, k: &DedupKey) -> String {
        format!("{}:{}:{}", self.key_prefix, k.tenant_id, k.event_id)
    }
}

impl Actor for DedupActor {
    type Context = Context<Self>;
}

/// The outcome of one Redis round trip, for the actor to update its connection state.
#[cfg(feature = "redis")]
enum RedisOutcome {
    Answered(Vec<Verdict>),
    Failed { drop_connection: bool },
}

impl Handler<CheckBatch> for DedupActor {
    type Result = ResponseActFuture<Self, Vec<Verdict>>;

    fn handle(&mut self, msg: CheckBatch, ctx: &mut Self::Context) -> Self::Result {
        let owners = vec![None; msg.0.len()];
        self.handle(
            CheckOwned {
                keys: msg.0,
                owners,
            },
            ctx,
        )
    }
}

impl Handler<CheckOwned> for DedupActor {
    type Result = ResponseActFuture<Self, Vec<Verdict>>;

    fn handle(&mut self, msg: CheckOwned, _ctx: &mut Self::Context) -> Self::Result {
        match &mut self.backend {
            Backend::Memory(m) => {
                let v = msg
                    .keys
                    .into_iter()
                    .zip(
                        msg.owners
                            .iter()
                            .map(Option::as_deref)
                            .chain(std::iter::repeat(None)),
                    )
                    .map(|(k, o)| m.check_owned(k, o))
                    .collect();
                Box::pin(actix::fut::ready(v))
            }
            #[cfg(feature = "redis")]
            Backend::Redis(_) => self.check_redis(msg),
        }
    }
}

#[cfg(feature = "redis")]
impl DedupActor {
    /// One pipelined `SET NX EX` round trip for the batch (with a `GET` after each owned key, to
    /// tell an owner's own mark), failing open.
    fn check_redis(&mut self, msg: CheckOwned) -> ResponseActFuture<Self, Vec<Verdict>> {
        let n = msg.keys.len();
        let keys: Vec<String> = msg.keys.iter().map(|k| self.redis_key(k)).collect();
        let owners = msg.owners;
        let (ttl, timeout, reconnect_interval) =
            (self.ttl_secs, self.timeout, self.reconnect_interval);
        let Backend::Redis(redis) = &mut self.backend else {
            return Box::pin(actix::fut::ready(vec![Verdict::Unavailable; n]));
        };
        let now = Instant::now();
        let conn = redis.conn.clone();
        if conn.is_none() && (now < redis.next_attempt || redis.connecting) {
            // Down, and not yet time to try again: fail open at once.
            self.record_call(Duration::ZERO);
            return Box::pin(actix::fut::ready(vec![Verdict::Unavailable; n]));
        }
        let client = redis.client.clone();
        if conn.is_none() {
            redis.connecting = true;
            redis.next_attempt = now + reconnect_interval;
        }
        let fut = async move {
            let started = Instant::now();
            let mut new_conn = None;
            let mut c = match conn {
                Some(c) => c,
                None => {
                    let cfg = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(timeout))
                        .set_response_timeout(Some(timeout))
                        .set_number_of_retries(1)
                        .set_max_delay(reconnect_interval);
                    match tokio::time::timeout(
                        timeout,
                        ConnectionManager::new_with_config(client, cfg),
                    )
                    .await
                    {
                        Ok(Ok(c)) => {
                            new_conn = Some(c.clone());
                            c
                        }
                        _ => {
                            return (
                                RedisOutcome::Failed {
                                    drop_connection: true,
                                },
                                None,
                                started.elapsed(),
                            )
                        }
                    }
                }
            };
            let mut pipe = redis::pipe();
            for (i, k) in keys.iter().enumerate() {
                match owners.get(i).and_then(Option::as_deref) {
                    Some(owner) => {
                        pipe.cmd("SET")
                            .arg(k)
                            .arg(owner)
                            .arg("NX")
                            .arg("EX")
                            .arg(ttl);
                        pipe.cmd("GET").arg(k);
                    }
                    None => {
                        pipe.cmd("SET").arg(k).arg(1).arg("NX").arg("EX").arg(ttl);
                    }
                }
            }
            let expected = n + owners.iter().filter(|o| o.is_some()).count();
            let remaining = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            let res: Result<Result<Vec<Option<String>>, redis::RedisError>, _> =
                tokio::time::timeout(remaining, pipe.query_async(&mut c)).await;
            let outcome = match res {
                Ok(Ok(replies)) if replies.len() == expected => {
                    let mut replies = replies.into_iter();
                    let verdicts = (0..n)
                        .map(|i| {
                            let set = replies.next().flatten();
                            let owner = owners.get(i).and_then(Option::as_deref);
                            let mark = owner.and_then(|_| replies.next().flatten());
                            match (set, owner) {
                                (Some(_), _) => Verdict::New,
                                (None, Some(o)) if mark.as_deref() == Some(o) => Verdict::Own,
                                (None, _) => Verdict::Duplicate,
                            }
                        })
                        .collect();
                    RedisOutcome::Answered(verdicts)
                }
                Ok(Ok(_)) => RedisOutcome::Failed {
                    drop_connection: false,
                },
                Ok(Err(e)) => RedisOutcome::Failed {
                    drop_connection: e.is_connection_dropped() || e.is_io_error(),
                },
                // A timeout keeps the connection: the manager reconnects by itself if the
                // socket is dead, and a merely slow Redis should not cost a reconnect.
                Err(_) => RedisOutcome::Failed {
                    drop_connection: false,
                },
            };
            (outcome, new_conn, started.elapsed())
        };
        Box::pin(
            fut.into_actor(self)
                .map(move |(outcome, new_conn, took), act, _ctx| {
                    act.record_call(took);
                    let Backend::Redis(r) = &mut act.backend else {
                        return vec![Verdict::Unavailable; n];
                    };
                    r.connecting = false;
                    if let Some(c) = new_conn {
                        r.conn = Some(c);
                    }
                    match outcome {
                        RedisOutcome::Answered(v) => v,
                        RedisOutcome::Failed { drop_connection } => {
                            if drop_connection {
                                r.conn = None;
                                r.next_attempt = Instant::now() + act.reconnect_interval;
                            }
                            vec![Verdict::Unavailable; n]
                        }
                    }
                }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, id: u128) -> DedupKey {
        DedupKey {
            tenant_id: t.into(),
            event_id: Uuid::from_u128(id),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn memory_counts_once_per_ttl_and_per_tenant() {
        let mut m = MemoryDedup::new(100, Duration::from_secs(10));
        assert_eq!(m.check(key("a", 1)), Verdict::New);
        assert_eq!(m.check(key("a", 1)), Verdict::Duplicate);
        assert_eq!(m.check(key("b", 1)), Verdict::New, "tenants never collide");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(m.check(key("a", 1)), Verdict::New, "expired after the TTL");
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = MemoryDedup::new(10, Duration::from_secs(10));
        for i in 0..100 {
            m.check(key("a", i));
        }
        assert_eq!(m.len(), 10);
    }
}
