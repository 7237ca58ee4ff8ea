//! Health benchmark (issue 4, "Measure"): how long each repairable fault takes from injection to
//! healed, and what the health-monitor costs in CPU and memory with 50 running apps. Prints one
//! markdown table per item; asserts nothing.
//!
//!     cargo bench --bench health
//!     BENCH_ITEMS=2 cargo bench --bench health          # only some items
//!     BENCH_ITEMS=3 cargo bench --bench health          # the port-mismatch and vanished-server rows
//!     BENCH_REPS=5 BENCH_INTERVAL=5s cargo bench --bench health
//!
//! Needs the Docker engine and builds the test images like the integration tests (testkit/).
//! The butlers it runs see only its own containers (`docker.only_label`), so other containers on a
//! shared engine neither slow the repairs down nor count as apps. Everything it starts carries
//! `devops-butler.test=<pid>` and is removed at the end, also when it panics. About 10 minutes on
//! 2 cores; loopback and the bench's own bridge network only.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use butler_testkit::bench::{
    CHILDREN, EXTRA_CONTAINERS, EXTRA_NETWORKS, bench_items, cleanup_everything, cleanup_on_panic,
    parse_utc, print_tables, remove_bulk, run_many_labelled, status_field, table,
};
use butler_testkit::stats::{self, pct, sorted};
use butler_testkit::{AppContainer, unique_name};
use serde_json::Value;

const SCOPE_LABEL: &str = "devops-butler.scope";
/// How long one fault may take to heal before the repetition counts as not healed.
const HEAL_LIMIT: Duration = Duration::from_secs(120);
const APPS: usize = 50;

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------------
// A butler of the bench's own: config, process, CLI

/// Everything one butler under measurement owns: a state dir, a proxy network and a scope label
/// that only its apps carry, an nginx container name and a proxy port.
struct Bench {
    dir: tempfile::TempDir,
    net: String,
    scope: String,
    nginx: String,
    http_port: u16,
    config: PathBuf,
}

impl Bench {
    /// `health` is the [health] section's body (empty: the defaults).
    fn new(prefix: &str, health: &str) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let net = unique_name(&format!("{prefix}-net"));
        butler_testkit::docker_ok(&[
            "network",
            "create",
            "--label",
            &format!("{}={}", butler_testkit::TEST_LABEL, std::process::id()),
            &net,
        ]);
        EXTRA_NETWORKS.lock().unwrap().push(net.clone());
        let nginx = unique_name(&format!("{prefix}-nginx"));
        EXTRA_CONTAINERS.lock().unwrap().push(nginx.clone());
        let scope = unique_name(prefix);
        let http_port = butler_testkit::free_port();
        let config = dir.path().join("butler.toml");
        std::fs::write(
            &config,
            format!(
                "[proxy]\nhttp_port = {http_port}\nimage = \"{image}\"\ncontainer_name = \"{nginx}\"\n\
                 network = \"{net}\"\ntemplates_dir = \"{templates}\"\n\
                 [dashboard]\nlisten = \"127.0.0.1:{dashboard}\"\n\
                 [state]\ndir = \"{state}\"\n\
                 [docker]\nonly_label = \"{SCOPE_LABEL}={scope}\"\n\
                 [health]\n{health}\n\
                 [recovery]\nmax_attempts = 3\nbackoff = \"1s\"\n",
                image = butler_testkit::ensure_image("nginx"),
                templates = dir.path().join("templates").display(),
                dashboard = butler_testkit::free_port(),
                state = dir.path().join("state").display(),
            ),
        )
        .unwrap();
        Bench {
            dir,
            net,
            scope,
            nginx,
            http_port,
            config,
        }
    }

    fn scope_label(&self) -> String {
        format!("{SCOPE_LABEL}={}", self.scope)
    }

    /// `butler ARGS --config <config>`; stdout, or a panic naming the command.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(butler_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .expect("run butler");
        assert!(
            out.status.success(),
            "butler {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn incidents(&self, args: &[&str]) -> Vec<Value> {
        let mut argv = vec!["incidents", "--output", "json"];
        argv.extend_from_slice(args);
        let json: Value = serde_json::from_str(&self.cli(&argv)).unwrap();
        json["incidents"].as_array().cloned().unwrap_or_default()
    }

    /// `butler run --only ...` or `butler worker NAME` (`args`), logging to a file; its pid.
    fn spawn(&self, args: &[&str], log: &str) -> (Child, PathBuf) {
        let log_path = self.dir.path().join(log);
        let file = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(butler_bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start butler");
        CHILDREN.lock().unwrap().push(child.id());
        (child, log_path)
    }

    /// A GET through this butler's proxy with a short timeout: is `host` served by its app?
    fn app_answers(&self, host: &str) -> bool {
        self.answering_instance(host).is_some()
    }

    /// The instance (its hostname, the container's short id) that answered one GET of `host`
    /// through the proxy with a 200 from the app itself.
    fn answering_instance(&self, host: &str) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.http_port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: butler-bench\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        let text = String::from_utf8_lossy(&raw);
        if !text.starts_with("HTTP/1.1 200") {
            return None;
        }
        let body = text.split_once("\r\n\r\n")?.1;
        Some(
            body.strip_prefix("app=")?
                .split_whitespace()
                .next()?
                .to_owned(),
        )
    }
}

