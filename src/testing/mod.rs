//! Test helpers shared by the tests and examples (feature `testing`; never needed in production).
//!
//! - [`OtlpReceiver`]: a real OTLP gRPC receiver (the `opentelemetry-proto` crate's tonic
//!   services) on a loopback port, recording what arrives.
//! - [`RedisServer`]: starts a real `redis-server` on a free loopback port and stops it on drop.

mod otlp_http;
mod otlp_receiver;
#[cfg(feature = "redis")]
mod redis_server;

pub use otlp_receiver::{OtlpReceiver, Received, Signal};
#[cfg(feature = "redis")]
pub use redis_server::RedisServer;
