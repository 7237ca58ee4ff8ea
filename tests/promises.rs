//! The two promises the product exists for, tried as a user would: no 502 from a port mismatch,
//! and no app that dies unseen. Real engine, real nginx, real app containers, requests through
//! the proxy's published port; `butler run` with every worker. Each butler has a proxy network
//! of its own and sees only its own test's containers (`docker.only_label`): the engine is
//! shared with the other tests, whose butlers would otherwise route and repair these apps too.

use std::path::Path;
use std::time::{Duration, Instant};

use butler_testkit::{
    AppBuilder, AppContainer, ButlerProcess, Cleanup, docker_ok, http_get, unique_name,
};

const SCOPE_LABEL: &str = "devops-butler.scope";
const WAIT: Duration = Duration::from_secs(60);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

/// One test's butler (every worker, or only `workers`), its network and its scope.
struct Scoped {
    butler: ButlerProcess,
    net: String,
    scope: String,
}

impl Scoped {
    fn start(cleanup: &mut Cleanup, workers: Option<&[&str]>) -> Scoped {
        let net = cleanup.create_network("pr-net");
        let scope = unique_name("pr-scope");
        let proxy = format!("network = \"{net}\"");
        let extra = format!(
            "[recovery]\nmax_attempts = 3\nbackoff = \"1s\"\n[docker]\nonly_label = \"{SCOPE_LABEL}={scope}\"\n"
        );
        let butler = match workers {
            None => ButlerProcess::start_with(bin(), &proxy, &extra),
            Some(workers) => ButlerProcess::start_workers(bin(), workers, &proxy, &extra),
        };
        Scoped { butler, net, scope }
    }

    fn app(&self, name: &str) -> AppBuilder {
        AppContainer::builder(name)
            .network(&self.net)
            .label(SCOPE_LABEL, &self.scope)
    }

    /// This app's route in `butler proxy routes --output json`.
    fn route(&self, app: &str) -> Option<serde_json::Value> {
        let (out, json) = self.butler.cli_json(bin(), &["proxy", "routes"]);
        assert!(out.success(), "{out:?}");
        json["routes"]
            .as_array()
            .expect("routes is a list")
            .iter()
            .find(|r| r["app"] == app)
            .cloned()
    }

    /// This app's row in `butler health --output json` and the command's exit code.
    fn health(&self, app: &str) -> (i32, serde_json::Value) {
        let (out, json) = self.butler.cli_json(bin(), &["health"]);
        let row = json["apps"]
            .as_array()
            .expect("apps is a list")
            .iter()
            .find(|a| a["app"] == app)
            .cloned()
            .unwrap_or_default();
        (out.code, row)
    }

    /// This app's row in `butler status --output json`.
    fn status(&self, app: &str) -> serde_json::Value {
        let (out, json) = self.butler.cli_json(bin(), &["status"]);
        assert!(out.code == 0 || out.code == 1, "{out:?}");
        json["apps"]
            .as_array()
            .expect("apps is a list")
            .iter()
            .find(|a| a["app"] == app)
            .cloned()
            .unwrap_or_default()
    }

    /// This app in the dashboard's `/api/apps`.
    fn api_app(&self, app: &str) -> serde_json::Value {
        let addr = self.butler.dashboard_addr();
        let response = http_get(&addr, &addr, "/api/apps").expect("dashboard answers");
        assert_eq!(response.status, 200, "{}", response.body);
        let json: serde_json::Value = serde_json::from_str(&response.body).expect("JSON");
        json["apps"]
            .as_array()
            .expect("apps is a list")
            .iter()
            .find(|a| a["name"] == app)
            .cloned()
            .unwrap_or_default()
    }
}

fn body_port(body: &str) -> Option<&str> {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix("port="))
}

// ---- 1. the socket over the declaration ------------------------------------------------------

#[test]
fn an_app_that_exposes_8080_and_listens_on_9100_answers_within_10_s() {
    let mut cleanup = Cleanup::new();
    let own = Scoped::start(&mut cleanup, None);
    let name = unique_name("pr-mismatch");
    let host = format!("{name}.localhost");
    let started = Instant::now();
    let _app = own.app(&name).expose(8080).listen(9100).spawn();
    let response = own.butler.wait_for(&host, Duration::from_secs(10), |r| {
        r.status == 200 && r.body.starts_with("app=")
    });
    eprintln!("first 200 after {:?}", started.elapsed());
    assert_eq!(body_port(&response.body), Some("9100"), "{}", response.body);
    let route = own.route(&name).expect("routed");
    assert_eq!(route["servers"][0]["port"], 9100, "{route:#}");
    assert_eq!(
        route["servers"][0]["port_reason"], "exposed 8080 is not listening; it listens on 9100",
        "{route:#}"
    );
}

