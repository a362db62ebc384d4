//! `idle`: opens N streams spread over several loopback source addresses,
//! waits until every one has its response headers, and reports what they
//! cost the hub (memory growth per stream, CPU time).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::usage::hub_usage;
use crate::wire::{loopback, open_sse};

#[derive(Args)]
pub struct IdleArgs {
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
    /// Pids of the hub (comma-separated; a hub of several processes is summed), to read memory and CPU time.
    #[arg(long, value_delimiter = ',')]
    hub_pid: Vec<u32>,
    /// Time to wait after the last stream opened before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Give up after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// Copied into the report, to tell runs apart.
    #[arg(long)]
    label: Option<String>,
    /// Copied into the report: the name of the workload this run is (default: the mode).
    #[arg(long)]
    workload: Option<String>,
}

pub async fn idle(args: IdleArgs) -> anyhow::Result<()> {
    let before = hub_usage(&args.hub_pid)?;
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
                let source = loopback(1 + (n % sources as usize) as u8);
                let stream = open_sse(hub, source, &path.replace("{n}", &n.to_string())).await?;
                opened.fetch_add(1, Ordering::Relaxed);
                held.push(stream.stream);
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
    let after = hub_usage(&args.hub_pid)?;
    let mut report = json!({
        "mode": "idle",
        "streams": streams.len(),
        "connect_seconds": connect_seconds,
    });
    if let Some(label) = &args.label {
        report["label"] = json!(label);
    }
    if let Some(workload) = &args.workload {
        report["workload"] = json!(workload);
    }
    if let (Some(u0), Some(u1)) = (before, after) {
        let count = streams.len().max(1) as f64;
        let per_stream = (u1.rss_kib.saturating_sub(u0.rss_kib)) as f64 * 1024.0 / count;
        let pss_per_stream = (u1.pss_kib.saturating_sub(u0.pss_kib)) as f64 * 1024.0 / count;
        report["hub_rss_before_kib"] = json!(u0.rss_kib);
        report["hub_rss_after_kib"] = json!(u1.rss_kib);
        report["hub_bytes_per_stream"] = json!(per_stream.round());
        report["hub_pss_before_kib"] = json!(u0.pss_kib);
        report["hub_pss_after_kib"] = json!(u1.pss_kib);
        report["hub_pss_bytes_per_stream"] = json!(pss_per_stream.round());
        report["hub_cpu_seconds"] = json!(u1.cpu_seconds - u0.cpu_seconds);
    }
    println!("{report}");
    drop(streams);
    Ok(())
}
