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
//! telemetry-gateway slo --db FILE [--config FILE] [--since DURATION] [--json]
//!     Computes per-case indicators (event rate, error rate, p50/p95/p99 duration, drop rate)
//!     and drops by reason from a SQLite sink's file, over the last DURATION (30s, 15m, 2h, 7d)
//!     or everything, and checks the [slo.<case>] objectives of FILE. Prints a table (or JSON).
//!     Exit 0 when every objective holds, 1 when one fails (no data fails), 2 on bad input.
//! telemetry-gateway export-parquet --db FILE --out DIR
//!     Writes one snappy-compressed Parquet file per table of a SQLite sink's file
//!     (DIR/spans.parquet, DIR/log_events.parquet, DIR/metric_points.parquet) and prints the
//!     row counts as JSON. Exit 2 on bad input.
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use telemetry_gateway::GatewayConfig;

const USAGE: &str = "usage:
  telemetry-gateway check-config FILE
  telemetry-gateway explain --endpoint URL ID
  telemetry-gateway worker --config FILE
  telemetry-gateway slo --db FILE [--config FILE] [--since DURATION] [--json]
  telemetry-gateway export-parquet --db FILE --out DIR";

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
        Some("slo") => slo(&args[1..]),
        Some("export-parquet") => match &args[1..] {
            [a, db, b, out] if a == "--db" && b == "--out" => export_parquet(db, out),
            [a, out, b, db] if a == "--out" && b == "--db" => export_parquet(db, out),
            _ => usage_error("export-parquet takes --db FILE --out DIR"),
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

/// The configuration of `file` (or the defaults) with the environment overrides; on error, says
/// why (naming the key) and gives exit code 2.
fn load_config(file: Option<&std::path::Path>) -> Result<GatewayConfig, ExitCode> {
    if let Some(f) = file.filter(|f| !f.is_file()) {
        eprintln!("telemetry-gateway: {}: no such file", f.display());
        return Err(ExitCode::from(2));
    }
    GatewayConfig::load(file).map_err(|e| {
        match file {
            Some(f) => eprintln!("telemetry-gateway: {}: {e}", f.display()),
            None => eprintln!("telemetry-gateway: {e}"),
        }
        ExitCode::from(2)
    })
}

fn check_config(file: PathBuf) -> ExitCode {
    let cfg = match load_config(Some(&file)) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    // Credentials are shown as [REDACTED]: the output is meant for terminals and tickets.
    match toml::to_string_pretty(&cfg.with_credentials_hidden()) {
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
    let cfg = match load_config(Some(&file)) {
        Ok(cfg) => cfg,
        Err(code) => return code,
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

fn slo(args: &[String]) -> ExitCode {
    let mut db = None;
    let mut config = None;
    let mut since = None;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--db" => db = it.next().map(PathBuf::from),
            "--config" => config = it.next().map(PathBuf::from),
            "--since" => since = it.next().cloned(),
            "--json" => json = true,
            other => return usage_error(&format!("slo: unknown argument {other:?}")),
        }
    }
    let Some(db) = db else {
        return usage_error("slo needs --db FILE");
    };
    let cfg = match load_config(config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let since = match since.as_deref().map(telemetry_gateway::slo::parse_duration) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            eprintln!("telemetry-gateway: {e}");
            return ExitCode::from(2);
        }
        None => None,
    };
    let report = telemetry_gateway::export::sqlite::open_for_reading(&db)
        .map_err(telemetry_gateway::slo::SloError::from)
        .and_then(|c| {
            telemetry_gateway::slo::compute(
                &c,
                &cfg.export.namespace,
                since,
                std::time::SystemTime::now(),
            )
        });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("telemetry-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let results = telemetry_gateway::slo::evaluate(&report, &cfg.slo);
    let ok = results.iter().all(|r| r.ok);
    if json {
        let out = serde_json::json!({"ok": ok, "report": report, "objectives": results});
        println!("{out}");
    } else {
        println!(
            "window {:.0}s, {} events emitted, drops by reason: {:?}",
            report.window_secs, report.emitted, report.drops_by_reason
        );
        println!(
            "{:<24} {:>8} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9}",
            "case", "events", "rate/s", "errors", "p50 ms", "p95 ms", "p99 ms", "dropped"
        );
        let f = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1}"));
        for (case, i) in &report.cases {
            println!(
                "{:<24} {:>8} {:>9.3} {:>8.4} {:>9} {:>9} {:>9} {:>9}",
                case,
                i.events,
                i.event_rate,
                i.error_rate,
                f(i.p50_duration_ms),
                f(i.p95_duration_ms),
                f(i.p99_duration_ms),
                i.drop_rate.map_or("-".to_owned(), |d| format!("{d:.4}")),
            );
        }
        if !results.is_empty() {
            println!();
        }
        for r in &results {
            let op = if r.indicator == "min_event_rate" {
                ">="
            } else {
                "<="
            };
            println!(
                "{} {:<22} {:<16} {} {:<10} actual {}",
                if r.ok { "PASS" } else { "FAIL" },
                r.case,
                r.indicator,
                op,
                r.objective,
                r.actual.map_or("no data".to_owned(), |a| format!("{a:.4}")),
            );
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn export_parquet(db: &str, out: &str) -> ExitCode {
    match telemetry_gateway::export::parquet_export::export(
        std::path::Path::new(db),
        std::path::Path::new(out),
    ) {
        Ok(tables) => {
            println!("{}", serde_json::json!({ "tables": tables }));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telemetry-gateway: {e}");
            ExitCode::from(2)
        }
    }
}
