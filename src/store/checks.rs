//! The `checks` table: the latest result of every check on every subject, written by the
//! health-monitor each round and read by the CLI and the dashboard.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, query_err};
use crate::clock::now_rfc3339;

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checks_keep_the_latest_round() {
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
    }
}
