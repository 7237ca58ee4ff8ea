//! The dynamic proxy as a user meets it: containers on the host engine, `butler run`, requests
//! through the proxy's published port with a Host header. Real engine, real nginx, real apps.
//! Every butler sees every container of the tests running in parallel, so each test names its
//! apps with `unique_name` and asserts only about its own.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use butler_testkit::{
    AppContainer, BUTLER_NETWORK, ButlerProcess, Cleanup, HttpResponse, container_ip, docker_ok,
    unique_name, wait_until, wait_until_or, websocket_echo,
};
use devops_butler::proxy::PortReason;
use devops_butler::proxy::sanitize::sanitize_app_name;

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

/// The default server's app directory (what unknown hosts get), not an app and not an error page.
fn is_directory(r: &HttpResponse) -> bool {
    r.status == 200 && r.body.contains("<h1>Apps on ") && r.body.contains("Served by devops-butler")
}

/// `butler proxy routes --output json`, parsed.
fn routes_json(butler: &ButlerProcess) -> serde_json::Value {
    let out = butler
        .cli(butler_bin(), &["proxy", "routes", "--output", "json"])
        .expect_success("butler proxy routes --output json");
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("proxy routes printed no JSON ({e}):\n{}", out.stdout))
}

/// This app's entry in `butler proxy routes --output json`, if it is routed.
fn route_of(butler: &ButlerProcess, app: &str) -> Option<serde_json::Value> {
    routes_json(butler)["routes"]
        .as_array()
        .expect("routes is a list")
        .iter()
        .find(|r| r["app"] == app)
        .cloned()
}

/// The one upstream server of a routed app, as `proxy routes --output json` shows it.
fn only_server(butler: &ButlerProcess, app: &str) -> serde_json::Value {
    let route = route_of(butler, app).unwrap_or_else(|| panic!("app {app} is not in proxy routes"));
    let servers = route["servers"].as_array().expect("servers is a list");
    assert_eq!(servers.len(), 1, "{route:#}");
    servers[0].clone()
}

fn body_port(r: &HttpResponse) -> Option<&str> {
    r.body
        .split_whitespace()
        .find_map(|w| w.strip_prefix("port="))
}

#[test]
fn an_app_started_before_the_butler_is_routed_at_start() {
    let name = unique_name("early");
    let _app = AppContainer::builder(&name)
        .env("APP_NAME", "early")
        .expose(3000)
        .start();
    let butler = ButlerProcess::start(butler_bin());
    let response = butler.wait_for(&format!("{name}.localhost"), Duration::from_secs(10), |r| {
        r.status == 200 && r.body.starts_with("app=")
    });
    assert!(response.body.starts_with("app=early "), "{}", response.body);
    // The start round added it, not a later event or periodic check. Its log lines follow the
    // apply, so they may trail the first answer a little.
    let added = format!("route + {name}:");
    wait_until_or(
        "the start round to log the route",
        Duration::from_secs(10),
        || {
            butler
                .log()
                .lines()
                .any(|l| l.contains(&added) && l.contains("cause=start"))
        },
        || format!("no `{added}` with cause=start in:\n{}", butler.log()),
    );
}

#[test]
fn an_app_started_after_the_butler_is_routed_by_name() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("shop");
    let _app = AppContainer::builder(&name)
        .env("APP_NAME", "shop")
        .listen(3000)
        .expose(3000)
        .start();
    let response = butler.wait_for_app(&format!("{name}.localhost"));
    assert!(response.body.starts_with("app=shop "), "{}", response.body);
    assert!(response.body.contains("port=3000"), "{}", response.body);
    // Unknown hosts get the app directory, which links the new app on the port users reach.
    let directory = butler.get("nobody.localhost", "/").unwrap();
    assert!(is_directory(&directory), "{}", directory.body);
    assert!(
        directory
            .body
            .contains(&format!("http://{name}.localhost:{}/", butler.http_port)),
        "{}",
        directory.body
    );
}

#[test]
fn the_port_label_picks_the_port() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("labelled");
    // Without the label, 8080 would win (a common web port ahead of 3000 among the exposed ones).
    let _app = AppContainer::builder(&name)
        .label("butler.port", "3000")
        .expose(3000)
        .expose(8080)
        .listen(3000)
        .listen(8080)
        .start();
    let response = butler.wait_for_app(&format!("{name}.localhost"));
    assert_eq!(body_port(&response), Some("3000"), "{}", response.body);
}

