//! The `samples` table: host measurements over time (`metric`, Unix ms, value), appended by the
//! health-monitor, read back for forecasts and pruned by age.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, query_err};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    pub value: f64,
}

impl Store {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