/// Where the logs of the processes a run measured are kept, for looking into a slow repair.
fn log_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-health");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn stop(mut child: Child) {
    let pid = child.id();
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    CHILDREN.lock().unwrap().retain(|&p| p != pid);
}

fn ms_since(t0: SystemTime, rfc3339: &str) -> Option<f64> {
    let t = parse_utc(rfc3339)?;
    Some(match t.duration_since(t0) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -(e.duration().as_secs_f64() * 1000.0),
    })
}

// ---------------------------------------------------------------------------------------------------
// Item 1: fault to healed

#[derive(Clone, Copy, Debug)]
enum Fault {
    NewPort,
    Disconnected,
    NginxStopped,
    NginxRemoved,
    ConfigEdited,
    AppKilled,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::NewPort,
        Fault::Disconnected,
        Fault::NginxStopped,
        Fault::NginxRemoved,
        Fault::ConfigEdited,
        Fault::AppKilled,
    ];

    fn describe(self) -> &'static str {
        match self {
            Fault::NewPort => "app restarted on a new port",
            Fault::Disconnected => "app disconnected from the proxy network",
            Fault::NginxStopped => "nginx container stopped",
            Fault::NginxRemoved => "nginx container removed",
            Fault::ConfigEdited => "live config edited in the nginx container",
            Fault::AppKilled => "app killed (label butler.autorestart=true)",
        }
    }
}

/// One repetition: when the first incident opened and when everything was healed, in ms after the
/// fault; the kinds of the incidents it opened; whether the recovery worker's repair succeeded.
struct Rep {
    detect_ms: Option<f64>,
    healed_ms: Option<f64>,
    kinds: BTreeSet<String>,
    repaired: bool,
}

/// A container of app `app` (label `butler.name`, so a redeploy can start its successor under
/// another container name before the old one goes), on the bench's network and scope.
fn start_app(bench: &Bench, app: &str, port: u16, autorestart: bool) -> AppContainer {
    let mut builder = AppContainer::builder(&unique_name(app))
        .network(&bench.net)
        .label(SCOPE_LABEL, &bench.scope)
        .label("butler.name", app)
        .listen(port);
    if autorestart {
        builder = builder.label("butler.autorestart", "true");
    }
    builder.start()
}

/// The app a fault is injected into: the killed app opts in to restarts, the other does not (an
/// opted-in app would be "repaired" by a restart whatever its fault).
struct App {
    name: String,
    host: String,
    component: String,
    container: Option<AppContainer>,
    port: u16,
    autorestart: bool,
}

impl App {
    fn start(bench: &Bench, prefix: &str, autorestart: bool) -> App {
        let name = unique_name(prefix);
        App {
            host: format!("{name}.localhost"),
            component: format!("app:{name}"),
            container: Some(start_app(bench, &name, 3000, autorestart)),
            port: 3000,
            autorestart,
            name,
        }
    }

    fn container(&self) -> &str {
        self.container.as_ref().expect("the bench app").name()
    }
}

/// Waits until the app answers through the proxy and no incident on it or the proxy is open.
fn settle(bench: &Bench, host: &str, component: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let open = bench
            .incidents(&["--state", "open,recovering"])
            .into_iter()
            .any(|i| i["component"] == component || i["component"] == "proxy");
        if !open && bench.app_answers(host) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("health bench: {host} did not settle within 90 s; measuring anyway");
}

