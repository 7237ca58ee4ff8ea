//! The deploy's steps on the engine: start a revision's instances on the proxy network, find a
//! deployment's containers, remove instances that never served, stop and remove retired ones
//! once nginx's old workers have drained, and clean up what an interrupted deploy left.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

use super::naming;
use super::switch::{DeployError, Deployer, Recipe, docker_err};
use crate::docker::{ContainerSpec, ImageInfo, Restart, network};
use crate::labels::{DeployLabels, LABEL_DEPLOY_APP, LABEL_DEPLOY_ID, LABEL_NAME, LABEL_PORT};
use crate::store::{DeployOutcome, Gate};

/// How long an old instance gets between SIGTERM and SIGKILL once nginx no longer sends it anything.
const STOP_GRACE: i32 = 10;
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// A running instance of the new revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Instance {
    pub name: String,
    pub id: String,
    pub ip: IpAddr,
}

impl Deployer {
    /// Creates and starts `recipe.replicas` instances on the proxy network, all at once. Returns
    /// the ones that exist (to be removed on failure) and the first error.
    pub(super) async fn start_instances(
        &self,
        deployment: i64,
        app: &str,
        revision: &str,
        image: &ImageInfo,
        recipe: &Recipe,
    ) -> (Vec<Instance>, Option<String>) {
        let network = self.config.proxy.network.clone();
        if let Err(e) = network::ensure_network(&*self.docker, &network).await {
            return (Vec::new(), Some(e.to_string()));
        }
        let taken = match self.container_names(app).await {
            Ok(taken) => taken,
            Err(e) => return (Vec::new(), Some(e.to_string())),
        };
        let starts = naming::free_instances(app, revision, recipe.replicas, &taken)
            .into_iter()
            .map(|n| {
                let meta = DeployLabels {
                    deployment: deployment.to_string(),
                    app: app.to_owned(),
                    revision: revision.to_owned(),
                    source: recipe.source_id.clone(),
                    owner: recipe.owner.clone(),
                    repo: recipe.repo.clone(),
                    instance: Some(n),
                };
                self.start_instance(meta, image, recipe, &network)
            });
        let mut instances = Vec::new();
        let mut first_error = None;
        for (instance, error) in futures_util::future::join_all(starts).await {
            instances.extend(instance);
            first_error = first_error.or(error);
        }
        (instances, first_error)
    }

    /// One instance: the container (when it was created) and what went wrong, if anything.
    pub(super) async fn start_instance(
        &self,
        meta: DeployLabels,
        image: &ImageInfo,
        recipe: &Recipe,
        network: &str,
    ) -> (Option<Instance>, Option<String>) {
        let name = naming::container_name(&meta.app, &meta.revision, meta.instance.unwrap_or(1));
        let mut labels = recipe.labels.clone();
        labels.extend(meta.to_labels());
        labels.insert(LABEL_NAME.to_owned(), meta.app.clone());
        labels.insert(LABEL_PORT.to_owned(), recipe.port.to_string());
        // A butler scoped to `docker.only_label` sees only containers with that label: its own
        // deploys must carry it.
        if let Some(scope) = &self.config.docker.only_label {
            let (key, value) = scope.split_once('=').unwrap_or((scope, ""));
            labels.insert(key.to_owned(), value.to_owned());
        }
        let spec = ContainerSpec {
            name: name.clone(),
            image: image.id.clone(),
            env: recipe.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            labels,
            restart: Restart::UnlessStopped,
            network: Some(network.to_owned()),
            ..Default::default()
        };
        let id = match self.docker.create_container(&spec).await {
            Ok(id) => id,
            Err(e) => return (None, Some(format!("cannot create {name}: {e}"))),
        };
        // Known from here, so a failure below still removes it.
        let mut instance = Instance {
            name: name.clone(),
            id: id.clone(),
            ip: IpAddr::from([0, 0, 0, 0]),
        };
        if let Err(e) = self.docker.start_container(&id).await {
            return (Some(instance), Some(format!("cannot start {name}: {e}")));
        }
        let ip = match self.docker.inspect_container(&id).await {
            Ok(info) => info.and_then(|info| info.networks.get(network).copied()),
            Err(e) => return (Some(instance), Some(format!("cannot inspect {name}: {e}"))),
        };
        match ip {
            Some(ip) => {
                instance.ip = ip;
                (Some(instance), None)
            }
            None => (
                Some(instance),
                Some(format!("{name} got no address on network {network}")),
            ),
        }
    }

