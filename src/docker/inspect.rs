//! The one parser of what the engine says about containers and images: bollard's models in, the
//! butler's plain data (`engine`) out. Nothing else reads a bollard model.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bollard::models::{
    ContainerInspectResponse, ContainerSummary, HealthStatusEnum, ImageInspect, NetworkInspect,
};

use super::engine::{
    ContainerHealth, ContainerInfo, ContainerState, ImageInfo, ListedContainer, NetworkInfo,
};

/// A time the engine reports for something that never happened (`0001-01-01T00:00:00Z`).
fn real_time(t: Option<&String>) -> Option<String> {
    t.filter(|t| !t.is_empty() && !t.starts_with("0001-"))
        .cloned()
}

pub fn container(info: &ContainerInspectResponse) -> ContainerInfo {
    let config = info.config.as_ref();
    let state = info.state.as_ref();
    let env = config
        .and_then(|c| c.env.as_ref())
        .into_iter()
        .flatten()
        .map(|entry| match entry.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (entry.clone(), String::new()),
        })
        .collect();
    let networks = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|(name, endpoint)| {
            let ip = endpoint.ip_address.as_deref()?.parse::<IpAddr>().ok()?;
            Some((name.clone(), ip))
        })
        .collect();
    let attached = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .into_iter()
        .flat_map(|n| n.keys().cloned())
        .collect();
    let health = state.and_then(|s| s.health.as_ref()).and_then(|h| {
        let status = match h.status? {
            HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => return None,
            other => other.to_string(),
        };
        let last_output = h
            .log
            .as_ref()
            .and_then(|log| log.last())
            .and_then(|entry| entry.output.as_deref())
            .map(|o| o.trim().to_owned())
            .unwrap_or_default();
        Some(ContainerHealth {
            status,
            last_output,
        })
    });
    let image_id = info.image.clone().unwrap_or_default();
    ContainerInfo {
        id: info.id.clone().unwrap_or_default(),
        name: info
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        image: config
            .and_then(|c| c.image.clone())
            .unwrap_or_else(|| image_id.clone()),
        image_id,
        labels: config
            .and_then(|c| c.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect(),
        env,
        exposed_ports: tcp_ports(
            config
                .and_then(|c| c.exposed_ports.as_ref())
                .into_iter()
                .flatten(),
        ),
        networks,
        attached,
        state: ContainerState {
            status: state
                .and_then(|s| s.status)
                .map(|s| s.to_string())
                .unwrap_or_default(),
            running: state.and_then(|s| s.running).unwrap_or(false),
            restarting: state.and_then(|s| s.restarting).unwrap_or(false),
            pid: state.and_then(|s| s.pid).filter(|p| *p > 0),
            exit_code: state.and_then(|s| s.exit_code).unwrap_or(0),
            oom_killed: state.and_then(|s| s.oom_killed).unwrap_or(false),
            error: state.and_then(|s| s.error.clone()).unwrap_or_default(),
            started_at: real_time(state.and_then(|s| s.started_at.as_ref())),
            finished_at: real_time(state.and_then(|s| s.finished_at.as_ref())),
        },
        health,
        restart_count: info.restart_count.unwrap_or(0).max(0) as u64,
    }
}

pub fn summary(summary: &ContainerSummary) -> ListedContainer {
    ListedContainer {
        id: summary.id.clone().unwrap_or_default(),
        name: summary
            .names
            .as_ref()
            .and_then(|n| n.first())
            .map(|n| n.trim_start_matches('/').to_owned())
            .unwrap_or_default(),
        labels: summary
            .labels
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        state: summary.state.map(|s| s.to_string()).unwrap_or_default(),
    }
}

pub fn image(image: &ImageInspect) -> ImageInfo {
    let config = image.config.as_ref();
    let healthcheck = config
        .and_then(|c| c.healthcheck.as_ref())
        .and_then(|h| h.test.as_ref())
        .and_then(|test| test.first())
        .is_some_and(|first| first != "NONE");
    ImageInfo {
        id: image.id.clone().unwrap_or_default(),
        exposed_ports: tcp_ports(
            config
                .and_then(|c| c.exposed_ports.as_ref())
                .into_iter()
                .flatten(),
        ),
        healthcheck,
        size: image.size.unwrap_or(0).max(0) as u64,
    }
}

pub fn network(network: &NetworkInspect) -> NetworkInfo {
    NetworkInfo {
        id: network.id.clone().unwrap_or_default(),
        driver: network.driver.clone().unwrap_or_default(),
    }
}

/// `"8080/tcp"` → 8080, ascending without duplicates; udp and sctp ports are not routable by an
/// HTTP proxy and are dropped.
pub fn tcp_ports<'a>(specs: impl IntoIterator<Item = &'a String>) -> Vec<u16> {
    let ports: BTreeSet<u16> = specs
        .into_iter()
        .filter_map(|spec| {
            let (port, proto) = spec.split_once('/').unwrap_or((spec.as_str(), "tcp"));
            (proto == "tcp").then(|| port.parse().ok()).flatten()
        })
        .collect();
    ports.into_iter().collect()
}

/// Labels as the engine's create call wants them.
pub(crate) fn label_map(
    labels: &BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ContainerState as State, ContainerStateStatusEnum};

    #[test]
    fn only_tcp_ports_are_kept() {
        let specs: Vec<String> = ["53/udp", "8080/tcp", "80/tcp", "80/tcp", "x/tcp"]
            .map(String::from)
            .into();
        assert_eq!(tcp_ports(&specs), vec![80, 8080]);
    }

    #[test]
    fn an_exited_container_reads_as_ended_with_its_times() {
        let info = ContainerInspectResponse {
            id: Some("abc".into()),
            name: Some("/web".into()),
            image: Some("sha256:1".into()),
            config: Some(ContainerConfig {
                image: Some("shop:1".into()),
                env: Some(vec!["A=1=2".into(), "FLAG".into()]),
                ..Default::default()
            }),
            state: Some(State {
                status: Some(ContainerStateStatusEnum::EXITED),
                running: Some(false),
                exit_code: Some(137),
                oom_killed: Some(true),
                started_at: Some("2026-12-01T10:00:00Z".into()),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let parsed = container(&info);
        assert_eq!(parsed.name, "web");
        assert_eq!(parsed.image, "shop:1");
        assert_eq!(parsed.image_id, "sha256:1");
        assert_eq!(parsed.env.get("A").map(String::as_str), Some("1=2"));
        assert_eq!(parsed.env.get("FLAG").map(String::as_str), Some(""));
        assert!(parsed.has_ended());
        assert_eq!(parsed.state.exit_code, 137);
        assert!(parsed.state.oom_killed);
        assert_eq!(
            parsed.state.started_at.as_deref(),
            Some("2026-12-01T10:00:00Z")
        );
        assert_eq!(parsed.state.finished_at, None);
    }
}
