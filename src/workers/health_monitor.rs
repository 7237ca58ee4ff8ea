//! The health-monitor worker: periodic checks of apps, proxy, host and the butler's own units. The
//! unit check goes through the supervisor; other layers join it as their checks land.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::WorkerContext;
use crate::systemd::supervisor::{Bus, Supervisor, UnitStatus};

pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    let period = ctx.config.health.interval.0;
    let timeout = ctx.config.health.timeout.0;
    let mut units = UnitWatch::default();
    ctx.notifier.ready("starting checks");
    tracing::info!(period = %humantime::format_duration(period), "health-monitor worker ready");
    let mut ticker = ctx.ticker(period);
    while ticker.next_round().await {
        let summary = match tokio::time::timeout(timeout, units.check()).await {
            Ok(summary) => summary,
            Err(_) => {
                units.supervisor = None;
                format!(
                    "unit check timed out after {}",
                    humantime::format_duration(timeout)
                )
            }
        };
        ticker.done(summary);
    }
    Ok(())
}

/// Watches the butler's units through systemd, logging each change of state once.
#[derive(Default)]
struct UnitWatch {
    supervisor: Option<Supervisor>,
    last: BTreeMap<String, (String, Option<u32>)>,
    unreachable_logged: bool,
}

impl UnitWatch {
    async fn check(&mut self) -> String {
        if !sd_notify::booted().unwrap_or(false) {
            // `butler run` on a host without systemd: there are no units to watch.
            if !self.unreachable_logged {
                tracing::info!("host not booted with systemd; butler units are not checked");
                self.unreachable_logged = true;
            }
            return "butler units: host not running systemd".to_owned();
        }
        match self.list().await {
            Ok(units) => {
                self.unreachable_logged = false;
                self.log_changes(&units);
                summarize(&units)
            }
            Err(error) => {
                self.supervisor = None;
                if !self.unreachable_logged {
                    tracing::warn!("cannot read butler unit states: {error:#}");
                    self.unreachable_logged = true;
                }
                "butler units: systemd not reachable".to_owned()
            }
        }
    }

    async fn list(&mut self) -> anyhow::Result<Vec<UnitStatus>> {
        if self.supervisor.is_none() {
            self.supervisor = Some(Supervisor::connect(Bus::System).await?);
        }
        let supervisor = self.supervisor.as_ref().context("supervisor")?;
        Ok(supervisor.list().await?)
    }

    fn log_changes(&mut self, units: &[UnitStatus]) {
        for unit in units.iter().filter(|u| u.load_state != "not-found") {
            let now = (unit.active_state.clone(), unit.restarts);
            if self.last.get(&unit.unit) == Some(&now) {
                continue;
            }
            let restarts = unit.restarts.unwrap_or(0);
            if unit.is_active() || unit.unit.ends_with(".target") {
                tracing::info!(unit = %unit.unit, active_state = %unit.active_state, sub_state = %unit.sub_state, restarts, "butler unit state");
            } else {
                tracing::warn!(unit = %unit.unit, active_state = %unit.active_state, sub_state = %unit.sub_state, restarts, result = unit.result.as_deref().unwrap_or(""), "butler unit not active");
            }
            self.last.insert(unit.unit.clone(), now);
        }
    }
}

/// One line for systemd's STATUS=: "butler units: 4/4 active" or which ones are not.
fn summarize(units: &[UnitStatus]) -> String {
    let workers: Vec<&UnitStatus> = units
        .iter()
        .filter(|u| u.unit.ends_with(".service") && u.load_state != "not-found")
        .collect();
    let active = workers.iter().filter(|u| u.is_active()).count();
    let down: Vec<String> = workers
        .iter()
        .filter(|u| !u.is_active())
        .map(|u| format!("{} {}", u.name, u.active_state))
        .collect();
    if down.is_empty() {
        format!("butler units: {active}/{} active", workers.len())
    } else {
        format!(
            "butler units: {active}/{} active; {}",
            workers.len(),
            down.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str, active: &str) -> UnitStatus {
        UnitStatus {
            name: name.into(),
            unit: format!("butler-{name}.service"),
            description: String::new(),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: String::new(),
            result: None,
            main_pid: None,
            uptime_secs: None,
            restarts: None,
            memory_bytes: None,
            watchdog_secs: None,
            watchdog_last_ping_secs: None,
            exit_status: None,
        }
    }

    #[test]
    fn summary_names_units_that_are_down() {
        let all = [unit("dynamic-proxy", "active"), unit("recovery", "active")];
        assert_eq!(summarize(&all), "butler units: 2/2 active");
        let one_down = [unit("dynamic-proxy", "active"), unit("recovery", "failed")];
        assert_eq!(
            summarize(&one_down),
            "butler units: 1/2 active; recovery failed"
        );
    }
}
