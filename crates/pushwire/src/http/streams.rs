//! Subscribe routes: a request becomes an [`Interest`] and a resume point,
//! the hub's [`Subscribed`] becomes a `text/event-stream` response whose
//! headers go out at once, and whose body ([`StreamBody`]) yields the
//! stream's frames while it holds the stream's place under the limits.
//!
//! A user's stream may resume after the newest event written to any of the
//! user's streams (`since=last-seen`, see [`requested_resume`]) instead of
//! a `Last-Event-ID`; the hub takes the same resume path for both.
//!
//! Who may open a stream is decided first, before anything is registered:
//! by the application's backend when `--auth-url` is set
//! ([`crate::auth::backend`]), else by the subscriber policy (tokens).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State as AxState;
use axum::response::Response;
use bytes::Bytes;
use futures_util::Stream;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use http_body::{Frame, SizeHint};

use super::errors::ErrorBody;
use super::limits::{stream_permit, ClientAddr};
use super::{presented_token, ApiError, AppState, Params, PathParam, State, LAST_EVENT_ID};
use crate::auth::backend::{Ask, Backend, Session};
use crate::limits::StreamPermit;
use crate::log_limit;
use crate::webhooks::StreamTicket;
use pushwire_core::hub::{SubscribeOptions, Subscribed};
use pushwire_core::outbox::{Frames, StreamEnd};
use pushwire_core::route::{Interest, Selector};
use pushwire_core::seen::LAST_SEEN;

/// What the seed's stream routes may refuse with (for the OpenAPI document
/// only: the handlers answer them through [`ApiError`]).
#[allow(dead_code)]
#[derive(utoipa::IntoResponses)]
enum SeedStreamRefusals {
    #[response(
        status = 400,
        description = "`missing_parameter`, `conflicting_parameter`, `invalid_field`, `invalid_utf8`, `invalid_last_event_id` (also a `since` other than `last-seen`)"
    )]
    Status400(ErrorBody),
    #[response(
        status = 401,
        description = "`unauthorized`, `invalid_token` (with subscriber tokens or `--auth-url`)"
    )]
    Status401(ErrorBody),
    #[response(
        status = 403,
        description = "`unauthorized`, `insufficient_scope`, `forbidden`"
    )]
    Status403(ErrorBody),
    #[response(
        status = 429,
        description = "`too_many_streams_from_ip`, `too_many_streams_for_user`; nothing was opened"
    )]
    Status429(ErrorBody),
    #[response(
        status = 503,
        description = "`too_many_streams`, `storage_unavailable`, `auth_unavailable`"
    )]
    Status503(ErrorBody),
}

