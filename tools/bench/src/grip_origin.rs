//! `grip-origin`: the small backend Pushpin needs to turn requests into
//! streams. It answers every request with `Grip-Hold: stream` on the
//! channel named by the last path segment.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::plan::valid_name;
use crate::wire::{head_end, header};

#[derive(Args)]
pub struct GripOriginArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8092")]
    listen: SocketAddr,
    /// Stop by itself after this long.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    lifetime: Duration,
}

/// Answers requests on one connection until the peer closes it.
async fn origin_connection(mut stream: TcpStream) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(end) = head_end(&buf) {
                break end;
            }
            if buf.len() > 64 * 1024 {
                bail!("request head too large");
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let length: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < end + 4 + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..end + 4 + length);
        let target = head.split(' ').nth(1).unwrap_or("/");
        let path = target.split('?').next().unwrap_or("/");
        let channel = path.rsplit('/').next().filter(|c| valid_name(c));
        let response = match channel {
            Some(channel) => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nGrip-Hold: stream\r\nGrip-Channel: {channel}\r\nContent-Length: 0\r\n\r\n"
            ),
            None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_owned(),
        };
        stream.write_all(response.as_bytes()).await?;
    }
}

pub async fn grip_origin(args: GripOriginArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    println!(
        "{}",
        json!({"mode": "grip-origin", "listen": listener.local_addr()?.to_string()})
    );
    let lifetime = tokio::time::sleep(args.lifetime);
    tokio::pin!(lifetime);
    loop {
        tokio::select! {
            _ = &mut lifetime => return Ok(()),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, most likely: back off a little.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                tokio::spawn(origin_connection(stream));
            }
        }
    }
}
