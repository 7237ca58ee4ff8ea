//! The data path (issue 14): with the Lua module in the nginx image, ordinary changes (an app
//! starting, stopping, scaling, changing address, a new host) are applied as data without a
//! reload, so a client that never re-sends a request sees no error while apps come and go; and
//! the data nginx routes by is validated there, a refused update leaving the last good data.
//! Its own test binary: it counts nginx's worker processes, which only this butler's changes
//! may touch.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use butler_testkit::load::{LoadOptions, run_load};
use butler_testkit::{
    AppContainer, BUTLER_NETWORK, ButlerProcess, Cleanup, docker, docker_ok, ensure_image,
    unique_name, wait_until,
};

/// Six changes per cycle: a new app (and host), a second instance of the loaded app, the new
/// app's address changed, the second instance removed, the new app stopped (its down page), the
/// new app removed.
const CYCLES: usize = 10;
const BETWEEN_CHANGES: Duration = Duration::from_millis(300);

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

/// The PIDs of nginx's worker processes: a reload replaces every one of them.
fn nginx_workers(container: &str) -> Vec<String> {
    let top = docker_ok(&["top", container, "-o", "pid,args"]);
    let mut pids: Vec<String> = top
        .lines()
        .filter(|l| l.contains("nginx: worker process"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    pids.sort();
    pids
}

fn proxy_addr(butler: &ButlerProcess) -> SocketAddr {
    butler.proxy_addr().parse().expect("proxy address")
}

fn start_app(name: &str, app: &str) -> AppContainer {
    AppContainer::builder(name)
        .label("butler.name", app)
        .env("APP_NAME", name)
        .network(BUTLER_NETWORK)
        .expose(3000)
        .spawn()
}

#[test]
fn not_one_request_fails_while_apps_come_and_go() {
    let bin = butler_bin();
    let mut cleanup = Cleanup::new();
    ensure_image("app");
    let butler = ButlerProcess::start_workers(bin, &["dynamic-proxy"], "", "");
    let steady = unique_name("steady");
    cleanup.add_container(&steady);
    let _steady = start_app(&steady, &steady);
    butler.wait_for(
        &format!("{steady}.localhost"),
        Duration::from_secs(60),
        |r| r.status == 200 && r.body.starts_with(&format!("app={steady} ")),
    );
    // The first apply after start is a reload (there was no data yet); from here on, none.
    let workers_before = nginx_workers(&butler.nginx);
    let first_id = butler.history(bin).newest_id();

    let stop = AtomicBool::new(false);
    let options = LoadOptions {
        connections: 8,
        rate_per_connection: 50,
        retry: false,
        ..LoadOptions::default()
    };
    let (load, changes) = std::thread::scope(|s| {
        let load = s.spawn(|| {
            run_load(
                proxy_addr(&butler),
                &format!("{steady}.localhost"),
                &options,
                &stop,
            )
        });
        // Stops the load however the changes end: a panic below must not leave the scope waiting
        // for a load thread nobody stops.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let stopper = StopOnDrop(&stop);
        let mut changes = 0;
        for cycle in 0..CYCLES {
            let new_app = unique_name(&format!("churn{cycle}"));
            let second = format!("{steady}-second-{cycle}");
            cleanup.add_container(&new_app);
            cleanup.add_container(&second);
            let change = |what: &mut dyn FnMut()| {
                what();
                std::thread::sleep(BETWEEN_CHANGES);
            };
            let mut app = None;
            let mut extra = None;
            change(&mut || app = Some(start_app(&new_app, &new_app)));
            change(&mut || extra = Some(start_app(&second, &steady)));
            change(&mut || {
                docker_ok(&["network", "disconnect", BUTLER_NETWORK, &new_app]);
                docker_ok(&["network", "connect", BUTLER_NETWORK, &new_app]);
            });
            change(&mut || drop(extra.take()));
            change(&mut || {
                docker_ok(&["stop", "-t", "1", &new_app]);
            });
            change(&mut || drop(app.take()));
            changes += 6;
        }
        drop(stopper);
        (load.join().expect("load thread"), changes)
    });

    let history = butler.history(bin);
    let ours: Vec<_> = history
        .applied()
        .into_iter()
        .filter(|v| v.id > first_id)
        .cloned()
        .collect();
    let as_data = ours
        .iter()
        .filter(|v| v.summary.contains("(as data, no reload)"))
        .count();
    eprintln!(
        "{changes} changes, {} versions applied ({as_data} as data); load: {} sent, {} ok, {} non-2xx, {} io errors, {} closed before an answer",
        ours.len(),
        load.sent,
        load.ok,
        load.non_2xx,
        load.io_errors,
        load.closed_early
    );
    assert!(load.sent > 500, "the load sent too little: {load:?}");
    assert_eq!(
        (load.non_2xx, load.io_errors),
        (0, 0),
        "a client that never re-sends saw failures (non-2xx, io errors); answers: {:?}\n{}",
        load.answers,
        butler.log()
    );
    assert!(
        ours.len() >= CYCLES * 3,
        "too few versions applied for {changes} changes: {ours:#?}"
    );
    let reloaded: Vec<_> = ours
        .iter()
        .filter(|v| !v.summary.contains("(as data, no reload)"))
        .collect();
    assert!(
        reloaded.is_empty(),
        "every ordinary change must be applied as data; these were not: {reloaded:#?}"
    );
    assert_eq!(
        nginx_workers(&butler.nginx),
        workers_before,
        "nginx's workers were replaced: something reloaded it"
    );
    // The loaded app was served by both of its instances while it had two.
    assert!(
        load.answers.keys().any(|k| k.contains("-second-")),
        "the second instance never answered: {:?}",
        load.answers.keys()
    );
}

/// `PUT /butler/routes` on the control port of this butler's nginx, with `token` (None: none).
fn put_routes(butler: &ButlerProcess, token: Option<&str>, body: &str) -> (u16, String) {
    let ip = butler_testkit::container_ip(&butler.nginx, BUTLER_NETWORK);
    let mut headers = vec![("Host", "butler-control"), ("Content-Type", "text/plain")];
    if let Some(token) = token {
        headers.push(("X-Butler-Token", token));
    }
    let response = butler_testkit::http_request_with_body(
        &format!("{ip}:8081"),
        "PUT",
        "/butler/routes",
        &headers,
        body.as_bytes(),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| {
        let logs = docker(&["logs", "--tail", "30", &butler.nginx]);
        panic!(
            "the control port of {} at {ip}:8081 does not answer: {e}; its processes:\n{}\nits log:\n{}",
            butler.nginx,
            docker_ok(&["top", &butler.nginx]),
            String::from_utf8_lossy(&logs.stderr),
        )
    });
    (response.status, response.body)
}

#[test]
fn the_data_path_refuses_bad_data_and_keeps_the_last_good() {
    let bin = butler_bin();
    let mut cleanup = Cleanup::new();
    ensure_image("app");
    let butler = ButlerProcess::start_workers(bin, &["dynamic-proxy"], "", "");
    let name = unique_name("kept");
    cleanup.add_container(&name);
    let _app = start_app(&name, &name);
    let host = format!("{name}.localhost");
    butler.wait_for(&host, Duration::from_secs(60), |r| {
        r.status == 200 && r.body.starts_with(&format!("app={name} "))
    });
    let token = String::from_utf8(
        docker(&[
            "inspect",
            "-f",
            "{{ index .Config.Labels \"butler.nginx-control-token\" }}",
            &butler.nginx,
        ])
        .stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    assert_eq!(token.len(), 32, "the nginx container has a control token");

    // Without the token, or with another, nothing is read.
    let good = format!("butler-routes 1\nupstream x 10.0.0.1:80\nhost {host} x\nend\n");
    assert_eq!(put_routes(&butler, None, &good).0, 403);
    assert_eq!(put_routes(&butler, Some("0123"), &good).0, 403);

    for (bad, why) in [
        ("upstream x 999.0.0.1:80\n", "is not an IPv4 address"),
        ("upstream x 10.0.0.1:70000\n", "port out of range"),
        ("upstream x 10.0.0.1:0\n", "port out of range"),
        ("upstream x not-an-address\n", "is not an IP address"),
        ("upstream x\n", "upstream needs"),
        ("host Shop.Localhost x\n", "lowercase host"),
        ("host a.localhost nowhere\n", "has no upstream or down page"),
        ("down x 99999\n<p>\n", "shorter than its size"),
        ("surprise here\n", "unknown line kind"),
    ] {
        let body = format!("butler-routes 1\n{bad}end\n");
        let (status, text) = put_routes(&butler, Some(&token), &body);
        assert_eq!(status, 400, "{bad:?} was not refused: {text}");
        assert!(text.contains(why), "{bad:?}: {text:?} does not say {why:?}");
        // The last good data still routes the app.
        let r = butler.get(&host, "/").expect("the proxy answers");
        assert!(
            r.status == 200 && r.body.starts_with(&format!("app={name} ")),
            "after refusing {bad:?}: {r:?}"
        );
    }
    let (status, text) = put_routes(&butler, Some(&token), "butler-routes 2\nend\n");
    assert_eq!(status, 400, "{text}");
    let (status, text) = put_routes(&butler, Some(&token), "butler-routes 1\nhost a.b x\n");
    assert!(
        status == 400 && text.contains("no end line"),
        "{status} {text}"
    );

    // The token is in no config version: the history never shows it.
    assert!(
        butler
            .config_files_containing(&token)
            .iter()
            .all(|f| f == "/etc/butler-nginx/control.token"),
        "the token is in a config version"
    );
    wait_until("the route to answer", Duration::from_secs(5), || {
        butler
            .get(&host, "/")
            .is_ok_and(|r| r.body.starts_with(&format!("app={name} ")))
    });
}
