//! Polling until something holds, with a deadline and a message that says what never happened.

use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it is true; panics naming `desc` after `timeout`.
pub fn wait_until(desc: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if check() {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {desc}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Like `wait_until`, with more to say on timeout.
pub fn wait_until_or(
    desc: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    explain: impl FnOnce() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        if Instant::now() >= deadline {
            panic!(
                "timed out after {timeout:?} waiting for {desc}; {}",
                explain()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
