//! Discovery: reads every running container into a `ContainerSnapshot` (list, then inspect with a
//! bounded concurrency). It only reports what the engine and the kernel say; deciding what becomes a
//! route is the planner's job. Listening ports come from `/proc/<pid>/net/tcp{,6}` when the butler
//! sees the container's PIDs (on the host), else from short TCP connect probes on its IP.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};

use super::engine::{ContainerInfo, Engine, EngineError, ListedContainer};
use super::snapshot::{ContainerSnapshot, Exited};
use crate::labels::{COMMON_WEB_PORTS, ENV_VIRTUAL_PORT, LABEL_PORT};

/// How many containers are inspected at once: enough to hide latency, few enough not to flood dockerd.
const INSPECT_CONCURRENCY: usize = 16;
const PROBE_TIMEOUT: Duration = Duration::from_millis(250);
const LOG_TAIL_LINES: usize = 50;
/// Upper bound of the log tail kept per container, so a chatty app cannot bloat a snapshot.
const LOG_TAIL_MAX_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot list the running containers: {0} (is the Docker engine reachable?)")]
    List(#[source] EngineError),
    #[error(
        "cannot inspect container {id}: {source} (it may have just been removed; the next resync sees it)"
    )]
    Inspect { id: String, source: EngineError },
}

/// Snapshots of every running container. A container that disappears between list and inspect is
/// skipped: the event that removed it will trigger the next reconcile anyway.
pub async fn list_snapshots(docker: &dyn Engine) -> Result<Vec<ContainerSnapshot>, DiscoveryError> {
    list_snapshots_with(docker, None).await
}

/// [`list_snapshots`] of the containers with label `only_label` (`KEY=VALUE` or `KEY`), when given:
/// the engine filters, so the others are not even inspected.
pub async fn list_snapshots_with(
    docker: &dyn Engine,
    only_label: Option<&str>,
) -> Result<Vec<ContainerSnapshot>, DiscoveryError> {
    list_snapshots_and_exited(docker, only_label, |_| false).await
}

/// [`list_snapshots_with`], plus the exited containers `keep_exited` asks for, judged by what the
/// list tells of them (id, name, labels; `running` false): only those are inspected, so a host
/// with hundreds of finished one-off containers costs one list, not hundreds of inspects.
pub async fn list_snapshots_and_exited(
    docker: &dyn Engine,
    only_label: Option<&str>,
    keep_exited: impl Fn(&ContainerSnapshot) -> bool,
) -> Result<Vec<ContainerSnapshot>, DiscoveryError> {
    let labels: Vec<String> = only_label.into_iter().map(str::to_owned).collect();
    let listed = docker
        .list_containers(&labels)
        .await
        .map_err(DiscoveryError::List)?;
    let ids: Vec<String> = listed
        .into_iter()
        .filter(|c| c.is_live() || (c.is_finished() && keep_exited(&summary_snapshot(c))))
        .map(|c| c.id)
        .collect();
    let images = ImageCache::default();
    let mut snapshots: Vec<ContainerSnapshot> = stream::iter(ids)
        .map(|id| {
            let images = &images;
            async move { inspect(docker, &id, images).await }
        })
        .buffer_unordered(INSPECT_CONCURRENCY)
        .try_filter_map(|s| async move { Ok(s) })
        .try_collect()
        .await?;
    snapshots.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    Ok(snapshots)
}

/// What a list entry tells of a container without inspecting it: id, name and labels.
pub fn summary_snapshot(listed: &ListedContainer) -> ContainerSnapshot {
    ContainerSnapshot {
        id: listed.id.clone(),
        name: listed.name.clone(),
        labels: listed.labels.clone(),
        running: listed.state == "running" || listed.state == "restarting",
        ..ContainerSnapshot::default()
    }
}

/// The snapshot of one container (by id or name); `None` when it does not exist or was created
/// and never started. An exited one comes back with `running` false and `exited` set.
pub async fn snapshot_one(
    docker: &dyn Engine,
    id: &str,
) -> Result<Option<ContainerSnapshot>, DiscoveryError> {
    inspect(docker, id, &ImageCache::default()).await
}

/// Exposed ports per image id, so a list of 200 containers of one image inspects it once.
#[derive(Default)]
struct ImageCache(tokio::sync::Mutex<HashMap<String, Vec<u16>>>);

impl ImageCache {
    async fn exposed_ports(&self, docker: &dyn Engine, image_id: &str) -> Vec<u16> {
        if let Some(ports) = self.0.lock().await.get(image_id) {
            return ports.clone();
        }
        // An image that cannot be inspected (removed while in use) only loses its EXPOSE hints.
        let ports = match docker.inspect_image(image_id).await {
            Ok(Some(image)) => image.exposed_ports,
            _ => Vec::new(),
        };
        self.0.lock().await.insert(image_id.into(), ports.clone());
        ports
    }
}

