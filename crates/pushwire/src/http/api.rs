//! The JSON API under `/api/v1`.
//!
//! Requests and answers are typed: the same types are serialized here and
//! described by the OpenAPI document (`openapi.rs`), whose `#[utoipa::path]`
//! annotations sit on these handlers.

use std::sync::Arc;

use axum::extract::{Request, State as AxState};
use axum::Json;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::errors::ErrorBody;
use super::{
    content_type_is, read_body, rejected, ApiError, Params, PathParam, Publisher, State,
    TopicPublisher,
};
use pushwire_core::event::Target;
use pushwire_core::event::{Draft, Event};
use pushwire_core::hub::{HistoryQuery, Stats};
use pushwire_core::registry::{TopicStreams, UserStreams};
use pushwire_core::route::Interest;

use super::schema;

/// Most events one history call returns.
const MAX_HISTORY_LIMIT: usize = 10_000;

/// One event to publish, as JSON.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    #[schema(value_type = schema::TargetSchema)]
    to: Target,
    /// The SSE event type (`message` in browsers when absent).
    #[serde(default)]
    event: Option<String>,
    /// A string is sent as is; any other JSON value is sent as its JSON text.
    data: Value,
    /// The publisher's own id: unique, not starting with `#`, not all digits.
    #[serde(default)]
    id: Option<String>,
    /// How long browsers wait before reconnecting, in milliseconds.
    #[serde(default)]
    #[schema(maximum = 86_400_000)]
    retry: Option<u64>,
    /// Only for topic events: delivered only to streams allowed to read a topic.
    #[serde(default)]
    private: bool,
}

/// One event, or an array of events published as one batch (all or nothing).
// Only the document uses this type: `publish_body` parses, picking the shape
// by the first byte so that errors name the right one.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum PublishPayload {
    One(PublishRequest),
    Batch(Vec<PublishRequest>),
}

impl From<PublishRequest> for Draft {
    fn from(r: PublishRequest) -> Draft {
        let data = match r.data {
            Value::String(s) => s,
            other => other.to_string(),
        };
        Draft {
            target: r.to,
            event: r.event,
            data,
            id: r.id,
            retry: r.retry,
            private: r.private,
        }
    }
}

/// What a `/api/v1/publish` body asks for.
#[derive(Debug)]
pub struct PublishBody {
    /// The events, in the order given; not yet validated (the hub does that).
    pub drafts: Vec<Draft>,
    /// The body was an array: the answer lists ids (`{"ids": [...]}`).
    pub batch: bool,
}

/// Parses a `/api/v1/publish` body: one JSON object, or an array of them
/// published as one batch. Pure, so it can be tested on bytes alone.
pub fn publish_body(body: &[u8]) -> Result<PublishBody, ApiError> {
    let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    let invalid = |e: serde_json::Error| ApiError::bad_request("invalid_json", e.to_string());
    let drafts: Vec<Draft> = if batch {
        serde_json::from_slice::<Vec<PublishRequest>>(body)
            .map_err(invalid)?
            .into_iter()
            .map(Draft::from)
            .collect()
    } else {
        vec![serde_json::from_slice::<PublishRequest>(body)
            .map_err(invalid)?
            .into()]
    };
    Ok(PublishBody { drafts, batch })
}

/// The answer to a publish: the id of each stored event.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Published {
    /// One event was sent: `{"id": "#1"}`.
    One { id: String },
    /// A batch was sent: `{"ids": ["2", "3"]}`, in order.
    Batch { ids: Vec<String> },
}

/// Online users.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnlineUsers {
    /// Distinct users with at least one open stream.
    pub count: usize,
    /// Sorted by id.
    #[schema(value_type = Vec<schema::UserStreamsSchema>)]
    pub users: Vec<UserStreams>,
}

/// Topics streams are subscribed to.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenTopics {
    /// Distinct exact topics with at least one open stream.
    pub count: usize,
    /// Sorted by topic.
    #[schema(value_type = Vec<schema::TopicStreamsSchema>)]
    pub topics: Vec<TopicStreams>,
}

