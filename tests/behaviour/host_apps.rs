//! The host-app examples, run as real processes: real HTTP requests go in, and the events must
//! arrive at an in-test OTLP receiver carrying each request's correlation id (taken from
//! `X-Correlation-ID`, or minted and returned). SIGTERM then stops the app, and its gateway's
//! shutdown report must account for every event.
//!
//! Runs the example binaries that `cargo test --all-targets` builds beside the tests (built here
//! when missing, for example when this file is run alone).

use crate::support;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

use telemetry_gateway::testing::{OtlpReceiver, Received};

struct App {
    child: Child,
    addr: SocketAddr,
    lines: Receiver<String>,
}

fn start_app(name: &str, otlp: &str, dir: &std::path::Path) -> App {
    let mut child = Command::new(support::example(name))
        .args(["--port", "0"])
        .env("TELEMETRY_GATEWAY__OTLP__ENDPOINT", otlp)
        .env(
            "TELEMETRY_GATEWAY__EXPORT__FILE_PATH",
            dir.join("out.jsonl"),
        )
        .env("TELEMETRY_GATEWAY__TRACE_BATCHER__FLUSH_INTERVAL_MS", "20")
        .env("TELEMETRY_GATEWAY__EXPORT__LOG_FLUSH_INTERVAL_MS", "20")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("{name} runs: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{name} said where it listens"));
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name}: unexpected first line {first:?}"));
    App { child, addr, lines }
}

/// One HTTP/1.1 POST: (status, lowercase headers, body).
fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, BTreeMap<String, String>, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the app");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).expect("send the request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Span names and log event names carrying correlation id `cid`.
fn with_correlation(r: &Received, cid: &str) -> (Vec<String>, Vec<String>) {
    let spans = r
        .spans
        .iter()
        .filter(|s| support::attr_text(&s.attributes, "correlation.id").as_deref() == Some(cid))
        .map(|s| s.name.clone())
        .collect();
    let logs = r
        .logs
        .iter()
        .filter(|l| support::attr_text(&l.attributes, "correlation.id").as_deref() == Some(cid))
        .map(|l| l.event_name.clone())
        .collect();
    (spans, logs)
}

fn exercise(name: &str) {
    let rx = OtlpReceiver::start();
    let dir = tempfile::tempdir().unwrap();
    let app = start_app(name, &rx.endpoint(), dir.path());
    let cid = format!("req-{name}-1");
    let with_cid = [("X-Tenant-ID", "acme"), ("X-Correlation-ID", cid.as_str())];

    let (status, headers, body) = post(app.addr, "/workflows/onboarding/run", &with_cid, "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("x-correlation-id"), Some(&cid), "echoed back");
    let (status, headers, _) = post(app.addr, "/feedback", &with_cid, r#"{"rating":"dislike"}"#);
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-correlation-id"), Some(&cid));
    // No header: one is minted and returned.
    let (status, headers, _) = post(app.addr, "/apps", &[("X-Tenant-ID", "acme")], "");
    assert_eq!(status, 201);
    let minted = headers
        .get("x-correlation-id")
        .cloned()
        .expect("a minted correlation id");
    assert!(uuid::Uuid::parse_str(&minted).is_ok(), "{minted}");
    // An unusable header is not echoed: a new id replaces it.
    let (_, headers, _) = post(
        app.addr,
        "/apps",
        &[("X-Tenant-ID", "acme"), ("X-Correlation-ID", "not ok <id>")],
        "",
    );
    let replaced = headers.get("x-correlation-id").cloned().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(&replaced).is_ok(), "{replaced}");

    let (r, ok) = rx.wait_for(Duration::from_secs(20), |r| {
        let (spans, logs) = with_correlation(r, &cid);
        let (_, minted_logs) = with_correlation(r, &minted);
        spans.len() >= 2
            && logs.iter().any(|n| n.ends_with("feedback_created"))
            && minted_logs.iter().any(|n| n.ends_with("app_created"))
    });
    let (spans, logs) = with_correlation(&r, &cid);
    assert!(ok, "{name}: spans {spans:?}, logs {logs:?}");
    let mut spans = spans;
    spans.sort();
    assert_eq!(spans, ["app.node.execution", "app.workflow.run"], "{name}");

    // SIGTERM: the app stops serving, shuts its gateway down and prints the report.
    let pid = app.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut child = app.child;
    let status = child.wait().expect("the app exits");
    assert!(status.success(), "{name} exited {status:?}");
    let report: serde_json::Value = app
        .lines
        .iter()
        .filter_map(|l| serde_json::from_str(&l).ok())
        .last()
        .unwrap_or_else(|| panic!("{name} printed its shutdown report"));
    let stats = &report["stats"];
    assert_eq!(stats["emitted"], 5, "{report}");
    assert_eq!(stats["delivered"], 5, "every event delivered: {report}");
    assert_eq!(report["deadline_exceeded"], false);
}

#[test]
fn actix_web_app_carries_each_requests_correlation_id_to_the_collector() {
    exercise("actix_web_app");
}

#[test]
fn axum_app_carries_each_requests_correlation_id_to_the_collector() {
    exercise("axum_app");
}

#[test]
fn custom_sink_takes_its_apps_spans_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(support::example("custom_sink"))
        .args(["--runs", "10", "--out"])
        .arg(dir.path())
        .env_remove("TELEMETRY_GATEWAY__OTLP__ENDPOINT")
        .output()
        .expect("custom_sink runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a summary")).expect("JSON");
    assert_eq!(summary["emitted"], 20, "{summary}");
    assert_eq!(summary["delivered"], 20, "{summary}");
    assert_eq!(summary["spans_in_custom_sink"], 10, "{summary}");
    let lines = std::fs::read_to_string(dir.path().join("support-bot-spans.jsonl")).unwrap();
    let mut runs = std::collections::BTreeSet::new();
    for line in lines.lines() {
        let span: serde_json::Value = serde_json::from_str(line).expect("a JSON span");
        assert_eq!(span["attributes"]["app.id"], "support-bot", "{span}");
        runs.insert(
            span["attributes"]["run.id"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    assert_eq!(runs.len(), 10, "one span per run of support-bot: {runs:?}");
    // The enterprise destination got both apps' runs.
    let enterprise = std::fs::read_to_string(dir.path().join("enterprise.jsonl")).unwrap();
    assert!(enterprise.contains("sales-bot") && enterprise.contains("support-bot"));
}
