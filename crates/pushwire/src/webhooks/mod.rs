//! Webhooks: the hub tells the application's backend when users come and
//! go and when an event addressed to users reached some of them nowhere
//! (see docs/webhooks.md).
//!
//! Its parts:
//! - `message.rs`: the types and the JSON body, built once per message;
//! - `sign.rs`: Standard Webhooks signatures;
//! - `store/`: the outbox, kept by the history's engine, where a message
//!   is written before it counts as sent;
//! - `sender.rs`: the one loop (on one node of a cluster at a time) that
//!   decides who went offline and delivers the outbox, at least once and
//!   in order per user.
//!
//! This file is what the rest of the hub calls: [`Webhooks::stream_opened`]
//! when a stream opens (the [`StreamTicket`] it returns reports the close)
//! and, through the core's [`PublishObserver`], every stored batch.

mod message;
mod sender;
pub mod sign;
pub mod store;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use tokio::sync::Notify;

use pushwire_core::event::{Event, Target};
use pushwire_core::hub::{Hub, PublishObserver};
use pushwire_core::log::{now_ms, StoreError};
use pushwire_core::metrics::Metrics;

use crate::engines::redis::presence::Cluster;
pub use message::{Kind, Kinds, Message};
use sign::Secret;
use store::Store;

/// How long the other nodes' users are taken as read before they are read
/// again (their nodes write them this often, too).
const ELSEWHERE_FRESH: Duration = Duration::from_millis(250);

/// The settings of `--webhook-*`.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: String,
    pub secret: Secret,
    pub kinds: Kinds,
    pub offline_delay: Duration,
    pub max_data: usize,
    pub retry_backoff: Duration,
    pub retry_max_delay: Duration,
    pub max_attempts: u32,
    pub timeout: Duration,
}

pub struct Webhooks {
    settings: WebhookSettings,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    /// This node's id (the cluster's sender lease is held under it).
    node: String,
    /// Open streams per user on this node.
    local: Mutex<HashMap<String, usize>>,
    streams: AtomicU64,
    /// Rung when a message is written, so the sender need not wait for its tick.
    wake: Notify,
    cluster: Option<Arc<Cluster>>,
    elsewhere: tokio::sync::Mutex<Option<(Instant, Arc<HashSet<String>>)>>,
}