fn last_id(bench: &Bench) -> i64 {
    bench
        .incidents(&["--limit", "10000"])
        .iter()
        .filter_map(|i| i["id"].as_i64())
        .max()
        .unwrap_or(0)
}

/// Injects `fault`; returns the time it took effect.
fn inject(bench: &Bench, fault: Fault, app: &mut App) -> SystemTime {
    let name = app.container().to_owned();
    match fault {
        Fault::NewPort => {
            // A redeploy: the successor listens on another port, then the old container goes.
            app.port = if app.port == 3000 { 4000 } else { 3000 };
            let next = start_app(bench, &app.name, app.port, app.autorestart);
            drop(app.container.replace(next));
            SystemTime::now()
        }
        Fault::Disconnected => {
            let t0 = SystemTime::now();
            butler_testkit::docker_ok(&["network", "disconnect", &bench.net, &name]);
            t0
        }
        Fault::NginxStopped => {
            let t0 = SystemTime::now();
            butler_testkit::docker_ok(&["stop", "-t", "1", &bench.nginx]);
            t0
        }
        Fault::NginxRemoved => {
            let t0 = SystemTime::now();
            butler_testkit::docker_ok(&["rm", "-f", "-v", &bench.nginx]);
            t0
        }
        Fault::ConfigEdited => {
            // The app's own site file on the reload path; the data path's one server otherwise.
            let script = format!(
                "f=/etc/butler-nginx/live/sites/{}.conf; [ -e \"$f\" ] || f=/etc/butler-nginx/live/sites/000-default.conf; \
                 sed -i 's|location = /.well-known/butler-route {{|location = /edited-by-hand {{ return 418; }}\\n    location = /.well-known/butler-route {{|' \"$f\"",
                app.name
            );
            let t0 = SystemTime::now();
            butler_testkit::docker_ok(&["exec", &bench.nginx, "sh", "-c", &script]);
            t0
        }
        Fault::AppKilled => {
            let t0 = SystemTime::now();
            butler_testkit::docker_ok(&["kill", &name]);
            t0
        }
    }
}

