//! The `telemetry-gateway` command: operator tools around the library (cargo feature `cli`).
//!
//! `telemetry-gateway --help` lists the subcommands, `telemetry-gateway <command> --help`
//! explains one, `--version` prints the version. The arguments are parsed by clap (derive).
//!
//! Exit codes, the same for every subcommand: **0** success; **1** the answer is "no" (an
//! objective failed, an id is not in the flight recorder, a worker's drain passed its deadline);
//! **2** bad usage or bad input (a malformed argument, an invalid configuration naming the key,
//! an endpoint that cannot be asked).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use telemetry_gateway::GatewayConfig;

/// How long `explain` waits for the endpoint.
const EXPLAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Operator tools for telemetry-gateway: check a configuration, explain an event's journey,
/// run a Redis Streams worker, check service levels and export local analytics.
///
/// Configuration files are read with the TELEMETRY_GATEWAY__* environment overrides applied
/// (and the standard OTEL_* variables beneath them). Exit codes: 0 success, 1 the answer is
/// "no", 2 bad usage or bad input.
#[derive(Debug, Parser)]
#[command(name = "telemetry-gateway", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the effective configuration (file, then environment overrides) as TOML, with
    /// credentials hidden; exit 2 naming the key when it is invalid.
    CheckConfig {
        /// The TOML file; without it, the built-in defaults with the environment overrides.
        file: Option<PathBuf>,
    },
    /// Ask a running gateway what happened to an event id, or to every event of a
    /// correlation id: one line per event (time, case, id, outcome and reason).
    ///
    /// Exit 1 when the flight recorder has nothing for ID, 2 when the endpoint cannot be asked.
    Explain {
        /// The event id or correlation id.
        id: String,
        /// The gateway's diagnostics endpoint, for example http://127.0.0.1:9464. Default:
        /// `diagnostics.listen` of --config, or of the environment
        /// (TELEMETRY_GATEWAY__DIAGNOSTICS__LISTEN).
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
        /// The configuration whose `diagnostics.listen` names the endpoint.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the full journeys (every step) as JSON instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Handle metric/log events from the Redis stream (transport.kind = "redis_streams") until
    /// SIGTERM or SIGINT, then drain: finish and acknowledge the entries in hand within
    /// shutdown.deadline_ms and print the shutdown report as JSON.
    ///
    /// Exit 0 drained, 1 deadline passed, 2 bad configuration (naming the key) or start
    /// failure.
    Worker {
        /// The worker's configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Per-case service levels (event rate, error rate, p50/p95/p99 duration, drop rate) and
    /// drops by reason from a SQLite sink's file, checked against the [slo.<case>] objectives.
    ///
    /// Exit 0 when every objective holds, 1 when one fails (no data fails), 2 on bad input.
    Slo {
        /// The SQLite sink's file (`sinks.sqlite.path`).
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// The configuration with the [slo.<case>] objectives and `export.namespace`.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only the last DURATION (30s, 15m, 2h, 7d); default everything.
        #[arg(long, value_name = "DURATION")]
        since: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write one snappy-compressed Parquet file per table of a SQLite sink's file
    /// (DIR/spans.parquet, DIR/log_events.parquet, DIR/metric_points.parquet) and print the
    /// row counts as JSON. Exit 2 on bad input.
    ExportParquet {
        /// The SQLite sink's file.
        #[arg(long, value_name = "FILE")]
        db: PathBuf,
        /// The directory to write into (created when missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    // clap exits 0 for --help/--version and 2 for a usage error, as documented.
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(file.as_deref()),
        Command::Explain {
            id,
            endpoint,
            config,
            json,
        } => explain(&id, endpoint, config.as_deref(), json),
        Command::Worker { config } => worker(&config),
        Command::Slo {
            db,
            config,
            since,
            json,
        } => slo(&db, config.as_deref(), since.as_deref(), json),
        Command::ExportParquet { db, out } => export_parquet(&db, &out),
    }
}

/// Prints `problem` and gives exit code 2.
fn bad_input(problem: impl std::fmt::Display) -> ExitCode {
    eprintln!("telemetry-gateway: {problem}");
    ExitCode::from(2)
}

/// The configuration of `file` (or the defaults) with the environment overrides; on error, says
/// why (naming the key) and gives exit code 2.
fn load_config(file: Option<&Path>) -> Result<GatewayConfig, ExitCode> {
    if let Some(f) = file.filter(|f| !f.is_file()) {
        return Err(bad_input(format!("{}: no such file", f.display())));
    }
    GatewayConfig::load(file).map_err(|e| match file {
        Some(f) => bad_input(format!("{}: {e}", f.display())),
        None => bad_input(e),
    })
}

fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| bad_input(format!("cannot start a runtime: {e}")))
}

