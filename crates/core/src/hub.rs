//! The hub: what the edge calls to publish, to open a stream, to close a
//! user and to read counts and history.
//!
//! Data path: `publish` validates drafts, the [`EventLog`] stores them and
//! hands them in sequence order to the [`Registry`] (its [`Fanout`]), which
//! pushes each event's shared frame into the outbox of every stream the
//! target reaches.
//!
//! Opening a stream registers it first and reads the history after, so
//! every event is either in what it replays or in its queue (or both, and
//! then skipped by sequence number): no gap, no duplicate. A stream opened
//! with `last_seen` takes the same path, resuming after its user's cursor
//! ([`crate::seen`]) instead of a `Last-Event-ID`.
//!
//! No lock is held across an await. In a cluster the other nodes' share of
//! counts and `close` comes through [`Peers`], which the Redis engine
//! implements.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::announce::{is_reserved_topic, Subscriber};
use crate::event::{Draft, Event, EventError, Target};
use crate::frame::{encode_comment, encode_event, encode_retry};
use crate::limits::FieldLimits;
use crate::log::{now_ms, Cursor, EventLog, Fanout, StoreError};
use crate::metrics::Metrics;
use crate::outbox::{Deadline, End, Frames, Replay, StreamEnd};
use crate::registry::{Refusal, Registry, TopicStreams, UserStreams};
use crate::route::Interest;
use crate::seen::{newer, LastSeen, Seen, FLUSH_EVERY, LAST_SEEN};

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
    /// Announce subscribers as they come and go (see [`crate::announce`]).
    pub presence: bool,
    /// Field lengths and topic counts events and streams are checked against.
    pub limits: FieldLimits,
    /// The hub's public URL, against which topics are resolved to tell
    /// whether they are in the hub's own namespace.
    pub hub_url: url::Url,
}

/// How a stream starts, beyond what it listens to.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions<'a> {
    /// Resume after this event id (or `earliest`).
    pub last_event_id: Option<&'a str>,
    /// Without a `last_event_id`: resume after the newest event written
    /// to any of the stream's user's streams, anywhere (`since=last-seen`).
    /// The edge refuses it for a stream without a user; the hub ignores it
    /// there.
    pub last_seen: bool,
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

/// An opened stream, ready to be sent.
pub struct Subscribed {
    /// The stream's frames, in the order they go on the wire.
    pub frames: Frames,
    /// The newest event id in the history when the stream opened.
    pub last_event_id: Option<Arc<str>>,
    /// The client's `Last-Event-ID` could not be resumed from.
    pub reset: bool,
    /// The stream replays history after a `Last-Event-ID` (or `earliest`).
    pub resumed: bool,
}

/// The hub's counters, as `/api/v1/stats` answers them.
#[derive(Debug, Clone, Serialize)]
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

/// This node's open streams, users and topics, as [`Peers`] share them.
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

/// The other nodes of a cluster, as one node sees them: their share of
/// online users and figures, and a way to close a user's streams there.
pub trait Peers: Send + Sync {
    /// Online users on every node, merged with this node's `local` share,
    /// sorted by id.
    fn users<'a>(
        &'a self,
        local: &'a LocalPresence,
    ) -> BoxFuture<'a, Result<Vec<UserStreams>, StoreError>>;

    /// Exact topics with open streams on every node, merged with this
    /// node's `local` share, sorted by name.
    fn topics<'a>(
        &'a self,
        local: &'a LocalPresence,
    ) -> BoxFuture<'a, Result<Vec<TopicStreams>, StoreError>>;

    /// Every node's figures together: `stats` is this node's.
    fn stats<'a>(
        &'a self,
        local: &'a LocalPresence,
        stats: Stats,
    ) -> BoxFuture<'a, Result<Stats, StoreError>>;

    /// Asks the other nodes to end `user`'s streams; returns how many they
    /// had open.
    fn close_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<usize, StoreError>>;
}

