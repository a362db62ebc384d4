//! Who may publish, manage and read.
//!
//! Publishers: with neither a publisher key nor a publisher token key
//! configured, writes are accepted only from a loopback peer that did not
//! come through a proxy (a request carrying `Forwarded`, `X-Forwarded-For`,
//! `X-Real-IP` or `Via` is treated as remote: behind a reverse proxy every
//! peer is loopback, and the internet must not inherit that trust). The
//! edge also refuses such calls from browser pages of other sites and for
//! hosts that are not this machine's (`http/local.rs`). Otherwise every write carries a
//! credential: the static `--publisher-key` (full rights), or a JSON Web
//! Token whose grants say which topics it may publish to ([`jwt`]).
//! Addressing users, groups or everyone, and managing streams, need a token
//! that may publish to every topic (`*`): those calls are not scoped to a topic.
//!
//! Subscribers: anonymous subscribers read public updates unless the hub
//! requires a token; a subscriber token's grants say which private updates
//! it may read, and its `sub` which user's stream it may open. With
//! `--auth-url`, the application's backend is the one authority for stream
//! routes instead ([`backend`]): the hub verifies no subscriber token there
//! and forwards the request's credentials (cookies, `Authorization`) for
//! the backend to judge. The Mercure subscriptions API, which is not a
//! stream, still takes a subscriber token.
//!
//! Deciding stays synchronous. A handler that can wait calls the policy's
//! `refresh_keys_for` first: a token naming a key its role's JWK set does
//! not have yet then has the set fetched again (rate-limited) before the
//! decision, so a key the issuer has just rotated in works on its first
//! use. Without that call such a token is refused once while the set is
//! refreshed in the background.

use std::sync::Arc;

use pushwire_core::route::Selector;

pub mod backend;
pub mod jwt;

use jwt::{Claims, Grants, Role, TokenError, Verifier};

/// What the edge knows about a caller.
#[derive(Debug, Clone, Default)]
pub struct Caller<'a> {
    /// The bearer token (header, or for Mercure routes query or cookie).
    pub bearer: Option<&'a str>,
    /// The TCP peer is a loopback address.
    pub loopback_peer: bool,
    /// The request carries `Forwarded`, `X-Forwarded-For`, `X-Real-IP` or `Via`.
    pub forwarded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("this call needs a credential: send `Authorization: Bearer <key or token>`")]
    MissingCredentials,
    #[error("the publisher key is not valid")]
    InvalidCredentials,
    #[error("without a configured publisher key, only local (loopback) callers may publish or manage; start the hub with --publisher-key or --publisher-jwt-key")]
    NotLocal,
    #[error("the token is not valid")]
    InvalidToken(#[source] TokenError),
    #[error("the token does not allow this: {0}")]
    InsufficientScope(String),
}

/// What an authorized publisher may do.
#[derive(Debug, Clone)]
pub enum PublishRights {
    /// A local caller on an open hub, or the static publisher key.
    All,
    /// What a publisher token grants.
    Granted(Grants),
}

impl PublishRights {
    /// Every topic must be granted.
    pub fn check_topics<S: AsRef<str>>(&self, topics: &[S]) -> Result<(), AuthError> {
        match self {
            PublishRights::All => Ok(()),
            PublishRights::Granted(grants) => {
                match topics.iter().find(|t| !grants.may_publish(t.as_ref())) {
                    None => Ok(()),
                    Some(t) => Err(AuthError::InsufficientScope(format!(
                        "publishing to topic `{}` is not granted",
                        t.as_ref()
                    ))),
                }
            }
        }
    }

    /// Calls that are not about one topic (users, groups, everyone,
    /// management) need the right to publish everywhere.
    pub fn check_unscoped(&self) -> Result<(), AuthError> {
        match self {
            PublishRights::All => Ok(()),
            PublishRights::Granted(grants) if grants.publish_all() => Ok(()),
            PublishRights::Granted(_) => Err(AuthError::InsufficientScope(
                "addressing users or everyone and managing streams need a token that may publish to `*`"
                    .to_owned(),
            )),
        }
    }
}

/// The credential an authorized publisher presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// None: a loopback caller on a hub without publisher credentials.
    None,
    /// The static publisher key.
    PublisherKey,
    /// A publisher token, with its `sub` if it has one.
    Token { subject: Option<String> },
}

/// Decides whether a caller may publish and manage.
#[derive(Clone, Default)]
pub struct PublisherPolicy {
    key: Option<String>,
    tokens: Option<Arc<Verifier>>,
}

impl PublisherPolicy {
    /// `tokens` verifies publisher tokens when a publisher token key is set.
    pub fn new(key: Option<String>, tokens: Option<Arc<Verifier>>) -> PublisherPolicy {
        PublisherPolicy { key, tokens }
    }

    /// Before [`PublisherPolicy::identify`], where the caller can wait:
    /// see [`Verifier::refresh_keys_for`].
    pub async fn refresh_keys_for(&self, bearer: Option<&str>) {
        if let (Some(token), Some(tokens)) = (bearer, &self.tokens) {
            tokens.refresh_keys_for(Role::Publisher, token).await;
        }
    }

    pub fn authorize(&self, caller: &Caller<'_>) -> Result<PublishRights, AuthError> {
        self.identify(caller).map(|(rights, _)| rights)
    }

