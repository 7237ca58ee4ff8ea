//! The health gate: a new instance joins the upstream only once it has proven healthy. The check is
//! the image's Docker HEALTHCHECK when it has one, an HTTP GET of `--health-path` answering 2xx or
//! 3xx when one is given (with a HEALTHCHECK too: both must pass), and a TCP connect otherwise. An
//! instance that exits or restarts fails at once; one that is not healthy by the deadline fails
//! with what its last check saw and the last lines it logged.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::docker::{ContainerInfo, Engine};
use crate::http;

/// Pause between two tries of an instance's port: a ready app is seen within this.
const CHECK_EVERY: Duration = Duration::from_millis(25);
/// The engine is asked whether the instance still runs every this many tries (an inspect costs
/// tens of milliseconds on a busy engine); every try when Docker's HEALTHCHECK decides.
const INSPECT_EVERY: u32 = 8;
/// Longest wait for one HTTP or TCP check, so a hung app cannot stall the loop.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Log lines of a failing instance shown to the user.
pub const LOG_LINES: usize = 20;

/// What decides that an instance is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// Wait for Docker's HEALTHCHECK status `healthy`.
    pub docker: bool,
    /// `GET path` must answer 2xx or 3xx.
    pub http_path: Option<String>,
}

impl HealthCheck {
    pub fn choose(image_has_healthcheck: bool, health_path: Option<&str>) -> HealthCheck {
        HealthCheck {
            docker: image_has_healthcheck,
            http_path: health_path.map(str::to_owned),
        }
    }

    /// Only a TCP connect: the image has no HEALTHCHECK and no health path was given.
    pub fn tcp_only(&self) -> bool {
        !self.docker && self.http_path.is_none()
    }

    pub fn describe(&self) -> String {
        match (&self.http_path, self.docker) {
            (None, false) => "TCP connect".to_owned(),
            (None, true) => "the image's HEALTHCHECK".to_owned(),
            (Some(path), false) => format!("HTTP GET {path} answering 2xx/3xx"),
            (Some(path), true) => {
                format!("the image's HEALTHCHECK and HTTP GET {path} answering 2xx/3xx")
            }
        }
    }
}

/// Why an instance did not become healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("instance {container} {reason}")]
pub struct Unhealthy {
    pub container: String,
    /// "exited with code 1", "was not healthy within 30s: HTTP GET /healthz answered 500", ...
    pub reason: String,
    /// Its last log lines.
    pub logs: String,
}

