//! The HTTP edge: it turns requests into hub calls and hub results into
//! responses, nothing more.
//!
//! - `streams`: the subscribe routes (seed paths and `/api/v1/stream`);
//! - `seed`: the seed service's management calls, as thin aliases;
//! - `api`: the JSON API under `/api/v1`;
//! - `mercure`: the Mercure protocol at `/.well-known/mercure`;
//! - `admin`: the demo page, the admin console, `/metrics`, `/healthz`, `/readyz`;
//! - `limits`: the client address, header size and publish rate checks;
//! - `openapi`: the OpenAPI document of the JSON API, from the handlers' annotations;
//! - `errors`: the one error-to-response mapping.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::routing::{any, delete, get, post};
use axum::Router;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderValue, Method};
use http_body_util::BodyExt;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::backend::Backend;
use crate::auth::{Caller, Credential, PublishRights, PublisherPolicy, SubscriberPolicy};
use crate::config::ServeConfig;
use crate::limits::{BodyBudget, FieldLimits, Limit, PublishRateLimiter, StreamLimits};
use pushwire_core::hub::Hub;

mod admin;
mod api;
pub mod errors;
mod limits;
mod local;
mod mercure;
pub mod metadata;
pub mod openapi;
mod schema;
mod seed;
mod streams;
mod webhooks;

pub use admin::metrics_router;
pub use api::{publish_body, PublishBody};
pub use errors::ApiError;
pub use local::LocalCallers;
pub use mercure::update_draft as mercure_update;
pub use seed::SeedPublish;
pub use streams::requested_last_event_id;

/// The header browsers send when they reconnect.
pub const LAST_EVENT_ID: http::HeaderName = http::HeaderName::from_static("last-event-id");

/// What every handler can reach.
pub struct AppState {
    pub hub: Arc<Hub>,
    pub policy: PublisherPolicy,
    pub subscribers: SubscriberPolicy,
    /// The application's backend that authorizes streams (`--auth-url`):
    /// when set, it replaces `subscribers` on stream routes.
    pub backend: Option<Arc<Backend>>,
    /// The webhooks (`--webhook-url`): told of every stream that opens.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    pub max_body: usize,
    /// Request body bytes all requests may hold at once while reading them.
    pub body_budget: BodyBudget,
    /// The hub's public URL, against which relative URL patterns resolve.
    pub hub_url: String,
    /// The Mercure subscriptions API and events are on.
    pub presence: bool,
    /// Largest request line and headers, in bytes.
    pub max_header_bytes: usize,
    /// The per-address and per-user stream limits.
    pub streams: StreamLimits,
    /// The per-publisher publish rate limit.
    pub publish_rate: PublishRateLimiter,
    /// What the core validates against (Mercure reads its selector count early).
    pub field_limits: FieldLimits,
    /// The protected resource metadata, when the hub has a resource
    /// identifier (see `metadata.rs`).
    pub protected_resource: Option<Arc<metadata::ProtectedResource>>,
    /// The hosts and origins keyless publish and management calls are served for.
    pub local_callers: LocalCallers,
    /// The origins listed in `--cors-origins` (`*` excluded), serialized as
    /// `scheme://host[:port]`: they may send cookies to the Mercure routes.
    pub credentialed_origins: Vec<String>,
}

type State = axum::extract::State<Arc<AppState>>;

/// Whether a `GET` of this path opens an event stream (the routes of
/// `streams` and Mercure's subscribe route below). The accept loop serves
/// such requests on its lean stream path (see `stream_conn.rs`).
pub fn is_stream_route(path: &str) -> bool {
    matches!(
        path,
        "/sse/subscribe" | "/api/v1/stream" | "/.well-known/mercure"
    ) || path
        .strip_prefix("/sse/subscribe/")
        .is_some_and(|user| !user.is_empty() && !user.contains('/'))
}

