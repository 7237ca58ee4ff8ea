//! The butler's state: one SQLite database (`<state.dir>/butler.db`, WAL) shared by the workers,
//! each writing its own tables. `Store` is the only door: every call runs on the blocking pool so
//! async workers never stall on disk, and the schema is migrated by `user_version` on open.

/// Declares a lower-case string enum stored as TEXT: `as_str`, `FromStr`, `Display` and serde agree.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            ::serde::Serialize, ::serde::Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?} (expected one of: {})",
                        stringify!($name).to_lowercase(),
                        [$($text),+].join(", ")
                    )),
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

mod deployments;
mod health;
mod requests;
mod routes;
mod schema;
mod settings;
mod stats;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

pub use deployments::{DeployOutcome, Deployment, Gate, NewDeployment};
pub use health::{
    AppHealth, AppStatus, CheckResult, Finding, Incident, IncidentFilter, IncidentState,
    NewRecovery, Recovery, RecoveryOutcome, Sample, Severity, SuccessRate,
};
pub use requests::{ActionRequest, REQUEST_MAX_AGE, RequestState};
pub use routes::RouteRow;
pub use stats::{IncidentCount, RecoveryCount, VersionStats};
pub use versions::{ConfigVersion, NewVersion, VersionInfo, VersionTimings};

pub const DB_FILE: &str = "butler.db";
/// Locked (flock) while a config version is applied and recorded; see [`Store::lock_apply`].
pub const APPLY_LOCK_FILE: &str = "apply.lock";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the state directory {path}: {source} (create it, or set [state] dir to a writable directory)"
    )]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open the state database {path}: {source} (check its permissions, or set [state] dir)"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the state database {path} has schema version {found}, newer than this butler knows ({known}): upgrade devops-butler or point [state] dir elsewhere"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("state database {path}: {what} failed: {source}")]
    Query {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("state database {path}: stored {what} is corrupt: {reason}")]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("state database {path}: the worker thread running a query panicked")]
    Panicked { path: PathBuf },
    #[error("state database {path}: query abandoned because the butler is shutting down")]
    Cancelled { path: PathBuf },
    #[error("cannot lock {path}: {source} (check the state directory's permissions)")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Held while one process checks the pin, applies a config and records it; released on drop.
#[derive(Debug)]
pub struct ApplyLock(#[allow(dead_code)] std::fs::File);

/// A handle on the database; clones share one connection.
#[derive(Debug, Clone)]
pub struct Store {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

impl Store {
    /// Opens (creating when needed) `<state_dir>/butler.db` and migrates its schema.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::CreateDir {
            path: state_dir.to_owned(),
            source,
        })?;
        let path = state_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // WAL lets the CLI and dashboard read while a worker writes; FULL keeps a committed row
        // through a power cut, and writes here are a handful per reconcile.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        schema::migrate(&mut conn, &path)?;
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the state directory's apply lock. The worker, `butler proxy-update` and
    /// `butler proxy rollback` are separate processes: without it a worker round that checked the
    /// pin just before a rollback pinned would apply its own render over the operator's rollback.
    pub async fn lock_apply(&self) -> Result<ApplyLock, StoreError> {
        let path = self.path.with_file_name(APPLY_LOCK_FILE);
        let joined = joined_err(path.clone());
        tokio::task::spawn_blocking(move || {
            let lock_err = |source| StoreError::Lock {
                path: path.clone(),
                source,
            };
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(lock_err)?;
            file.lock().map_err(lock_err)?;
            Ok(ApplyLock(file))
        })
        .await
        .map_err(joined)?
    }

    /// Runs `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, &Path) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            // A panic in an earlier query poisons the lock, but the connection itself is fine.
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard, &path)
        })
        .await
        .map_err(joined_err(self.path.clone()))?
    }
}

/// A blocking task that did not return: cancelled at runtime shutdown, or panicked.
fn joined_err(path: PathBuf) -> impl FnOnce(tokio::task::JoinError) -> StoreError {
    move |error| {
        if error.is_cancelled() {
            StoreError::Cancelled { path }
        } else {
            StoreError::Panicked { path }
        }
    }
}

pub(crate) fn query_err(
    path: &Path,
    what: &'static str,
) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Query { path, what, source }
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Parses a stored TEXT value into its enum; a value no version wrote is a corrupt row.
pub(crate) fn parse_text<T: std::str::FromStr<Err = String>>(
    path: &std::path::Path,
    what: &'static str,
    text: &str,
) -> Result<T, StoreError> {
    text.parse().map_err(|reason| StoreError::Corrupt {
        path: path.to_owned(),
        what,
        reason,
    })
}