    /// [`PublisherPolicy::authorize`], and which credential the caller
    /// presented (per-publisher limits count by it).
    pub fn identify(&self, caller: &Caller<'_>) -> Result<(PublishRights, Credential), AuthError> {
        if let Some(given) = caller.bearer {
            if let Some(key) = &self.key {
                if constant_time_eq(key.as_bytes(), given.as_bytes()) {
                    return Ok((PublishRights::All, Credential::PublisherKey));
                }
            }
            if let Some(tokens) = &self.tokens {
                return tokens
                    .verify(Role::Publisher, given)
                    .map(|claims| {
                        let credential = Credential::Token {
                            subject: claims.subject,
                        };
                        (PublishRights::Granted(claims.grants), credential)
                    })
                    .map_err(AuthError::InvalidToken);
            }
            if self.key.is_some() {
                return Err(AuthError::InvalidCredentials);
            }
        } else if self.key.is_some() || self.tokens.is_some() {
            return Err(AuthError::MissingCredentials);
        }
        if caller.loopback_peer && !caller.forwarded {
            Ok((PublishRights::All, Credential::None))
        } else {
            Err(AuthError::NotLocal)
        }
    }
}

/// Decides what a subscriber may read.
#[derive(Clone, Default)]
pub struct SubscriberPolicy {
    tokens: Option<Arc<Verifier>>,
    required: bool,
}

/// An authenticated subscriber, or an anonymous one (`claims: None`).
#[derive(Debug, Clone, Default)]
pub struct Reader {
    pub claims: Option<Claims>,
}

impl Reader {
    /// Selectors of the topics whose private updates it may read.
    pub fn readable(&self) -> Vec<Selector> {
        self.claims
            .as_ref()
            .map(|c| c.grants.subscribe_selectors().to_vec())
            .unwrap_or_default()
    }

    /// How long its stream may stay open: until the token expires.
    pub fn lifetime(&self) -> Option<std::time::Duration> {
        let expires = self.claims.as_ref()?.expires_at?;
        let now = pushwire_core::log::now_ms() / 1000;
        Some(std::time::Duration::from_secs(expires.saturating_sub(now)))
    }

    /// Whether it may read the topic (used for the subscriptions API).
    pub fn may_read(&self, topic: &str) -> bool {
        self.claims
            .as_ref()
            .is_some_and(|c| c.grants.may_subscribe(topic))
    }
}

impl SubscriberPolicy {
    /// `tokens` verifies subscriber tokens when a subscriber token key is
    /// set; `required` refuses anonymous subscribers.
    pub fn new(tokens: Option<Arc<Verifier>>, required: bool) -> SubscriberPolicy {
        SubscriberPolicy { tokens, required }
    }

    /// Whether user streams need a token naming their user.
    pub fn protects_users(&self) -> bool {
        self.tokens.is_some()
    }

    /// Before [`SubscriberPolicy::authenticate`] or
    /// [`SubscriberPolicy::authenticate_user`], where the caller can wait:
    /// see [`Verifier::refresh_keys_for`].
    pub async fn refresh_keys_for(&self, token: Option<&str>) {
        if let (Some(token), Some(tokens)) = (token, &self.tokens) {
            tokens.refresh_keys_for(Role::Subscriber, token).await;
        }
    }

    pub fn authenticate(&self, token: Option<&str>) -> Result<Reader, AuthError> {
        match (token, &self.tokens) {
            (Some(token), Some(tokens)) => tokens
                .verify(Role::Subscriber, token)
                .map(|claims| Reader {
                    claims: Some(claims),
                })
                .map_err(AuthError::InvalidToken),
            (Some(_), None) => Err(AuthError::InvalidToken(TokenError::NoKey(Role::Subscriber))),
            (None, _) if self.required => Err(AuthError::MissingCredentials),
            (None, _) => Ok(Reader::default()),
        }
    }

    /// Opens a user's stream only for a token whose `sub` is that user,
    /// when subscriber tokens are configured.
    pub fn authenticate_user(&self, token: Option<&str>, user: &str) -> Result<Reader, AuthError> {
        if !self.protects_users() {
            return self.authenticate(token);
        }
        let reader = match token {
            Some(_) => self.authenticate(token)?,
            None => return Err(AuthError::MissingCredentials),
        };
        let subject = reader.claims.as_ref().and_then(|c| c.subject.as_deref());
        if subject == Some(user) {
            Ok(reader)
        } else {
            Err(AuthError::InsufficientScope(format!(
                "the token's `sub` must be the user id `{user}`"
            )))
        }
    }
}

/// Compares secrets without an early exit that would leak, through timing,
/// how many leading bytes matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Caller<'static> {
        Caller {
            bearer: None,
            loopback_peer: true,
            forwarded: false,
        }
    }

    #[test]
    fn without_key_only_direct_loopback_peers_may_write() {
        let open = PublisherPolicy::new(None, None);
        assert!(matches!(open.authorize(&local()), Ok(PublishRights::All)));
        let remote = Caller {
            loopback_peer: false,
            ..local()
        };
        assert!(matches!(open.authorize(&remote), Err(AuthError::NotLocal)));
        let proxied = Caller {
            forwarded: true,
            ..local()
        };
        assert!(matches!(open.authorize(&proxied), Err(AuthError::NotLocal)));
    }

    #[test]
    fn with_key_everyone_needs_it_even_locally() {
        let policy = PublisherPolicy::new(Some("s3cret".into()), None);
        assert!(matches!(
            policy.authorize(&local()),
            Err(AuthError::MissingCredentials)
        ));
        let wrong = Caller {
            bearer: Some("s3creT"),
            ..local()
        };
        assert!(matches!(
            policy.authorize(&wrong),
            Err(AuthError::InvalidCredentials)
        ));
        let right = Caller {
            bearer: Some("s3cret"),
            loopback_peer: false,
            forwarded: true,
        };
        assert!(matches!(policy.authorize(&right), Ok(PublishRights::All)));
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
