//! The demo page, metrics (also alone on `--metrics-listen`), liveness
//! (`/healthz`) and readiness (`/readyz`).

use std::sync::Arc;

use axum::extract::State as AxState;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{header, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody};
use super::State;
use pushwire_core::hub::Hub;

/// The demo page, built into the binary.
pub async fn demo_page() -> Html<&'static str> {
    Html(include_str!("../../../../web/index.html"))
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
