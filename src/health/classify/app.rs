//! An app's findings and status, composed from the decisions about its containers
//! (`containers`), its way in (`routing`) and its answers (`answers`), in the order in which each
//! can settle the status.

use super::{Problem, Rules, answers, containers, routing};
use crate::health::model::{AppObs, ContainerObs, ProbeResult};
use crate::health::{AppStatus, Finding, Kind, app_component};
use crate::store::AppHealth;

/// An app's findings and status. `proxy_serving` is false while nginx itself is down: then every
/// app is unreachable, which the proxy's own finding explains.
pub fn classify_app(app: &AppObs, proxy_serving: bool, rules: &Rules) -> (AppHealth, Vec<Finding>) {
    let component = app_component(&app.app);
    let conclude = |status, reason, latency_ms, problems: Vec<Problem>| {
        let findings = problems.into_iter().map(|p| p.at(&component)).collect();
        (health(app, status, reason, latency_ms), findings)
    };
    if let Some(why) = &app.incomplete {
        let why = format!("unknown: {why}");
        return conclude(AppStatus::Degraded, why, None, Vec::new());
    }
    let mut problems = containers::crash_loops(&app.containers);
    problems.extend(containers::crashes(&app.containers));
    let running: Vec<&ContainerObs> = app.containers.iter().filter(|c| c.running()).collect();
    if running.is_empty() {
        let (status, why) = containers::none_running(&app.containers, &problems);
        return conclude(status, why, None, problems);
    }
    problems.extend(routing::off_network(&running));
    let on_network = routing::on_network(&running);
    let Some(route) = &app.route else {
        if routing::awaiting_route(&on_network) {
            let why = "just started: the proxy has not routed it yet".to_owned();
            return conclude(AppStatus::Degraded, why, None, problems);
        }
        problems.extend(routing::route_missing(&on_network));
        let why = problems
            .iter()
            .find(|p| p.beyond_restarts())
            .map_or_else(|| "the app has no route".to_owned(), |p| p.summary.clone());
        return conclude(AppStatus::Down, why, None, problems);
    };
    problems.extend(routing::refused_servers(route, &app.tcp, &on_network));
    problems.extend(answers::app_errors(&app.http_direct));
    problems.extend(answers::gateway_error(app, route, proxy_serving, &problems));
    problems.extend(answers::dns_unresolvable(app.dns));
    let (status, reason) = routed_status(app, proxy_serving, &problems, rules);
    let reason = reason.unwrap_or_else(|| reason_from(&problems, app.http_proxy.as_ref()));
    let latency = app.http_proxy.as_ref().and_then(|p| p.latency_ms);
    conclude(status, reason, latency, problems)
}

/// The status of an app that runs and is routed, with its reason when that is not the one
/// [`reason_from`] gives. Down when nginx is down, no server accepts connections or the request
/// through the proxy fails; degraded for any problem, a slow answer or a restart; else healthy.
fn routed_status(
    app: &AppObs,
    proxy_serving: bool,
    problems: &[Problem],
    rules: &Rules,
) -> (AppStatus, Option<String>) {
    if !proxy_serving {
        let why = "the proxy is down, so the app is unreachable".to_owned();
        return (AppStatus::Down, Some(why));
    }
    if !app.tcp.iter().any(|t| t.ok) || answers::proxy_failed(app) {
        return (AppStatus::Down, None);
    }
    if !problems.is_empty() {
        return (AppStatus::Degraded, None);
    }
    let latency = app.http_proxy.as_ref().and_then(|p| p.latency_ms);
    if let Some(ms) = answers::slow(latency, rules) {
        let why = format!("answers slowly through the proxy ({ms:.0} ms)");
        return (AppStatus::Degraded, Some(why));
    }
    if let Some(c) = containers::restarted(&app.containers) {
        let why = format!("container {} restarted since the last check", c.name);
        return (AppStatus::Degraded, Some(why));
    }
    (AppStatus::Healthy, None)
}

