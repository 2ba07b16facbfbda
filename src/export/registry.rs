//! Tenant trace sinks that can change while the host runs: registered, replaced and removed
//! through the handle, each with its own bounded queue and retry (a `SinkWorker`), and at most
//! `trace_batcher.max_live_sinks` of them open at once.
//!
//! **Why a registry, not a list fixed at start.** The system this replaces let each tenant
//! configure its own tracing provider (ten providers, one per app) without a restart. A sink is
//! *registered* as a description (a `[[sinks]]`-style [`SinkSection`], or a host
//! [`SinkFactory`]); it is *opened* (built, with its worker) when its tenant's traces first need
//! it, and *closed* when it is the least recently used one and room is needed: its worker
//! finishes the batches it holds, then shuts the sink down. Its tenant's next trace opens it
//! again. Sinks the host hands over as instances (`GatewayBuilder::trace_sink`) cannot be
//! rebuilt, so they are never closed early.
//!
//! **Isolation.** Every open sink has its own worker, queue (`trace_batcher.sink_queue_batches`)
//! and hold-and-retry: a slow provider fills only its own queue (its copies are then dropped and
//! counted), and the enterprise exporter and other tenants carry on. A tenant sink failing for a
//! long time does not make the gateway unready.
//!
//! **Disk spools.** With `[spool] kind = "disk"` (and `spool.tenant_share_percent` above 0),
//! an open `kind = "otlp"` sink sends through a disk spool of its own in
//! `{spool.path}/tenants/{tenant}[.{app}]-{hash}`, with its share of the budget, exactly as the
//! enterprise spans do (`export::spooled`). Closing the sink closes its spool once the batches
//! queued for it are on disk: what the collector has not taken yet stays there, its accounting
//! kept in memory (`spooled::Stash`), and the sink's next opening adopts it and sends it first,
//! settling it as if the spool had stayed open. At shutdown it leaves as spooled; the next
//! process opens such a sink at start and counts its records recovered. Host sinks (factories, instances) and JSON lines sinks are not spooled:
//! a host sink takes SDK spans, not encoded requests, and a file needs no spool.
//!
//! **Credentials** (header values, an endpoint URL's password) are handed to the log sanitizer
//! when a sink is registered, so they are replaced wherever they could surface: log lines,
//! flight recorder details, errors. `Debug` of a [`SinkSection`] hides them, and [`SinkInfo`]
//! never carries them.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use serde::Serialize;

use super::sink::{SinkError, SinkWorker, TraceSink};
use super::spooled::{spawn_traces, SpoolControl, SpoolSettings, Stash, TraceSpoolSpec};
use crate::config::{RetrySection, SinkKind, SinkSection};
use crate::diagnostics::exporters::ExporterStats;

/// Builds a tenant's sink: at its first trace, and again whenever it was closed for being the
/// least recently used. Called on the gateway's batcher thread: connect lazily (the OTLP
/// exporters do) rather than block here.
pub trait SinkFactory: Send + Sync + Debug + 'static {
    /// Builds the sink.
    fn build(&self) -> Result<Arc<dyn TraceSink>, SinkError>;
}

/// Why a registration was refused. Never carries a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkRegistryError {
    /// The description is invalid (the field is named).
    #[error("sink {name:?}: `{field}` {problem}")]
    Invalid {
        /// The sink's name.
        name: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The gateway is shut down.
    #[error("the gateway is shut down")]
    ShutDown,
}

/// A registered sink, as diagnostics show it (no credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinkInfo {
    /// The sink's name (counters and logs use it).
    pub name: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its app, when it takes one app's traces only.
    pub app_id: Option<String>,
    /// Whether it is open now (built, with a worker).
    pub open: bool,
    /// Handed over as an instance: never closed early.
    pub pinned: bool,
    /// Times it was opened (1 + reopenings after being closed as least recently used).
    pub opened: u64,
}

/// How an entry's sink is made.
#[derive(Debug, Clone)]
enum Spec {
    Section(SinkSection),
    Factory(Arc<dyn SinkFactory>),
    Instance(Arc<dyn TraceSink>),
}

/// The key of a registration: a tenant, and an app or all of its apps.
type Key = (String, Option<String>);

