//! The `incidents` table: one row per problem, not one per failed check. The health-monitor opens
//! and counts them from findings; the recovery worker moves them through their states and counts
//! its attempts; a conditional move never reopens what the other just resolved.

use rusqlite::{OptionalExtension as _, Row, params};
use serde::{Deserialize, Serialize};

use super::{DEFAULT_LIMIT, Store, StoreError, parse_text, query_err};
use crate::clock::now_rfc3339;
use crate::vocabulary::{Finding, IncidentState, Severity};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub id: i64,
    pub kind: String,
    pub severity: Severity,
    pub component: String,
    pub summary: String,
    pub state: IncidentState,
    pub first_seen: String,
    pub last_seen: String,
    /// How many times a check found it.
    pub count: i64,
    /// How many recovery attempts were made.
    pub attempts: i64,
    pub resolved_at: Option<String>,
}

/// Which incidents to list; the default lists every one, newest first, up to 100.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// Only these states; empty means all.
    pub states: Vec<IncidentState>,
    pub kind: Option<String>,
    pub component: Option<String>,
    pub min_severity: Option<Severity>,
    /// 0 means the default of 100.
    pub limit: usize,
}

impl IncidentFilter {
    /// Open, recovering and escalated: everything not resolved.
    pub fn unresolved() -> Self {
        Self {
            states: IncidentState::UNRESOLVED.to_vec(),
            ..Self::default()
        }
    }
}

const INCIDENT_COLUMNS: &str = "id, kind, severity, component, summary, state, first_seen, \
                                last_seen, count, attempts, resolved_at";

impl Store {
    /// Records that a check found `finding`. The unresolved incident of the same kind and
    /// component is counted (last_seen, count, summary, and severity raised if higher) instead of
    /// opening a second one. Returns the incident and whether it is new.
    pub async fn observe_incident(&self, finding: Finding) -> Result<(Incident, bool), StoreError> {
        self.observe_incident_at(finding, None).await
    }

