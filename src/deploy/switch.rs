//! One deploy (or rollback), in order. Before anything changes: the engine answers, the proxy
//! serves and is not pinned, the name is free, the disk has room, the image exists or builds, the
//! port is known. Then: record the deployment (its gate `pending`), start the instances (held out of
//! the upstream by the planner), wait until each is healthy, mark it `serving` and reconcile (the new
//! servers join the upstream), mark the old deployments `retired` and reconcile (they leave it),
//! wait until nginx's old-generation workers have finished their requests, stop and remove the old
//! instances. A failure before the switch removes the new instances and leaves the old serving.
//!
//! The reconciles are the proxy's own (`Reconciler::reconcile`, under the apply lock), so a deploy
//! works with or without the dynamic-proxy worker running; the worker reconciling at the same time
//! reads the same gates and can only apply the same routes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::checks::{self, CheckError};
use super::naming::{self, NamingError, SourceKind};
use super::rollout::Rollout;
use super::source::{self, Source, SourceError};
use crate::config::Config;
use crate::docker::{EngineError, EngineHandle, ImageInfo, network};
use crate::nginx::{Nginx, NginxError, NginxSpec, NginxState};
use crate::proxy::reconcile::{ReconcileError, Reconciler};
use crate::store::{DeployOutcome, Deployment, Gate, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Naming(#[from] NamingError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(
        "the proxy is not serving: nginx container {container} is {state}; start the butler (`systemctl start butler.target`, or `butler run`) and deploy again"
    )]
    ProxyDown { container: String, state: String },
    #[error(
        "the proxy config is pinned to version {0} by `butler proxy rollback`, so a deploy could not switch traffic: run `butler proxy-update` to unpin it, then deploy again"
    )]
    Pinned(i64),
    #[error(
        "another deploy or rollback of app {0} is running; wait for it to finish and try again"
    )]
    Busy(String),
    #[error("no deployments of app {0} are recorded; see `butler deployments`")]
    UnknownApp(String),
    #[error("nothing to roll back to: {0}; see `butler deployments {1}`")]
    NothingToRollBack(String, String),
    #[error(
        "the image {image} of revision {revision} is no longer on this host (removed or pruned); deploy that revision again from its source"
    )]
    ImageGone { revision: String, image: String },
    #[error("the state store failed: {0}")]
    Store(#[from] StoreError),
    #[error("the proxy could not be reconciled: {0}")]
    Reconcile(#[from] ReconcileError),
    #[error("the nginx container could not be checked: {0}")]
    Nginx(#[from] NginxError),
    #[error("cannot prepare the proxy network: {0}")]
    Network(#[from] network::NetworkError),
    #[error("Docker call `{op}` failed: {source}")]
    Docker {
        op: &'static str,
        source: EngineError,
    },
    #[error("cannot lock {path}: {error} (check the state directory's permissions)")]
    Lock { path: String, error: std::io::Error },
}

impl DeployError {
    /// A check refused the deploy before it changed anything; otherwise an engine, store or proxy
    /// call failed, possibly half-way (`butler deployments` and `butler proxy routes` then tell).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            DeployError::Store(_)
                | DeployError::Reconcile(_)
                | DeployError::Nginx(_)
                | DeployError::Network(_)
                | DeployError::Docker { .. }
                | DeployError::Lock { .. }
        )
    }

    /// What the user must fix in what they typed: exit 2 rather than 1.
    pub fn is_usage(&self) -> bool {
        match self {
            DeployError::Source(e) => e.is_usage(),
            DeployError::Naming(_)
            | DeployError::UnknownApp(_)
            | DeployError::NothingToRollBack(..) => true,
            DeployError::Check(e) => !matches!(e, CheckError::Disk { .. }),
            _ => false,
        }
    }
}

pub(super) fn docker_err(op: &'static str) -> impl FnOnce(EngineError) -> DeployError {
    move |source| DeployError::Docker { op, source }
}

/// What to deploy, as the user asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployRequest {
    pub source: String,
    pub git_ref: Option<String>,
    pub name: Option<String>,
    pub replicas: u32,
    pub port: Option<u16>,
    pub health_path: Option<String>,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub timeout: Duration,
}

/// Everything needed to start a revision again, stored with its deployment for `butler rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// `butler.deploy.source`: `git:github.com/alice/shop`, ...
    pub source_id: String,
    pub owner: Option<String>,
    pub repo: Option<String>,
    pub port: u16,
    pub replicas: u32,
    pub health_path: Option<String>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub timeout_ms: u64,
}

