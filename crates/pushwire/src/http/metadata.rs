//! OAuth 2.0 protected resource metadata (RFC 9728) for the Mercure hub:
//! the document at `/.well-known/oauth-protected-resource` followed by the
//! path of the hub's resource identifier, and the `resource_metadata`
//! parameter that points to it from every `WWW-Authenticate: Bearer`
//! challenge of the Mercure routes (the current draft's "Protected Resource
//! Metadata" and "Error Responses").
//!
//! The document exists only when the hub has a resource identifier
//! (`--jwt-audience`) that is an `https://` or `http://` URL: its `resource`
//! member is required and must be the value tokens carry in `aud`, which
//! the hub never guesses. Without one, no document is served and challenges
//! carry no `resource_metadata`.

use axum::extract::State as AxState;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue};
use serde_json::{json, Value};
use url::Url;

use super::{ApiError, State};
use crate::config::ServeConfig;
use pushwire_core::grants::DETAIL_TYPES;
use pushwire_core::route::MatchKind;

/// Where metadata lives, per RFC 9728 §3.1: inserted between the host and
/// the path of the resource identifier.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The metadata document and where it is published.
#[derive(Debug)]
pub struct ProtectedResource {
    /// The route serving the document: [`WELL_KNOWN`] and the resource's path.
    pub route: String,
    /// `Bearer ..., resource_metadata="<url>"`, ready to append.
    parameter: String,
    document: Value,
}

impl ProtectedResource {
    /// The metadata of the configured hub, if it has a URL as its resource
    /// identifier.
    pub fn of(config: &ServeConfig) -> Option<ProtectedResource> {
        let resource = config.jwt_audience.as_deref()?;
        let parsed = Url::parse(resource).ok()?;
        if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
            return None;
        }
        let path = parsed.path().trim_end_matches('/');
        let route = format!("{WELL_KNOWN}{path}");
        let mut url = parsed.clone();
        url.set_path(&route);
        url.set_query(None);
        url.set_fragment(None);
        let matcher_types = [
            MatchKind::Exact,
            MatchKind::UrlPattern,
            MatchKind::UriTemplate,
        ]
        .map(MatchKind::draft_name);
        let mut document = json!({
            "resource": resource,
            "authorization_details_types_supported": DETAIL_TYPES,
            // RFC 6750 methods: the header, and the `access_token` query
            // parameter, which the hub accepts (the draft allows it).
            "bearer_methods_supported": ["header", "query"],
            "mercure_cookie": true,
            "mercure_matcher_types_supported": matcher_types,
        });
        if let Some(map) = document.as_object_mut() {
            if !config.authorization_servers.is_empty() {
                map.insert(
                    "authorization_servers".to_owned(),
                    json!(config.authorization_servers),
                );
            }
            if config.subscriptions {
                map.insert("mercure_subscriptions".to_owned(), json!(true));
            }
        }
        Some(ProtectedResource {
            route,
            parameter: format!("resource_metadata=\"{url}\""),
            document,
        })
    }
}

/// `GET /.well-known/oauth-protected-resource/...`: the metadata document.
pub async fn document(AxState(state): State) -> Result<Response, ApiError> {
    let metadata = state
        .protected_resource
        .as_ref()
        .ok_or_else(ApiError::not_found)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            // Public, and the same for every client.
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        metadata.document.to_string(),
    )
        .into_response())
}

/// Adds `resource_metadata` to the Bearer challenge of a Mercure response.
pub async fn challenge(AxState(state): State, mut response: Response) -> Response {
    let Some(metadata) = state.protected_resource.as_ref() else {
        return response;
    };
    let headers = response.headers_mut();
    if let Some(challenge) = headers
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("Bearer"))
    {
        let extended = format!("{challenge}, {}", metadata.parameter);
        if let Ok(value) = HeaderValue::from_str(&extended) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_location_is_derived_from_the_resource_identifier() {
        let mut config = ServeConfig::defaults();
        assert!(ProtectedResource::of(&config).is_none());
        config.jwt_audience = Some("https://hub.example.com/.well-known/mercure".into());
        let metadata = ProtectedResource::of(&config).unwrap();
        assert_eq!(
            metadata.parameter,
            "resource_metadata=\"https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure\""
        );
        assert_eq!(
            metadata.route,
            "/.well-known/oauth-protected-resource/.well-known/mercure"
        );
        assert_eq!(
            metadata.document["resource"],
            "https://hub.example.com/.well-known/mercure"
        );
        assert!(metadata.document.get("authorization_servers").is_none());
        config.jwt_audience = Some("urn:example:hub".into());
        assert!(ProtectedResource::of(&config).is_none());
    }
}
