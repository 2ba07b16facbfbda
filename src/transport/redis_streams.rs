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
//! With `[spool] kind = "disk"` the producer's buffer is on disk: the task appends each batch
//! of envelopes (their JSON wire forms, framed) as one record of the spool
//! `{spool.path}/stream-producer`, and the spool's sender (`StreamAppender`) sends the records
//! in order as the same `XADD` pipelines, holding the oldest while Redis is away. The buffer in
//! memory then stays short, `try_send` does not refuse while the budget lasts, and a restart or
//! a crash of the gateway keeps what was appended (`export::spooled`).
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

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamPendingCountReply;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::stream_entry::{autoclaim_reply, bounded_reply, read_reply, Decoded, RawEntry};
use super::worker::WorkerLink;
use super::{EnvelopeSource, MetricTransport, TransportError};
use crate::config::TransportSection;
use crate::contracts::TelemetryEnvelope;
use crate::diagnostics::ledger::{Holder, Outcome};
use crate::diagnostics::recorder::EventRef;
use crate::diagnostics::{Counters, ReasonCode};
use crate::export::logs::LogRecords;
use crate::export::sink::SinkError;
use crate::export::spooled::{RecordSender, SpoolControl, SpoolSettings};
use crate::logging::LogScope;
use crate::spool::SpoolError;

/// The stream entry field that holds the envelope's JSON wire form.
pub const ENVELOPE_FIELD: &str = "envelope";
/// Envelopes appended per `XADD` pipeline.
const APPEND_BATCH: usize = 256;
/// Longest wait between two tries to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// `XREADGROUP ... >` one entry at a time, inside Redis, until `ARGV[3]` entries or `ARGV[4]`
/// bytes (names and values): a read's size is bounded by bytes, which no Redis command does by
/// itself (issue 14, defect 4). Non-blocking (scripts may not block); the caller blocks on a
/// single-entry read when this returns nothing. Returns the entries, as `XRANGE` would.
const BOUNDED_READ: &str = r"
local out, bytes = {}, 0
for _ = 1, tonumber(ARGV[3]) do
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
  if not r then break end
  local e = r[1][2][1]
  if not e then break end
  out[#out + 1] = e
  for _, f in ipairs(e[2]) do bytes = bytes + #f end
  if bytes >= tonumber(ARGV[4]) then break end
end
return out
";

/// `XAUTOCLAIM` one entry at a time, inside Redis, until `ARGV[5]` entries, `ARGV[6]` bytes or
/// the end of the pending list: the same byte bound for reclaimed entries. Returns `[cursor,
/// entries, []]` as `XAUTOCLAIM` does.
const BOUNDED_AUTOCLAIM: &str = r"
local out, bytes, cursor = {}, 0, ARGV[4]
for _ = 1, tonumber(ARGV[5]) do
  local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', 1)
  cursor = r[1]
  local e = r[2][1]
  if e then
    out[#out + 1] = e
    if e[2] then
      for _, f in ipairs(e[2]) do bytes = bytes + #f end
    end
  end
  if cursor == '0-0' or bytes >= tonumber(ARGV[6]) then break end
end
return {cursor, out, {}}
";

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
    /// The longest a connection waits for a reply (`transport.response_timeout_ms`): above
    /// `block`, or every idle blocking read would time out (issue 14, defect 3).
    pub response_timeout: Duration,
    /// The longest a connection takes to open.
    pub connect_timeout: Duration,
    /// The most entry bytes one read brings, plus at most one entry
    /// (`transport.max_read_bytes`).
    pub max_read_bytes: usize,
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
            response_timeout: Duration::from_millis(t.response_timeout_ms),
            connect_timeout: Duration::from_millis(t.connect_timeout_ms),
            max_read_bytes: t.max_read_bytes,
        }
    }

    /// A connection with this stream's timeouts (never the client's 500 ms default, which is
    /// shorter than a blocking read).
    pub(crate) async fn open(
        &self,
        client: &redis::Client,
    ) -> redis::RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(self.response_timeout))
            .set_connection_timeout(Some(self.connect_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
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
    /// The buffer's disk spool, with `[spool] kind = "disk"`.
    spool: Option<Arc<SpoolControl>>,
}

/// The `XADD` pipeline of a batch of envelopes' JSON wire forms.
fn xadd_pipeline<'a>(
    settings: &StreamSettings,
    jsons: impl Iterator<Item = &'a str>,
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    for json in jsons {
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
    pipe
}

/// A record of the producer's spool: each envelope's JSON wire form as a little-endian `u32`
/// length and its bytes.
fn encode_record(jsons: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(jsons.iter().map(|j| j.len() + 4).sum());
    for j in jsons {
        out.extend_from_slice(&(j.len() as u32).to_le_bytes());
        out.extend_from_slice(j.as_bytes());
    }
    out
}

/// The JSON texts of a record read back from disk (checked: its checksum passed, but a record
/// from another build or a damaged one must not be appended as garbage).
fn decode_record(body: &[u8]) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| format!("{} trailing bytes, not a length", rest.len()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > tail.len() {
            return Err(format!("an envelope of {len} bytes in {} left", tail.len()));
        }
        let (json, tail) = tail.split_at(len);
        out.push(std::str::from_utf8(json).map_err(|e| format!("an envelope is not UTF-8: {e}"))?);
        rest = tail;
    }
    Ok(out)
}

