//! Real faults against a real butler (health-monitor and recovery workers), real nginx and real
//! app containers: each fault is injected for real, then detection, classification, repair and
//! the recorded outcome are asserted as `butler incidents` shows them. The dynamic-proxy worker
//! is left out on purpose, so that the repair is the recovery worker's and not a side effect of
//! the proxy's own event handling; `butler proxy-update` routes the apps first.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{AppContainer, BUTLER_NETWORK, ButlerProcess, docker, docker_ok, unique_name};

const BUTLER: &str = env!("CARGO_BIN_EXE_butler");
/// Generous: a fault is normally found and repaired within a few seconds.
const WAIT: Duration = Duration::from_secs(60);
const RECOVERY: &str = "[recovery]\nmax_attempts = 3\nbackoff = \"1s\"\n";

fn bin() -> &'static Path {
    Path::new(BUTLER)
}

/// A butler with the health-monitor and recovery workers, and one routed app.
fn butler_with_app(prefix: &str) -> (ButlerProcess, AppContainer, String) {
    let butler = ButlerProcess::start_workers(bin(), &["health-monitor", "recovery"], RECOVERY);
    let name = unique_name(prefix);
    let app = AppContainer::builder(&name)
        .network(BUTLER_NETWORK)
        .start();
    butler.proxy_update(bin());
    let host = format!("{name}.localhost");
    butler.wait_for_app(&host);
    (butler, app, host)
}

/// The incident was repaired by one successful recovery action.
fn assert_repaired(butler: &ButlerProcess, incident: &serde_json::Value) {
    let id = incident["id"].as_i64().unwrap();
    let recoveries = butler.recoveries(bin(), id);
    assert!(
        recoveries.iter().any(|r| r["outcome"] == "success"),
        "no successful recovery for {incident}: {recoveries:#?}"
    );
}

#[test]
fn an_app_restarted_on_another_port_is_rerouted() {
    let (butler, app, host) = butler_with_app("hf-port");
    let name = app.name().to_owned();
    drop(app);
    let _app = AppContainer::builder(&name)
        .network(BUTLER_NETWORK)
        .listen(4000)
        .start();
    let incident =
        butler.wait_for_incident(bin(), "port_mismatch", &format!("app:{name}"), "resolved", WAIT);
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
    let (butler, app, host) = butler_with_app("hf-net");
    docker_ok(&["network", "disconnect", BUTLER_NETWORK, app.name()]);
    let incident = butler.wait_for_incident(
        bin(),
        "not_on_network",
        &format!("app:{}", app.name()),
        "resolved",
        WAIT,
    );
    assert_repaired(&butler, &incident);
    assert!(!app.ip(BUTLER_NETWORK).is_empty());
    butler.wait_for_app(&host);
}

#[test]
fn a_stopped_and_a_removed_nginx_come_back_with_the_last_good_config() {
    let (butler, _app, host) = butler_with_app("hf-nginx");
    docker_ok(&["stop", "-t", "1", &butler.nginx]);
    let first = butler.wait_for_incident(bin(), "proxy_down", "proxy", "resolved", WAIT);
    assert_repaired(&butler, &first);
    butler.wait_for_app(&host);

    docker_ok(&["rm", "-f", &butler.nginx]);
    let wait_for_second = || {
        let list = butler.incidents(bin(), &["--kind", "proxy_down"]);
        list.into_iter()
            .find(|i| i["id"] != first["id"] && i["state"] == "resolved")
    };
    support::wait_until("a second proxy_down incident to be resolved", WAIT, || {
        wait_for_second().is_some()
    });
    assert_repaired(&butler, &wait_for_second().unwrap());
    butler.wait_for_app(&host);
}

#[test]
fn a_config_edited_inside_the_nginx_container_is_put_back() {
    let (butler, app, host) = butler_with_app("hf-drift");
    // Make the edit visible: the app's site answers 418 once nginx reloads it.
    let site = format!("/etc/butler-nginx/live/sites/{}.conf", app.name());
    docker_ok(&[
        "exec",
        &butler.nginx,
        "sed",
        "-i",
        "s|location = /.well-known/butler-route {|location = /edited-by-hand { return 418; }\\n    location = /.well-known/butler-route {|",
        &site,
    ]);
    let incident =
        butler.wait_for_incident(bin(), "config_drift", "proxy", "resolved", WAIT);
    assert!(
        incident["summary"].as_str().unwrap().contains(&format!("sites/{}.conf", app.name())),
        "{incident}"
    );
    assert_repaired(&butler, &incident);
    let edited = butler.config_files_containing("edited-by-hand");
    assert!(edited.is_empty(), "the edit is still there: {edited:?}");
    butler.wait_for_app(&host);
}

