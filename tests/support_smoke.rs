//! Proves the testkit (`butler_testkit`) works against the real engine before any butler test relies on
//! it: the app image, the nginx image, the WebSocket client, and the systemd test bed.

use butler_testkit::*;
use std::time::Duration;

#[test]
fn codecs_match_known_vectors() {
    assert_eq!(ws_codec::base64(b""), "");
    assert_eq!(ws_codec::base64(b"f"), "Zg==");
    assert_eq!(ws_codec::base64(b"fo"), "Zm8=");
    assert_eq!(ws_codec::base64(b"foobar"), "Zm9vYmFy");
    let hex: String = ws_codec::sha1(b"abc")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    // RFC 6455 §1.3's example handshake.
    assert_eq!(
        ws_codec::accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn app_answers_http_on_its_ip_with_its_name() {
    let app = AppContainer::builder(&unique_name("smoke-app"))
        .env("APP_NAME", "smoke-one")
        .start();
    let addr = format!("{}:3000", app.default_ip());
    let resp = http_get(&addr, "anything", "/some/path?x=1").expect("GET /");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.body.contains("app=smoke-one"), "{}", resp.body);
    assert!(
        resp.body.contains("port=3000 path=/some/path?x=1"),
        "{}",
        resp.body
    );
    assert_eq!(http_get(&addr, "anything", "/healthz").unwrap().status, 200);
    assert_eq!(
        http_get(&addr, "anything", "/status/503").unwrap().status,
        503
    );
}

#[test]
fn app_listens_on_two_ports_on_its_network() {
    let mut cleanup = Cleanup::new();
    let net = cleanup.create_network("smoke-net");
    let app = AppContainer::builder(&unique_name("smoke-two"))
        .listen(3000)
        .listen(8080)
        .expose(8080)
        .label("butler.name", "two")
        .network(&net)
        .start();
    let ip = app.ip(&net);
    for port in [3000, 8080] {
        let resp = http_get(&format!("{ip}:{port}"), "two", "/").expect("GET /");
        assert!(resp.body.contains(&format!("port={port}")), "{}", resp.body);
        // Without APP_NAME the app names itself after its hostname.
        assert!(resp.body.contains("app="), "{}", resp.body);
    }
    let logs = app.logs();
    assert!(
        logs.contains("listening on :3000") && logs.contains("listening on :8080"),
        "{logs}"
    );
    let labels = docker_ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"butler.name\"}} {{json .Config.ExposedPorts}}",
        app.name(),
    ]);
    assert_eq!(labels, r#"two {"8080/tcp":{}}"#);
}

#[test]
fn app_stops_promptly_on_sigterm() {
    let app = AppContainer::builder(&unique_name("smoke-term")).start();
    let start = std::time::Instant::now();
    app.stop();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "docker stop took {:?}",
        start.elapsed()
    );
    let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", app.name()]);
    assert_eq!(code, "0");
}

#[test]
fn websocket_echo_works_directly() {
    let app = AppContainer::builder(&unique_name("smoke-ws")).start();
    let addr = format!("{}:3000", app.default_ip());
    let echoed =
        websocket_echo(&addr, "ws.localhost", "/ws", "hello over websocket").expect("echo");
    assert_eq!(echoed, "hello over websocket");
    let long = "x".repeat(70_000);
    assert_eq!(
        websocket_echo(&addr, "ws.localhost", "/ws", &long).expect("long echo"),
        long
    );
}

/// `nginx -t` on a config passed on stdin, inside the nginx image.
fn nginx_check(config: &str) -> CmdOutput {
    let image = ensure_image("nginx");
    docker_with_stdin(
        &[
            "run",
            "--rm",
            "-i",
            &image,
            "sh",
            "-c",
            "cat > /tmp/nginx.conf && nginx -t -c /tmp/nginx.conf",
        ],
        config.as_bytes(),
    )
    .into()
}

#[test]
fn nginx_image_validates_a_config() {
    let ok = nginx_check("events {}\nhttp { server { listen 80; return 200 'ok'; } }\n");
    assert!(ok.success(), "{ok:?}");
    assert!(ok.stderr.contains("test is successful"), "{}", ok.stderr);
    let bad = nginx_check("events {}\nhttp { server { listen 80; bogus_directive on; } }\n");
    assert!(!bad.success(), "a bad config passed: {bad:?}");
    assert!(
        bad.stderr.contains("unknown directive \"bogus_directive\""),
        "{}",
        bad.stderr
    );
    let stable = docker_ok(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        "devops-butler/nginx:bookworm",
    ]);
    let tagged = docker_ok(&["image", "inspect", "-f", "{{.Id}}", &ensure_image("nginx")]);
    assert_eq!(
        stable, tagged,
        "devops-butler/nginx:bookworm is not the image build.sh made"
    );
}

