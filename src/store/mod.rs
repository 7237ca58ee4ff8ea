//! The butler's state: one SQLite database (`<state.dir>/butler.db`, WAL) shared by the workers,
//! each writing its own tables. `Store` is the only door: every call runs on the blocking pool so
//! async workers never stall on disk, and the schema is migrated by `user_version` on open.

mod alert_log;
mod app_health;
mod checks;
mod deployments;
mod incidents;
mod recoveries;
mod requests;
mod routes;
mod samples;
mod schema;
mod settings;
mod stats;
mod versions;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

pub use app_health::AppHealth;
pub use checks::CheckResult;
pub use deployments::{DeployOutcome, Deployment, Gate, NewDeployment};
pub use incidents::{Incident, IncidentFilter};
pub use recoveries::{NewRecovery, Recovery, RecoveryOutcome, SuccessRate};
pub use requests::{ActionRequest, REQUEST_MAX_AGE, RequestState};
pub use routes::{Down, RouteRow, StopMarks};
pub use samples::Sample;
pub use stats::{IncidentCount, RecoveryCount, VersionStats};
pub use versions::{ConfigVersion, NewVersion, VersionInfo, VersionTimings};

pub const DB_FILE: &str = "butler.db";
/// Locked (flock) while a config version is applied and recorded; see [`Store::lock_apply`].
pub const APPLY_LOCK_FILE: &str = "apply.lock";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How many rows a listing returns when its caller asks for 0.
const DEFAULT_LIMIT: usize = 100;

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
        "cannot create the state database {path}: {source} (check the state directory's permissions, or set [state] dir)"
    )]
    Create {
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
        share_with_group(&path, state_dir).map_err(|source| StoreError::Create {
            path: path.clone(),
            source,
        })?;
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        // Workers open the store at the same moment (`butler run` starts them together, systemd
        // starts the units together). Switching a new database to WAL needs an exclusive lock that
        // SQLite's busy handler does not wait for, so opening is serialized on the state
        // directory itself (flock; every worker can read the directory, no lock file to own).
        let dir_lock = std::fs::File::open(state_dir)
            .and_then(|dir| dir.lock().map(|()| dir))
            .map_err(|source| StoreError::Lock {
                path: state_dir.to_owned(),
                source,
            })?;
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // WAL lets the CLI and dashboard read while a worker writes; FULL keeps a committed row
        // through a power cut, and writes here are a handful per reconcile.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        schema::migrate(&mut conn, &path)?;
        drop(dir_lock);
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

/// Creates the database file before SQLite does, as 0660 less the umask: SQLite would create it
/// 0644 whatever the umask, and gives its -wal and -shm files the database's mode. Under systemd
/// (UMask=0007) every worker's group may then write it, whichever worker created it: the recovery
/// worker runs as root in group butler, the others as butler. An existing database this process
/// owns is opened up to the group when the state directory itself is group-writable (a database
/// made before the directory was shared).
fn share_with_group(path: &Path, state_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o660)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let meta = std::fs::metadata(path)?;
    let dir_shared = std::fs::metadata(state_dir)?.mode() & 0o020 != 0;
    let mode = meta.mode() & 0o7777;
    if dir_shared && mode & 0o060 != 0o060 && meta.uid() == nix::unistd::geteuid().as_raw() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode | 0o060))?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// The process umask, as the kernel reports it (setting it would race the other tests).
    fn umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
    }

    #[tokio::test]
    async fn the_database_and_its_wal_files_are_made_for_the_group_the_umask_allows() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.pin_version(None).await.unwrap();
        let expected = 0o660 & !umask();
        for file in ["butler.db", "butler.db-wal", "butler.db-shm"] {
            assert_eq!(mode(&dir.path().join(file)), expected, "{file}");
        }
    }

    #[test]
    fn a_database_made_before_the_directory_was_shared_is_opened_up_to_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(DB_FILE);
        drop(Store::open(dir.path()).unwrap());
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
        // A private directory: the file's mode is left as it is.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(mode(&db), 0o640);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
        drop(Store::open(dir.path()).unwrap());
        assert_eq!(mode(&db), 0o660);
    }
}