/// Healed: the app answers through the proxy and every incident the fault opened (on the app or
/// the proxy) is resolved. Polls the proxy every 50 ms and the store every 500 ms.
fn measure(bench: &Bench, host: &str, component: &str, since: i64, t0: SystemTime) -> Rep {
    let started = Instant::now();
    let mut app_ok_ms: Option<f64> = None;
    let mut last_store = Instant::now() - Duration::from_secs(1);
    while started.elapsed() < HEAL_LIMIT {
        if app_ok_ms.is_none() && bench.app_answers(host) {
            app_ok_ms = t0.elapsed().ok().map(|d| d.as_secs_f64() * 1000.0);
        }
        if app_ok_ms.is_some() && last_store.elapsed() >= Duration::from_millis(500) {
            last_store = Instant::now();
            let new: Vec<Value> = bench
                .incidents(&["--limit", "100"])
                .into_iter()
                .filter(|i| i["id"].as_i64() > Some(since))
                .filter(|i| i["component"] == component || i["component"] == "proxy")
                .collect();
            if !new.is_empty() && new.iter().all(|i| i["state"] == "resolved") {
                let detect = new
                    .iter()
                    .filter_map(|i| ms_since(t0, i["first_seen"].as_str()?))
                    .fold(f64::INFINITY, f64::min)
                    .max(0.0);
                let resolved = new
                    .iter()
                    .filter_map(|i| ms_since(t0, i["resolved_at"].as_str()?))
                    .fold(0.0, f64::max);
                let repaired = new.iter().any(|i| {
                    let id = i["id"].as_i64().unwrap_or(0).to_string();
                    let detail: Value = serde_json::from_str(&bench.cli(&[
                        "incidents",
                        "--id",
                        &id,
                        "--output",
                        "json",
                    ]))
                    .unwrap_or_default();
                    detail["recoveries"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["outcome"] == "success"))
                });
                return Rep {
                    detect_ms: Some(detect),
                    healed_ms: Some(resolved.max(app_ok_ms.unwrap_or(0.0))),
                    kinds: new
                        .iter()
                        .filter_map(|i| i["kind"].as_str().map(str::to_owned))
                        .collect(),
                    repaired,
                };
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Rep {
        detect_ms: None,
        healed_ms: None,
        kinds: BTreeSet::new(),
        repaired: false,
    }
}

fn item1_faults(reps: usize, interval: &str) {
    let timeout = humantime::parse_duration(interval)
        .map(|d| (d / 2).max(Duration::from_secs(1)))
        .unwrap_or(Duration::from_secs(5));
    let bench = Bench::new(
        "bench-hf",
        &format!(
            "interval = \"{interval}\"\ntimeout = \"{}\"",
            humantime::format_duration(timeout)
        ),
    );
    let mut plain = App::start(&bench, "bench-hf-app", false);
    let mut opted_in = App::start(&bench, "bench-hf-auto", true);
    bench.cli(&["proxy-update"]);
    let (butler, log) = bench.spawn(&["run", "--only", "health-monitor,recovery"], "butler.log");
    butler_testkit::wait_until("the butler's workers", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("recovery worker ready"))
    });

    let mut rows = Vec::new();
    for fault in Fault::ALL {
        let mut done: Vec<Rep> = Vec::new();
        let app = match fault {
            Fault::AppKilled => &mut opted_in,
            _ => &mut plain,
        };
        for rep in 0..reps {
            settle(&bench, &app.host, &app.component);
            let since = last_id(&bench);
            let t0 = inject(&bench, fault, app);
            let r = measure(&bench, &app.host, &app.component, since, t0);
            eprintln!(
                "health bench: {} #{}: detected {:?} ms, healed {:?} ms, {:?}",
                fault.describe(),
                rep + 1,
                r.detect_ms.map(|v| v.round()),
                r.healed_ms.map(|v| v.round()),
                r.kinds
            );
            done.push(r);
        }
        let healed = sorted(done.iter().filter_map(|r| r.healed_ms).collect());
        let detect = sorted(done.iter().filter_map(|r| r.detect_ms).collect());
        let kinds: BTreeSet<&str> = done
            .iter()
            .flat_map(|r| r.kinds.iter().map(String::as_str))
            .collect();
        let repaired = done.iter().filter(|r| r.repaired).count();
        let secs = |v: f64| format!("{:.1}", v / 1000.0);
        rows.push(format!(
            "| {} | {} | {}/{} | {} | {} | {} | {} | {} |",
            fault.describe(),
            kinds.into_iter().collect::<Vec<_>>().join(", "),
            healed.len(),
            reps,
            secs(pct(&detect, 50.0)),
            secs(pct(&healed, 50.0)),
            secs(pct(&healed, 95.0)),
            secs(healed.last().copied().unwrap_or(f64::NAN)),
            repaired,
        ));
    }
    stop(butler);
    drop((plain, opted_in));
    let kept = log_dir().join("fault-butler.log");
    let _ = std::fs::copy(&log, &kept);
    eprintln!(
        "health bench: the butler's log is kept in {}",
        kept.display()
    );
    let goal = humantime::parse_duration(interval).unwrap_or_default() + Duration::from_secs(2);
    let mut out = format!(
        "### 1. Fault to healed (`butler run --only health-monitor,recovery`, release build) — goal: within one check interval + 2 s = {} s\n\n\
         Check interval {interval}, probe timeout {}, {reps} repetitions per fault, one app. Healed: the app answers 200 through the proxy \
         again and every incident the fault opened is resolved (times from the store's first_seen and resolved_at). \
         Detected: the first incident opened.\n\n\
         | fault | incidents opened | healed | detected p50 (s) | healed p50 (s) | healed p95 (s) | max (s) | repaired by recovery |\n\
         |---|---|---|---|---|---|---|---|\n",
        goal.as_secs(),
        humantime::format_duration(timeout),
    );
    for r in rows {
        out += &r;
        out.push('\n');
    }
    table(1, out);
}

// ---------------------------------------------------------------------------------------------------
// Item 2: the health-monitor's CPU and memory