impl Webhooks {
    pub fn new(
        settings: WebhookSettings,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Webhooks, crate::outbound::OutboundError> {
        let client = crate::outbound::client(settings.timeout)?;
        let node = match &cluster {
            Some(cluster) => cluster.node().to_owned(),
            None => uuid::Uuid::new_v4().to_string(),
        };
        Ok(Webhooks {
            settings,
            store,
            metrics,
            client,
            node,
            local: Mutex::new(HashMap::new()),
            streams: AtomicU64::new(0),
            wake: Notify::new(),
            cluster,
            elsewhere: tokio::sync::Mutex::new(None),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Wakes the sender (a failed message was written again).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn local(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wanted(&self, kind: Kind, message: impl FnOnce() -> Message) -> Option<Message> {
        self.settings.kinds.has(kind).then(message)
    }

    async fn write(&self, messages: Vec<Message>) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let kinds: Vec<_> = messages.iter().map(|m| m.kind).collect();
        self.store.enqueue(messages).await?;
        self.written(&kinds);
        Ok(())
    }

    fn written(&self, kinds: &[Kind]) {
        for kind in kinds {
            self.metrics.webhook_written(kind.as_str(), 1);
        }
        self.wake.notify_one();
    }

    /// A stream opened: when it is the user's first on this node, their
    /// presence is confirmed (and they are announced if nobody had), before
    /// the stream starts. The ticket reports the close.
    pub async fn stream_opened(
        self: &Arc<Self>,
        user: Option<&str>,
        route: &str,
    ) -> Result<StreamTicket, StoreError> {
        if let Some(user) = user {
            let first = {
                let mut local = self.local();
                let count = local.entry(user.to_owned()).or_insert(0);
                *count += 1;
                *count == 1
            };
            if first && self.settings.kinds.presence() {
                let online = self.wanted(Kind::UserOnline, || Message::user_online(user));
                match self.store.come_online(user, now_ms(), online).await {
                    Ok(true) if self.settings.kinds.has(Kind::UserOnline) => {
                        self.written(&[Kind::UserOnline])
                    }
                    Ok(_) => {}
                    Err(error) => {
                        self.leave(user);
                        return Err(error);
                    }
                }
            }
        }
        let stream = self.streams.fetch_add(1, Ordering::Relaxed).to_string();
        let ticket = StreamTicket {
            hooks: self.clone(),
            user: user.map(str::to_owned),
            route: route.to_owned(),
            stream,
            opened: Instant::now(),
            reported: false,
        };
        if let Some(opened) = self.wanted(Kind::StreamOpened, || {
            Message::stream_opened(user, route, &ticket.stream)
        }) {
            if let Err(error) = self.write(vec![opened]).await {
                // The stream is refused: it never opened, so it never closes.
                let mut ticket = ticket;
                ticket.reported = true;
                if let Some(user) = user {
                    self.leave(user);
                }
                return Err(error);
            }
        }
        Ok(ticket)
    }

    /// One of `user`'s streams here ended.
    fn leave(&self, user: &str) {
        let mut local = self.local();
        if let Some(count) = local.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                local.remove(user);
            }
        }
    }

    fn stream_closed(self: &Arc<Self>, ticket: &StreamTicket, reason: &str) {
        if let Some(user) = &ticket.user {
            self.leave(user);
        }
        let Some(closed) = self.wanted(Kind::StreamClosed, || {
            Message::stream_closed(
                ticket.user.as_deref(),
                &ticket.route,
                &ticket.stream,
                reason,
                ticket.opened.elapsed(),
            )
        }) else {
            return;
        };
        let hooks = self.clone();
        tokio::spawn(async move {
            if let Err(error) = hooks.write(vec![closed]).await {
                hooks.outbox_failed(&error, 1);
            }
        });
    }

    fn outbox_failed(&self, error: &StoreError, count: u64) {
        self.metrics.webhook_outbox_errors.inc_by(count);
        tracing::error!(%error, count, "webhook messages could not be written to the outbox");
    }

    /// The users with an open stream on another node, read at most every
    /// [`ELSEWHERE_FRESH`].
    async fn users_elsewhere(&self) -> Result<Arc<HashSet<String>>, StoreError> {
        let Some(cluster) = &self.cluster else {
            return Ok(Arc::default());
        };
        let mut cached = self.elsewhere.lock().await;
        if let Some((at, users)) = cached.as_ref() {
            if at.elapsed() < ELSEWHERE_FRESH {
                return Ok(users.clone());
            }
        }
        let users = Arc::new(cluster.users_elsewhere().await?);
        *cached = Some((Instant::now(), users.clone()));
        Ok(users)
    }

    async fn undelivered(
        &self,
        hub: &Hub,
        events: &[Arc<Event>],
    ) -> Result<Vec<Message>, StoreError> {
        let mut messages = Vec::new();
        for event in events {
            let Target::Users(users) = &event.target else {
                continue;
            };
            let mut absent = hub.without_local_streams(users);
            if !absent.is_empty() && self.cluster.is_some() {
                let elsewhere = self.users_elsewhere().await?;
                absent.retain(|user| !elsewhere.contains(*user));
            }
            if absent.is_empty() {
                continue;
            }
            messages.push(Message::event_undelivered(
                &event.id,
                event.event.as_deref(),
                &event.data,
                self.settings.max_data,
                &absent,
            ));
        }
        Ok(messages)
    }
}

impl PublishObserver for Webhooks {
    fn published<'a>(&'a self, hub: &'a Hub, events: &'a [Arc<Event>]) -> BoxFuture<'a, ()> {
        async move {
            if !self.settings.kinds.has(Kind::EventUndelivered) {
                return;
            }
            let written = match self.undelivered(hub, events).await {
                Ok(messages) => {
                    let count = messages.len() as u64;
                    self.write(messages).await.map_err(|e| (e, count))
                }
                Err(error) => Err((error, events.len() as u64)),
            };
            if let Err((error, count)) = written {
                self.outbox_failed(&error, count);
            }
        }
        .boxed()
    }
}

/// One open stream, as the webhooks know it; dropping it without
/// [`StreamTicket::closed`] reports a client that went away.
pub struct StreamTicket {
    hooks: Arc<Webhooks>,
    user: Option<String>,
    route: String,
    stream: String,
    opened: Instant,
    reported: bool,
}

impl StreamTicket {
    /// The stream ended, for `reason` (the label logs use).
    pub fn closed(mut self, reason: &str) {
        self.report(reason);
    }

    fn report(&mut self, reason: &str) {
        if !self.reported {
            self.reported = true;
            self.hooks.clone().stream_closed(self, reason);
        }
    }
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        self.report("client_gone");
    }
}
