//! The one wall clock: milliseconds since the Unix epoch for samples and rate limits, RFC 3339 text
//! for store rows, and the span since the epoch for the few callers that need seconds or finer.
//! A leaf: it imports nothing from the crate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero for a time before it (a clock set far back).
pub fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Now, as time since the Unix epoch.
pub fn now_since_epoch() -> Duration {
    since_epoch(SystemTime::now())
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    now_since_epoch().as_millis() as i64
}

/// Now, as the store writes it: RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    rfc3339_millis(SystemTime::now())
}

/// `time` as the store writes it: RFC 3339 UTC with milliseconds.
pub fn rfc3339_millis(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_the_epoch_is_zero() {
        assert_eq!(
            since_epoch(UNIX_EPOCH - Duration::from_secs(1)),
            Duration::ZERO
        );
        assert_eq!(
            since_epoch(UNIX_EPOCH + Duration::from_millis(1500)).as_millis(),
            1500
        );
    }

    #[test]
    fn now_agrees_with_itself() {
        let ms = now_ms();
        let text = now_rfc3339();
        let parsed = humantime::parse_rfc3339(&text).unwrap();
        assert!((since_epoch(parsed).as_millis() as i64 - ms).abs() < 60_000);
        assert!(text.ends_with('Z') && text.len() == "2026-01-01T00:00:00.000Z".len());
    }
}