/// All routes of the hub.
pub fn router(state: Arc<AppState>, config: &ServeConfig) -> Router {
    let streams = Router::new()
        .route("/sse/subscribe/{user}", get(streams::seed_subscribe_path))
        .route("/sse/subscribe", get(streams::seed_subscribe_query))
        .route("/api/v1/stream", get(streams::api_stream))
        .layer(cors(&config.cors_origins, false));

    let manage = Router::new()
        .route(
            "/sse/sendMessage",
            get(seed::send_message).post(seed::send_message),
        )
        .route("/sse/push", get(seed::push).post(seed::push))
        .route(
            "/sse/groupSendMessage",
            get(seed::group_send_message).post(seed::group_send_message),
        )
        .route(
            "/sse/batchSendMessage",
            get(seed::batch_send_message).post(seed::batch_send_message),
        )
        .route(
            "/sse/close/{user}",
            get(seed::close_path).post(seed::close_path),
        )
        .route("/sse/over", get(seed::close_query).post(seed::close_query))
        .route(
            "/sse/getUserCount",
            get(seed::user_count).post(seed::user_count),
        )
        .route("/sse/getIds", get(seed::ids).post(seed::ids))
        .route("/api/v1/publish", post(api::publish))
        .route("/api/v1/stats", get(api::stats))
        .route("/api/v1/users", get(api::users))
        .route("/api/v1/topics", get(api::topics))
        .route("/api/v1/users/{user}", delete(api::close_user))
        .route("/api/v1/events", get(api::events))
        .route("/api/v1/webhooks/failed", get(webhooks::failed))
        .route("/api/v1/webhooks/failed/{id}/retry", post(webhooks::retry));
    let manage = if config.api_cors_origins.is_empty() {
        manage
    } else {
        manage.layer(cors(&config.api_cors_origins, true))
    };

    // Browsers preflight these routes (Authorization headers, form posts
    // with credentials): OPTIONS must reach the CORS layer, which answers it.
    let preflight = || async { http::StatusCode::NO_CONTENT };
    let mercure = Router::new()
        .route(
            "/.well-known/mercure",
            get(mercure::subscribe)
                .post(mercure::publish)
                .options(preflight),
        )
        .route(
            "/.well-known/mercure/subscriptions",
            get(mercure::subscriptions).options(preflight),
        )
        .route(
            "/.well-known/mercure/subscriptions/{selector}",
            get(mercure::subscriptions).options(preflight),
        )
        .route(
            "/.well-known/mercure/subscriptions/{selector}/{subscriber}",
            get(mercure::subscriptions).options(preflight),
        )
        .route(
            "/.well-known/mercure/subscriptions/{match_type}/{selector}/{subscriber}",
            get(mercure::subscriptions).options(preflight),
        )
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            metadata::challenge,
        ))
        .layer(mercure_cors(&config.cors_origins));
    let mercure = match &state.protected_resource {
        Some(resource) => mercure.route(&resource.route, get(metadata::document)),
        None => mercure,
    };

    // The pages only call the API above; turning one off leaves its path
    // to the fallback (404).
    let mut pages = Router::new();
    if !config.no_demo {
        pages = pages.route("/", get(admin::demo_page));
    }
    if !config.no_admin {
        pages = pages.route("/admin", get(admin::console));
    }

    Router::new()
        .merge(pages)
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/api/openapi.json", get(openapi::document))
        .merge(streams)
        .merge(manage)
        .merge(mercure)
        .fallback(any(not_found))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::header_size,
        ))
        .layer(axum::middleware::from_fn(strict_host))
        .layer(axum::middleware::from_fn(errors::log_refusals))
        .with_state(state)
}

