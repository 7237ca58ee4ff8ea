//! A Docker engine that goes away and comes back: the butler keeps running, nginx keeps serving
//! meanwhile, and once the engine answers again the butler reconnects, re-lists and follows new
//! containers, without being restarted. Runs against a private dockerd in a network namespace of
//! its own, so the shared engine is never stopped (see `butler_testkit::private_engine`).

use std::path::Path;
use std::time::Duration;

use butler_testkit::private_engine::{PrivateEngine, in_netns};
use butler_testkit::{
    BUTLER_NETWORK, ButlerProcess, ensure_image, http_get, unique_name, wait_until_or,
};

fn run_app(engine: &PrivateEngine, name: &str) {
    let out = engine.docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        BUTLER_NETWORK,
        "-e",
        &format!("APP_NAME={name}"),
        "-e",
        "PORTS=3000",
        "--expose",
        "3000",
        &ensure_image("app"),
    ]);
    assert!(
        out.status.success(),
        "docker run {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_butler_reconnects_to_an_engine_that_restarts() {
    let mut engine = PrivateEngine::start();
    engine.load_image(&ensure_image("nginx"));
    engine.load_image(&ensure_image("app"));
    let net = engine.docker(&["network", "create", BUTLER_NETWORK]);
    assert!(
        net.status.success(),
        "{}",
        String::from_utf8_lossy(&net.stderr)
    );
    let butler = ButlerProcess::start_in_netns(
        Path::new(env!("CARGO_BIN_EXE_butler")),
        engine.netns(),
        &format!("[docker]\nhost = \"{}\"\n", engine.host()),
    );

    let before = unique_name("before");
    run_app(&engine, &before);
    butler.wait_for_app(&format!("{before}.localhost"));
    // The route can be live before the event stream has connected once (the first reconcile
    // lists everything): the reconnect counted below must be a second connect.
    wait_until_or(
        "the event stream to connect",
        Duration::from_secs(10),
        || butler.log().contains("Docker event stream connected"),
        || butler.log(),
    );

    // nginx's own address: while the engine is down its port publishing (docker-proxy) is gone,
    // but nginx itself keeps running and serving (--live-restore).
    let nginx_ip = String::from_utf8(
        engine
            .docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &butler.nginx,
            ])
            .stdout,
    )
    .unwrap();
    let nginx_addr = format!("{}:80", nginx_ip.trim());

    engine.stop();
    let during = in_netns(engine.netns(), || {
        http_get(&nginx_addr, &format!("{before}.localhost"), "/")
    })
    .expect("nginx answers while the engine is down");
    assert!(
        during.body.starts_with(&format!("app={before} ")),
        "{}",
        during.body
    );
    // Long enough for several reconnect attempts (backoff 200 ms → 5 s).
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        butler.is_running(),
        "the butler exited while the engine was down:\n{}",
        butler.log()
    );

    engine.restart();
    let after = unique_name("after");
    run_app(&engine, &after);
    butler.wait_for(
        &format!("{after}.localhost"),
        Duration::from_secs(60),
        |r| r.status == 200 && r.body.starts_with(&format!("app={after} ")),
    );
    butler.wait_for_app(&format!("{before}.localhost"));
    assert!(butler.is_running(), "{}", butler.log());
    wait_until_or(
        "the reconnect in the log",
        Duration::from_secs(10),
        || {
            butler
                .log()
                .matches("Docker event stream connected")
                .count()
                >= 2
        },
        || butler.log(),
    );
}
