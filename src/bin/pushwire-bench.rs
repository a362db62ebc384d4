//! `pushwire-bench`: load tools for any SSE hub.
//!
//! `idle` opens N streams spread over several loopback source addresses,
//! waits until every one has its response headers, and reports what they
//! cost the hub: RSS growth per stream, read from /proc of the hub's pid.
//! Output is one JSON line.

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