    /// Names of every container (running or not) of `app`'s deployments.
    pub(super) async fn container_names(&self, app: &str) -> Result<Vec<String>, DeployError> {
        Ok(self
            .list_app_containers(app)
            .await?
            .into_iter()
            .map(|(_, name, _)| name)
            .collect())
    }

    /// (id, name, deployment label) of every container of `app` a deploy started.
    pub(super) async fn list_app_containers(
        &self,
        app: &str,
    ) -> Result<Vec<(String, String, String)>, DeployError> {
        let list = self
            .docker
            .list_containers(&[format!("{LABEL_DEPLOY_APP}={app}")])
            .await
            .map_err(docker_err("list containers"))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let deployment = c.labels.get(LABEL_DEPLOY_ID)?.clone();
                Some((c.id, c.name, deployment))
            })
            .collect())
    }

    /// (id, name) of the containers of deployments `ids`.
    pub(super) async fn containers_of(
        &self,
        app: &str,
        ids: &[i64],
    ) -> Result<Vec<(String, String)>, DeployError> {
        let wanted: BTreeSet<String> = ids.iter().map(i64::to_string).collect();
        let mut found: Vec<(String, String)> = self
            .list_app_containers(app)
            .await?
            .into_iter()
            .filter(|(_, _, d)| wanted.contains(d))
            .map(|(id, name, _)| (id, name))
            .collect();
        found.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(found)
    }

    /// Removes instances that never served (no drain needed) and ungates their deployment.
    pub(super) async fn discard(&self, deployment: i64, instances: &[Instance]) {
        for instance in instances {
            if let Err(e) = self.docker.remove_container(&instance.id).await {
                self.say(&format!(
                    "warning: cannot remove new instance {}: {e}",
                    instance.name
                ));
            }
        }
        if let Err(e) = self.store.set_gate(vec![deployment], None).await {
            self.say(&format!("warning: {e}"));
        }
    }

    pub(super) async fn stop_and_remove(&self, id: &str) -> Result<(), DeployError> {
        match self.docker.stop_container(id, STOP_GRACE).await {
            Ok(()) => {}
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(docker_err("stop container")(e)),
        }
        self.docker
            .remove_container(id)
            .await
            .map_err(docker_err("remove container"))
    }

    /// Waits until nginx's workers of earlier generations (the ones that may still hold a request
    /// to an old instance) have exited; a warning when some are still busy at `deadline`.
    pub(super) async fn drain(&self, deadline: Instant) -> Option<String> {
        let draining = match self.nginx.draining_worker_pids().await {
            Ok(pids) => pids,
            Err(e) => return Some(format!("cannot see nginx's workers ({e}); did not wait")),
        };
        loop {
            if draining.is_empty() {
                return None;
            }
            match self.nginx.draining_worker_pids().await {
                Ok(now) if now.is_disjoint(&draining) => return None,
                Ok(_) => {}
                Err(e) => return Some(format!("cannot see nginx's workers ({e}); did not wait")),
            }
            if Instant::now() >= deadline {
                return Some(
                    "nginx's old workers still had open requests (long-lived connections?) when the timeout ran out; the old instances were stopped anyway".to_owned(),
                );
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }

    /// Deployments of `app` a dead deploy left behind (we hold the app's lock, so any `running`
    /// one is dead): instances that never served are removed; ones already switched in are kept
    /// as the serving revision; retired ones, already out of the upstream, are removed.
    pub(super) async fn clean_interrupted(&self, app: &str) -> Result<(), DeployError> {
        for d in self.store.gated_deployments(app.to_owned()).await? {
            let leftover = match (d.outcome, d.gate) {
                (DeployOutcome::Running, Some(Gate::Serving)) => {
                    self.store
                        .finish_deployment(
                            d.id,
                            DeployOutcome::Deployed,
                            "the deploy was interrupted after its switch; its instances serve"
                                .into(),
                            Duration::ZERO,
                        )
                        .await?;
                    false
                }
                (DeployOutcome::Running, _) => {
                    self.store
                        .finish_deployment(
                            d.id,
                            DeployOutcome::Failed,
                            "the deploy was interrupted before its switch; its instances were removed by the next deploy".into(),
                            Duration::ZERO,
                        )
                        .await?;
                    true
                }
                (_, Some(Gate::Retired) | Some(Gate::Pending)) => true,
                _ => false,
            };
            if leftover {
                for (id, name) in self.containers_of(app, &[d.id]).await? {
                    self.say(&format!("removing {name}, left by an interrupted deploy"));
                    self.stop_and_remove(&id).await?;
                }
                self.store.set_gate(vec![d.id], None).await?;
            }
        }
        Ok(())
    }
}
