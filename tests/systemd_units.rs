//! The butler's units under a real systemd (PID 1 in a container, real D-Bus, real journald), driven
//! the way an operator would: systemctl, `butler services`, kill, journalctl. Each test boots its own
//! test bed, so tests run in parallel without sharing unit state.

use std::path::Path;
use std::time::{Duration, Instant};

use butler_testkit::{
    AppContainer, Cleanup, CmdOutput, Testbed, ensure_image, free_port, http_get, unique_name,
};
use serde_json::Value;

const WORKERS: [&str; 4] = ["dynamic-proxy", "health-monitor", "recovery", "dashboard"];
/// What the units say: WatchdogSec=10s, RestartSec=2s.
const WATCHDOG: Duration = Duration::from_secs(10);
const RESTART_DELAY: Duration = Duration::from_secs(2);

fn unit(worker: &str) -> String {
    format!("butler-{worker}.service")
}

/// A test bed whose butler has proxy resources of its own: every test bed talks to the same host
/// engine, and two of them must not fight over one nginx container or port. The nginx container
/// lives on the host engine, so it is removed with the test bed.
struct Bed {
    tb: Testbed,
    nginx: String,
    http_port: u16,
    _cleanup: Cleanup,
}

impl std::ops::Deref for Bed {
    type Target = Testbed;
    fn deref(&self) -> &Testbed {
        &self.tb
    }
}

fn testbed() -> Bed {
    let nginx = unique_name("butler-nginx");
    let http_port = free_port();
    let config = format!(
        "[proxy]\ncontainer_name = \"{nginx}\"\nhttp_port = {http_port}\nimage = \"{}\"\n\
         [health]\ninterval = \"2s\"\ntimeout = \"1s\"\n",
        ensure_image("nginx")
    );
    let mut cleanup = Cleanup::new();
    cleanup.add_container(&nginx);
    let tb = Testbed::start(Path::new(env!("CARGO_BIN_EXE_butler")), &config);
    Bed {
        tb,
        nginx,
        http_port,
        _cleanup: cleanup,
    }
}

fn property(tb: &Testbed, unit: &str, name: &str) -> String {
    tb.exec(&["systemctl", "show", "-p", name, "--value", unit])
        .expect_success("systemctl show")
        .stdout
        .trim()
        .to_owned()
}

fn main_pid(tb: &Testbed, worker: &str) -> u32 {
    property(tb, &unit(worker), "MainPID").parse().unwrap()
}

/// Active with a main PID other than `old`, read in one call: two separate reads can straddle the
/// moment the old process dies (still "active", then PID 0).
fn restarted(tb: &Testbed, worker: &str, old: u32) -> bool {
    let out = tb.exec(&[
        "systemctl",
        "show",
        "-p",
        "ActiveState",
        "-p",
        "MainPID",
        &unit(worker),
    ]);
    let active = out.stdout.lines().any(|l| l == "ActiveState=active");
    let pid: u32 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("MainPID="))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    active && pid != 0 && pid != old
}

fn is_active(tb: &Testbed, worker: &str) -> bool {
    tb.exec(&["systemctl", "is-active", &unit(worker)])
        .stdout
        .trim()
        == "active"
}

fn start_all(tb: &Testbed) {
    tb.exec(&["systemctl", "start", "butler.target"])
        .expect_success("systemctl start butler.target");
    tb.wait_until("every worker active", Duration::from_secs(30), || {
        WORKERS.iter().all(|w| is_active(tb, w))
    });
}

fn butler(tb: &Testbed, args: &[&str]) -> CmdOutput {
    let mut argv = vec!["butler"];
    argv.extend_from_slice(args);
    tb.exec(&argv)
}

fn services_list(tb: &Testbed) -> Vec<Value> {
    let out = butler(tb, &["services", "list", "--output", "json"])
        .expect_success("butler services list --output json");
    serde_json::from_str::<Vec<Value>>(&out.stdout).unwrap()
}

fn listed<'a>(list: &'a [Value], worker: &str) -> &'a Value {
    list.iter()
        .find(|u| u["unit"] == unit(worker))
        .unwrap_or_else(|| panic!("{worker} not in {list:?}"))
}

