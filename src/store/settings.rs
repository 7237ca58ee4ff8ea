//! Named values that outlive a restart: the config version an operator pinned with
//! `butler proxy rollback`, which the dynamic proxy then keeps until `butler proxy-update`.

use rusqlite::{OptionalExtension as _, params};

use super::{Store, StoreError, query_err};

const PINNED_VERSION: &str = "proxy.pinned_version";

impl Store {
    /// Pins (or with `None` unpins) the applied config version.
    pub async fn pin_version(&self, id: Option<i64>) -> Result<(), StoreError> {
        self.call(move |conn, path| {
            match id {
                Some(id) => conn.execute(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    params![PINNED_VERSION, id.to_string()],
                ),
                None => conn.execute(
                    "DELETE FROM settings WHERE key = ?1",
                    params![PINNED_VERSION],
                ),
            }
            .map_err(query_err(path, "pinning a config version"))?;
            Ok(())
        })
        .await
    }

    pub async fn pinned_version(&self) -> Result<Option<i64>, StoreError> {
        self.call(|conn, path| {
            let value: Option<String> = conn
                .query_row(
                    "SELECT value FROM settings WHERE key = ?1",
                    params![PINNED_VERSION],
                    |row| row.get(0),
                )
                .optional()
                .map_err(query_err(path, "reading the pinned config version"))?;
            Ok(value.and_then(|v| v.parse().ok()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pin_survives_reopening_and_can_be_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.pinned_version().await.unwrap(), None);
        store.pin_version(Some(7)).await.unwrap();
        store.pin_version(Some(9)).await.unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.pinned_version().await.unwrap(), Some(9));
        store.pin_version(None).await.unwrap();
        assert_eq!(store.pinned_version().await.unwrap(), None);
    }
}
