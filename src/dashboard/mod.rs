//! The dashboard: HTML page, JSON API and Prometheus metrics over the store, served by the dashboard
//! worker. It only reads the store, except for actions, which it queues for the workers allowed to
//! run them (see `actions`). `router` builds the HTTP surface; the worker binds and serves it.

pub mod actions;
mod api;
pub mod auth;
pub mod metrics;
pub mod page;
mod router;
mod services;
pub mod view;

use std::io::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Bytes;

pub use router::router;

use crate::config::Config;
use crate::store::{IncidentFilter, Store, StoreError};
use view::{AppView, Links, Overview};

/// How many recent recoveries the page and overview show.
const RECENT_RECOVERIES: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error(transparent)]
    Page(#[from] page::PageError),
}

/// The dashboard's shared state: one per process, behind an `Arc` in every handler.
pub struct Dashboard {
    store: Store,
    links: Links,
    domain: String,
    token: auth::TokenSource,
    services: services::Services,
    action_wait: Duration,
    page: page::Page,
    apps: tokio::sync::Mutex<AppsCache>,
}

#[derive(Default)]
struct AppsCache {
    current: Option<AppsSnapshot>,
    /// A background rebuild is running: one at a time.
    refreshing: bool,
}

/// The app directory as of one store state and one second (uptimes move with the clock), with its
/// JSON ready: `/api/apps` under load serves these bytes without querying or serializing again.
#[derive(Clone)]
pub struct AppsSnapshot {
    key: (i64, u64),
    /// When the store last confirmed this snapshot is current.
    confirmed: Instant,
    pub apps: Arc<Vec<AppView>>,
    pub json: Bytes,
    /// The same JSON gzip-compressed, made on the first request that accepts it.
    gzip: Arc<OnceLock<Bytes>>,
}

impl AppsSnapshot {
    pub fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                encoder
                    .write_all(&self.json)
                    .expect("writing to a Vec cannot fail");
                Bytes::from(encoder.finish().expect("writing to a Vec cannot fail"))
            })
            .clone()
    }
}

/// How long a snapshot is served without asking the store whether anything changed: under load
/// this keeps requests off the blocking pool (one store query per window, not one per request).
const CONFIRMED_FOR: Duration = Duration::from_millis(250);

/// How far behind the clock a snapshot's uptimes may be and still be served while a fresh one is
/// built. Further behind (the dashboard was idle), a request waits for the rebuild.
const STALE_SECONDS_SERVED: u64 = 2;

fn unix_second(time: SystemTime) -> u64 {
    crate::clock::since_epoch(time).as_secs()
}