#[test]
fn an_app_that_binds_late_is_routed_once_it_does_without_a_restart() {
    let mut cleanup = Cleanup::new();
    let own = Scoped::start(&mut cleanup, None);
    let name = unique_name("pr-late");
    let host = format!("{name}.localhost");
    let app = own
        .app(&name)
        .expose(8080)
        .listen(9100)
        .env("DELAY_MS", "20000")
        .spawn();
    // Routed to what it declares while nothing listens yet: a 502 page, the app starting.
    let early = own
        .butler
        .wait_for(&host, Duration::from_secs(10), |r| r.status == 502);
    assert!(early.body.contains("not answering"), "{}", early.body);
    butler_testkit::wait_until("the app to bind 9100", Duration::from_secs(40), || {
        app.logs().contains("listening on :9100")
    });
    let bound = Instant::now();
    let response = own.butler.wait_for(&host, Duration::from_secs(5), |r| {
        r.status == 200 && r.body.starts_with("app=")
    });
    eprintln!("first 200 {:?} after the late bind", bound.elapsed());
    assert_eq!(body_port(&response.body), Some("9100"), "{}", response.body);
    let restarts = docker_ok(&["inspect", "-f", "{{.RestartCount}}", app.name()]);
    assert_eq!(restarts, "0");
}

// ---- 2. fix-502 fixes a mismatch in one run ------------------------------------------------

#[test]
fn fix_502_with_the_proxy_worker_stopped_fixes_a_port_mismatch_and_exits_0() {
    let mut cleanup = Cleanup::new();
    // Only the dashboard runs: nothing routes by itself, as with the butler's proxy stopped.
    let own = Scoped::start(&mut cleanup, Some(&["dashboard"]));
    let name = unique_name("pr-fix");
    let host = format!("{name}.localhost");
    let first = own.app(&name).expose(8080).listen(8080).start();
    own.butler.proxy_update(bin());
    own.butler.wait_for_app(&host);
    // The same app comes back with the same EXPOSE but listening elsewhere: 502.
    drop(first);
    let _moved = own.app(&name).expose(8080).listen(9100).start();
    own.butler.wait_for(&host, WAIT, |r| r.status == 502);
    let (out, json) = own.butler.cli_json(bin(), &["fix-502"]);
    assert_eq!(out.code, 0, "fixed in one run: {out:?}");
    let fix = json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == host.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no route {host} in {json}"));
    assert_eq!(fix["before"]["ok"], false, "{fix}");
    assert_eq!(fix["after"]["status"], 200, "{fix}");
    let response = own.butler.wait_for_app(&host);
    assert_eq!(body_port(&response.body), Some("9100"));
}

// ---- 3. an app that stopped stays visible --------------------------------------------------

#[test]
fn a_killed_app_is_down_everywhere_and_its_host_says_so() {
    let mut cleanup = Cleanup::new();
    let own = Scoped::start(&mut cleanup, None);
    let name = unique_name("pr-killed");
    let host = format!("{name}.localhost");
    let app = own.app(&name).start();
    own.butler.wait_for_app(&host);
    docker_ok(&["kill", app.name()]);

    let page = own.butler.wait_for(&host, WAIT, |r| r.status == 503);
    assert!(
        page.body.contains(&format!("{name} is down")),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("exited with code 137 (killed) at "),
        "{}",
        page.body
    );

    let incident = own.butler.wait_for_incident(
        bin(),
        0,
        "container_down",
        &format!("app:{name}"),
        "escalated",
        WAIT,
    );
    assert!(
        incident["summary"]
            .as_str()
            .unwrap()
            .contains("exit code 137"),
        "{incident}"
    );
    let (code, row) = own.health(&name);
    assert_eq!(code, 1, "health exits 1 while an app is down: {row}");
    assert_eq!(row["status"], "down", "{row}");
    assert!(row["reason"].as_str().unwrap().contains("since"), "{row}");
    butler_testkit::wait_until("status to show the app down", WAIT, || {
        own.status(&name)["status"] == "down"
    });
    let route = own.route(&name).expect("a down app keeps its route");
    assert_eq!(route["down"]["exit_code"], 137, "{route:#}");
    assert_eq!(route["state"], "down", "{route:#}");
    let api = own.api_app(&name);
    assert_eq!(api["status"], "down", "{api:#}");
    assert_eq!(api["down"]["exit_code"], 137, "{api:#}");
    assert_eq!(api["down"]["oom_killed"], false, "{api:#}");
    assert!(api["down"]["since"].as_str().is_some(), "{api:#}");

    // Removed: gone from the config, its host back to the directory.
    drop(app);
    own.butler.wait_for(&host, WAIT, |r| {
        r.status == 200 && r.body.contains("<h1>Apps on ")
    });
    assert!(own.route(&name).is_none());
}

