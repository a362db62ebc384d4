//! Subscribers authorized by the application's backend (`--auth-url`).
//!
//! Before a stream route registers anything, the hub POSTs what it knows
//! of the request (route, requested user and topics, `Last-Event-ID`, the
//! client's address and user agent, and the request headers listed in
//! `--auth-forward-headers`) to the backend as JSON. A `200` answer names
//! the session's user, the topics its streams may listen to, those whose
//! private updates they may read and how long its streams may last; the
//! edge then checks the request against it ([`Session::stream_user`],
//! [`Session::check_topics`]). `401` and `403` are passed on; anything else
//! — another status, a body that does not read, a timeout, no connection —
//! refuses the stream (`503`): the hub fails closed.
//!
//! Answers describe a session, not one request: they are cached per
//! forwarded credential (a digest of the forwarded headers' values) for
//! `--auth-cache-ttl` and never beyond the answer's own `expires_in`, and
//! identical requests in flight share one backend call, so a mass reconnect
//! costs the backend one request per distinct session. Failures are not
//! cached: the next stream asks again.
//!
//! Invariants: the lock of [`Backend`] is held only for map lookups and
//! updates, never across an await; the cache holds at most
//! [`MAX_SESSIONS`] answers; every backend call runs in a task of its own,
//! so a client that leaves does not cancel the answer others wait for.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{header, HeaderMap, HeaderName};
use pushwire_core::grants::{self, BackendGrants};
use pushwire_core::metrics::{AuthRequest, Metrics};
use pushwire_core::route::Selector;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::log_limit;

/// Most answers the cache keeps; beyond, the one that expires first goes.
pub const MAX_SESSIONS: usize = 10_000;

/// Largest answer body read, in bytes; a longer one is an invalid answer.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Longest `expires_in` honoured (a year); a longer one is cut to it.
const MAX_EXPIRES_IN: u64 = 365 * 24 * 3600;

/// Why a stream was refused on the backend's word, or could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend answered `401`.
    #[error("the application did not recognise the session (its backend answered 401)")]
    Unauthorized,
    /// The backend answered `403`.
    #[error("the application refused this stream (its backend answered 403)")]
    Forbidden,
    /// The backend's user is not the one the stream asks for.
    #[error("this session may open the stream of its own user only, not `{0}`")]
    OtherUser(String),
    /// A requested topic or selector is not granted by the answer.
    #[error("listening to `{0}` is not granted to this session")]
    NotGranted(String),
    /// No usable answer: the stream is refused (fail closed). The reason
    /// is for the log.
    #[error("the application's backend could not authorize the stream; retry shortly")]
    Unavailable(String),
}

/// Why `--auth-url` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("auth-url: {0}")]
    Url(String),
    #[error("auth-forward-headers: `{0}` is not a header name")]
    HeaderName(String),
    #[error(transparent)]
    Outbound(#[from] crate::outbound::OutboundError),
}

/// Reads `--auth-url`: an absolute `http://` or `https://` URL with a host.
pub fn parse_url(text: &str) -> Result<url::Url, SetupError> {
    let url = url::Url::parse(text.trim())
        .map_err(|e| SetupError::Url(format!("`{text}` is not a URL ({e})")))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(SetupError::Url(format!(
            "`{text}`: the backend is called over http:// or https://"
        ))),
    }
}

/// Reads `--auth-forward-headers`: header names, compared case-insensitively.
pub fn parse_header_names(names: &[String]) -> Result<Vec<HeaderName>, SetupError> {
    names
        .iter()
        .map(|name| {
            HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map_err(|_| SetupError::HeaderName(name.clone()))
        })
        .collect()
}

/// What the backend needs to be told, from the settings.
#[derive(Debug, Clone)]
pub struct BackendSettings {
    pub url: String,
    pub forward_headers: Vec<String>,
    pub timeout: Duration,
    pub cache_ttl: Duration,
    /// The hub's URL, against which relative grants resolve.
    pub base_url: String,
}

