//! The proxy keeps serving whatever is thrown at it: hostile labels, a removed or stopped nginx
//! container, broken template overrides, and an operator rolling back and forth. Real engine, real
//! nginx, real apps; every assertion is about what a user sees through the proxy or the CLI.
//! Every butler sees every container on the shared engine, so only our own apps are asserted on.

use std::path::Path;
use std::time::{Duration, Instant};

use butler_testkit::{
    AppContainer, BUTLER_NETWORK, ButlerProcess, HttpResponse, docker_ok, repo_root, unique_name,
};

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

fn host(app: &str) -> String {
    format!("{app}.localhost")
}

fn is_app(response: &HttpResponse, name: &str) -> bool {
    response.status == 200 && response.body.starts_with(&format!("app={name} "))
}

/// The app `name` answers through the proxy right now (no waiting).
fn assert_serves(butler: &ButlerProcess, name: &str) {
    let response = butler
        .get(&host(name), "/")
        .expect("request through the proxy");
    assert!(
        is_app(&response, name),
        "{name} is not served: {} {}",
        response.status,
        response.body.chars().take(200).collect::<String>()
    );
}

/// The host `name.localhost` is not routed to any app right now: nginx's default server answers.
fn assert_not_routed(butler: &ButlerProcess, name: &str) {
    let response = butler
        .get(&host(name), "/")
        .expect("request through the proxy");
    assert!(
        !response.body.starts_with("app="),
        "{name} is routed to an app: {} {}",
        response.status,
        response.body
    );
}

/// An app container with `APP_NAME` = its container name, listening on its exposed port 3000.
/// Started on the proxy network itself: these tests are about what happens to nginx, and need not
/// wait for (or depend on) the butler connecting apps from Docker's default bridge.
fn app(name: &str) -> butler_testkit::AppBuilder {
    AppContainer::builder(name)
        .env("APP_NAME", name)
        .expose(3000)
        .network(BUTLER_NETWORK)
}

fn start_app(name: &str) -> AppContainer {
    app(name).start()
}

/// Waits until the app `name` answers through the proxy.
fn wait_served(butler: &ButlerProcess, name: &str) {
    butler.wait_for(&host(name), Duration::from_secs(20), |r| is_app(r, name));
}

// ---------------------------------------------------------------------------------------------------
// 1. Hostile labels

