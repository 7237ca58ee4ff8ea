//! The `butler-nginx` container: created (never with a host bind mount) from any image that has
//! `nginx` on its PATH, fed config trees through the Docker archive API, validated with the serving
//! binary via exec, reloaded with SIGHUP, and recreated from the last good tree when it is missing,
//! stopped or crash-looping. Layout inside the container:
//! `/etc/butler-nginx/versions/<hash>/…` and the symlink `/etc/butler-nginx/live -> versions/<hash>`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

mod data;
mod lifecycle;
mod process;
mod versions;

use crate::config::ProxyConfig;
pub use crate::docker::ExecOutput;
use crate::docker::{ContainerInfo, EngineError, EngineHandle};
use crate::labels::LABEL_ROLE;
pub use data::DataPush;
use versions::SHELL_UNKNOWN;

pub const CONFIG_ROOT: &str = "/etc/butler-nginx";
pub const VERSIONS_DIR: &str = "/etc/butler-nginx/versions";
pub const LIVE_LINK: &str = "/etc/butler-nginx/live";
/// The file nginx is started with; rendered trees must have `nginx.conf` at their root.
pub const LIVE_CONF: &str = "/etc/butler-nginx/live/nginx.conf";
/// The port nginx listens on inside the container; the rendered config must `listen 80`.
pub const CONTAINER_HTTP_PORT: u16 = 80;
/// The data path's control port inside the container: never published (see `data`).
pub const CONTROL_PORT: u16 = 8081;
pub const CONTROL_PATH: &str = "/butler/routes";
/// Outside `versions/`: the token never shows in a config version or its diff.
pub const CONTROL_TOKEN_FILE: &str = "/etc/butler-nginx/control.token";
/// Changes when what a created container holds changes (the control token since the data path),
/// so that a container made by an older butler is recreated once.
const CONTAINER_LAYOUT: &str = "data-path-1,bridge";
/// Docker's default network, where `docker run` without `--network` puts a container. nginx is
/// attached to it too, so that such an app is reachable the moment it starts, before the butler
/// has connected it to the proxy network.
pub const DEFAULT_BRIDGE: &str = "bridge";
/// Label holding a digest of what the container was created from, to notice a changed config.
const START_TIMEOUT: Duration = Duration::from_secs(5);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);
const EXEC_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for an image pull inside one reconcile (the dynamic proxy's WatchdogSec is 30 s).
const PULL_TIMEOUT: Duration = Duration::from_secs(20);

/// A config tree: path relative to the version directory → file content. `nginx.conf` is the root.
pub type ConfigTree = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("Docker call `{op}` on nginx container {container} failed: {source}")]
    Docker {
        container: String,
        op: &'static str,
        source: EngineError,
    },
    #[error(
        "a container named {container} exists but is not the butler's (no label {LABEL_ROLE}=nginx): rename or remove it, or set [proxy] container_name"
    )]
    Foreign { container: String },
    #[error(
        "config tree path `{path}` is not a plain relative path (no absolute paths, `..`, or empty parts)"
    )]
    BadPath { path: String },
    #[error(
        "nginx image {image} is not on this host and could not be pulled ({reason}); pull or load it \
         (`docker pull {image}`), or build one from Debian packages with scripts/images/build.sh nginx \
         and set [proxy] image = \"devops-butler/nginx:bookworm\""
    )]
    ImageUnavailable { image: String, reason: String },
    #[error("config tree has no nginx.conf at its root")]
    NoMainConf,
    #[error("cannot build the config archive: {0}")]
    Archive(#[from] std::io::Error),
    #[error(
        "nginx container {container} did not stay up after start: {state}; last log lines:\n{logs}\n(check the image {image} has nginx on its PATH and host port {port} is free)"
    )]
    StartFailed {
        container: String,
        image: String,
        port: u16,
        state: String,
        logs: String,
    },
    #[error("`{argv}` in nginx container {container} timed out after {timeout:?}")]
    ExecTimeout {
        container: String,
        argv: String,
        timeout: Duration,
    },
    #[error(
        "nginx in {container} did not start new workers within {timeout:?} of SIGHUP: the new config was not taken up (see `docker logs {container}`)"
    )]
    ReloadNotApplied {
        container: String,
        timeout: Duration,
    },
}

/// What the nginx container needs from the config, in one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxSpec {
    pub container_name: String,
    pub image: String,
    pub network: String,
    /// Host port published to the container's port 80.
    pub http_port: u16,
}

impl NginxSpec {
    pub fn from_config(proxy: &ProxyConfig) -> Self {
        Self {
            container_name: proxy.container_name.clone(),
            image: proxy.image.clone(),
            network: proxy.network.clone(),
            http_port: proxy.http_port,
        }
    }

