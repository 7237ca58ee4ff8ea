//! What discovery knows of one container: plain data, read once from the engine, handed to the pure
//! planner. Nothing in here is trusted: names, labels and env values come from whoever started the
//! container and are validated by the planner before they can reach a config file.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerSnapshot {
    /// Full container id.
    pub id: String,
    /// Container name without Docker's leading '/'.
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE` entries of the container's environment, split at the first '='.
    pub env: BTreeMap<String, String>,
    /// TCP ports from the image's EXPOSE and the container's config, ascending, no duplicates.
    pub exposed_ports: Vec<u16>,
    /// TCP ports the container listens on, ascending; `None` when they could not be read
    /// (the butler does not see the container's PIDs and no probe was made).
    pub listening_ports: Option<Vec<u16>>,
    /// The last lines the container printed (stdout and stderr), for port hints.
    pub log_tail: String,
    /// Network name → the container's IP address on it.
    pub networks: BTreeMap<String, IpAddr>,
    pub running: bool,
    /// Docker health status when the image has a HEALTHCHECK: "starting", "healthy", "unhealthy".
    pub health: Option<String>,
    pub restart_count: u64,
    /// Container start time, RFC 3339, as the engine reports it.
    pub started_at: Option<String>,
    /// Set when the container has exited (or is dead): how it ended.
    #[serde(default)]
    pub exited: Option<Exited>,
}

/// How a container that is no longer running ended, as the engine reports it, plus whether a
/// user stopped it (only the engine's `stop` event says so: a `docker stop` of an app that
/// ignores SIGTERM ends in a SIGKILL and exit code 137, exactly like a crash).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Exited {
    pub exit_code: i64,
    pub oom_killed: bool,
    /// RFC 3339, as the engine reports it; `None` when it gives none.
    pub finished_at: Option<String>,
    /// A `stop` event named the container after its last start.
    #[serde(default)]
    pub stopped_by_user: bool,
}

impl Exited {
    /// Whether it ended on its own or was killed (what the health check calls `container_down`),
    /// rather than stopped by someone or done with a clean exit.
    pub fn crashed(&self) -> bool {
        !self.stopped_by_user && (self.exit_code != 0 || self.oom_killed)
    }
}
