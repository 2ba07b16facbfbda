//! `GatewayBuilder`: a configuration plus what only code can give (case handlers, a payload
//! store, a metric transport, trace sinks), then `start()`.

use super::*;

/// Builds a gateway with host-supplied parts; [`start`] is the shortcut for config alone.
#[derive(Debug)]
pub struct GatewayBuilder {
    pub(super) config: GatewayConfig,
    /// Fixed at start (no key comes from input), looked up per metric/log event.
    pub(super) case_handlers: crate::FastMap<String, Arc<dyn CaseHandler>>,
    pub(super) payload_store: Option<PayloadStore>,
    pub(super) sinks: Vec<(String, Option<String>, Arc<dyn TraceSink>)>,
    pub(super) transport: Option<TransportParts>,
}

/// A metric transport and the sources its handlers read from.
pub(super) type TransportParts = (Arc<dyn MetricTransport>, Vec<Box<dyn EnvelopeSource>>);

/// [`TransportParts`] before the export runtime exists: no transport yet means the Redis
/// stream producer, which runs on that runtime.
pub(super) type MaybeTransport = (
    Option<Arc<dyn MetricTransport>>,
    Vec<Box<dyn EnvelopeSource>>,
);

impl GatewayBuilder {
    /// A builder over `config`.
    pub fn new(config: GatewayConfig) -> Self {
        GatewayBuilder {
            config,
            case_handlers: crate::FastMap::default(),
            payload_store: None,
            sinks: Vec::new(),
            transport: None,
        }
    }

    /// Replaces the in-process queue between the gateway and the handler pool: one handler is
    /// started per source (`metric_pool.pool_size` is then ignored). With the memory dedup
    /// backend the transport must deliver a given `(tenant_id, event_id)` to the same source
    /// every time, as the built-in one does; otherwise use the Redis backend.
    pub fn metric_transport(
        mut self,
        transport: Arc<dyn MetricTransport>,
        sources: Vec<Box<dyn EnvelopeSource>>,
    ) -> Self {
        self.transport = Some((transport, sources));
        self
    }

    /// Runs `handler` for every metric/log event of `case` (built-in or configured).
    pub fn case_handler(mut self, case: &str, handler: Arc<dyn CaseHandler>) -> Self {
        self.case_handlers.insert(case.to_owned(), handler);
        self
    }

    /// Uses this payload store instead of the one `[payloads]` describes.
    pub fn payload_store(mut self, store: PayloadStore) -> Self {
        self.payload_store = Some(store);
        self
    }

    /// Adds a community trace sink for `tenant_id` (and only `app_id`, when given).
    pub fn trace_sink(
        mut self,
        tenant_id: &str,
        app_id: Option<&str>,
        sink: Arc<dyn TraceSink>,
    ) -> Self {
        self.sinks
            .push((tenant_id.to_owned(), app_id.map(str::to_owned), sink));
        self
    }

    /// Starts the gateway. With `transport.kind = "redis_streams"` its metric/log events go to
    /// the stream (this process starts no metric handlers): run workers to handle them.
    pub fn start(self) -> Result<GatewayHandle, StartError> {
        self.start_inner(false).map(|(gw, _)| gw)
    }
}
