//! The container's life: where it stands, and recreating it from the last good config (image
//! pulled if missing, the config uploaded before the first start, then waited for until it
//! answers).

use super::versions::{token_archive, tree_archive};
use super::*;
use crate::docker::{ContainerSpec, Restart};
use crate::labels::{LABEL_ENABLE, LABEL_NGINX_CONTROL, LABEL_NGINX_SPEC, LABEL_ROLE};

impl Nginx {
    /// Where the container stands; a same-named container that is not the butler's is an error.
    pub async fn state(&self) -> Result<NginxState, NginxError> {
        let Some(info) = self.inspect().await? else {
            return Ok(NginxState::Missing);
        };
        let labels = &info.labels;
        if labels.get(LABEL_ROLE).map(String::as_str) != Some("nginx") {
            return Err(NginxError::Foreign {
                container: self.name().into(),
            });
        }
        let id = info.id.clone();
        let state = &info.state;
        let restart_count = info.restart_count;
        if state.restarting || (!state.running && restart_count >= 3) {
            return Ok(NginxState::CrashLooping { id, restart_count });
        }
        if !state.running || state.status == "paused" {
            let status = state.status.clone();
            return Ok(NginxState::Stopped { id, status });
        }
        if labels.get(LABEL_NGINX_SPEC) != Some(&self.spec.digest()) {
            return Ok(NginxState::Outdated { id });
        }
        let networks = info
            .attached
            .iter()
            .chain(info.networks.keys())
            .cloned()
            .collect();
        Ok(NginxState::Running {
            id,
            started_at: state.started_at.clone().unwrap_or_default(),
            networks,
        })
    }

    /// Makes sure nginx is running. When it is not (missing, stopped, crash-looping, outdated), the
    /// container is recreated with `last_good` — a tree that passed `nginx -t` before — uploaded
    /// before its first start, so it never serves an unvalidated config.
    pub async fn ensure(&self, last_good: &ConfigTree, hash: &str) -> Result<Ensured, NginxError> {
        let was = self.state().await?;
        match &was {
            NginxState::Running { .. } => return Ok(Ensured::AlreadyRunning),
            NginxState::Missing => {}
            NginxState::Stopped { id, .. }
            | NginxState::CrashLooping { id, .. }
            | NginxState::Outdated { id } => {
                tracing::warn!(container = self.name(), state = ?was, "recreating nginx container");
                self.docker
                    .remove_container(id)
                    .await
                    .map_err(self.docker_err("remove"))?;
            }
        }
        let token = self.create().await?;
        self.join_default_bridge().await;
        let archive = tree_archive(last_good, hash, true)?;
        self.upload("/etc", archive).await?;
        self.upload("/etc", token_archive(&token)?).await?;
        self.docker
            .start_container(self.name())
            .await
            .map_err(self.docker_err("start"))?;
        self.wait_serving().await?;
        Ok(Ensured::Created { was })
    }

    /// Attaches the created container to Docker's default bridge when the daemon has one (not with
    /// `--bridge=none`) and it is a plain bridge; nginx reaches the apps there before they are on
    /// the proxy network. Best effort: without it they wait for their connect, as before.
    async fn join_default_bridge(&self) {
        if self.spec.network == DEFAULT_BRIDGE {
            return;
        }
        match self.docker.inspect_network(DEFAULT_BRIDGE).await {
            Ok(Some(net)) if net.driver == "bridge" => {}
            _ => return,
        }
        if let Err(error) = self
            .docker
            .connect_network(DEFAULT_BRIDGE, self.name())
            .await
        {
            tracing::info!(container = self.name(), %error, "nginx is not on Docker's default bridge");
        }
    }

    /// Pulls the configured image when the host does not have it, bounded so a registry that never
    /// answers cannot stall the worker past its watchdog.
    async fn ensure_image(&self) -> Result<(), NginxError> {
        let image = &self.spec.image;
        match self.docker.inspect_image(image).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => return Err(self.docker_err("inspect image")(e)),
        }
        tracing::info!(%image, "pulling the nginx image");
        let pull = self.docker.pull_image(image);
        let unavailable = |reason: String| NginxError::ImageUnavailable {
            image: image.clone(),
            reason,
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable(format!("no result within {PULL_TIMEOUT:?}"))),
        }
    }

    /// Creates the container; its control token (see `data`).
    async fn create(&self) -> Result<String, NginxError> {
        self.ensure_image().await?;
        let token = Self::new_control_token()?;
        let spec = ContainerSpec {
            name: self.name().to_owned(),
            image: self.spec.image.clone(),
            entrypoint: Some(vec!["nginx".into()]),
            cmd: Some(vec![
                "-c".into(),
                LIVE_CONF.into(),
                "-g".into(),
                "daemon off;".into(),
            ]),
            labels: BTreeMap::from([
                (LABEL_ROLE.into(), "nginx".into()),
                (LABEL_NGINX_SPEC.into(), self.spec.digest()),
                (LABEL_NGINX_CONTROL.into(), token.clone()),
                // nginx is the proxy, never an app to route.
                (LABEL_ENABLE.into(), "false".into()),
            ]),
            publish: vec![(CONTAINER_HTTP_PORT, self.spec.http_port)],
            // SIGQUIT is nginx's graceful shutdown; SIGTERM would cut open requests.
            stop_signal: Some("SIGQUIT".into()),
            // The butler heals nginx itself, from the last good config; a Docker restart
            // policy would loop on a broken one.
            restart: Restart::No,
            network: Some(self.spec.network.clone()),
            ..Default::default()
        };
        self.docker
            .create_container(&spec)
            .await
            .map_err(self.docker_err("create"))?;
        Ok(token)
    }

    /// Waits until the container runs and answers HTTP on its published port.
    async fn wait_serving(&self) -> Result<(), NginxError> {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let published = SocketAddr::from(([127, 0, 0, 1], self.spec.http_port));
        loop {
            let info = self.inspect().await?;
            // Inside a container the published port is not on our 127.0.0.1, but nginx's IP on
            // the shared network is reachable (the butler's container is on that network too).
            let on_network = info
                .as_ref()
                .and_then(|i| i.networks.get(&self.spec.network))
                .map(|ip| SocketAddr::new(*ip, CONTAINER_HTTP_PORT));
            let state = info.map(|i| i.state).unwrap_or_default();
            if !state.running {
                return Err(self
                    .start_failed(format!("{} (exit code {})", state.status, state.exit_code))
                    .await);
            }
            // An HTTP answer, not just a connect: Docker's userland proxy accepts on the published
            // port before nginx listens, then resets the connection.
            for addr in std::iter::once(published).chain(on_network) {
                let answer = tokio::time::timeout(
                    Duration::from_millis(300),
                    crate::http::get_status(addr, "butler-startup-check", "/"),
                );
                if matches!(answer.await, Ok(Ok(_))) {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                // Running but answering on neither address: it is up, which is all `ensure`
                // promises; the caller's route probes tell more.
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn start_failed(&self, state: String) -> NginxError {
        NginxError::StartFailed {
            container: self.name().into(),
            image: self.spec.image.clone(),
            port: self.spec.http_port,
            state,
            logs: self.log_tail(20).await,
        }
    }
}
