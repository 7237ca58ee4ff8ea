//! Dynamic-proxy benchmark (issue 3, "Measure"): how fast a new container is routed, how many
//! reloads a burst costs, plan+render time, the worker's memory, and errors under load while the
//! config churns. Prints one markdown table per item; asserts nothing.
//!
//!     cargo bench --bench proxy
//!     BENCH_ITEMS=3,4 cargo bench --bench proxy    # only some items
//!
//! Needs the Docker engine and builds the test images like the integration tests (testkit/).
//! Every container it starts carries `devops-butler.test=<pid>` and is removed at the end, also when
//! it panics. About 10 minutes on 2 cores; loopback only.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use butler_testkit::bench::{
    CHILDREN, EXTRA_CONTAINERS, bench_items, cleanup_everything, cleanup_on_panic, parse_utc,
    print_tables, remove_bulk, run_many, status_field, table,
};
use butler_testkit::load::{LoadOptions, LoadResult, run_load};
use butler_testkit::stats::{ms, pct, row, sorted};
use butler_testkit::{AppContainer, BUTLER_NETWORK, ButlerProcess, unique_name};
use devops_butler::config::Config;
use devops_butler::docker::ContainerSnapshot;
use devops_butler::docker::events::{self, Coalescer};
use devops_butler::proxy::reconcile::Reconciler;
use devops_butler::proxy::{PlanSettings, RenderSettings, Templates, plan, render};
use devops_butler::store::Store;
use futures_util::StreamExt;

/// A real app takes a moment to listen; every timed app here does too.
const APP_DELAY_MS: u64 = 300;
const SEQUENTIAL_STARTS: usize = 50;
/// Starts timed in-process (events → coalescer → reconcile) for the split of item 1.
const SPLIT_STARTS: usize = 20;
const BURST: usize = 50;
const SYNTHETIC_APPS: usize = 1000;
const RENDER_ITERATIONS: usize = 50;
const RSS_STEPS: [usize; 3] = [0, 50, 200];
const LOAD_CONNECTIONS: usize = 4;
/// Requests per second per connection: a steady load that leaves the 2 cores room for the butler,
/// nginx and dockerd, so latency measures the proxy and not a saturated host.
const LOAD_RATE_PER_CONNECTION: u64 = 200;
const LOAD_BASELINE: Duration = Duration::from_secs(20);
const RECONFIGURATIONS: usize = 100;
const POLL: Duration = Duration::from_millis(5);

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

// ---------------------------------------------------------------------------------------------------
// Small helpers

/// The timestamp of the first log line containing `needle`.
fn log_time(log: &str, needle: &str) -> Option<SystemTime> {
    let line = log.lines().find(|l| l.contains(needle))?;
    parse_utc(line.split_whitespace().next()?)
}

fn since(t0: SystemTime, t: SystemTime) -> f64 {
    match t.duration_since(t0) {
        Ok(d) => ms(d),
        Err(e) => -ms(e.duration()),
    }
}

/// Polls `GET /` on `addr` with `Host: host` every `POLL` until `ok`; the time since `from`.
fn poll_until(
    addr: &str,
    host: &str,
    from: Instant,
    timeout: Duration,
    ok: impl Fn(&butler_testkit::HttpResponse) -> bool,
) -> Option<Duration> {
    while from.elapsed() < timeout {
        if let Ok(r) = quick_get(addr, host)
            && ok(&r)
        {
            return Some(from.elapsed());
        }
        std::thread::sleep(POLL);
    }
    None
}

/// Like butler_testkit::http_get with a short timeout (a poll must not hang on one attempt).
fn quick_get(addr: &str, host: &str) -> std::io::Result<butler_testkit::HttpResponse> {
    let sock: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: butler-bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not HTTP"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok(butler_testkit::HttpResponse {
        status,
        headers: Vec::new(),
        body_bytes: body.as_bytes().to_vec(),
        body,
    })
}

fn is_app(r: &butler_testkit::HttpResponse) -> bool {
    r.status == 200 && r.body.starts_with("app=")
}

