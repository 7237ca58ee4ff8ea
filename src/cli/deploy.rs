//! `butler deploy`, `butler deployments` and `butler rollback`: a thin front over `deploy::Deployer`.
//! Exit codes are for CI (the README's table): 0 deployed, 1 failed (the previous revision keeps
//! serving) or a check that is not the user's input failed, 2 bad usage (nothing was changed).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::output::{self, OutputFormat};
use super::{Exit, load_config, open_store, runtime};
use crate::config::Config;
use crate::deploy::{DeployError, DeployReport, DeployRequest, Deployer, ReportOutcome};
use crate::store::Deployment;

const DEFAULT_TIMEOUT: &str = "60s";
const MAX_REPLICAS: u32 = 100;

#[derive(Debug, Clone, clap::Args)]
pub struct DeployArgs {
    /// An image reference, a directory with a Dockerfile, or a git repository (path or URL).
    pub source: String,
    /// Git sources: the branch, tag or commit to deploy [default: the repository's HEAD].
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: Option<String>,
    /// The app name [default: from the source: OWNER-REPO of a git remote, the image's name, the
    /// directory's name]. Also replaces an app of another source that has this name.
    #[arg(long)]
    pub name: Option<String>,
    /// How many instances to run behind the app's upstream.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_REPLICAS as i64))]
    pub replicas: u32,
    /// The port the app listens on in its container [default: the image's only exposed port].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// A path that answers 2xx or 3xx once the app is ready [default: a TCP connect, or the
    /// image's HEALTHCHECK].
    #[arg(long, value_name = "PATH", value_parser = parse_health_path)]
    pub health_path: Option<String>,
    /// An environment variable for the app, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A label for the app's containers, KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    /// How long the new instances may take to become healthy (and old requests to finish).
    #[arg(long, default_value = DEFAULT_TIMEOUT, value_parser = parse_timeout)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeploymentsArgs {
    /// Only this app's deployments.
    pub app: Option<String>,
    /// How many to show, newest first.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The app to roll back.
    pub app: String,
    /// The revision to restore (as `butler deployments` shows it; a prefix of 4 characters or
    /// more) [default: the newest deployed revision before the serving one].
    #[arg(long, value_name = "REVISION")]
    pub to: Option<String>,
}

fn parse_pair(raw: &str, what: &str) -> Result<(String, String), String> {
    let (key, value) = raw
        .split_once('=')
        .ok_or_else(|| format!("{what} needs KEY=VALUE, got {raw:?}"))?;
    if key.is_empty() {
        return Err(format!("{what} needs a KEY before '=', got {raw:?}"));
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) || value.contains('\0') {
        return Err(format!(
            "{what} KEY may not contain spaces or control characters, got {raw:?}"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn parse_env(raw: &str) -> Result<(String, String), String> {
    let (key, value) = parse_pair(raw, "--env")?;
    let valid = key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "--env {key:?} is not a variable name (letters, digits and '_', not starting with a digit)"
        ));
    }
    Ok((key, value))
}

fn parse_label(raw: &str) -> Result<(String, String), String> {
    parse_pair(raw, "--label")
}

fn parse_health_path(raw: &str) -> Result<String, String> {
    if !raw.starts_with('/') || raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{raw:?} is not a URL path: start it with '/' and leave out spaces (e.g. /healthz)"
        ));
    }
    Ok(raw.to_owned())
}

fn parse_timeout(raw: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration ({e}); write e.g. 30s, 2m"))?;
    if duration < Duration::from_secs(1) || duration > Duration::from_secs(3600) {
        return Err(format!("{raw:?} is out of range: between 1s and 1h"));
    }
    Ok(duration)
}

async fn deployer(config: Config) -> anyhow::Result<Deployer> {
    let docker = crate::docker::client::connect(config.docker.host.as_deref()).await?;
    let store = open_store(&config)?;
    let progress = Arc::new(|line: &str| eprintln!("deploy: {line}"));
    Ok(Deployer::new(docker, Arc::new(config), store, progress))
}

pub fn deploy(
    args: DeployArgs,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    let request = DeployRequest {
        source: args.source,
        git_ref: args.git_ref,
        name: args.name,
        replicas: args.replicas,
        port: args.port,
        health_path: args.health_path,
        env: args.env,
        labels: args.labels,
        timeout: args.timeout,
    };
    runtime()?.block_on(async move {
        let outcome = match deployer(config).await {
            Ok(mut deployer) => deployer.deploy(request).await,
            Err(error) => return refused_engine(error, format),
        };
        finish(outcome, format, "deploy")
    })
}

pub fn rollback(
    args: RollbackArgs,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let outcome = match deployer(config).await {
            Ok(mut deployer) => deployer.rollback(&args.app, args.to.as_deref()).await,
            Err(error) => return refused_engine(error, format),
        };
        finish(outcome, format, "rollback")
    })
}

/// A refusal (or an error) in the machine-readable form CI reads.
#[derive(Serialize)]
struct Refusal {
    /// `refused`: a check said no and nothing changed; `error`: an engine or store call failed.
    outcome: &'static str,
    error: String,
    usage: bool,
}

