//! `publish`: acknowledged publishes per second through
//! `POST /api/v1/publish` over keep-alive connections, single events or
//! batches, with the latency of each request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::usage::hub_usage;
use crate::wire::read_response;

#[derive(Args)]
pub struct PublishArgs {
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
    /// Pids of the hub (comma-separated), to report their CPU time.
    #[arg(long, value_delimiter = ',')]
    hub_pid: Vec<u32>,
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let before = hub_usage(&args.hub_pid)?;
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
                match read_response(&mut stream, &mut buf).await?.status {
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
    let after = hub_usage(&args.hub_pid)?;
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
    if let (Some(u0), Some(u1)) = (before, after) {
        report["hub_cpu_seconds"] = json!(u1.cpu_seconds - u0.cpu_seconds);
        report["hub_rss_kib"] = json!(u1.rss_kib);
    }
    println!("{report}");
    Ok(())
}
