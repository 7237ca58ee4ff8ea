//! The proxy layer: whether nginx runs and answers, and whether the config it serves is the one
//! the butler applied and passes `nginx -t`.

use super::{Facts, Problem};
use crate::health::model::ProxyObs;
use crate::health::{Finding, Kind, PROXY_COMPONENT};

pub fn classify_proxy(proxy: &ProxyObs) -> Vec<Finding> {
    let problems: Vec<Problem> = match proxy.state.as_str() {
        // The engine did not answer in time: nothing is known about nginx this round.
        "unknown" => Vec::new(),
        "running" | "outdated" => (proxy.state == "outdated")
            .then(|| Problem::new(Kind::ProxyOutdated, proxy.detail.clone()))
            .into_iter()
            .chain(not_answering(proxy))
            .chain(config_problem(proxy))
            .collect(),
        _ => vec![Problem::new(Kind::ProxyDown, proxy.detail.clone())],
    };
    problems
        .into_iter()
        .map(|p| p.at(PROXY_COMPONENT))
        .collect()
}

/// A `proxy_down` when nginx runs but did not answer HTTP.
fn not_answering(proxy: &ProxyObs) -> Option<Problem> {
    let answer = proxy.answers.as_ref().filter(|a| !a.ok)?;
    Some(Problem::new(
        Kind::ProxyDown,
        format!(
            "nginx runs but does not answer HTTP on {}: {}",
            answer.target,
            answer.error.as_deref().unwrap_or("no answer")
        ),
    ))
}

/// A `config_drift` when the live config is not the applied one (high when it would not pass
/// `nginx -t` either), else a `config_invalid` when `nginx -t` refuses it.
fn config_problem(proxy: &ProxyObs) -> Option<Problem> {
    let invalid = match &proxy.config_error {
        Some(Some(error)) => Some(error.clone()),
        _ => None,
    };
    let drifted_files = proxy.drift.as_ref().filter(|files| !files.is_empty());
    let other_live = match (&proxy.live_hash, &proxy.applied_hash) {
        (Some(live), Some(applied)) if live != applied => Some((live, applied)),
        _ => None,
    };
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
        (None, None) => {
            let error = invalid?;
            return Some(Problem::new(
                Kind::ConfigInvalid,
                format!("nginx -t refuses the live config: {error}"),
            ));
        }
    };
    if let Some(error) = &invalid {
        summary.push_str(&format!("; nginx -t refuses it: {error}"));
    }
    let facts = Facts {
        invalid: invalid.is_some(),
        ..Facts::default()
    };
    Some(Problem::with(Kind::ConfigDrift, facts, summary))
}

fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Severity;
    use crate::health::classify::fixtures::{Expected, expected, kinds, probe, proxy};

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
}
