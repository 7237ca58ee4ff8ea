//! The JSON API's handlers, its error shape and its parameter checks. Every error is JSON,
//! `{"error": code, "message": sentence}`, with the status code that fits: 400 for a bad
//! parameter (naming it and what is allowed), 404 for what does not exist, 401/403 for actions
//! without a good token or with actions off, 503 when no executor took an action.

use std::str::FromStr;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Dashboard;
use super::actions::{self, Action, Submitted};
use super::auth::TokenError;
use super::view::Status;
use crate::health::{IncidentState, Severity};
use crate::store::{ActionRequest, IncidentFilter, StoreError};
use crate::systemd::units::{ButlerUnit, Worker};

pub type Shared = State<Arc<Dashboard>>;
type Api = Result<Response, ApiError>;

/// The hand-written OpenAPI document; `tests/dashboard_openapi.rs` checks it against the server.
pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    request: Option<Box<ActionRequest>>,
    challenge: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            request: None,
            challenge: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn with_request(mut self, request: ActionRequest) -> Self {
        self.request = Some(Box::new(request));
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!("dashboard: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "store_error",
            error.to_string(),
        )
    }
}

impl From<super::page::PageError> for ApiError {
    fn from(error: super::page::PageError) -> Self {
        tracing::error!("dashboard: {error}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "page_error",
            error.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let Some(request) = self.request {
            body["request"] = serde_json::to_value(request).expect("requests serialize");
        }
        let mut response = (self.status, Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}

/// Query parameters, checked against the ones an endpoint takes: an unknown or repeated one is a
/// 400 naming it, so a typo (`?limt=5`) is not silently ignored.
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn parse(
        query: Result<Query<Vec<(String, String)>>, QueryRejection>,
        allowed: &[&str],
    ) -> Result<Self, ApiError> {
        let Query(pairs) =
            query.map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
        for (i, (key, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::bad_request(if allowed.is_empty() {
                    format!("unknown parameter {key:?}: this endpoint takes none")
                } else {
                    format!(
                        "unknown parameter {key:?}: this endpoint takes {}",
                        allowed.join(", ")
                    )
                }));
            }
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(ApiError::bad_request(format!(
                    "parameter {key:?} is given twice"
                )));
            }
        }
        Ok(Params(pairs))
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn parsed<T: FromStr<Err = String>>(&self, key: &str) -> Result<Option<T>, ApiError> {
        self.get(key)
            .map(|text| {
                text.parse()
                    .map_err(|e| ApiError::bad_request(format!("parameter {key}: {e}")))
            })
            .transpose()
    }

    /// `limit`, 1 to `max`, `default` when absent.
    fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "parameter limit: {text:?} is not a whole number from 1 to {max}"
                ))),
            },
        }
    }

    fn id(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key).map(|text| parse_id(key, text)).transpose()
    }
}

fn parse_id(what: &str, text: &str) -> Result<i64, ApiError> {
    match text.parse::<i64>() {
        Ok(id) if id > 0 => Ok(id),
        _ => Err(ApiError::bad_request(format!(
            "{what}: {text:?} is not a positive whole number"
        ))),
    }
}

/// An app name as the proxy makes them: one lowercase DNS label.
fn check_app_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{name:?} is not an app name: app names are 1 to 63 characters of a-z, 0-9 and '-'"
        )))
    }
}

fn json(value: Value) -> Response {
    Json(value).into_response()
}

impl FromStr for Status {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown status {text:?} (expected one of: healthy, degraded, down, unknown)"
                )
            })
    }
}

/// Whether `Accept-Encoding` allows gzip (and does not refuse it with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f64>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

