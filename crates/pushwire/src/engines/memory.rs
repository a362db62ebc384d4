//! A history kept in memory: a window of the newest events, lost on restart.
//! For tests, demos and deployments that accept losing history on restart.
//!
//! Sequence numbers are contiguous in the window, so finding where a cursor
//! points is an index computation, not a search. After a restart the
//! numbers start over at 1, with new tags (see `pushwire_core::id`): an id
//! handed out before the restart gets a reset, never another event.
//!
//! Users' last-seen cursors (`pushwire_core::seen`) are kept in a map next
//! to the window, lost on restart with it; past `MAX_CURSORS` the ones
//! older than the window are dropped.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::future::{self, BoxFuture, FutureExt};

use pushwire_core::event::{Draft, Event};
use pushwire_core::id::{locate, HubId, Span};
use pushwire_core::log::{now_ms, Cursor, EventLog, Fanout, Retained, Retention, StoreError};
use pushwire_core::seen::{Seen, SeenStore, MAX_CURSORS};

pub struct MemoryLog {
    retention: Retention,
    fanout: Arc<dyn Fanout>,
    state: Mutex<Window>,
    /// User → the newest event written to their streams.
    cursors: Mutex<HashMap<Arc<str>, Seen>>,
}

struct Window {
    events: VecDeque<Arc<Event>>,
    /// The sequence the next event gets; the first is 1.
    next_seq: u64,
    /// Publisher-supplied ids still in the window.
    by_id: HashMap<Arc<str>, u64>,
    /// The tag of the newest event that left the window.
    boundary_tag: u64,
}

impl MemoryLog {
    pub fn new(retention: Retention, fanout: Arc<dyn Fanout>) -> MemoryLog {
        MemoryLog {
            retention,
            fanout,
            state: Mutex::new(Window {
                events: VecDeque::new(),
                next_seq: 1,
                by_id: HashMap::new(),
                boundary_tag: 0,
            }),
            cursors: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append_now(&self, drafts: Vec<Draft>) -> Result<Vec<Arc<Event>>, StoreError> {
        let mut w = self.lock();
        // All or nothing: check every supplied id before storing any.
        let mut seen = std::collections::HashSet::new();
        for id in drafts.iter().filter_map(|d| d.id.as_deref()) {
            if w.by_id.contains_key(id) || !seen.insert(id) {
                return Err(StoreError::DuplicateId(id.to_owned()));
            }
        }
        let time = now_ms();
        let mut events = Vec::with_capacity(drafts.len());
        for draft in drafts {
            let seq = w.next_seq;
            w.next_seq += 1;
            let supplied_id = draft.id.is_some();
            let event = Arc::new(Event::new(seq, draft, time));
            if supplied_id {
                w.by_id.insert(event.id.clone(), seq);
            }
            w.events.push_back(event.clone());
            events.push(event);
        }
        while w.events.len() > self.retention.max_events {
            w.pop_oldest();
        }
        // Still under the lock: fanout sees batches in sequence order.
        self.fanout.deliver(&events);
        Ok(events)
    }

    fn first_seq(w: &Window) -> u64 {
        w.events.front().map_or(w.next_seq, |e| e.seq)
    }
}

impl Window {
    fn pop_oldest(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.by_id.remove(&old.id);
            self.boundary_tag = old.hub_tag();
        }
    }
}

impl SeenStore for MemoryLog {
    fn load<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<Seen>, StoreError>> {
        let cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        future::ready(Ok(cursors.get(user).copied())).boxed()
    }

    fn store(&self, batch: Vec<(Arc<str>, Seen)>) -> BoxFuture<'_, Result<(), StoreError>> {
        let first = Self::first_seq(&self.lock());
        let mut cursors = self.cursors.lock().unwrap_or_else(PoisonError::into_inner);
        for (user, seen) in batch {
            let kept = cursors.entry(user).or_insert(seen);
            if seen.seq > kept.seq {
                *kept = seen;
            }
        }
        if cursors.len() > MAX_CURSORS {
            cursors.retain(|_, seen| seen.seq.saturating_add(1) >= first);
        }
        future::ready(Ok(())).boxed()
    }
}

impl EventLog for MemoryLog {
    fn cursors(&self) -> Option<&dyn SeenStore> {
        Some(self)
    }

    fn append(&self, drafts: Vec<Draft>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
        Box::pin(async move {
            // A fanout far behind holds publishers back before they store.
            self.fanout.room().await;
            self.append_now(drafts)
        })
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
        let w = self.lock();
        let first = Self::first_seq(&w);
        let start = after.saturating_add(1).saturating_sub(first) as usize;
        let page = w.events.iter().skip(start).take(limit).cloned().collect();
        future::ready(Ok(page)).boxed()
    }

