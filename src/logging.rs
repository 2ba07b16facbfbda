//! The gateway's own log lines: sanitized, rate-limited, and optionally set up for the host.
//!
//! The gateway logs through [`tracing`] and never installs a subscriber by itself. This module
//! gives those log lines three guarantees and one convenience:
//!
//! - **Sanitized.** An untrusted value (an exporter's or store's error message, a tenant id, a
//!   payload ref) goes through [`sanitize`] before it reaches a log line, so it cannot forge a
//!   line with CR or LF, and cannot make one line huge.
//! - **Rate-limited.** A warning that can repeat on a hot path (a collector that is down fails
//!   every batch) goes through [`warn_limited`]: the first occurrence is logged, the next ones
//!   are only counted, and one summary line per `logging.warn_summary_interval_secs` reports the
//!   count. A flood costs one line plus a summary per interval, not one line per batch.
//! - **Correlated.** Every line about one event carries `event_id` and `correlation_id` fields
//!   (a convention of the call sites, stated here so it is kept).
//! - **[`init`]**, for hosts that have no subscriber of their own: a global text or JSON
//!   subscriber honouring `RUST_LOG`.
//!
//! This module must never panic, never block on anything but a short mutex, and never emit a
//! line while holding that mutex (a subscriber may itself log).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, DEFAULT_WARN_SUMMARY_INTERVAL_SECS};

/// The most bytes of an untrusted value [`sanitize`] keeps; longer values are cut at a char
/// boundary at or below this and get [`TRUNCATION_MARKER`] appended.
pub const MAX_LOG_VALUE_BYTES: usize = 256;

/// Appended to a value [`sanitize`] truncated.
pub const TRUNCATION_MARKER: &str = "…";

/// The most distinct keys one [`WarnLimiter`] tracks. Keys are `&'static str` literals at the
/// call sites, so their number is bounded by the code (a dozen today); this cap only guards
/// against a future misuse. A key beyond it is logged every time, never silenced.
pub const MAX_WARN_KEYS: usize = 64;

/// Makes an untrusted value safe for one log line.
///
/// - CR, LF and every other control character except tab (C0, DEL and C1, such as U+0085 NEL),
///   and the Unicode line and paragraph separators U+2028 and U+2029, are replaced by a space,
///   so the value cannot end the line or forge another one.
/// - A value longer than [`MAX_LOG_VALUE_BYTES`] is cut at the last char boundary within that
///   many bytes, and [`TRUNCATION_MARKER`] is appended.
///
/// A clean, short value is returned borrowed: the common case does not allocate. Inside a
/// gateway, [`LogScope::sanitize`] also replaces that gateway's credentials and redacted
/// secrets.
///
/// ```
/// use telemetry_gateway::logging::sanitize;
/// assert_eq!(sanitize("connection refused"), "connection refused");
/// assert_eq!(sanitize("bad\r\nINFO forged line"), "bad  INFO forged line");
/// ```
pub fn sanitize(value: &str) -> Cow<'_, str> {
    make_line_safe(value)
}

/// What a known credential is replaced with.
const SECRET_REPLACEMENT: &str = "[REDACTED]";
/// The most credentials kept; past it the oldest are forgotten (the redactor's patterns still
/// catch bearer tokens and API keys).
const MAX_SECRETS: usize = 4096;
/// Credentials shorter than this are not treated as literals (they would redact common words).
const MIN_SECRET_LEN: usize = 6;

/// One gateway's log hygiene: its redactor (`[redaction]`), the credentials it was given (sink
/// headers, endpoint passwords) and its warning limiter (`logging.warn_summary_interval_secs`).
///
/// Each gateway has its own, so two gateways in one process with different redaction settings
/// each apply their own, and one's credentials or warning windows never reach the other. Every
/// component of a gateway reaches it through the gateway's counters
/// (`diagnostics::Counters::log`); code outside any gateway uses the free functions
/// ([`sanitize`]: line safety only, [`warn_limited`]: a process-wide limiter).
#[derive(Debug)]
pub struct LogScope {
    redactor: std::sync::OnceLock<crate::redaction::Redactor>,
    secrets: parking_lot::RwLock<Vec<Arc<str>>>,
    has_secrets: std::sync::atomic::AtomicBool,
    limiter: WarnLimiter,
}

