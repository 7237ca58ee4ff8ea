//! The `recoveries` table: every recovery action the recovery worker tried, with its outcome, and
//! the success rate per incident kind computed from them.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{DEFAULT_LIMIT, Store, StoreError, parse_text, query_err};
use crate::clock::now_rfc3339;
use crate::text_enum::text_enum;

text_enum! {
    RecoveryOutcome { Success => "success", Failed => "failed", Skipped => "skipped" }
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

impl Store {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::incidents::tests::finding;
    use crate::vocabulary::Severity;

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
}
