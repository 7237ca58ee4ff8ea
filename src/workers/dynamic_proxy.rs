//! The dynamic-proxy worker: Docker events → routes → validated nginx config.

use super::WorkerContext;

pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    let period = ctx.config.health.interval.0;
    ctx.notifier.ready("watching for containers");
    tracing::info!("dynamic-proxy worker ready");
    let mut ticker = ctx.ticker(period);
    while ticker.next_round().await {
        ticker.done("watching for containers".to_owned());
    }
    Ok(())
}