fn refused_engine(error: anyhow::Error, format: OutputFormat) -> anyhow::Result<ExitCode> {
    if format == OutputFormat::Json {
        output::print_json(&Refusal {
            outcome: "refused",
            error: format!("{error:#}"),
            usage: Exit::of(&error) == Exit::Usage,
        })?;
    }
    Err(error)
}

fn finish(
    outcome: Result<DeployReport, DeployError>,
    format: OutputFormat,
    verb: &str,
) -> anyhow::Result<ExitCode> {
    let report = match outcome {
        Ok(report) => report,
        Err(error) => {
            let exit = Exit::of_cause(&error);
            let usage = exit == Exit::Usage;
            let refused = error.is_refusal();
            if format == OutputFormat::Json {
                output::print_json(&Refusal {
                    outcome: if refused { "refused" } else { "error" },
                    error: error.to_string(),
                    usage,
                })?;
            }
            if refused {
                eprintln!("butler: {verb} refused, nothing was changed: {error}");
            } else {
                eprintln!(
                    "butler: {verb} failed: {error}; see `butler deployments` and `butler proxy routes` for where it stopped"
                );
            }
            return Ok(exit.into());
        }
    };
    match format {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Text => print_report(&report, verb),
    }
    Ok(match report.outcome {
        ReportOutcome::Deployed => ExitCode::SUCCESS,
        ReportOutcome::Failed | ReportOutcome::RolledBack => ExitCode::FAILURE,
    })
}

fn print_report(report: &DeployReport, verb: &str) {
    let secs = report.duration_ms as f64 / 1000.0;
    for warning in &report.warnings {
        eprintln!("butler: warning: {warning}");
    }
    match report.outcome {
        ReportOutcome::Deployed => {
            println!(
                "deployed {} revision {} (deployment {}) in {secs:.1} s: {}",
                report.app, report.revision, report.deployment, report.url
            );
            println!("  instances: {}", report.containers.join(", "));
            if !report.replaced.is_empty() {
                println!(
                    "  replaced:  {} (revision {})",
                    report.replaced.join(", "),
                    report.previous_revision.as_deref().unwrap_or("?")
                );
            }
        }
        ReportOutcome::Failed | ReportOutcome::RolledBack => {
            eprintln!(
                "butler: {verb} of {} revision {} (deployment {}) failed after {secs:.1} s: {}",
                report.app,
                report.revision,
                report.deployment,
                report.error.as_deref().unwrap_or("unknown error")
            );
            if let Some(logs) = &report.logs {
                eprintln!("last log lines of the failing instance:");
                for line in logs.lines() {
                    eprintln!("  {line}");
                }
            }
        }
    }
}

pub fn deployments(
    args: DeploymentsArgs,
    config_path: Option<PathBuf>,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let config = load_config(config_path)?;
    runtime()?.block_on(async move {
        let store = open_store(&config)?;
        let list = store.deployments(args.app.clone(), args.limit).await?;
        match format {
            OutputFormat::Json => output::print_json(&serde_json::json!({ "deployments": list }))?,
            OutputFormat::Text if list.is_empty() => match &args.app {
                Some(app) => println!("no deployments of app {app}"),
                None => println!("no deployments yet"),
            },
            OutputFormat::Text => println!("{}", deployments_table(&list)),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn deployments_table(list: &[Deployment]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|d| {
            let serving = match d.gate {
                Some(crate::store::Gate::Serving) => "serving",
                Some(crate::store::Gate::Pending) => "starting",
                Some(crate::store::Gate::Retired) => "leaving",
                None => "",
            };
            vec![
                d.id.to_string(),
                d.app.clone(),
                d.revision.clone(),
                d.outcome.to_string(),
                serving.to_owned(),
                d.started_at.clone(),
                d.duration_ms
                    .map(|ms| format!("{:.1} s", ms as f64 / 1000.0))
                    .unwrap_or_default(),
                d.source.clone(),
                d.detail.lines().next().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    output::table(
        &[
            "ID", "APP", "REVISION", "OUTCOME", "NOW", "STARTED", "TOOK", "SOURCE", "DETAIL",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_durations_and_paths_are_checked() {
        assert_eq!(
            parse_env("A_1=x=y").unwrap(),
            ("A_1".to_owned(), "x=y".to_owned())
        );
        assert_eq!(parse_env("EMPTY=").unwrap().1, "");
        for bad in ["NOEQUALS", "=v", "1A=v", "A-B=v", "A B=v"] {
            assert!(parse_env(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_label("team=web").unwrap().0, "team");
        assert!(parse_label("team").is_err());
        assert_eq!(parse_timeout("90s").unwrap(), Duration::from_secs(90));
        for bad in ["0s", "soon", "2h", "100ms"] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
        assert!(parse_health_path("/healthz").is_ok());
        for bad in ["healthz", "/a b", ""] {
            assert!(parse_health_path(bad).is_err(), "{bad:?}");
        }
    }
}
