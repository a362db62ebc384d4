//! How many streams one client address and one user may hold open.
//!
//! A [`StreamPermit`] is taken before a stream is opened and travels with
//! its response body (`http::streams::StreamBody`); whenever the body is dropped (the client
//! left, the hub closed the stream, the connection broke) the permit gives
//! its place back. Counting streams rather than connections is what makes
//! the limits hold over HTTP/2, where one connection carries many streams.
//!
//! The client address is the TCP peer's: a forwarding header can be
//! written by anyone, so it never decides whose share a stream uses.
//! Behind a reverse proxy every stream comes from the proxy's address; set
//! the per-address limit with that in mind, or leave it off.
//!
//! Invariant: a key's count equals the number of live permits for it, and a
//! key whose count falls to zero is removed, so memory follows the open
//! streams and not every address ever seen. With a limit off nothing is
//! counted at all.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::LimitError;

/// Streams held per key, at most `max` each.
#[derive(Debug)]
struct Counts<K> {
    max: usize,
    held: Mutex<HashMap<K, usize>>,
}

impl<K: Hash + Eq> Counts<K> {
    fn new(max: usize) -> Arc<Counts<K>> {
        Arc::new(Counts {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        // Counts are updated in one statement: a panic cannot leave one half-done.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one place for `key`, unless it holds `max` already.
    fn take(&self, key: K) -> bool {
        let mut held = self.lock();
        let count = held.entry(key).or_insert(0);
        if *count >= self.max {
            return false;
        }
        *count += 1;
        true
    }

    fn give_back(&self, key: &K) {
        let mut held = self.lock();
        if let Some(count) = held.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(key);
            }
        }
    }

    fn count(&self, key: &K) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }
}

/// The per-address and per-user stream limits; either may be off.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    per_ip: Option<Arc<Counts<IpAddr>>>,
    per_user: Option<Arc<Counts<Box<str>>>>,
    /// What a refused client is told to wait (the `Retry-After` header).
    retry_after: Duration,
}

impl StreamLimits {
    /// `None` turns a limit off.
    pub fn new(
        per_ip: Option<usize>,
        per_user: Option<usize>,
        retry_after: Duration,
    ) -> StreamLimits {
        StreamLimits {
            per_ip: per_ip.map(Counts::new),
            per_user: per_user.map(Counts::new),
            retry_after,
        }
    }

    /// A place for one more stream from `ip`, of `user` if it is a user's
    /// stream. Refused when either is at its limit; then nothing is held.
    pub fn acquire(&self, ip: IpAddr, user: Option<&str>) -> Result<StreamPermit, LimitError> {
        let mut permit = StreamPermit::default();
        if let Some(counts) = &self.per_ip {
            // An IPv4 client reaching a dual-stack socket is still one client.
            let ip = ip.to_canonical();
            if !counts.take(ip) {
                return Err(LimitError::StreamsPerIp {
                    max: counts.max,
                    retry_after: self.retry_after,
                });
            }
            permit.ip = Some((counts.clone(), ip));
        }
        if let (Some(counts), Some(user)) = (&self.per_user, user) {
            let user: Box<str> = user.into();
            if !counts.take(user.clone()) {
                // Dropping `permit` gives the address's place back.
                return Err(LimitError::StreamsPerUser {
                    max: counts.max,
                    retry_after: self.retry_after,
                });
            }
            permit.user = Some((counts.clone(), user));
        }
        Ok(permit)
    }

    /// Streams `ip` holds, as counted (0 when the limit is off).
    pub fn streams_of_ip(&self, ip: IpAddr) -> usize {
        self.per_ip
            .as_ref()
            .map_or(0, |c| c.count(&ip.to_canonical()))
    }
}

/// A place taken under one key, and the counts to give it back to.
type Place<K> = (Arc<Counts<K>>, K);

/// One stream's place under the limits; given back when dropped.
#[derive(Debug, Default)]
pub struct StreamPermit {
    ip: Option<Place<IpAddr>>,
    user: Option<Place<Box<str>>>,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some((counts, ip)) = &self.ip {
            counts.give_back(ip);
        }
        if let Some((counts, user)) = &self.user {
            counts.give_back(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(3);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_address_gets_exactly_its_share_and_it_comes_back() {
        let limits = StreamLimits::new(Some(2), None, WAIT);
        let a = limits.acquire(ip(1), None);
        let b = limits.acquire(ip(1), None);
        assert!(a.is_ok() && b.is_ok());
        assert!(matches!(
            limits.acquire(ip(1), None),
            Err(LimitError::StreamsPerIp { max: 2, .. })
        ));
        assert!(
            limits.acquire(ip(2), None).is_ok(),
            "another address is not affected"
        );
        drop(a);
        assert_eq!(limits.streams_of_ip(ip(1)), 1);
        assert!(limits.acquire(ip(1), None).is_ok());
    }

    #[test]
    fn a_refused_user_stream_gives_the_address_place_back() {
        let limits = StreamLimits::new(Some(5), Some(1), WAIT);
        let _first = limits.acquire(ip(1), Some("alice"));
        assert!(matches!(
            limits.acquire(ip(1), Some("alice")),
            Err(LimitError::StreamsPerUser { max: 1, .. })
        ));
        assert_eq!(limits.streams_of_ip(ip(1)), 1);
        assert!(limits.acquire(ip(1), Some("bob")).is_ok());
        assert!(
            limits.acquire(ip(1), None).is_ok(),
            "topic streams have no user"
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_the_same_client() {
        let limits = StreamLimits::new(Some(1), None, WAIT);
        let _held = limits.acquire(ip(1), None);
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert!(limits.acquire(mapped, None).is_err());
    }

    #[test]
    fn off_limits_count_nothing() {
        let limits = StreamLimits::new(None, None, WAIT);
        let permits: Vec<_> = (0..100).map(|_| limits.acquire(ip(1), Some("u"))).collect();
        assert!(permits.iter().all(Result::is_ok));
        assert_eq!(limits.streams_of_ip(ip(1)), 0);
    }
}
