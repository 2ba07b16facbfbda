//! `GatewayHandle`: what the host holds: `emit()`, the runtime switches, tenant sinks, and the
//! gateway's own state (`stats`, `diagnostics`, `explain`).

use super::*;

/// Keeps the gateway actor frozen while alive (see `freeze_intake_for_tests`).
#[cfg(feature = "testing")]
#[derive(Debug)]
pub struct IntakeFreeze {
    _release: std::sync::mpsc::Sender<()>,
}

/// The state behind every clone of the handle.
pub(super) struct Inner {
    pub(super) tx: mpsc::Sender<GatewayItem>,
    pub(super) shared: Arc<Shared>,
    pub(super) transport: Arc<dyn MetricTransport>,
    /// `emit()` calls in progress (striped: see `diagnostics::striped`).
    pub(super) active_emits: Striped,
    pub(super) lifecycle: Mutex<Option<Lifecycle>>,
    pub(super) default_deadline: Duration,
    pub(super) final_report: Mutex<Option<ShutdownReport>>,
    pub(super) probes: Arc<Probes>,
    pub(super) diag_addr: Option<std::net::SocketAddr>,
}

/// The host's handle: cheap to clone, `Send + Sync`, usable from any thread or runtime.
#[derive(Clone)]
pub struct GatewayHandle {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("closed", &self.inner.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

/// Decrements the active-emit gauge on every exit path of `emit()`.
pub(super) struct EmitGuard<'a>(&'a Striped);

impl Drop for EmitGuard<'_> {
    fn drop(&mut self) {
        self.0.add(-1, Ordering::SeqCst);
    }
}

impl GatewayHandle {
    /// Sends an event. Never waits and never panics: `Ok(event_id)` when the gateway took it,
    /// otherwise why not. Every refusal is counted as a drop with its reason code.
    pub fn emit(&self, env: TelemetryEnvelope) -> Result<Uuid, EmitError> {
        let inner = &*self.inner;
        let c = &inner.shared.counters;
        inner.active_emits.add(1, Ordering::SeqCst);
        let _guard = EmitGuard(&inner.active_emits);
        c.emitted.add(1, Ordering::Relaxed);
        // A refusal is always counted, and the caller gets the error at once. The recorder keeps
        // it too, unless refusals come in a flood (a full queue, emits during shutdown): then
        // recording each one would evict every useful journey and slow down the very caller
        // the gateway is shedding load from (see `FlightRecorder::admit_refusal`).
        let refuse = |env: &TelemetryEnvelope, e: EmitError| {
            let flood = matches!(e, EmitError::QueueFull | EmitError::ShutDown);
            let ev = EventRef::of_untrusted(env, &c.log);
            c.refuse(&ev, e.reason(), &e.to_string(), flood);
            Err(e)
        };
        if inner.shared.closed.load(Ordering::SeqCst) {
            return refuse(&env, EmitError::ShutDown);
        }
        if let Err(e) = env.validate_cheap() {
            return refuse(&env, EmitError::Invalid(e));
        }
        if inner.shared.table.route(&env.case).is_none() {
            let e = EmitError::Invalid(EnvelopeError::UnknownCase {
                case: env.case.as_str().to_owned(),
            });
            return refuse(&env, e);
        }
        let id = env.event_id;
        c.enter(Holder::Gateway);
        let item = GatewayItem {
            env,
            gateway_enabled: inner.shared.gateway_enabled.load(Ordering::SeqCst),
            enterprise_enabled: inner.shared.enterprise_enabled.load(Ordering::SeqCst),
        };
        match inner.tx.try_send(item) {
            Ok(()) => Ok(id),
            Err(e) => {
                c.leave(Holder::Gateway);
                match e {
                    mpsc::error::TrySendError::Full(item) => {
                        refuse(&item.env, EmitError::QueueFull)
                    }
                    mpsc::error::TrySendError::Closed(item) => {
                        refuse(&item.env, EmitError::ShutDown)
                    }
                }
            }
        }
    }

    /// This gateway's log hygiene: [`LogScope::sanitize`](crate::logging::LogScope::sanitize)
    /// makes a value safe to log the way the gateway's own lines are (its `[redaction]` rules
    /// and the credentials it was given), for a host logging an error the gateway returned.
    pub fn log_scope(&self) -> &crate::logging::LogScope {
        &self.inner.shared.counters.log
    }

    /// What happened to an event: the journey of `id` if it is an event id, and the journeys of
    /// every recorded event whose correlation id is `id`. Empty when the flight recorder holds
    /// nothing for it (never seen, or evicted: see `diagnostics.recorder_events`).
    pub fn explain(&self, id: &str) -> Explanation {
        self.inner.shared.counters.recorder().explain(id)
    }

