//! A paced keep-alive load generator on loopback, shared by the proxy and deploy benchmarks and the
//! deploy tests: `connections` threads each send `GET path` at `rate_per_connection` per second to
//! one host through the proxy until told to stop, and count what came back, including which app
//! answered (the test app's `app=NAME` word), so a test can see traffic switch between revisions.
//! By default a request that a reused connection lost before any byte of the answer is sent once
//! more on a new connection, as browsers and curl do; `retry: false` is a client that never
//! re-sends (many HTTP libraries and monitoring probes): such a request counts as failed. An
//! answer that says `Connection: close` ends its connection, as it does for any HTTP/1.1 client
//! (nginx says it after `keepalive_requests` answers on one connection).

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub connections: usize,
    pub rate_per_connection: u64,
    pub path: String,
    /// Re-send (once, on a new connection) a request whose reused keep-alive connection was closed
    /// before any byte of the answer. `false`: never re-send; that request is an IO error, counted
    /// in `closed_early` too.
    pub retry: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            connections: 4,
            rate_per_connection: 200,
            path: "/".into(),
            retry: true,
        }
    }
}

impl LoadOptions {
    pub fn total_rate(&self) -> u64 {
        self.connections as u64 * self.rate_per_connection
    }
}

/// When one kind of answer was first and last seen, since the load started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub count: u64,
    pub first: Duration,
    pub last: Duration,
}

#[derive(Debug, Default)]
pub struct LoadResult {
    pub sent: u64,
    pub ok: u64,
    pub non_2xx: u64,
    pub io_errors: u64,
    /// A kept-alive connection closed by nginx before any byte of the answer (an old worker
    /// shutting down at a reload); the request was sent again on a new connection, as HTTP clients
    /// do for an idempotent request.
    pub retried: u64,
    /// With `retry: false`: requests lost that way (a reused connection closed before any byte of
    /// the answer), a part of `io_errors`.
    pub closed_early: u64,
    pub latencies_us: Vec<u64>,
    pub elapsed: Duration,
    /// Answers by who gave them: `app=NAME` for the test app, else `status NNN`.
    pub answers: BTreeMap<String, Seen>,
}

impl LoadResult {
    /// Requests that got no good answer: non-2xx statuses and IO errors.
    pub fn failed(&self) -> u64 {
        self.non_2xx + self.io_errors
    }

    /// The label of the answer seen first, and of the one seen last.
    pub fn first_and_last(&self) -> (Option<&str>, Option<&str>) {
        let first = self
            .answers
            .iter()
            .min_by_key(|(_, s)| s.first)
            .map(|(k, _)| k.as_str());
        let last = self
            .answers
            .iter()
            .max_by_key(|(_, s)| s.last)
            .map(|(k, _)| k.as_str());
        (first, last)
    }

    fn saw(&mut self, label: String, at: Duration) {
        let seen = self.answers.entry(label).or_insert(Seen {
            count: 0,
            first: at,
            last: at,
        });
        seen.count += 1;
        seen.first = seen.first.min(at);
        seen.last = seen.last.max(at);
    }

    fn merge(&mut self, other: LoadResult) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.non_2xx += other.non_2xx;
        self.io_errors += other.io_errors;
        self.retried += other.retried;
        self.closed_early += other.closed_early;
        self.latencies_us.extend(other.latencies_us);
        for (label, seen) in other.answers {
            match self.answers.entry(label) {
                Entry::Vacant(entry) => {
                    entry.insert(seen);
                }
                Entry::Occupied(mut entry) => {
                    let mine = entry.get_mut();
                    mine.count += seen.count;
                    mine.first = mine.first.min(seen.first);
                    mine.last = mine.last.max(seen.last);
                }
            }
        }
    }
}

enum Attempt {
    /// The status, who answered, and whether the server said `Connection: close` (then the
    /// connection is not used again, as any HTTP/1.1 client does).
    Answer(u16, String, bool),
    /// Closed before any byte of the answer.
    ClosedEarly,
    Error,
}

