//! Latency and size histograms for self-metrics, on `hdrhistogram`.
//!
//! Values are recorded with 3 significant digits (0.1% error) in a bounded range, so each
//! histogram has a fixed memory cost whatever the traffic. The exact sum is kept beside it (an
//! HDR histogram only approximates it) for Prometheus' `_sum`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

/// Bucket bounds, in seconds, for latency histograms exposed to Prometheus.
pub(crate) const LATENCY_BUCKETS_SECS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Bucket bounds for batch-size histograms.
pub(crate) const SIZE_BUCKETS: [f64; 10] = [
    1.0, 8.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0,
];

/// Which unit a histogram records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// Durations, recorded in microseconds, exposed in seconds.
    Seconds,
    /// Plain counts (batch sizes).
    Count,
}

/// A bounded histogram with an exact sum.
#[derive(Debug)]
pub(crate) struct Hist {
    unit: Unit,
    /// `None` only if hdrhistogram refused the bounds, which fixed valid bounds never cause;
    /// the count and sum are then still kept.
    hist: Mutex<Option<Histogram<u64>>>,
    count: AtomicU64,
    sum: AtomicU64,
}

/// A copy of a histogram for exposition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistSnapshot {
    /// The unit of `sum`, the bucket bounds and the quantiles.
    pub unit: Unit,
    /// Number of values.
    pub count: u64,
    /// Sum of the values (in `unit`).
    pub sum: f64,
    /// Cumulative counts: (upper bound, values <= bound).
    pub buckets: Vec<(f64, u64)>,
    /// Median (in `unit`).
    pub p50: f64,
    /// 99th percentile (in `unit`).
    pub p99: f64,
    /// Largest value recorded (in `unit`, within the histogram's precision).
    pub max: f64,
}

impl HistSnapshot {
    /// A snapshot with nothing in it: what a counts-only view carries in place of a histogram.
    pub fn empty(unit: Unit) -> Self {
        HistSnapshot {
            unit,
            count: 0,
            sum: 0.0,
            buckets: Vec::new(),
            p50: 0.0,
            p99: 0.0,
            max: 0.0,
        }
    }
}

impl Hist {
    /// [`Hist::snapshot`], or an empty snapshot when `with_histogram` is false (the cheap
    /// counts-only view: no bucket is computed).
    pub(crate) fn snapshot_if(&self, with_histogram: bool) -> HistSnapshot {
        if with_histogram {
            self.snapshot()
        } else {
            HistSnapshot::empty(self.unit)
        }
    }

    /// A histogram of `unit`.
    pub(crate) fn new(unit: Unit) -> Self {
        // 1 µs .. 1 h for latencies, 1 .. 1M for sizes; 3 significant digits.
        let high = match unit {
            Unit::Seconds => 3_600_000_000,
            Unit::Count => 1_000_000,
        };
        Hist {
            unit,
            hist: Mutex::new(Histogram::new_with_bounds(1, high, 3).ok()),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Records a duration (a `Seconds` histogram).
    pub(crate) fn record_duration(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.record_raw(us.max(1));
    }

    /// Records a count (a `Count` histogram).
    pub(crate) fn record_count(&self, n: u64) {
        self.record_raw(n.max(1));
    }

    fn record_raw(&self, v: u64) {
        self.sum.fetch_add(v, Relaxed);
        self.count.fetch_add(1, Relaxed);
        // Values above the range are clamped, never refused: a histogram must not lose counts.
        if let Some(h) = self.hist.lock().as_mut() {
            h.saturating_record(v);
        }
    }

    fn scale(&self) -> f64 {
        match self.unit {
            Unit::Seconds => 1e-6,
            Unit::Count => 1.0,
        }
    }

    /// A copy with cumulative buckets at `bounds` (in `unit`).
    pub(crate) fn snapshot(&self) -> HistSnapshot {
        let bounds: &[f64] = match self.unit {
            Unit::Seconds => &LATENCY_BUCKETS_SECS,
            Unit::Count => &SIZE_BUCKETS,
        };
        let scale = self.scale();
        let guard = self.hist.lock();
        let count = self.count.load(Relaxed);
        let buckets = bounds
            .iter()
            .map(|b| {
                let raw = (b / scale) as u64;
                let n = guard.as_ref().map_or(0, |h| h.count_between(0, raw));
                (*b, n)
            })
            .collect();
        let q = |p: f64| {
            guard
                .as_ref()
                .map_or(0.0, |h| h.value_at_quantile(p) as f64 * scale)
        };
        HistSnapshot {
            unit: self.unit,
            count,
            sum: self.sum.load(Relaxed) as f64 * scale,
            buckets,
            p50: q(0.5),
            p99: q(0.99),
            max: guard.as_ref().map_or(0.0, |h| h.max() as f64 * scale),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_is_exact() {
        let h = Hist::new(Unit::Seconds);
        for ms in [1u64, 2, 3, 40, 2000] {
            h.record_duration(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count, 5);
        assert!((s.sum - 2.046).abs() < 1e-9);
        let at = |b: f64| s.buckets.iter().find(|(x, _)| *x == b).unwrap().1;
        assert_eq!(at(0.001), 1);
        assert_eq!(at(0.005), 3);
        assert_eq!(at(0.05), 4);
        assert_eq!(at(60.0), 5);
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let h = Hist::new(Unit::Count);
        h.record_count(10_000_000);
        assert_eq!(h.snapshot().count, 1);
    }
}
