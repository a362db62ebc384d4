//! One worker process of a `fanout` or `spread` run: opens its share of the
//! streams from its own loopback source addresses, reads them with the
//! WHATWG parser of `pushwire_client::sse`, and reports to the coordinator
//! on stdout (`ready`, `done`, `result`) until told to `stop` on stdin.

use std::cell::{Cell, RefCell};
use std::io::BufRead;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;

use crate::plan::{topic_name, unix_nanos, Expect, Kind};
use crate::tally::{histogram_pairs, StreamState, Tally};
use crate::target::Target;
use crate::wire::{loopback, open_sse, SseStream};

#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    target: Target,
    #[arg(long, value_enum)]
    kind: Kind,
    #[arg(long)]
    hub: SocketAddr,
    #[arg(long)]
    topic_prefix: String,
    /// Topics of the run (fanout: 1).
    #[arg(long)]
    topics: usize,
    /// Global number of this worker's first stream.
    #[arg(long)]
    first: usize,
    #[arg(long)]
    count: usize,
    #[arg(long)]
    events: usize,
    /// Last octets of the loopback source addresses to use.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<u8>,
    #[arg(long)]
    concurrency: usize,
    #[arg(long, value_parser = humantime::parse_duration)]
    connect_deadline: Duration,
    #[arg(long, default_value_t = 3)]
    connect_retries: usize,
    /// The worker stops by itself after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    lifetime: Duration,
}

/// Reads one stream until it ends or the worker stops.
async fn read_stream(
    mut sse: SseStream,
    state: Rc<RefCell<StreamState>>,
    tally: Rc<RefCell<Tally>>,
    all_complete: Rc<Notify>,
) {
    let mut parser = pushwire_client::sse::Parser::default();
    let mut body = Vec::with_capacity(4096);
    let mut buf = vec![0u8; 4096];
    let mut input = std::mem::take(&mut sse.leftover);
    loop {
        let now = unix_nanos();
        body.clear();
        let open = match sse.framing.feed(&input, &mut body) {
            Ok(open) => open,
            Err(_) => {
                tally.borrow_mut().protocol_errors += 1;
                return;
            }
        };
        let events = parser.feed(&body);
        if !events.is_empty() {
            let mut t = tally.borrow_mut();
            let mut state = state.borrow_mut();
            for event in &events {
                if t.record(&mut state, &event.data, now) {
                    all_complete.notify_one();
                }
            }
        }
        if !open {
            let mut t = tally.borrow_mut();
            t.closed += 1;
            t.closed_by_body_end += 1;
            return;
        }
        match sse.stream.read(&mut buf).await {
            Ok(0) => {
                let mut t = tally.borrow_mut();
                t.closed += 1;
                t.closed_by_eof += 1;
                return;
            }
            Err(_) => {
                let mut t = tally.borrow_mut();
                t.closed += 1;
                t.closed_by_error += 1;
                return;
            }
            Ok(n) => {
                input.clear();
                input.extend_from_slice(&buf[..n]);
            }
        }
    }
}

