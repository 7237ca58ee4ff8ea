//! Recovery: turns open incidents into repairs. `strategy` picks one action per kind (pure),
//! `repair` carries it out and re-runs the check, and `Recoverer::step` (the recovery worker's
//! loop body) bounds the attempts with backoff, then escalates instead of flapping. `fix502` is
//! the same machinery pointed at every route that answers 502/503/504 right now.

pub mod fix502;
pub mod repair;
pub mod strategy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use fix502::{Fix502Report, fix_502};
pub use repair::{RepairError, Repairer};
pub use strategy::{Action, strategy};

use crate::clock::now_rfc3339;
use crate::health::IncidentState;
use crate::health::Kind;
use crate::health::alerts::{AlertEvent, Alerter};
use crate::store::{Incident, IncidentFilter, NewRecovery, RecoveryOutcome, StoreError};

/// How long one action may take (a unit's start job waits for the unit).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a repair has to show in the check.
pub const SETTLE: Duration = Duration::from_secs(5);
/// Backoff never grows beyond this.
const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// A step starts no new repair after this long: the incidents left wait for the next step, which
/// reads and sorts the open incidents again, so a new proxy incident never waits behind a long
/// queue of app repairs (on a busy engine each one is a reconcile of tens of seconds).
const STEP_BUDGET: Duration = Duration::from_secs(10);

/// The wait before attempt `attempt + 1`: `backoff`, doubled after each failed attempt.
pub fn backoff_after(attempt: i64, backoff: Duration) -> Duration {
    let doublings = attempt.clamp(1, 16) as u32 - 1;
    backoff.saturating_mul(1 << doublings).min(BACKOFF_MAX)
}

/// What one step did, for STATUS=.
#[derive(Debug, Clone, Default)]
pub struct StepSummary {
    pub open: usize,
    pub repaired: usize,
    pub failed: usize,
    pub escalated: usize,
}

impl StepSummary {
    pub fn line(&self) -> String {
        if self.open == 0 {
            "idle: no open incidents".to_owned()
        } else {
            format!(
                "{} open incidents; this step: {} repaired, {} failed, {} escalated",
                self.open, self.repaired, self.failed, self.escalated
            )
        }
    }
}

pub struct Recoverer {
    repairer: Arc<Repairer>,
    alerter: Alerter,
    max_attempts: i64,
    backoff: Duration,
    /// Incident id → when its next attempt is due.
    due: HashMap<i64, Instant>,
    started: bool,
    /// The incident whose repair is under way. Still set at the next step when the worker
    /// abandoned the last step past its bound: that incident is left recovering and is reopened.
    in_flight: Option<i64>,
}

impl Recoverer {
    pub fn new(repairer: Arc<Repairer>, alerter: Alerter) -> Self {
        let recovery = &repairer.observer().config().recovery;
        Self {
            max_attempts: i64::from(recovery.max_attempts),
            backoff: recovery.backoff.0,
            repairer,
            alerter,
            due: HashMap::new(),
            started: false,
            in_flight: None,
        }
    }

    /// Handles every incident that is due, most severe first.
    pub async fn step(&mut self) -> Result<StepSummary, StoreError> {
        let store = self.repairer.observer().store().clone();
        if !self.started {
            // A repair cut short by a crash or stop left its incident "recovering": try it again.
            for incident in store
                .incidents(IncidentFilter {
                    states: vec![IncidentState::Recovering],
                    ..IncidentFilter::default()
                })
                .await?
            {
                store
                    .transition_incident(
                        incident.id,
                        vec![IncidentState::Recovering],
                        IncidentState::Open,
                    )
                    .await?;
            }
            self.started = true;
        }
        if let Some(id) = self.in_flight.take()
            && store
                .transition_incident(id, vec![IncidentState::Recovering], IncidentState::Open)
                .await?
        {
            tracing::warn!(
                incident = id,
                "a repair was cut short (its step ran past the bound); trying again"
            );
        }
        let mut open = store
            .incidents(IncidentFilter {
                states: vec![IncidentState::Open],
                limit: 1000,
                ..IncidentFilter::default()
            })
            .await?;
        // The proxy first: its problems are every app's, and its repair re-renders for all.
        let scope = |i: &Incident| match i.component.as_str() {
            crate::health::PROXY_COMPONENT => 0,
            c if c.starts_with("unit:") => 1,
            c if c.starts_with("app:") => 2,
            _ => 3,
        };
        open.sort_by(|a, b| {
            scope(a)
                .cmp(&scope(b))
                .then(b.severity.cmp(&a.severity))
                .then(a.id.cmp(&b.id))
        });
        self.due.retain(|id, _| open.iter().any(|i| i.id == *id));
        let mut summary = StepSummary {
            open: open.len(),
            ..StepSummary::default()
        };
        let now = Instant::now();
        for incident in open {
            if self.due.get(&incident.id).is_some_and(|due| *due > now) {
                continue;
            }
            if now.elapsed() >= STEP_BUDGET {
                break;
            }
            self.handle(incident, &mut summary).await?;
        }
        Ok(summary)
    }