/// Refuses, before anything runs, an HTTP/1 request whose `Host` is
/// missing, repeated or invalid (the rule: `strict_heads::check_host`).
/// Both connection paths hand every request to this router, so it holds
/// for all of them. The connection is closed after the answer: a client
/// that gets its own host wrong cannot be trusted to frame what follows.
async fn strict_host(request: Request, next: axum::middleware::Next) -> axum::response::Response {
    use axum::response::IntoResponse;
    let checked = crate::transport::strict_heads::check_host(request.version(), request.headers());
    if let Err(bad) = checked {
        let mut response = ApiError::bad_request("invalid_host", bad.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Management routes: the listed origins, without credentials. Stream
/// routes: listed origins also with credentials, so that a page's
/// `EventSource(url, {withCredentials: true})` sends its cookies (to the
/// `--auth-url` backend); the wildcard `*` never gets them (the Fetch
/// standard forbids `*` with credentials, and browsers refuse it).
fn cors(origins: &[String], management: bool) -> CorsLayer {
    let any = origins.iter().any(|o| o == "*");
    let allow = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let layer = CorsLayer::new().allow_origin(allow);
    if management {
        layer
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
    } else {
        layer
            .allow_methods([Method::GET])
            .allow_headers([LAST_EVENT_ID, header::CACHE_CONTROL])
            .allow_credentials(!any)
    }
}

/// Mercure routes: credentials (cookies) for listed origins, never for `*`.
fn mercure_cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::CACHE_CONTROL,
            LAST_EVENT_ID,
        ])
        .expose_headers([LAST_EVENT_ID, mercure::MERCURE_LAST_EVENT_ID]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        layer
            .allow_origin(AllowOrigin::list(
                origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
            ))
            .allow_credentials(true)
    }
}

/// Proof that the caller may publish anywhere and manage: the seed's
/// calls and the management API, which are not scoped to a topic.
pub struct Publisher;

impl FromRequestParts<Arc<AppState>> for Publisher {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        state.policy.refresh_keys_for(bearer(&parts.headers)).await;
        let rights = publish_rights(parts, state, bearer(&parts.headers))?;
        rights.check_unscoped().map_err(|e| rejected(state, e))?;
        Ok(Publisher)
    }
}

/// A [`Publisher`] that is about to publish: its request is also drawn
/// from its publish rate (the seed's publish calls).
pub struct RatedPublisher;

impl FromRequestParts<Arc<AppState>> for RatedPublisher {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        state.policy.refresh_keys_for(bearer(&parts.headers)).await;
        let (rights, credential) = publisher(parts, state, bearer(&parts.headers))?;
        rights.check_unscoped().map_err(|e| rejected(state, e))?;
        let key = limits::rate_key(credential, limits::ClientAddr::of(parts));
        limits::check_publish_rate(state, &key)?;
        Ok(RatedPublisher)
    }
}

/// What the caller may publish, checked per event by the handler; the
/// request has been drawn from the caller's publish rate.
pub struct TopicPublisher(pub PublishRights);

impl FromRequestParts<Arc<AppState>> for TopicPublisher {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        state.policy.refresh_keys_for(bearer(&parts.headers)).await;
        let (rights, credential) = publisher(parts, state, bearer(&parts.headers))?;
        let key = limits::rate_key(credential, limits::ClientAddr::of(parts));
        limits::check_publish_rate(state, &key)?;
        Ok(TopicPublisher(rights))
    }
}

/// Authorizes a publisher presenting `token` (from wherever the route reads it).
fn publish_rights(
    parts: &Parts,
    state: &AppState,
    token: Option<&str>,
) -> Result<PublishRights, ApiError> {
    publisher(parts, state, token).map(|(rights, _)| rights)
}

/// [`publish_rights`] and the credential that earned them.
fn publisher(
    parts: &Parts,
    state: &AppState,
    token: Option<&str>,
) -> Result<(PublishRights, Credential), ApiError> {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>();
    let caller = Caller {
        bearer: token,
        loopback_peer: peer.is_some_and(|p| p.0.ip().is_loopback()),
        forwarded: ["forwarded", "x-forwarded-for", "x-real-ip", "via"]
            .iter()
            .any(|h| parts.headers.contains_key(*h)),
    };
    let (rights, credential) = state
        .policy
        .identify(&caller)
        .map_err(|e| rejected(state, e))?;
    if credential == Credential::None {
        state.local_callers.check(parts).inspect_err(|_| {
            state.hub.metrics().publishes_rejected.inc();
        })?;
    }
    Ok((rights, credential))
}