/// Told of every stored batch before its publish is answered, so that what
/// it records about the batch (the webhooks' `event.undelivered`) is as
/// durable as the batch once the publisher hears back.
pub trait PublishObserver: Send + Sync {
    fn published<'a>(&'a self, hub: &'a Hub, events: &'a [Arc<Event>]) -> BoxFuture<'a, ()>;
}

pub struct Hub {
    registry: Arc<Registry>,
    /// Subscribers whose streams ended, to announce (taken by maintenance).
    departures: Mutex<Option<mpsc::UnboundedReceiver<Arc<Subscriber>>>>,
    log: Arc<dyn EventLog>,
    config: HubConfig,
    metrics: Arc<Metrics>,
    started: Instant,
    /// The other nodes; `None` on a single node.
    peers: Option<Arc<dyn Peers>>,
    observer: Option<Arc<dyn PublishObserver>>,
    /// Set once shutdown begins: readiness then says no, so that a load
    /// balancer stops sending new clients before the streams end.
    draining: AtomicBool,
    /// Users' cursors as this node's streams advance them.
    seen: LastSeen,
}

/// Why the hub should not be given new clients now.
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("shutting down")]
    ShuttingDown,
    /// The history cannot take publishes; the message says why.
    #[error("history: {0}")]
    History(StoreError),
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
        let registry = Arc::new(Registry::new(
            metrics.clone(),
            config.queue_capacity,
            config.max_streams,
            config.presence.then_some(departed),
        ));
        let log = make_log(registry.clone())?;
        Ok(Hub {
            registry,
            departures: Mutex::new(Some(departures)),
            log,
            config,
            metrics,
            started: Instant::now(),
            peers: None,
            observer: None,
            draining: AtomicBool::new(false),
            seen: LastSeen::default(),
        })
    }

    /// Makes this hub one node of a cluster: presence and `close` answer
    /// for every node.
    pub fn with_peers(mut self, peers: Arc<dyn Peers>) -> Hub {
        self.peers = Some(peers);
        self
    }

    /// Tells `observer` of every stored batch before its publish is answered.
    pub fn with_observer(mut self, observer: Arc<dyn PublishObserver>) -> Hub {
        self.observer = Some(observer);
        self
    }

    /// Of `users`, those with no open stream on this node.
    pub fn without_local_streams<'a>(&self, users: &'a [String]) -> Vec<&'a str> {
        self.registry.without_streams(users)
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
                    .find(|t| is_reserved_topic(t, &self.config.hub_url))
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
        if let Some(observer) = &self.observer {
            observer.published(self, &events).await;
        }
        // The fields are only looked at when the line is wanted.
        if tracing::enabled!(tracing::Level::DEBUG) {
            if let Some(first) = events.first() {
                let kind = first.target.kind();
                let target = if events.iter().all(|e| e.target.kind() == kind) {
                    kind
                } else {
                    "mixed"
                };
                tracing::debug!(
                    first_id = %first.id,
                    count = events.len(),
                    target,
                    "published"
                );
            }
        }
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
    ) -> Result<Subscribed, SubscribeError> {
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
            .register(interest.clone(), options.subscriber.clone())
            .map_err(|refusal| match refusal {
                Refusal::Closing => SubscribeError::ShuttingDown,
                Refusal::Full { max } => SubscribeError::TooManyStreams(max),
            })?;
        let mut announced = None;
        if let Some(subscriber) = options.subscriber.as_ref().filter(|_| self.config.presence) {
            let events = self.log.append(subscriber.announcements(true)).await?;
            announced = events.first().map(|e| e.seq);
        }
        let last = self.log.last().await?;
        let mut head = vec![encode_retry(self.config.retry_ms)];
        let mut replay = None;
        // A live stream starts after the newest event when it opened: the
        // fanout stage may still hold older ones, which it then skips. Its
        // own announcement, if it made one, it receives like any other.
        let mut skip_through = match announced {
            Some(seq) => seq.saturating_sub(1),
            None => last.as_ref().map_or(0, |e| e.seq),
        };
        let mut reset = false;
        let last_seen = match (&interest.user, options.last_event_id) {
            (Some(user), None) if options.last_seen => Some(self.cursor_of(user).await?),
            _ => None,
        };
        let requested = match last_seen {
            Some(_) => Some(LAST_SEEN),
            None => options.last_event_id,
        };
        if let Some(requested) = requested {
            let cursor = match last_seen {
                // No cursor: everything retained was missed.
                Some(None) => Cursor::After(0),
                Some(Some(seen)) => self.resolve_seen(seen).await?,
                None if requested == EARLIEST => Cursor::After(0),
                None => self.log.resolve(requested).await?,
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
                    // The user was away longer than the history reaches
                    // back (or it was replaced): after the reset, every
                    // retained event is one they missed.
                    if last_seen.is_some() {
                        skip_through = 0;
                        replay = Some(replay_after(self.log.clone(), 0, interest.clone()));
                    }
                }
            }
        }
        let timeout = |after| Deadline {
            after,
            why: StreamEnd::StreamTimeout,
        };
        let expiry = |after| Deadline {
            after,
            why: StreamEnd::TokenExpired,
        };
        let lifetime = match (self.config.stream_lifetime, options.lifetime) {
            (Some(own), Some(token)) if own < token => Some(timeout(own)),
            (_, Some(token)) => Some(expiry(token)),
            (own, None) => own.map(timeout),
        };
        let resumed = replay.is_some();
        let seen = interest.user.as_deref().map(|user| self.seen.slot(user));
        let mut frames = Frames::new(
            head,
            replay,
            skip_through,
            outbox,
            interest,
            registration,
            lifetime,
        );
        if let Some(seen) = seen {
            frames = frames.advancing(seen);
        }
        Ok(Subscribed {
            frames,
            last_event_id: last.map(|e| e.id.clone()),
            reset,
            resumed,
        })
    }

    /// The user's cursor: the newer of what this node holds (flushed or
    /// not) and what the history stores (written by any node).
    async fn cursor_of(&self, user: &str) -> Result<Option<Seen>, StoreError> {
        let stored = match self.log.cursors() {
            Some(cursors) => cursors.load(user).await?,
            None => None,
        };
        Ok(newer(stored, self.seen.local(user)))
    }

    /// Where a cursor resumes, by the rules of a `Last-Event-ID`: after its
    /// event while this history holds that event (or it is the newest one
    /// retention removed), else nowhere (a reset).
    async fn resolve_seen(&self, seen: Seen) -> Result<Cursor, StoreError> {
        if let Some(id) = seen.hub_id() {
            return self.log.resolve(&id.to_string()).await;
        }
        // An event with a publisher's id: resumed after while it is
        // retained and is the event the cursor names.
        let page = self.log.read_after(seen.seq.saturating_sub(1), 1).await?;
        Ok(match page.first() {
            Some(event) if event.seq == seen.seq && Seen::of(event) == seen => {
                Cursor::After(seen.seq)
            }
            _ => Cursor::Unknown,
        })
    }

    /// Writes the cursors that advanced since the last flush to the
    /// history; what cannot be written is tried again at the next one.
    pub async fn flush_cursors(&self) {
        let Some(cursors) = self.log.cursors() else {
            // Nothing to write to: keep only what open streams hold.
            self.seen.take_advanced();
            return;
        };
        let batch = self.seen.take_advanced();
        if batch.is_empty() {
            return;
        }
        if let Err(error) = cursors.store(batch.clone()).await {
            tracing::warn!(%error, users = batch.len(), "cannot store last-seen cursors; retrying");
            self.seen.not_flushed(&batch);
        }
    }

    /// Open streams that announced a subscriber, oldest first.
    pub fn subscribers(&self) -> Vec<Arc<Subscriber>> {
        self.registry.subscribers()
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
        let remote = match &self.peers {
            Some(peers) => peers.close_user(user).await?,
            None => 0,
        };
        Ok(self.registry.close_user(user) + remote)
    }

    /// Online users on every node, sorted by id.
    pub async fn users_everywhere(&self) -> Result<Vec<UserStreams>, StoreError> {
        match &self.peers {
            Some(peers) => peers.users(&self.local_presence()).await,
            None => Ok(self.users()),
        }
    }

    /// Exact topics with open streams on every node, sorted by name.
    pub async fn topics_everywhere(&self) -> Result<Vec<TopicStreams>, StoreError> {
        match &self.peers {
            Some(peers) => peers.topics(&self.local_presence()).await,
            None => Ok(self.registry.topics()),
        }
    }

    /// Distinct users with at least one open stream on any node.
    pub async fn user_count_everywhere(&self) -> Result<usize, StoreError> {
        match &self.peers {
            Some(_) => Ok(self.users_everywhere().await?.len()),
            None => Ok(self.user_count()),
        }
    }

    /// The figures of every node together (one node's when alone).
    pub async fn stats_everywhere(&self) -> Result<Stats, StoreError> {
        let local = self.stats().await;
        match &self.peers {
            Some(peers) => peers.stats(&self.local_presence(), local).await,
            None => Ok(local),
        }
    }

    /// This node's share of presence.
    pub fn local_presence(&self) -> LocalPresence {
        let (users, topics) = self.registry.shares();
        LocalPresence {
            streams: self.registry.counts().streams,
            users,
            topics,
            events_published: self.metrics.events_published.get(),
            deliveries: self.metrics.deliveries.get(),
            slow_consumer_closes: self.metrics.slow_consumer_closes.get(),
        }
    }

    /// Distinct users with at least one open stream.
    pub fn user_count(&self) -> usize {
        self.registry.counts().users
    }

    /// Sets the `pushwire_history_*` gauges from the history (before a
    /// scrape renders them). A history that cannot answer leaves them as
    /// they were: its fault shows in `/readyz` and the log.
    pub async fn refresh_history_metrics(&self) {
        if let Ok(retained) = self.log.retained().await {
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            self.metrics.history_events.set(gauge(retained.events));
            self.metrics.history_oldest_seq.set(gauge(retained.oldest));
            self.metrics.history_newest_seq.set(gauge(retained.newest));
            self.metrics
                .tail_lag_events
                .set(gauge(retained.undelivered));
        }
    }

    /// Online users, sorted by id.
    pub fn users(&self) -> Vec<UserStreams> {
        self.registry.users()
    }

    pub async fn stats(&self) -> Stats {
        let counts = self.registry.counts();
        let last = self.log.last().await.ok().flatten();
        Stats {
            streams: counts.streams,
            users: counts.users,
            topics: counts.topics,
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
        self.begin_draining();
        self.registry.end_all(End::Shutdown);
    }

    /// Shutdown has begun: from now on [`Hub::ready`] says no, while open
    /// streams and requests are still served.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether this node should be given new clients: not while shutting
    /// down, and not while its history cannot take publishes.
    pub async fn ready(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::Relaxed) {
            return Err(NotReady::ShuttingDown);
        }
        self.log.ready().await.map_err(NotReady::History)
    }

    /// Heartbeats, retention and last-seen flushes until `stop` is
    /// cancelled; a last flush then writes what streams advanced.
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
        let mut flushes = tokio::time::interval(FLUSH_EVERY);
        flushes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    self.flush_cursors().await;
                    return;
                }
                _ = flushes.tick() => self.flush_cursors().await,
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

