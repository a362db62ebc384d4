//! How long names may be and how many topics one event or stream may name.
//!
//! Every field here reaches the wire, the index or the history, so its size
//! is memory and bandwidth spent on every delivery and every replay. The
//! configured values may only tighten the ceilings the code is built for
//! (the topic ceiling, for instance, bounds the URI-template matcher's
//! regexes); the configuration refuses larger ones.

use crate::event::{MAX_EVENT_TYPE_LEN, MAX_ID_LEN};
use crate::route::{MAX_TOPIC_LEN, MAX_USER_ID_LEN};

/// Default of `--max-topics-per-event` and `--max-topics-per-stream`: what
/// Mercure subscriptions have always been allowed.
pub const DEFAULT_MAX_TOPICS: usize = 1_000;

/// The field limits the core's validation applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldLimits {
    /// Longest publisher-supplied event id, in bytes.
    pub id_length: usize,
    /// Longest event type, in bytes.
    pub event_type_length: usize,
    /// Longest topic, in bytes.
    pub topic_length: usize,
    /// Longest user id (and group prefix), in bytes.
    pub user_id_length: usize,
    /// Most topics one event may be sent to.
    pub topics_per_event: usize,
    /// Most topics and topic selectors one stream may listen to.
    pub topics_per_stream: usize,
}

impl Default for FieldLimits {
    fn default() -> Self {
        FieldLimits {
            id_length: MAX_ID_LEN,
            event_type_length: MAX_EVENT_TYPE_LEN,
            topic_length: MAX_TOPIC_LEN,
            user_id_length: MAX_USER_ID_LEN,
            topics_per_event: DEFAULT_MAX_TOPICS,
            topics_per_stream: DEFAULT_MAX_TOPICS,
        }
    }
}

impl FieldLimits {
    /// Why these limits cannot be used, if they cannot: every length is at
    /// least 1 and at most its ceiling, every count at least 1.
    pub fn check(&self) -> Result<(), String> {
        for (option, value, ceiling) in [
            ("max-id-length", self.id_length, MAX_ID_LEN),
            (
                "max-event-type-length",
                self.event_type_length,
                MAX_EVENT_TYPE_LEN,
            ),
            ("max-topic-length", self.topic_length, MAX_TOPIC_LEN),
            ("max-user-id-length", self.user_id_length, MAX_USER_ID_LEN),
            ("max-topics-per-event", self.topics_per_event, usize::MAX),
            ("max-topics-per-stream", self.topics_per_stream, usize::MAX),
        ] {
            if value == 0 || value > ceiling {
                return Err(format!("{option} must be from 1 to {ceiling}"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_ceilings_and_valid() {
        let limits = FieldLimits::default();
        assert_eq!(limits.check(), Ok(()));
        assert_eq!(limits.topic_length, MAX_TOPIC_LEN);
    }

    #[test]
    fn zero_and_above_the_ceiling_are_refused() {
        let zero = FieldLimits {
            topics_per_event: 0,
            ..FieldLimits::default()
        };
        assert!(zero
            .check()
            .is_err_and(|e| e.contains("max-topics-per-event")));
        let above = FieldLimits {
            topic_length: MAX_TOPIC_LEN + 1,
            ..FieldLimits::default()
        };
        assert!(above.check().is_err_and(|e| e.contains("max-topic-length")));
    }
}
