//! The check rows a round stores, one per subject and check name, for the dashboard: what each
//! check saw and whether it passed. A host or unit check passes exactly when classifying makes no
//! finding about what it looked at, because both ask the same decision (`host`, `units`).

use super::{Rules, host, units};
use crate::health::model::{AppObs, HostObs, Observations, ProbeResult, ProxyObs, UnitObs};
use crate::health::{HOST_COMPONENT, PROXY_COMPONENT, app_component, unit_component};
use crate::store::CheckResult;

/// One check of a subject.
struct Check {
    name: String,
    ok: bool,
    latency_ms: Option<f64>,
    detail: String,
}

fn check(name: &str, ok: bool, latency_ms: Option<f64>, detail: String) -> Check {
    Check {
        name: name.to_owned(),
        ok,
        latency_ms,
        detail,
    }
}

/// The stored check rows of one round: one per subject and check name.
pub fn check_rows(obs: &Observations, rules: &Rules) -> Vec<CheckResult> {
    let mut subjects: Vec<(String, Vec<Check>)> = obs
        .apps
        .iter()
        .map(|app| (app_component(&app.app), app_checks(app)))
        .collect();
    subjects.push((PROXY_COMPONENT.to_owned(), proxy_checks(&obs.proxy)));
    subjects.push((HOST_COMPONENT.to_owned(), host_checks(&obs.host, rules)));
    for unit in obs.units.iter().flatten() {
        if let Some(check) = unit_check(unit) {
            subjects.push((unit_component(&unit.unit), vec![check]));
        }
    }
    subjects
        .into_iter()
        .flat_map(|(subject, checks)| {
            checks.into_iter().map(move |c| CheckResult {
                subject: subject.clone(),
                name: c.name,
                ok: c.ok,
                latency_ms: c.latency_ms,
                detail: c.detail,
                checked_at: String::new(),
            })
        })
        .collect()
}