/// A timed app: exposes 3000 like a typical image's EXPOSE, listens after APP_DELAY_MS.
fn timed_app(name: &str) -> butler_testkit::AppBuilder {
    AppContainer::builder(name)
        .env("DELAY_MS", &APP_DELAY_MS.to_string())
        .expose(3000)
}

/// The butler's config as ButlerProcess writes it, for processes this bench runs itself.
fn config_text(nginx: &str, http_port: u16, dir: &Path) -> String {
    format!(
        "[proxy]\nhttp_port = {http_port}\nimage = \"{image}\"\ncontainer_name = \"{nginx}\"\n\
         templates_dir = \"{templates}\"\n\
         [dashboard]\nlisten = \"127.0.0.1:{dashboard}\"\n\
         [state]\ndir = \"{state}\"\n\
         [health]\ninterval = \"2s\"\ntimeout = \"1s\"\n",
        image = butler_testkit::ensure_image("nginx"),
        templates = dir.join("templates").display(),
        dashboard = butler_testkit::free_port(),
        state = dir.join("state").display(),
    )
}

// ---------------------------------------------------------------------------------------------------
// Item 3: plan+render of 1,000 synthetic apps (pure, no Docker)

fn synthetic_apps(n: usize) -> Vec<ContainerSnapshot> {
    (0..n)
        .map(|i| ContainerSnapshot {
            id: format!("{:064x}", i + 1),
            name: format!("app-{i:04}"),
            image: "bench/app:1".into(),
            exposed_ports: vec![3000],
            listening_ports: Some(vec![3000]),
            networks: [(
                BUTLER_NETWORK.to_owned(),
                IpAddr::V4(Ipv4Addr::new(10, 9, (i / 250) as u8, (i % 250 + 2) as u8)),
            )]
            .into(),
            running: true,
            started_at: Some("2025-01-01T00:00:00Z".into()),
            ..Default::default()
        })
        .collect()
}

fn item3_plan_render() {
    let apps = synthetic_apps(SYNTHETIC_APPS);
    let plan_settings = PlanSettings::default();
    let render_settings = RenderSettings::default();
    let (mut load_t, mut plan_t, mut render_t, mut total_t) = (vec![], vec![], vec![], vec![]);
    let mut files = 0;
    let mut bytes = 0;
    for _ in 0..RENDER_ITERATIONS {
        let t = Instant::now();
        // The worker loads (and parses) the templates on every reconcile, so overrides apply live.
        let templates = Templates::load(None).expect("shipped templates");
        let t_load = t.elapsed();
        let t = Instant::now();
        let p = plan(std::hint::black_box(&apps), &plan_settings);
        let t_plan = t.elapsed();
        let t = Instant::now();
        let rendered = render(&p, &render_settings, &templates).expect("render");
        let t_render = t.elapsed();
        assert_eq!(p.routes.len(), SYNTHETIC_APPS, "{:?}", p.problems.first());
        files = rendered.files.len();
        bytes = rendered.files.values().map(String::len).sum::<usize>();
        std::hint::black_box(&rendered);
        load_t.push(ms(t_load));
        plan_t.push(ms(t_plan));
        render_t.push(ms(t_render));
        total_t.push(ms(t_load + t_plan + t_render));
    }
    let mut out = format!(
        "### 3. plan+render, {SYNTHETIC_APPS} synthetic apps (pure library, {RENDER_ITERATIONS} iterations; {files} files, {:.0} KiB) — goal p50 < 20 ms\n\n\
         | step | n | p50 (ms) | p95 (ms) | max (ms) |\n|---|---|---|---|---|\n",
        bytes as f64 / 1024.0
    );
    for line in [
        row("plan", &plan_t),
        row("render", &render_t),
        row(
            "plan+render",
            &plan_t
                .iter()
                .zip(&render_t)
                .map(|(a, b)| a + b)
                .collect::<Vec<_>>(),
        ),
        row("template load (per reconcile)", &load_t),
        row("load+plan+render (as the worker runs it)", &total_t),
    ] {
        out += &line;
        out.push('\n');
    }
    table(3, out);
}

// ---------------------------------------------------------------------------------------------------
// Item 1: start-to-route against the floor, with `butler run`

