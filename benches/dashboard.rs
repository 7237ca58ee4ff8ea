//! Dashboard benchmark: `/api/apps` with 1,000 apps in the store, under load from this process
//! (the dashboard is its own process, `butler worker dashboard`, release build) on loopback.
//! Prints tables; asserts nothing.
//!
//!     cargo bench --bench dashboard
//!
//! Goals (issue 5): p99 under 5 ms at 1,000 requests/s; dashboard RSS under 15 MB.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use butler_testkit::dashboard::DashboardProcess;
use devops_butler::health::AppStatus;
use devops_butler::store::{AppHealth, RouteRow, Store};

const APPS: usize = 1_000;
/// The open-loop run: this many requests per second, spread over `CONNECTIONS` keep-alive
/// connections, for `STEADY` seconds.
const RATE: f64 = 1_000.0;
const CONNECTIONS: usize = 8;
const STEADY: Duration = Duration::from_secs(20);
/// The closed-loop run: as fast as `CONNECTIONS` connections go.
const FLAT_OUT: Duration = Duration::from_secs(10);

async fn seed(store: Store) {
    let routes = (0..APPS)
        .map(|i| RouteRow {
            app: format!("app-{i:04}"),
            hosts: vec![format!("app-{i:04}.localhost")],
            servers: vec![format!("172.20.{}.{}:3000", i / 250, i % 250 + 2)],
            port: 3000,
            reason: "only exposed port".into(),
            down: None,
        })
        .collect();
    store.replace_routes(routes).await.unwrap();
    let health = (0..APPS)
        .map(|i| AppHealth {
            app: format!("app-{i:04}"),
            status: [AppStatus::Healthy, AppStatus::Degraded, AppStatus::Down][i % 3],
            reason: "answers 200 through the proxy".into(),
            latency_ms: Some(3.0 + (i % 7) as f64),
            started_at: Some("2026-11-27T20:00:00.000Z".into()),
            checked_at: String::new(),
        })
        .collect();
    store.replace_app_health(health).await.unwrap();
}

/// One keep-alive HTTP/1.1 connection that reads each whole response (by Content-Length).
struct Connection {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
    body: Vec<u8>,
}

impl Connection {
    fn open(addr: &str) -> Connection {
        let stream = TcpStream::connect(addr).expect("connect to the dashboard");
        stream.set_nodelay(true).unwrap();
        Connection {
            reader: BufReader::with_capacity(256 * 1024, stream.try_clone().unwrap()),
            writer: stream,
            body: Vec::new(),
        }
    }

    /// GET `path` (accepting gzip when asked to); returns the status and the body's length.
    fn get(&mut self, addr: &str, path: &str, gzip: bool) -> (u16, usize) {
        let accept = if gzip {
            "Accept-Encoding: gzip\r\n"
        } else {
            ""
        };
        write!(
            self.writer,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}\r\n"
        )
        .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = 0;
        loop {
            line.clear();
            self.reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((key, value)) = line.split_once(':')
                && key.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap();
            }
        }
        self.body.resize(length, 0);
        self.reader.read_exact(&mut self.body).unwrap();
        (status, length)
    }
}

struct Run {
    /// From when each request was due (what a client on that schedule waits).
    latencies_ms: Vec<f64>,
    /// From when each request was actually sent (the server's share, plus loopback).
    service_ms: Vec<f64>,
    errors: usize,
    elapsed: Duration,
}