/// Sends the producer spool's records: each as one `XADD` pipeline, in order, on one
/// connection that is opened again after a failure.
pub(crate) struct StreamAppender {
    client: redis::Client,
    settings: StreamSettings,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    appended: Arc<AtomicU64>,
    failed_calls: Arc<AtomicU64>,
}

impl std::fmt::Debug for StreamAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamAppender")
            .field("stream", &self.settings.stream)
            .finish()
    }
}

impl RecordSender for StreamAppender {
    fn send(&self, body: Bytes) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let jsons = decode_record(&body).map_err(|e| {
                SinkError::Rejected(format!("a spool record is not a batch of envelopes: {e}"))
            })?;
            let n = jsons.len() as u64;
            let pipe = xadd_pipeline(&self.settings, jsons.into_iter());
            let mut conn = self.conn.lock().await;
            if conn.is_none() {
                *conn = self.settings.open(&self.client).await.ok();
            }
            let result = match conn.as_mut() {
                Some(c) => pipe.query_async::<()>(c).await.map_err(|e| e.to_string()),
                None => Err("Redis is unreachable".to_owned()),
            };
            match result {
                Ok(()) => {
                    self.appended.fetch_add(n, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => {
                    *conn = None;
                    self.failed_calls.fetch_add(1, Ordering::Relaxed);
                    Err(SinkError::Failed(e))
                }
            }
        })
    }
    fn events_in(&self, body: &[u8], max: usize, log: &LogScope) -> Vec<EventRef> {
        let Ok(jsons) = decode_record(body) else {
            return Vec::new();
        };
        jsons
            .into_iter()
            .filter_map(|j| TelemetryEnvelope::from_json(j).ok())
            .take(max)
            .map(|env| {
                EventRef::recovered(
                    env.event_id,
                    &env.effective_correlation_id(),
                    &env.context.tenant_id,
                    env.case.as_str(),
                    env.created_at,
                    log,
                )
            })
            .collect()
    }
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

    /// [`spawn_counted`](Self::spawn_counted) with the buffer on a disk spool: `spool` builds
    /// the spool's settings around the appender it is given (see the module docs).
    pub(crate) fn spawn_spooled(
        client: redis::Client,
        settings: StreamSettings,
        buffer_capacity: usize,
        rt: &tokio::runtime::Handle,
        counters: Arc<Counters>,
        spool: impl FnOnce(Arc<dyn RecordSender>) -> SpoolSettings,
    ) -> Result<Self, SpoolError> {
        let stats = counters.exporters.register("redis_stream", "metric_log");
        let appended = Arc::new(AtomicU64::new(0));
        let failed_calls = Arc::new(AtomicU64::new(0));
        let appender = StreamAppender {
            client,
            settings,
            conn: tokio::sync::Mutex::new(None),
            appended: appended.clone(),
            failed_calls: failed_calls.clone(),
        };
        let control = SpoolControl::open(
            "redis stream",
            Holder::MetricLogPath,
            spool(Arc::new(appender)),
            counters.clone(),
            stats,
            rt,
        )?;
        let (tx, mut rx) = mpsc::channel::<TelemetryEnvelope>(buffer_capacity.max(1));
        let spool = control.clone();
        rt.spawn(async move {
            let mut batch: Vec<TelemetryEnvelope> = Vec::with_capacity(APPEND_BATCH);
            while rx.recv_many(&mut batch, APPEND_BATCH).await > 0 {
                let mut jsons = Vec::with_capacity(batch.len());
                let mut events = Vec::with_capacity(batch.len());
                for env in batch.drain(..) {
                    match env.to_json() {
                        Ok(j) => {
                            jsons.push(j);
                            events.push(EventRef::of(&env));
                        }
                        Err(e) => not_appended(&counters, &env, &e),
                    }
                }
                if events.is_empty() {
                    continue;
                }
                let owner = Box::new(LogRecords::events_only(events, counters.clone()));
                let _ = spool
                    .store(move || (encode_record(&jsons), ()), owner)
                    .await;
            }
        });
        Ok(RedisStreamProducer {
            tx,
            appended,
            failed_calls,
            spool: Some(control),
        })
    }

    /// The buffer's disk spool, with `[spool] kind = "disk"`.
    pub(crate) fn spool(&self) -> Option<&Arc<SpoolControl>> {
        self.spool.as_ref()
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
                let mut appended: Vec<&TelemetryEnvelope> = Vec::with_capacity(batch.len());
                let mut jsons = Vec::with_capacity(batch.len());
                for env in &batch {
                    match env.to_json() {
                        Ok(j) => {
                            appended.push(env);
                            jsons.push(j);
                        }
                        Err(e) => {
                            if let Some(c) = &counters {
                                not_appended(c, env, &e);
                            }
                        }
                    }
                }
                let pipe = xadd_pipeline(&settings, jsons.iter().map(String::as_str));
                // Hold the batch until Redis takes it; meanwhile the bounded buffer fills and
                // `try_send` answers `Full`.
                let mut wait = Duration::from_millis(20);
                loop {
                    if appended.is_empty() {
                        break;
                    }
                    if conn.is_none() {
                        conn = settings.open(&client).await.ok();
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
            spool: None,
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

/// Envelopes passed `emit()`'s validation; one that still cannot be encoded is not appended
/// (the workers would dead-letter it anyway): counted as invalid here.
fn not_appended(c: &Counters, env: &TelemetryEnvelope, e: &dyn std::fmt::Display) {
    let detail = format!("not appended to the stream: {e}");
    let outcome = Outcome::DroppedText {
        reason: ReasonCode::InvalidEnvelope,
        detail: &detail,
    };
    c.settle(&EventRef::of(env), Holder::MetricLogPath, outcome);
}

/// The producer's ledger column: appended events are delivered (ADR 0003).
fn settle_appended(c: &Counters, appended: &[&TelemetryEnvelope]) {
    let evs: Vec<EventRef> = appended.iter().map(|e| EventRef::of(e)).collect();
    let outcome = Outcome::delivered_to("redis stream");
    c.settle_all(&evs, Holder::MetricLogPath, outcome);
}

impl MetricTransport for RedisStreamProducer {
    fn try_send(&self, env: TelemetryEnvelope) -> Result<(), TransportError> {
        self.tx.try_send(env).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TransportError::Full,
            mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
        })
    }

    /// With a disk spool the buffer drains at the disk's pace whether Redis is there or not,
    /// so the gateway actor waits for room rather than dropping (without one it would wait for
    /// Redis: `None`, and a full buffer drops as `queue_full`).
    fn room_for(&self, _env: &TelemetryEnvelope) -> Option<BoxFuture<'static, ()>> {
        self.spool.as_ref().and_then(|_| super::room_in(&self.tx))
    }

    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

/// What a worker admits from the stream: the checks `emit()` makes and the routing table's
/// answer (a metric/log case it knows). `Err` says why, and the entry is dead-lettered.
#[derive(Clone)]
pub(crate) struct Admission(pub(crate) Arc<AdmitFn>);

/// The check of an [`Admission`].
pub(crate) type AdmitFn = dyn Fn(&TelemetryEnvelope) -> Result<(), String> + Send + Sync;

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admission")
    }
}

