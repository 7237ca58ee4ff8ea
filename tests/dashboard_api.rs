//! The dashboard's JSON API and `/metrics` as scripts and monitoring meet them: the real
//! `butler worker dashboard` over a store seeded through the store's API, every endpoint, every
//! bad parameter, the bearer token, and actions end to end (the proxy update through a real
//! `butler run`; the recovery worker's actions through the queue helper it will call).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use butler_testkit::ButlerProcess;
use butler_testkit::dashboard::{DashboardProcess, block_on, json_body, seed_demo, write_token};
use devops_butler::dashboard::actions::{self, Action, Outcome};

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

/// `GET path`: 200 and JSON.
fn get_json(dashboard: &DashboardProcess, path: &str) -> serde_json::Value {
    let response = dashboard.get(path);
    assert_eq!(response.status, 200, "{path}: {}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("application/json"),
        "{path}"
    );
    json_body(&response)
}

fn names(list: &serde_json::Value, key: &str) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| item[key].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn every_read_endpoint_answers_from_the_store() {
    let dashboard = DashboardProcess::start(butler_bin(), "", seed_demo);

    assert_eq!(
        get_json(&dashboard, "/healthz"),
        serde_json::json!({"status": "ok"})
    );

    let apps = get_json(&dashboard, "/api/apps");
    assert_eq!(apps["count"], 4);
    assert_eq!(
        names(&apps["apps"], "name"),
        ["api", "blog", "queue", "shop"]
    );
    let blog = &apps["apps"][1];
    assert_eq!(blog["status"], "down");
    assert_eq!(
        blog["status_reason"],
        "HTTP 502 through the proxy: connection refused"
    );
    assert_eq!(blog["proxy_url"], "http://blog.localhost:8080/");
    assert_eq!(blog["direct_url"], "http://172.30.0.7:8080/");
    assert_eq!(blog["port"], 8080);
    assert_eq!(blog["port_reason"], "label butler.port");
    assert!(blog["uptime_secs"].as_u64().unwrap() >= 2 * 3600);
    // Clients that accept gzip get the same directory compressed.
    let gzipped = dashboard.request("GET", "/api/apps", &[("Accept-Encoding", "br, gzip")]);
    assert_eq!(gzipped.header("content-encoding"), Some("gzip"));
    assert_eq!(gzipped.header("vary"), Some("accept-encoding"));
    let mut unzipped = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(gzipped.body_bytes.as_slice()),
        &mut unzipped,
    )
    .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&unzipped).unwrap(),
        apps
    );
    let down = get_json(&dashboard, "/api/apps?status=down");
    assert_eq!(names(&down["apps"], "name"), ["blog"]);
    let unknown = get_json(&dashboard, "/api/apps?status=unknown");
    assert_eq!(names(&unknown["apps"], "name"), ["queue"]);

    let shop = get_json(&dashboard, "/api/apps/shop");
    assert_eq!(shop["app"]["servers"].as_array().unwrap().len(), 2);
    assert_eq!(shop["app"]["latency_ms"], 4.2);
    let blog = get_json(&dashboard, "/api/apps/blog");
    assert_eq!(names(&blog["checks"], "name"), ["http_proxy", "tcp"]);
    assert_eq!(names(&blog["incidents"], "kind"), ["app_down"]);

    let services = get_json(&dashboard, "/api/services");
    assert_eq!(services["available"], false);
    assert!(
        services["reason"]
            .as_str()
            .unwrap()
            .contains("not running systemd"),
        "{services}"
    );

    let health = get_json(&dashboard, "/api/health");
    assert_eq!(health["status"], "down");
    assert_eq!(health["summary"]["down"], 1);
    assert_eq!(health["summary"]["open_incidents"], 2);
    assert_eq!(health["summary"]["last_version"]["applied"], false);
    assert_eq!(health["checks"].as_array().unwrap().len(), 4);
    let advice = health["recommendations"].to_string();
    assert!(
        advice.contains("needs a person") && advice.contains("blog is down"),
        "{advice}"
    );

    let incidents = get_json(&dashboard, "/api/incidents");
    assert_eq!(incidents["count"], 3);
    let open = get_json(&dashboard, "/api/incidents?state=unresolved");
    assert_eq!(names(&open["incidents"], "kind").len(), 2);
    let escalated = get_json(&dashboard, "/api/incidents?state=escalated");
    assert_eq!(names(&escalated["incidents"], "kind"), ["crash_loop"]);
    let critical = get_json(&dashboard, "/api/incidents?min_severity=critical");
    assert_eq!(names(&critical["incidents"], "kind"), ["crash_loop"]);
    let host = get_json(
        &dashboard,
        "/api/incidents?component=host&kind=disk_low&limit=5",
    );
    assert_eq!(names(&host["incidents"], "state"), ["resolved"]);
    let first = get_json(&dashboard, "/api/incidents?limit=1");
    assert_eq!(first["count"], 1);
    let id = escalated["incidents"][0]["id"].as_i64().unwrap();
    let one = get_json(&dashboard, &format!("/api/incidents/{id}"));
    assert_eq!(one["incident"]["state"], "escalated");
    assert_eq!(names(&one["recoveries"], "outcome"), ["failed"]);

    let recoveries = get_json(&dashboard, "/api/recoveries");
    assert_eq!(recoveries["count"], 3);
    assert_eq!(
        recoveries["recoveries"][0]["action"],
        "reconnect to devops-butler-net"
    );
    assert_eq!(
        names(&recoveries["success_rates"], "kind"),
        ["crash_loop", "disk_low"]
    );
    let of_one = get_json(
        &dashboard,
        &format!("/api/recoveries?incident={id}&limit=10"),
    );
    assert_eq!(of_one["count"], 1);

    let versions = get_json(&dashboard, "/api/proxy/versions");
    assert_eq!(versions["count"], 2);
    assert_eq!(versions["pinned"], serde_json::Value::Null);
    assert_eq!(versions["versions"][0]["applied"], false);
    assert!(
        versions["versions"][0]["error"]
            .as_str()
            .unwrap()
            .contains("proxy_passs")
    );
    assert_eq!(versions["versions"][1]["timings"]["reload_ms"], 150.0);
    assert_eq!(
        get_json(&dashboard, "/api/proxy/versions?limit=1")["count"],
        1
    );

    let openapi = get_json(&dashboard, "/api/openapi.json");
    assert_eq!(openapi["openapi"], "3.0.3");

    let page = dashboard.get("/");
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'self'")
    );
}