/// `connections` threads; with a `rate`, each sends on a fixed schedule and latency counts from
/// the scheduled time (a slow answer delays the next send, and that wait is counted); without, each
/// sends the next request as soon as the last is answered.
fn load(
    addr: &str,
    path: &str,
    connections: usize,
    rate: Option<f64>,
    length: Duration,
    gzip: bool,
) -> Run {
    let start = Instant::now() + Duration::from_millis(100);
    let threads: Vec<_> = (0..connections)
        .map(|c| {
            let addr = addr.to_owned();
            let path = path.to_owned();
            std::thread::spawn(move || {
                let mut conn = Connection::open(&addr);
                let (mut latencies, mut service, mut errors) = (Vec::new(), Vec::new(), 0);
                let interval = rate.map(|r| Duration::from_secs_f64(connections as f64 / r));
                let offset = interval.map_or(Duration::ZERO, |i| i * c as u32 / connections as u32);
                let mut n = 0u32;
                loop {
                    let due = match interval {
                        Some(i) => start + offset + i * n,
                        None => Instant::now().max(start),
                    };
                    if due >= start + length {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    let sent = Instant::now();
                    let (status, _) = conn.get(&addr, &path, gzip);
                    latencies.push(due.elapsed().as_secs_f64() * 1e3);
                    service.push(sent.elapsed().as_secs_f64() * 1e3);
                    errors += usize::from(status != 200);
                    n += 1;
                }
                (latencies, service, errors)
            })
        })
        .collect();
    let mut run = Run {
        latencies_ms: Vec::new(),
        service_ms: Vec::new(),
        errors: 0,
        elapsed: Duration::ZERO,
    };
    for thread in threads {
        let (latencies, service, errors) = thread.join().unwrap();
        run.latencies_ms.extend(latencies);
        run.service_ms.extend(service);
        run.errors += errors;
    }
    run.elapsed = start.elapsed();
    run.latencies_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    run.service_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    run
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.clamp(1, sorted.len().max(1)) - 1)
        .copied()
        .unwrap_or(f64::NAN)
}

fn proc_status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let dashboard = DashboardProcess::start(Path::new(env!("CARGO_BIN_EXE_butler")), "", seed);
    let addr = dashboard.addr();
    let pid = dashboard.pid();
    let memory = || {
        ["VmRSS:", "RssAnon:", "RssFile:"].map(|field| format!("{:.1}", proc_status_mb(pid, field)))
    };
    let idle = memory();
    let (status, size) = Connection::open(&addr).get(&addr, "/api/apps", false);
    assert_eq!(status, 200);
    let (_, gzipped) = Connection::open(&addr).get(&addr, "/api/apps", true);
    let load_average = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!(
        "/api/apps with {APPS} apps ({} KB a response, {} KB gzipped), {CONNECTIONS} keep-alive connections on loopback",
        size / 1024,
        gzipped / 1024
    );
    println!(
        "| run | body | requests | errors | throughput (req/s) | p50 (ms) | p99 (ms) | max (ms) | p99 from send (ms) | dashboard RSS after (MB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (label, rate, length, gzip) in [
        (format!("steady {RATE:.0} req/s"), Some(RATE), STEADY, false),
        (format!("steady {RATE:.0} req/s"), Some(RATE), STEADY, true),
        ("flat out".to_owned(), None, FLAT_OUT, false),
        ("flat out".to_owned(), None, FLAT_OUT, true),
    ] {
        let run = load(&addr, "/api/apps", CONNECTIONS, rate, length, gzip);
        let l = &run.latencies_ms;
        println!(
            "| {label} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |",
            if gzip { "gzip" } else { "plain" },
            l.len(),
            run.errors,
            l.len() as f64 / run.elapsed.as_secs_f64(),
            percentile(l, 50.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(f64::NAN),
            percentile(&run.service_ms, 99.0),
            proc_status_mb(pid, "VmRSS:"),
        );
    }
    println!();

    println!("Other endpoints with {APPS} apps, one connection, 200 requests each");
    println!("| endpoint | p50 (ms) | p99 (ms) |");
    println!("|---|---|---|");
    for path in ["/", "/api/apps/app-0500", "/api/health", "/metrics"] {
        let run = load(&addr, path, 1, Some(50.0), Duration::from_secs(4), false);
        println!(
            "| `{path}` | {:.2} | {:.2} |",
            percentile(&run.latencies_ms, 50.0),
            percentile(&run.latencies_ms, 99.0)
        );
    }
    println!();

    println!("Dashboard worker memory (release build)");
    // RssFile is the binary's own pages (shared with every other butler process); RssAnon is
    // what the worker allocated.
    println!(
        "| when | VmRSS (MB) | of it heap and stacks, RssAnon (MB) | of it the binary, RssFile (MB) | VmHWM (MB) |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| started, {APPS} apps in the store | {} | {} | {} | |",
        idle[0], idle[1], idle[2]
    );
    let after = memory();
    println!(
        "| after the runs above | {} | {} | {} | {:.1} |",
        after[0],
        after[1],
        after[2],
        proc_status_mb(pid, "VmHWM:")
    );
    println!();
    println!("load average before the runs: {}", load_average.trim());
}
