//! The dashboard under test on its own: `butler worker dashboard` (the process behind
//! butler-dashboard.service) over a state directory the test seeds through the store's API, the
//! same API the health-monitor and recovery workers write with. No Docker needed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use devops_butler::health::{AppStatus, Finding, IncidentState, Severity};
use devops_butler::store::{
    AppHealth, CheckResult, NewRecovery, NewVersion, RecoveryOutcome, RouteRow, Store,
    VersionTimings,
};

use crate::{HttpResponse, free_port, http_request, repo_root, wait_until_or};

/// Runs a future to completion on a small runtime of its own (the tests are synchronous).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(future)
}

/// `target/test-artifacts/<name>/`, created: screenshots and reports a person can look at later.
pub fn artifacts_dir(name: &str) -> PathBuf {
    let dir = repo_root().join("target/test-artifacts").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `token` to `dir/<file>` with `mode` (0o600 for a usable token file).
pub fn write_token(dir: &Path, file: &str, token: &str, mode: u32) -> PathBuf {
    let path = dir.join(file);
    let partial = dir.join(format!(".{file}.partial"));
    std::fs::write(&partial, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// `butler worker dashboard` on a free port over its own state directory; stopped on drop (its log
/// printed when the test panicked).
pub struct DashboardProcess {
    child: Option<Child>,
    pub port: u16,
    /// The proxy port the config names, so the page's proxy links carry it.
    pub http_port: u16,
    log_path: PathBuf,
    dir: tempfile::TempDir,
}

impl DashboardProcess {
    /// Seeds the store with `seed` (before the dashboard starts), then starts the dashboard with
    /// `dashboard_extra` lines in its [dashboard] section.
    pub fn start<F, Fut>(binary: &Path, dashboard_extra: &str, seed: F) -> DashboardProcess
    where
        F: FnOnce(Store) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().expect("temp dir for the dashboard");
        let state = dir.path().join("state");
        block_on(async {
            seed(Store::open(&state).expect("open the store to seed")).await;
        });
        let port = free_port();
        let http_port = 8080;
        let config = format!(
            "[proxy]\nhttp_port = {http_port}\n\
             [dashboard]\nlisten = \"127.0.0.1:{port}\"\n{dashboard_extra}\n\
             [state]\ndir = \"{}\"\n",
            state.display()
        );
        let config_path = dir.path().join("butler.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("dashboard.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(binary)
            .args(["worker", "dashboard", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start butler worker dashboard");
        let dashboard = DashboardProcess {
            child: Some(child),
            port,
            http_port,
            log_path,
            dir,
        };
        wait_until_or(
            "the dashboard to answer /healthz",
            Duration::from_secs(30),
            || dashboard.try_get("/healthz").is_ok_and(|r| r.status == 200),
            || format!("log:\n{}", dashboard.log()),
        );
        dashboard
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The dashboard process's pid (for its memory figures).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// A directory of this test's own (for token files).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A second handle on the dashboard's store, as another worker would open it.
    pub fn store(&self) -> Store {
        Store::open(&self.state_dir()).expect("open the dashboard's store")
    }

    pub fn try_get(&self, path: &str) -> std::io::Result<HttpResponse> {
        http_request(&self.addr(), "GET", path, &[], Duration::from_secs(30))
    }

    /// `GET path`, which must get an answer.
    pub fn get(&self, path: &str) -> HttpResponse {
        self.request("GET", path, &[])
    }

    /// `METHOD path` with `headers`, which must get an answer (actions may wait for their executor:
    /// the timeout is generous).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http_request(&self.addr(), method, path, headers, Duration::from_secs(90)).unwrap_or_else(
            |e| {
                panic!(
                    "{method} {path} on the dashboard: {e}\nlog:\n{}",
                    self.log()
                )
            },
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        crate::butler::stop_process(self.child.take(), "dashboard log", || self.log());
    }
}

/// The body parsed as JSON; panics naming the status and body when it is not JSON.
pub fn json_body(response: &HttpResponse) -> serde_json::Value {
    serde_json::from_str(&response.body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} {}\n{:?}",
            response.status, response.body, response.headers
        )
    })
}

/// A small, realistic host, written through the store's API as the workers write it:
/// `shop` healthy (two instances), `blog` down with a 502, `api` degraded, `queue` not checked yet;
/// an open, an escalated and a resolved incident; three recoveries; an applied and a refused
/// config version.
pub async fn seed_demo(store: Store) {
    let route = |app: &str, ip: &str, port: u16, reason: &str| RouteRow {
        app: app.into(),
        hosts: vec![format!("{app}.localhost")],
        servers: vec![format!("{ip}:{port}")],
        port,
        reason: reason.into(),
        down: None,
    };
    let mut shop = route("shop", "172.30.0.5", 3000, "only exposed port");
    shop.servers.push("172.30.0.6:3000".into());
    store
        .replace_routes(vec![
            shop,
            route("blog", "172.30.0.7", 8080, "label butler.port"),
            route("api", "172.30.0.8", 5000, "listening socket"),
            route("queue", "172.30.0.9", 80, "common web port"),
        ])
        .await
        .unwrap();
    let started = humantime::format_rfc3339_millis(
        std::time::SystemTime::now() - Duration::from_secs(2 * 3600 + 5 * 60),
    )
    .to_string();
    let health = |app: &str, status, reason: &str, latency: Option<f64>| AppHealth {
        app: app.into(),
        status,
        reason: reason.into(),
        latency_ms: latency,
        started_at: Some(started.clone()),
        checked_at: String::new(),
    };
    store
        .replace_app_health(vec![
            health(
                "shop",
                AppStatus::Healthy,
                "answers 200 through the proxy",
                Some(4.2),
            ),
            health(
                "blog",
                AppStatus::Down,
                "HTTP 502 through the proxy: connection refused",
                None,
            ),
            health(
                "api",
                AppStatus::Degraded,
                "slow: 1800 ms through the proxy",
                Some(1800.0),
            ),
        ])
        .await
        .unwrap();
    let check = |subject: &str, name: &str, ok: bool, latency: f64, detail: &str| CheckResult {
        subject: subject.into(),
        name: name.into(),
        ok,
        latency_ms: Some(latency),
        detail: detail.into(),
        checked_at: String::new(),
    };
    store
        .record_checks(vec![
            check("app:shop", "http_proxy", true, 4.2, "200"),
            check("app:blog", "http_proxy", false, 1.1, "502 Bad Gateway"),
            check("app:blog", "tcp", false, 0.4, "connection refused"),
            check("proxy", "container", true, 2.0, "butler-nginx running"),
        ])
        .await
        .unwrap();
    let finding = |kind: &str, severity, component: &str, summary: &str| Finding {
        kind: kind.into(),
        severity,
        component: component.into(),
        summary: summary.into(),
    };
    let (down, _) = store
        .observe_incident(finding(
            "app_down",
            Severity::High,
            "app:blog",
            "blog answers 502 through the proxy",
        ))
        .await
        .unwrap();
    let (stuck, _) = store
        .observe_incident(finding(
            "crash_loop",
            Severity::Critical,
            "app:api",
            "api restarted 6 times in 5 minutes",
        ))
        .await
        .unwrap();
    let (old, _) = store
        .observe_incident(finding(
            "disk_low",
            Severity::Medium,
            "host",
            "8% free on /",
        ))
        .await
        .unwrap();
    store.start_recovery_attempt(stuck.id).await.unwrap();
    store
        .set_incident_state(stuck.id, IncidentState::Escalated)
        .await
        .unwrap();
    store
        .set_incident_state(old.id, IncidentState::Resolved)
        .await
        .unwrap();
    for (incident, kind, action, outcome, detail) in [
        (
            &old,
            "disk_low",
            "prune old config versions",
            RecoveryOutcome::Success,
            "freed 120 MB",
        ),
        (
            &stuck,
            "crash_loop",
            "restart container",
            RecoveryOutcome::Failed,
            "exited again after 3 s",
        ),
        (
            &down,
            "app_down",
            "reconnect to devops-butler-net",
            RecoveryOutcome::Skipped,
            "already connected",
        ),
    ] {
        store
            .record_recovery(NewRecovery {
                incident_id: incident.id,
                kind: kind.into(),
                action: action.into(),
                started_at: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                    .to_string(),
                outcome,
                detail: detail.into(),
            })
            .await
            .unwrap();
    }
    let version = |applied: bool, error: Option<&str>, reload: Option<f64>| NewVersion {
        hash: if applied { "a1b2c3" } else { "d4e5f6" }.into(),
        cause: "3 engine events".into(),
        summary: "+shop, +blog, +api, +queue".into(),
        files: Default::default(),
        applied,
        error: error.map(str::to_owned),
        timings: VersionTimings {
            render_ms: Some(3.0),
            validate_ms: Some(70.0),
            reload_ms: reload,
        },
    };
    store
        .record_version(version(true, None, Some(150.0)))
        .await
        .unwrap();
    store
        .record_version(version(
            false,
            Some("nginx: [emerg] unknown directive \"proxy_passs\""),
            None,
        ))
        .await
        .unwrap();
}
