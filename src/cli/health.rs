//! `butler health`, `butler status`, `butler incidents` and `butler fix-502`: thin fronts over the
//! health and recovery library, for people (tables) and scripts (`--output json`).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::output::{self, OutputFormat};
use super::{Exit, load_config, open_store, runtime};
use crate::config::Config;
use crate::health::classify::{self, Assessment};
use crate::health::model::Observations;
use crate::health::monitor::{layer_status, rules_from};
use crate::health::observe::Observer;
use crate::health::{AppStatus, Finding, IncidentState, Severity};
use crate::health::{Kind, Layer, component_app};
use crate::recovery::{Action, Fix502Report, Repairer, fix_502, strategy};
use crate::store::{AppHealth, Incident, IncidentFilter, Recovery, SuccessRate};

/// Filters of `butler incidents`.
#[derive(Debug, Clone, clap::Args)]
pub struct IncidentsArgs {
    /// Only these states (repeat, or separate with commas): open, recovering, resolved, escalated.
    #[arg(long, value_delimiter = ',', value_name = "STATE")]
    pub state: Vec<IncidentState>,
    /// Only this kind, e.g. port_mismatch, proxy_down, container_down.
    #[arg(long)]
    pub kind: Option<Kind>,
    /// Only incidents of this app.
    #[arg(long, value_parser = parse_app, conflicts_with = "component")]
    pub app: Option<String>,
    /// Only this component: app:NAME, proxy, host or unit:UNIT.
    #[arg(long, value_parser = parse_component)]
    pub component: Option<String>,
    /// Only this severity and worse: low, medium, high, critical.
    #[arg(long, value_name = "SEVERITY")]
    pub min_severity: Option<Severity>,
    /// How many to list, newest first.
    #[arg(short = 'n', long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub limit: u32,
    /// Show one incident with its recovery attempts.
    #[arg(
        long,
        value_parser = parse_id,
        allow_negative_numbers = true,
        conflicts_with_all = ["state", "kind", "app", "component", "min_severity"]
    )]
    pub id: Option<i64>,
}

/// `butler incidents --id N` named an incident the store does not have: a usage error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("incident {0} does not exist; `butler incidents` lists them with their ids")]
pub struct UnknownIncident(pub i64);

fn parse_id(text: &str) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(id) if id >= 1 => Ok(id),
        _ => Err(format!(
            "{text:?} is not an incident id: ids are whole numbers from 1 up, as `butler incidents` lists them"
        )),
    }
}

fn parse_app(text: &str) -> Result<String, String> {
    if crate::proxy::sanitize::is_app_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not an app name (lowercase letters, digits and '-', as `butler health` lists them)"
        ))
    }
}

fn parse_component(text: &str) -> Result<String, String> {
    let ok = matches!(text, "proxy" | "host")
        || text
            .strip_prefix("app:")
            .is_some_and(|a| parse_app(a).is_ok())
        || text
            .strip_prefix("unit:")
            .is_some_and(|u| u.starts_with("butler") && !u.contains(char::is_whitespace));
    if ok {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "{text:?} is not a component: use app:NAME, proxy, host or unit:UNIT (e.g. unit:butler-recovery.service)"
        ))
    }
}

async fn observer(config: Config) -> anyhow::Result<Arc<Observer>> {
    let docker = crate::docker::client::connect(config.docker.host.as_deref()).await?;
    let store = open_store(&config)?;
    Ok(Arc::new(Observer::new(docker, Arc::new(config), store)))
}

#[derive(Serialize)]
struct FindingLine {
    kind: String,
    severity: Severity,
    component: String,
    summary: String,
}

impl From<&Finding> for FindingLine {
    fn from(f: &Finding) -> Self {
        Self {
            kind: f.kind.clone(),
            severity: f.severity,
            component: f.component.clone(),
            summary: f.summary.clone(),
        }
    }
}

#[derive(Serialize)]
struct LayerLine {
    layer: &'static str,
    status: AppStatus,
    problems: usize,
}

