//! Webhook messages: their types, the JSON body the backend receives and
//! what the outbox keeps with each (attempts, when the next is due, the
//! last error).
//!
//! The body is built once, when the message is made, and stored as the
//! exact bytes that are signed and sent: every attempt of one message sends
//! the same `webhook-id` and the same body.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What happened, as the body's `type` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A user's first stream anywhere in the cluster opened.
    #[serde(rename = "user.online")]
    UserOnline,
    /// A user's last stream closed and they stayed away for
    /// `--webhook-offline-delay`.
    #[serde(rename = "user.offline")]
    UserOffline,
    #[serde(rename = "stream.opened")]
    StreamOpened,
    #[serde(rename = "stream.closed")]
    StreamClosed,
    /// An event addressed to users of whom some had no open stream
    /// anywhere when it was published.
    #[serde(rename = "event.undelivered")]
    EventUndelivered,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::UserOnline,
        Kind::UserOffline,
        Kind::StreamOpened,
        Kind::StreamClosed,
        Kind::EventUndelivered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::UserOnline => "user.online",
            Kind::UserOffline => "user.offline",
            Kind::StreamOpened => "stream.opened",
            Kind::StreamClosed => "stream.closed",
            Kind::EventUndelivered => "event.undelivered",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// The types `--webhook-events` turns on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    /// Without `--webhook-events`: presence and undelivered events; the
    /// per-stream types are many and off by default.
    pub const DEFAULT: Kinds = Kinds(0b10011);

    pub fn of(kinds: impl IntoIterator<Item = Kind>) -> Kinds {
        Kinds(kinds.into_iter().fold(0, |bits, k| bits | Kinds::bit(k)))
    }

    fn bit(kind: Kind) -> u8 {
        1 << Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
    }

    pub fn has(self, kind: Kind) -> bool {
        self.0 & Kinds::bit(kind) != 0
    }

    /// Whether who is online must be followed (either presence type is on).
    pub fn presence(self) -> bool {
        self.has(Kind::UserOnline) || self.has(Kind::UserOffline)
    }

    pub fn names(self) -> Vec<&'static str> {
        Kind::ALL
            .into_iter()
            .filter(|k| self.has(*k))
            .map(Kind::as_str)
            .collect()
    }
}

/// One message and its delivery state, as the outbox stores it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `msg_<32 hex digits>`: the `webhook-id` of every attempt.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Messages that share a key are delivered in the order they were
    /// made: `u:<user>` for every user the message concerns, `s:<stream>`
    /// for a stream without a user.
    pub keys: Vec<String>,
    /// The exact JSON body that is signed and sent.
    pub body: String,
    /// Milliseconds since the Unix epoch when the message was made.
    pub created_ms: u64,
    /// Attempts made so far.
    #[serde(default)]
    pub attempts: u32,
    /// The next attempt is not made before this (ms since the epoch).
    #[serde(default)]
    pub next_ms: u64,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the message was given up (listed as failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_ms: Option<u64>,
}

impl Message {
    /// A new message of `kind` about `data`, ordered under `keys`.
    pub fn new(kind: Kind, data: Value, keys: Vec<String>) -> Message {
        let now = SystemTime::now();
        let created_ms = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let body = json!({
            "type": kind.as_str(),
            "timestamp": humantime::format_rfc3339_millis(now).to_string(),
            "data": data,
        })
        .to_string();
        Message {
            id: format!("msg_{}", uuid::Uuid::new_v4().simple()),
            kind,
            keys,
            body,
            created_ms,
            attempts: 0,
            next_ms: 0,
            last_error: None,
            failed_ms: None,
        }
    }

    /// The ordering key of a user.
    pub fn user_key(user: &str) -> String {
        format!("u:{user}")
    }

    pub fn user_online(user: &str) -> Message {
        Message::new(
            Kind::UserOnline,
            json!({ "user": user }),
            vec![Message::user_key(user)],
        )
    }

    pub fn user_offline(user: &str) -> Message {
        Message::new(
            Kind::UserOffline,
            json!({ "user": user }),
            vec![Message::user_key(user)],
        )
    }

    fn stream_keys(user: Option<&str>, stream: &str) -> Vec<String> {
        vec![match user {
            Some(user) => Message::user_key(user),
            None => format!("s:{stream}"),
        }]
    }

    pub fn stream_opened(user: Option<&str>, route: &str, stream: &str) -> Message {
        Message::new(
            Kind::StreamOpened,
            json!({ "user": user, "route": route, "stream": stream }),
            Message::stream_keys(user, stream),
        )
    }

    pub fn stream_closed(
        user: Option<&str>,
        route: &str,
        stream: &str,
        reason: &str,
        duration: Duration,
    ) -> Message {
        Message::new(
            Kind::StreamClosed,
            json!({
                "user": user,
                "route": route,
                "stream": stream,
                "reason": reason,
                "duration_ms": duration.as_millis() as u64,
            }),
            Message::stream_keys(user, stream),
        )
    }

    /// `data` is cut to at most `max_data` bytes, on a character boundary.
    pub fn event_undelivered(
        id: &str,
        event: Option<&str>,
        data: &str,
        max_data: usize,
        users: &[&str],
    ) -> Message {
        let mut end = data.len().min(max_data);
        while !data.is_char_boundary(end) {
            end -= 1;
        }
        Message::new(
            Kind::EventUndelivered,
            json!({
                "event": {
                    "id": id,
                    "type": event,
                    "data": &data[..end],
                    "truncated": end < data.len(),
                },
                "users": users,
            }),
            users.iter().map(|u| Message::user_key(u)).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_body_has_type_timestamp_and_data() {
        let m = Message::user_online("alice");
        let body: Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(body["type"], "user.online");
        assert_eq!(body["data"]["user"], "alice");
        let stamp = body["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(stamp).is_ok(), "{stamp}");
        assert!(m.id.starts_with("msg_") && m.id.len() == 36, "{}", m.id);
        assert_eq!(m.keys, ["u:alice"]);
    }

    #[test]
    fn undelivered_data_is_cut_on_a_character_boundary() {
        let m = Message::event_undelivered("#7.abc", Some("order"), "héllo", 2, &["bob", "carol"]);
        let body: Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(body["data"]["event"]["data"], "h");
        assert_eq!(body["data"]["event"]["truncated"], true);
        assert_eq!(body["data"]["users"], json!(["bob", "carol"]));
        assert_eq!(m.keys, ["u:bob", "u:carol"]);
        let whole = Message::event_undelivered("#7.abc", None, "hi", 10, &["bob"]);
        let body: Value = serde_json::from_str(&whole.body).unwrap();
        assert_eq!(body["data"]["event"]["truncated"], false);
        assert_eq!(body["data"]["event"]["type"], Value::Null);
    }

    #[test]
    fn kinds_default_leaves_the_stream_types_off() {
        let kinds = Kinds::DEFAULT;
        assert_eq!(
            kinds.names(),
            ["user.online", "user.offline", "event.undelivered"]
        );
        assert!(kinds.presence());
        let streams = Kinds::of([Kind::StreamClosed]);
        assert!(!streams.presence() && streams.has(Kind::StreamClosed));
    }

    #[test]
    fn a_stored_message_reads_back() {
        let mut m = Message::stream_closed(
            None,
            "/api/v1/stream",
            "7",
            "client_gone",
            Duration::from_millis(1500),
        );
        m.attempts = 3;
        m.last_error = Some("503".into());
        let back: Message = serde_json::from_slice(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.keys, ["s:7"]);
    }
}