impl Default for LogScope {
    fn default() -> Self {
        LogScope::new(Duration::from_secs(DEFAULT_WARN_SUMMARY_INTERVAL_SECS))
    }
}

impl LogScope {
    /// A scope with no redactor and no credentials, whose warning windows last `warn_interval`.
    pub fn new(warn_interval: Duration) -> Self {
        LogScope {
            redactor: std::sync::OnceLock::new(),
            secrets: parking_lot::RwLock::new(Vec::new()),
            has_secrets: std::sync::atomic::AtomicBool::new(false),
            limiter: WarnLimiter::new(warn_interval),
        }
    }

    /// Installs the redactor this scope's [`LogScope::sanitize`] applies (once, at start; a
    /// second call changes nothing).
    pub fn set_redactor(&self, redactor: crate::redaction::Redactor) {
        let _ = self.redactor.set(redactor);
    }

    /// Changes the window of this scope's warning limiter.
    pub fn set_warn_summary_interval(&self, interval: Duration) {
        self.limiter.set_interval(interval);
    }

    /// Makes an untrusted value safe for one log line (or a journey step, or an error the
    /// gateway reports): this gateway's known credentials are replaced, then its redactor's
    /// secrets (bearer tokens, API keys, e-mail addresses...), then the rules of [`sanitize`].
    /// Allocates only when something was found.
    pub fn sanitize<'a>(&self, value: &'a str) -> Cow<'a, str> {
        if self.has_secrets.load(std::sync::atomic::Ordering::Acquire) {
            let secrets = self.secrets.read();
            if secrets.iter().any(|s| value.contains(s.as_ref())) {
                let mut out = value.to_owned();
                for s in secrets.iter() {
                    out = out.replace(s.as_ref(), SECRET_REPLACEMENT);
                }
                drop(secrets);
                return Cow::Owned(self.sanitize(&out).into_owned());
            }
        }
        if let Some(r) = self.redactor.get() {
            if let Cow::Owned(redacted) = r.redact_str("", value) {
                return Cow::Owned(make_line_safe(&redacted).into_owned());
            }
        }
        make_line_safe(value)
    }

    /// Makes [`LogScope::sanitize`] replace `secret` wherever it appears: the gateway calls it
    /// for every credential it is given (a sink's header values, the password of an endpoint
    /// URL).
    pub(crate) fn add_secret(&self, secret: &str) {
        if secret.len() < MIN_SECRET_LEN {
            return;
        }
        let mut all = self.secrets.write();
        if all.iter().any(|s| s.as_ref() == secret) {
            return;
        }
        if all.len() >= MAX_SECRETS {
            all.remove(0);
        }
        all.push(Arc::from(secret));
        self.has_secrets
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Forgets a credential (its sink was removed). Another sink may still use the same value,
    /// so callers only forget what no live registration holds.
    pub(crate) fn forget_secret(&self, secret: &str) {
        let mut all = self.secrets.write();
        all.retain(|s| s.as_ref() != secret);
        self.has_secrets
            .store(!all.is_empty(), std::sync::atomic::Ordering::Release);
    }

    /// Records one occurrence of a repeatable warning on this gateway's limiter; `emit` runs
    /// (and should log the warning) only when this occurrence is to be logged.
    pub fn warn_limited(&self, key: &'static str, emit: impl FnOnce()) -> bool {
        self.limiter.warn(key, emit)
    }

    /// The window of this scope's warning limiter.
    pub fn warn_summary_interval(&self) -> Duration {
        self.limiter.interval()
    }

    /// Logs this gateway's pending warning summaries (at its shutdown).
    pub fn flush_summaries(&self) -> usize {
        self.limiter.flush_summaries()
    }
}

