//! `butler services list|start|stop|restart|status|logs`: a thin front over the supervisor.

use std::process::ExitCode;

use serde::Serialize;

use super::output::{self, OutputFormat};
use super::{ServicesCommand, runtime};
use crate::systemd::journal;
use crate::systemd::supervisor::{
    Bus, JOB_TIMEOUT, JobKind, JobOutcome, Supervisor, SupervisorError, UnitStatus, format_memory,
    format_uptime,
};
use crate::systemd::units::ButlerUnit;

/// Journal lines printed under a failed job, enough to see why without a second command.
const FAILURE_JOURNAL_LINES: usize = 15;

pub fn dispatch(
    command: ServicesCommand,
    user: bool,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let bus = if user { Bus::User } else { Bus::System };
    if let ServicesCommand::Logs {
        name,
        follow,
        lines,
    } = command
    {
        // No D-Bus needed: hand the terminal to journalctl.
        return Err(journal::show(&name.unit_name(), bus, lines, follow).into());
    }
    runtime()?.block_on(async move {
        let supervisor = Supervisor::connect(bus).await?;
        match command {
            ServicesCommand::List => list(&supervisor, format).await,
            ServicesCommand::Start { name } => job(&supervisor, JobKind::Start, name, format).await,
            ServicesCommand::Stop { name } => job(&supervisor, JobKind::Stop, name, format).await,
            ServicesCommand::Restart { name } => {
                job(&supervisor, JobKind::Restart, name, format).await
            }
            ServicesCommand::Status { name, lines } => {
                status(&supervisor, name, lines, format).await
            }
            ServicesCommand::Logs { .. } => unreachable!("handled above"),
        }
    })
}

async fn list(supervisor: &Supervisor, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let units = supervisor.list().await?;
    match format {
        OutputFormat::Json => output::print_json(&units)?,
        OutputFormat::Text => println!("{}", units_table(&units)),
    }
    Ok(ExitCode::SUCCESS)
}

fn units_table(units: &[UnitStatus]) -> String {
    let dash = || "-".to_owned();
    let rows: Vec<Vec<String>> = units
        .iter()
        .map(|unit| {
            vec![
                unit.unit.clone(),
                unit.load_state.clone(),
                unit.active_state.clone(),
                unit.sub_state.clone(),
                unit.main_pid.map_or_else(dash, |pid| pid.to_string()),
                unit.uptime_secs.map_or_else(dash, format_uptime),
                unit.restarts.map_or_else(dash, |n| n.to_string()),
                unit.memory_bytes.map_or_else(dash, format_memory),
                watchdog_cell(unit),
            ]
        })
        .collect();
    output::table(
        &[
            "UNIT", "LOAD", "ACTIVE", "SUB", "PID", "UPTIME", "RESTARTS", "MEMORY", "WATCHDOG",
        ],
        &rows,
    )
}

fn watchdog_cell(unit: &UnitStatus) -> String {
    match (unit.watchdog_secs, unit.watchdog_last_ping_secs) {
        (Some(timeout), Some(ago)) => format!("{timeout:.0}s (ping {ago:.1}s ago)"),
        (Some(timeout), None) => format!("{timeout:.0}s"),
        (None, _) => "-".to_owned(),
    }
}

#[derive(Serialize)]
struct JobReport {
    #[serde(flatten)]
    outcome: JobOutcome,
    succeeded: bool,
    status: UnitStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    journal: Vec<String>,
}

