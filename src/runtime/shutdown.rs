//! Shutdown, bounded by the caller's deadline, in the steps docs/architecture.md lists, and the
//! report that proves nothing was lost silently.

use super::*;

/// How often shutdown re-checks the stage gauges.
pub(super) const SETTLE_POLL: Duration = Duration::from_millis(2);

/// How often shutdown asks the log batcher to export early while events settle.
pub(super) const LOG_NUDGE_INTERVAL: Duration = Duration::from_millis(20);

/// What shutdown delivered and what it did not.
#[derive(Debug, Clone, Serialize)]
pub struct ShutdownReport {
    /// The final ledger: `emitted == delivered + sum(dropped)`, nothing in flight.
    pub stats: StatsSnapshot,
    /// Events still unsettled at the deadline, now counted as dropped under `shutdown`.
    pub unsettled_at_deadline: u64,
    /// Whether the deadline passed before everything settled.
    pub deadline_exceeded: bool,
    /// How long shutdown took.
    pub elapsed_ms: u64,
    /// Actors that had died before shutdown began (a panic inside the gateway ends an actor's
    /// task). The ledger still adds up, but such a run is not clean: see
    /// [`ShutdownReport::is_clean`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors_lost: Vec<String>,
}

impl ShutdownReport {
    /// Whether the run ended as it should: every actor alive until shutdown and everything
    /// settled within the deadline. A balanced ledger alone does not say that.
    pub fn is_clean(&self) -> bool {
        self.actors_lost.is_empty() && !self.deadline_exceeded
    }

    /// Dropped events by reason.
    pub fn dropped(&self) -> &BTreeMap<String, u64> {
        &self.stats.dropped
    }
}

/// Runs `work` on a new thread called `name` (where blocking is allowed, whatever runtime
/// awaits this) and awaits its result; runs it here when no thread can be started. `None` only
/// when the thread died.
pub(super) async fn run_on_thread<T, F>(name: &str, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Some(work)));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let work = theirs.lock().take();
            if let Some(work) = work {
                let _ = tx.send(work());
            }
        });
    match spawned {
        Ok(_) => rx.await.ok(),
        Err(_) => {
            let work = slot.lock().take();
            work.map(|w| w())
        }
    }
}

impl GatewayHandle {
    /// Shuts down within `deadline` and reports. The work runs on a gateway-owned thread, so
    /// this is safe to await from any async runtime. A second call returns the first report.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let me = self.clone();
        run_on_thread("telemetry-gateway-shutdown", move || {
            me.shutdown_now(deadline)
        })
        .await
        .unwrap_or_else(|| self.final_or_snapshot())
    }

    /// [`shutdown`](Self::shutdown) for callers without an async runtime; blocks this thread
    /// until done or `deadline`. Also safe inside an async runtime (the work runs on its own
    /// thread, where blocking is allowed), though it then blocks that runtime's thread.
    pub fn shutdown_blocking(&self, deadline: Duration) -> ShutdownReport {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("telemetry-gateway-shutdown".into())
            .spawn(move || me.shutdown_now(deadline));
        match spawned {
            Ok(h) => h.join().unwrap_or_else(|_| self.final_or_snapshot()),
            Err(_) => self.shutdown_now(deadline),
        }
    }

    pub(super) fn final_or_snapshot(&self) -> ShutdownReport {
        self.inner
            .final_report
            .lock()
            .clone()
            .unwrap_or_else(|| ShutdownReport {
                stats: self.stats(),
                unsettled_at_deadline: 0,
                deadline_exceeded: true,
                elapsed_ms: 0,
                actors_lost: Vec::new(),
            })
    }

    /// The shutdown sequence, in the steps docs/architecture.md lists ("Shutdown sequence"),
    /// bounded by `deadline`; runs on a thread with no async runtime context.
    pub(super) fn shutdown_now(&self, deadline: Duration) -> ShutdownReport {
        let started = Instant::now();
        let by = Deadline(started + deadline);
        let inner = &*self.inner;
        let Some(lifecycle) = inner.lifecycle.lock().take() else {
            return self.final_or_snapshot();
        };
        let counters = inner.shared.counters.clone();
        // 1. Before anything is told to stop: which actors no longer answer.
        let actors_lost = lost_actors(&lifecycle, deadline);
        // 2. Close intake, and wait for the emits in progress and the gateway queue.
        inner.shared.closed.store(true, Ordering::SeqCst);
        let no_emits = || inner.active_emits.sum(Ordering::SeqCst) == 0;
        let mut settled = by.wait_until(&no_emits, &|| {});
        settled &= by.wait_until(&|| counters.pending().gateway <= 0, &|| {});
        // 3. Drain the trace batcher; wait for every trace and metric/log event to settle.
        settled &= drain_paths(&lifecycle, &counters, &by);
        // 4. Flush the companion log records.
        settled &= flush_companions(&lifecycle, &counters, &by);
        // 5. The final metric export, then the logger and the SQLite sink.
        settled &= close_providers(&lifecycle, &by);
        leave_in_spool(&lifecycle);
        // 6. Stop the actors, the endpoint, the tenant sinks and the export runtime.
        stop_threads(lifecycle, &by);
        // 7. Anything not settled now never will be: count it, so the ledger adds up.
        by.wait_until(&no_emits, &|| {});
        let unsettled = counters.settle_remaining(ReasonCode::Shutdown);
        if unsettled > 0 {
            tracing::warn!(
                events = unsettled,
                "events unsettled at the shutdown deadline, counted as dropped"
            );
        }
        // 8. The report, kept for later calls; the warning summaries still pending.
        let report = ShutdownReport {
            stats: counters.snapshot(),
            unsettled_at_deadline: unsettled,
            deadline_exceeded: !settled,
            elapsed_ms: started.elapsed().as_millis() as u64,
            actors_lost,
        };
        *inner.final_report.lock() = Some(report.clone());
        counters.log.flush_summaries();
        report
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.lifecycle.lock().is_some() {
            // The last handle went away without shutdown(): settle what we can, bounded.
            let handle = GatewayHandle {
                inner: Arc::new(Inner {
                    tx: self.tx.clone(),
                    shared: self.shared.clone(),
                    transport: self.transport.clone(),
                    active_emits: Striped::default(),
                    lifecycle: Mutex::new(self.lifecycle.lock().take()),
                    default_deadline: self.default_deadline,
                    final_report: Mutex::new(None),
                    probes: self.probes.clone(),
                    diag_addr: self.diag_addr,
                }),
            };
            let _ = handle.shutdown_blocking(self.default_deadline);
        }
    }
}

