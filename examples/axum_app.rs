//! The actix-web example's service on axum and a plain tokio runtime: the gateway's handle does
//! not need actix in the host (it runs its own actor threads).
//!
//! ```text
//! TELEMETRY_GATEWAY__OTLP__ENDPOINT=http://127.0.0.1:4317 \
//!     cargo run --example axum_app --features testing -- [--port 8080]
//! curl -X POST -H 'X-Tenant-ID: acme' -H 'X-Correlation-ID: req-1' localhost:8080/workflows/onboarding/run
//! ```
//!
//! Same routes, middleware and output as `actix_web_app`: `X-Correlation-ID` taken or minted,
//! put on every event of the request and returned; `listening on ADDR` once serving; on SIGINT
//! or SIGTERM a graceful stop, then the gateway's shutdown report as one JSON line.

use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde_json::{json, Value};
use telemetry_gateway::correlation::{accept_or_mint, CORRELATION_HEADER};
use telemetry_gateway::{
    GatewayConfig, GatewayHandle, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

/// A request's correlation id, set by the middleware.
#[derive(Debug, Clone)]
struct CorrelationId(String);

/// Takes or mints the correlation id, and returns it on the response.
async fn correlate(mut req: Request, next: Next) -> Response {
    let offered = req
        .headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok());
    let cid = accept_or_mint(offered);
    req.extensions_mut().insert(CorrelationId(cid.clone()));
    let mut res = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&cid) {
        res.headers_mut()
            .insert(HeaderName::from_static(CORRELATION_HEADER), v);
    }
    res
}

fn tenant(headers: &HeaderMap) -> TelemetryContext {
    let tenant = headers
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("demo");
    TelemetryContext::tenant(tenant).app("axum-demo")
}

/// Emits, and says what happened without failing the request.
fn emit(gw: &GatewayHandle, env: TelemetryEnvelope) -> Value {
    match gw.emit(env) {
        Ok(id) => json!({"event_id": id, "accepted": true}),
        Err(e) => json!({"accepted": false, "reason": e.reason().as_str()}),
    }
}

async fn run_workflow(
    State(gw): State<GatewayHandle>,
    Extension(CorrelationId(cid)): Extension<CorrelationId>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Json<Value> {
    let run_id = format!("{name}-{}", uuid::Uuid::new_v4());
    let node = TelemetryEnvelope::new(TelemetryCase::NodeExecution, tenant(&headers))
        .with_run_id(run_id.clone())
        .with_correlation_id(cid.clone())
        .with_payload(
            json!({"node_id": "llm-1", "node_type": "llm", "status": "succeeded",
                             "duration_ms": 35, "total_tokens": 90}),
        );
    let run = TelemetryEnvelope::new(TelemetryCase::WorkflowRun, tenant(&headers))
        .with_run_id(run_id.clone())
        .with_correlation_id(cid)
        .with_payload(json!({"status": "succeeded", "duration_ms": 42, "total_tokens": 90}));
    let events = [emit(&gw, node), emit(&gw, run)];
    Json(json!({"run_id": run_id, "events": events}))
}

async fn feedback(
    State(gw): State<GatewayHandle>,
    Extension(CorrelationId(cid)): Extension<CorrelationId>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let rating = body
        .get("rating")
        .and_then(Value::as_str)
        .unwrap_or("like")
        .to_owned();
    let env = TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, tenant(&headers))
        .with_correlation_id(cid)
        .with_payload(json!({"rating": rating}));
    Json(emit(&gw, env))
}

async fn create_app(
    State(gw): State<GatewayHandle>,
    Extension(CorrelationId(cid)): Extension<CorrelationId>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let env = TelemetryEnvelope::new(TelemetryCase::AppCreated, tenant(&headers))
        .with_correlation_id(cid)
        .with_payload(json!({"app_mode": "workflow"}));
    (StatusCode::CREATED, Json(emit(&gw, env)))
}

fn arg(name: &str) -> Option<String> {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == name {
            return args.next();
        }
    }
    None
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config_file = arg("--config").map(std::path::PathBuf::from);
    let port: u16 = arg("--port")
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(8080);
    let gateway = telemetry_gateway::start(GatewayConfig::load(config_file.as_deref())?)?;

    let app = Router::new()
        .route("/workflows/{name}/run", post(run_workflow))
        .route("/feedback", post(feedback))
        .route("/apps", post(create_app))
        .layer(axum::middleware::from_fn(correlate))
        .with_state(gateway.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop_signal())
        .await?;
    let report = gateway.shutdown(Duration::from_secs(10)).await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
