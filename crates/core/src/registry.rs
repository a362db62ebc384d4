//! The registry of open streams: who listens to what, indexed so that an
//! event reaches its streams without scanning every one.
//!
//! Lookups go by index: user → streams, exact topic → streams, each distinct
//! selector (template, pattern) → streams, `*` → streams, prefix → an
//! ordered range of users; only a broadcast visits every stream.
//!
//! Locking: the index sits behind one mutex, held only for in-memory work
//! (index updates and lookups), never across an await or a socket write.
//! [`Registry::deliver`] looks the receivers of a batch up under the lock,
//! then releases it before it pushes into their outboxes and wakes their
//! tasks, so opening and closing streams never waits behind a fanout.
//!
//! Order: the history engine calls `deliver` for one batch at a time, in
//! sequence order (the [`Fanout`] contract), so streams see events in history
//! order even though pushes happen outside the lock. A stream that registers
//! after a batch was looked up did so after the batch was stored, and reads
//! it from the history instead (register, then read).

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::announce::Subscriber;
use crate::event::{Event, Target};
use crate::log::Fanout;
use crate::metrics::Metrics;
use crate::outbox::{End, Outbox};
use crate::route::{Interest, MatchCache, Selector};
use crate::seen::Seen;

/// (selector, topic) answers the fanout remembers: template and pattern
/// matches cost a regex run, and every event of a topic asks again.
const MATCH_CACHE_CAPACITY: usize = 65_536;

/// Why a stream could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The hub is shutting down.
    Closing,
    /// The hub holds its maximum of streams.
    Full { max: usize },
}

/// Online users and how many streams each has open.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct UserStreams {
    pub id: String,
    pub streams: usize,
}

/// Exact topics streams subscribe to, and how many streams each: what
/// `/api/v1/topics` lists. Selectors (Mercure's `*`, templates, URL patterns) are
/// not topics and are not counted here.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct TopicStreams {
    pub topic: String,
    pub streams: usize,
}

/// How many streams, users and exact topics are open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub streams: usize,
    pub users: usize,
    pub topics: usize,
}

/// Names (users or topics) with how many streams each has open.
pub type Shares = Vec<(Arc<str>, usize)>;

/// The index of open streams.
pub struct Registry {
    index: Mutex<Index>,
    metrics: Arc<Metrics>,
    queue_capacity: usize,
    max_streams: usize,
    /// Where ended streams with a subscriber go to be announced.
    departed: Option<mpsc::UnboundedSender<Arc<Subscriber>>>,
}

struct Index {
    /// Set at shutdown: no new streams.
    closing: bool,
    next_id: u64,
    streams: HashMap<u64, Entry>,
    users: BTreeMap<Arc<str>, Vec<u64>>,
    /// Streams by exact topic.
    topics: HashMap<Arc<str>, Vec<u64>>,
    /// Streams by topic selector (templates, patterns): each distinct
    /// selector is matched once per event topic, whatever its stream count.
    selectors: HashMap<Selector, Vec<u64>>,
    /// Streams listening to every topic (`*`).
    any_topic: Vec<u64>,
    cache: MatchCache,
}

impl Default for Index {
    fn default() -> Index {
        Index {
            closing: false,
            next_id: 0,
            streams: HashMap::new(),
            users: BTreeMap::new(),
            topics: HashMap::new(),
            selectors: HashMap::new(),
            any_topic: Vec::new(),
            cache: MatchCache::new(MATCH_CACHE_CAPACITY),
        }
    }
}

struct Entry {
    outbox: Arc<Outbox>,
    interest: Arc<Interest>,
    subscriber: Option<Arc<Subscriber>>,
}

/// A stream's place in the registry; dropping it removes the stream.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// One push the fanout makes once the index lock is released.
struct Push {
    id: u64,
    outbox: Arc<Outbox>,
    seen: Seen,
    frame: Bytes,
}

