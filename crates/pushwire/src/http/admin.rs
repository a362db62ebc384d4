//! The demo page, metrics, liveness (`/healthz`) and readiness (`/readyz`).

use axum::extract::State as AxState;
use axum::response::{Html, IntoResponse};
use axum::Json;
use http::{header, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::errors::{ApiError, ErrorBody};
use super::State;

/// The demo page, built into the binary.
pub async fn demo_page() -> Html<&'static str> {
    Html(include_str!("../../../../web/index.html"))
}

/// Prometheus text format.
pub async fn metrics(AxState(state): State) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.hub.metrics().render(),
    )
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
