//! The current routes, replaced as a whole after each reconcile: what `butler proxy routes` and the
//! dashboard show, including the chosen port and why.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use std::collections::BTreeSet;

use super::{Store, StoreError, query_err};
use crate::clock::now_rfc3339;
use crate::docker::events::StopMark;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub app: String,
    pub hosts: Vec<String>,
    /// Upstream servers, `ip:port`.
    pub servers: Vec<String>,
    pub port: u16,
    /// Why this port: "label butler.port", "only exposed port", "listening socket", ...
    pub reason: String,
    /// Set when every container of the app has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Down>,
}

impl Store {
    /// Replaces every route in one transaction: readers see the old set or the new one.
    pub async fn replace_routes(&self, routes: Vec<RouteRow>) -> Result<(), StoreError> {
        self.call(move |conn, path| {
            let tx = conn
                .transaction()
                .map_err(query_err(path, "replacing routes"))?;
            tx.execute("DELETE FROM routes", [])
                .map_err(query_err(path, "replacing routes"))?;
            let now = now_rfc3339();
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO routes (app, hosts, servers, port, reason, updated_at, down)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(query_err(path, "replacing routes"))?;
                for route in &routes {
                    insert
                        .execute(params![
                            route.app,
                            serde_json::to_string(&route.hosts).expect("strings serialize"),
                            serde_json::to_string(&route.servers).expect("strings serialize"),
                            route.port,
                            route.reason,
                            now,
                            route
                                .down
                                .as_ref()
                                .map(|d| serde_json::to_string(d).expect("plain data serializes")),
                        ])
                        .map_err(query_err(path, "replacing routes"))?;
                }
            }
            tx.commit().map_err(query_err(path, "replacing routes"))
        })
        .await
    }

    /// Every route, by app name.
    pub async fn routes(&self) -> Result<Vec<RouteRow>, StoreError> {
        self.call(|conn, path| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT app, hosts, servers, port, reason, down FROM routes ORDER BY app",
                )
                .map_err(query_err(path, "reading routes"))?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, u16>(3)?,
                        row.get::<_, String>(4)?,
                        row.get::<_, Option<String>>(5)?,
                    ))
                })
                .map_err(query_err(path, "reading routes"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, "reading routes"))?;
            rows.into_iter()
                .map(|(app, hosts, servers, port, reason, down)| {
                    let list = |text: &str| {
                        serde_json::from_str::<Vec<String>>(text).map_err(|e| StoreError::Corrupt {
                            path: path.to_owned(),
                            what: "route",
                            reason: format!("{app}: {e}"),
                        })
                    };
                    let down =
                        match down {
                            Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                                StoreError::Corrupt {
                                    path: path.to_owned(),
                                    what: "route",
                                    reason: format!("{app}: {e}"),
                                }
                            })?),
                            None => None,
                        };
                    Ok(RouteRow {
                        hosts: list(&hosts)?,
                        servers: list(&servers)?,
                        app,
                        port,
                        reason,
                        down,
                    })
                })
                .collect()
        })
        .await
    }
}

impl Store {
    /// Records what the engine's events said of containers being stopped by a user (see
    /// `StopMark`); a cleared mark is dropped.
    pub async fn record_user_stops(
        &self,
        marks: Vec<(String, StopMark)>,
    ) -> Result<(), StoreError> {
        if marks.is_empty() {
            return Ok(());
        }
        self.call(move |conn, path| {
            let tx = conn
                .transaction()
                .map_err(query_err(path, "recording container stops"))?;
            let now = now_rfc3339();
            for (id, mark) in &marks {
                match mark {
                    StopMark::Cleared => tx.execute(
                        "DELETE FROM container_stops WHERE container_id = ?1",
                        params![id],
                    ),
                    mark => tx.execute(
                        "INSERT INTO container_stops (container_id, state, at) VALUES (?1, ?2, ?3)
                         ON CONFLICT (container_id) DO UPDATE SET state = excluded.state, at = excluded.at",
                        params![id, mark.as_str(), now],
                    ),
                }
                .map_err(query_err(path, "recording container stops"))?;
            }
            tx.commit()
                .map_err(query_err(path, "recording container stops"))
        })
        .await
    }

    /// Ids of the containers a user stopped (and that have not started since).
    pub async fn user_stopped(&self) -> Result<BTreeSet<String>, StoreError> {
        Ok(self.stop_marks().await?.stopped)
    }

