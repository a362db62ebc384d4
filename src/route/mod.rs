//! Who an event is for ([`Target`]) and what a stream listens to
//! ([`Interest`]). The hub's index answers "which streams does this target
//! reach" without scanning; [`Target::reaches`] answers the same question for
//! one stream and is what replay from history uses, so live delivery and
//! replay agree by construction (a test checks them against each other).

use serde::{Deserialize, Serialize};

mod selector;
mod template;

pub use selector::{MatchCache, MatchKind, Selector, SelectorError, MAX_SELECTOR_LEN};

use crate::event::{Event, EventError};
use crate::limits::{FieldLimits, Limit};

/// Ceiling of `--max-user-id-length`, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;
/// Ceiling of `--max-topic-length`, in bytes: the URI-template matcher is
/// built to be exact up to it.
pub const MAX_TOPIC_LEN: usize = 2048;
/// Most users one event may name.
pub const MAX_TARGETS: usize = 10_000;

/// The addressees of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

    /// Whether a stream with this interest receives events sent to this target.
    pub fn reaches(&self, interest: &Interest) -> bool {
        match self {
            Target::All => interest.broadcasts,
            Target::Users(users) => interest
                .user
                .as_deref()
                .is_some_and(|u| users.iter().any(|x| x == u)),
            Target::UserPrefix(prefix) => interest
                .user
                .as_deref()
                .is_some_and(|u| u.starts_with(prefix.as_str())),
            Target::Topics(topics) => interest.listens_to(topics),
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
/// free of control characters so it is safe in logs and URLs.
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
    if value.chars().any(char::is_control) {
        return Err(EventError::LineBreak { field });
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

/// What one stream listens to and what it may read.
///
/// A stream listens to its user's events (and so its groups'), to exact
/// topics, and to topic selectors (URI templates, URL patterns, `*`). Private
/// events additionally need a `readable` selector matching one of their
/// topics: listening to a topic never grants reading its private events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interest {
    pub user: Option<String>,
    /// Topics listened to by exact name (indexed by the hub).
    pub topics: Vec<String>,
    /// Topics listened to by selector: templates, patterns, the wildcard.
    pub selectors: Vec<Selector>,
    /// Receives events sent to everyone (`Target::All`). Mercure
    /// subscriptions do not: they listen to topics only.
    pub broadcasts: bool,
    /// Private events on topics these select may be read.
    pub readable: Vec<Selector>,
}

impl Interest {
    /// A user's stream, with broadcasts.
    pub fn user(id: impl Into<String>) -> Interest {
        Interest::new(Some(id.into()), Vec::new())
    }

    /// A stream of a user and/or exact topics, with broadcasts.
    pub fn new(user: Option<String>, topics: Vec<String>) -> Interest {
        Interest {
            user,
            topics,
            broadcasts: true,
            ..Interest::default()
        }
    }

    /// Checks the user id, each exact topic and how many topics and
    /// selectors the stream listens to, against `limits`.
    pub fn validate(&self, limits: &FieldLimits) -> Result<(), EventError> {
        if let Some(user) = &self.user {
            check_user_id(user, limits)?;
        }
        let max = limits.topics_per_stream;
        if self.topics.len() + self.selectors.len() > max {
            return Err(EventError::TooMany {
                field: "topics and selectors",
                max,
                limit: Limit::TopicsPerStream,
            });
        }
        self.topics.iter().try_for_each(|t| check_topic(t, limits))
    }

    /// Whether the stream listens to at least one of `topics`.
    pub fn listens_to<S: AsRef<str>>(&self, topics: &[S]) -> bool {
        topics.iter().any(|t| {
            let t = t.as_ref();
            self.topics.iter().any(|x| x == t) || self.selectors.iter().any(|s| s.matches(t))
        })
    }

    /// Whether the stream may read an event: public events, or private ones
    /// with a topic one of its `readable` selectors matches.
    pub fn may_read(&self, event: &Event) -> bool {
        self.may_read_with(event, Selector::matches)
    }

    /// [`Interest::may_read`] with the selector test supplied, so the hub's
    /// fanout can answer it through its match cache.
    pub fn may_read_with(
        &self,
        event: &Event,
        mut matches: impl FnMut(&Selector, &str) -> bool,
    ) -> bool {
        match &event.target {
            _ if !event.private => true,
            Target::Topics(topics) => self
                .readable
                .iter()
                .any(|s| topics.iter().any(|t| matches(s, t))),
            _ => false,
        }
    }

    /// Whether the stream receives `event`: the one rule replay follows,
    /// and that the hub's indexed fanout agrees with.
    pub fn receives(&self, event: &Event) -> bool {
        event.target.reaches(self) && self.may_read(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(user: Option<&str>, topics: &[&str]) -> Interest {
        Interest::new(
            user.map(str::to_owned),
            topics.iter().map(|t| t.to_string()).collect(),
        )
    }

    #[test]
    fn user_target_reaches_only_that_user() {
        let t = Target::Users(vec!["u1".into(), "u3".into()]);
        assert!(t.reaches(&stream(Some("u1"), &[])));
        assert!(t.reaches(&stream(Some("u3"), &["x"])));
        assert!(!t.reaches(&stream(Some("u2"), &[])));
        assert!(!t.reaches(&stream(Some("u10"), &[])));
        assert!(!t.reaches(&stream(None, &["u1"])));
    }

    #[test]
    fn prefix_target_reaches_the_group() {
        let t = Target::UserPrefix("g1-".into());
        assert!(t.reaches(&stream(Some("g1-a"), &[])));
        assert!(t.reaches(&stream(Some("g1-"), &[])));
        assert!(!t.reaches(&stream(Some("g2-a"), &[])));
        assert!(!t.reaches(&stream(Some("g1"), &[])));
        assert!(!t.reaches(&stream(None, &["g1-a"])));
    }

    #[test]
    fn topic_target_reaches_subscribers_of_any_named_topic() {
        let t = Target::Topics(vec!["a".into(), "b".into()]);
        assert!(t.reaches(&stream(None, &["b"])));
        assert!(t.reaches(&stream(Some("u"), &["a", "z"])));
        assert!(!t.reaches(&stream(Some("a"), &[])));
        assert!(!t.reaches(&stream(None, &["c"])));
    }

    #[test]
    fn all_reaches_every_stream() {
        assert!(Target::All.reaches(&stream(None, &[])));
        assert!(Target::All.reaches(&stream(Some("u"), &[])));
    }

    #[test]
    fn json_shapes() {
        let t: Target = serde_json::from_str(r#"{"users":["u1"]}"#).unwrap_or(Target::All);
        assert_eq!(t, Target::user("u1"));
        let t: Target = serde_json::from_str(r#"{"user_prefix":"g"}"#).unwrap_or(Target::All);
        assert_eq!(t, Target::UserPrefix("g".into()));
        let t: Target = serde_json::from_str(r#""all""#).unwrap_or(Target::user("x"));
        assert_eq!(t, Target::All);
        assert!(serde_json::from_str::<Target>(r#"{"group":"g"}"#).is_err());
    }

    #[test]
    fn empty_and_control_names_are_refused() {
        let limits = FieldLimits::default();
        assert!(Target::Users(vec![]).validate(&limits).is_err());
        assert!(Target::Users(vec!["".into()]).validate(&limits).is_err());
        assert!(Target::UserPrefix("".into()).validate(&limits).is_err());
        assert!(Target::Topics(vec!["a\nb".into()])
            .validate(&limits)
            .is_err());
        assert!(Target::user("ok").validate(&limits).is_ok());
        assert!(stream(Some("a\u{7}"), &[]).validate(&limits).is_err());
    }

    #[test]
    fn configured_limits_hold_exactly_at_their_boundary() {
        let limits = FieldLimits {
            topic_length: 8,
            user_id_length: 4,
            topics_per_event: 3,
            topics_per_stream: 2,
            ..FieldLimits::default()
        };
        let topics = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>();
        assert!(Target::Topics(topics(3)).validate(&limits).is_ok());
        assert_eq!(
            Target::Topics(topics(4)).validate(&limits),
            Err(EventError::TooMany {
                field: "topics",
                max: 3,
                limit: Limit::TopicsPerEvent
            })
        );
        assert!(Target::Topics(vec!["x".repeat(8)])
            .validate(&limits)
            .is_ok());
        let long = Target::Topics(vec!["x".repeat(9)]).validate(&limits);
        assert_eq!(long.map_err(|e| e.limit()), Err(Some(Limit::TopicLength)));
        assert!(Target::user("abcd").validate(&limits).is_ok());
        let long = Target::user("abcde").validate(&limits);
        assert_eq!(long.map_err(|e| e.limit()), Err(Some(Limit::UserIdLength)));
        let prefix = Target::UserPrefix("abcde".into()).validate(&limits);
        assert_eq!(
            prefix.map_err(|e| e.limit()),
            Err(Some(Limit::UserIdLength))
        );
        let two = Interest::new(None, topics(2));
        assert!(two.validate(&limits).is_ok());
        let three = Interest::new(None, topics(3)).validate(&limits);
        assert_eq!(
            three.map_err(|e| e.limit()),
            Err(Some(Limit::TopicsPerStream))
        );
    }
}