pub async fn healthz() -> Response {
    json(json!({ "status": "ok" }))
}

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn apps(
    State(dash): Shared,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    let params = Params::parse(query, &["status"])?;
    let status: Option<Status> = params.parsed("status")?;
    let snapshot = dash.apps().await?;
    let Some(status) = status else {
        // The whole directory is the hot path: the snapshot's bytes as they are, or gzipped
        // once per snapshot for clients that accept it (a tenth of the size).
        let json = [(header::CONTENT_TYPE, "application/json")];
        let vary = [(header::VARY, "accept-encoding")];
        return Ok(if accepts_gzip(&headers) {
            let gzip = [(header::CONTENT_ENCODING, "gzip")];
            (json, vary, gzip, snapshot.gzip()).into_response()
        } else {
            (json, vary, snapshot.json).into_response()
        });
    };
    let apps: Vec<_> = snapshot
        .apps
        .iter()
        .filter(|a| a.status == status)
        .cloned()
        .collect();
    Ok(Json(super::view::AppList {
        count: apps.len(),
        apps: &apps,
    })
    .into_response())
}

pub async fn app(
    State(dash): Shared,
    Path(name): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    check_app_name(&name)?;
    let snapshot = dash.apps().await?;
    let app = snapshot
        .apps
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no app named {name:?}")))?;
    let subject = format!("app:{name}");
    let checks: Vec<_> = dash
        .store
        .checks()
        .await?
        .into_iter()
        .filter(|c| c.subject == subject)
        .collect();
    let incidents = dash
        .store
        .incidents(IncidentFilter {
            component: Some(subject),
            limit: 20,
            ..IncidentFilter::default()
        })
        .await?;
    Ok(json(
        json!({ "app": app, "checks": checks, "incidents": incidents }),
    ))
}

pub async fn services(
    State(dash): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    Ok(json(
        serde_json::to_value(dash.services.view().await).expect("serializes"),
    ))
}

pub async fn health(
    State(dash): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    let overview = dash.overview().await?;
    Ok(json(json!({
        "status": overview.summary.status,
        "summary": overview.summary,
        "checks": overview.checks,
        "recommendations": overview.recommendations,
    })))
}

pub async fn incidents(
    State(dash): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    let params = Params::parse(
        query,
        &["state", "kind", "component", "min_severity", "limit"],
    )?;
    let states = match params.get("state") {
        None => Vec::new(),
        Some("unresolved") => IncidentFilter::unresolved().states,
        Some(_) => vec![params.parsed::<IncidentState>("state")?.expect("present")],
    };
    let filter = IncidentFilter {
        states,
        kind: params.get("kind").map(str::to_owned),
        component: params.get("component").map(str::to_owned),
        min_severity: params.parsed::<Severity>("min_severity")?,
        limit: params.limit(100, 1000)?,
    };
    let incidents = dash.store.incidents(filter).await?;
    Ok(json(
        json!({ "count": incidents.len(), "incidents": incidents }),
    ))
}