    async fn handle(
        &mut self,
        incident: Incident,
        summary: &mut StepSummary,
    ) -> Result<(), StoreError> {
        let store = self.repairer.observer().store().clone();
        let Ok(kind) = incident.kind.parse::<Kind>() else {
            tracing::warn!(incident = incident.id, kind = %incident.kind, "no strategy for this kind; escalating");
            self.escalate(&incident, summary).await?;
            return Ok(());
        };
        // Healed already (by the dynamic proxy, an operator or the app itself): nothing to do.
        if self
            .repairer
            .verify(kind, &incident.component)
            .await
            .is_ok()
        {
            if store
                .transition_incident(
                    incident.id,
                    vec![IncidentState::Open],
                    IncidentState::Resolved,
                )
                .await?
            {
                tracing::info!(incident = incident.id, kind = %kind, component = %incident.component, "problem gone before recovery acted");
            }
            return Ok(());
        }
        let facts = self.repairer.facts(kind, &incident.component).await;
        let action = strategy(kind, &facts);
        if let Action::None { why } = &action {
            store
                .record_recovery(NewRecovery {
                    incident_id: incident.id,
                    kind: incident.kind.clone(),
                    action: "none".into(),
                    started_at: now_rfc3339(),
                    outcome: RecoveryOutcome::Skipped,
                    detail: why.clone(),
                })
                .await?;
            self.escalate(&incident, summary).await?;
            return Ok(());
        }
        let Some(attempt) = store.start_recovery_attempt(incident.id).await? else {
            // Resolved (by the health-monitor) while we looked: nothing to repair.
            return Ok(());
        };
        self.in_flight = Some(incident.id);
        let started_at = now_rfc3339();
        let cause = format!("recovery: {} on {}", incident.kind, incident.component);
        tracing::info!(incident = incident.id, attempt, action = %action.describe(), "repairing {}", incident.summary);
        let mut no_effect = false;
        let done = match tokio::time::timeout(
            ACTION_TIMEOUT,
            self.repairer.run(&action, &incident.component, &cause),
        )
        .await
        {
            Ok(result) => result.map_err(|e| {
                no_effect = matches!(e, RepairError::NoEffect(_));
                e.to_string()
            }),
            Err(_) => Err(format!("did not finish within {ACTION_TIMEOUT:?}")),
        };
        let verified = self
            .repairer
            .verify_within(kind, &incident.component, SETTLE)
            .await;
        let (outcome, detail) = match (&done, &verified) {
            (_, Ok(())) => (
                RecoveryOutcome::Success,
                format!(
                    "{}; check passes",
                    done.as_ref()
                        .map_or_else(|e| format!("action reported: {e}"), String::clone)
                ),
            ),
            (Ok(done), Err(still)) => (
                RecoveryOutcome::Failed,
                format!("{done}; check still fails: {still}"),
            ),
            (Err(error), Err(_)) => (RecoveryOutcome::Failed, error.clone()),
        };
        store
            .record_recovery(NewRecovery {
                incident_id: incident.id,
                kind: incident.kind.clone(),
                action: action.describe(),
                started_at,
                outcome,
                detail: detail.clone(),
            })
            .await?;
        self.in_flight = None;
        if outcome == RecoveryOutcome::Success {
            summary.repaired += 1;
            self.due.remove(&incident.id);
            store
                .transition_incident(
                    incident.id,
                    vec![IncidentState::Recovering, IncidentState::Open],
                    IncidentState::Resolved,
                )
                .await?;
            tracing::info!(incident = incident.id, attempt, "repaired: {detail}");
        } else if no_effect {
            // The same repair would change nothing again: no loop of attempts, the reason now.
            tracing::warn!(
                incident = incident.id,
                attempt,
                "repair changed nothing; escalating: {detail}"
            );
            self.escalate(&incident, summary).await?;
        } else if attempt >= self.max_attempts {
            tracing::warn!(
                incident = incident.id,
                attempt,
                "repair failed, attempts used up: {detail}"
            );
            self.escalate(&incident, summary).await?;
        } else {
            summary.failed += 1;
            let wait = backoff_after(attempt, self.backoff);
            self.due.insert(incident.id, Instant::now() + wait);
            store
                .transition_incident(
                    incident.id,
                    vec![IncidentState::Recovering],
                    IncidentState::Open,
                )
                .await?;
            tracing::warn!(incident = incident.id, attempt, retry_in = ?wait, "repair failed: {detail}");
        }
        Ok(())
    }

    async fn escalate(
        &mut self,
        incident: &Incident,
        summary: &mut StepSummary,
    ) -> Result<(), StoreError> {
        let store = self.repairer.observer().store();
        self.due.remove(&incident.id);
        if store
            .transition_incident(
                incident.id,
                vec![IncidentState::Open, IncidentState::Recovering],
                IncidentState::Escalated,
            )
            .await?
        {
            summary.escalated += 1;
            let current = store
                .incident(incident.id)
                .await?
                .unwrap_or_else(|| incident.clone());
            self.alerter.notify(AlertEvent::Escalated, &current).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_secs(5);
        let waits: Vec<u64> = (1..=4).map(|a| backoff_after(a, base).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40]);
        assert_eq!(backoff_after(30, base), BACKOFF_MAX);
        assert_eq!(backoff_after(0, base), base);
    }
}
