//! The long-running workers, one per systemd unit, and the loop they share: initialise, report
//! READY, then work and ping the watchdog from the same loop until asked to stop.

pub mod dashboard;
pub mod dynamic_proxy;
pub mod health_monitor;
pub mod recovery;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::systemd::notify::Notifier;
use crate::systemd::units::Worker;

/// What every worker gets: the validated config, its line to systemd, and the shutdown signal.
#[derive(Clone)]
pub struct WorkerContext {
    pub config: Arc<Config>,
    pub notifier: Arc<Notifier>,
    pub shutdown: CancellationToken,
}

/// Runs one worker to completion: `Err` before READY means it could not initialise.
pub async fn run(worker: Worker, ctx: WorkerContext) -> anyhow::Result<()> {
    match worker {
        Worker::DynamicProxy => dynamic_proxy::run(ctx).await,
        Worker::HealthMonitor => health_monitor::run(ctx).await,
        Worker::Recovery => recovery::run(ctx).await,
        Worker::Dashboard => dashboard::run(ctx).await,
    }
}

impl WorkerContext {
    /// A round timer for the worker's own loop:
    /// `while ticker.next_round().await { ...; ticker.done(status) }`.
    pub fn ticker(&self, period: Duration) -> Ticker<'_> {
        let beat = self
            .notifier
            .watchdog_interval()
            .map_or(period, |interval| interval.min(period));
        Ticker {
            ctx: self,
            period,
            beat,
            next_round: Instant::now(),
            status: String::new(),
        }
    }
}

/// Paces a working loop and pings the watchdog from it. The ping only ever comes from the loop
/// that does the work: a round that hangs stops the pings, and systemd kills the worker.
pub struct Ticker<'a> {
    ctx: &'a WorkerContext,
    period: Duration,
    beat: Duration,
    next_round: Instant,
    status: String,
}

impl Ticker<'_> {
    /// Waits for the next round, pinging the watchdog meanwhile; `false` once shutdown is asked.
    pub async fn next_round(&mut self) -> bool {
        loop {
            if self.ctx.shutdown.is_cancelled() {
                return false;
            }
            let now = Instant::now();
            if now >= self.next_round {
                self.next_round = now + self.period;
                return true;
            }
            self.ctx.notifier.heartbeat(&self.status);
            let wake = (now + self.beat).min(self.next_round);
            tokio::select! {
                () = self.ctx.shutdown.cancelled() => return false,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Ends a round: its one-line summary becomes systemd's STATUS=.
    /// The next round is due a full period from now: a round longer than the period must not leave
    /// the timer always due, starving whatever else the loop waits for (engine events).
    pub fn done(&mut self, status: String) {
        self.next_round = Instant::now() + self.period;
        self.status = status;
        self.ctx.notifier.heartbeat(&self.status);
    }
}
