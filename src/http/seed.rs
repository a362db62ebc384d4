//! The seed service's management calls, same paths and parameter names, as
//! thin aliases of the hub's calls. Each accepts GET and POST (query or form).

use axum::extract::State as AxState;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, Params, PathParam, Publisher, RatedPublisher, State};
use crate::event::Draft;
use crate::route::Target;

async fn publish_one(
    AxState(state): State,
    target: Target,
    data: &str,
) -> Result<Json<Value>, ApiError> {
    let events = state.hub.publish(vec![Draft::new(target, data)]).await?;
    let id = events.first().map(|e| e.id.to_string());
    Ok(Json(json!({ "id": id })))
}

/// `/sse/sendMessage?userId=&message=`
pub async fn send_message(
    state: State,
    _: RatedPublisher,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let target = Target::user(params.required("userId")?);
    publish_one(state, target, params.required("message")?).await
}

/// `/sse/push?id=&content=`
pub async fn push(
    state: State,
    _: RatedPublisher,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let target = Target::user(params.required("id")?);
    publish_one(state, target, params.required("content")?).await
}

/// `/sse/groupSendMessage?groupId=&message=`: every user whose id starts with `groupId`.
pub async fn group_send_message(
    state: State,
    _: RatedPublisher,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let target = Target::UserPrefix(params.required("groupId")?.to_owned());
    publish_one(state, target, params.required("message")?).await
}

/// `/sse/batchSendMessage?message=[&ids=a,b,c]`: everyone, or the listed users.
pub async fn batch_send_message(
    state: State,
    _: RatedPublisher,
    params: Params,
) -> Result<Json<Value>, ApiError> {
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
    publish_one(state, target, params.required("message")?).await
}

/// `/sse/close/{userId}`
pub async fn close_path(
    AxState(state): State,
    _: Publisher,
    PathParam(user): PathParam,
) -> Result<Json<Value>, ApiError> {
    let closed = state.hub.close_user_everywhere(&user).await?;
    Ok(Json(json!({ "closed": closed })))
}

/// `/sse/over?id=`
pub async fn close_query(
    AxState(state): State,
    _: Publisher,
    params: Params,
) -> Result<Json<Value>, ApiError> {
    let user = params.required("id")?;
    let closed = state.hub.close_user_everywhere(user).await?;
    Ok(Json(json!({ "closed": closed })))
}

/// `/sse/getUserCount`: distinct users with at least one open stream, as a plain integer.
pub async fn user_count(AxState(state): State, _: Publisher) -> Result<String, ApiError> {
    Ok(state.hub.user_count_everywhere().await?.to_string())
}

/// `/sse/getIds`: the online user ids as a JSON array.
pub async fn ids(AxState(state): State, _: Publisher) -> Result<Json<Vec<String>>, ApiError> {
    let users = state.hub.users_everywhere().await?;
    Ok(Json(users.into_iter().map(|u| u.id).collect()))
}
