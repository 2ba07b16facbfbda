//! The Redis Streams transport: the metric/log path spread over processes through a stream and
//! a consumer group (ADR 0003).
//!
//! - [`RedisStreamProducer`] is the gateway's [`MetricTransport`]: `try_send` puts the envelope
//!   in a bounded local buffer and never waits; a task appends the buffer to the stream in
//!   pipelined `XADD ... MAXLEN ~ max_len` batches. While Redis is away the batch in hand is
//!   held and retried with backoff (reconnecting), the buffer fills, and `try_send` then says
//!   `Full`, which the gateway counts as `queue_full`.
//! - [`RedisStreamSource`] is a handler's [`EnvelopeSource`]: it reclaims entries another
//!   consumer left pending for `claim_idle` (`XAUTOCLAIM`), else reads new ones
//!   (`XREADGROUP ... >`), and acknowledges (`XACK`) only what the handler settled. An entry
//!   delivered more than `max_deliveries` times, or one that does not decode, goes to the
//!   dead-letter stream `{stream}:dead` with why, and is acknowledged there.
//!
//! Status (issue 6): built and tested against a real `redis-server` at this level; not yet
//! selectable from the configuration, and the producer's and workers' ledgers (ADR 0003) are not
//! wired yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::{EnvelopeSource, MetricTransport, TransportError};
use crate::contracts::TelemetryEnvelope;

/// The stream entry field that holds the envelope's JSON wire form.
pub const ENVELOPE_FIELD: &str = "envelope";
/// Envelopes appended per `XADD` pipeline.
const APPEND_BATCH: usize = 256;
/// Longest wait between two tries to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Where the stream is and how its consumer group behaves.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The stream key.
    pub stream: String,
    /// The consumer group of the handler pools.
    pub group: String,
    /// This consumer's name, unique in the group (for example `host-pid-handler`).
    pub consumer: String,
    /// Approximate cap on the stream's length (`XADD MAXLEN ~`).
    pub max_len: usize,
    /// An entry pending this long with its consumer is reclaimed by another (`XAUTOCLAIM`).
    pub claim_idle: Duration,
    /// An entry delivered more than this many times goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// How long one `XREADGROUP` waits for new entries.
    pub block: Duration,
}

impl StreamSettings {
    /// The dead-letter stream: `{stream}:dead`.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}:dead", self.stream)
    }
}

/// The producer side (see the module docs).
#[derive(Debug)]
pub struct RedisStreamProducer {
    tx: mpsc::Sender<TelemetryEnvelope>,
    appended: Arc<AtomicU64>,
    failed_calls: Arc<AtomicU64>,
}

