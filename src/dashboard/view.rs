//! What the dashboard shows, built from the store's rows by plain functions: the app directory
//! (routes joined with app health), the summary figures and the recommendations. The page and the
//! JSON API serve the same values, so what a script reads is what a person sees.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::Serialize;

use crate::health::{AppStatus, IncidentState, Severity};
use crate::store::{
    AppHealth, CheckResult, Incident, Recovery, RouteRow, SuccessRate, VersionInfo,
};
use crate::systemd::supervisor::UnitStatus;

/// An app's status as the dashboard shows it: the health monitor's, or `unknown` before it has
/// checked the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    /// Every container was stopped on purpose (`docker stop`) or finished cleanly.
    Stopped,
    Degraded,
    Down,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Stopped => "stopped",
            Status::Degraded => "degraded",
            Status::Down => "down",
            Status::Unknown => "unknown",
        }
    }

    pub const ALL: [Status; 5] = [
        Status::Healthy,
        Status::Stopped,
        Status::Degraded,
        Status::Down,
        Status::Unknown,
    ];
}

impl From<AppStatus> for Status {
    fn from(status: AppStatus) -> Self {
        match status {
            AppStatus::Healthy => Status::Healthy,
            AppStatus::Stopped => Status::Stopped,
            AppStatus::Degraded => Status::Degraded,
            AppStatus::Down => Status::Down,
        }
    }
}

/// One row of the app directory.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppView {
    pub name: String,
    pub hosts: Vec<String>,
    /// The app through the proxy; `None` when it has no route.
    pub proxy_url: Option<String>,
    /// The first instance on its own address, bypassing the proxy (reachable from this host).
    pub direct_url: Option<String>,
    /// Upstream servers, `ip:port`.
    pub servers: Vec<String>,
    pub routed: bool,
    pub port: Option<u16>,
    /// Why that port: "label butler.port", "only exposed port", ...
    pub port_reason: Option<String>,
    pub status: Status,
    pub status_reason: String,
    /// The last response time through the proxy.
    pub latency_ms: Option<f64>,
    pub started_at: Option<String>,
    pub uptime_secs: Option<u64>,
    pub checked_at: Option<String>,
    /// Set when every container of the app has exited: how the last one ended, and since when.
    pub down: Option<crate::proxy::Down>,
}

/// `/api/apps`: the directory and its size.
#[derive(Debug, Serialize)]
pub struct AppList<'a> {
    pub count: usize,
    pub apps: &'a [AppView],
}

/// How the proxy is reached from this host, for the links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Links {
    pub http_port: u16,
}

impl Links {
    pub fn proxy_url(&self, host: &str) -> String {
        match self.http_port {
            80 => format!("http://{host}/"),
            port => format!("http://{host}:{port}/"),
        }
    }
}

/// Routes joined with app health, by name. An app the health monitor knows but that has no route
/// (its container stopped) is listed too, unrouted.
pub fn apps(
    routes: Vec<RouteRow>,
    health: Vec<AppHealth>,
    links: Links,
    now: SystemTime,
) -> Vec<AppView> {
    let mut health: BTreeMap<String, AppHealth> =
        health.into_iter().map(|h| (h.app.clone(), h)).collect();
    let mut apps: Vec<AppView> = routes
        .into_iter()
        .map(|route| {
            let checked = health.remove(&route.app);
            let mut view = AppView {
                proxy_url: route.hosts.first().map(|h| links.proxy_url(h)),
                direct_url: route.servers.first().map(|s| format!("http://{s}/")),
                routed: true,
                down: route.down,
                port: Some(route.port),
                port_reason: Some(route.reason),
                hosts: route.hosts,
                servers: route.servers,
                name: route.app,
                status: Status::Unknown,
                status_reason: "not checked yet by the health monitor".into(),
                latency_ms: None,
                started_at: None,
                uptime_secs: None,
                checked_at: None,
            };
            if let Some(h) = checked {
                apply_health(&mut view, h, now);
            }
            view
        })
        .collect();
    for (name, h) in health {
        let mut view = AppView {
            name,
            hosts: Vec::new(),
            proxy_url: None,
            direct_url: None,
            servers: Vec::new(),
            routed: false,
            port: None,
            port_reason: None,
            status: Status::Unknown,
            status_reason: String::new(),
            latency_ms: None,
            started_at: None,
            uptime_secs: None,
            checked_at: None,
            down: None,
        };
        apply_health(&mut view, h, now);
        apps.push(view);
    }
    apps.sort_by(|a, b| a.name.cmp(&b.name));
    apps
}