fn app_checks(app: &AppObs) -> Vec<Check> {
    let mut out = Vec::new();
    let running = app.containers.iter().filter(|c| c.running()).count();
    out.push(check(
        "container",
        running > 0 && running == app.containers.len(),
        None,
        app.containers
            .iter()
            .map(|c| format!("{} {} ({} restarts)", c.name, c.state, c.restart_count))
            .collect::<Vec<_>>()
            .join("; "),
    ));
    let on_network = app
        .containers
        .iter()
        .filter(|c| c.running())
        .all(|c| c.ip.is_some());
    out.push(check(
        "network",
        on_network && running > 0,
        None,
        app.containers
            .iter()
            .filter(|c| c.running())
            .map(|c| {
                format!(
                    "{} at {}",
                    c.name,
                    c.ip.map_or("no address".to_owned(), |ip| ip.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    ));
    if let Some(dns) = app.dns {
        let detail = if dns {
            "container names resolve on the proxy network"
        } else {
            "a container name does not resolve on the proxy network"
        };
        out.push(check("dns", dns, None, detail.to_owned()));
    }
    if app.route.is_some() {
        let (ok, latency, detail) = all_ok(&app.tcp);
        out.push(check("tcp", ok, latency, detail));
        let (ok, latency, detail) = all_ok(&app.http_direct);
        let ok = ok && !app.http_direct.is_empty();
        out.push(check("http_direct", ok, latency, detail));
    }
    if let Some(p) = &app.http_proxy {
        out.push(check("http_proxy", p.ok, p.latency_ms, probe_text(p)));
    }
    out
}

fn proxy_checks(proxy: &ProxyObs) -> Vec<Check> {
    let mut out = vec![check(
        "container",
        proxy.serving(),
        None,
        proxy.detail.clone(),
    )];
    if let Some(answer) = &proxy.answers {
        out.push(check(
            "http",
            answer.ok,
            answer.latency_ms,
            probe_text(answer),
        ));
    }
    if let Some(verdict) = &proxy.config_error {
        out.push(check(
            "config_valid",
            verdict.is_none(),
            None,
            verdict.clone().unwrap_or_else(|| "nginx -t passes".into()),
        ));
    }
    if proxy.live_hash.is_some() {
        let drift = proxy.drift.clone().unwrap_or_default();
        let same = proxy.live_hash == proxy.applied_hash && drift.is_empty();
        let detail = if same {
            "the live config is the applied version".into()
        } else if drift.is_empty() {
            format!(
                "live {} but applied {}",
                proxy.live_hash.as_deref().unwrap_or("?"),
                proxy.applied_hash.as_deref().unwrap_or("?")
            )
        } else {
            format!("changed: {}", drift.join(", "))
        };
        out.push(check("config_drift", same, None, detail));
    }
    out
}

/// A disk passes when it is neither low nor filling, memory when it is not low, the load when it
/// is not high: the decisions that make the host's findings.
fn host_checks(host: &HostObs, rules: &Rules) -> Vec<Check> {
    let mut out: Vec<Check> = host
        .disks
        .iter()
        .map(|disk| {
            let ok = host::disk_low(disk).is_none() && host::disk_filling(disk, rules).is_none();
            let detail = format!(
                "{} free of {} ({}){}",
                host::human_bytes(disk.free_bytes),
                host::human_bytes(disk.total_bytes),
                disk.role,
                disk.hours_left
                    .map(|h| format!("; full in {}", host::human_hours(h)))
                    .unwrap_or_default()
            );
            check(&format!("disk:{}", disk.path), ok, None, detail)
        })
        .collect();
    if let (Some(total), Some(available)) = (host.mem_total_bytes, host.mem_available_bytes) {
        out.push(check(
            "memory",
            host::memory_low(host).is_none(),
            None,
            format!(
                "{} available of {}",
                host::human_bytes(available),
                host::human_bytes(total)
            ),
        ));
    }
    if let Some(load) = host.load1 {
        out.push(check(
            "load",
            host::load_high(host).is_none(),
            None,
            format!("load {load:.2} on {} CPUs", host.cpus),
        ));
    }
    out
}

/// An installed unit's state; it passes unless it failed.
fn unit_check(unit: &UnitObs) -> Option<Check> {
    units::unit_installed(unit).then(|| {
        check(
            "state",
            !units::unit_failed(unit),
            None,
            format!(
                "{} ({}), {} restarts",
                unit.active_state,
                unit.sub_state,
                unit.restarts.unwrap_or(0)
            ),
        )
    })
}

fn probe_text(p: &ProbeResult) -> String {
    let mut text = format!("{}: {}", p.target, p.short());
    if let Some(error) = &p.error {
        text.push_str(&format!(" ({error})"));
    }
    text
}

fn all_ok(probes: &[ProbeResult]) -> (bool, Option<f64>, String) {
    let latency = probes
        .iter()
        .filter_map(|p| p.latency_ms)
        .fold(None, |max: Option<f64>, l| {
            Some(max.map_or(l, |m| m.max(l)))
        });
    (
        probes.iter().all(|p| p.ok),
        latency,
        probes.iter().map(probe_text).collect::<Vec<_>>().join("; "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Kind;
    use crate::health::classify::fixtures::{healthy_app, host, proxy};
    use crate::health::classify::{classify_host, classify_units};
    use crate::health::model::DiskObs;

    fn round(apps: Vec<AppObs>, host: HostObs, units: Option<Vec<UnitObs>>) -> Observations {
        Observations {
            apps,
            apps_listed: true,
            proxy: proxy("running"),
            host,
            units,
        }
    }

    fn unit(name: &str, load: &str, active: &str) -> UnitObs {
        UnitObs {
            unit: name.into(),
            load_state: load.into(),
            active_state: active.into(),
            sub_state: "dead".into(),
            result: Some("exit-code".into()),
            restarts: Some(2),
        }
    }

    #[test]
    fn a_round_has_a_row_per_subject_and_check() {
        let units = vec![
            unit("butler-recovery.service", "loaded", "failed"),
            unit("butler-dashboard.service", "not-found", "inactive"),
        ];
        let obs = round(vec![healthy_app()], host(0.5, None, 0.5, 1.0), Some(units));
        let rows = check_rows(&obs, &Rules::default());
        let got: Vec<(&str, &str, bool)> = rows
            .iter()
            .map(|r| (r.subject.as_str(), r.name.as_str(), r.ok))
            .collect();
        assert_eq!(
            got,
            [
                ("app:shop", "container", true),
                ("app:shop", "network", true),
                ("app:shop", "dns", true),
                ("app:shop", "tcp", true),
                ("app:shop", "http_direct", true),
                ("app:shop", "http_proxy", true),
                ("proxy", "container", true),
                ("proxy", "http", true),
                ("proxy", "config_valid", true),
                ("proxy", "config_drift", true),
                ("host", "disk:/var/lib/butler", true),
                ("host", "memory", true),
                ("host", "load", true),
                ("unit:butler-recovery.service", "state", false),
            ]
        );
        let disk = &rows[10];
        assert_eq!(disk.detail, "476.8 MiB free of 953.7 MiB (state)");
        let unit = &rows[13];
        assert_eq!(unit.detail, "failed (dead), 2 restarts");
    }

    /// Each host observation with one disk, and whether the disk, memory and load checks pass.
    fn hosts() -> Vec<(&'static str, HostObs)> {
        let mut cases = vec![
            ("all fine", host(0.5, None, 0.5, 1.0)),
            ("disk at 10%", host(0.10, None, 0.5, 1.0)),
            ("disk at 8%", host(0.08, None, 0.5, 1.0)),
            ("disk at 0.5%", host(0.005, None, 0.5, 1.0)),
            ("full in 30 h", host(0.5, Some(30.0), 0.5, 1.0)),
            ("full in 24 h", host(0.5, Some(24.0), 0.5, 1.0)),
            ("full in 3 h", host(0.5, Some(3.0), 0.5, 1.0)),
            (
                "low and full in 30 minutes",
                host(0.03, Some(0.5), 0.5, 1.0),
            ),
            ("memory at 10%", host(0.5, None, 0.10, 1.0)),
            ("memory at 8%", host(0.5, None, 0.08, 1.0)),
            ("load 4 on 2 CPUs", host(0.5, None, 0.5, 4.0)),
            ("load 6 on 2 CPUs", host(0.5, None, 0.5, 6.0)),
            ("load not a number", host(0.5, None, 0.5, f64::NAN)),
        ];
        let mut unknown = host(0.5, Some(1.0), 0.5, 1.0);
        unknown.disks[0] = DiskObs {
            total_bytes: 0,
            free_bytes: 0,
            ..unknown.disks[0].clone()
        };
        unknown.mem_total_bytes = Some(0);
        unknown.mem_available_bytes = Some(0);
        cases.push(("sizes of 0: unknown", unknown));
        let mut no_cpus = host(0.5, None, 0.5, 2.5);
        no_cpus.cpus = 0;
        cases.push(("load 2.5 with no CPU count", no_cpus));
        cases
    }

    #[test]
    fn a_host_check_fails_exactly_when_it_makes_a_finding() {
        let rules = Rules::default();
        for (what, host) in hosts() {
            let findings = classify_host(&host, &rules);
            let found = |kinds: &[Kind]| {
                findings
                    .iter()
                    .any(|f| kinds.iter().any(|k| f.kind == k.as_str()))
            };
            let rows = check_rows(&round(Vec::new(), host, None), &rules);
            let ok = |name: &str| {
                rows.iter()
                    .find(|r| r.subject == HOST_COMPONENT && r.name == name)
                    .unwrap_or_else(|| panic!("{what}: no {name} row"))
                    .ok
            };
            assert_eq!(
                ok("disk:/var/lib/butler"),
                !found(&[Kind::DiskLow, Kind::DiskFilling]),
                "{what}: disk {findings:#?}"
            );
            assert_eq!(
                ok("memory"),
                !found(&[Kind::MemoryLow]),
                "{what}: {findings:#?}"
            );
            assert_eq!(
                ok("load"),
                !found(&[Kind::LoadHigh]),
                "{what}: {findings:#?}"
            );
        }
    }

    #[test]
    fn a_unit_check_fails_exactly_when_it_makes_a_finding() {
        for active in ["active", "activating", "inactive", "failed"] {
            for load in ["loaded", "not-found"] {
                let obs = unit("butler-recovery.service", load, active);
                let failed = !classify_units(std::slice::from_ref(&obs)).is_empty();
                let rows = check_rows(
                    &round(Vec::new(), host(0.5, None, 0.5, 1.0), Some(vec![obs])),
                    &Rules::default(),
                );
                let row = rows.iter().find(|r| r.subject.starts_with("unit:"));
                match row {
                    Some(row) => assert_eq!(row.ok, !failed, "{load} {active}"),
                    None => assert!(!failed && load == "not-found", "{load} {active}"),
                }
            }
        }
    }

    #[test]
    fn a_disk_filling_within_the_horizon_fails_its_check() {
        let rules = Rules::default();
        let rows = check_rows(
            &round(Vec::new(), host(0.5, Some(3.0), 0.5, 1.0), None),
            &rules,
        );
        let disk = rows
            .iter()
            .find(|r| r.name.starts_with("disk:"))
            .expect("a disk row");
        assert!(!disk.ok, "{disk:?}");
        assert!(
            disk.detail.ends_with("; full in 3.0 hours"),
            "{}",
            disk.detail
        );
        let later = Rules {
            disk_warning_hours: 2.0,
            ..Rules::default()
        };
        let rows = check_rows(
            &round(Vec::new(), host(0.5, Some(3.0), 0.5, 1.0), None),
            &later,
        );
        assert!(
            rows.iter()
                .find(|r| r.name.starts_with("disk:"))
                .is_some_and(|r| r.ok)
        );
    }
}
