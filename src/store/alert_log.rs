//! The `alert_log` table: when each alert rule last fired for each problem, so a rule fires at
//! most once per interval across processes and restarts.

use rusqlite::params;

use super::{Store, StoreError, query_err};

impl Store {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
