//! `butler proxy-update`, `proxy-monitor`, `proxy routes|history|rollback`: the proxy path run by
//! hand, through the same reconciler the dynamic-proxy worker uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use serde::Serialize;

use super::output::{self, OutputFormat};
use super::{ProxyCommand, load_config, open_store, runtime};
use crate::config::Config;
use crate::docker::events::{self, Coalescer};
use crate::labels::DeployLabels;
use crate::nginx::{Nginx, NginxSpec};
use crate::proxy::apply::{Applier, ApplyStatus};
use crate::proxy::reconcile::{ReconcileReport, Reconciler};
use crate::proxy::{Plan, Problem};
use crate::store::NewVersion;

/// `butler proxy rollback` was asked for a version it cannot restore: one that does not exist, or
/// (without VERSION) no earlier one. A usage error (exit 2): nothing is broken, the request is what
/// cannot be met, and `butler proxy history` lists what can.
#[derive(Debug, thiserror::Error)]
pub enum UnknownVersion {
    #[error("config version {0} does not exist; `butler proxy history` lists the versions")]
    Missing(i64),
    #[error(
        "no earlier applied config version to roll back to; `butler proxy history` lists the versions"
    )]
    NoneEarlier,
}

async fn reconciler(config: Config) -> anyhow::Result<Reconciler> {
    let docker = crate::docker::client::connect(config.docker.host.as_deref()).await?;
    let store = open_store(&config)?;
    Ok(Reconciler::new(docker, Arc::new(config), store))
}

