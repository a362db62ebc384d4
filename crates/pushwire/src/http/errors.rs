//! The one mapping from errors to HTTP responses:
//! `{"error": {"code": "...", "message": "..."}}` with the right status.
//!
//! Refusals an operator must see (credentials, limits) carry a [`Refusal`]
//! into the response's extensions; [`log_refusals`], around the whole
//! router, writes it with the peer's address through the log throttles of
//! [`crate::log_limit`] and drops it, so it never reaches the client.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::backend::BackendError;
use crate::auth::AuthError;
use crate::limits::{LimitError, RateKey};
use crate::log_limit;
use pushwire_core::event::EventError;
use pushwire_core::hub::{PublishError, SubscribeError};
use pushwire_core::log::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds to send as `Retry-After`.
    pub retry_after: Option<u64>,
    /// What the log says of this refusal (never sent to the client).
    pub refusal: Option<Refusal>,
}

/// A refusal the log reports, with the peer's address.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// A credential was missing, wrong or not allowed; `reason` is written
    /// for the log (a token's precise fault stays out of the answer).
    Auth { reason: String },
    /// A limit refused; `key` is what it counts by (`ip`, `user`,
    /// `publisher_key`, `subject`, `peer`, `hub`).
    Limit {
        limit: &'static str,
        key: &'static str,
    },
}

impl Refusal {
    /// The refusal of a publish over its rate, by whose bucket it drew from.
    pub fn rate(key: &RateKey) -> Refusal {
        Refusal::Limit {
            limit: pushwire_core::limits::Limit::PublishRate.label(),
            key: match key {
                RateKey::PublisherKey => "publisher_key",
                RateKey::Subject(_) => "subject",
                RateKey::Peer(_) => "peer",
            },
        }
    }

    fn log(&self, peer: Option<SocketAddr>, status: StatusCode) {
        let peer = peer.map(|p| tracing::field::display(p.ip()));
        match self {
            Refusal::Auth { reason } => {
                if log_limit::AUTH_REFUSAL.admit() {
                    tracing::info!(
                        peer,
                        status = status.as_u16(),
                        %reason,
                        "credential refused"
                    );
                }
            }
            Refusal::Limit { limit, key } => {
                let throttle = if *limit == pushwire_core::limits::Limit::PublishRate.label() {
                    &log_limit::RATE_LIMIT
                } else {
                    &log_limit::STREAM_LIMIT
                };
                if throttle.admit() {
                    tracing::info!(peer, limit, key, "refused by a limit");
                }
            }
        }
    }
}

/// Writes the [`Refusal`] a response carries, if any, with the peer.
pub async fn log_refusals(request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut response = next.run(request).await;
    if let Some(refusal) = response.extensions_mut().remove::<Refusal>() {
        refusal.log(peer, response.status());
    }
    response
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            refusal: None,
        }
    }

    /// The same error, logged as `refusal`.
    pub fn noted(self, refusal: Refusal) -> ApiError {
        ApiError {
            refusal: Some(refusal),
            ..self
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn missing(name: &str) -> ApiError {
        ApiError::bad_request(
            "missing_parameter",
            format!("parameter `{name}` is required"),
        )
    }

    pub fn not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_json`, `duplicate_id`, ...
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let status = self.status;
        let code = self.code;
        let mut response = (status, Json(body)).into_response();
        // RFC 6750's challenge: bare when no credential was sent, with the
        // error code when one was sent and failed.
        let challenge = match (status, code) {
            (StatusCode::UNAUTHORIZED, "invalid_token") => {
                Some("Bearer realm=\"pushwire\", error=\"invalid_token\"")
            }
            (StatusCode::UNAUTHORIZED, _) => Some("Bearer realm=\"pushwire\""),
            (StatusCode::FORBIDDEN, "insufficient_scope") => {
                Some("Bearer realm=\"pushwire\", error=\"insufficient_scope\"")
            }
            // The token's presentation itself is malformed (RFC 6750 §3.1).
            (StatusCode::BAD_REQUEST, "invalid_authorization") => {
                Some("Bearer realm=\"pushwire\", error=\"invalid_request\"")
            }
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(refusal) = self.refusal {
            response.extensions_mut().insert(refusal);
        }
        response
    }
}

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::ReservedTopic(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "reserved_topic", e.to_string())
            }
            _ => ApiError::bad_request("invalid_field", e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DuplicateId(_) => {
                ApiError::new(StatusCode::CONFLICT, "duplicate_id", e.to_string())
            }
            StoreError::Full(_) => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                e.to_string(),
            ),
            StoreError::Unavailable(_) | StoreError::Open { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Invalid(e) => e.into(),
            PublishError::EmptyBatch => ApiError::bad_request("empty_batch", e.to_string()),
            PublishError::Store(e) => e.into(),
        }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::Invalid(e) => e.into(),
            SubscribeError::TooManyStreams(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                e.to_string(),
            )
            .noted(Refusal::Limit {
                limit: "max_streams",
                key: "hub",
            }),
            SubscribeError::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                e.to_string(),
            ),
            SubscribeError::Store(e) => e.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let reason = match &e {
            AuthError::InvalidToken(why) => why.to_string(),
            other => other.to_string(),
        };
        let error = match e {
            AuthError::MissingCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            AuthError::InvalidCredentials | AuthError::NotLocal => {
                ApiError::new(StatusCode::FORBIDDEN, "unauthorized", e.to_string())
            }
            // Why a token failed stays in the log: telling the caller would
            // help an attacker more than a legitimate client.
            AuthError::InvalidToken(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string())
            }
            AuthError::InsufficientScope(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", e.to_string())
            }
        };
        error.noted(Refusal::Auth { reason })
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        let (code, key) = match e {
            LimitError::StreamsPerIp { .. } => ("too_many_streams_from_ip", "ip"),
            LimitError::StreamsPerUser { .. } => ("too_many_streams_for_user", "user"),
            // The caller names the bucket (`Refusal::rate`).
            LimitError::PublishRate { .. } => ("rate_limited", "publisher"),
        };
        // Whole seconds, rounded up: a client that waits exactly this long
        // is not refused again for being early.
        let wait = e.retry_after();
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(seconds.max(1)),
            refusal: Some(Refusal::Limit {
                limit: e.limit().label(),
                key,
            }),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, e.to_string())
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let reason = match &e {
            BackendError::Unavailable(why) => why.clone(),
            other => other.to_string(),
        };
        let error = match e {
            BackendError::Unauthorized => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            BackendError::Forbidden | BackendError::OtherUser(_) | BackendError::NotGranted(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            // Why the backend failed is the operator's (logged by the
            // backend's caller), not the client's.
            BackendError::Unavailable(_) => {
                return ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    e.to_string(),
                )
            }
        };
        error.noted(Refusal::Auth { reason })
    }
}
