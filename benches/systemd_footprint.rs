//! Foundation benchmark: each worker's idle memory under a real systemd, and the wall time of
//! `butler services list` against it. Prints tables; asserts nothing.
//!
//!     cargo bench --bench systemd_footprint
//!
//! Runs in the systemd test bed (see testkit/), with the release binary.

use std::path::Path;
use std::time::Duration;

const WORKERS: [&str; 4] = ["dynamic-proxy", "health-monitor", "recovery", "dashboard"];
const LIST_RUNS: usize = 100;
const IDLE: Duration = Duration::from_secs(15);

fn main() {
    let config = format!(
        "[proxy]\ncontainer_name = \"{}\"\nhttp_port = 18080\n",
        butler_testkit::unique_name("bench-nginx")
    );
    let tb = butler_testkit::Testbed::start(Path::new(env!("CARGO_BIN_EXE_butler")), &config);
    tb.exec(&["systemctl", "start", "butler.target"])
        .expect_success("systemctl start butler.target");
    tb.wait_until("every worker active", Duration::from_secs(30), || {
        WORKERS.iter().all(|w| {
            tb.exec(&["systemctl", "is-active", &format!("butler-{w}.service")])
                .stdout
                .trim()
                == "active"
        })
    });
    // Let start-up allocations settle and a few working rounds pass before measuring "idle".
    std::thread::sleep(IDLE);

    println!(
        "Worker memory, idle under systemd ({}s after start)",
        IDLE.as_secs()
    );
    println!("| worker | RSS (MB) | peak RSS (MB) | cgroup MemoryCurrent (MB) | threads |");
    println!("|---|---|---|---|---|");
    for worker in WORKERS {
        let unit = format!("butler-{worker}.service");
        let pid = tb
            .exec(&["systemctl", "show", "-p", "MainPID", "--value", &unit])
            .stdout
            .trim()
            .to_owned();
        let status = tb.exec(&["cat", &format!("/proc/{pid}/status")]).stdout;
        let field = |name: &str| -> f64 {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(f64::NAN)
        };
        let memory: f64 = tb
            .exec(&["systemctl", "show", "-p", "MemoryCurrent", "--value", &unit])
            .stdout
            .trim()
            .parse()
            .unwrap_or(f64::NAN);
        println!(
            "| {worker} | {:.1} | {:.1} | {:.1} | {} |",
            field("VmRSS:") / 1024.0,
            field("VmHWM:") / 1024.0,
            memory / 1048576.0,
            field("Threads:")
        );
    }

    // Timed inside the test bed, so `docker exec`'s own start-up is not counted.
    let script = format!(
        "for i in $(seq {LIST_RUNS}); do s=$(date +%s%N); butler services list >/dev/null || exit 1; \
         e=$(date +%s%N); echo $(( (e - s) / 1000 )); done"
    );
    let out = tb.sh(&script).expect_success("timing butler services list");
    let mut micros: Vec<u64> = out
        .stdout
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    micros.sort_unstable();
    let pct = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    println!();
    println!(
        "`butler services list` wall time against the real systemd ({} runs)",
        micros.len()
    );
    println!("| p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |");
    println!("|---|---|---|---|");
    println!(
        "| {:.1} | {:.1} | {:.1} | {:.1} |",
        pct(0.5),
        pct(0.95),
        pct(0.99),
        pct(1.0)
    );
}