/// Why a routed app has its status: its first problem (a name that does not resolve only when
/// there is nothing else), else what it answers through the proxy.
fn reason_from(problems: &[Problem], through_proxy: Option<&ProbeResult>) -> String {
    let first = problems
        .iter()
        .find(|p| p.kind != Kind::DnsUnresolvable)
        .or(problems.first());
    match (first, through_proxy) {
        (Some(p), _) => p.summary.clone(),
        (None, Some(p)) => format!(
            "answers {} through the proxy{}",
            p.short(),
            p.latency_ms
                .map(|ms| format!(" in {ms:.0} ms"))
                .unwrap_or_default()
        ),
        (None, None) => "answers directly".to_owned(),
    }
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

#[cfg(test)]
mod tests {
    //! Which findings (kind, severity, component) and which status each app observation leads
    //! to. A finding is what becomes an incident (one per kind and component), so this table is
    //! the app's incident rules.

    use std::net::SocketAddr;

    use super::*;
    use crate::health::Severity;
    use crate::health::classify::fixtures::{
        Expected, IP, OLD_IP, expected, healthy_app, kinds, probe, refusing, route, stopped,
        with_second_instance,
    };
    use crate::health::classify::{CRASH_LOOP_RESTARTS, ROUTE_GRACE_SECS};

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
    fn a_routed_app_is_down_degraded_or_healthy_in_this_order() {
        use AppStatus::{Degraded, Down, Healthy};
        let rules = Rules::default();
        let problem = || vec![Problem::new(Kind::AppError, "answered 500".into())];
        let slow = |mut a: AppObs| {
            if let Some(p) = &mut a.http_proxy {
                p.latency_ms = Some(rules.slow_ms + 1.0);
            }
            a
        };
        let restarted = |mut a: AppObs| {
            a.containers[0].new_restarts = 1;
            a
        };
        let refused = |mut a: AppObs| {
            a.tcp[0].ok = false;
            a
        };
        let failing = |mut a: AppObs| {
            a.http_proxy = Some(probe("shop.localhost", false, Some(502)));
            a
        };
        type Want = (AppStatus, Option<&'static str>);
        let none = Vec::new();
        let check = |what: &str, app: AppObs, serving, problems: &[Problem], want: Want| {
            let (status, reason) = want;
            let got = routed_status(&app, serving, problems, &rules);
            assert_eq!(got, (status, reason.map(str::to_owned)), "{what}");
        };
        check("healthy", healthy_app(), true, &none, (Healthy, None));
        check(
            "nginx is down, whatever else",
            slow(healthy_app()),
            false,
            &problem(),
            (Down, Some("the proxy is down, so the app is unreachable")),
        );
        let down = (Down, None);
        check(
            "no server accepts",
            refused(healthy_app()),
            true,
            &none,
            down,
        );
        check(
            "fails through the proxy",
            failing(healthy_app()),
            true,
            &none,
            down,
        );
        let degraded = (Degraded, None);
        check(
            "a problem, and slow",
            slow(healthy_app()),
            true,
            &problem(),
            degraded,
        );
        check(
            "slow, and restarted",
            slow(restarted(healthy_app())),
            true,
            &none,
            (Degraded, Some("answers slowly through the proxy (2001 ms)")),
        );
        check(
            "restarted once",
            restarted(healthy_app()),
            true,
            &none,
            (
                Degraded,
                Some("container shop restarted since the last check"),
            ),
        );
    }

    #[test]
    fn the_reason_is_the_first_problem_else_the_answer() {
        let dns = Problem::new(Kind::DnsUnresolvable, "does not resolve".into());
        let error = Problem::new(Kind::AppError, "answered 500".into());
        let answer = probe("shop.localhost", true, Some(200));
        assert_eq!(
            reason_from(&[dns.clone(), error], Some(&answer)),
            "answered 500"
        );
        assert_eq!(reason_from(&[dns], Some(&answer)), "does not resolve");
        assert_eq!(
            reason_from(&[], Some(&answer)),
            "answers 200 through the proxy in 3 ms"
        );
        let unmeasured = ProbeResult {
            latency_ms: None,
            ..answer
        };
        assert_eq!(
            reason_from(&[], Some(&unmeasured)),
            "answers 200 through the proxy"
        );
        assert_eq!(reason_from(&[], None), "answers directly");
    }
}