#[test]
fn bad_parameters_and_unknown_paths_get_json_errors_with_the_right_status() {
    let dashboard = DashboardProcess::start(butler_bin(), "", seed_demo);
    let cases: &[(&str, &str, u16, &str, &str)] = &[
        ("GET", "/nowhere", 404, "not_found", "/nowhere"),
        ("GET", "/api", 404, "not_found", "openapi.json"),
        (
            "GET",
            "/api/apps/nope",
            404,
            "not_found",
            "no app named \"nope\"",
        ),
        (
            "GET",
            "/api/apps/Not_An_App",
            400,
            "bad_request",
            "a-z, 0-9 and '-'",
        ),
        (
            "GET",
            "/api/apps?status=sleepy",
            400,
            "bad_request",
            "healthy, degraded, down, unknown",
        ),
        (
            "GET",
            "/api/apps?limt=3",
            400,
            "bad_request",
            "unknown parameter \"limt\"",
        ),
        (
            "GET",
            "/api/apps?status=down&status=up",
            400,
            "bad_request",
            "given twice",
        ),
        (
            "GET",
            "/api/apps/shop?verbose=1",
            400,
            "bad_request",
            "takes none",
        ),
        (
            "GET",
            "/api/incidents?state=sleeping",
            400,
            "bad_request",
            "open, recovering",
        ),
        (
            "GET",
            "/api/incidents?min_severity=urgent",
            400,
            "bad_request",
            "low, medium, high, critical",
        ),
        (
            "GET",
            "/api/incidents?limit=0",
            400,
            "bad_request",
            "from 1 to 1000",
        ),
        (
            "GET",
            "/api/incidents?limit=1001",
            400,
            "bad_request",
            "from 1 to 1000",
        ),
        (
            "GET",
            "/api/incidents?limit=ten",
            400,
            "bad_request",
            "limit",
        ),
        (
            "GET",
            "/api/incidents/abc",
            400,
            "bad_request",
            "positive whole number",
        ),
        (
            "GET",
            "/api/incidents/0",
            400,
            "bad_request",
            "positive whole number",
        ),
        (
            "GET",
            "/api/incidents/99999",
            404,
            "not_found",
            "no incident 99999",
        ),
        (
            "GET",
            "/api/recoveries?incident=-1",
            400,
            "bad_request",
            "incident",
        ),
        (
            "GET",
            "/api/recoveries?limit=5000",
            400,
            "bad_request",
            "from 1 to 1000",
        ),
        (
            "GET",
            "/api/proxy/versions?limit=-2",
            400,
            "bad_request",
            "from 1 to 1000",
        ),
        (
            "GET",
            "/api/requests/x",
            400,
            "bad_request",
            "positive whole number",
        ),
        (
            "GET",
            "/api/requests/12345",
            404,
            "not_found",
            "no request 12345",
        ),
        (
            "GET",
            "/api/services?x=1",
            400,
            "bad_request",
            "unknown parameter",
        ),
        (
            "GET",
            "/metrics?format=json",
            400,
            "bad_request",
            "unknown parameter",
        ),
        ("GET", "/?debug=1", 400, "bad_request", "unknown parameter"),
        (
            "POST",
            "/api/apps",
            405,
            "method_not_allowed",
            "POST is not allowed",
        ),
        (
            "DELETE",
            "/api/incidents/1",
            405,
            "method_not_allowed",
            "DELETE",
        ),
        (
            "GET",
            "/api/proxy/update",
            405,
            "method_not_allowed",
            "GET is not allowed",
        ),
        ("PUT", "/api/fix-502", 405, "method_not_allowed", "PUT"),
        (
            "POST",
            "/api/fix-502?app=Bad!",
            400,
            "bad_request",
            "not an app name",
        ),
        (
            "POST",
            "/api/fix-502?target=x",
            400,
            "bad_request",
            "this endpoint takes app",
        ),
        (
            "POST",
            "/api/services/teapot/restart",
            404,
            "not_found",
            "unknown service 'teapot'",
        ),
        (
            "POST",
            "/api/services/all/restart",
            400,
            "bad_request",
            "one service at a time",
        ),
    ];
    for (method, path, status, code, needle) in cases {
        let response = dashboard.request(method, path, &[]);
        assert_eq!(
            response.status, *status,
            "{method} {path}: {}",
            response.body
        );
        assert_eq!(
            response.header("content-type"),
            Some("application/json"),
            "{method} {path}"
        );
        let body = json_body(&response);
        assert_eq!(body["error"], *code, "{method} {path}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{method} {path}: {message:?} lacks {needle:?}"
        );
        if *status == 405 {
            let allow = response.header("allow").unwrap_or_default();
            assert!(!allow.is_empty(), "{method} {path}: no Allow header");
            assert!(!allow.contains(method), "{method} {path}: Allow: {allow}");
        }
    }
}

