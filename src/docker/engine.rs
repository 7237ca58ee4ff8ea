//! The one boundary between the butler and the container engine: every call the butler makes of
//! Docker is a method of [`Engine`], spoken in the butler's own plain data (parsed once, in
//! `inspect`), with one error type. `BollardEngine` is the real one; the unit tests use
//! `fake::FakeEngine`, so the reconcile loop, the health round and the deploy switch are tested
//! without a daemon.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::stream::BoxStream;

use super::events::EngineEvent;

/// The engine as every module holds it: cheap to clone, shared by all tasks.
pub type EngineHandle = Arc<dyn Engine>;

/// What went wrong talking to the engine. The text is the engine's own where it gave one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The engine answered with an error status (404 no such object, 409 conflict, ...).
    #[error("Docker responded with status code {status}: {message}")]
    Refused { status: u16, message: String },
    /// The request did not get an answer: socket gone, connection reset, bad response.
    #[error("{0}")]
    Transport(String),
}

impl EngineError {
    pub fn not_found(what: &str) -> Self {
        EngineError::Refused {
            status: 404,
            message: format!("No such object: {what}"),
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::Refused { status: 404, .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, EngineError::Refused { status: 409, .. })
    }
}

/// One entry of a container list: what the engine tells without an inspect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListedContainer {
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// "created", "running", "restarting", "paused", "exited", "dead", ...
    pub state: String,
}

impl ListedContainer {
    /// Running, or about to be again; what discovery inspects without being asked.
    pub fn is_live(&self) -> bool {
        matches!(self.state.as_str(), "running" | "restarting" | "paused")
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.state.as_str(), "exited" | "dead")
    }
}

/// Everything the butler reads from a container inspect, parsed once (`inspect::container`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    pub id: String,
    /// Without Docker's leading '/'.
    pub name: String,
    /// The image as the container was created from it (a reference), else the image id.
    pub image: String,
    /// `sha256:…` of the image.
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    /// `KEY=VALUE` entries, split at the first '='.
    pub env: BTreeMap<String, String>,
    /// TCP ports of the container's own config (not its image's), ascending.
    pub exposed_ports: Vec<u16>,
    /// Network name → the container's address on it.
    pub networks: BTreeMap<String, IpAddr>,
    /// Every network the container is attached to, with an address or not yet (a container
    /// created and not started has none).
    pub attached: std::collections::BTreeSet<String>,
    pub state: ContainerState,
    /// Docker's HEALTHCHECK verdict, when the image has one.
    pub health: Option<ContainerHealth>,
    pub restart_count: u64,
}

impl ContainerInfo {
    /// Attached to `network`, whether or not it has an address there yet.
    pub fn is_attached(&self, network: &str) -> bool {
        self.networks.contains_key(network) || self.attached.contains(network)
    }

    /// Exited or dead: a container that ran and ended (not one created and never started).
    pub fn has_ended(&self) -> bool {
        !self.state.running && matches!(self.state.status.as_str(), "exited" | "dead")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerState {
    /// "created", "running", "paused", "restarting", "removing", "exited", "dead"; empty when
    /// the engine gave none.
    pub status: String,
    pub running: bool,
    pub restarting: bool,
    /// Host PID of the container's init, when running.
    pub pid: Option<i64>,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// The engine's error text for a container that could not start.
    pub error: String,
    /// RFC 3339; `None` when never started.
    pub started_at: Option<String>,
    /// RFC 3339; `None` when it never ended.
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerHealth {
    /// "starting", "healthy" or "unhealthy".
    pub status: String,
    /// What the last check printed, trimmed.
    pub last_output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageInfo {
    /// `sha256:…`
    pub id: String,
    /// TCP ports from EXPOSE, ascending.
    pub exposed_ports: Vec<u16>,
    /// The image has a HEALTHCHECK (other than `NONE`).
    pub healthcheck: bool,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkInfo {
    pub id: String,
    pub driver: String,
}

/// What a container is created from: the few settings the butler ever sets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Container TCP port → host port, published on every host address.
    pub publish: Vec<(u16, u16)>,
    pub stop_signal: Option<String>,
    pub restart: Restart,
    /// The network the container is created on (its only one).
    pub network: Option<String>,
}

/// Docker's restart policy, as far as the butler uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Restart {
    /// The butler restarts it itself (nginx) or nobody does.
    #[default]
    No,
    UnlessStopped,
}

/// What a command run in a container ended with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// stdout and stderr, interleaved as the process wrote them.
    pub output: String,
}

/// A process running in a container, as `docker top` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessRow {
    pub pid: String,
    /// The command line, as `ps` shows it ("nginx: worker process is shutting down").
    pub command: String,
}

/// One step of an image build, as the engine streams it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildProgress {
    /// A chunk of the build's output.
    Output(String),
    /// The build failed: the engine's reason.
    Failed(String),
    /// The id of the image built.
    Built(String),
}

