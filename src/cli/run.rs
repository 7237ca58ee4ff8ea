//! `butler worker NAME` (one unit's process) and `butler run` (every worker in one process).
//! Both load the config before anything else, so a bad file stops the worker before READY.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{load_config, runtime};
use crate::systemd::logging;
use crate::systemd::notify::Notifier;
use crate::systemd::units::Worker;
use crate::workers::{self, WorkerContext};

/// How long workers get to finish after SIGTERM before the process exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

pub fn one(worker: Worker, config_path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    logging::init(worker.name());
    let notifier = Arc::new(Notifier::from_env());
    let config = match load_config(config_path) {
        Ok(config) => Arc::new(config),
        Err(error) => {
            // Logged, not returned: under systemd stderr is the journal too, and one line is enough.
            tracing::error!("{error}; fix the file, then `butler services start {worker}`");
            notifier.stopping(&format!("failed: {error}"));
            return Ok(super::exit_code(&error.into()));
        }
    };
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let ctx = WorkerContext {
            config,
            notifier: notifier.clone(),
            shutdown: shutdown.clone(),
        };
        let span = tracing::info_span!("worker", worker = worker.name());
        let mut work = std::pin::pin!(workers::run(worker, ctx).instrument(span));
        tokio::select! {
            result = &mut work => return finish(worker, result),
            signal = stop_signal() => {
                tracing::info!("received {}, stopping", signal?);
                notifier.stopping("stopping");
                shutdown.cancel();
            }
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, work).await {
            Ok(result) => finish(worker, result),
            Err(_) => {
                tracing::error!("did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

fn finish(worker: Worker, result: anyhow::Result<()>) -> anyhow::Result<ExitCode> {
    match result {
        Ok(()) => {
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            tracing::error!("{worker} failed: {error:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs every worker, or only those in `only`, in this process.
pub fn all(config_path: Option<PathBuf>, only: Vec<Worker>) -> anyhow::Result<ExitCode> {
    logging::init("run");
    let config = Arc::new(load_config(config_path)?);
    let workers: Vec<Worker> = Worker::ALL
        .into_iter()
        .filter(|w| only.is_empty() || only.contains(w))
        .collect();
    runtime()?.block_on(async move {
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for worker in workers {
            let ctx = WorkerContext {
                config: config.clone(),
                notifier: Arc::new(Notifier::disabled()),
                shutdown: shutdown.clone(),
            };
            let span = tracing::info_span!("worker", worker = worker.name());
            tasks.spawn(async move { (worker, workers::run(worker, ctx).instrument(span).await) });
        }
        let mut failed = false;
        tokio::select! {
            // A worker that returns before shutdown failed (or could not start): stop the rest.
            Some(joined) = tasks.join_next() => {
                let (worker, result) = joined.context("worker task panicked")?;
                let error = result.err().unwrap_or_else(|| anyhow::anyhow!("stopped on its own"));
                tracing::error!("{worker} failed: {error:#}; stopping the other workers");
                failed = true;
            }
            signal = stop_signal() => tracing::info!("received {}, stopping", signal?),
        }
        shutdown.cancel();
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(joined) = tasks.join_next().await {
                if let Ok((worker, Err(error))) = joined {
                    tracing::error!("{worker} failed while stopping: {error:#}");
                    failed = true;
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::error!("workers did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
            failed = true;
        }
        Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// Waits for SIGTERM (systemd's stop) or SIGINT (Ctrl-C) and names it.
async fn stop_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