struct StartSample {
    proxy_200: Option<Duration>,
    floor: Option<Duration>,
    route_logged: Option<f64>,
    applied_logged: Option<f64>,
}

fn item1_sequential(butler: &ButlerProcess, apps: &mut Vec<AppContainer>) -> Vec<StartSample> {
    let proxy = butler.proxy_addr();
    let mut samples = Vec::new();
    for i in 0..SEQUENTIAL_STARTS {
        let name = unique_name("bench-seq");
        let host = format!("{name}.localhost");
        let app = timed_app(&name).spawn();
        let t0 = Instant::now();
        let t0_wall = SystemTime::now();
        let (proxy_200, floor) = std::thread::scope(|s| {
            let via_proxy =
                s.spawn(|| poll_until(&proxy, &host, t0, Duration::from_secs(20), is_app));
            let direct = s.spawn(|| {
                let ip = butler_testkit::container_ip(&name, "bridge");
                poll_until(
                    &format!("{ip}:3000"),
                    &host,
                    t0,
                    Duration::from_secs(20),
                    is_app,
                )
            });
            (via_proxy.join().unwrap(), direct.join().unwrap())
        });
        // The route line is logged after the apply that made it live; give the log a moment.
        let needle = format!("route + {name}:");
        let mut route_logged = None;
        let mut applied_logged = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let log = butler.log();
            if let Some(pos) = log.find(&needle) {
                let line_start = log[..pos].rfind('\n').map_or(0, |i| i + 1);
                route_logged = log_time(&log[line_start..], &needle).map(|t| since(t0_wall, t));
                applied_logged =
                    log_time(&log[pos..], "; applied version ").map(|t| since(t0_wall, t));
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "  seq {i:2}: proxy {:?} floor {:?} route-logged {:?} ms",
            proxy_200.map(ms),
            floor.map(ms),
            route_logged
        );
        samples.push(StartSample {
            proxy_200,
            floor,
            route_logged,
            applied_logged,
        });
        apps.push(app);
        // Let the follow-up reconcile (the network connect event) pass before the next start.
        std::thread::sleep(Duration::from_millis(700));
    }
    samples
}

/// The same path as the worker (engine events → coalescer → reconcile), run in-process so each
/// step's time is visible; against its own nginx, with the apps of the sequential run still up.
#[derive(Default)]
struct Split {
    event: Vec<f64>,
    discover: Vec<f64>,
    plan_render: Vec<f64>,
    ensure_nginx: Vec<f64>,
    upload: Vec<f64>,
    validate: Vec<f64>,
    swap: Vec<f64>,
    reload: Vec<f64>,
    verify: Vec<f64>,
    record: Vec<f64>,
    total: Vec<f64>,
    apps: usize,
    not_applied: usize,
}

