//! The dashboard's routes: the page and its assets, the JSON API, `/metrics`, `/healthz`. Unknown
//! paths and wrong methods answer JSON errors too, and every response carries headers that keep
//! the page from being framed, sniffed or fed foreign scripts.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::Dashboard;
use super::api::{self, ApiError};

pub fn router(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(api::page))
        .route("/assets/dashboard.css", get(api::stylesheet))
        .route("/assets/dashboard.js", get(api::script))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/apps", get(api::apps))
        .route("/api/apps/{name}", get(api::app))
        .route("/api/services", get(api::services))
        .route("/api/services/{name}/restart", post(api::restart_service))
        .route("/api/health", get(api::health))
        .route("/api/incidents", get(api::incidents))
        .route("/api/incidents/{id}", get(api::incident))
        .route("/api/recoveries", get(api::recoveries))
        .route("/api/proxy/versions", get(api::versions))
        .route("/api/proxy/update", post(api::proxy_update))
        .route("/api/fix-502", post(api::fix_502))
        .route("/api/requests/{id}", get(api::request))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(security_headers))
        .with_state(dashboard)
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "no such page or endpoint: {}; the API is described at /api/openapi.json",
        uri.path()
    ))
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut response = ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; see /api/openapi.json",
            uri.path()
        ),
    )
    .into_response();
    // Actions are POST, everything else GET (and HEAD): tell the client which.
    let allow = if uri.path().starts_with("/api/")
        && (uri.path().ends_with("/restart")
            || uri.path() == "/api/proxy/update"
            || uri.path() == "/api/fix-502")
    {
        "POST"
    } else {
        "GET, HEAD"
    };
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
