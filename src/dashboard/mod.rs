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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
    apps: tokio::sync::Mutex<Option<AppsSnapshot>>,
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
            apps: tokio::sync::Mutex::new(None),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The app directory, rebuilt only when another process wrote to the store or a second passed.
    pub async fn apps(&self) -> Result<AppsSnapshot, StoreError> {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        // Held across the store query: concurrent requests wait for one answer, not ask again.
        let mut cached = self.apps.lock().await;
        if let Some(snapshot) = cached.as_mut()
            && snapshot.key.1 == second
        {
            if snapshot.confirmed.elapsed() < CONFIRMED_FOR {
                return Ok(snapshot.clone());
            }
            if self.store.data_version().await? == snapshot.key.0 {
                snapshot.confirmed = Instant::now();
                return Ok(snapshot.clone());
            }
        }
        let data_version = self.store.data_version().await?;
        let routes = self.store.routes().await?;
        let health = self.store.app_health().await?;
        let apps = view::apps(routes, health, self.links, now);
        // Serialized straight from the views (no intermediate JSON tree) into a buffer sized from
        // the last snapshot: one allocation of the final size, not a doubling series.
        let mut json = Vec::with_capacity(cached.as_ref().map_or(4096, |s| s.json.len() + 4096));
        serde_json::to_writer(
            &mut json,
            &view::AppList {
                count: apps.len(),
                apps: &apps,
            },
        )
        .expect("app views serialize");
        let snapshot = AppsSnapshot {
            key: (data_version, second),
            confirmed: Instant::now(),
            apps: Arc::new(apps),
            json: Bytes::from(json),
            gzip: Arc::default(),
        };
        *cached = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Everything the page shows.
    pub async fn overview(&self) -> Result<Overview, StoreError> {
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
