//! The ceiling of every numeric key: no configured number is so large that arithmetic on it
//! could overflow or an allocation sized by it could abort.

/// The longest configurable duration in milliseconds: 7 days.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3_600 * 1_000;

/// The longest configurable duration in seconds: 10 years (dedup windows, retention).
pub const MAX_DURATION_SECS: u64 = 10 * 365 * 24 * 3_600;

/// The largest configurable size in bytes: 1 TiB.
pub const MAX_BYTES: u64 = 1 << 40;

/// The most threads, tasks or calls in flight a key may ask for.
pub const MAX_PARALLELISM: u64 = 1_024;

/// The most items one batch may hold (batches are allocated whole).
pub const MAX_BATCH_ITEMS: u64 = 1_000_000;

/// The most items a queue, cache or recorder may hold.
pub const MAX_ITEMS: u64 = 10_000_000;

/// The most tries a key may ask for.
pub const MAX_TRIES: u64 = 1_000;

/// The most rows or entries kept outside this process (Redis stream length, SQLite rows).
pub const MAX_STORED_ITEMS: u64 = 1_000_000_000_000;

/// The ceiling of a numeric key, by what its name says it is, and the reason for the message.
pub fn ceiling_of(key: &str) -> (u64, &'static str) {
    let field = key.rsplit('.').next().unwrap_or(key);
    if field.ends_with("_ms") {
        (MAX_DURATION_MS, "milliseconds; 7 days")
    } else if field.ends_with("_secs") {
        (MAX_DURATION_SECS, "seconds; 10 years")
    } else if field.ends_with("_bytes") {
        (MAX_BYTES, "bytes; 1 TiB")
    } else if matches!(
        field,
        "pool_size" | "shards" | "sink_concurrency" | "log_concurrency" | "max_offloads_in_flight"
    ) || field == "max_live_sinks"
    {
        (MAX_PARALLELISM, "threads, tasks or calls at once")
    } else if matches!(field, "max_retries" | "max_deliveries") {
        (MAX_TRIES, "tries")
    } else if matches!(field, "max_len" | "retention_max_rows") {
        (MAX_STORED_ITEMS, "entries stored outside the process")
    } else if field.contains("batch_size") || field == "recorder_steps_per_event" {
        (MAX_BATCH_ITEMS, "items per batch, allocated whole")
    } else {
        (MAX_ITEMS, "items held in memory")
    }
}