/// Mercure's publish reads its token from the form too, so it authorizes
/// and draws from the rate itself.
fn rated_publish_rights(
    parts: &Parts,
    state: &AppState,
    token: Option<&str>,
) -> Result<PublishRights, ApiError> {
    let (rights, credential) = publisher(parts, state, token)?;
    let key = limits::rate_key(credential, limits::ClientAddr::of(parts));
    limits::check_publish_rate(state, &key)?;
    Ok(rights)
}

/// Counts a refused write and turns the reason into a response.
fn rejected(state: &AppState, error: crate::auth::AuthError) -> ApiError {
    state.hub.metrics().publishes_rejected.inc();
    ApiError::from(error)
}

/// A token as a Mercure client may present it, by the protocol's
/// precedence: the `Authorization` header, else the query parameter
/// (`authorization` classic, `access_token` current), else the cookie
/// (`mercureAuthorization` classic, `__Secure-mercure_access_token` and
/// `mercureAccessToken` current). Once a mechanism is present, the others
/// are ignored, even when its token turns out to be invalid.
fn presented_token<'a>(headers: &'a HeaderMap, params: &'a Params) -> Option<&'a str> {
    if headers.contains_key(header::AUTHORIZATION) {
        return bearer(headers);
    }
    for name in ["authorization", "access_token"] {
        if let Some(token) = params.all(name).next() {
            return Some(token);
        }
    }
    cookie(
        headers,
        &[
            "mercureAuthorization",
            "__Secure-mercure_access_token",
            "mercureAccessToken",
        ],
    )
}

/// The first of the named cookies the request carries.
fn cookie<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    let pairs: Vec<(&str, &str)> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .collect();
    names.iter().find_map(|name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim_matches('"'))
    })
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The one parameter of a path like `/sse/subscribe/{user}`, percent-decoded.
/// Not UTF-8, it is refused with the same JSON error as a query parameter.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| PathParam(p.0))
            .map_err(|e| match e {
                axum::extract::rejection::PathRejection::FailedToDeserializePathParams(e)
                    if matches!(
                        e.kind(),
                        axum::extract::path::ErrorKind::InvalidUtf8InPathParam { .. }
                    ) =>
                {
                    ApiError::bad_request("invalid_utf8", "path parameters must be valid UTF-8")
                }
                other => ApiError::bad_request("invalid_parameter", other.body_text()),
            })
    }
}

/// Request parameters from the query string and, for a form POST, the body:
/// the seed's management calls accept both.
///
/// Each text is decoded in its own buffer, in place (percent-decoding only
/// shortens it), so a form body costs its own length once, not twice.
#[derive(Debug, Default)]
pub struct Params {
    texts: Vec<String>,
    pairs: Vec<Pair>,
}

/// One parameter: its name and value as ranges of one of the texts.
#[derive(Debug)]
struct Pair {
    text: usize,
    key: Range<usize>,
    value: Range<usize>,
}

impl Params {
    /// The parameters of one `application/x-www-form-urlencoded` text: a
    /// query string or a form body.
    pub fn decode(input: &[u8]) -> Result<Params, ApiError> {
        Params::decode_owned(input.to_vec())
    }

    /// [`Params::decode`] of a text the caller gives up, decoded where it is.
    pub fn decode_owned(input: Vec<u8>) -> Result<Params, ApiError> {
        let mut params = Params::default();
        params.push_text(input)?;
        Ok(params)
    }

