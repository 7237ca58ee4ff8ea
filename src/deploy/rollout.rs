//! A rollout, once a revision is ready: record it, start its instances, wait until each is
//! healthy, switch them in, switch the old ones out, drain and remove those. Each phase either
//! goes on or ends the rollout with an [`Ending`]; every ending is recorded by [`Deployer::finish`]
//! and leaves no new instance behind unless it serves. What each failure means for the user is
//! decided by the pure functions at the bottom.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::health::{self, HealthCheck, Unhealthy};
use super::instances::Instance;
use super::switch::{DeployError, DeployReport, Deployer, Recipe, ReportOutcome, StepTimes};
use crate::docker::ImageInfo;
use crate::proxy::reconcile::{ReconcileError, ReconcileReport};
use crate::store::{DeployOutcome, Deployment, Gate, NewDeployment};

/// A revision ready to roll out: the image exists and every check passed.
pub(super) struct Rollout {
    pub app: String,
    pub revision: String,
    pub image: ImageInfo,
    pub source: String,
    pub recipe: Recipe,
    pub detail: String,
    pub warnings: Vec<String>,
}

/// A rollout under way: what the report will say, and what the phases need.
struct Run {
    report: DeployReport,
    steps: StepTimes,
    started: Instant,
    image: ImageInfo,
    recipe: Recipe,
    check: HealthCheck,
    /// The deployments serving before this one.
    previous: Vec<Deployment>,
    /// Recorded with the outcome (a rollback says what it restores).
    detail: String,
    warnings: Vec<String>,
}

impl Run {
    fn app(&self) -> &str {
        &self.report.app
    }

    fn revision(&self) -> &str {
        &self.report.revision
    }

    fn previous_revision(&self) -> &str {
        self.report.previous_revision.as_deref().unwrap_or("(none)")
    }
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ending {
    pub outcome: DeployOutcome,
    /// Empty when deployed.
    pub error: String,
    /// The failing instance's last log lines.
    pub logs: Option<String>,
}

impl Ending {
    fn deployed() -> Self {
        Ending {
            outcome: DeployOutcome::Deployed,
            error: String::new(),
            logs: None,
        }
    }
}

/// Why a phase did not go on: the rollout ended (recorded as such), or a store or engine call
/// failed under it (returned to the caller; the deployment stays `running` and the next deploy
/// of the app cleans up after it).
enum Stop {
    Ended(Ending),
    Broken(DeployError),
}

impl<E: Into<DeployError>> From<E> for Stop {
    fn from(e: E) -> Self {
        Stop::Broken(e.into())
    }
}

impl Deployer {
    /// Start, gate, switch, drain, remove; records the outcome.
    pub(super) async fn roll_out(
        &mut self,
        rollout: Rollout,
        started: Instant,
    ) -> Result<DeployReport, DeployError> {
        let mut run = self.begin(rollout, started).await?;
        let ending = match self.carry_out(&mut run).await {
            Ok(()) => Ending::deployed(),
            Err(Stop::Ended(ending)) => ending,
            Err(Stop::Broken(e)) => return Err(e),
        };
        self.finish(run, ending).await
    }

    /// Cleans up after an interrupted deploy and records the new deployment.
    async fn begin(&self, rollout: Rollout, started: Instant) -> Result<Run, DeployError> {
        let Rollout {
            app,
            revision,
            image,
            source,
            recipe,
            detail,
            warnings,
        } = rollout;
        self.clean_interrupted(&app).await?;
        let previous: Vec<Deployment> = self
            .store
            .gated_deployments(app.clone())
            .await?
            .into_iter()
            .filter(|d| d.gate == Some(Gate::Serving))
            .collect();
        let check = HealthCheck::choose(image.healthcheck, recipe.health_path.as_deref());
        let mut report = DeployReport {
            outcome: ReportOutcome::Failed,
            deployment: 0,
            app: app.clone(),
            revision: revision.clone(),
            image_id: image.id.clone(),
            source: source.clone(),
            source_id: recipe.source_id.clone(),
            owner: recipe.owner.clone(),
            repo: recipe.repo.clone(),
            url: self.app_url(&app),
            port: recipe.port,
            health_check: check.describe(),
            containers: Vec::new(),
            previous_revision: previous.last().map(|d| d.revision.clone()),
            replaced: Vec::new(),
            duration_ms: 0,
            steps: StepTimes::default(),
            error: None,
            logs: None,
            warnings: Vec::new(),
        };
        let steps = StepTimes {
            prepare_ms: started.elapsed().as_millis() as u64,
            ..StepTimes::default()
        };
        report.deployment = self
            .store
            .start_deployment(NewDeployment {
                app,
                revision,
                image_id: image.id.clone(),
                source,
                spec: serde_json::to_string(&recipe).expect("a recipe serializes"),
            })
            .await?;
        Ok(Run {
            report,
            steps,
            started,
            image,
            recipe,
            check,
            previous,
            detail,
            warnings,
        })
    }

