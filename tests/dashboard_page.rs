//! The dashboard page in a real browser (headless Chromium), at a desktop's and a phone's width:
//! what a person sees (app names, links, statuses and why, services, incidents, recoveries,
//! recommendations), that it reads without JavaScript, that it refreshes its data without a reload,
//! and an app routed by a real `butler run`. Screenshots go to `target/test-artifacts/dashboard/`.

use std::path::Path;
use std::time::Duration;

use butler_testkit::browser::Browser;
use butler_testkit::dashboard::{DashboardProcess, artifacts_dir, block_on, seed_demo};
use butler_testkit::{AppContainer, ButlerProcess, Cleanup, http_get, unique_name, wait_until_or};
use devops_butler::health::AppStatus;
use devops_butler::store::{AppHealth, RouteRow};

fn butler_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_butler"))
}

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// The `href`s of the links in the app row of `app` with class `class`.
fn link(tab: &mut butler_testkit::browser::Tab, app: &str, class: &str) -> String {
    tab.text(&format!(
        "(document.querySelector('tr[data-app=\"{app}\"] a.{class}') || {{href: 'none'}}).href"
    ))
}

/// The rendered text of the app row of `app`.
fn row_text(tab: &mut butler_testkit::browser::Tab, app: &str) -> String {
    tab.text(&format!(
        "document.querySelector('tr[data-app=\"{app}\"]').innerText"
    ))
}

#[test]
fn the_page_shows_apps_services_incidents_and_advice_at_desktop_and_phone_width() {
    let dashboard = DashboardProcess::start(butler_bin(), "", seed_demo);
    let browser = Browser::start();
    let artifacts = artifacts_dir("dashboard");
    for (label, (width, height)) in [("desktop", DESKTOP), ("phone", PHONE)] {
        let mut tab = browser.open(&dashboard.url("/"), width, height);
        let seen = tab.visible_text();
        for app in ["shop", "blog", "api", "queue"] {
            assert!(seen.contains(app), "{label}: {app} not shown:\n{seen}");
        }
        // Status with its reason, as the health monitor recorded them.
        let blog = row_text(&mut tab, "blog");
        assert!(blog.contains("down"), "{label}: {blog}");
        assert!(
            blog.contains("HTTP 502 through the proxy: connection refused"),
            "{label}: {blog}"
        );
        assert!(
            blog.contains("label butler.port"),
            "{label}: port reason missing: {blog}"
        );
        assert!(blog.contains("8080"), "{label}: {blog}");
        let shop = row_text(&mut tab, "shop");
        assert!(
            shop.contains("healthy") && shop.contains("4.2 ms"),
            "{label}: {shop}"
        );
        assert!(
            shop.contains("2h05m") || shop.contains("2h06m"),
            "{label}: uptime: {shop}"
        );
        assert!(shop.contains("×2"), "{label}: two instances: {shop}");
        let queue = row_text(&mut tab, "queue");
        assert!(
            queue.contains("unknown") && queue.contains("not checked yet"),
            "{label}: {queue}"
        );
        // Links: through the proxy (with the proxy's port) and straight to the instance.
        let http_port = dashboard.http_port;
        assert_eq!(
            link(&mut tab, "shop", "proxy-link"),
            format!("http://shop.localhost:{http_port}/")
        );
        assert_eq!(
            link(&mut tab, "blog", "direct-link"),
            "http://172.30.0.7:8080/"
        );
        // Summary, services, incidents, recoveries, recommendations.
        for needle in [
            "not running systemd",
            "blog answers 502 through the proxy",
            "api restarted 6 times in 5 minutes",
            "escalated",
            "restart container",
            "exited again after 3 s",
            "needs a person",
            "blog is down",
            "Config version 2 was not applied",
            "Actions are off",
        ] {
            assert!(
                seen.contains(needle),
                "{label}: {needle:?} not shown:\n{seen}"
            );
        }
        assert!(
            !seen.contains("8% free on /"),
            "{label}: a resolved incident is listed as open:\n{seen}"
        );
        // Nothing is wider than the screen: no sideways scrolling, on a phone too.
        let fits = tab.eval("document.documentElement.scrollWidth <= window.innerWidth");
        assert_eq!(
            fits,
            serde_json::Value::Bool(true),
            "{label}: the page is wider than {width} px"
        );
        if label == "phone" {
            // Rows are cards with labelled cells; the table header is hidden.
            assert_eq!(
                tab.text("getComputedStyle(document.querySelector('#apps thead')).display"),
                "none"
            );
        }
        tab.screenshot(&artifacts.join(format!("seeded-{label}.png")));
    }
}