#[test]
fn hostile_labels_never_reach_nginx_while_neighbours_keep_serving() {
    let bin = butler_bin();
    let butler = ButlerProcess::start(bin);
    let neighbour = unique_name("neighbour");
    let _neighbour = start_app(&neighbour);
    wait_served(&butler, &neighbour);

    // Every hostile value carries the marker, so a leak anywhere in nginx's files is found by grep.
    let marker = unique_name("pwned");
    let hostile: Vec<(&str, &str, String)> = vec![
        (
            "label",
            "butler.host",
            format!("{marker}.localhost\"; return 200 \"{marker}"),
        ),
        (
            "label",
            "butler.host",
            format!("{marker}.localhost; include /etc/passwd;"),
        ),
        (
            "label",
            "butler.host",
            format!("{marker}.localhost {{ return 200; }}"),
        ),
        (
            "label",
            "butler.host",
            format!("{marker}.localhost\nserver_name {marker}-nl.localhost"),
        ),
        (
            "label",
            "butler.host",
            format!(
                "{marker}.localhost; }}\nserver {{ listen 80; server_name {marker}-srv.localhost; return 200 \"{marker}\"; }}"
            ),
        ),
        (
            "label",
            "butler.name",
            format!(
                "{marker}\"; }} server {{ listen 80; server_name {marker}.localhost; return 200 \"{marker}\"; }} #"
            ),
        ),
        (
            "env",
            "VIRTUAL_HOST",
            format!("{marker}.localhost;}}\nserver {{ server_name {marker}-env.localhost; }}"),
        ),
    ];
    let mut hostile_apps = Vec::new();
    for (kind, key, value) in &hostile {
        // Routable in every other respect: on the proxy network, with a port.
        let builder = app(&unique_name("hostile"));
        let builder = match *kind {
            "label" => builder.label(key, value),
            _ => builder.env(key, value),
        };
        hostile_apps.push(builder.spawn());
    }
    // An app started after all of them is routed only by a config rendered while they ran.
    let late = unique_name("late");
    let _late = start_app(&late);
    wait_served(&butler, &late);
    assert_serves(&butler, &neighbour);

    // Each hostile container is an incident the CLI shows, and none of them is routed.
    let (out, json) = butler.cli_json(bin, &["proxy", "routes"]);
    assert!(out.success(), "butler proxy routes: {out:?}");
    let problems = json["problems"]
        .as_array()
        .expect("problems in routes json");
    for (app, (_, key, value)) in hostile_apps.iter().zip(&hostile) {
        let theirs: Vec<_> = problems
            .iter()
            .filter(|p| p["container_name"] == app.name())
            .collect();
        assert!(
            theirs
                .iter()
                .any(|p| p["kind"] == "invalid_host" || p["kind"] == "invalid_name"),
            "no invalid_host/invalid_name problem for {} ({key}={value:?}); its problems: {theirs:?}",
            app.name()
        );
    }
    let routes = json["routes"].as_array().expect("routes in routes json");
    for route in routes {
        assert!(
            !route.to_string().contains(&marker),
            "a hostile value made it into a route: {route}"
        );
    }
    for suffix in ["", "-nl", "-srv", "-env"] {
        assert_not_routed(&butler, &format!("{marker}{suffix}"));
    }

    // Nothing hostile reached nginx's files, live or staged; the live config is the real one.
    let live = butler.live_nginx_config();
    match butler.live_routes_data() {
        // The data path: hosts are data, checked by nginx's Lua side as well.
        Some(data) => {
            assert!(
                data.contains(&format!("\nhost {} ", host(&late))),
                "the live routes data does not route the late app:\n{data}"
            );
            assert!(
                !data.contains(&marker),
                "hostile value in the routes data:\n{data}"
            );
        }
        None => assert!(
            live.contains(&format!("server_name {}", host(&late))),
            "nginx -T does not show the late app's server block:\n{live}"
        ),
    }
    assert!(
        !live.contains(&marker),
        "hostile value in nginx -T:\n{live}"
    );
    let leaked = butler.config_files_containing(&marker);
    assert!(
        leaked.is_empty(),
        "hostile value in nginx's files: {leaked:?}"
    );
    assert_serves(&butler, &neighbour);
}

// ---------------------------------------------------------------------------------------------------
// 2. nginx removed or stopped

/// DESIGN.md / issue 3: the butler recreates nginx within 10 s. The margin covers the test's own
/// polling and a loaded 2-core machine.
const HEAL_LIMIT: Duration = Duration::from_secs(11);

/// Breaks nginx with `docker ARGS <nginx>` and returns how long until `app` answers again, after
/// checking the new container serves the last applied config.
fn break_and_time_heal(butler: &ButlerProcess, app: &str, args: &[&str]) -> Duration {
    let before = butler.nginx_id();
    assert!(!before.is_empty(), "no nginx container to break");
    let mut argv = args.to_vec();
    argv.push(&butler.nginx);
    docker_ok(&argv);
    let broken = Instant::now();
    butler.wait_for(&host(app), Duration::from_secs(30), |r| is_app(r, app));
    let healed = broken.elapsed();
    eprintln!(
        "heal after `docker {}`: {} ms",
        args.join(" "),
        healed.as_millis()
    );
    assert_ne!(
        butler.nginx_id(),
        before,
        "the nginx container was not recreated"
    );
    // The new container serves a version that was applied before, never an unvalidated render.
    // (A round may apply a newer one meanwhile: it is recorded a moment after it goes live.)
    let live = std::cell::RefCell::new(String::new());
    butler_testkit::wait_until_or(
        "the live config to be an applied version",
        Duration::from_secs(5),
        || {
            let hash = butler.live_hash();
            let history = butler.history(butler_bin());
            let known = history.applied().iter().any(|v| v.hash == hash);
            *live.borrow_mut() = hash;
            known
        },
        || {
            format!(
                "live {}; history: {:#?}",
                live.borrow(),
                butler.history(butler_bin())
            )
        },
    );
    assert!(
        healed <= HEAL_LIMIT,
        "nginx took {healed:?} to come back after `docker {}` (limit {HEAL_LIMIT:?})",
        args.join(" ")
    );
    healed
}