async fn job(
    supervisor: &Supervisor,
    action: JobKind,
    unit: ButlerUnit,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let outcome = match tokio::time::timeout(JOB_TIMEOUT, supervisor.run_job(action, unit)).await {
        Ok(outcome) => outcome.map_err(with_install_hint)?,
        Err(_) => anyhow::bail!(
            "systemd did not finish the {action} job for {} within {JOB_TIMEOUT:?}; see `butler services status {}`",
            unit.unit_name(),
            unit.short_name()
        ),
    };
    let status = supervisor.status(unit).await?;
    let succeeded = outcome.succeeded();
    let journal = if succeeded {
        Vec::new()
    } else {
        journal::recent(&outcome.unit, supervisor.bus(), FAILURE_JOURNAL_LINES)
            .unwrap_or_else(|error| vec![error.to_string()])
    };
    let report = JobReport {
        outcome,
        succeeded,
        status,
        journal,
    };
    match format {
        OutputFormat::Json => output::print_json(&report)?,
        OutputFormat::Text if succeeded => println!(
            "{}: {} {} ({}/{}{})",
            report.outcome.unit,
            action,
            report.outcome.result,
            report.status.active_state,
            report.status.sub_state,
            report
                .status
                .main_pid
                .map(|pid| format!(", PID {pid}"))
                .unwrap_or_default()
        ),
        OutputFormat::Text => eprintln!("{}", failure_text(&report)),
    }
    Ok(if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn failure_text(report: &JobReport) -> String {
    let status = &report.status;
    let mut text = format!(
        "butler: {} of {} failed: job result '{}'",
        report.outcome.action, report.outcome.unit, report.outcome.result
    );
    if let Some(result) = &status.result {
        text.push_str(&format!(", unit result '{result}'"));
    }
    if let Some(code) = status.exit_status.filter(|&code| code != 0) {
        text.push_str(&format!(" (exit status {code})"));
    }
    text.push_str(&format!(
        "; now {}/{}",
        status.active_state, status.sub_state
    ));
    // systemd 252 keeps the previous Result ("exit-code") when the limit stops a start; its journal
    // line is the one sure sign on every version.
    let start_limit = status.result.as_deref() == Some("start-limit-hit")
        || report
            .journal
            .iter()
            .any(|line| line.contains("Start request repeated too quickly"));
    if start_limit {
        text.push_str(
            "\nsystemd stopped restarting it after too many failed starts; fix the cause, then \
             `systemctl reset-failed` the unit and start it again",
        );
    }
    text.push_str("\nlast journal lines:");
    for line in &report.journal {
        text.push_str("\n  ");
        text.push_str(line);
    }
    text
}

async fn status(
    supervisor: &Supervisor,
    unit: ButlerUnit,
    lines: usize,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let status = supervisor.status(unit).await?;
    let journal = journal::recent(&status.unit, supervisor.bus(), lines)
        .unwrap_or_else(|error| vec![error.to_string()]);
    match format {
        OutputFormat::Json => {
            #[derive(Serialize)]
            struct StatusReport<'a> {
                #[serde(flatten)]
                status: &'a UnitStatus,
                journal: &'a [String],
            }
            output::print_json(&StatusReport {
                status: &status,
                journal: &journal,
            })?
        }
        OutputFormat::Text => {
            println!("{}", status_text(&status));
            println!("\nJournal:");
            for line in &journal {
                println!("  {line}");
            }
        }
    }
    Ok(if status.load_state == "not-found" {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn status_text(status: &UnitStatus) -> String {
    let dash = || "-".to_owned();
    let rows = [
        ("Unit", format!("{} ({})", status.unit, status.description)),
        ("Loaded", status.load_state.clone()),
        (
            "Active",
            format!("{} ({})", status.active_state, status.sub_state),
        ),
        ("Result", status.result.clone().unwrap_or_else(dash)),
        (
            "Main PID",
            status.main_pid.map_or_else(dash, |pid| pid.to_string()),
        ),
        (
            "Uptime",
            status.uptime_secs.map_or_else(dash, format_uptime),
        ),
        (
            "Restarts",
            status.restarts.map_or_else(dash, |n| n.to_string()),
        ),
        (
            "Memory",
            status.memory_bytes.map_or_else(dash, format_memory),
        ),
        ("Watchdog", watchdog_cell(status)),
    ];
    rows.iter()
        .map(|(key, value)| format!("{key:>9}: {value}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn with_install_hint(error: SupervisorError) -> anyhow::Error {
    let hint =
        matches!(&error, SupervisorError::Refused { reason, .. } if reason.contains("not found"));
    let error = anyhow::Error::new(error);
    if hint {
        error.context(
            "the butler's units are not installed: install the devops-butler package, or copy \
             systemd/*.service and butler.target to /etc/systemd/system and run `systemctl daemon-reload`",
        )
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(active: &str) -> UnitStatus {
        UnitStatus {
            name: "recovery".into(),
            unit: "butler-recovery.service".into(),
            description: "Butler recovery".into(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: "running".into(),
            result: Some("start-limit-hit".into()),
            main_pid: Some(77),
            uptime_secs: Some(61),
            restarts: Some(2),
            memory_bytes: Some(5 * 1024 * 1024),
            watchdog_secs: Some(10.0),
            watchdog_last_ping_secs: Some(1.25),
            exit_status: Some(2),
        }
    }

    #[test]
    fn list_table_shows_every_column() {
        let text = units_table(&[sample("active")]);
        let row = text.lines().nth(1).unwrap();
        for cell in [
            "butler-recovery.service",
            "loaded",
            "active",
            "running",
            "77",
            "1m01s",
            "2",
            "5.0M",
            "10s (ping 1.2s ago)",
        ] {
            assert!(row.contains(cell), "{row} lacks {cell}");
        }
    }

    #[test]
    fn failure_text_names_result_exit_status_and_journal() {
        let report = JobReport {
            outcome: JobOutcome {
                unit: "butler-recovery.service".into(),
                action: JobKind::Start,
                result: "failed".into(),
            },
            succeeded: false,
            status: sample("failed"),
            journal: vec!["config /etc/butler/butler.toml: `proxy.http_port` must be".into()],
        };
        let text = failure_text(&report);
        assert!(
            text.starts_with(
                "butler: start of butler-recovery.service failed: job result 'failed'"
            ),
            "{text}"
        );
        assert!(
            text.contains("unit result 'start-limit-hit'") && text.contains("exit status 2"),
            "{text}"
        );
        assert!(
            text.contains("reset-failed") && text.contains("proxy.http_port"),
            "{text}"
        );
    }
}
