//! What one client, one user, one publisher or one request may take.
//!
//! The hub's global bounds (`--max-streams`, `--max-connections`, the body
//! size) keep the process alive; the limits here keep one party from using
//! up what the others share:
//!
//! - [`fields`]: how long ids, event types, topics and user ids may be, and
//!   how many topics one event or one stream may name. The core's
//!   validation (`Draft::validate`, `Interest::validate`) applies them, so
//!   every route refuses the same things the same way.
//! - [`streams`]: how many streams one client address and one user may
//!   hold open at once, counted per stream (HTTP/2 carries many on one
//!   connection).
//! - [`rate`]: how many publish requests one publisher may make per period.
//!
//! Every refusal names its [`Limit`], which is also the `limit` label of
//! `pushwire_limit_rejections_total`: a fixed set, never a user id, topic or
//! address.

pub mod fields;
pub mod rate;
pub mod streams;

use std::time::Duration;

pub use fields::FieldLimits;
pub use rate::{PublishRate, PublishRateLimiter, RateKey};
pub use streams::{StreamLimits, StreamPermit};

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
    IdLength,
    EventTypeLength,
    TopicLength,
    UserIdLength,
    TopicsPerEvent,
    TopicsPerStream,
    UsersPerEvent,
}

impl Limit {
    pub const ALL: [Limit; 13] = [
        Limit::StreamsPerIp,
        Limit::StreamsPerUser,
        Limit::PublishRate,
        Limit::HeaderSize,
        Limit::HeaderReadTimeout,
        Limit::BodySize,
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

/// A stream or a publish refused because its client, user or publisher is
/// over its share. Nothing was opened or stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("this client address holds its maximum of {max} open streams (--max-streams-per-ip)")]
    StreamsPerIp { max: usize, retry_after: Duration },
    #[error("this user holds its maximum of {max} open streams (--max-streams-per-user)")]
    StreamsPerUser { max: usize, retry_after: Duration },
    #[error("this publisher is over its publish rate of {rate} (--publish-rate); retry later")]
    PublishRate {
        rate: PublishRate,
        retry_after: Duration,
    },
}

impl LimitError {
    pub fn limit(&self) -> Limit {
        match self {
            LimitError::StreamsPerIp { .. } => Limit::StreamsPerIp,
            LimitError::StreamsPerUser { .. } => Limit::StreamsPerUser,
            LimitError::PublishRate { .. } => Limit::PublishRate,
        }
    }

    /// When trying again may succeed.
    pub fn retry_after(&self) -> Duration {
        match self {
            LimitError::StreamsPerIp { retry_after, .. }
            | LimitError::StreamsPerUser { retry_after, .. }
            | LimitError::PublishRate { retry_after, .. } => *retry_after,
        }
    }
}