/// `GET /sse/subscribe/{user}` (seed).
#[utoipa::path(
    get,
    path = "/sse/subscribe/{user}",
    tag = "seed",
    params(
        ("user" = String, Path, description = "The user whose events the stream carries"),
        ("topic" = Option<Vec<String>>, Query, explode = true, description = "Topics the stream carries too (repeatable)"),
        ("lastEventID" = Option<String>, Query, description = "Resume after this event id, for clients that cannot send the header; `earliest` replays all history; `last-seen` as `since=last-seen`"),
        ("since" = Option<String>, Query, description = "`last-seen`: resume after the newest event written to any of this user's streams, on any node (what the user missed while away); without a cursor, all retained history. A `Last-Event-ID` header wins"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (browsers send it when they reconnect); wins over the query"),
    ),
    responses(
        (status = 200, description = "The user's event stream, as on `/api/v1/stream`", content_type = "text/event-stream", body = StreamEvent),
        SeedStreamRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn seed_subscribe_path(
    state: State,
    client: ClientAddr,
    PathParam(user): PathParam,
    uri: Uri,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let request = StreamRequest {
        client,
        route: RouteKind::Seed,
        path: uri.path(),
        headers: &headers,
        params: &params,
    };
    open(state, request, Some(user)).await
}

/// `GET /sse/subscribe?id={user}` (seed).
#[utoipa::path(
    get,
    path = "/sse/subscribe",
    tag = "seed",
    params(
        ("id" = String, Query, description = "The user whose events the stream carries"),
        ("topic" = Option<Vec<String>>, Query, explode = true, description = "Topics the stream carries too (repeatable)"),
        ("lastEventID" = Option<String>, Query, description = "Resume after this event id, for clients that cannot send the header; `earliest` replays all history; `last-seen` as `since=last-seen`"),
        ("since" = Option<String>, Query, description = "`last-seen`: resume after the newest event written to any of this user's streams, on any node (what the user missed while away); without a cursor, all retained history. A `Last-Event-ID` header wins"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (browsers send it when they reconnect); wins over the query"),
    ),
    responses(
        (status = 200, description = "The user's event stream, as on `/api/v1/stream`", content_type = "text/event-stream", body = StreamEvent),
        SeedStreamRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn seed_subscribe_query(
    state: State,
    client: ClientAddr,
    uri: Uri,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let user = params.required("id")?.to_owned();
    let request = StreamRequest {
        client,
        route: RouteKind::Seed,
        path: uri.path(),
        headers: &headers,
        params: &params,
    };
    open(state, request, Some(user)).await
}

/// One event of a stream, as a client's SSE parser reads it (WHATWG
/// "server-sent events"): what the OpenAPI document gives as the schema of
/// each event of a `text/event-stream` answer.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct StreamEvent {
    /// The event's data lines, joined with LF: the published `data`, exactly.
    data: String,
    /// The event type: the published `event`, `message` when it had none,
    /// `reset` when history could not bridge the gap.
    event: Option<String>,
    /// The event id, to send back as `Last-Event-ID`.
    id: Option<String>,
    /// How long to wait before reconnecting, in milliseconds.
    retry: Option<u64>,
}

/// `GET /api/v1/stream?user=u&topic=a&topic=b`.
#[utoipa::path(
    get,
    path = "/api/v1/stream",
    tag = "subscribe",
    params(
        ("user" = Option<String>, Query, description = "The user whose events the stream carries"),
        ("topic" = Option<Vec<String>>, Query, explode = true, description = "Topics the stream carries too (repeatable); a `user` or a `topic` is required"),
        ("lastEventID" = Option<String>, Query, description = "Resume after this event id, for clients that cannot send the header; `earliest` replays all history; `last-seen` as `since=last-seen`"),
        ("since" = Option<String>, Query, description = "`last-seen`: resume after the newest event written to any of this user's streams, on any node (what the user missed while away); without a cursor, all retained history. A `Last-Event-ID` header wins"),
        ("last_event_id" = Option<String>, Query, description = "The same, as the current Mercure draft names it (`last-seen` included)"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id (browsers send it when they reconnect); wins over the query"),
    ),
    responses(
        (status = 200, description = "The event stream: `retry`, any replay, then live events and `:` heartbeats. Headers: `Last-Event-ID` (the newest id), `pushwire-reset: 1` when the requested id could not be resumed from", content_type = "text/event-stream", body = StreamEvent),
        (status = 400, description = "`missing_parameter`, `conflicting_parameter`, `invalid_field`, `invalid_utf8`, `invalid_last_event_id` (also a `since` other than `last-seen`); `last_seen_needs_user`: `last-seen` asked for a stream that is no user's", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `invalid_token` (with subscriber tokens); `unauthorized` when the `--auth-url` backend answered 401", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope` (the token's `sub` is another user); with `--auth-url`, `forbidden`: the backend answered 403, or its answer names another user or does not grant a requested topic", body = ErrorBody),
        (status = 429, description = "`too_many_streams_from_ip` (over `--max-streams-per-ip`), `too_many_streams_for_user` (over `--max-streams-per-user`); `Retry-After` says when to try again; nothing was opened", body = ErrorBody),
        (status = 503, description = "`too_many_streams`, `storage_unavailable`; `auth_unavailable`: the `--auth-url` backend gave no usable answer (an error status, an unreadable body, a timeout, no connection), and nothing was opened", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn api_stream(
    state: State,
    client: ClientAddr,
    uri: Uri,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let user = params.one("user")?.map(str::to_owned);
    if user.is_none() && params.all("topic").next().is_none() {
        return Err(ApiError::bad_request(
            "missing_parameter",
            "name a `user` or at least one `topic`",
        ));
    }
    let request = StreamRequest {
        client,
        route: RouteKind::Api,
        path: uri.path(),
        headers: &headers,
        params: &params,
    };
    open(state, request, user).await
}

/// What every stream route knows of its request.
pub(super) struct StreamRequest<'a> {
    pub client: ClientAddr,
    pub route: RouteKind,
    /// The request's path, as the `--auth-url` backend is told it.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub params: &'a Params,
}

/// Who a stream is for and what it may read, as its authority decided.
pub(super) struct Authorized {
    pub user: Option<String>,
    pub readable: Vec<Selector>,
    pub lifetime: Option<Duration>,
    /// The subscriber token's claims, when a token decided.
    pub claims: Option<crate::auth::jwt::Claims>,
}

/// Asks the `--auth-url` backend about a stream request: its answer for
/// the request's session, before anything is registered.
pub(super) async fn ask_backend(
    backend: &Arc<Backend>,
    request: &StreamRequest<'_>,
    user: Option<&str>,
    topics: Vec<&str>,
    last_event_id: Option<&str>,
) -> Result<Arc<Session>, ApiError> {
    let ask = Ask {
        route: request.path,
        user,
        topics,
        last_event_id,
        address: request.client.0,
        headers: request.headers,
    };
    Ok(backend.authorize(ask).await?)
}

/// Which family of routes opened a stream, as its log lines say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Seed,
    Api,
    Mercure,
}

impl RouteKind {
    fn label(self) -> &'static str {
        match self {
            RouteKind::Seed => "seed",
            RouteKind::Api => "api",
            RouteKind::Mercure => "mercure",
        }
    }
}

async fn open(
    AxState(state): State,
    request: StreamRequest<'_>,
    user: Option<String>,
) -> Result<Response, ApiError> {
    let StreamRequest {
        client,
        route,
        path,
        headers,
        params,
    } = request;
    let mut topics: Vec<String> = params.all("topic").map(str::to_owned).collect();
    topics.sort_unstable();
    topics.dedup();
    let (last_event_id, last_seen) = requested_resume(headers, params)?;
    let authorized = match &state.backend {
        Some(backend) => {
            let asked = topics.iter().map(String::as_str).collect();
            let asked_id = last_event_id.or(last_seen.then_some(LAST_SEEN));
            let session = ask_backend(backend, &request, user.as_deref(), asked, asked_id).await?;
            let user = session.stream_user(user.as_deref())?;
            session.check_topics(&topics)?;
            Authorized {
                user,
                readable: session.grants.private_selectors().to_vec(),
                lifetime: session.lifetime(),
                claims: None,
            }
        }
        None => {
            let token = presented_token(headers, params);
            state.subscribers.refresh_keys_for(token).await;
            let reader = match &user {
                Some(user) => state.subscribers.authenticate_user(token, user)?,
                None => state.subscribers.authenticate(token)?,
            };
            Authorized {
                user,
                readable: reader.readable(),
                lifetime: reader.lifetime(),
                claims: reader.claims,
            }
        }
    };
    let interest = Interest {
        readable: authorized.readable,
        ..Interest::new(authorized.user, topics)
    };
    if last_seen && interest.user.is_none() {
        return Err(ApiError::bad_request(
            "last_seen_needs_user",
            "`last-seen` resumes a user's stream: this stream is no user's (name a `user`, \
             or use a `Last-Event-ID`)",
        ));
    }
    // After authentication (a stranger cannot use up a user's share) and
    // before the hub sees the stream (a refused one announces nothing).
    let permit = stream_permit(&state, client, interest.user.as_deref())?;
    let options = SubscribeOptions {
        last_event_id,
        last_seen,
        lifetime: authorized.lifetime,
        reset_event: true,
        subscriber: None,
    };
    let stream_user = interest.user.clone();
    let subscription = state.hub.subscribe(interest, options).await?;
    let ticket = webhook_ticket(&state, stream_user.as_deref(), path).await?;

    let newest = subscription.last_event_id.clone();
    let mut response = event_stream(route, subscription, permit, ticket, "no-cache");
    if let Some(id) = newest.and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert(LAST_EVENT_ID, id);
    }
    Ok(response)
}

/// Where a client asks to resume: the `Last-Event-ID` header a browser
/// sends when it reconnects wins over a query parameter baked into the URL
/// when the page started (`lastEventID`, or the current Mercure draft's
/// `last_event_id`). Empty means none.
pub fn requested_last_event_id<'a>(
    headers: &'a HeaderMap,
    params: &'a Params,
) -> Result<Option<&'a str>, ApiError> {
    let id = match headers.get(LAST_EVENT_ID) {
        // Browsers send the id back as UTF-8, and publisher ids may be any
        // UTF-8 text.
        Some(value) => Some(std::str::from_utf8(value.as_bytes()).map_err(|_| {
            ApiError::bad_request("invalid_last_event_id", "Last-Event-ID must be UTF-8")
        })?),
        None => ["lastEventID", "last_event_id", "Last-Event-ID"]
            .into_iter()
            .find_map(|name| params.one(name).transpose())
            .transpose()?,
    };
    Ok(id.filter(|id| !id.is_empty()))
}