#[test]
fn the_only_exposed_port_is_used() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("exposed");
    // It also listens on 3000, which the listening-socket rules would pick.
    let _app = AppContainer::builder(&name)
        .expose(7000)
        .listen(7000)
        .listen(3000)
        .start();
    let response = butler.wait_for_app(&format!("{name}.localhost"));
    assert_eq!(body_port(&response), Some("7000"), "{}", response.body);
    assert_eq!(
        only_server(&butler, &name)["port_reason"],
        PortReason::OnlyExposed.text()
    );
}

#[test]
fn the_listening_socket_is_used_when_nothing_is_exposed() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("noexpose");
    let _app = AppContainer::builder(&name).listen(5000).start();
    let response = butler.wait_for_app(&format!("{name}.localhost"));
    assert_eq!(body_port(&response), Some("5000"), "{}", response.body);
    // The app also logs "listening on :5000"; the socket must be what decided, not the log.
    assert_eq!(
        only_server(&butler, &name)["port_reason"],
        PortReason::OnlyListening.text()
    );
}

#[test]
fn the_listening_port_among_several_exposed_is_used() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("twoexposed");
    // Without reading the sockets, 3000 would win as the common web port.
    let _app = AppContainer::builder(&name)
        .expose(3000)
        .expose(9000)
        .listen(9000)
        .start();
    let response = butler.wait_for_app(&format!("{name}.localhost"));
    assert_eq!(body_port(&response), Some("9000"), "{}", response.body);
    assert_eq!(
        only_server(&butler, &name)["port_reason"],
        PortReason::ExposedListening.text()
    );
}

#[test]
fn virtual_host_and_virtual_port_are_honoured() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("legacy");
    let host = format!("{name}.example.test");
    // Without VIRTUAL_PORT, 8080 would win among the listening ports.
    let _app = AppContainer::builder(&name)
        .env("APP_NAME", "legacy")
        .env("VIRTUAL_HOST", &host)
        .env("VIRTUAL_PORT", "3000")
        .listen(3000)
        .listen(8080)
        .start();
    let response = butler.wait_for_app(&host);
    assert!(
        response.body.starts_with("app=legacy "),
        "{}",
        response.body
    );
    assert_eq!(body_port(&response), Some("3000"), "{}", response.body);
    // Its own <app>.<domain> host still works too.
    butler.wait_for_app(&format!("{name}.localhost"));
}

#[test]
fn a_100_character_container_name_is_routed_at_its_sanitized_name() {
    let butler = ButlerProcess::start(butler_bin());
    let mut name = format!("{}_Long.Name_", unique_name("long"));
    while name.len() < 100 {
        name.push('x');
    }
    assert_eq!(name.len(), 100);
    let app_name = sanitize_app_name(&name).expect("a valid app name");
    assert!(app_name.len() <= 63, "{app_name}");
    let host = format!("{app_name}.localhost");
    let _app = AppContainer::builder(&name).env("APP_NAME", "long").start();
    let response = butler.wait_for_app(&host);
    assert!(response.body.starts_with("app=long "), "{}", response.body);
    let route = route_of(&butler, &app_name).expect("the app is in proxy routes");
    assert_eq!(route["hosts"][0], host.as_str(), "{route:#}");
    assert_eq!(route["servers"][0]["container"], name.as_str(), "{route:#}");
}

/// Longer than a DNS label: served under the name the user gave it as well as under the alias.
#[test]
fn an_80_character_container_name_answers_under_its_full_name_and_its_alias() {
    let butler = ButlerProcess::start(butler_bin());
    let mut name = unique_name("full-name");
    while name.len() < 80 {
        name.push('z');
    }
    let alias = sanitize_app_name(&name).expect("a valid app name");
    assert_eq!(alias.len(), 63);
    let full_host = format!("{name}.localhost");
    let alias_host = format!("{alias}.localhost");
    let _app = AppContainer::builder(&name).env("APP_NAME", "full").start();
    for host in [&full_host, &alias_host] {
        let response = butler.wait_for_app(host);
        assert!(
            response.body.starts_with("app=full "),
            "{host}: {}",
            response.body
        );
    }
    let route = route_of(&butler, &alias).expect("the app is in proxy routes");
    assert_eq!(
        route["hosts"],
        serde_json::json!([alias_host, full_host]),
        "{route:#}"
    );
}