impl Registry {
    /// An empty registry. Streams get queues of `queue_capacity` frames, at
    /// most `max_streams` are open at once, and with `departed` every
    /// removed stream that announced a subscriber is sent there.
    pub fn new(
        metrics: Arc<Metrics>,
        queue_capacity: usize,
        max_streams: usize,
        departed: Option<mpsc::UnboundedSender<Arc<Subscriber>>>,
    ) -> Registry {
        Registry {
            index: Mutex::new(Index::default()),
            metrics,
            queue_capacity,
            max_streams,
            departed,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        // Every index update is done before anything can panic: recover it.
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a stream; it receives every event delivered from now on that
    /// its interest receives, until the [`Registration`] is dropped.
    pub fn register(
        self: &Arc<Self>,
        interest: Arc<Interest>,
        subscriber: Option<Arc<Subscriber>>,
    ) -> Result<(Registration, Arc<Outbox>), Refusal> {
        let outbox = Arc::new(Outbox::new(self.queue_capacity));
        let mut index = self.lock();
        if index.closing {
            return Err(Refusal::Closing);
        }
        if index.streams.len() >= self.max_streams {
            self.metrics.streams_refused.inc();
            return Err(Refusal::Full {
                max: self.max_streams,
            });
        }
        index.next_id += 1;
        let id = index.next_id;
        if let Some(user) = &interest.user {
            index
                .users
                .entry(user.as_str().into())
                .or_default()
                .push(id);
        }
        for topic in &interest.topics {
            push_once(index.topics.entry(topic.as_str().into()).or_default(), id);
        }
        for selector in &interest.selectors {
            let ids = if selector.is_any() {
                &mut index.any_topic
            } else {
                index.selectors.entry(selector.clone()).or_default()
            };
            push_once(ids, id);
        }
        index.streams.insert(
            id,
            Entry {
                outbox: outbox.clone(),
                interest,
                subscriber,
            },
        );
        self.metrics.streams_opened.inc();
        self.update_gauges(&index);
        drop(index);
        let registration = Registration {
            registry: self.clone(),
            id,
        };
        Ok((registration, outbox))
    }

    fn update_gauges(&self, index: &Index) {
        self.metrics.streams_open.set(index.streams.len() as i64);
        self.metrics.users_online.set(index.users.len() as i64);
    }

    /// Announces the departure of removed streams' subscribers.
    fn departed(&self, gone: Vec<Entry>) {
        let Some(tx) = &self.departed else { return };
        for subscriber in gone.into_iter().filter_map(|e| e.subscriber) {
            // The receiver lives as long as the hub; a send can only fail
            // while the hub is being dropped, when nobody listens anyway.
            let _ = tx.send(subscriber);
        }
    }

    fn remove(&self, id: u64) {
        let mut index = self.lock();
        if let Some(entry) = index.remove(id) {
            self.update_gauges(&index);
            drop(index);
            self.departed(vec![entry]);
        }
    }

    /// Ends every stream of a user; returns how many were open.
    pub fn close_user(&self, user: &str) -> usize {
        let mut index = self.lock();
        let ids = index.users.get(user).cloned().unwrap_or_default();
        let gone: Vec<Entry> = ids.iter().filter_map(|&id| index.remove(id)).collect();
        self.update_gauges(&index);
        drop(index);
        for entry in &gone {
            entry.outbox.end(End::Closed);
        }
        self.departed(gone);
        ids.len()
    }

    /// Ends and removes every stream; new ones may open at once.
    pub fn end_every_stream(&self, why: End) -> usize {
        let mut index = self.lock();
        let ids: Vec<u64> = index.streams.keys().copied().collect();
        let gone: Vec<Entry> = ids.into_iter().filter_map(|id| index.remove(id)).collect();
        self.update_gauges(&index);
        drop(index);
        for entry in &gone {
            entry.outbox.end(why);
        }
        let count = gone.len();
        self.departed(gone);
        count
    }

    /// Ends every stream and refuses new ones (shutdown).
    pub fn end_all(&self, why: End) {
        let mut index = self.lock();
        let gone = std::mem::take(&mut index.streams);
        *index = Index {
            closing: true,
            next_id: index.next_id,
            ..Index::default()
        };
        self.update_gauges(&index);
        drop(index);
        for entry in gone.values() {
            entry.outbox.end(why);
        }
    }

    /// Queues a heartbeat on every idle stream.
    pub fn heartbeat(&self, frame: &Bytes) {
        let outboxes: Vec<Arc<Outbox>> = {
            let index = self.lock();
            index.streams.values().map(|e| e.outbox.clone()).collect()
        };
        for outbox in outboxes {
            outbox.push_heartbeat(frame);
        }
    }

    /// Open streams that announced a subscriber, oldest first.
    pub fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        let index = self.lock();
        let mut found: Vec<(u64, Arc<Subscriber>)> = index
            .streams
            .iter()
            .filter_map(|(&id, e)| Some((id, e.subscriber.clone()?)))
            .collect();
        drop(index);
        found.sort_unstable_by_key(|(id, _)| *id);
        found.into_iter().map(|(_, s)| s).collect()
    }

    pub fn counts(&self) -> Counts {
        let index = self.lock();
        Counts {
            streams: index.streams.len(),
            users: index.users.len(),
            topics: index.topics.len(),
        }
    }

    /// Of `users`, those with no open stream here (in the order given).
    pub fn without_streams<'a>(&self, users: &'a [String]) -> Vec<&'a str> {
        let index = self.lock();
        users
            .iter()
            .filter(|user| !index.users.contains_key(user.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// Online users with their open streams, sorted by id.
    pub fn users(&self) -> Vec<UserStreams> {
        self.lock()
            .users
            .iter()
            .map(|(id, streams)| UserStreams {
                id: id.to_string(),
                streams: streams.len(),
            })
            .collect()
    }

    /// Exact topics with open streams, sorted by name.
    pub fn topics(&self) -> Vec<TopicStreams> {
        let mut topics: Vec<TopicStreams> = self
            .lock()
            .topics
            .iter()
            .map(|(topic, streams)| TopicStreams {
                topic: topic.to_string(),
                streams: streams.len(),
            })
            .collect();
        // Sorted outside the lock: the index holds topics in a hash map.
        topics.sort_unstable_by(|a, b| a.topic.cmp(&b.topic));
        topics
    }

    /// Users and exact topics with how many streams each has open.
    pub fn shares(&self) -> (Shares, Shares) {
        let index = self.lock();
        let users = index
            .users
            .iter()
            .map(|(u, ids)| (u.clone(), ids.len()))
            .collect();
        let topics = index
            .topics
            .iter()
            .map(|(t, ids)| (t.clone(), ids.len()))
            .collect();
        (users, topics)
    }

    /// Under the lock: the pushes one batch makes, in event order, each
    /// stream at most once per event.
    fn receivers(&self, events: &[Arc<Event>]) -> Vec<Push> {
        let mut index = self.lock();
        let Index {
            streams,
            users,
            topics,
            selectors,
            any_topic,
            cache,
            ..
        } = &mut *index;
        let mut pushes = Vec::new();
        let mut push = |id: u64, event: &Event, cache: &mut MatchCache| {
            if let Some(entry) = streams.get(&id) {
                if entry
                    .interest
                    .may_read_with(event, |s, t| cache.matches(s, t))
                {
                    pushes.push(Push {
                        id,
                        outbox: entry.outbox.clone(),
                        seen: Seen::of(event),
                        frame: event.frame().clone(),
                    });
                }
            }
        };
        for event in events {
            match &event.target {
                Target::Users(names) => {
                    for name in names {
                        for &id in users.get(name.as_str()).into_iter().flatten() {
                            push(id, event, cache);
                        }
                    }
                }
                Target::UserPrefix(prefix) => {
                    let range = users
                        .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                        .take_while(|(user, _)| user.starts_with(prefix.as_str()));
                    for (_, ids) in range {
                        for &id in ids {
                            push(id, event, cache);
                        }
                    }
                }
                Target::Topics(names)
                    if names.len() == 1 && selectors.is_empty() && any_topic.is_empty() =>
                {
                    for &id in topics.get(names[0].as_str()).into_iter().flatten() {
                        push(id, event, cache);
                    }
                }
                Target::Topics(names) => {
                    // A stream reached through several topics or selectors
                    // gets the event once.
                    let mut ids: Vec<u64> = names
                        .iter()
                        .flat_map(|t| topics.get(t.as_str()).into_iter().flatten())
                        .chain(any_topic.iter())
                        .copied()
                        .collect();
                    for (selector, streams) in selectors.iter() {
                        if names.iter().any(|t| cache.matches(selector, t)) {
                            ids.extend(streams);
                        }
                    }
                    ids.sort_unstable();
                    ids.dedup();
                    for id in ids {
                        push(id, event, cache);
                    }
                }
                Target::All => {
                    for (&id, entry) in streams.iter() {
                        if entry.interest.broadcasts {
                            push(id, event, cache);
                        }
                    }
                }
            }
        }
        pushes
    }
}

fn push_once(ids: &mut Vec<u64>, id: u64) {
    if ids.last() != Some(&id) {
        ids.push(id);
    }
}

impl Fanout for Registry {
    fn resync(&self) {
        let ended = self.end_every_stream(End::Resync);
        if ended > 0 {
            tracing::warn!(ended, "ended local streams: they resume from the history");
        }
    }

    fn close_user(&self, user: &str) -> usize {
        Registry::close_user(self, user)
    }

    fn deliver(&self, events: &[Arc<Event>]) {
        let pushes = self.receivers(events);
        let mut delivered = 0u64;
        let mut slow = Vec::new();
        for push in pushes {
            match push.outbox.push(push.seen, push.frame) {
                Ok(()) => delivered += 1,
                Err(_) => slow.push(push.id),
            }
        }
        self.metrics.deliveries.inc_by(delivered);
        if let Some(first) = events.first() {
            // The macro checks the level before it reads a field.
            tracing::debug!(
                first_id = %first.id,
                events = events.len(),
                deliveries = delivered,
                slow_consumers = slow.len(),
                "delivered"
            );
        }
        if !slow.is_empty() {
            self.metrics.slow_consumer_closes.inc_by(slow.len() as u64);
            let mut index = self.lock();
            let gone: Vec<Entry> = slow.into_iter().filter_map(|id| index.remove(id)).collect();
            self.update_gauges(&index);
            drop(index);
            self.departed(gone);
        }
    }
}

impl Index {
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.streams.remove(&id)?;
        if let Some(user) = &entry.interest.user {
            remove_from(&mut self.users, user.as_str(), id);
        }
        for topic in &entry.interest.topics {
            if let Some(ids) = self.topics.get_mut(topic.as_str()) {
                ids.retain(|&x| x != id);
                if ids.is_empty() {
                    self.topics.remove(topic.as_str());
                }
            }
        }
        for selector in &entry.interest.selectors {
            if selector.is_any() {
                self.any_topic.retain(|&x| x != id);
            } else if let Some(ids) = self.selectors.get_mut(selector) {
                ids.retain(|&x| x != id);
                if ids.is_empty() {
                    self.selectors.remove(selector);
                }
            }
        }
        Some(entry)
    }
}

fn remove_from(map: &mut BTreeMap<Arc<str>, Vec<u64>>, key: &str, id: u64) {
    if let Some(ids) = map.get_mut(key) {
        ids.retain(|&x| x != id);
        if ids.is_empty() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::task::{Context, Poll};

    use proptest::prelude::*;

    use super::*;
    use crate::event::Draft;
    use crate::route::MatchKind;

    fn registry(queue: usize, max: usize) -> Arc<Registry> {
        Arc::new(Registry::new(Arc::new(Metrics::new()), queue, max, None))
    }

    fn event(seq: u64, draft: Draft) -> Arc<Event> {
        Arc::new(Event::new(seq, draft, 0))
    }

    /// Sequence numbers queued in an outbox, in order (heartbeats as 0).
    fn queued(outbox: &Outbox) -> Vec<u64> {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut seqs = Vec::new();
        while let Poll::Ready(Some((_, frame))) = outbox.poll_pop(&mut cx, 0) {
            let text = String::from_utf8_lossy(&frame).into_owned();
            let seq = text
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .and_then(crate::event::hub_sequence)
                .unwrap_or(0);
            seqs.push(seq);
        }
        seqs
    }

    #[test]
    fn two_tabs_of_one_user_both_receive() {
        let registry = registry(8, 10);
        let (_a, first) = registry
            .register(Arc::new(Interest::user("alice")), None)
            .unwrap();
        let (_b, second) = registry
            .register(Arc::new(Interest::user("alice")), None)
            .unwrap();
        registry.deliver(&[event(1, Draft::new(Target::user("alice"), "hi"))]);
        assert_eq!(queued(&first), vec![1]);
        assert_eq!(queued(&second), vec![1]);
        assert_eq!(registry.users()[0].streams, 2);
    }

    #[test]
    fn a_group_reaches_exactly_the_users_under_its_prefix() {
        let registry = registry(8, 10);
        let streams: Vec<_> = ["team-7/a", "team-7/b", "team-70", "team-8/a"]
            .iter()
            .map(|u| {
                registry
                    .register(Arc::new(Interest::user(*u)), None)
                    .unwrap()
            })
            .collect();
        registry.deliver(&[event(
            1,
            Draft::new(Target::UserPrefix("team-7/".into()), "standup"),
        )]);
        let got: Vec<Vec<u64>> = streams.iter().map(|(_, o)| queued(o)).collect();
        assert_eq!(got, vec![vec![1], vec![1], vec![], vec![]]);
    }

    #[test]
    fn a_dropped_registration_leaves_the_index_at_once() {
        let registry = registry(8, 10);
        let (registration, _) = registry
            .register(
                Arc::new(Interest::new(Some("u".into()), vec!["t".into()])),
                None,
            )
            .unwrap();
        assert_eq!(
            registry.counts(),
            Counts {
                streams: 1,
                users: 1,
                topics: 1
            }
        );
        drop(registration);
        assert_eq!(registry.counts(), Counts::default());
    }

    #[test]
    fn topics_are_listed_by_name_with_their_open_streams() {
        let registry = registry(8, 10);
        let both = Interest::new(None, vec!["news".into(), "alerts".into()]);
        let (_both, _) = registry.register(Arc::new(both), None).unwrap();
        let (news, _) = registry
            .register(Arc::new(Interest::new(None, vec!["news".into()])), None)
            .unwrap();
        let (_user, _) = registry
            .register(Arc::new(Interest::user("u")), None)
            .unwrap();
        let listed = |r: &Registry| -> Vec<(String, usize)> {
            r.topics()
                .into_iter()
                .map(|t| (t.topic, t.streams))
                .collect()
        };
        assert_eq!(
            listed(&registry),
            [("alerts".to_owned(), 1), ("news".to_owned(), 2)]
        );
        drop(news);
        assert_eq!(
            listed(&registry),
            [("alerts".to_owned(), 1), ("news".to_owned(), 1)]
        );
    }

    #[test]
    fn the_stream_cap_refuses_and_a_closed_place_comes_back() {
        let registry = registry(8, 1);
        let first = registry.register(Arc::new(Interest::user("a")), None);
        assert!(first.is_ok());
        assert_eq!(
            registry.register(Arc::new(Interest::user("b")), None).err(),
            Some(Refusal::Full { max: 1 })
        );
        drop(first);
        assert!(registry
            .register(Arc::new(Interest::user("b")), None)
            .is_ok());
    }

    #[test]
    fn a_slow_consumer_is_cut_and_removed_without_touching_the_others() {
        let registry = registry(2, 10);
        let (_slow, slow) = registry
            .register(Arc::new(Interest::user("u")), None)
            .unwrap();
        let (_fast, fast) = registry
            .register(Arc::new(Interest::user("v")), None)
            .unwrap();
        for seq in 1..=3 {
            registry.deliver(&[event(seq, Draft::new(Target::user("u"), "x"))]);
            registry.deliver(&[event(seq + 10, Draft::new(Target::user("v"), "y"))]);
            queued(&fast);
        }
        assert_eq!(slow.ended(), Some(End::SlowConsumer));
        assert_eq!(fast.ended(), None);
        assert_eq!(registry.counts().streams, 1);
        assert_eq!(registry.users()[0].id, "v");
    }

    #[test]
    fn closing_a_user_ends_only_their_streams() {
        let registry = registry(8, 10);
        let (_a, alice) = registry
            .register(Arc::new(Interest::user("alice")), None)
            .unwrap();
        let (_b, bob) = registry
            .register(Arc::new(Interest::user("bob")), None)
            .unwrap();
        assert_eq!(registry.close_user("alice"), 1);
        assert_eq!(alice.ended(), Some(End::Closed));
        assert_eq!(bob.ended(), None);
        assert_eq!(registry.close_user("nobody"), 0);
    }

    #[test]
    fn after_shutdown_no_stream_opens() {
        let registry = registry(8, 10);
        let (_a, open) = registry
            .register(Arc::new(Interest::user("a")), None)
            .unwrap();
        registry.end_all(End::Shutdown);
        assert_eq!(open.ended(), Some(End::Shutdown));
        assert_eq!(
            registry.register(Arc::new(Interest::user("b")), None).err(),
            Some(Refusal::Closing)
        );
    }

    #[test]
    fn heartbeats_go_only_to_idle_streams() {
        let registry = registry(8, 10);
        let (_a, idle) = registry
            .register(Arc::new(Interest::user("a")), None)
            .unwrap();
        let (_b, busy) = registry
            .register(Arc::new(Interest::user("b")), None)
            .unwrap();
        registry.deliver(&[event(1, Draft::new(Target::user("b"), "x"))]);
        registry.heartbeat(&Bytes::from_static(b":\n\n"));
        assert_eq!(queued(&idle), vec![0]);
        assert_eq!(queued(&busy), vec![1]);
    }

    // The index and `Interest::receives` (the rule replay uses) must agree:
    // for any set of streams and any batch, `deliver` reaches exactly the
    // streams whose interest receives each event, once, in order.

    const USERS: [&str; 4] = ["a", "ab", "b", "team/x"];
    const TOPICS: [&str; 4] = [
        "https://example.com/books/1",
        "https://example.com/books/2",
        "news",
        "https://example.com/authors/1",
    ];
    const SELECTORS: [(MatchKind, &str); 4] = [
        (MatchKind::UriTemplate, "https://example.com/books/{id}"),
        (MatchKind::UrlPattern, "https://example.com/:kind/1"),
        (MatchKind::Exact, "*"),
        (MatchKind::Exact, "news"),
    ];

    fn selector(i: usize) -> Selector {
        let (kind, text) = SELECTORS[i];
        Selector::parse(kind, text, "https://example.com/.well-known/mercure").unwrap()
    }

    fn arb_interest() -> impl Strategy<Value = Interest> {
        (
            proptest::option::of(0..USERS.len()),
            proptest::collection::vec(0..TOPICS.len(), 0..3),
            proptest::collection::vec(0..SELECTORS.len(), 0..3),
            any::<bool>(),
            proptest::collection::vec(0..SELECTORS.len(), 0..2),
        )
            .prop_map(|(user, topics, selectors, broadcasts, readable)| Interest {
                user: user.map(|u| USERS[u].to_owned()),
                topics: topics.into_iter().map(|t| TOPICS[t].to_owned()).collect(),
                selectors: selectors.into_iter().map(selector).collect(),
                broadcasts,
                readable: readable.into_iter().map(selector).collect(),
            })
    }

    fn arb_draft() -> impl Strategy<Value = Draft> {
        let target = prop_oneof![
            proptest::collection::vec(0..USERS.len(), 1..3)
                .prop_map(|u| Target::Users(u.into_iter().map(|i| USERS[i].to_owned()).collect())),
            prop_oneof![Just("a"), Just("t"), Just("team/"), Just("")]
                .prop_filter("a prefix is never empty", |p| !p.is_empty())
                .prop_map(|p| Target::UserPrefix(p.to_owned())),
            proptest::collection::vec(0..TOPICS.len(), 1..3).prop_map(|t| {
                Target::Topics(t.into_iter().map(|i| TOPICS[i].to_owned()).collect())
            }),
            Just(Target::All),
        ];
        (target, any::<bool>()).prop_map(|(mut target, private)| {
            target.normalize();
            let private = private && matches!(target, Target::Topics(_));
            Draft {
                private,
                ..Draft::new(target, "x")
            }
        })
    }

    proptest! {
        #[test]
        fn deliver_reaches_exactly_the_streams_that_receive_each_event(
            interests in proptest::collection::vec(arb_interest(), 1..8),
            drafts in proptest::collection::vec(arb_draft(), 1..8),
        ) {
            let registry = registry(64, 64);
            let streams: Vec<_> = interests
                .into_iter()
                .map(|i| {
                    let interest = Arc::new(i);
                    let (registration, outbox) = registry.register(interest.clone(), None).unwrap();
                    (registration, outbox, interest)
                })
                .collect();
            let events: Vec<Arc<Event>> = drafts
                .into_iter()
                .enumerate()
                .map(|(i, d)| event(i as u64 + 1, d))
                .collect();
            // Half as one batch, half one by one: both paths must agree.
            let (batch, single) = events.split_at(events.len() / 2);
            registry.deliver(batch);
            for e in single {
                registry.deliver(std::slice::from_ref(e));
            }
            for (_, outbox, interest) in &streams {
                let want: Vec<u64> = events
                    .iter()
                    .filter(|e| interest.receives(e))
                    .map(|e| e.seq)
                    .collect();
                prop_assert_eq!(queued(outbox), want, "interest {:?}", interest);
            }
        }
    }
}