/// How long each step took, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepTimes {
    /// Source resolution, pre-deployment checks and the image (build included).
    pub prepare_ms: u64,
    /// Of `prepare_ms`: the clone and the build.
    pub build_ms: u64,
    /// Creating and starting the new instances.
    pub start_ms: u64,
    /// Started until the last instance passed its health check.
    pub healthy_ms: u64,
    /// The two reconciles: new instances in, old ones out.
    pub switch_ms: u64,
    /// Waiting for nginx's old workers to finish their requests.
    pub drain_ms: u64,
    /// Stopping and removing the old instances.
    pub remove_ms: u64,
    /// The deploy's start until the new revision served through the proxy (the first reconcile).
    pub serving_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportOutcome {
    /// The new revision serves; the old instances are gone.
    Deployed,
    /// The new revision never served; its instances are removed; the old one serves as before.
    Failed,
    /// The new revision served, failed after, and the previous one was restored.
    RolledBack,
}

/// What one deploy did: the CLI prints it, as text or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub outcome: ReportOutcome,
    pub deployment: i64,
    pub app: String,
    pub revision: String,
    pub image_id: String,
    /// As recorded: what the user deployed (image, path or URL, `#ref`).
    pub source: String,
    /// `butler.deploy.source`.
    pub source_id: String,
    pub owner: Option<String>,
    pub repo: Option<String>,
    pub url: String,
    pub port: u16,
    pub health_check: String,
    /// The new instances (removed again when the deploy failed).
    pub containers: Vec<String>,
    /// The revision that served before, if any.
    pub previous_revision: Option<String>,
    /// The old instances that were drained and removed.
    pub replaced: Vec<String>,
    pub duration_ms: u64,
    pub steps: StepTimes,
    pub error: Option<String>,
    /// The last log lines of the instance that failed.
    pub logs: Option<String>,
    pub warnings: Vec<String>,
}

/// Prints one progress line (the CLI sends them to stderr).
pub type Progress = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Deployer {
    pub(super) docker: EngineHandle,
    pub(super) config: Arc<Config>,
    pub(super) store: Store,
    pub(super) reconciler: Reconciler,
    pub(super) nginx: Nginx,
    progress: Progress,
}

impl Deployer {
    pub fn new(
        docker: EngineHandle,
        config: Arc<Config>,
        store: Store,
        progress: Progress,
    ) -> Self {
        let nginx = Nginx::new(docker.clone(), NginxSpec::from_config(&config.proxy));
        let reconciler = Reconciler::new(docker.clone(), config.clone(), store.clone());
        Self {
            docker,
            config,
            store,
            reconciler,
            nginx,
            progress,
        }
    }

    pub(super) fn say(&self, line: &str) {
        (self.progress)(line);
    }

    /// `butler deploy`: `Err` when a check refused it (nothing changed), else the report of a
    /// deploy that ran (deployed, failed or rolled back).
    pub async fn deploy(&mut self, request: DeployRequest) -> Result<DeployReport, DeployError> {
        let started = Instant::now();
        let source = Source::classify(&request.source, request.git_ref.as_deref())?;
        let explicit = request
            .name
            .as_deref()
            .map(naming::explicit_app_name)
            .transpose()?;
        checks::check_user_labels(request.labels.iter().map(|(k, _)| k))?;
        // Independent round trips to the engine and git, at once: each costs tens of milliseconds
        // on a busy engine, and they are all before the deploy's first change.
        let (_, id, plan) = tokio::try_join!(
            self.check_proxy(),
            async { Ok(source::identify(&source).await?) },
            async { Ok(self.reconciler.plan_now().await?) },
        )?;
        let app = match &explicit {
            Some(app) => app.clone(),
            None => id.app_name()?,
        };
        let _lock = self.lock_app(&app)?;
        let occupants = checks::occupants(&plan, &app, &id.label());
        checks::check_name(&occupants, &app, &id.label(), explicit.is_some())?;
        let warnings: Vec<String> = occupants
            .plain_containers
            .iter()
            .map(|c| {
                format!(
                    "container {c} (not started by `butler deploy`) also serves app {app}; it keeps serving alongside"
                )
            })
            .collect();

        let build_started = Instant::now();
        let (image, revision) = self.image_of(&source, &request, &app).await?;
        let build_ms = match source.kind() {
            SourceKind::Image => 0,
            _ => build_started.elapsed().as_millis() as u64,
        };
        let (port, why) = checks::choose_port(request.port, &image.exposed_ports)?;
        self.say(&format!(
            "app {app}, revision {revision}, port {port} ({why})"
        ));
        let recorded_source = match &request.git_ref {
            Some(r) => format!("{}#{r}", source.location()),
            None => source.location(),
        };
        let recipe = Recipe {
            source_id: id.label(),
            owner: id.owner.clone(),
            repo: Some(id.repo.clone()).filter(|r| !r.is_empty()),
            port,
            replicas: request.replicas,
            health_path: request.health_path.clone(),
            env: request.env.clone(),
            labels: request.labels.iter().cloned().collect(),
            timeout_ms: request.timeout.as_millis() as u64,
        };
        let rollout = Rollout {
            app,
            revision,
            image,
            source: recorded_source,
            recipe,
            detail: String::new(),
            warnings,
        };
        let mut report = self.roll_out(rollout, started).await?;
        report.steps.build_ms = build_ms;
        Ok(report)
    }