#[test]
fn two_instances_of_one_app_share_the_load() {
    let butler = ButlerProcess::start(butler_bin());
    let app = unique_name("pair");
    let _one = AppContainer::builder(&unique_name("pair-one"))
        .label("butler.name", &app)
        .env("APP_NAME", "one")
        .start();
    let _two = AppContainer::builder(&unique_name("pair-two"))
        .label("butler.name", &app)
        .env("APP_NAME", "two")
        .start();
    let host = format!("{app}.localhost");
    wait_until(
        "proxy routes lists both instances",
        Duration::from_secs(20),
        || {
            route_of(&butler, &app)
                .is_some_and(|r| r["servers"].as_array().map(Vec::len) == Some(2))
        },
    );
    butler.wait_for_app(&host);
    // Once both are in the live config, 20 requests reach both.
    let mut seen = BTreeSet::new();
    wait_until(
        "both instances are in the live config",
        Duration::from_secs(20),
        || {
            let body = butler.get(&host, "/").map(|r| r.body).unwrap_or_default();
            seen.insert(body.split_whitespace().next().unwrap_or("").to_string());
            seen.contains("app=one") && seen.contains("app=two")
        },
    );
    let mut answers = BTreeSet::new();
    for _ in 0..20 {
        let r = butler.get(&host, "/").unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        answers.insert(r.body.split_whitespace().next().unwrap().to_string());
    }
    let expected: BTreeSet<String> = ["app=one", "app=two"].map(String::from).into();
    assert_eq!(answers, expected);
}

#[test]
fn an_unhealthy_instance_leaves_the_upstream_while_another_serves() {
    let butler = ButlerProcess::start(butler_bin());
    let app = unique_name("health");
    let _good = AppContainer::builder(&unique_name("health-good"))
        .label("butler.name", &app)
        .env("APP_NAME", "good")
        .start();
    // The test image has no shell, so a shell health command can never pass: Docker reports the
    // container `starting`, then `unhealthy`, while it serves HTTP fine.
    let _sick = AppContainer::builder(&unique_name("health-sick"))
        .label("butler.name", &app)
        .env("APP_NAME", "sick")
        .docker_arg("--health-cmd=true")
        .docker_arg("--health-interval=1s")
        .docker_arg("--health-retries=1")
        .start();
    let host = format!("{app}.localhost");
    butler.wait_for_app(&host);
    wait_until(
        "proxy routes lists only the healthy instance",
        Duration::from_secs(30),
        || {
            route_of(&butler, &app)
                .is_some_and(|r| r["servers"].as_array().map(Vec::len) == Some(1))
        },
    );
    for _ in 0..20 {
        let r = butler.get(&host, "/").unwrap();
        assert!(r.body.starts_with("app=good "), "{}", r.body);
    }
}

#[test]
fn an_opted_out_app_is_not_routed() {
    let butler = ButlerProcess::start(butler_bin());
    let hidden = unique_name("hidden");
    let _hidden = AppContainer::builder(&hidden)
        .label("butler.enable", "false")
        .env("APP_NAME", "hidden")
        .expose(3000)
        .start();
    // A neighbour started after it: once the neighbour is routed, the butler has seen both.
    let neighbour = unique_name("neighbour");
    let _neighbour = AppContainer::builder(&neighbour).expose(3000).start();
    butler.wait_for_app(&format!("{neighbour}.localhost"));
    let response = butler.get(&format!("{hidden}.localhost"), "/").unwrap();
    assert!(
        is_directory(&response),
        "{} {}",
        response.status,
        response.body
    );
    assert!(
        response
            .body
            .contains(&format!("http://{neighbour}.localhost")),
        "{}",
        response.body
    );
    assert!(
        !response
            .body
            .contains(&format!("http://{hidden}.localhost")),
        "{}",
        response.body
    );
}

#[test]
fn an_app_only_on_another_network_is_connected_and_routed() {
    let mut cleanup = Cleanup::new();
    let net = cleanup.create_network("elsewhere");
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("elsewhere-app");
    let app = AppContainer::builder(&name)
        .network(&net)
        .env("APP_NAME", "elsewhere")
        .expose(3000)
        .start();
    cleanup.add_container(&name);
    let response = butler.wait_for_app(&format!("{name}.localhost"));
    assert!(
        response.body.starts_with("app=elsewhere "),
        "{}",
        response.body
    );
    let ip = app.ip(BUTLER_NETWORK);
    assert_eq!(
        only_server(&butler, &name)["address"],
        format!("{ip}:3000").as_str()
    );
    // Still on its own network too.
    app.ip(&net);
}

#[test]
fn a_removed_app_falls_back_to_the_default_server() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("gone");
    let host = format!("{name}.localhost");
    let app = AppContainer::builder(&name).expose(3000).start();
    butler.wait_for_app(&host);
    docker_ok(&["rm", "-f", app.name()]);
    let response = butler.wait_for(&host, Duration::from_secs(15), is_directory);
    assert!(
        !response.body.contains(&format!("http://{host}")),
        "{}",
        response.body
    );
}

