//! The HTTP/protobuf side of the test receiver: a minimal HTTP/1.1 server (keep-alive,
//! `content-length` bodies, as the OTLP exporters send them) that decodes real OTLP protobuf.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::otlp_receiver::{Signal, State};

/// The most one request may carry; larger ones are answered 413.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                if let Ok((sock, _)) = accepted {
                    tokio::spawn(connection(sock, state.clone()));
                }
            }
        }
    }
}

fn http_status(code: tonic::Code) -> (u16, &'static str) {
    match code {
        tonic::Code::InvalidArgument => (400, "Bad Request"),
        tonic::Code::ResourceExhausted => (429, "Too Many Requests"),
        tonic::Code::Unavailable => (503, "Service Unavailable"),
        _ => (500, "Internal Server Error"),
    }
}

async fn connection(mut sock: TcpStream, state: Arc<State>) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        // Read the head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let path = request_line
            .split(' ')
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let mut len = 0usize;
        let mut headers = Vec::new();
        for l in lines {
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    len = v.trim().parse().unwrap_or(0);
                }
                headers.push((k, v.trim().to_owned()));
            }
        }
        if len > MAX_BODY {
            let _ = sock.write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
            return;
        }
        while buf.len() < head_end + len {
            let mut chunk = vec![0u8; 64 * 1024];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);

        state.record_headers(headers.into_iter());
        let signal = match path.as_str() {
            "/v1/logs" => Signal::Logs,
            "/v1/metrics" => Signal::Metrics,
            _ => Signal::Traces,
        };
        let failure = state.planned_failure(signal);
        let (code, reason) = match failure {
            Some(c) => http_status(c),
            None => match record(&state, &path, &body) {
                Ok(()) => (200, "OK"),
                Err(()) => (400, "Bad Request"),
            },
        };
        let resp = format!(
            "HTTP/1.1 {code} {reason}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n"
        );
        if sock.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn record(state: &State, path: &str, body: &[u8]) -> Result<(), ()> {
    let mut r = state.received.lock();
    match path {
        "/v1/traces" => {
            let req = ExportTraceServiceRequest::decode(body).map_err(|_| ())?;
            r.requests.0 += 1;
            for rs in req.resource_spans {
                for ss in rs.scope_spans {
                    r.span_count += ss.spans.len() as u64;
                    r.spans.extend(ss.spans);
                }
            }
        }
        "/v1/logs" => {
            let req = ExportLogsServiceRequest::decode(body).map_err(|_| ())?;
            r.requests.1 += 1;
            for rl in req.resource_logs {
                for sl in rl.scope_logs {
                    r.log_count += sl.log_records.len() as u64;
                    r.logs.extend(sl.log_records);
                }
            }
        }
        "/v1/metrics" => {
            let req = ExportMetricsServiceRequest::decode(body).map_err(|_| ())?;
            r.requests.2 += 1;
            for rm in req.resource_metrics {
                for sm in rm.scope_metrics {
                    r.metrics.extend(sm.metrics);
                }
            }
        }
        _ => return Err(()),
    }
    Ok(())
}
