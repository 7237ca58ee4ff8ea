//! Schema migrations, applied in order by `PRAGMA user_version`. Append, never edit: a database
//! that ran migration N must never see N change. Other workers add their tables here.

use std::path::Path;

use rusqlite::Connection;

use super::{StoreError, query_err};

const MIGRATIONS: &[&str] = &[
    // 1: the proxy's config versions and its current routes.
    "CREATE TABLE config_versions (
        id          INTEGER PRIMARY KEY,
        hash        TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        cause       TEXT NOT NULL,
        summary     TEXT NOT NULL,
        files_zjson BLOB NOT NULL,   -- zlib-compressed JSON object: path -> content
        applied     INTEGER NOT NULL,
        error       TEXT
    );
    CREATE INDEX config_versions_applied ON config_versions (applied, id);
    CREATE TABLE routes (
        app        TEXT PRIMARY KEY,
        hosts      TEXT NOT NULL,    -- JSON array
        servers    TEXT NOT NULL,    -- JSON array of ip:port
        port       INTEGER NOT NULL,
        reason     TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );",
    // 2: small named values, e.g. the config version an operator pinned with `proxy rollback`.
    "CREATE TABLE settings (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );",
];

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(query_err(path, "reading the schema version"))?;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn
            .transaction()
            .map_err(query_err(path, "starting a migration"))?;
        tx.execute_batch(sql)
            .map_err(query_err(path, "a schema migration"))?;
        tx.pragma_update(None, "user_version", index as i64 + 1)
            .map_err(query_err(path, "recording the schema version"))?;
        tx.commit()
            .map_err(query_err(path, "committing a migration"))?;
    }
    Ok(())
}
