//! How many publish requests one publisher may make per period.
//!
//! One bucket per publisher ([`RateKey`]): the static publisher key (every
//! caller holding it shares it), a token's subject, or, for callers without
//! a credential (loopback publishers on an open hub) and tokens without a
//! subject, the TCP peer's address. The buckets are GCRA cells (the
//! `governor` crate): a publisher may send `burst` requests at once, then
//! one per `period / count`. A request counts whether or not it is then
//! accepted, so a publisher cannot probe faster by sending bad requests; a
//! refused request changes nothing.
//!
//! Buckets of publishers that have been quiet long enough to be full again
//! are forgotten from time to time, so memory follows the active publishers.

use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::LimitError;

/// Checks between two sweeps of forgotten buckets.
const SWEEP_EVERY: u64 = 4096;

/// `count` requests per `period`, as `--publish-rate` spells it: `1000/s`,
/// `600/m`, `50/h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishRate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl PublishRate {
    /// The governor quota: `burst` at once (the count when not given), then
    /// one every `period / count`.
    fn quota(self, burst: Option<NonZeroU32>) -> Option<Quota> {
        let every = self.period / self.count.get();
        Some(Quota::with_period(every)?.allow_burst(burst.unwrap_or(self.count)))
    }
}

impl FromStr for PublishRate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a rate like `1000/s`, `600/m` or `50/h`");
        let (count, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: NonZeroU32 = count.trim().parse().map_err(|_| bad())?;
        let period = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        let rate = PublishRate { count, period };
        // Faster than one request per nanosecond cannot be expressed.
        rate.quota(None).ok_or_else(bad)?;
        Ok(rate)
    }
}

impl fmt::Display for PublishRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            60 => "m",
            3600 => "h",
            _ => "s",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl TryFrom<String> for PublishRate {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PublishRate> for String {
    fn from(rate: PublishRate) -> String {
        rate.to_string()
    }
}

impl serde::Serialize for PublishRate {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublishRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Whose bucket a publish request draws from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The static `--publisher-key`.
    PublisherKey,
    /// A publisher token's `sub`.
    Subject(String),
    /// A caller without a credential, or a token without a subject.
    Peer(IpAddr),
}

type Keyed = RateLimiter<RateKey, DefaultKeyedStateStore<RateKey>, DefaultClock>;

/// The publish rate limit; does nothing when off.
pub struct PublishRateLimiter {
    limiter: Option<(Keyed, PublishRate)>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl PublishRateLimiter {
    /// `None` turns the limit off. `burst` defaults to the rate's count.
    pub fn new(rate: Option<PublishRate>, burst: Option<NonZeroU32>) -> PublishRateLimiter {
        let limiter = rate.and_then(|rate| Some((RateLimiter::keyed(rate.quota(burst)?), rate)));
        PublishRateLimiter {
            limiter,
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Draws one request from `key`'s bucket; refused when it is empty,
    /// with the time after which the next request will be accepted.
    pub fn check(&self, key: &RateKey) -> Result<(), LimitError> {
        let Some((limiter, rate)) = &self.limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(key)
            .map_err(|not_until| LimitError::PublishRate {
                rate: *rate,
                retry_after: not_until.wait_time_from(self.clock.now()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print_back() {
        for text in ["1000/s", "600/m", "50/h"] {
            let rate: PublishRate = text.parse().unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(rate.to_string(), text);
        }
        for bad in [
            "",
            "10",
            "0/s",
            "-1/s",
            "1.5/s",
            "10/d",
            "x/s",
            "99999999999/s",
        ] {
            assert!(bad.parse::<PublishRate>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let rate: PublishRate = "3/h".parse().unwrap_or_else(|e| panic!("{e}"));
        let limiter = PublishRateLimiter::new(Some(rate), None);
        let alice = RateKey::Subject("alice".into());
        for _ in 0..3 {
            assert_eq!(limiter.check(&alice), Ok(()));
        }
        let refused = limiter.check(&alice);
        assert!(
            matches!(refused, Err(LimitError::PublishRate { retry_after, .. })
                if retry_after > Duration::from_secs(1000)),
            "{refused:?}"
        );
        assert_eq!(
            limiter.check(&RateKey::PublisherKey),
            Ok(()),
            "other keys keep theirs"
        );
    }

    #[test]
    fn burst_overrides_the_count() {
        let rate: PublishRate = "100/h".parse().unwrap_or_else(|e| panic!("{e}"));
        let limiter = PublishRateLimiter::new(Some(rate), NonZeroU32::new(2));
        let key = RateKey::Peer(IpAddr::from([127, 0, 0, 1]));
        assert!(limiter.check(&key).is_ok() && limiter.check(&key).is_ok());
        assert!(limiter.check(&key).is_err());
    }

    #[test]
    fn off_never_refuses() {
        let limiter = PublishRateLimiter::new(None, None);
        assert!((0..10_000).all(|_| limiter.check(&RateKey::PublisherKey).is_ok()));
    }
}