/// Tells the webhooks (when configured) that a stream opens: a user's
/// first stream confirms their presence before the stream starts, so a
/// `user.online` the backend will get is stored first. Refused (503) when
/// the outbox cannot take it.
pub(super) async fn webhook_ticket(
    state: &AppState,
    user: Option<&str>,
    path: &str,
) -> Result<Option<StreamTicket>, ApiError> {
    match &state.webhooks {
        Some(webhooks) => Ok(Some(webhooks.stream_opened(user, path).await?)),
        None => Ok(None),
    }
}

/// Where a user's stream asks to resume: the id of
/// [`requested_last_event_id`], or, when the query asks for `last-seen`
/// (`since=last-seen`, or as the `lastEventID` / `last_event_id` value),
/// after the newest event written to any of the user's streams (`true`).
/// A `Last-Event-ID` header wins over the query: a browser reconnecting
/// resumes exactly where it was.
pub(super) fn requested_resume<'a>(
    headers: &'a HeaderMap,
    params: &'a Params,
) -> Result<(Option<&'a str>, bool), ApiError> {
    let since = params.one("since")?.filter(|since| !since.is_empty());
    if since.is_some_and(|since| since != LAST_SEEN) {
        return Err(ApiError::bad_request(
            "invalid_last_event_id",
            "`since` takes only `last-seen` (resume with `lastEventID` otherwise)",
        ));
    }
    let id = requested_last_event_id(headers, params)?;
    let from_header = headers
        .get(LAST_EVENT_ID)
        .is_some_and(|value| !value.is_empty());
    if from_header {
        return Ok((id, false));
    }
    if since.is_some() || id == Some(LAST_SEEN) {
        return Ok((None, true));
    }
    Ok((id, false))
}