#[test]
fn target_starts_every_worker_and_services_list_shows_them() {
    let tb = testbed();
    start_all(&tb);

    let list = services_list(&tb);
    assert_eq!(list.len(), 5, "four workers and the target: {list:?}");
    for worker in WORKERS {
        let entry = listed(&list, worker);
        assert_eq!(entry["load_state"], "loaded");
        assert_eq!(entry["active_state"], "active");
        assert_eq!(entry["sub_state"], "running");
        assert_eq!(
            entry["main_pid"].as_u64().unwrap(),
            u64::from(main_pid(&tb, worker))
        );
        assert_eq!(entry["restarts"], 0);
        let watchdog = if worker == "dynamic-proxy" {
            30.0
        } else {
            10.0
        };
        assert_eq!(entry["watchdog_secs"], watchdog, "{worker}");
        assert!(entry["memory_bytes"].as_u64().unwrap() > 0, "{entry}");
    }
    let target = list.iter().find(|u| u["unit"] == "butler.target").unwrap();
    assert_eq!(target["active_state"], "active");

    let table = butler(&tb, &["services", "list"])
        .expect_success("services list")
        .stdout;
    assert!(table.starts_with("UNIT "), "{table}");
    for worker in WORKERS {
        let row = table
            .lines()
            .find(|l| l.starts_with(&unit(worker)))
            .unwrap();
        assert!(
            row.contains("loaded") && row.contains("active") && row.contains("running"),
            "{row}"
        );
    }

    // STATUS= reaches systemd; the health monitor reports the units it sees.
    assert_eq!(
        property(&tb, &unit("dashboard"), "StatusText"),
        "serving on http://127.0.0.1:8888"
    );
    tb.wait_until(
        "health-monitor to report the units",
        Duration::from_secs(15),
        || {
            property(&tb, &unit("health-monitor"), "StatusText")
                .starts_with("butler units: 4/4 active;")
        },
    );

    // Structured journal lines, found by unit and by the worker field.
    for worker in WORKERS {
        let out = tb
            .exec(&[
                "journalctl",
                "-u",
                &unit(worker),
                "-o",
                "json",
                "--no-pager",
            ])
            .expect_success("journalctl");
        let entries: Vec<Value> = out
            .stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let ready = entries
            .iter()
            .find(|e| {
                e["MESSAGE"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(&format!("{worker} worker ready")))
            })
            .unwrap_or_else(|| panic!("no ready line for {worker} in {}", out.stdout));
        assert_eq!(ready["BUTLER_WORKER"], worker, "{ready}");
        assert_eq!(
            ready["SYSLOG_IDENTIFIER"],
            format!("butler-{worker}"),
            "{ready}"
        );
        assert_eq!(ready["PRIORITY"], "6", "info level: {ready}");
    }

    let status = butler(
        &tb,
        &["services", "status", "dashboard", "--output", "json"],
    )
    .expect_success("services status");
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["active_state"], "active");
    assert!(
        status["journal"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("dashboard worker ready")),
        "{status}"
    );
}

#[test]
fn services_stop_start_restart_change_the_real_unit_state() {
    let tb = testbed();
    start_all(&tb);

    let stopped_at = Instant::now();
    let out = butler(&tb, &["services", "stop", "recovery"]).expect_success("services stop");
    let took = stopped_at.elapsed();
    assert!(
        out.stdout
            .contains("butler-recovery.service: stop done (inactive/dead)"),
        "{}",
        out.stdout
    );
    assert!(!is_active(&tb, "recovery"));
    // A clean stop: exit 0 well within the 5 s the issue allows, not a kill.
    assert!(took < Duration::from_secs(5), "stop took {took:?}");
    assert_eq!(property(&tb, &unit("recovery"), "Result"), "success");
    assert_eq!(property(&tb, &unit("recovery"), "ExecMainStatus"), "0");
    assert!(
        tb.journal(&unit("recovery"), 20)
            .contains("received SIGTERM")
    );

    let logs =
        butler(&tb, &["services", "logs", "recovery", "-n", "50"]).expect_success("services logs");
    assert!(
        logs.stdout.contains("recovery worker ready") && logs.stdout.contains("received SIGTERM"),
        "{}",
        logs.stdout
    );

    let out = butler(&tb, &["services", "start", "recovery"]).expect_success("services start");
    assert!(
        out.stdout.contains("start done (active/running"),
        "{}",
        out.stdout
    );
    assert!(is_active(&tb, "recovery"));

    let before = main_pid(&tb, "dashboard");
    let out = butler(
        &tb,
        &["services", "restart", "dashboard", "--output", "json"],
    )
    .expect_success("services restart");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["result"], "done");
    assert_eq!(report["succeeded"], true);
    let after = main_pid(&tb, "dashboard");
    assert!(is_active(&tb, "dashboard"));
    assert_ne!(before, after, "restart must start a new process");
    assert_eq!(report["status"]["main_pid"], after);
}