#[test]
fn actions_are_off_without_a_usable_token_file_and_say_so() {
    let off = DashboardProcess::start(butler_bin(), "", seed_demo);
    for path in [
        "/api/proxy/update",
        "/api/fix-502",
        "/api/services/recovery/restart",
    ] {
        let response = off.request("POST", path, &[("Authorization", "Bearer anything")]);
        assert_eq!(response.status, 403, "{path}: {}", response.body);
        let body = json_body(&response);
        assert_eq!(body["error"], "actions_disabled");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("no dashboard.token_file"),
            "{body}"
        );
    }
    assert!(off.log().contains("API actions are off"), "{}", off.log());

    // A token file others can read is refused, in the log and in the answer; fixing its mode
    // turns actions on without a restart.
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "api-token", "open-secret", 0o644);
    let extra = format!(
        "token_file = \"{}\"\naction_timeout = \"1s\"",
        token.display()
    );
    let open = DashboardProcess::start(butler_bin(), &extra, seed_demo);
    let response = open.request(
        "POST",
        "/api/proxy/update",
        &[("Authorization", "Bearer open-secret")],
    );
    assert_eq!(response.status, 403, "{}", response.body);
    let message = json_body(&response)["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("0644") && message.contains("chmod 600"),
        "{message}"
    );
    assert!(open.log().contains("0644"), "{}", open.log());
    assert!(
        !open.log().contains("open-secret"),
        "the secret leaked into the log"
    );
    write_token(dir.path(), "api-token", "open-secret", 0o600);
    let response = open.request(
        "POST",
        "/api/proxy/update",
        &[("Authorization", "Bearer open-secret")],
    );
    assert_eq!(
        response.status, 503,
        "on now, and nobody runs it: {}",
        response.body
    );
}

