//! The hub: the registry of open streams, publishing and fanout. It knows
//! nothing of HTTP.
//!
//! Data path: `publish` validates drafts, the [`EventLog`] stores them and
//! calls [`Registry::deliver`] in sequence order, which pushes each event's
//! shared frame into the outbox of every stream the target reaches.
//!
//! Locking: the registry's index sits behind one mutex that is only ever
//! held for in-memory work (index updates, non-blocking pushes into
//! outboxes), never across an await or a socket write. Lookups go by index:
//! user → streams, topic → streams, prefix → an ordered range of users; only
//! a broadcast visits every stream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cluster::Cluster;
use crate::event::{encode_comment, encode_event, encode_retry, Draft, Event, EventError};
use crate::limits::FieldLimits;
use crate::metrics::Metrics;
use crate::presence::Subscriber;
use crate::route::{Interest, MatchCache, Selector, Target};
use crate::store::{now_ms, Cursor, EventLog, Fanout, StoreError};
use crate::stream::{End, Outbox, Replay, SseBody};

/// (selector, topic) answers the fanout remembers: template and pattern
/// matches cost a regex run, and every event of a topic asks again.
const MATCH_CACHE_CAPACITY: usize = 65_536;

/// How many events one history read fetches while replaying.
const REPLAY_PAGE: usize = 1024;
/// The `Last-Event-ID` value that asks for the whole retained history.
pub const EARLIEST: &str = "earliest";

/// Settings of the core, taken from the configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Frames one stream may have queued before it is cut as a slow consumer.
    pub queue_capacity: usize,
    /// The `retry:` sent at the start of every stream, in milliseconds.
    pub retry_ms: u64,
    /// Most streams open at once; further subscribes are refused.
    pub max_streams: usize,
    /// Streams end after this long (clients reconnect and resume).
    pub stream_lifetime: Option<Duration>,
    /// Announce subscribers as they come and go (see [`crate::presence`]).
    pub presence: bool,
    /// Field lengths and topic counts events and streams are checked against.
    pub limits: FieldLimits,
}

/// How a stream starts, beyond what it listens to.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions<'a> {
    /// Resume after this event id (or `earliest`).
    pub last_event_id: Option<&'a str>,
    /// End the stream after this long at the latest (a token's expiry),
    /// even when the hub's own stream lifetime is longer.
    pub lifetime: Option<Duration>,
    /// On an id the history cannot resume from, send pushwire's `reset`
    /// event. Mercure subscribers learn it from the response header instead.
    pub reset_event: bool,
    /// Who subscribes, for presence announcements and listings.
    pub subscriber: Option<Arc<Subscriber>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Invalid(#[from] EventError),
    #[error("nothing to publish: the batch is empty")]
    EmptyBatch,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error(transparent)]
    Invalid(#[from] EventError),
    #[error("the hub holds its maximum of {0} streams")]
    TooManyStreams(usize),
    #[error("the hub is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A subscribed stream, ready to be sent.
pub struct Subscription {
    pub body: SseBody,
    /// The newest event id in the history when the stream opened.
    pub last_event_id: Option<Arc<str>>,
    /// The client's `Last-Event-ID` could not be resumed from.
    pub reset: bool,
}

/// Online users and how many streams each has open.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UserStreams {
    pub id: String,
    pub streams: usize,
}

/// The hub's counters, as `/api/v1/stats` answers them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub streams: usize,
    pub users: usize,
    pub topics: usize,
    pub events_published: u64,
    pub deliveries: u64,
    pub slow_consumer_closes: u64,
    pub last_event_id: Option<String>,
    pub uptime_seconds: u64,
    /// Live nodes, when the hub is one node of a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nodes: Option<usize>,
}

/// This node's open streams, users and topics, as cluster presence
/// publishes them.
#[derive(Debug, Clone, Default)]
pub struct LocalPresence {
    pub streams: usize,
    /// User → open streams.
    pub users: Vec<(Arc<str>, usize)>,
    /// Exact topic → open streams.
    pub topics: Vec<(Arc<str>, usize)>,
    pub events_published: u64,
    pub deliveries: u64,
    pub slow_consumer_closes: u64,
}

