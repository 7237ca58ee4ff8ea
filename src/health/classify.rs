//! From observations to conclusions: which findings (kind, severity, component, summary) a round
//! makes and each app's status with its reason. Pure functions over `model` data; the severity
//! rules are all in [`severity`], so they can be read (and tested) in one place.

use std::collections::BTreeMap;

use super::model::{AppObs, ContainerObs, HostObs, Observations, ProxyObs, UnitObs};
use super::{
    AppStatus, Finding, HOST_COMPONENT, Kind, PROXY_COMPONENT, Severity, app_component, finding,
    unit_component,
};
use crate::store::AppHealth;

/// New restarts within one round that make a crash loop.
pub const CRASH_LOOP_RESTARTS: u64 = 3;
/// Below this share of free disk space the disk is low.
pub const DISK_LOW_FRACTION: f64 = 0.10;
/// Below this share of available memory, memory is low.
pub const MEMORY_LOW_FRACTION: f64 = 0.10;
/// One-minute load per CPU above which the host is overloaded.
pub const LOAD_HIGH_PER_CPU: f64 = 2.0;

/// Thresholds that come from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Warn when the disk is projected to fill within this many hours.
    pub disk_warning_hours: f64,
    /// A response through the proxy slower than this makes the app degraded.
    pub slow_ms: f64,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            disk_warning_hours: 24.0,
            slow_ms: 2_000.0,
        }
    }
}

/// What the severity of a finding depends on besides its kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// Other instances of the app still serve: the app is degraded, not down.
    pub partial: bool,
    /// Free share of a disk or of memory, 0..1.
    pub fraction_left: Option<f64>,
    /// Hours until a disk is full.
    pub hours_left: Option<f64>,
    /// One-minute load per CPU.
    pub load_per_cpu: Option<f64>,
    /// The unit is one users can do without for a while (the dashboard).
    pub minor_unit: bool,
    /// The drifted config would not even pass `nginx -t`.
    pub invalid: bool,
}

/// The severity rules. Critical: nothing is served or the host is about to stop. High: an app or a
/// butler function is down. Medium: degraded, or down soon. Low: worth knowing.
pub fn severity(kind: Kind, facts: &Facts) -> Severity {
    use Severity::{Critical, High, Low, Medium};
    let app_level = |full: Severity| if facts.partial { Medium } else { full };
    match kind {
        Kind::ProxyDown => Critical,
        Kind::PortMismatch
        | Kind::NotOnNetwork
        | Kind::ContainerDown
        | Kind::CrashLoop
        | Kind::RouteStale
        | Kind::RouteMissing
        | Kind::AppUnresponsive
        | Kind::GatewayError => app_level(High),
        Kind::AppError => Medium,
        Kind::ConfigInvalid => High,
        Kind::ConfigDrift if facts.invalid => High,
        Kind::ConfigDrift => Medium,
        Kind::UnitFailed if facts.minor_unit => Medium,
        Kind::UnitFailed => High,
        Kind::DiskLow => match facts.fraction_left {
            Some(f) if f < 0.01 => Critical,
            Some(f) if f < 0.05 => High,
            _ => Medium,
        },
        Kind::DiskFilling => match facts.hours_left {
            Some(h) if h < 1.0 => Critical,
            Some(h) if h < 6.0 => High,
            _ => Medium,
        },
        Kind::MemoryLow => match facts.fraction_left {
            Some(f) if f < 0.05 => High,
            _ => Medium,
        },
        Kind::LoadHigh => match facts.load_per_cpu {
            Some(l) if l > 2.0 * LOAD_HIGH_PER_CPU => Medium,
            _ => Low,
        },
        Kind::ProxyOutdated | Kind::DnsUnresolvable => Low,
    }
}

/// What one round concluded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Assessment {
    /// At most one per kind and component.
    pub findings: Vec<Finding>,
    pub apps: Vec<AppHealth>,
}

impl Assessment {
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }
}