fn item1_split(apps: &mut Vec<AppContainer>) -> Split {
    let dir = tempfile::tempdir().unwrap();
    let nginx = unique_name("bench-nginx");
    EXTRA_CONTAINERS.lock().unwrap().push(nginx.clone());
    let http_port = butler_testkit::free_port();
    let config_path = dir.path().join("butler.toml");
    let config = Config::parse(&config_text(&nginx, http_port, dir.path()), &config_path)
        .expect("bench config");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut split = Split::default();
    rt.block_on(async {
        let docker = devops_butler::docker::client::connect(None)
            .await
            .expect("Docker engine");
        let store = Store::open(&dir.path().join("state")).expect("store");
        let mut reconciler = Reconciler::new(docker.clone(), Arc::new(config), store);
        let mut engine_events = Box::pin(events::watch(docker));
        let first = reconciler
            .reconcile("start")
            .await
            .expect("first reconcile");
        eprintln!("  split: first reconcile: {}", first.summary());
        let mut coalescer = Coalescer::default();
        for i in 0..SPLIT_STARTS {
            // Whatever the last round caused (network connects) and events replayed at subscribe.
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(300), engine_events.next()).await
            {
            }
            let name = unique_name("bench-split");
            let app = tokio::task::block_in_place(|| timed_app(&name).spawn());
            let t0 = Instant::now();
            let batch = coalescer.next_batch(&mut engine_events).await;
            let event = t0.elapsed();
            // As the worker does: re-inspect only what the batch names.
            let changed = batch.filter(|b| !b.resync).map(|b| b.containers);
            let report = reconciler
                .reconcile_changed("bench", changed.as_ref())
                .await
                .expect("reconcile");
            let total = t0.elapsed();
            let t = &report.timings;
            let Some(apply) = report.apply.as_ref() else {
                split.not_applied += 1;
                continue;
            };
            if !report.succeeded() || !report.changes.iter().any(|c| c.line().contains(&name)) {
                eprintln!("  split {i}: {} ({:?})", report.summary(), apply.status);
                split.not_applied += 1;
            }
            let a = &apply.timings;
            let parts = t.discover + t.plan_render + t.ensure_nginx + t.apply;
            split.event.push(ms(event));
            split.discover.push(ms(t.discover));
            split.plan_render.push(ms(t.plan_render));
            split.ensure_nginx.push(ms(t.ensure_nginx));
            split.upload.push(ms(a.upload));
            split.validate.push(ms(a.validate));
            split.swap.push(ms(a.swap));
            split.reload.push(ms(a.reload));
            split.verify.push(ms(a.verify));
            split.record.push(ms((total - event).saturating_sub(parts)));
            split.total.push(ms(total));
            split.apps = report.plan.routes.len();
            eprintln!(
                "  split {i:2}: event {:.0} discover {:.0} render {:.1} apply {:.0} total {:.0} ms",
                ms(event),
                ms(t.discover),
                ms(t.plan_render),
                ms(t.apply),
                ms(total)
            );
            apps.push(app);
        }
    });
    drop(rt);
    let _ = butler_testkit::docker(&["rm", "-f", "-v", &nginx]);
    split
}

fn item1_table(samples: &[StartSample], split: &Split) {
    let get = |f: &dyn Fn(&StartSample) -> Option<f64>| -> Vec<f64> {
        samples.iter().filter_map(f).collect()
    };
    let proxy = get(&|s| s.proxy_200.map(ms));
    let floor = get(&|s| s.floor.map(ms));
    let route = get(&|s| s.route_logged);
    let applied = get(&|s| s.applied_logged);
    let ratios: Vec<f64> = samples
        .iter()
        .filter_map(|s| Some(ms(s.proxy_200?) / ms(s.floor?)))
        .collect();
    let route_first = samples
        .iter()
        .filter(|s| matches!((s.route_logged, s.floor), (Some(r), Some(f)) if r <= ms(f)))
        .count();
    let (p, f) = (
        pct(&sorted(proxy.clone()), 50.0),
        pct(&sorted(floor.clone()), 50.0),
    );
    let failed = samples.iter().filter(|s| s.proxy_200.is_none()).count();
    let mut out = format!(
        "### 1. Start-to-route, {SEQUENTIAL_STARTS} sequential app starts (`butler run`; app listens after DELAY_MS={APP_DELAY_MS}, EXPOSE 3000) — goal p50 ≤ 1.2× floor\n\n\
         All times from `docker start` returning.\n\n\
         | measure | n | p50 (ms) | p95 (ms) | max (ms) |\n|---|---|---|---|---|\n"
    );
    for line in [
        row("first 200 from the app through the proxy", &proxy),
        row("floor: first 200 from the app on its own IP", &floor),
        row(
            "route live: butler logs `route + <app>` (after apply+verify)",
            &route,
        ),
        row("applied: butler logs `applied version`", &applied),
    ] {
        out += &line;
        out.push('\n');
    }
    let r = sorted(ratios);
    out += &format!(
        "\nproxy/floor: p50 of the two = **{:.2}×** (per start: p50 {:.2}×, p95 {:.2}×); route live before the app answered in {route_first}/{} starts; {failed} starts never answered through the proxy in 20 s.\n",
        p / f,
        pct(&r, 50.0),
        pct(&r, 95.0),
        samples.len()
    );
    out += &format!(
        "\nSplit of the butler's part, {} more starts through the same path in-process \
         (engine events → `Coalescer::default()` → `Reconciler::reconcile`, its own nginx, {} apps routed):\n\n\
         | step | n | p50 (ms) | p95 (ms) | max (ms) |\n|---|---|---|---|---|\n",
        split.total.len(),
        split.apps
    );
    for line in [
        row(
            "event delay: `docker start` returned → batch closed (25 ms quiet for a lone change)",
            &split.event,
        ),
        row(
            "discover: inspect the batch's containers, connect to proxy net, re-inspect",
            &split.discover,
        ),
        row("plan+render (templates loaded)", &split.plan_render),
        row("ensure nginx (inspect)", &split.ensure_nginx),
        row("apply: upload (images without tar)", &split.upload),
        row(
            "apply: tar on stdin + validate + swap + HUP (one exec)",
            &split.validate,
        ),
        row("apply: swap + HUP (images without a shell)", &split.swap),
        row("apply: HUP → only new workers accept", &split.reload),
        row(
            "apply: verify (route probe until it answers from the new block)",
            &split.verify,
        ),
        row("rest (live-version read, store record)", &split.record),
        row(
            "total: `docker start` returned → reconcile returned",
            &split.total,
        ),
    ] {
        out += &line;
        out.push('\n');
    }
    if split.not_applied > 0 {
        out += &format!(
            "\n{} of the in-process rounds did not apply the new route in that round.\n",
            split.not_applied
        );
    }
    table(1, out);
}