fn make_line_safe(value: &str) -> Cow<'_, str> {
    let too_long = value.len() > MAX_LOG_VALUE_BYTES;
    if !too_long && !value.chars().any(is_unsafe) {
        return Cow::Borrowed(value);
    }
    let kept = if too_long {
        let mut end = MAX_LOG_VALUE_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        &value[..end]
    } else {
        value
    };
    let mut out = String::with_capacity(kept.len() + TRUNCATION_MARKER.len());
    out.extend(kept.chars().map(|c| if is_unsafe(c) { ' ' } else { c }));
    if too_long {
        out.push_str(TRUNCATION_MARKER);
    }
    Cow::Owned(out)
}

fn is_unsafe(c: char) -> bool {
    (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}'
}

/// Rate limiter for warnings that can repeat: warn once, then count, then summarise.
///
/// For each key (a `&'static str`, by convention the warning's message):
///
/// 1. the first occurrence is logged at once (the caller's `emit` runs);
/// 2. further occurrences within the summary interval are only counted;
/// 3. the first occurrence after the interval logs one WARN summary,
///    `"<key>: N more occurrences in the last <S>s"` with fields `warn_key`, `count` and
///    `window_secs` (S is the time since the window's first occurrence, rounded up), and is
///    itself logged as the first occurrence of a new window;
/// 4. [`WarnLimiter::flush_summaries`] (called at shutdown) logs the summaries still pending and
///    forgets every window, so the next occurrence of any key is logged at once.
///
/// No summary is logged for a window with nothing counted. Time is `tokio::time::Instant`, so
/// tests can drive it with `tokio::time::pause()` and `advance()`. Memory is bounded by
/// [`MAX_WARN_KEYS`].
#[derive(Debug)]
pub struct WarnLimiter {
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    /// How long a window lasts: occurrences within it after the first are only counted.
    interval: Duration,
    /// The open window of each key that occurred since the last flush.
    windows: HashMap<&'static str, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    /// When the occurrence that was logged happened.
    started: Instant,
    /// Occurrences since then that were only counted.
    suppressed: u64,
}

/// A summary to log once the limiter's mutex is released.
struct Summary {
    key: &'static str,
    count: u64,
    window: Duration,
}

impl Summary {
    fn emit(&self) {
        let window_secs = ceil_secs(self.window);
        tracing::warn!(
            warn_key = self.key,
            count = self.count,
            window_secs,
            "{}: {} more occurrences in the last {}s",
            self.key,
            self.count,
            window_secs
        );
    }
}

fn ceil_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

impl WarnLimiter {
    /// A limiter whose windows last `interval` (`logging.warn_summary_interval_secs`).
    pub fn new(interval: Duration) -> Self {
        WarnLimiter {
            state: Mutex::new(LimiterState {
                interval,
                windows: HashMap::new(),
            }),
        }
    }

    /// Changes the window length; open windows are judged by the new length from now on.
    pub fn set_interval(&self, interval: Duration) {
        self.state.lock().interval = interval;
    }

    /// The window length.
    pub fn interval(&self) -> Duration {
        self.state.lock().interval
    }

    /// Records one occurrence of `key`; runs `emit` (which should log the warning) only when
    /// this occurrence is to be logged. Returns whether it was.
    pub fn warn(&self, key: &'static str, emit: impl FnOnce()) -> bool {
        let now = Instant::now();
        let summary = {
            let mut state = self.state.lock();
            let interval = state.interval;
            let full = state.windows.len() >= MAX_WARN_KEYS;
            match state.windows.get_mut(key) {
                Some(w) if now.saturating_duration_since(w.started) < interval => {
                    w.suppressed += 1;
                    return false;
                }
                Some(w) => {
                    let ended = *w;
                    *w = Window {
                        started: now,
                        suppressed: 0,
                    };
                    (ended.suppressed > 0).then(|| Summary {
                        key,
                        count: ended.suppressed,
                        window: now.saturating_duration_since(ended.started),
                    })
                }
                None => {
                    if !full {
                        state.windows.insert(
                            key,
                            Window {
                                started: now,
                                suppressed: 0,
                            },
                        );
                    }
                    None
                }
            }
        };
        if let Some(s) = summary {
            s.emit();
        }
        emit();
        true
    }