    /// [`Store::observe_incident`] for a finding made from observations taken at `observed_at`
    /// (RFC 3339, as the store writes times). When the incident of that kind and component was
    /// resolved after that moment, the finding is stale (a repair finished while the round was
    /// still running) and opens nothing: that resolved incident is returned, not created. A
    /// problem that really came back is found again by the next round.
    pub async fn observe_incident_at(
        &self,
        finding: Finding,
        observed_at: Option<String>,
    ) -> Result<(Incident, bool), StoreError> {
        self.call(move |conn, path| {
            let what = "recording an incident";
            let tx = conn.transaction().map_err(query_err(path, what))?;
            let now = now_rfc3339();
            let existing: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, severity FROM incidents
                     WHERE kind = ?1 AND component = ?2 AND state != 'resolved'",
                    params![finding.kind, finding.component],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(query_err(path, what))?;
            if existing.is_none()
                && let Some(observed_at) = &observed_at
            {
                let resolved_since: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM incidents WHERE kind = ?1 AND component = ?2
                           AND state = 'resolved' AND resolved_at > ?3
                         ORDER BY id DESC LIMIT 1",
                        params![finding.kind, finding.component, observed_at],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(query_err(path, what))?;
                if let Some(id) = resolved_since
                    && let Some(incident) = select_incident(&tx, path, id)?
                {
                    return Ok((incident, false));
                }
            }
            let (id, created) = match existing {
                Some((id, severity)) => {
                    let severity = parse_text::<Severity>(path, "incident severity", &severity)?
                        .max(finding.severity);
                    tx.execute(
                        "UPDATE incidents SET last_seen = ?2, count = count + 1, summary = ?3,
                           severity = ?4 WHERE id = ?1",
                        params![id, now, finding.summary, severity.as_str()],
                    )
                    .map_err(query_err(path, what))?;
                    (id, false)
                }
                None => {
                    tx.execute(
                        "INSERT INTO incidents (kind, severity, component, summary, state,
                           first_seen, last_seen, count, attempts)
                         VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?5, 1, 0)",
                        params![
                            finding.kind,
                            finding.severity.as_str(),
                            finding.component,
                            finding.summary,
                            now
                        ],
                    )
                    .map_err(query_err(path, what))?;
                    (tx.last_insert_rowid(), true)
                }
            };
            let incident = select_incident(&tx, path, id)?.ok_or_else(|| StoreError::Corrupt {
                path: path.to_owned(),
                what: "incident",
                reason: format!("incident {id} vanished while it was recorded"),
            })?;
            tx.commit().map_err(query_err(path, what))?;
            Ok((incident, created))
        })
        .await
    }

    /// Moves an incident to `state`; resolving stamps `resolved_at`. Returns false when there is no
    /// such incident.
    pub async fn set_incident_state(
        &self,
        id: i64,
        state: IncidentState,
    ) -> Result<bool, StoreError> {
        self.call(move |conn, path| {
            let resolved_at = (state == IncidentState::Resolved).then(now_rfc3339);
            let changed = conn
                .execute(
                    "UPDATE incidents SET state = ?2, resolved_at = ?3 WHERE id = ?1",
                    params![id, state.as_str(), resolved_at],
                )
                .map_err(query_err(path, "changing an incident's state"))?;
            Ok(changed > 0)
        })
        .await
    }

    /// Moves an incident to `to` only while it is in one of `from`; returns whether it moved. The
    /// health-monitor and the recovery worker both move incidents: a conditional move never
    /// reopens what the other just resolved.
    pub async fn transition_incident(
        &self,
        id: i64,
        from: Vec<IncidentState>,
        to: IncidentState,
    ) -> Result<bool, StoreError> {
        self.call(move |conn, path| {
            let resolved_at = (to == IncidentState::Resolved).then(now_rfc3339);
            let marks = vec!["?"; from.len().max(1)].join(", ");
            let sql = format!(
                "UPDATE incidents SET state = ?, resolved_at = ? WHERE id = ? AND state IN ({marks})"
            );
            let mut args: Vec<rusqlite::types::Value> = vec![
                to.as_str().to_owned().into(),
                resolved_at.map_or(rusqlite::types::Value::Null, Into::into),
                id.into(),
            ];
            if from.is_empty() {
                args.push(rusqlite::types::Value::Null);
            }
            args.extend(from.iter().map(|s| s.as_str().to_owned().into()));
            let changed = conn
                .execute(&sql, rusqlite::params_from_iter(args))
                .map_err(query_err(path, "changing an incident's state"))?;
            Ok(changed > 0)
        })
        .await
    }

    /// Counts one recovery attempt and marks the incident recovering, only while it is open;
    /// returns the attempt count, or `None` when it is no longer open (the health-monitor resolved
    /// it meanwhile, or another repair took it): an attempt never reopens a resolved incident.
    pub async fn start_recovery_attempt(&self, id: i64) -> Result<Option<i64>, StoreError> {
        self.call(move |conn, path| {
            conn.query_row(
                "UPDATE incidents SET attempts = attempts + 1, state = 'recovering'
                 WHERE id = ?1 AND state = 'open' RETURNING attempts",
                params![id],
                |row| row.get(0),
            )
            .optional()
            .map_err(query_err(path, "counting a recovery attempt"))
        })
        .await
    }

    pub async fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        self.call(move |conn, path| select_incident(conn, path, id))
            .await
    }

    /// Incidents matching `filter`, most recently seen first.
    pub async fn incidents(&self, filter: IncidentFilter) -> Result<Vec<Incident>, StoreError> {
        self.call(move |conn, path| {
            let what = "reading incidents";
            let mut sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE 1 = 1");
            let mut args: Vec<String> = Vec::new();
            if !filter.states.is_empty() {
                let marks = vec!["?"; filter.states.len()].join(", ");
                sql.push_str(&format!(" AND state IN ({marks})"));
                args.extend(filter.states.iter().map(|s| s.as_str().to_owned()));
            }
            if let Some(kind) = &filter.kind {
                sql.push_str(" AND kind = ?");
                args.push(kind.clone());
            }
            if let Some(component) = &filter.component {
                sql.push_str(" AND component = ?");
                args.push(component.clone());
            }
            if let Some(min) = filter.min_severity {
                let allowed: Vec<_> = Severity::ALL.iter().filter(|s| **s >= min).collect();
                let marks = vec!["?"; allowed.len()].join(", ");
                sql.push_str(&format!(" AND severity IN ({marks})"));
                args.extend(allowed.iter().map(|s| s.as_str().to_owned()));
            }
            let limit = if filter.limit == 0 {
                DEFAULT_LIMIT
            } else {
                filter.limit
            };
            sql.push_str(&format!(" ORDER BY last_seen DESC, id DESC LIMIT {limit}"));
            let mut statement = conn.prepare(&sql).map_err(query_err(path, what))?;
            let rows = statement
                .query_map(rusqlite::params_from_iter(args.iter()), raw_incident)
                .map_err(query_err(path, what))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(query_err(path, what))?;
            rows.into_iter().map(|raw| raw.parse(path)).collect()
        })
        .await
    }
}