#[test]
fn a_removed_or_stopped_nginx_is_recreated_with_the_last_good_config() {
    let butler = ButlerProcess::start(butler_bin());
    let app = unique_name("heal");
    let _app = start_app(&app);
    wait_served(&butler, &app);

    break_and_time_heal(&butler, &app, &["rm", "-f"]);
    break_and_time_heal(&butler, &app, &["stop", "-t", "5"]);
    // Healed means fully back: the default server answers too.
    let directory = butler.get("nobody.localhost", "/").unwrap();
    assert_eq!(directory.status, 200, "{directory:?}");
}

#[test]
fn a_crash_looping_nginx_is_recreated_with_the_last_good_config() {
    let butler = ButlerProcess::start(butler_bin());
    let app = unique_name("loop");
    let _app = start_app(&app);
    wait_served(&butler, &app);
    let before = butler.nginx_id();

    // An operator's restart policy and a live config broken on disk: nginx stops, and every
    // restart Docker makes dies at once on the broken file.
    docker_ok(&["update", "--restart", "always", &butler.nginx]);
    docker_ok(&[
        "exec",
        &butler.nginx,
        "sh",
        "-c",
        "echo 'broken;' > /etc/butler-nginx/live/nginx.conf && kill -TERM 1",
    ]);
    let broken = Instant::now();
    butler.wait_for(&host(&app), Duration::from_secs(30), |r| is_app(r, &app));
    eprintln!("heal of a crash loop: {} ms", broken.elapsed().as_millis());
    assert_ne!(
        butler.nginx_id(),
        before,
        "the nginx container was not recreated"
    );
    let log = butler.log();
    assert!(
        log.contains("recreating nginx container")
            && (log.contains("CrashLooping") || log.contains("Stopped")),
        "the butler did not say why it recreated nginx:\n{log}"
    );
    // The new container is the butler's own again: no restart policy that could loop.
    let policy = docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.RestartPolicy.Name}}",
        &butler.nginx,
    ]);
    assert!(
        policy == "no" || policy.is_empty(),
        "restart policy {policy:?}"
    );
    // A round may apply a newer version meanwhile: it is recorded a moment after it goes live.
    butler_testkit::wait_until_or(
        "the live config to be an applied version",
        Duration::from_secs(10),
        || {
            let live = butler.live_hash();
            butler
                .history(butler_bin())
                .applied()
                .iter()
                .any(|v| v.hash == live)
        },
        || {
            format!(
                "live {}; history: {:#?}",
                butler.live_hash(),
                butler.history(butler_bin())
            )
        },
    );
    assert!(
        broken.elapsed() <= HEAL_LIMIT,
        "nginx took {:?} to come back from a crash loop (limit {HEAL_LIMIT:?})",
        broken.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------------
// 3. Broken template overrides

fn shipped_template(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("templates").join(name)).unwrap()
}