    fn push_text(&mut self, mut raw: Vec<u8>) -> Result<(), ApiError> {
        let text = self.texts.len();
        let first_pair = self.pairs.len();
        let len = raw.len();
        let mut write = 0;
        let mut read = 0;
        while read < len {
            let end = raw[read..]
                .iter()
                .position(|&b| b == b'&')
                .map_or(len, |p| read + p);
            if end > read {
                let (key_end, value_start) = match raw[read..end].iter().position(|&b| b == b'=') {
                    Some(p) => (read + p, read + p + 1),
                    None => (end, end),
                };
                let key = decode_in_place(&mut raw, read..key_end, &mut write);
                let value = decode_in_place(&mut raw, value_start..end, &mut write);
                self.pairs.push(Pair { text, key, value });
            }
            read = end + 1;
        }
        raw.truncate(write);
        let invalid = || ApiError::bad_request("invalid_utf8", "parameters must be valid UTF-8");
        // Every piece on its own: two invalid halves could make a valid whole.
        let valid = self.pairs[first_pair..].iter().all(|pair| {
            [&pair.key, &pair.value]
                .into_iter()
                .all(|range| std::str::from_utf8(&raw[range.clone()]).is_ok())
        });
        if !valid {
            self.pairs.truncate(first_pair);
            return Err(invalid());
        }
        match String::from_utf8(raw) {
            Ok(decoded) => {
                self.texts.push(decoded);
                Ok(())
            }
            Err(_) => {
                self.pairs.truncate(first_pair);
                Err(invalid())
            }
        }
    }

    fn key(&self, pair: &Pair) -> &str {
        self.texts[pair.text]
            .get(pair.key.clone())
            .unwrap_or_default()
    }

    fn value(&self, pair: &Pair) -> &str {
        self.texts[pair.text]
            .get(pair.value.clone())
            .unwrap_or_default()
    }

    /// The single value of a parameter. Repeating it with different values
    /// is ambiguous and refused.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found: Option<&str> = None;
        let values = self
            .pairs
            .iter()
            .filter(|p| self.key(p) == name)
            .map(|p| self.value(p));
        for value in values {
            match found {
                Some(v) if v != value => {
                    return Err(ApiError::bad_request(
                        "conflicting_parameter",
                        format!("parameter `{name}` is given more than once with different values"),
                    ))
                }
                _ => found = Some(value),
            }
        }
        Ok(found)
    }

    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.one(name)?.ok_or_else(|| ApiError::missing(name))
    }

    /// Appends `more` after these, as a form body follows its query.
    pub fn extend(&mut self, more: Params) {
        let offset = self.texts.len();
        self.texts.extend(more.texts);
        self.pairs.extend(more.pairs.into_iter().map(|p| Pair {
            text: p.text + offset,
            ..p
        }));
    }

    /// Every parameter, in request order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|p| (self.key(p), self.value(p)))
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |p| self.key(p) == name)
            .map(|p| self.value(p))
    }
}

/// Decodes `buf[from]` (`+` is a space, `%XX` a byte; a `%` without two hex
/// digits stays as it is) to `buf[*write..]`, which never runs ahead of the
/// reading; returns where the decoded piece is.
fn decode_in_place(buf: &mut [u8], from: Range<usize>, write: &mut usize) -> Range<usize> {
    let start = *write;
    let mut i = from.start;
    while i < from.end {
        let (byte, used) = match buf[i] {
            b'+' => (b' ', 1),
            b'%' if i + 2 < from.end => match (hex(buf[i + 1]), hex(buf[i + 2])) {
                (Some(high), Some(low)) => (high << 4 | low, 3),
                _ => (b'%', 1),
            },
            other => (other, 1),
        };
        buf[*write] = byte;
        *write += 1;
        i += used;
    }
    start..*write
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

impl FromRequest<Arc<AppState>> for Params {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let mut params = Params::decode(req.uri().query().unwrap_or_default().as_bytes())?;
        if req.method() == Method::POST {
            let is_form = content_type_is(req.headers(), "application/x-www-form-urlencoded");
            let has_type = req.headers().contains_key(header::CONTENT_TYPE);
            let body = read_body(req, state).await?;
            if !body.is_empty() {
                if !is_form && has_type {
                    return Err(ApiError::new(
                        http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        "send parameters in the query or as application/x-www-form-urlencoded",
                    ));
                }
                params.push_text(Vec::from(body))?;
            }
        }
        Ok(params)
    }
}