    /// Logs the summary of every window that counted occurrences, then forgets all windows (the
    /// next occurrence of any key is logged at once). Returns the number of summaries logged.
    pub fn flush_summaries(&self) -> usize {
        let now = Instant::now();
        let mut summaries: Vec<Summary> = {
            let mut state = self.state.lock();
            state
                .windows
                .drain()
                .filter(|(_, w)| w.suppressed > 0)
                .map(|(key, w)| Summary {
                    key,
                    count: w.suppressed,
                    window: now.saturating_duration_since(w.started),
                })
                .collect()
        };
        summaries.sort_by_key(|s| s.key);
        for s in &summaries {
            s.emit();
        }
        summaries.len()
    }
}

/// The limiter of code outside any gateway (a host's own helpers). A gateway's components use
/// their gateway's [`LogScope`] instead, so gateways never share warning windows.
static WARN_LIMITER: LazyLock<WarnLimiter> =
    LazyLock::new(|| WarnLimiter::new(Duration::from_secs(DEFAULT_WARN_SUMMARY_INTERVAL_SECS)));

/// Records one occurrence of a repeatable warning on the process-wide [`WarnLimiter`] of code
/// outside any gateway (windows of [`DEFAULT_WARN_SUMMARY_INTERVAL_SECS`]); `emit` runs (and
/// should log the warning) only when this occurrence is to be logged.
///
/// By convention `key` is the warning's message, so the summary names it:
///
/// ```
/// telemetry_gateway::logging::warn_limited("log export failed", || {
///     tracing::warn!(records = 3, "log export failed")
/// });
/// ```
pub fn warn_limited(key: &'static str, emit: impl FnOnce()) -> bool {
    WARN_LIMITER.warn(key, emit)
}

/// Logs the pending summaries of the process-wide limiter of [`warn_limited`] and restarts its
/// windows (see [`WarnLimiter::flush_summaries`]). A gateway flushes its own at shutdown.
pub fn flush_summaries() -> usize {
    WARN_LIMITER.flush_summaries()
}

/// Why [`init`] installed nothing.
#[derive(Debug, thiserror::Error)]
pub enum LoggingInitError {
    /// The process already has a global `tracing` subscriber (the host's, or an earlier
    /// `init`); it is left as it is.
    #[error("a global tracing subscriber is already set; logging::init installed nothing")]
    AlreadySet,
}

/// Installs a global `tracing` subscriber writing the gateway's (and the host's) log lines to
/// stderr, for hosts that have none. See [`init_with_writer`].
pub fn init(format: LogFormat) -> Result<(), LoggingInitError> {
    init_with_writer(format, io::stderr)
}

/// Installs a global `tracing` subscriber writing to `writer`:
///
/// - `LogFormat::Text`: one human-readable line per event, without ANSI colours;
/// - `LogFormat::Json`: one JSON object per line, with the event's fields at the top level next
///   to `timestamp`, `level`, `target` and `message`.
///
/// The level filter is `RUST_LOG` (`tracing_subscriber::EnvFilter` syntax, invalid directives
/// ignored), `info` when unset. Returns [`LoggingInitError::AlreadySet`], and changes nothing, if
/// the process already has a global subscriber.
pub fn init_with_writer<W>(format: LogFormat, writer: W) -> Result<(), LoggingInitError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    tracing::subscriber::set_global_default(subscriber(format, writer, filter))
        .map_err(|_| LoggingInitError::AlreadySet)
}