    /// `butler rollback APP [--to REVISION]`: the same rollout with an image and settings the
    /// history recorded. Default target: the newest deployed revision other than the serving one.
    pub async fn rollback(
        &mut self,
        app: &str,
        to: Option<&str>,
    ) -> Result<DeployReport, DeployError> {
        let started = Instant::now();
        let history = self.store.deployments(Some(app.to_owned()), 10_000).await?;
        if history.is_empty() {
            return Err(DeployError::UnknownApp(app.to_owned()));
        }
        let current = history.iter().find(|d| d.gate == Some(Gate::Serving));
        let target = choose_rollback(&history, current, to)
            .map_err(|why| DeployError::NothingToRollBack(why, app.to_owned()))?
            .clone();
        let recipe: Recipe = serde_json::from_str(&target.spec).map_err(|e| {
            DeployError::NothingToRollBack(
                format!(
                    "deployment {} has no usable settings recorded ({e})",
                    target.id
                ),
                app.to_owned(),
            )
        })?;
        self.check_proxy().await?;
        let _lock = self.lock_app(app)?;
        let image = match self.docker.inspect_image(&target.image_id).await {
            Ok(Some(image)) => image,
            Ok(None) => {
                return Err(DeployError::ImageGone {
                    revision: target.revision.clone(),
                    image: target.image_id.clone(),
                });
            }
            Err(e) => return Err(docker_err("inspect image")(e)),
        };
        self.say(&format!(
            "rolling app {app} back to revision {} (deployment {})",
            target.revision, target.id
        ));
        let rollout = Rollout {
            app: app.to_owned(),
            revision: target.revision.clone(),
            image,
            source: target.source.clone(),
            recipe,
            detail: format!(
                "rollback to revision {} (deployment {})",
                target.revision, target.id
            ),
            warnings: Vec::new(),
        };
        self.roll_out(rollout, started).await
    }

    /// The engine answers (the connect did that), nginx runs, and no operator pinned the config.
    async fn check_proxy(&self) -> Result<(), DeployError> {
        let container = self.config.proxy.container_name.clone();
        match self.nginx.state().await? {
            NginxState::Running { .. } => {}
            NginxState::Missing => {
                return Err(DeployError::ProxyDown {
                    container,
                    state: "missing".into(),
                });
            }
            other => {
                return Err(DeployError::ProxyDown {
                    container,
                    state: format!("{other:?}"),
                });
            }
        }
        if let Some(pinned) = self.store.pinned_version().await? {
            return Err(DeployError::Pinned(pinned));
        }
        Ok(())
    }

