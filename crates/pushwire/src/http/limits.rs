//! The edge of the limits (see [`crate::limits`]): who the client is, the
//! header-size check, and the publish rate check, each turned into the one
//! JSON error shape and counted in `pushwire_limit_rejections_total`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use super::errors::Refusal;
use super::{ApiError, AppState};
use crate::auth::Credential;
use crate::limits::{Limit, RateKey, StreamPermit};

/// The client's address: the TCP peer. Forwarding headers are not trusted
/// for limits: anyone can write them.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    pub fn of(parts: &Parts) -> ClientAddr {
        // Every connection the server accepts carries its peer; a request
        // built some other way (tests of the router) counts as one unknown client.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip());
        ClientAddr(ip)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::of(parts))
    }
}

/// A place for one more stream from `client` (of `user`, for a user's
/// stream); a refusal is a 429 with `Retry-After`, counted.
pub fn stream_permit(
    state: &AppState,
    client: ClientAddr,
    user: Option<&str>,
) -> Result<StreamPermit, ApiError> {
    state.streams.acquire(client.0, user).map_err(|e| {
        state.hub.metrics().limit_rejected(e.limit());
        ApiError::from(e)
    })
}

/// Whose bucket a publish draws from: the credential, or the address for
/// callers without one (and tokens without a subject).
pub fn rate_key(credential: Credential, client: ClientAddr) -> RateKey {
    match credential {
        Credential::PublisherKey => RateKey::PublisherKey,
        Credential::Token {
            subject: Some(subject),
        } => RateKey::Subject(subject),
        Credential::Token { subject: None } | Credential::None => RateKey::Peer(client.0),
    }
}

/// Draws one publish request from the caller's bucket; a refusal is a 429
/// with `Retry-After`, counted, and nothing is published.
pub fn check_publish_rate(state: &AppState, key: &RateKey) -> Result<(), ApiError> {
    state.publish_rate.check(key).map_err(|e| {
        let metrics = state.hub.metrics();
        metrics.publishes_rejected.inc();
        metrics.limit_rejected(e.limit());
        ApiError::from(e).noted(Refusal::rate(key))
    })
}

/// Refuses requests whose line and headers exceed `--max-header-bytes`
/// with a JSON 431, and counts 413s (the body limit, enforced where bodies
/// are read). hyper cuts heads at twice the limit before they reach the
/// router (a bare 431, counted by the server); between the two, the client
/// gets the same JSON as every other refusal.
pub async fn header_size(
    AxState(state): AxState<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let line = request.method().as_str().len()
        + request
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len())
        + " HTTP/1.1\r\n ".len();
    let headers: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
        .sum();
    // The blank line that ends the head: the sum is then the head's size
    // on the wire, as a client writes it with `: ` separators.
    let size = line + headers + "\r\n".len();
    let max = state.max_header_bytes;
    if size > max {
        state.hub.metrics().limit_rejected(Limit::HeaderSize);
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request line and headers are limited to {max} bytes ({})",
                Limit::HeaderSize.option()
            ),
        )
        .into_response();
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        state.hub.metrics().limit_rejected(Limit::BodySize);
    }
    response
}