/// `None` when the container is gone, or was created and never started.
async fn inspect(
    docker: &dyn Engine,
    id: &str,
    images: &ImageCache,
) -> Result<Option<ContainerSnapshot>, DiscoveryError> {
    let info = docker
        .inspect_container(id)
        .await
        .map_err(|source| DiscoveryError::Inspect {
            id: id.into(),
            source,
        })?;
    let Some(info) = info else {
        return Ok(None);
    };
    if !info.state.running {
        // How it ended is all a stopped container is asked: no image, sockets or logs.
        let snapshot = snapshot_from_inspect(&info, &[]);
        return Ok(snapshot.exited.is_some().then_some(snapshot));
    }
    let image_ports = match info.image_id.as_str() {
        "" => Vec::new(),
        image_id => images.exposed_ports(docker, image_id).await,
    };
    let mut snapshot = snapshot_from_inspect(&info, &image_ports);
    let listening = listening_ports(&info, &snapshot).await;
    snapshot.listening_ports = listening.as_ref().map(|l| l.ports.clone());
    if !port_is_evident(&snapshot) {
        snapshot.log_tail = log_tail(docker, &snapshot.id).await;
        // Probes only try likely ports; one the logs name is likely too.
        if let (
            Some(Listening {
                probed_at: Some(ip),
                ..
            }),
            Some(port),
        ) = (
            &listening,
            super::log_ports::port_from_logs(&snapshot.log_tail),
        ) && let Some(ports) = snapshot.listening_ports.as_mut()
            && !ports.contains(&port)
            && !probe_ports(*ip, BTreeSet::from([port])).await.is_empty()
        {
            ports.push(port);
            ports.sort_unstable();
        }
    }
    Ok(Some(snapshot))
}

/// Everything an inspect tells of a container, without further I/O; `image_ports` are its
/// image's EXPOSE entries.
pub(crate) fn snapshot_from_inspect(
    info: &ContainerInfo,
    image_ports: &[u16],
) -> ContainerSnapshot {
    let exposed: BTreeSet<u16> = image_ports
        .iter()
        .chain(&info.exposed_ports)
        .copied()
        .collect();
    let state = &info.state;
    ContainerSnapshot {
        id: info.id.clone(),
        name: info.name.clone(),
        image: info.image.clone(),
        labels: info.labels.clone(),
        env: info.env.clone(),
        exposed_ports: exposed.into_iter().collect(),
        listening_ports: None,
        log_tail: String::new(),
        networks: info.networks.clone(),
        running: state.running,
        health: info.health.as_ref().map(|h| h.status.clone()),
        restart_count: info.restart_count,
        started_at: state.started_at.clone(),
        exited: info.has_ended().then(|| Exited {
            exit_code: state.exit_code,
            oom_killed: state.oom_killed,
            finished_at: state.finished_at.clone(),
            stopped_by_user: false,
        }),
    }
}

/// True when the planner can choose a port without looking at the logs, so they are not fetched:
/// the user set it, or what the container declares agrees with what it listens on (or there is
/// no telling). An exposed port nothing listens on sends the planner to the logs as well.
fn port_is_evident(s: &ContainerSnapshot) -> bool {
    if s.labels.contains_key(LABEL_PORT) || s.env.contains_key(ENV_VIRTUAL_PORT) {
        return true;
    }
    match (s.exposed_ports.as_slice(), s.listening_ports.as_deref()) {
        ([_], None) => true,
        ([only], Some(listening)) => listening.is_empty() || listening.contains(only),
        ([], Some([_])) => true,
        _ => false,
    }
}

/// The ports a container listens on, and how they were learnt.
pub(crate) struct Listening {
    pub ports: Vec<u16>,
    /// The address the ports were probed on; `None` when the kernel's tables were read (then
    /// `ports` is every listening port, not just the likely ones that were tried).
    pub probed_at: Option<IpAddr>,
}

pub(crate) async fn listening_ports(
    info: &ContainerInfo,
    s: &ContainerSnapshot,
) -> Option<Listening> {
    if let Some(pid) = info.state.pid
        && let Some(ports) = read_proc_listening(pid, &s.id)
    {
        return Some(Listening {
            ports,
            probed_at: None,
        });
    }
    let ip = *s.networks.values().next()?;
    let mut candidates: BTreeSet<u16> = s.exposed_ports.iter().copied().collect();
    candidates.extend(COMMON_WEB_PORTS);
    Some(Listening {
        ports: probe_ports(ip, candidates).await,
        probed_at: Some(ip),
    })
}

