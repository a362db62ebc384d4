//! The Mercure protocol at `/.well-known/mercure`: subscribe (GET), publish
//! (POST) and the subscriptions API, in both generations of the protocol —
//! the classic one of the released client libraries (`topic=` selectors with
//! URI templates, the `mercure` token claim) and the current draft (`match=`
//! and `match_urlpattern=` selectors, `authorization_details` tokens). See
//! docs/mercure.md for what is implemented of each.
//!
//! Mercure updates are ordinary hub events sent to topics: the first topic
//! is canonical, the others alternates, and a `/api/v1/stream?topic=`
//! stream receives them as a Mercure subscriber receives `/api/v1/publish`
//! events with topics.

use std::sync::Arc;

use axum::extract::{OriginalUri, Request, State as AxState};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::limits::{stream_permit, ClientAddr};
use super::streams::{event_stream, requested_last_event_id};
use super::{
    presented_token, rated_publish_rights, read_body, rejected, ApiError, AppState, Params, State,
    LAST_EVENT_ID,
};
use crate::auth::AuthError;
use crate::limits::Limit;
use pushwire_core::announce::{self, Subscriber, Subscription};
use pushwire_core::event::Target;
use pushwire_core::event::{Draft, EventError};
use pushwire_core::hub::{SubscribeOptions, EARLIEST};
use pushwire_core::route::{Interest, MatchKind, Selector, SelectorError};

/// The current draft's response header telling which event a resumed
/// stream continues after (`earliest` when the requested one was lost).
pub const MERCURE_LAST_EVENT_ID: HeaderName = HeaderName::from_static("mercure-last-event-id");

/// `GET /.well-known/mercure`: opens a stream on the union of the
/// requested selectors.
pub async fn subscribe(
    AxState(state): State,
    client: ClientAddr,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let selectors = requested_selectors(&params, &state)?;
    let reader = state
        .subscribers
        .authenticate(presented_token(&headers, &params))?;

    let mut interest = Interest {
        readable: reader.readable(),
        ..Interest::default()
    };
    for selector in &selectors {
        match selector.exact_topic() {
            Some(topic) => interest.topics.push(topic.to_owned()),
            None => interest.selectors.push(selector.clone()),
        }
    }
    interest.topics.sort_unstable();
    interest.topics.dedup();
    interest.selectors.dedup();

    let subscriber = state.presence.then(|| {
        let grants = reader.claims.as_ref().map(|c| &c.grants);
        Arc::new(Subscriber {
            id: format!("urn:uuid:{}", uuid::Uuid::new_v4()),
            subscriptions: selectors
                .iter()
                .map(|selector| Subscription {
                    selector: selector.clone(),
                    payload: grants.and_then(|g| g.payload_for(selector)).cloned(),
                })
                .collect(),
        })
    });

    let requested = requested_last_event_id(&headers, &params)?;
    let permit = stream_permit(&state, client, None)?;
    let options = SubscribeOptions {
        last_event_id: requested,
        lifetime: reader.lifetime(),
        reset_event: false,
        subscriber,
    };
    let subscription = state.hub.subscribe(interest, options).await?;

    // Where the stream continues from: the requested event when it was
    // found, `earliest` when the whole history was asked for or when the
    // requested event is unknown (so the client can tell it missed some).
    let resumed_after = match requested {
        Some(id) if !subscription.reset && id != EARLIEST => id.to_owned(),
        Some(_) => EARLIEST.to_owned(),
        None => subscription
            .last_event_id
            .as_deref()
            .unwrap_or(EARLIEST)
            .to_owned(),
    };

    // `private`: a token may be in the URL, and no shared cache may keep it.
    let mut response = event_stream(subscription, permit, "private, no-cache, no-store");
    if let Ok(value) = HeaderValue::from_str(&resumed_after) {
        let h = response.headers_mut();
        h.insert(LAST_EVENT_ID, value.clone());
        if requested.is_some() {
            h.insert(MERCURE_LAST_EVENT_ID, value);
        }
    }
    Ok(response)
}

/// The selectors of a subscription request, each parameter read as its
/// generation of the protocol defines it. Any other parameter whose name
/// starts with `match` is refused, so a misspelt selector fails loudly.
/// Parsing stops at the first selector over `--max-topics-per-stream`, the
/// limit the hub applies to every stream, so an endless list costs nothing.
fn requested_selectors(params: &Params, state: &AppState) -> Result<Vec<Selector>, ApiError> {
    let hub_url = state.hub_url.as_str();
    let max = state.field_limits.topics_per_stream;
    let mut selectors = Vec::new();
    for (name, value) in params.pairs() {
        let parsed = match name {
            "topic" => Selector::classic(value),
            "match" | "matchExact" => Selector::parse(MatchKind::Exact, value, hub_url),
            "match_urlpattern" | "matchURLPattern" => {
                Selector::parse(MatchKind::UrlPattern, value, hub_url)
            }
            "matchURITemplate" => Selector::parse(MatchKind::UriTemplate, value, hub_url),
            other if other.to_ascii_lowercase().starts_with("match") => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("`{other}` is not a topic selector parameter"),
                ))
            }
            _ => continue,
        };
        if selectors.len() == max {
            state.hub.metrics().limit_rejected(Limit::TopicsPerStream);
            return Err(EventError::TooMany {
                field: "topics and selectors",
                max,
                limit: Limit::TopicsPerStream,
            }
            .into());
        }
        selectors.push(parsed.map_err(invalid_selector)?);
    }
    if selectors.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "name at least one topic selector: `topic`, `match` or `match_urlpattern`",
        ));
    }
    Ok(selectors)
}

