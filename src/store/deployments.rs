//! Deployments: one row per `butler deploy` or `butler rollback` (app, revision, image, source,
//! times, outcome, duration, the settings a rollback reuses) and the health gate: which
//! deployments' containers may be in an upstream. `butler deploy` writes; the reconciler reads the
//! held set on every round; the CLI and the dashboard read the history.

use std::collections::BTreeSet;
use std::time::Duration;

use rusqlite::{OptionalExtension as _, Row, params};
use serde::Serialize;

use super::{Store, StoreError, parse_text, query_err};
use crate::clock::now_rfc3339;
use crate::text_enum::text_enum;

text_enum! {
    /// `running` until the deploy ends; `failed`: never went live, the previous revision kept
    /// serving; `rolled_back`: went live, failed after, and the previous revision was restored.
    DeployOutcome {
        Running => "running",
        Deployed => "deployed",
        Failed => "failed",
        RolledBack => "rolled_back",
    }
}

text_enum! {
    /// Whether a deployment's containers may be in an upstream. `pending`: started, not yet proven
    /// healthy; `serving`: in the upstream; `retired`: leaving it, then removed. A deployment whose
    /// containers are gone has no gate.
    Gate { Pending => "pending", Serving => "serving", Retired => "retired" }
}

impl Gate {
    /// Pending and retired containers stay out of every upstream.
    pub fn holds(self) -> bool {
        self != Gate::Serving
    }
}

/// What `start_deployment` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeployment {
    pub app: String,
    pub revision: String,
    pub image_id: String,
    /// What the user deployed: the source as typed (with `@ref` for git), or `rollback …`.
    pub source: String,
    /// The deploy's settings as JSON, for a later rollback to this revision.
    pub spec: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deployment {
    pub id: i64,
    pub app: String,
    pub revision: String,
    pub image_id: String,
    pub source: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: DeployOutcome,
    pub duration_ms: Option<i64>,
    /// Why it failed, or what else a reader should know.
    pub detail: String,
    pub gate: Option<Gate>,
    #[serde(skip)]
    pub spec: String,
}

const COLUMNS: &str = "id, app, revision, image_id, source, started_at, finished_at, outcome, \
                       duration_ms, detail, gate, spec";

fn read_row(row: &Row<'_>) -> rusqlite::Result<RawDeployment> {
    Ok(RawDeployment {
        id: row.get(0)?,
        app: row.get(1)?,
        revision: row.get(2)?,
        image_id: row.get(3)?,
        source: row.get(4)?,
        started_at: row.get(5)?,
        finished_at: row.get(6)?,
        outcome: row.get(7)?,
        duration_ms: row.get(8)?,
        detail: row.get(9)?,
        gate: row.get(10)?,
        spec: row.get(11)?,
    })
}

/// A row as stored, before its text enums are checked.
struct RawDeployment {
    id: i64,
    app: String,
    revision: String,
    image_id: String,
    source: String,
    started_at: String,
    finished_at: Option<String>,
    outcome: String,
    duration_ms: Option<i64>,
    detail: String,
    gate: Option<String>,
    spec: String,
}

impl RawDeployment {
    fn parse(self, path: &std::path::Path) -> Result<Deployment, StoreError> {
        Ok(Deployment {
            outcome: parse_text(path, "deployment outcome", &self.outcome)?,
            gate: self
                .gate
                .map(|g| parse_text(path, "deployment gate", &g))
                .transpose()?,
            id: self.id,
            app: self.app,
            revision: self.revision,
            image_id: self.image_id,
            source: self.source,
            started_at: self.started_at,
            finished_at: self.finished_at,
            duration_ms: self.duration_ms,
            detail: self.detail,
            spec: self.spec,
        })
    }
}

