//! A Docker engine that goes away and comes back: the butler keeps running, nginx keeps serving
//! meanwhile, and once the engine answers again the butler reconnects and follows new containers,
//! without being restarted. Runs against a private dockerd so the shared engine is never stopped.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{ButlerProcess, PrivateEngine, ensure_image, http_get, unique_name, wait_until_or};

fn run_app(engine: &PrivateEngine, name: &str) {
    let out = engine.docker(&[
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "devops-butler-net",
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
    let butler = ButlerProcess::start_with(
        Path::new(env!("CARGO_BIN_EXE_butler")),
        "",
        &format!("[docker]\nhost = \"{}\"\n", engine.host()),
    );

    let before = unique_name("before");
    run_app(&engine, &before);
    butler.wait_for_app(&format!("{before}.localhost"));

    // nginx's own address: while the engine is down its port publishing (docker-proxy, no iptables
    // on this private engine) is gone, but nginx itself keeps running and serving.
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
    let during = http_get(&nginx_addr, &format!("{before}.localhost"), "/").unwrap();
    assert!(
        during.body.starts_with(&format!("app={before} ")),
        "{}",
        during.body
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        butler.is_running(),
        "the butler exited while the engine was down:\n{}",
        butler.log()
    );

    engine.restart();
    let after = unique_name("after");
    run_app(&engine, &after);
    butler.wait_for_app(&format!("{after}.localhost"));
    butler.wait_for_app(&format!("{before}.localhost"));
    assert!(butler.is_running());
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