/// When shutdown must be done.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline(Instant);

impl Deadline {
    /// Polls `cond` every [`SETTLE_POLL`] (calling `nudge` between polls) until it holds
    /// (`true`) or the deadline passes (`false`).
    fn wait_until(&self, cond: &dyn Fn() -> bool, nudge: &dyn Fn()) -> bool {
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= self.0 {
                return false;
            }
            nudge();
            std::thread::sleep(SETTLE_POLL);
        }
    }

    fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// How long shutdown waits for every actor's answer to a ping (at most a quarter of its
/// deadline): an actor that is running answers at once.
const LIVENESS_WAIT: Duration = Duration::from_secs(1);

/// Below this wait the pings are skipped: a live actor may not answer that fast.
const MIN_LIVENESS_WAIT: Duration = Duration::from_millis(20);

/// Step 1: the actors that do not answer a ping (they died or hang: a panic inside one), and the
/// actor system's thread if it ended. A deadline too short to wait for answers skips the pings
/// (nothing is claimed then).
fn lost_actors(lifecycle: &Lifecycle, deadline: Duration) -> Vec<String> {
    let mut lost: Vec<String> = Vec::new();
    if lifecycle.thread.is_finished() {
        lost.push("actor system thread".to_owned());
    }
    let wait = LIVENESS_WAIT.min(deadline / 4);
    let liveness = &lifecycle.actors.liveness;
    let answers = if wait >= MIN_LIVENESS_WAIT {
        lifecycle.export.rt.block_on(futures::future::join_all(
            liveness.iter().map(|(_, alive)| alive(wait)),
        ))
    } else {
        vec![true; liveness.len()]
    };
    lost.extend(
        liveness
            .iter()
            .zip(answers)
            .filter(|(_, answered)| !answered)
            .map(|((name, _), _)| name.clone()),
    );
    if !lost.is_empty() {
        tracing::error!(
            actors = ?lost,
            "actors died before shutdown (a panic in the gateway); the run is not clean"
        );
    }
    lost
}

