//! The health-monitor worker: every `health.interval`, and soon after an engine event about a
//! checked app, one round of checks of apps, network, proxy, host and the butler's own units
//! (`health::monitor`), recorded in the store. STATUS= names the units that are down and sums up
//! the apps.

use std::sync::Arc;

use super::WorkerContext;
use crate::docker::events::{self, Coalescer};
use crate::health::alerts::Alerter;
use crate::health::model::UnitObs;
use crate::health::monitor::Monitor;
use crate::health::observe::Observer;

pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    let docker = super::connect_docker(&ctx).await?;
    let store = super::open_store(&ctx)?;
    let period = ctx.config.health.interval.0;
    // Every part of a round is bounded (every probe by `timeout`, the apps together by their
    // budget); this is the backstop for a stuck one.
    let bound = crate::health::monitor::round_bound(&ctx.config);
    // Engine events about a checked app or the nginx container (it died, was removed, was
    // disconnected, restarted) bring the next round forward: a fault is found within a second or
    // so instead of up to a period later.
    let mut engine_events = Box::pin(events::watch(docker.clone()));
    let mut coalescer = Coalescer::default();
    let mut events_open = true;
    let observer = Arc::new(Observer::new(docker, ctx.config.clone(), store.clone()));
    let alerter = Alerter::new(ctx.config.alerts.rules.clone(), store, "health-monitor");
    let mut monitor = Monitor::new(observer, alerter);
    ctx.notifier.ready("starting checks");
    tracing::info!(period = %humantime::format_duration(period), "health-monitor worker ready");
    let mut ticker = ctx.ticker(period);
    let mut units_logged = Vec::new();
    loop {
        tokio::select! {
            more = ticker.next_round() => if !more {
                break;
            },
            batch = coalescer.next_batch(&mut engine_events), if events_open => {
                match batch {
                    Some(batch) => {
                        monitor.note_user_stops(&batch).await;
                        if monitor.concerns(&batch) {
                            ticker.hurry();
                        }
                    }
                    None => events_open = false,
                }
                continue;
            }
        }
        let status = match ticker.during(bound, monitor.round()).await {
            Some(Ok(summary)) => {
                if summary.exits_settling {
                    ticker.hurry();
                }
                let units = summary.units.as_deref();
                log_unit_changes(&mut units_logged, units);
                format!("{}; {}", summarize(units), summary.line())
            }
            Some(Err(error)) => {
                tracing::error!("health round failed: {error}");
                format!("health round failed: {error}")
            }
            None if ctx.shutdown.is_cancelled() => break,
            None => {
                tracing::warn!(bound = ?bound, "health round did not finish in time");
                format!(
                    "health round did not finish within {}",
                    humantime::format_duration(bound)
                )
            }
        };
        ticker.done_keeping_rate(status);
    }
    Ok(())
}

/// Logs each unit's change of state once.
fn log_unit_changes(last: &mut Vec<UnitObs>, units: Option<&[UnitObs]>) {
    let Some(units) = units else { return };
    for unit in units.iter().filter(|u| u.load_state != "not-found") {
        let before = last.iter().find(|u| u.unit == unit.unit);
        if before
            .is_some_and(|b| b.active_state == unit.active_state && b.restarts == unit.restarts)
        {
            continue;
        }
        let restarts = unit.restarts.unwrap_or(0);
        if unit.active_state == "active" || unit.unit.ends_with(".target") {
            tracing::info!(unit = %unit.unit, active_state = %unit.active_state, sub_state = %unit.sub_state, restarts, "butler unit state");
        } else {
            tracing::warn!(unit = %unit.unit, active_state = %unit.active_state, sub_state = %unit.sub_state, restarts, result = unit.result.as_deref().unwrap_or(""), "butler unit not active");
        }
    }
    *last = units.to_vec();
}

/// "butler units: 4/4 active", or which ones are not; what it is without systemd.
fn summarize(units: Option<&[UnitObs]>) -> String {
    let Some(units) = units else {
        return "butler units: systemd not reachable".to_owned();
    };
    let workers: Vec<&UnitObs> = units
        .iter()
        .filter(|u| u.unit.ends_with(".service") && u.load_state != "not-found")
        .collect();
    let active = workers
        .iter()
        .filter(|u| u.active_state == "active")
        .count();
    let down: Vec<String> = workers
        .iter()
        .filter(|u| u.active_state != "active")
        .map(|u| {
            let short = u
                .unit
                .trim_start_matches("butler-")
                .trim_end_matches(".service");
            format!("{short} {}", u.active_state)
        })
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

    fn unit(name: &str, active: &str) -> UnitObs {
        UnitObs {
            unit: format!("butler-{name}.service"),
            load_state: "loaded".into(),
            active_state: active.into(),
            sub_state: String::new(),
            result: None,
            restarts: None,
        }
    }

    #[test]
    fn summary_names_units_that_are_down() {
        let all = [unit("dynamic-proxy", "active"), unit("recovery", "active")];
        assert_eq!(summarize(Some(&all)), "butler units: 2/2 active");
        let one_down = [unit("dynamic-proxy", "active"), unit("recovery", "failed")];
        assert_eq!(
            summarize(Some(&one_down)),
            "butler units: 1/2 active; recovery failed"
        );
        assert_eq!(summarize(None), "butler units: systemd not reachable");
    }
}
