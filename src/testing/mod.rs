//! Test helpers shared by the tests and examples (feature `testing`; never needed in production).
//!
//! - [`OtlpReceiver`]: a real OTLP gRPC receiver (the `opentelemetry-proto` crate's tonic
//!   services) on a loopback port, recording what arrives.
//! - [`RedisServer`]: starts a real `redis-server` on a free loopback port and stops it on drop.
//! - [`load_event`]: the events of the load generator and the allocation bench.

mod load;
mod otlp_http;
mod otlp_receiver;
#[cfg(feature = "redis")]
mod redis_server;

pub use load::{load_event, LoadMix};
pub use otlp_receiver::{OtlpReceiver, Received, Signal};

/// Parts of the gateway's inside that property tests and benchmarks drive directly: the dedup
/// and rehydrator actors with their messages, and the routing table. Not part of the API.
#[doc(hidden)]
pub mod internals {
    pub use crate::actors::dedup::{CheckBatch, DedupActor, DedupKey, MemoryDedup, Verdict};
    pub use crate::actors::rehydrator::{RehydrateBatch, RehydrateItem, RehydratorActor};
    pub use crate::export::wire::{
        encode_logs, encode_spans, WireBuildError, WireSender, WireSignal,
    };
    pub use crate::routing::RoutingTable;
    pub use crate::spool::{Appended, DiskSpool, Record, Recovery, SpoolError};
    pub use crate::spool::{SpoolOptions, SpoolStatus, SyncPolicy, WhenFull};
}
#[cfg(feature = "redis")]
pub use redis_server::RedisServer;
