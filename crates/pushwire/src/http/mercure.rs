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
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use serde_json::{json, Value};

use super::errors::ErrorBody;
use super::limits::{stream_permit, ClientAddr};
use super::schema;
use super::streams::{
    ask_backend, event_stream, requested_last_event_id, Authorized, RouteKind, StreamRequest,
};
use super::{
    bearer, presented_token, rated_publish_rights, read_body, rejected, ApiError, AppState, Params,
    State, LAST_EVENT_ID,
};
use crate::auth::{AuthError, PublishRights};
use crate::limits::Limit;
use pushwire_core::announce::{self, Form, Subscriber, Subscription};
use pushwire_core::event::Target;
use pushwire_core::event::{Draft, EventError};
use pushwire_core::hub::{SubscribeOptions, EARLIEST};
use pushwire_core::route::{Interest, MatchKind, Selector, SelectorError};

/// The current draft's response header telling which event a resumed
/// stream continues after (`earliest` when the requested one was lost).
pub const MERCURE_LAST_EVENT_ID: HeaderName = HeaderName::from_static("mercure-last-event-id");

/// `GET /.well-known/mercure`: opens a stream on the union of the
/// requested selectors.
///
/// With `--auth-url`, the application's backend decides instead of a
/// subscriber token: every requested selector must be granted by its
/// answer, and Mercure streams stay without a user (they listen to topics
/// only), whatever user the answer names.
#[utoipa::path(
    get,
    path = "/.well-known/mercure",
    operation_id = "mercure_subscribe",
    tag = "mercure",
    description = "Subscribe (both generations of the Mercure protocol): a stream of the updates of the requested topics.",
    params(
        ("topic" = Option<Vec<String>>, Query, explode = true, description = "Topic selectors (exact, URI templates, `*`; classic protocol)"),
        ("match" = Option<Vec<String>>, Query, explode = true, description = "Exact topics (current draft)"),
        ("match_urlpattern" = Option<Vec<String>>, Query, explode = true, description = "URL patterns (current draft)"),
        ("lastEventID" = Option<String>, Query, description = "Resume after this id; `earliest` replays all history"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this id; wins over the query"),
    ),
    responses(
        (status = 200, description = "The event stream; headers `Last-Event-ID` (or `Mercure-Last-Event-ID`, current draft)", content_type = "text/event-stream", body = super::streams::StreamEvent),
        (status = 400, description = "`missing_parameter`, `invalid_selector`, `invalid_field`, `invalid_utf8`, `invalid_last_event_id`, `invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `forbidden`", body = ErrorBody),
        (status = 429, description = "`too_many_streams_from_ip`; nothing was opened", body = ErrorBody),
        (status = 503, description = "`too_many_streams`, `storage_unavailable`, `auth_unavailable`", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn subscribe(
    AxState(state): State,
    client: ClientAddr,
    uri: Uri,
    headers: HeaderMap,
    params: Params,
) -> Result<Response, ApiError> {
    let selectors = requested_selectors(&params, &state)?;
    let requested = requested_last_event_id(&headers, &params)?;
    let authorized = match &state.backend {
        Some(backend) => {
            let request = StreamRequest {
                client,
                route: RouteKind::Mercure,
                path: uri.path(),
                headers: &headers,
                params: &params,
            };
            let asked = selectors.iter().map(Selector::as_str).collect();
            let session = ask_backend(backend, &request, None, asked, requested).await?;
            session.check_selectors(&selectors)?;
            Authorized {
                user: None,
                readable: session.grants.private_selectors().to_vec(),
                lifetime: session.lifetime(),
                claims: None,
            }
        }
        None => {
            check_presentation(&headers)?;
            let token = presented_token(&headers, &params);
            // A token naming a key its JWK set does not hold yet works at once.
            state.subscribers.refresh_keys_for(token).await;
            let reader = state.subscribers.authenticate(token)?;
            Authorized {
                user: None,
                readable: reader.readable(),
                lifetime: reader.lifetime(),
                claims: reader.claims,
            }
        }
    };

    let mut interest = Interest {
        readable: authorized.readable,
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
        let grants = authorized.claims.as_ref().map(|c| &c.grants);
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

    let permit = stream_permit(&state, client, None)?;
    let options = SubscribeOptions {
        last_event_id: requested,
        lifetime: authorized.lifetime,
        reset_event: false,
        subscriber,
        ..SubscribeOptions::default()
    };
    let subscription = state.hub.subscribe(interest, options).await?;
    let ticket = super::streams::webhook_ticket(&state, None, uri.path()).await?;

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
    let mut response = event_stream(
        RouteKind::Mercure,
        subscription,
        permit,
        ticket,
        "private, no-cache, no-store",
    );
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
/// generation of the protocol defines it: `topic` (classic: `*`, a URI
/// template when it holds `{`, else an exact topic), and the current
/// draft's `match` and `match_<type>` ("Subscription", "Matcher Types"),
/// with the types `exact`, `urlpattern` and this hub's additional
/// `uritemplate`. Any other parameter whose name starts with `match`, in any
/// case, is refused, as the draft requires, so a misspelt selector fails
/// loudly. Parsing stops at the first selector over
/// `--max-topics-per-stream`, the limit the hub applies to every stream, so
/// an endless list costs nothing.
fn requested_selectors(params: &Params, state: &AppState) -> Result<Vec<Selector>, ApiError> {
    let hub_url = state.hub_url.as_str();
    let max = state.field_limits.topics_per_stream;
    let mut selectors = Vec::new();
    for (name, value) in params.pairs() {
        let parsed = match name {
            "topic" => Selector::classic(value),
            "match" => Selector::parse(MatchKind::Exact, value, hub_url),
            other if other.to_ascii_lowercase().starts_with("match") => {
                let kind = other
                    .strip_prefix("match_")
                    .and_then(MatchKind::from_draft_name)
                    .ok_or_else(|| unknown_matcher(other))?;
                Selector::parse(kind, value, hub_url)
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

/// The refusal of a parameter in the reserved `match` namespace that names
/// no matcher type of this hub, with the current spelling when the name is
/// one of an earlier revision of the draft.
fn unknown_matcher(name: &str) -> ApiError {
    let current = match name {
        "matchExact" => Some("match_exact"),
        "matchURLPattern" => Some("match_urlpattern"),
        "matchURITemplate" => Some("match_uritemplate"),
        _ => None,
    };
    let message = match current {
        Some(current) => format!(
            "`{name}` is the spelling of an earlier revision of the Mercure draft; use `{current}`"
        ),
        None => format!(
            "`{name}` is not a topic selector parameter: use `topic`, `match`, `match_exact`, \
             `match_urlpattern` or `match_uritemplate`"
        ),
    };
    ApiError::bad_request("invalid_request", message)
}

/// A token presented in an `Authorization` header must be one `Bearer`
/// credential: another scheme, an empty token or two headers are a
/// malformed presentation, `400` with the `invalid_request` challenge (the
/// current draft's "Error Responses"), rather than being read as no token.
fn check_presentation(headers: &HeaderMap) -> Result<(), ApiError> {
    let count = headers.get_all(header::AUTHORIZATION).iter().count();
    if count == 0 || (count == 1 && bearer(headers).is_some_and(|token| !token.is_empty())) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_authorization",
            "send the token as one `Authorization: Bearer <token>` header",
        ))
    }
}

/// Whether the publisher's token, if any, comes from a cookie: no header
/// and no query parameter carries one (the form's `authorization` field is
/// read later, and a page cannot fill it in without reading the token).
fn token_from_cookie(headers: &HeaderMap, query: &Params) -> bool {
    !headers.contains_key(header::AUTHORIZATION) && presented_token(headers, query).is_some()
}

/// Cross-site request forgery with the cookie: a page of another site can
/// make a browser post a form to the hub, cookie included. A publish whose
/// token comes from a cookie must therefore come from the hub's own origin
/// or one listed in `--cors-origins`, as its `Origin` (or, without one, its
/// `Referer`) says; with neither it is refused (the current draft's
/// "Security Considerations").
fn check_same_site(headers: &HeaderMap, state: &AppState) -> Result<(), ApiError> {
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| url::Url::parse(v).ok());
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let allowed = source.is_some_and(|source| {
        let origin = source.origin().ascii_serialization();
        let same_host = match (source.host_str(), host) {
            (Some(name), Some(host)) => {
                let with_port = source
                    .port()
                    .map_or_else(|| name.to_owned(), |port| format!("{name}:{port}"));
                host.eq_ignore_ascii_case(&with_port) || host.eq_ignore_ascii_case(name)
            }
            _ => false,
        };
        same_host || state.credentialed_origins.contains(&origin)
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a publish authorized by a cookie must come from the hub's own origin or one listed \
             in --cors-origins (its Origin or Referer header)",
        ))
    }
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
#[utoipa::path(
    post,
    path = "/.well-known/mercure",
    operation_id = "mercure_publish",
    tag = "mercure",
    description = "Publish an update (both generations of the Mercure protocol); the publisher token may also be in the form's `authorization` field.",
    request_body(content = schema::MercureUpdateSchema, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Stored, then delivered: the update's id, as text", content_type = "text/plain", body = String),
        (status = 400, description = "`missing_parameter`, `conflicting_parameter`, `invalid_field`, `invalid_utf8`, `invalid_request`, `bad_body`: nothing was stored", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`, `reserved_topic`, `cross_origin`", body = ErrorBody),
        (status = 409, description = "`duplicate_id`: nothing was stored", body = ErrorBody),
        (status = 413, description = "`body_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: send application/x-www-form-urlencoded", body = ErrorBody),
        (status = 429, description = "`rate_limited`: nothing was stored", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`, `overloaded`", body = ErrorBody),
        (status = 507, description = "`insufficient_storage`: nothing was stored", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
pub async fn publish(AxState(state): State, req: Request) -> Result<Response, ApiError> {
    if !super::content_type_is(req.headers(), "application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the update as application/x-www-form-urlencoded",
        ));
    }
    check_presentation(req.headers())?;
    let query = Params::decode(req.uri().query().unwrap_or_default().as_bytes())?;
    if token_from_cookie(req.headers(), &query) {
        check_same_site(req.headers(), &state)?;
    }
    // A present Authorization header decides even when it is not a bearer.
    let early = req.headers().contains_key(header::AUTHORIZATION)
        || presented_token(req.headers(), &query).is_some();
    let (parts, body) = req.into_parts();
    let mut rights = None;
    if early {
        let token = presented_token(&parts.headers, &query);
        state.policy.refresh_keys_for(token).await;
        rights = Some(rated_publish_rights(&parts, &state, token)?);
    }
    let form = read_body(Request::from_parts(parts.clone(), body), &state).await?;
    let mut params = query;
    params.extend(Params::decode_owned(Vec::from(form))?);
    let rights = match rights {
        Some(rights) => rights,
        None => {
            let token = presented_token(&parts.headers, &params);
            state.policy.refresh_keys_for(token).await;
            rated_publish_rights(&parts, &state, token)?
        }
    };

    let topics = update_topics(&params)?;
    // The current draft has exactly one topic per update ("Publication");
    // the classic protocol reads the others as alternates. A publisher that
    // presents a current-draft token follows the current rule.
    if topics.len() > 1 && matches!(&rights, PublishRights::Granted(g) if g.is_current_draft()) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "an update has exactly one `topic` field (current-draft token); alternate topics \
             are a classic-protocol feature",
        ));
    }
    rights
        .check_topics(&topics)
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

/// What a subscriptions API path asks for, in the form of the generation
/// that names it (see [`announce`]).
#[derive(Debug, PartialEq, Eq)]
enum Listing {
    /// `/subscriptions`: every subscription.
    All,
    /// `/subscriptions/{topic}` (classic).
    Topic(String),
    /// `/subscriptions/{topic}/{subscriber}` (classic).
    TopicSubscriber(String, String),
    /// `/subscriptions/{match_type}/{match}` (current draft).
    Matcher(MatchKind, String),
    /// `/subscriptions/{match_type}/{match}/{subscriber}` (current draft).
    MatcherSubscriber(MatchKind, String, String),
}

impl Listing {
    /// Reads the path below `/.well-known/mercure/subscriptions`, each part
    /// percent-decoded once (the announcement topics encode each once). Two
    /// parts are the current draft's matcher collection when the first is a
    /// matcher type name, else the classic single subscription: a classic
    /// topic literally named `exact` or `urlpattern` is read the current
    /// way. `None` for a path of neither form.
    fn parse(rest: &str) -> Result<Option<Listing>, ApiError> {
        let parts: Vec<String> = rest
            .split('/')
            .filter(|p| !p.is_empty())
            .map(|p| {
                percent_encoding::percent_decode_str(p)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| {
                        ApiError::bad_request("invalid_request", "path parts must be UTF-8")
                    })
            })
            .collect::<Result<_, _>>()?;
        let kind = |name: &str| MatchKind::from_draft_name(name);
        Ok(match parts.as_slice() {
            [] => Some(Listing::All),
            [topic] => Some(Listing::Topic(topic.clone())),
            [t, m] if kind(t).is_some() => kind(t).map(|k| Listing::Matcher(k, m.clone())),
            [topic, subscriber] => {
                Some(Listing::TopicSubscriber(topic.clone(), subscriber.clone()))
            }
            [t, m, subscriber] => {
                kind(t).map(|k| Listing::MatcherSubscriber(k, m.clone(), subscriber.clone()))
            }
            _ => None,
        })
    }

    /// The form its documents are written in; the whole collection is
    /// written in the form of the caller's token generation.
    fn form(&self, current_draft_caller: bool) -> Form {
        match self {
            Listing::All if current_draft_caller => Form::Draft,
            Listing::All | Listing::Topic(_) | Listing::TopicSubscriber(..) => Form::Classic,
            Listing::Matcher(..) | Listing::MatcherSubscriber(..) => Form::Draft,
        }
    }

    fn selects(&self, subscriber: &Subscriber, subscription: &Subscription) -> bool {
        let selector = &subscription.selector;
        match self {
            Listing::All => true,
            Listing::Topic(topic) => selector.as_str() == topic,
            Listing::TopicSubscriber(topic, id) => {
                selector.as_str() == topic && subscriber.id == *id
            }
            Listing::Matcher(kind, text) => selector.kind() == *kind && selector.as_str() == text,
            Listing::MatcherSubscriber(kind, text, id) => {
                selector.kind() == *kind && selector.as_str() == text && subscriber.id == *id
            }
        }
    }

    fn is_single(&self) -> bool {
        matches!(
            self,
            Listing::TopicSubscriber(..) | Listing::MatcherSubscriber(..)
        )
    }
}

/// `GET /.well-known/mercure/subscriptions[/...]`: the open subscriptions
/// as JSON-LD, in both generations' forms (see [`Listing`]). The caller's
/// token must grant reading the requested path as a topic ("Subscription
/// API").
#[utoipa::path(
    get,
    path = "/.well-known/mercure/subscriptions",
    tag = "mercure",
    description = "The open subscriptions, as JSON-LD (with `--subscriptions`). The same is served below it for one topic or selector (`/{selector}`, classic), one subscription (`/{selector}/{subscriber}`), and in the current draft's form (`/{match_type}/{selector}/{subscriber}`); the token must grant reading the requested path as a topic.",
    responses(
        (status = 200, description = "A `Subscriptions` (or one `Subscription`) JSON-LD document", content_type = "application/ld+json"),
        (status = 400, description = "`invalid_field`, `invalid_request`", body = ErrorBody),
        (status = 401, description = "`unauthorized`, `invalid_token`", body = ErrorBody),
        (status = 403, description = "`unauthorized`, `insufficient_scope`", body = ErrorBody),
        (status = 404, description = "`not_found`: the subscriptions API is off, or no such subscription", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`", body = ErrorBody),
    ),
    security((), ("bearer" = [])),
)]
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
    check_presentation(&headers)?;
    let token = presented_token(&headers, &params);
    state.subscribers.refresh_keys_for(token).await;
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
    let no_such = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such active subscription",
        )
    };
    let listing = Listing::parse(rest)?.ok_or_else(no_such)?;
    let current_draft = reader
        .claims
        .as_ref()
        .is_some_and(|c| c.grants.is_current_draft());
    let form = listing.form(current_draft);

    let last_event_id = state
        .hub
        .last_event_id()
        .await?
        .map_or_else(|| EARLIEST.to_owned(), |id| id.to_string());
    let last_event_id_key = match form {
        Form::Classic => "lastEventID",
        Form::Draft => "last_event_id",
    };
    let mut found: Vec<Value> = Vec::new();
    for s in state.hub.subscribers() {
        for subscription in &s.subscriptions {
            if listing.selects(&s, subscription) {
                found.push(s.document(subscription, true, form));
            }
        }
    }

    let document = if listing.is_single() {
        let Some(Value::Object(mut one)) = found.into_iter().next() else {
            return Err(no_such());
        };
        one.insert(last_event_id_key.to_owned(), json!(last_event_id));
        Value::Object(one)
    } else {
        for doc in &mut found {
            if let Some(map) = doc.as_object_mut() {
                map.remove("@context");
            }
        }
        json!({
            "@context": announce::CONTEXT,
            "id": path,
            "type": "Subscriptions",
            last_event_id_key: last_event_id,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn subscription_paths_read_in_the_form_that_names_them() {
        let parse = |rest: &str| Listing::parse(rest).unwrap();
        assert_eq!(parse(""), Some(Listing::All));
        assert_eq!(parse("/a%2Fb"), Some(Listing::Topic("a/b".into())));
        assert_eq!(
            parse("/a/urn%3Auuid%3A1"),
            Some(Listing::TopicSubscriber("a".into(), "urn:uuid:1".into()))
        );
        assert_eq!(
            parse("/urlpattern/https%3A%2F%2Fe.com%2F%3Aid"),
            Some(Listing::Matcher(
                MatchKind::UrlPattern,
                "https://e.com/:id".into()
            ))
        );
        assert_eq!(
            parse("/exact/a/s"),
            Some(Listing::MatcherSubscriber(
                MatchKind::Exact,
                "a".into(),
                "s".into()
            ))
        );
        // Type names are case-sensitive; a three-part path needs one.
        assert_eq!(
            parse("/Exact/a"),
            Some(Listing::TopicSubscriber("Exact".into(), "a".into()))
        );
        assert_eq!(parse("/Exact/a/s"), None);
        assert_eq!(parse("/exact/a/s/t"), None);
        // Each part is decoded once: `%2525` stays `%25`.
        assert_eq!(parse("/a%2525"), Some(Listing::Topic("a%25".into())));
        assert!(Listing::parse("/%FF").is_err());
    }
}
