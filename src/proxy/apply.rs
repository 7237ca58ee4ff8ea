//! Apply: the only way a config tree reaches the serving nginx. Stage it as a new version, validate
//! it with the serving binary, swap `live`, reload with SIGHUP, verify routes through the proxy, and
//! swap back when anything after the swap fails. Every step is timed for the benchmarks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::nginx::{Activation, ConfigTree, DataPush, Nginx, NginxError, VERSIONS_DIR};
use crate::proxy::render::DATA_FILE;
use crate::store::VersionTimings;

/// Versions kept in the container besides the live and the previous one, for a quick rollback.
const KEEP_NEWEST: usize = 5;
const DEFAULT_VERIFY_TIMEOUT: Duration = Duration::from_secs(3);

/// One route to check after a reload: a request to the proxy with this `Host` header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RouteProbe {
    pub host: String,
    /// The status the route must answer with; `None` accepts anything but 502, 503 and 504.
    pub expected_status: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub host: String,
    /// The last status seen; `None` when nothing answered.
    pub status: Option<u16>,
    pub ok: bool,
    pub error: Option<String>,
}

/// Wall time of each step; zero for steps that did not run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepTimings {
    /// The archive upload, when the image cannot take the tree on an exec's stdin (no shell or tar).
    pub upload: Duration,
    /// `nginx -t`; on the one-exec path also the upload, the swap and the SIGHUP (see
    /// [`Nginx::stage_and_activate`]).
    pub validate: Duration,
    /// The step-by-step path only: the `live` link upload and the SIGHUP.
    pub swap: Duration,
    /// SIGHUP sent until only new workers accept (nginx serves the new config from the first).
    pub reload: Duration,
    /// Probing the changed routes until each answers from its own server block.
    pub verify: Duration,
    pub rollback: Duration,
}