#[test]
fn actions_need_the_bearer_token_and_report_when_no_worker_answers() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "api-token", "first-token", 0o600);
    let extra = format!(
        "token_file = \"{}\"\naction_timeout = \"2s\"",
        token.display()
    );
    let dashboard = DashboardProcess::start(butler_bin(), &extra, seed_demo);
    let post = |path: &str, auth: Option<&str>| {
        let header = auth.map(|t| ("Authorization", t));
        let headers: Vec<(&str, &str)> = header.into_iter().collect();
        dashboard.request("POST", path, &headers)
    };

    let missing = post("/api/fix-502", None);
    assert_eq!(missing.status, 401, "{}", missing.body);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"butler\"")
    );
    assert_eq!(json_body(&missing)["error"], "unauthorized");
    let wrong = post("/api/fix-502", Some("Bearer first-tokem"));
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
    let not_bearer = post("/api/fix-502", Some("Basic Zmlyc3QtdG9rZW4="));
    assert_eq!(not_bearer.status, 401);

    // The right token: the request is queued; with no recovery worker it is withdrawn and the
    // answer says who should have run it.
    for path in [
        "/api/fix-502",
        "/api/fix-502?app=blog",
        "/api/services/recovery/restart",
    ] {
        let response = post(path, Some("Bearer first-token"));
        assert_eq!(response.status, 503, "{path}: {}", response.body);
        let body = json_body(&response);
        assert_eq!(body["error"], "no_executor");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("recovery worker"), "{message}");
        let id = body["request"]["id"].as_i64().unwrap();
        let request = json_body(&dashboard.get(&format!("/api/requests/{id}")));
        assert_eq!(request["state"], "abandoned", "{request}");
        assert_eq!(request["ok"], false);
    }
    let unknown_app = post("/api/fix-502?app=nope", Some("Bearer first-token"));
    assert_eq!(unknown_app.status, 404, "{}", unknown_app.body);

    // Rotating the token file takes effect at once: the old token stops working.
    write_token(dir.path(), "api-token", "second-token", 0o600);
    assert_eq!(
        post("/api/proxy/update", Some("Bearer first-token")).status,
        401
    );
    assert_eq!(
        post("/api/proxy/update", Some("bearer second-token")).status,
        503
    );
}

#[test]
fn a_worker_serving_the_queue_answers_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "api-token", "t0ken", 0o600);
    let extra = format!(
        "token_file = \"{}\"\naction_timeout = \"60s\"",
        token.display()
    );
    let dashboard = DashboardProcess::start(butler_bin(), &extra, seed_demo);
    // What the recovery worker does each round, here in the test process with its own store
    // handle: claim the dashboard's requests, run them, record the outcome.
    let store = dashboard.store();
    let executor = std::thread::spawn(move || {
        block_on(async {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            let mut served = 0;
            while served < 2 && tokio::time::Instant::now() < deadline {
                served += actions::serve_pending(
                    &store,
                    &[Action::Fix502, Action::ServiceRestart],
                    |request| async move {
                        match request.action {
                            Action::ServiceRestart => Outcome {
                                ok: true,
                                result: serde_json::json!({
                                    "summary": format!("restarted {}", request.target.unwrap())
                                }),
                            },
                            _ => Outcome {
                                ok: false,
                                result: actions::error_json("blog is still refusing connections"),
                            },
                        }
                    },
                )
                .await
                .unwrap();
                tokio::time::sleep(actions::POLL_INTERVAL).await;
            }
        })
    });
    let auth = [("Authorization", "Bearer t0ken")];
    let restarted = dashboard.request("POST", "/api/services/health-monitor/restart", &auth);
    assert_eq!(restarted.status, 200, "{}", restarted.body);
    let body = json_body(&restarted);
    assert_eq!(body["state"], "finished");
    assert_eq!(body["ok"], true);
    assert_eq!(body["target"], "health-monitor");
    assert_eq!(body["result"]["summary"], "restarted health-monitor");
    let failed = dashboard.request("POST", "/api/fix-502?app=blog", &auth);
    assert_eq!(failed.status, 500, "{}", failed.body);
    let body = json_body(&failed);
    assert_eq!(body["error"], "action_failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("blog is still refusing connections"),
        "{body}"
    );
    executor.join().unwrap();
}