fn content_type_is(headers: &HeaderMap, wanted: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(wanted))
}

/// Reads a request body of at most `--max-body` bytes (413 beyond) into one
/// buffer, its room drawn from `--max-inflight-body` first (503 when there
/// is none).
///
/// Each frame is copied and dropped at once: hyper hands a chunked body
/// over chunk by chunk, each chunk a slice of the read buffer it arrived
/// in, so keeping the frames (as collecting them does) keeps a read buffer
/// per chunk, which for a body trickled one byte per segment is a thousand
/// times its length. The buffer grows by doubling, never past the limit,
/// and is reserved before it grows; the reservation ends with this call.
async fn read_body(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.max_body;
    let too_large = || {
        ApiError::new(
            http::StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request bodies are limited to {limit} bytes"),
        )
    };
    let overloaded = || {
        state.hub.metrics().limit_rejected(Limit::InflightBody);
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                http::StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the hub is reading as many request bodies as it may at once \
                 (--max-inflight-body); retry shortly",
            )
        }
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // A declared length is reserved whole, so a body that was let in is
    // never refused halfway for want of room.
    let first = declared.map_or(0, |n| n as usize);
    let budget = &state.body_budget;
    let mut reservation = budget.reserve(first).ok_or_else(overloaded)?;
    let mut buffer: Vec<u8> = Vec::new();
    let mut body = req.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::bad_request("bad_body", format!("could not read the request body: {e}"))
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let needed = buffer.len() + data.len();
        if needed > limit {
            return Err(too_large());
        }
        if needed > buffer.capacity() {
            let room = needed
                .max(buffer.capacity() * 2)
                .max(first)
                .clamp(1024.min(limit), limit);
            if !budget.grow(&mut reservation, room) {
                return Err(overloaded());
            }
            buffer.reserve_exact(room - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Bytes::from(buffer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(q: &str) -> Params {
        Params::decode(q.as_bytes()).unwrap_or_default()
    }

    #[test]
    fn query_values_are_decoded() {
        let p = params("userId=u%201&message=a+b%0Ac&x=");
        assert_eq!(p.one("userId").ok().flatten(), Some("u 1"));
        assert_eq!(p.one("message").ok().flatten(), Some("a b\nc"));
        assert_eq!(p.one("x").ok().flatten(), Some(""));
        assert_eq!(p.one("nope").ok().flatten(), None);
    }

    #[test]
    fn decoding_in_place_reads_what_a_copy_would() {
        let p = params("a=%41%2B+b%&k%3Dv=1&&%zz=%4&t=%");
        let pairs: Vec<_> = p.pairs().collect();
        assert_eq!(
            pairs,
            [("a", "A+ b%"), ("k=v", "1"), ("%zz", "%4"), ("t", "%")]
        );
        let mut q = params("x=1");
        q.extend(params("y=%C3%A9"));
        assert_eq!(q.pairs().collect::<Vec<_>>(), [("x", "1"), ("y", "é")]);
    }

    #[test]
    fn halves_of_a_character_in_two_pieces_are_refused() {
        assert!(Params::decode(b"a=%C3&b=%A9").is_err());
        assert!(Params::decode(b"a%C3=%A9").is_err());
    }

    #[test]
    fn conflicting_repeats_are_refused_identical_ones_accepted() {
        assert!(params("a=1&a=2").one("a").is_err());
        assert_eq!(params("a=1&a=1").one("a").ok().flatten(), Some("1"));
        assert_eq!(params("t=x&t=y").all("t").collect::<Vec<_>>(), ["x", "y"]);
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert!(Params::decode(b"a=%FF").is_err());
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
    }
}