#[test]
fn a_killed_worker_is_restarted_and_counted() {
    let tb = testbed();
    start_all(&tb);
    let pid = main_pid(&tb, "dynamic-proxy");
    tb.exec(&["kill", "-9", &pid.to_string()])
        .expect_success("kill -9");
    tb.wait_until(
        "dynamic-proxy back with a new PID",
        Duration::from_secs(20),
        || restarted(&tb, "dynamic-proxy", pid),
    );
    let list = services_list(&tb);
    assert_eq!(listed(&list, "dynamic-proxy")["restarts"], 1);
    assert_eq!(listed(&list, "recovery")["restarts"], 0, "others untouched");
}

#[test]
fn a_stuck_worker_is_killed_by_the_watchdog_and_restarted() {
    let tb = testbed();
    start_all(&tb);
    let pid = main_pid(&tb, "health-monitor");
    let stopped = Instant::now();
    tb.exec(&["kill", "-STOP", &pid.to_string()])
        .expect_success("kill -STOP");
    tb.wait_until(
        "health-monitor restarted by the watchdog",
        WATCHDOG + RESTART_DELAY + Duration::from_secs(10),
        || restarted(&tb, "health-monitor", pid),
    );
    let took = stopped.elapsed();
    // The ping is due every WatchdogSec/2, so systemd notices within WatchdogSec, then restarts
    // after RestartSec; a little slack for the abort and the new process's READY.
    assert!(
        took <= WATCHDOG + RESTART_DELAY + Duration::from_secs(3),
        "took {took:?}, allowed WatchdogSec + RestartSec"
    );
    assert!(
        took >= Duration::from_secs(4),
        "restarted after {took:?}: too soon for the watchdog"
    );
    let journal = tb
        .sh("journalctl --no-pager -u butler-health-monitor.service")
        .stdout;
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert_eq!(listed(&services_list(&tb), "health-monitor")["restarts"], 1);
}

