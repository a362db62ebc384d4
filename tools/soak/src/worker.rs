//! A worker process: holds its share of the streams open from its own
//! loopback source addresses, closes and reopens `--churn` percent of them
//! every second, counts the events it reads, and reports when the
//! coordinator closes its stdin.

use std::cell::Cell;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Args)]
pub struct WorkerArgs {
    #[arg(long)]
    hub: SocketAddr,
    /// Global number of this worker's first stream.
    #[arg(long)]
    first: usize,
    #[arg(long)]
    count: usize,
    /// Last octets of the loopback source addresses to use.
    #[arg(long, value_delimiter = ',')]
    sources: Vec<u8>,
    #[arg(long)]
    churn: f64,
    /// The worker stops by itself after this long.
    #[arg(long, value_parser = humantime::parse_duration)]
    lifetime: Duration,
}

fn loopback(octet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet))
}

/// Counters shared by a worker's streams (one thread, so plain cells).
#[derive(Default)]
struct Counters {
    opened: Cell<u64>,
    failed: Cell<u64>,
    events: Cell<u64>,
}

/// Opens stream `n` and returns once its response head arrived.
async fn open(hub: SocketAddr, source: IpAddr, n: usize) -> anyhow::Result<(TcpStream, Vec<u8>)> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(hub).await?;
    // HTTP/1.0: the body is not chunked and ends with the connection.
    let request = format!("GET /sse/subscribe/soak-{n} HTTP/1.0\r\nHost: {hub}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before headers");
        }
        head.extend_from_slice(&buf[..n]);
    };
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        bail!("refused");
    }
    Ok((stream, head.split_off(end + 4)))
}

/// One stream slot: opens (again after a failure, 200 ms later) and reads
/// until aborted (churn) or the hub ends the stream.
async fn hold(
    hub: SocketAddr,
    source: IpAddr,
    n: usize,
    counters: Rc<Counters>,
    ready: Rc<Cell<usize>>,
) {
    let (mut stream, rest) = loop {
        match open(hub, source, n).await {
            Ok(opened) => break opened,
            Err(_) => {
                counters.failed.set(counters.failed.get() + 1);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    counters.opened.set(counters.opened.get() + 1);
    ready.set(ready.get() + 1);
    let mut parser = pushwire_client::sse::Parser::default();
    let mut seen = parser.feed(&rest).len() as u64;
    let mut buf = vec![0u8; 4096];
    while let Ok(read) = stream.read(&mut buf).await {
        if read == 0 {
            break;
        }
        seen += parser.feed(&buf[..read]).len() as u64;
        counters.events.set(counters.events.get() + seen);
        seen = 0;
    }
}

pub async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    if args.sources.is_empty() {
        bail!("no source addresses");
    }
    let deadline = Instant::now() + args.lifetime;
    let counters = Rc::new(Counters::default());
    let ready = Rc::new(Cell::new(0usize));
    let source = |slot: usize| loopback(args.sources[slot % args.sources.len()]);
    let mut slots = Vec::with_capacity(args.count);
    // Open in waves, so the hub's accept queue never overflows.
    for slot in 0..args.count {
        let task = tokio::task::spawn_local(hold(
            args.hub,
            source(slot),
            args.first + slot,
            counters.clone(),
            ready.clone(),
        ));
        slots.push(task);
        while slot + 1 - ready.get() >= 256 {
            if Instant::now() >= deadline {
                bail!("deadline passed while opening streams");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    while ready.get() < args.count {
        if Instant::now() >= deadline {
            bail!("deadline passed while opening streams");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("ready");
    std::io::stdout().flush()?;

    // Churn until the coordinator closes our stdin (or the deadline).
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
        let _ = stop_tx.send(());
    });
    let per_second = ((args.count as f64) * args.churn / 100.0).round() as usize;
    let mut next = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {}
        }
        if Instant::now() >= deadline {
            break;
        }
        for _ in 0..per_second.min(args.count) {
            let slot = next % args.count;
            next += 1;
            slots[slot].abort();
            slots[slot] = tokio::task::spawn_local(hold(
                args.hub,
                source(slot),
                args.first + slot,
                counters.clone(),
                ready.clone(),
            ));
        }
    }
    for slot in &slots {
        slot.abort();
    }
    // Let the aborted tasks drop their sockets before reporting.
    tokio::task::yield_now().await;
    drop(slots);
    println!(
        "{}",
        json!({
            "opened": counters.opened.get(),
            "failed": counters.failed.get(),
            "events": counters.events.get(),
        })
    );
    Ok(())
}
