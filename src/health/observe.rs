//! The effects of a health check: what Docker, nginx, the host and systemd say right now, read
//! into `model` data. Every layer is bounded by `health.timeout`, and every app is checked on its
//! own task, so one slow app or a stuck engine call never holds up the others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{StreamExt as _, stream};

use super::model::{
    AppObs, ContainerObs, DiskObs, HostObs, Observations, ProxyObs, RouteObs, UnitObs,
};
use super::{forecast, host, probe};
use crate::config::Config;
use crate::docker::{ContainerInfo, EngineError, EngineHandle, discovery};
use crate::labels::{ENV_VIRTUAL_PORT, LABEL_AUTORESTART, LABEL_PORT};
use crate::nginx::{LIVE_CONF, Nginx, NginxSpec, NginxState};
use crate::proxy::PlanSettings;
use crate::proxy::plan::app_of;
use crate::store::{RouteRow, Store};
use crate::systemd::supervisor::{Bus, Supervisor};

/// How many apps are checked at once.
const APP_CONCURRENCY: usize = 16;
/// The Host header of the request that asks whether nginx answers at all.
const PROXY_PROBE_HOST: &str = "butler-health.invalid";

/// Samples of a disk's free space are stored under this metric plus the path.
pub fn disk_metric(path: &str) -> String {
    format!("disk_free_bytes:{path}")
}

/// Reads everything a round needs. Cheap to share: the health-monitor, the recovery worker (to
/// verify a repair) and the CLI each hold one.
pub struct Observer {
    docker: EngineHandle,
    config: Arc<Config>,
    store: Store,
    nginx: Nginx,
    supervisor: tokio::sync::Mutex<Option<Supervisor>>,
    /// Restart count per container id as of the previous round.
    restarts: Mutex<HashMap<String, u64>>,
    /// Apps whose checks did not finish in the previous round: checked first in the next one, so
    /// on a slow engine every app is reached in turn instead of the same ones always missing out.
    late: Mutex<BTreeSet<String>>,
    /// Container names that did not resolve at the last lookup. Docker's DNS can lag a connect
    /// by a moment, so a name counts as unresolvable only when it failed twice in a row: a
    /// single miss right after a repair reconnected or replaced a container opened an incident
    /// that the next round resolved again.
    unresolved: Mutex<BTreeSet<String>>,
    docker_root: tokio::sync::OnceCell<Option<PathBuf>>,
}

impl Observer {
    pub fn new(docker: EngineHandle, config: Arc<Config>, store: Store) -> Self {
        let nginx = Nginx::new(docker.clone(), NginxSpec::from_config(&config.proxy));
        Self {
            docker,
            config,
            store,
            nginx,
            supervisor: tokio::sync::Mutex::new(None),
            restarts: Mutex::new(HashMap::new()),
            late: Mutex::new(BTreeSet::new()),
            unresolved: Mutex::new(BTreeSet::new()),
            docker_root: tokio::sync::OnceCell::new(),
        }
    }

