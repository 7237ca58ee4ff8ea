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

/// How long start-up waits for the engine (dockerd may start after us at boot) before giving up
/// without READY, inside the units' TimeoutStartSec=30s.
const ENGINE_WAIT: Duration = Duration::from_secs(20);

/// Connects to the Docker engine, retrying for a while: at boot the butler may start before it.
pub(crate) async fn connect_docker(
    ctx: &WorkerContext,
) -> anyhow::Result<crate::docker::EngineHandle> {
    let host = ctx.config.docker.host.as_deref();
    let deadline = Instant::now() + ENGINE_WAIT;
    loop {
        match crate::docker::client::connect(host).await {
            Ok(docker) => return Ok(docker),
            Err(error) if Instant::now() >= deadline => return Err(error.into()),
            Err(error) => {
                tracing::warn!(%error, "Docker engine not reachable yet; retrying");
                tokio::select! {
                    () = ctx.shutdown.cancelled() => anyhow::bail!("stopped while waiting for the Docker engine"),
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Opens the state store named by `state.dir`.
pub(crate) fn open_store(ctx: &WorkerContext) -> anyhow::Result<crate::store::Store> {
    use anyhow::Context as _;
    crate::store::Store::open(&ctx.config.state.dir).with_context(|| {
        format!(
            "cannot open the state store in {} (state.dir)",
            ctx.config.state.dir.display()
        )
    })
}

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
            last_done: None,
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
    last_done: Option<Instant>,
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

    /// Awaits one bounded piece of a round's work, pinging the watchdog meanwhile: a repair that
    /// waits for a unit to start may take longer than WatchdogSec, but never longer than `bound`,
    /// after which it is abandoned; so a stuck round still stops the pings. `None` when `work` did
    /// not finish within `bound`, or shutdown was asked.
    pub async fn during<F: std::future::Future>(
        &mut self,
        bound: Duration,
        work: F,
    ) -> Option<F::Output> {
        let deadline = Instant::now() + bound;
        let mut work = std::pin::pin!(work);
        loop {
            self.ctx.notifier.heartbeat(&self.status);
            let wake = (Instant::now() + self.beat).min(deadline);
            tokio::select! {
                output = &mut work => return Some(output),
                () = self.ctx.shutdown.cancelled() => return None,
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                }
            }
        }
    }

    /// Brings the next round forward: something happened that the round should look at now, not
    /// up to a period later. Never sooner than a quarter period after the last round ended, so a
    /// container that flaps cannot drive the rounds back to back.
    pub fn hurry(&mut self) {
        let now = Instant::now();
        let earliest = self
            .last_done
            .map_or(now, |done| done + self.period / 4)
            .max(now);
        self.next_round = self.next_round.min(earliest);
    }

    /// Ends a round and keeps the rate: the next round is due a period after this one began (as
    /// `next_round` set it), so a problem waits at most one period for the round that finds it,
    /// not a period plus the round's own length. A round that overran the period is followed
    /// after a quarter period, not at once: a slow engine is not asked again back to back. For a
    /// loop that waits on the ticker alone (the health-monitor).
    pub fn done_keeping_rate(&mut self, status: String) {
        let now = Instant::now();
        self.last_done = Some(now);
        self.next_round = self.next_round.max(now + self.period / 4);
        self.status = status;
        self.ctx.notifier.heartbeat(&self.status);
    }

    /// Ends a round: its one-line summary becomes systemd's STATUS=.
    /// The next round is due a full period from now: a round longer than the period must not leave
    /// the timer always due, starving whatever else the loop waits for (engine events).
    pub fn done(&mut self, status: String) {
        let now = Instant::now();
        self.last_done = Some(now);
        self.next_round = now + self.period;
        self.status = status;
        self.ctx.notifier.heartbeat(&self.status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> WorkerContext {
        WorkerContext {
            config: Arc::new(Config::default()),
            notifier: Arc::new(Notifier::disabled()),
            shutdown: CancellationToken::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hurry_brings_the_round_forward_but_not_back_to_back() {
        let ctx = context();
        let period = Duration::from_secs(8);
        let mut ticker = ctx.ticker(period);
        assert!(ticker.next_round().await, "the first round is due at once");
        ticker.done_keeping_rate(String::new());

        // An event right after a round: the next one comes a quarter period after it, not a period.
        let began = Instant::now();
        ticker.hurry();
        assert!(ticker.next_round().await);
        assert_eq!(began.elapsed(), Duration::from_secs(2));
        ticker.done_keeping_rate(String::new());

        // Long after the last round: at once.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let began = Instant::now();
        ticker.hurry();
        assert!(ticker.next_round().await);
        assert_eq!(began.elapsed(), Duration::ZERO);
        ticker.done_keeping_rate(String::new());

        // Without an event, the period holds.
        let began = Instant::now();
        assert!(ticker.next_round().await);
        assert_eq!(began.elapsed(), period);
    }
}
