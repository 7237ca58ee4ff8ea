//! An engine in memory, for unit tests of the code that decides what to ask of Docker: the
//! reconcile loop, the health round, the deploy switch. It keeps containers, images and networks
//! the way the engine would (names unique, ids stable, an address per network, states that
//! follow start/stop/kill), records every call, and fails a call on request.
//!
//! Container addresses are on 127.77.0.0/16, so a test can listen on one with a real socket and
//! the butler's probes reach it; nothing else answers there, so an unanswered probe is refused
//! at once rather than timing out.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::stream::{BoxStream, StreamExt};

use super::engine::{
    BuildProgress, ContainerInfo, ContainerSpec, ContainerState, Engine, EngineError, ExecOutput,
    ImageInfo, ListedContainer, NetworkInfo, ProcessRow,
};
use super::events::EngineEvent;

/// Answers an exec of `argv` in a container: what it printed and exited with. It may change the
/// container as the command would (bump `generation` for a reload, point a link).
pub type ExecHandler =
    Arc<dyn Fn(&mut FakeContainer, &[&str], Option<&[u8]>) -> ExecOutput + Send + Sync>;

#[derive(Default)]
pub struct FakeEngine {
    state: Mutex<FakeState>,
    exec: Mutex<Option<ExecHandler>>,
}

impl std::fmt::Debug for FakeEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeEngine").finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
pub struct FakeState {
    pub containers: BTreeMap<String, FakeContainer>,
    pub images: BTreeMap<String, ImageInfo>,
    pub networks: BTreeMap<String, NetworkInfo>,
    /// Every call, as "op target" ("start web-1", "exec butler-nginx nginx -t").
    pub calls: Vec<String>,
    /// Errors the next calls of an op return, in order ("create", "start", "inspect", ...).
    pub failures: BTreeMap<String, VecDeque<EngineError>>,
    /// What a build streams.
    pub build: Vec<BuildProgress>,
    /// Names of containers that are created with no address on their network.
    pub detached: std::collections::BTreeSet<String>,
    /// Containers that the next list still shows and that are gone right after it (removed
    /// between a list and the inspect that follows).
    pub vanish_after_list: std::collections::BTreeSet<String>,
    next: u32,
}

#[derive(Debug, Clone, Default)]
pub struct FakeContainer {
    pub info: ContainerInfo,
    pub logs: String,
    /// Tar archives uploaded, as (directory, archive).
    pub uploads: Vec<(String, Vec<u8>)>,
    /// The nginx worker generation: bumped by SIGHUP and by an exec that reloads.
    pub generation: u32,
    /// Symlinks inside the container: path → target.
    pub links: BTreeMap<String, String>,
}

const NOW: &str = "2026-12-03T12:00:00Z";

impl FakeEngine {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn on_exec(&self, handler: ExecHandler) {
        *self.exec.lock().unwrap() = Some(handler);
    }

    /// The calls made so far whose op is `op` ("create", "stop", ...), as their targets.
    pub fn calls(&self, op: &str) -> Vec<String> {
        let prefix = format!("{op} ");
        self.state()
            .calls
            .iter()
            .filter_map(|c| c.strip_prefix(&prefix).map(str::to_owned))
            .collect()
    }

    /// The next call of `op` fails with `error`.
    pub fn fail_next(&self, op: &str, error: EngineError) {
        self.state()
            .failures
            .entry(op.to_owned())
            .or_default()
            .push_back(error);
    }

    /// A running container `name` on `networks`, from `image`; its id.
    pub fn run(&self, name: &str, image: &str, networks: &[&str]) -> String {
        let mut state = self.state();
        let id = state.new_id(name);
        let mut info = ContainerInfo {
            id: id.clone(),
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: state
                .images
                .get(image)
                .map_or_else(|| format!("sha256:{image}"), |i| i.id.clone()),
            ..Default::default()
        };
        for network in networks {
            let ip = state.new_ip();
            info.networks.insert((*network).to_owned(), ip);
        }
        info.state = running_state();
        state.containers.insert(
            id.clone(),
            FakeContainer {
                info,
                ..Default::default()
            },
        );
        id
    }

    /// Changes the container `id_or_name` in place.
    pub fn edit(&self, id_or_name: &str, change: impl FnOnce(&mut FakeContainer)) {
        let mut state = self.state();
        let id = state.resolve(id_or_name).expect("no such fake container");
        change(state.containers.get_mut(&id).expect("resolved"));
    }

    pub fn container(&self, id_or_name: &str) -> Option<FakeContainer> {
        let state = self.state();
        let id = state.resolve(id_or_name)?;
        state.containers.get(&id).cloned()
    }

    pub fn add_image(&self, reference: &str, image: ImageInfo) {
        self.state().images.insert(reference.to_owned(), image);
    }
}