    pub fn engine(&self) -> &EngineHandle {
        &self.docker
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn nginx(&self) -> &Nginx {
        &self.nginx
    }

    fn timeout(&self) -> Duration {
        self.config.health.timeout.0
    }

    /// How long the app checks of one round may take together: a check interval, and at least
    /// one app's own bound. Each app is bounded by itself, but they run `APP_CONCURRENCY` at a
    /// time, so without this the round would grow with the number of apps.
    pub fn apps_budget(&self) -> Duration {
        apps_budget(&self.config)
    }

    /// Every layer, at once. `known` are apps seen before, so an app whose containers all
    /// stopped is still reported (as down) instead of vanishing.
    pub async fn observe(&self, known: &BTreeSet<String>) -> Observations {
        let (proxy, host, units) = tokio::join!(
            self.observe_proxy(),
            self.observe_host(),
            self.observe_units()
        );
        let apps = self.observe_apps(known, None, proxy.serving()).await;
        Observations {
            apps_listed: apps.is_some(),
            apps: apps.unwrap_or_default(),
            proxy,
            host,
            units,
        }
    }

    /// nginx's address on the proxy network (reachable from the host and from a butler in a
    /// container on that network alike), else its published port on 127.0.0.1.
    pub async fn nginx_addr(&self) -> SocketAddr {
        match self.nginx.addr().await {
            Ok(found) => found.addr,
            Err(_) => self.nginx.published_addr(),
        }
    }

    fn plan_settings(&self) -> PlanSettings {
        PlanSettings {
            domain: self.config.proxy.domain.clone(),
            network: self.config.proxy.network.clone(),
            own_container_names: vec![self.config.proxy.container_name.clone()],
            own_container_ids: Vec::new(),
            // Checks see every instance, held or not: a deploy's gate judges the new ones itself.
            held_deployments: Default::default(),
            only_label: self.config.docker.only_label.clone(),
            also_reachable: Vec::new(),
            routed_apps: Default::default(),
        }
    }

    /// The apps to check and their containers (ids), from one list of every container.
    async fn app_members(
        &self,
        known: &BTreeSet<String>,
        routes: &BTreeMap<String, RouteRow>,
    ) -> Result<BTreeMap<String, Vec<String>>, EngineError> {
        let labels: Vec<String> = self.config.docker.only_label.iter().cloned().collect();
        let listed = self.docker.list_containers(&labels).await?;
        let settings = self.plan_settings();
        let mut members: BTreeMap<String, Vec<(bool, String)>> = BTreeMap::new();
        for container in listed {
            let snapshot = discovery::summary_snapshot(&container);
            let running = snapshot.running;
            if let Some(app) = app_of(&snapshot, &settings) {
                members.entry(app).or_default().push((running, snapshot.id));
            }
        }
        // Apps with a running container, a route, or seen before; stopped containers of apps
        // nobody ever saw running (old test leftovers, one-off jobs) are not apps to watch.
        Ok(members
            .into_iter()
            .filter(|(app, containers)| {
                containers.iter().any(|(running, _)| *running)
                    || routes.contains_key(app)
                    || known.contains(app)
            })
            .map(|(app, containers)| (app, containers.into_iter().map(|(_, id)| id).collect()))
            .collect())
    }

    /// Every app's checks (or only those in `only`). `proxy_serving` false skips the requests
    /// through the proxy, which can only fail then. `None` when Docker did not list containers.
    pub async fn observe_apps(
        &self,
        known: &BTreeSet<String>,
        only: Option<&BTreeSet<String>>,
        proxy_serving: bool,
    ) -> Option<Vec<AppObs>> {
        let routes: BTreeMap<String, RouteRow> = match self.store.routes().await {
            Ok(rows) => rows.into_iter().map(|r| (r.app.clone(), r)).collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot read the routes; apps are checked without them");
                BTreeMap::new()
            }
        };
        let mut members = match self.app_members(known, &routes).await {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(%error, "cannot list containers; no app checks this round");
                return None;
            }
        };
        if let Some(only) = only {
            members.retain(|app, _| only.contains(app));
        }
        let nginx_addr = if proxy_serving {
            Some(self.nginx_addr().await)
        } else {
            None
        };
        let bound = self.timeout() * 3;
        let budget = self.apps_budget();
        let phase_deadline = tokio::time::Instant::now() + budget;
        let count = members.len();
        let mut members: Vec<(String, Vec<String>)> = members.into_iter().collect();
        // Read once for the round, not once per app.
        let stop_marks = &self.stop_marks().await;
        {
            let late = self.late.lock().unwrap_or_else(|e| e.into_inner());
            members.sort_by_key(|(app, _)| !late.contains(app));
        }
        let mut apps: Vec<AppObs> = stream::iter(members)
            .map(|(app, ids)| {
                let route = routes.get(&app).map(route_obs);
                async move {
                    let own_deadline = tokio::time::Instant::now() + bound;
                    match tokio::time::timeout_at(
                        own_deadline.min(phase_deadline),
                        self.observe_app(&app, &ids, route.clone(), nginx_addr, stop_marks),
                    )
                    .await
                    {
                        Ok(obs) => obs,
                        Err(_) if own_deadline <= phase_deadline => {
                            timed_out(app, route, format!("did not finish within {bound:?}"))
                        }
                        Err(_) => timed_out(
                            app,
                            route,
                            format!(
                                "were not reached within the round's {budget:?} for {count} apps \
                                 (a slow engine); they run first next round"
                            ),
                        ),
                    }
                }
            })
            .buffer_unordered(APP_CONCURRENCY)
            .collect()
            .await;
        apps.sort_by(|a, b| a.app.cmp(&b.app));
        if only.is_none() {
            *self.late.lock().unwrap_or_else(|e| e.into_inner()) = apps
                .iter()
                .filter(|a| a.incomplete.is_some())
                .map(|a| a.app.clone())
                .collect();
        }
        if proxy_serving {
            self.resolve_names(&mut apps).await;
        }
        let seen: HashMap<String, u64> = apps
            .iter()
            .flat_map(|a| &a.containers)
            .map(|c| (c.id.clone(), c.restart_count))
            .collect();
        let mut restarts = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
        if only.is_none() {
            *restarts = seen;
        } else {
            restarts.extend(seen);
        }
        Some(apps)
    }

    /// The containers of `app` as Docker reports them, without any probe: what a repair needs
    /// to know about them (labels, state, address). `None` when the app has no containers.
    pub async fn containers_of(&self, app: &str) -> Option<Vec<ContainerObs>> {
        let only = BTreeSet::from([app.to_owned()]);
        let members = self.app_members(&only, &BTreeMap::new()).await.ok()?;
        let ids = members.get(app)?;
        let marks = self.stop_marks().await;
        Some(
            self.observe_app(app, ids, None, None, &marks)
                .await
                .containers,
        )
    }

    /// What the engine's events said of user stops; none when the store cannot say (a user's
    /// stop then looks like a crash for a round, which is all it costs).
    async fn stop_marks(&self) -> crate::store::StopMarks {
        self.store.stop_marks().await.unwrap_or_else(|error| {
            tracing::warn!("cannot read which containers were stopped: {error}");
            Default::default()
        })
    }

    async fn observe_app(
        &self,
        app: &str,
        ids: &[String],
        route: Option<RouteObs>,
        nginx_addr: Option<SocketAddr>,
        stop_marks: &crate::store::StopMarks,
    ) -> AppObs {
        let network = &self.config.proxy.network;
        let inspected =
            futures_util::future::join_all(ids.iter().map(|id| self.docker.inspect_container(id)))
                .await;
        let mut infos: Vec<ContainerInfo> = inspected
            .into_iter()
            .filter_map(|i| i.ok().flatten())
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let mut containers: Vec<ContainerObs> = {
            let previous = self.restarts.lock().unwrap_or_else(|e| e.into_inner());
            infos
                .iter()
                .map(|info| container_obs(info, network, &previous, stop_marks))
                .collect()
        };
        containers.sort_by(|a, b| a.name.cmp(&b.name));

        let timeout = self.timeout();
        let mut tcp = Vec::new();
        let mut http_direct = Vec::new();
        if let Some(route) = &route {
            let host = route
                .hosts
                .first()
                .map(String::as_str)
                .unwrap_or("localhost");
            // A server at an address no running container of the app has cannot answer: say so
            // at once instead of waiting out a connect timeout to a vanished address, which held
            // up every round (and every repair's check) by `timeout` while an app was down.
            let addresses: BTreeSet<IpAddr> = containers.iter().filter_map(|c| c.ip).collect();
            let addresses = &addresses;
            let probes = route.servers.iter().map(|server| async move {
                if addresses.contains(&server.ip()) {
                    probe::probe(*server, Some((host, "/")), timeout).await
                } else {
                    (probe::vanished(*server), None)
                }
            });
            for (t, h) in futures_util::future::join_all(probes).await {
                tcp.push(t);
                http_direct.extend(h);
            }
            // Why a connection failed is in the container's sockets: read them only then.
            if tcp.iter().any(|t| !t.ok) {
                for (obs, info) in containers.iter_mut().zip(&infos) {
                    if obs.running() {
                        let snapshot = discovery::snapshot_from_inspect(info, &[]);
                        obs.listening = discovery::listening_ports(info, &snapshot)
                            .await
                            .map(|l| l.ports);
                    }
                }
            }
        }
        // nginx sends to the same servers: when none of them accepted a connection, a request
        // through it can only fail, and to a vanished address it fails by waiting out the whole
        // timeout, which held up every round and every repair's check by `timeout`.
        let no_server_answers = !tcp.is_empty() && tcp.iter().all(|t| !t.ok);
        let http_proxy = match (nginx_addr, &route) {
            _ if no_server_answers => None,
            (Some(addr), Some(route)) => match route.hosts.first() {
                Some(host) => Some(probe::through_proxy(addr, host, "/", timeout).await),
                None => None,
            },
            _ => None,
        };
        AppObs {
            app: app.to_owned(),
            containers,
            route,
            tcp,
            http_direct,
            http_proxy,
            dns: None,
            incomplete: None,
        }
    }

    /// Asks the resolver inside the nginx container (Docker's DNS on the proxy network) for every
    /// running container's name, in one exec. Unknown when the image has no `getent`.
    async fn resolve_names(&self, apps: &mut [AppObs]) {
        let names: BTreeSet<String> = apps
            .iter()
            .flat_map(|a| &a.containers)
            .filter(|c| c.running() && c.ip.is_some())
            .map(|c| c.name.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        let mut argv = vec!["getent", "hosts"];
        argv.extend(names.iter().map(String::as_str));
        let output = match tokio::time::timeout(self.timeout(), self.nginx.exec(&argv)).await {
            // 0: all found, 2: some not found; anything else means no usable answer.
            Ok(Ok(out)) if out.exit_code == 0 || out.exit_code == 2 => out.output,
            _ => return,
        };
        let resolved: BTreeSet<&str> = output
            .lines()
            .flat_map(|line| line.split_whitespace().skip(1))
            .collect();
        let missed_twice: BTreeSet<String> = {
            let mut unresolved = self.unresolved.lock().unwrap_or_else(|e| e.into_inner());
            let missed: BTreeSet<String> = names
                .iter()
                .filter(|n| !resolved.contains(n.as_str()))
                .cloned()
                .collect();
            let twice = missed.intersection(&unresolved).cloned().collect();
            // A lookup of some apps (a repair's check) leaves the others' misses as they were.
            unresolved.retain(|n| !names.contains(n));
            unresolved.extend(missed);
            twice
        };
        for app in apps {
            let running: Vec<&ContainerObs> = app
                .containers
                .iter()
                .filter(|c| c.running() && c.ip.is_some())
                .collect();
            if !running.is_empty() {
                app.dns = Some(running.iter().all(|c| !missed_twice.contains(&c.name)));
            }
        }
    }

    pub async fn observe_proxy(&self) -> ProxyObs {
        let timeout = self.timeout();
        let name = &self.config.proxy.container_name;
        let mut obs = ProxyObs {
            state: "unknown".into(),
            detail: String::new(),
            answers: None,
            live_hash: None,
            applied_hash: None,
            drift: None,
            config_error: None,
        };
        let state = match tokio::time::timeout(timeout, self.nginx.state()).await {
            Ok(Ok(state)) => state,
            Ok(Err(error)) => {
                obs.state = if matches!(error, crate::nginx::NginxError::Foreign { .. }) {
                    "foreign".into()
                } else {
                    "unknown".into()
                };
                obs.detail = error.to_string();
                return obs;
            }
            Err(_) => {
                obs.detail = format!("inspecting nginx container {name} took over {timeout:?}");
                return obs;
            }
        };
        let (label, detail) = match &state {
            NginxState::Missing => ("missing", format!("the nginx container {name} is missing")),
            NginxState::Running { .. } => ("running", format!("nginx container {name} runs")),
            NginxState::Stopped { status, .. } => (
                "stopped",
                format!("the nginx container {name} is not running ({status})"),
            ),
            NginxState::CrashLooping { restart_count, .. } => (
                "crash_looping",
                format!("the nginx container {name} keeps crashing ({restart_count} restarts)"),
            ),
            NginxState::Outdated { .. } => (
                "outdated",
                format!(
                    "the nginx container {name} was created from another image, network or port than the config says"
                ),
            ),
        };
        obs.state = label.into();
        obs.detail = detail;
        if !obs.serving() {
            return obs;
        }
        let addr = self.nginx_addr().await;
        let (tcp, http) = probe::probe(addr, Some((PROXY_PROBE_HOST, "/")), timeout).await;
        let mut answer = http.unwrap_or(tcp);
        answer.ok = answer.status.is_some();
        obs.answers = Some(answer);

        // Waiting for the apply lock and reading the tree take longer than one probe.
        let config_timeout = timeout * 3;
        let (drift, test) = tokio::join!(
            tokio::time::timeout(config_timeout, self.drift()),
            tokio::time::timeout(config_timeout, self.nginx.test_config(LIVE_CONF)),
        );
        if let Ok(Ok((live, applied, drift))) = drift {
            obs.live_hash = live;
            obs.applied_hash = applied;
            obs.drift = drift;
        }
        if let Ok(Ok(verdict)) = test {
            // An exec into a container that stopped meanwhile fails too: that is the proxy
            // going down, which the next round sees, not a refused config.
            let still_running = matches!(self.nginx.state().await, Ok(NginxState::Running { .. }));
            if verdict.is_ok() || still_running {
                obs.config_error = Some(verdict.err());
            }
        }
        obs
    }

    /// The live version, the version the butler applied (or an operator pinned), and the files
    /// that differ between them. Read under the apply lock: mid-apply, `live` already points at a
    /// version the store records a moment later, which is not drift.
    async fn drift(
        &self,
    ) -> Result<(Option<String>, Option<String>, Option<Vec<String>>), anyhow::Error> {
        let _lock = self.store.lock_apply().await?;
        let live = self.nginx.live_version().await?;
        let applied = match self.store.pinned_version().await? {
            Some(id) => self.store.get_version(id).await?,
            None => self.store.last_good().await?,
        };
        let (Some(live), Some(applied)) = (live, applied) else {
            return Ok((None, None, None));
        };
        let applied_hash = applied.info.hash.clone();
        if live != applied_hash {
            return Ok((Some(live), Some(applied_hash), Some(Vec::new())));
        }
        let now = self.nginx.read_version(&live).await?;
        Ok((
            Some(live),
            Some(applied_hash),
            Some(tree_diff(&applied.files, &now)),
        ))
    }

    pub async fn observe_host(&self) -> HostObs {
        let root = self
            .docker_root
            .get_or_init(|| async {
                let info = tokio::time::timeout(self.timeout(), self.docker.root_dir()).await;
                info.ok()
                    .and_then(Result::ok)
                    .flatten()
                    .map(PathBuf::from)
                    // The engine's path means something here only when it runs on this host.
                    .filter(|p| p.exists())
            })
            .await
            .clone();
        let mut paths: Vec<(String, PathBuf)> =
            vec![("state".into(), self.config.state.dir.clone())];
        if let Some(root) = root {
            paths.push(("docker".into(), root));
        }
        let mut disks: Vec<DiskObs> = Vec::new();
        let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
        let now_ms = crate::clock::now_ms();
        for (role, path) in paths {
            let Ok((total, free)) = host::disk_space(&path) else {
                continue;
            };
            if let Some(&index) = host::filesystem_id(&path).and_then(|id| seen.get(&id)) {
                let disk: &mut DiskObs = &mut disks[index];
                disk.role = format!("{}, {role}", disk.role);
                continue;
            }
            let path_text = path.display().to_string();
            let samples = self
                .store
                .samples(disk_metric(&path_text), now_ms - forecast::WINDOW_MS)
                .await
                .unwrap_or_default();
            if let Some(id) = host::filesystem_id(&path) {
                seen.insert(id, disks.len());
            }
            disks.push(DiskObs {
                role,
                path: path_text,
                total_bytes: total,
                free_bytes: free,
                hours_left: forecast::hours_until_full(&samples, now_ms),
            });
        }
        let (mem_total_bytes, mem_available_bytes) = host::memory();
        HostObs {
            disks,
            mem_total_bytes,
            mem_available_bytes,
            load1: host::load1(),
            cpus: host::cpus(),
        }
    }

    /// The butler's units through the supervisor; `None` without systemd.
    pub async fn observe_units(&self) -> Option<Vec<UnitObs>> {
        if !sd_notify::booted().unwrap_or(false) {
            return None;
        }
        let mut guard = self.supervisor.lock().await;
        if guard.is_none() {
            *guard = tokio::time::timeout(self.timeout(), Supervisor::connect(Bus::System))
                .await
                .ok()
                .and_then(Result::ok);
        }
        let supervisor = guard.as_ref()?;
        match tokio::time::timeout(self.timeout(), supervisor.list()).await {
            Ok(Ok(units)) => Some(
                units
                    .into_iter()
                    .map(|u| UnitObs {
                        unit: u.unit,
                        load_state: u.load_state,
                        active_state: u.active_state,
                        sub_state: u.sub_state,
                        result: u.result,
                        restarts: u.restarts,
                    })
                    .collect(),
            ),
            _ => {
                *guard = None;
                None
            }
        }
    }
}