/// Waits until `container` passes `check` on `addr` (its address on the proxy network), at most
/// until `deadline`; returns how long that took. `host` is the Host header of the HTTP check.
pub async fn wait_healthy(
    docker: &dyn Engine,
    container: &str,
    addr: SocketAddr,
    host: &str,
    check: &HealthCheck,
    deadline: Instant,
) -> Result<Duration, Unhealthy> {
    let started = Instant::now();
    for round in 0.. {
        let inspect = check.docker || round % INSPECT_EVERY == 0;
        let last = match step(docker, container, addr, host, check, inspect).await {
            Step::Healthy => return Ok(started.elapsed()),
            Step::Waiting(what) => what,
            Step::Failed(reason) => return Err(unhealthy(docker, container, reason).await),
        };
        if Instant::now() >= deadline {
            let waited = humantime::format_duration(Duration::from_secs(
                (deadline - started).as_secs_f64().round() as u64,
            ));
            let reason = format!(
                "was not healthy within {waited} ({}): {last}",
                check.describe()
            );
            return Err(unhealthy(docker, container, reason).await);
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
    unreachable!("the loop returns")
}

enum Step {
    Healthy,
    /// Not yet: what the check saw.
    Waiting(String),
    /// It will not become healthy.
    Failed(String),
}

async fn step(
    docker: &dyn Engine,
    container: &str,
    addr: SocketAddr,
    host: &str,
    check: &HealthCheck,
    inspect: bool,
) -> Step {
    let info = if inspect {
        match docker.inspect_container(container).await {
            Ok(Some(info)) => Some(info),
            Ok(None) => return Step::Failed("was removed".to_owned()),
            Err(e) => return Step::Failed(format!("cannot be inspected: {e}")),
        }
    } else {
        None
    };
    if let Some(reason) = info.as_ref().and_then(not_alive) {
        return Step::Failed(reason);
    }
    if let Some(info) = info.filter(|_| check.docker) {
        let health = info.health.unwrap_or_default();
        let last_output = health.last_output;
        match health.status.as_str() {
            "healthy" => {}
            "unhealthy" => {
                return Step::Failed(format!(
                    "is unhealthy by its image's HEALTHCHECK: {last_output}"
                ));
            }
            other => {
                return Step::Waiting(format!(
                    "HEALTHCHECK status {}{}",
                    if other.is_empty() { "none yet" } else { other },
                    if last_output.is_empty() {
                        String::new()
                    } else {
                        format!(" ({last_output})")
                    }
                ));
            }
        }
    }
    if let Some(path) = &check.http_path {
        return match tokio::time::timeout(CHECK_TIMEOUT, http::get_status(addr, host, path)).await {
            Ok(Ok(status)) if (200..400).contains(&status) => Step::Healthy,
            Ok(Ok(status)) => Step::Waiting(format!("GET {path} answered {status}")),
            Ok(Err(e)) => Step::Waiting(format!("GET {path} on {addr}: {e}")),
            Err(_) => Step::Waiting(format!(
                "GET {path} on {addr}: no answer within {CHECK_TIMEOUT:?}"
            )),
        };
    }
    if check.docker {
        return Step::Healthy;
    }
    match tokio::time::timeout(CHECK_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Step::Healthy,
        Ok(Err(e)) => Step::Waiting(format!("TCP connect to {addr}: {e}")),
        Err(_) => Step::Waiting(format!(
            "TCP connect to {addr}: no answer within {CHECK_TIMEOUT:?}"
        )),
    }
}

/// Why a container that should be up is not: exited, restarting, or restarted since it started.
fn not_alive(info: &ContainerInfo) -> Option<String> {
    let state = &info.state;
    if !state.running || state.restarting {
        let why = [&state.error, &state.status]
            .into_iter()
            .find(|s| !s.is_empty())
            .map_or("not running", |s| s.as_str());
        return Some(format!("exited with code {} ({why})", state.exit_code));
    }
    let restarts = info.restart_count;
    (restarts > 0).then(|| format!("crashed and was restarted {restarts} times"))
}

/// Checked once more just before the switch: an instance that passed its check and crashed right
/// after must not be switched in.
pub async fn still_alive(docker: &dyn Engine, container: &str) -> Result<(), Unhealthy> {
    let reason = match docker.inspect_container(container).await {
        Ok(Some(info)) => not_alive(&info),
        Ok(None) => Some("was removed".to_owned()),
        Err(e) => Some(format!("cannot be inspected: {e}")),
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(unhealthy(
            docker,
            container,
            format!("passed its check, then {reason}"),
        )
        .await),
    }
}

async fn unhealthy(docker: &dyn Engine, container: &str, reason: String) -> Unhealthy {
    Unhealthy {
        container: container.to_owned(),
        reason,
        logs: log_tail(docker, container, LOG_LINES).await,
    }
}

/// The container's last `lines` log lines, or a note why they cannot be read.
pub async fn log_tail(docker: &dyn Engine, container: &str, lines: usize) -> String {
    let read = docker.logs(container, lines);
    match tokio::time::timeout(Duration::from_secs(5), read).await {
        Ok(Ok(text)) if text.trim().is_empty() => "(it printed nothing)".to_owned(),
        Ok(Ok(text)) => text.trim_end().to_owned(),
        Ok(Err(e)) => format!("(logs unavailable: {e})"),
        Err(_) => "(logs unavailable: no answer within 5s)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_follows_the_image_and_the_health_path() {
        let cases = [
            (false, None, "TCP connect", true),
            (true, None, "the image's HEALTHCHECK", false),
            (
                false,
                Some("/healthz"),
                "HTTP GET /healthz answering 2xx/3xx",
                false,
            ),
            (
                true,
                Some("/healthz"),
                "the image's HEALTHCHECK and HTTP GET /healthz answering 2xx/3xx",
                false,
            ),
        ];
        for (docker, path, text, tcp) in cases {
            let check = HealthCheck::choose(docker, path);
            assert_eq!(check.describe(), text);
            assert_eq!(check.tcp_only(), tcp);
        }
    }
}