fn invalid_selector(e: SelectorError) -> ApiError {
    ApiError::bad_request("invalid_request", e.to_string())
}

/// `POST /.well-known/mercure`: one update, as a form. Replies with its id
/// as plain text once it is stored.
///
/// A token in the `Authorization` header, the query or a cookie decides
/// before the body is read, so a caller without rights costs no body. Only
/// without any is the form read (within `--max-body`) for an
/// `authorization` field, the last place a token is looked for.
pub async fn publish(AxState(state): State, req: Request) -> Result<Response, ApiError> {
    if !super::content_type_is(req.headers(), "application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the update as application/x-www-form-urlencoded",
        ));
    }
    let query = Params::decode(req.uri().query().unwrap_or_default().as_bytes())?;
    // A present Authorization header decides even when it is not a bearer.
    let early = req.headers().contains_key(header::AUTHORIZATION)
        || presented_token(req.headers(), &query).is_some();
    let (parts, body) = req.into_parts();
    let mut rights = None;
    if early {
        let token = presented_token(&parts.headers, &query);
        rights = Some(rated_publish_rights(&parts, &state, token)?);
    }
    let form = read_body(Request::from_parts(parts.clone(), body), &state).await?;
    let mut params = query;
    params.extend(Params::decode(&form)?);
    let rights = match rights {
        Some(rights) => rights,
        None => rated_publish_rights(&parts, &state, presented_token(&parts.headers, &params))?,
    };

    rights
        .check_topics(&update_topics(&params)?)
        .map_err(|e| rejected(&state, e))?;
    let draft = update_draft(&params)?;
    let events = state.hub.publish(vec![draft]).await?;
    let id = events.first().map(|e| e.id.to_string()).unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], id).into_response())
}

/// The topics of a Mercure update form: at least one.
fn update_topics(params: &Params) -> Result<Vec<String>, ApiError> {
    let topics: Vec<String> = params.all("topic").map(str::to_owned).collect();
    if topics.is_empty() {
        return Err(ApiError::missing("topic"));
    }
    Ok(topics)
}

/// The event a Mercure update form asks for. Pure, so it can be tested on
/// parameters alone; the hub validates the draft.
pub fn update_draft(params: &Params) -> Result<Draft, ApiError> {
    let topics = update_topics(params)?;
    let retry = match params.one("retry")? {
        None => None,
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => Some(
            text.parse::<u64>()
                .map_err(|_| ApiError::bad_request("invalid_field", "retry is too large"))?,
        ),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "retry must consist of ASCII digits only",
            ))
        }
    };
    Ok(Draft {
        target: Target::Topics(topics),
        event: params.one("type")?.map(str::to_owned),
        data: params.one("data")?.unwrap_or_default().to_owned(),
        id: params.one("id")?.map(str::to_owned),
        retry,
        // The field's presence makes the update private, whatever its value.
        private: params.all("private").next().is_some(),
    })
}

/// `GET /.well-known/mercure/subscriptions[/{selector}[/{subscriber}]]`:
/// the open subscriptions as JSON-LD. The caller's token must select the
/// requested path as a topic.
pub async fn subscriptions(
    AxState(state): State,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    if !state.presence {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "the subscriptions API is off; start the hub with --subscriptions",
        ));
    }
    let path = uri.path();
    let token = presented_token(&headers, &params);
    let reader = match token {
        Some(_) => state.subscribers.authenticate(token)?,
        None => return Err(AuthError::MissingCredentials.into()),
    };
    if !reader.may_read(path) {
        return Err(
            AuthError::InsufficientScope(format!("reading `{path}` is not granted")).into(),
        );
    }

    let rest = path
        .strip_prefix(announce::SUBSCRIPTIONS_PATH)
        .unwrap_or_default();
    let mut parts = rest.split('/').filter(|p| !p.is_empty()).map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| ApiError::bad_request("invalid_request", "path parts must be UTF-8"))
    });
    let selector = parts.next().transpose()?;
    let subscriber = parts.next().transpose()?;

    let last_event_id = state
        .hub
        .last_event_id()
        .await?
        .map_or_else(|| EARLIEST.to_owned(), |id| id.to_string());
    let mut found: Vec<Value> = Vec::new();
    for s in state.hub.subscribers() {
        if subscriber.as_deref().is_some_and(|want| want != s.id) {
            continue;
        }
        for subscription in &s.subscriptions {
            if selector
                .as_deref()
                .is_some_and(|want| want != subscription.selector.as_str())
            {
                continue;
            }
            found.push(s.document(subscription, true));
        }
    }

    let document = if subscriber.is_some() {
        let Some(Value::Object(mut one)) = found.into_iter().next() else {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such active subscription",
            ));
        };
        one.insert("lastEventID".to_owned(), json!(last_event_id));
        Value::Object(one)
    } else {
        for doc in &mut found {
            if let Some(map) = doc.as_object_mut() {
                map.remove("@context");
            }
        }
        json!({
            "@context": "https://mercure.rocks/",
            "id": path,
            "type": "Subscriptions",
            "lastEventID": last_event_id,
            "subscriptions": found,
        })
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/ld+json"),
            (header::CACHE_CONTROL, "must-revalidate"),
        ],
        document.to_string(),
    )
        .into_response())
}