fn running_state() -> ContainerState {
    ContainerState {
        status: "running".into(),
        running: true,
        started_at: Some(NOW.into()),
        ..Default::default()
    }
}

impl FakeState {
    fn new_id(&mut self, name: &str) -> String {
        self.next += 1;
        // Hex like the engine's, distinct per container, with the name for readable failures.
        format!("{:08x}{}", self.next, hex::encode(name))
    }

    /// Unique across every fake engine of the process, so tests running side by side can each
    /// listen on their containers' addresses.
    fn new_ip(&mut self) -> IpAddr {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        IpAddr::V4(Ipv4Addr::new(127, 77, (n / 250) as u8, (n % 250 + 2) as u8))
    }

    /// A container by full id, unique id prefix or name.
    fn resolve(&self, id_or_name: &str) -> Option<String> {
        if self.containers.contains_key(id_or_name) {
            return Some(id_or_name.to_owned());
        }
        self.containers
            .values()
            .find(|c| c.info.name == id_or_name)
            .or_else(|| {
                let mut by_prefix = self
                    .containers
                    .values()
                    .filter(|c| c.info.id.starts_with(id_or_name));
                let first = by_prefix.next();
                by_prefix.next().is_none().then_some(first).flatten()
            })
            .map(|c| c.info.id.clone())
    }

