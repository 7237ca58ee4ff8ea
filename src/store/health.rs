//! Health and recovery records: the latest result of every check, each app's status, incidents
//! (one per problem, not one per failed check), recovery attempts and host samples. The
//! health-monitor writes checks, statuses, samples and incidents; the recovery worker moves
//! incidents through their states and records what it tried; the CLI and the dashboard read.

use rusqlite::{OptionalExtension as _, Row, params};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, parse_text, query_err};
use crate::clock::now_rfc3339;

text_enum! {
    /// Ordered: `Low < Medium < High < Critical`.
    Severity { Low => "low", Medium => "medium", High => "high", Critical => "critical" }
}

text_enum! {
    IncidentState {
        Open => "open",
        Recovering => "recovering",
        Resolved => "resolved",
        Escalated => "escalated",
    }
}

text_enum! {
    /// Ordered from best to worst.
    AppStatus { Healthy => "healthy", Stopped => "stopped", Degraded => "degraded", Down => "down" }
}

text_enum! {
    RecoveryOutcome { Success => "success", Failed => "failed", Skipped => "skipped" }
}

/// The latest result of one check on one subject (`app:<name>`, `proxy`, `host`, `unit:<unit>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub subject: String,
    pub name: String,
    pub ok: bool,
    pub latency_ms: Option<f64>,
    pub detail: String,
    /// RFC 3339; filled in by [`Store::record_checks`] when empty.
    pub checked_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppHealth {
    pub app: String,
    pub status: AppStatus,
    pub reason: String,
    /// The last response time through the proxy.
    pub latency_ms: Option<f64>,
    /// When the app's (oldest running) container started, RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339; filled in by [`Store::replace_app_health`] when empty.
    pub checked_at: String,
}

/// What a check found wrong; [`Store::observe_incident`] turns it into an incident or counts it
/// against the one already open for the same kind and component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: String,
    pub severity: Severity,
    pub component: String,
    pub summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub kind: String,
    pub severity: Severity,
    pub component: String,
    pub summary: String,
    pub state: IncidentState,
    pub first_seen: String,
    pub last_seen: String,
    /// How many times a check found it.
    pub count: i64,
    /// How many recovery attempts were made.
    pub attempts: i64,
    pub resolved_at: Option<String>,
}

/// Which incidents to list; the default lists every one, newest first, up to 100.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only these states; empty means all.
    pub states: Vec<IncidentState>,
    pub kind: Option<String>,
    pub component: Option<String>,
    pub min_severity: Option<Severity>,
    /// 0 means the default of 100.
    pub limit: usize,
}

impl IncidentState {
    /// Open, recovering and escalated: everything not resolved.
    pub const UNRESOLVED: [IncidentState; 3] = [
        IncidentState::Open,
        IncidentState::Recovering,
        IncidentState::Escalated,
    ];
}

