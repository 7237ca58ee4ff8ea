//! The butler's own systemd units: a failed one is a finding.

use super::{Facts, Problem};
use crate::health::model::UnitObs;
use crate::health::{Finding, Kind, unit_component};

/// The unit is installed and systemd has it in the failed state.
pub fn unit_failed(unit: &UnitObs) -> bool {
    unit_installed(unit) && unit.active_state == "failed"
}

/// systemd knows the unit; one that is not installed says nothing.
pub(super) fn unit_installed(unit: &UnitObs) -> bool {
    unit.load_state != "not-found"
}

pub fn classify_units(units: &[UnitObs]) -> Vec<Finding> {
    units
        .iter()
        .filter(|u| unit_failed(u))
        .map(|u| {
            let facts = Facts {
                minor_unit: u.unit == crate::systemd::units::Worker::Dashboard.unit(),
                ..Facts::default()
            };
            let summary = format!(
                "{} failed (result {}, {} restarts)",
                u.unit,
                u.result.as_deref().unwrap_or("unknown"),
                u.restarts.unwrap_or(0)
            );
            Problem::with(Kind::UnitFailed, facts, summary).at(&unit_component(&u.unit))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Severity;

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
}