/// An incident row before its enum columns are parsed (rusqlite's row closure can't return ours).
struct RawIncident {
    incident: Incident,
    severity: String,
    state: String,
}

impl RawIncident {
    fn parse(mut self, path: &std::path::Path) -> Result<Incident, StoreError> {
        self.incident.severity = parse_text(path, "incident severity", &self.severity)?;
        self.incident.state = parse_text(path, "incident state", &self.state)?;
        Ok(self.incident)
    }
}

fn raw_incident(row: &Row<'_>) -> rusqlite::Result<RawIncident> {
    Ok(RawIncident {
        incident: Incident {
            id: row.get(0)?,
            kind: row.get(1)?,
            severity: Severity::Low,
            component: row.get(3)?,
            summary: row.get(4)?,
            state: IncidentState::Open,
            first_seen: row.get(6)?,
            last_seen: row.get(7)?,
            count: row.get(8)?,
            attempts: row.get(9)?,
            resolved_at: row.get(10)?,
        },
        severity: row.get(2)?,
        state: row.get(5)?,
    })
}

fn select_incident(
    conn: &rusqlite::Connection,
    path: &std::path::Path,
    id: i64,
) -> Result<Option<Incident>, StoreError> {
    conn.query_row(
        &format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"),
        params![id],
        raw_incident,
    )
    .optional()
    .map_err(query_err(path, "reading an incident"))?
    .map(|raw| raw.parse(path))
    .transpose()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::store) fn finding(kind: &str, component: &str, severity: Severity) -> Finding {
        Finding {
            kind: kind.into(),
            severity,
            component: component.into(),
            summary: format!("{kind} on {component}"),
        }
    }

    #[tokio::test]
    async fn one_problem_is_one_incident_until_it_is_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (first, created) = store
            .observe_incident(finding("container_down", "app:shop", Severity::Medium))
            .await
            .unwrap();
        assert!(created);
        let (again, created) = store
            .observe_incident(finding("container_down", "app:shop", Severity::High))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again.id, first.id);
        assert_eq!(again.count, 2);
        assert_eq!(again.severity, Severity::High, "severity only rises");
        let (other, created) = store
            .observe_incident(finding("container_down", "app:blog", Severity::Low))
            .await
            .unwrap();
        assert!(created && other.id != first.id);

        assert_eq!(
            store.start_recovery_attempt(first.id).await.unwrap(),
            Some(1)
        );
        assert_eq!(
            store.start_recovery_attempt(first.id).await.unwrap(),
            None,
            "one attempt at a time"
        );
        store
            .transition_incident(
                first.id,
                vec![IncidentState::Recovering],
                IncidentState::Open,
            )
            .await
            .unwrap();
        assert_eq!(
            store.start_recovery_attempt(first.id).await.unwrap(),
            Some(2)
        );
        assert!(
            store
                .set_incident_state(first.id, IncidentState::Resolved)
                .await
                .unwrap()
        );
        let resolved = store.incident(first.id).await.unwrap().unwrap();
        assert_eq!(resolved.state, IncidentState::Resolved);
        assert!(resolved.resolved_at.is_some());
        assert_eq!(resolved.attempts, 2);

        let (reopened, created) = store
            .observe_incident(finding("container_down", "app:shop", Severity::Medium))
            .await
            .unwrap();
        assert!(
            created,
            "a resolved problem that comes back is a new incident"
        );
        assert_ne!(reopened.id, first.id);
        assert!(
            !store
                .set_incident_state(999, IncidentState::Open)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn a_finding_observed_before_its_incident_was_resolved_opens_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let f = || finding("container_down", "app:shop", Severity::High);
        let before = now_rfc3339();
        let (first, created) = store.observe_incident(f()).await.unwrap();
        assert!(created);
        std::thread::sleep(std::time::Duration::from_millis(5));
        store
            .transition_incident(first.id, vec![IncidentState::Open], IncidentState::Resolved)
            .await
            .unwrap();
        // A round that looked before the repair finished: stale, nothing opens.
        let (stale, created) = store.observe_incident_at(f(), Some(before)).await.unwrap();
        assert!(!created);
        assert_eq!((stale.id, stale.state), (first.id, IncidentState::Resolved));
        // A round that looked after: the problem is back, a new incident.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let (again, created) = store
            .observe_incident_at(f(), Some(now_rfc3339()))
            .await
            .unwrap();
        assert!(created && again.id != first.id, "{again:?}");
    }

    #[tokio::test]
    async fn incidents_filter_by_state_kind_component_and_severity() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, _) = store
            .observe_incident(finding("disk_low", "host", Severity::High))
            .await
            .unwrap();
        store
            .observe_incident(finding("port_mismatch", "app:shop", Severity::Medium))
            .await
            .unwrap();
        store
            .observe_incident(finding("proxy_down", "proxy", Severity::Critical))
            .await
            .unwrap();
        store
            .set_incident_state(a.id, IncidentState::Resolved)
            .await
            .unwrap();

        let kinds = |incidents: Vec<Incident>| {
            let mut kinds: Vec<_> = incidents.into_iter().map(|i| i.kind).collect();
            kinds.sort();
            kinds
        };
        let all = store.incidents(IncidentFilter::default()).await.unwrap();
        assert_eq!(kinds(all), ["disk_low", "port_mismatch", "proxy_down"]);
        let unresolved = store.incidents(IncidentFilter::unresolved()).await.unwrap();
        assert_eq!(kinds(unresolved), ["port_mismatch", "proxy_down"]);
        let severe = IncidentFilter {
            min_severity: Some(Severity::High),
            ..IncidentFilter::default()
        };
        assert_eq!(
            kinds(store.incidents(severe).await.unwrap()),
            ["disk_low", "proxy_down"]
        );
        let shop = IncidentFilter {
            component: Some("app:shop".into()),
            kind: Some("port_mismatch".into()),
            ..IncidentFilter::default()
        };
        assert_eq!(
            kinds(store.incidents(shop).await.unwrap()),
            ["port_mismatch"]
        );
        let one = IncidentFilter {
            limit: 1,
            ..IncidentFilter::default()
        };
        assert_eq!(store.incidents(one).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn conditional_transitions_never_reopen_a_resolved_incident() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (incident, _) = store
            .observe_incident(finding("port_mismatch", "app:shop", Severity::High))
            .await
            .unwrap();
        store.start_recovery_attempt(incident.id).await.unwrap();
        assert!(
            store
                .transition_incident(
                    incident.id,
                    vec![IncidentState::Open, IncidentState::Recovering],
                    IncidentState::Resolved
                )
                .await
                .unwrap()
        );
        assert!(
            !store
                .transition_incident(
                    incident.id,
                    vec![IncidentState::Recovering],
                    IncidentState::Open
                )
                .await
                .unwrap(),
            "a resolved incident stays resolved"
        );
        assert_eq!(
            store.start_recovery_attempt(incident.id).await.unwrap(),
            None,
            "nor does a repair that started late"
        );
        let stored = store.incident(incident.id).await.unwrap().unwrap();
        assert_eq!(stored.state, IncidentState::Resolved);
        assert_eq!(stored.attempts, 1);
        assert!(stored.resolved_at.is_some());
    }
}
