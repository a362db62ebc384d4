//! Events: what a publisher asks to send ([`Draft`]), who it is for
//! ([`Target`]), and what the history stored ([`Event`]).
//!
//! An [`Event`] is a validated draft with the id and sequence number the
//! history gave it. Its server-sent-events frame ([`crate::frame`]) is
//! encoded exactly once, when the event is made, and every stream that
//! receives it shares those bytes (`Bytes` clones are a reference count).
//!
//! Validation happens here, once, for every route: a draft whose id, event
//! type, user ids or topics could break a frame, the index or a limit is
//! refused with an [`EventError`] that names the field, and nothing of its
//! batch is stored.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::frame::encode_event;
use crate::id::{fresh_tag, HubId, PUBLISHER_ID};
#[cfg(test)]
use crate::limits::MAX_EVENT_TYPE_LEN;
use crate::limits::{FieldLimits, Limit};
use crate::text::has_forbidden;

/// Largest `retry` a publisher may ask browsers to wait, in milliseconds (one day).
pub const MAX_RETRY_MS: u64 = 86_400_000;

/// Why a draft was refused. Nothing is stored when a draft is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("field `{field}` must not contain CR, LF or NUL")]
    LineBreak { field: &'static str },
    #[error("field `{field}` must not contain control characters or invisible format characters (Unicode category Cf)")]
    Invisible { field: &'static str },
    #[error("field `{field}` is longer than {max} bytes ({})", limit.option())]
    TooLong {
        field: &'static str,
        max: usize,
        limit: Limit,
    },
    #[error("more than {max} {field} ({})", limit.option())]
    TooMany {
        field: &'static str,
        max: usize,
        limit: Limit,
    },
    #[error("field `{field}` must not be empty")]
    Empty { field: &'static str },
    #[error("id must not start with `#`")]
    IdStartsWithHash,
    #[error("id must not be `earliest`: subscribers send it to ask for the whole history")]
    IdReserved,
    #[error("id must not consist of digits only: such ids are the hub's own")]
    IdAllDigits,
    #[error("retry must be at most {MAX_RETRY_MS} milliseconds")]
    RetryTooLarge,
    #[error("only events sent to topics can be private: authorization is granted per topic")]
    PrivateNeedsTopics,
    #[error("topic `{0}` is in the namespace the hub reserves for its own events (/.well-known/mercure)")]
    ReservedTopic(String),
}

impl EventError {
    /// The configured limit this refusal is about, if it is about one.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            EventError::TooLong { limit, .. } | EventError::TooMany { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

/// What a publisher asks to send, before the history gives it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub target: Target,
    /// The SSE `event:` field; `None` dispatches as `message` in browsers.
    pub event: Option<String>,
    pub data: String,
    /// A publisher-supplied id; `None` lets the hub assign one.
    pub id: Option<String>,
    pub retry: Option<u64>,
    /// Only streams allowed to read one of the event's topics receive it
    /// (see [`Interest::may_read`](crate::route::Interest::may_read)).
    pub private: bool,
}

impl Draft {
    /// A plain `message` event with hub-assigned id.
    pub fn new(target: Target, data: impl Into<String>) -> Self {
        Draft {
            target,
            event: None,
            data: data.into(),
            id: None,
            retry: None,
            private: false,
        }
    }

    /// Checks every field that reaches the wire against `limits`. Data may
    /// contain anything: the encoder splits it into lines.
    pub fn validate(&self, limits: &FieldLimits) -> Result<(), EventError> {
        if let Some(id) = &self.id {
            check_field("id", id, limits.id_length, Limit::IdLength)?;
            if id.starts_with('#') {
                return Err(EventError::IdStartsWithHash);
            }
            if id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(EventError::IdAllDigits);
            }
            if id == "earliest" {
                return Err(EventError::IdReserved);
            }
        }
        if let Some(event) = &self.event {
            check_field(
                "event",
                event,
                limits.event_type_length,
                Limit::EventTypeLength,
            )?;
        }
        if self.retry.is_some_and(|r| r > MAX_RETRY_MS) {
            return Err(EventError::RetryTooLarge);
        }
        if self.private && !matches!(self.target, Target::Topics(_)) {
            return Err(EventError::PrivateNeedsTopics);
        }
        self.target.validate(limits)
    }
}

/// The sequence number a hub id stands for, in any of its forms (see
/// [`HubId::parse`]); `None` for any other text, which may be a
/// publisher's own id.
pub fn hub_sequence(id: &str) -> Option<u64> {
    HubId::parse(id).map(|id| id.seq)
}

/// A value that goes on one SSE line: not empty, at most `max` bytes (the
/// `limit`), no line breaks, NUL or other character identifiers may not
/// carry ([`crate::text`]).
pub fn check_field(
    field: &'static str,
    value: &str,
    max: usize,
    limit: Limit,
) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::Empty { field });
    }
    if value.len() > max {
        return Err(EventError::TooLong { field, max, limit });
    }
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(EventError::LineBreak { field });
    }
    if has_forbidden(value) {
        return Err(EventError::Invisible { field });
    }
    Ok(())
}

