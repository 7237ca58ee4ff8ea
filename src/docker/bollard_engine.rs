//! [`Engine`] on the Docker API, through bollard. The only file that calls bollard.

use std::collections::{BTreeMap, HashMap};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, ContainerArchiveInfoOptionsBuilder, CreateContainerOptionsBuilder,
    CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder, EventsOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, RestartContainerOptionsBuilder, StopContainerOptionsBuilder,
    TagImageOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::stream::{BoxStream, StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::engine::{
    BuildProgress, ContainerInfo, ContainerSpec, Engine, EngineError, ExecOutput, ImageInfo,
    ListedContainer, NetworkInfo, ProcessRow, Restart,
};
use super::events::{EngineEvent, relevant};
use super::inspect;

#[derive(Debug, Clone)]
pub struct BollardEngine {
    docker: Docker,
}

impl BollardEngine {
    pub fn new(docker: Docker) -> Self {
        Self { docker }
    }
}

impl From<bollard::errors::Error> for EngineError {
    fn from(e: bollard::errors::Error) -> Self {
        match e {
            bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            } => EngineError::Refused {
                status: status_code,
                message,
            },
            other => EngineError::Transport(other.to_string()),
        }
    }
}

/// `Ok(None)` for a 404: the thing asked about does not exist.
fn found<T>(result: Result<T, bollard::errors::Error>) -> Result<Option<T>, EngineError> {
    match result.map_err(EngineError::from) {
        Ok(value) => Ok(Some(value)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait::async_trait]
impl Engine for BollardEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        self.docker.ping().await?;
        Ok(())
    }

    async fn list_containers(
        &self,
        labels: &[String],
    ) -> Result<Vec<ListedContainer>, EngineError> {
        let mut filters = HashMap::new();
        if !labels.is_empty() {
            filters.insert("label", labels.iter().map(String::as_str).collect());
        }
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(options)).await?;
        Ok(list.iter().map(inspect::summary).collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        Ok(found(self.docker.inspect_container(id, None).await)?.map(|i| inspect::container(&i)))
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, EngineError> {
        let bindings: HashMap<String, Option<Vec<PortBinding>>> = spec
            .publish
            .iter()
            .map(|(container, host)| {
                (
                    format!("{container}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: None,
                        host_port: Some(host.to_string()),
                    }]),
                )
            })
            .collect();
        let restart = match spec.restart {
            Restart::No => RestartPolicyNameEnum::NO,
            Restart::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.entrypoint.clone(),
            cmd: spec.cmd.clone(),
            env: (!spec.env.is_empty()).then(|| spec.env.clone()),
            labels: Some(inspect::label_map(&spec.labels)),
            exposed_ports: (!bindings.is_empty()).then(|| bindings.keys().cloned().collect()),
            stop_signal: spec.stop_signal.clone(),
            host_config: Some(HostConfig {
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                restart_policy: Some(RestartPolicy {
                    name: Some(restart),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            networking_config: spec.network.as_ref().map(|network| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings::default(),
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        Ok(self.docker.create_container(Some(options), body).await?.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), EngineError> {
        Ok(self.docker.start_container(id, None).await?)
    }

    async fn stop_container(&self, id: &str, grace_secs: i32) -> Result<(), EngineError> {
        let options = StopContainerOptionsBuilder::default().t(grace_secs).build();
        match self.docker.stop_container(id, Some(options)).await {
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            other => Ok(other?),
        }
    }

    async fn restart_container(&self, id: &str, grace_secs: i32) -> Result<(), EngineError> {
        let options = RestartContainerOptionsBuilder::default()
            .t(grace_secs)
            .build();
        Ok(self.docker.restart_container(id, Some(options)).await?)
    }

    async fn kill_container(&self, id: &str, signal: &str) -> Result<(), EngineError> {
        let options = KillContainerOptionsBuilder::default()
            .signal(signal)
            .build();
        Ok(self.docker.kill_container(id, Some(options)).await?)
    }

    async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        found(self.docker.remove_container(id, Some(options)).await).map(|_| ())
    }

    async fn exec(
        &self,
        id: &str,
        argv: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<ExecOutput, EngineError> {
        let created = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(argv.to_vec()),
                    attach_stdin: Some(input.is_some()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        let started = self
            .docker
            .start_exec(&created.id, Some(StartExecOptions::default()))
            .await?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut stream,
            input: mut stdin,
        } = started
        {
            if let Some(bytes) = &input {
                // Written before reading: the output of the commands the butler runs is small,
                // so the engine's buffer cannot fill up and stall the writer.
                let stdin_failed =
                    |e: std::io::Error| EngineError::Transport(format!("exec stdin: {e}"));
                stdin.write_all(bytes).await.map_err(stdin_failed)?;
                stdin.shutdown().await.map_err(stdin_failed)?;
            }
            while let Some(chunk) = stream.try_next().await? {
                output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        }
        // The output ends when the process does, but the engine may record the exit code a
        // moment later.
        loop {
            let inspected = self.docker.inspect_exec(&created.id).await?;
            if inspected.running != Some(true) {
                return Ok(ExecOutput {
                    exit_code: inspected.exit_code.unwrap_or(-1),
                    output,
                });
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    async fn top(&self, id: &str) -> Result<Vec<ProcessRow>, EngineError> {
        let top = self.docker.top_processes(id, None).await?;
        let titles = top.titles.unwrap_or_default();
        let pid_col = titles.iter().position(|t| t == "PID").unwrap_or(1);
        let cmd_col = titles.len().saturating_sub(1);
        Ok(top
            .processes
            .unwrap_or_default()
            .into_iter()
            .map(|row| ProcessRow {
                pid: row.get(pid_col).cloned().unwrap_or_default(),
                command: row.get(cmd_col).cloned().unwrap_or_default(),
            })
            .collect())
    }

    async fn upload(&self, id: &str, dir: &str, archive: Vec<u8>) -> Result<(), EngineError> {
        let options = UploadToContainerOptionsBuilder::default().path(dir).build();
        Ok(self
            .docker
            .upload_to_container(id, Some(options), bollard::body_full(archive.into()))
            .await?)
    }

    async fn download(&self, id: &str, path: &str) -> Result<Vec<u8>, EngineError> {
        let options = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        Ok(self
            .docker
            .download_from_container(id, Some(options))
            .map_ok(|chunk| chunk.to_vec())
            .try_concat()
            .await?)
    }

    async fn link_target(&self, id: &str, path: &str) -> Result<Option<String>, EngineError> {
        let options = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        Ok(found(
            self.docker
                .get_container_archive_info(id, Some(options))
                .await,
        )?
        .map(|stat| stat.link_target))
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        Ok(self
            .docker
            .logs(id, Some(options))
            .try_fold(String::new(), |mut acc, chunk| async move {
                acc.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
                Ok(acc)
            })
            .await?)
    }

    async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInfo>, EngineError> {
        Ok(found(self.docker.inspect_image(reference).await)?.map(|i| inspect::image(&i)))
    }

    async fn pull_image(&self, reference: &str) -> Result<(), EngineError> {
        let options = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        self.docker
            .create_image(Some(options), None, None)
            .try_collect::<Vec<_>>()
            .await?;
        Ok(())
    }

    fn build_image(
        &self,
        context: Vec<u8>,
        tag: &str,
    ) -> BoxStream<'static, Result<BuildProgress, EngineError>> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .build();
        let docker = self.docker.clone();
        // The engine's stream borrows the client; collected inside the future that owns it.
        futures_util::stream::once(async move {
            let items: Vec<_> = docker
                .build_image(options, None, Some(bollard::body_full(context.into())))
                .collect()
                .await;
            futures_util::stream::iter(items)
        })
        .flatten()
        .flat_map(|item| {
            let steps: Vec<Result<BuildProgress, EngineError>> = match item {
                Err(e) => vec![Err(e.into())],
                Ok(info) => {
                    let mut steps = Vec::new();
                    if let Some(text) = info.stream {
                        steps.push(Ok(BuildProgress::Output(text)));
                    }
                    if let Some(detail) = info.error_detail {
                        steps.push(Ok(BuildProgress::Failed(
                            detail.message.unwrap_or_default(),
                        )));
                    }
                    if let Some(id) = info.aux.and_then(|aux| aux.id) {
                        steps.push(Ok(BuildProgress::Built(id)));
                    }
                    steps
                }
            };
            futures_util::stream::iter(steps)
        })
        .boxed()
    }

    async fn tag_image(&self, id: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        let options = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        Ok(self.docker.tag_image(id, Some(options)).await?)
    }

    async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, EngineError> {
        Ok(found(self.docker.inspect_network(name, None).await)?.map(|n| inspect::network(&n)))
    }

    async fn create_network(
        &self,
        name: &str,
        driver: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<String, EngineError> {
        let request = NetworkCreateRequest {
            name: name.into(),
            driver: Some(driver.into()),
            labels: Some(inspect::label_map(&labels)),
            ..Default::default()
        };
        Ok(self.docker.create_network(request).await?.id)
    }

    async fn connect_network(&self, network: &str, container: &str) -> Result<(), EngineError> {
        let request = NetworkConnectRequest {
            container: container.into(),
            ..Default::default()
        };
        match self.docker.connect_network(network, request).await {
            // Connected by someone else meanwhile: the goal is met.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code,
                message,
            }) if status_code == 403 && message.contains("already exists") => Ok(()),
            other => Ok(other?),
        }
    }

    async fn root_dir(&self) -> Result<Option<String>, EngineError> {
        Ok(self.docker.info().await?.docker_root_dir)
    }

    fn events(&self, since: u64) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        let since = since.to_string();
        let filters = HashMap::from([("type", vec!["container", "network"])]);
        let options = EventsOptionsBuilder::default()
            .since(&since)
            .filters(&filters)
            .build();
        self.docker
            .events(Some(options))
            .filter_map(|message| async move {
                match message {
                    Ok(message) => relevant(&message).map(Ok),
                    Err(e) => Some(Err(e.into())),
                }
            })
            .boxed()
    }
}