/// How many streams were ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Closed {
    pub closed: usize,
}

/// A page of history, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventsPage {
    #[schema(value_type = Vec<schema::EventSchema>)]
    pub events: Vec<Arc<Event>>,
    /// The id to pass as `after` for the next page (`null` when the page is empty).
    pub next: Option<String>,
}

/// `POST /api/v1/publish`: one object, or an array published as one batch.
#[utoipa::path(
    post,
    path = "/api/v1/publish",
    tag = "publish",
    request_body(content = PublishPayload, content_type = "application/json"),
    responses(
        (status = 200, description = "Stored, then delivered: `{\"id\"}` for one event, `{\"ids\"}` for a batch", body = Published),
        (status = 400, description = "`invalid_json`, `invalid_field`, `empty_batch`, `bad_body`: nothing was stored", body = ErrorBody),
        (status = 401, description = "`unauthorized` (no credential), `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized` (wrong key, not loopback), `insufficient_scope`, `reserved_topic`, `cross_origin` (no publisher credential configured, and the request came from a page of another site)", body = ErrorBody),
        (status = 421, description = "`host_not_allowed`: no publisher credential configured, and the Host is neither loopback nor in `--allowed-hosts`", body = ErrorBody),
        (status = 409, description = "`duplicate_id`: an id is already in the history; nothing was stored", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send application/json", body = ErrorBody),
        (status = 429, description = "`rate_limited`: over `--publish-rate`; `Retry-After` says when to try again; nothing was stored", body = ErrorBody),
        (status = 431, description = "`headers_too_large`: the request head is over `--max-header-bytes`", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`; `overloaded`: request bodies being read are at `--max-inflight-body`, `Retry-After: 1`, nothing was stored", body = ErrorBody),
        (status = 507, description = "`insufficient_storage`: the history's disk is full; nothing was stored", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn publish(
    AxState(state): State,
    TopicPublisher(rights): TopicPublisher,
    req: Request,
) -> Result<Json<Published>, ApiError> {
    if !content_type_is(req.headers(), "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the event as application/json",
        ));
    }
    let body = read_body(req, &state).await?;
    let PublishBody { drafts, batch } = publish_body(&body)?;
    for draft in &drafts {
        let allowed = match &draft.target {
            Target::Topics(topics) => rights.check_topics(topics),
            _ => rights.check_unscoped(),
        };
        allowed.map_err(|e| rejected(&state, e))?;
    }
    let events = state.hub.publish(drafts).await?;
    let mut ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    Ok(Json(if batch {
        Published::Batch { ids }
    } else {
        Published::One {
            id: ids.pop().unwrap_or_default(),
        }
    }))
}

/// `GET /api/v1/stats`
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "manage",
    responses(
        (status = 200, description = "The hub's counters (in a cluster: every node's)", body = schema::StatsSchema),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `cross_origin`", body = ErrorBody),
        (status = 421, description = "`host_not_allowed`: no publisher credential configured, and the Host is neither loopback nor in `--allowed-hosts`", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`: the cluster's Redis cannot be reached", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn stats(AxState(state): State, _: Publisher) -> Result<Json<Stats>, ApiError> {
    Ok(Json(state.hub.stats_everywhere().await?))
}

/// `GET /api/v1/users`: online users with their stream counts.
#[utoipa::path(
    get,
    path = "/api/v1/users",
    tag = "manage",
    responses(
        (status = 200, description = "Online users (in a cluster: on every node)", body = OnlineUsers),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `cross_origin`", body = ErrorBody),
        (status = 421, description = "`host_not_allowed`: no publisher credential configured, and the Host is neither loopback nor in `--allowed-hosts`", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`: the cluster's Redis cannot be reached", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn users(AxState(state): State, _: Publisher) -> Result<Json<OnlineUsers>, ApiError> {
    let users = state.hub.users_everywhere().await?;
    Ok(Json(OnlineUsers {
        count: users.len(),
        users,
    }))
}

/// `GET /api/v1/topics`: exact topics with their open streams.
#[utoipa::path(
    get,
    path = "/api/v1/topics",
    tag = "manage",
    responses(
        (status = 200, description = "Exact topics with open streams (in a cluster: on every node); streams listening through a selector (Mercure's `*`, a URI template, a URL pattern) count under no topic", body = OpenTopics),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `cross_origin`", body = ErrorBody),
        (status = 421, description = "`host_not_allowed`: no publisher credential configured, and the Host is neither loopback nor in `--allowed-hosts`", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`: the cluster's Redis cannot be reached", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn topics(AxState(state): State, _: Publisher) -> Result<Json<OpenTopics>, ApiError> {
    let topics = state.hub.topics_everywhere().await?;
    Ok(Json(OpenTopics {
        count: topics.len(),
        topics,
    }))
}

/// `DELETE /api/v1/users/{id}`: ends that user's streams.
#[utoipa::path(
    delete,
    path = "/api/v1/users/{user}",
    tag = "manage",
    params(("user" = String, Path, description = "The user whose streams end")),
    responses(
        (status = 200, description = "How many of the user's streams were ended (0 when offline)", body = Closed),
        (status = 400, description = "`invalid_utf8`: the user id is not UTF-8", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `cross_origin`", body = ErrorBody),
        (status = 421, description = "`host_not_allowed`: no publisher credential configured, and the Host is neither loopback nor in `--allowed-hosts`", body = ErrorBody),
        (status = 404, description = "`not_found`: an empty user id names no route", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`: the cluster's Redis cannot be reached", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn close_user(
    AxState(state): State,
    _: Publisher,
    PathParam(user): PathParam,
) -> Result<Json<Closed>, ApiError> {
    Ok(Json(Closed {
        closed: state.hub.close_user_everywhere(&user).await?,
    }))
}

/// `GET /api/v1/events?after=<id>&limit=N&user=u&topic=t`
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "manage",
    params(
        ("after" = Option<String>, Query, description = "Start after this event id; the oldest retained event when absent"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most events returned (default 100)"),
        ("user" = Option<String>, Query, description = "Only events this user's stream would receive"),
        ("topic" = Option<Vec<String>>, Query, explode = true, description = "Only events on these topics (repeatable)"),
    ),
    responses(
        (status = 200, description = "Retained events, oldest first", body = EventsPage),
        (status = 400, description = "`invalid_parameter`, `conflicting_parameter`, `invalid_utf8`, `invalid_field`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `cross_origin`", body = ErrorBody),
        (status = 421, description = "`host_not_allowed`: no publisher credential configured, and the Host is neither loopback nor in `--allowed-hosts`", body = ErrorBody),
        (status = 404, description = "`unknown_last_event_id`: `after` is not in the retained history", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn events(
    AxState(state): State,
    _: Publisher,
    params: Params,
) -> Result<Json<EventsPage>, ApiError> {
    let limit = match params.one("limit")? {
        None => 100,
        // Digits only: `+5` would parse, and a number is either plain or refused.
        Some(text) => (text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| text.parse::<usize>().ok())
            .flatten()
            .filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("limit must be a number from 1 to {MAX_HISTORY_LIMIT}"),
                )
            })?,
    };
    let topics: Vec<String> = params.all("topic").map(str::to_owned).collect();
    let user = params.one("user")?.map(str::to_owned);
    let filter = (user.is_some() || !topics.is_empty()).then_some(Interest::new(user, topics));
    let query = HistoryQuery {
        after: params.one("after")?.map(str::to_owned),
        limit,
        filter,
    };
    match state.hub.history(query).await? {
        Some(events) => {
            let next = events.last().map(|e| e.id.to_string());
            Ok(Json(EventsPage { events, next }))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_last_event_id",
            "`after` is not an event id in the retained history (never issued, or trimmed)",
        )),
    }
}