/// A stored event. `seq` orders all events of one hub; `id` is what
/// subscribers see and send back as `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(skip)]
    pub seq: u64,
    pub id: Arc<str>,
    #[serde(rename = "to")]
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// Milliseconds since the Unix epoch when the hub accepted the event.
    pub time: u64,
    /// The random part of a hub id ([`crate::id`]), stored with the event;
    /// 0 for an event with a publisher's id, or stored by a release that
    /// drew no tags.
    #[serde(skip)]
    pub tag: u64,
    #[serde(skip)]
    frame: Bytes,
}

impl Event {
    /// Makes the stored form of a validated draft and encodes its frame
    /// once. An event without a publisher's id gets the hub's, with a fresh
    /// tag.
    pub fn new(seq: u64, draft: Draft, time: u64) -> Event {
        let tag = if draft.id.is_none() { fresh_tag() } else { 0 };
        Event::stored(seq, draft, time, tag)
    }

    /// An event as its record gave it back: `tag` as it was drawn (0 for
    /// none).
    pub fn stored(seq: u64, draft: Draft, time: u64, tag: u64) -> Event {
        let id: Arc<str> = match draft.id {
            Some(id) => id.into(),
            None => HubId { seq, tag }.to_string().into(),
        };
        let frame = encode_event(&id, draft.event.as_deref(), draft.retry, &draft.data);
        Event {
            seq,
            id,
            target: draft.target,
            event: draft.event,
            data: draft.data,
            retry: draft.retry,
            private: draft.private,
            time,
            tag,
            frame,
        }
    }

    /// What [`crate::id::locate`] compares a hub id's tag with: the tag, or
    /// [`PUBLISHER_ID`] when the event has a publisher's id (hub ids, tagged
    /// or of earlier releases, start with `#`; publisher ids cannot).
    pub fn hub_tag(&self) -> u64 {
        if self.id.starts_with('#') {
            self.tag
        } else {
            PUBLISHER_ID
        }
    }

    /// The encoded SSE frame, shared by every receiver.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {} (seq {})", self.id, self.seq)
    }
}

/// Most users one event may name.
pub const MAX_TARGETS: usize = 10_000;

/// The addressees of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// Every stream of each of these users.
    Users(Vec<String>),
    /// Every stream of every user whose id starts with this prefix (a group).
    UserPrefix(String),
    /// Every stream subscribed to at least one of these topics.
    Topics(Vec<String>),
    /// Every open stream.
    All,
}

impl Target {
    /// What kind of target this is, as logs name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Users(_) => "users",
            Target::UserPrefix(_) => "prefix",
            Target::Topics(_) => "topics",
            Target::All => "all",
        }
    }

    /// One user.
    pub fn user(id: impl Into<String>) -> Target {
        Target::Users(vec![id.into()])
    }

    /// Checks names and counts against `limits`; duplicates are allowed
    /// and delivered once.
    pub fn validate(&self, limits: &FieldLimits) -> Result<(), EventError> {
        match self {
            Target::Users(users) => {
                check_list("users", users, (MAX_TARGETS, Limit::UsersPerEvent), |u| {
                    check_user_id(u, limits)
                })
            }
            Target::UserPrefix(prefix) => check_name(
                "user_prefix",
                prefix,
                limits.user_id_length,
                Limit::UserIdLength,
            ),
            Target::Topics(topics) => check_list(
                "topics",
                topics,
                (limits.topics_per_event, Limit::TopicsPerEvent),
                |t| check_topic(t, limits),
            ),
            Target::All => Ok(()),
        }
    }

    /// Sorts and deduplicates the named users or topics, so that a stream
    /// named twice still receives an event once.
    pub fn normalize(&mut self) {
        if let Target::Users(list) | Target::Topics(list) = self {
            list.sort_unstable();
            list.dedup();
        }
    }
}

/// A list of names: not empty, at most `max` of them, each one checked.
fn check_list(
    field: &'static str,
    items: &[String],
    (max, limit): (usize, Limit),
    check: impl Fn(&str) -> Result<(), EventError>,
) -> Result<(), EventError> {
    if items.is_empty() {
        return Err(EventError::Empty { field });
    }
    if items.len() > max {
        return Err(EventError::TooMany { field, max, limit });
    }
    items.iter().try_for_each(|i| check(i))
}

