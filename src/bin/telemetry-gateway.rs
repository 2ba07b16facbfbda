//! The `telemetry-gateway` command: operator tools around the library.
//!
//! ```text
//! telemetry-gateway check-config FILE
//!     Loads FILE with the TELEMETRY_GATEWAY__* environment overrides applied, validates it,
//!     and prints the effective configuration as TOML. Exit 2, naming the bad key, when it is
//!     invalid.
//! telemetry-gateway explain --endpoint URL ID
//!     Asks a running gateway's diagnostics endpoint (diagnostics.listen) what happened to an
//!     event id or to every event of a correlation id, and prints the journeys as JSON.
//!     Exit 1 when the flight recorder has nothing for ID, 2 when the endpoint cannot be asked.
//! telemetry-gateway worker --config FILE
//!     Runs a worker of the Redis Streams transport (transport.kind = "redis_streams"): reads
//!     the stream's consumer group and handles metric/log events until SIGTERM or SIGINT, then
//!     finishes and acknowledges the entries in hand (within shutdown.deadline_ms), prints the
//!     shutdown report as JSON and exits: 0 drained, 1 deadline passed, 2 bad configuration
//!     (naming the key) or start failure.
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use telemetry_gateway::GatewayConfig;

const USAGE: &str = "usage:
  telemetry-gateway check-config FILE
  telemetry-gateway explain --endpoint URL ID
  telemetry-gateway worker --config FILE";

/// How long `explain` waits for the endpoint.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check-config") => match &args[1..] {
            [file] => check_config(PathBuf::from(file)),
            _ => usage_error("check-config takes one FILE"),
        },
        Some("explain") => match &args[1..] {
            [flag, endpoint, id] if flag == "--endpoint" => explain(endpoint, id),
            _ => usage_error("explain takes --endpoint URL ID"),
        },
        Some("worker") => match &args[1..] {
            [flag, file] if flag == "--config" => worker(PathBuf::from(file)),
            _ => usage_error("worker takes --config FILE"),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command {other:?}")),
        None => usage_error("a command is needed"),
    }
}

fn usage_error(problem: &str) -> ExitCode {
    eprintln!("telemetry-gateway: {problem}\n{USAGE}");
    ExitCode::from(2)
}

fn check_config(file: PathBuf) -> ExitCode {
    if !file.is_file() {
        eprintln!("telemetry-gateway: {}: no such file", file.display());
        return ExitCode::from(2);
    }
    let cfg = match GatewayConfig::load(Some(&file)) {
        Ok(cfg) => cfg,
        Err(e) => {
            // The error names the key and what is wrong with it.
            eprintln!("telemetry-gateway: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match toml::to_string_pretty(&cfg) {
        Ok(text) => {
            println!(
                "# The effective configuration: {} with the TELEMETRY_GATEWAY__* overrides.\n",
                file.display()
            );
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telemetry-gateway: cannot print the configuration: {e}");
            ExitCode::from(2)
        }
    }
}

fn explain(endpoint: &str, id: &str) -> ExitCode {
    let mut url = match url::Url::parse(endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => {
            eprintln!(
                "telemetry-gateway: --endpoint {endpoint:?} is not an http(s) URL \
                 (for example http://127.0.0.1:9464)"
            );
            return ExitCode::from(2);
        }
    };
    // The id goes in as one path segment, percent-encoded.
    match url.path_segments_mut() {
        Ok(mut segments) => {
            segments.pop_if_empty().extend(["debug", "events", id]);
        }
        Err(()) => {
            eprintln!("telemetry-gateway: --endpoint {endpoint:?} cannot take a path");
            return ExitCode::from(2);
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("telemetry-gateway: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let answer = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(EXPLAIN_TIMEOUT)
            .build()?;
        let resp = client.get(url.clone()).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("telemetry-gateway: cannot ask {url}: {e}");
            return ExitCode::from(2);
        }
    };
    let pretty = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(body);
    match status.as_u16() {
        200 => {
            println!("{pretty}");
            ExitCode::SUCCESS
        }
        404 => {
            println!("{pretty}");
            eprintln!(
                "telemetry-gateway: {id:?} is not in the flight recorder (never seen by this \
                 gateway, or evicted: see diagnostics.recorder_events)"
            );
            ExitCode::from(1)
        }
        other => {
            eprintln!("telemetry-gateway: {url} answered {other}: {pretty}");
            ExitCode::from(2)
        }
    }
}

fn worker(file: PathBuf) -> ExitCode {
    if !file.is_file() {
        eprintln!("telemetry-gateway: {}: no such file", file.display());
        return ExitCode::from(2);
    }
    let cfg = match GatewayConfig::load(Some(&file)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("telemetry-gateway: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let _ = telemetry_gateway::logging::init(cfg.logging.format);
    let deadline = Duration::from_millis(cfg.shutdown.deadline_ms);
    let consumer = cfg.transport.consumer_name();
    let (stream, group) = (cfg.transport.stream.clone(), cfg.transport.group.clone());
    let handlers = cfg.metric_pool.pool_size;
    let worker = match telemetry_gateway::GatewayBuilder::new(cfg).start_worker() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("telemetry-gateway: the worker did not start: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "telemetry-gateway: worker {consumer} reading stream {stream:?} as group {group:?} \
         with {handlers} handlers; SIGTERM drains"
    );
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("telemetry-gateway: cannot start a runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let signalled = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok::<_, std::io::Error>("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    });
    match signalled {
        Ok(sig) => eprintln!("telemetry-gateway: {sig}: draining (deadline {deadline:?})"),
        Err(e) => eprintln!("telemetry-gateway: cannot wait for signals ({e}); draining now"),
    }
    let report = worker.shutdown_blocking(deadline);
    match serde_json::to_string(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("telemetry-gateway: cannot print the report: {e}"),
    }
    if report.deadline_exceeded {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
