//! Real faults against a real butler (health-monitor and recovery workers), real nginx and real
//! app containers: each fault is injected for real, then detection, classification, repair and
//! the recorded outcome are asserted as `butler incidents` shows them. The dynamic-proxy worker
//! is left out on purpose, so that the repair is the recovery worker's and not a side effect of
//! the proxy's own event handling; `butler proxy-update` routes the apps first. Each butler uses a
//! proxy network of its own: other butlers on this engine (other tests) connect every container
//! they see to `devops-butler-net`, and would otherwise repair these faults before ours could.
//! And each butler sees only its own test's containers (`docker.only_label`): the engine is
//! shared, and a butler that watched every container would repair every other test's containers
//! too, one reconcile each, and its reconciles would replace a drifted config before its own
//! repair could (a burst of 50 containers from another test made `config-edit` and
//! `unfixable-port` time out that way).

use std::path::Path;
use std::time::Duration;

use butler_testkit::{
    AppBuilder, AppContainer, ButlerProcess, Cleanup, docker, docker_ok, unique_name,
};

const BUTLER: &str = env!("CARGO_BIN_EXE_butler");
/// Generous: a fault is normally found and repaired within a few seconds.
const WAIT: Duration = Duration::from_secs(60);
/// Escalation takes `max_attempts` (3) repairs, each a reconcile and up to 5 s of checking, with
/// backoff between them: twice the single-repair wait.
const ESCALATION_WAIT: Duration = Duration::from_secs(120);
const RECOVERY: &str = "[recovery]\nmax_attempts = 3\nbackoff = \"1s\"\n";

fn bin() -> &'static Path {
    Path::new(BUTLER)
}

/// The label that puts a container in one test's scope.
const SCOPE_LABEL: &str = "devops-butler.scope";

/// What keeps one test's butler to itself: a proxy network of its own and a scope label that
/// only its apps carry.
struct Own {
    net: String,
    scope: String,
}

impl Own {
    fn new(cleanup: &mut Cleanup) -> Own {
        Own {
            net: cleanup.create_network("hf-net"),
            scope: unique_name("hf-scope"),
        }
    }

    /// The butler's [proxy] line.
    fn proxy_line(&self) -> String {
        format!("network = \"{}\"", self.net)
    }

    /// The butler's other sections: `extra` and the scope.
    fn toml(&self, extra: &str) -> String {
        format!(
            "{extra}\n[docker]\nonly_label = \"{SCOPE_LABEL}={}\"\n",
            self.scope
        )
    }

    /// A butler running `workers` within this scope.
    fn butler(&self, workers: &[&str], extra: &str) -> ButlerProcess {
        ButlerProcess::start_workers(bin(), workers, &self.proxy_line(), &self.toml(extra))
    }

    /// An app in this scope, on this network.
    fn app(&self, name: &str) -> AppBuilder {
        AppContainer::builder(name)
            .network(&self.net)
            .label(SCOPE_LABEL, &self.scope)
    }
}

/// A butler with the health-monitor and recovery workers on its own network, and one routed app.
fn butler_with_app(
    cleanup: &mut Cleanup,
    prefix: &str,
) -> (ButlerProcess, AppContainer, String, Own) {
    let own = Own::new(cleanup);
    let butler = own.butler(&["health-monitor", "recovery"], RECOVERY);
    let name = unique_name(prefix);
    let app = own.app(&name).start();
    butler.proxy_update(bin());
    let host = format!("{name}.localhost");
    butler.wait_for_app(&host);
    // A repair still running when the test injects its fault can heal the fault before any
    // round sees it: the start-up repair of the missing nginx reconciles, and a reconcile
    // reconnects a container the test just disconnected, or routes the successor the test just
    // started on a new port (both seen). Start from a settled butler: nothing on the proxy or
    // the app open or being repaired (host incidents, load or disk, are not repaired).
    let app_component = format!("app:{name}");
    butler_testkit::wait_until_or(
        "no repair pending on the proxy or the new app",
        WAIT,
        || {
            butler.incidents(bin(), &[]).iter().all(|i| {
                let ours = i["component"] == "proxy" || i["component"] == app_component.as_str();
                !ours || i["state"] == "resolved" || i["state"] == "escalated"
            })
        },
        || format!("{:#?}", butler.incidents(bin(), &[])),
    );
    (butler, app, host, own)
}

/// The incident was repaired by a successful recovery action. The health-monitor may see the
/// problem gone (and resolve the incident) while the recovery worker still checks its repair, so
/// the record may come a moment after the resolution.
fn assert_repaired(butler: &ButlerProcess, incident: &serde_json::Value) {
    let id = incident["id"].as_i64().unwrap();
    butler_testkit::wait_until_or(
        &format!("a successful recovery of incident {id}"),
        Duration::from_secs(30),
        || {
            butler
                .recoveries(bin(), id)
                .iter()
                .any(|r| r["outcome"] == "success")
        },
        || format!("{incident}: {:#?}", butler.recoveries(bin(), id)),
    );
}

