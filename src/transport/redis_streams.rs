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
//! Selected by `transport.kind = "redis_streams"`. In the gateway's process the producer
//! settles each event in the ledger: delivered when its `XADD` succeeded (exporter
//! `redis_stream`), or dropped `queue_full` at the buffer. A worker's consumers are linked to
//! its ledger (`transport::worker`, private): they count each entry read, and leave acknowledging to
//! the worker's commit (see `super::worker`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamPendingCountReply, StreamReadReply};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::worker::{HeldEntry, WorkerLink};
use super::{EnvelopeSource, MetricTransport, TransportError};
use crate::config::TransportSection;
use crate::contracts::TelemetryEnvelope;
use crate::diagnostics::recorder::{Detail, EventRef, Stage};
use crate::diagnostics::{Counters, ReasonCode};

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
    /// The settings `[transport]` describes, for the consumer named `consumer`.
    pub fn from_config(t: &TransportSection, consumer: String) -> Self {
        StreamSettings {
            stream: t.stream.clone(),
            group: t.group.clone(),
            consumer,
            max_len: t.max_len,
            claim_idle: Duration::from_millis(t.claim_idle_ms),
            max_deliveries: t.max_deliveries,
            block: Duration::from_millis(t.block_ms),
        }
    }

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
        Self::spawn_inner(client, settings, buffer_capacity, rt, None)
    }

    /// [`spawn`](Self::spawn), settling each event in the gateway's ledger when it is appended.
    pub(crate) fn spawn_counted(
        client: redis::Client,
        settings: StreamSettings,
        buffer_capacity: usize,
        rt: &tokio::runtime::Handle,
        counters: Arc<Counters>,
    ) -> Self {
        Self::spawn_inner(client, settings, buffer_capacity, rt, Some(counters))
    }

    fn spawn_inner(
        client: redis::Client,
        settings: StreamSettings,
        buffer_capacity: usize,
        rt: &tokio::runtime::Handle,
        counters: Option<Arc<Counters>>,
    ) -> Self {
        let stats = counters
            .as_ref()
            .map(|c| c.exporters.register("redis_stream", "metric_log"));
        let (tx, mut rx) = mpsc::channel::<TelemetryEnvelope>(buffer_capacity.max(1));
        let appended = Arc::new(AtomicU64::new(0));
        let failed_calls = Arc::new(AtomicU64::new(0));
        let (ok, failed) = (appended.clone(), failed_calls.clone());
        rt.spawn(async move {
            let mut conn: Option<MultiplexedConnection> = None;
            let mut batch: Vec<TelemetryEnvelope> = Vec::with_capacity(APPEND_BATCH);
            while rx.recv_many(&mut batch, APPEND_BATCH).await > 0 {
                let mut pipe = redis::pipe();
                let mut appended: Vec<&TelemetryEnvelope> = Vec::with_capacity(batch.len());
                for env in &batch {
                    // Envelopes passed `emit()`'s validation; one that still cannot be encoded
                    // is not appended (the workers would dead-letter it anyway): counted as
                    // invalid here.
                    let json = match env.to_json() {
                        Ok(j) => j,
                        Err(e) => {
                            if let Some(c) = &counters {
                                c.drop_event_text(
                                    &EventRef::of(env),
                                    ReasonCode::InvalidEnvelope,
                                    &format!("not appended to the stream: {e}"),
                                );
                                c.metric_pending_sub(1);
                            }
                            continue;
                        }
                    };
                    appended.push(env);
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
                // Hold the batch until Redis takes it; meanwhile the bounded buffer fills and
                // `try_send` answers `Full`.
                let mut wait = Duration::from_millis(20);
                loop {
                    if appended.is_empty() {
                        break;
                    }
                    if conn.is_none() {
                        conn = client.get_multiplexed_async_connection().await.ok();
                    }
                    let started = std::time::Instant::now();
                    if let Some(c) = conn.as_mut() {
                        match pipe.query_async::<()>(c).await {
                            Ok(()) => {
                                ok.fetch_add(appended.len() as u64, Ordering::Relaxed);
                                if let (Some(c), Some(s)) = (&counters, &stats) {
                                    s.record_call(appended.len() as u64, true, started.elapsed());
                                    settle_appended(c, &appended);
                                }
                                break;
                            }
                            Err(_) => conn = None,
                        }
                    }
                    if let Some(s) = &stats {
                        s.record_call(appended.len() as u64, false, started.elapsed());
                    }
                    failed.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
                drop(appended);
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

/// The producer's ledger column: appended events are delivered (ADR 0003).
fn settle_appended(c: &Counters, appended: &[&TelemetryEnvelope]) {
    Counters::add(&c.delivered_metric_log, appended.len() as u64);
    let evs: Vec<EventRef> = appended.iter().map(|e| EventRef::of(e)).collect();
    for (env, ev) in appended.iter().zip(&evs) {
        c.case_delivered(env.case.as_str());
        c.emit_to_export(crate::contracts::SignalType::MetricLog, ev.age());
    }
    c.recorder().record_batch(
        &evs,
        &[
            (Stage::Exported, Some(Detail::Static("redis stream"))),
            (Stage::Delivered, None),
        ],
    );
    c.metric_pending_sub(appended.len() as u64);
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
    /// Where `XAUTOCLAIM` goes on from: it scans the pending list a page per call.
    claim_cursor: String,
    /// Set in a worker: entries are counted as read into its ledger and acknowledged by its
    /// commit, not by `settle`.
    worker: Option<WorkerLink>,
    /// Whether the end of reading was reported to the worker's ledger.
    closed: bool,
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
            claim_cursor: "0-0".into(),
            worker: None,
            closed: false,
        }
    }

    /// Links this consumer to a worker's ledger (see `super::worker`).
    pub(crate) fn with_worker(mut self, link: WorkerLink) -> Self {
        link.ledger.source_opened();
        self.worker = Some(link);
        self
    }

    /// A worker counts every entry it reads: the intake of its ledger (ADR 0003).
    fn count_read(&self, env: Option<&TelemetryEnvelope>) {
        if let Some(w) = &self.worker {
            let c = &w.counters;
            c.emitted.add(1, Ordering::Relaxed);
            if let Some(env) = env {
                c.case_received(env.case.as_str());
            }
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
        if let Some(w) = &self.worker {
            let env = entry
                .get::<String>(ENVELOPE_FIELD)
                .and_then(|raw| TelemetryEnvelope::from_json(&raw).ok());
            self.count_read(env.as_ref());
            let c = &w.counters;
            match &env {
                Some(env) => c.drop_event_text(&EventRef::of(env), ReasonCode::DeadLettered, why),
                None => {
                    c.dropped(ReasonCode::DeadLettered, 1);
                    c.case_slot(crate::diagnostics::OTHER_CASE, 2);
                }
            }
        }
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
                match &self.worker {
                    Some(w) => {
                        self.count_read(Some(&env));
                        Counters::pending_add(&w.counters.metric_pending, 1);
                        Counters::add(&w.counters.routed_metric_log, 1);
                        if deliveries > 1 {
                            Counters::add(&w.counters.redelivered, 1);
                        }
                        w.ledger.hold(
                            env.event_id,
                            HeldEntry {
                                entry_id: entry.id.clone(),
                                deliveries,
                            },
                        );
                    }
                    None => self
                        .in_hand
                        .entry(env.event_id)
                        .or_default()
                        .push(entry.id.clone()),
                }
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
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(max)
            .query_async(&mut c)
            .await?;
        self.claim_cursor = claimed.next_stream_id.clone();
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
                    if let (Some(w), false) = (&self.worker, self.closed) {
                        self.closed = true;
                        w.ledger.source_closed();
                    }
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
        // A worker's consumers leave acknowledging to its commit.
        self.worker.is_none()
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