    fn resolve(&self, id: &str) -> BoxFuture<'_, Result<Cursor, StoreError>> {
        let w = self.lock();
        let cursor = match HubId::parse(id) {
            // A hub id: valid for the event it was issued for while that is
            // in the window, or is the one right before it.
            Some(id) => {
                let first = Self::first_seq(&w);
                let span = Span {
                    first,
                    next: w.next_seq,
                    boundary_tag: w.boundary_tag,
                };
                let stored = |seq: u64| {
                    let index = usize::try_from(seq.saturating_sub(first)).unwrap_or(usize::MAX);
                    Ok::<_, Infallible>(w.events.get(index).map(|e| e.hub_tag()))
                };
                let Ok(cursor) = locate(id, span, stored);
                cursor
            }
            None => w
                .by_id
                .get(id)
                .map_or(Cursor::Unknown, |&s| Cursor::After(s)),
        };
        future::ready(Ok(cursor)).boxed()
    }

    fn last(&self) -> BoxFuture<'_, Result<Option<Arc<Event>>, StoreError>> {
        future::ready(Ok(self.lock().events.back().cloned())).boxed()
    }

    fn retained(&self) -> BoxFuture<'_, Result<Retained, StoreError>> {
        let w = self.lock();
        let retained = Retained {
            events: w.events.len() as u64,
            oldest: w.events.front().map_or(0, |e| e.seq),
            newest: w.events.back().map_or(0, |e| e.seq),
            undelivered: 0,
        };
        future::ready(Ok(retained)).boxed()
    }

    fn trim(&self, now_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        let mut w = self.lock();
        let oldest_kept = now_ms.saturating_sub(self.retention.max_age.as_millis() as u64);
        let mut gone = 0;
        while w.events.front().is_some_and(|e| e.time < oldest_kept) {
            w.pop_oldest();
            gone += 1;
        }
        future::ready(Ok(gone)).boxed()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Duration;

    use super::*;
    use pushwire_core::event::Target;

    struct Nowhere;

    impl Fanout for Nowhere {
        fn deliver(&self, _: &[Arc<Event>]) {}
    }

    fn log(max_events: usize) -> MemoryLog {
        let retention = Retention {
            max_events,
            max_age: Duration::from_secs(3600),
        };
        MemoryLog::new(retention, Arc::new(Nowhere))
    }

    fn draft(id: Option<&str>) -> Draft {
        Draft {
            id: id.map(str::to_owned),
            ..Draft::new(Target::All, "x")
        }
    }

    /// Found while writing the `cursor` fuzz target: `+5` is a valid
    /// publisher id, and `str::parse::<u64>` reads it as 5, so a client
    /// resuming from it was sent back to sequence 5 instead of its own event.
    #[tokio::test]
    async fn a_publisher_id_that_reads_as_a_number_resolves_to_its_own_event() {
        let log = log(100);
        for _ in 0..6 {
            log.append(vec![draft(None)]).await.unwrap();
        }
        let plus = log.append(vec![draft(Some("+5"))]).await.unwrap();
        assert_eq!(log.resolve("+5").await.unwrap(), Cursor::After(plus[0].seq));
        let fifth = log.read_after(4, 1).await.unwrap();
        assert_eq!(log.resolve(&fifth[0].id).await.unwrap(), Cursor::After(5));
        assert_eq!(log.resolve("05").await.unwrap(), Cursor::Unknown);
    }

    #[tokio::test]
    async fn a_cursor_never_points_past_the_newest_event() {
        let log = log(3);
        let mut ids = vec![String::new()];
        for _ in 0..5 {
            ids.push(
                log.append(vec![draft(None)]).await.unwrap()[0]
                    .id
                    .to_string(),
            );
        }
        assert_eq!(log.resolve(&ids[5]).await.unwrap(), Cursor::After(5));
        assert_eq!(log.resolve("#6").await.unwrap(), Cursor::Unknown);
        // The window holds 3..=5; 2 left it last and is where 3 resumes.
        assert_eq!(log.resolve(&ids[2]).await.unwrap(), Cursor::After(2));
        assert_eq!(log.resolve(&ids[1]).await.unwrap(), Cursor::Unknown);
        assert_eq!(
            log.resolve(&u64::MAX.to_string()).await.unwrap(),
            Cursor::Unknown
        );
    }

    /// A restart of a memory hub starts the numbers over: the ids handed
    /// out before it must not resume over the new events that took their
    /// numbers.
    #[tokio::test]
    async fn ids_of_a_lost_history_do_not_resume_over_the_new_one() {
        let before = log(100);
        let mut old = Vec::new();
        for _ in 0..6 {
            old.push(
                before.append(vec![draft(None)]).await.unwrap()[0]
                    .id
                    .clone(),
            );
        }
        let after = log(100);
        for _ in 0..3 {
            after.append(vec![draft(None)]).await.unwrap();
        }
        for id in &old {
            assert_eq!(after.resolve(id).await.unwrap(), Cursor::Unknown, "{id}");
        }
        for _ in 0..5 {
            after.append(vec![draft(None)]).await.unwrap();
        }
        for id in &old {
            assert_eq!(after.resolve(id).await.unwrap(), Cursor::Unknown, "{id}");
        }
        // The untagged form of a number the new history holds is no better.
        assert_eq!(after.resolve("#4").await.unwrap(), Cursor::Unknown);
        assert_eq!(after.resolve("#0").await.unwrap(), Cursor::After(0));
    }

    #[tokio::test]
    async fn cursors_only_move_forward() {
        let log = log(10);
        let at = |seq| Seen { seq, tag: 7 };
        log.store(vec![("u".into(), at(5))]).await.unwrap();
        log.store(vec![("u".into(), at(3)), ("v".into(), at(1))])
            .await
            .unwrap();
        assert_eq!(log.load("u").await.unwrap(), Some(at(5)));
        assert_eq!(log.load("v").await.unwrap(), Some(at(1)));
        assert_eq!(log.load("w").await.unwrap(), None);
    }
}