/// The `text/event-stream` response of a subscription, with the headers
/// every stream route sends: no buffering by proxies, and
/// `pushwire-reset: 1` when the requested id could not be resumed from.
/// The body holds the stream's `permit` until it is dropped.
pub(super) fn event_stream(
    route: RouteKind,
    subscription: Subscribed,
    permit: StreamPermit,
    ticket: Option<StreamTicket>,
    cache_control: &'static str,
) -> Response {
    let reset = subscription.reset;
    let interest = subscription.frames.interest();
    tracing::debug!(
        route = route.label(),
        user = interest.user.as_deref(),
        topics = interest.topics.len() + interest.selectors.len(),
        resumed = subscription.resumed,
        reset,
        "stream opened"
    );
    let mut response = Response::new(Body::new(StreamBody {
        frames: subscription.frames,
        route,
        resumed: subscription.resumed,
        reset,
        opened: Instant::now(),
        ticket,
        _permit: permit,
    }));
    *response.status_mut() = StatusCode::OK;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if reset {
        h.insert("pushwire-reset", HeaderValue::from_static("1"));
    }
    response
}

/// The body of a `text/event-stream` response: the stream's frames, each
/// one data frame, and the stream's permit, given back when the body is
/// dropped (the client left, the hub ended the stream, the connection
/// broke). Dropping it writes the stream's closing lines.
pub struct StreamBody {
    frames: Frames,
    route: RouteKind,
    resumed: bool,
    reset: bool,
    opened: Instant,
    /// The webhooks' view of this stream, told of its end.
    ticket: Option<StreamTicket>,
    _permit: StreamPermit,
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        let reason = self.frames.end_reason();
        let user = || self.frames.interest().user.as_deref();
        if reason == StreamEnd::SlowConsumer && log_limit::SLOW_CONSUMER.admit() {
            tracing::warn!(
                route = self.route.label(),
                user = user(),
                "slow consumer cut: its queue overflowed (--queue-capacity); \
                 the client resumes from the history"
            );
        }
        let interest = self.frames.interest();
        tracing::debug!(
            route = self.route.label(),
            user = interest.user.as_deref(),
            topics = interest.topics.len() + interest.selectors.len(),
            resumed = self.resumed,
            reset = self.reset,
            duration = ?self.opened.elapsed(),
            %reason,
            "stream closed"
        );
        if let Some(ticket) = self.ticket.take() {
            ticket.closed(reason.label());
        }
    }
}

impl http_body::Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().frames)
            .poll_next(cx)
            .map(|frame| frame.map(|f| Ok(Frame::data(f))))
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
