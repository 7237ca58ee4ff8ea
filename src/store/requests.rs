//! A small queue of actions asked for through the dashboard's API (`proxy_update`, `fix_502`,
//! `service_restart`). The dashboard has no privileges of its own: it enqueues a request and waits
//! for its result; the worker allowed to act (dynamic-proxy, recovery) claims it, runs it and
//! finishes it. A request is claimed by one executor only: the claim is one UPDATE.

use std::time::SystemTime;

use rusqlite::{OptionalExtension as _, Row, params};
use serde::Serialize;

use super::{Store, StoreError, query_err};
use crate::clock::now_rfc3339;

pub use crate::config::REQUEST_MAX_AGE;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for an executor.
    Pending,
    /// An executor took it and is running it.
    Running,
    /// Finished: `ok` says how.
    Finished,
    /// Finished without ever being claimed (cancelled or expired): nothing was done.
    Abandoned,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionRequest {
    pub id: i64,
    pub action: String,
    pub target: Option<String>,
    pub state: RequestState,
    pub requested_at: String,
    pub claimed_at: Option<String>,
    pub finished_at: Option<String>,
    /// `None` until finished.
    pub ok: Option<bool>,
    /// What the executor reported (or why the request was abandoned).
    pub result: Option<serde_json::Value>,
}

const REQUEST_COLUMNS: &str =
    "id, action, target, requested_at, claimed_at, finished_at, ok, result_json";

fn request_from_row(row: &Row<'_>) -> rusqlite::Result<(ActionRequest, Option<String>)> {
    let claimed_at: Option<String> = row.get(4)?;
    let finished_at: Option<String> = row.get(5)?;
    let state = match (&claimed_at, &finished_at) {
        (None, None) => RequestState::Pending,
        (Some(_), None) => RequestState::Running,
        (Some(_), Some(_)) => RequestState::Finished,
        (None, Some(_)) => RequestState::Abandoned,
    };
    Ok((
        ActionRequest {
            id: row.get(0)?,
            action: row.get(1)?,
            target: row.get(2)?,
            state,
            requested_at: row.get(3)?,
            claimed_at,
            finished_at,
            ok: row.get(6)?,
            result: None,
        },
        row.get(7)?,
    ))
}

fn parse_result(
    path: &std::path::Path,
    (mut request, json): (ActionRequest, Option<String>),
) -> Result<ActionRequest, StoreError> {
    request.result = json
        .map(|text| serde_json::from_str(&text))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            what: "request result",
            reason: format!("request {}: {e}", request.id),
        })?;
    Ok(request)
}

fn select_request(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id: i64,
) -> Result<Option<ActionRequest>, StoreError> {
    conn.query_row(
        &format!("SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?1"),
        params![id],
        request_from_row,
    )
    .optional()
    .map_err(query_err(path, "reading a request"))?
    .map(|row| parse_result(path, row))
    .transpose()
}

