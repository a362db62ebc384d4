//! The hub, seen from outside: its resident memory and open descriptors
//! from /proc, and its open streams from `GET /api/v1/stats`.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};

/// Resident memory of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

pub fn open_fds(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// One request on a fresh connection; the body of a 200 answer.
fn request(hub: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(hub)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {hub}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no response head")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("{path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

pub fn open_streams(hub: SocketAddr) -> anyhow::Result<u64> {
    let stats: serde_json::Value =
        serde_json::from_str(&request(hub, "GET", "/api/v1/stats", "")?)?;
    stats["streams"].as_u64().context("no `streams` in stats")
}

pub struct Sample {
    pub seconds: f64,
    pub rss_kib: u64,
    pub fds: usize,
    pub streams: u64,
}