#[derive(Serialize)]
struct HealthReport<'a> {
    /// healthy, degraded or critical; the exit code is 0 only for healthy (1 otherwise).
    status: &'static str,
    apps: &'a [AppHealth],
    layers: Vec<LayerLine>,
    problems: Vec<FindingLine>,
    observations: &'a Observations,
}

/// Overall verdict: critical when an app is down or a finding is high or worse, degraded when
/// anything at all is wrong. Both exit 1: the contract's 2 means "fix what you typed", and a
/// script that checks `butler health` must not mistake a critical host for a typo.
fn verdict(assessment: &Assessment) -> (&'static str, Exit) {
    let down = assessment.apps.iter().any(|a| a.status == AppStatus::Down);
    let degraded = assessment
        .apps
        .iter()
        .any(|a| a.status == AppStatus::Degraded);
    match assessment.worst() {
        Some(s) if s >= Severity::High => ("critical", Exit::Failed),
        _ if down => ("critical", Exit::Failed),
        Some(_) => ("degraded", Exit::Failed),
        None if degraded => ("degraded", Exit::Failed),
        None => ("healthy", Exit::Ok),
    }
}

/// `butler health`: a fresh round of every check, printed, recorded nowhere.
pub fn health(config_path: Option<PathBuf>, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let rules = rules_from(&config);
        let observer = observer(config).await?;
        let known: BTreeSet<String> = observer
            .store()
            .app_health()
            .await?
            .into_iter()
            .map(|a| a.app)
            .collect();
        let obs = observer.observe(&known).await;
        let assessment = classify::classify(&obs, &rules);
        let (status, code) = verdict(&assessment);
        let layers: Vec<LayerLine> = Layer::ALL
            .iter()
            .map(|layer| LayerLine {
                layer: layer.as_str(),
                status: layer_status(&assessment, *layer),
                problems: assessment
                    .findings
                    .iter()
                    .filter(|f| f.kind.parse::<Kind>().is_ok_and(|k| k.layer() == *layer))
                    .count(),
            })
            .collect();
        match format {
            OutputFormat::Json => output::print_json(&HealthReport {
                status,
                apps: &assessment.apps,
                layers,
                problems: assessment.findings.iter().map(FindingLine::from).collect(),
                observations: &obs,
            })?,
            OutputFormat::Text => {
                let rows: Vec<Vec<String>> = assessment
                    .apps
                    .iter()
                    .map(|a| {
                        vec![
                            a.app.clone(),
                            a.status.to_string(),
                            a.latency_ms.map_or("-".into(), |ms| format!("{ms:.0} ms")),
                            a.reason.clone(),
                        ]
                    })
                    .collect();
                if rows.is_empty() {
                    println!("no apps");
                } else {
                    println!(
                        "{}",
                        output::table(&["APP", "STATUS", "LATENCY", "REASON"], &rows)
                    );
                }
                println!();
                let rows: Vec<Vec<String>> = layers
                    .iter()
                    .map(|l| {
                        let note = match l.layer {
                            "units" if obs.units.is_none() => {
                                "not checked: systemd not reachable".into()
                            }
                            _ => format!("{} problems", l.problems),
                        };
                        vec![l.layer.to_owned(), l.status.to_string(), note]
                    })
                    .collect();
                println!("{}", output::table(&["LAYER", "STATUS", "PROBLEMS"], &rows));
                if !assessment.findings.is_empty() {
                    println!();
                    print_findings(&assessment.findings);
                }
                println!("\noverall: {status}");
            }
        }
        Ok(code.into())
    })
}