/// A handler's consumer in the group (see the module docs).
#[derive(Debug)]
pub struct RedisStreamSource {
    /// Set in a worker: entries that `emit()` would refuse, or that the producer never puts on
    /// the stream, are dead-lettered instead of handled.
    admit: Option<Admission>,
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
    /// The log hygiene of the worker this consumer reads for (a consumer outside any worker,
    /// as in tests, has a scope of its own).
    log: Arc<crate::logging::LogScope>,
    /// Whether the end of reading was reported to the worker's ledger.
    closed: bool,
}

impl RedisStreamSource {
    /// A consumer of `settings.group` named `settings.consumer`. `stop` ends `recv_batch` (it
    /// answers `None`) within `settings.block`.
    pub fn new(client: redis::Client, settings: StreamSettings, stop: Arc<AtomicBool>) -> Self {
        RedisStreamSource {
            admit: None,
            client,
            conn: None,
            settings,
            in_hand: HashMap::new(),
            stop,
            dead_lettered: Arc::new(AtomicU64::new(0)),
            claim_cursor: "0-0".into(),
            worker: None,
            log: Arc::default(),
            closed: false,
        }
    }

    /// Dead-letters every entry `admit` refuses (see [`Admission`]).
    pub(crate) fn with_admission(mut self, admit: Admission) -> Self {
        self.admit = Some(admit);
        self
    }

