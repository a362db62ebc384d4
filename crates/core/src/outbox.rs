//! One stream's queue ([`Outbox`]) and the frames that drain it
//! ([`Frames`]), which the transport writes to the socket.
//!
//! The hub pushes already-encoded frames into an outbox without waiting: a
//! push is a short critical section on the outbox's own lock, never an await.
//! The body pops frames when the connection can take them.
//!
//! Slow consumers: an outbox holds at most `capacity` frames. A push that
//! finds it full ends the stream at once (its queue is dropped, so memory
//! stays bounded) instead of growing or slowing anyone else down. The client
//! reconnects with `Last-Event-ID` and the history replays what it missed.
//!
//! Order and duplicates: every event frame carries its sequence number. A
//! body that replays history first remembers the last sequence it replayed
//! and skips queued live frames at or below it, so replay and live delivery
//! join with no gap and no duplicate.
//!
//! Last seen: the frames of a user's stream advance the user's cursor
//! ([`crate::seen`]) as each event frame leaves the stream (replayed or
//! taken off the queue for the socket), never before.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream};
use std::future::Future;
use tokio::time::Sleep;

use crate::event::Event;
use crate::log::StoreError;
use crate::registry::Registration;
use crate::route::Interest;
use crate::seen::{Seen, UserSeen};

/// Why a stream ended from the hub's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A management call closed the user's streams.
    Closed,
    /// The stream's queue overflowed.
    SlowConsumer,
    /// The hub is shutting down.
    Shutdown,
    /// Live delivery lost continuity (see [`crate::log::Fanout::resync`]):
    /// the client resumes from the history.
    Resync,
}

impl End {
    /// What the stream's end is called in logs.
    pub fn reason(self) -> StreamEnd {
        match self {
            End::Closed => StreamEnd::Closed,
            End::SlowConsumer => StreamEnd::SlowConsumer,
            End::Shutdown => StreamEnd::Shutdown,
            End::Resync => StreamEnd::Resync,
        }
    }
}

/// Why a stream ended, from either side: what the edge logs when it lets
/// go of a stream. The core decides every reason but [`StreamEnd::ClientGone`],
/// which is what is left when the core did not end the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// The client went away (or its connection broke) first.
    ClientGone,
    /// The stream's queue overflowed.
    SlowConsumer,
    /// A management call closed the user's streams.
    Closed,
    /// The subscriber token's expiry came.
    TokenExpired,
    /// The hub's own stream lifetime (`--stream-timeout`) came.
    StreamTimeout,
    /// The hub is shutting down.
    Shutdown,
    /// Live delivery lost continuity; the client resumes from the history.
    Resync,
    /// A history read failed while replaying.
    HistoryFault,
}

impl StreamEnd {
    /// The stable name logs use.
    pub fn label(self) -> &'static str {
        match self {
            StreamEnd::ClientGone => "client_gone",
            StreamEnd::SlowConsumer => "slow_consumer",
            StreamEnd::Closed => "closed",
            StreamEnd::TokenExpired => "token_expired",
            StreamEnd::StreamTimeout => "stream_timeout",
            StreamEnd::Shutdown => "shutdown",
            StreamEnd::Resync => "resync",
            StreamEnd::HistoryFault => "history_fault",
        }
    }
}

impl std::fmt::Display for StreamEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// When a stream's lifetime is over, and which limit set it.
pub struct Deadline {
    pub after: std::time::Duration,
    /// [`StreamEnd::TokenExpired`] or [`StreamEnd::StreamTimeout`].
    pub why: StreamEnd,
}

/// A stream's queue of encoded frames.
#[derive(Debug)]
pub struct Outbox {
    capacity: usize,
    state: Mutex<OutboxState>,
}

#[derive(Debug, Default)]
struct OutboxState {
    /// (the event, frame); sequence 0 marks frames that are not events.
    queue: VecDeque<(Seen, Bytes)>,
    end: Option<End>,
    waker: Option<Waker>,
}

