//! The demo page, the admin console, metrics (also alone on
//! `--metrics-listen`), liveness (`/healthz`) and readiness (`/readyz`).
//!
//! Both pages are static and public: they hold no figure of their own.
//! Everything the console shows it fetches from the management API with
//! the credential its user types, so the page without one shows nothing.

use std::sync::{Arc, LazyLock};

use axum::extract::State as AxState;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody};
use super::State;
use pushwire_core::hub::Hub;

/// The demo page, built into the binary.
pub async fn demo_page() -> Html<&'static str> {
    Html(include_str!("../../../../web/index.html"))
}

/// The admin console, built into the binary.
const CONSOLE: &str = include_str!("../../../../web/admin.html");

/// `GET /admin`: the console, with a policy that lets it run its own one
/// inline script and style and reach only this origin. Hub data it shows
/// (user ids, event data) is attacker-controlled: the page inserts it as
/// text, and should that ever slip, the policy still refuses any script,
/// style, frame, form target or connection the page did not bring.
pub async fn console() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, CONSOLE_POLICY.clone()),
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        CONSOLE,
    )
        .into_response()
}

/// The console's Content-Security-Policy: its inline `<script>` and
/// `<style>` allowed by their SHA-256 (computed once from the embedded
/// page, so editing the page cannot make them disagree), fetches to this
/// origin only, no framing.
static CONSOLE_POLICY: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        inline_hash(CONSOLE, "script"),
        inline_hash(CONSOLE, "style"),
    );
    // Base64 and ASCII literals only: always a valid header value.
    HeaderValue::from_str(&policy)
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
});

/// The base64 SHA-256 of the text between the page's first `<tag>` and
/// `</tag>`, as a CSP hash source names it (of nothing, when the page has
/// no such element: a hash nothing matches).
fn inline_hash(page: &str, tag: &str) -> String {
    use base64::Engine;
    let open = format!("<{tag}>");
    let body = page
        .split_once(&open)
        .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
        .map_or("", |(body, _)| body);
    let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Prometheus text format.
pub async fn metrics(AxState(state): State) -> Response {
    render_metrics(&state.hub).await
}

/// A scrape: the history gauges brought up to date, then everything.
async fn render_metrics(hub: &Hub) -> Response {
    hub.refresh_history_metrics().await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        hub.metrics().render(),
    )
        .into_response()
}

/// What `--metrics-listen` serves: `GET /metrics`, and 404 for anything
/// else (the scrape port offers nothing to publish or subscribe with).
pub fn metrics_router(hub: Arc<Hub>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let hub = hub.clone();
                async move { render_metrics(&hub).await }
            }),
        )
        .fallback(|| async { ApiError::not_found() })
}

/// `GET /readyz`: whether this node should get new clients. 503 while it
/// shuts down (from the start of `--drain-delay`) and while its history
/// cannot take publishes (a closed file after a disk fault, Redis not
/// answering, a tail that has not found its place), with the reason.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operate",
    responses(
        (status = 200, description = "`{\"status\":\"ready\"}`", body = Ready),
        (status = 503, description = "`not_ready`: the message says what is wrong (`shutting down`, or the history's fault)", body = ErrorBody),
    ),
)]
pub async fn readyz(AxState(state): State) -> Result<Json<Ready>, ApiError> {
    state.hub.ready().await.map_err(|reason| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            reason.to_string(),
        )
    })?;
    Ok(Json(Ready { status: "ready" }))
}

/// The answer of a node that is ready.
#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: &'static str,
}

/// `GET /healthz`: the process answers (liveness; see `/readyz` for
/// whether it should get clients).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operate",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)),
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}