pub fn classify(obs: &Observations, rules: &Rules) -> Assessment {
    let mut findings = classify_proxy(&obs.proxy);
    let serving = obs.proxy.serving() && obs.proxy.answers.as_ref().is_none_or(|a| a.ok);
    let mut apps = Vec::new();
    for app in &obs.apps {
        let (health, app_findings) = classify_app(app, serving, rules);
        apps.push(health);
        findings.extend(app_findings);
    }
    findings.extend(classify_host(&obs.host, rules));
    if let Some(units) = &obs.units {
        findings.extend(classify_units(units));
    }
    Assessment {
        findings: merge(findings),
        apps,
    }
}

/// One finding per kind and component: summaries joined, the highest severity kept.
pub fn merge(findings: Vec<Finding>) -> Vec<Finding> {
    let mut merged: BTreeMap<(String, String), Finding> = BTreeMap::new();
    for f in findings {
        match merged.get_mut(&(f.kind.clone(), f.component.clone())) {
            Some(existing) => {
                existing.severity = existing.severity.max(f.severity);
                if !existing.summary.contains(&f.summary) {
                    existing.summary = format!("{}; {}", existing.summary, f.summary);
                }
            }
            None => {
                merged.insert((f.kind.clone(), f.component.clone()), f);
            }
        }
    }
    merged.into_values().collect()
}

fn describe_stopped(c: &ContainerObs) -> String {
    let mut text = format!("container {} is {}", c.name, c.state);
    if let Some(code) = c.exit_code {
        text.push_str(&format!(" (exit code {code}"));
        if code == 137 {
            text.push_str(", killed");
        }
        if c.oom_killed {
            text.push_str(", out of memory");
        }
        text.push(')');
    }
    text
}