impl RedisStreamProducer {
    /// Starts the appending task on `rt`, with a local buffer of `buffer_capacity` envelopes.
    pub fn spawn(
        client: redis::Client,
        settings: StreamSettings,
        buffer_capacity: usize,
        rt: &tokio::runtime::Handle,
    ) -> Self {
        let (tx, mut rx) = mpsc::channel::<TelemetryEnvelope>(buffer_capacity.max(1));
        let appended = Arc::new(AtomicU64::new(0));
        let failed_calls = Arc::new(AtomicU64::new(0));
        let (ok, failed) = (appended.clone(), failed_calls.clone());
        rt.spawn(async move {
            let mut conn: Option<MultiplexedConnection> = None;
            let mut batch: Vec<TelemetryEnvelope> = Vec::with_capacity(APPEND_BATCH);
            while rx.recv_many(&mut batch, APPEND_BATCH).await > 0 {
                let mut pipe = redis::pipe();
                for env in &batch {
                    // Envelopes passed `emit()`'s validation; one that still cannot be encoded
                    // is not appended (the workers would dead-letter it anyway).
                    if let Ok(json) = env.to_json() {
                        pipe.cmd("XADD")
                            .arg(&settings.stream)
                            .arg("MAXLEN")
                            .arg("~")
                            .arg(settings.max_len)
                            .arg("*")
                            .arg(ENVELOPE_FIELD)
                            .arg(json)
                            .ignore();
                    }
                }
                // Hold the batch until Redis takes it; meanwhile the bounded buffer fills and
                // `try_send` answers `Full`.
                let mut wait = Duration::from_millis(20);
                loop {
                    if conn.is_none() {
                        conn = client.get_multiplexed_async_connection().await.ok();
                    }
                    if let Some(c) = conn.as_mut() {
                        match pipe.query_async::<()>(c).await {
                            Ok(()) => {
                                ok.fetch_add(batch.len() as u64, Ordering::Relaxed);
                                break;
                            }
                            Err(_) => conn = None,
                        }
                    }
                    failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                batch.clear();
            }
        });
        RedisStreamProducer {
            tx,
            appended,
            failed_calls,
        }
    }

    /// Envelopes appended to the stream so far.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Append calls that failed (each retried).
    pub fn failed_calls(&self) -> u64 {
        self.failed_calls.load(Ordering::Relaxed)
    }
}

impl MetricTransport for RedisStreamProducer {
    fn try_send(&self, env: TelemetryEnvelope) -> Result<(), TransportError> {
        self.tx.try_send(env).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TransportError::Full,
            mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
        })
    }

    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

/// A handler's consumer in the group (see the module docs).
#[derive(Debug)]
pub struct RedisStreamSource {
    client: redis::Client,
    conn: Option<MultiplexedConnection>,
    settings: StreamSettings,
    /// Entry ids handed to the handler and not yet settled, by event id (a re-sent event can
    /// be in hand twice).
    in_hand: HashMap<Uuid, Vec<String>>,
    stop: Arc<AtomicBool>,
    dead_lettered: Arc<AtomicU64>,
}

