//! The dynamic-proxy worker: Docker events → routes → validated nginx config. Initialisation is a
//! reachable engine and an open store; then one reconcile at start, one per coalesced burst of
//! events, and one every `health.interval` so a removed or crashed nginx comes back even when no
//! event says so.

use super::WorkerContext;
use crate::dashboard::actions::{self, Action, Outcome};
use crate::docker::events::{self, Coalescer};
use crate::proxy::reconcile::{ReconcileReport, Reconciler};

pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    let docker = super::connect_docker(&ctx).await?;
    let store = super::open_store(&ctx)?;
    let mut reconciler = Reconciler::new(docker.clone(), ctx.config.clone(), store);
    let mut problems = ProblemLog::default();

    // Subscribe before the first list, so nothing that happens in between is missed.
    let mut engine_events = Box::pin(events::watch(docker));
    let status = round(&mut reconciler, &mut problems, "start", None).await;
    ctx.notifier.ready(&status);
    tracing::info!("dynamic-proxy worker ready");

    let mut coalescer = Coalescer::default();
    let mut tuned_for_data_path = false;
    tune_coalescer(
        &mut coalescer,
        &mut tuned_for_data_path,
        reconciler.data_path(),
    );
    let mut ticker = ctx.ticker(ctx.config.health.interval.0);
    // `POST /api/proxy/update` on the dashboard, which may not act itself, queues a request here.
    let mut requests = tokio::time::interval(actions::POLL_INTERVAL);
    requests.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // `changed` names the containers to re-inspect; `None` re-lists everything (the periodic
        // round and a reconnect, which also correct anything the events missed).
        let (cause, changed) = tokio::select! {
            more = ticker.next_round() => {
                if !more {
                    break;
                }
                ("periodic check".to_owned(), None)
            }
            batch = coalescer.next_batch(&mut engine_events) => match batch {
                Some(batch) if batch.resync => {
                    // The first connect follows start-up's own full list; later ones are reconnects.
                    tracing::info!("Docker event stream connected; re-listing every container");
                    ("engine reconnected".to_owned(), None)
                }
                Some(batch) => {
                    reconciler.connect_created(&batch.created).await;
                    record_user_stops(&reconciler, &batch).await;
                    if batch.containers.is_empty() {
                        // Only `kill` events: no route changes until the `die` that follows.
                        continue;
                    }
                    (format!("{} engine events", batch.events), Some(batch.containers))
                }
                None => break,
            },
            () = sleep_until_some(reconciler.next_port_check()) => {
                let changed = reconciler.check_watched_ports().await;
                if changed.is_empty() {
                    continue;
                }
                ("a routed port started or stopped listening".to_owned(), Some(changed))
            }
            _ = requests.tick() => {
                let answered = tokio::select! {
                    status = answer_requests(&mut reconciler, &mut problems) => status,
                    () = ctx.shutdown.cancelled() => break,
                };
                if let Some(status) = answered {
                    ticker.done(status);
                }
                continue;
            }
        };
        // SIGTERM must not wait for a long round: what a cut round leaves behind is a staged or
        // validated version, and the next start reconciles from the store's last good one.
        let status = tokio::select! {
            status = round(&mut reconciler, &mut problems, &cause, changed.as_ref()) => status,
            () = ctx.shutdown.cancelled() => break,
        };
        ticker.done(status);
        tune_coalescer(
            &mut coalescer,
            &mut tuned_for_data_path,
            reconciler.data_path(),
        );
    }
    Ok(())
}

