//! The fanout stage: committed events handed to the streams on a task of
//! their own, so that a publish is answered as soon as its events are stored
//! and never waits for the fanout of the events before it.
//!
//! An engine hands each committed batch to the [`Stage`] (as its
//! [`Fanout`]) in sequence order, as it would hand it to the registry; the
//! stage queues the events and its runner ([`Stage::new`] returns it, for
//! the server to spawn) delivers them to the real fanout in that same order,
//! at most [`CHUNK`] events per call, yielding between calls so that the
//! streams it wakes get to write. Events queued together reach a stream
//! together: its first push wakes it, the others find it awake, and it
//! writes them in one go.
//!
//! Order: one runner, one queue, so the registry sees batches in sequence
//! order, one at a time, after they are stored, exactly as before. A stream
//! that registers while events are queued here may find them in its queue
//! although they were committed before it opened; [`crate::hub::Hub::subscribe`]
//! skips everything up to the newest event it read when it opened.
//!
//! Bounds: at most [`MAX_PENDING`] events wait here. An engine that finds the
//! stage that far behind waits for room ([`Fanout::room`] or
//! [`Fanout::wait_for_room`]) before it stores more, so publishers slow down
//! to the pace of the fanout instead of growing the queue.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;

use crate::event::Event;
use crate::log::Fanout;
use crate::metrics::PublishStages;

/// Most events one call of the real fanout gets: each is a push per
/// receiving stream, gathered before any is made.
pub const CHUNK: usize = 16;
/// Most events waiting to be delivered before engines wait for room. A
/// burst of this many is answered without waiting for its fanout; beyond
/// it, publishers go at the pace of the streams. Every queued event adds
/// its fanout to the latency of the events behind it: with one subscriber
/// each, 256 events are a few milliseconds of work (4,096 were 70 to 100
/// ms once publishers outran the streams; docs/performance.md).
pub const MAX_PENDING: usize = 256;
/// How long a blocked engine waits before it looks again (in case the
/// runner is gone, as when the runtime shuts down).
const RECHECK: Duration = Duration::from_millis(100);

/// The fanout an engine feeds; see the module's documentation.
pub struct Stage {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    fanout: Arc<dyn Fanout>,
    /// The runner waits on it for events (a permit is kept if it is busy).
    work: Notify,
    /// Engines waiting for room wait on these.
    room: Condvar,
    room_async: Notify,
    /// From events queued to handed to the fanout, per handover.
    waited: Histogram,
}

#[derive(Default)]
struct Queue {
    /// Each event with the time it was queued.
    events: VecDeque<(Instant, Arc<Event>)>,
    /// The stage was dropped: the runner delivers what is queued and stops.
    closed: bool,
    /// The runner has stopped (or was never run): nothing drains the queue.
    stopped: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Queue {
    fn has_room(&self) -> bool {
        self.stopped || self.events.len() < MAX_PENDING
    }
}

impl Stage {
    /// A stage in front of `fanout`, and its runner: a future that delivers
    /// until the stage is dropped and its queue is empty. Spawn it once.
    pub fn new(fanout: Arc<dyn Fanout>) -> (Arc<Stage>, impl Future<Output = ()> + Send + 'static) {
        Stage::timed(fanout, PublishStages::default().fanout)
    }

    /// [`Stage::new`], observing into `waited` how long the oldest event of
    /// each handover to `fanout` waited in the queue.
    pub fn timed(
        fanout: Arc<dyn Fanout>,
        waited: Histogram,
    ) -> (Arc<Stage>, impl Future<Output = ()> + Send + 'static) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            fanout,
            work: Notify::new(),
            room: Condvar::new(),
            room_async: Notify::new(),
            waited,
        });
        // The guard lives in the runner from now on, so that a runner
        // dropped without ever running marks the stage stopped too.
        let stopped = Stopped(shared.clone());
        let runner = run(shared.clone(), stopped);
        (Arc::new(Stage { shared }), runner)
    }

    /// Events waiting to be delivered.
    pub fn pending(&self) -> usize {
        self.shared.lock().events.len()
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
    }
}

/// Marks the runner stopped however it ends (a panic in a fanout, a runtime
/// shutting down), so that no engine waits for room forever.
struct Stopped(Arc<Shared>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.room.notify_all();
        self.0.room_async.notify_waiters();
    }
}

async fn run(shared: Arc<Shared>, _stopped: Stopped) {
    loop {
        let chunk = match shared.next() {
            Next::Chunk(chunk) => chunk,
            Next::Wait => {
                shared.work.notified().await;
                continue;
            }
            Next::Done => return,
        };
        shared.fanout.deliver(&chunk);
        drop(chunk);
        shared.room.notify_all();
        shared.room_async.notify_waiters();
        // Let the streams just woken (queued on this worker) write.
        tokio::task::yield_now().await;
    }
}