#[test]
fn an_app_restarted_on_another_port_is_rerouted() {
    let mut cleanup = Cleanup::new();
    let (butler, app, host, own) = butler_with_app(&mut cleanup, "hf-port");
    let name = app.name().to_owned();
    let since = butler.last_incident_id(bin());
    drop(app);
    let _app = own.app(&name).listen(4000).start();
    let incident = butler.wait_for_incident(
        bin(),
        since,
        "port_mismatch",
        &format!("app:{name}"),
        "resolved",
        WAIT,
    );
    assert!(
        incident["summary"].as_str().unwrap().contains("4000"),
        "{incident}"
    );
    assert_repaired(&butler, &incident);
    let answer = butler.wait_for_app(&host);
    assert!(answer.body.contains("port=4000"), "{}", answer.body);
}

#[test]
fn an_app_disconnected_from_the_network_is_reconnected() {
    let mut cleanup = Cleanup::new();
    let (butler, app, host, own) = butler_with_app(&mut cleanup, "hf-net");
    let net = &own.net;
    let since = butler.last_incident_id(bin());
    docker_ok(&["network", "disconnect", net, app.name()]);
    let incident = butler.wait_for_incident(
        bin(),
        since,
        "not_on_network",
        &format!("app:{}", app.name()),
        "resolved",
        WAIT,
    );
    assert_repaired(&butler, &incident);
    assert!(!app.ip(net).is_empty());
    butler.wait_for_app(&host);
}

#[test]
fn a_stopped_and_a_removed_nginx_come_back_with_the_last_good_config() {
    let mut cleanup = Cleanup::new();
    let (butler, _app, host, _) = butler_with_app(&mut cleanup, "hf-nginx");
    for fault in [&["stop", "-t", "1"][..], &["rm", "-f"][..]] {
        let since = butler.last_incident_id(bin());
        let mut argv = fault.to_vec();
        argv.push(&butler.nginx);
        docker_ok(&argv);
        let incident =
            butler.wait_for_incident(bin(), since, "proxy_down", "proxy", "resolved", WAIT);
        assert_repaired(&butler, &incident);
        butler.wait_for_app(&host);
    }
}

#[test]
fn a_config_edited_inside_the_nginx_container_is_put_back() {
    let mut cleanup = Cleanup::new();
    let (butler, app, host, _) = butler_with_app(&mut cleanup, "hf-drift");
    // Make the edit visible: the app's server block answers 418 once nginx reloads it (its own
    // site file on the reload path; the one server of the data path, which serves every app).
    let relative = match butler.live_routes_data() {
        Some(_) => "sites/000-default.conf".to_owned(),
        None => format!("sites/{}.conf", app.name()),
    };
    let site = format!("/etc/butler-nginx/live/{relative}");
    let since = butler.last_incident_id(bin());
    docker_ok(&[
        "exec",
        &butler.nginx,
        "sed",
        "-i",
        "s|location = /.well-known/butler-route {|location = /edited-by-hand { return 418; }\\n    location = /.well-known/butler-route {|",
        &site,
    ]);
    let incident =
        butler.wait_for_incident(bin(), since, "config_drift", "proxy", "resolved", WAIT);
    assert!(
        incident["summary"].as_str().unwrap().contains(&relative),
        "{incident}"
    );
    assert_repaired(&butler, &incident);
    let edited = butler.config_files_containing("edited-by-hand");
    assert!(edited.is_empty(), "the edit is still there: {edited:?}");
    butler.wait_for_app(&host);
}

#[test]
fn a_killed_app_without_opt_in_is_reported_down_and_left_alone() {
    let mut cleanup = Cleanup::new();
    let (butler, app, _host, _) = butler_with_app(&mut cleanup, "hf-kill");
    let since = butler.last_incident_id(bin());
    docker_ok(&["kill", app.name()]);
    let component = format!("app:{}", app.name());
    let incident = butler.wait_for_incident(
        bin(),
        since,
        "container_down",
        &component,
        "escalated",
        WAIT,
    );
    let id = incident["id"].as_i64().unwrap();
    // Several more rounds (interval 2 s): still one incident, still escalated, never restarted.
    std::thread::sleep(Duration::from_secs(8));
    let list = butler.incidents(
        bin(),
        &["--kind", "container_down", "--component", &component],
    );
    assert_eq!(list.len(), 1, "one problem, one incident: {list:#?}");
    assert_eq!(list[0]["state"], "escalated");
    assert!(list[0]["count"].as_i64().unwrap() >= 3, "{}", list[0]);
    let recoveries = butler.recoveries(bin(), id);
    assert_eq!(recoveries.len(), 1, "{recoveries:#?}");
    assert_eq!(recoveries[0]["outcome"], "skipped");
    assert!(
        recoveries[0]["detail"]
            .as_str()
            .unwrap()
            .contains("butler.autorestart=true"),
        "{}",
        recoveries[0]
    );
    let state = docker_ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.RestartCount}}",
        app.name(),
    ]);
    assert_eq!(state, "exited 0", "the container was touched");
    let (out, status) = butler.cli_json(bin(), &["status"]);
    assert!(out.success(), "{out:?}");
    let reported = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app.name())
        .cloned()
        .unwrap_or_default();
    assert_eq!(reported["status"], "down", "{status}");
}

