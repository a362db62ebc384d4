//! The JSON API under `/api/v1`.

use axum::extract::{Path, Request, State as AxState};
use axum::Json;
use http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    content_type_is, read_body, rejected, ApiError, Params, Publisher, State, TopicPublisher,
};
use crate::event::Draft;
use crate::hub::HistoryQuery;
use crate::route::{Interest, Target};

/// Most events one history call returns.
const MAX_HISTORY_LIMIT: usize = 10_000;

/// One event to publish, as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    to: Target,
    #[serde(default)]
    event: Option<String>,
    /// A string is sent as is; any other JSON value is sent as its JSON text.
    data: Value,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    retry: Option<u64>,
    /// Only for topic events: delivered only to streams allowed to read a topic.
    #[serde(default)]
    private: bool,
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

/// `POST /api/v1/publish`: one object, or an array published as one batch.
pub async fn publish(
    AxState(state): State,
    TopicPublisher(rights): TopicPublisher,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    if !content_type_is(req.headers(), "application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the event as application/json",
        ));
    }
    let body = read_body(req, state.max_body).await?;
    let PublishBody { drafts, batch } = publish_body(&body)?;
    for draft in &drafts {
        let allowed = match &draft.target {
            Target::Topics(topics) => rights.check_topics(topics),
            _ => rights.check_unscoped(),
        };
        allowed.map_err(|e| rejected(&state, e))?;
    }
    let events = state.hub.publish(drafts).await?;
    let ids: Vec<&str> = events.iter().map(|e| &*e.id).collect();
    Ok(Json(if batch {
        json!({ "ids": ids })
    } else {
        json!({ "id": ids.first() })
    }))
}

/// `GET /api/v1/stats`
pub async fn stats(AxState(state): State, _: Publisher) -> Json<Value> {
    Json(json!(state.hub.stats().await))
}

/// `GET /api/v1/users`: online users with their stream counts.
pub async fn users(AxState(state): State, _: Publisher) -> Json<Value> {
    let users = state.hub.users();
    Json(json!({ "count": users.len(), "users": users }))
}

/// `DELETE /api/v1/users/{id}`: ends that user's streams.
pub async fn close_user(
    AxState(state): State,
    _: Publisher,
    Path(user): Path<String>,
) -> Json<Value> {
    Json(json!({ "closed": state.hub.close_user(&user) }))
}

/// `GET /api/v1/events?after=<id>&limit=N&user=u&topic=t`
pub async fn events(
    AxState(state): State,
    _: Publisher,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let limit = match params.one("limit")? {
        None => 100,
        Some(text) => text
            .parse::<usize>()
            .ok()
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
            Ok(Json(json!({ "events": events, "next": next })))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_last_event_id",
            "`after` is not an event id in the retained history (never issued, or trimmed)",
        )),
    }
}