impl Store {
    /// Queues `action` (on `target`, if it names one); returns the request's id.
    pub async fn enqueue_request(
        &self,
        action: String,
        target: Option<String>,
    ) -> Result<i64, StoreError> {
        self.call(move |conn, path| {
            conn.execute(
                "INSERT INTO requests (action, target, requested_at) VALUES (?1, ?2, ?3)",
                params![action, target, now_rfc3339()],
            )
            .map_err(query_err(path, "queueing a request"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    /// Takes the oldest pending request for one of `actions`, marking it claimed, so no other
    /// executor runs it too. Requests older than [`REQUEST_MAX_AGE`] are expired, not returned.
    pub async fn claim_request(
        &self,
        actions: &[&str],
    ) -> Result<Option<ActionRequest>, StoreError> {
        let actions: Vec<String> = actions.iter().map(|a| (*a).to_owned()).collect();
        self.call(move |conn, path| {
            let what = "claiming a request";
            if actions.is_empty() {
                return Ok(None);
            }
            // Executors ask every second: a read answers the usual "nothing pending" without
            // taking the write lock.
            let pending: bool = conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM requests
                     WHERE claimed_at IS NULL AND finished_at IS NULL)",
                )
                .and_then(|mut s| s.query_row([], |row| row.get(0)))
                .map_err(query_err(path, what))?;
            if !pending {
                return Ok(None);
            }
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(query_err(path, what))?;
            let now = now_rfc3339();
            let cutoff = crate::clock::rfc3339_millis(
                SystemTime::now()
                    .checked_sub(REQUEST_MAX_AGE)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            );
            let expired = serde_json::json!({
                "error": format!(
                    "expired: no executor claimed it within {}",
                    humantime::format_duration(REQUEST_MAX_AGE)
                )
            })
            .to_string();
            tx.execute(
                "UPDATE requests SET finished_at = ?1, ok = 0, result_json = ?2
                 WHERE claimed_at IS NULL AND finished_at IS NULL AND requested_at < ?3",
                params![now, expired, cutoff],
            )
            .map_err(query_err(path, what))?;
            let marks = vec!["?"; actions.len()].join(", ");
            let id: Option<i64> = tx
                .query_row(
                    &format!(
                        "SELECT id FROM requests WHERE claimed_at IS NULL AND finished_at IS NULL
                         AND action IN ({marks}) ORDER BY id LIMIT 1"
                    ),
                    rusqlite::params_from_iter(actions.iter()),
                    |row| row.get(0),
                )
                .optional()
                .map_err(query_err(path, what))?;
            let Some(id) = id else {
                tx.commit().map_err(query_err(path, what))?;
                return Ok(None);
            };
            tx.execute(
                "UPDATE requests SET claimed_at = ?2 WHERE id = ?1",
                params![id, now],
            )
            .map_err(query_err(path, what))?;
            let request = select_request(&tx, path, id)?;
            tx.commit().map_err(query_err(path, what))?;
            Ok(request)
        })
        .await
    }

    /// Records a claimed request's outcome. Returns false when there is no such running request.
    pub async fn finish_request(
        &self,
        id: i64,
        ok: bool,
        result: serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.call(move |conn, path| {
            let changed = conn
                .execute(
                    "UPDATE requests SET finished_at = ?2, ok = ?3, result_json = ?4
                     WHERE id = ?1 AND claimed_at IS NOT NULL AND finished_at IS NULL",
                    params![id, now_rfc3339(), ok, result.to_string()],
                )
                .map_err(query_err(path, "finishing a request"))?;
            Ok(changed > 0)
        })
        .await
    }

    /// Gives up on a request nobody has claimed yet, recording `reason`. Returns false when an
    /// executor claimed it first (it will finish it).
    pub async fn abandon_request(&self, id: i64, reason: String) -> Result<bool, StoreError> {
        self.call(move |conn, path| {
            let result = serde_json::json!({ "error": reason }).to_string();
            let changed = conn
                .execute(
                    "UPDATE requests SET finished_at = ?2, ok = 0, result_json = ?3
                     WHERE id = ?1 AND claimed_at IS NULL AND finished_at IS NULL",
                    params![id, now_rfc3339(), result],
                )
                .map_err(query_err(path, "abandoning a request"))?;
            Ok(changed > 0)
        })
        .await
    }

    pub async fn request(&self, id: i64) -> Result<Option<ActionRequest>, StoreError> {
        self.call(move |conn, path| select_request(conn, path, id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_claimed_once_and_finished_with_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store
            .enqueue_request("proxy_update".into(), None)
            .await
            .unwrap();
        let other = store
            .enqueue_request("service_restart".into(), Some("recovery".into()))
            .await
            .unwrap();
        assert_eq!(
            store.request(first).await.unwrap().unwrap().state,
            RequestState::Pending
        );
        assert!(store.claim_request(&["fix_502"]).await.unwrap().is_none());

        let claimed = store
            .claim_request(&["proxy_update", "service_restart"])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.id, first, "oldest first");
        assert_eq!(claimed.state, RequestState::Running);
        let next = store
            .claim_request(&["proxy_update", "service_restart"])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(next.id, other, "a claimed request is not handed out twice");
        assert_eq!(next.target.as_deref(), Some("recovery"));

        assert!(
            store
                .finish_request(first, true, serde_json::json!({"summary": "3 apps"}))
                .await
                .unwrap()
        );
        let done = store.request(first).await.unwrap().unwrap();
        assert_eq!(done.state, RequestState::Finished);
        assert_eq!(done.ok, Some(true));
        assert_eq!(done.result.unwrap()["summary"], "3 apps");
        assert!(
            !store
                .finish_request(first, false, serde_json::Value::Null)
                .await
                .unwrap(),
            "finished once"
        );
        assert!(store.request(999).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_unclaimed_request_can_be_abandoned_but_a_claimed_one_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lonely = store.enqueue_request("fix_502".into(), None).await.unwrap();
        assert!(
            store
                .abandon_request(lonely, "nobody answered".into())
                .await
                .unwrap()
        );
        let gone = store.request(lonely).await.unwrap().unwrap();
        assert_eq!(gone.state, RequestState::Abandoned);
        assert_eq!(gone.ok, Some(false));
        assert_eq!(gone.result.unwrap()["error"], "nobody answered");
        assert!(store.claim_request(&["fix_502"]).await.unwrap().is_none());

        let taken = store.enqueue_request("fix_502".into(), None).await.unwrap();
        store.claim_request(&["fix_502"]).await.unwrap().unwrap();
        assert!(!store.abandon_request(taken, "late".into()).await.unwrap());
    }

    #[tokio::test]
    async fn requests_nobody_claimed_in_time_expire_instead_of_running_late() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = store.enqueue_request("fix_502".into(), None).await.unwrap();
        let long_ago = humantime::format_rfc3339_millis(
            SystemTime::now() - REQUEST_MAX_AGE - std::time::Duration::from_secs(1),
        )
        .to_string();
        store
            .call(move |conn, _| {
                conn.execute(
                    "UPDATE requests SET requested_at = ?2 WHERE id = ?1",
                    params![old, long_ago],
                )
                .unwrap();
                Ok(())
            })
            .await
            .unwrap();
        assert!(store.claim_request(&["fix_502"]).await.unwrap().is_none());
        let expired = store.request(old).await.unwrap().unwrap();
        assert_eq!(expired.state, RequestState::Abandoned);
        assert!(
            expired.result.unwrap()["error"]
                .as_str()
                .unwrap()
                .contains("expired")
        );
    }
}