impl IncidentFilter {
    /// Open, recovering and escalated: everything not resolved.
    pub fn unresolved() -> Self {
        Self {
            states: IncidentState::UNRESOLVED.to_vec(),
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecovery {
    pub incident_id: i64,
    pub kind: String,
    pub action: String,
    /// RFC 3339, when the action began.
    pub started_at: String,
    pub outcome: RecoveryOutcome,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub id: i64,
    pub incident_id: i64,
    pub kind: String,
    pub action: String,
    pub started_at: String,
    pub finished_at: String,
    pub outcome: RecoveryOutcome,
    pub detail: String,
}

/// Recovery outcomes for one incident kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessRate {
    pub kind: String,
    pub attempts: i64,
    pub successes: i64,
    /// successes / attempts, 0 when there were none.
    pub rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    pub value: f64,
}

const INCIDENT_COLUMNS: &str = "id, kind, severity, component, summary, state, first_seen, \
                                last_seen, count, attempts, resolved_at";
const DEFAULT_LIMIT: usize = 100;

impl Store {
    /// Stores the latest result of each check, replacing the previous one for its subject and name.
    pub async fn record_checks(&self, checks: Vec<CheckResult>) -> Result<(), StoreError> {
        self.call(move |conn, path| {
            let what = "recording check results";
            let tx = conn.transaction().map_err(query_err(path, what))?;
            {
                let mut upsert = tx
                    .prepare_cached(
                        "INSERT INTO checks (subject, name, ok, latency_ms, detail, checked_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (subject, name) DO UPDATE SET ok = excluded.ok,
                           latency_ms = excluded.latency_ms, detail = excluded.detail,
                           checked_at = excluded.checked_at",
                    )
                    .map_err(query_err(path, what))?;
                let now = now_rfc3339();
                for check in &checks {
                    let at = if check.checked_at.is_empty() {
                        &now
                    } else {
                        &check.checked_at
                    };
                    upsert
                        .execute(params![
                            check.subject,
                            check.name,
                            check.ok,
                            check.latency_ms,
                            check.detail,
                            at
                        ])
                        .map_err(query_err(path, what))?;
                }
            }
            tx.commit().map_err(query_err(path, what))
        })
        .await
    }

    /// Forgets every check of subjects that no longer exist (apps gone, units removed).
    pub async fn forget_check_subjects(&self, subjects: Vec<String>) -> Result<(), StoreError> {
        self.call(move |conn, path| {
            let what = "forgetting check results";
            let tx = conn.transaction().map_err(query_err(path, what))?;
            for subject in &subjects {
                tx.execute("DELETE FROM checks WHERE subject = ?1", params![subject])
                    .map_err(query_err(path, what))?;
            }
            tx.commit().map_err(query_err(path, what))
        })
        .await
    }

    /// Every stored check result, by subject and name.
    pub async fn checks(&self) -> Result<Vec<CheckResult>, StoreError> {
        self.call(|conn, path| {
            let what = "reading check results";
            let mut statement = conn
                .prepare_cached(
                    "SELECT subject, name, ok, latency_ms, detail, checked_at FROM checks
                     ORDER BY subject, name",
                )
                .map_err(query_err(path, what))?;
            statement
                .query_map([], |row| {
                    Ok(CheckResult {
                        subject: row.get(0)?,
                        name: row.get(1)?,
                        ok: row.get(2)?,
                        latency_ms: row.get(3)?,
                        detail: row.get(4)?,
                        checked_at: row.get(5)?,
                    })
                })
                .map_err(query_err(path, what))?
                .collect::<Result<_, _>>()
                .map_err(query_err(path, what))
        })
        .await
    }

    /// Replaces every app's status in one transaction: readers see one round or the next.
    pub async fn replace_app_health(&self, apps: Vec<AppHealth>) -> Result<(), StoreError> {
        self.call(move |conn, path| {
            let what = "replacing app health";
            let tx = conn.transaction().map_err(query_err(path, what))?;
            tx.execute("DELETE FROM app_health", [])
                .map_err(query_err(path, what))?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO app_health
                           (app, status, reason, latency_ms, started_at, checked_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )
                    .map_err(query_err(path, what))?;
                let now = now_rfc3339();
                for app in &apps {
                    let at = if app.checked_at.is_empty() {
                        &now
                    } else {
                        &app.checked_at
                    };
                    insert
                        .execute(params![
                            app.app,
                            app.status.as_str(),
                            app.reason,
                            app.latency_ms,
                            app.started_at,
                            at
                        ])
                        .map_err(query_err(path, what))?;
                }
            }
            tx.commit().map_err(query_err(path, what))
        })
        .await
    }

    /// Every app's status, by name.
    pub async fn app_health(&self) -> Result<Vec<AppHealth>, StoreError> {
        self.call(|conn, path| {
            let what = "reading app health";
            let mut statement = conn
                .prepare_cached(
                    "SELECT app, status, reason, latency_ms, started_at, checked_at
                     FROM app_health ORDER BY app",
                )
                .map_err(query_err(path, what))?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<f64>>(3)?,
                        row.get::<_, Option<String>>(4)?,
                        row.get::<_, String>(5)?,
                    ))
                })
                .map_err(query_err(path, what))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, what))?;
            rows.into_iter()
                .map(
                    |(app, status, reason, latency_ms, started_at, checked_at)| {
                        Ok(AppHealth {
                            status: parse_text(path, "app status", &status)?,
                            app,
                            reason,
                            latency_ms,
                            started_at,
                            checked_at,
                        })
                    },
                )
                .collect()
        })
        .await
    }

    /// Records that a check found `finding`. The unresolved incident of the same kind and
    /// component is counted (last_seen, count, summary, and severity raised if higher) instead of
    /// opening a second one. Returns the incident and whether it is new.
    pub async fn observe_incident(&self, finding: Finding) -> Result<(Incident, bool), StoreError> {
        self.observe_incident_at(finding, None).await
    }

    /// [`Store::observe_incident`] for a finding made from observations taken at `observed_at`
    /// (RFC 3339, as the store writes times). When the incident of that kind and component was
    /// resolved after that moment, the finding is stale (a repair finished while the round was
    /// still running) and opens nothing: that resolved incident is returned, not created. A
    /// problem that really came back is found again by the next round.
    pub async fn observe_incident_at(
        &self,
        finding: Finding,
        observed_at: Option<String>,
    ) -> Result<(Incident, bool), StoreError> {
        self.call(move |conn, path| {
            let what = "recording an incident";
            let tx = conn.transaction().map_err(query_err(path, what))?;
            let now = now_rfc3339();
            let existing: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, severity FROM incidents
                     WHERE kind = ?1 AND component = ?2 AND state != 'resolved'",
                    params![finding.kind, finding.component],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(query_err(path, what))?;
            if existing.is_none()
                && let Some(observed_at) = &observed_at
            {
                let resolved_since: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM incidents WHERE kind = ?1 AND component = ?2
                           AND state = 'resolved' AND resolved_at > ?3
                         ORDER BY id DESC LIMIT 1",
                        params![finding.kind, finding.component, observed_at],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(query_err(path, what))?;
                if let Some(id) = resolved_since
                    && let Some(incident) = select_incident(&tx, path, id)?
                {
                    return Ok((incident, false));
                }
            }
            let (id, created) = match existing {
                Some((id, severity)) => {
                    let severity = parse_text::<Severity>(path, "incident severity", &severity)?
                        .max(finding.severity);
                    tx.execute(
                        "UPDATE incidents SET last_seen = ?2, count = count + 1, summary = ?3,
                           severity = ?4 WHERE id = ?1",
                        params![id, now, finding.summary, severity.as_str()],
                    )
                    .map_err(query_err(path, what))?;
                    (id, false)
                }
                None => {
                    tx.execute(
                        "INSERT INTO incidents (kind, severity, component, summary, state,
                           first_seen, last_seen, count, attempts)
                         VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?5, 1, 0)",
                        params![
                            finding.kind,
                            finding.severity.as_str(),
                            finding.component,
                            finding.summary,
                            now
                        ],
                    )
                    .map_err(query_err(path, what))?;
                    (tx.last_insert_rowid(), true)
                }
            };
            let incident = select_incident(&tx, path, id)?.ok_or_else(|| StoreError::Corrupt {
                path: path.to_owned(),
                what: "incident",
                reason: format!("incident {id} vanished while it was recorded"),
            })?;
            tx.commit().map_err(query_err(path, what))?;
            Ok((incident, created))
        })
        .await
    }

    /// Moves an incident to `state`; resolving stamps `resolved_at`. Returns false when there is no
    /// such incident.
    pub async fn set_incident_state(
        &self,
        id: i64,
        state: IncidentState,
    ) -> Result<bool, StoreError> {
        self.call(move |conn, path| {
            let resolved_at = (state == IncidentState::Resolved).then(now_rfc3339);
            let changed = conn
                .execute(
                    "UPDATE incidents SET state = ?2, resolved_at = ?3 WHERE id = ?1",
                    params![id, state.as_str(), resolved_at],
                )
                .map_err(query_err(path, "changing an incident's state"))?;
            Ok(changed > 0)
        })
        .await
    }

    /// Moves an incident to `to` only while it is in one of `from`; returns whether it moved. The
    /// health-monitor and the recovery worker both move incidents: a conditional move never
    /// reopens what the other just resolved.
    pub async fn transition_incident(
        &self,
        id: i64,
        from: Vec<IncidentState>,
        to: IncidentState,
    ) -> Result<bool, StoreError> {
        self.call(move |conn, path| {
            let resolved_at = (to == IncidentState::Resolved).then(now_rfc3339);
            let marks = vec!["?"; from.len().max(1)].join(", ");
            let sql = format!(
                "UPDATE incidents SET state = ?, resolved_at = ? WHERE id = ? AND state IN ({marks})"
            );
            let mut args: Vec<rusqlite::types::Value> = vec![
                to.as_str().to_owned().into(),
                resolved_at.map_or(rusqlite::types::Value::Null, Into::into),
                id.into(),
            ];
            if from.is_empty() {
                args.push(rusqlite::types::Value::Null);
            }
            args.extend(from.iter().map(|s| s.as_str().to_owned().into()));
            let changed = conn
                .execute(&sql, rusqlite::params_from_iter(args))
                .map_err(query_err(path, "changing an incident's state"))?;
            Ok(changed > 0)
        })
        .await
    }

    /// Whether an alert rule may fire for `key` now, given it fires at most once per
    /// `min_interval_ms`; when it may, the time is recorded in the same transaction.
    pub async fn claim_alert(
        &self,
        rule: String,
        key: String,
        now_ms: i64,
        min_interval_ms: i64,
    ) -> Result<bool, StoreError> {
        self.call(move |conn, path| {
            let changed = conn
                .execute(
                    "INSERT INTO alert_log (rule, key, sent_at_ms) VALUES (?1, ?2, ?3)
                     ON CONFLICT (rule, key) DO UPDATE SET sent_at_ms = excluded.sent_at_ms
                     WHERE alert_log.sent_at_ms <= ?3 - ?4",
                    params![rule, key, now_ms, min_interval_ms],
                )
                .map_err(query_err(path, "rate-limiting an alert"))?;
            Ok(changed > 0)
        })
        .await
    }

    /// Counts one recovery attempt and marks the incident recovering, only while it is open;
    /// returns the attempt count, or `None` when it is no longer open (the health-monitor resolved
    /// it meanwhile, or another repair took it): an attempt never reopens a resolved incident.
    pub async fn start_recovery_attempt(&self, id: i64) -> Result<Option<i64>, StoreError> {
        self.call(move |conn, path| {
            conn.query_row(
                "UPDATE incidents SET attempts = attempts + 1, state = 'recovering'
                 WHERE id = ?1 AND state = 'open' RETURNING attempts",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(query_err(path, "counting a recovery attempt"))
        })
        .await
    }

    pub async fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        self.call(move |conn, path| select_incident(conn, path, id))
            .await
    }

    /// Incidents matching `filter`, most recently seen first.
    pub async fn incidents(&self, filter: IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        self.call(move |conn, path| {
            let what = "reading incidents";
            let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1 = 1");
            let mut args: Vec<String> = Vec::new();
            if !filter.states.is_empty() {
                let marks = vec!["?"; filter.states.len()].join(", ");
                sql.push_str(&format!(" AND state IN ({marks})"));
                args.extend(filter.states.iter().map(|s| s.as_str().to_owned()));
            }
            if let Some(kind) = &filter.kind {
                sql.push_str(" AND kind = ?");
                args.push(kind.clone());
            }
            if let Some(component) = &filter.component {
                sql.push_str(" AND component = ?");
                args.push(component.clone());
            }
            if let Some(min) = filter.min_severity {
                let allowed: Vec<_> = Severity::ALL.iter().filter(|s| **s >= min).collect();
                let marks = vec!["?"; allowed.len()].join(", ");
                sql.push_str(&format!(" AND severity IN ({marks})"));
                args.extend(allowed.iter().map(|s| s.as_str().to_owned()));
            }
            let limit = if filter.limit == 0 {
                DEFAULT_LIMIT
            } else {
                filter.limit
            };
            sql.push_str(&format!(" ORDER BY last_seen DESC, id DESC LIMIT {limit}"));
            let mut statement = conn.prepare(&sql).map_err(query_err(path, what))?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(args.iter()), raw_incident)
                .map_err(query_err(path, what))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, what))?;
            rows.into_iter().map(|raw| raw.parse(path)).collect()
        })
        .await
    }

    /// Records one recovery action and its outcome; returns its id.
    pub async fn record_recovery(&self, recovery: NewRecovery) -> Result<i64, StoreError> {
        self.call(move |conn, path| {
            conn.execute(
                "INSERT INTO recoveries (incident_id, kind, action, started_at, finished_at,
                   outcome, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    recovery.incident_id,
                    recovery.kind,
                    recovery.action,
                    recovery.started_at,
                    now_rfc3339(),
                    recovery.outcome.as_str(),
                    recovery.detail
                ],
            )
            .map_err(query_err(path, "recording a recovery"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    /// The newest recoveries (of one incident, when given), newest first; `limit` 0 means 100.
    pub async fn recoveries(
        &self,
        incident_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Recovery>, StoreError> {
        self.call(move |conn, path| {
            let what = "reading recoveries";
            let limit = if limit == 0 { DEFAULT_LIMIT } else { limit } as i64;
            let mut statement = conn
                .prepare_cached(
                    "SELECT id, incident_id, kind, action, started_at, finished_at, outcome, detail
                     FROM recoveries WHERE ?1 IS NULL OR incident_id = ?1
                     ORDER BY id DESC LIMIT ?2",
                )
                .map_err(query_err(path, what))?;
            let rows = statement
                .query_map(params![incident_id, limit], |row| {
                    Ok((
                        Recovery {
                            id: row.get(0)?,
                            incident_id: row.get(1)?,
                            kind: row.get(2)?,
                            action: row.get(3)?,
                            started_at: row.get(4)?,
                            finished_at: row.get(5)?,
                            outcome: RecoveryOutcome::Skipped,
                            detail: row.get(7)?,
                        },
                        row.get::<_, String>(6)?,
                    ))
                })
                .map_err(query_err(path, what))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, what))?;
            rows.into_iter()
                .map(|(mut recovery, outcome)| {
                    recovery.outcome = parse_text(path, "recovery outcome", &outcome)?;
                    Ok(recovery)
                })
                .collect()
        })
        .await
    }

    /// Success rate of recovery actions per incident kind (skipped actions are not attempts).
    pub async fn recovery_success_rates(&self) -> Result<Vec<SuccessRate>, StoreError> {
        self.call(|conn, path| {
            let what = "reading recovery success rates";
            let mut statement = conn
                .prepare_cached(
                    "SELECT kind, COUNT(*), SUM(outcome = 'success') FROM recoveries
                     WHERE outcome != 'skipped' GROUP BY kind ORDER BY kind",
                )
                .map_err(query_err(path, what))?;
            statement
                .query_map([], |row| {
                    let attempts: i64 = row.get(1)?;
                    let successes: i64 = row.get(2)?;
                    Ok(SuccessRate {
                        kind: row.get(0)?,
                        attempts,
                        successes,
                        rate: if attempts == 0 {
                            0.0
                        } else {
                            successes as f64 / attempts as f64
                        },
                    })
                })
                .map_err(query_err(path, what))?
                .collect::<Result<_, _>>()
                .map_err(query_err(path, what))
        })
        .await
    }

    /// Appends host samples: `(metric, at_ms, value)`.
    pub async fn add_samples(&self, samples: Vec<(String, i64, f64)>) -> Result<(), StoreError> {
        self.call(move |conn, path| {
            let what = "recording samples";
            let tx = conn.transaction().map_err(query_err(path, what))?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO samples (metric, at_ms, value) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(query_err(path, what))?;
                for (metric, at_ms, value) in &samples {
                    insert
                        .execute(params![metric, at_ms, value])
                        .map_err(query_err(path, what))?;
                }
            }
            tx.commit().map_err(query_err(path, what))
        })
        .await
    }

    /// One metric's samples taken at or after `since_ms`, oldest first.
    pub async fn samples(&self, metric: String, since_ms: i64) -> Result<Vec<Sample>, StoreError> {
        self.call(move |conn, path| {
            let what = "reading samples";
            let mut statement = conn
                .prepare_cached(
                    "SELECT at_ms, value FROM samples WHERE metric = ?1 AND at_ms >= ?2
                     ORDER BY at_ms",
                )
                .map_err(query_err(path, what))?;
            statement
                .query_map(params![metric, since_ms], |row| {
                    Ok(Sample {
                        at_ms: row.get(0)?,
                        value: row.get(1)?,
                    })
                })
                .map_err(query_err(path, what))?
                .collect::<Result<_, _>>()
                .map_err(query_err(path, what))
        })
        .await
    }

    /// Deletes samples older than `before_ms`; returns how many went.
    pub async fn prune_samples(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.call(move |conn, path| {
            conn.execute("DELETE FROM samples WHERE at_ms < ?1", params![before_ms])
                .map_err(query_err(path, "pruning samples"))
        })
        .await
    }
}

/// An incident row before its enum columns are parsed (rusqlite's row closure can't return ours).
struct RawIncident {
    incident: Incident,
    severity: String,
    state: String,
}

impl RawIncident {
    fn parse(mut self, path: &std::path::Path) -> Result<Incident, StoreError> {
        self.incident.severity = parse_text(path, "incident severity", &self.severity)?;
        self.incident.state = parse_text(path, "incident state", &self.state)?;
        Ok(self.incident)
    }
}

fn raw_incident(row: &Row<'_>) -> rusqlite::Result<RawIncident> {
    Ok(RawIncident {
        incident: Incident {
            id: row.get(0)?,
            kind: row.get(1)?,
            severity: Severity::Low,
            component: row.get(3)?,
            summary: row.get(4)?,
            state: IncidentState::Open,
            first_seen: row.get(6)?,
            last_seen: row.get(7)?,
            count: row.get(8)?,
            attempts: row.get(9)?,
            resolved_at: row.get(10)?,
        },
        severity: row.get(2)?,
        state: row.get(5)?,
    })
}

fn select_incident(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id: i64,
) -> Result<Option<Incident>, StoreError> {
    conn.query_row(
        &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"),
        params![id],
        raw_incident,
    )
    .optional()
    .map_err(query_err(path, "reading an incident"))?
    .map(|raw| raw.parse(path))
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(kind: &str, component: &str, severity: Severity) -> Finding {
        Finding {
            kind: kind.into(),
            severity,
            component: component.into(),
            summary: format!("{kind} on {component}"),
        }
    }

    #[tokio::test]
    async fn one_problem_is_one_incident_until_it_is_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (first, created) = store
            .observe_incident(finding("container_down", "app:shop", Severity::Medium))
            .await
            .unwrap();
        assert!(created);
        let (again, created) = store
            .observe_incident(finding("container_down", "app:shop", Severity::High))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again.id, first.id);
        assert_eq!(again.count, 2);
        assert_eq!(again.severity, Severity::High, "severity only rises");
        let (other, created) = store
            .observe_incident(finding("container_down", "app:blog", Severity::Low))
            .await
            .unwrap();
        assert!(created && other.id != first.id);

        assert_eq!(
            store.start_recovery_attempt(first.id).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            store.start_recovery_attempt(first.id).await.unwrap(),
            None,
            "one attempt at a time"
        );
        store
            .transition_incident(
                first.id,
                vec![IncidentState::Recovering],
                IncidentState::Open,
            )
            .await
            .unwrap();
        assert_eq!(
            store.start_recovery_attempt(first.id).await.unwrap(),
            Some(2)
        );
        assert!(
            store
                .set_incident_state(first.id, IncidentState::Resolved)
                .await
                .unwrap()
        );
        let resolved = store.incident(first.id).await.unwrap().unwrap();
        assert_eq!(resolved.state, IncidentState::Resolved);
        assert!(resolved.resolved_at.is_some());
        assert_eq!(resolved.attempts, 2);

        let (reopened, created) = store
            .observe_incident(finding("container_down", "app:shop", Severity::Medium))
            .await
            .unwrap();
        assert!(
            created,
            "a resolved problem that comes back is a new incident"
        );
        assert_ne!(reopened.id, first.id);
        assert!(
            !store
                .set_incident_state(999, IncidentState::Open)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_finding_observed_before_its_incident_was_resolved_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let f = || finding("container_down", "app:shop", Severity::High);
        let before = now_rfc3339();
        let (first, created) = store.observe_incident(f()).await.unwrap();
        assert!(created);
        std::thread::sleep(std::time::Duration::from_millis(5));
        store
            .transition_incident(first.id, vec![IncidentState::Open], IncidentState::Resolved)
            .await
            .unwrap();
        // A round that looked before the repair finished: stale, nothing opens.
        let (stale, created) = store.observe_incident_at(f(), Some(before)).await.unwrap();
        assert!(!created);
        assert_eq!((stale.id, stale.state), (first.id, IncidentState::Resolved));
        // A round that looked after: the problem is back, a new incident.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (again, created) = store
            .observe_incident_at(f(), Some(now_rfc3339()))
            .await
            .unwrap();
        assert!(created && again.id != first.id, "{again:?}");
    }

    #[tokio::test]
    async fn incidents_filter_by_state_kind_component_and_severity() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, _) = store
            .observe_incident(finding("disk_low", "host", Severity::High))
            .await
            .unwrap();
        store
            .observe_incident(finding("port_mismatch", "app:shop", Severity::Medium))
            .await
            .unwrap();
        store
            .observe_incident(finding("proxy_down", "proxy", Severity::Critical))
            .await
            .unwrap();
        store
            .set_incident_state(a.id, IncidentState::Resolved)
            .await
            .unwrap();

        let kinds = |incidents: Vec<Incident>| {
            let mut kinds: Vec<_> = incidents.into_iter().map(|i| i.kind).collect();
            kinds.sort();
            kinds
        };
        let all = store.incidents(IncidentFilter::default()).await.unwrap();
        assert_eq!(kinds(all), ["disk_low", "port_mismatch", "proxy_down"]);
        let unresolved = store.incidents(IncidentFilter::unresolved()).await.unwrap();
        assert_eq!(kinds(unresolved), ["port_mismatch", "proxy_down"]);
        let severe = IncidentFilter {
            min_severity: Some(Severity::High),
            ..IncidentFilter::default()
        };
        assert_eq!(
            kinds(store.incidents(severe).await.unwrap()),
            ["disk_low", "proxy_down"]
        );
        let shop = IncidentFilter {
            component: Some("app:shop".into()),
            kind: Some("port_mismatch".into()),
            ..IncidentFilter::default()
        };
        assert_eq!(
            kinds(store.incidents(shop).await.unwrap()),
            ["port_mismatch"]
        );
        let one = IncidentFilter {
            limit: 1,
            ..IncidentFilter::default()
        };
        assert_eq!(store.incidents(one).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn recoveries_give_success_rates_per_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (incident, _) = store
            .observe_incident(finding("not_on_network", "app:shop", Severity::High))
            .await
            .unwrap();
        for outcome in [
            RecoveryOutcome::Failed,
            RecoveryOutcome::Success,
            RecoveryOutcome::Skipped,
        ] {
            store
                .record_recovery(NewRecovery {
                    incident_id: incident.id,
                    kind: incident.kind.clone(),
                    action: "reconnect to devops-butler-net".into(),
                    started_at: now_rfc3339(),
                    outcome,
                    detail: String::new(),
                })
                .await
                .unwrap();
        }
        let recoveries = store.recoveries(Some(incident.id), 0).await.unwrap();
        assert_eq!(recoveries.len(), 3);
        assert_eq!(
            recoveries[0].outcome,
            RecoveryOutcome::Skipped,
            "newest first"
        );
        assert!(
            store
                .recoveries(Some(incident.id + 1), 0)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            store.recovery_success_rates().await.unwrap(),
            vec![SuccessRate {
                kind: "not_on_network".into(),
                attempts: 2,
                successes: 1,
                rate: 0.5
            }]
        );
    }

    #[tokio::test]
    async fn checks_and_app_health_keep_the_latest_round() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let check = |ok: bool, detail: &str| CheckResult {
            subject: "app:shop".into(),
            name: "tcp".into(),
            ok,
            latency_ms: Some(1.5),
            detail: detail.into(),
            checked_at: String::new(),
        };
        store
            .record_checks(vec![check(false, "refused")])
            .await
            .unwrap();
        store
            .record_checks(vec![check(true, "connected")])
            .await
            .unwrap();
        let checks = store.checks().await.unwrap();
        assert_eq!(checks.len(), 1);
        assert!(checks[0].ok && checks[0].detail == "connected");
        assert!(!checks[0].checked_at.is_empty());
        store
            .forget_check_subjects(vec!["app:shop".into()])
            .await
            .unwrap();
        assert!(store.checks().await.unwrap().is_empty());

        let health = |app: &str, status| AppHealth {
            app: app.into(),
            status,
            reason: "ok".into(),
            latency_ms: None,
            started_at: None,
            checked_at: String::new(),
        };
        store
            .replace_app_health(vec![
                health("a", AppStatus::Down),
                health("b", AppStatus::Healthy),
            ])
            .await
            .unwrap();
        store
            .replace_app_health(vec![health("b", AppStatus::Degraded)])
            .await
            .unwrap();
        let apps = store.app_health().await.unwrap();
        assert_eq!(apps.len(), 1);
        assert_eq!(apps[0].status, AppStatus::Degraded);
    }

    #[tokio::test]
    async fn samples_are_read_by_metric_and_time_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .add_samples(vec![
                ("disk_free_bytes:/".into(), 1_000, 50.0),
                ("disk_free_bytes:/".into(), 2_000, 40.0),
                ("load1".into(), 2_000, 0.5),
            ])
            .await
            .unwrap();
        let disk = store
            .samples("disk_free_bytes:/".into(), 1_500)
            .await
            .unwrap();
        assert_eq!(
            disk,
            vec![Sample {
                at_ms: 2_000,
                value: 40.0
            }]
        );
        assert_eq!(store.prune_samples(1_500).await.unwrap(), 1);
        assert_eq!(
            store
                .samples("disk_free_bytes:/".into(), 0)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn conditional_transitions_never_reopen_a_resolved_incident() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (incident, _) = store
            .observe_incident(finding("port_mismatch", "app:shop", Severity::High))
            .await
            .unwrap();
        store.start_recovery_attempt(incident.id).await.unwrap();
        assert!(
            store
                .transition_incident(
                    incident.id,
                    vec![IncidentState::Open, IncidentState::Recovering],
                    IncidentState::Resolved
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .transition_incident(
                    incident.id,
                    vec![IncidentState::Recovering],
                    IncidentState::Open
                )
                .await
                .unwrap(),
            "a resolved incident stays resolved"
        );
        assert_eq!(
            store.start_recovery_attempt(incident.id).await.unwrap(),
            None,
            "nor does a repair that started late"
        );
        let stored = store.incident(incident.id).await.unwrap().unwrap();
        assert_eq!(stored.state, IncidentState::Resolved);
        assert_eq!(stored.attempts, 1);
        assert!(stored.resolved_at.is_some());
    }

    #[tokio::test]
    async fn alerts_are_claimed_once_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let claim = |now: i64| store.claim_alert("0:x".into(), "disk_low host".into(), now, 1_000);
        assert!(claim(10_000).await.unwrap());
        assert!(!claim(10_500).await.unwrap());
        assert!(claim(11_000).await.unwrap());
        assert!(
            store
                .claim_alert("1:y".into(), "disk_low host".into(), 11_000, 1_000)
                .await
                .unwrap(),
            "rules are limited apart"
        );
    }

    #[test]
    fn text_enums_round_trip_and_reject_unknown_values() {
        for severity in Severity::ALL {
            assert_eq!(severity.as_str().parse::<Severity>().unwrap(), *severity);
        }
        assert!(Severity::Low < Severity::Critical);
        let error = "urgent".parse::<Severity>().unwrap_err();
        assert!(error.contains("low, medium, high, critical"), "{error}");
        assert_eq!(
            serde_json::to_string(&IncidentState::Recovering).unwrap(),
            "\"recovering\""
        );
    }
}
