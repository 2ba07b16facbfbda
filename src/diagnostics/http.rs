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
//!
//! **Availability under a flood** (issue 14, defect 7). A connection is one request (no
//! keep-alive), its header must arrive within [`HEADER_READ_TIMEOUT`] and the whole connection
//! lasts at most [`CONNECTION_LIFETIME`], so idle or slow-dripping sockets free their slot within
//! seconds. When all [`MAX_CONNECTIONS`] slots are taken anyway, a small health lane
//! ([`HEALTH_LANE`] slots, [`HEALTH_LANE_TIMEOUT`] each) still reads the request line and answers
//! `/healthz` and `/readyz`; anything else gets 503. A liveness probe therefore never restarts a
//! healthy host because of a connection flood.
//!
//! **Bounded debug answers** (defect 8). `/debug/events` answers one page of at most
//! [`MAX_JOURNEYS_PER_ANSWER`] journeys (`total` and `next_offset` say what was left out; ask
//! again with `&offset=`), and at most [`MAX_DEBUG_ANSWERS`] are built at once (503 beyond).

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
use super::recorder::MAX_JOURNEYS_PER_ANSWER;

/// The longest a client may take to send a request's header.
pub(crate) const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The longest one connection lives, whatever it does.
pub(crate) const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(10);
/// Connections the health lane serves at once when every regular slot is taken.
pub(crate) const HEALTH_LANE: usize = 8;
/// The longest a health-lane connection may take to send its request line.
pub(crate) const HEALTH_LANE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// `/debug/events` answers built at once; beyond it a request is answered 503.
pub(crate) const MAX_DEBUG_ANSWERS: usize = 4;

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

/// Percent-decodes a query or path component, `+` as a space (ids are ASCII; anything odd, a
/// lone `%` or bad hex, is kept as is; bytes that are not UTF-8 are replaced).
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// The value of `name` in a query string, percent-decoded.
fn query_param(req: &Request<Incoming>, name: &str) -> Option<String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .map(decode)
}

/// The answer to `/healthz` or `/readyz` (`None` for any other path): its status and JSON
/// body, served by hyper and by the health lane alike.
fn probe_answer(probes: &Probes, path: &str) -> Option<(StatusCode, String)> {
    let r = probes.readiness();
    let (ok, body) = match path {
        "/healthz" => (
            r.live,
            serde_json::to_string_pretty(&serde_json::json!({ "live": r.live })),
        ),
        "/readyz" => (r.ready, serde_json::to_string_pretty(&r)),
        _ => return None,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Some((status, body.unwrap_or_else(|_| "{}".into())))
}

fn route(
    probes: &Probes,
    debug_slots: &tokio::sync::Semaphore,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
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
        "/healthz" | "/readyz" => match probe_answer(probes, path) {
            Some((status, body)) => respond(status, "application/json", body),
            None => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        },
        "/debug/events" => {
            let cid = query_param(req, "cid");
            match cid {
                Some(cid) if !cid.is_empty() => explain(probes, debug_slots, req, &cid),
                _ => respond(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "use /debug/events?cid=<correlation id> or /debug/events/<event id>\n".into(),
                ),
            }
        }
        p if p.starts_with("/debug/events/") => {
            let id = decode(&p["/debug/events/".len()..]);
            explain(probes, debug_slots, req, &id)
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn explain(
    probes: &Probes,
    debug_slots: &tokio::sync::Semaphore,
    req: &Request<Incoming>,
    id: &str,
) -> Response<Full<Bytes>> {
    let Ok(_slot) = debug_slots.try_acquire() else {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{MAX_DEBUG_ANSWERS} debug answers are being built; try again\n"),
        );
    };
    let offset = query_param(req, "offset")
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(0);
    let e = probes
        .counters
        .recorder
        .explain_page(id, offset, MAX_JOURNEYS_PER_ANSWER);
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
    let health_lane = Arc::new(tokio::sync::Semaphore::new(HEALTH_LANE));
    let debug_slots = Arc::new(tokio::sync::Semaphore::new(MAX_DEBUG_ANSWERS));
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            match health_lane.clone().try_acquire_owned() {
                Ok(lane) => {
                    let probes = probes.clone();
                    tokio::spawn(async move {
                        let _lane = lane;
                        let _ = tokio::time::timeout(
                            HEALTH_LANE_TIMEOUT,
                            answer_health_only(stream, &probes),
                        )
                        .await;
                    });
                }
                Err(_) => {
                    // No task for a refused connection: one non-blocking write, then close.
                    let _ = stream.try_write(BUSY);
                }
            }
            continue;
        };
        let probes = probes.clone();
        let debug_slots = debug_slots.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = route(&probes, &debug_slots, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// The health lane: reads the request line only, answers `/healthz` and `/readyz`, and 503 to
/// anything else, then closes.
async fn answer_health_only(mut stream: tokio::net::TcpStream, probes: &Probes) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // The whole header (up to 1 KiB), so that closing does not reset a connection whose
    // request was not read.
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf[len..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => len += n,
        }
    }
    let line = String::from_utf8_lossy(&buf[..len]);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next(), parts.next());
    let answer = match (method, path) {
        (Some("GET"), Some(path)) => probe_answer(probes, path),
        _ => None,
    };
    let Some((status, body)) = answer else {
        let _ = stream.write_all(BUSY).await;
        let _ = stream.shutdown().await;
        return;
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
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
