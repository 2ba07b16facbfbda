//! The behaviour of the gateway as a host sees it: one test binary for the files of this folder, so the crate is linked once for
//! all of them instead of once per file (each file was its own binary; see CHANGELOG). Each file
//! keeps its own module doc and tests; they share `tests/support`.

#[path = "../support/mod.rs"]
mod support;

mod batching_and_shutdown;
mod cardinality;
mod case_policy;
mod diagnose_in_60_seconds;
mod diagnostics_http;
mod fuzz_properties;
mod host_apps;
mod independent_receiver;
mod layering;
mod otlp_export;
mod payloads;
mod quickstart;
mod redaction;
mod routing_runtime;
mod sinks_and_sampling;
mod spool_crash;
mod spool_disk_fault;
mod spool_host_crash;
mod spool_model;
mod supervision;
mod tracing_bridge;
mod transport_seam;
mod wire;