    async fn carry_out(&mut self, run: &mut Run) -> Result<(), Stop> {
        let instances = self.start_phase(run).await?;
        self.gate_phase(run, &instances).await?;
        let switched = Instant::now();
        self.switch_in(run, &instances).await?;
        run.steps.serving_ms = run.started.elapsed().as_millis() as u64;
        let old = self.switch_out(run).await;
        run.steps.switch_ms = switched.elapsed().as_millis() as u64;
        self.retire(run, old?).await?;
        Ok(())
    }

    async fn start_phase(&self, run: &mut Run) -> Result<Vec<Instance>, Stop> {
        let step = Instant::now();
        let (instances, error) = self
            .start_instances(
                run.report.deployment,
                run.app(),
                run.revision(),
                &run.image,
                &run.recipe,
            )
            .await;
        run.steps.start_ms = step.elapsed().as_millis() as u64;
        run.report.containers = instances.iter().map(|i| i.name.clone()).collect();
        if let Some(error) = error {
            self.discard(run.report.deployment, &instances).await;
            return Err(Stop::Ended(failed(error, None)));
        }
        self.say(&format!(
            "started {}; waiting until healthy ({}, at most {})",
            run.report.containers.join(", "),
            run.check.describe(),
            humantime::format_duration(Duration::from_millis(run.recipe.timeout_ms))
        ));
        Ok(instances)
    }

    /// Every instance passes its health check and is still up right after.
    async fn gate_phase(&self, run: &mut Run, instances: &[Instance]) -> Result<(), Stop> {
        let step = Instant::now();
        let deadline = step + Duration::from_millis(run.recipe.timeout_ms);
        let host = format!("{}.{}", run.app(), self.config.proxy.domain);
        let gates = instances.iter().map(|instance| {
            health::wait_healthy(
                &*self.docker,
                &instance.name,
                SocketAddr::new(instance.ip, run.recipe.port),
                &host,
                &run.check,
                deadline,
            )
        });
        let mut results = futures_util::future::join_all(gates).await;
        run.steps.healthy_ms = step.elapsed().as_millis() as u64;
        if results.iter().all(Result::is_ok) {
            for instance in instances {
                if let Err(e) = health::still_alive(&*self.docker, &instance.name).await {
                    results.push(Err(e));
                    break;
                }
            }
        }
        if let Some(unhealthy) = results.into_iter().find_map(Result::err) {
            self.discard(run.report.deployment, instances).await;
            return Err(Stop::Ended(unhealthy_ending(
                unhealthy,
                run.previous_revision(),
            )));
        }
        self.say(&format!(
            "healthy after {}; switching traffic",
            humantime::format_duration(Duration::from_millis(run.steps.healthy_ms))
        ));
        Ok(())
    }

    /// The new instances join the upstream; if they cannot, they are backed out and the old
    /// ones (which never left it) keep serving.
    async fn switch_in(&mut self, run: &mut Run, instances: &[Instance]) -> Result<(), Stop> {
        let deployment = run.report.deployment;
        let (app, revision) = (run.app().to_owned(), run.revision().to_owned());
        self.store
            .set_gate(vec![deployment], Some(Gate::Serving))
            .await?;
        let new_ids: BTreeSet<String> = instances.iter().map(|i| i.id.clone()).collect();
        let promoted = self
            .reconciler
            .reconcile(&format!("butler deploy {app}: revision {revision} healthy"))
            .await;
        let Err(why) = check_switch(&promoted, &app, &new_ids, true) else {
            return Ok(());
        };
        self.store
            .set_gate(vec![deployment], Some(Gate::Retired))
            .await?;
        let restored = self
            .reconciler
            .reconcile(&format!(
                "butler deploy {app}: revision {revision} backed out"
            ))
            .await;
        if let Err(also) = check_switch(&restored, &app, &new_ids, false) {
            run.warnings.push(format!(
                "restoring the previous routes failed too ({also}); run `butler proxy-update`"
            ));
        }
        self.discard(deployment, instances).await;
        Err(Stop::Ended(Ending {
            outcome: DeployOutcome::RolledBack,
            error: format!(
                "the new instances could not be added to the proxy: {why}; they were removed and the previous revision keeps serving"
            ),
            logs: None,
        }))
    }