/// What the hub tells the backend of one stream request.
pub struct Ask<'a> {
    /// The request's path: `/sse/subscribe/alice`, `/api/v1/stream`, ...
    pub route: &'a str,
    /// The user whose stream is asked for, if any.
    pub user: Option<&'a str>,
    /// The topics and selectors asked for, as given.
    pub topics: Vec<&'a str>,
    pub last_event_id: Option<&'a str>,
    pub address: IpAddr,
    pub headers: &'a HeaderMap,
}

/// The request body, as the backend reads it (docs/integration.md).
#[derive(Debug, Serialize)]
struct Request<'a> {
    route: &'a str,
    user: Option<&'a str>,
    topics: Vec<&'a str>,
    last_event_id: Option<&'a str>,
    client: Client<'a>,
    headers: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Serialize)]
struct Client<'a> {
    address: String,
    user_agent: Option<&'a str>,
}

/// A `200` answer. Unknown members are ignored, so a backend may say more.
#[derive(Debug, Deserialize)]
struct Answer {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    private: Vec<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// What the backend said of a session.
#[derive(Debug)]
pub struct Session {
    /// The session's user; `None` for an anonymous one.
    pub user: Option<String>,
    pub grants: BackendGrants,
    /// When the session's streams end (`expires_in` after the answer).
    pub expires: Option<Instant>,
}

impl Session {
    /// The user of the stream: the one asked for, which must be the
    /// session's, or the session's own when none was asked for.
    pub fn stream_user(&self, requested: Option<&str>) -> Result<Option<String>, BackendError> {
        match requested {
            Some(user) if self.user.as_deref() == Some(user) => Ok(Some(user.to_owned())),
            Some(user) => Err(BackendError::OtherUser(user.to_owned())),
            None => Ok(self.user.clone()),
        }
    }

    /// Every requested exact topic must be granted.
    pub fn check_topics<S: AsRef<str>>(&self, topics: &[S]) -> Result<(), BackendError> {
        match topics.iter().find(|t| !self.grants.may_listen(t.as_ref())) {
            None => Ok(()),
            Some(topic) => Err(BackendError::NotGranted(topic.as_ref().to_owned())),
        }
    }

    /// Every requested selector must be granted (see
    /// [`BackendGrants::may_listen_with`]).
    pub fn check_selectors(&self, selectors: &[Selector]) -> Result<(), BackendError> {
        match selectors.iter().find(|s| !self.grants.may_listen_with(s)) {
            None => Ok(()),
            Some(selector) => Err(BackendError::NotGranted(selector.as_str().to_owned())),
        }
    }

    /// How long a stream opened now may last.
    pub fn lifetime(&self) -> Option<Duration> {
        self.expires
            .map(|at| at.saturating_duration_since(Instant::now()))
    }
}

type Outcome = Result<Arc<Session>, BackendError>;

/// The digest of a session's forwarded credential: what the cache and the
/// calls in flight are keyed by. A digest rather than the values keeps an
/// entry small whatever the cookies weigh, and SHA-256 makes it impossible
/// to craft a credential that shares another session's answer.
type Key = [u8; 32];

struct Cached {
    outcome: Outcome,
    until: Instant,
}

#[derive(Default)]
struct Sessions {
    cached: HashMap<Key, Cached>,
    in_flight: HashMap<Key, watch::Receiver<Option<Outcome>>>,
}

/// The backend of `--auth-url`, its cache and its calls in flight.
pub struct Backend {
    url: url::Url,
    client: reqwest::Client,
    forward: Vec<HeaderName>,
    cache_ttl: Duration,
    base_url: String,
    metrics: Arc<Metrics>,
    sessions: Mutex<Sessions>,
}

impl Backend {
    pub fn new(settings: &BackendSettings, metrics: Arc<Metrics>) -> Result<Backend, SetupError> {
        Ok(Backend {
            url: parse_url(&settings.url)?,
            client: crate::outbound::client(settings.timeout)?,
            forward: parse_header_names(&settings.forward_headers)?,
            cache_ttl: settings.cache_ttl,
            base_url: settings.base_url.clone(),
            metrics,
            sessions: Mutex::new(Sessions::default()),
        })
    }