/// Which events a history query returns.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Start after this event id; `None` starts at the oldest retained event.
    pub after: Option<String>,
    pub limit: usize,
    /// Only events this interest would receive.
    pub filter: Option<Interest>,
}

pub struct Hub {
    registry: Arc<Registry>,
    /// Subscribers whose streams ended, to announce (taken by maintenance).
    departures: Mutex<Option<mpsc::UnboundedReceiver<Arc<Subscriber>>>>,
    log: Arc<dyn EventLog>,
    config: HubConfig,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Presence across nodes; `None` on a single node.
    cluster: Option<Arc<Cluster>>,
}

impl Hub {
    /// Builds a hub; `make_log` receives the fanout the log must feed, and
    /// its error (a history that cannot be opened) is the hub's.
    pub fn new<E>(
        config: HubConfig,
        metrics: Arc<Metrics>,
        make_log: impl FnOnce(Arc<dyn Fanout>) -> Result<Arc<dyn EventLog>, E>,
    ) -> Result<Hub, E> {
        let (departed, departures) = mpsc::unbounded_channel();
        let registry = Arc::new(Registry {
            index: Mutex::new(Index::default()),
            metrics: metrics.clone(),
            queue_capacity: config.queue_capacity,
            max_streams: config.max_streams,
            departed: config.presence.then_some(departed),
        });
        let log = make_log(registry.clone())?;
        Ok(Hub {
            registry,
            departures: Mutex::new(Some(departures)),
            log,
            config,
            metrics,
            started: Instant::now(),
            cluster: None,
        })
    }

    /// Makes this hub one node of a cluster: presence and `close` answer
    /// for every node (see [`crate::cluster`]).
    pub fn with_cluster(mut self, cluster: Arc<Cluster>) -> Hub {
        self.cluster = Some(cluster);
        self
    }

    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Validates and stores a batch, then delivers it. All or nothing: one
    /// bad draft refuses the whole batch and nothing is stored.
    pub async fn publish(&self, drafts: Vec<Draft>) -> Result<Vec<Arc<Event>>, PublishError> {
        let result = self.publish_inner(drafts).await;
        if let Err(error) = &result {
            self.metrics.publishes_rejected.inc();
            if let Some(limit) = match error {
                PublishError::Invalid(e) => e.limit(),
                _ => None,
            } {
                self.metrics.limit_rejected(limit);
            }
        }
        result
    }

    async fn publish_inner(&self, mut drafts: Vec<Draft>) -> Result<Vec<Arc<Event>>, PublishError> {
        if drafts.is_empty() {
            return Err(PublishError::EmptyBatch);
        }
        for draft in drafts.iter_mut() {
            draft.target.normalize();
            draft.validate(&self.config.limits)?;
            // Only the hub speaks in its own namespace (presence events).
            if let Target::Topics(topics) = &draft.target {
                if let Some(t) = topics
                    .iter()
                    .find(|t| crate::presence::is_reserved_topic(t))
                {
                    return Err(EventError::ReservedTopic(t.clone()).into());
                }
            }
        }
        let started = Instant::now();
        let events = self.log.append(drafts).await?;
        self.metrics
            .publish_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.events_published.inc_by(events.len() as u64);
        Ok(events)
    }