#[test]
fn an_override_nginx_refuses_is_not_applied_and_the_last_good_config_keeps_serving() {
    let bin = butler_bin();
    let butler = ButlerProcess::start(bin);
    let old = unique_name("old");
    let _old = start_app(&old);
    wait_served(&butler, &old);

    // A valid template that renders a config nginx -t refuses.
    let directive = "butler_no_such_directive";
    let site = shipped_template("site.conf");
    let anchor = "    listen {{ listen_port }};\n";
    assert!(site.contains(anchor), "templates/site.conf changed shape");
    let broken = site.replacen(anchor, &format!("{anchor}    {directive} on;\n"), 1);
    let before = butler.history(bin).newest_id();
    butler.write_template("site.conf", &broken);

    let new = unique_name("new");
    let _new = start_app(&new);
    let mut refused = None;
    butler_testkit::wait_until(
        "a refused config version in butler proxy history",
        Duration::from_secs(20),
        || {
            refused = butler
                .history(bin)
                .versions
                .into_iter()
                .find(|v| v.id > before && !v.applied);
            refused.is_some()
        },
    );
    let refused = refused.unwrap();
    let error = refused.error.clone().unwrap_or_default();
    assert!(
        error.contains("unknown directive") && error.contains(directive),
        "the refused version does not carry nginx's error: {refused:?}"
    );
    // Other tests' containers come and go on the same engine, so a round that rendered with the
    // shipped templates may still go live while the override is being written; from the first
    // refusal on, every round renders with the override and nothing may go live.
    let live_at_refusal = butler.live_hash();
    assert_serves(&butler, &old);
    assert_not_routed(&butler, &new);
    assert_eq!(
        butler.live_hash(),
        live_at_refusal,
        "the live config changed although every new one was refused"
    );
    let applied_since = butler
        .history(bin)
        .versions
        .into_iter()
        .filter(|v| v.id > refused.id && v.applied)
        .count();
    assert_eq!(
        applied_since, 0,
        "a version went live after the override was refused"
    );
    assert!(!butler.live_nginx_config().contains(directive));

    butler.remove_template("site.conf");
    wait_served(&butler, &new);
    assert_serves(&butler, &old);
}

#[test]
fn a_template_that_does_not_parse_is_reported_by_file_and_nginx_keeps_serving() {
    let bin = butler_bin();
    let butler = ButlerProcess::start(bin);
    let app = unique_name("steady");
    let _app = start_app(&app);
    wait_served(&butler, &app);

    butler.write_template("site.conf", "{% if %}\nserver { }\n");
    let path = butler.templates_dir().join("site.conf");
    let path = path.display().to_string();
    butler_testkit::wait_until_or(
        "the butler to log that the override does not parse",
        Duration::from_secs(10),
        || {
            butler
                .log()
                .lines()
                .any(|l| l.contains(&path) && l.contains("does not parse"))
        },
        || format!("butler log:\n{}", butler.log()),
    );
    assert_serves(&butler, &app);

    // Even while no new config can be rendered, a removed nginx comes back with the last good one.
    docker_ok(&["rm", "-f", &butler.nginx]);
    let removed = Instant::now();
    wait_served(&butler, &app);
    eprintln!(
        "heal with a broken override: {} ms",
        removed.elapsed().as_millis()
    );
    assert!(
        removed.elapsed() <= HEAL_LIMIT,
        "nginx took {:?} to come back while an override was broken",
        removed.elapsed()
    );

    butler.remove_template("site.conf");
    let later = unique_name("later");
    let _later = start_app(&later);
    wait_served(&butler, &later);
    assert_serves(&butler, &app);
}

// ---------------------------------------------------------------------------------------------------
// 4. History, rollback, pin, proxy-update

