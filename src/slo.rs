//! Service-level indicators from the SQLite sink's data, and a pass/fail check against the
//! objectives declared under `[slo.<case>]` (`telemetry-gateway slo`, docs/local-analytics.md).
//!
//! Per case, over a window (the last `--since`, or everything stored):
//!
//! - **events** and **event rate**: rows of the `spans` table for a trace case; rows of
//!   `log_events` named `{namespace}.{case}` (or degraded) for a metric/log case;
//! - **error rate**: spans with status `error`, or log events of severity `ERROR`;
//! - **p50 / p95 / p99 duration**: nearest-rank percentiles of `spans.duration_ms` (a
//!   metric/log case has no duration);
//! - **drop rate**: dropped ÷ received, from the gateway's own `telemetry_gateway.events.by_case`
//!   points (cumulative: the increase over the window).
//!
//! And for the gateway as a whole, **drops by reason**: the increase of
//! `telemetry_gateway.events.dropped` per reason, over the increase of `...events.emitted`.
//! The cumulative counters are those of one gateway process (the file's writer); increases are
//! taken from the first point in the window, or from zero when the process started inside it.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::config::SloSection;

/// Why the indicators could not be computed (bad input: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum SloError {
    /// The database could not be read.
    #[error(transparent)]
    Db(#[from] crate::export::sqlite::SqliteError),
    /// A query failed.
    #[error("reading the database: {0}")]
    Query(#[from] rusqlite::Error),
    /// `--since` is not a duration.
    #[error("--since {0:?} is not a duration (for example 30s, 15m, 2h, 7d)")]
    Since(String),
}

/// The indicators of one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseIndicators {
    /// Events in the window.
    pub events: u64,
    /// Events per second over the window.
    pub event_rate: f64,
    /// Failed ÷ events (0 when there are none).
    pub error_rate: f64,
    /// Median duration (ms); none for a metric/log case.
    pub p50_duration_ms: Option<f64>,
    /// 95th percentile duration (ms).
    pub p95_duration_ms: Option<f64>,
    /// 99th percentile duration (ms).
    pub p99_duration_ms: Option<f64>,
    /// Dropped ÷ received by the gateway, when its counters were stored.
    pub drop_rate: Option<f64>,
}

/// Every indicator of a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SloReport {
    /// The window's length (s).
    pub window_secs: f64,
    /// Per case.
    pub cases: BTreeMap<String, CaseIndicators>,
    /// Gateway-wide: events dropped per reason in the window.
    pub drops_by_reason: BTreeMap<String, u64>,
    /// Gateway-wide: events emitted in the window (0 when not stored).
    pub emitted: u64,
}

/// One objective checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectiveResult {
    /// The case.
    pub case: String,
    /// The indicator (the `[slo.<case>]` key).
    pub indicator: &'static str,
    /// The objective's value.
    pub objective: f64,
    /// The measured value; none when there was no data.
    pub actual: Option<f64>,
    /// Whether it holds (no data never holds).
    pub ok: bool,
}

/// Parses `30s`, `15m`, `2h`, `7d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, SloError> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = num.parse().map_err(|_| SloError::Since(s.to_owned()))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(SloError::Since(s.to_owned())),
    };
    if secs == 0 {
        return Err(SloError::Since(s.to_owned()));
    }
    Ok(Duration::from_secs(secs))
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

/// The increase of the cumulative series `name` over `[from, to]`, per attribute set (its JSON
/// text), from the points stored in `metric_points`.
fn increase(
    c: &Connection,
    name: &str,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, u64>, SloError> {
    let first_ever: Option<i64> = c.query_row(
        "SELECT min(time_unix_nano) FROM metric_points WHERE name = ?1",
        params![name],
        |r| r.get(0),
    )?;
    let started_inside = first_ever.is_some_and(|t| t >= from);
    let mut stmt = c.prepare(
        "SELECT attributes, min(value), max(value) FROM metric_points \
         WHERE name = ?1 AND time_unix_nano BETWEEN ?2 AND ?3 GROUP BY attributes",
    )?;
    let rows = stmt.query_map(params![name, from, to], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<f64>>(1)?,
            r.get::<_, Option<f64>>(2)?,
        ))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (attrs, lo, hi) = row?;
        let (lo, hi) = (lo.unwrap_or(0.0), hi.unwrap_or(0.0));
        let inc = if started_inside { hi } else { hi - lo };
        out.insert(attrs, inc.max(0.0) as u64);
    }
    Ok(out)
}

