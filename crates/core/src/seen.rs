//! Where each user left off: the newest event written to any of the user's
//! streams, so that a stream opened with `since=last-seen` replays what the
//! user missed while away without a `Last-Event-ID` of its own (another
//! device, a new tab, an app started cold).
//!
//! A [`Seen`] names one event of one history, as a hub id does: its
//! sequence number and its tag (for an event with a publisher's id, a hash
//! of that id stands in for the tag), so a cursor left by a history that
//! was lost or replaced is never taken for the event that now has its
//! number (see [`crate::id`]).
//!
//! [`LastSeen`] keeps the cursors of this node in memory: a stream's
//! [`crate::outbox::Frames`] advances its user's [`UserSeen`] each time it
//! yields an event to the transport (an uncontended lock of that user's
//! own, never the registry's), and the hub's maintenance flushes what
//! advanced, coalesced per user, to the history's [`SeenStore`] in the
//! background (every [`FLUSH_EVERY`] and at a clean stop). Delivery never
//! waits for a cursor write.
//!
//! Invariants: a cursor only moves forward (every store keeps the maximum
//! by sequence number); a cursor is never ahead of what was written to one
//! of the user's streams (it is advanced only after the frame left the
//! stream's queue, and flushed after that). A crash loses at most the last
//! flush window of advance: the next `last-seen` stream then shows a few
//! events again, never skips one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::event::Event;
use crate::id::HubId;
use crate::log::StoreError;

/// How often advanced cursors are flushed to the history's store.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The query value (`since=last-seen`, `lastEventID=last-seen`) that asks
/// to resume after the user's cursor.
pub const LAST_SEEN: &str = "last-seen";

/// Most cursors a history keeps before it drops some: past it, those of
/// users whose cursor names an event retention removed go first (such a
/// user would resume from the oldest retained event either way, with a
/// reset if the cursor was kept).
pub const MAX_CURSORS: usize = 1_000_000;

/// Set in [`Seen::tag`] when the event has a publisher's id: the rest is a
/// hash of that id. Hub tags are 40 bits, so the two never meet.
const PUBLISHER_MARK: u64 = 1 << 63;

/// One event of one history, as a user's cursor names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub seq: u64,
    /// The event's hub-id tag (0 for an untagged id of an earlier
    /// release), or [`PUBLISHER_MARK`] and a hash of the publisher's id.
    pub tag: u64,
}

impl Seen {
    /// The cursor that names `event`.
    pub fn of(event: &Event) -> Seen {
        let tag = if event.tag != 0 || event.id.starts_with('#') {
            event.tag
        } else {
            PUBLISHER_MARK | (fnv1a(event.id.as_bytes()) >> 1)
        };
        Seen {
            seq: event.seq,
            tag,
        }
    }

    /// The hub id this cursor names, when the event has one (else it
    /// named an event with a publisher's id).
    pub fn hub_id(self) -> Option<HubId> {
        (self.tag & PUBLISHER_MARK == 0).then_some(HubId {
            seq: self.seq,
            tag: self.tag,
        })
    }

    /// Written for a store that keeps text: `<seq>:<tag>`.
    pub fn to_text(self) -> String {
        format!("{}:{}", self.seq, self.tag)
    }

    /// Reads [`Seen::to_text`] back.
    pub fn from_text(text: &str) -> Option<Seen> {
        let (seq, tag) = text.split_once(':')?;
        Some(Seen {
            seq: seq.parse().ok()?,
            tag: tag.parse().ok()?,
        })
    }
}

/// A stable 64-bit hash (FNV-1a): the same on every node and every release,
/// which the standard library's hasher does not promise.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Where a history keeps its users' cursors (each engine, next to its
/// events). `store` keeps, per user, the greater of what it has and what
/// it is given (by sequence number): cursors never move back, also when
/// several nodes store at once.
pub trait SeenStore: Send + Sync {
    /// The user's cursor, if one is stored.
    fn load<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<Seen>, StoreError>>;

    /// Advances the cursors of a batch of users (each user once).
    fn store(&self, batch: Vec<(Arc<str>, Seen)>) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// Keeps a user's newest cursor and the one last flushed.
#[derive(Debug, Default)]
pub struct UserSeen {
    state: Mutex<SeenState>,
}

#[derive(Debug, Default, Clone, Copy)]
struct SeenState {
    newest: Option<Seen>,
    flushed: Option<Seen>,
}

impl UserSeen {
    fn lock(&self) -> MutexGuard<'_, SeenState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An event was written to one of the user's streams.
    pub fn advance(&self, seen: Seen) {
        let mut state = self.lock();
        if state.newest.is_none_or(|n| seen.seq > n.seq) {
            state.newest = Some(seen);
        }
    }

