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
    // 3: health and recovery (health-monitor writes checks, app_health, samples and incidents;
    //    recovery updates incidents and writes recoveries) and deployments (`butler deploy`).
    "CREATE TABLE checks (
        subject    TEXT NOT NULL,    -- 'app:<name>', 'proxy', 'host', 'unit:<unit name>'
        name       TEXT NOT NULL,    -- 'container', 'tcp', 'http_direct', 'http_proxy', ...
        ok         INTEGER NOT NULL,
        latency_ms REAL,
        detail     TEXT NOT NULL,
        checked_at TEXT NOT NULL,
        PRIMARY KEY (subject, name)
    );
    CREATE TABLE app_health (
        app        TEXT PRIMARY KEY,
        status     TEXT NOT NULL,    -- healthy | degraded | down
        reason     TEXT NOT NULL,
        latency_ms REAL,             -- last response time through the proxy
        started_at TEXT,             -- the container's start time (uptime)
        checked_at TEXT NOT NULL
    );
    CREATE TABLE incidents (
        id          INTEGER PRIMARY KEY,
        kind        TEXT NOT NULL,
        severity    TEXT NOT NULL,   -- low | medium | high | critical
        component   TEXT NOT NULL,   -- same form as checks.subject
        summary     TEXT NOT NULL,
        state       TEXT NOT NULL,   -- open | recovering | resolved | escalated
        first_seen  TEXT NOT NULL,
        last_seen   TEXT NOT NULL,
        count       INTEGER NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        resolved_at TEXT
    );
    -- One problem is one incident: at most one unresolved incident per kind and component.
    CREATE UNIQUE INDEX incidents_unresolved ON incidents (kind, component) WHERE state != 'resolved';
    CREATE INDEX incidents_last_seen ON incidents (last_seen);
    CREATE TABLE recoveries (
        id          INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents (id),
        kind        TEXT NOT NULL,   -- the incident's kind, kept for success rates per kind
        action      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        outcome     TEXT NOT NULL,   -- success | failed | skipped
        detail      TEXT NOT NULL
    );
    CREATE INDEX recoveries_incident ON recoveries (incident_id);
    CREATE TABLE samples (
        metric TEXT NOT NULL,        -- 'disk_free_bytes:<path>', 'mem_available_bytes', 'load1', ...
        at_ms  INTEGER NOT NULL,     -- unix time in milliseconds, for projections
        value  REAL NOT NULL
    );
    CREATE INDEX samples_metric_at ON samples (metric, at_ms);
    CREATE TABLE deployments (
        id          INTEGER PRIMARY KEY,
        app         TEXT NOT NULL,
        revision    TEXT NOT NULL,
        image_id    TEXT NOT NULL,
        source      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        outcome     TEXT NOT NULL,   -- running | deployed | failed | rolled_back
        duration_ms INTEGER,
        detail      TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX deployments_app ON deployments (app, id);",
    // 4: how long each applied version took to render, validate and reload (for /metrics).
    "ALTER TABLE config_versions ADD COLUMN render_ms REAL;
    ALTER TABLE config_versions ADD COLUMN validate_ms REAL;
    ALTER TABLE config_versions ADD COLUMN reload_ms REAL;",
    // 5: when each alert rule last fired for each problem, so rate limits hold across the
    //    health-monitor and recovery processes and across restarts.
    "CREATE TABLE alert_log (
        rule       TEXT NOT NULL,    -- the rule's index and target
        key        TEXT NOT NULL,    -- '<kind> <component>'
        sent_at_ms INTEGER NOT NULL,
        PRIMARY KEY (rule, key)
    );",
    // 6: actions asked for through the dashboard's API. The dashboard runs without the docker group
    //    and without D-Bus privileges, so it only queues them; the worker that may act claims each
    //    one, runs it and records the result (dashboard::actions).
    "CREATE TABLE requests (
        id           INTEGER PRIMARY KEY,
        action       TEXT NOT NULL,  -- 'proxy_update', 'fix_502', 'service_restart'
        target       TEXT,           -- the app or service it names, if any
        requested_at TEXT NOT NULL,
        claimed_at   TEXT,           -- set by the executor that took it
        finished_at  TEXT,
        ok           INTEGER,        -- NULL until finished
        result_json  TEXT            -- what the executor reported (a JSON value)
    );
    CREATE INDEX requests_pending ON requests (action, id) WHERE claimed_at IS NULL AND finished_at IS NULL;",
    // 7: deployments: which ones' containers may be in an upstream (the health gate the planner
    //    reads on every reconcile) and the settings a rollback to that revision reuses.
    "ALTER TABLE deployments ADD COLUMN gate TEXT;   -- pending | serving | retired | NULL: containers gone
    ALTER TABLE deployments ADD COLUMN spec TEXT NOT NULL DEFAULT '{}';  -- JSON: port, replicas, env, ...
    CREATE INDEX deployments_gate ON deployments (gate) WHERE gate IS NOT NULL;",
    // 8: apps whose containers all exited keep their route, marked down (how it ended, as JSON);
    //    and the containers a user stopped (the engine's `stop` event; the dynamic proxy and the
    //    health-monitor both record it as they see it), so a `docker stop` opens no incident.
    "ALTER TABLE routes ADD COLUMN down TEXT;   -- JSON proxy::Down, NULL while the app runs
    CREATE TABLE container_stops (
        container_id TEXT PRIMARY KEY,
        state        TEXT NOT NULL,  -- requested (a gentle kill: a stop may follow) | stopped
        at           TEXT NOT NULL
    );",
];

pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    // IMMEDIATE takes the write lock before the version is read: two processes (or two workers of
    // `butler run`) opening a new database at once must not both run migration 1.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(query_err(path, "starting a migration"))?;
    let found: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(query_err(path, "reading the schema version"))?;
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            found,
            known,
        });
    }
    if found == known {
        return Ok(());
    }
    for sql in MIGRATIONS.iter().skip(found as usize) {
        tx.execute_batch(sql)
            .map_err(query_err(path, "a schema migration"))?;
    }
    tx.pragma_update(None, "user_version", known)
        .map_err(query_err(path, "recording the schema version"))?;
    tx.commit()
        .map_err(query_err(path, "committing a migration"))
}

#[cfg(test)]
mod tests {
    use super::super::Store;

    #[test]
    fn processes_opening_a_new_store_at_once_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let openers: Vec<_> = (0..6)
            .map(|_| {
                let dir = dir.path().to_owned();
                std::thread::spawn(move || Store::open(&dir).map(drop))
            })
            .collect();
        for opener in openers {
            opener.join().unwrap().unwrap();
        }
    }
}
