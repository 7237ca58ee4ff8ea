//! Early warning: when does a disk fill at the rate it has been filling? A least-squares line
//! through the stored free-space samples, extrapolated to zero. Pure; the monitor feeds it.

use crate::store::Sample;

/// Fewer samples than this, or a shorter span, say nothing about a trend.
pub const MIN_SAMPLES: usize = 3;
pub const MIN_SPAN_MS: i64 = 5 * 60 * 1000;
/// How far back the trend is read.
pub const WINDOW_MS: i64 = 6 * 60 * 60 * 1000;

/// Hours from `now_ms` until the free space reaches zero, when it is falling; `None` when it is
/// steady or rising, or when the samples are too few or too close together.
pub fn hours_until_full(samples: &[Sample], now_ms: i64) -> Option<f64> {
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    let first = samples.first()?.at_ms;
    let last = samples.last()?;
    if last.at_ms - first < MIN_SPAN_MS {
        return None;
    }
    // Times relative to the first sample, in hours, keep the sums well-conditioned.
    let n = samples.len() as f64;
    let xs: Vec<f64> = samples
        .iter()
        .map(|s| (s.at_ms - first) as f64 / 3_600_000.0)
        .collect();
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.value).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, s) in xs.iter().zip(samples) {
        sxy += (x - mean_x) * (s.value - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    if sxx == 0.0 {
        return None;
    }
    let slope = sxy / sxx; // bytes per hour
    if slope >= 0.0 || !slope.is_finite() {
        return None;
    }
    // From the fitted value now, not the last sample: one noisy sample must not move the answer.
    let now_x = (now_ms - first) as f64 / 3_600_000.0;
    let fitted_now = mean_y + slope * (now_x - mean_x);
    Some((fitted_now / -slope).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    const HOUR: i64 = 3_600_000;

    fn series(points: &[(i64, f64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(at_ms, value)| Sample { at_ms, value })
            .collect()
    }

    #[test]
    fn projections() {
        let cases: &[(&str, Vec<Sample>, i64, Option<f64>)] = &[
            (
                "1 GiB an hour from 10 GiB: full in 10 h",
                series(&[(0, 12.0 * GIB), (HOUR, 11.0 * GIB), (2 * HOUR, 10.0 * GIB)]),
                2 * HOUR,
                Some(10.0),
            ),
            (
                "steady",
                series(&[(0, 5.0 * GIB), (HOUR, 5.0 * GIB), (2 * HOUR, 5.0 * GIB)]),
                2 * HOUR,
                None,
            ),
            (
                "freeing space",
                series(&[(0, 5.0 * GIB), (HOUR, 6.0 * GIB), (2 * HOUR, 7.0 * GIB)]),
                2 * HOUR,
                None,
            ),
            (
                "too few samples",
                series(&[(0, 5.0 * GIB), (HOUR, 4.0 * GIB)]),
                HOUR,
                None,
            ),
            (
                "too short a span",
                series(&[(0, 5.0 * GIB), (1_000, 4.0 * GIB), (2_000, 3.0 * GIB)]),
                2_000,
                None,
            ),
            (
                "already past full: zero, not negative",
                series(&[(0, 2.0 * GIB), (HOUR, 1.0 * GIB), (2 * HOUR, 0.0)]),
                4 * HOUR,
                Some(0.0),
            ),
            (
                "noise around a trend of 1 GiB/h",
                series(&[
                    (0, 20.2 * GIB),
                    (HOUR, 18.8 * GIB),
                    (2 * HOUR, 18.1 * GIB),
                    (3 * HOUR, 16.9 * GIB),
                ]),
                3 * HOUR,
                Some(16.2),
            ),
        ];
        for (name, samples, now, expected) in cases {
            let got = hours_until_full(samples, *now);
            match (got, expected) {
                (None, None) => {}
                (Some(g), Some(e)) => assert!((g - e).abs() < 0.5, "{name}: {g} vs {e}"),
                _ => panic!("{name}: got {got:?}, expected {expected:?}"),
            }
        }
    }
}