/// utime + stime of `pid`, in clock ticks (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    let get = |n: usize| {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(14) + get(15)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn item2_monitor(window: Duration) {
    // The product's defaults: interval 10 s, timeout 5 s.
    let bench = Bench::new("bench-hm", "");
    let mut rows = Vec::new();
    let mut apps: Vec<String> = Vec::new();
    for n in [0, APPS] {
        let t = Instant::now();
        apps.extend(run_many_labelled(
            "bench-hm-app",
            n - apps.len(),
            6,
            0,
            Some(&bench.net),
            &[bench.scope_label()],
        ));
        let started = t.elapsed();
        // Routed first, so every app gets its full set of checks (TCP, HTTP direct and through nginx).
        bench.cli(&["proxy-update"]);
        let (monitor, log) =
            bench.spawn(&["worker", "health-monitor"], &format!("monitor-{n}.log"));
        let pid = monitor.id();
        butler_testkit::wait_until("the health-monitor", Duration::from_secs(60), || {
            std::fs::read_to_string(&log).is_ok_and(|l| l.contains("health-monitor worker ready"))
        });
        // Past the first rounds (the first one also reads Docker's data root, once).
        std::thread::sleep(Duration::from_secs(15));
        let before = cpu_ticks(pid);
        let t = Instant::now();
        std::thread::sleep(window);
        let ticks = cpu_ticks(pid) - before;
        let cpu = ticks as f64 / clock_ticks() / t.elapsed().as_secs_f64() * 100.0;
        let healthy = bench
            .cli(&["status", "--output", "json"])
            .parse::<Value>()
            .ok()
            .and_then(|s| {
                s["apps"].as_array().map(|a| {
                    (
                        a.iter().filter(|a| a["status"] == "healthy").count(),
                        a.len(),
                    )
                })
            })
            .unwrap_or((0, 0));
        rows.push(format!(
            "| {n} | {}/{} | {:.2} | {:.1} | {:.1} | {} | {:.0} s |",
            healthy.0,
            healthy.1,
            cpu,
            status_field(pid, "VmRSS:") / 1024.0,
            status_field(pid, "VmHWM:") / 1024.0,
            status_field(pid, "Threads:"),
            started.as_secs_f64(),
        ));
        stop(monitor);
    }
    remove_bulk(&apps);
    let mut out = format!(
        "### 2. health-monitor CPU and memory (`butler worker health-monitor` as its own process, release build) — goal < 1% of a core and < 20 MB with {APPS} apps\n\n\
         The defaults (interval 10 s, timeout 5 s); tiny routed apps on the bench's own network. CPU is utime+stime from /proc/<pid>/stat \
         over {} s, after 15 s of warm-up; memory from /proc/<pid>/status at the end.\n\n\
         | running apps | healthy / checked | CPU (% of a core) | VmRSS (MB) | VmHWM (MB) | threads | apps start time |\n\
         |---|---|---|---|---|---|---|\n",
        window.as_secs()
    );
    for r in rows {
        out += &r;
        out.push('\n');
    }
    table(2, out);
}

/// One GET through the proxy on a new connection: its status and how long it took (`None`: no
/// answer within 5 s).
fn timed_get(port: u16, host: &str) -> (Option<u16>, Duration) {
    let t = Instant::now();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let status = (|| {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut raw = Vec::new();
        let _ = s.read_to_end(&mut raw);
        String::from_utf8_lossy(&raw)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    })();
    (status, t.elapsed())
}

