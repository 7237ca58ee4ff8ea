//! What a routed app answers: straight from its containers, through the proxy (and how fast), and
//! whether its name resolves where nginx looks it up.

use super::{Problem, Rules};
use crate::health::Kind;
use crate::health::model::{AppObs, ProbeResult, RouteObs};

/// An `app_error` for each request straight to a route server that failed.
pub(super) fn app_errors(http_direct: &[ProbeResult]) -> Vec<Problem> {
    http_direct
        .iter()
        .filter(|p| !p.ok)
        .map(|probe| {
            let what = match probe.status {
                Some(status) => format!("answered {status}"),
                None => format!(
                    "did not answer HTTP ({})",
                    probe.error.as_deref().unwrap_or("no answer")
                ),
            };
            Problem::new(Kind::AppError, format!("{} {what}", probe.target))
        })
        .collect()
}

/// The request through the proxy failed.
pub(super) fn proxy_failed(app: &AppObs) -> bool {
    app.http_proxy.as_ref().is_some_and(|p| !p.ok)
}

/// A `gateway_error` when nginx serves, the request through it failed, and none of the app's
/// `problems` (besides restarts) explains that: the app answers directly.
pub(super) fn gateway_error(
    app: &AppObs,
    route: &RouteObs,
    proxy_serving: bool,
    problems: &[Problem],
) -> Option<Problem> {
    let probe = app.http_proxy.as_ref().filter(|p| !p.ok)?;
    if !proxy_serving || problems.iter().any(Problem::beyond_restarts) {
        return None;
    }
    Some(Problem::new(
        Kind::GatewayError,
        format!(
            "the proxy answers {} for {} although the app answers directly",
            probe.short(),
            route.hosts.first().map_or("its host", String::as_str)
        ),
    ))
}

/// A `dns_unresolvable` when a container's name was looked up and did not resolve.
pub(super) fn dns_unresolvable(dns: Option<bool>) -> Option<Problem> {
    (dns == Some(false)).then(|| {
        Problem::new(
            Kind::DnsUnresolvable,
            "the container's name does not resolve inside the proxy network".to_owned(),
        )
    })
}

/// The latency through the proxy, when it is above [`Rules::slow_ms`]: an otherwise healthy
/// app is degraded, without a finding.
pub fn slow(latency_ms: Option<f64>, rules: &Rules) -> Option<f64> {
    latency_ms.filter(|ms| *ms > rules.slow_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::classify::fixtures::{healthy_app, probe};

    #[test]
    fn every_failed_direct_request_is_an_app_error() {
        let direct = [
            probe("10.7.0.2:3000", true, Some(200)),
            probe("10.7.0.2:3000", false, Some(500)),
            probe("10.7.0.3:3000", false, None),
        ];
        let said: Vec<String> = app_errors(&direct).into_iter().map(|p| p.summary).collect();
        assert_eq!(
            said,
            [
                "10.7.0.2:3000 answered 500",
                "10.7.0.3:3000 did not answer HTTP (connection refused)"
            ]
        );
    }

    #[test]
    fn a_gateway_error_is_the_proxys_only_when_nothing_of_the_app_explains_it() {
        let mut app = healthy_app();
        let route = app.route.clone().expect("routed");
        assert!(!proxy_failed(&app));
        assert_eq!(gateway_error(&app, &route, true, &[]), None);

        app.http_proxy = Some(probe("shop.localhost", false, Some(502)));
        assert!(proxy_failed(&app));
        let found = gateway_error(&app, &route, true, &[]).expect("a gateway error");
        assert_eq!(
            found.summary,
            "the proxy answers 502 for shop.localhost although the app answers directly"
        );
        assert_eq!(
            gateway_error(&app, &route, false, &[]),
            None,
            "nginx is down"
        );
        let restarts = Problem::new(Kind::CrashLoop, "restarts".into());
        assert!(gateway_error(&app, &route, true, &[restarts]).is_some());
        let refused = Problem::new(Kind::AppUnresponsive, "refused".into());
        assert_eq!(gateway_error(&app, &route, true, &[refused]), None);
    }

    #[test]
    fn a_name_that_does_not_resolve_is_a_problem_and_an_unchecked_one_is_not() {
        assert_eq!(
            dns_unresolvable(Some(false)).map(|p| p.kind),
            Some(Kind::DnsUnresolvable)
        );
        assert_eq!(dns_unresolvable(Some(true)), None);
        assert_eq!(dns_unresolvable(None), None);
    }

    #[test]
    fn slow_is_above_the_configured_latency() {
        let rules = Rules::default();
        assert_eq!(slow(Some(2_500.0), &rules), Some(2_500.0));
        assert_eq!(slow(Some(rules.slow_ms), &rules), None, "at the limit");
        assert_eq!(slow(None, &rules), None);
    }
}