    /// One deploy of an app at a time, across processes.
    fn lock_app(&self, app: &str) -> Result<std::fs::File, DeployError> {
        let dir = self.config.state.dir.join("deploy");
        let path = dir.join(format!("{app}.lock"));
        let lock_err = |error| DeployError::Lock {
            path: path.to_string_lossy().into_owned(),
            error,
        };
        std::fs::create_dir_all(&dir).map_err(lock_err)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(lock_err)?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => Err(DeployError::Busy(app.to_owned())),
            Err(std::fs::TryLockError::Error(error)) => Err(lock_err(error)),
        }
    }

    /// The image to run and its revision: inspected (or pulled), or built from a directory or a
    /// git checkout after the disk check.
    async fn image_of(
        &self,
        source: &Source,
        request: &DeployRequest,
        app: &str,
    ) -> Result<(ImageInfo, String), DeployError> {
        match source {
            Source::Image(reference) => {
                let (_, facts) = tokio::try_join!(self.check_disk(None), async {
                    Ok(source::image(&*self.docker, reference).await?)
                })?;
                let revision = naming::revision_of(&facts.id);
                Ok((facts, revision))
            }
            Source::Dockerfile(dir) => {
                let facts = self.build(dir.clone(), app, None).await?;
                let revision = naming::revision_of(&facts.id);
                Ok((facts, revision))
            }
            Source::Git { location, .. } => {
                self.say(&format!("cloning {location}"));
                let checkout =
                    source::checkout(location, request.git_ref.as_deref(), &self.config.state.dir)
                        .await?;
                let facts = self
                    .build(checkout.dir.clone(), app, Some(&checkout.commit))
                    .await?;
                Ok((facts, naming::revision_of(&checkout.commit)))
            }
        }
    }

    async fn build(
        &self,
        dir: PathBuf,
        app: &str,
        commit: Option<&str>,
    ) -> Result<ImageInfo, DeployError> {
        let context_dir = dir.clone();
        let (context, bytes) =
            tokio::task::spawn_blocking(move || source::context_tar(&context_dir))
                .await
                .map_err(|e| SourceError::Io {
                    path: dir.to_string_lossy().into_owned(),
                    error: std::io::Error::other(e),
                })??;
        self.check_disk(Some(bytes)).await?;
        let what = match commit {
            Some(commit) => format!("commit {}", naming::revision_of(commit)),
            None => dir.to_string_lossy().into_owned(),
        };
        self.say(&format!(
            "building the image from {what} ({} of context)",
            checks::human_bytes(bytes)
        ));
        Ok(source::build(&*self.docker, context, &what, app, commit).await?)
    }

    /// Enough free space on the engine's disk, when the butler can see that disk.
    async fn check_disk(&self, context_bytes: Option<u64>) -> Result<(), DeployError> {
        let Some(root) = self.docker.root_dir().await.map_err(docker_err("info"))? else {
            return Ok(());
        };
        let Some(free) = checks::free_bytes(std::path::Path::new(&root)) else {
            return Ok(());
        };
        Ok(checks::check_disk(
            &root,
            free,
            checks::disk_needed(context_bytes),
        )?)
    }

    pub(super) fn app_url(&self, app: &str) -> String {
        let port = match self.config.proxy.http_port {
            80 => String::new(),
            port => format!(":{port}"),
        };
        format!("http://{app}.{}{port}/", self.config.proxy.domain)
    }
}
/// The deployment a rollback restores: `--to REVISION` (a prefix of at least 4 characters), else
/// the newest deployed revision other than the serving one. `history` is newest first.
pub fn choose_rollback<'a>(
    history: &'a [Deployment],
    current: Option<&Deployment>,
    to: Option<&str>,
) -> Result<&'a Deployment, String> {
    let deployed = || {
        history
            .iter()
            .filter(|d| d.outcome == DeployOutcome::Deployed)
    };
    match to {
        Some(rev) if rev.len() < 4 => Err(format!(
            "--to {rev} is too short to name a revision (at least 4 characters)"
        )),
        Some(rev) => deployed()
            .find(|d| d.revision.starts_with(rev))
            .ok_or_else(|| format!("no successful deployment of revision {rev}")),
        None => {
            let serving = current.map(|c| c.revision.as_str());
            deployed()
                .find(|d| Some(d.revision.as_str()) != serving)
                .ok_or_else(|| match serving {
                    Some(rev) => {
                        format!("revision {rev} serves and no other revision was ever deployed")
                    }
                    None => "no revision was ever deployed successfully".to_owned(),
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(id: i64, revision: &str, outcome: DeployOutcome, gate: Option<Gate>) -> Deployment {
        Deployment {
            id,
            app: "shop".into(),
            revision: revision.into(),
            image_id: format!("sha256:{revision}"),
            source: "alice/shop".into(),
            started_at: String::new(),
            finished_at: None,
            outcome,
            duration_ms: None,
            detail: String::new(),
            gate,
            spec: "{}".into(),
        }
    }

    #[test]
    fn a_rollback_picks_the_newest_other_revision_or_the_one_asked_for() {
        use DeployOutcome::*;
        // Newest first: c serves; b failed; a and an earlier c were deployed.
        let history = vec![
            d(5, "cccc1111", Deployed, Some(Gate::Serving)),
            d(4, "bbbb2222", Failed, None),
            d(3, "cccc1111", Deployed, None),
            d(2, "aaaa3333", Deployed, None),
            d(1, "dddd4444", RolledBack, None),
        ];
        let current = history.first();
        let pick = |to| choose_rollback(&history, current, to).map(|d| d.id);
        assert_eq!(pick(None), Ok(2));
        assert_eq!(pick(Some("aaaa")), Ok(2));
        assert_eq!(pick(Some("cccc1111")), Ok(5));
        assert!(pick(Some("bbbb")).unwrap_err().contains("no successful"));
        assert!(pick(Some("dddd")).is_err());
        assert!(pick(Some("aa")).unwrap_err().contains("too short"));

        let only = vec![d(1, "aaaa3333", Deployed, Some(Gate::Serving))];
        let err = choose_rollback(&only, only.first(), None).unwrap_err();
        assert!(err.contains("no other revision"), "{err}");
        let failed = vec![d(1, "aaaa3333", Failed, None)];
        assert!(choose_rollback(&failed, None, None).is_err());
    }
}