/// Computes the indicators of the window ending `now` (`since`: its length; none: all data).
pub fn compute(
    c: &Connection,
    namespace: &str,
    since: Option<Duration>,
    now: SystemTime,
) -> Result<SloReport, SloError> {
    let to = crate::export::sqlite::unix_nanos(now);
    let from = match since {
        Some(d) => to - d.as_nanos() as i64,
        None => {
            let first: Option<i64> = c.query_row(
                "SELECT min(t) FROM (SELECT min(time_unix_nano) AS t FROM spans \
                 UNION ALL SELECT min(time_unix_nano) FROM log_events \
                 UNION ALL SELECT min(time_unix_nano) FROM metric_points)",
                [],
                |r| r.get(0),
            )?;
            first.unwrap_or(to)
        }
    };
    let window_secs = match since {
        Some(d) => d.as_secs_f64(),
        None => ((to - from) as f64 / 1e9).max(1.0),
    };
    let mut cases: BTreeMap<String, CaseIndicators> = BTreeMap::new();
    // Trace cases: spans.
    let mut durations: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    {
        let mut stmt = c.prepare(
            "SELECT case_name, duration_ms, status FROM spans \
             WHERE case_name IS NOT NULL AND time_unix_nano BETWEEN ?1 AND ?2",
        )?;
        let rows = stmt.query_map(params![from, to], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (case, d, status) = row?;
            durations.entry(case.clone()).or_default().push(d);
            if status == "error" {
                *errors.entry(case).or_default() += 1;
            }
        }
    }
    for (case, mut d) in durations {
        d.sort_by(|a, b| a.total_cmp(b));
        let n = d.len() as u64;
        let e = errors.get(&case).copied().unwrap_or(0);
        cases.insert(
            case,
            CaseIndicators {
                events: n,
                event_rate: n as f64 / window_secs,
                error_rate: e as f64 / n as f64,
                p50_duration_ms: percentile(&d, 50.0),
                p95_duration_ms: percentile(&d, 95.0),
                p99_duration_ms: percentile(&d, 99.0),
                drop_rate: None,
            },
        );
    }
    // Metric/log cases: their own log events (a trace case's companion records are not
    // counted again).
    {
        let mut stmt = c.prepare(
            "SELECT case_name, count(*), sum(severity = 'ERROR') FROM log_events \
             WHERE case_name IS NOT NULL AND time_unix_nano BETWEEN ?1 AND ?2 \
             AND (event_name = ?3 || '.' || case_name OR event_name = ?3 || '.event.degraded') \
             GROUP BY case_name",
        )?;
        let rows = stmt.query_map(params![from, to, namespace], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        for row in rows {
            let (case, n, e) = row?;
            if cases.contains_key(&case) {
                continue;
            }
            let n = n.max(0) as u64;
            cases.insert(
                case,
                CaseIndicators {
                    events: n,
                    event_rate: n as f64 / window_secs,
                    error_rate: e.unwrap_or(0).max(0) as f64 / (n.max(1)) as f64,
                    p50_duration_ms: None,
                    p95_duration_ms: None,
                    p99_duration_ms: None,
                    drop_rate: None,
                },
            );
        }
    }
    // Drops per case, from the gateway's own counters.
    let by_case = increase(c, "telemetry_gateway.events.by_case", from, to)?;
    let mut received: BTreeMap<String, u64> = BTreeMap::new();
    let mut dropped: BTreeMap<String, u64> = BTreeMap::new();
    for (attrs, inc) in by_case {
        let v: serde_json::Value = serde_json::from_str(&attrs).unwrap_or_default();
        let (Some(case), Some(outcome)) = (v["case"].as_str(), v["outcome"].as_str()) else {
            continue;
        };
        match outcome {
            "received" => *received.entry(case.to_owned()).or_default() += inc,
            "dropped" => *dropped.entry(case.to_owned()).or_default() += inc,
            _ => {}
        }
    }
    for (case, r) in &received {
        if *r == 0 {
            continue;
        }
        let d = dropped.get(case).copied().unwrap_or(0);
        let ind = cases.entry(case.clone()).or_insert(CaseIndicators {
            events: 0,
            event_rate: 0.0,
            error_rate: 0.0,
            p50_duration_ms: None,
            p95_duration_ms: None,
            p99_duration_ms: None,
            drop_rate: None,
        });
        ind.drop_rate = Some(d as f64 / *r as f64);
    }
    // Gateway-wide drops by reason.
    let mut drops_by_reason = BTreeMap::new();
    for (attrs, inc) in increase(c, "telemetry_gateway.events.dropped", from, to)? {
        let v: serde_json::Value = serde_json::from_str(&attrs).unwrap_or_default();
        if let Some(reason) = v["reason"].as_str() {
            if inc > 0 {
                *drops_by_reason.entry(reason.to_owned()).or_default() += inc;
            }
        }
    }
    let emitted = increase(c, "telemetry_gateway.events.emitted", from, to)?
        .values()
        .sum();
    Ok(SloReport {
        window_secs,
        cases,
        drops_by_reason,
        emitted,
    })
}

/// Checks every objective in `objectives` against `report`.
pub fn evaluate(
    report: &SloReport,
    objectives: &BTreeMap<String, SloSection>,
) -> Vec<ObjectiveResult> {
    let mut out = Vec::new();
    for (case, o) in objectives {
        let ind = report.cases.get(case);
        let mut check = |indicator: &'static str,
                         objective: Option<f64>,
                         actual: Option<f64>,
                         at_most: bool| {
            if let Some(objective) = objective {
                let ok = match actual {
                    Some(a) if at_most => a <= objective,
                    Some(a) => a >= objective,
                    None => false,
                };
                out.push(ObjectiveResult {
                    case: case.clone(),
                    indicator,
                    objective,
                    actual,
                    ok,
                });
            }
        };
        let has_events = ind.is_some_and(|i| i.events > 0);
        check(
            "p50_duration_ms",
            o.p50_duration_ms,
            ind.and_then(|i| i.p50_duration_ms),
            true,
        );
        check(
            "p95_duration_ms",
            o.p95_duration_ms,
            ind.and_then(|i| i.p95_duration_ms),
            true,
        );
        check(
            "p99_duration_ms",
            o.p99_duration_ms,
            ind.and_then(|i| i.p99_duration_ms),
            true,
        );
        check(
            "error_rate",
            o.error_rate,
            ind.filter(|_| has_events).map(|i| i.error_rate),
            true,
        );
        check(
            "drop_rate",
            o.drop_rate,
            ind.and_then(|i| i.drop_rate),
            true,
        );
        check(
            "min_event_rate",
            o.min_event_rate,
            Some(ind.map_or(0.0, |i| i.event_rate)),
            false,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("7d").unwrap(), Duration::from_secs(604_800));
        for bad in ["", "h", "1w", "-5m", "0s", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 95.0), Some(95.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
