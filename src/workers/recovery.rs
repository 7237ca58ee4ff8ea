//! The recovery worker: every half second it looks for open incidents and repairs the ones that
//! are due (`recovery::Recoverer`), so a fault is repaired within a check interval of happening.

use std::sync::Arc;
use std::time::Duration;

use super::WorkerContext;
use crate::health::alerts::Alerter;
use crate::health::observe::Observer;
use crate::recovery::{ACTION_TIMEOUT, Recoverer, Repairer, SETTLE};

/// How often the store is asked for open incidents.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    let docker = super::connect_docker(&ctx).await?;
    let store = super::open_store(&ctx)?;
    let observer = Arc::new(Observer::new(docker, ctx.config.clone(), store.clone()));
    let repairer = Arc::new(Repairer::new(observer));
    let alerter = Alerter::new(ctx.config.alerts.rules.clone(), store, "recovery");
    let mut recoverer = Recoverer::new(repairer, alerter);
    ctx.notifier.ready("idle: no open incidents");
    tracing::info!(poll = ?POLL, "recovery worker ready");
    // One step may repair several incidents, each bounded by its action and its check.
    let bound = (ACTION_TIMEOUT + SETTLE) * 3;
    let mut ticker = ctx.ticker(POLL);
    while ticker.next_round().await {
        let status = match ticker.during(bound, recoverer.step()).await {
            Some(Ok(summary)) => summary.line(),
            Some(Err(error)) => {
                tracing::error!("recovery step failed: {error}");
                format!("recovery step failed: {error}")
            }
            None if ctx.shutdown.is_cancelled() => break,
            None => format!(
                "recovery step did not finish within {}",
                humantime::format_duration(bound)
            ),
        };
        ticker.done(status);
    }
    Ok(())
}
