//! The HTTP client for the calls the hub itself makes (the JWKS key sets of
//! `auth::jwt`, the `--auth-url` backend of `auth::backend`), built in
//! one place so that every outgoing call gets the same guarantees: rustls
//! with the `ring` provider the server uses too (no second crypto library),
//! the system's trust store, an overall timeout, no redirects (a redirect
//! could turn an `https://` URL the operator checked into one they did not)
//! and a `User-Agent` naming the hub.
//!
//! A client keeps a pool of connections; build one per purpose and keep it,
//! rather than one per request.

use std::sync::Arc;
use std::time::Duration;

/// Why a client could not be built: the system's trust store or the TLS
/// settings could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client for outgoing calls: {0}")]
pub struct OutboundError(String);

/// A client whose every request, connecting and reading the whole answer
/// included, ends after `timeout`.
pub fn client(timeout: Duration) -> Result<reqwest::Client, OutboundError> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(|e| OutboundError(e.to_string()))?
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pushwire/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| OutboundError(e.to_string()))
}