    /// Everything the gateway knows about itself: the ledger, queue depths, exporters,
    /// latency histograms, the flight recorder's usage and readiness. The same numbers
    /// `/metrics` and the OTel self-metrics show.
    pub fn diagnostics(&self) -> DiagnosticsSnapshot {
        self.inner.probes.snapshot()
    }

    /// The address the diagnostics endpoint listens on (`diagnostics.listen`; useful with port 0).
    pub fn diagnostics_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.diag_addr
    }

    /// Test hook (feature `testing`): freezes the gateway actor (its consumer stops taking from
    /// the gateway queue) until the returned guard is dropped.
    #[cfg(feature = "testing")]
    pub fn freeze_intake_for_tests(&self) -> Option<IntakeFreeze> {
        let addr = self.inner.lifecycle.lock().as_ref()?.actors.gateway.clone();
        let (frozen_tx, frozen_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        addr.try_send(crate::actors::gateway::Freeze {
            frozen: frozen_tx,
            release: release_rx,
        })
        .ok()?;
        frozen_rx.recv_timeout(START_TIMEOUT).ok()?;
        Some(IntakeFreeze {
            _release: release_tx,
        })
    }

    /// Test hook (feature `testing`): makes the gateway actor panic, as a bug in it would.
    /// Returns whether the message was delivered.
    #[cfg(feature = "testing")]
    #[doc(hidden)]
    pub fn panic_an_actor_for_tests(&self) -> bool {
        let Some(addr) = self
            .inner
            .lifecycle
            .lock()
            .as_ref()
            .map(|lc| lc.actors.gateway.clone())
        else {
            return false;
        };
        addr.try_send(crate::actors::gateway::PanicForTests).is_ok()
    }

    /// A copy of the ledger.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.shared.counters.snapshot()
    }

    /// Turns the gateway on or off at runtime (`gateway.enabled`). Takes effect for the next
    /// `emit()`: every event is routed under the switches in force when it was emitted, even if
    /// they change before the gateway actor reaches it.
    pub fn set_gateway_enabled(&self, enabled: bool) {
        self.inner
            .shared
            .gateway_enabled
            .store(enabled, Ordering::SeqCst);
    }

    /// Turns the enterprise exporter on or off at runtime (`gateway.enterprise_enabled`).
    pub fn set_enterprise_enabled(&self, enabled: bool) {
        self.inner
            .shared
            .enterprise_enabled
            .store(enabled, Ordering::SeqCst);
    }

    /// Registers the trace sink of a tenant (or of one of its apps, `sink.app_id`), replacing the
    /// one registered for the same tenant and app: no restart. The sink is opened when the
    /// tenant's traces first need it, with its own bounded queue and retry; the batches the
    /// replaced sink holds are still exported by it. Header values and URL passwords are kept
    /// out of logs, errors and the flight recorder. See docs/integration.md.
    pub fn register_sink(&self, sink: SinkSection) -> Result<(), SinkRegistryError> {
        self.registry()?.register_section(sink)
    }

    /// Registers a sink built by host code (again after it was closed for being least recently
    /// used), replacing the one registered for the same tenant and app.
    pub fn register_sink_factory(
        &self,
        name: &str,
        tenant_id: &str,
        app_id: Option<&str>,
        factory: Arc<dyn SinkFactory>,
    ) -> Result<(), SinkRegistryError> {
        self.registry()?
            .register_factory(name, tenant_id, app_id, factory)
    }

    /// Removes the sink of `tenant_id` (and `app_id`): later traces no longer go to it, and the
    /// batches it holds are still exported. `false` when none was registered.
    pub fn remove_sink(&self, tenant_id: &str, app_id: Option<&str>) -> bool {
        self.registry()
            .map(|r| r.remove(tenant_id, app_id))
            .unwrap_or(false)
    }

    /// Every registered tenant sink, open or not (no credentials).
    pub fn sinks(&self) -> Vec<SinkInfo> {
        self.registry().map(|r| r.list()).unwrap_or_default()
    }

    pub(super) fn registry(
        &self,
    ) -> Result<Arc<crate::export::registry::SinkRegistry>, SinkRegistryError> {
        self.inner
            .lifecycle
            .lock()
            .as_ref()
            .map(|lc| lc.export.handles.sinks.clone())
            .ok_or(SinkRegistryError::ShutDown)
    }

    /// Metric/log envelopes waiting in the transport.
    pub fn metric_queue_depth(&self) -> usize {
        self.inner.transport.queued()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn the_handle_is_send_sync_and_cheap_to_clone() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<GatewayHandle>();
    }
}