#[test]
fn metrics_are_prometheus_text_with_every_family() {
    let dashboard = DashboardProcess::start(butler_bin(), "", seed_demo);
    let response = dashboard.get("/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.body;
    for line in [
        "butler_routes 4",
        "butler_route_servers 5",
        "butler_apps{status=\"down\"} 1",
        "butler_app_response_seconds{app=\"shop\"} 0.0042",
        "butler_nginx_reloads_total 1",
        "butler_config_validation_failures_total 1",
        "butler_config_render_seconds_count 2",
        "butler_config_validate_seconds_bucket{le=\"0.1\"} 2",
        "butler_nginx_reload_seconds_bucket{le=\"0.25\"} 1",
        "butler_incidents_total{kind=\"crash_loop\",severity=\"critical\"} 1",
        "butler_incidents_open{kind=\"disk_low\",severity=\"medium\"} 0",
        "butler_recoveries_total{kind=\"crash_loop\",outcome=\"failed\"} 1",
        "butler_check_latency_seconds{subject=\"app:blog\",check=\"tcp\"} 0.0004",
        "butler_check_up{subject=\"app:blog\",check=\"tcp\"} 0",
        "butler_systemd_available 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for family in ["butler_unit_restarts_total", "butler_unit_memory_bytes"] {
        assert!(text.contains(&format!("# TYPE {family} ")), "no {family}");
    }
    // The reference parser (the Prometheus project's Python client) reads every family.
    let parsed = Command::new("python3")
        .args([
            "-c",
            "import sys\n\
             from prometheus_client.parser import text_string_to_metric_families as parse\n\
             families = list(parse(sys.stdin.read()))\n\
             print(len(families), sum(len(f.samples) for f in families))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("python3 (with prometheus-client from PyPI; scripts/test installs it)");
    assert!(
        parsed.status.success(),
        "the Prometheus parser refused /metrics: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    let counts = String::from_utf8_lossy(&parsed.stdout);
    let families: usize = counts.split_whitespace().next().unwrap().parse().unwrap();
    assert!(families >= 20, "only {families} families parsed");
}

#[test]
fn proxy_update_through_the_api_runs_in_the_dynamic_proxy_worker() {
    let dir = tempfile::tempdir().unwrap();
    let token = write_token(dir.path(), "api-token", "proxy-secret", 0o600);
    let butler = ButlerProcess::start_full(
        butler_bin(),
        "",
        &format!(
            "token_file = \"{}\"\naction_timeout = \"120s\"",
            token.display()
        ),
        "",
    );
    // An app, so the butler applies (and records) a config version.
    let name = butler_testkit::unique_name("dash-update");
    let _app = butler_testkit::AppContainer::builder(&name)
        .env("APP_NAME", &name)
        .start();
    butler.wait_for_app(&format!("{name}.localhost"));
    // Pin the config as `butler proxy rollback` does: the update must lift it, like the CLI's.
    let store = devops_butler::store::Store::open(&butler.state_dir()).unwrap();
    let mut versions = Vec::new();
    butler_testkit::wait_until(
        "the butler's config version for the app",
        Duration::from_secs(60),
        || {
            versions = block_on(store.list_versions(1)).unwrap();
            versions.first().is_some_and(|v| v.applied)
        },
    );
    let pinned = versions[0].id;
    block_on(store.pin_version(Some(pinned))).unwrap();
    let response = butler_testkit::http_request(
        &butler.dashboard_addr(),
        "POST",
        "/api/proxy/update",
        &[("Authorization", "Bearer proxy-secret")],
        Duration::from_secs(90),
    )
    .unwrap();
    assert_eq!(response.status, 200, "{}\n{}", response.body, butler.log());
    let body = json_body(&response);
    assert_eq!(body["action"], "proxy_update");
    assert_eq!(body["ok"], true);
    assert_eq!(body["result"]["unpinned"], pinned);
    let summary = body["result"]["summary"].as_str().unwrap();
    assert!(summary.contains("apps routed"), "{summary}");
    assert_eq!(block_on(store.pinned_version()).unwrap(), None);
    assert!(
        butler
            .log()
            .contains("running a request from the dashboard"),
        "{}",
        butler.log()
    );
}