#[test]
fn nginx_proxies_http_and_websocket_to_the_app() {
    let mut cleanup = Cleanup::new();
    let net = cleanup.create_network("smoke-proxy");
    let app = AppContainer::builder(&unique_name("smoke-upstream"))
        .env("APP_NAME", "behind-nginx")
        .network(&net)
        .start();
    let config = format!(
        "events {{}}\nhttp {{\n  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n  \
         server {{ listen 80; server_name app.localhost;\n    location / {{ proxy_pass http://{}:3000;\n      \
         proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade;\n      \
         proxy_set_header Connection $connection_upgrade; proxy_set_header Host $host; }} }}\n}}\n",
        app.ip(&net)
    );
    let nginx = unique_name("smoke-nginx");
    let image = ensure_image("nginx");
    // Config through the API (docker cp into a created container), as the butler does: no bind mount.
    docker_ok(&["create", "--name", &nginx, "--network", &net, &image]);
    cleanup.add_container(&nginx);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nginx.conf"), config).unwrap();
    docker_ok(&[
        "cp",
        &dir.path().join("nginx.conf").to_string_lossy(),
        &format!("{nginx}:/etc/nginx/nginx.conf"),
    ]);
    docker_ok(&["start", &nginx]);
    let addr = format!("{}:80", container_ip(&nginx, &net));
    wait_until("nginx answers", Duration::from_secs(10), || {
        http_get(&addr, "app.localhost", "/").is_ok()
    });
    let resp = http_get(&addr, "app.localhost", "/through").unwrap();
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(
        resp.body.contains("app=behind-nginx") && resp.body.contains("path=/through"),
        "{}",
        resp.body
    );
    let echoed =
        websocket_echo(&addr, "app.localhost", "/ws", "through the proxy").expect("echo via nginx");
    assert_eq!(echoed, "through the proxy");
}

#[test]
fn testbed_boots_and_runs_a_unit() {
    let tb = Testbed::boot();
    assert_eq!(
        tb.exec(&["systemctl", "is-system-running"]).stdout.trim(),
        "running"
    );
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("butler-smoke.service");
    std::fs::write(
        &unit,
        "[Unit]\nDescription=throwaway unit of the support smoke test\n\n[Service]\n\
         ExecStart=/bin/sh -c 'echo smoke unit says hello; exec sleep infinity'\n",
    )
    .unwrap();
    tb.install_files(&[(unit.as_path(), "/etc/systemd/system/butler-smoke.service")]);
    tb.sh("systemctl daemon-reload && systemctl start butler-smoke.service")
        .expect_success("start the unit");
    assert_eq!(
        tb.exec(&["systemctl", "is-active", "butler-smoke.service"])
            .stdout
            .trim(),
        "active"
    );
    tb.wait_until(
        "journalctl shows the unit's line",
        Duration::from_secs(10),
        || {
            tb.journal("butler-smoke.service", 20)
                .contains("smoke unit says hello")
        },
    );

    // The host's Docker socket is usable through group docker, as the butler's user will use it.
    let gid = tb
        .sh("stat -c %g /var/run/docker.sock")
        .stdout
        .trim()
        .to_string();
    assert_eq!(
        tb.sh("getent group docker | cut -d: -f3").stdout.trim(),
        gid
    );
    let version = tb.sh(&format!(
        "setpriv --reuid=65534 --regid={gid} --clear-groups curl -sf --unix-socket /var/run/docker.sock http://localhost/version"
    ));
    assert!(
        version.success() && version.stdout.contains("ApiVersion"),
        "{version:?}"
    );

    // On devops-butler-net the test bed reaches an app by its IP there.
    let app = AppContainer::builder(&unique_name("smoke-tbapp"))
        .env("APP_NAME", "seen-from-testbed")
        .network(BUTLER_NETWORK)
        .start();
    let url = format!("http://{}:3000/", app.ip(BUTLER_NETWORK));
    let body = tb.exec(&["curl", "-sf", "--max-time", "5", &url]);
    assert!(body.stdout.contains("app=seen-from-testbed"), "{body:?}");
}

#[test]
fn testbed_installs_a_butler_whose_user_reaches_the_docker_socket() {
    // A stand-in for the real units (they live in systemd/, which other work owns): same file
    // names and destinations, a shell script as the binary.
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "butler-standin.service",
        "[Unit]\nDescription=butler stand-in\n\n[Service]\nUser=butler\nExecStart=/usr/bin/butler\n",
    );
    write(
        "butler.target",
        "[Unit]\nDescription=butler stand-in target\nWants=butler-standin.service\n",
    );
    write(
        "butler.sysusers",
        "u butler - \"devops-butler\" /var/lib/butler\nm butler docker\n",
    );
    write(
        "butler.tmpfiles",
        "d /var/lib/butler 0750 butler butler -\n",
    );
    let binary = dir.path().join("butler");
    write(
        "butler",
        "#!/bin/sh\necho \"stand-in runs as $(id -un) in $(id -Gn)\"\n\
         echo \"config says $(cat /etc/butler/butler.toml)\"\n\
         echo \"docker ping: $(curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping)\"\n\
         exec sleep infinity\n",
    );
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let tb = Testbed::boot();
    tb.install_butler_from(dir.path(), &binary, "[proxy]\nhttp_port = 8080\n");
    tb.sh("systemctl start butler.target")
        .expect_success("start butler.target");
    tb.wait_until(
        "the stand-in has pinged the engine",
        Duration::from_secs(10),
        || tb.journal("butler-*", 50).contains("docker ping: OK"),
    );
    let journal = tb.journal("butler-*", 50);
    assert!(
        journal.contains("stand-in runs as butler in butler docker"),
        "{journal}"
    );
    assert!(journal.contains("config says [proxy]"), "{journal}");
    assert_eq!(
        tb.sh("stat -c '%U %a' /var/lib/butler").stdout.trim(),
        "butler 750"
    );
}
