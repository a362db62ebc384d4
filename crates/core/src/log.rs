//! The event history behind one small trait, [`EventLog`].
//!
//! Every published event goes through the log before any stream sees it:
//! `append` gives each event its sequence number (strictly increasing, never
//! reused) and hands the committed events, in sequence order, to the hub's
//! [`Fanout`] (before it returns; the Redis engine, whose history several
//! nodes share, hands them over from each node's tail, in the shared
//! history's order). Because the engine is the one place where
//! order is decided, live delivery follows history order exactly and a
//! stream that replays history can join live delivery without a gap.
//!
//! The engines live in the server crate (`engines/`): `memory` keeps a
//! bounded window in memory; `embedded` keeps the history in a durable file
//! and acknowledges an append only once it is stored (see docs/history.md);
//! `redis` shares one history between the nodes of a cluster and hands
//! events to the fanout from a tail that follows it, after `append` returns
//! (see docs/cluster.md).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::event::{Draft, Event};
use crate::seen::SeenStore;

/// Failures of a history engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("event id `{0}` is already in the history")]
    DuplicateId(String),
    #[error("history storage is unavailable: {0}")]
    Unavailable(String),
    /// The disk (or the file size limit) is full: nothing of the request
    /// was stored, and the engine recovers by itself once there is room.
    #[error("history storage is full: {0}")]
    Full(String),
    /// The history could not be opened at start. The hub refuses to run
    /// rather than start over and lose what is stored.
    #[error("cannot open the history at {}: {reason}", path.display())]
    Open { path: PathBuf, reason: String },
}

/// Where a `Last-Event-ID` points in the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// Continue with the events whose sequence is greater than this.
    After(u64),
    /// The id was never issued by this history, or has been trimmed away:
    /// continuity cannot be promised.
    Unknown,
}

/// Receives committed events, in sequence order, once each.
///
/// An engine calls `deliver` for one batch at a time, never two at once,
/// and in sequence order: the registry relies on it to push outside its
/// lock without reordering.
pub trait Fanout: Send + Sync {
    fn deliver(&self, events: &[Arc<Event>]);

    /// Live delivery lost continuity (a shared history was trimmed or went
    /// backwards before this node read it): end every open stream, so each
    /// reconnects and resumes from its `Last-Event-ID`.
    fn resync(&self) {}

    /// Another node of a cluster closed a user: end the user's streams
    /// here; returns how many were open.
    fn close_user(&self, _user: &str) -> usize {
        0
    }

    /// Waits until the fanout can take more: a fanout that queues (the
    /// [`crate::stage::Stage`]) says so when it is far behind, and an engine
    /// awaits this before it stores more. Most fanouts never wait.
    fn room(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// [`Fanout::room`] for an engine on a thread of its own, blocking it.
    fn wait_for_room(&self) {}
}

/// What a history retains: how many events, and the sequence numbers of
/// the oldest and the newest (0 when it is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retained {
    pub events: u64,
    pub oldest: u64,
    pub newest: u64,
    /// Events of the history this node has not yet handed to its fanout:
    /// 0 for engines that deliver within `append`; for a shared history,
    /// how far this node's live delivery is behind it.
    pub undelivered: u64,
}

impl Retained {
    /// A history whose sequence numbers run without a gap from `oldest` to
    /// `newest`.
    pub fn span(oldest: Option<u64>, newest: Option<u64>) -> Retained {
        match (oldest, newest) {
            (Some(oldest), Some(newest)) if oldest <= newest => Retained {
                events: newest - oldest + 1,
                oldest,
                newest,
                undelivered: 0,
            },
            _ => Retained::default(),
        }
    }
}

/// How long and how much history is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_events: usize,
    pub max_age: Duration,
}

/// When a durable engine forces its writes to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every commit is on disk before the publish is acknowledged.
    Always,
    /// Commits are acknowledged at once and forced to disk at least this
    /// often: a crash loses at most this much acknowledged history.
    Interval(Duration),
    /// Not forced while running, only at a clean stop and when sequence
    /// numbers are reserved: a crash loses up to everything since the last
    /// clean stop.
    Never,
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fsync::Always => f.write_str("always"),
            Fsync::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            Fsync::Never => f.write_str("never"),
        }
    }
}

impl FromStr for Fsync {
    type Err = String;

    /// `always`, `never`, or `interval:<ms>` (`interval:250` or `interval:250ms`).
    fn from_str(text: &str) -> Result<Fsync, String> {
        let bad = || format!("`{text}` is not `always`, `interval:<ms>` or `never`");
        match text {
            "always" => Ok(Fsync::Always),
            "never" => Ok(Fsync::Never),
            _ => {
                let ms = text.strip_prefix("interval:").ok_or_else(bad)?;
                let ms = ms.strip_suffix("ms").unwrap_or(ms);
                match ms.parse::<u64>() {
                    Ok(0) => Err("the fsync interval must be at least 1 ms".to_owned()),
                    Ok(ms) => Ok(Fsync::Interval(Duration::from_millis(ms))),
                    Err(_) => Err(bad()),
                }
            }
        }
    }
}

impl Serialize for Fsync {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fsync {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Fsync, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The history of one hub.
pub trait EventLog: Send + Sync {
    /// Stores validated drafts as one batch, all or nothing, and hands them
    /// to the fanout in order (the Redis engine does it from its tail, just
    /// after). Returns once the events are as durable as the engine promises.
    fn append(&self, drafts: Vec<Draft>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>>;

    /// Up to `limit` events with a sequence greater than `after`, in order.
    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>>;

    /// Resolves an event id as sent back by a client.
    fn resolve(&self, id: &str) -> BoxFuture<'_, Result<Cursor, StoreError>>;

    /// The newest event still in the history.
    fn last(&self) -> BoxFuture<'_, Result<Option<Arc<Event>>, StoreError>>;

    /// Drops events beyond the retention limits; returns how many went.
    fn trim(&self, now_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// What the history retains, for `/metrics`. The default reads the
    /// oldest and the newest event and counts the span of sequence numbers
    /// between them; an engine that knows its count cheaply says it.
    fn retained(&self) -> BoxFuture<'_, Result<Retained, StoreError>> {
        Box::pin(async move {
            let oldest = self.read_after(0, 1).await?.first().map(|e| e.seq);
            let newest = self.last().await?.map(|e| e.seq);
            Ok(Retained::span(oldest, newest))
        })
    }

    /// Whether the history can take a publish now, as far as the engine can
    /// tell without writing (what readiness reports): the error says what
    /// is wrong. An engine with nothing that can fail is always ready.
    fn ready(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// Where the history keeps its users' last-seen cursors
    /// ([`crate::seen`]), if it keeps them: without, a cursor lives only
    /// in this node's memory while the user has a stream open here.
    fn cursors(&self) -> Option<&dyn SeenStore> {
        None
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
