//! The `butler-nginx` container: created (never with a host bind mount) from any image that has
//! `nginx` on its PATH, fed config trees through the Docker archive API, validated with the serving
//! binary via exec, reloaded with SIGHUP, and recreated from the last good tree when it is missing,
//! stopped or crash-looping. Layout inside the container:
//! `/etc/butler-nginx/versions/<hash>/…` and the symlink `/etc/butler-nginx/live -> versions/<hash>`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::config::ProxyConfig;
pub use crate::docker::ExecOutput;
use crate::docker::{ContainerInfo, ContainerSpec, EngineError, EngineHandle, Restart};
use crate::labels::{LABEL_ENABLE, LABEL_NGINX_SPEC, LABEL_ROLE};

pub const CONFIG_ROOT: &str = "/etc/butler-nginx";
pub const VERSIONS_DIR: &str = "/etc/butler-nginx/versions";
pub const LIVE_LINK: &str = "/etc/butler-nginx/live";
/// The file nginx is started with; rendered trees must have `nginx.conf` at their root.
pub const LIVE_CONF: &str = "/etc/butler-nginx/live/nginx.conf";
/// The port nginx listens on inside the container; the rendered config must `listen 80`.
pub const CONTAINER_HTTP_PORT: u16 = 80;
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
        let text = format!("{}\n{}\n{}", self.image, self.network, self.http_port);
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

/// Validate, swap and reload in one exec: each Docker round trip costs tens of milliseconds, and
/// an app's route should be live before the app is. `mv -T` renames the new link over `live`
/// atomically. Exit codes: 11 refused by `nginx -t`, 12 cannot take this path (nothing changed).
const ACTIVATE_SCRIPT: &str = r#"
read -r comm < /proc/1/comm && [ "$comm" = nginx ] || exit 12
out=$(nginx -t -q -c "$1/versions/$2/nginx.conf" 2>&1) || { printf '%s' "$out"; exit 11; }
ln -sfn "versions/$2" "$1/live.next" || exit 12
mv -Tf "$1/live.next" "$1/live" || { rm -f "$1/live.next"; exit 12; }
kill -HUP 1
"#;

/// [`ACTIVATE_SCRIPT`] after extracting the version's archive from stdin: the whole apply up to
/// the reload in one Docker call. Exit code 13: no `tar` (nothing changed).
const STAGE_AND_ACTIVATE_SCRIPT: &str = r#"
read -r comm < /proc/1/comm && [ "$comm" = nginx ] || exit 12
command -v tar >/dev/null 2>&1 || exit 13
tar -x -f - -C /etc || exit 14
"#;

/// Whether the image can run [`ACTIVATE_SCRIPT`]: 0 not known yet, 1 yes, 2 no.
const SHELL_UNKNOWN: u8 = 0;
const SHELL_YES: u8 = 1;
const SHELL_NO: u8 = 2;

/// Handle on the nginx container. Cheap to clone; clones share what was learned about the image.
#[derive(Debug, Clone)]
pub struct Nginx {
    docker: EngineHandle,
    spec: NginxSpec,
    shell: Arc<AtomicU8>,
    /// Whether the image has `tar` for [`STAGE_AND_ACTIVATE_SCRIPT`] (same values).
    tar: Arc<AtomicU8>,
}

impl Nginx {
    pub fn new(docker: EngineHandle, spec: NginxSpec) -> Self {
        Self {
            docker,
            spec,
            shell: Arc::new(AtomicU8::new(SHELL_UNKNOWN)),
            tar: Arc::new(AtomicU8::new(SHELL_UNKNOWN)),
        }
    }

    /// Writes `tree` as version `hash`, validates it, points `live` at it and sends SIGHUP, all in
    /// one exec. `None` when the image cannot (no shell or no `tar`): nothing was changed, and the
    /// caller stages with [`Nginx::stage`] and goes on with [`Nginx::activate`].
    pub async fn stage_and_activate(
        &self,
        tree: &ConfigTree,
        hash: &str,
    ) -> Result<Option<Activation>, NginxError> {
        if self.shell.load(Ordering::Relaxed) == SHELL_NO
            || self.tar.load(Ordering::Relaxed) == SHELL_NO
        {
            return Ok(None);
        }
        let archive = tree_archive(tree, hash, false)?;
        let script = format!("{STAGE_AND_ACTIVATE_SCRIPT}{ACTIVATE_SCRIPT}");
        let out = self
            .exec_with_input(
                &["sh", "-c", &script, "sh", CONFIG_ROOT, hash],
                Some(archive),
            )
            .await?;
        match out.exit_code {
            0 => {
                self.shell.store(SHELL_YES, Ordering::Relaxed);
                self.tar.store(SHELL_YES, Ordering::Relaxed);
                Ok(Some(Activation::Activated))
            }
            11 => {
                self.tar.store(SHELL_YES, Ordering::Relaxed);
                Ok(Some(Activation::Invalid(out.output.trim().to_owned())))
            }
            13 | 14 => {
                // No tar, or it could not extract (a read-only /etc would fail the upload too,
                // and then says why).
                tracing::info!(
                    container = %self.name(),
                    output = %out.output.trim(),
                    "nginx image cannot take config through tar on stdin; uploading it instead"
                );
                self.tar.store(SHELL_NO, Ordering::Relaxed);
                Ok(None)
            }
            _ => {
                // No shell, or the rest of the one-exec path is not possible: `activate` learns
                // which and remembers it.
                self.tar.store(SHELL_NO, Ordering::Relaxed);
                Ok(None)
            }
        }
    }

