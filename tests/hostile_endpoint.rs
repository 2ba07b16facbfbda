//! The diagnostics endpoint under attack (issue 14, defects 7 and 8), with real sockets:
//!
//! - connections that send nothing, or drip a header byte every few seconds, once held all 64
//!   slots for as long as they stayed, and `/healthz` answered 503 (a liveness probe would have
//!   restarted a healthy host): now health stays answerable through the flood, and the slow
//!   connections are closed after the header timeout;
//! - `/debug/events?cid=` once answered every journey of a correlation id (9,833 of them, 8.7 MB,
//!   537 MB resident under 64 concurrent requests): now one bounded page, with the total and
//!   where the next page starts.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use telemetry_gateway::{GatewayHandle, TelemetryCase, TelemetryContext, TelemetryEnvelope};

/// A GET whose client waits up to 60 s: 64 answers are built one after another on a loaded
/// machine. Returns the status.
fn slow_get(addr: SocketAddr, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    // A server that refused the connection may have closed it already: no answer.
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return 0;
    }
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn gateway() -> (GatewayHandle, SocketAddr, tempfile::TempDir) {
    let (mut cfg, dir) = support::config();
    cfg.diagnostics.listen = Some("127.0.0.1:0".into());
    cfg.export.local_output = telemetry_gateway::config::LocalOutput::Discard;
    let gw = telemetry_gateway::start(cfg).expect("starts");
    let addr = gw.diagnostics_addr().expect("the endpoint is up");
    (gw, addr, dir)
}

#[test]
fn health_stays_answerable_through_a_flood_of_idle_and_slow_connections() {
    let (gw, addr, _dir) = gateway();
    // 64 connections that never send a byte: every regular slot.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // And slow ones that drip a header byte every 1.5 s (each byte within any per-read
    // timeout, never a whole header).
    let drip: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let dripper = {
        let mut drip: Vec<TcpStream> = drip.iter().map(|s| s.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            for b in b"GET /" {
                for s in &mut drip {
                    let _ = s.write_all(&[*b]);
                }
                std::thread::sleep(Duration::from_millis(1_500));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    // Every regular slot is taken (and the drippers hold the health lane for its short
    // timeout), yet health answers within a second, as a probe that retries sees it. Before,
    // it answered 503 for as long as the idle connections stayed.
    let started = Instant::now();
    let probe = |path: &str| loop {
        let status = slow_get(addr, path);
        if status == 200 || started.elapsed() > Duration::from_secs(2) {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(probe("/healthz"), 200, "{:?}", started.elapsed());
    assert_eq!(probe("/readyz"), 200, "{:?}", started.elapsed());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The idle connections are closed by the server after the header timeout, and so are the
    // drippers: their slots come back.
    let deadline = Instant::now() + Duration::from_secs(8);
    for mut s in idle {
        s.set_read_timeout(Some(
            deadline.saturating_duration_since(Instant::now()) + Duration::from_millis(10),
        ))
        .unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf);
        assert!(
            n.is_ok(),
            "an idle connection is closed (or answered) by the server, not left open: {n:?}"
        );
    }
    let (status, body) = support::http_get(addr, "/metrics");
    assert_eq!(status, 200, "the regular slots are free again: {body}");
    assert!(body.contains("telemetry_gateway_events_emitted_total"));
    dripper.join().unwrap();
    drop(drip);
    gw.shutdown_blocking(support::DEADLINE);
}

#[test]
fn a_crowded_correlation_id_answers_one_bounded_page_at_a_time() {
    let (gw, addr, _dir) = gateway();
    let n = 3_000;
    for _ in 0..n {
        gw.emit(
            TelemetryEnvelope::new(TelemetryCase::AppCreated, TelemetryContext::tenant("acme"))
                .with_correlation_id("crowded")
                .with_payload(serde_json::json!({"note": "x".repeat(200)})),
        )
        .expect("accepted");
    }
    let end = Instant::now() + support::DEADLINE;
    while gw.stats().in_flight > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }

    let (status, body) = support::http_get(addr, "/debug/events?cid=crowded");
    assert_eq!(status, 200);
    assert!(
        body.len() < 1 << 20,
        "one answer stays under 1 MiB: {}",
        body.len()
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["journeys"].as_array().map(Vec::len), Some(100));
    assert_eq!(v["total"], n);
    assert_eq!(v["next_offset"], 100);
    // The last page, by offset.
    let (_, body) = support::http_get(addr, "/debug/events?cid=crowded&offset=2950");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["journeys"].as_array().map(Vec::len), Some(50));
    assert!(v.get("next_offset").is_none(), "{}", v["next_offset"]);
    // The handle pages the same way.
    assert_eq!(gw.explain("crowded").journeys.len(), 100);

    // 64 clients at once: answered (or told to come back), and memory stays put.
    let before = support::rss_bytes();
    let clients: Vec<_> = (0..64)
        .map(|_| std::thread::spawn(move || slow_get(addr, "/debug/events?cid=crowded")))
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let after = support::rss_bytes();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    let growth = after.saturating_sub(before);
    assert!(
        growth < 64 << 20,
        "64 concurrent debug answers grew the process by {} MiB",
        growth >> 20
    );
    gw.shutdown_blocking(support::DEADLINE);
}
