use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use tonic::{Request, Response, Status};

/// Everything the receiver has accepted so far.
#[derive(Debug, Default, Clone)]
pub struct Received {
    /// Every span, in arrival order.
    pub spans: Vec<Span>,
    /// Every log record, in arrival order.
    pub logs: Vec<LogRecord>,
    /// Every metric of every export, in arrival order (cumulative metrics repeat).
    pub metrics: Vec<Metric>,
    /// The same metrics with the `service.instance.id` of the process that sent them (empty
    /// when the resource has none), to tell several processes' cumulative series apart.
    pub metrics_by_instance: Vec<(String, Metric)>,
    /// Export requests per signal: (traces, logs, metrics).
    pub requests: (u64, u64, u64),
    /// The `authorization` metadata of the last request, if any.
    pub last_authorization: Option<String>,
    /// Every `x-*` header (gRPC metadata) of the last request, names lowercased.
    pub last_x_headers: std::collections::BTreeMap<String, String>,
    /// Trace export requests answered with a configured failure, and the spans they carried.
    pub failed_trace_requests: u64,
    /// Spans in trace requests answered with a configured failure (counted per request, so a
    /// retried batch counts again).
    pub failed_spans: u64,
    /// Spans accepted, kept or not (see [`OtlpReceiver::discard`]).
    pub span_count: u64,
    /// Log records accepted, kept or not.
    pub log_count: u64,
}

/// Which export requests a configured failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `/v1/traces` or `TraceService/Export`.
    Traces,
    /// Logs.
    Logs,
    /// Metrics.
    Metrics,
}

/// Fail `numerator` out of every `denominator` requests of a signal, deterministically.
#[derive(Debug, Clone, Copy)]
struct Plan {
    code: tonic::Code,
    numerator: u64,
    denominator: u64,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) received: Mutex<Received>,
    pub(super) fail_with: Mutex<Option<tonic::Code>>,
    plans: Mutex<[Option<Plan>; 3]>,
    delay: Mutex<std::time::Duration>,
    /// Signals whose items are counted but not kept (long runs that only need counts).
    discard: Mutex<[bool; 3]>,
    seen: [std::sync::atomic::AtomicU64; 3],
}

impl State {
    /// The configured answer for the next request of `signal`, if it is a failure.
    pub(super) fn planned_failure(&self, signal: Signal) -> Option<tonic::Code> {
        if let Some(code) = *self.fail_with.lock() {
            return Some(code);
        }
        let plan = self.plans.lock()[signal as usize]?;
        let n = self.seen[signal as usize].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        // Spread the failures evenly: request n fails when it crosses a multiple.
        let before = n * plan.numerator / plan.denominator;
        let after = (n + 1) * plan.numerator / plan.denominator;
        (after > before).then_some(plan.code)
    }

    fn delay(&self) -> std::time::Duration {
        *self.delay.lock()
    }

    fn check_signal<T>(&self, req: &Request<T>, signal: Signal, spans: u64) -> Result<(), Status> {
        let headers = req.metadata().clone().into_headers();
        self.record_headers(headers.iter().filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        }));
        match self.planned_failure(signal) {
            Some(code) => {
                if signal == Signal::Traces {
                    let mut r = self.received.lock();
                    r.failed_trace_requests += 1;
                    r.failed_spans += spans;
                }
                Err(Status::new(code, "configured failure"))
            }
            None => Ok(()),
        }
    }

    /// Keeps `authorization` and every `x-*` header of the latest request.
    pub(super) fn record_headers(&self, headers: impl Iterator<Item = (String, String)>) {
        let mut r = self.received.lock();
        let mut x = std::collections::BTreeMap::new();
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            if k == "authorization" {
                r.last_authorization = Some(v);
            } else if k.starts_with("x-") {
                x.insert(k, v);
            }
        }
        r.last_x_headers = x;
    }
}

#[derive(Debug, Clone)]
struct Svc(Arc<State>);

