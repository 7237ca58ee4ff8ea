//! The recovery worker: every half second it looks for open incidents and repairs the ones that
//! are due (`recovery::Recoverer`), so a fault is repaired within a check interval of happening.

use std::sync::Arc;
use std::time::Duration;

use super::WorkerContext;
use crate::dashboard::actions::{self, Action, Outcome};
use crate::health::alerts::Alerter;
use crate::health::observe::Observer;
use crate::recovery::{ACTION_TIMEOUT, Recoverer, Repairer, SETTLE};
use crate::systemd::supervisor::{Bus, JobKind, Supervisor};
use crate::systemd::units::ButlerUnit;

/// How often the store is asked for open incidents.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(ctx: WorkerContext) -> anyhow::Result<()> {
    let docker = super::connect_docker(&ctx).await?;
    let store = super::open_store(&ctx)?;
    let observer = Arc::new(Observer::new(docker, ctx.config.clone(), store.clone()));
    let repairer = Arc::new(Repairer::new(observer));
    let alerter = Alerter::new(ctx.config.alerts.rules.clone(), store, "recovery");
    let mut recoverer = Recoverer::new(repairer.clone(), alerter);
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
        // The dashboard's fix-502 and restart requests: it has no privileges to act itself.
        let status = match ticker
            .during(bound, answer_requests(&repairer))
            .await
            .flatten()
        {
            Some(answered) => answered,
            None => status,
        };
        ticker.done(status);
    }
    Ok(())
}

/// Runs the dashboard's pending `fix_502` and `service_restart` requests; the STATUS= line of
/// the last one, if any ran.
async fn answer_requests(repairer: &Repairer) -> Option<String> {
    let store = repairer.observer().store().clone();
    let mut status = None;
    loop {
        let request =
            match actions::next_pending(&store, &[Action::Fix502, Action::ServiceRestart]).await {
                Ok(Some(request)) => request,
                Ok(None) => return status,
                Err(error) => {
                    tracing::warn!("cannot read dashboard requests: {error}");
                    return status;
                }
            };
        let outcome = match request.action {
            Action::Fix502 => fix_502_request(repairer, request.target.as_deref()).await,
            Action::ServiceRestart => restart_request(request.target.as_deref()).await,
            Action::ProxyUpdate => Outcome {
                ok: false,
                result: actions::error_json("proxy_update is run by the dynamic proxy"),
            },
        };
        status = Some(format!(
            "dashboard request {} ({}): {}",
            request.id,
            request.action,
            if outcome.ok { "done" } else { "failed" }
        ));
        if let Err(error) = actions::finish(&store, &request, outcome).await {
            tracing::warn!(
                "cannot record the result of dashboard request {}: {error}",
                request.id
            );
        }
    }
}

/// Runs fix-502 over every route (a repair often serves several apps at once: nginx, the
/// network); with `app`, the answer is that app's routes.
async fn fix_502_request(repairer: &Repairer, app: Option<&str>) -> Outcome {
    match crate::recovery::fix_502(repairer, false).await {
        Ok(mut report) => {
            if let Some(app) = app {
                report.routes.retain(|route| route.app == app);
            }
            let still_failing = report
                .routes
                .iter()
                .filter(|r| !r.after.as_ref().unwrap_or(&r.before).ok)
                .count();
            Outcome {
                ok: still_failing == 0,
                result: serde_json::to_value(&report).unwrap_or_default(),
            }
        }
        Err(error) => Outcome {
            ok: false,
            result: actions::error_json(&format!("fix-502 failed: {error}")),
        },
    }
}

async fn restart_request(target: Option<&str>) -> Outcome {
    let failed = |message: String| Outcome {
        ok: false,
        result: actions::error_json(&message),
    };
    let Some(name) = target else {
        return failed("no service named".to_owned());
    };
    let unit: ButlerUnit = match name.parse() {
        Ok(unit) => unit,
        Err(error) => return failed(format!("{error}")),
    };
    if !sd_notify::booted().unwrap_or(false) {
        return failed("this host does not run systemd: there is no unit to restart".to_owned());
    }
    let supervisor = match Supervisor::connect(Bus::System).await {
        Ok(supervisor) => supervisor,
        Err(error) => return failed(error.to_string()),
    };
    match supervisor.run_job(JobKind::Restart, unit).await {
        Ok(job) => Outcome {
            ok: job.succeeded(),
            result: serde_json::json!({ "unit": job.unit, "action": "restart", "result": job.result }),
        },
        Err(error) => failed(error.to_string()),
    }
}
