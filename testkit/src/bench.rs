//! What the benchmark programs (benches/) share beyond the rest of the testkit: the tables they
//! print, the cleanup that runs even when a release build aborts on a panic, log timestamps,
//! process memory, and starting many tiny app containers.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::unique::test_label;
use crate::{docker, docker_ok, ensure_image, unique_name};

// ---------------------------------------------------------------------------------------------------
// Output and cleanup

/// The tables, printed in item order at the end (and what there is so far when something panics).
pub static TABLES: Mutex<BTreeMap<usize, String>> = Mutex::new(BTreeMap::new());
/// Child processes and nginx containers to remove if the bench dies (release builds abort on panic,
/// so no destructor runs then).
pub static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
pub static EXTRA_CONTAINERS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Networks to remove at the end (after the containers on them).
pub static EXTRA_NETWORKS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Network namespaces (`crate::netns::VethNamespace`) to remove at the end.
pub static EXTRA_NETNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn table(item: usize, text: String) {
    eprintln!("{text}");
    TABLES.lock().unwrap().insert(item, text);
}

pub fn print_tables() {
    for text in TABLES.lock().unwrap_or_else(|e| e.into_inner()).values() {
        println!("{text}");
    }
}

/// Removes every container this process labelled, the nginx containers it made, and kills its
/// children. Safe to call more than once.
pub fn cleanup_everything() {
    for pid in CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let mut names: Vec<String> = EXTRA_CONTAINERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    let ours = docker(&["ps", "-aq", "--filter", &format!("label={}", test_label())]);
    names.extend(
        String::from_utf8_lossy(&ours.stdout)
            .split_whitespace()
            .map(str::to_owned),
    );
    remove_bulk(&names);
    for net in EXTRA_NETWORKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        let _ = docker(&["network", "rm", &net]);
    }
    for ns in EXTRA_NETNS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
    {
        crate::netns::remove(&ns);
    }
}

pub fn remove_bulk(names: &[String]) {
    for chunk in names.chunks(50) {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(chunk.iter().map(String::as_str));
        let _ = docker(&args);
    }
}

// Statistics (pct, sorted, ms, row) are the `stats` module, next to this one.

/// An RFC 3339 UTC timestamp as tracing's stderr logs print it (`2025-06-01T12:00:00.123456Z`).
pub fn parse_utc(ts: &str) -> Option<SystemTime> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<i64>());
    let (h, mi, s) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let nanos: u64 = format!("{frac:0<9}")[..9].parse().ok()?;
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + s;
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_nanos(nanos))
}

/// Starts `n` tiny app containers (`docker run -d`, `threads` at a time); their names.
pub fn run_many(
    prefix: &str,
    n: usize,
    threads: usize,
    delay_ms: u64,
    network: Option<&str>,
) -> Vec<String> {
    run_many_labelled(prefix, n, threads, delay_ms, network, &[])
}

/// [`run_many`] with extra `KEY=VALUE` labels on every container.
pub fn run_many_labelled(
    prefix: &str,
    n: usize,
    threads: usize,
    delay_ms: u64,
    network: Option<&str>,
    labels: &[String],
) -> Vec<String> {
    let image = ensure_image("app");
    let label = test_label();
    let names: Vec<String> = (0..n).map(|_| unique_name(prefix)).collect();
    let next = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(n.max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(name) = names.get(i) else { break };
                    let env = format!("DELAY_MS={delay_ms}");
                    let mut args = vec![
                        "run", "-d", "--name", name, "--label", &label, "--expose", "3000",
                        "--env", &env,
                    ];
                    if let Some(net) = network {
                        args.extend(["--network", net]);
                    }
                    for extra in labels {
                        args.extend(["--label", extra.as_str()]);
                    }
                    args.push(&image);
                    docker_ok(&args);
                }
            });
        }
    });
    names
}

pub fn status_field(pid: u32, name: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// `pid` and every process below it (children, their children, ...), from /proc.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // The parent is the second field after the command, which is in parentheses.
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        if let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
        {
            parent_of.push((p, ppid));
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|&&(_, pp)| pp == parent)
                .map(|&(p, _)| p),
        );
        i += 1;
    }
    tree
}

/// Resident memory of these processes added up, in MB: (VmRSS, Pss). RSS counts pages that
/// processes share (one binary's code, nginx's master and workers) once per process; Pss divides
/// each shared page among its sharers, so it adds up to what they use together.
pub fn memory_mb(pids: &[u32]) -> (f64, f64) {
    let mut rss = 0.0;
    let mut pss = 0.0;
    for &pid in pids {
        rss += status_field(pid, "VmRSS:");
        pss += std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
    }
    (rss / 1024.0, pss / 1024.0)
}

/// CPU time (user + system) these processes used so far, in seconds (/proc's clock ticks are
/// USER_HZ, 100 a second on Linux).
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // utime and stime: fields 14 and 15, the 12th and 13th after the command.
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let mut fields = after.split_whitespace().skip(11);
            let utime: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let stime: f64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (utime + stime) / 100.0
        })
        .sum()
}

/// The pids of Docker's userland proxy for host port `port` (`docker-proxy ... -host-port PORT`).
pub fn docker_proxy_pids(port: u16) -> Vec<u32> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.first().is_some_and(|a| a.ends_with(b"docker-proxy"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-host-port" && w[1] == port.as_bytes())
        })
        .collect()
}

/// The host pids of a container's processes (its init and everything below it).
pub fn container_pids(container: &str) -> Vec<u32> {
    let out = docker(&["inspect", "-f", "{{.State.Pid}}", container]);
    match String::from_utf8_lossy(&out.stdout).trim().parse::<u32>() {
        Ok(pid) if pid > 0 => process_tree(pid),
        _ => Vec::new(),
    }
}

/// Prints what tables there are and removes the bench's containers when it panics (release builds
/// abort, so no destructor would).
pub fn cleanup_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        print_tables();
        cleanup_everything();
    }));
}

/// The items `BENCH_ITEMS=1,3` names, or `all`.
pub fn bench_items(all: &[usize]) -> Vec<usize> {
    std::env::var("BENCH_ITEMS")
        .ok()
        .map(|v| v.split(',').filter_map(|i| i.trim().parse().ok()).collect())
        .unwrap_or_else(|| all.to_vec())
}
