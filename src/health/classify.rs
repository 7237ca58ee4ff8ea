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

/// How long a new container may run unrouted before that is a problem (`route_missing`).
pub const ROUTE_GRACE_SECS: f64 = 10.0;

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

/// How long after a container that was asked to stop exited its exit is taken as final.
/// `docker stop` sends its `stop` event some 50 ms after `die`: a round that looked in between
/// would call a user's stop a crash (and alert on it). Only an exit after a gentle `kill` waits:
/// a crash or a SIGKILL is concluded at once.
pub const EXIT_SETTLE_SECS: f64 = 2.0;

/// The container exited a moment ago after a gentle `kill`, and no `stop` event said yet
/// whether a user stopped it.
pub fn exit_settling(c: &ContainerObs) -> bool {
    c.crashed() && c.stop_requested && c.down_secs.is_some_and(|ago| ago < EXIT_SETTLE_SECS)
}

fn describe_stopped(c: &ContainerObs) -> String {
    let mut text = if c.stopped_by_user {
        format!("container {} was stopped (docker stop)", c.name)
    } else {
        format!("container {} is {}", c.name, c.state)
    };
    if let Some(code) = c.exit_code {
        text.push_str(&format!(" (exit code {code}"));
        if code == 137 && !c.stopped_by_user {
            text.push_str(", killed");
        }
        if c.oom_killed {
            text.push_str(", out of memory");
        }
        text.push(')');
    }
    if let Some(since) = c
        .finished_at
        .as_deref()
        .and_then(crate::proxy::plan::plain_utc_time)
    {
        text.push_str(&format!(" since {since}"));
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
    // A user's `docker stop` and a clean exit are shown, not treated as failures.
    for c in stopped.iter().filter(|c| c.crashed() && !exit_settling(c)) {
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
        if !stopped.is_empty() && stopped.iter().all(|c| !c.crashed()) {
            let why = stopped
                .iter()
                .map(|c| describe_stopped(c))
                .collect::<Vec<_>>()
                .join("; ");
            return (health(app, AppStatus::Stopped, why, None), findings);
        }
        let why = findings
            .first()
            .map(|f| f.summary.clone())
            .or_else(|| {
                stopped
                    .iter()
                    .find(|c| exit_settling(c))
                    .map(|c| format!("{} just now", describe_stopped(c)))
            })
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
        let just_started = on_network
            .iter()
            .all(|c| c.up_secs.is_some_and(|up| up < ROUTE_GRACE_SECS));
        if !on_network.is_empty() && just_started {
            // The dynamic proxy routes a new container within a second or two: an incident now
            // would only send the recovery to reconcile alongside it (one more reload per start).
            return (
                health(
                    app,
                    AppStatus::Degraded,
                    "just started: the proxy has not routed it yet".to_owned(),
                    None,
                ),
                findings,
            );
        }
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
            let listening = c.listening.as_deref().unwrap_or_default();
            let to = match listening {
                [only] => format!("={only}"),
                _ => " to one of them".to_owned(),
            };
            match &c.forced_port {
                Some(p) => format!(
                    "; the port is forced to {p} by the label butler.port or VIRTUAL_PORT: set \
                     butler.port{to} (or remove both to let the butler choose)"
                ),
                None if listening.len() > 1 => format!(
                    "; it listens on several ports and neither a common web port nor its logs \
                     pick one: set the label butler.port{to}"
                ),
                None => String::new(),
            }
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

#[cfg(test)]
mod tests {
    //! The rules as tables: every kind's severity, and which findings (kind, severity, component)
    //! and which app status each observation leads to. A finding is what becomes an incident (one
    //! per kind and component), so these tables are the incident rules.

    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use super::*;
    use crate::health::model::{DiskObs, ProbeResult, RouteObs};

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 7, 0, 2));
    const OTHER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 7, 0, 3));
    const OLD_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 7, 0, 9));

    // ---- the severity of every kind -----------------------------------------------------------

    #[test]
    fn every_kind_has_the_documented_severity() {
        use Severity::{Critical, High, Low, Medium};
        let plain = Facts::default();
        let partial = Facts {
            partial: true,
            ..Facts::default()
        };
        let invalid = Facts {
            invalid: true,
            ..Facts::default()
        };
        let minor = Facts {
            minor_unit: true,
            ..Facts::default()
        };
        let left = |f: f64| Facts {
            fraction_left: Some(f),
            ..Facts::default()
        };
        let hours = |h: f64| Facts {
            hours_left: Some(h),
            ..Facts::default()
        };
        let load = |l: f64| Facts {
            load_per_cpu: Some(l),
            ..Facts::default()
        };
        let table: Vec<(Kind, Facts, Severity)> = vec![
            (Kind::ProxyDown, plain.clone(), Critical),
            (Kind::ProxyDown, partial.clone(), Critical),
            (Kind::PortMismatch, plain.clone(), High),
            (Kind::PortMismatch, partial.clone(), Medium),
            (Kind::NotOnNetwork, plain.clone(), High),
            (Kind::NotOnNetwork, partial.clone(), Medium),
            (Kind::ContainerDown, plain.clone(), High),
            (Kind::ContainerDown, partial.clone(), Medium),
            (Kind::CrashLoop, plain.clone(), High),
            (Kind::CrashLoop, partial.clone(), Medium),
            (Kind::RouteStale, plain.clone(), High),
            (Kind::RouteStale, partial.clone(), Medium),
            (Kind::RouteMissing, plain.clone(), High),
            (Kind::RouteMissing, partial.clone(), Medium),
            (Kind::AppUnresponsive, plain.clone(), High),
            (Kind::AppUnresponsive, partial.clone(), Medium),
            (Kind::GatewayError, plain.clone(), High),
            (Kind::GatewayError, partial.clone(), Medium),
            (Kind::AppError, plain.clone(), Medium),
            (Kind::AppError, partial.clone(), Medium),
            (Kind::ConfigInvalid, plain.clone(), High),
            (Kind::ConfigDrift, plain.clone(), Medium),
            (Kind::ConfigDrift, invalid.clone(), High),
            (Kind::UnitFailed, plain.clone(), High),
            (Kind::UnitFailed, minor.clone(), Medium),
            (Kind::DiskLow, plain.clone(), Medium),
            (Kind::DiskLow, left(0.09), Medium),
            (Kind::DiskLow, left(0.05), Medium),
            (Kind::DiskLow, left(0.049), High),
            (Kind::DiskLow, left(0.01), High),
            (Kind::DiskLow, left(0.009), Critical),
            (Kind::DiskLow, left(0.0), Critical),
            (Kind::DiskFilling, plain.clone(), Medium),
            (Kind::DiskFilling, hours(23.0), Medium),
            (Kind::DiskFilling, hours(6.0), Medium),
            (Kind::DiskFilling, hours(5.9), High),
            (Kind::DiskFilling, hours(1.0), High),
            (Kind::DiskFilling, hours(0.9), Critical),
            (Kind::MemoryLow, plain.clone(), Medium),
            (Kind::MemoryLow, left(0.09), Medium),
            (Kind::MemoryLow, left(0.05), Medium),
            (Kind::MemoryLow, left(0.049), High),
            (Kind::LoadHigh, plain.clone(), Low),
            (Kind::LoadHigh, load(2.5), Low),
            (Kind::LoadHigh, load(4.0), Low),
            (Kind::LoadHigh, load(4.1), Medium),
            (Kind::ProxyOutdated, plain.clone(), Low),
            (Kind::DnsUnresolvable, plain.clone(), Low),
            (Kind::DnsUnresolvable, partial.clone(), Low),
        ];
        for (kind, facts, expected) in &table {
            assert_eq!(severity(*kind, facts), *expected, "{kind} with {facts:?}");
        }
        for kind in Kind::ALL {
            assert!(
                table.iter().any(|(k, _, _)| k == kind),
                "{kind} has no row in the severity table"
            );
        }
    }

    // ---- observations, built up from a healthy app ---------------------------------------------

    fn probe(target: &str, ok: bool, status: Option<u16>) -> ProbeResult {
        ProbeResult {
            target: target.to_owned(),
            ok,
            status,
            latency_ms: Some(3.0),
            error: (!ok && status.is_none()).then(|| "connection refused".to_owned()),
        }
    }

    fn container(name: &str, ip: Option<IpAddr>) -> ContainerObs {
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

    fn route(servers: &[SocketAddr]) -> RouteObs {
        RouteObs {
            hosts: vec!["shop.localhost".into()],
            servers: servers.to_vec(),
            port: servers.first().map_or(3000, SocketAddr::port),
            reason: "the only exposed port".into(),
        }
    }

    /// One container at IP, routed at IP:3000, answering 200 directly and through the proxy.
    fn healthy_app() -> AppObs {
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
    fn with_second_instance(mut app: AppObs) -> AppObs {
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
    fn refusing(mut app: AppObs, ports: Option<Vec<u16>>) -> AppObs {
        app.tcp[0] = probe(&app.tcp[0].target.clone(), false, None);
        app.http_direct.remove(0);
        app.containers[0].listening = ports;
        app
    }

    fn stopped(mut app: AppObs, index: usize, exit_code: i64) -> AppObs {
        let c = &mut app.containers[index];
        c.state = "exited".into();
        c.exit_code = Some(exit_code);
        c.ip = None;
        app.tcp[index] = probe(&app.tcp[index].target.clone(), false, None);
        app
    }

    type Expected = &'static [(Kind, Severity)];

    fn kinds(findings: &[Finding]) -> Vec<(String, Severity)> {
        let mut out: Vec<(String, Severity)> = findings
            .iter()
            .map(|f| (f.kind.clone(), f.severity))
            .collect();
        out.sort();
        out
    }

    fn expected(rows: Expected) -> Vec<(String, Severity)> {
        let mut out: Vec<(String, Severity)> = rows
            .iter()
            .map(|(k, s)| (k.as_str().to_owned(), *s))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn app_observations_make_these_findings_and_statuses() {
        use AppStatus::{Degraded, Down, Healthy};
        use Severity::{High, Low, Medium};
        let server = SocketAddr::new(IP, 3000);
        let mut cases: Vec<(&str, AppObs, bool, Expected, AppStatus, &str)> = Vec::new();

        cases.push(("healthy", healthy_app(), true, &[], Healthy, "answers 200"));

        let mut a = stopped(healthy_app(), 0, 137);
        a.http_direct.clear();
        a.http_proxy = Some(probe("shop.localhost", false, Some(502)));
        cases.push((
            "its only container was killed",
            a,
            true,
            &[(Kind::ContainerDown, High)],
            Down,
            "exit code 137, killed",
        ));

        let mut a = stopped(healthy_app(), 0, 137);
        a.containers[0].stopped_by_user = true;
        a.containers[0].finished_at = Some("2026-12-02T11:40:20.1Z".into());
        a.route = None;
        a.tcp.clear();
        a.http_direct.clear();
        cases.push((
            "a user stopped it (docker stop; it ignored SIGTERM and was killed)",
            a,
            true,
            &[],
            AppStatus::Stopped,
            "was stopped (docker stop) (exit code 137) since 2026-12-02 11:40:20 UTC",
        ));

        let mut a = stopped(healthy_app(), 0, 0);
        a.route = None;
        a.tcp.clear();
        a.http_direct.clear();
        cases.push((
            "it finished with exit code 0",
            a,
            true,
            &[],
            AppStatus::Stopped,
            "exit code 0",
        ));

        let mut a = stopped(healthy_app(), 0, 137);
        a.containers[0].oom_killed = true;
        a.route = None;
        a.tcp.clear();
        a.http_direct.clear();
        cases.push((
            "killed for memory after its route went down",
            a,
            true,
            &[(Kind::ContainerDown, High)],
            Down,
            "exit code 137, killed, out of memory",
        ));

        let mut a = stopped(healthy_app(), 0, 137);
        a.containers[0].down_secs = Some(0.1);
        a.http_direct.clear();
        cases.push((
            "killed a moment ago with no stop asked for: concluded at once",
            a,
            true,
            &[(Kind::ContainerDown, High)],
            Down,
            "killed",
        ));

        let mut a = stopped(healthy_app(), 0, 137);
        a.containers[0].down_secs = Some(0.1);
        a.containers[0].stop_requested = true;
        a.http_direct.clear();
        cases.push((
            "exited a moment after a gentle kill: no conclusion before a stop event could say it was a user",
            a,
            true,
            &[],
            Down,
            "just now",
        ));

        let mut a = stopped(with_second_instance(healthy_app()), 0, 1);
        a.http_direct.remove(0);
        // Until the route drops it, the stopped instance's server is stale too.
        cases.push((
            "one of two instances stopped",
            a,
            true,
            &[(Kind::ContainerDown, Medium), (Kind::RouteStale, Medium)],
            Degraded,
            "container shop is exited",
        ));

        let mut a = healthy_app();
        a.containers[0].state = "restarting".into();
        a.containers[0].restart_count = 7;
        cases.push((
            "its only container keeps restarting",
            a,
            true,
            &[(Kind::CrashLoop, High)],
            Down,
            "keeps restarting",
        ));

        let mut a = healthy_app();
        a.containers[0].new_restarts = CRASH_LOOP_RESTARTS;
        cases.push((
            "restarted 3 times since the last round, running now",
            a,
            true,
            &[(Kind::CrashLoop, High)],
            Degraded,
            "keeps restarting",
        ));

        let mut a = healthy_app();
        a.containers[0].new_restarts = 1;
        cases.push((
            "restarted once since the last round",
            a,
            true,
            &[],
            Degraded,
            "restarted since the last check",
        ));

        let mut a = refusing(healthy_app(), None);
        a.containers[0].ip = None;
        a.http_proxy = Some(probe("shop.localhost", false, Some(502)));
        cases.push((
            "disconnected from the proxy network",
            a,
            true,
            &[(Kind::NotOnNetwork, High), (Kind::RouteStale, High)],
            Down,
            "no address on the proxy network",
        ));

        let mut a = refusing(healthy_app(), Some(vec![4000]));
        a.http_proxy = Some(probe("shop.localhost", false, Some(502)));
        cases.push((
            "restarted on another port",
            a,
            true,
            &[(Kind::PortMismatch, High)],
            Down,
            "listens on 4000",
        ));

        let mut a = refusing(with_second_instance(healthy_app()), Some(vec![4000]));
        a.http_proxy = Some(probe("shop.localhost", true, Some(200)));
        cases.push((
            "one of two instances on another port",
            a,
            true,
            &[(Kind::PortMismatch, Medium)],
            Degraded,
            "listens on 4000",
        ));

        let mut a = healthy_app();
        let old = SocketAddr::new(OLD_IP, 3000);
        a.route = Some(route(&[old]));
        a.tcp = vec![probe(&old.to_string(), false, None)];
        a.http_direct.clear();
        a.http_proxy = Some(probe("shop.localhost", false, Some(502)));
        cases.push((
            "the route points at an old address",
            a.clone(),
            true,
            &[(Kind::RouteStale, High)],
            Down,
            "no container of the app has now",
        ));

        a.containers[0].listening = Some(vec![5000]);
        cases.push((
            "at a new address and on a new port",
            a,
            true,
            &[(Kind::PortMismatch, High)],
            Down,
            "listens on 5000",
        ));

        let mut a = refusing(healthy_app(), Some(vec![]));
        a.http_proxy = Some(probe("shop.localhost", false, Some(502)));
        cases.push((
            "listens on no port",
            a,
            true,
            &[(Kind::AppUnresponsive, High)],
            Down,
            "listens on no port",
        ));

        let mut a = healthy_app();
        a.http_direct = vec![probe(&server.to_string(), false, Some(500))];
        a.http_proxy = Some(probe("shop.localhost", true, Some(500)));
        cases.push((
            "answers 500",
            a,
            true,
            &[(Kind::AppError, Medium)],
            Degraded,
            "answered 500",
        ));

        let mut a = healthy_app();
        a.http_proxy = Some(probe("shop.localhost", false, Some(502)));
        cases.push((
            "answers directly, 502 through the proxy",
            a,
            true,
            &[(Kind::GatewayError, High)],
            Down,
            "the proxy answers 502",
        ));

        let mut a = healthy_app();
        a.route = None;
        a.tcp.clear();
        a.http_direct.clear();
        a.http_proxy = None;
        cases.push((
            "runs on the network without a route",
            a,
            true,
            &[(Kind::RouteMissing, High)],
            Down,
            "no route for it",
        ));

        let mut a = healthy_app();
        a.route = None;
        a.tcp.clear();
        a.http_direct.clear();
        a.http_proxy = None;
        a.containers[0].up_secs = Some(ROUTE_GRACE_SECS / 2.0);
        cases.push((
            "started moments ago, not routed yet",
            a,
            true,
            &[],
            Degraded,
            "not routed it yet",
        ));

        let mut a = healthy_app();
        a.dns = Some(false);
        cases.push((
            "its name does not resolve",
            a,
            true,
            &[(Kind::DnsUnresolvable, Low)],
            Degraded,
            "does not resolve",
        ));

        let mut a = healthy_app();
        a.http_proxy = Some(ProbeResult {
            latency_ms: Some(2_500.0),
            ..probe("shop.localhost", true, Some(200))
        });
        cases.push(("slow through the proxy", a, true, &[], Degraded, "slowly"));

        let mut a = healthy_app();
        a.http_proxy = None;
        cases.push((
            "nginx is down: the proxy's finding explains it",
            a,
            false,
            &[],
            Down,
            "the proxy is down",
        ));

        let mut a = refusing(healthy_app(), Some(vec![4000]));
        a.incomplete = Some("the checks did not finish within 3s".into());
        cases.push((
            "checks that did not finish conclude nothing",
            a,
            true,
            &[],
            Degraded,
            "unknown: the checks did not finish",
        ));

        for (what, app, serving, want, status, reason) in cases {
            let (health, findings) = classify_app(&app, serving, &Rules::default());
            assert_eq!(kinds(&findings), expected(want), "{what}: {findings:#?}");
            assert!(
                findings.iter().all(|f| f.component == "app:shop"),
                "{what}: {findings:#?}"
            );
            assert_eq!(health.status, status, "{what}: {health:?}");
            assert!(
                health.reason.contains(reason),
                "{what}: reason {:?} lacks {reason:?}",
                health.reason
            );
        }
    }

    #[test]
    fn a_forced_port_is_named_in_the_finding() {
        let mut app = refusing(healthy_app(), Some(vec![3000]));
        let forced = SocketAddr::new(IP, 9999);
        app.route = Some(route(&[forced]));
        app.tcp[0].target = forced.to_string();
        app.containers[0].forced_port = Some("9999".into());
        let (_, findings) = classify_app(&app, true, &Rules::default());
        assert_eq!(findings.len(), 1, "{findings:#?}");
        assert_eq!(findings[0].kind, "port_mismatch");
        assert!(
            findings[0].summary.contains("forced to 9999"),
            "{}",
            findings[0].summary
        );
        assert!(
            findings[0].summary.contains("set butler.port=3000"),
            "names the port it listens on and the label to change: {}",
            findings[0].summary
        );
    }

    #[test]
    fn several_listening_ports_with_nothing_to_choose_by_are_named() {
        let app = refusing(healthy_app(), Some(vec![9100, 9200]));
        let (_, findings) = classify_app(&app, true, &Rules::default());
        assert_eq!(findings[0].kind, "port_mismatch", "{findings:#?}");
        assert!(
            findings[0].summary.contains("listens on 9100, 9200")
                && findings[0].summary.contains("butler.port to one of them"),
            "{}",
            findings[0].summary
        );
    }

    fn proxy(state: &str) -> ProxyObs {
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

    #[test]
    fn proxy_observations_make_these_findings() {
        use Severity::{Critical, High, Low, Medium};
        let mut cases: Vec<(&str, ProxyObs, Expected)> = vec![
            ("running, same config", proxy("running"), &[]),
            ("engine did not answer", proxy("unknown"), &[]),
            ("missing", proxy("missing"), &[(Kind::ProxyDown, Critical)]),
            ("stopped", proxy("stopped"), &[(Kind::ProxyDown, Critical)]),
            (
                "crash-looping",
                proxy("crash_looping"),
                &[(Kind::ProxyDown, Critical)],
            ),
            (
                "created from another image",
                proxy("outdated"),
                &[(Kind::ProxyOutdated, Low)],
            ),
        ];
        let mut p = proxy("running");
        p.answers = Some(probe("nginx", false, None));
        cases.push((
            "runs but does not answer",
            p,
            &[(Kind::ProxyDown, Critical)],
        ));
        let mut p = proxy("running");
        p.drift = Some(vec!["sites/shop.conf".into()]);
        cases.push((
            "a file edited by hand",
            p.clone(),
            &[(Kind::ConfigDrift, Medium)],
        ));
        p.config_error = Some(Some("unexpected \"}\"".into()));
        cases.push(("edited and now invalid", p, &[(Kind::ConfigDrift, High)]));
        let mut p = proxy("running");
        p.live_hash = Some("b".repeat(64));
        cases.push((
            "live points at another version",
            p,
            &[(Kind::ConfigDrift, Medium)],
        ));
        let mut p = proxy("running");
        p.config_error = Some(Some("host not found in upstream".into()));
        cases.push((
            "the recorded config fails nginx -t",
            p,
            &[(Kind::ConfigInvalid, High)],
        ));
        let mut p = proxy("running");
        p.drift = None;
        p.config_error = None;
        cases.push(("config checks did not finish", p, &[]));
        for (what, obs, want) in cases {
            let findings = classify_proxy(&obs);
            assert_eq!(kinds(&findings), expected(want), "{what}: {findings:#?}");
            assert!(
                findings.iter().all(|f| f.component == PROXY_COMPONENT),
                "{what}"
            );
        }
    }

    fn host(free_fraction: f64, hours_left: Option<f64>, mem: f64, load1: f64) -> HostObs {
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

    #[test]
    fn host_observations_make_these_findings() {
        use Severity::{Critical, High, Low, Medium};
        let cases: Vec<(&str, HostObs, Expected)> = vec![
            ("all fine", host(0.5, None, 0.5, 1.0), &[]),
            (
                "disk at 8%",
                host(0.08, None, 0.5, 1.0),
                &[(Kind::DiskLow, Medium)],
            ),
            (
                "disk at 3%",
                host(0.03, None, 0.5, 1.0),
                &[(Kind::DiskLow, High)],
            ),
            (
                "disk at 0.5%",
                host(0.005, None, 0.5, 1.0),
                &[(Kind::DiskLow, Critical)],
            ),
            (
                "full in 30 h: beyond the 24 h horizon",
                host(0.5, Some(30.0), 0.5, 1.0),
                &[],
            ),
            (
                "full in 12 h",
                host(0.5, Some(12.0), 0.5, 1.0),
                &[(Kind::DiskFilling, Medium)],
            ),
            (
                "full in 3 h",
                host(0.5, Some(3.0), 0.5, 1.0),
                &[(Kind::DiskFilling, High)],
            ),
            (
                "low and full in 30 minutes",
                host(0.03, Some(0.5), 0.5, 1.0),
                &[(Kind::DiskLow, High), (Kind::DiskFilling, Critical)],
            ),
            (
                "memory at 8%",
                host(0.5, None, 0.08, 1.0),
                &[(Kind::MemoryLow, Medium)],
            ),
            (
                "memory at 3%",
                host(0.5, None, 0.03, 1.0),
                &[(Kind::MemoryLow, High)],
            ),
            (
                "load 4 on 2 CPUs: at the limit",
                host(0.5, None, 0.5, 4.0),
                &[],
            ),
            (
                "load 6 on 2 CPUs",
                host(0.5, None, 0.5, 6.0),
                &[(Kind::LoadHigh, Low)],
            ),
            (
                "load 10 on 2 CPUs",
                host(0.5, None, 0.5, 10.0),
                &[(Kind::LoadHigh, Medium)],
            ),
        ];
        let rules = Rules::default();
        for (what, obs, want) in cases {
            let findings = classify_host(&obs, &rules);
            assert_eq!(kinds(&findings), expected(want), "{what}: {findings:#?}");
            assert!(
                findings.iter().all(|f| f.component == HOST_COMPONENT),
                "{what}"
            );
        }
        let mut unknown = host(0.0, None, 0.5, 1.0);
        unknown.disks[0].total_bytes = 0;
        assert!(
            classify_host(&unknown, &rules).is_empty(),
            "a disk of unknown size says nothing"
        );
    }

    #[test]
    fn unit_observations_make_these_findings() {
        let unit = |name: &str, load: &str, active: &str| UnitObs {
            unit: name.into(),
            load_state: load.into(),
            active_state: active.into(),
            sub_state: String::new(),
            result: Some("exit-code".into()),
            restarts: Some(5),
        };
        let cases: Vec<(UnitObs, Option<Severity>)> = vec![
            (
                unit("butler-recovery.service", "loaded", "failed"),
                Some(Severity::High),
            ),
            (
                unit("butler-dynamic-proxy.service", "loaded", "failed"),
                Some(Severity::High),
            ),
            (
                unit("butler-dashboard.service", "loaded", "failed"),
                Some(Severity::Medium),
            ),
            (unit("butler-recovery.service", "loaded", "active"), None),
            (
                unit("butler-recovery.service", "loaded", "activating"),
                None,
            ),
            (unit("butler-recovery.service", "loaded", "inactive"), None),
            (unit("butler-recovery.service", "not-found", "failed"), None),
        ];
        for (obs, want) in cases {
            let findings = classify_units(std::slice::from_ref(&obs));
            match want {
                None => assert!(findings.is_empty(), "{obs:?}: {findings:#?}"),
                Some(severity) => {
                    assert_eq!(findings.len(), 1, "{obs:?}");
                    let f = &findings[0];
                    assert_eq!(f.kind, "unit_failed");
                    assert_eq!(f.severity, severity, "{obs:?}");
                    assert_eq!(f.component, format!("unit:{}", obs.unit));
                    assert!(f.summary.contains("exit-code"), "{}", f.summary);
                }
            }
        }
    }

    #[test]
    fn one_problem_is_one_finding_with_the_worst_severity() {
        let f = |kind: Kind, severity, component: &str, summary: &str| {
            finding(kind, severity, component, summary.to_owned())
        };
        let merged = merge(vec![
            f(
                Kind::ContainerDown,
                Severity::Medium,
                "app:shop",
                "a stopped",
            ),
            f(Kind::ContainerDown, Severity::High, "app:shop", "b stopped"),
            f(Kind::ContainerDown, Severity::High, "app:shop", "b stopped"),
            f(Kind::ContainerDown, Severity::High, "app:blog", "c stopped"),
            f(Kind::CrashLoop, Severity::High, "app:shop", "a restarts"),
        ]);
        let rows: Vec<(&str, &str, Severity, &str)> = merged
            .iter()
            .map(|m| {
                (
                    m.kind.as_str(),
                    m.component.as_str(),
                    m.severity,
                    m.summary.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("container_down", "app:blog", Severity::High, "c stopped"),
                (
                    "container_down",
                    "app:shop",
                    Severity::High,
                    "a stopped; b stopped"
                ),
                ("crash_loop", "app:shop", Severity::High, "a restarts"),
            ]
        );
    }

    #[test]
    fn a_round_reports_the_proxy_once_and_every_app_as_down_behind_it() {
        let obs = Observations {
            apps: vec![healthy_app()],
            apps_listed: true,
            proxy: proxy("stopped"),
            host: host(0.5, None, 0.5, 1.0),
            units: Some(Vec::new()),
        };
        let assessment = classify(&obs, &Rules::default());
        assert_eq!(
            kinds(&assessment.findings),
            expected(&[(Kind::ProxyDown, Severity::Critical)])
        );
        assert_eq!(assessment.worst(), Some(Severity::Critical));
        assert_eq!(assessment.apps[0].status, AppStatus::Down);

        // A proxy that runs but does not answer is down too, and no app gets a gateway error.
        let mut obs = obs;
        obs.proxy = proxy("running");
        obs.proxy.answers = Some(probe("nginx", false, None));
        obs.apps[0].http_proxy = Some(probe("shop.localhost", false, None));
        let assessment = classify(&obs, &Rules::default());
        assert_eq!(
            kinds(&assessment.findings),
            expected(&[(Kind::ProxyDown, Severity::Critical)])
        );
        assert_eq!(assessment.apps[0].status, AppStatus::Down);
    }
}
