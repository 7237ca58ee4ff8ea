//! The recovery worker: classifies incidents and applies repair strategies. Until incidents are
//! recorded it keeps its loop, heartbeat and shutdown, and reports that it is idle.

use super::WorkerContext;

pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    let period = ctx.config.health.interval.0;
    ctx.notifier.ready("idle: no open incidents");
    tracing::info!(period = %humantime::format_duration(period), "recovery worker ready");
    let mut ticker = ctx.ticker(period);
    while ticker.next_round().await {
        ticker.done("idle: no open incidents".to_owned());
    }
    Ok(())
}