/// Step 3: from here on every batcher shard flushes each event as it arrives (`Drain`: a
/// control message, not awaited; its effect is observed through the gauges, and it is sent
/// again to a shard whose mailbox refused it). Waits until no event is held by any stage,
/// asking the log batcher to export early meanwhile.
fn drain_paths(lifecycle: &Lifecycle, counters: &Counters, by: &Deadline) -> bool {
    let batchers = &lifecycle.actors.batchers;
    let drain_sent: Vec<AtomicBool> = batchers
        .iter()
        .map(|b| AtomicBool::new(b.try_send(Drain).is_ok()))
        .collect();
    let handles = lifecycle.export.handles.clone();
    let rt = lifecycle.export.rt.handle().clone();
    let last_nudge = Mutex::new(Instant::now() - LOG_NUDGE_INTERVAL);
    let nudge = || {
        for (batcher, sent) in batchers.iter().zip(&drain_sent) {
            if !sent.load(Ordering::Relaxed) {
                sent.store(batcher.try_send(Drain).is_ok(), Ordering::Relaxed);
            }
        }
        let mut last = last_nudge.lock();
        if last.elapsed() >= LOG_NUDGE_INTERVAL {
            *last = Instant::now();
            let log_batcher = handles.log_batcher.clone();
            rt.spawn(async move { log_batcher.flush().await });
        }
    };
    // With disk spools, the paths are done once every event they hold is on disk and the
    // backend is failing: waiting longer only waits for the backend (the spools keep them).
    let done = || {
        let p = counters.pending();
        p.no_event_held() || handles.spooled_and_stalled(&p)
    };
    by.wait_until(&done, &nudge)
}

/// Step 5b: the disk spool keeps what was not sent. Its events leave the process as `spooled`
/// (counted, journeys closed), the spool is synced and its lock released.
fn leave_in_spool(lifecycle: &Lifecycle) {
    for spool in lifecycle.export.handles.all_spools() {
        let left = spool.leave();
        if left > 0 {
            tracing::info!(
                spool = spool.name(),
                events = left,
                "events left in the disk spool at shutdown; the next start on this path sends them"
            );
        }
    }
    // Closed tenant sinks' spools: their records stay too.
    let left = lifecycle.export.handles.sinks.leave_stashes();
    if left > 0 {
        tracing::info!(
            events = left,
            "events left in closed tenant sinks' disk spools at shutdown; their next opening \
             sends them"
        );
    }
}

/// Step 4: companion log records carry no event, so the stage gauges do not wait for them: the
/// log batcher is flushed until it holds none (or the deadline passes).
fn flush_companions(lifecycle: &Lifecycle, counters: &Counters, by: &Deadline) -> bool {
    let handles = &lifecycle.export.handles;
    let log_batcher = handles.log_batcher.clone();
    // With disk spools, companions on disk are done with once a flush has put every record the
    // batcher had gathered there, and the backend is failing.
    let flushed = AtomicBool::new(false);
    let done = || {
        let p = counters.pending();
        p.companion_logs <= 0 || (flushed.load(Ordering::SeqCst) && handles.spooled_and_stalled(&p))
    };
    by.wait_until(&done, &|| {
        let log_batcher = log_batcher.clone();
        let answered = lifecycle.export.rt.block_on(async move {
            tokio::time::timeout(LOG_NUDGE_INTERVAL, log_batcher.flush()).await
        });
        if answered.is_ok() {
            flushed.store(true, Ordering::SeqCst);
        }
    })
}

/// Step 5: the final metric collection and export (the SDK ignores its own timeout argument, so
/// the call runs on a helper thread and is abandoned, not awaited, past the deadline), the
/// logger provider, and the SQLite sink's queue (the last spans, records and metrics).
fn close_providers(lifecycle: &Lifecycle, by: &Deadline) -> bool {
    let mut in_time = true;
    let provider = lifecycle.export.meter_provider.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let _ = std::thread::Builder::new()
        .name("telemetry-gateway-metrics-shutdown".into())
        .spawn(move || {
            let _ = done_tx.send(provider.shutdown());
        });
    if done_rx.recv_timeout(by.remaining()).is_err() {
        in_time = false;
        tracing::warn!("final metric export did not finish before the shutdown deadline");
    }
    let _ = lifecycle.export.logger_provider.shutdown();
    #[cfg(feature = "analytics")]
    if let Some(store) = &lifecycle.export.sqlite {
        if !store.flush(by.remaining()) {
            tracing::warn!("the SQLite sink's queue was not committed before the deadline");
        }
    }
    in_time
}

/// Step 6: the handlers and their arbiters, the actor system and its thread, the diagnostics
/// endpoint, the tenant sinks (each worker finishes what it holds and shuts its sink down), and
/// the export runtime with what is left of the deadline.
fn stop_threads(lifecycle: Lifecycle, by: &Deadline) {
    let Lifecycle {
        system,
        thread,
        actors,
        export,
        diag_stop,
    } = lifecycle;
    let Actors {
        handlers, arbiters, ..
    } = actors;
    drop(handlers);
    for arbiter in &arbiters {
        arbiter.stop();
    }
    system.stop();
    let _ = thread.join();
    let remaining = by.remaining();
    if let Some(stop) = diag_stop {
        let _ = stop.send(());
    }
    export.handles.sinks.close_all();
    export
        .rt
        .shutdown_timeout(remaining.max(Duration::from_millis(10)));
}
