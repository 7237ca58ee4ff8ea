//! The planner's input settings and its output: the routes nginx should serve and the problems that
//! kept containers out of them. Plain data with no behaviour; every string in a `Route` has passed
//! validation in `plan`, which is what lets `render` put it into a config file.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::labels::DeployLabels;
use crate::proxy::ports::PortReason;

/// What the planner needs to know besides the containers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSettings {
    /// Apps are served at `<app>.<domain>`.
    pub domain: String,
    /// The bridge network nginx shares with the apps; upstreams use container IPs on it.
    pub network: String,
    /// Names of the butler's own containers (nginx, the butler itself), never routed.
    #[serde(default)]
    pub own_container_names: Vec<String>,
    /// Ids (full, or a prefix of at least 12 characters) of the butler's own containers.
    #[serde(default)]
    pub own_container_ids: Vec<String>,
    /// Deployments (`butler.deploy.id` values) whose containers stay out of every upstream: new
    /// instances not yet proven healthy, and old ones leaving. The reconciler reads them from the
    /// store; see `butler deploy`.
    #[serde(default)]
    pub held_deployments: BTreeSet<String>,
    /// `KEY=VALUE` or `KEY` (`docker.only_label`): only containers with this label are apps.
    #[serde(default)]
    pub only_label: Option<String>,
    /// Apps the last applied config routed (up or down). An app of these whose containers have
    /// all exited keeps a route that answers "down" instead of vanishing; exited containers of
    /// apps never routed (finished one-off jobs) are not apps.
    #[serde(default)]
    pub routed_apps: BTreeSet<String>,
    /// Other networks nginx is attached to (Docker's default `bridge`): a container off
    /// `network` but on one of these is served at its address there until the edge has
    /// connected it, so that its route does not wait for the connect.
    #[serde(default)]
    pub also_reachable: Vec<String>,
}

impl Default for PlanSettings {
    fn default() -> Self {
        Self {
            domain: "localhost".into(),
            network: "devops-butler-net".into(),
            own_container_names: Vec::new(),
            own_container_ids: Vec::new(),
            held_deployments: BTreeSet::new(),
            only_label: None,
            routed_apps: BTreeSet::new(),
            also_reachable: Vec::new(),
        }
    }
}

/// The desired state of the proxy. The same containers, in any order, give an identical `Plan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Sorted by app name.
    pub routes: Vec<Route>,
    /// Sorted by app, container name, container id, kind.
    pub problems: Vec<Problem>,
}

/// One app: every container sharing the app name, behind one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// A valid DNS label (see `sanitize::is_app_name`).
    pub app: String,
    /// Validated, lowercase host names. The first is `<app>.<domain>` when that is valid; the rest
    /// are sorted. Never empty.
    pub hosts: Vec<String>,
    /// Sorted by container name, then id. Empty only when `down` is set: a running app without a
    /// usable server has no route.
    pub servers: Vec<UpstreamServer>,
    /// Set when every container of an app that was routed has exited: its hosts answer a 503
    /// page that says so, until the containers are removed or start again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down: Option<Down>,
}

pub use crate::store::Down;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamServer {
    pub container_id: String,
    /// Shown to users only; never rendered into a config file.
    pub container_name: String,
    /// The container's address on `PlanSettings::network`.
    pub ip: IpAddr,
    pub port: u16,
    pub port_reason: PortReason,
    /// Set on containers `butler deploy` started: app, revision, owner, repo, source (from labels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeployLabels>,
}

/// Why a container is not (fully) served. One container's problem never affects another app.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    pub container_id: String,
    pub container_name: String,
    /// The app the container belongs to, when its name could be worked out.
    pub app: Option<String>,
    pub kind: ProblemKind,
    /// One line for people: what is wrong and what to do. Untrusted values are quoted and
    /// escaped; this text is never rendered into a config file.
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// `butler.name` (or the container name) gives no usable app name. The container is not served.
    InvalidName,
    /// A `butler.host` or `VIRTUAL_HOST` entry is not a valid host name. The container is not served.
    InvalidHost,
    /// `butler.port` or `VIRTUAL_PORT` is not a port. The container is not served.
    InvalidPort,
    /// Another butler label has a value the butler does not understand. The container is not served.
    InvalidLabel,
    /// No port could be chosen. The container is not an upstream server.
    NoPort,
    /// The container has no IP on the proxy network; the edge should connect it. Not a server until
    /// then, unless it is on a network nginx also reaches (`PlanSettings::also_reachable`): then
    /// served at that address meanwhile.
    NotOnNetwork,
    /// Another app won this host; this app is served without it.
    HostConflict,
    /// Docker reports the container `starting` or `unhealthy` while another instance of its app
    /// can serve: it is not a server until its health check passes.
    Unhealthy,
    /// The container's app has no usable server (or no host), so it has no route at all.
    NotRouted,
}