    /// Opens a stream. With a `last_event_id`, the stream first replays
    /// every retained event after it that the stream would have received,
    /// then continues live with no gap and no duplicate. An id the history
    /// cannot resume from starts the stream live, flagged `reset` (see
    /// docs/history.md).
    pub async fn subscribe(
        &self,
        interest: Interest,
        options: SubscribeOptions<'_>,
    ) -> Result<Subscription, SubscribeError> {
        if let Err(error) = interest.validate(&self.config.limits) {
            if let Some(limit) = error.limit() {
                self.metrics.limit_rejected(limit);
            }
            return Err(error.into());
        }
        let interest = Arc::new(interest);
        // Register before reading the history: every event committed from
        // now on is queued live, everything before is in the history.
        let (registration, outbox) = self
            .registry
            .register(interest.clone(), options.subscriber.clone())?;
        if let Some(subscriber) = options.subscriber.as_ref().filter(|_| self.config.presence) {
            self.log.append(subscriber.announcements(true)).await?;
        }
        let last = self.log.last().await?;
        let mut head = vec![encode_retry(self.config.retry_ms)];
        let mut replay = None;
        let mut skip_through = 0;
        let mut reset = false;
        if let Some(requested) = options.last_event_id {
            let cursor = if requested == EARLIEST {
                Cursor::After(0)
            } else {
                self.log.resolve(requested).await?
            };
            match cursor {
                Cursor::After(seq) => {
                    self.metrics.resumes.inc();
                    skip_through = seq;
                    replay = Some(replay_after(self.log.clone(), seq, interest.clone()));
                }
                Cursor::Unknown => {
                    self.metrics.resets.inc();
                    reset = true;
                    skip_through = last.as_ref().map_or(0, |e| e.seq);
                    if options.reset_event {
                        head.push(reset_frame(requested, last.as_deref()));
                    }
                }
            }
        }
        let lifetime = match (self.config.stream_lifetime, options.lifetime) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let body = SseBody::new(head, replay, skip_through, outbox, registration, lifetime);
        Ok(Subscription {
            body,
            last_event_id: last.map(|e| e.id.clone()),
            reset,
        })
    }

