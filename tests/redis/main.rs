//! Everything that talks to a real redis-server: one test binary for the files of this folder, so the crate is linked once for
//! all of them instead of once per file (each file was its own binary; see CHANGELOG). Each file
//! keeps its own module doc and tests; they share `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod dedup_properties;
mod dedup_redis;
mod every_reason;
mod redis_streams;
mod reliability_redis;
