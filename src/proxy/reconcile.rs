//! One reconcile, the whole proxy path in order: what runs on the engine → the plan → the rendered
//! tree → nginx kept alive → the tree applied (or refused) → the version and routes recorded. The
//! dynamic-proxy worker runs it on every batch of events and on a timer; `butler proxy-update` runs
//! it once.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::apply::{Applier, ApplyOutcome, ApplyStatus, RouteProbe};
use super::{Plan, PlanSettings, ProblemKind, RenderSettings, RenderedConfig, Route, Templates};
use crate::config::Config;
use crate::docker::{ContainerSnapshot, Engine, EngineHandle, discovery, network};
use crate::nginx::{CONFIG_ROOT, CONTAINER_HTTP_PORT, Ensured, Nginx, NginxSpec, NginxState};
use crate::store::{NewVersion, RouteRow, Store};

/// Where nginx looks for the live tree inside its container.
fn live_root() -> String {
    format!("{CONFIG_ROOT}/live")
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("cannot prepare the proxy network: {0}")]
    Network(#[from] crate::docker::network::NetworkError),
    #[error("cannot list containers: {0}")]
    Discovery(#[from] crate::docker::discovery::DiscoveryError),
    #[error("cannot render the nginx config: {0}")]
    Render(#[from] super::RenderError),
    #[error("the nginx container is not serving: {0}")]
    Nginx(#[from] crate::nginx::NginxError),
    #[error("the state store failed: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// How one app's route changed since the last applied config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum RouteChange {
    Added {
        app: String,
        hosts: Vec<String>,
        servers: Vec<String>,
    },
    Removed {
        app: String,
    },
    Changed {
        app: String,
        hosts: Vec<String>,
        servers: Vec<String>,
    },
}

impl RouteChange {
    pub fn line(&self) -> String {
        match self {
            RouteChange::Added {
                app,
                hosts,
                servers,
            } => {
                format!("+ {app}: {} → {}", hosts.join(", "), servers.join(", "))
            }
            RouteChange::Removed { app } => format!("- {app}"),
            RouteChange::Changed {
                app,
                hosts,
                servers,
            } => {
                format!("~ {app}: {} → {}", hosts.join(", "), servers.join(", "))
            }
        }
    }
}

/// What one reconcile saw and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileReport {
    pub cause: String,
    pub plan: Plan,
    pub changes: Vec<RouteChange>,
    /// Containers connected to the proxy network by this reconcile.
    pub connected: Vec<String>,
    /// Set when nginx had to be (re)created, with what was wrong.
    pub nginx_recreated: Option<String>,
    pub apply: Option<ApplyOutcome>,
    /// The store's id of the version this reconcile recorded.
    pub version: Option<i64>,
    /// Set while an operator's rollback pins the config: nothing is applied.
    pub pinned: Option<i64>,
    pub timings: ReconcileTimings,
}

impl ReconcileReport {
    /// Applied or nothing to do; false when a config was refused or rolled back.
    pub fn succeeded(&self) -> bool {
        self.apply
            .as_ref()
            .is_none_or(|a| matches!(a.status, ApplyStatus::Applied | ApplyStatus::Unchanged))
    }

    /// One line for STATUS= and logs.
    pub fn summary(&self) -> String {
        let apps = self.plan.routes.len();
        let problems = self.plan.problems.len();
        if let Some(pinned) = self.pinned {
            return format!(
                "{apps} apps found; config pinned to version {pinned} (`butler proxy-update` resumes)"
            );
        }
        let state = match self.apply.as_ref().map(|a| &a.status) {
            None | Some(ApplyStatus::Unchanged) => "config unchanged".to_owned(),
            Some(ApplyStatus::Applied) => format!("applied version {}", self.version.unwrap_or(0)),
            Some(ApplyStatus::Invalid { .. }) => "new config refused by nginx -t".to_owned(),
            Some(ApplyStatus::RolledBack { .. }) => "new config rolled back".to_owned(),
            Some(ApplyStatus::Failed { .. }) => "apply failed".to_owned(),
        };
        format!("{apps} apps routed, {problems} problems; {state}")
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileTimings {
    pub discover: Duration,
    pub plan_render: Duration,
    pub ensure_nginx: Duration,
    pub apply: Duration,
}

/// App → (hosts, upstream servers as `ip:port`).
type RouteTable = BTreeMap<String, (Vec<String>, Vec<String>)>;

pub struct Reconciler {
    docker: EngineHandle,
    config: std::sync::Arc<Config>,
    nginx: Nginx,
    store: Store,
    /// The routes of the last applied config, to tell what changed; read from the store on the
    /// first reconcile, so a new process (a restart, `proxy-update`) does not report every route as new.
    applied_routes: Option<RouteTable>,
    /// The last tree nginx refused, with the outcome: the same tree is not staged, validated and
    /// recorded again every round (it can only be refused again) until something changes it.
    refused: Option<ApplyOutcome>,
    /// Every running container as of the last full list, kept current by targeted re-inspects.
    known: Option<BTreeMap<String, ContainerSnapshot>>,
    /// The running nginx container's id as of this round's check, and its address by id.
    nginx_id: Option<String>,
    /// The networks the running nginx is attached to, as of this round's check.
    nginx_networks: BTreeSet<String>,
    nginx_addr: Option<(String, SocketAddr)>,
    /// Upstream servers whose port nothing listens on yet (the app binds late, or another port
    /// than it declares), by container id: re-inspected soon, so the route follows the socket
    /// once it is there instead of at the next timed round.
    port_watch: BTreeMap<String, PortWatch>,
    /// Whether the running nginx has the Lua module, as of this round: the tree is then rendered
    /// for the data path (unless a structural template is overridden).
    data_path: bool,
    /// The last applied tree's version, structure and routes data: a new tree of the same
    /// structure is applied as data, without a reload. Read from the store with `applied_routes`.
    applied_tree: Option<AppliedTree>,
}

#[derive(Debug, Clone)]
struct AppliedTree {
    hash: String,
    structure: String,
    data: Option<String>,
}

impl AppliedTree {
    fn of(files: &crate::nginx::ConfigTree, hash: &str) -> Self {
        Self {
            hash: hash.to_owned(),
            structure: super::render::structure_hash(files),
            data: files.get(super::render::DATA_FILE).cloned(),
        }
    }
}

/// When to look again at a container whose routed port is not listening.
#[derive(Debug, Clone, Copy)]
struct PortWatch {
    since: Instant,
    next: Instant,
    delay: Duration,
}

/// The first look again after a route went to a port nothing listens on; doubled each time up
/// to `PORT_WATCH_MAX_DELAY`, for `PORT_WATCH_FOR` (the timed round covers what binds later).
const PORT_WATCH_FIRST_DELAY: Duration = Duration::from_millis(200);
const PORT_WATCH_MAX_DELAY: Duration = Duration::from_secs(2);
const PORT_WATCH_FOR: Duration = Duration::from_secs(120);

impl Reconciler {
    pub fn new(docker: EngineHandle, config: std::sync::Arc<Config>, store: Store) -> Self {
        let nginx = Nginx::new(docker.clone(), NginxSpec::from_config(&config.proxy));
        Self {
            docker,
            config,
            nginx,
            store,
            applied_routes: None,
            refused: None,
            known: None,
            nginx_id: None,
            nginx_networks: BTreeSet::new(),
            nginx_addr: None,
            port_watch: BTreeMap::new(),
            data_path: false,
            applied_tree: None,
        }
    }

    /// Whether the live config is the data path's (changes applied without a reload).
    pub fn data_path(&self) -> bool {
        self.applied_tree.as_ref().is_some_and(|t| t.data.is_some())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn engine(&self) -> &EngineHandle {
        &self.docker
    }

    /// Lists and inspects every running container, and the exited ones of apps that were
    /// routed, and remembers them.
    async fn refresh_all(
        &mut self,
        settings: &PlanSettings,
    ) -> Result<Vec<ContainerSnapshot>, ReconcileError> {
        self.known = None;
        let snapshots = list_with_routed_exited(&*self.docker, &self.config, settings).await?;
        self.known = Some(
            snapshots
                .iter()
                .map(|s| (s.id.clone(), s.clone()))
                .collect(),
        );
        Ok(snapshots)
    }

    /// Re-inspects `ids` (gone or stopped ones are forgotten) on top of the remembered list.
    async fn refresh(
        &mut self,
        ids: &BTreeSet<String>,
    ) -> Result<Vec<ContainerSnapshot>, ReconcileError> {
        let mut known = self.known.take().unwrap_or_default();
        for id in ids {
            // An error leaves `known` empty, so the next round lists everything again.
            match discovery::snapshot_one(&*self.docker, id).await? {
                Some(snapshot) => {
                    // Events may name a container by a short id; the remembered list is by full id.
                    known.retain(|key, _| !key.starts_with(id.as_str()) || *key == snapshot.id);
                    known.insert(snapshot.id.clone(), snapshot);
                }
                None => known.retain(|key, _| !key.starts_with(id.as_str())),
            }
        }
        let snapshots = known.values().cloned().collect();
        self.known = Some(known);
        Ok(snapshots)
    }

    /// Connects each of `ids` to the proxy network; the ids that are on it now.
    async fn connect_all(&self, ids: &BTreeSet<String>) -> Vec<String> {
        let network = &self.config.proxy.network;
        let mut connected = Vec::new();
        for id in ids {
            match network::connect(&*self.docker, id, network).await {
                Ok(()) => connected.push(id.clone()),
                Err(error) => {
                    tracing::warn!(container = %id, %error, "cannot connect app to the proxy network")
                }
            }
        }
        connected
    }

    /// Connects containers just created (the engine's `create` event comes before `start`) to the
    /// proxy network when they will be apps: they then start on it, and their route needs no
    /// connect and no second inspect after `start`. Best effort: whatever this misses, the
    /// reconcile after `start` connects as before.
    pub async fn connect_created(&self, ids: &BTreeSet<String>) {
        let network = &self.config.proxy.network;
        let Ok(settings) = self.plan_settings().await else {
            return;
        };
        for id in ids {
            let Ok(Some(info)) = self.docker.inspect_container(id).await else {
                continue;
            };
            if info.state.status != "created" || info.is_attached(network) {
                continue;
            }
            let candidate = ContainerSnapshot {
                id: info.id.clone(),
                name: info.name.clone(),
                labels: info.labels.clone(),
                ..ContainerSnapshot::default()
            };
            if super::plan::app_of(&candidate, &settings).is_none() {
                continue;
            }
            match self.docker.connect_network(network, &info.id).await {
                Ok(()) => {
                    tracing::debug!(container = %info.name, %network, "connected before its start")
                }
                Err(error) => {
                    tracing::debug!(container = %info.name, %error, "cannot connect a created container; its start will")
                }
            }
        }
    }

    /// Keeps `port_watch` to the servers of `plan` whose port their container does not listen on.
    fn watch_unlistened_ports(&mut self, plan: &Plan) {
        let now = Instant::now();
        let known = self.known.as_ref();
        let unlistened: BTreeSet<&str> = plan
            .routes
            .iter()
            .flat_map(|r| &r.servers)
            .filter(|server| {
                known
                    .and_then(|k| k.get(&server.container_id))
                    .and_then(|c| c.listening_ports.as_ref())
                    .is_some_and(|listening| !listening.contains(&server.port))
            })
            .map(|server| server.container_id.as_str())
            .collect();
        self.port_watch
            .retain(|id, _| unlistened.contains(id.as_str()));
        for id in unlistened {
            self.port_watch.entry(id.to_owned()).or_insert(PortWatch {
                since: now,
                next: now + PORT_WATCH_FIRST_DELAY,
                delay: PORT_WATCH_FIRST_DELAY,
            });
        }
    }

    /// When the next look at a not-yet-listening port is due, if any is watched. A container
    /// watched for `PORT_WATCH_FOR` is left to the timed rounds (it may never listen there).
    pub fn next_port_check(&self) -> Option<tokio::time::Instant> {
        self.port_watch
            .values()
            .filter(|w| w.since.elapsed() < PORT_WATCH_FOR)
            .map(|w| tokio::time::Instant::from_std(w.next))
            .min()
    }

    /// Re-inspects the watched containers that are due and returns those whose listening ports
    /// changed (a reconcile of just them follows); the others are looked at again later.
    pub async fn check_watched_ports(&mut self) -> BTreeSet<String> {
        let now = Instant::now();
        let due: Vec<String> = self
            .port_watch
            .iter()
            .filter(|(_, w)| w.next <= now && now - w.since < PORT_WATCH_FOR)
            .map(|(id, _)| id.clone())
            .collect();
        let mut changed = BTreeSet::new();
        for id in due {
            let before = self
                .known
                .as_ref()
                .and_then(|k| k.get(&id))
                .map(|s| s.listening_ports.clone());
            let after = match discovery::snapshot_one(&*self.docker, &id).await {
                Ok(Some(snapshot)) if snapshot.running => Some(snapshot.listening_ports),
                Ok(_) => None,
                // The engine did not answer: try again at the next step.
                Err(_) => before.clone(),
            };
            if after != before {
                changed.insert(id.clone());
                self.port_watch.remove(&id);
            } else if let Some(w) = self.port_watch.get_mut(&id) {
                w.delay = (w.delay * 2).min(PORT_WATCH_MAX_DELAY);
                w.next = now + w.delay;
            }
        }
        changed
    }

    /// Discovery and planning only: what the routes would be now. Connects nothing, applies nothing.
    pub async fn plan_now(&self) -> Result<Plan, ReconcileError> {
        let mut settings = self.plan_settings().await?;
        if let NginxState::Running { networks, .. } = self.nginx.state().await? {
            settings.also_reachable = self.besides_proxy_network(&networks);
        }
        settings.routed_apps = self
            .store
            .routes()
            .await?
            .into_iter()
            .map(|r| r.app)
            .collect();
        let mut snapshots = list_with_routed_exited(&*self.docker, &self.config, &settings).await?;
        mark_user_stops(&mut snapshots, &self.store.user_stopped().await?);
        Ok(super::plan(&snapshots, &settings))
    }

    /// A full reconcile: every container on the engine is inspected.
    pub async fn reconcile(&mut self, cause: &str) -> Result<ReconcileReport, ReconcileError> {
        self.reconcile_changed(cause, None).await
    }

    /// A reconcile that re-inspects only `changed` containers (those a batch of events named) and
    /// takes the rest from the last full list; `None`, or no full list yet, inspects everything.
    /// Inspecting every container is most of a round's time on a host with many of them.
    pub async fn reconcile_changed(
        &mut self,
        cause: &str,
        changed: Option<&BTreeSet<String>>,
    ) -> Result<ReconcileReport, ReconcileError> {
        let mut timings = ReconcileTimings::default();
        let proxy = self.config.proxy.clone();

        let started = Instant::now();
        network::ensure_network(&*self.docker, &proxy.network).await?;
        if self.applied_routes.is_none() {
            let stored = self.store.routes().await?;
            self.applied_routes = Some(
                stored
                    .into_iter()
                    .map(|r| (r.app, (r.hosts, r.servers)))
                    .collect(),
            );
            self.applied_tree = self
                .store
                .last_good()
                .await?
                .map(|version| AppliedTree::of(&version.files, &version.info.hash));
        }
        let mut settings = self.plan_settings().await?;
        settings.routed_apps = self.routed_apps();
        let mut snapshots = match changed {
            Some(ids) if self.known.is_some() => self.refresh(ids).await?,
            _ => self.refresh_all(&settings).await?,
        };
        let user_stopped = self.store.user_stopped().await?;
        mark_user_stops(&mut snapshots, &user_stopped);
        let mut plan = super::plan(&snapshots, &settings);
        // Apps off the proxy network cannot be reached by IP: connect them, then look again.
        let mut off_network: BTreeSet<String> = plan
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::NotOnNetwork)
            .map(|p| p.container_id.clone())
            .collect();
        // Those nginx reaches on another network are served there first and connected after the
        // apply: the connect of a running container is most of a new route's time otherwise.
        let served_meanwhile: BTreeSet<String> = plan
            .routes
            .iter()
            .flat_map(|r| &r.servers)
            .filter(|s| off_network.contains(&s.container_id))
            .map(|s| s.container_id.clone())
            .collect();
        off_network.retain(|id| !served_meanwhile.contains(id));
        let connected: BTreeSet<String> =
            self.connect_all(&off_network).await.into_iter().collect();
        if !connected.is_empty() {
            snapshots = self.refresh(&connected).await?;
            mark_user_stops(&mut snapshots, &user_stopped);
            plan = super::plan(&snapshots, &settings);
        }
        let mut connected: Vec<String> = connected.into_iter().collect();
        timings.discover = started.elapsed();

        // Held until the version is recorded: a rollback in another process waits, or we see its
        // pin. Taken before nginx is ensured too, so the recovery worker and this process never
        // both recreate a missing nginx container.
        let _apply_lock = self.store.lock_apply().await?;

        // nginx first: a template override that fails to render must not keep a removed or
        // stopped nginx down (it comes back with the last good config either way).
        let started = Instant::now();
        let nginx_recreated = self.ensure_nginx().await?;
        self.data_path = self.nginx.has_data_path(self.nginx_id.as_deref()).await?;
        timings.ensure_nginx = started.elapsed();

        let started = Instant::now();
        let mut rendered = self.render(&plan)?;
        timings.plan_render = started.elapsed();

        // `butler deploy` moves deployments in and out of the upstreams, then reconciles: the held
        // set read under the lock is the one this round applies, so a round that planned before a
        // deploy's change can never apply after that deploy's own reconcile. Its containers are
        // listed again too: a list older than the change may lack the instances it let in.
        let held = self.store.held_deployments().await?;
        if held != settings.held_deployments {
            settings.held_deployments = held;
            snapshots = self.refresh_all(&settings).await?;
            mark_user_stops(&mut snapshots, &user_stopped);
            plan = super::plan(&snapshots, &settings);
            rendered = self.render(&plan)?;
        }
        self.watch_unlistened_ports(&plan);
        if let Some(pinned) = self.store.pinned_version().await? {
            connected.extend(self.connect_all(&served_meanwhile).await);
            // An operator rolled back to a version on purpose: keep it until `butler proxy-update`.
            return Ok(ReconcileReport {
                cause: cause.to_owned(),
                plan,
                changes: Vec::new(),
                connected,
                nginx_recreated,
                apply: None,
                version: None,
                pinned: Some(pinned),
                timings,
            });
        }
        let changes = self.changes(&plan);
        if self
            .refused
            .as_ref()
            .is_some_and(|r| r.hash == rendered.hash)
        {
            connected.extend(self.connect_all(&served_meanwhile).await);
        }
        if let Some(refused) = self.refused.as_ref().filter(|r| r.hash == rendered.hash) {
            return Ok(ReconcileReport {
                cause: cause.to_owned(),
                plan,
                changes,
                connected,
                nginx_recreated,
                apply: Some(refused.clone()),
                version: None,
                pinned: None,
                timings,
            });
        }
        let started = Instant::now();
        let applier = Applier::new(self.nginx.clone())
            .with_probe_addr(self.nginx_addr().await?)
            .with_probe_path(ROUTE_PROBE_PATH);
        // A probe proves that nginx now routes each changed host to its own server block (the block
        // answers ROUTE_PROBE_PATH itself), whether or not the app behind it is up yet.
        let probes: Vec<RouteProbe> = changes
            .iter()
            .filter_map(|change| match change {
                RouteChange::Added { hosts, .. } | RouteChange::Changed { hosts, .. } => {
                    hosts.first().cloned()
                }
                RouteChange::Removed { .. } => None,
            })
            .map(|host| RouteProbe {
                host,
                expected_status: Some(ROUTE_PROBE_STATUS),
            })
            .collect();
        // Another process (a deploy, `proxy-update`, the recovery worker) may have applied a
        // version since ours: the data path starts from what is live.
        if let Some((_, hash)) = self.store.last_good_id().await?
            && self.applied_tree.as_ref().is_none_or(|t| t.hash != hash)
        {
            self.applied_tree = self
                .store
                .last_good()
                .await?
                .map(|version| AppliedTree::of(&version.files, &version.info.hash));
        }
        let as_data = self.applied_tree.as_ref().and_then(|applied| {
            let data = applied.data.as_deref()?;
            (applied.structure == super::render::structure_hash(&rendered.files))
                .then_some((applied.hash.as_str(), data))
        });
        let outcome = match as_data {
            Some((live, previous_data)) => {
                applier
                    .apply_data(
                        &rendered.files,
                        &rendered.hash,
                        live,
                        previous_data,
                        &probes,
                    )
                    .await
            }
            None => {
                applier
                    .apply(&rendered.files, &rendered.hash, &probes)
                    .await
            }
        };
        timings.apply = started.elapsed();
        self.refused =
            matches!(outcome.status, ApplyStatus::Invalid { .. }).then(|| outcome.clone());

        let version = self
            .record(cause, &plan, &rendered, &changes, &outcome, &timings)
            .await?;
        // Their `connect` events bring the next round, which routes them on the proxy network.
        connected.extend(self.connect_all(&served_meanwhile).await);
        let report = ReconcileReport {
            cause: cause.to_owned(),
            plan,
            changes,
            connected,
            nginx_recreated,
            apply: Some(outcome),
            version,
            pinned: None,
            timings,
        };
        Ok(report)
    }

    async fn plan_settings(&self) -> Result<PlanSettings, ReconcileError> {
        Ok(PlanSettings {
            domain: self.config.proxy.domain.clone(),
            network: self.config.proxy.network.clone(),
            own_container_names: vec![self.config.proxy.container_name.clone()],
            own_container_ids: Vec::new(),
            held_deployments: self.store.held_deployments().await?,
            only_label: self.config.docker.only_label.clone(),
            routed_apps: BTreeSet::new(),
            also_reachable: self.besides_proxy_network(&self.nginx_networks),
        })
    }

    /// The networks of `networks` other than the proxy network.
    fn besides_proxy_network(&self, networks: &BTreeSet<String>) -> Vec<String> {
        networks
            .iter()
            .filter(|n| **n != self.config.proxy.network)
            .cloned()
            .collect()
    }

    /// The apps of the last applied config, up or down.
    fn routed_apps(&self) -> BTreeSet<String> {
        self.applied_routes
            .iter()
            .flat_map(|routes| routes.keys().cloned())
            .collect()
    }

    fn render_settings(&self, templates: &Templates) -> RenderSettings {
        RenderSettings {
            config_root: live_root(),
            listen_port: CONTAINER_HTTP_PORT,
            public_port: self.config.proxy.http_port,
            domain: self.config.proxy.domain.clone(),
            data_path: self.data_path && templates.allow_data_path(),
        }
    }

    /// Renders with the operator's overrides; read on every reconcile so an edited override takes
    /// effect without a restart (and a broken one is refused before anything reaches nginx).
    fn render(&self, plan: &Plan) -> Result<RenderedConfig, ReconcileError> {
        let templates = Templates::load(Some(&self.config.proxy.templates_dir))?;
        Ok(super::render(
            plan,
            &self.render_settings(&templates),
            &templates,
        )?)
    }

    /// Keeps nginx running. A missing, stopped or crash-looping container is recreated with the last
    /// applied version from the store; with no history yet, with the shipped templates and no apps.
    /// The common case, a running nginx, costs one inspect and no store read.
    async fn ensure_nginx(&mut self) -> Result<Option<String>, ReconcileError> {
        if let NginxState::Running { id, networks, .. } = self.nginx.state().await? {
            self.nginx_id = Some(id);
            self.nginx_networks = networks;
            return Ok(None);
        }
        self.nginx_id = None;
        self.nginx_networks = BTreeSet::new();
        let tree = match self.store.last_good().await? {
            Some(version) => (version.files, version.info.hash),
            None => {
                // The image is not known yet: the reload path's tree works with any.
                let shipped = Templates::load(None)?;
                let mut settings = self.render_settings(&shipped);
                settings.data_path = false;
                let empty = super::render(&Plan::default(), &settings, &shipped)?;
                (empty.files, empty.hash)
            }
        };
        Ok(match self.nginx.ensure(&tree.0, &tree.1).await? {
            Ensured::AlreadyRunning => None,
            Ensured::Created { was } => {
                let why = format!("{was:?}");
                tracing::warn!(container = %self.config.proxy.container_name, was = %why, "recreated the nginx container from the last good config");
                Some(why)
            }
        })
    }

    /// nginx's own address on the proxy network: reachable from the host and from a butler inside a
    /// container on that network alike (127.0.0.1 is only the host's). Kept while the same
    /// container runs: its address only changes with a new container.
    async fn nginx_addr(&mut self) -> Result<SocketAddr, ReconcileError> {
        if let (Some(id), Some((cached_id, addr))) = (&self.nginx_id, &self.nginx_addr)
            && id == cached_id
        {
            return Ok(*addr);
        }
        let found = self.nginx.addr().await?;
        if let Some(id) = found.container_id {
            self.nginx_addr = Some((id, found.addr));
        }
        Ok(found.addr)
    }

    fn changes(&self, plan: &Plan) -> Vec<RouteChange> {
        let now: RouteTable = plan
            .routes
            .iter()
            .map(|r| (r.app.clone(), route_key(r)))
            .collect();
        let empty = BTreeMap::new();
        let applied = self.applied_routes.as_ref().unwrap_or(&empty);
        let mut changes = Vec::new();
        for (app, (hosts, servers)) in &now {
            match applied.get(app) {
                None => changes.push(RouteChange::Added {
                    app: app.clone(),
                    hosts: hosts.clone(),
                    servers: servers.clone(),
                }),
                Some(before) if before != &(hosts.clone(), servers.clone()) => {
                    changes.push(RouteChange::Changed {
                        app: app.clone(),
                        hosts: hosts.clone(),
                        servers: servers.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        for app in applied.keys().filter(|app| !now.contains_key(*app)) {
            changes.push(RouteChange::Removed { app: app.clone() });
        }
        changes
    }

    async fn record(
        &mut self,
        cause: &str,
        plan: &Plan,
        rendered: &RenderedConfig,
        changes: &[RouteChange],
        outcome: &ApplyOutcome,
        timings: &ReconcileTimings,
    ) -> Result<Option<i64>, ReconcileError> {
        let (applied, error) = match &outcome.status {
            ApplyStatus::Unchanged => {
                self.remember(plan);
                return Ok(None);
            }
            ApplyStatus::Applied => (true, None),
            ApplyStatus::Invalid { error } => {
                (false, Some(format!("nginx -t refused it: {error}")))
            }
            ApplyStatus::RolledBack { reason, .. } => {
                (false, Some(format!("rolled back: {reason}")))
            }
            ApplyStatus::Failed { error } => (false, Some(error.clone())),
        };
        let mut summary = if changes.is_empty() {
            "no route changes".to_owned()
        } else {
            changes
                .iter()
                .map(RouteChange::line)
                .collect::<Vec<_>>()
                .join("; ")
        };
        if outcome.as_data {
            summary.push_str(" (as data, no reload)");
        }
        let id = self
            .store
            .record_version(NewVersion {
                hash: rendered.hash.clone(),
                cause: cause.to_owned(),
                summary,
                files: rendered.files.clone(),
                applied,
                error: error.clone(),
                timings: outcome.timings.for_version(Some(timings.plan_render)),
            })
            .await?;
        if applied {
            self.applied_tree = Some(AppliedTree::of(&rendered.files, &rendered.hash));
            self.remember(plan);
            let rows = plan
                .routes
                .iter()
                .map(|route| {
                    let first = route.servers.first();
                    RouteRow {
                        app: route.app.clone(),
                        hosts: route.hosts.clone(),
                        servers: route_key(route).1,
                        port: first.map_or(0, |s| s.port),
                        reason: first.map_or_else(String::new, |s| s.port_reason.text()),
                        down: route.down.clone(),
                    }
                })
                .collect();
            self.store.replace_routes(rows).await?;
        } else if let Some(error) = error {
            tracing::error!(version = id, %error, "new nginx config not applied; the last good config keeps serving");
        }
        Ok(Some(id))
    }

    fn remember(&mut self, plan: &Plan) {
        self.applied_routes = Some(
            plan.routes
                .iter()
                .map(|r| (r.app.clone(), route_key(r)))
                .collect(),
        );
    }
}

/// Every running container, and the exited ones of the apps in `settings.routed_apps` (judged by
/// name and labels from the list, so other exited containers are never inspected).
async fn list_with_routed_exited(
    docker: &dyn Engine,
    config: &Config,
    settings: &PlanSettings,
) -> Result<Vec<ContainerSnapshot>, ReconcileError> {
    Ok(
        discovery::list_snapshots_and_exited(docker, config.docker.only_label.as_deref(), |c| {
            super::plan::app_of(c, settings).is_some_and(|app| settings.routed_apps.contains(&app))
        })
        .await?,
    )
}

/// Marks the exited containers a user stopped (the engine said so in a `stop` event).
fn mark_user_stops(snapshots: &mut [ContainerSnapshot], user_stopped: &BTreeSet<String>) {
    for c in snapshots {
        if let Some(exited) = c.exited.as_mut() {
            exited.stopped_by_user = user_stopped.contains(&c.id);
        }
    }
}

/// Every app's server block answers this path itself (see templates/site.conf), so a probe proves
/// the host reaches its own block without depending on the app being up.
pub const ROUTE_PROBE_PATH: &str = "/.well-known/butler-route";
pub const ROUTE_PROBE_STATUS: u16 = 204;

fn route_key(route: &Route) -> (Vec<String>, Vec<String>) {
    let servers = route
        .servers
        .iter()
        .map(|s| SocketAddr::new(s.ip, s.port).to_string())
        .collect();
    (route.hosts.clone(), servers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::EngineError;
    use crate::testbed::{Bed, nginx_refuses};

    fn reconciler(bed: &Bed) -> Reconciler {
        Reconciler::new(bed.handle(), bed.config.clone(), bed.store.clone())
    }

    #[tokio::test]
    async fn a_new_container_is_routed_applied_and_recorded() {
        let bed = Bed::new().await;
        let id = bed.run_app(
            "shop-1",
            &[("butler.name", "shop"), ("butler.port", "8080")],
        );
        let app = bed.serve_app(&id, 8080, 200).await;

        let report = reconciler(&bed).reconcile("test").await.unwrap();

        assert_eq!(
            report.apply.as_ref().map(|a| &a.status),
            Some(&ApplyStatus::Applied),
            "{report:?}"
        );
        assert!(report.version.is_some());
        assert_eq!(
            report.changes,
            vec![RouteChange::Added {
                app: "shop".into(),
                hosts: vec!["shop.localhost".into()],
                servers: vec![app.to_string()],
            }]
        );
        let routes = bed.store.routes().await.unwrap();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].servers, vec![app.to_string()]);
        // One exec staged, validated and activated the version; nothing was recreated.
        let stages: Vec<String> = bed
            .engine
            .calls("exec")
            .into_iter()
            .filter(|c| c.contains(" sh -c "))
            .collect();
        assert_eq!(stages.len(), 1, "{stages:?}");
        assert!(bed.engine.calls("create").is_empty());
    }

    #[tokio::test]
    async fn the_same_containers_again_change_nothing() {
        let bed = Bed::new().await;
        bed.run_app(
            "shop-1",
            &[("butler.name", "shop"), ("butler.port", "8080")],
        );
        let mut reconciler = reconciler(&bed);
        reconciler.reconcile("first").await.unwrap();

        let again = reconciler.reconcile("second").await.unwrap();

        assert!(again.changes.is_empty());
        assert_eq!(again.apply.map(|a| a.status), Some(ApplyStatus::Unchanged));
        assert_eq!(
            again.version, None,
            "an unchanged config is not recorded again"
        );
    }

    #[tokio::test]
    async fn a_created_app_is_connected_before_its_start_and_others_are_left_alone() {
        let bed = Bed::new().await;
        let created = |name: &str| {
            let id = bed.engine.run(name, crate::testbed::APP_IMAGE, &["bridge"]);
            bed.engine
                .edit(&id, |c| c.info.state.status = "created".into());
            id
        };
        let app = created("shop");
        let opted_out = created("db");
        bed.engine.edit(&opted_out, |c| {
            c.info.labels.insert("butler.enable".into(), "false".into());
        });
        let running = bed
            .engine
            .run("running", crate::testbed::APP_IMAGE, &["bridge"]);
        let proxy_net = bed.config.proxy.network.clone();

        reconciler(&bed)
            .connect_created(&BTreeSet::from([
                app.clone(),
                opted_out.clone(),
                running.clone(),
            ]))
            .await;

        let on_proxy = |id: &str| {
            bed.engine
                .container(id)
                .unwrap()
                .info
                .is_attached(&proxy_net)
        };
        assert!(
            on_proxy(&app),
            "the created app starts on the proxy network"
        );
        assert!(
            !on_proxy(&opted_out),
            "butler.enable=false is never connected"
        );
        assert!(
            !on_proxy(&running),
            "a running container is the reconcile's to connect, not this"
        );
    }

    #[tokio::test]
    async fn an_app_off_the_proxy_network_is_connected_then_routed() {
        let bed = Bed::new().await;
        let id = bed
            .engine
            .run("lonely", crate::testbed::APP_IMAGE, &["bridge"]);
        bed.engine.edit(&id, |c| {
            c.info.labels.insert("butler.port".into(), "8080".into());
        });

        let report = reconciler(&bed).reconcile("test").await.unwrap();

        assert_eq!(report.connected, vec![id.clone()]);
        let ip = bed.engine.container(&id).unwrap().info.networks[&bed.config.proxy.network];
        let routes = bed.store.routes().await.unwrap();
        assert_eq!(routes[0].app, "lonely");
        assert_eq!(routes[0].servers, vec![format!("{ip}:8080")]);
    }

    #[tokio::test]
    async fn a_config_nginx_refuses_is_kept_out_and_not_tried_again() {
        let bed = Bed::new().await;
        bed.engine
            .on_exec(nginx_refuses("nginx: [emerg] unknown directive \"bogus\""));
        bed.run_app("shop-1", &[("butler.port", "8080")]);
        let mut reconciler = reconciler(&bed);

        let first = reconciler.reconcile("first").await.unwrap();

        assert!(!first.succeeded());
        assert!(matches!(
            first.apply.as_ref().map(|a| &a.status),
            Some(ApplyStatus::Invalid { error }) if error.contains("unknown directive")
        ));
        assert!(first.version.is_some(), "a refused version is recorded");
        assert!(
            bed.store.routes().await.unwrap().is_empty(),
            "routes are only what nginx serves"
        );
        let execs = bed.engine.calls("exec").len();

        let second = reconciler.reconcile("second").await.unwrap();

        assert!(!second.succeeded());
        assert_eq!(second.version, None);
        assert_eq!(
            bed.engine.calls("exec").len(),
            execs,
            "the same tree is not staged and validated again"
        );
    }

    #[tokio::test]
    async fn a_missing_nginx_is_recreated_before_anything_is_applied() {
        let bed = Bed::new().await;
        let name = bed.config.proxy.container_name.clone();
        bed.engine
            .state()
            .containers
            .retain(|_, c| c.info.name != name);
        // Created off the network, the recreated nginx is reached on its published port, where the
        // test bed's stand-in answers.
        bed.engine.state().detached.insert(name.clone());

        let report = reconciler(&bed).reconcile("test").await.unwrap();

        assert_eq!(report.nginx_recreated.as_deref(), Some("Missing"));
        assert_eq!(bed.engine.calls("create"), vec![name.clone()]);
        // The config goes in before the first start: nginx never serves an unvalidated one.
        let calls = bed.engine.state().calls.clone();
        let upload = calls
            .iter()
            .position(|c| c.starts_with(&format!("upload {name}")));
        let start = calls.iter().position(|c| *c == format!("start {name}"));
        assert!(upload.is_some() && upload < start, "{calls:?}");
    }

    #[tokio::test]
    async fn a_batch_reinspects_only_the_containers_it_names() {
        let bed = Bed::new().await;
        let a = bed.run_app("a-1", &[("butler.port", "8080")]);
        let b = bed.run_app("b-1", &[("butler.port", "8080")]);
        let mut reconciler = reconciler(&bed);
        reconciler.reconcile("full").await.unwrap();
        bed.engine.state().calls.clear();
        bed.engine.edit(&b, |c| {
            c.info.state.running = false;
            c.info.state.status = "exited".into();
        });

        let report = reconciler
            .reconcile_changed("events", Some(&BTreeSet::from([b.clone()])))
            .await
            .unwrap();

        let inspected = bed.engine.calls("inspect");
        assert!(inspected.contains(&b), "{inspected:?}");
        assert!(!inspected.contains(&a), "{inspected:?}");
        assert!(bed.engine.calls("list").is_empty());
        // A routed app whose container exited keeps its host, with no servers: it answers 503
        // with the page that says it is down.
        assert_eq!(
            report.changes,
            vec![RouteChange::Changed {
                app: "b-1".into(),
                hosts: vec!["b-1.localhost".into()],
                servers: vec![],
            }]
        );
        assert!(
            report
                .plan
                .routes
                .iter()
                .any(|r| r.app == "b-1" && r.down.is_some())
        );
    }

    #[tokio::test]
    async fn a_container_gone_between_list_and_inspect_is_skipped() {
        let bed = Bed::new().await;
        bed.run_app("a-1", &[("butler.port", "8080")]);
        let gone = bed.run_app("gone-1", &[("butler.port", "8080")]);
        // The list sees it; by the time it is inspected the engine no longer knows it.
        bed.engine.state().vanish_after_list.insert(gone);

        let report = reconciler(&bed).reconcile("test").await.unwrap();

        assert!(report.succeeded());
        assert_eq!(bed.store.routes().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_engine_that_cannot_list_fails_the_round_and_changes_nothing() {
        let bed = Bed::new().await;
        bed.run_app("a-1", &[("butler.port", "8080")]);
        bed.engine.fail_next(
            "list",
            EngineError::Transport("connection reset by peer".into()),
        );

        let error = reconciler(&bed).reconcile("test").await.unwrap_err();

        assert!(error.to_string().contains("connection reset"), "{error}");
        assert!(bed.engine.calls("exec").is_empty());
        assert!(bed.store.routes().await.unwrap().is_empty());
    }
}
