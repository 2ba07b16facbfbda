//! `RehydratorActor`: gives an offloaded event its payload back. One per handler.
//!
//! Order of resort, for each event with a `payload_ref`:
//! 1. read the ref from the payload store, within `payloads.read_timeout_ms` and
//!    `payloads.max_read_bytes`, after checking the ref stays in its tenant's prefix;
//! 2. else the envelope's `payload_fallback` (counted `rehydrated_from_fallback`);
//! 3. else a degraded event (`rehydration_failed`), which the handler turns into a degraded log
//!    record, counted.
//!
//! A ref outside its tenant's prefix is never read; it is counted `payload_ref_refused` and the
//! event continues with step 2. Reads of one batch run concurrently, so a batch takes at most
//! one read timeout.

use std::sync::Arc;

use actix::prelude::*;

use crate::contracts::{JsonObject, PayloadFallback};
use crate::diagnostics::{Counters, ReasonCode};
use crate::payload_store::{PayloadStore, ReadError};

/// One payload to fetch.
#[derive(Debug, Clone)]
pub struct RehydrateItem {
    /// The envelope's tenant: the ref must be inside its prefix.
    pub tenant_id: String,
    /// The payload ref.
    pub payload_ref: String,
    /// The fallback, if the envelope carries one.
    pub fallback: Option<PayloadFallback>,
}

/// The result for one item.
#[derive(Debug, Clone, PartialEq)]
pub struct Rehydrated {
    /// The payload, when any source had it.
    pub payload: Option<JsonObject>,
    /// Set when the event is degraded (fallback from a refused ref, or no payload at all).
    pub degraded: Option<ReasonCode>,
    /// Where the payload came from: `store`, `fallback`, or `none`.
    pub source: &'static str,
    /// Why the ref was refused without being read, when it was (a root cause the journey shows
    /// even when the final degrade is `rehydration_failed`).
    pub ref_refused: Option<String>,
}

/// Fetch a batch; the reply has one result per item, in order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<Rehydrated>")]
pub struct RehydrateBatch(pub Vec<RehydrateItem>);

/// The rehydrator of one handler.
#[derive(Debug)]
pub struct RehydratorActor {
    store: PayloadStore,
    counters: Arc<Counters>,
}

impl RehydratorActor {
    /// A rehydrator reading from `store`.
    pub fn new(store: PayloadStore, counters: Arc<Counters>) -> Self {
        RehydratorActor { store, counters }
    }
}

impl Actor for RehydratorActor {
    type Context = Context<Self>;
}

async fn one(store: PayloadStore, counters: Arc<Counters>, item: RehydrateItem) -> Rehydrated {
    let ref_refused = match store.get(&item.tenant_id, &item.payload_ref).await {
        Ok(p) => {
            Counters::add(&counters.rehydrated_from_store, 1);
            return Rehydrated {
                payload: Some(p),
                degraded: None,
                source: "store",
                ref_refused: None,
            };
        }
        Err(ReadError::Refused(e)) => {
            counters.degraded(ReasonCode::PayloadRefRefused, 1);
            counters
                .log
                .warn_limited("payload ref refused, not read", || {
                    tracing::warn!(
                        tenant_id = %counters.log.sanitize(&item.tenant_id),
                        payload_ref = %counters.log.sanitize(&item.payload_ref),
                        error = %counters.log.sanitize(&e.to_string()),
                        "payload ref refused, not read"
                    )
                });
            Some(e.to_string())
        }
        Err(e) => {
            tracing::debug!(
                tenant_id = %counters.log.sanitize(&item.tenant_id),
                payload_ref = %counters.log.sanitize(&item.payload_ref),
                error = %counters.log.sanitize(&e.to_string()),
                "payload store read failed"
            );
            None
        }
    };
    match item.fallback.as_ref().and_then(|f| f.to_object()) {
        Some(p) => {
            Counters::add(&counters.rehydrated_from_fallback, 1);
            Rehydrated {
                payload: Some(p),
                degraded: ref_refused
                    .is_some()
                    .then_some(ReasonCode::PayloadRefRefused),
                source: "fallback",
                ref_refused,
            }
        }
        None => {
            counters.degraded(ReasonCode::RehydrationFailed, 1);
            Rehydrated {
                payload: None,
                degraded: Some(ReasonCode::RehydrationFailed),
                source: "none",
                ref_refused,
            }
        }
    }
}

impl Handler<RehydrateBatch> for RehydratorActor {
    type Result = ResponseFuture<Vec<Rehydrated>>;

    fn handle(&mut self, msg: RehydrateBatch, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let counters = self.counters.clone();
        Box::pin(async move {
            futures::future::join_all(
                msg.0
                    .into_iter()
                    .map(|item| one(store.clone(), counters.clone(), item)),
            )
            .await
        })
    }
}
