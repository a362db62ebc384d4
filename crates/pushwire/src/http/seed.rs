//! The seed service's management calls, same paths and parameter names, as
//! thin aliases of the hub's calls. Each accepts GET and POST (query or form).

use axum::extract::State as AxState;
use axum::Json;
use serde::Serialize;
use utoipa::{IntoResponses, ToSchema};

use super::api::Closed;
use super::errors::ErrorBody;
use super::{ApiError, Params, PathParam, Publisher, RatedPublisher, State};
use pushwire_core::event::Draft;
use pushwire_core::event::Target;

/// The seed's publishing calls, each reading its own parameter names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedPublish {
    /// `/sse/sendMessage?userId=&message=`
    SendMessage,
    /// `/sse/push?id=&content=`
    Push,
    /// `/sse/groupSendMessage?groupId=&message=`: every user whose id starts with `groupId`.
    GroupSendMessage,
    /// `/sse/batchSendMessage?message=[&ids=a,b,c]`: everyone, or the listed users.
    BatchSendMessage,
}

impl SeedPublish {
    /// The event a call's parameters ask for. Pure, so it can be tested on
    /// parameters alone; the hub validates the draft.
    pub fn draft(self, params: &Params) -> Result<Draft, ApiError> {
        let (target, data) = match self {
            SeedPublish::SendMessage => (
                Target::user(params.required("userId")?),
                params.required("message")?,
            ),
            SeedPublish::Push => (
                Target::user(params.required("id")?),
                params.required("content")?,
            ),
            SeedPublish::GroupSendMessage => (
                Target::UserPrefix(params.required("groupId")?.to_owned()),
                params.required("message")?,
            ),
            SeedPublish::BatchSendMessage => {
                let target = match params.one("ids")? {
                    Some(ids) => Target::Users(
                        ids.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned)
                            .collect(),
                    ),
                    None => Target::All,
                };
                (target, params.required("message")?)
            }
        };
        Ok(Draft::new(target, data))
    }
}

/// What a seed publishing call may refuse with (for the OpenAPI document only: the
/// handlers answer them through [`ApiError`]).
#[allow(dead_code)]
#[derive(IntoResponses)]
enum PublishRefusals {
    #[response(
        status = 400,
        description = "`missing_parameter`, `conflicting_parameter`, `invalid_field`, `invalid_utf8`, `bad_body`: nothing was stored"
    )]
    Status400(ErrorBody),
    #[response(
        status = 401,
        description = "`unauthorized` (no credential), `invalid_token`"
    )]
    Status401(ErrorBody),
    #[response(
        status = 403,
        description = "`unauthorized` (wrong key, not loopback), `insufficient_scope`, `cross_origin`"
    )]
    Status403(ErrorBody),
    #[response(status = 413, description = "`body_too_large`")]
    Status413(ErrorBody),
    #[response(
        status = 415,
        description = "`unsupported_media_type`: a POST body that is not a form"
    )]
    Status415(ErrorBody),
    #[response(status = 421, description = "`host_not_allowed`")]
    Status421(ErrorBody),
    #[response(
        status = 429,
        description = "`rate_limited`: over `--publish-rate`; nothing was stored"
    )]
    Status429(ErrorBody),
    #[response(status = 503, description = "`storage_unavailable`, `overloaded`")]
    Status503(ErrorBody),
    #[response(
        status = 507,
        description = "`insufficient_storage`: nothing was stored"
    )]
    Status507(ErrorBody),
}

/// What the seed's other management calls may refuse with (for the OpenAPI document only: the
/// handlers answer them through [`ApiError`]).
#[allow(dead_code)]
#[derive(IntoResponses)]
enum ManageRefusals {
    #[response(
        status = 400,
        description = "`missing_parameter`, `conflicting_parameter`, `invalid_field`, `invalid_utf8`"
    )]
    Status400(ErrorBody),
    #[response(status = 401, description = "`unauthorized`, `invalid_token`")]
    Status401(ErrorBody),
    #[response(
        status = 403,
        description = "`unauthorized`, `insufficient_scope`, `cross_origin`"
    )]
    Status403(ErrorBody),
    #[response(status = 421, description = "`host_not_allowed`")]
    Status421(ErrorBody),
    #[response(
        status = 503,
        description = "`storage_unavailable`: the cluster's Redis cannot be reached"
    )]
    Status503(ErrorBody),
}

/// What a seed publishing call answers: the stored event's id.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeedPublished {
    /// The event's id (`#<seq>.<tag>`), as streams carry it.
    pub id: String,
}

async fn publish_one(
    AxState(state): State,
    call: SeedPublish,
    params: &Params,
) -> Result<Json<SeedPublished>, ApiError> {
    let draft = call.draft(params)?;
    let events = state.hub.publish(vec![draft]).await?;
    let id = events.first().map(|e| e.id.to_string()).unwrap_or_default();
    Ok(Json(SeedPublished { id }))
}

