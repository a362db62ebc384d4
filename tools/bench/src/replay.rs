//! `replay`: how fast a stream that resumes from an old `Last-Event-ID`
//! receives the history, and how long until its first event.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::head_end;

#[derive(Args)]
pub struct ReplayArgs {
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

pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(args.hub).await?;
    // HTTP/1.0: the body comes unchunked and ends with the connection.
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nLast-Event-ID: {}\r\n\r\n",
        args.path, args.hub, args.last_event_id
    );
    stream.write_all(request.as_bytes()).await?;
    let mut parser = pushwire_client::sse::Parser::default();
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
            let Some(end) = head_end(&pending) else {
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