    /// Every container's stop mark.
    pub async fn stop_marks(&self) -> Result<StopMarks, StoreError> {
        self.call(|conn, path| {
            let mut statement = conn
                .prepare_cached("SELECT container_id, state FROM container_stops")
                .map_err(query_err(path, "reading container stops"))?;
            let rows = statement
                .query_map([], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .map_err(query_err(path, "reading container stops"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, "reading container stops"))?;
            let mut marks = StopMarks::default();
            for (id, state) in rows {
                if state == StopMark::Stopped.as_str() {
                    marks.stopped.insert(id);
                } else {
                    marks.requested.insert(id);
                }
            }
            Ok(marks)
        })
        .await
    }
}

/// How an app's last container ended. Every field passed validation (`since` is a plain
/// timestamp), so it may be rendered into the app's 503 page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    /// The container that ended last.
    pub container_name: String,
    pub exit_code: i64,
    pub oom_killed: bool,
    /// A user stopped it (`docker stop`), or it exited cleanly: `stopped`, not a failure.
    pub stopped: bool,
    /// When it ended, `YYYY-MM-DD HH:MM:SS UTC`; `None` when the engine gave no valid time.
    pub since: Option<String>,
}

impl Down {
    /// `down` or `stopped`.
    pub fn state(&self) -> &'static str {
        if self.stopped { "stopped" } else { "down" }
    }

    /// One line for people: "container shop-1 exited with code 137 (killed, out of memory) at
    /// 2026-12-02 11:40:20 UTC".
    pub fn describe(&self) -> String {
        let mut text = format!(
            "container {} {} with code {}",
            self.container_name,
            if self.stopped && self.exit_code != 0 {
                "was stopped"
            } else {
                "exited"
            },
            self.exit_code
        );
        let mut notes = Vec::new();
        if self.exit_code == 137 && !self.stopped {
            notes.push("killed");
        }
        if self.oom_killed {
            notes.push("out of memory");
        }
        if !notes.is_empty() {
            text.push_str(&format!(" ({})", notes.join(", ")));
        }
        if let Some(since) = &self.since {
            text.push_str(&format!(" at {since}"));
        }
        text
    }
}

/// Containers by what the engine's events said of a user stopping them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopMarks {
    /// A `stop` event named them.
    pub stopped: BTreeSet<String>,
    /// A gentle `kill` named them and no `stop` yet: a `docker stop` may be under way.
    pub requested: BTreeSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(app: &str, port: u16) -> RouteRow {
        RouteRow {
            app: app.into(),
            hosts: vec![format!("{app}.localhost")],
            servers: vec![format!("172.18.0.2:{port}")],
            port,
            reason: "only exposed port".into(),
            down: None,
        }
    }

    #[tokio::test]
    async fn routes_are_replaced_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .replace_routes(vec![route("web", 80), route("api", 3000)])
            .await
            .unwrap();
        store
            .replace_routes(vec![route("shop", 8080)])
            .await
            .unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.routes().await.unwrap(), vec![route("shop", 8080)]);
    }

    #[tokio::test]
    async fn a_down_route_keeps_how_its_app_ended() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut down = route("shop", 0);
        down.servers.clear();
        down.down = Some(Down {
            container_name: "shop".into(),
            exit_code: 137,
            oom_killed: true,
            stopped: false,
            since: Some("2026-12-02 11:40:20 UTC".into()),
        });
        store.replace_routes(vec![down.clone()]).await.unwrap();
        assert_eq!(store.routes().await.unwrap(), vec![down]);
    }

    #[tokio::test]
    async fn user_stops_are_marked_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .record_user_stops(vec![
                ("a".into(), StopMark::Stopped),
                ("b".into(), StopMark::Requested),
                ("c".into(), StopMark::Requested),
            ])
            .await
            .unwrap();
        store
            .record_user_stops(vec![
                ("a".into(), StopMark::Cleared),
                ("b".into(), StopMark::Stopped),
                ("d".into(), StopMark::Cleared),
            ])
            .await
            .unwrap();
        let marks = store.stop_marks().await.unwrap();
        assert_eq!(marks.stopped, BTreeSet::from(["b".to_string()]));
        assert_eq!(marks.requested, BTreeSet::from(["c".to_string()]));
    }
}