#[tonic::async_trait]
impl TraceService for Svc {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: u64 = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len() as u64)
            .sum();
        let delay = self.0.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.0.check_signal(&req, Signal::Traces, spans)?;
        let keep = !self.0.discard.lock()[Signal::Traces as usize];
        let mut r = self.0.received.lock();
        r.requests.0 += 1;
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                r.span_count += ss.spans.len() as u64;
                if keep {
                    r.spans.extend(ss.spans);
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Svc {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let delay = self.0.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.0.check_signal(&req, Signal::Logs, 0)?;
        let keep = !self.0.discard.lock()[Signal::Logs as usize];
        let mut r = self.0.received.lock();
        r.requests.1 += 1;
        for rl in req.into_inner().resource_logs {
            for sl in rl.scope_logs {
                r.log_count += sl.log_records.len() as u64;
                if keep {
                    r.logs.extend(sl.log_records);
                }
            }
        }
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Svc {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.check_signal(&req, Signal::Metrics, 0)?;
        let mut r = self.0.received.lock();
        r.requests.2 += 1;
        for rm in req.into_inner().resource_metrics {
            let instance = rm
                .resource
                .iter()
                .flat_map(|res| &res.attributes)
                .find(|kv| kv.key == "service.instance.id")
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for sm in rm.scope_metrics {
                r.metrics_by_instance
                    .extend(sm.metrics.iter().map(|m| (instance.clone(), m.clone())));
                r.metrics.extend(sm.metrics);
            }
        }
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// A real OTLP gRPC receiver on `127.0.0.1:<free port>`, running on its own thread and runtime
/// so it works from any test, sync or async. Stops on drop.
#[derive(Debug)]
pub struct OtlpReceiver {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Binds a free loopback port and serves OTLP/gRPC traces, logs and metrics.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Binds a free loopback port and serves OTLP/HTTP with protobuf bodies
    /// (`POST /v1/traces`, `/v1/logs`, `/v1/metrics`).
    pub fn start_http() -> Self {
        Self::start_with(true)
    }

    fn start_with(http: bool) -> Self {
        let state = Arc::new(State::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared_state = state.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => panic!("otlp receiver runtime: {e}"),
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                        Ok(l) => l,
                        Err(e) => panic!("otlp receiver bind: {e}"),
                    };
                    let _ = addr_tx.send(listener.local_addr().ok());
                    if http {
                        super::otlp_http::serve(listener, shared_state, stop_rx).await;
                        return;
                    }
                    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
                    let svc = Svc(shared_state);
                    let _ = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(svc.clone()))
                        .add_service(LogsServiceServer::new(svc.clone()))
                        .add_service(MetricsServiceServer::new(svc))
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stop_rx.await;
                        })
                        .await;
                });
            })
            .expect("spawn otlp receiver thread");
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .ok()
            .flatten()
            .expect("otlp receiver did not bind");
        OtlpReceiver {
            addr,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, for `otlp.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of everything received so far.
    pub fn received(&self) -> Received {
        self.state.received.lock().clone()
    }

    /// Makes `numerator` of every `denominator` requests of `signal` fail with `code`, spread
    /// evenly and deterministically (`None` to stop).
    pub fn fail_ratio(&self, signal: Signal, plan: Option<(tonic::Code, u64, u64)>) {
        self.state.plans.lock()[signal as usize] =
            plan.map(|(code, numerator, denominator)| Plan {
                code,
                numerator,
                denominator: denominator.max(1),
            });
    }

    /// Counts, but does not keep, the items of `signal` (for long runs that only need counts).
    pub fn discard(&self, signal: Signal) {
        self.state.discard.lock()[signal as usize] = true;
    }

    /// Answers every following export (gRPC) only after `delay`.
    pub fn set_delay(&self, delay: std::time::Duration) {
        *self.state.delay.lock() = delay;
    }

    /// Makes every following export fail with `code` (`None` to accept again).
    pub fn fail_with(&self, code: Option<tonic::Code>) {
        *self.state.fail_with.lock() = code;
    }

    /// Polls until `cond` holds for what was received, or `timeout` passes; returns the last
    /// state and whether the condition held.
    pub fn wait_for(
        &self,
        timeout: Duration,
        cond: impl Fn(&Received) -> bool,
    ) -> (Received, bool) {
        let end = Instant::now() + timeout;
        loop {
            let r = self.received();
            if cond(&r) {
                return (r, true);
            }
            if Instant::now() >= end {
                return (r, false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
