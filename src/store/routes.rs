//! The current routes, replaced as a whole after each reconcile: what `butler proxy routes` and the
//! dashboard show, including the chosen port and why.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError, now_rfc3339, query_err};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRow {
    pub app: String,
    pub hosts: Vec<String>,
    /// Upstream servers, `ip:port`.
    pub servers: Vec<String>,
    pub port: u16,
    /// Why this port: "label butler.port", "only exposed port", "listening socket", ...
    pub reason: String,
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
                        "INSERT INTO routes (app, hosts, servers, port, reason, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
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
                            now
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
                .prepare_cached("SELECT app, hosts, servers, port, reason FROM routes ORDER BY app")
                .map_err(query_err(path, "reading routes"))?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, u16>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                })
                .map_err(query_err(path, "reading routes"))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, "reading routes"))?;
            rows.into_iter()
                .map(|(app, hosts, servers, port, reason)| {
                    let list = |text: &str| {
                        serde_json::from_str::<Vec<String>>(text).map_err(|e| StoreError::Corrupt {
                            path: path.to_owned(),
                            what: "route",
                            reason: format!("{app}: {e}"),
                        })
                    };
                    Ok(RouteRow {
                        hosts: list(&hosts)?,
                        servers: list(&servers)?,
                        app,
                        port,
                        reason,
                    })
                })
                .collect()
        })
        .await
    }
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
}
