//! The effects of recovery: each `Action` carried out through the same code the proxy uses (the
//! `Reconciler`, the `Nginx` handle, the supervisor), and `verify`, which re-runs the health check
//! that found the problem. Anything that applies a config holds the store's apply lock, so a
//! repair never races the dynamic-proxy worker or an operator's rollback.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use super::strategy::{Action, Facts};
use crate::health::classify::{self, Rules};
use crate::health::model::{AppObs, ContainerObs};
use crate::health::observe::Observer;
use crate::health::{Kind, component_app, component_unit};
use crate::nginx::VERSIONS_DIR;
use crate::proxy::reconcile::Reconciler;
use crate::systemd::supervisor::{Bus, JobKind, Supervisor};
use crate::systemd::units::{ButlerUnit, Worker};

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("reconcile failed: {0}")]
    Reconcile(#[from] crate::proxy::reconcile::ReconcileError),
    #[error("{0}")]
    Nginx(#[from] crate::nginx::NginxError),
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Network(#[from] crate::docker::network::NetworkError),
    #[error("systemd: {0}")]
    Systemd(#[from] crate::systemd::supervisor::SupervisorError),
    #[error("Docker call `{op}` on container {container} failed: {source}")]
    Docker {
        op: &'static str,
        container: String,
        source: crate::docker::EngineError,
    },
    #[error("{0}")]
    Failed(String),
    /// The repair ran and changed nothing (a re-render gave the config already serving): doing
    /// it again can only give the same, so the incident is escalated at once with this reason.
    #[error("{0}")]
    NoEffect(String),
}

/// Carries out repairs and checks them. One per process; cheap to share behind an `Arc`.
pub struct Repairer {
    observer: Arc<Observer>,
    reconciler: tokio::sync::Mutex<Reconciler>,
    rules: Rules,
}

impl Repairer {
    pub fn new(observer: Arc<Observer>) -> Self {
        let reconciler = Reconciler::new(
            observer.engine().clone(),
            observer.config().clone(),
            observer.store().clone(),
        );
        let rules = crate::health::monitor::rules_from(observer.config());
        Self {
            observer,
            reconciler: tokio::sync::Mutex::new(reconciler),
            rules,
        }
    }

    pub fn observer(&self) -> &Arc<Observer> {
        &self.observer
    }

    /// nginx runs (whether it answers is the proxy check's business).
    async fn proxy_serving(&self) -> bool {
        matches!(
            self.observer.nginx().state().await,
            Ok(crate::nginx::NginxState::Running { .. }
                | crate::nginx::NginxState::Outdated { .. })
        )
    }

    /// One app's observation, or `None` when it has no containers any more.
    async fn observe_app(&self, app: &str, proxy_serving: bool) -> Option<AppObs> {
        let only = BTreeSet::from([app.to_owned()]);
        self.observer
            .observe_apps(&only, Some(&only), proxy_serving)
            .await?
            .into_iter()
            .next()
    }

    /// What the strategy for an incident of `kind` on `component` depends on. Whether the app opted
    /// in to restarts is read (labels only, no probes) just for the kinds a restart repairs.
    pub async fn facts(&self, kind: Kind, component: &str) -> Facts {
        let config = self.observer.config();
        let restartable = matches!(
            kind,
            Kind::ContainerDown | Kind::AppUnresponsive | Kind::AppError
        );
        let opted_in = match component_app(component) {
            Some(app) if restartable => self
                .observer
                .containers_of(app)
                .await
                .is_some_and(|containers| containers.iter().any(|c| c.autorestart)),
            _ => false,
        };
        Facts {
            restart_apps: config.recovery.restart_apps,
            opted_in,
            systemd: sd_notify::booted().unwrap_or(false),
        }
    }

    /// Carries out `action` for an incident on `component`; returns what was done.
    pub async fn run(
        &self,
        action: &Action,
        component: &str,
        cause: &str,
    ) -> Result<String, RepairError> {
        match action {
            Action::Reconcile => {
                let report = self.reconcile_report(cause).await?;
                let unchanged = report
                    .apply
                    .as_ref()
                    .is_none_or(|a| a.status == crate::proxy::apply::ApplyStatus::Unchanged)
                    && report.nginx_recreated.is_none()
                    && report.connected.is_empty();
                if unchanged {
                    return Err(RepairError::NoEffect(unchanged_reason(&report, component)));
                }
                Ok(report.summary())
            }
            Action::RecreateProxy => {
                let done = self.reconcile(cause).await?;
                Ok(format!("nginx ensured; {done}"))
            }
            Action::Reconnect => {
                let app = app_of(component)?;
                let containers = self.containers(app).await?;
                let network = &self.observer.config().proxy.network;
                let mut connected = Vec::new();
                for c in containers.iter().filter(|c| c.running() && c.ip.is_none()) {
                    crate::docker::network::connect(&**self.observer.engine(), &c.id, network)
                        .await?;
                    connected.push(c.name.clone());
                }
                let done = self.reconcile(cause).await?;
                Ok(format!(
                    "connected {} to {network}; {done}",
                    connected.join(", ")
                ))
            }
            Action::ReapplyLastGood => self.reapply_last_good().await,
            Action::ResetAndStartUnit => {
                let unit_name = component_unit(component)
                    .ok_or_else(|| RepairError::Failed(format!("{component} is not a unit")))?;
                let worker = Worker::ALL
                    .into_iter()
                    .find(|w| w.unit() == unit_name)
                    .ok_or_else(|| {
                        RepairError::Failed(format!("{unit_name} is not a butler unit"))
                    })?;
                let supervisor = Supervisor::connect(Bus::System).await?;
                let unit = ButlerUnit::Worker(worker);
                supervisor.reset_failed(unit).await?;
                let outcome = supervisor.run_job(JobKind::Start, unit).await?;
                if outcome.succeeded() {
                    Ok(format!("reset {unit_name} and started it"))
                } else {
                    Err(RepairError::Failed(format!(
                        "starting {unit_name} ended with result {}",
                        outcome.result
                    )))
                }
            }
            Action::RestartApp => {
                let app = app_of(component)?;
                let containers = self.containers(app).await?;
                let docker = self.observer.engine();
                let mut done = Vec::new();
                for c in &containers {
                    let err = |op| {
                        move |source| RepairError::Docker {
                            op,
                            container: c.name.clone(),
                            source,
                        }
                    };
                    if c.running() {
                        docker
                            .restart_container(&c.id, 5)
                            .await
                            .map_err(err("restart"))?;
                        done.push(format!("restarted {}", c.name));
                    } else {
                        docker.start_container(&c.id).await.map_err(err("start"))?;
                        done.push(format!("started {}", c.name));
                    }
                }
                // Its address may have changed; the dynamic proxy would notice, but it may be down.
                let routed = self.reconcile(cause).await?;
                Ok(format!("{}; {routed}", done.join(", ")))
            }
            Action::None { why } => Err(RepairError::Failed(why.clone())),
        }
    }

    /// The app's containers, as a repair needs them (no probes).
    async fn containers(&self, app: &str) -> Result<Vec<ContainerObs>, RepairError> {
        self.observer
            .containers_of(app)
            .await
            .ok_or_else(|| RepairError::Failed(format!("app {app} has no containers")))
    }

    async fn reconcile(&self, cause: &str) -> Result<String, RepairError> {
        Ok(self.reconcile_report(cause).await?.summary())
    }

    /// A full reconcile; an error unless its config went live (or was already live).
    async fn reconcile_report(
        &self,
        cause: &str,
    ) -> Result<crate::proxy::reconcile::ReconcileReport, RepairError> {
        let report = self.reconciler.lock().await.reconcile(cause).await?;
        if let Some(pinned) = report.pinned {
            return Err(RepairError::Failed(format!(
                "the config is pinned to version {pinned} by `butler proxy rollback`; run `butler proxy-update` to resume"
            )));
        }
        if report.succeeded() {
            Ok(report)
        } else {
            let why = match report.apply.as_ref().map(|a| &a.status) {
                Some(crate::proxy::apply::ApplyStatus::Invalid { error }) => {
                    format!("nginx -t refused the new config: {error}")
                }
                Some(crate::proxy::apply::ApplyStatus::RolledBack { reason, .. }) => {
                    format!("the new config was rolled back: {reason}")
                }
                Some(crate::proxy::apply::ApplyStatus::Failed { error }) => error.clone(),
                _ => report.summary(),
            };
            Err(RepairError::Failed(why))
        }
    }

    /// Writes the applied (or pinned) version back over the live one: its directory is removed
    /// first so files added by hand go too, then staged, validated, pointed to and reloaded.
    async fn reapply_last_good(&self) -> Result<String, RepairError> {
        let store = self.observer.store();
        let _lock = store.lock_apply().await?;
        let version = match store.pinned_version().await? {
            Some(id) => store.get_version(id).await?,
            None => store.last_good().await?,
        }
        .ok_or_else(|| RepairError::Failed("no applied config version is recorded".into()))?;
        let nginx = self.observer.nginx();
        let hash = &version.info.hash;
        let dir = format!("{VERSIONS_DIR}/{hash}");
        // Best effort: an image without `rm` keeps extra files, which `nginx -t` still checks.
        let _ = nginx.exec(&["rm", "-rf", "--", &dir]).await;
        nginx.stage(&version.files, hash).await?;
        if let Err(error) = nginx.test_config(&format!("{dir}/nginx.conf")).await? {
            return Err(RepairError::Failed(format!(
                "nginx -t refuses the recorded version {}: {error}",
                version.info.id
            )));
        }
        nginx.point_live(hash).await?;
        nginx.reload().await?;
        Ok(format!(
            "re-applied config version {} ({})",
            version.info.id,
            &hash[..hash.len().min(12)]
        ))
    }

    /// Re-runs the check that found `kind` on `component`: `Ok` when the problem is gone,
    /// `Err` with what the check says now.
    /// A check that could not finish, or any other serious problem left on the app, is no pass.
    pub async fn verify(&self, kind: Kind, component: &str) -> Result<(), String> {
        let findings = if let Some(app) = component_app(component) {
            let serving = self.proxy_serving().await;
            match self.observe_app(app, serving).await {
                Some(obs) => {
                    if let Some(why) = &obs.incomplete {
                        return Err(why.clone());
                    }
                    let findings = classify::classify_app(&obs, serving, &self.rules).1;
                    if let Some(other) = findings
                        .iter()
                        .find(|f| f.severity >= crate::health::Severity::High)
                    {
                        return Err(other.summary.clone());
                    }
                    findings
                }
                None => Vec::new(),
            }
        } else if component_unit(component).is_some() {
            match self.observer.observe_units().await {
                Some(units) => classify::classify_units(&units),
                None => return Err("systemd is not reachable to check the unit".into()),
            }
        } else if component == crate::health::PROXY_COMPONENT {
            let proxy = self.observer.observe_proxy().await;
            let findings = classify::classify_proxy(&proxy);
            if findings.is_empty() && !(proxy.serving() && proxy.config_checked()) {
                return Err(format!(
                    "the proxy checks did not finish ({})",
                    proxy.detail
                ));
            }
            findings
        } else {
            classify::classify_host(&self.observer.observe_host().await, &self.rules)
        };
        match findings
            .into_iter()
            .find(|f| f.kind == kind.as_str() && f.component == component)
        {
            Some(finding) => Err(finding.summary),
            None => Ok(()),
        }
    }

    /// `verify` until it passes or `within` is over: a restarted container or nginx needs a
    /// moment before it answers.
    pub async fn verify_within(
        &self,
        kind: Kind,
        component: &str,
        within: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let result = self.verify(kind, component).await;
            if result.is_ok() || tokio::time::Instant::now() >= deadline {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Why a re-render that changed nothing is all the planner can do for `component`: what its
/// route is now and what keeps its containers out of a better one.
fn unchanged_reason(report: &crate::proxy::reconcile::ReconcileReport, component: &str) -> String {
    let mut text = "re-detecting the ports and re-rendering left the config as it was".to_owned();
    let Some(app) = component_app(component) else {
        return text;
    };
    if let Some(route) = report.plan.routes.iter().find(|r| r.app == app) {
        let servers: Vec<String> = route
            .servers
            .iter()
            .map(|s| format!("{}:{} ({})", s.ip, s.port, s.port_reason))
            .collect();
        if !servers.is_empty() {
            text.push_str(&format!(
                "; the route still sends to {}",
                servers.join(", ")
            ));
        }
    }
    for problem in report
        .plan
        .problems
        .iter()
        .filter(|p| p.app.as_deref() == Some(app))
    {
        text.push_str(&format!("; {}: {}", problem.container_name, problem.reason));
    }
    text.push_str("; doing it again cannot help: fix what the incident names");
    text
}

fn app_of(component: &str) -> Result<&str, RepairError> {
    component_app(component)
        .ok_or_else(|| RepairError::Failed(format!("{component} is not an app")))
}