fn check_config(file: Option<&Path>) -> ExitCode {
    let cfg = match load_config(file) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    // Credentials are shown as [REDACTED]: the output is meant for terminals and tickets.
    match toml::to_string_pretty(&cfg.with_credentials_hidden()) {
        Ok(text) => {
            let source = file.map_or("the built-in defaults".to_owned(), |f| {
                f.display().to_string()
            });
            println!(
                "# The effective configuration: {source} with the TELEMETRY_GATEWAY__* \
                 overrides.\n"
            );
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => bad_input(format!("cannot print the configuration: {e}")),
    }
}

/// The endpoint `explain` asks: `--endpoint`, else `diagnostics.listen` (a wildcard address
/// asked on loopback).
fn explain_endpoint(endpoint: Option<String>, config: Option<&Path>) -> Result<String, ExitCode> {
    if let Some(e) = endpoint {
        return Ok(e);
    }
    let cfg = load_config(config)?;
    let Some(listen) = cfg.diagnostics.listen else {
        return Err(bad_input(
            "no --endpoint, and diagnostics.listen is not set (in --config FILE or \
             TELEMETRY_GATEWAY__DIAGNOSTICS__LISTEN)",
        ));
    };
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| {
        bad_input(format!(
            "diagnostics.listen {listen:?} is not an address: {e}"
        ))
    })?;
    let host = match addr.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
        ip if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        std::net::IpAddr::V4(ip) => ip.to_string(),
    };
    Ok(format!("http://{host}:{}", addr.port()))
}

fn explain(id: &str, endpoint: Option<String>, config: Option<&Path>, json: bool) -> ExitCode {
    let endpoint = match explain_endpoint(endpoint, config) {
        Ok(e) => e,
        Err(code) => return code,
    };
    let mut url = match url::Url::parse(&endpoint) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => {
            return bad_input(format!(
                "--endpoint {endpoint:?} is not an http(s) URL (for example http://127.0.0.1:9464)"
            ))
        }
    };
    // The id goes in as one path segment, percent-encoded.
    match url.path_segments_mut() {
        Ok(mut segments) => {
            segments.pop_if_empty().extend(["debug", "events", id]);
        }
        Err(()) => return bad_input(format!("--endpoint {endpoint:?} cannot take a path")),
    }
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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
        Err(e) => return bad_input(format!("cannot ask {url}: {e}")),
    };
    let parsed = serde_json::from_str::<serde_json::Value>(&body).ok();
    let pretty = parsed
        .as_ref()
        .and_then(|v| serde_json::to_string_pretty(v).ok())
        .unwrap_or_else(|| body.clone());
    match status.as_u16() {
        200 => {
            match (&parsed, json) {
                (Some(v), false) => print!("{}", summary(v)),
                _ => println!("{pretty}"),
            }
            ExitCode::SUCCESS
        }
        404 => {
            if json {
                println!("{pretty}");
            }
            eprintln!(
                "telemetry-gateway: {id:?} is not in the flight recorder (never seen by this \
                 gateway, or evicted: see diagnostics.recorder_events)"
            );
            ExitCode::from(1)
        }
        other => bad_input(format!("{url} answered {other}: {pretty}")),
    }
}

