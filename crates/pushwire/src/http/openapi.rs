//! The OpenAPI 3 document of the JSON API, served at `GET /api/openapi.json`.
//!
//! Nothing in it is written by hand apart from prose: the paths come from
//! the `#[utoipa::path]` annotations on the handlers the router calls, and
//! the schemas from `ToSchema` derives on the very types those handlers
//! read and serialize (`PublishRequest`, `Target`, `Stats`, `ErrorBody`, ...).
//! A field added to a type is in the document at the next build.
//! `tests/openapi.rs` validates real answers of the hub against it, and
//! `scripts/contract` has schemathesis send it generated requests.
//!
//! The seed's calls and the Mercure protocol are described elsewhere
//! (README, docs/mercure.md): they keep the shapes of other programs.

use std::sync::LazyLock;

use axum::Json;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Required, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema};

use super::errors::ErrorBody;
use super::{admin, api, mercure, seed, streams, webhooks};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "pushwire",
        description = "A message-push hub over server-sent events: the JSON API. Writes and management take \
            a publisher key or token as `Authorization: Bearer`, or come from a loopback peer when no key \
            is configured. Every error is `{\"error\": {\"code\", \"message\"}}`; a route called with a method \
            it does not accept answers 405 `method_not_allowed`, an unknown path 404 `not_found`, both \
            in the same shape (`components.responses`)."
    ),
    paths(
        api::publish,
        api::stats,
        api::users,
        api::topics,
        api::close_user,
        api::events,
        webhooks::failed,
        webhooks::retry,
        streams::api_stream,
        streams::seed_subscribe_path,
        streams::seed_subscribe_query,
        seed::send_message,
        seed::push,
        seed::group_send_message,
        seed::batch_send_message,
        seed::close_path,
        seed::close_query,
        seed::user_count,
        seed::ids,
        mercure::subscribe,
        mercure::publish,
        mercure::subscriptions,
        admin::healthz,
        admin::readyz,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Conventions),
    tags(
        (name = "publish", description = "Send events to users, groups, topics or everyone"),
        (name = "subscribe", description = "Event streams"),
        (name = "manage", description = "Counters, online users, topics, history"),
        (name = "operate", description = "Health"),
        (name = "mercure", description = "The Mercure protocol, both generations (docs/mercure.md)"),
        (name = "seed", description = "The Spring service's routes, same paths and parameter names"),
    )
)]
pub struct ApiDoc;

/// What the derive cannot say: the bearer credential and the answers every
/// route may give (unknown path, wrong method).
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The publisher key (--publisher-key) or a publisher token (JWT)",
                    ))
                    .build(),
            ),
        );
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            "ErrorBody",
                        ))))
                        .build(),
                )
                .build()
        };
        components.responses.insert(
            "NotFound".to_owned(),
            RefOr::T(error("404 `not_found`: no such route")),
        );
        components.responses.insert(
            "MethodNotAllowed".to_owned(),
            RefOr::T(error(
                "405 `method_not_allowed`: the route does not accept that method",
            )),
        );
        // The subscriptions API answers the same below its root: one path
        // item per form, with its path parameters.
        let root = "/.well-known/mercure/subscriptions";
        if let Some(item) = doc.paths.paths.get(root).cloned() {
            for names in [
                &["selector"][..],
                &["selector", "subscriber"],
                &["match_type", "selector", "subscriber"],
            ] {
                let mut item = item.clone();
                if let Some(operation) = item.get.as_mut() {
                    let parameters = operation.parameters.get_or_insert_with(Vec::new);
                    for name in names {
                        parameters.push(
                            ParameterBuilder::new()
                                .name(*name)
                                .parameter_in(ParameterIn::Path)
                                .required(Required::True)
                                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                                .build(),
                        );
                    }
                    operation.operation_id = Some(format!("subscriptions_{}", names.join("_")));
                }
                let path = names
                    .iter()
                    .fold(root.to_owned(), |path, name| format!("{path}/{{{name}}}"));
                doc.paths.paths.insert(path, item);
            }
        }
        // A seed route answers GET and POST from one handler: the POST's
        // operation gets an id of its own.
        for item in doc.paths.paths.values_mut() {
            if let (Some(get), Some(post)) = (&item.get, item.post.as_mut()) {
                if get.operation_id == post.operation_id {
                    post.operation_id = post.operation_id.take().map(|id| format!("{id}_post"));
                }
            }
        }
        // Keep the error schema reachable even if no path named it.
        components
            .schemas
            .entry("ErrorBody".to_owned())
            .or_insert_with(ErrorBody::schema);
    }
}

/// Built once: the document depends only on the code.
static DOCUMENT: LazyLock<utoipa::openapi::OpenApi> = LazyLock::new(ApiDoc::openapi);

/// `GET /api/openapi.json`
pub async fn document() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(&DOCUMENT)
}