/// See [`Observer::apps_budget`].
pub fn apps_budget(config: &Config) -> Duration {
    config.health.interval.0.max(config.health.timeout.0 * 3)
}

/// Paths that differ, were added or went missing between the recorded tree and the live one.
pub fn tree_diff(
    recorded: &BTreeMap<String, String>,
    live: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut changed: Vec<String> = recorded
        .iter()
        .filter(|(path, content)| live.get(*path) != Some(content))
        .map(|(path, _)| path.clone())
        .collect();
    changed.extend(live.keys().filter(|p| !recorded.contains_key(*p)).cloned());
    changed.sort();
    changed
}

fn container_obs(
    info: &ContainerInfo,
    network: &str,
    previous: &HashMap<String, u64>,
    stop_marks: &crate::store::StopMarks,
) -> ContainerObs {
    let id = info.id.clone();
    let state = &info.state;
    let restart_count = info.restart_count;
    let running = state.running;
    let since = |t: Option<&str>| {
        let at = humantime::parse_rfc3339_weak(t?).ok()?;
        Some(
            std::time::SystemTime::now()
                .duration_since(at)
                .ok()?
                .as_secs_f64(),
        )
    };
    ContainerObs {
        name: info.name.clone(),
        state: match state.status.as_str() {
            _ if state.restarting => "restarting".into(),
            "" => "unknown".into(),
            status => status.to_owned(),
        },
        exit_code: (!running).then_some(state.exit_code),
        oom_killed: state.oom_killed,
        new_restarts: previous
            .get(&id)
            .map_or(0, |before| restart_count.saturating_sub(*before)),
        restart_count,
        up_secs: running
            .then(|| since(state.started_at.as_deref()))
            .flatten(),
        started_at: state.started_at.clone(),
        ip: running
            .then(|| info.networks.get(network).copied())
            .flatten(),
        listening: None,
        autorestart: info
            .labels
            .get(LABEL_AUTORESTART)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        forced_port: info
            .labels
            .get(LABEL_PORT)
            .or_else(|| info.env.get(ENV_VIRTUAL_PORT))
            .cloned(),
        down_secs: (!running)
            .then(|| since(state.finished_at.as_deref()))
            .flatten(),
        finished_at: (!running).then(|| state.finished_at.clone()).flatten(),
        stopped_by_user: !running && stop_marks.stopped.contains(&id),
        stop_requested: stop_marks.requested.contains(&id),
        id,
    }
}

