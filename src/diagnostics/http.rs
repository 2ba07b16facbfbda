//! The optional diagnostics endpoint (`diagnostics.listen`, off by default, loopback unless
//! `diagnostics.allow_non_loopback`).
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text exposition of the self-metrics |
//! | `GET /healthz` | 200 while the actor system runs, else 503; JSON body |
//! | `GET /readyz` | 200 when ready, else 503 with the reasons; JSON body |
//! | `GET /debug/events?cid=<correlation id>` | the journeys of that action (flight recorder) |
//! | `GET /debug/events/<event id or correlation id>` | the journey(s) of that id |
//!
//! Served by hyper on the export runtime, one task per connection, HTTP/1.1. Only `GET` is
//! answered; the server reads no request body and holds nothing but the diagnostics probes, so it
//! can never keep the gateway alive or hold back its shutdown.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::probes::Probes;

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(v).unwrap_or_else(|_| "{}".into());
    respond(status, "application/json", body)
}

/// Percent-decodes a query or path component (ids are ASCII; anything odd is kept as is).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            // Bytes, not a str slice: untrusted input may put a multi-byte char here.
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(probes: &Probes, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let path = req.uri().path();
    match path {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            super::prometheus::render(&probes.snapshot()),
        ),
        "/healthz" => {
            let r = probes.readiness();
            let status = if r.live {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &serde_json::json!({ "live": r.live }))
        }
        "/readyz" => {
            let r = probes.readiness();
            let status = if r.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &r)
        }
        "/debug/events" => {
            let cid = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("cid="))
                .map(decode);
            match cid {
                Some(cid) if !cid.is_empty() => explain(probes, &cid),
                _ => respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "use /debug/events?cid=<correlation id> or /debug/events/<event id>\n".into(),
                ),
            }
        }
        p if p.starts_with("/debug/events/") => {
            let id = decode(&p["/debug/events/".len()..]);
            explain(probes, &id)
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn explain(probes: &Probes, id: &str) -> Response<Full<Bytes>> {
    let e = probes.counters.recorder.explain(id);
    if e.journeys.is_empty() {
        let body = serde_json::json!({
            "query": e.query,
            "journeys": [],
            "note": "not in the flight recorder: never seen, or evicted (diagnostics.recorder_events)",
        });
        return json(StatusCode::NOT_FOUND, &body);
    }
    json(StatusCode::OK, &e)
}

/// Connections served at once; beyond it a connection is answered 503 and closed, so a client
/// flood cannot grow the server without bound.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// Serves until `stop` fires or the runtime shuts down.
pub(crate) async fn serve(
    listener: TcpListener,
    probes: Arc<Probes>,
    mut stop: oneshot::Receiver<()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            // No task for a refused connection: one non-blocking write, then close.
            let busy = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
            let _ = stream.try_write(busy);
            continue;
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = route(&probes, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("req%2D1"), "req-1");
        assert_eq!(decode("a+b"), "a b");
        assert_eq!(decode("bad%zz"), "bad%zz");
        assert_eq!(decode("end%"), "end%");
        assert_eq!(
            decode("%é"),
            "%é",
            "a multi-byte char after % must not panic"
        );
    }
}