/// `butler.port` is the user's word: kept even though nothing listens there, and the incident
/// names the port the app does listen on and the label to change. The repair (re-detect and
/// re-render) can change nothing, so it is not retried in a loop but escalated at once.
#[test]
fn a_forced_port_nothing_listens_on_is_kept_named_and_escalated_at_once() {
    let mut cleanup = Cleanup::new();
    let own = Own::new(&mut cleanup);
    let butler = own.butler(&["health-monitor", "recovery"], RECOVERY);
    let name = unique_name("hf-never");
    let _app = own.app(&name).label("butler.port", "9999").start();
    butler.proxy_update(bin());
    let component = format!("app:{name}");
    let incident = butler.wait_for_incident(
        bin(),
        0,
        "port_mismatch",
        &component,
        "escalated",
        ESCALATION_WAIT,
    );
    assert_eq!(incident["attempts"], 1, "no loop of attempts: {incident}");
    let summary = incident["summary"].as_str().unwrap();
    assert!(
        summary.contains("9999") && summary.contains("set butler.port=3000"),
        "names the forced port, the listening one and the label: {incident}"
    );
    let id = incident["id"].as_i64().unwrap();
    let failed = butler.recoveries(bin(), id);
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["outcome"], "failed", "{failed:#?}");
    let detail = failed[0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("left the config as it was") && detail.contains(":9999"),
        "says why the repair cannot help: {detail}"
    );
    // The label is kept: the route still sends to 9999.
    let (_, routes) = butler.cli_json(bin(), &["proxy", "routes"]);
    let route = routes["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["app"] == name.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(route["servers"][0]["port"], 9999, "{routes}");
    // No flapping: no attempts after escalation.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(butler.recoveries(bin(), id).len(), 1);
}

/// `butler fix-502` alone (no recovery worker) turns each fault's 502 back into 200.
#[test]
fn fix_502_repairs_a_port_change_a_disconnect_and_a_stopped_or_removed_nginx() {
    let mut cleanup = Cleanup::new();
    let own = Own::new(&mut cleanup);
    let net = &own.net;
    let butler = own.butler(&["dashboard"], "");
    let port_app = unique_name("hf-fix-port");
    let net_app = unique_name("hf-fix-net");
    let first = own.app(&port_app).start();
    let moved = own.app(&net_app).start();
    butler.proxy_update(bin());
    let port_host = format!("{port_app}.localhost");
    let net_host = format!("{net_app}.localhost");
    for host in [&port_host, &net_host] {
        butler.wait_for_app(host);
    }
    let fix = |expect_cause: &str, host: &str| {
        let (dry, json) = butler.cli_json(bin(), &["fix-502", "--dry-run"]);
        assert_eq!(dry.code, 1, "{dry:?}");
        assert_eq!(json["failing_after"], serde_json::Value::Null);
        let (out, json) = butler.cli_json(bin(), &["fix-502"]);
        let route = json["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["host"] == host)
            .cloned()
            .unwrap_or_else(|| panic!("no route {host} in {json}"));
        assert_eq!(route["before"]["ok"], false, "{route}");
        assert_eq!(route["cause"]["kind"], expect_cause, "{route}");
        assert_eq!(route["after"]["status"], 200, "{route}\n{out:?}");
        assert_eq!(butler.wait_for_app(host).status, 200);
    };

    // 1. The app comes back on another port.
    drop(first);
    let _moved = own.app(&port_app).listen(4000).start();
    butler_testkit::wait_until("the moved app's route to fail", WAIT, || {
        butler.get(&port_host, "/").is_ok_and(|r| r.status == 502)
    });
    fix("port_mismatch", &port_host);

    // 2. The app leaves the proxy network.
    docker_ok(&["network", "disconnect", net, moved.name()]);
    fix("not_on_network", &net_host);

    // 3. nginx stopped, then removed.
    docker_ok(&["stop", "-t", "1", &butler.nginx]);
    fix("proxy_down", &net_host);
    let _ = docker(&["rm", "-f", &butler.nginx]);
    fix("proxy_down", &port_host);
    let (out, _) = butler.cli_json(bin(), &["fix-502"]);
    assert!(out.success(), "every route answers now: {out:?}");
}