#[derive(Debug)]
struct Entry {
    /// Unique per registration: a replaced sink's batches never merge with its successor's.
    id: u64,
    name: String,
    spec: Spec,
    worker: Option<SinkWorker>,
    last_used: u64,
    opened: u64,
    stats: Arc<ExporterStats>,
    credentials: Vec<String>,
    /// A `[[sinks]]` entry's sink, built at start to check it: used by its first opening, so it
    /// is not built twice.
    prebuilt: Option<Arc<dyn TraceSink>>,
}

impl Entry {
    fn pinned(&self) -> bool {
        matches!(self.spec, Spec::Instance(_))
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    clock: u64,
    next_id: u64,
    closed: bool,
    /// The tenant sinks' disk spools not closed yet (an open sink's, or one closing).
    spools: Vec<Arc<SpoolControl>>,
}

/// How `kind = "otlp"` tenant sinks are spooled (`[spool] kind = "disk"`).
#[derive(Debug, Clone)]
pub(crate) struct TenantSpooling {
    /// `{spool.path}/tenants`.
    pub(crate) root: PathBuf,
    /// Each spool's options: its share of the budget.
    pub(crate) opts: crate::spool::SpoolOptions,
    /// `spool.sync_interval_ms`.
    pub(crate) tick: Duration,
    /// Events on disk followed in detail per spool (the recorder's budget over
    /// `max_live_sinks`).
    pub(crate) detailed_events: u64,
}

/// How long an opening waits for the same sink's spool to finish closing.
const SPOOL_CLOSE_PATIENCE: Duration = Duration::from_secs(2);

/// How the registry opens a sink's worker.
#[derive(Debug, Clone)]
pub(crate) struct WorkerParams {
    /// How each tenant sink's worker runs.
    pub(crate) worker: super::sink::SinkWorkerParams,
    /// Retries inside a tenant OTLP sink's export calls.
    pub(crate) retry: RetrySection,
    /// The resource of the spans a tenant sink exports.
    pub(crate) resource: Resource,
    /// Disk spools for OTLP sinks, or `None` (memory mode).
    pub(crate) spool: Option<TenantSpooling>,
}

/// The registry (see the module docs).
#[derive(Debug)]
pub(crate) struct SinkRegistry {
    inner: Mutex<Inner>,
    max_live: usize,
    params: WorkerParams,
    /// What closed sinks' spools left unsettled, by directory: adopted by the next opening,
    /// settled spooled at shutdown.
    stashes: Arc<Mutex<HashMap<PathBuf, Stash>>>,
}

/// An open sink a batch goes to.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) id: u64,
    pub(crate) worker: SinkWorker,
}

impl SinkRegistry {
    pub(crate) fn new(max_live: usize, params: WorkerParams) -> Self {
        SinkRegistry {
            inner: Mutex::new(Inner::default()),
            max_live: max_live.max(1),
            params,
            stashes: Arc::default(),
        }
    }

    /// Registers a `[[sinks]]` entry whose sink was already built (at start, where a bad entry
    /// must fail start): that sink serves its first opening.
    pub(crate) fn register_built_section(
        &self,
        s: SinkSection,
        sink: Arc<dyn TraceSink>,
    ) -> Result<(), SinkRegistryError> {
        let key = (s.tenant_id.clone(), s.app_id.clone());
        self.register_section(s)?;
        if let Some(e) = self.inner.lock().entries.get_mut(&key) {
            e.prebuilt = Some(sink);
        }
        Ok(())
    }

    /// Registers (or replaces) a sink described like a `[[sinks]]` entry.
    pub(crate) fn register_section(&self, s: SinkSection) -> Result<(), SinkRegistryError> {
        self.check_names(&s.name, &s.tenant_id)?;
        s.check()
            .map_err(|(field, problem)| SinkRegistryError::Invalid {
                name: s.name.clone(),
                field,
                problem,
            })?;
        let credentials = crate::config::credentials(&s.headers, s.endpoint.as_deref());
        let key = (s.tenant_id.clone(), s.app_id.clone());
        self.insert(key, s.name.clone(), Spec::Section(s), credentials)
    }

    /// Registers (or replaces) a sink built by host code.
    pub(crate) fn register_factory(
        &self,
        name: &str,
        tenant_id: &str,
        app_id: Option<&str>,
        factory: Arc<dyn SinkFactory>,
    ) -> Result<(), SinkRegistryError> {
        self.check_names(name, tenant_id)?;
        let key = (tenant_id.to_owned(), app_id.map(str::to_owned));
        self.insert(key, name.to_owned(), Spec::Factory(factory), Vec::new())
    }