#[test]
fn history_lists_versions_and_rollback_pins_until_proxy_update() {
    let bin = butler_bin();
    let butler = ButlerProcess::start(bin);
    let a = unique_name("roll-a");
    let _a = start_app(&a);
    wait_served(&butler, &a);
    let b = unique_name("roll-b");
    let _b = start_app(&b);
    wait_served(&butler, &b);

    // History: applied versions with their cause and what changed. A version goes live a moment
    // before it is recorded.
    let adds = |history: &butler_testkit::ConfigHistory, app: &str| {
        let needle = format!("+ {app}: {}", host(app));
        history
            .applied()
            .into_iter()
            .find(|v| v.summary.contains(&needle))
            .cloned()
    };
    butler_testkit::wait_until(
        "butler proxy history to list the versions adding A and B",
        Duration::from_secs(5),
        || {
            let history = butler.history(bin);
            adds(&history, &a).is_some() && adds(&history, &b).is_some()
        },
    );
    let history = butler.history(bin);
    let (with_a, with_b) = (adds(&history, &a).unwrap(), adds(&history, &b).unwrap());
    assert!(with_a.id < with_b.id, "{history:#?}");
    assert!(
        !with_a.summary.contains(&b) && !with_a.cause.is_empty(),
        "{with_a:?}"
    );
    let text = butler.cli(bin, &["proxy", "history"]);
    assert!(text.success(), "{text:?}");
    for heading in ["VERSION", "CAUSE", "CHANGES", "STATE"] {
        assert!(text.stdout.contains(heading), "{}", text.stdout);
    }
    assert!(text.stdout.contains(&format!("+ {a}")), "{}", text.stdout);

    // An unknown version: a clear error, a failure exit code, nothing changed.
    let unknown = butler.cli(bin, &["proxy", "rollback", "99999"]);
    assert!(!unknown.success(), "{unknown:?}");
    assert!(
        unknown.stderr.contains("99999") && unknown.stderr.contains("does not exist"),
        "{unknown:?}"
    );
    let after_unknown = butler.history(bin);
    assert_eq!(after_unknown.pinned, None);
    assert!(
        !after_unknown
            .versions
            .iter()
            .any(|v| v.cause.contains("rollback")),
        "{after_unknown:#?}"
    );
    assert_serves(&butler, &b);

    // Roll back to the version that added A: B's route is gone, at once.
    let target = with_a.id.to_string();
    let rolled = butler.cli(bin, &["proxy", "rollback", &target]);
    assert!(rolled.success(), "{rolled:?}");
    assert!(
        rolled
            .stdout
            .contains(&format!("rolled back to version {target}"))
            && rolled.stdout.contains("pinned"),
        "{rolled:?}"
    );
    assert_serves(&butler, &a);
    assert_not_routed(&butler, &b);
    let pinned = butler.history(bin);
    let first_rollback = pinned.versions[0].clone();
    assert_eq!(pinned.pinned, Some(first_rollback.id), "{pinned:#?}");
    assert!(first_rollback.applied, "{first_rollback:?}");
    assert_eq!(
        first_rollback.cause,
        format!("butler proxy rollback {target}")
    );
    assert_eq!(first_rollback.hash, with_a.hash);

    // Pinned: the worker's next rounds neither bring B back nor route a new app C.
    let c = unique_name("roll-c");
    let _c = start_app(&c);
    std::thread::sleep(Duration::from_secs(5)); // > 2 rounds of health.interval = 2s
    assert_serves(&butler, &a);
    assert_not_routed(&butler, &b);
    assert_not_routed(&butler, &c);
    let still = butler.history(bin);
    assert_eq!(still.pinned, Some(first_rollback.id));
    assert_eq!(
        still.newest_id(),
        first_rollback.id,
        "versions recorded while pinned: {still:#?}"
    );

    // Without a version: the one before the newest applied, i.e. the last one the worker applied.
    let expected = still.applied()[1].clone();
    let (out, json) = butler.cli_json(bin, &["proxy", "rollback"]);
    assert!(out.success(), "{out:?}");
    assert_eq!(json["rolled_back_to"], expected.id, "{json}");
    assert_eq!(json["applied"], true, "{json}");
    let second_rollback = json["version"].as_i64().expect("version in rollback json");
    assert_serves(&butler, &b);
    assert_not_routed(&butler, &c);
    assert_eq!(butler.history(bin).pinned, Some(second_rollback));

    // proxy-update lifts the pin and serves what runs now.
    let update = butler.cli(bin, &["proxy-update"]);
    assert!(update.success(), "{update:?}");
    assert!(
        update
            .stderr
            .contains(&format!("unpinned config version {second_rollback}")),
        "{update:?}"
    );
    assert_serves(&butler, &a);
    assert_serves(&butler, &b);
    assert_serves(&butler, &c);
    assert_eq!(butler.history(bin).pinned, None);
    // Whoever got there first (this proxy-update or the worker's next round, which may still be
    // recording it) records C's route as a new version.
    butler_testkit::wait_until_or(
        "a version after the pin that adds C",
        Duration::from_secs(10),
        || {
            butler
                .history(bin)
                .applied()
                .iter()
                .any(|v| v.id > second_rollback && v.summary.contains(&format!("+ {c}:")))
        },
        || {
            format!(
                "{:#?}\nproxy-update said:\n{}",
                butler.history(bin),
                update.stdout
            )
        },
    );
    // And the worker keeps it: its next rounds change nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert_serves(&butler, &b);
    assert_serves(&butler, &c);
}