/// A worker: opens its streams, says `ready`, reads them, says `done` when
/// every stream has all its events, and on `stop` (or when stdin closes, or
/// its lifetime ends) prints its `result` and exits.
pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let deadline = Instant::now() + args.lifetime;
    let stop = Arc::new(Notify::new());
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(line) if line.trim() != "stop" => continue,
                    _ => break,
                }
            }
            stop.notify_one();
        });
    }
    let tally = Rc::new(RefCell::new(Tally::new()?));
    let all_complete = Rc::new(Notify::new());
    let started = Instant::now();
    let connect_by = started + args.connect_deadline;
    let next = Rc::new(Cell::new(0usize));
    let failed = Rc::new(Cell::new(0usize));
    let retried = Rc::new(Cell::new(0usize));
    let registry: Rc<RefCell<Vec<Rc<RefCell<StreamState>>>>> = Rc::default();
    let first_error: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let sources: Rc<Vec<u8>> = Rc::new(if args.sources.is_empty() {
        vec![1]
    } else {
        args.sources.clone()
    });
    let mut connectors = Vec::new();
    for _ in 0..args.concurrency.clamp(1, args.count.max(1)) {
        let (next, failed, retried, first_error, sources) = (
            next.clone(),
            failed.clone(),
            retried.clone(),
            first_error.clone(),
            sources.clone(),
        );
        let (tally, all_complete, registry) =
            (tally.clone(), all_complete.clone(), registry.clone());
        let prefix = args.topic_prefix.clone();
        let (kind, target, hub) = (args.kind, args.target, args.hub);
        let (first, count, topics, events) = (args.first, args.count, args.topics, args.events);
        let retries = args.connect_retries;
        connectors.push(tokio::task::spawn_local(async move {
            loop {
                let j = next.get();
                if j >= count {
                    return;
                }
                next.set(j + 1);
                let index = first + j;
                let expect = Expect::new(kind, index, topics, events);
                let path = target.stream_path(&topic_name(&prefix, kind, expect.topic));
                let source = loopback(sources[j % sources.len()]);
                // Like a browser's EventSource, try again a little later
                // when the hub refuses a stream.
                let mut outcome = Err(anyhow::anyhow!("not tried"));
                for attempt in 0..=retries {
                    if attempt > 0 {
                        retried.set(retried.get() + 1);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    let left = connect_by.saturating_duration_since(Instant::now());
                    outcome = match tokio::time::timeout(left, open_sse(hub, source, &path)).await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow::anyhow!("connect deadline passed")),
                    };
                    if outcome.is_ok() || Instant::now() >= connect_by {
                        break;
                    }
                }
                match outcome {
                    Ok(sse) => {
                        let state = Rc::new(RefCell::new(StreamState::new(expect)));
                        registry.borrow_mut().push(state.clone());
                        {
                            let mut t = tally.borrow_mut();
                            t.streams += 1;
                            t.expected += expect.count;
                            if expect.count == 0 {
                                t.complete += 1;
                            }
                        }
                        tokio::task::spawn_local(read_stream(
                            sse,
                            state,
                            tally.clone(),
                            all_complete.clone(),
                        ));
                    }
                    Err(e) => {
                        failed.set(failed.get() + 1);
                        if first_error.borrow().is_none() {
                            *first_error.borrow_mut() = Some(format!("{e:#}"));
                        }
                    }
                }
            }
        }));
    }
    for connector in connectors {
        connector.await?;
    }
    let ready = json!({
        "streams": tally.borrow().streams,
        "failed": failed.get(),
        "retries": retried.get(),
        "first_error": first_error.borrow().clone(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    println!("ready {ready}");
    let complete_now = {
        let t = tally.borrow();
        t.complete >= t.streams
    };
    let lifetime = tokio::time::sleep_until(deadline.into());
    tokio::pin!(lifetime);
    let finished = complete_now
        || tokio::select! {
            _ = all_complete.notified() => true,
            _ = stop.notified() => false,
            _ = &mut lifetime => false,
        };
    if finished {
        println!("done");
        tokio::select! {
            _ = stop.notified() => {}
            _ = &mut lifetime => {}
        }
    }
    let t = tally.borrow();
    // Where the losses are: streams that missed events, and the first and
    // last event missed by any stream.
    let (mut lossy, mut first_missing, mut last_missing) = (0usize, None::<usize>, None::<usize>);
    for state in registry.borrow().iter() {
        if let Some((first, last)) = state.borrow().missing_range() {
            lossy += 1;
            first_missing = Some(first_missing.map_or(first, |m| m.min(first)));
            last_missing = Some(last_missing.map_or(last, |m| m.max(last)));
        }
    }
    let result = json!({
        "streams_with_loss": lossy,
        "first_missing_seq": first_missing,
        "last_missing_seq": last_missing,
        "streams": t.streams,
        "failed": failed.get(),
        "expected": t.expected,
        "received": t.received,
        "unique": t.unique,
        "duplicates": t.duplicates,
        "misrouted": t.misrouted,
        "unparsed": t.unparsed,
        "closed": t.closed,
        "closed_by_body_end": t.closed_by_body_end,
        "closed_by_eof": t.closed_by_eof,
        "closed_by_error": t.closed_by_error,
        "protocol_errors": t.protocol_errors,
        "complete": t.complete,
        "first_delivery_ns": t.first_delivery_ns,
        "last_delivery_ns": t.last_delivery_ns,
        "latency": histogram_pairs(&t.latency),
    });
    println!("result {result}");
    // The stream tasks still hold their connections; leave without waiting.
    std::process::exit(0);
}