/// `butler proxy-update`: one reconcile now. Also lifts a pin left by `proxy rollback`.
pub fn update(config_path: Option<PathBuf>, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let mut reconciler = reconciler(config).await?;
        if let Some(pinned) = reconciler.store().pinned_version().await? {
            reconciler.store().pin_version(None).await?;
            eprintln!("unpinned config version {pinned}");
        }
        let report = reconciler.reconcile("butler proxy-update").await?;
        match format {
            OutputFormat::Json => output::print_json(&report)?,
            OutputFormat::Text => print_report(&report),
        }
        Ok(if report.succeeded() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn print_report(report: &ReconcileReport) {
    if report.changes.is_empty() {
        println!("no route changes");
    }
    for change in &report.changes {
        println!("{}", change.line());
    }
    for id in &report.connected {
        println!("connected {} to the proxy network", short(id));
    }
    if let Some(was) = &report.nginx_recreated {
        println!("recreated the nginx container (was {was})");
    }
    print_problems(&report.plan.problems);
    if let Some(outcome) = &report.apply {
        match &outcome.status {
            ApplyStatus::Invalid { error } => println!("new config refused by nginx -t: {error}"),
            ApplyStatus::RolledBack { reason, .. } => println!("new config rolled back: {reason}"),
            ApplyStatus::Failed { error } => println!("apply failed: {error}"),
            ApplyStatus::Applied | ApplyStatus::Unchanged => {}
        }
    }
    println!("{}", report.summary());
}

fn print_problems(problems: &[Problem]) {
    for problem in problems {
        println!(
            "! {} ({}): {}",
            problem.container_name,
            serde_json::to_value(problem.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            problem.reason
        );
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[derive(Serialize)]
struct RouteLine {
    app: String,
    /// `up`, or `down` / `stopped` when every container of the app has exited.
    state: &'static str,
    hosts: Vec<String>,
    servers: Vec<ServerLine>,
    /// How the app's last container ended, while it is down or stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    down: Option<crate::proxy::Down>,
}

#[derive(Serialize)]
struct ServerLine {
    container: String,
    address: String,
    port: u16,
    port_reason: String,
    /// App, revision, owner, repo and source of a container `butler deploy` started.
    #[serde(skip_serializing_if = "Option::is_none")]
    deployment: Option<DeployLabels>,
}

fn route_lines(plan: &Plan) -> Vec<RouteLine> {
    plan.routes
        .iter()
        .map(|route| RouteLine {
            app: route.app.clone(),
            state: route.down.as_ref().map_or("up", |d| d.state()),
            down: route.down.clone(),
            hosts: route.hosts.clone(),
            servers: route
                .servers
                .iter()
                .map(|s| ServerLine {
                    container: s.container_name.clone(),
                    address: std::net::SocketAddr::new(s.ip, s.port).to_string(),
                    port: s.port,
                    port_reason: s.port_reason.text(),
                    deployment: s.deployment.clone(),
                })
                .collect(),
        })
        .collect()
}

pub fn dispatch(
    command: ProxyCommand,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    match command {
        ProxyCommand::Routes => runtime()?.block_on(async move {
            let reconciler = reconciler(config).await?;
            let plan = reconciler.plan_now().await?;
            let routes = route_lines(&plan);
            match format {
                OutputFormat::Json => output::print_json(
                    &serde_json::json!({"routes": routes, "problems": plan.problems}),
                )?,
                OutputFormat::Text => {
                    let rows: Vec<Vec<String>> = routes
                        .iter()
                        .flat_map(|route| {
                            let down = route.down.as_ref().map(|d| {
                                vec![
                                    route.app.clone(),
                                    route.hosts.join(","),
                                    d.container_name.clone(),
                                    d.state().to_uppercase(),
                                    d.describe(),
                                    "-".to_owned(),
                                ]
                            });
                            down.into_iter().chain(route.servers.iter().map(move |s| {
                                vec![
                                    route.app.clone(),
                                    route.hosts.join(","),
                                    s.container.clone(),
                                    s.address.clone(),
                                    s.port_reason.clone(),
                                    s.deployment.as_ref().map_or_else(
                                        || "-".to_owned(),
                                        |d| format!("{} from {}", d.revision, d.source),
                                    ),
                                ]
                            }))
                        })
                        .collect();
                    println!(
                        "{}",
                        output::table(
                            &[
                                "APP",
                                "HOSTS",
                                "CONTAINER",
                                "UPSTREAM",
                                "PORT CHOSEN BECAUSE",
                                "DEPLOYED REVISION"
                            ],
                            &rows
                        )
                    );
                    print_problems(&plan.problems);
                }
            }
            Ok(ExitCode::SUCCESS)
        }),
        ProxyCommand::History { limit } => runtime()?.block_on(async move {
            let store = open_store(&config)?;
            let versions = store.list_versions(limit).await?;
            let pinned = store.pinned_version().await?;
            match format {
                OutputFormat::Json => output::print_json(
                    &serde_json::json!({"versions": versions, "pinned": pinned}),
                )?,
                OutputFormat::Text => {
                    let rows: Vec<Vec<String>> = versions
                        .iter()
                        .map(|v| {
                            let state = match (&v.error, v.applied, Some(v.id) == pinned) {
                                (_, true, true) => "applied, pinned".to_owned(),
                                (_, true, false) => "applied".to_owned(),
                                (Some(error), false, _) => format!("not applied: {error}"),
                                (None, false, _) => "not applied".to_owned(),
                            };
                            vec![
                                v.id.to_string(),
                                v.created_at.clone(),
                                v.hash[..12.min(v.hash.len())].to_owned(),
                                v.cause.clone(),
                                v.summary.clone(),
                                state,
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        output::table(
                            &["VERSION", "TIME", "HASH", "CAUSE", "CHANGES", "STATE"],
                            &rows
                        )
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }),
        ProxyCommand::Rollback { version } => {
            runtime()?.block_on(rollback(config, version, format))
        }
    }
}

/// Re-applies an earlier version through the same validate-swap-reload path, then pins it so the
/// worker does not render it away on its next round.
async fn rollback(
    config: Config,
    version: Option<i64>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let store = open_store(&config)?;
    // Until the pin is set: the worker must not apply its own render in between.
    let _apply_lock = store.lock_apply().await?;
    let applied: Vec<_> = store
        .list_versions(1000)
        .await?
        .into_iter()
        .filter(|v| v.applied)
        .collect();
    let target = match version {
        Some(id) => id,
        // The one before the newest applied version.
        None => applied
            .get(1)
            .map(|v| v.id)
            .ok_or(UnknownVersion::NoneEarlier)?,
    };
    let chosen = store
        .get_version(target)
        .await?
        .ok_or(UnknownVersion::Missing(target))?;
    let docker = crate::docker::client::connect(config.docker.host.as_deref()).await?;
    let nginx = Nginx::new(docker, NginxSpec::from_config(&config.proxy));
    let outcome = Applier::new(nginx)
        .apply(&chosen.files, &chosen.info.hash, &[])
        .await;
    let ok = matches!(
        outcome.status,
        ApplyStatus::Applied | ApplyStatus::Unchanged
    );
    let error = match &outcome.status {
        ApplyStatus::Invalid { error } | ApplyStatus::Failed { error } => Some(error.clone()),
        ApplyStatus::RolledBack { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    let id = store
        .record_version(NewVersion {
            hash: chosen.info.hash.clone(),
            cause: format!("butler proxy rollback {target}"),
            summary: format!("rollback to version {target}"),
            files: chosen.files.clone(),
            applied: ok,
            error: error.clone(),
            timings: outcome.timings.for_version(None),
        })
        .await?;
    if ok {
        store.pin_version(Some(id)).await?;
    }
    let result = BTreeMap::from([
        ("rolled_back_to", serde_json::json!(target)),
        ("version", serde_json::json!(id)),
        ("applied", serde_json::json!(ok)),
        ("error", serde_json::json!(error)),
    ]);
    match format {
        OutputFormat::Json => output::print_json(&result)?,
        OutputFormat::Text if ok => println!(
            "rolled back to version {target} (recorded as version {id}); pinned until `butler proxy-update`"
        ),
        OutputFormat::Text => eprintln!(
            "butler: rollback to version {target} failed: {}; the config that was live keeps serving",
            error.unwrap_or_default()
        ),
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `butler proxy-monitor`: watches the engine and prints a line whenever the routes it would
/// serve change. Read-only: the worker (or `proxy-update`) applies.
pub fn monitor(config_path: Option<PathBuf>, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let reconciler = reconciler(config).await?;
        let mut engine_events = Box::pin(events::watch(reconciler.engine().clone()));
        let mut coalescer = Coalescer::default();
        let mut last: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        let mut first = true;
        loop {
            let plan = reconciler.plan_now().await?;
            let now: BTreeMap<String, (Vec<String>, Vec<String>)> = route_lines(&plan)
                .into_iter()
                .map(|r| {
                    (
                        r.app,
                        (r.hosts, r.servers.into_iter().map(|s| s.address).collect()),
                    )
                })
                .collect();
            for (app, (hosts, servers)) in &now {
                let verb = match last.get(app) {
                    None => "+",
                    Some(before) if before != &(hosts.clone(), servers.clone()) => "~",
                    Some(_) => continue,
                };
                emit(format, verb, app, hosts, servers)?;
            }
            for app in last.keys().filter(|app| !now.contains_key(*app)) {
                emit(format, "-", app, &[], &[])?;
            }
            if first {
                print_problems(&plan.problems);
                first = false;
            }
            last = now;
            tokio::select! {
                batch = coalescer.next_batch(&mut engine_events) => if batch.is_none() { break },
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn emit(
    format: OutputFormat,
    verb: &str,
    app: &str,
    hosts: &[String],
    servers: &[String],
) -> anyhow::Result<()> {
    let time = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({"time": time.to_string(), "change": verb, "app": app, "hosts": hosts, "servers": servers})
        ),
        OutputFormat::Text => println!(
            "{time} {verb} {app} {} {}",
            hosts.join(","),
            servers.join(",")
        ),
    }
    Ok(())
}