    fn newest(&self) -> Option<Seen> {
        self.lock().newest
    }
}

/// This node's cursors, between the streams that advance them and the
/// store they are flushed to.
#[derive(Debug, Default)]
pub struct LastSeen {
    users: Mutex<HashMap<Arc<str>, Arc<UserSeen>>>,
}

impl LastSeen {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<UserSeen>>> {
        self.users.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cursor a stream of `user` advances (shared by the user's
    /// streams on this node).
    pub fn slot(&self, user: &str) -> Arc<UserSeen> {
        let mut users = self.lock();
        if let Some(slot) = users.get(user) {
            return slot.clone();
        }
        let slot = Arc::new(UserSeen::default());
        users.insert(user.into(), slot.clone());
        slot
    }

    /// What this node knows of the user's cursor, flushed or not.
    pub fn local(&self, user: &str) -> Option<Seen> {
        self.lock().get(user).and_then(|slot| slot.newest())
    }

    /// Cursors that advanced since they were last taken, marked flushed;
    /// forgets users with no open stream whose cursor is flushed, so only
    /// the users of open streams (and those waiting for a flush) stay.
    pub fn take_advanced(&self) -> Vec<(Arc<str>, Seen)> {
        let mut users = self.lock();
        let mut batch = Vec::new();
        users.retain(|user, slot| {
            let mut state = slot.lock();
            if let Some(newest) = state.newest {
                if state.flushed.is_none_or(|f| f.seq < newest.seq) {
                    state.flushed = Some(newest);
                    batch.push((user.clone(), newest));
                    return true;
                }
            }
            drop(state);
            Arc::strong_count(slot) > 1
        });
        batch
    }

    /// A flush failed: the batch is taken again by the next one.
    pub fn not_flushed(&self, batch: &[(Arc<str>, Seen)]) {
        let users = self.lock();
        for (user, seen) in batch {
            if let Some(slot) = users.get(user) {
                let mut state = slot.lock();
                if state.flushed == Some(*seen) {
                    state.flushed = None;
                }
            }
        }
    }
}

/// The greater of two cursors, by sequence number.
pub fn newer(a: Option<Seen>, b: Option<Seen>) -> Option<Seen> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.seq > a.seq { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn at(seq: u64) -> Seen {
        Seen { seq, tag: seq * 10 }
    }

    #[test]
    fn a_cursor_only_moves_forward() {
        let seen = LastSeen::default();
        let slot = seen.slot("u");
        slot.advance(at(5));
        slot.advance(at(3));
        assert_eq!(seen.local("u"), Some(at(5)));
        slot.advance(at(7));
        assert_eq!(seen.local("u"), Some(at(7)));
    }

    #[test]
    fn advances_are_coalesced_and_taken_once() {
        let seen = LastSeen::default();
        let slot = seen.slot("u");
        for seq in 1..=100 {
            slot.advance(at(seq));
        }
        assert_eq!(seen.take_advanced(), vec![(Arc::from("u"), at(100))]);
        assert!(seen.take_advanced().is_empty());
        slot.advance(at(101));
        let batch = seen.take_advanced();
        assert_eq!(batch, vec![(Arc::from("u"), at(101))]);
        seen.not_flushed(&batch);
        assert_eq!(seen.take_advanced(), batch);
    }

    #[test]
    fn users_without_streams_are_forgotten_once_flushed() {
        let seen = LastSeen::default();
        seen.slot("u").advance(at(1));
        // The stream is gone, but its advance is not lost.
        assert_eq!(seen.take_advanced().len(), 1);
        assert_eq!(seen.local("u"), Some(at(1)));
        assert!(seen.take_advanced().is_empty());
        assert_eq!(seen.local("u"), None);
    }

    #[test]
    fn cursors_read_back_from_text() {
        let seen = Seen {
            seq: u64::MAX,
            tag: PUBLISHER_MARK | 5,
        };
        assert_eq!(Seen::from_text(&seen.to_text()), Some(seen));
        assert_eq!(Seen::from_text("5"), None);
        assert_eq!(Seen::from_text("a:1"), None);
        assert_eq!(seen.hub_id(), None);
        assert_eq!(at(2).hub_id(), Some(HubId { seq: 2, tag: 20 }));
    }

    #[test]
    fn newer_keeps_the_greater_sequence() {
        assert_eq!(newer(Some(at(2)), Some(at(3))), Some(at(3)));
        assert_eq!(newer(Some(at(4)), Some(at(3))), Some(at(4)));
        assert_eq!(newer(None, Some(at(3))), Some(at(3)));
        assert_eq!(newer(None, None), None);
    }

    #[test]
    fn an_event_with_a_publishers_id_is_named_by_a_hash_of_it() {
        use crate::event::{Draft, Target};
        let own = |id: &str| {
            let draft = Draft {
                id: Some(id.to_owned()),
                ..Draft::new(Target::All, "x")
            };
            Seen::of(&Event::new(3, draft, 0))
        };
        let hub = Seen::of(&Event::new(3, Draft::new(Target::All, "x"), 0));
        assert_eq!(own("a"), own("a"));
        assert_ne!(own("a"), own("b"));
        assert_eq!(own("a").hub_id(), None);
        assert_eq!(hub.hub_id().map(|id| id.seq), Some(3));
        assert_ne!(hub.tag, 0);
    }
}
