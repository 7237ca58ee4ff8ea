//! `wrk` (Debian's package) as a closed-loop HTTP load client for throughput figures: fixed
//! threads, connections and duration, `--latency` for its latency distribution.

use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct WrkOptions {
    pub threads: usize,
    pub connections: usize,
    pub duration: Duration,
}

/// What one `wrk` run printed.
#[derive(Debug, Clone, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) added up.
    pub socket_errors: u64,
    /// "Non-2xx or 3xx responses".
    pub non_2xx_3xx: u64,
    /// The whole output, for a reader who wants more.
    pub output: String,
}

/// Panics with how to install wrk when it is missing.
pub fn ensure_wrk() {
    let found = Command::new("wrk").arg("--version").output().is_ok();
    assert!(
        found,
        "wrk is not installed: `apt-get install wrk` (Debian's package) and run this again"
    );
}

/// Runs `wrk` against `url` with `Host: host`; inside `command_prefix` (e.g. `nsenter
/// --net=...`) when given. Panics with its output when it fails or prints no figures.
pub fn run_wrk(
    url: &str,
    host: &str,
    options: &WrkOptions,
    command_prefix: Option<Command>,
) -> WrkResult {
    let mut cmd = command_prefix.unwrap_or_else(|| Command::new("wrk"));
    cmd.arg(format!("-t{}", options.threads))
        .arg(format!("-c{}", options.connections))
        .arg(format!("-d{}s", options.duration.as_secs().max(1)))
        .arg("--latency")
        .args(["-H", &format!("Host: {host}")])
        .arg(url);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    parse(&text).unwrap_or_else(|| panic!("cannot read wrk's output:\n{text}"))
}

/// wrk's time units: `us`, `ms`, `s`, `m`, `h`.
fn parse_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return None,
    })
}

fn parse(text: &str) -> Option<WrkResult> {
    let mut r = WrkResult {
        output: text.to_owned(),
        ..WrkResult::default()
    };
    let mut seen_rps = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_ms = parse_ms(v)?,
            ["99%", v] => r.p99_ms = parse_ms(v)?,
            [n, "requests", "in", ..] => r.requests = n.parse().ok()?,
            ["Requests/sec:", v] => {
                r.requests_per_sec = v.parse().ok()?;
                seen_rps = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx_3xx = n.parse().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    seen_rps.then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   635.91us    0.89ms  12.92ms   93.69%
    Req/Sec     6.12k   645.86     7.17k    68.00%
  Latency Distribution
     50%  418.00us
     75%  592.00us
     90%    1.02ms
     99%    4.64ms
  121745 requests in 10.00s, 98.86MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  12172.59
Transfer/sec:      9.88MB
";
        let r = parse(out).unwrap();
        assert_eq!(r.requests, 121_745);
        assert!((r.requests_per_sec - 12172.59).abs() < 1e-6);
        assert!((r.p50_ms - 0.418).abs() < 1e-9);
        assert!((r.p99_ms - 4.64).abs() < 1e-9);
        assert_eq!(r.socket_errors, 3);
        assert_eq!(r.non_2xx_3xx, 12);
        assert_eq!(parse_ms("1.50s"), Some(1500.0));
    }
}