fn apply_health(view: &mut AppView, health: AppHealth, now: SystemTime) {
    view.status = health.status.into();
    view.status_reason = health.reason;
    view.latency_ms = health.latency_ms;
    view.uptime_secs = health
        .started_at
        .as_deref()
        .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok())
        .and_then(|started| now.duration_since(started).ok())
        .map(|d| d.as_secs());
    view.started_at = health.started_at;
    view.checked_at = Some(health.checked_at);
}

/// The figures at the top of the page.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The worst of the apps' statuses and the open incidents: healthy, degraded or down.
    pub status: &'static str,
    pub apps: usize,
    pub routed: usize,
    pub healthy: usize,
    pub degraded: usize,
    pub down: usize,
    pub stopped: usize,
    pub unknown: usize,
    pub open_incidents: usize,
    /// Recovery attempts (skipped ones not counted) and how many succeeded, over all time.
    pub recovery_attempts: i64,
    pub recovery_successes: i64,
    /// The newest config version and whether it went live.
    pub last_version: Option<VersionBrief>,
    /// Set while an operator's rollback pins the proxy config.
    pub pinned_version: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionBrief {
    pub id: i64,
    pub created_at: String,
    pub applied: bool,
    pub summary: String,
}

pub fn summary(
    apps: &[AppView],
    open_incidents: &[Incident],
    rates: &[SuccessRate],
    last_version: Option<&VersionInfo>,
    pinned_version: Option<i64>,
) -> Summary {
    let count = |status: Status| apps.iter().filter(|a| a.status == status).count();
    let worst_app = apps
        .iter()
        .map(|a| a.status)
        .filter(|s| *s != Status::Unknown)
        .max()
        .unwrap_or(Status::Healthy);
    let severe = open_incidents.iter().any(|i| i.severity >= Severity::High);
    let status = match worst_app {
        Status::Down => "down",
        Status::Degraded => "degraded",
        _ if severe || !open_incidents.is_empty() => "degraded",
        _ => "healthy",
    };
    Summary {
        status,
        apps: apps.len(),
        routed: apps.iter().filter(|a| a.routed).count(),
        healthy: count(Status::Healthy),
        degraded: count(Status::Degraded),
        down: count(Status::Down),
        stopped: count(Status::Stopped),
        unknown: count(Status::Unknown),
        open_incidents: open_incidents.len(),
        recovery_attempts: rates.iter().map(|r| r.attempts).sum(),
        recovery_successes: rates.iter().map(|r| r.successes).sum(),
        last_version: last_version.map(|v| VersionBrief {
            id: v.id,
            created_at: v.created_at.clone(),
            applied: v.applied,
            summary: v.summary.clone(),
        }),
        pinned_version,
    }
}

/// The butler's own units, or why they cannot be shown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServicesView {
    /// False when systemd cannot be asked (a host without systemd, `butler run`).
    pub available: bool,
    pub reason: Option<String>,
    pub units: Vec<UnitStatus>,
}

/// Everything the page shows, in one value (also the template's context).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    pub summary: Summary,
    pub apps: Vec<AppView>,
    pub services: ServicesView,
    pub incidents: Vec<Incident>,
    pub recoveries: Vec<Recovery>,
    pub recommendations: Vec<String>,
    pub checks: Vec<CheckResult>,
}