#[test]
fn a_killed_app_without_opt_in_is_reported_down_and_left_alone() {
    let (butler, app, _host) = butler_with_app("hf-kill");
    docker_ok(&["kill", app.name()]);
    let component = format!("app:{}", app.name());
    let incident =
        butler.wait_for_incident(bin(), "container_down", &component, "escalated", WAIT);
    let id = incident["id"].as_i64().unwrap();
    // Several more rounds (interval 2 s): still one incident, still escalated, never restarted.
    std::thread::sleep(Duration::from_secs(8));
    let list = butler.incidents(bin(), &["--kind", "container_down", "--component", &component]);
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
    let state = docker_ok(&["inspect", "-f", "{{.State.Status}} {{.RestartCount}}", app.name()]);
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

#[test]
fn a_port_that_cannot_be_fixed_is_escalated_after_max_attempts() {
    let butler = ButlerProcess::start_workers(bin(), &["health-monitor", "recovery"], RECOVERY);
    let name = unique_name("hf-never");
    let _app = AppContainer::builder(&name)
        .network(BUTLER_NETWORK)
        .label("butler.port", "9999")
        .start();
    butler.proxy_update(bin());
    let component = format!("app:{name}");
    let incident = butler.wait_for_incident(bin(), "port_mismatch", &component, "escalated", WAIT);
    assert_eq!(incident["attempts"], 3, "{incident}");
    assert!(
        incident["summary"].as_str().unwrap().contains("9999"),
        "{incident}"
    );
    let id = incident["id"].as_i64().unwrap();
    let failed = butler.recoveries(bin(), id);
    assert_eq!(failed.len(), 3, "{failed:#?}");
    assert!(failed.iter().all(|r| r["outcome"] == "failed"), "{failed:#?}");
    // No flapping: no attempts after escalation.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(butler.recoveries(bin(), id).len(), 3);
    let (out, rates) = butler.cli_json(bin(), &["status"]);
    assert!(out.success());
    assert!(
        rates["recovery_success_rates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kind"] == "port_mismatch" && r["attempts"].as_i64() >= Some(3)),
        "{rates}"
    );
}

/// `butler fix-502` alone (no recovery worker) turns each fault's 502 back into 200.
#[test]
fn fix_502_repairs_a_port_change_a_disconnect_and_a_stopped_or_removed_nginx() {
    let butler = ButlerProcess::start_workers(bin(), &["dashboard"], "");
    let port_app = unique_name("hf-fix-port");
    let net_app = unique_name("hf-fix-net");
    let apps = [
        AppContainer::builder(&port_app).network(BUTLER_NETWORK).start(),
        AppContainer::builder(&net_app).network(BUTLER_NETWORK).start(),
    ];
    butler.proxy_update(bin());
    for app in [&port_app, &net_app] {
        butler.wait_for_app(&format!("{app}.localhost"));
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
        let answer = butler.wait_for_app(host);
        assert_eq!(answer.status, 200);
    };

    // 1. The app comes back on another port.
    drop(apps);
    let _port = AppContainer::builder(&port_app)
        .network(BUTLER_NETWORK)
        .listen(4000)
        .start();
    let net = AppContainer::builder(&net_app).network(BUTLER_NETWORK).start();
    butler.proxy_update(bin());
    // proxy-update re-routed both; now break the first again by moving it once more.
    drop(_port);
    let _port = AppContainer::builder(&port_app)
        .network(BUTLER_NETWORK)
        .listen(4100)
        .start();
    let port_host = format!("{port_app}.localhost");
    assert_eq!(butler.get(&port_host, "/").unwrap().status, 502);
    fix("port_mismatch", &port_host);

    // 2. The app leaves the proxy network.
    let net_host = format!("{net_app}.localhost");
    docker_ok(&["network", "disconnect", BUTLER_NETWORK, net.name()]);
    support::wait_until("the route to fail", WAIT, || {
        butler.get(&net_host, "/").is_ok_and(|r| r.status == 502 || r.status == 504)
    });
    fix("not_on_network", &net_host);

    // 3. nginx stopped, then removed.
    docker_ok(&["stop", "-t", "1", &butler.nginx]);
    fix("proxy_down", &net_host);
    let _ = docker(&["rm", "-f", &butler.nginx]);
    fix("proxy_down", &port_host);
    let (out, _) = butler.cli_json(bin(), &["fix-502"]);
    assert!(out.success(), "every route answers now: {out:?}");
}
