//! Deploy benchmark (issue 7, "Measure"): how long a deploy takes until the new revision serves
//! through the proxy, for an app that starts in about 300 ms (from an image, and from a Dockerfile
//! directory, whose build is reported apart), and how many requests fail while 20 deploys in a row
//! replace the app under load. Prints one markdown table per item; asserts nothing.
//!
//!     cargo bench --bench deploy
//!     BENCH_DEPLOYS=5 cargo bench --bench deploy     # fewer timed deploys
//!     BENCH_ITEMS=1a,2 cargo bench --bench deploy    # only some items (1a, 1b, 2)
//!
//! Needs the Docker engine and builds the test images like the integration tests (testkit/).
//! Everything it starts or builds is removed at the end. About 3 minutes on 2 cores; loopback only.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use butler_testkit::deploy::{clean_app, revision_dockerfile, revision_image};
use butler_testkit::load::{LoadOptions, run_load};
use butler_testkit::stats::{ms, pct, row, sorted};
use butler_testkit::{ButlerProcess, Cleanup, unique_name};
use serde_json::Value;

/// The app of every timed revision listens this long after it starts, like a real app.
const APP_DELAY_MS: u64 = 300;
const CONSECUTIVE_DEPLOYS: usize = 20;
const BUILDS: usize = 3;
const POLL: Duration = Duration::from_millis(5);

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

fn timed_deploys() -> usize {
    std::env::var("BENCH_DEPLOYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// One deploy, timed from the outside: the CLI's start until the proxy answers with `want`, and
/// until the CLI exits; with the report it printed.
struct Timed {
    serving: Option<Duration>,
    exited: Duration,
    report: Value,
}

fn timed_deploy(butler: &ButlerProcess, args: &[&str], host: &str, want: &str) -> Timed {
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    std::thread::scope(|s| {
        let poller = s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if butler
                    .get(host, "/")
                    .is_ok_and(|r| r.status == 200 && r.body.starts_with(want))
                {
                    return Some(started.elapsed());
                }
                std::thread::sleep(POLL);
            }
            None
        });
        let mut argv = vec!["deploy"];
        argv.extend_from_slice(args);
        let (out, report) = butler.cli_json(butler_bin(), &argv);
        let exited = started.elapsed();
        if out.code != 0 {
            eprintln!("deploy {args:?} exited {}: {}", out.code, out.stderr);
        }
        // The answer may come a moment after the exit (the poller sleeps between requests).
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        Timed {
            serving: poller.join().unwrap(),
            exited,
            report,
        }
    })
}

fn step(report: &Value, name: &str) -> f64 {
    report["steps"][name].as_f64().unwrap_or(f64::NAN)
}

/// Item 1: from an image (no build), alternating two revisions.
fn item1_image(butler: &ButlerProcess, cleanup: &mut Cleanup) -> String {
    let app = unique_name("bench-deploy");
    clean_app(cleanup, &app);
    let delay = format!("ENV DELAY_MS={APP_DELAY_MS}");
    let images = [
        revision_image(cleanup, &app, "a", &delay),
        revision_image(cleanup, &app, "b", &delay),
    ];
    let host = format!("{app}.localhost");
    let first = timed_deploy(butler, &[&images[0]], &host, "app=a ");
    assert!(first.serving.is_some(), "the first deploy never served");

    let mut samples: Vec<Timed> = Vec::new();
    for i in 0..timed_deploys() {
        let (image, want) = if i % 2 == 0 {
            (&images[1], "app=b ")
        } else {
            (&images[0], "app=a ")
        };
        samples.push(timed_deploy(butler, &[image], &host, want));
    }
    let failed = samples
        .iter()
        .filter(|t| t.report["outcome"] != "deployed" || t.serving.is_none())
        .count();
    let col = |f: &dyn Fn(&Timed) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let serving = col(&|t| t.serving.map_or(f64::NAN, ms));
    let p50 = pct(&sorted(serving.clone()), 50.0);
    format!(
        "### 1a. Deploy-to-serving, image source (app listens {APP_DELAY_MS} ms after it starts) — goal: under 1.5 s\n\n\
         {n} deploys alternating two revisions of one app (1 instance each, TCP health check), each replacing the other; \
         {failed} failed. Outside: `butler deploy` started until the proxy answers with the new revision (polled every {poll} ms), \
         and until the command exits (the old instance drained and removed). Inside: the deploy's own step times from its JSON report.\n\n\
         | measure | n | p50 (ms) | p95 (ms) | max (ms) |\n|---|---|---|---|---|\n\
         {}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n\n\
         Deploy-to-serving p50: **{p50:.0} ms** (goal 1500 ms).\n",
        row(
            "**CLI start → new revision answers through the proxy**",
            &serving
        ),
        row(
            "CLI start → CLI exit (drained, old removed)",
            &col(&|t| ms(t.exited))
        ),
        row(
            "report: prepare (checks, image)",
            &col(&|t| step(&t.report, "prepare_ms"))
        ),
        row(
            "report: start instance",
            &col(&|t| step(&t.report, "start_ms"))
        ),
        row(
            "report: health gate (includes the app's 300 ms)",
            &col(&|t| step(&t.report, "healthy_ms"))
        ),
        row(
            "report: switch (two reconciles: new in, old out)",
            &col(&|t| step(&t.report, "switch_ms"))
        ),
        row(
            "report: drain nginx's old workers",
            &col(&|t| step(&t.report, "drain_ms"))
        ),
        row(
            "report: stop and remove the old instance",
            &col(&|t| step(&t.report, "remove_ms"))
        ),
        row(
            "report: start → serving",
            &col(&|t| step(&t.report, "serving_ms"))
        ),
        n = samples.len(),
        poll = POLL.as_millis(),
    )
}

