//! Small statistics for the benchmarks' tables: percentiles over samples in milliseconds.

use std::time::Duration;

/// The `p`th percentile (nearest rank) of ascending `sorted`; NaN when empty.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `| what | n | p50 | p95 | max |` in ms.
pub fn row(what: &str, values: &[f64]) -> String {
    let s = sorted(values.to_vec());
    format!(
        "| {what} | {} | {:.1} | {:.1} | {:.1} |",
        s.len(),
        pct(&s, 50.0),
        pct(&s, 95.0),
        s.last().copied().unwrap_or(f64::NAN)
    )
}
