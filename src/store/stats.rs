//! Aggregates over the other workers' tables, for `/metrics` and the dashboard's summary: counts
//! grouped in SQL so a scrape reads a handful of rows, not every incident ever recorded.

use super::RecoveryOutcome;
use super::parse_text;
use super::{Store, StoreError, VersionTimings, query_err};
use crate::vocabulary::{IncidentState, Severity};

/// Counts over every recorded config version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VersionStats {
    pub versions: i64,
    pub applied: i64,
    /// Versions for which nginx was reloaded (applied, or rolled back after the reload).
    pub reloads: i64,
    /// Versions `nginx -t` refused: validated, never reloaded, not applied.
    pub failed_validations: i64,
    /// Each version's step timings, oldest first (for histograms).
    pub timings: Vec<VersionTimings>,
}

/// How many incidents of one kind, severity and state there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentCount {
    pub kind: String,
    pub severity: Severity,
    pub state: IncidentState,
    pub count: i64,
}

/// How many recoveries of one incident kind ended with one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryCount {
    pub kind: String,
    pub outcome: RecoveryOutcome,
    pub count: i64,
}

impl Store {
    /// SQLite's `data_version`: changes whenever another connection commits. Readers cache on it.
    pub async fn data_version(&self) -> Result<i64, StoreError> {
        self.call(|conn, path| {
            conn.pragma_query_value(None, "data_version", |row| row.get(0))
                .map_err(query_err(path, "reading the data version"))
        })
        .await
    }

    pub async fn version_stats(&self) -> Result<VersionStats, StoreError> {
        self.call(|conn, path| {
            let what = "counting config versions";
            let mut statement = conn
                .prepare_cached(
                    "SELECT applied, render_ms, validate_ms, reload_ms FROM config_versions
                     ORDER BY id",
                )
                .map_err(query_err(path, what))?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, bool>(0)?,
                        VersionTimings {
                            render_ms: row.get(1)?,
                            validate_ms: row.get(2)?,
                            reload_ms: row.get(3)?,
                        },
                    ))
                })
                .map_err(query_err(path, what))?;
            let mut stats = VersionStats::default();
            for row in rows {
                let (applied, timings) = row.map_err(query_err(path, what))?;
                stats.versions += 1;
                stats.applied += i64::from(applied);
                stats.reloads += i64::from(timings.reload_ms.is_some());
                stats.failed_validations += i64::from(
                    !applied && timings.validate_ms.is_some() && timings.reload_ms.is_none(),
                );
                stats.timings.push(timings);
            }
            Ok(stats)
        })
        .await
    }

    pub async fn incident_counts(&self) -> Result<Vec<IncidentCount>, StoreError> {
        self.call(|conn, path| {
            let rows = counted(
                conn,
                path,
                "counting incidents",
                "SELECT kind, severity, state, COUNT(*) FROM incidents
                 GROUP BY kind, severity, state ORDER BY kind, severity, state",
            )?;
            rows.into_iter()
                .map(|(mut keys, count)| {
                    let state = keys.pop().unwrap_or_default();
                    let severity = keys.pop().unwrap_or_default();
                    Ok(IncidentCount {
                        severity: parse_text(path, "incident severity", &severity)?,
                        state: parse_text(path, "incident state", &state)?,
                        kind: keys.pop().unwrap_or_default(),
                        count,
                    })
                })
                .collect()
        })
        .await
    }

    pub async fn recovery_counts(&self) -> Result<Vec<RecoveryCount>, StoreError> {
        self.call(|conn, path| {
            let rows = counted(
                conn,
                path,
                "counting recoveries",
                "SELECT kind, outcome, COUNT(*) FROM recoveries
                 GROUP BY kind, outcome ORDER BY kind, outcome",
            )?;
            rows.into_iter()
                .map(|(mut keys, count)| {
                    let outcome = keys.pop().unwrap_or_default();
                    Ok(RecoveryCount {
                        outcome: parse_text(path, "recovery outcome", &outcome)?,
                        kind: keys.pop().unwrap_or_default(),
                        count,
                    })
                })
                .collect()
        })
        .await
    }
}

/// The rows of a `GROUP BY` query: its text columns, then the count in the last column.
fn counted(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    what: &'static str,
    sql: &str,
) -> Result<Vec<(Vec<String>, i64)>, StoreError> {
    let mut statement = conn.prepare_cached(sql).map_err(query_err(path, what))?;
    let keys = statement.column_count() - 1;
    statement
        .query_map([], |row| {
            let texts = (0..keys)
                .map(|i| row.get::<_, String>(i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((texts, row.get::<_, i64>(keys)?))
        })
        .map_err(query_err(path, what))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(query_err(path, what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewRecovery, NewVersion};
    use crate::vocabulary::Finding;

    #[tokio::test]
    async fn counts_group_versions_incidents_and_recoveries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let version = |applied: bool, validate: Option<f64>, reload: Option<f64>| NewVersion {
            hash: "h".into(),
            cause: "test".into(),
            summary: String::new(),
            files: Default::default(),
            applied,
            error: None,
            timings: VersionTimings {
                render_ms: Some(2.0),
                validate_ms: validate,
                reload_ms: reload,
            },
        };
        for v in [
            version(true, Some(40.0), Some(100.0)),
            version(false, Some(30.0), None),
            version(false, Some(30.0), Some(90.0)),
            version(false, None, None),
        ] {
            store.record_version(v).await.unwrap();
        }
        let stats = store.version_stats().await.unwrap();
        assert_eq!(
            (
                stats.versions,
                stats.applied,
                stats.reloads,
                stats.failed_validations
            ),
            (4, 1, 2, 1)
        );
        assert_eq!(stats.timings.len(), 4);

        let finding = |kind: &str, component: &str| Finding {
            kind: kind.into(),
            severity: Severity::High,
            component: component.into(),
            summary: "x".into(),
        };
        let (incident, _) = store
            .observe_incident(finding("app_down", "app:a"))
            .await
            .unwrap();
        store
            .observe_incident(finding("app_down", "app:b"))
            .await
            .unwrap();
        assert_eq!(
            store.incident_counts().await.unwrap(),
            vec![IncidentCount {
                kind: "app_down".into(),
                severity: Severity::High,
                state: IncidentState::Open,
                count: 2
            }]
        );
        store
            .record_recovery(NewRecovery {
                incident_id: incident.id,
                kind: "app_down".into(),
                action: "restart".into(),
                started_at: crate::clock::now_rfc3339(),
                outcome: RecoveryOutcome::Success,
                detail: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(
            store.recovery_counts().await.unwrap(),
            vec![RecoveryCount {
                kind: "app_down".into(),
                outcome: RecoveryOutcome::Success,
                count: 1
            }]
        );
    }
}