/// What a person should do next, most urgent first. Each line names the thing and the command.
pub fn recommendations(
    apps: &[AppView],
    incidents: &[Incident],
    services: &ServicesView,
    rates: &[SuccessRate],
    last_version: Option<&VersionInfo>,
    pinned_version: Option<i64>,
) -> Vec<String> {
    let mut out = Vec::new();
    for incident in incidents
        .iter()
        .filter(|i| i.state == IncidentState::Escalated)
    {
        let after = match incident.attempts {
            0 => String::new(),
            1 => " after 1 recovery attempt".to_owned(),
            n => format!(" after {n} recovery attempts"),
        };
        out.push(format!(
            "Incident #{} ({} on {}) was escalated{after} and needs a person: {}",
            incident.id, incident.kind, incident.component, incident.summary
        ));
    }
    for unit in services
        .units
        .iter()
        .filter(|u| u.unit.ends_with(".service") && u.load_state == "loaded" && !u.is_active())
    {
        out.push(format!(
            "{} is {}: see `butler services status {}`, then `butler services start {}`.",
            unit.unit, unit.active_state, unit.name, unit.name
        ));
    }
    for app in apps.iter().filter(|a| a.status == Status::Down) {
        out.push(format!(
            "{} is down ({}): check `docker logs` of its container; `butler fix-502` reconnects and re-routes it.",
            app.name, app.status_reason
        ));
    }
    for app in apps
        .iter()
        .filter(|a| a.status == Status::Degraded && a.routed)
    {
        out.push(format!("{} is degraded: {}.", app.name, app.status_reason));
    }
    if let Some(version) = last_version.filter(|v| !v.applied)
        && let Some(error) = &version.error
    {
        out.push(format!(
            "Config version {} was not applied ({error}); the last good one keeps serving. `butler proxy history` lists them.",
            version.id
        ));
    }
    if let Some(pinned) = pinned_version {
        out.push(format!(
            "The proxy config is pinned to version {pinned} by a rollback: new containers are not routed until `butler proxy-update`."
        ));
    }
    for rate in rates.iter().filter(|r| r.attempts >= 3 && r.rate < 0.5) {
        out.push(format!(
            "Recovery of {} incidents succeeds only {:.0}% of the time ({} of {}): look at the causes by hand.",
            rate.kind,
            rate.rate * 100.0,
            rate.successes,
            rate.attempts
        ));
    }
    if !apps.is_empty() && apps.iter().all(|a| a.status == Status::Unknown) {
        out.push(
            "No app has been checked yet: is the health monitor running? (`butler services status health-monitor`)".into(),
        );
    }
    if apps.is_empty() {
        out.push("No app is running: start a container and it appears here within seconds.".into());
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;

    pub(crate) fn route(app: &str) -> RouteRow {
        RouteRow {
            app: app.into(),
            hosts: vec![format!("{app}.localhost")],
            servers: vec!["172.18.0.5:3000".into()],
            port: 3000,
            reason: "only exposed port".into(),
            down: None,
        }
    }

    fn health(app: &str, status: AppStatus) -> AppHealth {
        AppHealth {
            app: app.into(),
            status,
            reason: "HTTP 502 through the proxy".into(),
            latency_ms: Some(3.5),
            started_at: Some("2026-01-01T00:00:00.000Z".into()),
            checked_at: "2026-01-01T00:10:00.000Z".into(),
        }
    }

    #[test]
    fn routes_and_health_join_into_one_directory() {
        let now = humantime::parse_rfc3339("2026-01-01T01:00:00Z").unwrap();
        let apps = apps(
            vec![route("shop"), route("blog")],
            vec![
                health("shop", AppStatus::Down),
                health("gone", AppStatus::Down),
            ],
            Links { http_port: 8080 },
            now,
        );
        let names: Vec<_> = apps.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["blog", "gone", "shop"]);
        let (blog, gone, shop) = (&apps[0], &apps[1], &apps[2]);
        assert_eq!(blog.status, Status::Unknown);
        assert_eq!(
            blog.proxy_url.as_deref(),
            Some("http://blog.localhost:8080/")
        );
        assert_eq!(blog.direct_url.as_deref(), Some("http://172.18.0.5:3000/"));
        assert!(!gone.routed && gone.proxy_url.is_none());
        assert_eq!(shop.status, Status::Down);
        assert_eq!(shop.uptime_secs, Some(3600));
        assert_eq!(shop.port_reason.as_deref(), Some("only exposed port"));
        assert_eq!(
            Links { http_port: 80 }.proxy_url("a.localhost"),
            "http://a.localhost/"
        );
    }

    #[test]
    fn the_summary_takes_the_worst_status_and_recommendations_name_the_command() {
        let now = SystemTime::now() + Duration::from_secs(1);
        let apps = apps(
            vec![route("shop"), route("blog")],
            vec![
                health("shop", AppStatus::Down),
                health("blog", AppStatus::Healthy),
            ],
            Links { http_port: 80 },
            now,
        );
        let summary = summary(&apps, &[], &[], None, Some(4));
        assert_eq!(summary.status, "down");
        assert_eq!((summary.healthy, summary.down), (1, 1));
        let services = ServicesView {
            available: false,
            reason: Some("no systemd".into()),
            units: Vec::new(),
        };
        let advice = recommendations(&apps, &[], &services, &[], None, Some(4));
        assert!(advice[0].starts_with("shop is down"), "{advice:?}");
        assert!(advice.iter().any(|a| a.contains("pinned to version 4")));
        let empty = recommendations(&[], &[], &services, &[], None, None);
        assert!(empty[0].contains("No app is running"));
    }
}