    /// The backend's answer for the session of `ask`: cached, shared with
    /// an identical call in flight, or asked now.
    pub async fn authorize(self: &Arc<Self>, ask: Ask<'_>) -> Result<Arc<Session>, BackendError> {
        let forwarded = self.forwarded(ask.headers);
        let key = digest(&forwarded);
        let mut waiting = {
            let mut sessions = self.lock();
            let now = Instant::now();
            if let Some(cached) = sessions.cached.get(&key) {
                if cached.until > now {
                    self.metrics.auth_cache_hits.inc();
                    return cached.outcome.clone();
                }
                sessions.cached.remove(&key);
            }
            // A call whose task ended without answering (it cannot, short of
            // a panic) is not waited for: another is made.
            match sessions.in_flight.get(&key) {
                Some(receiver) if receiver.has_changed().is_ok() => receiver.clone(),
                _ => {
                    let (sender, receiver) = watch::channel(None);
                    sessions.in_flight.insert(key, receiver.clone());
                    let body = request_body(&ask, forwarded);
                    let backend = self.clone();
                    tokio::spawn(async move {
                        let outcome = backend.call(body).await;
                        backend.settle(key, &outcome);
                        let _ = sender.send(Some(outcome));
                    });
                    receiver
                }
            }
        };
        let answered = waiting.wait_for(Option::is_some).await;
        match answered.as_deref() {
            Ok(Some(outcome)) => outcome.clone(),
            // The call's task ended without an answer: the runtime is
            // shutting down.
            _ => Err(BackendError::Unavailable(
                "the call to the backend was abandoned".to_owned(),
            )),
        }
    }

    /// The configured headers the request carries, each once, in the order
    /// configured; a header sent several times (HTTP/2 splits cookies) is
    /// joined as HTTP joins it.
    fn forwarded(&self, headers: &HeaderMap) -> Vec<(HeaderName, String)> {
        let mut out = Vec::new();
        for name in &self.forward {
            let values: Vec<String> = headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if values.is_empty() {
                continue;
            }
            let separator = if name == header::COOKIE { "; " } else { ", " };
            out.push((name.clone(), values.join(separator)));
        }
        out
    }

    /// Removes the call from those in flight and caches what may be cached,
    /// in one critical section: a stream arriving after it finds the cache.
    fn settle(&self, key: Key, outcome: &Outcome) {
        let mut sessions = self.lock();
        sessions.in_flight.remove(&key);
        let cacheable = matches!(
            outcome,
            Ok(_) | Err(BackendError::Unauthorized | BackendError::Forbidden)
        );
        if !cacheable || self.cache_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut until = now + self.cache_ttl;
        if let Ok(Some(expires)) = outcome.as_ref().map(|s| s.expires) {
            until = until.min(expires);
        }
        if sessions.cached.len() >= MAX_SESSIONS {
            sessions.cached.retain(|_, c| c.until > now);
        }
        if sessions.cached.len() >= MAX_SESSIONS {
            let first = sessions
                .cached
                .iter()
                .min_by_key(|(_, c)| c.until)
                .map(|(k, _)| *k);
            if let Some(first) = first {
                sessions.cached.remove(&first);
            }
        }
        sessions.cached.insert(
            key,
            Cached {
                outcome: outcome.clone(),
                until,
            },
        );
    }

    /// One call to the backend, counted by outcome.
    async fn call(&self, body: Vec<u8>) -> Outcome {
        let (counted, outcome) = self.exchange(body).await;
        self.metrics.auth_requested(counted);
        if let Err(BackendError::Unavailable(reason)) = &outcome {
            if log_limit::AUTH_BACKEND.admit() {
                tracing::warn!(
                    url = %self.url,
                    outcome = counted.label(),
                    %reason,
                    "the auth backend gave no usable answer: streams are refused (503)"
                );
            }
        }
        outcome
    }