impl Store {
    /// Records a deploy that is about to start containers: outcome `running`, gate `pending`, so
    /// its containers are held out of the upstream from their first moment.
    pub async fn start_deployment(&self, new: NewDeployment) -> Result<i64, StoreError> {
        self.call(move |conn, path| {
            conn.execute(
                "INSERT INTO deployments (app, revision, image_id, source, started_at, outcome, gate, spec)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    new.app,
                    new.revision,
                    new.image_id,
                    new.source,
                    now_rfc3339(),
                    DeployOutcome::Running.as_str(),
                    Gate::Pending.as_str(),
                    new.spec
                ],
            )
            .map_err(query_err(path, "recording a deployment"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    /// Sets the gate of `ids` in one transaction (`None`: their containers are gone).
    pub async fn set_gate(&self, ids: Vec<i64>, gate: Option<Gate>) -> Result<(), StoreError> {
        self.call(move |conn, path| {
            let what = "changing a deployment's gate";
            let tx = conn.transaction().map_err(query_err(path, what))?;
            for id in &ids {
                tx.execute(
                    "UPDATE deployments SET gate = ?2 WHERE id = ?1",
                    params![id, gate.map(Gate::as_str)],
                )
                .map_err(query_err(path, what))?;
            }
            tx.commit().map_err(query_err(path, what))
        })
        .await
    }

    /// Ends a deployment: its outcome, what to say about it, and how long it took.
    pub async fn finish_deployment(
        &self,
        id: i64,
        outcome: DeployOutcome,
        detail: String,
        duration: Duration,
    ) -> Result<(), StoreError> {
        self.call(move |conn, path| {
            conn.execute(
                "UPDATE deployments SET outcome = ?2, detail = ?3, duration_ms = ?4, finished_at = ?5
                 WHERE id = ?1",
                params![
                    id,
                    outcome.as_str(),
                    detail,
                    duration.as_millis() as i64,
                    now_rfc3339()
                ],
            )
            .map_err(query_err(path, "finishing a deployment"))?;
            Ok(())
        })
        .await
    }

    /// Ids (as the `butler.deploy.id` label carries them) of the deployments whose containers
    /// must stay out of every upstream: pending and retired ones.
    pub async fn held_deployments(&self) -> Result<BTreeSet<String>, StoreError> {
        self.call(|conn, path| {
            let what = "reading the held deployments";
            let mut statement = conn
                .prepare_cached("SELECT id, gate FROM deployments WHERE gate IS NOT NULL")
                .map_err(query_err(path, what))?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(query_err(path, what))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, what))?;
            let mut held = BTreeSet::new();
            for (id, gate) in rows {
                if parse_text::<Gate>(path, "deployment gate", &gate)?.holds() {
                    held.insert(id.to_string());
                }
            }
            Ok(held)
        })
        .await
    }

    /// Deployments newest first, of one app or of all; at most `limit`.
    pub async fn deployments(
        &self,
        app: Option<String>,
        limit: usize,
    ) -> Result<Vec<Deployment>, StoreError> {
        self.call(move |conn, path| {
            let what = "reading deployments";
            let sql = format!(
                "SELECT {COLUMNS} FROM deployments WHERE ?1 IS NULL OR app = ?1 ORDER BY id DESC LIMIT ?2"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(query_err(path, what))?;
            let rows = statement
                .query_map(params![app, limit as i64], read_row)
                .map_err(query_err(path, what))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, what))?;
            rows.into_iter().map(|raw| raw.parse(path)).collect()
        })
        .await
    }

    /// The deployments of `app` whose containers may still exist (any gate), oldest first.
    pub async fn gated_deployments(&self, app: String) -> Result<Vec<Deployment>, StoreError> {
        self.call(move |conn, path| {
            let what = "reading an app's live deployments";
            let sql = format!(
                "SELECT {COLUMNS} FROM deployments WHERE app = ?1 AND gate IS NOT NULL ORDER BY id"
            );
            let mut statement = conn.prepare_cached(&sql).map_err(query_err(path, what))?;
            let rows = statement
                .query_map(params![app], read_row)
                .map_err(query_err(path, what))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, what))?;
            rows.into_iter().map(|raw| raw.parse(path)).collect()
        })
        .await
    }

    pub async fn deployment(&self, id: i64) -> Result<Option<Deployment>, StoreError> {
        self.call(move |conn, path| {
            let sql = format!("SELECT {COLUMNS} FROM deployments WHERE id = ?1");
            conn.query_row(&sql, params![id], read_row)
                .optional()
                .map_err(query_err(path, "reading a deployment"))?
                .map(|raw| raw.parse(path))
                .transpose()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(app: &str, revision: &str) -> NewDeployment {
        NewDeployment {
            app: app.into(),
            revision: revision.into(),
            image_id: format!("sha256:{revision}"),
            source: "alice/shop".into(),
            spec: "{}".into(),
        }
    }

    #[tokio::test]
    async fn a_deployment_is_held_until_it_serves_and_again_when_retired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.start_deployment(new("shop", "aaa")).await.unwrap();
        assert_eq!(
            store.held_deployments().await.unwrap(),
            BTreeSet::from([first.to_string()])
        );
        store
            .set_gate(vec![first], Some(Gate::Serving))
            .await
            .unwrap();
        assert!(store.held_deployments().await.unwrap().is_empty());

        let second = store.start_deployment(new("shop", "bbb")).await.unwrap();
        store
            .set_gate(vec![second], Some(Gate::Serving))
            .await
            .unwrap();
        store
            .set_gate(vec![first], Some(Gate::Retired))
            .await
            .unwrap();
        assert_eq!(
            store.held_deployments().await.unwrap(),
            BTreeSet::from([first.to_string()])
        );
        store.set_gate(vec![first], None).await.unwrap();
        assert!(store.held_deployments().await.unwrap().is_empty());
        let live: Vec<i64> = store
            .gated_deployments("shop".into())
            .await
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(live, [second]);
    }

    #[tokio::test]
    async fn history_is_newest_first_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.start_deployment(new("shop", "aaa")).await.unwrap();
        let b = store.start_deployment(new("blog", "ccc")).await.unwrap();
        store
            .finish_deployment(
                a,
                DeployOutcome::Deployed,
                String::new(),
                Duration::from_millis(1500),
            )
            .await
            .unwrap();
        store
            .finish_deployment(
                b,
                DeployOutcome::Failed,
                "never healthy".into(),
                Duration::from_secs(3),
            )
            .await
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let all = store.deployments(None, 10).await.unwrap();
        assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), [b, a]);
        assert_eq!(all[0].outcome, DeployOutcome::Failed);
        assert_eq!(all[0].detail, "never healthy");
        assert_eq!(all[1].duration_ms, Some(1500));
        assert!(all[1].finished_at.is_some());
        let shop = store.deployments(Some("shop".into()), 10).await.unwrap();
        assert_eq!(shop.len(), 1);
        assert_eq!(shop[0].image_id, "sha256:aaa");
        assert_eq!(store.deployment(b).await.unwrap().unwrap().app, "blog");
        assert_eq!(store.deployment(999).await.unwrap(), None);
    }
}