// ---------------------------------------------------------------------------------------------------
// Item 2: reloads per burst of 50

fn item2_burst(butler: &ButlerProcess) {
    let before = butler.applied_count();
    let t0 = Instant::now();
    let names = run_many("bench-burst", BURST, BURST, APP_DELAY_MS, None);
    let spawned = t0.elapsed();
    let needles: Vec<String> = names.iter().map(|n| format!("route + {n}:")).collect();
    let mut all_routed = None;
    while t0.elapsed() < Duration::from_secs(60) {
        let log = butler.log();
        if needles.iter().all(|n| log.contains(n)) {
            all_routed = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_routed = butler.applied_count() - before;
    // Then every app through the proxy (their own start included).
    let mut all_answer = None;
    if all_routed.is_some() {
        let proxy = butler.proxy_addr();
        let ok = names.iter().all(|n| {
            poll_until(
                &proxy,
                &format!("{n}.localhost"),
                Instant::now(),
                Duration::from_secs(20),
                is_app,
            )
            .is_some()
        });
        if ok {
            all_answer = Some(t0.elapsed());
        }
    }
    // Follow-up rounds (network connect events) that the burst still causes.
    std::thread::sleep(Duration::from_secs(4));
    let settled = butler.applied_count() - before;
    let routed = {
        let log = butler.log();
        needles.iter().filter(|n| log.contains(n.as_str())).count()
    };
    let out = format!(
        "### 2. Reloads per burst of {BURST} (`butler run`; {BURST} `docker run -d` at once, DELAY_MS={APP_DELAY_MS}) — issue's test: ≤ 3\n\n\
         | measure | value |\n|---|---|\n\
         | containers started / routed | {BURST} / {routed} |\n\
         | configs applied (reloads) until all {BURST} routed | **{at_routed}** |\n\
         | configs applied including follow-ups (4 s later) | {settled} |\n\
         | last `docker run` returned | {:.0} ms |\n\
         | all {BURST} routes live (log) | {} |\n\
         | all {BURST} answer through the proxy | {} |\n",
        ms(spawned),
        all_routed.map_or("not within 60 s".into(), |d| format!("{:.0} ms", ms(d))),
        all_answer.map_or("no".into(), |d| format!("{:.0} ms", ms(d))),
    );
    table(2, out);
    remove_bulk(&names);
}

// ---------------------------------------------------------------------------------------------------
// Item 5: steady load through the proxy, with and without 100 reconfigurations

fn load_options() -> LoadOptions {
    LoadOptions {
        connections: LOAD_CONNECTIONS,
        rate_per_connection: LOAD_RATE_PER_CONNECTION,
        ..LoadOptions::default()
    }
}

fn load_row(what: &str, r: &LoadResult, reconfigs: &str) -> String {
    let lat = sorted(r.latencies_us.iter().map(|&u| u as f64 / 1000.0).collect());
    format!(
        "| {what} | {:.0} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {reconfigs} |",
        r.elapsed.as_secs_f64(),
        r.sent,
        r.ok,
        r.non_2xx,
        r.io_errors,
        r.non_2xx + r.io_errors,
        r.retried,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
    )
}

fn item5_load(butler: &ButlerProcess, target: &AppContainer) {
    let addr: SocketAddr = butler.proxy_addr().parse().unwrap();
    let host = format!("{}.localhost", target.name());
    butler.wait_for_app(&host);
    let churn_name = unique_name("bench-churn");
    let churn = AppContainer::builder(&churn_name).expose(3000).spawn();
    butler.wait_for_app(&format!("{churn_name}.localhost"));
    std::thread::sleep(Duration::from_secs(1));

    // Without churn.
    let stop = AtomicBool::new(false);
    let baseline = std::thread::scope(|s| {
        let load = s.spawn(|| run_load(addr, &host, &load_options(), &stop));
        std::thread::sleep(LOAD_BASELINE);
        stop.store(true, Ordering::Relaxed);
        load.join().unwrap()
    });

    // With churn: stop and start the unrelated app, each waiting for its reconfiguration.
    let stop = AtomicBool::new(false);
    let before = butler.applied_count();
    let mut timeouts = 0;
    let churned = std::thread::scope(|s| {
        let load = s.spawn(|| run_load(addr, &host, &load_options(), &stop));
        let deadline = Instant::now() + Duration::from_secs(300);
        let mut k = 0;
        while butler.applied_count() - before < RECONFIGURATIONS && Instant::now() < deadline {
            let want = butler.applied_count() + 1;
            if k % 2 == 0 {
                butler_testkit::docker_ok(&["stop", "-t", "2", &churn_name]);
            } else {
                butler_testkit::docker_ok(&["start", &churn_name]);
            }
            k += 1;
            let t = Instant::now();
            while butler.applied_count() < want && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            if butler.applied_count() < want {
                timeouts += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        (load.join().unwrap(), k)
    });
    let (churn_load, actions) = churned;
    let applied = butler.applied_count() - before;
    drop(churn);
    let out = format!(
        "### 5. Steady load through the proxy, without and with {RECONFIGURATIONS} reconfigurations — goal: zero failed requests\n\n\
         In-bench load generator: {LOAD_CONNECTIONS} keep-alive connections to {addr} (loopback), {} req/s in total, `GET /` to one app. \
         Churn: `docker stop`/`docker start` of an unrelated app, each waiting for the butler's applied config before the next ({actions} actions, {timeouts} without a new config within 10 s).\n\n\
         | run | seconds | sent | 2xx | non-2xx | IO errors | **failed** | retried after keep-alive close | p50 (ms) | p99 (ms) | max (ms) | configs applied |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n{}\n{}\n",
        LOAD_CONNECTIONS as u64 * LOAD_RATE_PER_CONNECTION,
        load_row("no churn", &baseline, "0"),
        load_row("with churn", &churn_load, &applied.to_string()),
    );
    table(5, out);
}

// ---------------------------------------------------------------------------------------------------
// Item 4: the dynamic-proxy worker's RSS

fn item4_rss() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = unique_name("bench-nginx");
    EXTRA_CONTAINERS.lock().unwrap().push(nginx.clone());
    let http_port = butler_testkit::free_port();
    let config_path = dir.path().join("butler.toml");
    std::fs::write(&config_path, config_text(&nginx, http_port, dir.path())).unwrap();
    let log_path: PathBuf = dir.path().join("worker.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child: Child = Command::new(butler_bin())
        .args(["worker", "dynamic-proxy", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start butler worker dynamic-proxy");
    let pid = child.id();
    CHILDREN.lock().unwrap().push(pid);
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    // "N apps routed" of the worker's last summary line.
    let routed = || -> Option<usize> {
        let log = read_log();
        let line = log.lines().rev().find(|l| l.contains(" apps routed, "))?;
        let before = line.split(" apps routed, ").next()?;
        before.split_whitespace().last()?.parse().ok()
    };
    butler_testkit::wait_until("the worker is ready", Duration::from_secs(60), || {
        read_log().contains("dynamic-proxy worker ready")
    });

    let mut rows = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for &n in &RSS_STEPS {
        let more = n - names.len();
        let t = Instant::now();
        // On the proxy network from the start: memory does not depend on it, and it spares the
        // engine 200 network connects.
        names.extend(run_many("bench-rss", more, 6, 0, Some(BUTLER_NETWORK)));
        let started = t.elapsed();
        let t = Instant::now();
        let all_routed = {
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let r = routed().unwrap_or(0);
                if r >= n || Instant::now() > deadline {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let routing = t.elapsed();
        // Settled: a few periodic rounds (every 2 s) with nothing new.
        std::thread::sleep(Duration::from_secs(8));
        let running = butler_testkit::docker(&["ps", "-q"]);
        let running = String::from_utf8_lossy(&running.stdout).lines().count();
        rows.push(format!(
            "| {n} | {} | {running} | {:.1} | {:.1} | {} | {:.0} s + {:.0} s |",
            routed().unwrap_or(all_routed),
            status_field(pid, "VmRSS:") / 1024.0,
            status_field(pid, "VmHWM:") / 1024.0,
            status_field(pid, "Threads:"),
            started.as_secs_f64(),
            routing.as_secs_f64(),
        ));
    }
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    CHILDREN.lock().unwrap().retain(|&p| p != pid);
    remove_bulk(&names);
    let _ = butler_testkit::docker(&["rm", "-f", "-v", &nginx]);
    let mut out = String::from(
        "### 4. dynamic-proxy worker memory (`butler worker dynamic-proxy` as its own process, release build) — goal < 20 MB at 200\n\n\
         Tiny containers: the static test app (1.4 MB image), started on the proxy network. Read from /proc/<pid>/status 8 s after all were routed.\n\n\
         | bench containers | apps routed | containers running on the engine | VmRSS (MB) | VmHWM (MB) | threads | start + route time |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out += &r;
        out.push('\n');
    }
    table(4, out);
}

// ---------------------------------------------------------------------------------------------------

fn main() {
    cleanup_on_panic();
    // BENCH_ITEMS=3,4 runs only those items (default: all five).
    let items = bench_items(&[1, 2, 3, 4, 5]);
    let want = |i: usize| items.contains(&i);
    let started = Instant::now();
    butler_testkit::ensure_image("app");
    butler_testkit::ensure_image("nginx");
    butler_testkit::ensure_butler_network();

    if want(3) {
        eprintln!("item 3: plan+render of {SYNTHETIC_APPS} synthetic apps");
        item3_plan_render();
    }

    let mut apps: Vec<AppContainer> = Vec::new();
    if want(1) || want(2) || want(5) {
        let butler = ButlerProcess::start(butler_bin());
        let mut samples = Vec::new();
        if want(1) {
            eprintln!("item 1: {SEQUENTIAL_STARTS} sequential starts");
            samples = item1_sequential(&butler, &mut apps);
        }
        if want(5) {
            if apps.is_empty() {
                apps.push(timed_app(&unique_name("bench-target")).start());
            }
            eprintln!("item 5: load, then load with churn");
            item5_load(&butler, &apps[0]);
        }
        if want(2) {
            eprintln!("item 2: burst of {BURST}");
            item2_burst(&butler);
        }
        drop(butler);
        if want(1) {
            eprintln!("item 1: split, in-process");
            let split = item1_split(&mut apps);
            item1_table(&samples, &split);
        }
    }
    remove_bulk(&apps.iter().map(|a| a.name().to_owned()).collect::<Vec<_>>());
    drop(apps);

    if want(4) {
        eprintln!("item 4: worker RSS at {RSS_STEPS:?} containers");
        item4_rss();
    }

    cleanup_everything();
    print_tables();
    println!(
        "_Run: `cargo bench --bench proxy`, {:.0} s, {} cores._",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
