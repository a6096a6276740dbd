//! What a scenario measures and with which sizes, and the small helpers every scenario
//! shares (sharing out work, percentiles).

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

/// What one scenario run measured: a record name and its numeric fields.
#[derive(Debug)]
pub struct Measurement {
    /// Record name; usually the scenario's, `idle_N` for each memory step.
    pub name: String,
    /// Named figures, all finite.
    pub fields: Vec<(&'static str, f64)>,
}

/// Sizes of every scenario; `full()` is the published suite, `smoke()` checks the harness.
///
/// The TCP scenarios reuse these: `ws_throughput` and `qmux_bulk_single` move `bulk_mib`,
/// `ws_latency` and `qmux_latency` count `latency_messages` after `latency_warmup`, and
/// `ws_idle` steps through `idle_steps` at `idle_concurrency`. The HTTP scenarios run for
/// `http_warmup`, then measure for `http_duration` (their connection layout is in `http.rs`).
#[derive(Clone, Debug)]
pub struct Params {
    pub bulk_mib: usize,
    pub parallel_streams: usize,
    pub parallel_mib: usize,
    pub latency_messages: usize,
    pub latency_warmup: usize,
    pub datagram_time: Duration,
    pub setup_sequential: usize,
    pub setup_concurrent: usize,
    pub setup_concurrency: usize,
    pub idle_steps: Vec<usize>,
    pub idle_concurrency: usize,
    pub settle: Duration,
    pub http_warmup: Duration,
    pub http_duration: Duration,
    /// Upper bound on any one scenario, so a wedged server cannot hang the suite.
    pub timeout: Duration,
}

impl Params {
    /// The published sizes.
    pub fn full() -> Self {
        Self {
            bulk_mib: 256,
            parallel_streams: 64,
            parallel_mib: 256,
            latency_messages: 10_000,
            latency_warmup: 500,
            datagram_time: Duration::from_secs(3),
            setup_sequential: 200,
            setup_concurrent: 1_000,
            setup_concurrency: 16,
            idle_steps: vec![1_000, 10_000],
            idle_concurrency: 32,
            settle: Duration::from_secs(2),
            http_warmup: Duration::from_secs(2),
            http_duration: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
        }
    }

    /// Seconds-long sizes that still run every code path.
    pub fn smoke() -> Self {
        Self {
            bulk_mib: 4,
            parallel_streams: 64,
            parallel_mib: 4,
            latency_messages: 300,
            latency_warmup: 20,
            datagram_time: Duration::from_millis(300),
            setup_sequential: 10,
            setup_concurrent: 30,
            setup_concurrency: 8,
            idle_steps: vec![20, 60],
            idle_concurrency: 8,
            settle: Duration::from_millis(300),
            http_warmup: Duration::from_millis(500),
            http_duration: Duration::from_millis(500),
            timeout: Duration::from_secs(60),
        }
    }
}

/// Claims one unit of shared work; false once none is left.
pub fn take_one(remaining: &AtomicUsize) -> bool {
    remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
    }
}
