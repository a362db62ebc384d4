//! Who may publish and manage. Streams are open to anonymous subscribers;
//! writes need a credential.
//!
//! Without a configured publisher key, writes are accepted only from a
//! loopback peer that did not come through a proxy (a request carrying
//! forwarding headers is treated as remote: behind a reverse proxy every
//! peer is loopback, and the internet must not inherit that trust). With a
//! key, every write must carry it as `Authorization: Bearer <key>`.

/// What the edge knows about a caller.
#[derive(Debug, Clone, Default)]
pub struct Caller<'a> {
    /// The bearer token, if the request had one.
    pub bearer: Option<&'a str>,
    /// The TCP peer is a loopback address.
    pub loopback_peer: bool,
    /// The request carries `Forwarded`, `X-Forwarded-For` or `X-Real-IP`.
    pub forwarded: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("this call needs a publisher key: send `Authorization: Bearer <key>`")]
    MissingCredentials,
    #[error("the publisher key is not valid")]
    InvalidCredentials,
    #[error("without a configured publisher key, only local (loopback) callers may publish or manage; start the hub with --publisher-key")]
    NotLocal,
}

/// Decides whether a caller may publish and manage.
#[derive(Debug, Clone, Default)]
pub struct PublisherPolicy {
    key: Option<String>,
}

impl PublisherPolicy {
    pub fn new(key: Option<String>) -> PublisherPolicy {
        PublisherPolicy { key }
    }

    pub fn authorize(&self, caller: &Caller<'_>) -> Result<(), AuthError> {
        match (&self.key, caller.bearer) {
            (Some(key), Some(given)) if constant_time_eq(key.as_bytes(), given.as_bytes()) => {
                Ok(())
            }
            (Some(_), Some(_)) => Err(AuthError::InvalidCredentials),
            (Some(_), None) => Err(AuthError::MissingCredentials),
            (None, _) if caller.loopback_peer && !caller.forwarded => Ok(()),
            (None, _) => Err(AuthError::NotLocal),
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
        let open = PublisherPolicy::new(None);
        assert_eq!(open.authorize(&local()), Ok(()));
        let remote = Caller {
            loopback_peer: false,
            ..local()
        };
        assert_eq!(open.authorize(&remote), Err(AuthError::NotLocal));
        let proxied = Caller {
            forwarded: true,
            ..local()
        };
        assert_eq!(open.authorize(&proxied), Err(AuthError::NotLocal));
    }

    #[test]
    fn with_key_everyone_needs_it_even_locally() {
        let policy = PublisherPolicy::new(Some("s3cret".into()));
        assert_eq!(
            policy.authorize(&local()),
            Err(AuthError::MissingCredentials)
        );
        let wrong = Caller {
            bearer: Some("s3creT"),
            ..local()
        };
        assert_eq!(policy.authorize(&wrong), Err(AuthError::InvalidCredentials));
        let right = Caller {
            bearer: Some("s3cret"),
            loopback_peer: false,
            forwarded: true,
        };
        assert_eq!(policy.authorize(&right), Ok(()));
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