    pub(crate) fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = format!(
            "{}\n{}\n{}\n{CONTAINER_LAYOUT}",
            self.image, self.network, self.http_port
        );
        hex::encode(&Sha256::digest(text.as_bytes())[..8])
    }
}

/// Where nginx answers (see [`Nginx::addr`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NginxAddr {
    pub container_id: Option<String>,
    pub addr: SocketAddr,
}

/// What `state` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NginxState {
    Missing,
    Running {
        id: String,
        started_at: String,
        /// Every network it is attached to (the proxy network, and `DEFAULT_BRIDGE` when that
        /// connect worked).
        networks: BTreeSet<String>,
    },
    /// Created, exited or dead: not serving.
    Stopped {
        id: String,
        status: String,
    },
    /// Restarting, or exited soon after several restarts.
    CrashLooping {
        id: String,
        restart_count: u64,
    },
    /// Running, but created from another image, network or port than the config now says.
    Outdated {
        id: String,
    },
}

/// What `ensure` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    AlreadyRunning,
    /// Created from nothing, or recreated; `was` is the state that made it necessary.
    Created {
        was: NginxState,
    },
}

/// What [`Nginx::activate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activation {
    /// Validated, `live` swapped and SIGHUP sent.
    Activated,
    /// `nginx -t` refused the version (nginx's words); `live` was not touched.
    Invalid(String),
    /// The image cannot run the one-exec path (no POSIX shell, no `mv -T`, or nginx is not PID 1);
    /// nothing was changed, and the caller takes the step-by-step path.
    Unsupported,
}

/// Handle on the nginx container. Cheap to clone; clones share what was learned about the image.
#[derive(Debug, Clone)]
pub struct Nginx {
    docker: EngineHandle,
    spec: NginxSpec,
    shell: Arc<AtomicU8>,
    /// Whether the image has `tar` for [`STAGE_AND_ACTIVATE_SCRIPT`] (same values).
    tar: Arc<AtomicU8>,
    /// (container id, whether its image has the Lua module), see [`Nginx::has_data_path`].
    data_path: Arc<std::sync::Mutex<Option<(String, bool)>>>,
}

impl Nginx {
    pub fn new(docker: EngineHandle, spec: NginxSpec) -> Self {
        Self {
            docker,
            spec,
            shell: Arc::new(AtomicU8::new(SHELL_UNKNOWN)),
            tar: Arc::new(AtomicU8::new(SHELL_UNKNOWN)),
            data_path: Arc::default(),
        }
    }

    pub fn spec(&self) -> &NginxSpec {
        &self.spec
    }

    fn name(&self) -> &str {
        &self.spec.container_name
    }

    fn docker_err(&self, op: &'static str) -> impl FnOnce(EngineError) -> NginxError + '_ {
        move |source| NginxError::Docker {
            container: self.spec.container_name.clone(),
            op,
            source,
        }
    }

    async fn inspect(&self) -> Result<Option<ContainerInfo>, NginxError> {
        self.docker
            .inspect_container(self.name())
            .await
            .map_err(self.docker_err("inspect"))
    }

    /// Where nginx is reached: its address on the proxy network (from the host and from a butler
    /// in a container on that network alike; 127.0.0.1 is only the host's), with the id of the
    /// container it belongs to, which keeps it while that container runs. Without one (nginx
    /// missing, or off the network), its published port on 127.0.0.1, with no id.
    pub async fn addr(&self) -> Result<NginxAddr, NginxError> {
        let ip = self
            .inspect()
            .await?
            .and_then(|info| Some((info.id.clone(), *info.networks.get(&self.spec.network)?)));
        Ok(match ip {
            Some((id, ip)) => NginxAddr {
                container_id: Some(id),
                addr: SocketAddr::new(ip, CONTAINER_HTTP_PORT),
            },
            None => NginxAddr {
                container_id: None,
                addr: self.published_addr(),
            },
        })
    }

    /// The port nginx publishes, on 127.0.0.1.
    pub fn published_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.spec.http_port))
    }

    /// The container's last `lines` log lines, or a note why they cannot be read.
    pub async fn log_tail(&self, lines: usize) -> String {
        self.docker
            .logs(self.name(), lines)
            .await
            .unwrap_or_else(|e| format!("(logs unavailable: {e})"))
    }

    /// The container's start time as the engine reports it (changes only on a restart).
    pub async fn started_at(&self) -> Result<Option<String>, NginxError> {
        Ok(self.inspect().await?.and_then(|i| i.state.started_at))
    }
}