impl Dashboard {
    pub fn new(config: &Config, store: Store) -> Result<Self, DashboardError> {
        Ok(Dashboard {
            store,
            links: Links {
                http_port: config.proxy.http_port,
            },
            domain: config.proxy.domain.clone(),
            token: auth::TokenSource::load(config.dashboard.token_file.as_deref()),
            services: services::Services::default(),
            action_wait: config.dashboard.action_timeout.0,
            page: page::Page::new()?,
            apps: tokio::sync::Mutex::default(),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The app directory, rebuilt at once when another process wrote to the store. When only the
    /// clock moved (uptimes), the last snapshot is served while a background task rebuilds it: a
    /// rebuild (two queries, 1,000 views, 400 KB of JSON, its gzip) takes milliseconds, and every
    /// request that waited on it was the p99 of `/api/apps` under load.
    pub async fn apps(self: &Arc<Self>) -> Result<AppsSnapshot, StoreError> {
        let second = unix_second(SystemTime::now());
        // Held across the store query: concurrent requests wait for one answer, not ask again.
        let mut cache = self.apps.lock().await;
        let store_unchanged = match cache.current.as_mut() {
            Some(snapshot) if snapshot.confirmed.elapsed() < CONFIRMED_FOR => {
                Some(snapshot.clone())
            }
            Some(snapshot) if self.store.data_version().await? == snapshot.key.0 => {
                snapshot.confirmed = Instant::now();
                Some(snapshot.clone())
            }
            _ => None,
        };
        if let Some(snapshot) = store_unchanged {
            let behind = second.saturating_sub(snapshot.key.1);
            if behind <= STALE_SECONDS_SERVED {
                if behind > 0 && !cache.refreshing {
                    cache.refreshing = true;
                    let dash = Arc::clone(self);
                    tokio::spawn(async move { dash.refresh_apps().await });
                }
                return Ok(snapshot);
            }
        }
        let snapshot = self.build_apps(cache.current.as_ref()).await?;
        cache.current = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// The background half of [`Dashboard::apps`]: builds without holding the cache, then installs
    /// the result unless a request installed a newer one meanwhile.
    async fn refresh_apps(self: Arc<Self>) {
        let previous = self.apps.lock().await.current.clone();
        let built = self.build_apps(previous.as_ref()).await;
        let mut cache = self.apps.lock().await;
        cache.refreshing = false;
        match built {
            Ok(snapshot) if cache.current.as_ref().is_none_or(|c| c.key <= snapshot.key) => {
                cache.current = Some(snapshot);
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot refresh the app directory"),
        }
    }

    async fn build_apps(
        &self,
        previous: Option<&AppsSnapshot>,
    ) -> Result<AppsSnapshot, StoreError> {
        let now = SystemTime::now();
        let data_version = self.store.data_version().await?;
        let routes = self.store.routes().await?;
        let health = self.store.app_health().await?;
        let apps = view::apps(routes, health, self.links, now);
        // Serialized straight from the views (no intermediate JSON tree) into a buffer sized from
        // the last snapshot: one allocation of the final size, not a doubling series.
        let mut json = Vec::with_capacity(previous.map_or(4096, |s| s.json.len() + 4096));
        serde_json::to_writer(
            &mut json,
            &view::AppList {
                count: apps.len(),
                apps: &apps,
            },
        )
        .expect("app views serialize");
        let snapshot = AppsSnapshot {
            key: (data_version, unix_second(now)),
            confirmed: Instant::now(),
            apps: Arc::new(apps),
            json: Bytes::from(json),
            gzip: Arc::default(),
        };
        // Clients that asked for gzip before will ask again: compress now, off their path.
        if previous.is_some_and(|p| p.gzip.get().is_some()) {
            snapshot.gzip();
        }
        Ok(snapshot)
    }

    /// Everything the page shows.
    pub async fn overview(self: &Arc<Self>) -> Result<Overview, StoreError> {
        let apps = self.apps().await?.apps;
        let incidents = self.store.incidents(IncidentFilter::unresolved()).await?;
        let recoveries = self.store.recoveries(None, RECENT_RECOVERIES).await?;
        let rates = self.store.recovery_success_rates().await?;
        let last_version = self.store.list_versions(1).await?.into_iter().next();
        let pinned = self.store.pinned_version().await?;
        let checks = self.store.checks().await?;
        let services = self.services.view().await;
        let summary = view::summary(&apps, &incidents, &rates, last_version.as_ref(), pinned);
        let recommendations = view::recommendations(
            &apps,
            &incidents,
            &services,
            &rates,
            last_version.as_ref(),
            pinned,
        );
        Ok(Overview {
            summary,
            apps: apps.as_ref().clone(),
            services,
            incidents,
            recoveries,
            recommendations,
            checks,
        })
    }

    /// One sentence on whether API actions are on, for the page's footer.
    fn actions_note(&self) -> String {
        match self.token.token() {
            Ok(_) => "API actions are on: POST with the bearer token from dashboard.token_file."
                .to_owned(),
            Err(error) => {
                let mut text = error.to_string();
                if let Some(first) = text.get_mut(0..1) {
                    first.make_ascii_uppercase();
                }
                format!("{text}.")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use view::tests::route;

    async fn wait_for_next_second() {
        let second = unix_second(SystemTime::now());
        while unix_second(SystemTime::now()) == second {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_new_second_is_served_stale_once_while_a_store_change_is_served_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // Two handles, as the dashboard and a worker are two processes: SQLite's data_version
        // only moves for commits made through another connection.
        let writer = Store::open(dir.path()).unwrap();
        writer.replace_routes(vec![route("shop")]).await.unwrap();
        let dash =
            Arc::new(Dashboard::new(&Config::default(), Store::open(dir.path()).unwrap()).unwrap());
        let first = dash.apps().await.unwrap();
        assert_eq!(first.apps.len(), 1);

        wait_for_next_second().await;
        let stale = dash.apps().await.unwrap();
        assert_eq!(
            stale.key, first.key,
            "the last second's snapshot, not a wait"
        );
        let mut refreshed = stale.clone();
        for _ in 0..100 {
            refreshed = dash.apps().await.unwrap();
            if refreshed.key != first.key {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            refreshed.key.1,
            first.key.1 + 1,
            "rebuilt in the background"
        );

        writer
            .replace_routes(vec![route("shop"), route("blog")])
            .await
            .unwrap();
        tokio::time::sleep(CONFIRMED_FOR).await;
        assert_eq!(
            dash.apps().await.unwrap().apps.len(),
            2,
            "a write shows at once"
        );
    }
}