#[cfg(test)]
mod tests {
    //! The hub over a plain in-test history (every event kept, ids are
    //! sequence numbers), with tokio's clock paused: lifetimes and
    //! heartbeats are checked by advancing time, not by sleeping.

    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use futures_util::future;
    use futures_util::FutureExt;

    use super::*;
    use crate::event::hub_sequence;
    use crate::id::{locate, HubId, Span};

    #[derive(Default)]
    struct Kept {
        next: u64,
        events: BTreeMap<u64, Arc<Event>>,
        /// Sequences below this were trimmed.
        first: u64,
    }

    struct TestLog {
        kept: Mutex<Kept>,
        fanout: Arc<dyn Fanout>,
    }

    impl TestLog {
        fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
            self.kept.lock().unwrap_or_else(PoisonError::into_inner)
        }
    }

    impl EventLog for TestLog {
        fn append(&self, drafts: Vec<Draft>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
            let mut kept = self.lock();
            let events: Vec<Arc<Event>> = drafts
                .into_iter()
                .map(|d| {
                    kept.next += 1;
                    Arc::new(Event::new(kept.next, d, now_ms()))
                })
                .collect();
            for e in &events {
                kept.events.insert(e.seq, e.clone());
            }
            self.fanout.deliver(&events);
            future::ready(Ok(events)).boxed()
        }

        fn read_after(
            &self,
            after: u64,
            limit: usize,
        ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
            let kept = self.lock();
            let page = kept
                .events
                .range(after + 1..)
                .take(limit)
                .map(|(_, e)| e.clone())
                .collect();
            future::ready(Ok(page)).boxed()
        }

        fn resolve(&self, id: &str) -> BoxFuture<'_, Result<Cursor, StoreError>> {
            let kept = self.lock();
            let span = Span {
                first: kept.first.max(1),
                next: kept.next + 1,
                boundary_tag: 0,
            };
            let cursor = match HubId::parse(id) {
                Some(id) => locate(id, span, |seq| {
                    Ok::<_, StoreError>(kept.events.get(&seq).map(|e| e.hub_tag()))
                }),
                None => Ok(Cursor::Unknown),
            };
            future::ready(cursor).boxed()
        }

        fn last(&self) -> BoxFuture<'_, Result<Option<Arc<Event>>, StoreError>> {
            let last = self.lock().events.values().next_back().cloned();
            future::ready(Ok(last)).boxed()
        }

        fn trim(&self, _now_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
            future::ready(Ok(0)).boxed()
        }
    }

    fn config() -> HubConfig {
        HubConfig {
            queue_capacity: 64,
            retry_ms: 3000,
            max_streams: 100,
            stream_lifetime: None,
            presence: false,
            limits: FieldLimits::default(),
            hub_url: url::Url::parse("https://localhost/.well-known/mercure")
                .unwrap_or_else(|_| unreachable!()),
        }
    }

    fn hub_with(config: HubConfig) -> (Hub, Arc<TestLog>) {
        let mut log = None;
        let hub = Hub::new(config, Arc::new(Metrics::new()), |fanout| {
            let made = Arc::new(TestLog {
                kept: Mutex::new(Kept {
                    first: 1,
                    ..Kept::default()
                }),
                fanout,
            });
            log = Some(made.clone());
            Ok::<Arc<dyn EventLog>, StoreError>(made)
        })
        .unwrap();
        (hub, log.unwrap())
    }

    /// A hub whose log delivers through a fanout stage, and the stage's
    /// runner, not yet running: what the log committed stays queued there.
    fn staged_hub() -> (Hub, impl std::future::Future<Output = ()>) {
        let mut runner = None;
        let hub = Hub::new(config(), Arc::new(Metrics::new()), |fanout| {
            let (stage, run) = crate::stage::Stage::new(fanout);
            runner = Some(run);
            Ok::<Arc<dyn EventLog>, StoreError>(Arc::new(TestLog {
                kept: Mutex::new(Kept {
                    first: 1,
                    ..Kept::default()
                }),
                fanout: stage,
            }))
        })
        .unwrap();
        (hub, runner.unwrap())
    }

    #[tokio::test]
    async fn events_acknowledged_before_a_stream_opened_never_reach_it_live() {
        let (hub, runner) = staged_hub();
        // Acknowledged, still in the stage when the streams open.
        let first = hub
            .publish(vec![to("u", "1"), to("u", "2"), to("u", "3")])
            .await
            .unwrap()
            .remove(0);
        let mut fresh = hub
            .subscribe(Interest::user("u"), SubscribeOptions::default())
            .await
            .unwrap();
        let mut resumed = hub
            .subscribe(
                Interest::user("u"),
                SubscribeOptions {
                    last_event_id: Some(&first.id),
                    ..SubscribeOptions::default()
                },
            )
            .await
            .unwrap();
        let runner = tokio::spawn(runner);
        hub.publish(vec![to("u", "4")]).await.unwrap();
        let data = |frames: &[String]| -> Vec<String> {
            frames
                .iter()
                .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
                .map(str::to_owned)
                .collect()
        };
        // Give the runner every chance to deliver what it holds.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(data(&ready(&mut fresh.frames)), ["4"]);
        assert_eq!(data(&ready(&mut resumed.frames)), ["2", "3", "4"]);
        drop(hub);
        runner.await.unwrap();
    }

    fn to(user: &str, data: &str) -> Draft {
        Draft::new(Target::user(user), data)
    }

    /// Every frame available without waiting, as text.
    fn ready(frames: &mut Frames) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some(frame)) = frames.next().now_or_never() {
            out.push(String::from_utf8_lossy(&frame).into_owned());
        }
        out
    }

    fn ids(frames: &[String]) -> Vec<&str> {
        frames
            .iter()
            .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("id: ")))
            .collect()
    }

    /// Drains a stream to its end and says why it ended.
    async fn end_of(mut frames: Frames) -> StreamEnd {
        while frames.next().await.is_some() {}
        frames.end_reason()
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_knows_why_it_ended() {
        let (hub, _) = hub_with(HubConfig {
            stream_lifetime: Some(Duration::from_secs(60)),
            ..config()
        });
        let token = |secs| SubscribeOptions {
            lifetime: Some(Duration::from_secs(secs)),
            ..SubscribeOptions::default()
        };
        let open = |options| hub.subscribe(Interest::user("u"), options);
        let expiring = open(token(5)).await.unwrap();
        assert_eq!(end_of(expiring.frames).await, StreamEnd::TokenExpired);
        let outlived = open(token(600)).await.unwrap();
        assert_eq!(end_of(outlived.frames).await, StreamEnd::StreamTimeout);
        let untimed = open(SubscribeOptions::default()).await.unwrap();
        assert_eq!(end_of(untimed.frames).await, StreamEnd::StreamTimeout);

        let closed = open(SubscribeOptions::default()).await.unwrap();
        hub.close_user("u");
        assert_eq!(end_of(closed.frames).await, StreamEnd::Closed);
        let shut = open(SubscribeOptions::default()).await.unwrap();
        let left = open(SubscribeOptions::default()).await.unwrap();
        // Dropped before the hub ended it: the client went away.
        assert_eq!(left.frames.end_reason(), StreamEnd::ClientGone);
        drop(left);
        hub.end_all_streams();
        assert_eq!(end_of(shut.frames).await, StreamEnd::Shutdown);
    }

    #[tokio::test(start_paused = true)]
    async fn a_resume_is_told_apart_from_a_fresh_stream() {
        let (hub, _) = hub_with(config());
        let published = hub.publish(vec![to("u", "1")]).await.unwrap();
        let fresh = hub
            .subscribe(Interest::user("u"), SubscribeOptions::default())
            .await
            .unwrap();
        assert!(!fresh.resumed && !fresh.reset);
        let options = SubscribeOptions {
            last_event_id: Some(&published[0].id),
            ..SubscribeOptions::default()
        };
        let resumed = hub.subscribe(Interest::user("u"), options).await.unwrap();
        assert!(resumed.resumed && !resumed.reset);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_opens_with_the_retry_frame_and_nothing_else() {
        let (hub, _) = hub_with(config());
        let mut opened = hub
            .subscribe(Interest::user("u"), SubscribeOptions::default())
            .await
            .unwrap();
        assert_eq!(ready(&mut opened.frames), vec!["retry: 3000\n\n"]);
        assert!(!opened.reset);
    }

    #[tokio::test(start_paused = true)]
    async fn resume_replays_what_was_missed_then_continues_live_with_no_duplicate() {
        let (hub, _) = hub_with(config());
        let mut published = Vec::new();
        for n in 1..=5 {
            published.extend(hub.publish(vec![to("u", &n.to_string())]).await.unwrap());
        }
        let options = SubscribeOptions {
            last_event_id: Some(&published[1].id),
            ..SubscribeOptions::default()
        };
        let mut opened = hub.subscribe(Interest::user("u"), options).await.unwrap();
        hub.publish(vec![to("u", "6"), to("other", "x")])
            .await
            .unwrap();
        let frames = ready(&mut opened.frames);
        let seqs: Vec<u64> = ids(&frames).into_iter().filter_map(hub_sequence).collect();
        assert_eq!(seqs, [3, 4, 5, 6]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_id_the_history_cannot_resume_from_gets_a_reset_not_a_silent_skip() {
        let (hub, log) = hub_with(config());
        let mut published = Vec::new();
        for n in 1..=4 {
            published.extend(hub.publish(vec![to("u", &n.to_string())]).await.unwrap());
        }
        log.lock().first = 4;
        let options = SubscribeOptions {
            last_event_id: Some("1"),
            reset_event: true,
            ..SubscribeOptions::default()
        };
        let mut opened = hub.subscribe(Interest::user("u"), options).await.unwrap();
        assert!(opened.reset);
        let frames = ready(&mut opened.frames);
        let newest = format!("id: {}\nevent: reset\n", published[3].id);
        assert!(frames[1].starts_with(&newest), "{frames:?}");
        assert_eq!(hub.metrics().resets.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_when_its_lifetime_is_over() {
        let (hub, _) = hub_with(HubConfig {
            stream_lifetime: Some(Duration::from_secs(60)),
            ..config()
        });
        let options = SubscribeOptions {
            lifetime: Some(Duration::from_secs(10)),
            ..SubscribeOptions::default()
        };
        let mut opened = hub.subscribe(Interest::user("u"), options).await.unwrap();
        ready(&mut opened.frames);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(
            opened.frames.next().now_or_never().is_none(),
            "still open at 9 s"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            opened.frames.next().await,
            None,
            "the shorter lifetime wins"
        );
        drop(opened);
        assert_eq!(hub.user_count(), 0, "a dropped stream leaves the count");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_streams_get_a_heartbeat_each_interval() {
        let (hub, _) = hub_with(config());
        let hub = Arc::new(hub);
        let mut opened = hub
            .subscribe(Interest::user("u"), SubscribeOptions::default())
            .await
            .unwrap();
        ready(&mut opened.frames);
        let stop = CancellationToken::new();
        let maintenance = tokio::spawn({
            let (hub, stop) = (hub.clone(), stop.clone());
            async move { hub.run_maintenance(Duration::from_secs(15), stop).await }
        });
        tokio::time::sleep(Duration::from_secs(14)).await;
        assert!(ready(&mut opened.frames).is_empty());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(ready(&mut opened.frames), vec![":\n\n"]);
        tokio::time::sleep(Duration::from_secs(15)).await;
        assert_eq!(ready(&mut opened.frames), vec![":\n\n"]);
        stop.cancel();
        maintenance.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_with_one_bad_draft_stores_nothing() {
        let (hub, log) = hub_with(config());
        let bad = Draft {
            id: Some("12".into()),
            ..to("u", "x")
        };
        let refused = hub.publish(vec![to("u", "ok"), bad]).await;
        assert!(matches!(
            refused,
            Err(PublishError::Invalid(EventError::IdAllDigits))
        ));
        assert!(log.lock().events.is_empty());
        assert_eq!(hub.metrics().publishes_rejected.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn publishers_cannot_speak_in_the_hubs_namespace() {
        let (hub, _) = hub_with(config());
        let forged = Draft::new(
            Target::Topics(vec!["/.well-known/mercure/subscriptions/x/y".into()]),
            "{}",
        );
        assert!(matches!(
            hub.publish(vec![forged]).await,
            Err(PublishError::Invalid(EventError::ReservedTopic(_)))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_every_stream_and_refuses_new_ones() {
        let (hub, _) = hub_with(config());
        let mut opened = hub
            .subscribe(Interest::user("u"), SubscribeOptions::default())
            .await
            .unwrap();
        ready(&mut opened.frames);
        hub.end_all_streams();
        assert_eq!(opened.frames.next().await, None);
        assert!(matches!(
            hub.subscribe(Interest::user("u"), SubscribeOptions::default())
                .await,
            Err(SubscribeError::ShuttingDown)
        ));
    }

    #[tokio::test]
    async fn last_seen_resumes_after_what_the_users_streams_were_written() {
        let (hub, _) = hub_with(config());
        let last_seen = || SubscribeOptions {
            last_seen: true,
            ..SubscribeOptions::default()
        };
        // No cursor yet: everything retained was missed.
        let published = hub
            .publish(vec![to("u", "1"), to("u", "2"), to("other", "x")])
            .await
            .unwrap();
        let mut first = hub
            .subscribe(Interest::user("u"), last_seen())
            .await
            .unwrap();
        assert!(first.resumed && !first.reset);
        let frames = ready(&mut first.frames);
        assert_eq!(ids(&frames), [&*published[0].id, &*published[1].id]);
        let live = hub.publish(vec![to("u", "3")]).await.unwrap();
        assert_eq!(ids(&ready(&mut first.frames)), [&*live[0].id]);
        drop(first);
        let missed = hub.publish(vec![to("u", "4"), to("u", "5")]).await.unwrap();
        let mut second = hub
            .subscribe(Interest::user("u"), last_seen())
            .await
            .unwrap();
        assert_eq!(
            ids(&ready(&mut second.frames)),
            [&*missed[0].id, &*missed[1].id]
        );
        // Another user's cursor is their own.
        let mut other = hub
            .subscribe(Interest::user("other"), last_seen())
            .await
            .unwrap();
        assert_eq!(ids(&ready(&mut other.frames)), [&*published[2].id]);
        // A Last-Event-ID wins over last-seen.
        let mut exact = hub
            .subscribe(
                Interest::user("u"),
                SubscribeOptions {
                    last_event_id: Some(&published[0].id),
                    last_seen: true,
                    ..SubscribeOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&ready(&mut exact.frames)).len(), 4);
    }

    #[tokio::test]
    async fn last_seen_resumes_after_an_event_with_a_publishers_id() {
        let (hub, _) = hub_with(config());
        let own = Draft {
            id: Some("order-17".to_owned()),
            ..to("u", "1")
        };
        hub.publish(vec![own]).await.unwrap();
        let mut first = hub
            .subscribe(
                Interest::user("u"),
                SubscribeOptions {
                    last_seen: true,
                    ..SubscribeOptions::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(ids(&ready(&mut first.frames)), ["order-17"]);
        drop(first);
        let missed = hub.publish(vec![to("u", "2")]).await.unwrap();
        let mut second = hub
            .subscribe(
                Interest::user("u"),
                SubscribeOptions {
                    last_seen: true,
                    ..SubscribeOptions::default()
                },
            )
            .await
            .unwrap();
        assert!(!second.reset);
        assert_eq!(ids(&ready(&mut second.frames)), [&*missed[0].id]);
    }
}