#[test]
fn the_page_reads_without_javascript_and_has_no_foreign_assets() {
    let dashboard = DashboardProcess::start(butler_bin(), "", seed_demo);
    let browser = Browser::start_with(&["--blink-settings=scriptEnabled=false"]);
    let mut tab = browser.open(&dashboard.url("/"), DESKTOP.0, DESKTOP.1);
    assert_eq!(
        tab.eval(
            "typeof window.fetch === 'function' && document.body.dataset.refreshes === undefined"
        ),
        serde_json::Value::Bool(true)
    );
    let seen = tab.visible_text();
    for needle in [
        "shop",
        "blog",
        "down",
        "HTTP 502 through the proxy",
        "Recommendations",
    ] {
        assert!(
            seen.contains(needle),
            "{needle:?} not shown without JS:\n{seen}"
        );
    }
    tab.screenshot(&artifacts_dir("dashboard").join("no-javascript.png"));
    // Every stylesheet, script and image comes from the dashboard itself (works offline).
    let foreign = tab.eval(
        "Array.from(document.querySelectorAll('link[href],script[src],img[src]'))
            .map(e => e.href || e.src).filter(u => !u.startsWith(location.origin))",
    );
    assert_eq!(foreign, serde_json::json!([]), "assets from elsewhere");
    let css = dashboard.get("/assets/dashboard.css");
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
}

#[test]
fn the_page_refreshes_its_data_without_reloading() {
    let dashboard = DashboardProcess::start(butler_bin(), "", seed_demo);
    let browser = Browser::start();
    let mut tab = browser.open(&dashboard.url("/"), DESKTOP.0, DESKTOP.1);
    // A mark on the window: a reload would lose it.
    tab.eval("window.__notReloaded = true");
    assert!(!tab.visible_text().contains("latecomer"));
    let store = dashboard.store();
    block_on(async {
        let mut routes = store.routes().await.unwrap();
        routes.push(RouteRow {
            app: "latecomer".into(),
            hosts: vec!["latecomer.localhost".into()],
            servers: vec!["172.30.0.10:9000".into()],
            port: 9000,
            reason: "label butler.port".into(),
            down: None,
        });
        store.replace_routes(routes).await.unwrap();
        let mut health = store.app_health().await.unwrap();
        health.retain(|h| h.app != "blog");
        health.push(AppHealth {
            app: "blog".into(),
            status: AppStatus::Healthy,
            reason: "answers 200 through the proxy".into(),
            latency_ms: Some(6.0),
            started_at: None,
            checked_at: String::new(),
        });
        store.replace_app_health(health).await.unwrap();
    });
    // The page refreshes every 30 s; allow for a slow, shared machine.
    tab.wait_for(
        "the new app and blog's recovery to appear",
        Duration::from_secs(90),
        "document.body.innerText.includes('latecomer') && \
         document.querySelector('tr[data-app=\"blog\"]').dataset.status === 'healthy'",
    );
    assert_eq!(
        tab.eval("window.__notReloaded === true && Number(document.body.dataset.refreshes) >= 1"),
        serde_json::Value::Bool(true),
        "the page reloaded instead of refreshing its data"
    );
    tab.screenshot(&artifacts_dir("dashboard").join("after-refresh.png"));
}

#[test]
fn an_app_routed_by_a_real_butler_shows_with_working_links() {
    let _cleanup = Cleanup::new();
    let butler = ButlerProcess::start(butler_bin());
    let name = unique_name("dash-app");
    let app = AppContainer::builder(&name)
        .label("butler.port", "3000")
        .env("APP_NAME", &name)
        .start();
    let host = format!("{name}.localhost");
    butler.wait_for_app(&host);
    let browser = Browser::start();
    let url = format!("http://{}/", butler.dashboard_addr());
    let mut tab = browser.open(&url, DESKTOP.0, DESKTOP.1);
    // The dashboard reads the routes the dynamic proxy recorded; a refresh picks them up.
    wait_until_or(
        "the app on the dashboard",
        Duration::from_secs(60),
        || {
            tab.navigate(&url);
            tab.eval(&format!(
                "!!document.querySelector('tr[data-app=\"{name}\"]')"
            )) == serde_json::Value::Bool(true)
        },
        || format!("butler log:\n{}", butler.log()),
    );
    let row = row_text(&mut tab, &name);
    assert!(
        row.contains("3000") && row.contains("label butler.port"),
        "{row}"
    );
    let status = tab.text(&format!(
        "document.querySelector('tr[data-app=\"{name}\"]').dataset.status"
    ));
    assert!(
        ["healthy", "degraded", "down", "unknown"].contains(&status.as_str()),
        "{status}"
    );
    // Both links lead to the app: through the proxy (Host header) and on its own address.
    let proxy = link(&mut tab, &name, "proxy-link");
    assert_eq!(proxy, format!("http://{host}:{}/", butler.http_port));
    let through = butler.get(&host, "/").unwrap();
    assert!(
        through.body.contains(&format!("app={name}")),
        "{}",
        through.body
    );
    // An app started on Docker's default bridge is served at its address there until the butler
    // has connected it to the proxy network (a moment later); then the link shows that address.
    let on_proxy_network = format!("{}:3000", app.ip(butler_testkit::BUTLER_NETWORK));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let direct_addr = loop {
        let direct = link(&mut tab, &name, "direct-link");
        let addr = direct
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        if addr == on_proxy_network || std::time::Instant::now() > deadline {
            break addr;
        }
        std::thread::sleep(Duration::from_millis(500));
        tab.navigate(&url);
    };
    assert_eq!(direct_addr, on_proxy_network);
    let answer = http_get(&direct_addr, "direct", "/").unwrap();
    assert!(
        answer.body.contains(&format!("app={name}")),
        "{}",
        answer.body
    );
    tab.screenshot(&artifacts_dir("dashboard").join("real-butler.png"));
}
