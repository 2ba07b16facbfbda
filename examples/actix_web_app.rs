//! An actix-web service whose handlers emit telemetry through the gateway.
//!
//! ```text
//! TELEMETRY_GATEWAY__OTLP__ENDPOINT=http://127.0.0.1:4317 \
//!     cargo run --example actix_web_app --features testing -- [--port 8080]
//! curl -X POST -H 'X-Tenant-ID: acme' -H 'X-Correlation-ID: req-1' localhost:8080/workflows/onboarding/run
//! curl -X POST -H 'X-Tenant-ID: acme' -H 'X-Correlation-ID: req-1' -d '{"rating":"like"}' localhost:8080/feedback
//! curl -X POST -H 'X-Tenant-ID: acme' localhost:8080/apps
//! ```
//!
//! - The configuration is `GatewayConfig::load(None)`: defaults plus `TELEMETRY_GATEWAY__*`
//!   environment overrides (`--config FILE` adds a file).
//! - A middleware takes the request's `X-Correlation-ID` (or mints one: see
//!   `correlation::accept_or_mint`), puts it on every event the request emits, and returns it in
//!   the response, so one request's events are found together (`explain`, or the backend).
//! - Handlers call `GatewayHandle::emit`, which never waits: a refusal is counted by the gateway
//!   and does not fail the request.
//! - Prints `listening on ADDR` once serving (with `--port 0`, the port picked), and on SIGINT or
//!   SIGTERM stops taking requests, shuts the gateway down within 10 s and prints the shutdown
//!   report as one JSON line.

use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;
use telemetry_gateway::correlation::{accept_or_mint, CORRELATION_HEADER};
use telemetry_gateway::{
    GatewayConfig, GatewayHandle, TelemetryCase, TelemetryContext, TelemetryEnvelope,
};

/// A request's correlation id, set by the middleware.
#[derive(Debug, Clone)]
struct CorrelationId(String);

/// The tenant of a request: `X-Tenant-ID`, or `demo`.
fn tenant(req: &HttpRequest) -> TelemetryContext {
    let tenant = req
        .headers()
        .get("x-tenant-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("demo");
    TelemetryContext::tenant(tenant).app("actix-demo")
}

fn correlation(req: &HttpRequest) -> String {
    req.extensions()
        .get::<CorrelationId>()
        .map(|c| c.0.clone())
        .unwrap_or_else(|| accept_or_mint(None))
}

/// Emits, and says what happened without failing the request.
fn emit(gw: &GatewayHandle, env: TelemetryEnvelope) -> serde_json::Value {
    match gw.emit(env) {
        Ok(id) => json!({"event_id": id, "accepted": true}),
        Err(e) => json!({"accepted": false, "reason": e.reason().as_str()}),
    }
}

async fn run_workflow(
    gw: web::Data<GatewayHandle>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let cid = correlation(&req);
    let run_id = format!("{}-{}", path.into_inner(), uuid::Uuid::new_v4());
    let node = TelemetryEnvelope::new(TelemetryCase::NodeExecution, tenant(&req))
        .with_run_id(run_id.clone())
        .with_correlation_id(cid.clone())
        .with_payload(
            json!({"node_id": "llm-1", "node_type": "llm", "status": "succeeded",
                             "duration_ms": 35, "total_tokens": 90}),
        );
    let run = TelemetryEnvelope::new(TelemetryCase::WorkflowRun, tenant(&req))
        .with_run_id(run_id.clone())
        .with_correlation_id(cid)
        .with_payload(json!({"status": "succeeded", "duration_ms": 42, "total_tokens": 90}));
    let events = [emit(&gw, node), emit(&gw, run)];
    HttpResponse::Ok().json(json!({"run_id": run_id, "events": events}))
}

async fn feedback(
    gw: web::Data<GatewayHandle>,
    req: HttpRequest,
    body: web::Json<serde_json::Value>,
) -> HttpResponse {
    let rating = body
        .get("rating")
        .and_then(|r| r.as_str())
        .unwrap_or("like")
        .to_owned();
    let env = TelemetryEnvelope::new(TelemetryCase::FeedbackCreated, tenant(&req))
        .with_correlation_id(correlation(&req))
        .with_payload(json!({"rating": rating}));
    HttpResponse::Ok().json(emit(&gw, env))
}

async fn create_app(gw: web::Data<GatewayHandle>, req: HttpRequest) -> HttpResponse {
    let env = TelemetryEnvelope::new(TelemetryCase::AppCreated, tenant(&req))
        .with_correlation_id(correlation(&req))
        .with_payload(json!({"app_mode": "workflow"}));
    HttpResponse::Created().json(emit(&gw, env))
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

#[actix_web::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config_file = arg("--config").map(std::path::PathBuf::from);
    let port: u16 = arg("--port")
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(8080);
    let gateway = telemetry_gateway::start(GatewayConfig::load(config_file.as_deref())?)?;

    let gw = gateway.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(gw.clone()))
            // Take or mint the correlation id; return it on every response.
            .wrap_fn(|req, srv| {
                let offered = req
                    .headers()
                    .get(CORRELATION_HEADER)
                    .and_then(|v| v.to_str().ok());
                let cid = accept_or_mint(offered);
                req.extensions_mut().insert(CorrelationId(cid.clone()));
                let fut = srv.call(req);
                async move {
                    let mut res: ServiceResponse = fut.await?;
                    if let Ok(v) = HeaderValue::from_str(&cid) {
                        res.headers_mut()
                            .insert(HeaderName::from_static(CORRELATION_HEADER), v);
                    }
                    Ok(res)
                }
            })
            .route("/workflows/{name}/run", web::post().to(run_workflow))
            .route("/feedback", web::post().to(feedback))
            .route("/apps", web::post().to(create_app))
    })
    .workers(2)
    .shutdown_timeout(5)
    .bind(("127.0.0.1", port))?;
    for addr in server.addrs() {
        println!("listening on {addr}");
    }
    // actix-web stops on SIGINT/SIGTERM and `run` returns once in-flight requests are done.
    server.run().await?;
    // Then the gateway: everything emitted is delivered or counted, within the deadline.
    let report = gateway.shutdown(Duration::from_secs(10)).await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
