//! `fix-502`: probe every route through the proxy, name the cause of each 502/503/504 (or of no
//! answer at all), carry out the repair each cause gets, re-probe, and report before and after.
//! A library function, so the CLI and the workers (the dashboard's action) share it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::repair::Repairer;
use super::strategy::{Action, strategy};
use crate::clock::now_rfc3339;
use crate::health::IncidentState;
use crate::health::classify;
use crate::health::model::ProbeResult;
use crate::health::{Kind, PROXY_COMPONENT, app_component, finding, probe};
use crate::store::{NewRecovery, RecoveryOutcome, RouteRow, StoreError};

/// Causes in the order one is named when an app has several (the first explains the rest).
const CAUSE_ORDER: [Kind; 10] = [
    Kind::ProxyDown,
    Kind::NotOnNetwork,
    Kind::PortMismatch,
    Kind::RouteStale,
    Kind::RouteMissing,
    Kind::ContainerDown,
    Kind::CrashLoop,
    Kind::AppUnresponsive,
    Kind::AppError,
    Kind::GatewayError,
];

#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub kind: Kind,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteFix {
    pub app: String,
    pub host: String,
    pub before: ProbeResult,
    pub cause: Option<Cause>,
    /// The repair, as `Action::describe` says it.
    pub action: Option<String>,
    /// What the repair did (or, in a dry run, would do).
    pub result: Option<String>,
    pub after: Option<ProbeResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Fix502Report {
    pub dry_run: bool,
    pub routes: Vec<RouteFix>,
    pub failing_before: usize,
    /// `None` in a dry run.
    pub failing_after: Option<usize>,
}

impl Fix502Report {
    /// Every route answers well, now (or already before, in a dry run).
    pub fn all_ok(&self) -> bool {
        self.failing_after.unwrap_or(self.failing_before) == 0
    }
}

async fn probe_route(addr: SocketAddr, host: &str, timeout: Duration) -> ProbeResult {
    probe::through_proxy(addr, host, "/", timeout).await
}

