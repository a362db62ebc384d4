//! What one client, one user, one publisher or one request may take.
//!
//! The hub's global bounds (`--max-streams`, `--max-connections`, the body
//! size) keep the process alive; the limits here keep one party from using
//! up what the others share:
//!
//! - `pushwire_core::limits`: how long ids, event types, topics and user ids may be, and
//!   how many topics one event or one stream may name. The core's
//!   validation (`Draft::validate`, `Interest::validate`) applies them, so
//!   every route refuses the same things the same way.
//! - [`streams`]: how many streams one client address and one user may
//!   hold open at once, counted per stream (HTTP/2 carries many on one
//!   connection).
//! - [`rate`]: how many publish requests one publisher may make per period.
//! - [`bodies`]: how many request body bytes all requests may hold at once
//!   while they are read.
//!
//! Every refusal names its [`Limit`], which is also the `limit` label of
//! `pushwire_limit_rejections_total`: a fixed set, never a user id, topic or
//! address.

pub mod bodies;
pub mod rate;
pub mod streams;

use std::time::Duration;

pub use bodies::{BodyBudget, BodyReservation};
pub use pushwire_core::limits::{FieldLimits, Limit};
pub use rate::{PublishRate, PublishRateLimiter, RateKey};
pub use streams::{StreamLimits, StreamPermit};

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