    async fn exchange(&self, body: Vec<u8>) -> (AuthRequest, Outcome) {
        let failed = |e: reqwest::Error| {
            let outcome = if e.is_timeout() {
                AuthRequest::Timeout
            } else {
                AuthRequest::Unreachable
            };
            (outcome, Err(BackendError::Unavailable(e.to_string())))
        };
        let sent = self
            .client
            .post(self.url.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return failed(e),
        };
        match response.status().as_u16() {
            200 => {}
            401 => return (AuthRequest::Unauthorized, Err(BackendError::Unauthorized)),
            403 => return (AuthRequest::Forbidden, Err(BackendError::Forbidden)),
            other => {
                return (
                    AuthRequest::HttpError,
                    Err(BackendError::Unavailable(format!("status {other}"))),
                )
            }
        }
        let mut text = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) if text.len() + chunk.len() > MAX_ANSWER_BYTES => {
                    return invalid(format!("an answer over {MAX_ANSWER_BYTES} bytes"));
                }
                Ok(Some(chunk)) => text.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => return failed(e),
            }
        }
        match self.session(&text) {
            Ok(session) => (AuthRequest::Allowed, Ok(Arc::new(session))),
            Err(reason) => invalid(reason),
        }
    }

    /// Reads a `200` answer's body.
    fn session(&self, body: &[u8]) -> Result<Session, String> {
        // An object, not whatever serde would read into the struct (an
        // array, by position).
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        if !value.is_object() {
            return Err("the answer must be a JSON object".to_owned());
        }
        let answer: Answer =
            serde_json::from_value(value).map_err(|e| format!("not an answer: {e}"))?;
        let grants = grants::backend(&answer.topics, &answer.private, &self.base_url)
            .map_err(|e| e.to_string())?;
        let expires = match answer.expires_in {
            None => None,
            Some(0) => return Err("`expires_in` must be at least 1 (seconds)".to_owned()),
            Some(seconds) => {
                Some(Instant::now() + Duration::from_secs(seconds.min(MAX_EXPIRES_IN)))
            }
        };
        if answer.user.as_deref().is_some_and(str::is_empty) {
            return Err("`user` must not be empty (null for no user)".to_owned());
        }
        Ok(Session {
            user: answer.user,
            grants,
            expires,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sessions> {
        // The maps stay consistent whatever panicked while holding them:
        // every update is a single insert or remove.
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn invalid(reason: String) -> (AuthRequest, Outcome) {
    (AuthRequest::Invalid, Err(BackendError::Unavailable(reason)))
}

fn request_body(ask: &Ask<'_>, forwarded: Vec<(HeaderName, String)>) -> Vec<u8> {
    let request = Request {
        route: ask.route,
        user: ask.user,
        topics: ask.topics.clone(),
        last_event_id: ask.last_event_id,
        client: Client {
            address: ask.address.to_string(),
            user_agent: ask
                .headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        },
        headers: forwarded
            .into_iter()
            .map(|(name, value)| (name.as_str().to_owned(), serde_json::Value::String(value)))
            .collect(),
    };
    // A map of strings serializes without fail.
    serde_json::to_vec(&request).unwrap_or_default()
}

/// The cache key of a forwarded credential: names and values, each ended
/// by a byte no header carries, so two lists never hash alike by shifting
/// bytes between entries.
fn digest(forwarded: &[(HeaderName, String)]) -> Key {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, value) in forwarded {
        context.update(name.as_str().as_bytes());
        context.update(&[0]);
        context.update(value.as_bytes());
        context.update(&[0]);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn backend(cache_ttl: Duration) -> Backend {
        Backend::new(
            &BackendSettings {
                url: "http://127.0.0.1:9/auth".to_owned(),
                forward_headers: vec!["cookie".to_owned(), "Authorization".to_owned()],
                timeout: Duration::from_secs(1),
                cache_ttl,
                base_url: "https://hub.example.com/.well-known/mercure".to_owned(),
            },
            Arc::new(Metrics::new()),
        )
        .unwrap()
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!(parse_url("https://app.example.com/pushwire/auth").is_ok());
        assert!(parse_url("http://app:3000/auth").is_ok());
        for bad in ["app.example.com/auth", "ftp://app/auth", "file:///auth", ""] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert!(parse_header_names(&["Cookie".into(), "x-session".into()]).is_ok());
        assert!(parse_header_names(&["bad header".into()]).is_err());
    }

    #[tokio::test]
    async fn only_listed_headers_are_forwarded_and_repeated_cookies_are_joined() {
        let backend = backend(Duration::from_secs(10));
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1".parse().unwrap());
        headers.append(header::COOKIE, "b=2".parse().unwrap());
        headers.insert("x-forged", "yes".parse().unwrap());
        let forwarded = backend.forwarded(&headers);
        assert_eq!(forwarded, [(header::COOKIE, "a=1; b=2".to_owned())]);
        // The credential decides the key, nothing else.
        let mut other = HeaderMap::new();
        other.insert(header::COOKIE, "a=1; b=2".parse().unwrap());
        assert_eq!(digest(&forwarded), digest(&backend.forwarded(&other)));
        other.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        assert_ne!(digest(&forwarded), digest(&backend.forwarded(&other)));
    }

    #[tokio::test]
    async fn answers_read_into_sessions_and_bad_ones_are_refused() {
        let backend = backend(Duration::from_secs(10));
        let session = backend
            .session(br#"{"user": "alice", "topics": ["news", "orders/alice/*"], "expires_in": 60, "extra": 1}"#)
            .unwrap();
        assert_eq!(
            session.stream_user(Some("alice")).unwrap().as_deref(),
            Some("alice")
        );
        assert_eq!(session.stream_user(None).unwrap().as_deref(), Some("alice"));
        assert!(matches!(
            session.stream_user(Some("bob")),
            Err(BackendError::OtherUser(_))
        ));
        assert!(session.check_topics(&["news", "orders/alice/7"]).is_ok());
        assert!(matches!(
            session.check_topics(&["news", "orders/bob/7"]),
            Err(BackendError::NotGranted(t)) if t == "orders/bob/7"
        ));
        let lifetime = session.lifetime().unwrap();
        assert!(lifetime <= Duration::from_secs(60) && lifetime > Duration::from_secs(50));

        let anonymous = backend
            .session(br#"{"user": null, "topics": ["news"]}"#)
            .unwrap();
        assert!(anonymous.stream_user(Some("alice")).is_err());
        assert_eq!(anonymous.lifetime(), None);
        for bad in [
            &b"not json"[..],
            br#"["alice"]"#,
            br#"{"user": "alice", "expires_in": 0}"#,
            br#"{"user": "alice", "expires_in": -5}"#,
            br#"{"user": ""}"#,
            br#"{"topics": "news"}"#,
            br#"{"topics": [""]}"#,
        ] {
            assert!(
                backend.session(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_keeps_answers_for_the_ttl_and_never_past_their_expiry() {
        let backend = backend(Duration::from_secs(10));
        let key = [1u8; 32];
        let session = Arc::new(
            backend
                .session(br#"{"user": "a", "expires_in": 3}"#)
                .unwrap(),
        );
        backend.settle(key, &Ok(session));
        assert!(backend
            .lock()
            .cached
            .get(&key)
            .is_some_and(|c| c.until <= Instant::now() + Duration::from_secs(3)));
        // Failures are not kept; refusals are.
        backend.settle([2; 32], &Err(BackendError::Unavailable("down".into())));
        backend.settle([3; 32], &Err(BackendError::Unauthorized));
        let sessions = backend.lock();
        assert!(!sessions.cached.contains_key(&[2; 32]));
        assert!(sessions.cached.contains_key(&[3; 32]));
        drop(sessions);

        let off = backend_with_no_cache();
        off.settle(key, &Err(BackendError::Forbidden));
        assert!(off.lock().cached.is_empty());
    }

    fn backend_with_no_cache() -> Backend {
        backend(Duration::ZERO)
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_bounded() {
        let backend = backend(Duration::from_secs(10));
        for i in 0..MAX_SESSIONS + 5 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            backend.settle(key, &Err(BackendError::Forbidden));
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        let sessions = backend.lock();
        assert_eq!(sessions.cached.len(), MAX_SESSIONS);
        // The first ones, which expire first, went.
        assert!(!sessions.cached.contains_key(&[0u8; 32]));
    }
}