/// Every engine call the butler makes. Methods are what they say; the notes are where the
/// butler relies on a particular answer.
#[async_trait::async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// One round trip; `Ok` means it answers.
    async fn ping(&self) -> Result<(), EngineError>;

    /// Every container, running or not, with all of `labels` (`KEY` or `KEY=VALUE`).
    async fn list_containers(&self, labels: &[String])
    -> Result<Vec<ListedContainer>, EngineError>;

    /// `None` when no container has that id or name.
    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError>;

    /// Creates (does not start) a container; its id.
    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError>;

    async fn start_container(&self, id: &str) -> Result<(), EngineError>;

    /// Stops it, killing it after `grace_secs`; one already stopped is success.
    async fn stop_container(&self, id: &str, grace_secs: i32) -> Result<(), EngineError>;

    async fn restart_container(&self, id: &str, grace_secs: i32) -> Result<(), EngineError>;

    /// Sends `signal` ("SIGHUP") to the container's init.
    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), EngineError>;

    /// Removes it by force with its anonymous volumes; one already gone is success.
    async fn remove_container(&self, id: &str) -> Result<(), EngineError>;

    /// Runs `argv` in the container, with `input` on its stdin (then end of file) when given.
    async fn exec(
        &self,
        id: &str,
        argv: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<ExecOutput, EngineError>;

    /// The processes running in the container.
    async fn top(&self, id: &str) -> Result<Vec<ProcessRow>, EngineError>;

    /// Extracts the tar `archive` at `dir` inside the container (which must exist there).
    async fn upload(&self, id: &str, dir: &str, archive: Vec<u8>) -> Result<(), EngineError>;

    /// `path` inside the container as a tar archive, rooted at its last component.
    async fn download(&self, id: &str, path: &str) -> Result<Vec<u8>, EngineError>;

    /// Where the symlink `path` inside the container points; `None` when it does not exist.
    async fn link_target(&self, id: &str, path: &str) -> Result<Option<String>, EngineError>;

    /// The last `lines` lines of stdout and stderr.
    async fn logs(&self, id: &str, lines: usize) -> Result<String, EngineError>;

    /// `None` when no image has that reference or id.
    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError>;

    /// Pulls `reference` from its registry, to the end.
    async fn pull_image(&self, reference: &str) -> Result<(), EngineError>;

    /// Builds the tar `context` (a Dockerfile at its root), tagging the result `tag`.
    fn build_image(
        &self,
        context: Vec<u8>,
        tag: &str,
    ) -> BoxStream<'static, Result<BuildProgress, EngineError>>;

    /// Adds the tag `repo:tag` to image `id`.
    async fn tag_image(&self, id: &str, repo: &str, tag: &str) -> Result<(), EngineError>;

    /// `None` when no network has that name.
    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, EngineError>;

    /// Creates a network; its id. A name already taken is `is_conflict`.
    async fn create_network(
        &self,
        name: &str,
        driver: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<String, EngineError>;

    /// Attaches `container` to `network`; already attached is success.
    async fn connect_network(&self, network: &str, container: &str) -> Result<(), EngineError>;

    /// The engine's data directory (`/var/lib/docker`) as it reports it.
    async fn root_dir(&self) -> Result<Option<String>, EngineError>;

    /// The container and network events the butler reacts to, from `since` (Unix seconds) on;
    /// the stream ends or fails when the engine goes away.
    fn events(&self, since: u64) -> BoxStream<'static, Result<EngineEvent, EngineError>>;
}
