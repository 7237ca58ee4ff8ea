//! From observations to conclusions: which findings (kind, severity, component, summary) a round
//! makes, each app's status with its reason, and the check rows a round stores. Pure functions
//! over `model` data. The severity rules are all in [`severity`]; every limit (disk, memory,
//! load, restarts, latency, grace times) is one function, next to the constant it applies. The
//! host's and the units' check rows ask the same functions as their findings, so such a check
//! fails exactly when it makes a finding.
//!
//! `app` composes an app's decisions, taken in `containers` (what its containers are doing),
//! `routing` (its network, its route and the route's probes) and `answers` (its HTTP answers);
//! `proxy`, `host` and `units` classify the other layers; `checks` makes the check rows.

use std::collections::BTreeMap;

use super::model::Observations;
use super::{Finding, Kind, Severity, finding};
use crate::store::AppHealth;

mod answers;
mod app;
mod checks;
mod containers;
mod host;
mod proxy;
mod routing;
mod units;

#[cfg(test)]
mod fixtures;

pub use answers::slow;
pub use app::classify_app;
pub use checks::check_rows;
pub use containers::{CRASH_LOOP_RESTARTS, EXIT_SETTLE_SECS, crash_looping, exit_settling};
pub use host::{
    DISK_LOW_FRACTION, LOAD_HIGH_PER_CPU, MEMORY_LOW_FRACTION, classify_host, disk_filling,
    disk_low, human_bytes, human_hours, load_high, memory_low,
};
pub use proxy::classify_proxy;
pub use routing::ROUTE_GRACE_SECS;
pub use units::{classify_units, unit_failed};

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

/// A problem before it is placed at a component: its kind, what its severity depends on, and what
/// it says. The decisions make these; [`Problem::at`] turns one into a finding.
#[derive(Debug, Clone, PartialEq)]
struct Problem {
    kind: Kind,
    facts: Facts,
    summary: String,
}

impl Problem {
    fn new(kind: Kind, summary: String) -> Self {
        Self::with(kind, Facts::default(), summary)
    }

    fn with(kind: Kind, facts: Facts, summary: String) -> Self {
        Self {
            kind,
            facts,
            summary,
        }
    }

    /// A problem of one of an app's instances; `partial` when others still serve.
    fn partial(kind: Kind, partial: bool, summary: String) -> Self {
        let facts = Facts {
            partial,
            ..Facts::default()
        };
        Self::with(kind, facts, summary)
    }

    /// A problem other than restarts, which by themselves do not keep an app from serving.
    fn beyond_restarts(&self) -> bool {
        self.kind != Kind::CrashLoop
    }

    fn at(self, component: &str) -> Finding {
        finding(
            self.kind,
            severity(self.kind, &self.facts),
            component,
            self.summary,
        )
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

#[cfg(test)]
mod tests {
    //! The severity of every kind, merging, and a whole round. The tables of what each
    //! observation leads to are next to the decisions they test.

    use super::fixtures::{expected, healthy_app, host, kinds, probe, proxy};
    use super::*;
    use crate::health::{AppStatus, HOST_COMPONENT};

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

    #[test]
    fn a_problem_becomes_a_finding_with_its_severity_at_its_component() {
        let f = Problem::partial(Kind::CrashLoop, true, "shop restarts".into()).at("app:shop");
        assert_eq!(
            f,
            finding(
                Kind::CrashLoop,
                Severity::Medium,
                "app:shop",
                "shop restarts".into()
            )
        );
        let facts = Facts {
            fraction_left: Some(0.005),
            ..Facts::default()
        };
        let f = Problem::with(Kind::DiskLow, facts, "/ is full".into()).at(HOST_COMPONENT);
        assert_eq!(
            (f.severity, f.component.as_str()),
            (Severity::Critical, "host")
        );
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
