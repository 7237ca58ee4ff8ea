//! Config versions: every tree the proxy tried, with why, what changed and whether it went live.
//! `last_good` is what a recreated nginx container gets.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;

use rusqlite::{OptionalExtension, Row, params};
use serde::Serialize;

use super::{Store, StoreError, query_err};
use crate::clock::now_rfc3339;

pub type Files = BTreeMap<String, String>;

/// A version to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewVersion {
    pub hash: String,
    /// What triggered it: "start", "container web started", "rollback to 12", ...
    pub cause: String,
    /// What changed, one line: "+shop, -blog, api: port 80 → 8080".
    pub summary: String,
    pub files: Files,
    pub applied: bool,
    /// Why it was not applied (nginx's message, the failed probe).
    pub error: Option<String>,
    pub timings: VersionTimings,
}

/// Milliseconds each step of a version took; `None` for a step that did not run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct VersionTimings {
    pub render_ms: Option<f64>,
    pub validate_ms: Option<f64>,
    pub reload_ms: Option<f64>,
}

/// A recorded version without its files (for lists).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VersionInfo {
    pub id: i64,
    pub hash: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub cause: String,
    pub summary: String,
    pub applied: bool,
    pub error: Option<String>,
    pub timings: VersionTimings,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigVersion {
    #[serde(flatten)]
    pub info: VersionInfo,
    pub files: Files,
}

const INFO_COLUMNS: &str =
    "id, hash, created_at, cause, summary, applied, error, render_ms, validate_ms, reload_ms";

fn info_from_row(row: &Row<'_>) -> rusqlite::Result<VersionInfo> {
    Ok(VersionInfo {
        id: row.get(0)?,
        hash: row.get(1)?,
        created_at: row.get(2)?,
        cause: row.get(3)?,
        summary: row.get(4)?,
        applied: row.get(5)?,
        error: row.get(6)?,
        timings: VersionTimings {
            render_ms: row.get(7)?,
            validate_ms: row.get(8)?,
            reload_ms: row.get(9)?,
        },
    })
}

fn compress(files: &Files) -> Vec<u8> {
    let json = serde_json::to_vec(files).expect("a map of strings always serializes");
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&json)
        .expect("writing to a Vec cannot fail");
    encoder.finish().expect("writing to a Vec cannot fail")
}

fn decompress(blob: &[u8], path: &Path) -> Result<Files, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_owned(),
        what: "config files",
        reason,
    };
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(blob)
        .read_to_end(&mut json)
        .map_err(|e| corrupt(e.to_string()))?;
    serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))
}

fn full_version(
    conn: &rusqlite::Connection,
    path: &Path,
    where_clause: &str,
    param: Option<i64>,
) -> Result<Option<ConfigVersion>, StoreError> {
    let sql = format!("SELECT {INFO_COLUMNS}, files_zjson FROM config_versions {where_clause}");
    let row = conn
        .query_row(&sql, rusqlite::params_from_iter(param), |row| {
            Ok((info_from_row(row)?, row.get::<_, Vec<u8>>(10)?))
        })
        .optional()
        .map_err(query_err(path, "reading a config version"))?;
    row.map(|(info, blob)| {
        Ok(ConfigVersion {
            info,
            files: decompress(&blob, path)?,
        })
    })
    .transpose()
}

impl Store {
    /// Records a version; returns its id.
    pub async fn record_version(&self, version: NewVersion) -> Result<i64, StoreError> {
        self.call(move |conn, path| {
            conn.execute(
                "INSERT INTO config_versions (hash, created_at, cause, summary, files_zjson, applied,
                   error, render_ms, validate_ms, reload_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    version.hash,
                    now_rfc3339(),
                    version.cause,
                    version.summary,
                    compress(&version.files),
                    version.applied,
                    version.error,
                    version.timings.render_ms,
                    version.timings.validate_ms,
                    version.timings.reload_ms
                ],
            )
            .map_err(query_err(path, "recording a config version"))?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    /// The newest version that went live.
    pub async fn last_good(&self) -> Result<Option<ConfigVersion>, StoreError> {
        self.call(|conn, path| {
            full_version(
                conn,
                path,
                "WHERE applied = 1 ORDER BY id DESC LIMIT 1",
                None,
            )
        })
        .await
    }

    /// The id and hash of the newest version that went live, without its files: cheap enough to
    /// ask every round whether another process applied one.
    pub async fn last_good_id(&self) -> Result<Option<(i64, String)>, StoreError> {
        self.call(|conn, path| {
            conn.query_row(
                "SELECT id, hash FROM config_versions WHERE applied = 1 ORDER BY id DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(query_err(path, "reading the last applied config version"))
        })
        .await
    }

    /// The newest `limit` versions, newest first, without their files.
    pub async fn list_versions(&self, limit: usize) -> Result<Vec<VersionInfo>, StoreError> {
        self.call(move |conn, path| {
            let sql =
                format!("SELECT {INFO_COLUMNS} FROM config_versions ORDER BY id DESC LIMIT ?1");
            let mut statement = conn
                .prepare_cached(&sql)
                .map_err(query_err(path, "listing config versions"))?;
            let rows = statement
                .query_map([limit as i64], info_from_row)
                .map_err(query_err(path, "listing config versions"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, "listing config versions"))
        })
        .await
    }

    pub async fn get_version(&self, id: i64) -> Result<Option<ConfigVersion>, StoreError> {
        self.call(move |conn, path| full_version(conn, path, "WHERE id = ?1", Some(id)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(hash: &str, applied: bool) -> NewVersion {
        NewVersion {
            hash: hash.into(),
            cause: "test".into(),
            summary: format!("+{hash}"),
            files: Files::from([
                ("nginx.conf".into(), format!("# {hash}\nevents {{}}\n")),
                (
                    "sites/app.conf".into(),
                    "server { listen 80; }\n".repeat(50),
                ),
            ]),
            applied,
            error: (!applied).then(|| "nginx: [emerg] unknown directive".into()),
            timings: VersionTimings {
                render_ms: Some(1.5),
                validate_ms: applied.then_some(40.0),
                reload_ms: None,
            },
        }
    }

    #[tokio::test]
    async fn a_version_round_trips_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let good = version("aaa", true);
        let id = store.record_version(good.clone()).await.unwrap();
        store.record_version(version("bbb", false)).await.unwrap();
        drop(store);

        let store = Store::open(dir.path()).unwrap();
        let back = store.get_version(id).await.unwrap().unwrap();
        assert_eq!(back.files, good.files);
        assert_eq!(back.info.hash, "aaa");
        assert_eq!(back.info.summary, "+aaa");
        assert!(back.info.applied);
        assert!(
            back.info.created_at.ends_with('Z'),
            "{}",
            back.info.created_at
        );

        // the refused one is newer but not good
        assert_eq!(store.last_good().await.unwrap().unwrap().info.id, id);
        let listed = store.list_versions(10).await.unwrap();
        assert_eq!(
            listed.iter().map(|v| v.hash.as_str()).collect::<Vec<_>>(),
            ["bbb", "aaa"]
        );
        assert_eq!(
            listed[0].error.as_deref(),
            Some("nginx: [emerg] unknown directive")
        );
        assert_eq!(store.list_versions(1).await.unwrap().len(), 1);
        assert!(store.get_version(9999).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_empty_store_has_no_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.last_good().await.unwrap().is_none());
        assert!(store.list_versions(5).await.unwrap().is_empty());
    }

    #[test]
    fn a_newer_schema_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = rusqlite::Connection::open(dir.path().join(super::super::DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Store::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