#[test]
fn a_worker_that_cannot_initialise_fails_its_start_and_stops_at_the_start_limit() {
    let tb = testbed();
    tb.write_file("/etc/butler/butler.toml", b"[proxy]\nhttp_port = 0\n");

    let out = butler(&tb, &["services", "start", "recovery"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("start of butler-recovery.service failed: job result 'failed'"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("unit result 'exit-code' (exit status 2)"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("`proxy.http_port` must be between 1 and 65535"),
        "journal lines: {}",
        out.stderr
    );
    // It never sent READY; the reason it gave up is its last STATUS=.
    let status = property(&tb, &unit("recovery"), "StatusText");
    assert!(
        status.starts_with("failed: config /etc/butler/butler.toml"),
        "{status}"
    );

    // Restart=on-failure tries again; StartLimitBurst=5 in 60 s ends the storm.
    tb.wait_until(
        "the start limit to stop the restarts",
        Duration::from_secs(40),
        || {
            tb.journal(&unit("recovery"), 5)
                .contains("Start request repeated too quickly")
        },
    );
    assert_eq!(property(&tb, &unit("recovery"), "ActiveState"), "failed");
    let restarts = property(&tb, &unit("recovery"), "NRestarts");
    std::thread::sleep(RESTART_DELAY * 2);
    assert_eq!(
        property(&tb, &unit("recovery"), "NRestarts"),
        restarts,
        "no restarts after the limit"
    );
    assert_eq!(property(&tb, &unit("recovery"), "ActiveState"), "failed");

    let out = butler(&tb, &["services", "start", "recovery"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("too many failed starts") && out.stderr.contains("reset-failed"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_names_and_an_absent_bus_are_clear_errors() {
    let tb = testbed();
    let out = butler(&tb, &["services", "start", "nginx"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("unknown service 'nginx'"),
        "{}",
        out.stderr
    );
    for worker in WORKERS {
        assert!(out.stderr.contains(worker), "{}", out.stderr);
    }

    let out = tb.sh("DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent/bus butler services list");
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("cannot reach systemd on the system bus"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("butler run"), "{}", out.stderr);
    assert_eq!(out.stderr.trim_end().lines().count(), 1, "{}", out.stderr);

    // Not installed: a clear word on what to do.
    tb.sh("rm /etc/systemd/system/butler-recovery.service && systemctl daemon-reload")
        .expect_success("removing a unit");
    let out = butler(&tb, &["services", "start", "recovery"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("not installed") && out.stderr.contains("daemon-reload"),
        "{}",
        out.stderr
    );
}

#[test]
fn units_verify_clean_and_stay_within_the_exposure_budget() {
    let tb = testbed();
    let units: Vec<String> = WORKERS.iter().map(|w| unit(w)).collect();
    let mut argv = vec!["systemd-analyze", "verify"];
    argv.extend(units.iter().map(String::as_str));
    argv.push("butler.target");
    let out = tb.exec(&argv);
    assert!(
        out.success() && out.stderr.trim().is_empty(),
        "verify: {out:?}"
    );

    start_all(&tb);
    for worker in WORKERS {
        let out = tb
            .exec(&["systemd-analyze", "security", "--no-pager", &unit(worker)])
            .expect_success("security");
        let last = out
            .stdout
            .lines()
            .rev()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap();
        let score: f64 = last
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        eprintln!("{}: exposure {score}", unit(worker));
        assert!(score <= 2.0, "{worker}: {last}\n{}", out.stdout);
    }
}

#[test]
fn the_dynamic_proxy_under_systemd_routes_a_container_of_the_host() {
    let tb = testbed();
    start_all(&tb);
    let name = unique_name("sd-app");
    let _app = AppContainer::builder(&name)
        .env("APP_NAME", "sd-app")
        .listen(3000)
        .expose(3000)
        .start();
    // The butler runs inside the test bed against the host's engine; users reach nginx on the host.
    let addr = format!("127.0.0.1:{}", tb.http_port);
    let host = format!("{name}.localhost");
    tb.wait_until(
        "the app routed through the butler's nginx",
        Duration::from_secs(30),
        || {
            http_get(&addr, &host, "/")
                .is_ok_and(|r| r.status == 200 && r.body.starts_with("app=sd-app "))
        },
    );
    // journald may lag behind the request that already succeeded.
    tb.wait_until("the route in the journal", Duration::from_secs(10), || {
        tb.journal(&unit("dynamic-proxy"), 100)
            .contains(&format!("route + {name}"))
    });
    assert!(tb.nginx.starts_with("butler-nginx"));
    let status = property(&tb, &unit("dynamic-proxy"), "StatusText");
    assert!(status.contains("apps routed"), "{status}");
}

/// The process behind a unit: its uid, gid, supplementary groups and capability sets, as
/// /proc/PID/status says.
fn credentials(tb: &Testbed, worker: &str) -> String {
    let pid = main_pid(tb, worker);
    tb.exec(&[
        "grep",
        "-E",
        "^(Uid|Gid|Groups|CapEff|CapPrm|CapBnd):",
        &format!("/proc/{pid}/status"),
    ])
    .expect_success("reading /proc/PID/status")
    .stdout
}

/// `butler incidents ARGS --output json` inside the test bed, as root: what an operator sees.
fn incidents(tb: &Testbed, args: &[&str]) -> Value {
    let mut argv = vec!["incidents"];
    argv.extend_from_slice(args);
    argv.extend(["--output", "json"]);
    let out = butler(tb, &argv).expect_success("butler incidents");
    serde_json::from_str(&out.stdout).unwrap()
}

/// The last fault: a butler unit driven into the failed state (killed past its start
/// limit) is found by the health-monitor and reset and started by the recovery worker running as
/// its real unit, which needs uid 0 for systemd's privileged D-Bus methods and has no capability.
#[test]
fn a_unit_killed_past_its_start_limit_is_reset_and_started_by_the_recovery_unit() {
    let tb = testbed();
    start_all(&tb);

    // Root with no capabilities, in group butler (the state) and docker (the socket).
    let creds = credentials(&tb, "recovery");
    let groups = tb.sh("getent group butler docker | cut -d: -f3").stdout;
    let gids: Vec<&str> = groups.split_whitespace().collect();
    assert!(creds.contains("Uid:\t0\t0\t0\t0"), "{creds}");
    assert!(creds.contains(&format!("Gid:\t{}\t", gids[0])), "{creds}");
    for gid in &gids {
        assert!(
            creds
                .lines()
                .any(|l| l.starts_with("Groups:") && l.split_whitespace().any(|g| g == *gid)),
            "group {gid}: {creds}"
        );
    }
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert!(
            creds.contains(&format!("{set}:\t0000000000000000")),
            "{set}: {creds}"
        );
    }
    // The other workers stay the butler user.
    assert!(!credentials(&tb, "health-monitor").contains("Uid:\t0\t"));

    // Kill the dashboard whenever it runs, until systemd gives up on it (StartLimitBurst=5 in
    // 60 s). The recovery may bring it back at once, so the journal says when the limit was hit.
    let limit_hit = || {
        tb.journal(&unit("dashboard"), 30)
            .contains("Start request repeated too quickly")
    };
    let mut kills = 0;
    tb.wait_until(
        "the dashboard to hit its start limit",
        Duration::from_secs(90),
        || {
            if limit_hit() {
                return true;
            }
            if is_active(&tb, "dashboard") {
                tb.exec(&["systemctl", "kill", "--signal=SIGKILL", &unit("dashboard")])
                    .expect_success("systemctl kill");
                kills += 1;
            }
            false
        },
    );
    assert!(kills >= 5, "the limit after {kills} kills");

    // The health-monitor opens the incident, the recovery resets and starts the unit.
    let component = format!("unit:{}", unit("dashboard"));
    let found = std::cell::RefCell::new(Value::Null);
    tb.wait_until(
        "a resolved unit_failed incident on the dashboard",
        Duration::from_secs(60),
        || {
            let list = incidents(&tb, &["--kind", "unit_failed", "--component", &component]);
            *found.borrow_mut() = list["incidents"]
                .as_array()
                .and_then(|l| l.iter().find(|i| i["state"] == "resolved").cloned())
                .unwrap_or(Value::Null);
            !found.borrow().is_null()
        },
    );
    let incident = found.into_inner();
    assert_eq!(
        incident["severity"], "medium",
        "the dashboard is the minor unit: {incident}"
    );
    assert!(
        incident["summary"]
            .as_str()
            .unwrap()
            .contains("butler-dashboard.service failed"),
        "{incident}"
    );
    let id = incident["id"].as_i64().unwrap().to_string();
    // The health-monitor may see the unit back (and resolve) a moment before the recovery worker
    // records its verified repair.
    let detail = std::cell::RefCell::new(Value::Null);
    tb.wait_until(
        "the successful recovery in the store",
        Duration::from_secs(30),
        || {
            *detail.borrow_mut() = incidents(&tb, &["--id", &id]);
            detail.borrow()["recoveries"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["outcome"] == "success"))
        },
    );
    let detail = detail.into_inner();
    let success = detail["recoveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["outcome"] == "success")
        .unwrap();
    assert_eq!(
        success["action"], "reset-failed and start the unit",
        "{detail}"
    );
    assert!(
        success["detail"]
            .as_str()
            .unwrap()
            .contains("reset butler-dashboard.service and started it"),
        "{detail}"
    );
    assert!(is_active(&tb, "dashboard"));
    assert!(
        tb.journal(&unit("recovery"), 200)
            .contains("repaired: reset butler-dashboard.service and started it"),
        "{}",
        tb.journal(&unit("recovery"), 200)
    );

    // Why the unit is root: the same calls as the butler user are denied, and say so.
    let out = tb.exec(&[
        "setpriv",
        "--reuid=butler",
        "--regid=butler",
        "--init-groups",
        "butler",
        "services",
        "start",
        "dashboard",
    ]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("systemd denied") && out.stderr.contains("run this as root"),
        "{}",
        out.stderr
    );

    // Written by root and by butler alike, the database stays the group's.
    let files = tb
        .sh("stat -c '%n %a %G' /var/lib/butler /var/lib/butler/butler.db*")
        .expect_success("stat")
        .stdout;
    let lines: Vec<&str> = files.lines().collect();
    assert_eq!(lines[0], "/var/lib/butler 770 butler", "{files}");
    assert!(lines.len() >= 2, "{files}");
    for line in &lines[1..] {
        assert!(line.ends_with(" 660 butler"), "{files}");
    }
}