    /// Records the call and returns the failure planned for it, if any.
    fn call(&mut self, op: &str, target: &str) -> Result<(), EngineError> {
        self.calls.push(format!("{op} {target}"));
        match self.failures.get_mut(op).and_then(VecDeque::pop_front) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn existing(&mut self, id_or_name: &str) -> Result<&mut FakeContainer, EngineError> {
        let id = self
            .resolve(id_or_name)
            .ok_or_else(|| EngineError::not_found(id_or_name))?;
        Ok(self.containers.get_mut(&id).expect("resolved"))
    }
}

#[async_trait::async_trait]
impl Engine for FakeEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.state().call("ping", "")
    }

    async fn list_containers(
        &self,
        labels: &[String],
    ) -> Result<Vec<ListedContainer>, EngineError> {
        let mut state = self.state();
        state.call("list", &labels.join(","))?;
        let matches = |info: &ContainerInfo| {
            labels.iter().all(|filter| match filter.split_once('=') {
                Some((key, value)) => info.labels.get(key).is_some_and(|v| v == value),
                None => info.labels.contains_key(filter),
            })
        };
        let listed = state
            .containers
            .values()
            .filter(|c| matches(&c.info))
            .map(|c| ListedContainer {
                id: c.info.id.clone(),
                name: c.info.name.clone(),
                labels: c.info.labels.clone(),
                state: c.info.state.status.clone(),
            })
            .collect();
        for id in std::mem::take(&mut state.vanish_after_list) {
            state.containers.remove(&id);
        }
        Ok(listed)
    }

    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        let mut state = self.state();
        state.call("inspect", id)?;
        Ok(state
            .resolve(id)
            .and_then(|id| state.containers.get(&id))
            .map(|c| c.info.clone()))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let mut state = self.state();
        state.call("create", &spec.name)?;
        if state.resolve(&spec.name).is_some() {
            return Err(EngineError::Refused {
                status: 409,
                message: format!(
                    "Conflict. The container name \"/{}\" is already in use",
                    spec.name
                ),
            });
        }
        let image = state
            .images
            .get(&spec.image)
            .or_else(|| state.images.values().find(|i| i.id == spec.image))
            .cloned()
            .ok_or_else(|| EngineError::Refused {
                status: 404,
                message: format!("No such image: {}", spec.image),
            })?;
        let id = state.new_id(&spec.name);
        let mut info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id: image.id.clone(),
            labels: spec.labels.clone(),
            env: spec
                .env
                .iter()
                .map(|e| {
                    let (k, v) = e.split_once('=').unwrap_or((e, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
            state: ContainerState {
                status: "created".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        if let Some(network) = &spec.network
            && !state.detached.contains(&spec.name)
        {
            let ip = state.new_ip();
            info.networks.insert(network.clone(), ip);
        }
        state.containers.insert(
            id.clone(),
            FakeContainer {
                info,
                ..Default::default()
            },
        );
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        let mut state = self.state();
        state.call("start", id)?;
        let container = state.existing(id)?;
        container.info.state = running_state();
        Ok(())
    }

    async fn stop_container(&self, id: &str, _grace_secs: i32) -> Result<(), EngineError> {
        let mut state = self.state();
        state.call("stop", id)?;
        let container = state.existing(id)?;
        if container.info.state.running {
            container.info.state = ContainerState {
                status: "exited".into(),
                started_at: container.info.state.started_at.clone(),
                finished_at: Some(NOW.into()),
                ..Default::default()
            };
        }
        Ok(())
    }

    async fn restart_container(&self, id: &str, _grace_secs: i32) -> Result<(), EngineError> {
        let mut state = self.state();
        state.call("restart", id)?;
        state.existing(id)?.info.state = running_state();
        Ok(())
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        let mut state = self.state();
        state.call("kill", &format!("{id} {signal}"))?;
        let container = state.existing(id)?;
        match signal {
            "SIGHUP" => container.generation += 1,
            _ => {
                container.info.state = ContainerState {
                    status: "exited".into(),
                    exit_code: 137,
                    finished_at: Some(NOW.into()),
                    ..Default::default()
                }
            }
        }
        Ok(())
    }

    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        let mut state = self.state();
        state.call("remove", id)?;
        if let Some(id) = state.resolve(id) {
            state.containers.remove(&id);
        }
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        argv: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<ExecOutput, EngineError> {
        let handler = self.exec.lock().unwrap().clone();
        let mut state = self.state();
        state.call("exec", &format!("{id} {}", argv.join(" ")))?;
        let container = state.existing(id)?;
        Ok(match handler {
            Some(handler) => handler(container, argv, input.as_deref()),
            None => ExecOutput::default(),
        })
    }

    async fn top(&self, id: &str) -> Result<Vec<ProcessRow>, EngineError> {
        let mut state = self.state();
        state.call("top", id)?;
        let container = state.existing(id)?;
        let generation = container.generation;
        Ok(vec![
            ProcessRow {
                pid: "1".into(),
                command: "nginx: master process nginx".into(),
            },
            ProcessRow {
                pid: (1000 + generation).to_string(),
                command: "nginx: worker process".into(),
            },
        ])
    }

    async fn upload(&self, id: &str, dir: &str, archive: Vec<u8>) -> Result<(), EngineError> {
        let mut state = self.state();
        state.call("upload", &format!("{id} {dir}"))?;
        state.existing(id)?.uploads.push((dir.to_owned(), archive));
        Ok(())
    }

    async fn download(&self, id: &str, path: &str) -> Result<Vec<u8>, EngineError> {
        let mut state = self.state();
        state.call("download", &format!("{id} {path}"))?;
        state.existing(id)?;
        Err(EngineError::not_found(path))
    }

    async fn link_target(&self, id: &str, path: &str) -> Result<Option<String>, EngineError> {
        let mut state = self.state();
        state.call("stat", &format!("{id} {path}"))?;
        Ok(state.existing(id)?.links.get(path).cloned())
    }

    async fn logs(&self, id: &str, _lines: usize) -> Result<String, EngineError> {
        let mut state = self.state();
        state.call("logs", id)?;
        Ok(state.existing(id)?.logs.clone())
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        let mut state = self.state();
        state.call("inspect_image", reference)?;
        Ok(state
            .images
            .get(reference)
            .or_else(|| state.images.values().find(|i| i.id == reference))
            .cloned())
    }

    async fn pull_image(&self, reference: &str) -> Result<(), EngineError> {
        self.state().call("pull", reference)?;
        Err(EngineError::Transport(format!(
            "no registry in the fake engine for {reference}"
        )))
    }

    fn build_image(
        &self,
        _context: Vec<u8>,
        tag: &str,
    ) -> BoxStream<'static, Result<BuildProgress, EngineError>> {
        let mut state = self.state();
        let steps = match state.call("build", tag) {
            Err(e) => vec![Err(e)],
            Ok(()) => state.build.iter().cloned().map(Ok).collect(),
        };
        futures_util::stream::iter(steps).boxed()
    }

    async fn tag_image(&self, id: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        let mut state = self.state();
        state.call("tag", &format!("{id} {repo}:{tag}"))?;
        let image = state
            .images
            .values()
            .find(|i| i.id == id)
            .cloned()
            .ok_or_else(|| EngineError::not_found(id))?;
        state.images.insert(format!("{repo}:{tag}"), image);
        Ok(())
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, EngineError> {
        let mut state = self.state();
        state.call("inspect_network", name)?;
        Ok(state.networks.get(name).cloned())
    }

    async fn create_network(
        &self,
        name: &str,
        driver: &str,
        _labels: BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let mut state = self.state();
        state.call("create_network", name)?;
        let id = state.new_id(name);
        state.networks.insert(
            name.to_owned(),
            NetworkInfo {
                id: id.clone(),
                driver: driver.to_owned(),
            },
        );
        Ok(id)
    }

    async fn connect_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        let mut state = self.state();
        state.call("connect", &format!("{network} {container}"))?;
        let ip = state.new_ip();
        state
            .existing(container)?
            .info
            .networks
            .entry(network.to_owned())
            .or_insert(ip);
        Ok(())
    }

    async fn root_dir(&self) -> Result<Option<String>, EngineError> {
        self.state().call("info", "")?;
        Ok(None)
    }

    /// No events: the tests drive reconciles and rounds themselves.
    fn events(&self, _since: u64) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        futures_util::stream::pending().boxed()
    }
}
