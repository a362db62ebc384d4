//! The webhook messages the receiver never took: `GET
//! /api/v1/webhooks/failed` lists them with their last error, `POST
//! /api/v1/webhooks/failed/{id}/retry` writes one back into the outbox.
//! Management routes, with the same credential as `/api/v1/users`.

use axum::extract::State as AxState;
use axum::Json;
use http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::errors::ErrorBody;
use super::{ApiError, Params, PathParam, Publisher, State};
use crate::webhooks::Message;

/// Most failed messages one call lists.
const MAX_LIMIT: usize = 10_000;

/// One failed message.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedWebhook {
    /// Its `webhook-id` (kept when it is retried).
    pub id: String,
    /// `user.online`, `user.offline`, `stream.opened`, `stream.closed` or `event.undelivered`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed: `HTTP <status>`, `no answer within …`, `unreachable: …`.
    pub last_error: Option<String>,
    /// When the message was made, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it was given up, ms since the Unix epoch.
    pub failed_ms: Option<u64>,
    /// The body the receiver was sent: `{"type", "timestamp", "data"}`.
    #[schema(value_type = Object)]
    pub message: Value,
}

impl From<Message> for FailedWebhook {
    fn from(m: Message) -> FailedWebhook {
        FailedWebhook {
            message: serde_json::from_str(&m.body).unwrap_or(Value::Null),
            kind: m.kind.as_str().to_owned(),
            id: m.id,
            attempts: m.attempts,
            last_error: m.last_error,
            created_ms: m.created_ms,
            failed_ms: m.failed_ms,
        }
    }
}

/// The failed messages, oldest failure first.
#[derive(Debug, Serialize, ToSchema)]
pub struct FailedWebhooks {
    pub count: usize,
    pub failed: Vec<FailedWebhook>,
}

/// A failed message written back into the outbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    pub id: String,
    /// Always `true`: the message waits in the outbox again, attempts reset.
    pub retried: bool,
}

fn not_configured() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "webhooks_off",
        "webhooks are not configured (--webhook-url)",
    )
}

/// `GET /api/v1/webhooks/failed?limit=N`
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/failed",
    tag = "manage",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most messages listed (default 100)"),
    ),
    responses(
        (status = 200, description = "Webhook messages given up after --webhook-max-attempts", body = FailedWebhooks),
        (status = 400, description = "`invalid_parameter`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `cross_origin`", body = ErrorBody),
        (status = 404, description = "`webhooks_off`: no --webhook-url", body = ErrorBody),
        (status = 421, description = "`host_not_allowed`: no publisher credential configured, and the Host is neither loopback nor in `--allowed-hosts`", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`: the outbox cannot be read", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn failed(
    AxState(state): State,
    _: Publisher,
    params: Params,
) -> Result<Json<FailedWebhooks>, ApiError> {
    let webhooks = state.webhooks.as_ref().ok_or_else(not_configured)?;
    let limit = match params.one("limit")? {
        None => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    "limit must be a number from 1 to 10000",
                )
            })?,
    };
    let failed: Vec<FailedWebhook> = webhooks
        .store()
        .failed(limit)
        .await?
        .into_iter()
        .map(FailedWebhook::from)
        .collect();
    Ok(Json(FailedWebhooks {
        count: failed.len(),
        failed,
    }))
}

/// `POST /api/v1/webhooks/failed/{id}/retry`
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/failed/{id}/retry",
    tag = "manage",
    params(("id" = String, Path, description = "The message's `webhook-id`")),
    responses(
        (status = 200, description = "The message waits in the outbox again (at its end), attempts reset", body = Retried),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `cross_origin`", body = ErrorBody),
        (status = 404, description = "`not_found`: no failed message has this id; `webhooks_off`: no --webhook-url", body = ErrorBody),
        (status = 421, description = "`host_not_allowed`: no publisher credential configured, and the Host is neither loopback nor in `--allowed-hosts`", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`: the outbox cannot be written", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn retry(
    AxState(state): State,
    _: Publisher,
    PathParam(id): PathParam,
) -> Result<Json<Retried>, ApiError> {
    let webhooks = state.webhooks.as_ref().ok_or_else(not_configured)?;
    if !webhooks.store().retry(&id).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no failed webhook message has the id `{id}`"),
        ));
    }
    webhooks.wake();
    Ok(Json(Retried { id, retried: true }))
}