/// Short windows while nginx takes changes as data (each reconcile is then a PUT of a few
/// kilobytes); the default ones, which spare reloads, otherwise.
fn tune_coalescer(coalescer: &mut Coalescer, tuned: &mut bool, data_path: bool) {
    if data_path == *tuned {
        return;
    }
    let default = Coalescer::default();
    let (quiet, max_delay, lone_quiet) = if data_path {
        (
            events::DATA_PATH_QUIET,
            events::DATA_PATH_MAX_DELAY,
            events::DATA_PATH_LONE_QUIET,
        )
    } else {
        (default.quiet(), default.max_delay(), default.lone_quiet())
    };
    coalescer.tune(quiet, max_delay, lone_quiet);
    *tuned = data_path;
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Remembers which containers a user stopped, before the reconcile that plans their apps: the
/// planner marks such an app `stopped` rather than `down`. A store error only costs that word.
pub(crate) async fn record_user_stops(
    reconciler: &Reconciler,
    batch: &crate::docker::events::Batch,
) {
    let marks = batch.user_stops.clone().into_iter().collect();
    if let Err(error) = reconciler.store().record_user_stops(marks).await {
        tracing::warn!("cannot record which containers were stopped: {error}");
    }
}

/// One reconcile, logged; returns the STATUS= line. Failures are logged and retried next round:
/// the last good config keeps serving meanwhile.
async fn round(
    reconciler: &mut Reconciler,
    problems: &mut ProblemLog,
    cause: &str,
    changed: Option<&std::collections::BTreeSet<String>>,
) -> String {
    match reconciler.reconcile_changed(cause, changed).await {
        Ok(report) => {
            log_report(&report);
            problems.log(&report.plan.problems);
            report.summary()
        }
        Err(error) => {
            tracing::error!(cause, "reconcile failed: {error}");
            format!("reconcile failed: {error}")
        }
    }
}

/// Runs the dashboard's pending `proxy_update` requests like `butler proxy-update`: lift a rollback
/// pin, then reconcile. Returns the STATUS= line when one ran.
async fn answer_requests(reconciler: &mut Reconciler, problems: &mut ProblemLog) -> Option<String> {
    let store = reconciler.store().clone();
    let mut status = None;
    loop {
        let request = match actions::next_pending(&store, &[Action::ProxyUpdate]).await {
            Ok(Some(request)) => request,
            Ok(None) => return status,
            Err(error) => {
                tracing::warn!("cannot read dashboard requests: {error}");
                return status;
            }
        };
        let unpinned = match store.pinned_version().await {
            Ok(Some(pinned)) => store.pin_version(None).await.ok().map(|()| pinned),
            _ => None,
        };
        let cause = format!("dashboard request {}", request.id);
        let outcome = match reconciler.reconcile(&cause).await {
            Ok(report) => {
                log_report(&report);
                problems.log(&report.plan.problems);
                status = Some(report.summary());
                Outcome {
                    ok: report.succeeded(),
                    result: serde_json::json!({
                        "summary": report.summary(),
                        "changes": report.changes.iter().map(|c| c.line()).collect::<Vec<_>>(),
                        "version": report.version,
                        "unpinned": unpinned,
                    }),
                }
            }
            Err(error) => Outcome {
                ok: false,
                result: actions::error_json(&format!("reconcile failed: {error}")),
            },
        };
        if let Err(error) = actions::finish(&store, &request, outcome).await {
            tracing::warn!(
                "cannot record the result of dashboard request {}: {error}",
                request.id
            );
        }
    }
}

fn log_report(report: &ReconcileReport) {
    for change in &report.changes {
        tracing::info!(cause = %report.cause, "route {}", change.line());
    }
    if let Some(why) = &report.nginx_recreated {
        tracing::warn!(was = %why, "nginx container recreated with the last good config");
    }
    if report
        .apply
        .as_ref()
        .is_some_and(|a| a.status != crate::proxy::apply::ApplyStatus::Unchanged)
    {
        tracing::info!(cause = %report.cause, version = report.version.unwrap_or(0), "{}", report.summary());
    }
}

/// Logs each app's problem once when it appears and once when it is gone, not on every round.
#[derive(Default)]
struct ProblemLog {
    open: std::collections::BTreeSet<crate::proxy::Problem>,
}

impl ProblemLog {
    fn log(&mut self, now: &[crate::proxy::Problem]) {
        let now: std::collections::BTreeSet<_> = now.iter().cloned().collect();
        for problem in now.difference(&self.open) {
            tracing::warn!(
                container = %problem.container_name,
                app = problem.app.as_deref().unwrap_or(""),
                kind = ?problem.kind,
                "{}",
                problem.reason
            );
        }
        for problem in self.open.difference(&now) {
            tracing::info!(container = %problem.container_name, kind = ?problem.kind, "problem resolved: {}", problem.reason);
        }
        self.open = now;
    }
}
