//! `pushwire-bench`: load tools for any SSE hub.
//!
//! `idle` opens N streams spread over several loopback source addresses,
//! waits until every one has its response headers, and reports what they
//! cost the hub: RSS growth per stream, read from /proc of the hub's pid.
//! `publish` measures acknowledged publishes per second over keep-alive
//! connections, single events or batches. `replay` measures how fast a
//! stream that resumes from an old `Last-Event-ID` receives the history.
//!
//! Every mode prints one JSON line.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Parser)]
#[command(name = "pushwire-bench", about = "Load tools for SSE hubs")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Memory per open idle stream.
    Idle(IdleArgs),
    /// Acknowledged publishes per second through `POST /api/v1/publish`.
    Publish(PublishArgs),
    /// Speed of a history replay to one stream.
    Replay(ReplayArgs),
}

#[derive(Args)]
struct PublishArgs {
    /// Hub address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    hub: SocketAddr,
    /// Concurrent keep-alive publisher connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Events per request (1 = single-event requests; more = JSON array batches).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// The `to` of every event, as JSON.
    #[arg(long, default_value = r#"{"users":["bench"]}"#)]
    to: String,
    /// Bytes of data per event.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to publish.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop after this many requests in total, whatever the duration.
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: usize,
    /// Publisher key, if the hub needs one.
    #[arg(long)]
    key: Option<String>,
    /// Pid of the hub, to report its CPU time.
    #[arg(long)]
    hub_pid: Option<u32>,
}

#[derive(Args)]
struct ReplayArgs {
    /// Hub address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    hub: SocketAddr,
    /// Stream to open.
    #[arg(long, default_value = "/api/v1/stream?user=bench")]
    path: String,
    /// Resume point sent as `Last-Event-ID` (`earliest` = all retained history).
    #[arg(long, default_value = "earliest")]
    last_event_id: String,
    /// Events to wait for.
    #[arg(long, default_value_t = 100_000)]
    expect: usize,
    /// Give up after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

#[derive(Args)]
struct IdleArgs {
    /// Hub address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    hub: SocketAddr,
    /// Request path of one stream; `{n}` is replaced by the stream number.
    #[arg(long, default_value = "/api/v1/stream?user=bench-{n}")]
    path: String,
    /// Streams to open.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Loopback source addresses to spread connections over (127.0.0.1 ..).
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Connections opened at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Pid of the hub, to read its RSS and CPU time.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// Time to wait after the last stream opened before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Give up after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    deadline: Duration,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.mode {
        Mode::Idle(args) => runtime.block_on(idle(args)),
        Mode::Publish(args) => runtime.block_on(publish(args)),
        Mode::Replay(args) => runtime.block_on(replay(args)),
    }
}

/// Resident memory (KiB) and CPU seconds of a process.
fn process_usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    Ok((rss, ticks / 100.0))
}

/// Opens one stream from `source` and returns once its headers arrived.
async fn open_stream(hub: SocketAddr, source: IpAddr, path: &str) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(hub).await?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {hub}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before headers");
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") {
        bail!(
            "{}",
            String::from_utf8_lossy(&head).lines().next().unwrap_or("")
        );
    }
    Ok(stream)
}

async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let before = args.hub_pid.map(process_usage).transpose()?;
    let started = Instant::now();
    let opened = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let path = Arc::new(args.path.clone());
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (next, opened, path) = (next.clone(), opened.clone(), path.clone());
        let (hub, sources, total) = (args.hub, args.sources.max(1), args.streams);
        workers.push(tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return Ok::<_, anyhow::Error>(held);
                }
                let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (n % sources as usize) as u8));
                let stream = open_stream(hub, source, &path.replace("{n}", &n.to_string())).await?;
                opened.fetch_add(1, Ordering::Relaxed);
                held.push(stream);
            }
        }));
    }
    let mut streams = Vec::new();
    for worker in workers {
        let held = tokio::time::timeout(args.deadline, worker)
            .await
            .context("deadline passed before every stream opened")???;
        streams.extend(held);
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(args.settle).await;
    let after = args.hub_pid.map(process_usage).transpose()?;
    let mut report = json!({
        "mode": "idle",
        "streams": streams.len(),
        "connect_seconds": connect_seconds,
    });
    if let (Some((rss0, cpu0)), Some((rss1, cpu1))) = (before, after) {
        let per_stream = (rss1.saturating_sub(rss0)) as f64 * 1024.0 / streams.len().max(1) as f64;
        report["hub_rss_before_kib"] = json!(rss0);
        report["hub_rss_after_kib"] = json!(rss1);
        report["hub_bytes_per_stream"] = json!(per_stream.round());
        report["hub_cpu_seconds"] = json!(cpu1 - cpu0);
    }
    println!("{report}");
    drop(streams);
    Ok(())
}

