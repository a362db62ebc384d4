//! Throughput of the embedded history with `fsync = always`, without HTTP:
//! concurrent single-event appends (group commit) and one appender alone,
//! batch appends, replay, and how long opening a filled history takes. One
//! line per figure.
//!
//! Run: `cargo bench --bench history`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pushwire::engines::embedded::EmbeddedLog;
use pushwire_core::event::Target;
use pushwire_core::event::{Draft, Event};
use pushwire_core::log::{EventLog, Fanout, Fsync, Retention};

const RUN: Duration = Duration::from_secs(3);
const CONCURRENT_APPENDERS: usize = 64;
const BATCH: usize = 1000;
const REPLAY_EVENTS: usize = 100_000;
const REPLAY_PAGE: usize = 1024;

struct NoFanout;

impl Fanout for NoFanout {
    fn deliver(&self, _: &[Arc<Event>]) {}
}

fn draft() -> Draft {
    Draft::new(Target::user("bench"), "x".repeat(64))
}

fn open(dir: &std::path::Path) -> EmbeddedLog {
    let retention = Retention {
        max_events: 10_000_000,
        max_age: Duration::from_secs(86_400),
    };
    EmbeddedLog::open(dir, retention, Fsync::Always, Arc::new(NoFanout)).expect("open history")
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    // (a) Single-event appends from concurrent tasks: one fsync per group.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = Arc::new(open(dir.path()));
    let appended = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENT_APPENDERS {
        let (log, appended) = (log.clone(), appended.clone());
        tasks.push(tokio::spawn(async move {
            while started.elapsed() < RUN {
                log.append(vec![draft()]).await.expect("append");
                appended.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.expect("appender");
    }
    let seconds = started.elapsed().as_secs_f64();
    let n = appended.load(Ordering::Relaxed);
    println!(
        "single-event appends, {CONCURRENT_APPENDERS} concurrent appenders, fsync always: \
         {:.0} appends/s ({n} in {seconds:.2} s)",
        n as f64 / seconds
    );
    drop(log);

    // For comparison: one appender alone pays a whole commit per event.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path());
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < RUN {
        log.append(vec![draft()]).await.expect("append");
        n += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "single-event appends, 1 appender, fsync always: {:.0} appends/s \
         ({:.2} ms per durable commit)",
        n as f64 / seconds,
        seconds * 1000.0 / n as f64
    );
    drop(log);

    // (b) Batches of 1000 events from one appender.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path());
    let started = Instant::now();
    let mut events = 0usize;
    while started.elapsed() < RUN {
        events += log
            .append((0..BATCH).map(|_| draft()).collect())
            .await
            .expect("append")
            .len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "batch appends of {BATCH}, one appender, fsync always: {:.0} events/s \
         ({events} in {seconds:.2} s)",
        events as f64 / seconds
    );
    drop(log);

    // (c) Replay of 100,000 events in pages, as a resuming stream reads them.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = open(dir.path());
    for _ in 0..REPLAY_EVENTS / BATCH {
        log.append((0..BATCH).map(|_| draft()).collect())
            .await
            .expect("append");
    }
    let started = Instant::now();
    let (mut after, mut read) = (0u64, 0usize);
    loop {
        let page = log.read_after(after, REPLAY_PAGE).await.expect("read");
        let Some(last) = page.last() else { break };
        after = last.seq;
        read += page.len();
    }
    let elapsed = started.elapsed();
    assert_eq!(read, REPLAY_EVENTS);
    println!(
        "replay of {read} events in pages of {REPLAY_PAGE}: {:.0} events/s, {:.0} ms total",
        read as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0
    );
    drop(log);

    // Opening the same history again (recovery of the head after a clean stop).
    let started = Instant::now();
    let log = open(dir.path());
    println!(
        "open of a history of {REPLAY_EVENTS} events after a clean stop: {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    drop(log);
}
