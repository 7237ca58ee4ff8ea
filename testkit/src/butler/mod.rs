//! The butler under test on the host: `butler run` as a child process with its own nginx
//! container, ports and state directory; requests through its proxy, its CLI against its config,
//! and its log. `proxy` and `incidents` add what the proxy and health tests read from it.

mod incidents;
mod proxy;

pub use proxy::{ConfigHistory, ConfigVersionRow};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{
    CmdOutput, HttpResponse, docker, ensure_butler_network, free_port, http_get, private_engine,
    unique_name, wait_until, wait_until_or,
};

/// `butler run` as a child process with everything that could collide made unique: its own nginx
/// container name, a free proxy port, a free dashboard port and a temp state dir. It shares
/// `devops-butler-net` and the engine with every other test. Drop stops it and removes its nginx
/// container; while a test panics it first prints the butler's log.
pub struct ButlerProcess {
    child: Option<std::process::Child>,
    /// The network namespace it runs in (with a private engine); `None` for the host's.
    netns: Option<String>,
    pub nginx: String,
    pub http_port: u16,
    pub dashboard_port: u16,
    pub config_path: PathBuf,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ButlerProcess {
    /// Starts the butler with the nginx test image; `extra_toml` is appended to the generated
    /// config (e.g. `[proxy]\ntemplates_dir = "..."` must not repeat a section: pass whole sections
    /// other than [proxy], or use `start_with` to override proxy keys).
    pub fn start(binary: &Path) -> ButlerProcess {
        Self::start_with(binary, "", "")
    }

    /// `proxy_extra` lines go into the [proxy] section; `extra_toml` is appended after it.
    pub fn start_with(binary: &Path, proxy_extra: &str, extra_toml: &str) -> ButlerProcess {
        Self::start_full(binary, proxy_extra, "", extra_toml)
    }

    /// Like `start_with`, and `dashboard_extra` lines go into the [dashboard] section
    /// (`token_file = ...`, `action_timeout = ...`).
    pub fn start_full(
        binary: &Path,
        proxy_extra: &str,
        dashboard_extra: &str,
        extra_toml: &str,
    ) -> ButlerProcess {
        ensure_butler_network();
        let butler = Self::launch(binary, &[], proxy_extra, dashboard_extra, extra_toml, None);
        butler.wait_until_ready();
        butler
    }

    /// `butler run --only WORKERS` (e.g. `&["health-monitor", "recovery"]`), without waiting for
    /// the proxy: without the dynamic-proxy worker nothing routes until the test runs
    /// `butler proxy-update` (see `proxy_update`). `extra_toml` is appended to the config.
    /// `proxy_extra` lines go into the [proxy] section (e.g. `network = "..."`).
    pub fn start_workers(
        binary: &Path,
        workers: &[&str],
        proxy_extra: &str,
        extra_toml: &str,
    ) -> ButlerProcess {
        let only = workers.join(",");
        ensure_butler_network();
        Self::launch(
            binary,
            &["--only", &only],
            proxy_extra,
            "",
            extra_toml,
            None,
        )
    }

    /// `butler proxy-update` against this butler's config, which must succeed: routes every app
    /// now and creates the nginx container when it is missing.
    pub fn proxy_update(&self, binary: &Path) {
        let out = self.cli(binary, &["proxy-update"]);
        assert!(out.success(), "butler proxy-update failed: {out:?}");
    }

    /// Starts the butler inside network namespace `netns` (see `private_engine`); requests from
    /// this handle go through that namespace too.
    pub fn start_in_netns(binary: &Path, netns: &str, extra_toml: &str) -> ButlerProcess {
        let butler = Self::launch(binary, &[], "", "", extra_toml, Some(netns));
        butler.wait_until_ready();
        butler
    }

    fn launch(
        binary: &Path,
        run_args: &[&str],
        proxy_extra: &str,
        dashboard_extra: &str,
        extra_toml: &str,
        netns: Option<&str>,
    ) -> ButlerProcess {
        let dir = tempfile::tempdir().expect("temp dir for the butler");
        let nginx = unique_name("butler-nginx");
        let http_port = free_port();
        let dashboard_port = free_port();
        let image = crate::proxy_image();
        let config = format!(
            "[proxy]\nhttp_port = {http_port}\nimage = \"{image}\"\ncontainer_name = \"{nginx}\"\n\
             templates_dir = \"{templates}\"\n{proxy_extra}\n\
             [dashboard]\nlisten = \"127.0.0.1:{dashboard_port}\"\n{dashboard_extra}\n\
             [state]\ndir = \"{state}\"\n\
             [health]\ninterval = \"2s\"\ntimeout = \"1s\"\n{extra_toml}\n",
            templates = dir.path().join("templates").display(),
            state = dir.path().join("state").display(),
        );
        let config_path = dir.path().join("butler.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("butler.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut command = match netns {
            Some(netns) => {
                let mut command = Command::new("nsenter");
                command.arg(private_engine::netns_arg(netns)).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .arg("run")
            .args(run_args)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start butler run");
        ButlerProcess {
            child: Some(child),
            netns: netns.map(str::to_owned),
            nginx,
            http_port,
            dashboard_port,
            config_path,
            log_path,
            _dir: dir,
        }
    }

    fn wait_until_ready(&self) {
        wait_until(
            "the butler's proxy to answer",
            Duration::from_secs(60),
            || {
                self.get("butler-readiness.invalid", "/")
                    .is_ok_and(|r| r.status == 404 || r.status == 200)
            },
        );
    }

    /// `127.0.0.1:<dashboard_port>`, the dashboard as a user on this host reaches it.
    pub fn dashboard_addr(&self) -> String {
        format!("127.0.0.1:{}", self.dashboard_port)
    }

    /// The butler's state directory (its store), for tests that read or seed it.
    pub fn state_dir(&self) -> PathBuf {
        self._dir.path().join("state")
    }

    /// `127.0.0.1:<http_port>`, the proxy as a user on this host reaches it.
    pub fn proxy_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// A request through the proxy with this Host header.
    pub fn get(&self, host: &str, path: &str) -> std::io::Result<HttpResponse> {
        match &self.netns {
            Some(netns) => {
                private_engine::in_netns(netns, || http_get(&self.proxy_addr(), host, path))
            }
            None => http_get(&self.proxy_addr(), host, path),
        }
    }

    /// Waits until `host` answers through the proxy with a status for which `ok` holds; returns
    /// that response.
    pub fn wait_for(
        &self,
        host: &str,
        timeout: Duration,
        ok: impl Fn(&HttpResponse) -> bool,
    ) -> HttpResponse {
        let last = std::cell::RefCell::new(None);
        let found = std::cell::RefCell::new(None);
        wait_until_or(
            &format!("{host} through the proxy"),
            timeout,
            || match self.get(host, "/") {
                Ok(response) if ok(&response) => {
                    *found.borrow_mut() = Some(response);
                    true
                }
                Ok(response) => {
                    *last.borrow_mut() = Some(format!(
                        "{} {}",
                        response.status,
                        response.body.chars().take(120).collect::<String>()
                    ));
                    false
                }
                Err(error) => {
                    *last.borrow_mut() = Some(error.to_string());
                    false
                }
            },
            || {
                format!("last answer: {:?}", last.borrow())
                    + &format!("\nbutler log:\n{}", self.log())
            },
        );
        found.into_inner().unwrap()
    }

    /// Waits until `host` is served by a test app through the proxy (not by the default server's
    /// directory page, which answers 200 too).
    pub fn wait_for_app(&self, host: &str) -> HttpResponse {
        self.wait_for(host, Duration::from_secs(20), |r| {
            r.status == 200 && r.body.starts_with("app=")
        })
    }

    /// Runs `butler ARGS --config <this butler's config>` and returns what it said.
    pub fn cli(&self, binary: &Path, args: &[&str]) -> CmdOutput {
        Command::new(binary)
            .args(args)
            .arg("--config")
            .arg(&self.config_path)
            .output()
            .expect("run butler")
            .into()
    }

    /// Whether `butler run` is still running (it has not exited on its own).
    pub fn is_running(&self) -> bool {
        let pid = self.child.as_ref().map(|c| c.id());
        pid.is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
        })
    }

    /// The pid of `butler run` (0 once stopped): every worker runs in it.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// Everything the butler logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// How many configs the butler applied so far (one reload each), from its log.
    pub fn applied_count(&self) -> usize {
        self.log().matches("; applied version ").count()
    }
}

/// Stops a process the testkit started (SIGTERM, then waits); while a test panics, prints
/// `log` (what the process said) under `name`.
pub(crate) fn stop_process(
    child: Option<std::process::Child>,
    name: &str,
    log: impl FnOnce() -> String,
) {
    if let Some(mut child) = child {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    if std::thread::panicking() {
        eprintln!("---- {name} ----\n{}---- end of {name} ----", log());
    }
}

impl Drop for ButlerProcess {
    fn drop(&mut self) {
        stop_process(self.child.take(), "butler log", || self.log());
        let _ = docker(&["rm", "-f", "-v", &self.nginx]);
    }
}
