//! What one round of checks saw, as plain data: the input of `classify` and what `butler health
//! --output json` prints. Nothing here does I/O.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// One probe: a TCP connect or an HTTP request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeResult {
    /// `ip:port`, or `Host` header and address for a request through the proxy.
    pub target: String,
    pub ok: bool,
    /// HTTP status, when there was an answer.
    pub status: Option<u16>,
    pub latency_ms: Option<f64>,
    /// What went wrong, when nothing usable came back.
    pub error: Option<String>,
}

impl ProbeResult {
    /// The proxy's gateway errors: nginx answered, the app behind it did not.
    pub fn is_gateway_error(&self) -> bool {
        matches!(self.status, Some(502..=504))
    }

    /// One word or number for tables: the status, else "ok"/"error".
    pub fn short(&self) -> String {
        match (self.status, &self.error) {
            (Some(status), _) => status.to_string(),
            (None, Some(_)) => "no answer".to_owned(),
            (None, None) if self.ok => "ok".to_owned(),
            (None, None) => "failed".to_owned(),
        }
    }
}

/// One container of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerObs {
    pub id: String,
    pub name: String,
    /// Docker's state: running, exited, restarting, paused, created, dead.
    pub state: String,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub restart_count: u64,
    /// Restarts since the previous round (0 on the first).
    pub new_restarts: u64,
    pub started_at: Option<String>,
    /// How long it had been running when observed (`None`: not running, or no start time).
    #[serde(default)]
    pub up_secs: Option<f64>,
    /// Its address on the proxy network.
    pub ip: Option<IpAddr>,
    /// Ports it listens on; read only when a probe failed (`None`: not read or not readable).
    pub listening: Option<Vec<u16>>,
    /// Label `butler.autorestart=true`.
    pub autorestart: bool,
    /// The port a label or `VIRTUAL_PORT` forces, as written.
    pub forced_port: Option<String>,
    /// When it stopped running, RFC 3339 (`None` while it runs).
    #[serde(default)]
    pub finished_at: Option<String>,
    /// How long ago it stopped running (`None` while it runs, or no valid time).
    #[serde(default)]
    pub down_secs: Option<f64>,
    /// A user stopped it (the engine's `stop` event named it after its last start).
    #[serde(default)]
    pub stopped_by_user: bool,
    /// A gentle `kill` named it and no `stop` yet: a `docker stop` may be under way.
    #[serde(default)]
    pub stop_requested: bool,
}

impl ContainerObs {
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    /// It stopped running on its own or was killed (non-zero exit, out of memory, SIGKILL),
    /// rather than being stopped by a user or finishing with exit code 0.
    pub fn crashed(&self) -> bool {
        !self.running()
            && self.state != "restarting"
            && !self.stopped_by_user
            && (self.exit_code.is_some_and(|c| c != 0) || self.oom_killed)
    }
}

/// The route the applied config has for an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteObs {
    pub hosts: Vec<String>,
    pub servers: Vec<SocketAddr>,
    pub port: u16,
    /// Why that port was chosen.
    pub reason: String,
}

/// Everything checked for one app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppObs {
    pub app: String,
    pub containers: Vec<ContainerObs>,
    pub route: Option<RouteObs>,
    /// TCP connect to each route server, in the route's order.
    pub tcp: Vec<ProbeResult>,
    /// `GET /` straight to each route server that accepted a connection.
    pub http_direct: Vec<ProbeResult>,
    /// `GET /` through the proxy with the app's first host.
    pub http_proxy: Option<ProbeResult>,
    /// Whether each running container's name resolves inside the proxy network (`None`: not checked).
    pub dns: Option<bool>,
    /// Set when the checks did not finish: nothing can be concluded about the app this round.
    pub incomplete: Option<String>,
}

/// The nginx container and its config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyObs {
    /// running, missing, stopped, crash_looping, outdated, foreign or unknown.
    pub state: String,
    pub detail: String,
    /// An HTTP request to nginx with an unknown host.
    pub answers: Option<ProbeResult>,
    /// The version the `live` link points to.
    pub live_hash: Option<String>,
    /// The version the butler last applied (or pinned).
    pub applied_hash: Option<String>,
    /// Files that differ between the live tree and the applied version (`None`: not compared).
    pub drift: Option<Vec<String>>,
    /// `nginx -t` on the live config: `None` not run, `Some(None)` passed, `Some(Some(error))`.
    pub config_error: Option<Option<String>>,
}

impl ProxyObs {
    pub fn serving(&self) -> bool {
        self.state == "running" || self.state == "outdated"
    }

    /// Whether the config checks (drift and `nginx -t`) ran to the end this round.
    pub fn config_checked(&self) -> bool {
        self.drift.is_some() && self.config_error.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskObs {
    /// What the path is: "state" or "docker".
    pub role: String,
    pub path: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
    /// Hours until full at the recent rate; `None` when it is not filling (or too few samples).
    pub hours_left: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostObs {
    pub disks: Vec<DiskObs>,
    pub mem_total_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub load1: Option<f64>,
    pub cpus: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitObs {
    pub unit: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub result: Option<String>,
    pub restarts: Option<u32>,
}

/// One round of observations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    pub apps: Vec<AppObs>,
    /// Whether Docker listed the containers: without it, no app was really looked at.
    pub apps_listed: bool,
    pub proxy: ProxyObs,
    pub host: HostObs,
    /// `None` when systemd is not reachable (a host without it, `butler run`).
    pub units: Option<Vec<UnitObs>>,
}
