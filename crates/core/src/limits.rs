//! Which limits exist ([`Limit`], the bounded label of the rejections
//! metric) and the field limits the core applies: how long names may be and
//! how many topics one event or stream may name.
//!
//! Every field here reaches the wire, the index or the history, so its size
//! is memory and bandwidth spent on every delivery and every replay. The
//! configured values may only tighten the ceilings the code is built for
//! (the topic ceiling, for instance, bounds the URI-template matcher's
//! regexes); the configuration refuses larger ones.

/// Ceiling of `--max-id-length`, in bytes. Ids travel in every frame.
pub const MAX_ID_LEN: usize = 256;

/// Ceiling of `--max-event-type-length`, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 256;

/// Ceiling of `--max-user-id-length`, in bytes.
pub const MAX_USER_ID_LEN: usize = 256;

/// Ceiling of `--max-topic-length`, in bytes: the URI-template matcher is
/// built to be exact up to it.
pub const MAX_TOPIC_LEN: usize = 2048;

/// One kind of limit: a label value of the rejections metric and the
/// option an operator would change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    StreamsPerIp,
    StreamsPerUser,
    PublishRate,
    HeaderSize,
    HeaderReadTimeout,
    BodySize,
    InflightBody,
    IdLength,
    EventTypeLength,
    TopicLength,
    UserIdLength,
    TopicsPerEvent,
    TopicsPerStream,
    UsersPerEvent,
}

impl Limit {
    pub const ALL: [Limit; 14] = [
        Limit::StreamsPerIp,
        Limit::StreamsPerUser,
        Limit::PublishRate,
        Limit::HeaderSize,
        Limit::HeaderReadTimeout,
        Limit::BodySize,
        Limit::InflightBody,
        Limit::IdLength,
        Limit::EventTypeLength,
        Limit::TopicLength,
        Limit::UserIdLength,
        Limit::TopicsPerEvent,
        Limit::TopicsPerStream,
        Limit::UsersPerEvent,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Limit::StreamsPerIp => "streams_per_ip",
            Limit::StreamsPerUser => "streams_per_user",
            Limit::PublishRate => "publish_rate",
            Limit::HeaderSize => "header_size",
            Limit::HeaderReadTimeout => "header_read_timeout",
            Limit::BodySize => "body_size",
            Limit::InflightBody => "inflight_body",
            Limit::IdLength => "id_length",
            Limit::EventTypeLength => "event_type_length",
            Limit::TopicLength => "topic_length",
            Limit::UserIdLength => "user_id_length",
            Limit::TopicsPerEvent => "topics_per_event",
            Limit::TopicsPerStream => "topics_per_stream",
            Limit::UsersPerEvent => "users_per_event",
        }
    }

    /// Where the limit is set, for messages that tell a client (or its
    /// operator) what it ran into.
    pub fn option(self) -> &'static str {
        match self {
            Limit::StreamsPerIp => "--max-streams-per-ip",
            Limit::StreamsPerUser => "--max-streams-per-user",
            Limit::PublishRate => "--publish-rate",
            Limit::HeaderSize => "--max-header-bytes",
            Limit::HeaderReadTimeout => "--header-read-timeout",
            Limit::BodySize => "--max-body",
            Limit::InflightBody => "--max-inflight-body",
            Limit::IdLength => "--max-id-length",
            Limit::EventTypeLength => "--max-event-type-length",
            Limit::TopicLength => "--max-topic-length",
            Limit::UserIdLength => "--max-user-id-length",
            Limit::TopicsPerEvent => "--max-topics-per-event",
            Limit::TopicsPerStream => "--max-topics-per-stream",
            Limit::UsersPerEvent => "a fixed limit",
        }
    }
}

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
