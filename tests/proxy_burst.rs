//! A burst of container starts is coalesced: 50 apps started at once are all routed with a
//! handful of reloads, not one per container. Its own test binary, so no other test of this crate
//! adds containers while it counts (other processes' containers are told apart by name).

use std::path::Path;
use std::time::{Duration, Instant};

use butler_testkit::{AppContainer, ButlerProcess, Cleanup, ensure_image, unique_name};

const BURST: usize = 50;
const MAX_RELOADS: usize = 3;

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

#[test]
fn a_burst_of_fifty_containers_is_all_routed_with_at_most_three_reloads() {
    let bin = butler_bin();
    // Declared first so it drops last: every container of the burst goes, even after a panic
    // halfway through spawning.
    let mut cleanup = Cleanup::new();
    let tag = unique_name("burst");
    let names: Vec<String> = (0..BURST).map(|i| format!("{tag}-{i}")).collect();
    for name in &names {
        cleanup.add_container(name);
    }
    ensure_image("app");
    // The proxy's own coalescing is what is counted: the recovery worker's reconciles for apps the
    // health-monitor sees unrouted mid-burst are a separate mechanism (see the closing note).
    let butler = ButlerProcess::start_workers(bin, &["dynamic-proxy"], "", "");
    butler.wait_for("butler-readiness.invalid", Duration::from_secs(60), |r| {
        r.status == 404 || r.status == 200
    });
    let before_count = butler.applied_count();
    let before_id = butler.history(bin).newest_id();

    let started = Instant::now();
    let spawners: Vec<_> = names
        .iter()
        .cloned()
        .map(|name| {
            std::thread::spawn(move || {
                AppContainer::builder(&name)
                    .env("APP_NAME", &name)
                    .expose(3000)
                    .spawn()
            })
        })
        .collect();
    let apps: Vec<AppContainer> = spawners
        .into_iter()
        .map(|s| s.join().expect("docker create/start of a burst container"))
        .collect();
    let spawned = started.elapsed();
    for app in &apps {
        let name = app.name();
        butler.wait_for(&format!("{name}.localhost"), Duration::from_secs(60), |r| {
            r.status == 200 && r.body.starts_with(&format!("app={name} "))
        });
    }
    let routed = started.elapsed();
    let total_reloads = butler.applied_count() - before_count;

    // Reloads that routed part of the burst; other processes' containers may cause more. nginx
    // serves a version a moment before the store records it,
    // so wait for the history to account for the whole burst.
    let burst_history = || {
        let history = butler.history(bin);
        let versions: Vec<_> = history
            .applied()
            .into_iter()
            .filter(|v| v.id > before_id && v.summary.contains(&format!("+ {tag}-")))
            .cloned()
            .collect();
        let per_version: Vec<usize> = versions
            .iter()
            .map(|v| v.summary.matches(&format!("+ {tag}-")).count())
            .collect();
        (history, versions, per_version)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (history, burst_versions, routed_per_version) = loop {
        let found = burst_history();
        if found.2.iter().sum::<usize>() >= BURST || std::time::Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "burst of {BURST}: spawned in {} ms, all routed after {} ms; {} reloads for the burst \
         (apps added per reload, newest first: {routed_per_version:?}), {total_reloads} reloads in all",
        spawned.as_millis(),
        routed.as_millis(),
        burst_versions.len(),
    );
    assert_eq!(
        routed_per_version.iter().sum::<usize>(),
        BURST,
        "{history:#?}"
    );
    assert!(
        burst_versions.len() <= MAX_RELOADS,
        "{} reloads to route a burst of {BURST} (at most {MAX_RELOADS}): {burst_versions:#?}",
        burst_versions.len()
    );
}