fn print_findings(findings: &[Finding]) {
    let rows: Vec<Vec<String>> = findings
        .iter()
        .map(|f| {
            vec![
                f.severity.to_string(),
                f.kind.clone(),
                f.component.clone(),
                f.summary.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(&["SEVERITY", "KIND", "COMPONENT", "PROBLEM"], &rows)
    );
}

#[derive(Serialize)]
struct ServiceLine {
    unit: String,
    state: String,
    restarts: Option<u32>,
}

#[derive(Serialize)]
struct ProxyLine {
    state: String,
    detail: String,
    live_version: Option<String>,
    routes: usize,
}

#[derive(Serialize)]
struct StatusReport {
    /// `None` when systemd is not reachable.
    services: Option<Vec<ServiceLine>>,
    proxy: ProxyLine,
    apps: Vec<AppHealth>,
    open_incidents: Vec<Incident>,
    recovery_success_rates: Vec<SuccessRate>,
    recommendations: Vec<String>,
}

/// What a person should do, in plain words, from what the store and systemd say.
fn recommendations(
    services: Option<&[ServiceLine]>,
    apps: &[AppHealth],
    incidents: &[Incident],
    config: &Config,
) -> Vec<String> {
    let mut out = Vec::new();
    for s in services.into_iter().flatten() {
        if s.state != "active" && s.unit.ends_with(".service") {
            let short = s
                .unit
                .trim_start_matches("butler-")
                .trim_end_matches(".service");
            out.push(format!(
                "{} is {}: start it with `butler services start {short}` (and see `butler services logs {short}`)",
                s.unit, s.state
            ));
        }
    }
    if apps.is_empty() && incidents.is_empty() {
        out.push(
            "no health round is recorded yet: is the health-monitor running? (`butler services start health-monitor`, or `butler run`)"
                .into(),
        );
    }
    for incident in incidents {
        let Ok(kind) = incident.kind.parse::<Kind>() else {
            continue;
        };
        let facts = crate::recovery::strategy::Facts {
            restart_apps: config.recovery.restart_apps,
            opted_in: false,
            systemd: services.is_some(),
        };
        let what = match incident.state {
            IncidentState::Escalated => match strategy(kind, &facts) {
                Action::None { why } => why,
                _ => format!(
                    "automatic repair gave up after {} attempts; `butler incidents --id {}` shows what was tried",
                    incident.attempts, incident.id
                ),
            },
            IncidentState::Open | IncidentState::Recovering => match strategy(kind, &facts) {
                Action::None { why } => why,
                action => format!(
                    "recovery will {} (attempt {} of {})",
                    action.describe(),
                    incident.attempts + 1,
                    config.recovery.max_attempts
                ),
            },
            IncidentState::Resolved => continue,
        };
        let subject = component_app(&incident.component)
            .map_or_else(|| incident.component.clone(), |app| format!("app {app}"));
        out.push(format!("{subject}: {} — {what}", incident.summary));
    }
    if out.is_empty() {
        out.push("nothing to do: every service runs and no problem is open".into());
    }
    out
}

/// `butler status`: services, proxy, apps, open incidents, success rates and what to do.
pub fn status(config_path: Option<PathBuf>, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let observer = observer(config.clone()).await?;
        let store = observer.store();
        let services = observer.observe_units().await.map(|units| {
            units
                .into_iter()
                .filter(|u| u.load_state != "not-found")
                .map(|u| ServiceLine {
                    unit: u.unit,
                    state: u.active_state,
                    restarts: u.restarts,
                })
                .collect::<Vec<_>>()
        });
        let nginx = observer.observe_proxy().await;
        let routes = store.routes().await?.len();
        let apps = store.app_health().await?;
        let open = store.incidents(IncidentFilter::unresolved()).await?;
        let rates = store.recovery_success_rates().await?;
        let report = StatusReport {
            recommendations: recommendations(services.as_deref(), &apps, &open, &config),
            services,
            proxy: ProxyLine {
                state: nginx.state.clone(),
                detail: nginx.detail.clone(),
                live_version: nginx.live_hash.clone(),
                routes,
            },
            apps,
            open_incidents: open,
            recovery_success_rates: rates,
        };
        match format {
            OutputFormat::Json => output::print_json(&report)?,
            OutputFormat::Text => print_status(&report),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn print_status(report: &StatusReport) {
    println!("SERVICES");
    match &report.services {
        Some(services) => {
            let rows: Vec<Vec<String>> = services
                .iter()
                .map(|s| {
                    vec![
                        s.unit.clone(),
                        s.state.clone(),
                        s.restarts.map_or("-".into(), |r| r.to_string()),
                    ]
                })
                .collect();
            println!("{}", output::table(&["UNIT", "STATE", "RESTARTS"], &rows));
        }
        None => println!("systemd not reachable (a host without it, or `butler run`)"),
    }
    println!("\nPROXY");
    println!(
        "{} ({}); config {}; {} routes",
        report.proxy.state,
        report.proxy.detail,
        report
            .proxy
            .live_version
            .as_deref()
            .map_or("unknown", |h| &h[..h.len().min(12)]),
        report.proxy.routes
    );
    println!("\nAPPS");
    if report.apps.is_empty() {
        println!("none recorded");
    } else {
        let rows: Vec<Vec<String>> = report
            .apps
            .iter()
            .map(|a| vec![a.app.clone(), a.status.to_string(), a.reason.clone()])
            .collect();
        println!("{}", output::table(&["APP", "STATUS", "REASON"], &rows));
    }
    println!("\nOPEN INCIDENTS");
    if report.open_incidents.is_empty() {
        println!("none");
    } else {
        print_incidents(&report.open_incidents);
    }
    println!("\nRECOVERY SUCCESS RATES");
    if report.recovery_success_rates.is_empty() {
        println!("no repairs yet");
    } else {
        let rows: Vec<Vec<String>> = report
            .recovery_success_rates
            .iter()
            .map(|r| {
                vec![
                    r.kind.clone(),
                    r.attempts.to_string(),
                    r.successes.to_string(),
                    format!("{:.0}%", r.rate * 100.0),
                ]
            })
            .collect();
        println!(
            "{}",
            output::table(&["KIND", "ATTEMPTS", "SUCCESSES", "RATE"], &rows)
        );
    }
    println!("\nRECOMMENDATIONS");
    for line in &report.recommendations {
        println!("- {line}");
    }
}

fn print_incidents(incidents: &[Incident]) {
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                i.state.to_string(),
                i.severity.to_string(),
                i.kind.clone(),
                i.component.clone(),
                i.count.to_string(),
                i.attempts.to_string(),
                i.last_seen.clone(),
                i.summary.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(
            &[
                "ID",
                "STATE",
                "SEVERITY",
                "KIND",
                "COMPONENT",
                "SEEN",
                "TRIES",
                "LAST SEEN",
                "SUMMARY"
            ],
            &rows
        )
    );
}

#[derive(Serialize)]
struct IncidentDetail {
    incident: Incident,
    recoveries: Vec<Recovery>,
}

/// `butler incidents`: the store's incidents, filtered; `--id` shows one with its repairs.
pub fn incidents(
    args: IncidentsArgs,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let store = open_store(&config)?;
        if let Some(id) = args.id {
            let incident = store.incident(id).await?.ok_or(UnknownIncident(id))?;
            let recoveries = store.recoveries(Some(id), 0).await?;
            match format {
                OutputFormat::Json => output::print_json(&IncidentDetail {
                    incident,
                    recoveries,
                })?,
                OutputFormat::Text => {
                    print_incidents(std::slice::from_ref(&incident));
                    println!(
                        "\nfirst seen {}, resolved {}",
                        incident.first_seen,
                        incident.resolved_at.as_deref().unwrap_or("-")
                    );
                    if recoveries.is_empty() {
                        println!("no recovery attempts");
                    } else {
                        let rows: Vec<Vec<String>> = recoveries
                            .iter()
                            .map(|r| {
                                vec![
                                    r.started_at.clone(),
                                    r.action.clone(),
                                    r.outcome.to_string(),
                                    r.detail.clone(),
                                ]
                            })
                            .collect();
                        println!(
                            "\n{}",
                            output::table(&["STARTED", "ACTION", "OUTCOME", "DETAIL"], &rows)
                        );
                    }
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        let filter = IncidentFilter {
            states: args.state,
            kind: args.kind.map(|k| k.as_str().to_owned()),
            component: args
                .app
                .map(|app| crate::health::app_component(&app))
                .or(args.component),
            min_severity: args.min_severity,
            limit: args.limit as usize,
        };
        let found = store.incidents(filter).await?;
        match format {
            OutputFormat::Json => output::print_json(&serde_json::json!({ "incidents": found }))?,
            OutputFormat::Text if found.is_empty() => println!("no incidents match"),
            OutputFormat::Text => print_incidents(&found),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `butler fix-502`: exit 0 when every route answers well afterwards (or, with `--dry-run`, already
/// does), 1 otherwise.
pub fn fix502(
    dry_run: bool,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let observer = observer(config).await?;
        let repairer = Repairer::new(observer);
        let report = fix_502(&repairer, dry_run).await?;
        match format {
            OutputFormat::Json => output::print_json(&report)?,
            OutputFormat::Text => print_fix(&report),
        }
        Ok(if report.all_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn print_fix(report: &Fix502Report) {
    if report.routes.is_empty() {
        println!("no routes: nothing to probe");
        return;
    }
    let rows: Vec<Vec<String>> = report
        .routes
        .iter()
        .map(|r| {
            vec![
                r.host.clone(),
                r.before.short(),
                r.cause.as_ref().map_or("-".into(), |c| c.kind.to_string()),
                r.after.as_ref().map_or("-".into(), |a| a.short()),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(&["ROUTE", "BEFORE", "CAUSE", "AFTER"], &rows)
    );
    for r in report.routes.iter().filter(|r| r.cause.is_some()) {
        let cause = r.cause.as_ref().expect("filtered");
        println!("\n{}: {}", r.host, cause.summary);
        if let Some(action) = &r.action {
            println!("  repair: {action}");
        }
        if let Some(result) = &r.result {
            println!("  result: {result}");
        }
    }
    let summary = match report.failing_after {
        None => format!(
            "dry run: {} of {} routes fail; nothing was changed",
            report.failing_before,
            report.routes.len()
        ),
        Some(after) => format!(
            "{} of {} routes failed before, {after} after",
            report.failing_before,
            report.routes.len()
        ),
    };
    println!("\n{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_exits_1_for_any_finding_and_0_only_when_healthy() {
        let finding = |severity| Finding {
            kind: "proxy_down".into(),
            severity,
            component: "proxy".into(),
            summary: "nginx container butler-nginx is exited".into(),
        };
        let cases = [
            (None, "healthy", Exit::Ok),
            (Some(Severity::Low), "degraded", Exit::Failed),
            (Some(Severity::Medium), "degraded", Exit::Failed),
            (Some(Severity::High), "critical", Exit::Failed),
            (Some(Severity::Critical), "critical", Exit::Failed),
        ];
        for (severity, status, exit) in cases {
            let assessment = Assessment {
                findings: severity.into_iter().map(finding).collect(),
                apps: Vec::new(),
            };
            assert_eq!(verdict(&assessment), (status, exit), "{severity:?}");
        }
        let app = |status| AppHealth {
            app: "shop".into(),
            status,
            reason: String::new(),
            latency_ms: None,
            started_at: None,
            checked_at: String::new(),
        };
        // A user's `docker stop` is no failure; an app down or degraded is, without any finding.
        for (status, verdict_is) in [
            (AppStatus::Healthy, ("healthy", Exit::Ok)),
            (AppStatus::Stopped, ("healthy", Exit::Ok)),
            (AppStatus::Degraded, ("degraded", Exit::Failed)),
            (AppStatus::Down, ("critical", Exit::Failed)),
        ] {
            let assessment = Assessment {
                findings: Vec::new(),
                apps: vec![app(status)],
            };
            assert_eq!(verdict(&assessment), verdict_is, "{status:?}");
        }
    }

    #[test]
    fn filters_refuse_what_is_not_an_app_or_component() {
        assert!(parse_app("shop").is_ok());
        assert!(
            parse_app("Shop Front")
                .unwrap_err()
                .contains("not an app name")
        );
        for ok in ["proxy", "host", "app:shop", "unit:butler-recovery.service"] {
            assert!(parse_component(ok).is_ok(), "{ok}");
        }
        assert_eq!(parse_id("12"), Ok(12));
        for bad in ["0", "-3", "abc", "1.5", ""] {
            assert!(
                parse_id(bad).unwrap_err().contains("not an incident id"),
                "{bad}"
            );
        }
        for bad in ["app:", "nginx", "unit:sshd.service", "app:a b"] {
            assert!(
                parse_component(bad).unwrap_err().contains("app:NAME"),
                "{bad}"
            );
        }
    }
}