impl RedisStreamSource {
    /// A consumer of `settings.group` named `settings.consumer`. `stop` ends `recv_batch` (it
    /// answers `None`) within `settings.block`.
    pub fn new(client: redis::Client, settings: StreamSettings, stop: Arc<AtomicBool>) -> Self {
        RedisStreamSource {
            client,
            conn: None,
            settings,
            in_hand: HashMap::new(),
            stop,
            dead_lettered: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Entries this consumer moved to the dead-letter stream so far.
    pub fn dead_lettered(&self) -> Arc<AtomicU64> {
        self.dead_lettered.clone()
    }

    async fn connect(&mut self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(c) = &self.conn {
            return Ok(c.clone());
        }
        let mut c = self.client.get_multiplexed_async_connection().await?;
        // From the stream's start, so that entries appended before the group existed are
        // read; an existing group is left as it is.
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut c)
            .await;
        if let Err(e) = created {
            if e.code() != Some("BUSYGROUP") {
                return Err(e);
            }
        }
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// Moves `entry` to the dead-letter stream with `why`, and acknowledges it.
    async fn dead_letter(
        &mut self,
        c: &mut MultiplexedConnection,
        entry: &StreamId,
        deliveries: u64,
        why: &str,
    ) -> redis::RedisResult<()> {
        let raw: String = entry.get(ENVELOPE_FIELD).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("XADD")
            .arg(self.settings.dead_letter_stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.settings.max_len)
            .arg("*")
            .arg(ENVELOPE_FIELD)
            .arg(raw)
            .arg("entry_id")
            .arg(&entry.id)
            .arg("deliveries")
            .arg(deliveries)
            .arg("error")
            .arg(crate::logging::sanitize(why).as_ref())
            .ignore()
            .cmd("XACK")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(&entry.id)
            .ignore();
        pipe.query_async::<()>(c).await?;
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Decodes `entry` into `out`, or dead-letters it when it does not decode.
    async fn take_entry(
        &mut self,
        c: &mut MultiplexedConnection,
        entry: &StreamId,
        deliveries: u64,
        out: &mut Vec<TelemetryEnvelope>,
    ) -> redis::RedisResult<()> {
        let raw: Option<String> = entry.get(ENVELOPE_FIELD);
        match raw.as_deref().map(TelemetryEnvelope::from_json) {
            Some(Ok(env)) => {
                self.in_hand
                    .entry(env.event_id)
                    .or_default()
                    .push(entry.id.clone());
                out.push(env);
                Ok(())
            }
            Some(Err(e)) => {
                let why = format!("invalid envelope: {e}");
                self.dead_letter(c, entry, deliveries, &why).await
            }
            None => {
                self.dead_letter(c, entry, deliveries, "no envelope field")
                    .await
            }
        }
    }

    async fn try_batch(&mut self, max: usize) -> redis::RedisResult<Vec<TelemetryEnvelope>> {
        let mut c = self.connect().await?;
        let s = self.settings.clone();
        let mut out = Vec::new();
        // Entries another consumer left pending too long: reclaimed first.
        let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(s.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut c)
            .await?;
        if !claimed.claimed.is_empty() {
            let pending: StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&s.stream)
                .arg(&s.group)
                .arg("-")
                .arg("+")
                .arg(max.max(claimed.claimed.len()) * 4)
                .arg(&s.consumer)
                .query_async(&mut c)
                .await?;
            let times: HashMap<&str, u64> = pending
                .ids
                .iter()
                .map(|p| (p.id.as_str(), p.times_delivered as u64))
                .collect();
            for entry in &claimed.claimed {
                let n = times.get(entry.id.as_str()).copied().unwrap_or(1);
                if n > s.max_deliveries {
                    let why = format!(
                        "delivered {n} times without being settled (its case handler failed)"
                    );
                    self.dead_letter(&mut c, entry, n, &why).await?;
                } else {
                    self.take_entry(&mut c, entry, n, &mut out).await?;
                }
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        let read: StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&s.group)
            .arg(&s.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("BLOCK")
            .arg(s.block.as_millis() as u64)
            .arg("STREAMS")
            .arg(&s.stream)
            .arg(">")
            .query_async(&mut c)
            .await?;
        for key in read.keys {
            for entry in &key.ids {
                self.take_entry(&mut c, entry, 1, &mut out).await?;
            }
        }
        Ok(out)
    }
}

impl EnvelopeSource for RedisStreamSource {
    fn recv_batch(&mut self, max: usize) -> BoxFuture<'_, Option<Vec<TelemetryEnvelope>>> {
        Box::pin(async move {
            let mut wait = Duration::from_millis(20);
            loop {
                if self.stop.load(Ordering::SeqCst) {
                    return None;
                }
                match self.try_batch(max.max(1)).await {
                    Ok(batch) if !batch.is_empty() => return Some(batch),
                    Ok(_) => wait = Duration::from_millis(20),
                    Err(_) => {
                        // Reconnect on the next try, after a backoff.
                        self.conn = None;
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(MAX_BACKOFF);
                    }
                }
            }
        })
    }

    fn wants_settle(&self) -> bool {
        true
    }

    fn settle(&mut self, handled: Vec<Uuid>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let mut ids: Vec<String> = Vec::with_capacity(handled.len());
            for id in handled {
                if let Some(entries) = self.in_hand.get_mut(&id) {
                    if let Some(e) = entries.pop() {
                        ids.push(e);
                    }
                    if entries.is_empty() {
                        self.in_hand.remove(&id);
                    }
                }
            }
            if ids.is_empty() {
                return;
            }
            // An acknowledgement that fails leaves the entries pending: they are reclaimed and
            // delivered again, and dedup makes the metric effect count once.
            if let Ok(mut c) = self.connect().await {
                let _: redis::RedisResult<()> = redis::cmd("XACK")
                    .arg(&self.settings.stream)
                    .arg(&self.settings.group)
                    .arg(&ids)
                    .query_async(&mut c)
                    .await;
            }
        })
    }
}