    /// Validates version `hash`, points `live` at it and sends SIGHUP in one exec, when the image
    /// allows (learned on the first call and remembered).
    pub async fn activate(&self, hash: &str) -> Result<Activation, NginxError> {
        check_hash(hash)?;
        if self.shell.load(Ordering::Relaxed) == SHELL_NO {
            return Ok(Activation::Unsupported);
        }
        let out = self
            .exec(&["sh", "-c", ACTIVATE_SCRIPT, "sh", CONFIG_ROOT, hash])
            .await?;
        let known = match out.exit_code {
            0 => Some(Activation::Activated),
            11 => Some(Activation::Invalid(out.output.trim().to_owned())),
            _ => None,
        };
        match known {
            Some(activation) => {
                self.shell.store(SHELL_YES, Ordering::Relaxed);
                Ok(activation)
            }
            None => {
                // 126/127: no shell; 12: no `mv -T` or nginx is not PID 1. Both are facts about
                // the image, so the step-by-step path is used from now on.
                tracing::info!(
                    container = %self.name(),
                    exit_code = out.exit_code,
                    output = %out.output.trim(),
                    "nginx image cannot validate, swap and reload in one exec; using one Docker call per step"
                );
                self.shell.store(SHELL_NO, Ordering::Relaxed);
                Ok(Activation::Unsupported)
            }
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
        Ok(NginxState::Running {
            id,
            started_at: state.started_at.clone().unwrap_or_default(),
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
        self.create().await?;
        let archive = tree_archive(last_good, hash, true)?;
        self.upload("/etc", archive).await?;
        self.docker
            .start_container(self.name())
            .await
            .map_err(self.docker_err("start"))?;
        self.wait_serving().await?;
        Ok(Ensured::Created { was })
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

    async fn create(&self) -> Result<(), NginxError> {
        self.ensure_image().await?;
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
        Ok(())
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

    /// The container's last `lines` log lines, or a note why they cannot be read.
    pub async fn log_tail(&self, lines: usize) -> String {
        self.docker
            .logs(self.name(), lines)
            .await
            .unwrap_or_else(|e| format!("(logs unavailable: {e})"))
    }

    /// Extracts a tar archive at `dir` inside the container (which must exist there).
    async fn upload(&self, dir: &str, archive: Vec<u8>) -> Result<(), NginxError> {
        self.docker
            .upload(self.name(), dir, archive)
            .await
            .map_err(self.docker_err("upload archive"))
    }

    /// Writes `tree` to `versions/<hash>/` (the live config is untouched).
    pub async fn stage(&self, tree: &ConfigTree, hash: &str) -> Result<(), NginxError> {
        self.upload("/etc", tree_archive(tree, hash, false)?).await
    }

    /// Points `live` at `versions/<hash>` by uploading a tar holding only that symlink. The archive
    /// API needs nothing in the image (no shell, no `ln`/`mv`); the engine replaces the old link
    /// in place, and nothing reads `live` in between because nginx only does at start and on the
    /// SIGHUP the butler sends afterwards.
    pub async fn point_live(&self, hash: &str) -> Result<(), NginxError> {
        check_hash(hash)?;
        let mut builder = tar::Builder::new(Vec::new());
        append_symlink(&mut builder, "live", &format!("versions/{hash}"))?;
        self.upload(CONFIG_ROOT, builder.into_inner()?).await
    }

    /// The hash `live` points to, if any.
    pub async fn live_version(&self) -> Result<Option<String>, NginxError> {
        let target = self
            .docker
            .link_target(self.name(), LIVE_LINK)
            .await
            .map_err(self.docker_err("stat live link"))?;
        Ok(target.and_then(|target| {
            target
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|h| !h.is_empty())
                .map(str::to_owned)
        }))
    }

    /// The files of `versions/<hash>` as they are now in the container (paths relative to the
    /// version directory). What the health-monitor compares with the recorded version.
    pub async fn read_version(&self, hash: &str) -> Result<ConfigTree, NginxError> {
        check_hash(hash)?;
        let bytes = self
            .docker
            .download(self.name(), &format!("{VERSIONS_DIR}/{hash}"))
            .await
            .map_err(self.docker_err("download config"))?;
        let mut tree = ConfigTree::new();
        let mut archive = tar::Archive::new(bytes.as_slice());
        for entry in archive.entries()? {
            let mut entry = entry?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path()?.to_string_lossy().into_owned();
            // The archive's root is the version directory itself: `<hash>/nginx.conf`.
            let Some((_, relative)) = path.split_once('/') else {
                continue;
            };
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content)?;
            tree.insert(
                relative.to_owned(),
                String::from_utf8_lossy(&content).into_owned(),
            );
        }
        Ok(tree)
    }

    /// Runs `argv` in the container and collects its exit code and output.
    pub async fn exec(&self, argv: &[&str]) -> Result<ExecOutput, NginxError> {
        self.exec_with_input(argv, None).await
    }

    /// Like [`Nginx::exec`], with `input` on the command's stdin (then end of file).
    async fn exec_with_input(
        &self,
        argv: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<ExecOutput, NginxError> {
        let run = async {
            self.docker
                .exec(self.name(), argv, input)
                .await
                .map_err(self.docker_err("exec"))
        };
        tokio::time::timeout(EXEC_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| {
                Err(NginxError::ExecTimeout {
                    container: self.name().into(),
                    argv: argv.join(" "),
                    timeout: EXEC_TIMEOUT,
                })
            })
    }

    /// `nginx -t -c PATH` with the serving binary; `Err(message)` carries nginx's own words.
    pub async fn test_config(&self, conf_path: &str) -> Result<Result<(), String>, NginxError> {
        let out = self.exec(&["nginx", "-t", "-q", "-c", conf_path]).await?;
        Ok(if out.exit_code == 0 {
            Ok(())
        } else {
            Err(out.output.trim().to_owned())
        })
    }

    /// SIGHUP to the master (never a restart), then waits until only workers of the new generation
    /// accept requests: nginx keeps the old config and workers when it cannot load the new one.
    pub async fn reload(&self) -> Result<(), NginxError> {
        let before = self.worker_pids().await?;
        self.send_hup().await?;
        self.await_new_workers(&before).await
    }

    pub async fn send_hup(&self) -> Result<(), NginxError> {
        self.docker
            .kill_container(self.name(), "SIGHUP")
            .await
            .map_err(self.docker_err("kill -HUP"))
    }

    /// Waits until every accepting worker is new (none of `before`): old ones either exited or are
    /// marked "shutting down", which nginx does as it closes their listening sockets. Until then
    /// an old worker may still take a request with the old config.
    pub async fn await_new_workers(&self, before: &BTreeSet<String>) -> Result<(), NginxError> {
        let deadline = tokio::time::Instant::now() + RELOAD_TIMEOUT;
        loop {
            let now = self.worker_pids().await?;
            if !now.is_empty() && now.is_disjoint(before) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NginxError::ReloadNotApplied {
                    container: self.name().into(),
                    timeout: RELOAD_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// PIDs of the workers serving the current generation (not the ones shutting down).
    pub async fn worker_pids(&self) -> Result<BTreeSet<String>, NginxError> {
        self.workers(false).await
    }

    /// PIDs of the workers of earlier generations that are still finishing their requests after
    /// a reload ("shutting down"): a deploy waits for them before it stops the old instances.
    pub async fn draining_worker_pids(&self) -> Result<BTreeSet<String>, NginxError> {
        self.workers(true).await
    }

    async fn workers(&self, shutting_down: bool) -> Result<BTreeSet<String>, NginxError> {
        let processes = self
            .docker
            .top(self.name())
            .await
            .map_err(self.docker_err("top"))?;
        Ok(processes
            .into_iter()
            .filter(|p| {
                p.command.contains("worker process")
                    && p.command.contains("shutting down") == shutting_down
            })
            .map(|p| p.pid)
            .collect())
    }

    /// Removes version directories except `keep` and the newest `keep_newest`. Needs `ls` and `rm`
    /// in the image; without them old versions simply stay (they are small).
    pub async fn prune_versions(
        &self,
        keep: &[&str],
        keep_newest: usize,
    ) -> Result<usize, NginxError> {
        let listed = self.exec(&["ls", "-1t", VERSIONS_DIR]).await?;
        if listed.exit_code != 0 {
            return Ok(0);
        }
        let doomed: Vec<String> = listed
            .output
            .lines()
            .map(str::trim)
            .filter(|h| check_hash(h).is_ok())
            .skip(keep_newest)
            .filter(|h| !keep.contains(h))
            .map(|h| format!("{VERSIONS_DIR}/{h}"))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut argv = vec!["rm", "-rf", "--"];
        argv.extend(doomed.iter().map(String::as_str));
        let removed = self.exec(&argv).await?;
        Ok(if removed.exit_code == 0 {
            doomed.len()
        } else {
            0
        })
    }

    /// The container's start time as the engine reports it (changes only on a restart).
    pub async fn started_at(&self) -> Result<Option<String>, NginxError> {
        Ok(self.inspect().await?.and_then(|i| i.state.started_at))
    }
}

fn check_hash(hash: &str) -> Result<(), NginxError> {
    if !hash.is_empty()
        && hash.len() <= 128
        && hash
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Ok(())
    } else {
        Err(NginxError::BadPath { path: hash.into() })
    }
}

/// A tar to extract at `/etc`: `butler-nginx/`, `butler-nginx/versions/`, the tree under
/// `butler-nginx/versions/<hash>/` with every parent directory (the archive API does not create
/// them), and optionally the `live` symlink.
fn tree_archive(tree: &ConfigTree, hash: &str, with_live: bool) -> Result<Vec<u8>, NginxError> {
    check_hash(hash)?;
    if !tree.contains_key("nginx.conf") {
        return Err(NginxError::NoMainConf);
    }
    let root = format!("butler-nginx/versions/{hash}");
    let mut dirs = BTreeSet::from([
        "butler-nginx".to_owned(),
        "butler-nginx/versions".to_owned(),
        root.clone(),
    ]);
    for path in tree.keys() {
        let parts: Vec<&str> = path.split('/').collect();
        if path.starts_with('/')
            || parts
                .iter()
                .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(NginxError::BadPath { path: path.clone() });
        }
        for depth in 1..parts.len() {
            dirs.insert(format!("{root}/{}", parts[..depth].join("/")));
        }
    }
    let mtime = crate::clock::now_since_epoch().as_secs();
    let mut builder = tar::Builder::new(Vec::new());
    // BTreeSet order puts every parent before its children.
    for dir in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(mtime);
        builder.append_data(&mut header, format!("{dir}/"), std::io::empty())?;
    }
    for (path, content) in tree {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(content.len() as u64);
        header.set_mtime(mtime);
        builder.append_data(&mut header, format!("{root}/{path}"), content.as_bytes())?;
    }
    if with_live {
        append_symlink(
            &mut builder,
            "butler-nginx/live",
            &format!("versions/{hash}"),
        )?;
    }
    Ok(builder.into_inner()?)
}

fn append_symlink(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    target: &str,
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_mode(0o777);
    header.set_size(0);
    builder.append_link(&mut header, path, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(archive: &[u8]) -> Vec<(String, tar::EntryType)> {
        tar::Archive::new(archive)
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn archive_holds_every_parent_directory_before_its_files() {
        let tree = ConfigTree::from([
            ("nginx.conf".into(), "events {}".into()),
            ("sites/a/app.conf".into(), "x".into()),
        ]);
        let names: Vec<String> = entries(&tree_archive(&tree, "abc", true).unwrap())
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let pos = |n: &str| {
            names
                .iter()
                .position(|x| x.trim_end_matches('/') == n)
                .unwrap()
        };
        assert!(pos("butler-nginx/versions/abc/sites") < pos("butler-nginx/versions/abc/sites/a"));
        assert!(
            pos("butler-nginx/versions/abc/sites/a")
                < pos("butler-nginx/versions/abc/sites/a/app.conf")
        );
        assert_eq!(names.last().unwrap(), "butler-nginx/live");
    }

    #[test]
    fn escaping_paths_and_hashes_are_refused() {
        for bad in ["../etc/passwd", "/abs.conf", "a//b", "./x"] {
            let tree = ConfigTree::from([
                ("nginx.conf".into(), String::new()),
                (bad.into(), String::new()),
            ]);
            assert!(
                matches!(
                    tree_archive(&tree, "h", false),
                    Err(NginxError::BadPath { .. })
                ),
                "{bad}"
            );
        }
        let tree = ConfigTree::from([("nginx.conf".into(), String::new())]);
        assert!(tree_archive(&tree, "../x", false).is_err());
        assert!(matches!(
            tree_archive(&ConfigTree::new(), "h", false),
            Err(NginxError::NoMainConf)
        ));
    }
}