/// Issue 11's two figures, with `butler run` (every worker, the product's defaults):
/// a container that EXPOSEs 8080 but listens on 9100, from `docker run` returning to its first
/// 200 through the proxy; and the first request after an app's only instance (and one of two)
/// was killed.
fn item3_promises(reps: usize) {
    let bench = Bench::new("bench-pr", "");
    let (butler, log) = bench.spawn(&["run"], "promises.log");
    butler_testkit::wait_until("the butler's proxy", Duration::from_secs(90), || {
        timed_get(bench.http_port, "bench-readiness.invalid")
            .0
            .is_some()
    });
    let _ = log;
    let mut to_first_200 = Vec::new();
    let mut not_served = 0;
    for i in 0..reps {
        let name = unique_name(&format!("bench-pr-mm{i}"));
        let host = format!("{name}.localhost");
        let t = Instant::now();
        let app = AppContainer::builder(&name)
            .network(&bench.net)
            .label(SCOPE_LABEL, &bench.scope)
            .expose(8080)
            .listen(9100)
            .spawn();
        let deadline = t + Duration::from_secs(30);
        loop {
            if timed_get(bench.http_port, &host).0 == Some(200) && bench.app_answers(&host) {
                to_first_200.push(t.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if Instant::now() > deadline {
                not_served += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(app);
    }

    let mut only = Vec::new();
    let mut one_of_two = Vec::new();
    let mut failed_of_two = 0;
    for i in 0..reps {
        let name = unique_name(&format!("bench-pr-gone{i}"));
        let host = format!("{name}.localhost");
        let instance = |n: usize| {
            AppContainer::builder(&format!("{name}-{n}"))
                .network(&bench.net)
                .label(SCOPE_LABEL, &bench.scope)
                .label("butler.name", &name)
                .start()
        };
        let solo = instance(1);
        butler_testkit::wait_until("the app", Duration::from_secs(30), || {
            bench.app_answers(&host)
        });
        butler_testkit::docker_ok(&["kill", solo.name()]);
        only.push(timed_get(bench.http_port, &host).1.as_secs_f64() * 1000.0);
        drop(solo);
        let pair = [instance(2), instance(3)];
        // Both in nginx's upstream, seen by both answering through the proxy: `butler proxy
        // routes` is the plan now, which has the second instance before nginx does, and a kill
        // then took the app's only served instance (a 504, rightly).
        let both: BTreeSet<String> = pair.iter().map(|c| c.id()[..12].to_owned()).collect();
        let mut seen = BTreeSet::new();
        butler_testkit::wait_until("both instances", Duration::from_secs(30), || {
            seen.extend(bench.answering_instance(&host));
            seen.is_superset(&both)
        });
        butler_testkit::docker_ok(&["kill", pair[0].name()]);
        let (status, took) = timed_get(bench.http_port, &host);
        one_of_two.push(took.as_secs_f64() * 1000.0);
        if status != Some(200) {
            failed_of_two += 1;
            eprintln!(
                "health bench: one of two killed, {} answered {status:?} after {took:?}; nginx said:\n{}",
                pair[0].name(),
                {
                    let out = butler_testkit::docker(&["logs", "--tail", "4", &bench.nginx]);
                    String::from_utf8_lossy(&out.stderr).into_owned()
                }
            );
        }
    }
    stop(butler);

    let row =
        |what: &str, v: Vec<f64>, extra: String| format!("{} {extra} |\n", stats::row(what, &v));
    let mut out = String::from(
        "### 3. No 502 from a port mismatch; a vanished server fails fast (`butler run`, defaults) — goals: first 200 < 2 s; first request after a vanished instance < 1 s\n\n\
         | what | n | p50 (ms) | p95 (ms) | max (ms) | notes |\n|---|---|---|---|---|---|\n",
    );
    out += &row(
        "`docker run` (EXPOSE 8080, listens on 9100) → first 200 through the proxy",
        to_first_200,
        format!("{not_served} not served within 30 s"),
    );
    out += &row(
        "only instance killed → first answer (the error or down page)",
        only,
        String::new(),
    );
    out += &row(
        "one of two instances killed → first answer",
        one_of_two,
        format!("{failed_of_two} not 200"),
    );
    table(3, out);
}

// ---------------------------------------------------------------------------------------------------

fn main() {
    cleanup_on_panic();
    let items = bench_items(&[1, 2, 3]);
    let reps: usize = env_or("BENCH_REPS", 5);
    let interval: String = env_or("BENCH_INTERVAL", "5s".to_owned());
    let window = Duration::from_secs(env_or("BENCH_WINDOW", 60));
    let started = Instant::now();
    butler_testkit::ensure_image("app");
    butler_testkit::ensure_image("nginx");

    if items.contains(&1) {
        eprintln!("item 1: fault to healed, {reps} repetitions per fault, interval {interval}");
        item1_faults(reps, &interval);
    }
    if items.contains(&2) {
        eprintln!("item 2: health-monitor CPU and memory with 0 and {APPS} apps");
        item2_monitor(window);
    }
    if items.contains(&3) {
        let reps = env_or("BENCH_REPS", 10);
        eprintln!("item 3: port mismatch to first 200, vanished server, {reps} repetitions");
        item3_promises(reps);
    }

    cleanup_everything();
    print_tables();
    println!(
        "_Run: `cargo bench --bench health`, {:.0} s, {} cores, load average {}._",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