/// Listening TCP ports of the container whose init has host PID `pid`. `None` when that PID is not
/// visible here or belongs to another process (the butler runs in its own PID namespace), which is
/// checked by finding the container id in the process's cgroup path.
fn read_proc_listening(pid: i64, container_id: &str) -> Option<Vec<u16>> {
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    if container_id.is_empty() || !cgroup.contains(container_id) {
        return None;
    }
    let mut ports = BTreeSet::new();
    let mut readable = false;
    for table in ["tcp", "tcp6"] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            readable = true;
            ports.extend(parse_proc_net_tcp_listening(&text));
        }
    }
    readable.then(|| ports.into_iter().collect())
}

/// Local ports of the rows in state `0A` (LISTEN) of a `/proc/net/tcp` or `tcp6` table, except
/// sockets bound to a loopback address: nginx reaches the container on its network IP, so those
/// are not servable, and Docker's embedded DNS listens on 127.0.0.11 in every container on a
/// user-defined network (as every app on the proxy network is), which would otherwise count as a
/// second listening port and defeat the "only listening port" rule.
pub fn parse_proc_net_tcp_listening(text: &str) -> BTreeSet<u16> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != "0A" {
                return None;
            }
            let (addr_hex, port_hex) = local.rsplit_once(':')?;
            if is_loopback_hex(addr_hex) {
                return None;
            }
            u16::from_str_radix(port_hex, 16).ok()
        })
        .collect()
}

/// Whether a `/proc/net/tcp{,6}` address (32-bit words in hex, each in host byte order) is a
/// loopback address, IPv4-mapped ones included. Unparseable means no.
fn is_loopback_hex(addr_hex: &str) -> bool {
    let words: Option<Vec<[u8; 4]>> = (0..addr_hex.len() / 8)
        .map(|i| {
            let word = addr_hex.get(i * 8..i * 8 + 8)?;
            u32::from_str_radix(word, 16).ok().map(u32::to_ne_bytes)
        })
        .collect();
    match (addr_hex.len(), words.as_deref()) {
        (8, Some([v4])) => std::net::Ipv4Addr::from(*v4).is_loopback(),
        (32, Some(words)) => {
            let bytes: [u8; 16] = words.concat().try_into().unwrap_or_default();
            let v6 = std::net::Ipv6Addr::from(bytes);
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        _ => false,
    }
}

/// Connects to each candidate port at once; the ones that accept within the timeout are listening.
async fn probe_ports(ip: IpAddr, candidates: BTreeSet<u16>) -> Vec<u16> {
    let probes = candidates.into_iter().map(|port| async move {
        let addr = SocketAddr::new(ip, port);
        match tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Some(port),
            _ => None,
        }
    });
    let mut open: Vec<u16> = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect();
    open.sort_unstable();
    open
}

/// The last lines of stdout and stderr; empty when the logs cannot be read (e.g. `--log-driver none`).
async fn log_tail(docker: &dyn Engine, id: &str) -> String {
    let read = docker.logs(id, LOG_TAIL_LINES);
    let text = match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(text)) => text,
        _ => return String::new(),
    };
    if text.len() <= LOG_TAIL_MAX_BYTES {
        return text;
    }
    let mut cut = text.len() - LOG_TAIL_MAX_BYTES;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    text[cut..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_rows_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0500A8C0:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0200A8C0:1F90 0100A8C0:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n";
        assert_eq!(
            parse_proc_net_tcp_listening(table),
            BTreeSet::from([8080, 3000])
        );
        let v6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000\n";
        assert_eq!(parse_proc_net_tcp_listening(v6), BTreeSet::from([80]));
    }

    #[test]
    fn loopback_listeners_are_not_servable() {
        // Little-endian words, as on the hosts the tests run on.
        if cfg!(target_endian = "big") {
            return;
        }
        // Docker's embedded DNS (127.0.0.11:46363) and an app bound to 127.0.0.1:3000.
        let table = "  sl  local_address rem_address   st\n\
   0: 0B00007F:B51B 00000000:0000 0A 00000000:00000000\n\
   1: 0100007F:0BB8 00000000:0000 0A 00000000:00000000\n\
   2: 00000000:1388 00000000:0000 0A 00000000:00000000\n";
        assert_eq!(parse_proc_net_tcp_listening(table), BTreeSet::from([5000]));
        // ::1:3000 and ::ffff:127.0.0.1:3001 are loopback; :::80 is not.
        let v6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000001000000:0BB8 00000000000000000000000000000000:0000 0A 0\n\
   1: 0000000000000000FFFF00000100007F:0BB9 00000000000000000000000000000000:0000 0A 0\n\
   2: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(parse_proc_net_tcp_listening(v6), BTreeSet::from([80]));
    }
}
