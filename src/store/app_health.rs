//! The `app_health` table: each app's status from the health-monitor's latest round, replaced
//! whole so readers see one round or the next.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, parse_text, query_err};
use crate::clock::now_rfc3339;
use crate::vocabulary::AppStatus;

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

impl Store {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn app_health_keeps_the_latest_round() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
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
}