/// `/sse/sendMessage?userId=&message=`
#[utoipa::path(
    method(get, post),
    path = "/sse/sendMessage",
    tag = "seed",
    description = "One user (every stream of theirs). The parameters may also come as an `application/x-www-form-urlencoded` POST body.",
    params(
        ("userId" = String, Query, description = "The user"),
        ("message" = String, Query, description = "The data"),
    ),
    responses(
        (status = 200, description = "Stored, then delivered", body = SeedPublished),
        PublishRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn send_message(
    state: State,
    _: RatedPublisher,
    params: Params,
) -> Result<Json<SeedPublished>, ApiError> {
    publish_one(state, SeedPublish::SendMessage, &params).await
}

/// `/sse/push?id=&content=`
#[utoipa::path(
    method(get, post),
    path = "/sse/push",
    tag = "seed",
    description = "One user, in the seed's other form. The parameters may also come as an `application/x-www-form-urlencoded` POST body.",
    params(
        ("id" = String, Query, description = "The user"),
        ("content" = String, Query, description = "The data"),
    ),
    responses(
        (status = 200, description = "Stored, then delivered", body = SeedPublished),
        PublishRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn push(
    state: State,
    _: RatedPublisher,
    params: Params,
) -> Result<Json<SeedPublished>, ApiError> {
    publish_one(state, SeedPublish::Push, &params).await
}

/// `/sse/groupSendMessage?groupId=&message=`
#[utoipa::path(
    method(get, post),
    path = "/sse/groupSendMessage",
    tag = "seed",
    description = "A group: a user id prefix. The parameters may also come as an `application/x-www-form-urlencoded` POST body.",
    params(
        ("groupId" = String, Query, description = "Every online user whose id starts with it"),
        ("message" = String, Query, description = "The data"),
    ),
    responses(
        (status = 200, description = "Stored, then delivered", body = SeedPublished),
        PublishRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn group_send_message(
    state: State,
    _: RatedPublisher,
    params: Params,
) -> Result<Json<SeedPublished>, ApiError> {
    publish_one(state, SeedPublish::GroupSendMessage, &params).await
}

/// `/sse/batchSendMessage?message=[&ids=a,b,c]`
#[utoipa::path(
    method(get, post),
    path = "/sse/batchSendMessage",
    tag = "seed",
    description = "Everyone, or the listed users. The parameters may also come as an `application/x-www-form-urlencoded` POST body.",
    params(
        ("message" = String, Query, description = "The data"),
        ("ids" = Option<String>, Query, description = "Comma-separated user ids; without it, everyone"),
    ),
    responses(
        (status = 200, description = "Stored, then delivered", body = SeedPublished),
        PublishRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn batch_send_message(
    state: State,
    _: RatedPublisher,
    params: Params,
) -> Result<Json<SeedPublished>, ApiError> {
    publish_one(state, SeedPublish::BatchSendMessage, &params).await
}

/// `/sse/close/{userId}`
#[utoipa::path(
    method(get, post),
    path = "/sse/close/{user}",
    tag = "seed",
    description = "Ends every stream of a user, on every node.",
    params(
        ("user" = String, Path, description = "The user whose streams end"),
    ),
    responses(
        (status = 200, description = "How many streams were ended", body = Closed),
        ManageRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn close_path(
    AxState(state): State,
    _: Publisher,
    PathParam(user): PathParam,
) -> Result<Json<Closed>, ApiError> {
    let closed = state.hub.close_user_everywhere(&user).await?;
    Ok(Json(Closed { closed }))
}

/// `/sse/over?id=`
#[utoipa::path(
    method(get, post),
    path = "/sse/over",
    tag = "seed",
    description = "Ends every stream of a user, on every node (the seed's other form).",
    params(
        ("id" = String, Query, description = "The user whose streams end"),
    ),
    responses(
        (status = 200, description = "How many streams were ended", body = Closed),
        ManageRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn close_query(
    AxState(state): State,
    _: Publisher,
    params: Params,
) -> Result<Json<Closed>, ApiError> {
    let user = params.required("id")?;
    let closed = state.hub.close_user_everywhere(user).await?;
    Ok(Json(Closed { closed }))
}

/// `/sse/getUserCount`: distinct users with at least one open stream, as a plain integer.
#[utoipa::path(
    method(get, post),
    path = "/sse/getUserCount",
    tag = "seed",
    description = "Distinct users with at least one open stream, as a plain integer.",
    responses(
        (status = 200, description = "The count, as text", body = String, content_type = "text/plain"),
        ManageRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn user_count(AxState(state): State, _: Publisher) -> Result<String, ApiError> {
    Ok(state.hub.user_count_everywhere().await?.to_string())
}

/// `/sse/getIds`: the online user ids as a JSON array.
#[utoipa::path(
    method(get, post),
    path = "/sse/getIds",
    tag = "seed",
    description = "The online user ids.",
    responses(
        (status = 200, description = "The ids", body = Vec<String>),
        ManageRefusals,
    ),
    security((), ("bearer" = [])),
)]
pub async fn ids(AxState(state): State, _: Publisher) -> Result<Json<Vec<String>>, ApiError> {
    let users = state.hub.users_everywhere().await?;
    Ok(Json(users.into_iter().map(|u| u.id).collect()))
}
