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
}