#[test]
fn a_restart_with_a_new_ip_is_followed() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("moving");
    let host = format!("{name}.localhost");
    let app = AppContainer::builder(&name)
        .network(BUTLER_NETWORK)
        .env("APP_NAME", "moving")
        .expose(3000)
        .start();
    butler.wait_for_app(&host);
    let old_ip = app.ip(BUTLER_NETWORK);
    // While it is stopped, a test app that is not routed takes the freed address (the engine hands
    // out the lowest free one), so a proxy stuck on the old IP would reach it and answer
    // `app=filler`. On the shared network another test's container may take it first instead:
    // retry until the restarted app really has a new address.
    let mut fillers = Vec::new();
    let mut new_ip = old_ip.clone();
    for _ in 0..3 {
        app.stop();
        fillers.push(
            AppContainer::builder(&unique_name("filler"))
                .network(BUTLER_NETWORK)
                .label("butler.enable", "false")
                .env("APP_NAME", "filler")
                .expose(3000)
                .start(),
        );
        docker_ok(&["start", app.name()]);
        new_ip = container_ip(app.name(), BUTLER_NETWORK);
        if new_ip != old_ip {
            break;
        }
    }
    assert_ne!(new_ip, old_ip, "the app kept its address after 3 restarts");
    let response = butler.wait_for(&host, Duration::from_secs(15), |r| {
        r.status == 200 && r.body.starts_with("app=moving ")
    });
    assert!(response.body.contains("port=3000"), "{}", response.body);
    assert_eq!(
        only_server(&butler, &name)["address"],
        format!("{new_ip}:3000").as_str()
    );
}

#[test]
fn a_websocket_handshake_through_the_proxy_is_upgraded_and_echoes() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("ws");
    let host = format!("{name}.localhost");
    let _app = AppContainer::builder(&name).expose(3000).start();
    butler.wait_for_app(&host);
    let echo = websocket_echo(&butler.proxy_addr(), &host, "/ws", "hello through nginx")
        .unwrap_or_else(|e| panic!("WebSocket through the proxy: {e}"));
    assert_eq!(echo, "hello through nginx");
}

#[test]
fn proxy_routes_and_proxy_update_show_the_routes() {
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("listed");
    let host = format!("{name}.localhost");
    let app = AppContainer::builder(&name)
        .label("butler.port", "3000")
        .label("butler.host", &format!("{name}.example.test"))
        .start();
    butler.wait_for_app(&host);
    // Served at its default-bridge address first; the butler connects it right after.
    wait_until(
        "the app on the proxy network",
        Duration::from_secs(10),
        || !container_ip(app.name(), BUTLER_NETWORK).is_empty(),
    );
    let address = format!("{}:3000", app.ip(BUTLER_NETWORK));

    let text = butler
        .cli(butler_bin(), &["proxy", "routes"])
        .expect_success("butler proxy routes");
    let line = text
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no line for {name}:\n{}", text.stdout));
    for want in [
        host.as_str(),
        &format!("{name}.example.test"),
        &address,
        &PortReason::Label.text(),
    ] {
        assert!(line.contains(want), "{want:?} missing from {line:?}");
    }

    let route = route_of(&butler, &name).expect("the app is in proxy routes --output json");
    assert_eq!(
        route["hosts"],
        serde_json::json!([host, format!("{name}.example.test")])
    );
    let server = &route["servers"][0];
    assert_eq!(server["container"], name.as_str());
    assert_eq!(server["address"], address.as_str());
    assert_eq!(server["port"], 3000);
    assert_eq!(server["port_reason"], PortReason::Label.text());

    // The running butler has applied our route already, so proxy-update never reports it as a
    // change. Other tests' containers come and go on the shared engine (bursts of 50 included), so
    // "no route changes" for the whole table needs a quiet moment: retry until one comes.
    let last = std::cell::RefCell::new(None);
    wait_until_or(
        "butler proxy-update to report no route changes",
        Duration::from_secs(40),
        || {
            let out = butler
                .cli(butler_bin(), &["proxy-update"])
                .expect_success("butler proxy-update");
            let ours = out.stdout.lines().find(|l| {
                let mut words = l.split_whitespace();
                matches!(words.next(), Some("+" | "-" | "~"))
                    && words.next().map(|a| a.trim_end_matches(':')) == Some(name.as_str())
            });
            assert_eq!(ours, None, "our app changed:\n{}", out.stdout);
            let quiet = out.stdout.lines().next() == Some("no route changes");
            *last.borrow_mut() = Some(out);
            quiet
        },
        || format!("it last said: {:?}", last.borrow()),
    );
    let out = last.into_inner().unwrap();
    assert!(out.stdout.contains("config unchanged"), "{}", out.stdout);
}
