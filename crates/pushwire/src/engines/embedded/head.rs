//! The in-memory head of the history: what readers need without a
//! transaction. `last`, the bounds of the retained range (for `resolve`) and
//! the newest few thousand events (so that a client back after a short
//! absence is replayed from memory, not from the file) come from here.
//!
//! Only the writer thread changes it, after each commit and before the
//! fanout sees the events, so a reader never finds in the head an event
//! that is not stored, and a stream that registered for live delivery and
//! then replays from the head misses nothing. `recent` always holds
//! consecutive sequence numbers ending at `next_seq - 1`, within
//! [`RECENT_EVENTS`] events and [`RECENT_BYTES`] of frames, and never an
//! event retention has dropped. After the file is reopened, what the file
//! holds is the truth and the head follows it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pushwire_core::event::Event;
use pushwire_core::id::Span;

use super::recovery::Recovered;

/// The newest events kept decoded in memory, so that a client reconnecting
/// after a short absence is replayed without reading the file: at most this
/// many events, and at most [`RECENT_BYTES`] of encoded frames.
/// (Unit tests use a small window so that replays cross from disk to memory.)
const RECENT_EVENTS: usize = if cfg!(test) { 64 } else { 4096 };
const RECENT_BYTES: usize = 16 * 1024 * 1024;

/// What readers need without a transaction; written by the writer thread
/// after each commit and before the fanout.
pub(super) struct Head {
    pub(super) next_seq: u64,
    /// The oldest retained sequence number (`next_seq` when none is).
    pub(super) first_seq: u64,
    pub(super) last: Option<Arc<Event>>,
    /// The tag of the newest event retention removed.
    boundary_tag: u64,
    /// The newest events stored since the log was opened: consecutive
    /// sequence numbers ending at `next_seq - 1`.
    recent: VecDeque<Arc<Event>>,
    /// Bytes of the frames in `recent`.
    recent_bytes: usize,
}

impl Head {
    /// The head of a history just opened: its bounds and newest event, and
    /// nothing in memory yet.
    pub(super) fn new(recovered: &Recovered) -> Head {
        Head {
            next_seq: recovered.next_seq,
            first_seq: recovered.first_seq,
            last: recovered.last.clone(),
            boundary_tag: recovered.boundary_tag,
            recent: VecDeque::new(),
            recent_bytes: 0,
        }
    }

    /// Up to `limit` events after `after`, if `recent` holds all of them.
    pub(super) fn recent_after(&self, after: u64, limit: usize) -> Option<Vec<Arc<Event>>> {
        let oldest = self.recent.front()?.seq;
        let skip = usize::try_from(after.checked_add(1)?.checked_sub(oldest)?).ok()?;
        Some(self.recent.iter().skip(skip).take(limit).cloned().collect())
    }

    /// What a hub id may point into (see `pushwire_core::id::locate`).
    pub(super) fn span(&self) -> Span {
        Span {
            first: self.first_seq,
            next: self.next_seq,
            boundary_tag: self.boundary_tag,
        }
    }

    /// The tag of a retained event, if it is among the recent ones.
    pub(super) fn recent_tag(&self, seq: u64) -> Option<u64> {
        let oldest = self.recent.front()?.seq;
        let index = usize::try_from(seq.checked_sub(oldest)?).ok()?;
        self.recent.get(index).map(|e| e.hub_tag())
    }

    /// Records a committed group and what retention left.
    pub(super) fn committed(
        &mut self,
        events: &[Arc<Event>],
        next_seq: u64,
        first_seq: u64,
        boundary_tag: u64,
        empty: bool,
    ) {
        self.next_seq = next_seq;
        self.first_seq = first_seq;
        self.boundary_tag = boundary_tag;
        for event in events {
            self.recent_bytes += event.frame().len();
            self.recent.push_back(event.clone());
        }
        while self.recent.len() > RECENT_EVENTS
            || self.recent_bytes > RECENT_BYTES
            || self.recent.front().is_some_and(|e| e.seq < first_seq)
        {
            match self.recent.pop_front() {
                Some(old) => self.recent_bytes -= old.frame().len(),
                None => break,
            }
        }
        if let Some(newest) = events.last() {
            self.last = Some(newest.clone());
        }
        if empty {
            self.last = None;
        }
    }

    /// After the file was opened again, what it holds is the truth. With
    /// `interval` or `never`, commits that had not reached the disk are gone
    /// from it, so they go from memory too (`recent` stays consecutive).
    pub(super) fn reopened(&mut self, recovered: &Recovered, next_seq: u64) {
        let kept = recovered.last.as_ref().map(|e| e.seq);
        if self.last.as_ref().map(|e| e.seq) != kept {
            self.recent.clear();
            self.recent_bytes = 0;
            self.last = recovered.last.clone();
        }
        self.next_seq = next_seq;
        self.boundary_tag = recovered.boundary_tag;
        self.first_seq = if recovered.count == 0 {
            next_seq
        } else {
            recovered.first_seq
        };
    }
}

pub(super) fn lock(head: &Mutex<Head>) -> MutexGuard<'_, Head> {
    head.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pushwire_core::log::{EventLog, Fsync};

    use crate::engines::embedded::{read_page, EmbeddedLog};

    use super::*;
    use crate::engines::embedded::testing::{draft, retention, Seen};

    #[tokio::test]
    async fn reads_from_memory_and_from_disk_agree() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Seen::default());
        let log =
            EmbeddedLog::open(dir.path(), retention(4500), Fsync::Always, seen.clone()).unwrap();
        for b in 0..715 {
            let batch = (0..7).map(|i| draft("u", &format!("{b}-{i}"))).collect();
            log.append(batch).await.unwrap();
        }
        // 5005 stored, 4500 retained (506..=5005), the newest in memory.
        assert_eq!(lock(&log.head).recent.len(), RECENT_EVENTS);
        let oldest_in_memory = 5006 - RECENT_EVENTS as u64;
        let edge = oldest_in_memory - 1;
        for after in [0, 505, 506, edge - 2, edge - 1, edge, edge + 1, 5004, 5005] {
            for limit in [1, 100, 1024] {
                let served = log.read_after(after, limit).await.unwrap();
                let from_disk = read_page(&log.db.get().unwrap(), after, limit).unwrap();
                assert_eq!(served, from_disk, "after {after}, limit {limit}");
            }
        }
        let all = log.read_after(0, 10_000).await.unwrap();
        assert_eq!(all.first().map(|e| e.seq), Some(506));
        assert_eq!(all.len(), 4500);
    }
}
