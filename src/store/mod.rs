//! The event history behind one small trait, [`EventLog`].
//!
//! Every published event goes through the log before any stream sees it:
//! `append` gives each event its sequence number (strictly increasing, never
//! reused) and hands the committed events, in sequence order, to the hub's
//! [`Fanout`] before it returns. Because the engine is the one place where
//! order is decided, live delivery follows history order exactly and a
//! stream that replays history can join live delivery without a gap.
//!
//! Engines: [`memory::MemoryLog`] keeps a bounded window in memory; durable
//! engines implement the same trait.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

use crate::event::{Draft, Event};

pub mod memory;

/// Failures of a history engine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("event id `{0}` is already in the history")]
    DuplicateId(String),
    #[error("history storage is unavailable: {0}")]
    Unavailable(String),
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
pub trait Fanout: Send + Sync {
    fn deliver(&self, events: &[Arc<Event>]);
}

/// How long and how much history is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_events: usize,
    pub max_age: Duration,
}

/// The history of one hub.
pub trait EventLog: Send + Sync {
    /// Stores validated drafts as one batch, all or nothing, and hands them
    /// to the fanout in order. Returns once the events are as durable as the
    /// engine promises.
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
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