fn route_obs(row: &RouteRow) -> RouteObs {
    RouteObs {
        hosts: row.hosts.clone(),
        servers: row.servers.iter().filter_map(|s| s.parse().ok()).collect(),
        port: row.port,
        reason: row.reason.clone(),
    }
}

/// An app whose checks did not finish; `why` completes "the checks ...".
fn timed_out(app: String, route: Option<RouteObs>, why: String) -> AppObs {
    AppObs {
        tcp: Vec::new(),
        app,
        containers: Vec::new(),
        route,
        http_direct: Vec::new(),
        http_proxy: None,
        dns: None,
        incomplete: Some(format!("the checks {why}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_diff_names_changed_added_and_missing_files() {
        let recorded = BTreeMap::from([
            ("nginx.conf".to_owned(), "a".to_owned()),
            ("sites/shop.conf".to_owned(), "b".to_owned()),
            ("sites/blog.conf".to_owned(), "c".to_owned()),
        ]);
        let mut live = recorded.clone();
        assert!(tree_diff(&recorded, &live).is_empty());
        live.insert("sites/shop.conf".into(), "edited".into());
        live.remove("sites/blog.conf");
        live.insert("sites/evil.conf".into(), "x".into());
        assert_eq!(
            tree_diff(&recorded, &live),
            ["sites/blog.conf", "sites/evil.conf", "sites/shop.conf"]
        );
    }
}
