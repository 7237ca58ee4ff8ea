//! Actions asked for through the API, carried by the store's request queue. The dashboard runs
//! without the docker group and without D-Bus privileges, so it never acts itself: [`submit`]
//! queues a request and waits for its result, and the worker that may act runs
//! [`serve_pending`] from its loop (dynamic-proxy: `proxy_update`; recovery: `fix_502` and
//! `service_restart`).

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::store::{ActionRequest, RequestState, Store, StoreError};

/// How often an executor looks for new requests; [`submit`] waits much longer than this.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Reconcile the proxy now and lift a rollback pin (`butler proxy-update`).
    ProxyUpdate,
    /// Repair what makes apps answer 502 (`butler fix-502`); target: one app, or all.
    Fix502,
    /// Restart one butler unit; target: its short name (`dynamic-proxy`, ...).
    ServiceRestart,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::ProxyUpdate, Action::Fix502, Action::ServiceRestart];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::ProxyUpdate => "proxy_update",
            Action::Fix502 => "fix_502",
            Action::ServiceRestart => "service_restart",
        }
    }

    /// The worker that runs it: the one with the privileges it needs.
    pub fn executor(self) -> &'static str {
        match self {
            Action::ProxyUpdate => "dynamic-proxy",
            Action::Fix502 | Action::ServiceRestart => "recovery",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| format!("unknown action {text:?}"))
    }
}

/// A claimed request, handed to the executor's handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAction {
    pub id: i64,
    pub action: Action,
    /// The app (`fix_502`, optional) or the unit's short name (`service_restart`).
    pub target: Option<String>,
}

/// What the handler reports; `result` is shown to the API caller as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    pub result: serde_json::Value,
}

/// Claims the oldest pending request for one of `actions`, if any; the caller runs it and hands
/// the outcome to [`finish`]. For executors whose handler needs `&mut` state across requests.
pub async fn next_pending(
    store: &Store,
    actions: &[Action],
) -> Result<Option<PendingAction>, StoreError> {
    let names: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    loop {
        let Some(request) = store.claim_request(&names).await? else {
            return Ok(None);
        };
        let Ok(action) = request.action.parse::<Action>() else {
            // Claimed by name from `actions`, so this cannot happen; finish it rather than loop.
            store
                .finish_request(request.id, false, error_json("unknown action"))
                .await?;
            continue;
        };
        tracing::info!(
            request = request.id,
            %action,
            target = request.target.as_deref().unwrap_or(""),
            "running a request from the dashboard"
        );
        return Ok(Some(PendingAction {
            id: request.id,
            action,
            target: request.target,
        }));
    }
}

/// Records the outcome of a request taken with [`next_pending`].
pub async fn finish(
    store: &Store,
    request: &PendingAction,
    outcome: Outcome,
) -> Result<(), StoreError> {
    if !outcome.ok {
        tracing::warn!(request = request.id, action = %request.action, result = %outcome.result, "dashboard request failed");
    }
    store
        .finish_request(request.id, outcome.ok, outcome.result)
        .await?;
    Ok(())
}

/// Claims and runs every pending request for `actions`, one at a time, recording each outcome;
/// returns how many ran. Call it from the executor's loop every [`POLL_INTERVAL`] or so: a request
/// nobody claims within the API's wait is withdrawn and reported as "no executor answered".
pub async fn serve_pending<F, Fut>(
    store: &Store,
    actions: &[Action],
    mut handler: F,
) -> Result<usize, StoreError>
where
    F: FnMut(PendingAction) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut served = 0;
    while let Some(request) = next_pending(store, actions).await? {
        let outcome = handler(request.clone()).await;
        finish(store, &request, outcome).await?;
        served += 1;
    }
    Ok(served)
}

/// `{"error": message}`, the result of a failed or abandoned request.
pub fn error_json(message: &str) -> serde_json::Value {
    serde_json::json!({ "error": message })
}

/// How a submitted request ended, as far as the caller waited.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// The executor finished it (`ok` says how).
    Finished(ActionRequest),
    /// An executor took it but had not finished when the wait ended; poll `/api/requests/{id}`.
    Running(ActionRequest),
    /// Nobody claimed it in time: it was withdrawn and will not run.
    NoExecutor(ActionRequest),
}

/// Queues `action` and waits up to `wait` for its result.
pub async fn submit(
    store: &Store,
    action: Action,
    target: Option<String>,
    wait: Duration,
) -> Result<Submitted, StoreError> {
    let id = store
        .enqueue_request(action.as_str().to_owned(), target)
        .await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(20);
    loop {
        let request = read(store, id).await?;
        match request.state {
            RequestState::Finished => return Ok(Submitted::Finished(request)),
            RequestState::Abandoned => return Ok(Submitted::NoExecutor(request)),
            RequestState::Pending | RequestState::Running => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let reason = format!(
                "no executor answered within {}: is the {} worker running? (butler services status {})",
                humantime::format_duration(wait),
                action.executor(),
                action.executor()
            );
            let withdrawn = store.abandon_request(id, reason).await?;
            let request = read(store, id).await?;
            return Ok(match (withdrawn, request.state) {
                (true, _) => Submitted::NoExecutor(request),
                (false, RequestState::Finished) => Submitted::Finished(request),
                (false, _) => Submitted::Running(request),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

async fn read(store: &Store, id: i64) -> Result<ActionRequest, StoreError> {
    store.request(id).await?.ok_or_else(|| StoreError::Corrupt {
        path: store.path().to_owned(),
        what: "request",
        reason: format!("request {id} vanished while it was waited for"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_served_request_comes_back_to_the_submitter() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let executor = store.clone();
        let worker = tokio::spawn(async move {
            loop {
                let served = serve_pending(&executor, &[Action::ServiceRestart], |p| async move {
                    Outcome {
                        ok: true,
                        result: serde_json::json!({ "restarted": p.target }),
                    }
                })
                .await
                .unwrap();
                if served > 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let submitted = submit(
            &store,
            Action::ServiceRestart,
            Some("recovery".into()),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        worker.await.unwrap();
        let Submitted::Finished(request) = submitted else {
            panic!("{submitted:?}")
        };
        assert_eq!(request.ok, Some(true));
        assert_eq!(request.result.unwrap()["restarted"], "recovery");
    }

    #[tokio::test]
    async fn nobody_answering_withdraws_the_request_and_names_the_worker() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let submitted = submit(&store, Action::Fix502, None, Duration::from_millis(200))
            .await
            .unwrap();
        let Submitted::NoExecutor(request) = submitted else {
            panic!("{submitted:?}")
        };
        let error = request.result.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(error.contains("recovery worker"), "{error}");
        // A worker that starts later does not run it.
        let served = serve_pending(&store, &[Action::Fix502], |_| async {
            panic!("a withdrawn request ran")
        })
        .await
        .unwrap();
        assert_eq!(served, 0);
    }
}