/// Item 1b: from a Dockerfile directory, each deploy a changed Dockerfile (a real build).
fn item1_build(butler: &ButlerProcess, cleanup: &mut Cleanup) -> String {
    let parent = tempfile::tempdir().unwrap();
    let app = unique_name("bench-build");
    clean_app(cleanup, &app);
    let dir = parent.path().join(&app);
    std::fs::create_dir_all(&dir).unwrap();
    let host = format!("{app}.localhost");
    let mut samples = Vec::new();
    for i in 0..BUILDS {
        let name = format!("build{i}");
        let dockerfile = revision_dockerfile(&name, &format!("ENV DELAY_MS={APP_DELAY_MS}"));
        std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
        let timed = timed_deploy(
            butler,
            &[dir.to_str().unwrap()],
            &host,
            &format!("app={name} "),
        );
        samples.push(timed);
    }
    let col = |f: &dyn Fn(&Timed) -> f64| samples.iter().map(f).collect::<Vec<f64>>();
    let build = col(&|t| step(&t.report, "build_ms"));
    let serving = col(&|t| t.serving.map_or(f64::NAN, ms));
    let without_build: Vec<f64> = serving.iter().zip(&build).map(|(s, b)| s - b).collect();
    format!(
        "### 1b. Deploy-to-serving, Dockerfile directory — goal: under 1.5 s plus the image build\n\n\
         {BUILDS} deploys of one directory, its Dockerfile changed each time (`FROM` the local test app image, so the \
         build is a real one of two small layers).\n\n\
         | measure | n | p50 (ms) | p95 (ms) | max (ms) |\n|---|---|---|---|---|\n{}\n{}\n{}\n",
        row(
            "CLI start → new revision answers through the proxy",
            &serving
        ),
        row(
            "report: image build (tar of the directory, engine build)",
            &build
        ),
        row("**serving minus build**", &without_build),
    )
}

/// Item 2: 20 consecutive deploys while a load generator sends requests through the proxy.
fn item2_under_load(butler: &ButlerProcess, cleanup: &mut Cleanup) -> String {
    let app = unique_name("bench-load");
    clean_app(cleanup, &app);
    let delay = format!("ENV DELAY_MS={APP_DELAY_MS}");
    let images = [
        revision_image(cleanup, &app, "a", &delay),
        revision_image(cleanup, &app, "b", &delay),
    ];
    let host = format!("{app}.localhost");
    let replicas = "2";
    let first = timed_deploy(
        butler,
        &[&images[0], "--replicas", replicas],
        &host,
        "app=a ",
    );
    assert!(first.serving.is_some(), "the first deploy never served");
    let addr: SocketAddr = butler.proxy_addr().parse().unwrap();
    let options = LoadOptions::default();
    let stop = AtomicBool::new(false);
    let mut deploy_failures = 0;
    let (load, took) = std::thread::scope(|s| {
        let load = s.spawn(|| run_load(addr, &host, &options, &stop));
        std::thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        for i in 0..CONSECUTIVE_DEPLOYS {
            let image = &images[(i + 1) % 2];
            let (out, _) =
                butler.cli_json(butler_bin(), &["deploy", image, "--replicas", replicas]);
            if out.code != 0 {
                deploy_failures += 1;
                eprintln!("deploy {i} failed: {}", out.stderr);
            }
        }
        let took = started.elapsed();
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, Ordering::Relaxed);
        (load.join().unwrap(), took)
    });
    let lat = sorted(
        load.latencies_us
            .iter()
            .map(|&u| u as f64 / 1000.0)
            .collect(),
    );
    format!(
        "### 2. Requests during {CONSECUTIVE_DEPLOYS} consecutive deploys under load — goal: 0 failed\n\n\
         {CONSECUTIVE_DEPLOYS} deploys in a row ({replicas} instances each, alternating two revisions; {deploy_failures} failed) in {:.1} s, \
         while {} keep-alive connections send {} req/s in total through the proxy (loopback) to the app. \
         A keep-alive connection nginx closes at a reload before answering is retried once on a new connection, as HTTP clients do.\n\n\
         | sent | 2xx | non-2xx | IO errors | **failed** | retried after keep-alive close | p50 (ms) | p99 (ms) | max (ms) |\n\
         |---|---|---|---|---|---|---|---|---|\n| {} | {} | {} | {} | **{}** | {} | {:.2} | {:.2} | {:.2} |\n\n\
         Answers by revision: {:?}.\n",
        took.as_secs_f64(),
        options.connections,
        options.total_rate(),
        load.sent,
        load.ok,
        load.non_2xx,
        load.io_errors,
        load.failed(),
        load.retried,
        pct(&lat, 50.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
        load.answers
            .iter()
            .map(|(k, v)| (k.as_str(), v.count))
            .collect::<Vec<_>>(),
    )
}

fn wanted(item: &str) -> bool {
    std::env::var("BENCH_ITEMS").map_or(true, |items| items.split(',').any(|i| i.trim() == item))
}

type Item = fn(&ButlerProcess, &mut Cleanup) -> String;

fn main() {
    let mut cleanup = Cleanup::new();
    let butler = ButlerProcess::start(butler_bin());
    let load_avg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let items: [(&str, Item); 3] = [
        ("1a", item1_image),
        ("1b", item1_build),
        ("2", item2_under_load),
    ];
    let tables: Vec<String> = items
        .into_iter()
        .filter(|(name, _)| wanted(name))
        .map(|(_, item)| item(&butler, &mut cleanup))
        .collect();
    drop(butler);
    drop(cleanup);
    println!(
        "## Deploy benchmark\n\nLoad average at the start: {}\n",
        load_avg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for table in tables {
        println!("{table}");
    }
}
