//! The dashboard as installed: butler-dashboard.service under a real systemd (the test bed), with
//! its sandbox (user butler, no docker group, ProtectSystem=strict). It reads the units through
//! systemd without privileges, and it reads a token file that only its owner may read.

use std::path::Path;
use std::time::Duration;

use butler_testkit::dashboard::json_body;
use butler_testkit::{HttpResponse, Testbed, http_request, wait_until_or};

const TOKEN_FILE: &str = "/etc/butler/api-token";

fn call(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_request(addr, method, path, headers, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{method} {path} on the test bed's dashboard: {e}"))
}

#[test]
fn under_systemd_the_dashboard_shows_the_units_and_guards_actions_with_an_owner_only_token() {
    // Listening on every address of the test bed, so the host reaches it on devops-butler-net.
    let config = format!(
        "[dashboard]\nlisten = \"0.0.0.0:8888\"\ntoken_file = \"{TOKEN_FILE}\"\naction_timeout = \"2s\"\n"
    );
    let tb = Testbed::start(Path::new(env!("CARGO_BIN_EXE_butler")), &config);
    tb.sh(&format!(
        "umask 077 && echo unit-token > {TOKEN_FILE} && chown butler:butler {TOKEN_FILE}"
    ))
    .expect_success("writing the token file");
    tb.exec(&["systemctl", "start", "butler-dashboard.service"])
        .expect_success("systemctl start butler-dashboard.service");
    let addr = format!("{}:8888", tb.ip());
    wait_until_or(
        "the dashboard in the test bed to answer",
        Duration::from_secs(60),
        || {
            http_request(&addr, "GET", "/healthz", &[], Duration::from_secs(5))
                .is_ok_and(|r| r.status == 200)
        },
        || tb.journal("butler-dashboard.service", 50),
    );

    let services = json_body(&call(&addr, "GET", "/api/services", &[]));
    assert_eq!(services["available"], true, "{services}");
    let unit = |name: &str| {
        services["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["unit"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {services}"))
            .clone()
    };
    let dashboard = unit("butler-dashboard.service");
    assert_eq!(dashboard["active_state"], "active");
    assert_eq!(dashboard["restarts"], 0);
    assert!(
        dashboard["memory_bytes"].as_u64().unwrap() > 0,
        "{dashboard}"
    );
    assert!(dashboard["uptime_secs"].is_u64(), "{dashboard}");
    let recovery = unit("butler-recovery.service");
    assert_eq!(recovery["active_state"], "inactive");

    // The page and the metrics say the same.
    let page = call(&addr, "GET", "/", &[]).body;
    assert!(page.contains("butler-dashboard.service"), "{page}");
    assert!(page.contains("active (running)"), "{page}");
    assert!(
        page.contains("butler-recovery.service is inactive"),
        "no advice on the stopped unit"
    );
    let metrics = call(&addr, "GET", "/metrics", &[]).body;
    for line in [
        "butler_systemd_available 1",
        "butler_unit_active{unit=\"butler-dashboard.service\"} 1",
        "butler_unit_restarts_total{unit=\"butler-dashboard.service\"} 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?}:\n{metrics}"
        );
    }

    // The sandboxed dashboard reads its owner-only token: the right one is let through (and,
    // with no recovery worker running, the restart is reported as not run).
    let wrong = call(
        &addr,
        "POST",
        "/api/services/recovery/restart",
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let right = call(
        &addr,
        "POST",
        "/api/services/recovery/restart",
        &[("Authorization", "Bearer unit-token")],
    );
    assert_eq!(right.status, 503, "{}", right.body);
    assert!(right.body.contains("recovery worker"), "{}", right.body);
    // Made readable by others, the file is refused at the next action, and the journal says why.
    tb.exec(&["chmod", "0644", TOKEN_FILE])
        .expect_success("chmod the token file");
    let open = call(
        &addr,
        "POST",
        "/api/proxy/update",
        &[("Authorization", "Bearer unit-token")],
    );
    assert_eq!(open.status, 403, "{}", open.body);
    assert!(open.body.contains("0644"), "{}", open.body);
    let journal = tb.journal("butler-dashboard.service", 50);
    assert!(journal.contains("0644"), "{journal}");
    assert!(
        !journal.contains("unit-token"),
        "the token reached the journal"
    );
}