/// The subscriber [`init_with_writer`] installs; tests use it scoped instead of global.
fn subscriber<W>(
    format: LogFormat,
    writer: W,
    filter: EnvFilter,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn clean_values_are_borrowed() {
        for v in ["", "connection refused", "tab\tis kept", "ünïcödé ✓"] {
            assert!(matches!(sanitize(v), Cow::Borrowed(b) if b == v), "{v:?}");
        }
        let exactly_max = "a".repeat(MAX_LOG_VALUE_BYTES);
        assert!(matches!(sanitize(&exactly_max), Cow::Borrowed(_)));
    }

    #[test]
    fn line_breaks_and_control_characters_become_spaces() {
        assert_eq!(
            sanitize("error\r\nINFO forged: ok"),
            "error  INFO forged: ok"
        );
        assert_eq!(sanitize("a\rb\nc"), "a b c");
        assert_eq!(sanitize("nul\0 esc\x1b[31m del\x7f"), "nul  esc [31m del ");
        assert_eq!(sanitize("nel\u{85}ls\u{2028}ps\u{2029}"), "nel ls ps ");
        assert_eq!(sanitize("keeps\ttabs"), "keeps\ttabs");
        let out = sanitize("x\n");
        assert!(matches!(out, Cow::Owned(_)));
    }

    #[test]
    fn long_values_are_truncated_at_a_char_boundary() {
        let long = "y".repeat(10_000);
        let out = sanitize(&long);
        assert_eq!(out.len(), MAX_LOG_VALUE_BYTES + TRUNCATION_MARKER.len());
        assert!(out.ends_with(TRUNCATION_MARKER));
        // 'é' is two bytes: byte MAX_LOG_VALUE_BYTES falls inside one when there is an odd
        // prefix, and the cut must step back to the boundary.
        let multi = format!("a{}", "é".repeat(1_000));
        let out = sanitize(&multi);
        let kept = out.strip_suffix(TRUNCATION_MARKER).unwrap();
        assert_eq!(kept.len(), MAX_LOG_VALUE_BYTES - 1);
        assert!(kept.chars().skip(1).all(|c| c == 'é'));
        // Both at once: the cut value is also cleaned.
        let both = format!("{}\n", "z".repeat(MAX_LOG_VALUE_BYTES + 10)).replace("zz", "z\n");
        let out = sanitize(&both);
        assert!(!out.contains('\n'));
        assert!(out.ends_with(TRUNCATION_MARKER));
    }

    /// A writer into a shared buffer, for a scoped test subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<serde_json::Value> {
            String::from_utf8(self.0.lock().clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect()
        }
    }

    /// A JSON subscriber into `Captured`, installed for the current thread only.
    fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
        let buf = Captured::default();
        let w = buf.clone();
        let sub = subscriber(LogFormat::Json, move || w.clone(), EnvFilter::new("trace"));
        (buf, tracing::subscriber::set_default(sub))
    }

    fn messages(lines: &[serde_json::Value]) -> Vec<String> {
        lines
            .iter()
            .map(|l| l["message"].as_str().unwrap().to_owned())
            .collect()
    }

    const KEY: &str = "sink exploded";

    fn occur(limiter: &WarnLimiter, n: usize) {
        for i in 0..n {
            limiter.warn(KEY, || tracing::warn!(attempt = i, "sink exploded"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn first_logs_then_counts_then_summarises_after_the_interval() {
        let (buf, _guard) = capture();
        let limiter = WarnLimiter::new(Duration::from_secs(60));
        occur(&limiter, 1);
        assert_eq!(messages(&buf.lines()), ["sink exploded"]);
        assert_eq!(buf.lines()[0]["attempt"], 0);
        assert_eq!(buf.lines()[0]["level"], "WARN");

        tokio::time::advance(Duration::from_secs(30)).await;
        occur(&limiter, 41);
        tokio::time::advance(Duration::from_secs(29)).await;
        occur(&limiter, 1);
        assert_eq!(
            buf.lines().len(),
            1,
            "counted, not logged, within the interval"
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        occur(&limiter, 1);
        let lines = buf.lines();
        assert_eq!(
            messages(&lines),
            [
                "sink exploded",
                "sink exploded: 42 more occurrences in the last 60s",
                "sink exploded",
            ]
        );
        assert_eq!(lines[1]["level"], "WARN");
        assert_eq!(lines[1]["count"], 42);
        assert_eq!(lines[1]["warn_key"], KEY);
        assert_eq!(lines[1]["window_secs"], 60);

        // The cycle restarted: counted again until the next interval.
        occur(&limiter, 5);
        assert_eq!(buf.lines().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_window_ends_without_a_summary() {
        let (buf, _guard) = capture();
        let limiter = WarnLimiter::new(Duration::from_secs(10));
        occur(&limiter, 1);
        tokio::time::advance(Duration::from_secs(11)).await;
        occur(&limiter, 1);
        assert_eq!(messages(&buf.lines()), ["sink exploded", "sink exploded"]);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_limited_independently() {
        let (buf, _guard) = capture();
        let limiter = WarnLimiter::new(Duration::from_secs(60));
        for _ in 0..3 {
            limiter.warn("a", || tracing::warn!("a"));
            limiter.warn("b", || tracing::warn!("b"));
        }
        assert_eq!(messages(&buf.lines()), ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_reports_pending_counts_and_restarts_the_cycle() {
        let (buf, _guard) = capture();
        let limiter = WarnLimiter::new(Duration::from_secs(60));
        occur(&limiter, 8);
        limiter.warn("quiet", || tracing::warn!("quiet"));
        tokio::time::advance(Duration::from_millis(12_500)).await;
        assert_eq!(
            limiter.flush_summaries(),
            1,
            "no summary for a key with nothing counted"
        );
        let lines = buf.lines();
        assert_eq!(
            messages(&lines),
            [
                "sink exploded",
                "quiet",
                "sink exploded: 7 more occurrences in the last 13s",
            ]
        );
        assert_eq!(lines[2]["count"], 7);
        // After a flush the next occurrence is logged at once, and a second flush has nothing.
        occur(&limiter, 1);
        assert_eq!(buf.lines().len(), 4);
        assert_eq!(limiter.flush_summaries(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_beyond_the_cap_are_never_silenced() {
        let (buf, _guard) = capture();
        let limiter = WarnLimiter::new(Duration::from_secs(60));
        let keys: Vec<&'static str> = (0..MAX_WARN_KEYS)
            .map(|i| &*Box::leak(format!("k{i}").into_boxed_str()))
            .collect();
        for &k in &keys {
            limiter.warn(k, || {});
        }
        let mut logged = 0;
        for _ in 0..3 {
            limiter.warn("one too many", || logged += 1);
        }
        assert_eq!(logged, 3);
        assert_eq!(limiter.state.lock().windows.len(), MAX_WARN_KEYS);
        assert!(buf.lines().is_empty());
    }

    #[test]
    fn the_limiter_is_send_and_sync_and_the_default_interval_is_the_constant() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<WarnLimiter>();
        assert_eq!(
            WARN_LIMITER.interval(),
            Duration::from_secs(DEFAULT_WARN_SUMMARY_INTERVAL_SECS)
        );
    }

    #[test]
    fn text_format_writes_one_line_per_event() {
        let buf = Captured::default();
        let w = buf.clone();
        let sub = subscriber(LogFormat::Text, move || w.clone(), EnvFilter::new("info"));
        tracing::subscriber::with_default(sub, || {
            tracing::warn!(event_id = "e1", error = %sanitize("a\r\nb"), "log export failed");
            tracing::debug!("filtered out");
        });
        let text = String::from_utf8(buf.0.lock().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("WARN"), "{text}");
        assert!(text.contains("log export failed"), "{text}");
        assert!(
            text.contains("event_id=\"e1\"") || text.contains("event_id=e1"),
            "{text}"
        );
        assert!(text.contains("error=a  b"), "{text}");
        assert!(!text.contains("\x1b["), "no ANSI colours: {text}");
    }
}