    /// The old deployments leave the upstream; their containers, to drain and remove. If they
    /// cannot leave, both revisions serve and the deploy still counts as deployed.
    async fn switch_out(&mut self, run: &mut Run) -> Result<Vec<(String, String)>, Stop> {
        let old_ids: Vec<i64> = run.previous.iter().map(|d| d.id).collect();
        let old_containers = self.containers_of(run.app(), &old_ids).await?;
        if old_ids.is_empty() {
            return Ok(old_containers);
        }
        self.store
            .set_gate(old_ids.clone(), Some(Gate::Retired))
            .await?;
        let old_container_ids: BTreeSet<String> =
            old_containers.iter().map(|(id, _)| id.clone()).collect();
        let retired = self
            .reconciler
            .reconcile(&format!(
                "butler deploy {}: revision {} replaces {}",
                run.app(),
                run.revision(),
                run.report.previous_revision.as_deref().unwrap_or("")
            ))
            .await;
        let Err(why) = check_switch(&retired, run.app(), &old_container_ids, false) else {
            return Ok(old_containers);
        };
        // Both revisions serve; the old ones stay until the next deploy retires them.
        self.store.set_gate(old_ids, Some(Gate::Serving)).await?;
        run.warnings.push(format!(
            "the previous instances could not be taken out of the proxy ({why}); they keep serving alongside the new revision until the next deploy"
        ));
        Err(Stop::Ended(Ending::deployed()))
    }

    /// Waits for nginx's old workers, then stops and removes the retired instances.
    async fn retire(&self, run: &mut Run, old: Vec<(String, String)>) -> Result<(), Stop> {
        if !old.is_empty() {
            let step = Instant::now();
            let deadline = Instant::now() + Duration::from_millis(run.recipe.timeout_ms);
            if let Some(warning) = self.drain(deadline).await {
                run.warnings.push(warning);
            }
            run.steps.drain_ms = step.elapsed().as_millis() as u64;
            let step = Instant::now();
            let removed =
                futures_util::future::join_all(old.iter().map(|(id, _)| self.stop_and_remove(id)))
                    .await;
            for ((_, name), result) in old.iter().zip(removed) {
                if let Err(e) = result {
                    run.warnings
                        .push(format!("cannot remove old instance {name}: {e}"));
                }
            }
            run.steps.remove_ms = step.elapsed().as_millis() as u64;
            run.report.replaced = old.into_iter().map(|(_, name)| name).collect();
        }
        let old_ids: Vec<i64> = run.previous.iter().map(|d| d.id).collect();
        if !old_ids.is_empty() {
            self.store.set_gate(old_ids, None).await?;
        }
        Ok(())
    }