/// Reads one HTTP/1.1 response with a Content-Length body; returns the status.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end])?;
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .context("no status")?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .context("response without content-length")?;
            let total = end + 4 + length;
            while buf.len() < total {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed mid-response");
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let before = args.hub_pid.map(process_usage).transpose()?;
    let to: serde_json::Value = serde_json::from_str(&args.to).context("--to is not JSON")?;
    let data = "x".repeat(args.size);
    let one = json!({ "to": to, "data": data });
    let body = if args.batch > 1 {
        serde_json::Value::Array(vec![one; args.batch]).to_string()
    } else {
        one.to_string()
    };
    let auth = args
        .key
        .as_ref()
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let request = Arc::new(format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        args.hub,
        body.len()
    ));
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections.max(1) {
        let (request, sent, hub, max) =
            (request.clone(), sent.clone(), args.hub, args.max_requests);
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(hub).await?;
            stream.set_nodelay(true)?;
            let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
            let (mut ok, mut failed) = (0u64, 0u64);
            let mut buf = Vec::with_capacity(4096);
            while Instant::now() < deadline && sent.fetch_add(1, Ordering::Relaxed) < max {
                let t = Instant::now();
                stream.write_all(request.as_bytes()).await?;
                match read_response(&mut stream, &mut buf).await? {
                    200 => ok += 1,
                    _ => failed += 1,
                }
                latencies.record(t.elapsed().as_micros() as u64)?;
            }
            Ok::<_, anyhow::Error>((ok, failed, latencies))
        }));
    }
    let mut latencies = hdrhistogram::Histogram::<u64>::new(3)?;
    let (mut ok, mut failed) = (0u64, 0u64);
    for task in tasks {
        let (o, f, h) = task.await??;
        ok += o;
        failed += f;
        latencies.add(h)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = args.hub_pid.map(process_usage).transpose()?;
    let mut report = json!({
        "mode": "publish",
        "connections": args.connections,
        "batch": args.batch,
        "requests_ok": ok,
        "requests_failed": failed,
        "events_acknowledged": ok * args.batch as u64,
        "seconds": seconds,
        "requests_per_second": (ok as f64 / seconds).round(),
        "events_per_second": ((ok * args.batch as u64) as f64 / seconds).round(),
        "latency_us": {
            "p50": latencies.value_at_quantile(0.5),
            "p90": latencies.value_at_quantile(0.9),
            "p99": latencies.value_at_quantile(0.99),
            "max": latencies.max(),
        },
    });
    if let (Some((_, cpu0)), Some((rss, cpu1))) = (before, after) {
        report["hub_cpu_seconds"] = json!(cpu1 - cpu0);
        report["hub_rss_kib"] = json!(rss);
    }
    println!("{report}");
    Ok(())
}

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(args.hub).await?;
    // HTTP/1.0: the body comes unchunked and ends with the connection.
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nLast-Event-ID: {}\r\n\r\n",
        args.path, args.hub, args.last_event_id
    );
    stream.write_all(request.as_bytes()).await?;
    let mut parser = pushwire::sse::Parser::default();
    let mut head_done = false;
    let mut pending = Vec::new();
    let mut received = 0usize;
    let mut first_event_at = None;
    let mut buf = vec![0u8; 256 * 1024];
    let limit = started + args.deadline;
    while received < args.expect {
        let left = limit.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .context("deadline passed")??;
        if n == 0 {
            bail!("stream ended after {received} events");
        }
        let mut bytes = &buf[..n];
        if !head_done {
            pending.extend_from_slice(bytes);
            let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            if !pending.starts_with(b"HTTP/1.1 200") && !pending.starts_with(b"HTTP/1.0 200") {
                bail!("{}", String::from_utf8_lossy(&pending[..end]));
            }
            head_done = true;
            let rest = pending.split_off(end + 4);
            received += parser.feed(&rest).len();
            continue;
        }
        let events = parser.feed(std::mem::take(&mut bytes));
        if first_event_at.is_none() && !events.is_empty() {
            first_event_at = Some(started.elapsed().as_secs_f64());
        }
        received += events.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "mode": "replay",
            "events": received,
            "seconds": seconds,
            "events_per_second": (received as f64 / seconds).round(),
            "first_event_seconds": first_event_at,
        })
    );
    Ok(())
}