pub async fn fix_502(repairer: &Repairer, dry_run: bool) -> Result<Fix502Report, StoreError> {
    let observer = repairer.observer();
    let store = observer.store();
    let timeout = observer.config().health.timeout.0;
    let routes: Vec<RouteRow> = store.routes().await?;
    let addr = observer.nginx_addr().await;
    let probes = futures_util::future::join_all(routes.iter().map(|r| {
        let host = r.hosts.first().cloned().unwrap_or_default();
        async move { probe_route(addr, &host, timeout).await }
    }))
    .await;
    let mut fixes: Vec<RouteFix> = routes
        .iter()
        .zip(probes)
        .map(|(route, before)| RouteFix {
            app: route.app.clone(),
            host: route.hosts.first().cloned().unwrap_or_default(),
            before,
            cause: None,
            action: None,
            result: None,
            after: None,
        })
        .collect();
    let failing_before = fixes.iter().filter(|f| !f.before.ok).count();
    if failing_before == 0 {
        return Ok(Fix502Report {
            dry_run,
            routes: fixes,
            failing_before,
            failing_after: (!dry_run).then_some(0),
        });
    }

    // Diagnose: the proxy first (when it is down, that is every route's cause), then each app.
    let proxy = observer.observe_proxy().await;
    let proxy_findings = classify::classify_proxy(&proxy);
    let proxy_down = proxy_findings
        .iter()
        .find(|f| f.kind == Kind::ProxyDown.as_str());
    let config_problem = proxy_findings
        .iter()
        .find(|f| f.kind == Kind::ConfigDrift.as_str() || f.kind == Kind::ConfigInvalid.as_str());
    let failing: BTreeSet<String> = fixes
        .iter()
        .filter(|f| !f.before.ok)
        .map(|f| f.app.clone())
        .collect();
    let mut app_findings: BTreeMap<String, Vec<crate::health::Finding>> = BTreeMap::new();
    if proxy_down.is_none() {
        let rules = crate::health::monitor::rules_from(observer.config());
        for obs in observer
            .observe_apps(&failing, Some(&failing), proxy.serving())
            .await
            .unwrap_or_default()
        {
            let (_, findings) = classify::classify_app(&obs, proxy.serving(), &rules);
            app_findings.insert(obs.app.clone(), findings);
        }
    }
    for fix in fixes.iter_mut().filter(|f| !f.before.ok) {
        let cause = if let Some(down) = proxy_down {
            Cause {
                kind: Kind::ProxyDown,
                summary: down.summary.clone(),
            }
        } else {
            let found = app_findings.get(&fix.app).cloned().unwrap_or_default();
            let primary = CAUSE_ORDER.iter().find_map(|kind| {
                found
                    .iter()
                    .find(|f| f.kind == kind.as_str())
                    .map(|f| (*kind, f))
            });
            match (primary, config_problem) {
                (Some((Kind::GatewayError, _)) | None, Some(config)) => Cause {
                    kind: config.kind.parse().unwrap_or(Kind::ConfigDrift),
                    summary: config.summary.clone(),
                },
                (Some((kind, f)), _) => Cause {
                    kind,
                    summary: f.summary.clone(),
                },
                (None, None) => Cause {
                    kind: Kind::GatewayError,
                    summary: format!(
                        "the proxy answers {} for {} although every check of the app passes",
                        fix.before.short(),
                        fix.host
                    ),
                },
            }
        };
        fix.cause = Some(cause);
    }

    // One repair per distinct action and scope, proxy-wide ones first.
    let mut planned: Vec<(String, Action, Kind, String)> = Vec::new(); // (key, action, kind, component)
    let mut keys: Vec<Option<String>> = vec![None; fixes.len()];
    for (index, fix) in fixes.iter_mut().enumerate() {
        let Some(cause) = &fix.cause else { continue };
        let component = component_of(cause.kind, &fix.app);
        let action = strategy(cause.kind, &repairer.facts(cause.kind, &component).await);
        fix.action = Some(action.describe());
        let key = match &action {
            Action::Reconnect | Action::RestartApp => format!("{action:?} {component}"),
            other => format!("{other:?}"),
        };
        if !planned.iter().any(|(k, ..)| *k == key) {
            planned.push((key.clone(), action, cause.kind, component));
        }
        keys[index] = Some(key);
    }
    let rank = |a: &Action| match a {
        Action::RecreateProxy => 0,
        Action::ReapplyLastGood => 1,
        Action::Reconnect | Action::RestartApp => 2,
        _ => 3,
    };
    planned.sort_by_key(|(_, action, ..)| rank(action));
    // A reconnect, restart or proxy recreation already re-renders: one more reconcile is needless.
    if planned.iter().any(|(_, a, ..)| {
        matches!(
            a,
            Action::RecreateProxy | Action::Reconnect | Action::RestartApp
        )
    }) {
        planned.retain(|(_, a, ..)| *a != Action::Reconcile);
    }
    let mut results: BTreeMap<String, String> = BTreeMap::new();
    for (key, action, kind, component) in &planned {
        let text = if dry_run {
            match action {
                Action::None { why } => format!("nothing the butler may do: {why}"),
                other => format!("would {}", other.describe()),
            }
        } else if let Action::None { why } = action {
            format!("not fixed: {why}")
        } else {
            let cause = format!("butler fix-502: {kind} on {component}");
            match tokio::time::timeout(
                super::ACTION_TIMEOUT,
                repairer.run(action, component, &cause),
            )
            .await
            {
                Ok(Ok(done)) => done,
                Ok(Err(error)) => format!("failed: {error}"),
                Err(_) => format!("failed: did not finish within {:?}", super::ACTION_TIMEOUT),
            }
        };
        results.insert(key.clone(), text);
    }
    for (fix, key) in fixes.iter_mut().zip(&keys) {
        let Some(key) = key else { continue };
        fix.result = Some(results.get(key).cloned().unwrap_or_else(|| {
            if dry_run {
                "would be covered by the re-render of another repair".to_owned()
            } else {
                "covered by the re-render of another repair".to_owned()
            }
        }));
    }
    if dry_run {
        return Ok(Fix502Report {
            dry_run,
            routes: fixes,
            failing_before,
            failing_after: None,
        });
    }

    // Re-probe (a restarted nginx or app may need a moment), then record what happened.
    let addr = observer.nginx_addr().await;
    let deadline = tokio::time::Instant::now() + super::SETTLE;
    for fix in fixes.iter_mut().filter(|f| !f.before.ok) {
        let after = loop {
            let now = probe_route(addr, &fix.host, timeout).await;
            if now.ok || tokio::time::Instant::now() >= deadline {
                break now;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        fix.after = Some(after);
    }
    for fix in fixes.iter().filter(|f| f.cause.is_some()) {
        let cause = fix.cause.as_ref().expect("filtered");
        let component = component_of(cause.kind, &fix.app);
        let severity = classify::severity(cause.kind, &classify::Facts::default());
        let (incident, _) = store
            .observe_incident(finding(
                cause.kind,
                severity,
                &component,
                cause.summary.clone(),
            ))
            .await?;
        let fixed = fix.after.as_ref().is_some_and(|a| a.ok);
        let skipped = fix
            .action
            .as_deref()
            .is_some_and(|a| a.starts_with("no automatic repair"));
        store
            .record_recovery(NewRecovery {
                incident_id: incident.id,
                kind: cause.kind.as_str().to_owned(),
                action: format!("fix-502: {}", fix.action.clone().unwrap_or_default()),
                started_at: now_rfc3339(),
                outcome: if skipped {
                    RecoveryOutcome::Skipped
                } else if fixed {
                    RecoveryOutcome::Success
                } else {
                    RecoveryOutcome::Failed
                },
                detail: format!(
                    "{}: {} before, {} after; {}",
                    fix.host,
                    fix.before.short(),
                    fix.after.as_ref().map_or("?".into(), ProbeResult::short),
                    fix.result.clone().unwrap_or_default()
                ),
            })
            .await?;
        if fixed && repairer.verify(cause.kind, &component).await.is_ok() {
            store
                .transition_incident(
                    incident.id,
                    IncidentState::UNRESOLVED.to_vec(),
                    IncidentState::Resolved,
                )
                .await?;
        }
    }
    let failing_after = fixes
        .iter()
        .filter(|f| !f.after.as_ref().map_or(f.before.ok, |a| a.ok))
        .count();
    Ok(Fix502Report {
        dry_run,
        routes: fixes,
        failing_before,
        failing_after: Some(failing_after),
    })
}

/// Proxy-wide causes belong to the proxy; the rest to the app.
fn component_of(kind: Kind, app: &str) -> String {
    if matches!(
        kind,
        Kind::ProxyDown | Kind::ConfigDrift | Kind::ConfigInvalid | Kind::ProxyOutdated
    ) {
        PROXY_COMPONENT.to_owned()
    } else {
        app_component(app)
    }
}