    /// Open streams that announced a subscriber, oldest first.
    pub fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        let index = self.registry.lock();
        let mut found: Vec<(u64, Arc<Subscriber>)> = index
            .streams
            .iter()
            .filter_map(|(&id, e)| Some((id, e.subscriber.clone()?)))
            .collect();
        found.sort_unstable_by_key(|(id, _)| *id);
        found.into_iter().map(|(_, s)| s).collect()
    }

    /// The newest event id in the history.
    pub async fn last_event_id(&self) -> Result<Option<Arc<str>>, StoreError> {
        Ok(self.log.last().await?.map(|e| e.id.clone()))
    }

    /// Ends every stream of a user; returns how many were open.
    pub fn close_user(&self, user: &str) -> usize {
        self.registry.close_user(user)
    }

    /// Ends every stream of a user on every node; returns how many were
    /// open (other nodes' counts come from their presence).
    /// Other nodes are asked first: when Redis cannot take the request,
    /// the call fails and no stream anywhere is closed.
    pub async fn close_user_everywhere(&self, user: &str) -> Result<usize, StoreError> {
        let remote = match &self.cluster {
            Some(cluster) => cluster.close_user(user).await?,
            None => 0,
        };
        Ok(self.registry.close_user(user) + remote)
    }

    /// Online users on every node, sorted by id.
    pub async fn users_everywhere(&self) -> Result<Vec<UserStreams>, StoreError> {
        match &self.cluster {
            Some(cluster) => cluster.users(&self.local_presence()).await,
            None => Ok(self.users()),
        }
    }

    /// Distinct users with at least one open stream on any node.
    pub async fn user_count_everywhere(&self) -> Result<usize, StoreError> {
        match &self.cluster {
            Some(_) => Ok(self.users_everywhere().await?.len()),
            None => Ok(self.user_count()),
        }
    }

    /// The figures of every node together (one node's when alone).
    pub async fn stats_everywhere(&self) -> Result<Stats, StoreError> {
        let local = self.stats().await;
        match &self.cluster {
            Some(cluster) => cluster.stats(&self.local_presence(), local).await,
            None => Ok(local),
        }
    }

    /// This node's share of presence.
    pub fn local_presence(&self) -> LocalPresence {
        let index = self.registry.lock();
        LocalPresence {
            streams: index.streams.len(),
            users: index
                .users
                .iter()
                .map(|(u, ids)| (u.clone(), ids.len()))
                .collect(),
            topics: index
                .topics
                .iter()
                .map(|(t, ids)| (t.clone(), ids.len()))
                .collect(),
            events_published: self.metrics.events_published.get(),
            deliveries: self.metrics.deliveries.get(),
            slow_consumer_closes: self.metrics.slow_consumer_closes.get(),
        }
    }

    /// Distinct users with at least one open stream.
    pub fn user_count(&self) -> usize {
        self.registry.lock().users.len()
    }

    /// Online users, sorted by id.
    pub fn users(&self) -> Vec<UserStreams> {
        self.registry
            .lock()
            .users
            .iter()
            .map(|(id, streams)| UserStreams {
                id: id.to_string(),
                streams: streams.len(),
            })
            .collect()
    }

    pub async fn stats(&self) -> Stats {
        let (streams, users, topics) = {
            let index = self.registry.lock();
            (index.streams.len(), index.users.len(), index.topics.len())
        };
        let last = self.log.last().await.ok().flatten();
        Stats {
            streams,
            users,
            topics,
            events_published: self.metrics.events_published.get(),
            deliveries: self.metrics.deliveries.get(),
            slow_consumer_closes: self.metrics.slow_consumer_closes.get(),
            last_event_id: last.map(|e| e.id.to_string()),
            uptime_seconds: self.started.elapsed().as_secs(),
            nodes: None,
        }
    }

    /// Retained events, oldest first. `Ok(None)` when `after` is not an id
    /// the history can resume from.
    pub async fn history(
        &self,
        query: HistoryQuery,
    ) -> Result<Option<Vec<Arc<Event>>>, StoreError> {
        let mut after = match query.after.as_deref() {
            None => 0,
            Some(id) => match self.log.resolve(id).await? {
                Cursor::After(seq) => seq,
                Cursor::Unknown => return Ok(None),
            },
        };
        let mut out = Vec::new();
        while out.len() < query.limit {
            let page = self.log.read_after(after, REPLAY_PAGE).await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            out.extend(
                page.into_iter()
                    .filter(|e| query.filter.as_ref().is_none_or(|f| e.target.reaches(f)))
                    .take(query.limit - out.len()),
            );
        }
        Ok(Some(out))
    }

    /// Ends every stream (shutdown): clients reconnect, elsewhere or later.
    pub fn end_all_streams(&self) {
        self.registry.end_all(End::Shutdown);
    }

    /// Heartbeats and retention until `stop` is cancelled.
    pub async fn run_maintenance(&self, heartbeat: Duration, stop: CancellationToken) {
        let beat = encode_comment("");
        let mut beats = tokio::time::interval(heartbeat);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        beats.tick().await;
        let mut trims = tokio::time::interval(Duration::from_secs(1));
        trims.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let taken = self
            .departures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let mut departures = taken.unwrap_or_else(|| mpsc::unbounded_channel().1);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(subscriber) = departures.recv() => {
                    if let Err(error) = self.log.append(subscriber.announcements(false)).await {
                        tracing::warn!(%error, subscriber = %subscriber.id, "cannot announce a subscriber's departure");
                    }
                }
                _ = beats.tick() => self.registry.heartbeat(&beat),
                _ = trims.tick() => match self.log.trim(now_ms()).await {
                    Ok(gone) => {
                        self.metrics.events_trimmed.inc_by(gone as u64);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "history trim failed");
                    }
                },
            }
        }
    }
}

/// The `reset` event sent when a `Last-Event-ID` cannot be resumed from. Its
/// id is the newest event id (or empty when there is none), so the
/// browser's next reconnect resumes from the state the page reloads.
fn reset_frame(requested: &str, last: Option<&Event>) -> Bytes {
    let current = last.map(|e| &*e.id);
    let data = serde_json::json!({
        "reason": "unknown_last_event_id",
        "requested": requested,
        "last_event_id": current,
    });
    encode_event(
        current.unwrap_or(""),
        Some("reset"),
        None,
        &data.to_string(),
    )
}

