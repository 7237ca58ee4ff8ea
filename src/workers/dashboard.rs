//! The dashboard worker: HTTP on `dashboard.listen`, serving `crate::dashboard`. It opens the store
//! and binds before READY, so a port already in use fails the start instead of leaving a unit that
//! looks fine but serves nothing.

use std::sync::Arc;

use anyhow::Context as _;

use super::WorkerContext;
use crate::dashboard::{self, Dashboard};
use crate::store::Store;

pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    let listen = ctx.config.dashboard.listen;
    let store = Store::open(&ctx.config.state.dir).with_context(|| {
        format!(
            "cannot open the state store in {} (state.dir)",
            ctx.config.state.dir.display()
        )
    })?;
    let dashboard = Dashboard::new(&ctx.config, store).context("cannot set up the dashboard")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (dashboard.listen): is another process using it?")
        })?;
    let app = dashboard::router(Arc::new(dashboard));
    let shutdown = ctx.shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    ctx.notifier.ready(&format!("serving on http://{listen}"));
    tracing::info!(%listen, "dashboard worker ready");
    let status = format!("serving on http://{listen}");
    let period = ctx.config.health.interval.0;
    // A server that dies on its own ends the worker with an error, so systemd restarts it rather
    // than the watchdog being fed by a loop that no longer serves anything.
    let mut server = server;
    tokio::select! {
        () = async {
            let mut ticker = ctx.ticker(period);
            while ticker.next_round().await {
                ticker.done(status.clone());
            }
        } => {}
        ended = &mut server => {
            return match ended {
                // The graceful shutdown finished before the loop noticed the same signal.
                Ok(Ok(())) if ctx.shutdown.is_cancelled() => Ok(()),
                Ok(Ok(())) => Err(anyhow::anyhow!("dashboard HTTP server stopped unexpectedly")),
                Ok(Err(error)) => Err(anyhow::Error::new(error).context("dashboard HTTP server failed")),
                Err(join) => Err(anyhow::anyhow!("dashboard HTTP server panicked: {join}")),
            };
        }
    }
    match server.await {
        Ok(result) => result.context("dashboard HTTP server failed"),
        Err(join) => Err(anyhow::anyhow!("dashboard HTTP server panicked: {join}")),
    }
}