    /// Links this consumer to a worker's ledger (see `super::worker`).
    pub(crate) fn with_worker(mut self, link: WorkerLink) -> Self {
        link.ledger.source_opened();
        self.log = link.counters.log.clone();
        self.worker = Some(link);
        self
    }

    /// A worker counts every entry it reads: the intake of its ledger (ADR 0003).
    fn count_read(&self, env: Option<&TelemetryEnvelope>) {
        if let Some(w) = &self.worker {
            let c = &w.counters;
            c.emitted.add(1, Ordering::Relaxed);
            if let Some(env) = env {
                c.received(env.case.as_str());
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
        let mut c = self.settings.open(&self.client).await?;
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

    /// Says, at most once per warning interval, that Redis refused or confused this consumer,
    /// and counts it (`stream_errors`): a worker that Redis keeps failing is never silent.
    fn fault(&self, what: &'static str, error: &dyn std::fmt::Display) {
        if let Some(w) = &self.worker {
            Counters::add(&w.counters.stream_errors, 1);
        }
        let (stream, consumer) = (&self.settings.stream, &self.settings.consumer);
        self.log.warn_limited(what, || {
            tracing::warn!(
                stream = %self.log.sanitize(stream),
                consumer = %self.log.sanitize(consumer),
                error = %self.log.sanitize(&error.to_string()),
                "redis stream: {what}"
            );
        });
    }

    /// Moves `entry` to the dead-letter stream with `why` and all its bytes, then acknowledges
    /// it, in that order: the acknowledgement goes out only once the dead letter is stored. When
    /// the dead letter cannot be stored (the key holds another type, Redis is out of memory), the
    /// entry is neither acknowledged nor counted as read: it stays pending in the group, is read
    /// again after `claim_idle`, and the failure is counted (`stream_errors`) and logged. The
    /// batch's other entries are not affected either way.
    async fn dead_letter(
        &mut self,
        c: &mut MultiplexedConnection,
        entry: &RawEntry,
        deliveries: u64,
        why: &str,
    ) {
        let mut add = redis::cmd("XADD");
        add.arg(self.settings.dead_letter_stream())
            .arg("MAXLEN")
            .arg("~")
            .arg(self.settings.max_len)
            .arg("*")
            .arg(ENVELOPE_FIELD)
            .arg(entry.field(ENVELOPE_FIELD.as_bytes()).unwrap_or_default())
            .arg("entry_id")
            .arg(&entry.id)
            .arg("deliveries")
            .arg(deliveries)
            .arg("error")
            .arg(self.log.sanitize(why).as_ref());
        // Every other field, byte for byte, under `orig:<name>`: what an operator needs to see
        // what was written, or to replay it.
        for (name, value) in entry
            .fields
            .iter()
            .filter(|(n, _)| n.as_slice() != ENVELOPE_FIELD.as_bytes())
        {
            let mut key = b"orig:".to_vec();
            key.extend_from_slice(name);
            add.arg(key).arg(value.as_slice());
        }
        if let Err(e) = add.query_async::<redis::Value>(c).await {
            self.fault(
                "a dead letter could not be stored; the entry stays pending",
                &e,
            );
            return;
        }
        let acked: redis::RedisResult<u64> = redis::cmd("XACK")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(&entry.id)
            .query_async(c)
            .await;
        if let Err(e) = acked {
            // Stored but still pending: it is read again and dead-lettered again (a second
            // copy in the dead-letter stream, never a loss).
            self.fault("a dead-lettered entry could not be acknowledged", &e);
        }
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            stream = %self.log.sanitize(&self.settings.stream),
            entry_id = %self.log.sanitize(&entry.id),
            deliveries,
            why = %self.log.sanitize(why),
            "redis stream: entry dead-lettered"
        );
        if let Some(w) = &self.worker {
            let env = entry
                .envelope_text()
                .ok()
                .and_then(|raw| TelemetryEnvelope::from_json(raw).ok());
            self.count_read(env.as_ref());
            let c = &w.counters;
            match &env {
                Some(env) => {
                    let outcome = Outcome::DroppedText {
                        reason: ReasonCode::DeadLettered,
                        detail: why,
                    };
                    c.settle(&EventRef::of(env), Holder::Intake, outcome);
                }
                None => c.settle_unnamed(Holder::Intake, ReasonCode::DeadLettered),
            }
        }
    }

    /// Decodes `entry` into `out`, or dead-letters it when it is not an envelope this worker
    /// may handle: bytes that are not an envelope, an envelope `emit()` would refuse, or one the
    /// producer never puts on the stream (a trace case, a case the routing table does not
    /// know).
    async fn take_entry(
        &mut self,
        c: &mut MultiplexedConnection,
        entry: &RawEntry,
        deliveries: u64,
        out: &mut Vec<TelemetryEnvelope>,
    ) {
        let env = match entry.envelope_text() {
            Ok(raw) => TelemetryEnvelope::from_json(raw)
                .map_err(|e| format!("invalid envelope: {e}"))
                .and_then(|env| match &self.admit {
                    Some(admit) => (admit.0)(&env).map(|()| env),
                    None => Ok(env),
                }),
            Err(why) => Err(why),
        };
        let env = match env {
            Ok(env) => env,
            Err(why) => return self.dead_letter(c, entry, deliveries, &why).await,
        };
        match &self.worker {
            Some(w) => {
                self.count_read(Some(&env));
                w.counters.enter(Holder::MetricLogPath);
                Counters::add(&w.counters.routed_metric_log, 1);
                if deliveries > 1 {
                    Counters::add(&w.counters.redelivered, 1);
                }
                w.ledger.hold(env.event_id, entry.id.clone());
            }
            None => self
                .in_hand
                .entry(env.event_id)
                .or_default()
                .push(entry.id.clone()),
        }
        out.push(env);
    }

    /// Handles the entries of one reply, each on its own: a foreign entry is dead-lettered,
    /// an unreadable one reported, and neither stops the others.
    async fn take_all(
        &mut self,
        c: &mut MultiplexedConnection,
        decoded: Vec<Decoded>,
        deliveries: impl Fn(&str) -> u64,
        out: &mut Vec<TelemetryEnvelope>,
    ) {
        let max = self.settings.max_deliveries;
        for d in decoded {
            match d {
                Decoded::Entry(entry) => {
                    let n = deliveries(&entry.id);
                    if n > max {
                        let why = format!(
                            "delivered {n} times without being settled (its case handler failed)"
                        );
                        self.dead_letter(c, &entry, n, &why).await;
                    } else {
                        self.take_entry(c, &entry, n, out).await;
                    }
                }
                Decoded::Unreadable(why) => {
                    self.fault("a reply held something that is not an entry", &why);
                }
            }
        }
    }

    async fn try_batch(&mut self, max: usize) -> redis::RedisResult<Vec<TelemetryEnvelope>> {
        let mut c = self.connect().await?;
        let s = self.settings.clone();
        let mut out = Vec::new();
        // Entries another consumer left pending too long: reclaimed first. The reply is read as
        // raw values and decoded entry by entry (see `stream_entry`).
        // EVAL sends the script each time (about 600 bytes): no script cache to lose on a
        // Redis restart, and no extra crate feature.
        let reply: redis::Value = redis::cmd("EVAL")
            .arg(BOUNDED_AUTOCLAIM)
            .arg(1)
            .arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(s.claim_idle.as_millis() as u64)
            .arg(&self.claim_cursor)
            .arg(max)
            .arg(s.max_read_bytes)
            .query_async(&mut c)
            .await?;
        let (cursor, claimed, _deleted) = autoclaim_reply(&reply);
        self.claim_cursor = cursor.unwrap_or_else(|| "0-0".into());
        if !claimed.is_empty() {
            let pending: StreamPendingCountReply = redis::cmd("XPENDING")
                .arg(&s.stream)
                .arg(&s.group)
                .arg("-")
                .arg("+")
                .arg(max.max(claimed.len()) * 4)
                .arg(&s.consumer)
                .query_async(&mut c)
                .await?;
            let times: HashMap<String, u64> = pending
                .ids
                .iter()
                .map(|p| (p.id.clone(), p.times_delivered as u64))
                .collect();
            self.take_all(
                &mut c,
                claimed,
                |id| times.get(id).copied().unwrap_or(1),
                &mut out,
            )
            .await;
        }
        if !out.is_empty() {
            return Ok(out);
        }
        // New entries, as many as fit in max_read_bytes (the script stops after the entry
        // that crosses it); when there are none, one blocking read of a single entry waits for
        // the next.
        let bounded: redis::Value = redis::cmd("EVAL")
            .arg(BOUNDED_READ)
            .arg(1)
            .arg(&s.stream)
            .arg(&s.group)
            .arg(&s.consumer)
            .arg(max)
            .arg(s.max_read_bytes)
            .query_async(&mut c)
            .await?;
        let mut decoded = bounded_reply(&bounded);
        if decoded.is_empty() {
            let reply: redis::Value = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&s.group)
                .arg(&s.consumer)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(s.block.as_millis() as u64)
                .arg("STREAMS")
                .arg(&s.stream)
                .arg(">")
                .query_async(&mut c)
                .await?;
            decoded = read_reply(&reply);
        }
        self.take_all(&mut c, decoded, |_| 1, &mut out).await;
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
                    Err(e) => {
                        // Reconnect on the next try, after a backoff; said (rate-limited).
                        self.fault("a read failed; reconnecting", &e);
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