/// Pages through the history after `seq`, keeping what `interest` receives.
fn replay_after(log: Arc<dyn EventLog>, seq: u64, interest: Arc<Interest>) -> Replay {
    struct Pager {
        log: Arc<dyn EventLog>,
        after: u64,
        page: VecDeque<Arc<Event>>,
        done: bool,
        interest: Arc<Interest>,
    }
    let pager = Pager {
        log,
        interest,
        after: seq,
        page: VecDeque::new(),
        done: false,
    };
    stream::unfold(pager, |mut p| async move {
        loop {
            if let Some(event) = p.page.pop_front() {
                return Some((Ok(event), p));
            }
            if p.done {
                return None;
            }
            match p.log.read_after(p.after, REPLAY_PAGE).await {
                Ok(page) => {
                    let last = page.last()?;
                    p.after = last.seq;
                    p.done = page.len() < REPLAY_PAGE;
                    p.page = page
                        .into_iter()
                        .filter(|e| p.interest.receives(e))
                        .collect();
                }
                Err(error) => {
                    p.done = true;
                    return Some((Err(error), p));
                }
            }
        }
    })
    .boxed()
}

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

impl Registry {
    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(
        self: &Arc<Self>,
        interest: Arc<Interest>,
        subscriber: Option<Arc<Subscriber>>,
    ) -> Result<(Registration, Arc<Outbox>), SubscribeError> {
        let outbox = Arc::new(Outbox::new(self.queue_capacity));
        let mut index = self.lock();
        if index.closing {
            return Err(SubscribeError::ShuttingDown);
        }
        if index.streams.len() >= self.max_streams {
            self.metrics.streams_refused.inc();
            return Err(SubscribeError::TooManyStreams(self.max_streams));
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

    /// Announces the departure of a removed stream's subscriber.
    fn departed(&self, entry: Entry) {
        if let (Some(tx), Some(subscriber)) = (&self.departed, entry.subscriber) {
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
            self.departed(entry);
        }
    }

    fn close_user(&self, user: &str) -> usize {
        let mut index = self.lock();
        let ids = index.users.get(user).cloned().unwrap_or_default();
        let mut gone = Vec::with_capacity(ids.len());
        for &id in &ids {
            if let Some(entry) = index.remove(id) {
                entry.outbox.end(End::Closed);
                gone.push(entry);
            }
        }
        self.update_gauges(&index);
        drop(index);
        gone.into_iter().for_each(|e| self.departed(e));
        ids.len()
    }

    /// Ends and removes every stream; new ones may open at once.
    fn end_every_stream(&self, why: End) -> usize {
        let mut index = self.lock();
        let ids: Vec<u64> = index.streams.keys().copied().collect();
        let gone: Vec<Entry> = ids.into_iter().filter_map(|id| index.remove(id)).collect();
        for entry in &gone {
            entry.outbox.end(why);
        }
        self.update_gauges(&index);
        drop(index);
        let count = gone.len();
        gone.into_iter().for_each(|e| self.departed(e));
        count
    }

    fn end_all(&self, why: End) {
        let mut index = self.lock();
        for entry in index.streams.values() {
            entry.outbox.end(why);
        }
        *index = Index {
            closing: true,
            next_id: index.next_id,
            ..Index::default()
        };
        self.update_gauges(&index);
    }

    fn heartbeat(&self, frame: &Bytes) {
        let index = self.lock();
        for entry in index.streams.values() {
            entry.outbox.push_heartbeat(frame);
        }
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
        let mut index = self.lock();
        let mut slow = Vec::new();
        let mut delivered = 0u64;
        {
            let Index {
                streams,
                users,
                topics,
                selectors,
                any_topic,
                cache,
                ..
            } = &mut *index;
            let mut push = |id: u64, event: &Event, cache: &mut MatchCache| {
                if let Some(entry) = streams.get(&id) {
                    if !entry
                        .interest
                        .may_read_with(event, |s, t| cache.matches(s, t))
                    {
                        return;
                    }
                    match entry.outbox.push(event.seq, event.frame().clone()) {
                        Ok(()) => delivered += 1,
                        Err(_) => slow.push(id),
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
                        // A stream reached through several topics or
                        // selectors gets the event once.
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
        }
        self.metrics.deliveries.inc_by(delivered);
        if !slow.is_empty() {
            self.metrics.slow_consumer_closes.inc_by(slow.len() as u64);
            let gone: Vec<Entry> = slow.into_iter().filter_map(|id| index.remove(id)).collect();
            self.update_gauges(&index);
            drop(index);
            gone.into_iter().for_each(|e| self.departed(e));
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
