//! What a stream listens to and may read ([`Interest`]), and the topic
//! selectors it listens with (exact, `*`, URI templates, URL patterns).
//!
//! The registry's index answers "which streams does this target reach"
//! without scanning; [`Interest::receives`] (through [`Target::reaches`])
//! answers the same question for one stream and is what replay from history
//! uses. The two must agree: a property test in `registry.rs` checks the
//! index against `receives` for generated streams and events.

mod selector;
mod template;

pub use selector::{MatchCache, MatchKind, Selector, SelectorError, MAX_SELECTOR_LEN};

use crate::event::{check_topic, check_user_id, Event, EventError, Target};
use crate::limits::{FieldLimits, Limit};

impl Target {
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