    /// Registers (or replaces) a sink instance the host owns: open at once, never closed early.
    pub(crate) fn register_instance(
        &self,
        tenant_id: &str,
        app_id: Option<&str>,
        sink: Arc<dyn TraceSink>,
    ) -> Result<(), SinkRegistryError> {
        let name = sink.name().to_owned();
        self.check_names(&name, tenant_id)?;
        let key = (tenant_id.to_owned(), app_id.map(str::to_owned));
        self.insert(key, name, Spec::Instance(sink), Vec::new())
    }

    fn check_names(&self, name: &str, tenant_id: &str) -> Result<(), SinkRegistryError> {
        let bad = |field, problem: &str| SinkRegistryError::Invalid {
            name: name.to_owned(),
            field,
            problem: problem.into(),
        };
        if name.trim().is_empty() {
            return Err(bad("name", "must not be empty"));
        }
        if tenant_id.is_empty() {
            return Err(bad("tenant_id", "must not be empty"));
        }
        Ok(())
    }

    fn insert(
        &self,
        key: Key,
        name: String,
        spec: Spec,
        credentials: Vec<String>,
    ) -> Result<(), SinkRegistryError> {
        for c in &credentials {
            self.params.worker.counters.log.add_secret(c);
        }
        let mut inner = self.inner.lock();
        if inner.closed {
            return Err(SinkRegistryError::ShutDown);
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let clean = self.params.worker.counters.log.sanitize(&name).into_owned();
        let stats = self
            .params
            .worker
            .counters
            .exporters
            .register_tenant_sink(&clean, "traces");
        let entry = Entry {
            id,
            name: clean,
            spec,
            worker: None,
            last_used: 0,
            opened: 0,
            stats,
            credentials,
            prebuilt: None,
        };
        let old = inner.entries.insert(key, entry);
        drop(inner);
        if let Some(old) = old {
            self.retire(old);
        }
        Ok(())
    }

    /// Removes the sink of `(tenant_id, app_id)`; its worker finishes what it holds.
    pub(crate) fn remove(&self, tenant_id: &str, app_id: Option<&str>) -> bool {
        let key = (tenant_id.to_owned(), app_id.map(str::to_owned));
        let old = self.inner.lock().entries.remove(&key);
        match old {
            Some(old) => {
                self.retire(old);
                true
            }
            None => false,
        }
    }

    /// A replaced or removed entry: its worker drains and shuts its sink down once its queue
    /// has no sender left; its credentials and counters go when no other entry shares them.
    fn retire(&self, old: Entry) {
        let inner = self.inner.lock();
        let name_in_use = inner.entries.values().any(|e| e.name == old.name);
        let still_used: Vec<&String> = inner
            .entries
            .values()
            .flat_map(|e| e.credentials.iter())
            .collect();
        for c in &old.credentials {
            if !still_used.contains(&c) {
                self.params.worker.counters.log.forget_secret(c);
            }
        }
        drop(inner);
        if !name_in_use {
            self.params.worker.counters.exporters.unregister(&old.stats);
        }
        drop(old.worker);
    }

    /// Every registration, for diagnostics.
    pub(crate) fn list(&self) -> Vec<SinkInfo> {
        let inner = self.inner.lock();
        let mut out: Vec<SinkInfo> = inner
            .entries
            .iter()
            .map(|((tenant, app), e)| SinkInfo {
                name: e.name.clone(),
                tenant_id: tenant.clone(),
                app_id: app.clone(),
                open: e.worker.is_some(),
                pinned: e.pinned(),
                opened: e.opened,
            })
            .collect();
        out.sort_by(|a, b| (&a.tenant_id, &a.app_id).cmp(&(&b.tenant_id, &b.app_id)));
        out
    }

    /// (batches waiting, capacity) summed over the open sinks.
    pub(crate) fn depth(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        inner
            .entries
            .values()
            .filter_map(|e| e.worker.as_ref()?.depth())
            .fold((0, 0), |(d, c), (wd, wc)| (d + wd, c + wc))
    }

    /// Whether no sink is registered (the batcher then skips `resolve`).
    pub(crate) fn is_empty(&self) -> bool {
        self.inner.lock().entries.is_empty()
    }

    /// The open sinks that take traces of `(tenant_id, app_id)`, opening them (and closing the
    /// least recently used ones to make room) as needed. A sink that cannot be built is
    /// reported as the error, named; its tenant's traces are then not sent to it.
    pub(crate) fn resolve(
        &self,
        tenant_id: &str,
        app_id: Option<&str>,
    ) -> (Vec<Resolved>, Vec<(String, SinkError)>) {
        let mut out = Vec::new();
        let mut failed = Vec::new();
        let mut inner = self.inner.lock();
        if inner.entries.is_empty() || inner.closed {
            return (out, failed);
        }
        inner.clock += 1;
        let now = inner.clock;
        let mut keys: Vec<Key> = vec![(tenant_id.to_owned(), None)];
        if let Some(app) = app_id {
            keys.push((tenant_id.to_owned(), Some(app.to_owned())));
        }
        for key in keys {
            let needs_open = match inner.entries.get_mut(&key) {
                None => continue,
                Some(e) => {
                    e.last_used = now;
                    e.worker.is_none()
                }
            };
            if needs_open {
                self.make_room(&mut inner, &key);
                let Inner {
                    entries, spools, ..
                } = &mut *inner;
                let Some(e) = entries.get_mut(&key) else {
                    continue;
                };
                match self.open(&key, e, spools) {
                    Ok(w) => {
                        e.worker = Some(w);
                        e.opened += 1;
                    }
                    Err(err) => {
                        failed.push((e.name.clone(), err));
                        continue;
                    }
                }
            }
            if let Some(e) = inner.entries.get(&key) {
                if let Some(w) = &e.worker {
                    out.push(Resolved {
                        id: e.id,
                        worker: w.clone(),
                    });
                }
            }
        }
        (out, failed)
    }

    /// At start, with disk spools: opens the OTLP sinks whose spools hold records an earlier
    /// process left (at most `max_live`), so their backlogs go out without waiting for their
    /// tenants' next traces. A sink that cannot be opened is logged; its next trace tries again.
    pub(crate) fn open_backlogged(&self) {
        let Some(sp) = &self.params.spool else {
            return;
        };
        let keys: Vec<Key> = {
            let inner = self.inner.lock();
            inner
                .entries
                .iter()
                .filter(|(k, e)| {
                    matches!(&e.spec, Spec::Section(s) if self.sends_through_spool(s))
                        && crate::spool::holds_segments(&sp.root.join(spool_dir_name(k)))
                })
                .map(|(k, _)| k.clone())
                .take(self.max_live)
                .collect()
        };
        for (tenant, app) in keys {
            let (_, failed) = self.resolve(&tenant, app.as_deref());
            for (name, e) in failed {
                tracing::warn!(sink = %name, error = %e, "a tenant sink with a backlog on disk could not be opened at start");
            }
        }
    }

    /// Closes least recently used open sinks (never pinned ones, never `keep`) until one more
    /// fits under `max_live`.
    fn make_room(&self, inner: &mut Inner, keep: &Key) {
        loop {
            let open = inner
                .entries
                .values()
                .filter(|e| e.worker.is_some())
                .count();
            if open < self.max_live {
                return;
            }
            let victim = inner
                .entries
                .iter()
                .filter(|(k, e)| e.worker.is_some() && !e.pinned() && *k != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            match victim {
                // Dropping the worker's sender: it finishes its queue, then shuts the sink down.
                Some(k) => {
                    if let Some(e) = inner.entries.get_mut(&k) {
                        e.worker = None;
                    }
                }
                // Only pinned sinks are open: the limit cannot be kept; open anyway.
                None => return,
            }
        }
    }

    fn open(
        &self,
        key: &Key,
        e: &mut Entry,
        spools: &mut Vec<Arc<SpoolControl>>,
    ) -> Result<SinkWorker, SinkError> {
        let p = &self.params;
        let _rt = p.worker.rt.enter();
        let prebuilt = e.prebuilt.take();
        if let (Some(sp), Spec::Section(s)) = (&p.spool, &e.spec) {
            if self.sends_through_spool(s) {
                return self.open_spooled(key, e, s, sp, spools);
            }
        }
        let sink: Arc<dyn TraceSink> = match (prebuilt, &e.spec) {
            (Some(s), _) => s,
            (None, Spec::Instance(s)) => s.clone(),
            (None, Spec::Factory(f)) => f.build()?,
            (None, Spec::Section(s)) => {
                super::build_community_sink(&e.name, s, p.worker.timeout, &p.retry, &p.resource)
                    .map_err(|err| SinkError::Failed(err.to_string()))?
            }
        };
        Ok(SinkWorker::spawn_with_stats(
            super::sink::Target::Sink(sink),
            &p.worker,
            e.stats.clone(),
        ))
    }

    /// Whether a sink `s` describes sends through a disk spool: an OTLP one, with spools on.
    pub(crate) fn sends_through_spool(&self, s: &SinkSection) -> bool {
        self.params.spool.is_some() && s.kind == SinkKind::Otlp
    }

    /// Opens an OTLP sink through its disk spool (see the module docs).
    fn open_spooled(
        &self,
        key: &Key,
        e: &Entry,
        s: &SinkSection,
        sp: &TenantSpooling,
        spools: &mut Vec<Arc<SpoolControl>>,
    ) -> Result<SinkWorker, SinkError> {
        let p = &self.params;
        let dir = sp.root.join(spool_dir_name(key));
        spools.retain(|c| !c.has_left());
        // The same sink closed a moment ago: its spool lets go of the directory once the
        // batches queued for it are on disk.
        for c in spools.iter().filter(|c| c.dir() == dir) {
            c.wait_left(SPOOL_CLOSE_PATIENCE);
        }
        let failed = |what: &str, err: &dyn std::fmt::Display| {
            SinkError::Failed(format!(
                "{what}: {}",
                p.worker.counters.log.sanitize(&err.to_string())
            ))
        };
        let sender = super::community_wire(&e.name, s, p.worker.timeout, &p.retry)
            .map_err(|err| failed("sender", &err))?;
        let settings = SpoolSettings {
            dir: dir.clone(),
            opts: sp.opts.clone(),
            tick: sp.tick,
            sender: Arc::new(super::spooled::OtlpRecords {
                sender,
                signal: super::wire::WireSignal::Traces,
            }),
            hold: p.worker.hold,
            concurrency: p.worker.concurrency,
            detailed_events: sp.detailed_events,
            stash: self.stashes.lock().remove(&dir),
        };
        let stashes = self.stashes.clone();
        let spec = TraceSpoolSpec {
            name: e.name.clone(),
            stats: e.stats.clone(),
            on_close: Some(Box::new(move |stash| {
                stashes.lock().insert(dir, stash);
            })),
        };
        let (worker, control) = spawn_traces(spec, settings, p.resource.clone(), &p.worker, None)
            .map_err(|err| failed("spool", &err))?;
        spools.push(control);
        Ok(worker)
    }

    /// At shutdown, after the open spools left: the records of closed sinks' spools stay on
    /// disk; their events leave the process as spooled. Returns those events.
    pub(crate) fn leave_stashes(&self) -> u64 {
        let stashes = std::mem::take(&mut *self.stashes.lock());
        stashes.into_values().map(Stash::leave).sum()
    }

    /// The tenant sinks' disk spools not closed yet.
    pub(crate) fn spools(&self) -> Vec<Arc<SpoolControl>> {
        let inner = self.inner.lock();
        inner
            .spools
            .iter()
            .filter(|c| !c.has_left())
            .cloned()
            .collect()
    }

    /// At shutdown: no more registrations; every worker's sender is dropped so each drains and
    /// shuts its sink down.
    pub(crate) fn close_all(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        for e in inner.entries.values_mut() {
            e.worker = None;
        }
    }
}

/// A tenant sink's spool directory under `{spool.path}/tenants`: its tenant (and app), readable,
/// and a checksum of the exact key, so keys that read alike never share a directory.
fn spool_dir_name((tenant, app): &Key) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .take(48)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let mut h = crc32fast::Hasher::new();
    h.update(tenant.as_bytes());
    match app {
        Some(app) => {
            h.update(&[0]);
            h.update(app.as_bytes());
            format!("{}.{}-{:08x}", clean(tenant), clean(app), h.finalize())
        }
        None => format!("{}-{:08x}", clean(tenant), h.finalize()),
    }
}