/// One line per journey of an explanation: first step's time, case, event id, outcome (and
/// its reason), and the correlation id when the query was not the event id itself.
fn summary(explanation: &serde_json::Value) -> String {
    let empty = Vec::new();
    let journeys = explanation["journeys"].as_array().unwrap_or(&empty);
    let query = explanation["query"].as_str().unwrap_or_default();
    let mut out = String::new();
    for j in journeys {
        let steps = j["steps"].as_array().unwrap_or(&empty);
        let stage = |s: &serde_json::Value| s["stage"].as_str().unwrap_or_default().to_owned();
        let final_stage = |s: &&serde_json::Value| {
            matches!(
                s["stage"].as_str(),
                Some("delivered" | "dropped" | "refused")
            )
        };
        // A delivered copy is the event's outcome (a re-send's duplicate drop stays a step).
        let outcome = steps
            .iter()
            .find(|s| s["stage"] == "delivered")
            .or_else(|| steps.iter().rev().find(final_stage));
        let mut text = match outcome {
            Some(s) => match s["reason"].as_str() {
                Some(reason) => format!("{} ({reason})", stage(s)),
                None => stage(s),
            },
            None => format!(
                "in flight (last step: {})",
                steps.last().map(stage).unwrap_or_else(|| "none".into())
            ),
        };
        // Drops of other copies (a duplicate re-send) and degrades are worth a word.
        for s in steps {
            let st = stage(s);
            let is_outcome = outcome.is_some_and(|o| std::ptr::eq(o, s));
            if !is_outcome && matches!(st.as_str(), "dropped" | "degraded" | "refused") {
                text.push_str(&format!(
                    "; also {st} ({})",
                    s["reason"].as_str().unwrap_or("no reason")
                ));
            }
        }
        let at = steps.first().and_then(|s| s["at"].as_str()).unwrap_or("-");
        let event_id = j["event_id"].as_str().unwrap_or_default();
        let correlation = j["correlation_id"].as_str().unwrap_or_default();
        let via = if query != event_id && query != correlation {
            format!("  (correlation {query:?}, first sent as {correlation:?})")
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{at}  {case}  {event_id}  {text}{via}\n",
            case = j["case"].as_str().unwrap_or_default(),
        ));
    }
    out
}

fn worker(file: &Path) -> ExitCode {
    let cfg = match load_config(Some(file)) {
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
        Err(e) => return bad_input(format!("the worker did not start: {e}")),
    };
    eprintln!(
        "telemetry-gateway: worker {consumer} reading stream {stream:?} as group {group:?} \
         with {handlers} handlers; SIGTERM drains"
    );
    let rt = match current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
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

fn slo(db: &Path, config: Option<&Path>, since: Option<&str>, json: bool) -> ExitCode {
    let cfg = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let since = match since.map(telemetry_gateway::slo::parse_duration) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return bad_input(e),
        None => None,
    };
    let report = telemetry_gateway::export::sqlite::open_for_reading(db)
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
        Err(e) => return bad_input(e),
    };
    let results = telemetry_gateway::slo::evaluate(&report, &cfg.slo);
    let ok = results.iter().all(|r| r.ok);
    if json {
        let out = serde_json::json!({"ok": ok, "report": report, "objectives": results});
        println!("{out}");
    } else {
        print_slo_table(&report, &results);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_slo_table(
    report: &telemetry_gateway::slo::SloReport,
    results: &[telemetry_gateway::slo::ObjectiveResult],
) {
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
    for r in results {
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

fn export_parquet(db: &Path, out: &Path) -> ExitCode {
    match telemetry_gateway::export::parquet_export::export(db, out) {
        Ok(tables) => {
            println!("{}", serde_json::json!({ "tables": tables }));
            ExitCode::SUCCESS
        }
        Err(e) => bad_input(e),
    }
}