impl StepTimings {
    /// What the store keeps of an apply: validate and reload, with the render before it.
    pub fn for_version(&self, render: Option<Duration>) -> VersionTimings {
        let ran = |step: Duration| (!step.is_zero()).then_some(step.as_secs_f64() * 1e3);
        VersionTimings {
            render_ms: render.map(|r| r.as_secs_f64() * 1e3),
            validate_ms: ran(self.validate),
            reload_ms: ran(self.swap + self.reload),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ApplyStatus {
    /// The new version is live and every probe passed.
    Applied,
    /// This hash was already live; nothing was done.
    Unchanged,
    /// `nginx -t` refused the tree; the live config was never touched. `error` is nginx's message.
    Invalid { error: String },
    /// The new version went live but failed after the swap; `restored` is live again.
    RolledBack {
        reason: String,
        restored: Option<String>,
    },
    /// A Docker or container error stopped the apply; `live` is whatever `ApplyOutcome::live` says.
    Failed { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyOutcome {
    pub hash: String,
    /// The version that was live before.
    pub previous: Option<String>,
    /// The version live when apply returned, as far as the butler knows.
    pub live: Option<String>,
    pub status: ApplyStatus,
    pub probes: Vec<ProbeResult>,
    pub timings: StepTimings,
    /// Applied as routes data to the running nginx (no reload, no worker restarted).
    pub as_data: bool,
}

impl ApplyOutcome {
    pub fn is_applied(&self) -> bool {
        matches!(self.status, ApplyStatus::Applied | ApplyStatus::Unchanged)
    }
}

/// Applies trees to one nginx container, one at a time (concurrent calls queue).
#[derive(Debug, Clone)]
pub struct Applier {
    nginx: Nginx,
    probe_addr: SocketAddr,
    probe_path: String,
    verify_timeout: Duration,
    lock: Arc<Mutex<()>>,
}

impl Applier {
    /// Probes go to `127.0.0.1:<http_port>`, the proxy as a user on this host reaches it.
    pub fn new(nginx: Nginx) -> Self {
        let probe_addr = SocketAddr::from(([127, 0, 0, 1], nginx.spec().http_port));
        Self {
            nginx,
            probe_addr,
            probe_path: "/".to_owned(),
            verify_timeout: DEFAULT_VERIFY_TIMEOUT,
            lock: Arc::default(),
        }
    }

    /// Probe another address (e.g. the nginx container's IP when the butler runs in a container).
    pub fn with_probe_addr(mut self, addr: SocketAddr) -> Self {
        self.probe_addr = addr;
        self
    }

    /// The path every probe requests (default `/`).
    pub fn with_probe_path(mut self, path: &str) -> Self {
        self.probe_path = path.to_owned();
        self
    }

    /// How long each route may take to answer well after the reload.
    pub fn with_verify_timeout(mut self, timeout: Duration) -> Self {
        self.verify_timeout = timeout;
        self
    }

    pub fn nginx(&self) -> &Nginx {
        &self.nginx
    }

    /// Stage `files` as version `hash`, validate, swap, reload, verify `probes`; roll back on failure.
    pub async fn apply(
        &self,
        files: &ConfigTree,
        hash: &str,
        probes: &[RouteProbe],
    ) -> ApplyOutcome {
        let _serial = self.lock.lock().await;
        let mut outcome = ApplyOutcome {
            hash: hash.to_owned(),
            previous: None,
            live: None,
            status: ApplyStatus::Applied,
            probes: Vec::new(),
            timings: StepTimings::default(),
            as_data: false,
        };
        if let Err(e) = self.run(files, hash, probes, &mut outcome).await {
            outcome.status = ApplyStatus::Failed {
                error: e.to_string(),
            };
        }
        outcome
    }

    /// Applies a tree that differs from the live version `live` only in its routes data: the data
    /// goes to the running nginx (validated there, the old data kept when refused), the probes
    /// check it, and the version is stored in the container and made `live` without a reload, so
    /// no worker restarts and no client's connection is closed. `previous_data` is put back when a
    /// probe fails. Anything that keeps the data path from being used (another version live, no
    /// control token) applies the whole tree with a reload instead.
    pub async fn apply_data(
        &self,
        files: &ConfigTree,
        hash: &str,
        live: &str,
        previous_data: &str,
        probes: &[RouteProbe],
    ) -> ApplyOutcome {
        let mut outcome = ApplyOutcome {
            hash: hash.to_owned(),
            previous: Some(live.to_owned()),
            live: Some(live.to_owned()),
            status: ApplyStatus::Applied,
            probes: Vec::new(),
            timings: StepTimings::default(),
            as_data: true,
        };
        let serial = self.lock.lock().await;
        match self
            .run_data(files, hash, previous_data, probes, &mut outcome)
            .await
        {
            Ok(true) => outcome,
            Ok(false) => {
                drop(serial);
                self.apply(files, hash, probes).await
            }
            Err(e) => {
                outcome.status = ApplyStatus::Failed {
                    error: e.to_string(),
                };
                outcome
            }
        }
    }

    /// `Ok(false)`: the data path cannot be used here; nothing was changed.
    async fn run_data(
        &self,
        files: &ConfigTree,
        hash: &str,
        previous_data: &str,
        probes: &[RouteProbe],
        out: &mut ApplyOutcome,
    ) -> Result<bool, NginxError> {
        let nginx = &self.nginx;
        let Some(text) = files.get(DATA_FILE) else {
            return Ok(false);
        };
        // Another process may have applied a version since (a rollback, a deploy): its structure
        // may differ, and then only a reload applies this tree.
        if nginx.live_version().await?.as_deref() != out.previous.as_deref() {
            return Ok(false);
        }
        if out.previous.as_deref() == Some(hash) {
            out.status = ApplyStatus::Unchanged;
            return Ok(true);
        }
        let t = Instant::now();
        let pushed = nginx.push_routes(text).await?;
        out.timings.validate = t.elapsed();
        match pushed {
            DataPush::Accepted => {}
            DataPush::Refused(why) => {
                out.status = ApplyStatus::Invalid {
                    error: format!("nginx's data path refused the routes: {why}"),
                };
                return Ok(true);
            }
            DataPush::Unavailable(why) => {
                tracing::info!(reason = %why, "routes data cannot go to nginx at run time; applying with a reload");
                return Ok(false);
            }
        }

        let t = Instant::now();
        out.probes = self.verify(probes).await;
        out.timings.verify = t.elapsed();
        if let Some(reason) = failed_probes(&out.probes) {
            let t = Instant::now();
            nginx.push_routes(previous_data).await?;
            out.timings.rollback = t.elapsed();
            out.status = ApplyStatus::RolledBack {
                reason,
                restored: out.previous.clone(),
            };
            return Ok(true);
        }

        // Served already; stored so that a restart or a reload of nginx serves it too.
        let t = Instant::now();
        nginx.stage(files, hash).await?;
        nginx.point_live(hash).await?;
        out.live = Some(hash.to_owned());
        out.timings.swap = t.elapsed();
        self.prune_after(hash, out.previous.clone());
        Ok(true)
    }

    async fn run(
        &self,
        files: &ConfigTree,
        hash: &str,
        probes: &[RouteProbe],
        out: &mut ApplyOutcome,
    ) -> Result<(), NginxError> {
        let nginx = &self.nginx;
        // The workers of the serving generation, read before anything can send the SIGHUP: the
        // reload is done when none of them accepts any more.
        let (live, before) = tokio::join!(nginx.live_version(), nginx.worker_pids());
        out.previous = live?;
        out.live = out.previous.clone();
        if out.previous.as_deref() == Some(hash) {
            out.status = ApplyStatus::Unchanged;
            return Ok(());
        }
        let before = before?;

        let t = Instant::now();
        let activation = match nginx.stage_and_activate(files, hash).await? {
            Some(activation) => activation,
            None => {
                nginx.stage(files, hash).await?;
                out.timings.upload = t.elapsed();
                nginx.activate(hash).await?
            }
        };
        let t = t + out.timings.upload;
        match activation {
            Activation::Activated => {
                out.timings.validate = t.elapsed();
                out.live = Some(hash.to_owned());
            }
            Activation::Invalid(error) => {
                out.timings.validate = t.elapsed();
                out.status = ApplyStatus::Invalid { error };
                return Ok(());
            }
            Activation::Unsupported => {
                let verdict = nginx
                    .test_config(&format!("{VERSIONS_DIR}/{hash}/nginx.conf"))
                    .await?;
                out.timings.validate = t.elapsed();
                if let Err(error) = verdict {
                    out.status = ApplyStatus::Invalid { error };
                    return Ok(());
                }
                let t = Instant::now();
                nginx.point_live(hash).await?;
                out.live = Some(hash.to_owned());
                nginx.send_hup().await?;
                out.timings.swap = t.elapsed();
            }
        }

        // Probes only once no old worker accepts: an old one could answer for a changed host.
        let t = Instant::now();
        let reloaded = nginx.await_new_workers(&before).await;
        out.timings.reload = t.elapsed();
        let failure = match reloaded {
            Err(e @ NginxError::ReloadNotApplied { .. }) => Some(e.to_string()),
            Err(e) => return Err(e),
            Ok(()) => {
                let t = Instant::now();
                out.probes = self.verify(probes).await;
                out.timings.verify = t.elapsed();
                failed_probes(&out.probes)
            }
        };

        if let Some(reason) = failure {
            let t = Instant::now();
            if let Some(previous) = out.previous.clone() {
                nginx.point_live(&previous).await?;
                out.live = Some(previous);
                // The old generation may still be serving (a refused reload): no new workers then.
                match nginx.reload().await {
                    Ok(()) | Err(NginxError::ReloadNotApplied { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            out.timings.rollback = t.elapsed();
            out.status = ApplyStatus::RolledBack {
                reason,
                restored: out.previous.clone(),
            };
            return Ok(());
        }

        self.prune_after(hash, out.previous.clone());
        Ok(())
    }

    /// Old versions go after the apply returns: the route is live and nothing waits for this.
    fn prune_after(&self, hash: &str, previous: Option<String>) {
        let keep: Vec<String> = std::iter::once(hash.to_owned()).chain(previous).collect();
        let pruner = self.nginx.clone();
        tokio::spawn(async move {
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            if let Err(e) = pruner.prune_versions(&keep, KEEP_NEWEST).await {
                tracing::warn!(error = %e, "could not prune old nginx config versions");
            }
        });
    }

    async fn verify(&self, probes: &[RouteProbe]) -> Vec<ProbeResult> {
        let checks = probes
            .iter()
            .map(|p| probe_until_good(self.probe_addr, &self.probe_path, p, self.verify_timeout));
        futures_util::future::join_all(checks).await
    }
}

/// Why the route check failed, `None` when every probe passed.
fn failed_probes(probes: &[ProbeResult]) -> Option<String> {
    let failed: Vec<String> = probes
        .iter()
        .filter(|p| !p.ok)
        .map(|p| match (&p.status, &p.error) {
            (Some(status), _) => format!("{} answered {status}", p.host),
            (None, Some(error)) => format!("{}: {error}", p.host),
            (None, None) => format!("{}: no answer", p.host),
        })
        .collect();
    (!failed.is_empty()).then(|| format!("route check failed: {}", failed.join("; ")))
}

fn is_good(probe: &RouteProbe, status: u16) -> bool {
    match probe.expected_status {
        Some(expected) => status == expected,
        None => !matches!(status, 502..=504),
    }
}

/// Retries the route until it answers well or `timeout` passes: right after the HUP, old workers
/// may still hold keep-alive connections, and an upstream may need a moment.
async fn probe_until_good(
    addr: SocketAddr,
    path: &str,
    probe: &RouteProbe,
    timeout: Duration,
) -> ProbeResult {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = ProbeResult {
        host: probe.host.clone(),
        status: None,
        ok: false,
        error: None,
    };
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, crate::http::get_status(addr, &probe.host, path)).await {
            Ok(Ok(status)) => {
                last.status = Some(status);
                last.error = None;
                if is_good(probe, status) {
                    last.ok = true;
                    return last;
                }
            }
            Ok(Err(e)) => last.error = Some(e.to_string()),
            Err(_) => last.error = Some(format!("no answer within {timeout:?}")),
        }
        if tokio::time::Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_errors_are_the_only_bad_answers_by_default() {
        let any = RouteProbe {
            host: "a".into(),
            expected_status: None,
        };
        assert!(is_good(&any, 200) && is_good(&any, 404) && is_good(&any, 500));
        assert!(!is_good(&any, 502) && !is_good(&any, 503) && !is_good(&any, 504));
        let exact = RouteProbe {
            host: "a".into(),
            expected_status: Some(200),
        };
        assert!(!is_good(&exact, 404));
    }
}
