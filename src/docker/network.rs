//! The bridge network the butler owns (`devops-butler-net`): created when missing, every app and the
//! nginx container connected to it, so upstreams can use an IP that nginx reaches.

use std::collections::BTreeMap;

use super::engine::{Engine, EngineError};
use crate::labels::LABEL_ROLE;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "cannot create Docker network {network}: {source} (check `docker network ls`; remove a conflicting network of that name or set [proxy] network)"
    )]
    Create {
        network: String,
        source: EngineError,
    },
    #[error(
        "Docker network {network} exists but uses driver {driver}, not bridge (remove it or set [proxy] network to another name)"
    )]
    NotBridge { network: String, driver: String },
    #[error("cannot inspect Docker network {network}: {source}")]
    Inspect {
        network: String,
        source: EngineError,
    },
    #[error("cannot connect container {container} to network {network}: {source}")]
    Connect {
        container: String,
        network: String,
        source: EngineError,
    },
}

/// Makes sure a bridge network `name` exists; returns its id. An existing one is reused as it is.
pub async fn ensure_network(docker: &dyn Engine, name: &str) -> Result<String, NetworkError> {
    match docker.inspect_network(name).await {
        Ok(Some(net)) if net.driver != "bridge" => {
            return Err(NetworkError::NotBridge {
                network: name.into(),
                driver: net.driver,
            });
        }
        Ok(Some(net)) => return Ok(net.id),
        Ok(None) => {}
        Err(source) => {
            return Err(NetworkError::Inspect {
                network: name.into(),
                source,
            });
        }
    }
    let labels = BTreeMap::from([(LABEL_ROLE.into(), "network".into())]);
    match docker.create_network(name, "bridge", labels).await {
        Ok(id) => Ok(id),
        // Lost a race with another butler process: theirs is as good as ours.
        Err(e) if e.is_conflict() => Box::pin(ensure_network(docker, name)).await,
        Err(source) => Err(NetworkError::Create {
            network: name.into(),
            source,
        }),
    }
}

/// Whether `container` (id or name) is attached to `network` (name).
pub async fn is_connected(
    docker: &dyn Engine,
    container: &str,
    network: &str,
) -> Result<bool, NetworkError> {
    let failed = |source| NetworkError::Connect {
        container: container.into(),
        network: network.into(),
        source,
    };
    let info = docker
        .inspect_container(container)
        .await
        .map_err(failed)?
        .ok_or_else(|| failed(EngineError::not_found(container)))?;
    Ok(info.is_attached(network))
}

/// Attaches `container` to `network`; already attached is success.
pub async fn connect(
    docker: &dyn Engine,
    container: &str,
    network: &str,
) -> Result<(), NetworkError> {
    if is_connected(docker, container, network).await? {
        return Ok(());
    }
    docker
        .connect_network(network, container)
        .await
        .map_err(|source| NetworkError::Connect {
            container: container.into(),
            network: network.into(),
            source,
        })
}
