//! Connecting to the Docker engine: pick the endpoint (config, then `DOCKER_HOST`, then the local
//! socket), negotiate the API version down to what the engine speaks (Debian's 20.10 answers 1.41),
//! and ping it so a dead engine is reported at connect time with a hint, not at first use.

use std::sync::Arc;

use bollard::{API_DEFAULT_VERSION, Docker};

use super::bollard_engine::BollardEngine;
use super::engine::{Engine, EngineError, EngineHandle};

/// Where the engine is looked for when neither the config nor `DOCKER_HOST` names one.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Seconds bollard waits for the response headers of one request (not for a stream's body).
const REQUEST_TIMEOUT_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "Docker host `{host}` is not supported: use unix:///path/to/docker.sock, tcp://HOST:PORT or http://HOST:PORT (set [docker] host or DOCKER_HOST)"
    )]
    UnsupportedHost { host: String },
    #[error(
        "cannot reach the Docker engine at {host}: {source} (is dockerd running? is this user in the docker group?)"
    )]
    Unreachable { host: String, source: EngineError },
}

/// Resolves the endpoint: the configured one, else `DOCKER_HOST`, else the local socket.
pub fn resolve_host(configured: Option<&str>) -> String {
    configured
        .map(str::to_owned)
        .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| DEFAULT_HOST.to_owned())
}

/// Connects, negotiates the API version and pings. `host` is `[docker] host` from the config.
pub async fn connect(host: Option<&str>) -> Result<EngineHandle, ClientError> {
    let host = resolve_host(host);
    let unreachable = |source: bollard::errors::Error| ClientError::Unreachable {
        host: host.clone(),
        source: source.into(),
    };
    let docker = if host.starts_with("unix://") {
        Docker::connect_with_unix(&host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(&host, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else {
        return Err(ClientError::UnsupportedHost { host });
    }
    .map_err(unreachable)?;
    let docker = docker.negotiate_version().await.map_err(unreachable)?;
    let engine = BollardEngine::new(docker);
    engine
        .ping()
        .await
        .map_err(|source| ClientError::Unreachable {
            host: host.clone(),
            source,
        })?;
    Ok(Arc::new(engine))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_host_wins() {
        assert_eq!(
            resolve_host(Some("tcp://10.0.0.1:2375")),
            "tcp://10.0.0.1:2375"
        );
    }

    #[tokio::test]
    async fn unsupported_scheme_is_named() {
        let err = connect(Some("ftp://x")).await.unwrap_err();
        assert!(err.to_string().contains("ftp://x"), "{err}");
    }

    #[tokio::test]
    async fn missing_socket_says_what_to_check() {
        let err = connect(Some("unix:///nonexistent/docker.sock"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("unix:///nonexistent/docker.sock"), "{text}");
        assert!(text.contains("is dockerd running"), "{text}");
    }
}