/// A name used to route (user id, prefix, topic): not empty, bounded, and
/// free of control and invisible characters ([`crate::text`]) so it is safe
/// in logs and URLs and means what it shows.
fn check_name(
    field: &'static str,
    value: &str,
    max: usize,
    limit: Limit,
) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::Empty { field });
    }
    if value.len() > max {
        return Err(EventError::TooLong { field, max, limit });
    }
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(EventError::LineBreak { field });
    }
    if has_forbidden(value) {
        return Err(EventError::Invisible { field });
    }
    Ok(())
}

/// Checks a user id as it arrives in a subscribe path or a publish call.
pub fn check_user_id(user: &str, limits: &FieldLimits) -> Result<(), EventError> {
    check_name("user", user, limits.user_id_length, Limit::UserIdLength)
}

/// Checks a topic name.
pub fn check_topic(topic: &str, limits: &FieldLimits) -> Result<(), EventError> {
    check_name("topic", topic, limits.topic_length, Limit::TopicLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> Draft {
        Draft::new(Target::All, "x")
    }

    #[test]
    fn ids_and_types_with_line_breaks_are_refused() {
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let d = Draft {
                id: Some(bad.into()),
                ..draft()
            };
            assert_eq!(
                d.validate(&FieldLimits::default()),
                Err(EventError::LineBreak { field: "id" })
            );
            let d = Draft {
                event: Some(bad.into()),
                ..draft()
            };
            assert_eq!(
                d.validate(&FieldLimits::default()),
                Err(EventError::LineBreak { field: "event" })
            );
        }
    }

    #[test]
    fn publisher_ids_cannot_collide_with_hub_ids() {
        let d = Draft {
            id: Some("123".into()),
            ..draft()
        };
        assert_eq!(
            d.validate(&FieldLimits::default()),
            Err(EventError::IdAllDigits)
        );
        let d = Draft {
            id: Some("#x".into()),
            ..draft()
        };
        assert_eq!(
            d.validate(&FieldLimits::default()),
            Err(EventError::IdStartsWithHash)
        );
        let d = Draft {
            id: Some("order-42".into()),
            ..draft()
        };
        assert_eq!(d.validate(&FieldLimits::default()), Ok(()));
    }

    #[test]
    fn hub_sequence_reads_every_form_of_hub_id_and_nothing_else() {
        // The forms themselves are id.rs's tests.
        assert_eq!(hub_sequence("#42.aaaaaaab"), Some(42));
        assert_eq!(hub_sequence("#42"), Some(42));
        assert_eq!(hub_sequence("42"), Some(42));
        assert_eq!(hub_sequence("+5"), None);
        // A publisher may choose `+5`; validation lets it through, so the
        // history must not read it as sequence 5.
        let d = Draft {
            id: Some("+5".into()),
            ..draft()
        };
        assert_eq!(d.validate(&FieldLimits::default()), Ok(()));
    }

    #[test]
    fn oversized_fields_are_refused() {
        let d = Draft {
            event: Some("e".repeat(MAX_EVENT_TYPE_LEN + 1)),
            ..draft()
        };
        assert!(matches!(
            d.validate(&FieldLimits::default()),
            Err(EventError::TooLong { .. })
        ));
        let d = Draft {
            retry: Some(MAX_RETRY_MS + 1),
            ..draft()
        };
        assert_eq!(
            d.validate(&FieldLimits::default()),
            Err(EventError::RetryTooLarge)
        );
    }

    #[test]
    fn configured_lengths_hold_exactly_at_their_boundary() {
        let limits = FieldLimits {
            id_length: 4,
            event_type_length: 3,
            ..FieldLimits::default()
        };
        let with = |id: &str, event: &str| Draft {
            id: Some(id.into()),
            event: Some(event.into()),
            ..draft()
        };
        assert_eq!(with("abcd", "abc").validate(&limits), Ok(()));
        let long_id = with("abcde", "abc").validate(&limits);
        assert_eq!(long_id.map_err(|e| e.limit()), Err(Some(Limit::IdLength)));
        let long_type = with("abcd", "abcd").validate(&limits);
        assert_eq!(
            long_type.as_ref().map_err(|e| e.limit()),
            Err(Some(Limit::EventTypeLength))
        );
        let message = long_type.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("--max-event-type-length"), "{message}");
    }

    #[test]
    fn hub_assigned_id_is_the_sequence_number_and_a_tag_as_a_fragment() {
        let e = Event::new(42, draft(), 0);
        let id = HubId::parse(&e.id);
        assert_eq!(id.map(|id| (id.seq, id.tag)), Some((42, e.tag)));
        assert!(e.id.starts_with("#42.") && e.id.len() == 12, "{}", e.id);
        assert_eq!(
            e.frame()[..],
            *format!("id: {}\ndata: x\n\n", e.id).as_bytes()
        );
        // Each event draws its own tag.
        assert_ne!(Event::new(42, draft(), 0).id, e.id);
        // Restored from a record of an earlier release: no tag.
        assert_eq!(&*Event::stored(42, draft(), 0, 0).id, "#42");
    }
}
