//! Observations for the tests of every decision, built up from a healthy app, a running proxy and
//! a quiet host, and the (kind, severity) lists the tables compare findings by.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use crate::health::model::{
    AppObs, ContainerObs, DiskObs, HostObs, ProbeResult, ProxyObs, RouteObs,
};
use crate::health::{Finding, Kind, Severity};

pub const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 7, 0, 2));
pub const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 7, 0, 3));
pub const OLD_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 7, 0, 9));

pub fn probe(target: &str, ok: bool, status: Option<u16>) -> ProbeResult {
    ProbeResult {
        target: target.to_owned(),
        ok,
        status,
        latency_ms: Some(3.0),
        error: (!ok && status.is_none()).then(|| "connection refused".to_owned()),
    }
}

pub fn container(name: &str, ip: Option<IpAddr>) -> ContainerObs {
    ContainerObs {
        id: format!("id-{name}"),
        name: name.to_owned(),
        state: "running".into(),
        exit_code: None,
        oom_killed: false,
        restart_count: 0,
        new_restarts: 0,
        started_at: Some("2025-01-01T00:00:00Z".into()),
        up_secs: Some(3_600.0),
        ip,
        listening: None,
        autorestart: false,
        forced_port: None,
        finished_at: None,
        down_secs: None,
        stopped_by_user: false,
        stop_requested: false,
    }
}

pub fn route(servers: &[SocketAddr]) -> RouteObs {
    RouteObs {
        hosts: vec!["shop.localhost".into()],
        servers: servers.to_vec(),
        port: servers.first().map_or(3000, SocketAddr::port),
        reason: "the only exposed port".into(),
    }
}

/// One container at IP, routed at IP:3000, answering 200 directly and through the proxy.
pub fn healthy_app() -> AppObs {
    let server = SocketAddr::new(IP, 3000);
    AppObs {
        app: "shop".into(),
        containers: vec![container("shop", Some(IP))],
        route: Some(route(&[server])),
        tcp: vec![probe(&server.to_string(), true, None)],
        http_direct: vec![probe(&server.to_string(), true, Some(200))],
        http_proxy: Some(probe("shop.localhost", true, Some(200))),
        dns: Some(true),
        incomplete: None,
    }
}

/// The app's second instance at OTHER_IP, healthy.
pub fn with_second_instance(mut app: AppObs) -> AppObs {
    let server = SocketAddr::new(OTHER_IP, 3000);
    app.containers.push(container("shop-2", Some(OTHER_IP)));
    if let Some(route) = &mut app.route {
        route.servers.push(server);
    }
    app.tcp.push(probe(&server.to_string(), true, None));
    app.http_direct
        .push(probe(&server.to_string(), true, Some(200)));
    app
}

/// The first route server refuses connections, and the first container listens on `ports`.
pub fn refusing(mut app: AppObs, ports: Option<Vec<u16>>) -> AppObs {
    app.tcp[0] = probe(&app.tcp[0].target.clone(), false, None);
    app.http_direct.remove(0);
    app.containers[0].listening = ports;
    app
}

pub fn stopped(mut app: AppObs, index: usize, exit_code: i64) -> AppObs {
    let c = &mut app.containers[index];
    c.state = "exited".into();
    c.exit_code = Some(exit_code);
    c.ip = None;
    app.tcp[index] = probe(&app.tcp[index].target.clone(), false, None);
    app
}

pub fn proxy(state: &str) -> ProxyObs {
    ProxyObs {
        state: state.into(),
        detail: format!("nginx is {state}"),
        answers: Some(probe("nginx", true, Some(404))),
        live_hash: Some("a".repeat(64)),
        applied_hash: Some("a".repeat(64)),
        drift: Some(Vec::new()),
        config_error: Some(None),
    }
}

/// One disk of 1 GB with `free_fraction` free, memory with `mem` available, and 2 CPUs.
pub fn host(free_fraction: f64, hours_left: Option<f64>, mem: f64, load1: f64) -> HostObs {
    let total = 1_000_000_000_u64;
    HostObs {
        disks: vec![DiskObs {
            role: "state".into(),
            path: "/var/lib/butler".into(),
            total_bytes: total,
            free_bytes: (total as f64 * free_fraction) as u64,
            hours_left,
        }],
        mem_total_bytes: Some(total),
        mem_available_bytes: Some((total as f64 * mem) as u64),
        load1: Some(load1),
        cpus: 2,
    }
}

pub type Expected = &'static [(Kind, Severity)];

pub fn kinds(findings: &[Finding]) -> Vec<(String, Severity)> {
    let mut out: Vec<(String, Severity)> = findings
        .iter()
        .map(|f| (f.kind.clone(), f.severity))
        .collect();
    out.sort();
    out
}

pub fn expected(rows: Expected) -> Vec<(String, Severity)> {
    let mut out: Vec<(String, Severity)> = rows
        .iter()
        .map(|(k, s)| (k.as_str().to_owned(), *s))
        .collect();
    out.sort();
    out
}
