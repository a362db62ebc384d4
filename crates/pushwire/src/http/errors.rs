//! The one mapping from errors to HTTP responses:
//! `{"error": {"code": "...", "message": "..."}}` with the right status.

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::limits::LimitError;
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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
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
        let mut response = (self.status, Json(body)).into_response();
        // RFC 6750's challenge: bare when no credential was sent, with the
        // error code when one was sent and failed.
        let challenge = match (self.status, self.code) {
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
            SubscribeError::TooManyStreams(_) | SubscribeError::ShuttingDown => ApiError::new(
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
        match e {
            AuthError::MissingCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
            AuthError::InvalidCredentials | AuthError::NotLocal => {
                ApiError::new(StatusCode::FORBIDDEN, "unauthorized", e.to_string())
            }
            // Why a token failed stays in the log: telling the caller would
            // help an attacker more than a legitimate client.
            AuthError::InvalidToken(ref why) => {
                tracing::debug!(reason = %why, "token refused");
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", e.to_string())
            }
            AuthError::InsufficientScope(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "insufficient_scope", e.to_string())
            }
        }
    }
}

impl From<LimitError> for ApiError {
    fn from(e: LimitError) -> Self {
        let code = match e {
            LimitError::StreamsPerIp { .. } => "too_many_streams_from_ip",
            LimitError::StreamsPerUser { .. } => "too_many_streams_for_user",
            LimitError::PublishRate { .. } => "rate_limited",
        };
        // Whole seconds, rounded up: a client that waits exactly this long
        // is not refused again for being early.
        let wait = e.retry_after();
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(seconds.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, e.to_string())
        }
    }
}