#[test]
fn a_docker_stopped_app_is_stopped_with_no_incident_even_when_it_ignores_sigterm() {
    let mut cleanup = Cleanup::new();
    let own = Scoped::start(&mut cleanup, None);
    let polite = unique_name("pr-stopped");
    let stubborn = unique_name("pr-stubborn");
    let polite_app = own.app(&polite).start();
    let stubborn_app = own.app(&stubborn).env("IGNORE_SIGTERM", "1").start();
    for app in [&polite, &stubborn] {
        own.butler.wait_for_app(&format!("{app}.localhost"));
    }
    let since = own.butler.last_incident_id(bin());
    docker_ok(&["stop", "-t", "2", polite_app.name(), stubborn_app.name()]);
    let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", stubborn_app.name()]);
    assert_eq!(code, "137", "killed after the timeout, like a crash");

    for app in [&polite, &stubborn] {
        // The page may say "down" for the moment between the engine's `die` and `stop` events.
        let stopped = format!("{app} is stopped");
        own.butler.wait_for(&format!("{app}.localhost"), WAIT, |r| {
            r.status == 503 && r.body.contains(&stopped)
        });
        butler_testkit::wait_until("health to show the app stopped", WAIT, || {
            own.health(app).1["status"] == "stopped"
        });
        assert_eq!(own.route(app).unwrap()["state"], "stopped");
    }
    // Several health rounds (2 s each) later: no incident about either app.
    std::thread::sleep(Duration::from_secs(6));
    let opened: Vec<serde_json::Value> = own
        .butler
        .incidents(bin(), &[])
        .into_iter()
        .filter(|i| i["id"].as_i64().unwrap_or(0) > since)
        .filter(|i| {
            let c = i["component"].as_str().unwrap_or_default();
            c == format!("app:{polite}") || c == format!("app:{stubborn}")
        })
        .collect();
    assert!(
        opened.is_empty(),
        "a user's stop is no incident: {opened:#?}"
    );
    assert_eq!(own.status(&stubborn)["status"], "stopped");
    assert_eq!(own.api_app(&polite)["status"], "stopped");

    // Started again: served again.
    docker_ok(&["start", polite_app.name()]);
    own.butler.wait_for_app(&format!("{polite}.localhost"));
}

// ---- 5. a vanished server fails fast ---------------------------------------------------------

#[test]
fn a_route_whose_only_server_vanished_answers_its_error_page_within_1_s() {
    let mut cleanup = Cleanup::new();
    let own = Scoped::start(&mut cleanup, None);
    let name = unique_name("pr-vanished");
    let host = format!("{name}.localhost");
    let app = own.app(&name).start();
    own.butler.wait_for_app(&host);
    // Killed: its address is gone from the bridge, so a connect to it is neither answered nor
    // refused. The request goes out before the butler can have re-rendered.
    docker_ok(&["kill", app.name()]);
    let t = Instant::now();
    let response = own.butler.get(&host, "/").expect("the proxy answers");
    let took = t.elapsed();
    eprintln!(
        "first answer after the kill: {} in {took:?}",
        response.status
    );
    assert!(
        matches!(response.status, 502..=504),
        "an error page, not the app: {} {}",
        response.status,
        response.body
    );
    assert!(
        response.body.contains("devops-butler"),
        "the butler's page: {}",
        response.body
    );
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn with_two_instances_one_killed_costs_no_request() {
    let mut cleanup = Cleanup::new();
    let own = Scoped::start(&mut cleanup, None);
    let name = unique_name("pr-failover");
    let host = format!("{name}.localhost");
    let first = own
        .app(&format!("{name}-1"))
        .label("butler.name", &name)
        .start();
    let _second = own
        .app(&format!("{name}-2"))
        .label("butler.name", &name)
        .start();
    butler_testkit::wait_until("both instances in the upstream", WAIT, || {
        own.route(&name)
            .is_some_and(|r| r["servers"].as_array().is_some_and(|s| s.len() == 2))
    });
    own.butler.wait_for_app(&host);
    docker_ok(&["kill", first.name()]);
    let mut failed = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t = Instant::now();
        match own.butler.get(&host, "/") {
            Ok(r) if r.status == 200 && r.body.starts_with("app=") => {}
            Ok(r) => failed.push(format!(
                "#{i}: {} {}",
                r.status,
                r.body.lines().next().unwrap_or("")
            )),
            Err(e) => failed.push(format!("#{i}: {e}")),
        }
        slowest = slowest.max(t.elapsed());
    }
    eprintln!("200 requests after the kill, slowest {slowest:?}");
    assert!(failed.is_empty(), "{} failed: {failed:#?}", failed.len());
}