pub async fn incident(
    State(dash): Shared,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    let id = parse_id("incident id", &id)?;
    let incident = dash
        .store
        .incident(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no incident {id}")))?;
    let recoveries = dash.store.recoveries(Some(id), 100).await?;
    Ok(json(
        json!({ "incident": incident, "recoveries": recoveries }),
    ))
}

pub async fn recoveries(
    State(dash): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    let params = Params::parse(query, &["incident", "limit"])?;
    let incident = params.id("incident")?;
    let limit = params.limit(50, 1000)?;
    let recoveries = dash.store.recoveries(incident, limit).await?;
    let rates = dash.store.recovery_success_rates().await?;
    Ok(json(json!({
        "count": recoveries.len(),
        "recoveries": recoveries,
        "success_rates": rates,
    })))
}

pub async fn versions(
    State(dash): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    let params = Params::parse(query, &["limit"])?;
    let limit = params.limit(20, 1000)?;
    let versions = dash.store.list_versions(limit).await?;
    let pinned = dash.store.pinned_version().await?;
    Ok(json(
        json!({ "count": versions.len(), "versions": versions, "pinned": pinned }),
    ))
}

pub async fn request(
    State(dash): Shared,
    Path(id): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    let id = parse_id("request id", &id)?;
    let request = dash
        .store
        .request(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
    Ok(json(serde_json::to_value(request).expect("serializes")))
}

pub async fn metrics(
    State(dash): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    let snapshot = dash.apps().await?;
    let versions = dash.store.version_stats().await?;
    let incidents = dash.store.incident_counts().await?;
    let recoveries = dash.store.recovery_counts().await?;
    let checks = dash.store.checks().await?;
    let services = dash.services.view().await;
    let text = super::metrics::render(&super::metrics::Input {
        apps: &snapshot.apps,
        versions: &versions,
        incidents: &incidents,
        recoveries: &recoveries,
        checks: &checks,
        services: &services,
    });
    Ok(([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response())
}

pub async fn page(
    State(dash): Shared,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    let overview = dash.overview().await?;
    let html = dash
        .page
        .render(&overview, &dash.domain, &dash.actions_note())?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

pub async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        super::page::STYLESHEET,
    )
        .into_response()
}

pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        super::page::SCRIPT,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Actions

/// Checks the bearer token: 403 while actions are off, 401 without the right token.
fn authorize(dash: &Dashboard, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = dash.token.token().map_err(|error| {
        let hint = match error {
            TokenError::NotConfigured => {
                "; set dashboard.token_file to a file readable only by its owner to turn them on"
            }
            _ => "",
        };
        ApiError::new(
            StatusCode::FORBIDDEN,
            "actions_disabled",
            format!("{error}{hint}"),
        )
    })?;
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match offered {
        None => Err(ApiError {
            challenge: Some("Bearer realm=\"butler\""),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this action needs `Authorization: Bearer <token>` with the token from dashboard.token_file",
            )
        }),
        Some(offered) if token.matches(offered) => Ok(()),
        Some(_) => Err(ApiError {
            challenge: Some("Bearer realm=\"butler\", error=\"invalid_token\""),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token does not match dashboard.token_file",
            )
        }),
    }
}

async fn run_action(dash: &Dashboard, action: Action, target: Option<String>) -> Api {
    let outcome = actions::submit(&dash.store, action, target, dash.action_wait).await?;
    match outcome {
        Submitted::Finished(request) if request.ok == Some(true) => {
            Ok(json(serde_json::to_value(request).expect("serializes")))
        }
        Submitted::Finished(request) => {
            let message = request
                .result
                .as_ref()
                .and_then(|r| r["error"].as_str().or(r["summary"].as_str()))
                .unwrap_or("the action failed")
                .to_owned();
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "action_failed",
                format!("{action} failed: {message}"),
            )
            .with_request(request))
        }
        Submitted::Running(request) => {
            let location = format!("/api/requests/{}", request.id);
            let body = json!({
                "message": format!("{action} is still running; poll {location} for its result"),
                "request": request,
            });
            let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            Ok(response)
        }
        Submitted::NoExecutor(request) => {
            let message = request
                .result
                .as_ref()
                .and_then(|r| r["error"].as_str())
                .unwrap_or("no executor answered")
                .to_owned();
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_executor",
                format!("{action} did not run: {message}"),
            )
            .with_request(request))
        }
    }
}

pub async fn proxy_update(
    State(dash): Shared,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    authorize(&dash, &headers)?;
    run_action(&dash, Action::ProxyUpdate, None).await
}

pub async fn fix_502(
    State(dash): Shared,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    let params = Params::parse(query, &["app"])?;
    let app = params.get("app").map(str::to_owned);
    if let Some(name) = &app {
        check_app_name(name)?;
    }
    authorize(&dash, &headers)?;
    if let Some(name) = &app
        && !dash.apps().await?.apps.iter().any(|a| &a.name == name)
    {
        return Err(ApiError::not_found(format!("no app named {name:?}")));
    }
    run_action(&dash, Action::Fix502, app).await
}

pub async fn restart_service(
    State(dash): Shared,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Api {
    Params::parse(query, &[])?;
    let worker = match name.parse::<ButlerUnit>() {
        Ok(ButlerUnit::Worker(worker)) => worker,
        Ok(ButlerUnit::Target) => {
            return Err(ApiError::bad_request(
                "restart one service at a time: dynamic-proxy, health-monitor, recovery or dashboard",
            ));
        }
        Err(error) => return Err(ApiError::not_found(error.to_string())),
    };
    authorize(&dash, &headers)?;
    run_action(
        &dash,
        Action::ServiceRestart,
        Some(Worker::name(worker).to_owned()),
    )
    .await
}