/// What the runner does next.
enum Next {
    Chunk(Vec<Arc<Event>>),
    Wait,
    Done,
}

impl Shared {
    fn next(&self) -> Next {
        let mut queue = self.lock();
        if queue.events.is_empty() {
            return if queue.closed { Next::Done } else { Next::Wait };
        }
        if let Some((queued, _)) = queue.events.front() {
            self.waited.observe(queued.elapsed().as_secs_f64());
        }
        let n = queue.events.len().min(CHUNK);
        Next::Chunk(queue.events.drain(..n).map(|(_, event)| event).collect())
    }
}

impl Fanout for Stage {
    /// Queues a committed batch; never waits.
    fn deliver(&self, events: &[Arc<Event>]) {
        let mut queue = self.shared.lock();
        if queue.stopped {
            // Nothing runs the stage any more (the runtime is going away):
            // deliver here rather than drop anything.
            drop(queue);
            self.shared.fanout.deliver(events);
            return;
        }
        let now = Instant::now();
        queue
            .events
            .extend(events.iter().map(|event| (now, event.clone())));
        drop(queue);
        self.shared.work.notify_one();
    }

    fn resync(&self) {
        self.shared.fanout.resync();
    }

    fn close_user(&self, user: &str) -> usize {
        self.shared.fanout.close_user(user)
    }

    fn room(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            loop {
                let notified = self.shared.room_async.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.shared.lock().has_room() {
                    return;
                }
                notified.await;
            }
        })
    }

    fn wait_for_room(&self) {
        let mut queue = self.shared.lock();
        while !queue.has_room() {
            queue = match self.shared.room.wait_timeout(queue, RECHECK) {
                Ok((queue, _)) => queue,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::event::{Draft, Target};

    /// A fanout that records the sequence numbers it got, call by call.
    #[derive(Default)]
    struct Calls(Mutex<Vec<Vec<u64>>>);

    impl Fanout for Calls {
        fn deliver(&self, events: &[Arc<Event>]) {
            self.0
                .lock()
                .unwrap()
                .push(events.iter().map(|e| e.seq).collect());
        }
    }

    fn events(seqs: std::ops::Range<u64>) -> Vec<Arc<Event>> {
        seqs.map(|seq| {
            let draft = Draft::new(Target::All, "x");
            Arc::new(Event::new(seq, draft, 0))
        })
        .collect()
    }

    #[tokio::test]
    async fn delivers_every_batch_in_order_in_chunks() {
        let calls = Arc::new(Calls::default());
        let (stage, runner) = Stage::new(calls.clone());
        stage.deliver(&events(1..4));
        stage.deliver(&events(4..40));
        assert_eq!(stage.pending(), 39);
        drop(stage);
        runner.await;
        let calls = calls.0.lock().unwrap();
        let all: Vec<u64> = calls.iter().flatten().copied().collect();
        assert_eq!(all, (1..40).collect::<Vec<_>>());
        assert!(calls.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
    }

    #[tokio::test]
    async fn a_timed_stage_observes_each_handover_once() {
        let calls = Arc::new(Calls::default());
        let metrics = crate::metrics::Metrics::new();
        let (stage, runner) = Stage::timed(calls.clone(), metrics.stages.fanout.clone());
        stage.deliver(&events(1..(2 * CHUNK as u64 + 2)));
        drop(stage);
        runner.await;
        assert_eq!(calls.0.lock().unwrap().len(), 3);
        let text = metrics.render();
        let line = "pushwire_publish_stage_seconds_count{stage=\"fanout\"} 3";
        assert!(text.contains(line), "missing {line} in\n{text}");
    }

    #[tokio::test]
    async fn an_engine_waits_for_room_until_the_runner_catches_up() {
        let calls = Arc::new(Calls::default());
        let (stage, runner) = Stage::new(calls.clone());
        let full = MAX_PENDING as u64;
        stage.deliver(&events(1..full + 1));
        let mut room = stage.room();
        assert!(futures_util::poll!(&mut room).is_pending());
        let runner = tokio::spawn(runner);
        room.await;
        assert!(stage.pending() < MAX_PENDING);
        drop(stage);
        runner.await.unwrap();
        assert_eq!(
            calls.0.lock().unwrap().iter().flatten().count() as u64,
            full
        );
    }

    #[tokio::test]
    async fn with_its_runner_gone_the_stage_delivers_in_place() {
        let calls = Arc::new(Calls::default());
        let (stage, runner) = Stage::new(calls.clone());
        drop(runner);
        stage.deliver(&events(1..3));
        stage.wait_for_room();
        stage.room().await;
        assert_eq!(*calls.0.lock().unwrap(), vec![vec![1, 2]]);
    }
}