    /// Records the outcome and completes the report.
    async fn finish(&self, run: Run, ending: Ending) -> Result<DeployReport, DeployError> {
        let Run {
            mut report,
            steps,
            started,
            detail,
            warnings,
            ..
        } = run;
        let duration = started.elapsed();
        report.warnings = warnings;
        self.store
            .finish_deployment(
                report.deployment,
                ending.outcome,
                recorded_detail(&detail, &ending, &report.warnings),
                duration,
            )
            .await?;
        report.outcome = match ending.outcome {
            DeployOutcome::Deployed => ReportOutcome::Deployed,
            DeployOutcome::RolledBack => ReportOutcome::RolledBack,
            _ => ReportOutcome::Failed,
        };
        report.duration_ms = duration.as_millis() as u64;
        report.steps = steps;
        report.error = (!ending.error.is_empty()).then_some(ending.error);
        report.logs = ending.logs;
        Ok(report)
    }
}

fn failed(error: String, logs: Option<String>) -> Ending {
    Ending {
        outcome: DeployOutcome::Failed,
        error,
        logs,
    }
}

/// An instance that failed its health gate: the deploy failed, and the revision before keeps
/// serving.
fn unhealthy_ending(unhealthy: Unhealthy, previous_revision: &str) -> Ending {
    let Unhealthy {
        container,
        reason,
        logs,
    } = unhealthy;
    failed(
        format!(
            "instance {container} {reason}; the new instances were removed and revision {previous_revision} keeps serving"
        ),
        Some(logs),
    )
}

/// What the store keeps with the outcome: the rollout's own detail, the error, the warnings and
/// the failing instance's log lines.
fn recorded_detail(detail: &str, ending: &Ending, warnings: &[String]) -> String {
    let mut recorded: Vec<String> = [detail.to_owned(), ending.error.clone()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    recorded.extend(warnings.iter().cloned());
    if let Some(logs) = &ending.logs {
        recorded.push(format!("last log lines:\n{logs}"));
    }
    recorded.join("\n")
}

/// Whether a reconcile applied, and `app`'s upstream now has (`present`) or lacks every container
/// of `ids`.
fn check_switch(
    report: &Result<ReconcileReport, ReconcileError>,
    app: &str,
    ids: &BTreeSet<String>,
    present: bool,
) -> Result<(), String> {
    let report = report.as_ref().map_err(|e| e.to_string())?;
    if let Some(pinned) = report.pinned {
        return Err(format!(
            "the config is pinned to version {pinned} (`butler proxy-update` unpins it)"
        ));
    }
    if !report.succeeded() {
        return Err(report.summary());
    }
    let servers: BTreeSet<&str> = report
        .plan
        .routes
        .iter()
        .filter(|r| r.app == app)
        .flat_map(|r| &r.servers)
        .map(|s| s.container_id.as_str())
        .collect();
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| servers.contains(id.as_str()) != present)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let problems: Vec<String> = report
        .plan
        .problems
        .iter()
        .filter(|p| ids.contains(&p.container_id))
        .map(|p| format!("{}: {}", p.container_name, p.reason))
        .collect();
    Err(format!(
        "{} of the instances {} app {app}'s upstream{}",
        missing.len(),
        if present {
            "are not in"
        } else {
            "are still in"
        },
        if problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", problems.join("; "))
        }
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::deploy::switch::DeployRequest;
    use crate::docker::EngineError;
    use crate::testbed::{APP_IMAGE, Bed, nginx_refuses};

    fn deployer(bed: &Bed) -> Deployer {
        Deployer::new(
            bed.handle(),
            bed.config.clone(),
            bed.store.clone(),
            Arc::new(|_: &str| {}),
        )
    }

    fn request(timeout_ms: u64) -> DeployRequest {
        DeployRequest {
            source: APP_IMAGE.into(),
            git_ref: None,
            name: Some("shop".into()),
            replicas: 1,
            port: None,
            health_path: None,
            env: Vec::new(),
            labels: Vec::new(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    async fn served_by(bed: &Bed, app: &str) -> Vec<String> {
        bed.store
            .routes()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.app == app)
            .flat_map(|r| r.servers)
            .collect()
    }

    fn address_of(bed: &Bed, name: &str) -> String {
        let ip = bed.engine.container(name).unwrap().info.networks[&bed.config.proxy.network];
        format!("{ip}:8080")
    }

    /// A first deploy that succeeds; the name of its instance.
    async fn deployed(bed: &Bed) -> String {
        bed.serve_new_containers(8080, 200);
        let report = deployer(bed).deploy(request(5_000)).await.unwrap();
        assert_eq!(report.outcome, ReportOutcome::Deployed, "{report:?}");
        report.containers[0].clone()
    }

    #[tokio::test]
    async fn a_healthy_revision_replaces_the_serving_one() {
        let bed = Bed::new().await;
        let first = deployed(&bed).await;
        assert_eq!(
            served_by(&bed, "shop").await,
            vec![address_of(&bed, &first)]
        );

        let report = deployer(&bed).deploy(request(5_000)).await.unwrap();

        assert_eq!(report.outcome, ReportOutcome::Deployed, "{report:?}");
        assert_eq!(report.replaced, vec![first.clone()]);
        let second = &report.containers[0];
        assert_eq!(
            served_by(&bed, "shop").await,
            vec![address_of(&bed, second)]
        );
        assert!(
            bed.engine.container(&first).is_none(),
            "the old instance is removed"
        );
        // Stopped gracefully before it was removed.
        let stops = bed.engine.calls("stop");
        assert_eq!(stops.len(), 1, "{stops:?}");
    }

    #[tokio::test]
    async fn an_instance_that_cannot_start_is_removed_and_nothing_else_changes() {
        let bed = Bed::new().await;
        let first = deployed(&bed).await;
        bed.engine.fail_next(
            "start",
            EngineError::Refused {
                status: 500,
                message: "driver failed programming external connectivity".into(),
            },
        );

        let report = deployer(&bed).deploy(request(5_000)).await.unwrap();

        assert_eq!(report.outcome, ReportOutcome::Failed);
        let error = report.error.unwrap_or_default();
        assert!(
            error.contains("cannot start") && error.contains("external connectivity"),
            "{error}"
        );
        assert!(
            bed.engine.container(&report.containers[0]).is_none(),
            "the instance that did not start is removed"
        );
        assert_eq!(
            served_by(&bed, "shop").await,
            vec![address_of(&bed, &first)]
        );
        let history = bed
            .store
            .deployments(Some("shop".into()), 10)
            .await
            .unwrap();
        assert_eq!(history[0].outcome, DeployOutcome::Failed);
    }

    #[tokio::test]
    async fn an_instance_that_exits_in_its_gate_fails_with_its_logs_and_the_old_one_serves() {
        let bed = Bed::new().await;
        let first = deployed(&bed).await;
        // The next instance crashes as soon as it starts.
        let engine = bed.engine.clone();
        let known: Vec<String> = engine.state().containers.keys().cloned().collect();
        tokio::spawn(async move {
            loop {
                for c in engine.state().containers.values_mut() {
                    if !known.contains(&c.info.id) && c.info.state.running {
                        c.info.state.running = false;
                        c.info.state.status = "exited".into();
                        c.info.state.exit_code = 3;
                        c.logs = "panic: no DATABASE_URL".into();
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });

        let report = deployer(&bed).deploy(request(5_000)).await.unwrap();

        assert_eq!(report.outcome, ReportOutcome::Failed);
        let error = report.error.clone().unwrap_or_default();
        assert!(error.contains("exited with code 3"), "{error}");
        assert!(error.contains("keeps serving"), "{error}");
        assert_eq!(report.logs.as_deref(), Some("panic: no DATABASE_URL"));
        assert!(bed.engine.container(&report.containers[0]).is_none());
        assert_eq!(
            served_by(&bed, "shop").await,
            vec![address_of(&bed, &first)]
        );
    }

    #[tokio::test]
    async fn a_revision_that_never_answers_fails_at_its_deadline() {
        let bed = Bed::new().await;
        // Nothing listens on the new instance's port.
        let report = deployer(&bed).deploy(request(300)).await.unwrap();

        assert_eq!(report.outcome, ReportOutcome::Failed);
        let error = report.error.unwrap_or_default();
        assert!(error.contains("was not healthy within"), "{error}");
        assert!(error.contains("TCP connect"), "{error}");
        assert!(bed.engine.container(&report.containers[0]).is_none());
        assert!(served_by(&bed, "shop").await.is_empty());
    }

    #[tokio::test]
    async fn a_switch_nginx_refuses_is_backed_out_and_the_old_revision_serves() {
        let bed = Bed::new().await;
        let first = deployed(&bed).await;
        bed.engine
            .on_exec(nginx_refuses("nginx: [emerg] host not found in upstream"));

        let report = deployer(&bed).deploy(request(5_000)).await.unwrap();

        assert_eq!(report.outcome, ReportOutcome::RolledBack, "{report:?}");
        let error = report.error.unwrap_or_default();
        assert!(error.contains("could not be added to the proxy"), "{error}");
        assert!(bed.engine.container(&report.containers[0]).is_none());
        assert!(
            bed.engine.container(&first).is_some(),
            "the old instance is untouched"
        );
        assert_eq!(
            served_by(&bed, "shop").await,
            vec![address_of(&bed, &first)]
        );
    }

    #[tokio::test]
    async fn an_image_that_is_nowhere_refuses_the_deploy_before_any_change() {
        let bed = Bed::new().await;
        let mut missing = request(5_000);
        missing.source = "nowhere/app:9".into();

        let error = deployer(&bed).deploy(missing).await.unwrap_err();

        assert!(error.is_refusal(), "{error}");
        assert!(error.to_string().contains("nowhere/app:9"), "{error}");
        assert!(bed.engine.calls("create").is_empty());
        assert!(
            bed.store
                .deployments(Some("shop".into()), 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn an_unhealthy_instance_says_which_revision_keeps_serving() {
        let ending = unhealthy_ending(
            Unhealthy {
                container: "shop-abc-1".into(),
                reason: "exited with code 1 (exited)".into(),
                logs: "boom".into(),
            },
            "1a2b3c",
        );
        assert_eq!(ending.outcome, DeployOutcome::Failed);
        assert_eq!(
            ending.error,
            "instance shop-abc-1 exited with code 1 (exited); the new instances were removed and revision 1a2b3c keeps serving"
        );
        assert_eq!(
            recorded_detail("rollback to 1a2b3c", &ending, &["a warning".into()]),
            "rollback to 1a2b3c\ninstance shop-abc-1 exited with code 1 (exited); the new instances were removed and revision 1a2b3c keeps serving\na warning\nlast log lines:\nboom"
        );
    }
}