/// A push found the queue full; the stream has been ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflow;

impl Outbox {
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            capacity: capacity.max(1),
            state: Mutex::new(OutboxState::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        // A panic elsewhere cannot leave the queue half-written: recover it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues an event frame. On overflow the stream ends as a slow consumer.
    pub fn push(&self, seen: Seen, frame: Bytes) -> Result<(), Overflow> {
        let mut state = self.lock();
        if state.end.is_some() {
            return Ok(());
        }
        if state.queue.len() >= self.capacity {
            state.queue = VecDeque::new();
            state.end = Some(End::SlowConsumer);
            wake(&mut state);
            return Err(Overflow);
        }
        state.queue.push_back((seen, frame));
        wake(&mut state);
        Ok(())
    }

    /// Queues a heartbeat comment unless frames are already waiting (they
    /// keep the connection busy anyway). Heartbeats never overflow a queue.
    pub fn push_heartbeat(&self, frame: &Bytes) {
        let mut state = self.lock();
        if state.end.is_none() && state.queue.is_empty() {
            state.queue.push_back((NOT_AN_EVENT, frame.clone()));
            wake(&mut state);
        }
    }

    /// Ends the stream: frames still queued are dropped.
    pub fn end(&self, why: End) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.end = Some(why);
            state.queue = VecDeque::new();
            wake(&mut state);
        }
    }

    /// How the stream ended, if it did.
    pub fn ended(&self) -> Option<End> {
        self.lock().end
    }

    /// The next frame after `skip_through` (with the event it carries,
    /// sequence 0 for a heartbeat), or `None` once ended.
    pub(crate) fn poll_pop(
        &self,
        cx: &mut Context<'_>,
        skip_through: u64,
    ) -> Poll<Option<(Seen, Bytes)>> {
        let mut state = self.lock();
        while let Some((seen, frame)) = state.queue.pop_front() {
            if seen.seq == 0 || seen.seq > skip_through {
                return Poll::Ready(Some((seen, frame)));
            }
        }
        if state.end.is_some() {
            return Poll::Ready(None);
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// What a queued frame that is not an event carries.
const NOT_AN_EVENT: Seen = Seen { seq: 0, tag: 0 };

fn wake(state: &mut OutboxState) {
    if let Some(w) = state.waker.take() {
        w.wake();
    }
}

/// Events replayed from history, already filtered for one stream.
pub type Replay = BoxStream<'static, Result<Arc<Event>, StoreError>>;

/// A stream's frames in wire order: the opening frames, the replay, then
/// the live queue. It ends when the hub ends the stream (closed, slow
/// consumer, shutdown, resync), when its lifetime is over, or when a
/// history read fails during replay (never skipping past what could not be
/// read: the client reconnects and tries again).
///
/// Dropping it unregisters the stream, which is how a closed or failed
/// connection leaves the online count at once.
pub struct Frames {
    /// Frames sent before anything else (the `retry:` frame, a reset notice).
    head: VecDeque<Bytes>,
    replay: Option<Replay>,
    skip_through: u64,
    outbox: Arc<Outbox>,
    /// What the stream listens to, for what the edge logs about it.
    interest: Arc<Interest>,
    deadline: Option<(Pin<Box<Sleep>>, StreamEnd)>,
    /// Set when the frames ran out on the core's side (deadline, history
    /// fault); an outbox the hub ended says why itself.
    ended: Option<StreamEnd>,
    /// The cursor of the stream's user, advanced as events leave.
    seen: Option<Arc<UserSeen>>,
    _registration: Registration,
}

impl Frames {
    pub fn new(
        head: Vec<Bytes>,
        replay: Option<Replay>,
        skip_through: u64,
        outbox: Arc<Outbox>,
        interest: Arc<Interest>,
        registration: Registration,
        lifetime: Option<Deadline>,
    ) -> Frames {
        Frames {
            head: head.into(),
            replay,
            skip_through,
            outbox,
            interest,
            deadline: lifetime.map(|d| (Box::pin(tokio::time::sleep(d.after)), d.why)),
            ended: None,
            seen: None,
            _registration: registration,
        }
    }

    /// Makes every event the stream yields advance its user's cursor.
    pub fn advancing(mut self, seen: Arc<UserSeen>) -> Frames {
        self.seen = Some(seen);
        self
    }

    /// What the stream listens to.
    pub fn interest(&self) -> &Interest {
        &self.interest
    }

    /// Why the stream is over, asked when the edge lets go of it: the
    /// core's reason if it ended the stream, else the client left.
    pub fn end_reason(&self) -> StreamEnd {
        self.ended
            .or_else(|| self.outbox.ended().map(End::reason))
            .unwrap_or(StreamEnd::ClientGone)
    }
}

impl Stream for Frames {
    type Item = Bytes;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        let this = &mut *self;
        if let Some(frame) = this.head.pop_front() {
            return Poll::Ready(Some(frame));
        }
        if let Some((deadline, why)) = &mut this.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                this.ended = Some(*why);
                return Poll::Ready(None);
            }
        }
        if let Some(replay) = &mut this.replay {
            match replay.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    this.skip_through = event.seq;
                    if let Some(seen) = &this.seen {
                        seen.advance(Seen::of(&event));
                    }
                    return Poll::Ready(Some(event.frame().clone()));
                }
                Poll::Ready(Some(Err(error))) => {
                    tracing::warn!(%error, "history read failed during replay; ending stream");
                    this.ended = Some(StreamEnd::HistoryFault);
                    return Poll::Ready(None);
                }
                Poll::Ready(None) => this.replay = None,
                Poll::Pending => return Poll::Pending,
            }
        }
        let popped = this.outbox.poll_pop(cx, this.skip_through);
        if let (Poll::Ready(Some((event, _))), Some(seen)) = (&popped, &this.seen) {
            if event.seq != 0 {
                seen.advance(*event);
            }
        }
        popped.map(|frame| frame.map(|(_, bytes)| bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64) -> Seen {
        Seen { seq, tag: 1 }
    }

    #[test]
    fn overflow_ends_the_stream_and_frees_the_queue() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(at(1), Bytes::from_static(b"a")), Ok(()));
        assert_eq!(outbox.push(at(2), Bytes::from_static(b"b")), Ok(()));
        assert_eq!(outbox.push(at(3), Bytes::from_static(b"c")), Err(Overflow));
        assert_eq!(outbox.ended(), Some(End::SlowConsumer));
        assert!(outbox.lock().queue.is_empty());
        // Later pushes to an ended stream are ignored, not errors.
        assert_eq!(outbox.push(at(4), Bytes::from_static(b"d")), Ok(()));
    }

    #[test]
    fn heartbeats_do_not_pile_up() {
        let outbox = Outbox::new(10);
        let beat = Bytes::from_static(b":\n\n");
        outbox.push_heartbeat(&beat);
        outbox.push_heartbeat(&beat);
        assert_eq!(outbox.lock().queue.len(), 1);
    }

    #[test]
    fn frames_already_replayed_are_skipped() {
        let outbox = Outbox::new(10);
        for seq in 1..=5 {
            outbox.push(at(seq), Bytes::from(seq.to_string())).ok();
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(
            outbox.poll_pop(&mut cx, 3),
            Poll::Ready(Some((at(4), Bytes::from("4"))))
        );
        assert_eq!(
            outbox.poll_pop(&mut cx, 3),
            Poll::Ready(Some((at(5), Bytes::from("5"))))
        );
        assert!(outbox.poll_pop(&mut cx, 3).is_pending());
        outbox.end(End::Closed);
        assert_eq!(outbox.poll_pop(&mut cx, 3), Poll::Ready(None));
    }
}
