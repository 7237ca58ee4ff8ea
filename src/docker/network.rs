//! The bridge network the butler owns (`devops-butler-net`): created when missing, every app and the
//! nginx container connected to it, so upstreams can use an IP that nginx reaches.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{NetworkConnectRequest, NetworkCreateRequest};

use super::discovery::is_not_found;
use crate::labels::LABEL_ROLE;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "cannot create Docker network {network}: {source} (check `docker network ls`; remove a conflicting network of that name or set [proxy] network)"
    )]
    Create {
        network: String,
        source: bollard::errors::Error,
    },
    #[error(
        "Docker network {network} exists but uses driver {driver}, not bridge (remove it or set [proxy] network to another name)"
    )]
    NotBridge { network: String, driver: String },
    #[error("cannot inspect Docker network {network}: {source}")]
    Inspect {
        network: String,
        source: bollard::errors::Error,
    },
    #[error("cannot connect container {container} to network {network}: {source}")]
    Connect {
        container: String,
        network: String,
        source: bollard::errors::Error,
    },
}

/// Makes sure a bridge network `name` exists; returns its id. An existing one is reused as it is.
pub async fn ensure_network(docker: &Docker, name: &str) -> Result<String, NetworkError> {
    match docker.inspect_network(name, None).await {
        Ok(net) => {
            let driver = net.driver.unwrap_or_default();
            if driver != "bridge" {
                return Err(NetworkError::NotBridge {
                    network: name.into(),
                    driver,
                });
            }
            return Ok(net.id.unwrap_or_default());
        }
        Err(e) if is_not_found(&e) => {}
        Err(source) => {
            return Err(NetworkError::Inspect {
                network: name.into(),
                source,
            });
        }
    }
    let request = NetworkCreateRequest {
        name: name.into(),
        driver: Some("bridge".into()),
        labels: Some(HashMap::from([(LABEL_ROLE.into(), "network".into())])),
        ..Default::default()
    };
    match docker.create_network(request).await {
        Ok(created) => Ok(created.id),
        // Lost a race with another butler process: theirs is as good as ours.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 409, ..
        }) => Box::pin(ensure_network(docker, name)).await,
        Err(source) => Err(NetworkError::Create {
            network: name.into(),
            source,
        }),
    }
}

/// Whether `container` (id or name) is attached to `network` (name).
pub async fn is_connected(
    docker: &Docker,
    container: &str,
    network: &str,
) -> Result<bool, NetworkError> {
    let info = docker
        .inspect_container(container, None)
        .await
        .map_err(|source| NetworkError::Connect {
            container: container.into(),
            network: network.into(),
            source,
        })?;
    Ok(info
        .network_settings
        .and_then(|n| n.networks)
        .is_some_and(|nets| nets.contains_key(network)))
}

/// Attaches `container` to `network`; already attached is success.
pub async fn connect(docker: &Docker, container: &str, network: &str) -> Result<(), NetworkError> {
    if is_connected(docker, container, network).await? {
        return Ok(());
    }
    let request = NetworkConnectRequest {
        container: container.into(),
        ..Default::default()
    };
    match docker.connect_network(network, request).await {
        Ok(()) => Ok(()),
        // Connected between the check and the call (another reconcile): the goal is met.
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        }) if status_code == 403 && message.contains("already exists") => Ok(()),
        Err(source) => Err(NetworkError::Connect {
            container: container.into(),
            network: network.into(),
            source,
        }),
    }
}
