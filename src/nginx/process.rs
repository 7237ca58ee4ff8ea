//! Commands in the container and its processes: exec, `nginx -t`, SIGHUP, and which workers are
//! of the new generation or still draining.

use super::*;

impl Nginx {
    /// Runs `argv` in the container and collects its exit code and output.
    pub async fn exec(&self, argv: &[&str]) -> Result<ExecOutput, NginxError> {
        self.exec_with_input(argv, None).await
    }

    /// Like [`Nginx::exec`], with `input` on the command's stdin (then end of file).
    pub(super) async fn exec_with_input(
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
}