fn ports_text(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// An app's findings and status. `proxy_serving` is false while nginx itself is down: then every
/// app is unreachable, which the proxy's own finding explains.
pub fn classify_app(app: &AppObs, proxy_serving: bool, rules: &Rules) -> (AppHealth, Vec<Finding>) {
    let component = app_component(&app.app);
    let mut findings = Vec::new();
    if let Some(why) = &app.incomplete {
        let health = health(app, AppStatus::Degraded, format!("unknown: {why}"), None);
        return (health, findings);
    }
    let add = |findings: &mut Vec<Finding>, kind, facts: &Facts, summary: String| {
        findings.push(finding(kind, severity(kind, facts), &component, summary));
    };
    let running: Vec<&ContainerObs> = app.containers.iter().filter(|c| c.running()).collect();
    let some_serve = |c: &&ContainerObs| c.ip.is_some();

    for c in &app.containers {
        if c.state == "restarting" || c.new_restarts >= CRASH_LOOP_RESTARTS {
            let partial = running.iter().any(|r| r.id != c.id);
            add(
                &mut findings,
                Kind::CrashLoop,
                &Facts {
                    partial,
                    ..Facts::default()
                },
                format!(
                    "container {} keeps restarting ({} restarts, {} since the last check)",
                    c.name, c.restart_count, c.new_restarts
                ),
            );
        }
    }

    let mut status = AppStatus::Healthy;
    let mut reason: Option<String> = None;
    let stopped: Vec<&ContainerObs> = app
        .containers
        .iter()
        .filter(|c| !c.running() && c.state != "restarting")
        .collect();
    for c in &stopped {
        add(
            &mut findings,
            Kind::ContainerDown,
            &Facts {
                partial: !running.is_empty(),
                ..Facts::default()
            },
            describe_stopped(c),
        );
    }
    if running.is_empty() {
        let why = findings
            .first()
            .map(|f| f.summary.clone())
            .unwrap_or_else(|| "no container of the app is running".to_owned());
        return (health(app, AppStatus::Down, why, None), findings);
    }

    let on_network: Vec<&ContainerObs> = running.iter().copied().filter(some_serve).collect();
    for c in running.iter().filter(|c| c.ip.is_none()) {
        add(
            &mut findings,
            Kind::NotOnNetwork,
            &Facts {
                partial: !on_network.is_empty(),
                ..Facts::default()
            },
            format!(
                "container {} has no address on the proxy network, so nginx cannot reach it",
                c.name
            ),
        );
    }

    let Some(route) = &app.route else {
        if !on_network.is_empty() {
            add(
                &mut findings,
                Kind::RouteMissing,
                &Facts::default(),
                "the app runs on the proxy network but the applied config has no route for it"
                    .to_owned(),
            );
        }
        let why = findings
            .iter()
            .find(|f| f.kind != Kind::CrashLoop.as_str())
            .map(|f| f.summary.clone())
            .unwrap_or_else(|| "the app has no route".to_owned());
        return (health(app, AppStatus::Down, why, None), findings);
    };

    let answering = app.tcp.iter().filter(|t| t.ok).count();
    let partial = answering > 0;
    let listening_known =
        on_network.iter().all(|c| c.listening.is_some()) && !on_network.is_empty();
    let listens_on_route_port = on_network.iter().any(|c| {
        c.listening
            .as_ref()
            .is_some_and(|p| p.contains(&route.port))
    });
    for (server, probe) in route.servers.iter().zip(&app.tcp) {
        if probe.ok {
            continue;
        }
        let owner = on_network.iter().find(|c| c.ip == Some(server.ip()));
        let facts = Facts {
            partial,
            ..Facts::default()
        };
        let forced = |c: &ContainerObs| {
            c.forced_port
                .as_ref()
                .map(|p| format!("; the port is forced to {p} by a label or VIRTUAL_PORT: fix it"))
                .unwrap_or_default()
        };
        match owner {
            Some(c)
                if c.listening
                    .as_ref()
                    .is_some_and(|p| !p.is_empty() && !p.contains(&server.port())) =>
            {
                add(
                    &mut findings,
                    Kind::PortMismatch,
                    &facts,
                    format!(
                        "the route sends to port {} ({}) but container {} listens on {}{}",
                        server.port(),
                        route.reason,
                        c.name,
                        ports_text(c.listening.as_deref().unwrap_or_default()),
                        forced(c)
                    ),
                )
            }
            None if listening_known
                && !listens_on_route_port
                && on_network
                    .iter()
                    .any(|c| c.listening.as_ref().is_some_and(|p| !p.is_empty())) =>
            {
                let c = on_network[0];
                add(
                    &mut findings,
                    Kind::PortMismatch,
                    &facts,
                    format!(
                        "the route sends to {server} ({}) but the app's container {} now has {} and listens on {}{}",
                        route.reason,
                        c.name,
                        c.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                        ports_text(c.listening.as_deref().unwrap_or_default()),
                        forced(c)
                    ),
                )
            }
            None => add(
                &mut findings,
                Kind::RouteStale,
                &facts,
                format!(
                    "the route points at {server}, which no container of the app has now ({})",
                    on_network
                        .iter()
                        .map(|c| format!(
                            "{} is at {}",
                            c.name,
                            c.ip.map(|ip| ip.to_string()).unwrap_or_default()
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Some(c) => add(
                &mut findings,
                Kind::AppUnresponsive,
                &facts,
                format!(
                    "nothing accepts connections on {server} (container {}{}): {}",
                    c.name,
                    match c.listening.as_deref() {
                        Some([]) => ", which listens on no port".to_owned(),
                        _ => String::new(),
                    },
                    probe.error.as_deref().unwrap_or("refused")
                ),
            ),
        }
    }
    for probe in app.http_direct.iter().filter(|p| !p.ok) {
        let what = match probe.status {
            Some(status) => format!("answered {status}"),
            None => format!(
                "did not answer HTTP ({})",
                probe.error.as_deref().unwrap_or("no answer")
            ),
        };
        add(
            &mut findings,
            Kind::AppError,
            &Facts::default(),
            format!("{} {what}", probe.target),
        );
    }
    let app_problem = findings.iter().any(|f| f.kind != Kind::CrashLoop.as_str());
    let proxy_failed = app.http_proxy.as_ref().is_some_and(|p| !p.ok);
    if proxy_serving && proxy_failed && !app_problem {
        let probe = app.http_proxy.as_ref().expect("checked above");
        add(
            &mut findings,
            Kind::GatewayError,
            &Facts::default(),
            format!(
                "the proxy answers {} for {} although the app answers directly",
                probe.short(),
                route.hosts.first().map_or("its host", String::as_str)
            ),
        );
    }
    if app.dns == Some(false) {
        add(
            &mut findings,
            Kind::DnsUnresolvable,
            &Facts::default(),
            "the container's name does not resolve inside the proxy network".to_owned(),
        );
    }

    let latency = app.http_proxy.as_ref().and_then(|p| p.latency_ms);
    if !proxy_serving {
        status = AppStatus::Down;
        reason = Some("the proxy is down, so the app is unreachable".to_owned());
    } else if answering == 0 || proxy_failed {
        status = AppStatus::Down;
    } else if !findings.is_empty() {
        status = AppStatus::Degraded;
    } else if let Some(ms) = latency.filter(|ms| *ms > rules.slow_ms) {
        status = AppStatus::Degraded;
        reason = Some(format!("answers slowly through the proxy ({ms:.0} ms)"));
    } else if let Some(c) = app.containers.iter().find(|c| c.new_restarts > 0) {
        status = AppStatus::Degraded;
        reason = Some(format!(
            "container {} restarted since the last check",
            c.name
        ));
    }
    let reason = reason.unwrap_or_else(|| {
        match findings
            .iter()
            .find(|f| f.kind != Kind::DnsUnresolvable.as_str())
            .or(findings.first())
        {
            Some(f) => f.summary.clone(),
            None => match &app.http_proxy {
                Some(p) => format!(
                    "answers {} through the proxy{}",
                    p.short(),
                    p.latency_ms
                        .map(|ms| format!(" in {ms:.0} ms"))
                        .unwrap_or_default()
                ),
                None => "answers directly".to_owned(),
            },
        }
    });
    (health(app, status, reason, latency), findings)
}

fn health(app: &AppObs, status: AppStatus, reason: String, latency_ms: Option<f64>) -> AppHealth {
    AppHealth {
        app: app.app.clone(),
        status,
        reason,
        latency_ms,
        started_at: app
            .containers
            .iter()
            .filter(|c| c.running())
            .filter_map(|c| c.started_at.clone())
            .min(),
        checked_at: String::new(),
    }
}

pub fn classify_proxy(proxy: &ProxyObs) -> Vec<Finding> {
    let mut out = Vec::new();
    let add = |out: &mut Vec<Finding>, kind, facts: &Facts, summary: String| {
        out.push(finding(
            kind,
            severity(kind, facts),
            PROXY_COMPONENT,
            summary,
        ));
    };
    match proxy.state.as_str() {
        "running" => {}
        // The engine did not answer in time: nothing is known about nginx this round.
        "unknown" => return out,
        "outdated" => add(
            &mut out,
            Kind::ProxyOutdated,
            &Facts::default(),
            proxy.detail.clone(),
        ),
        _ => {
            add(
                &mut out,
                Kind::ProxyDown,
                &Facts::default(),
                proxy.detail.clone(),
            );
            return out;
        }
    }
    if let Some(answer) = proxy.answers.as_ref().filter(|a| !a.ok) {
        add(
            &mut out,
            Kind::ProxyDown,
            &Facts::default(),
            format!(
                "nginx runs but does not answer HTTP on {}: {}",
                answer.target,
                answer.error.as_deref().unwrap_or("no answer")
            ),
        );
    }
    let invalid = match &proxy.config_error {
        Some(Some(error)) => Some(error.clone()),
        _ => None,
    };
    let drifted_files = proxy.drift.as_ref().filter(|files| !files.is_empty());
    let other_live = match (&proxy.live_hash, &proxy.applied_hash) {
        (Some(live), Some(applied)) if live != applied => Some((live, applied)),
        _ => None,
    };
    if drifted_files.is_some() || other_live.is_some() {
        let mut summary = match (drifted_files, other_live) {
            (_, Some((live, applied))) => format!(
                "nginx serves config {} but the butler applied {}",
                short_hash(live),
                short_hash(applied)
            ),
            (Some(files), None) => format!(
                "the live config was changed outside the butler: {} differ from version {}",
                files.join(", "),
                proxy.applied_hash.as_deref().map(short_hash).unwrap_or("?")
            ),
            (None, None) => unreachable!("checked above"),
        };
        if let Some(error) = &invalid {
            summary.push_str(&format!("; nginx -t refuses it: {error}"));
        }
        add(
            &mut out,
            Kind::ConfigDrift,
            &Facts {
                invalid: invalid.is_some(),
                ..Facts::default()
            },
            summary,
        );
    } else if let Some(error) = invalid {
        add(
            &mut out,
            Kind::ConfigInvalid,
            &Facts::default(),
            format!("nginx -t refuses the live config: {error}"),
        );
    }
    out
}

fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

pub fn classify_host(host: &HostObs, rules: &Rules) -> Vec<Finding> {
    let mut out = Vec::new();
    let add = |out: &mut Vec<Finding>, kind, facts: &Facts, summary: String| {
        out.push(finding(
            kind,
            severity(kind, facts),
            HOST_COMPONENT,
            summary,
        ));
    };
    for disk in &host.disks {
        if disk.total_bytes == 0 {
            continue;
        }
        let fraction = disk.free_bytes as f64 / disk.total_bytes as f64;
        if fraction < DISK_LOW_FRACTION {
            add(
                &mut out,
                Kind::DiskLow,
                &Facts {
                    fraction_left: Some(fraction),
                    ..Facts::default()
                },
                format!(
                    "{} ({}) has {:.1}% free ({})",
                    disk.path,
                    disk.role,
                    fraction * 100.0,
                    human_bytes(disk.free_bytes)
                ),
            );
        }
        if let Some(hours) = disk.hours_left.filter(|h| *h < rules.disk_warning_hours) {
            add(
                &mut out,
                Kind::DiskFilling,
                &Facts {
                    hours_left: Some(hours),
                    ..Facts::default()
                },
                format!(
                    "{} ({}) fills in about {} at the recent rate ({} free)",
                    disk.path,
                    disk.role,
                    human_hours(hours),
                    human_bytes(disk.free_bytes)
                ),
            );
        }
    }
    if let (Some(total), Some(available)) = (host.mem_total_bytes, host.mem_available_bytes)
        && total > 0
    {
        let fraction = available as f64 / total as f64;
        if fraction < MEMORY_LOW_FRACTION {
            add(
                &mut out,
                Kind::MemoryLow,
                &Facts {
                    fraction_left: Some(fraction),
                    ..Facts::default()
                },
                format!(
                    "{:.1}% of memory is available ({} of {})",
                    fraction * 100.0,
                    human_bytes(available),
                    human_bytes(total)
                ),
            );
        }
    }
    if let Some(load) = host.load1 {
        let per_cpu = load / host.cpus.max(1) as f64;
        if per_cpu > LOAD_HIGH_PER_CPU {
            add(
                &mut out,
                Kind::LoadHigh,
                &Facts {
                    load_per_cpu: Some(per_cpu),
                    ..Facts::default()
                },
                format!("load average {load:.2} on {} CPUs", host.cpus),
            );
        }
    }
    out
}

pub fn classify_units(units: &[UnitObs]) -> Vec<Finding> {
    units
        .iter()
        .filter(|u| u.load_state != "not-found" && u.active_state == "failed")
        .map(|u| {
            let facts = Facts {
                minor_unit: u.unit == crate::systemd::units::Worker::Dashboard.unit(),
                ..Facts::default()
            };
            finding(
                Kind::UnitFailed,
                severity(Kind::UnitFailed, &facts),
                &unit_component(&u.unit),
                format!(
                    "{} failed (result {}, {} restarts)",
                    u.unit,
                    u.result.as_deref().unwrap_or("unknown"),
                    u.restarts.unwrap_or(0)
                ),
            )
        })
        .collect()
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn human_hours(hours: f64) -> String {
    if hours < 1.0 {
        format!("{:.0} minutes", (hours * 60.0).max(1.0))
    } else if hours < 48.0 {
        format!("{hours:.1} hours")
    } else {
        format!("{:.1} days", hours / 24.0)
    }
}
