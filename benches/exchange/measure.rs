//! Measuring: nanosecond clocks, nearest-rank percentiles, the timed call
//! loop whose latencies a child prints as `RESULT`, and the parent's
//! reading of latencies and rates from those results.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::child::fail;
use crate::proc::Fields;

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

pub(crate) fn epoch_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(nanos)
        .unwrap_or(0)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() as f64 * p).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// Prints a latency result from recorded samples.
fn print_latency(samples: &mut [u64], total: Duration, extra: &str) {
    samples.sort_unstable();
    let rate = samples.len() as f64 / total.as_secs_f64().max(1e-9);
    println!(
        "RESULT n={} p50_ns={} p99_ns={} max_ns={} rate={rate:.0}{extra}",
        samples.len(),
        percentile(samples, 0.50),
        percentile(samples, 0.99),
        samples.last().copied().unwrap_or(0),
    );
}

/// Runs `warmup` then `n` timed round trips of `f`; prints the latencies.
pub(crate) fn measure_calls(
    warmup: u64,
    n: u64,
    mut f: impl FnMut() -> Result<(), String>,
    extra: &str,
) {
    for _ in 0..warmup {
        if let Err(e) = f() {
            fail(&format!("warm-up call failed: {e}"));
        }
    }
    let mut samples = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        if let Err(e) = f() {
            fail(&format!("call failed: {e}"));
        }
        samples.push(nanos(t.elapsed()));
    }
    print_latency(&mut samples, start.elapsed(), extra);
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Latency {
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) rate: f64,
}

pub(crate) fn latency(f: &Fields) -> Result<Latency, String> {
    Ok(Latency {
        p50: f.u("p50_ns")?,
        p99: f.u("p99_ns")?,
        rate: f.f("rate")?,
    })
}

/// Messages per second from the first to the last.
pub(crate) fn rate(count: u64, span_ns: u64) -> f64 {
    if count < 2 || span_ns == 0 {
        0.0
    } else {
        (count - 1) as f64 * 1e9 / span_ns as f64
    }
}