/// One request on a keep-alive connection; reads the whole answer (Content-Length or chunked).
fn keepalive_get(stream: &mut TcpStream, request: &[u8], buf: &mut Vec<u8>) -> Attempt {
    if stream.write_all(request).is_err() {
        return Attempt::ClosedEarly;
    }
    buf.clear();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Attempt::ClosedEarly,
            Ok(0) => return Attempt::Error,
            Ok(n) => n,
            Err(e)
                if buf.is_empty()
                    && matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    ) =>
            {
                return Attempt::ClosedEarly;
            }
            Err(_) => return Attempt::Error,
        };
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = &buf[end + 4..];
        let complete = if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            body.len() >= len
        } else if head.contains("transfer-encoding: chunked") {
            body.ends_with(b"0\r\n\r\n")
        } else {
            // No length: the answer ends with the connection.
            false
        };
        if complete {
            let text = String::from_utf8_lossy(body);
            let label = text
                .split_whitespace()
                .find(|w| w.starts_with("app="))
                .map_or_else(|| format!("status {status}"), str::to_owned);
            let close = head.lines().any(|l| {
                l.strip_prefix("connection:")
                    .is_some_and(|v| v.split(',').any(|t| t.trim() == "close"))
            });
            return Attempt::Answer(status, label, close);
        }
    }
}

fn connect_proxy(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Runs the paced load until `stop` is set; one thread per connection.
pub fn run_load(
    addr: SocketAddr,
    host: &str,
    options: &LoadOptions,
    stop: &AtomicBool,
) -> LoadResult {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: butler-load\r\n\r\n",
        options.path
    )
    .into_bytes();
    let interval = Duration::from_micros(1_000_000 / options.rate_per_connection.max(1));
    let started = Instant::now();
    let results: Vec<LoadResult> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..options.connections)
            .map(|_| {
                let request = &request;
                let retry = options.retry;
                s.spawn(move || one_connection(addr, request, interval, retry, started, stop))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = LoadResult::default();
    for r in results {
        total.merge(r);
    }
    total.elapsed = started.elapsed();
    total
}

fn one_connection(
    addr: SocketAddr,
    request: &[u8],
    interval: Duration,
    retry: bool,
    started: Instant,
    stop: &AtomicBool,
) -> LoadResult {
    let mut r = LoadResult::default();
    let mut buf = Vec::with_capacity(1024);
    let mut conn: Option<TcpStream> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            next = now; // fell far behind: do not burst to catch up
        }
        next += interval;
        r.sent += 1;
        let t = Instant::now();
        let mut outcome = Attempt::Error;
        // At most one retry, and only for a reused connection closed before answering.
        for attempt in 0..(1 + usize::from(retry)) {
            let fresh = conn.is_none();
            if fresh {
                conn = connect_proxy(addr).ok();
            }
            let Some(stream) = conn.as_mut() else {
                outcome = Attempt::Error;
                break;
            };
            outcome = keepalive_get(stream, request, &mut buf);
            match outcome {
                Attempt::Answer(_, _, close) => {
                    if close {
                        conn = None;
                    }
                    break;
                }
                Attempt::ClosedEarly if !fresh && retry && attempt == 0 => {
                    r.retried += 1;
                    conn = None;
                }
                Attempt::ClosedEarly if !fresh => {
                    r.closed_early += 1;
                    conn = None;
                    break;
                }
                _ => {
                    conn = None;
                    break;
                }
            }
        }
        match outcome {
            Attempt::Answer(status, label, _) => {
                if (200..300).contains(&status) {
                    r.ok += 1;
                } else {
                    r.non_2xx += 1;
                }
                r.latencies_us.push(t.elapsed().as_micros() as u64);
                r.saw(label, started.elapsed());
            }
            Attempt::ClosedEarly | Attempt::Error => r.io_errors += 1,
        }
    }
    r
}
