//! The demo page, metrics and health.

use axum::extract::State as AxState;
use axum::response::{Html, IntoResponse};
use http::header;

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

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operate",
    responses((status = 200, description = "`ok`", content_type = "text/plain", body = String)),
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}
