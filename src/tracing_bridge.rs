//! A `tracing_subscriber::Layer` that turns `tracing` spans and events carrying a
//! `telemetry.case` field into gateway events, so code already instrumented with `tracing`
//! reaches the gateway without new calls.
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = telemetry_gateway::start(telemetry_gateway::GatewayConfig::default())?;
//! let subscriber = tracing_subscriber::registry()
//!     .with(telemetry_gateway::tracing_bridge::GatewayLayer::new(gateway.clone()));
//! tracing::subscriber::set_global_default(subscriber)?;
//!
//! // An event: one gateway event, now.
//! tracing::info!(telemetry.case = "feedback_created", tenant_id = "acme", rating = "like");
//! // A span: one gateway event when it closes, with its duration.
//! let run = tracing::info_span!(
//!     "run", telemetry.case = "workflow_run", tenant_id = "acme", run_id = "run-1",
//!     status = tracing::field::Empty,
//! );
//! run.in_scope(|| { /* ... */ });
//! run.record("status", "succeeded");
//! drop(run);
//! # Ok(()) }
//! ```
//!
//! **Field mapping** (docs/integration.md has the table):
//!
//! - `telemetry.case`: the case (built in or declared under `[cases]`). Only spans and events
//!   with this field become gateway events.
//! - `tenant_id`, `app_id`, `user_id`: the context. A span or event without one takes it from
//!   the nearest enclosing span that has it.
//! - `correlation_id`, `run_id`: the correlation. Taken from the event or span itself, else
//!   from the nearest enclosing span (so one request span links every event inside it).
//! - Every other field, `message` included, goes into the payload as a JSON value. A span's
//!   payload also gets `duration_ms` (from creation to close).
//!
//! **Never silent, never in the way.** The layer calls [`GatewayHandle::emit`], which never
//! waits: an invalid result (no tenant, an unknown case) is refused, counted under its reason
//! code and kept in the flight recorder, and [`GatewayLayer::refused`] counts it here too. The
//! layer holds nothing per span beyond its fields (bounded by the span's own fields), and
//! nothing at all for spans without `telemetry.case` or the context fields.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use crate::contracts::{TelemetryCase, TelemetryContext, TelemetryEnvelope};
use crate::runtime::GatewayHandle;

/// The field that marks a span or event as a gateway event.
pub const CASE_FIELD: &str = "telemetry.case";

/// Fields that set the context or the correlation rather than the payload.
const CONTEXT_FIELDS: [&str; 5] = ["tenant_id", "app_id", "user_id", "correlation_id", "run_id"];

/// The layer (see the module docs).
#[derive(Debug, Clone)]
pub struct GatewayLayer {
    handle: GatewayHandle,
    emitted: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
}

impl GatewayLayer {
    /// A layer emitting into `handle`.
    pub fn new(handle: GatewayHandle) -> Self {
        GatewayLayer {
            handle,
            emitted: Arc::new(AtomicU64::new(0)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Gateway events the layer handed to `emit()` and the gateway took.
    pub fn emitted(&self) -> u64 {
        self.emitted.load(Ordering::Relaxed)
    }

    /// Gateway events `emit()` refused (each also counted in the gateway's ledger with its
    /// reason code).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn emit(&self, env: TelemetryEnvelope) {
        match self.handle.emit(env) {
            Ok(_) => self.emitted.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.refused.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The fields of a span or event, as the layer reads them.
#[derive(Debug, Default, Clone)]
struct Fields {
    case: Option<String>,
    tenant_id: Option<String>,
    app_id: Option<String>,
    user_id: Option<String>,
    correlation_id: Option<String>,
    run_id: Option<String>,
    payload: Map<String, Value>,
}

impl Fields {
    fn set(&mut self, name: &str, value: Value) {
        let text = || match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match name {
            CASE_FIELD => self.case = Some(text()),
            "tenant_id" => self.tenant_id = Some(text()),
            "app_id" => self.app_id = Some(text()),
            "user_id" => self.user_id = Some(text()),
            "correlation_id" => self.correlation_id = Some(text()),
            "run_id" => self.run_id = Some(text()),
            _ => {
                self.payload.insert(name.to_owned(), value);
            }
        }
    }

    /// Fills what `self` lacks from an enclosing span's fields.
    fn inherit(&mut self, outer: &Fields) {
        let fill = |mine: &mut Option<String>, theirs: &Option<String>| {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        };
        fill(&mut self.tenant_id, &outer.tenant_id);
        fill(&mut self.app_id, &outer.app_id);
        fill(&mut self.user_id, &outer.user_id);
        fill(&mut self.correlation_id, &outer.correlation_id);
        fill(&mut self.run_id, &outer.run_id);
    }

    fn envelope(self, case: &str) -> TelemetryEnvelope {
        let mut ctx = TelemetryContext::tenant(self.tenant_id.unwrap_or_default());
        if let Some(a) = self.app_id {
            ctx = ctx.app(a);
        }
        if let Some(u) = self.user_id {
            ctx = ctx.user(u);
        }
        let mut env = TelemetryEnvelope::new(TelemetryCase::from_name(case), ctx)
            .with_payload(Value::Object(self.payload));
        if let Some(r) = self.run_id {
            env = env.with_run_id(r);
        }
        if let Some(c) = self.correlation_id {
            env = env.with_correlation_id(c);
        }
        env
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field.name(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field.name(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.set(field.name(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field.name(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field.name(), Value::String(value.to_string()));
    }
}

/// Stored in a span's extensions when it has fields the layer uses.
#[derive(Debug)]
struct SpanState {
    fields: Fields,
    opened: Instant,
}

/// Whether a field set mentions anything the layer uses.
fn relevant(fields: &tracing::field::FieldSet) -> bool {
    fields
        .iter()
        .any(|f| f.name() == CASE_FIELD || CONTEXT_FIELDS.contains(&f.name()))
}

impl<S> Layer<S> for GatewayLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !relevant(attrs.metadata().fields()) {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanState {
                fields,
                opened: Instant::now(),
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(state) = span.extensions_mut().get_mut::<SpanState>() {
                values.record(&mut state.fields);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().fields().field(CASE_FIELD).is_none() {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(case) = fields.case.clone() else {
            return;
        };
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope {
                if let Some(state) = span.extensions().get::<SpanState>() {
                    fields.inherit(&state.fields);
                }
            }
        }
        self.emit(fields.envelope(&case));
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let state = span.extensions_mut().remove::<SpanState>();
        let Some(SpanState { mut fields, opened }) = state else {
            return;
        };
        let Some(case) = fields.case.clone() else {
            return;
        };
        for parent in span.scope().skip(1) {
            if let Some(state) = parent.extensions().get::<SpanState>() {
                fields.inherit(&state.fields);
            }
        }
        let ms = opened.elapsed().as_secs_f64() * 1000.0;
        fields.payload.insert(
            "duration_ms".into(),
            Value::from((ms * 1000.0).round() / 1000.0),
        );
        self.emit(fields.envelope(&case));
    }
}
