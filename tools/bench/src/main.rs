//! `pushwire-bench`: load tools for any SSE hub.
//!
//! `idle` opens N streams spread over several loopback source addresses,
//! waits until every one has its response headers, and reports what they
//! cost the hub: memory growth per stream, read from /proc of the hub's
//! pids. `publish` measures acknowledged publishes per second over
//! keep-alive connections, single events or batches. `replay` measures how
//! fast a stream that resumes from an old `Last-Event-ID` receives the
//! history.
//!
//! `fanout` (N subscribers on one topic) and `spread` (N topics with one
//! subscriber each) measure delivery: the coordinator spawns worker
//! processes of this binary that open the streams (each from its own
//! loopback source addresses, so no process runs out of descriptors or
//! ports), waits until every stream has its headers, publishes M events at
//! a fixed rate, each carrying its sequence number and send time, and waits
//! until every expected delivery arrived or a deadline passed. Workers read
//! their streams with the WHATWG parser of `pushwire_client::sse`, record
//! publish-to-receive latency in a histogram and which events each stream
//! got; the coordinator merges the histograms. Given several `--hub`
//! addresses (the nodes of a pushwire cluster), the workers take them in
//! turn, so the streams spread over the nodes, and `--publish-round-robin`
//! spreads the publishers too. They talk to pushwire, Nchan
//! or Pushpin (`--target`); `grip-origin` is the small backend Pushpin needs
//! to turn requests into streams. `report` turns the JSON lines of a
//! comparison run into a markdown table.
//!
//! Every measuring mode prints one JSON line.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, Notify};

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
    /// N subscribers on one topic; M events published at a fixed rate.
    Fanout(LoadArgs),
    /// N topics with one subscriber each; M events published round-robin over them.
    Spread(LoadArgs),
    /// A GRIP origin for Pushpin: answers every request with `Grip-Hold: stream` on the channel named by the last path segment.
    GripOrigin(GripOriginArgs),
    /// Writes the markdown comparison table from the JSON lines of a comparison run.
    Report(ReportArgs),
    /// One process of a `fanout` or `spread` run (started by the coordinator).
    #[command(hide = true)]
    Worker(WorkerArgs),
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
    /// Pids of the hub (comma-separated), to report their CPU time.
    #[arg(long, value_delimiter = ',')]
    hub_pid: Vec<u32>,
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

/// The hub a `fanout` or `spread` run talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Target {
    /// Streams `GET /api/v1/stream?topic=<t>`; publishes `POST /api/v1/publish`.
    Pushwire,
    /// Streams `GET /sub/<t>` (nchan_subscriber eventsource); publishes `POST /pub/<t>`.
    Nchan,
    /// Streams `GET /stream/<t>` through Pushpin to a GRIP origin; publishes to the control API's `POST /publish/`.
    Pushpin,
    /// Any Mercure hub (pushwire included): streams `GET /.well-known/mercure?topic=<t>`; publishes the form `POST /.well-known/mercure` (`--key` is then the publisher's JWT).
    Mercure,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    Fanout,
    Spread,
}

#[derive(Args)]
struct LoadArgs {
    /// Which hub: it decides the stream paths and the publish requests.
    #[arg(long, value_enum, default_value = "pushwire")]
    target: Target,
    /// Address streams are opened to. Repeat it (or give a comma-separated list) for the nodes of a cluster: the worker processes take the addresses in turn, so the streams spread over the nodes.
    #[arg(long, default_value = "127.0.0.1:8080", value_delimiter = ',')]
    hub: Vec<SocketAddr>,
    /// Address publishes go to (default: the first --hub; for Pushpin its control API, 127.0.0.1:5561).
    #[arg(long)]
    publish_to: Option<SocketAddr>,
    /// With several --hub addresses: publisher connections take them in turn instead of all using the first.
    #[arg(long)]
    publish_round_robin: bool,
    /// Streams to open (fanout: subscribers of the one topic; spread: topics, one subscriber each).
    #[arg(long, default_value_t = 1_000)]
    streams: usize,
    /// Events to publish.
    #[arg(long, default_value_t = 200)]
    events: usize,
    /// Events per second to publish (0 = as fast as the publisher connections go).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Bytes of data per event (sequence number, send time, padding).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Worker processes the streams are spread over.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Loopback source addresses (127.0.0.1 ..), shared out among the workers.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Connections each worker opens at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Concurrent publisher connections.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Events per publish request (pushwire: JSON array; Pushpin: items; Nchan takes one).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Topic names start with this (default: unique per run).
    #[arg(long)]
    topic_prefix: Option<String>,
    /// Publisher key or token, if the hub needs one (pushwire: `--publisher-key` or a publisher JWT; Mercure: the publisher JWT).
    #[arg(long)]
    key: Option<String>,
    /// Pids of the hub (comma-separated; a hub of several processes is summed), to read memory and CPU time.
    #[arg(long, value_delimiter = ',')]
    hub_pid: Vec<u32>,
    /// Pause between the last stream opening and the first publish.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Give up opening streams after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    connect_deadline: Duration,
    /// Times a refused stream is tried again, 200 ms later (counted in the report).
    #[arg(long, default_value_t = 3)]
    connect_retries: usize,
    /// How long after the last publish to wait for missing deliveries.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    deadline: Duration,
    /// How long to keep reading after the last expected delivery (catches duplicates).
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Copied into the report, to tell runs apart.
    #[arg(long)]
    label: Option<String>,
    /// Copied into the report: the name of the workload this run is (default: the mode).
    #[arg(long)]
    workload: Option<String>,
}

#[derive(Args)]
struct WorkerArgs {
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

#[derive(Args)]
struct GripOriginArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8092")]
    listen: SocketAddr,
    /// Stop by itself after this long.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    lifetime: Duration,
}

#[derive(Args)]
struct ReportArgs {
    /// JSON lines of the runs (`idle`, `fanout`, `spread` reports with a `label`; or `{"label","mode","error"}`).
    #[arg(long)]
    results: PathBuf,
    /// Markdown file whose text between the markers is replaced (printed to stdout when not given).
    #[arg(long)]
    doc: Option<PathBuf>,
    #[arg(long, default_value = "<!-- compare:begin -->")]
    begin: String,
    #[arg(long, default_value = "<!-- compare:end -->")]
    end: String,
    /// Hubs as `label=Title`, in column order.
    #[arg(long = "hub", required = true)]
    hubs: Vec<String>,
    /// Ratio columns as `label/label` (the first divided by the second).
    #[arg(long = "ratio")]
    ratios: Vec<String>,
    /// Lines printed under the table.
    #[arg(long = "note")]
    notes: Vec<String>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match cli.mode {
        Mode::Worker(args) => {
            // One thread per worker: the coordinator runs several of them.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, worker(args))
        }
        Mode::Report(args) => report(args),
        mode => {
            let runtime = tokio::runtime::Runtime::new()?;
            match mode {
                Mode::Idle(args) => runtime.block_on(idle(args)),
                Mode::Publish(args) => runtime.block_on(publish(args)),
                Mode::Replay(args) => runtime.block_on(replay(args)),
                Mode::Fanout(args) => runtime.block_on(load(Kind::Fanout, args)),
                Mode::Spread(args) => runtime.block_on(load(Kind::Spread, args)),
                Mode::GripOrigin(args) => runtime.block_on(grip_origin(args)),
                Mode::Report(_) | Mode::Worker(_) => Ok(()),
            }
        }
    }
}

/// Memory and CPU time of a hub, summed over its processes.
#[derive(Clone, Copy, Default)]
struct Usage {
    /// Resident set, KiB.
    rss_kib: u64,
    /// Proportional set, KiB: shared pages (a multi-process hub's shared
    /// memory zone) are split among the processes that map them, so the sum
    /// counts them once.
    pss_kib: u64,
    cpu_seconds: f64,
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

/// Proportional set size of a process, KiB (its RSS when the kernel has no
/// `smaps_rollup`).
fn process_pss(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn hub_usage(pids: &[u32]) -> anyhow::Result<Option<Usage>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let mut usage = Usage::default();
    for &pid in pids {
        let (rss, cpu) = process_usage(pid)?;
        usage.rss_kib += rss;
        usage.pss_kib += process_pss(pid).unwrap_or(rss);
        usage.cpu_seconds += cpu;
    }
    Ok(Some(usage))
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

fn loopback(octet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet))
}

/// How a response body is framed.
enum Framing {
    /// Until the connection closes.
    Identity,
    Chunked(Chunk),
}

#[derive(Clone, Copy)]
enum Chunk {
    Size {
        size: usize,
        extension: bool,
    },
    SizeLf {
        size: usize,
    },
    Data {
        left: usize,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    Trailer,
    TrailerLine,
    TrailerLf,
    Done,
}

impl Framing {
    /// Appends the body bytes in `input` to `out`; `Ok(false)` once the body ended.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<bool> {
        let chunk = match self {
            Framing::Identity => {
                out.extend_from_slice(input);
                return Ok(true);
            }
            Framing::Chunked(chunk) => chunk,
        };
        while let Some((&b, rest)) = input.split_first() {
            *chunk = match *chunk {
                Chunk::Data { left } => {
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if left == take {
                        Chunk::DataCr
                    } else {
                        Chunk::Data { left: left - take }
                    }
                }
                Chunk::Done => return Ok(false),
                state => {
                    input = rest;
                    match (state, b) {
                        (Chunk::Size { size, .. }, b'\r') => Chunk::SizeLf { size },
                        (Chunk::Size { size, .. } | Chunk::SizeLf { size }, b'\n') => {
                            if size == 0 {
                                Chunk::Trailer
                            } else {
                                Chunk::Data { left: size }
                            }
                        }
                        (Chunk::Size { size, .. }, b';') => Chunk::Size {
                            size,
                            extension: true,
                        },
                        (
                            Chunk::Size {
                                extension: true, ..
                            },
                            _,
                        ) => state,
                        (Chunk::Size { size, .. }, _) => {
                            let digit = (b as char).to_digit(16).context("bad chunk size")?;
                            Chunk::Size {
                                size: size
                                    .checked_mul(16)
                                    .and_then(|s| s.checked_add(digit as usize))
                                    .context("chunk too large")?,
                                extension: false,
                            }
                        }
                        (Chunk::DataCr, b'\r') => Chunk::DataLf,
                        (Chunk::DataCr | Chunk::DataLf, b'\n') => Chunk::Size {
                            size: 0,
                            extension: false,
                        },
                        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                        (Chunk::Trailer | Chunk::TrailerLf, b'\n') => Chunk::Done,
                        (Chunk::TrailerLine, b'\n') => Chunk::Trailer,
                        (Chunk::Trailer | Chunk::TrailerLine, _) => Chunk::TrailerLine,
                        _ => bail!("bad chunked framing"),
                    }
                }
            };
        }
        Ok(!matches!(chunk, Chunk::Done))
    }
}

/// An open event stream: the connection, its framing, and whatever arrived
/// after the headers in the same read.
struct SseStream {
    stream: TcpStream,
    framing: Framing,
    leftover: Vec<u8>,
}

/// Position of the blank line ending an HTTP head.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The value of a header in an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Opens one stream from `source` and returns once its headers arrived.
async fn open_sse(hub: SocketAddr, source: IpAddr, path: &str) -> anyhow::Result<SseStream> {
    let socket = if hub.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Several source addresses give a loopback run more than one range of
    // ephemeral ports; a remote hub is reached from the host's own address.
    if hub.ip().is_loopback() && hub.is_ipv4() {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let mut stream = socket.connect(hub).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {hub}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(end) = head_end(&head) {
            break end;
        }
        if head.len() > 64 * 1024 {
            bail!("response head too large");
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before headers");
        }
        head.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        bail!("{}", text.lines().next().unwrap_or(""));
    }
    let chunked = header(&text, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let framing = if chunked {
        Framing::Chunked(Chunk::Size {
            size: 0,
            extension: false,
        })
    } else {
        Framing::Identity
    };
    Ok(SseStream {
        stream,
        framing,
        leftover: head.split_off(end + 4),
    })
}

async fn idle(args: IdleArgs) -> anyhow::Result<()> {
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

/// One HTTP/1.1 response.
struct Response {
    status: u16,
    /// The server will close the connection after it.
    close: bool,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or up to the close).
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Response> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = head_end(buf) {
            break end;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end])?.to_owned();
    buf.drain(..end + 4);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let chunked = header(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = header(&head, "content-length").and_then(|v| v.parse().ok());
    let mut body = Vec::new();
    if let Some(length) = length.filter(|_| !chunked) {
        while buf.len() < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-response");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        body.extend(buf.drain(..length));
    } else if chunked {
        let mut framing = Framing::Chunked(Chunk::Size {
            size: 0,
            extension: false,
        });
        // Feed byte by byte what is buffered, so that bytes of a next
        // response stay in `buf`.
        loop {
            let mut ended = false;
            let mut used = 0;
            for &b in buf.iter() {
                used += 1;
                if !framing.feed(&[b], &mut body)? {
                    ended = true;
                    break;
                }
            }
            buf.drain(..used);
            if ended {
                break;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-response");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.append(buf);
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        return Ok(Response {
            status,
            close: true,
            body,
        });
    }
    Ok(Response {
        status,
        close,
        body,
    })
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
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

async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------
// fanout and spread

impl Target {
    fn stream_path(self, topic: &str) -> String {
        match self {
            Target::Pushwire => format!("/api/v1/stream?topic={topic}"),
            Target::Nchan => format!("/sub/{topic}"),
            Target::Pushpin => format!("/stream/{topic}"),
            Target::Mercure => format!(
                "/.well-known/mercure?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("topic", topic)
                    .finish()
            ),
        }
    }

    fn publish_addr(self, args: &LoadArgs) -> SocketAddr {
        match (args.publish_to, self) {
            (Some(addr), _) => addr,
            (None, Target::Pushpin) => SocketAddr::from(([127, 0, 0, 1], 5561)),
            (None, _) => args
                .hub
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
        }
    }

    /// One request publishing each `(topic, data)` of `items`.
    fn publish_request(
        self,
        addr: SocketAddr,
        key: Option<&str>,
        items: &[(String, String)],
    ) -> anyhow::Result<Vec<u8>> {
        let (path, content_type, body) = match self {
            Target::Pushwire => {
                let mut events: Vec<Value> = items
                    .iter()
                    .map(|(topic, data)| json!({"to": {"topics": [topic]}, "data": data}))
                    .collect();
                let body = match events.len() {
                    1 => events.remove(0).to_string(),
                    _ => Value::Array(events).to_string(),
                };
                ("/api/v1/publish".to_owned(), "application/json", body)
            }
            Target::Nchan => {
                let [(topic, data)] = items else {
                    bail!("Nchan publishes one message per request (use --batch 1)");
                };
                (format!("/pub/{topic}"), "text/plain", data.clone())
            }
            Target::Mercure => {
                let [(topic, data)] = items else {
                    bail!("a Mercure hub takes one update per request (use --batch 1)");
                };
                let body = form_urlencoded::Serializer::new(String::new())
                    .append_pair("topic", topic)
                    .append_pair("data", data)
                    .finish();
                (
                    "/.well-known/mercure".to_owned(),
                    "application/x-www-form-urlencoded",
                    body,
                )
            }
            Target::Pushpin => {
                let items: Vec<Value> = items
                    .iter()
                    .map(|(topic, data)| {
                        json!({
                            "channel": topic,
                            "formats": {"http-stream": {"content": format!("event: message\ndata: {data}\n\n")}},
                        })
                    })
                    .collect();
                (
                    "/publish/".to_owned(),
                    "application/json",
                    json!({ "items": items }).to_string(),
                )
            }
        };
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        Ok(format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes())
    }
}

fn topic_name(prefix: &str, kind: Kind, index: usize) -> String {
    match kind {
        Kind::Fanout => format!("{prefix}-all"),
        Kind::Spread => format!("{prefix}-{index}"),
    }
}

/// The data of event `seq`: its number, its send time, then padding.
fn event_data(seq: usize, sent_ns: u64, size: usize) -> String {
    let mut data = format!("{seq} {sent_ns} ");
    while data.len() < size {
        data.push('x');
    }
    data
}

/// The events stream `index` should receive: those whose sequence number
/// is `topic` modulo `topics`.
#[derive(Clone, Copy)]
struct Expect {
    topic: usize,
    topics: usize,
    count: usize,
}

impl Expect {
    fn new(kind: Kind, index: usize, topics: usize, events: usize) -> Expect {
        let topic = match kind {
            Kind::Fanout => 0,
            Kind::Spread => index,
        };
        let topics = topics.max(1);
        let count = if topic < events {
            (events - 1 - topic) / topics + 1
        } else {
            0
        };
        Expect {
            topic,
            topics,
            count,
        }
    }
}

fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 1 h, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

/// A histogram as `[value, count]` pairs of its non-empty buckets: recorded
/// again into a histogram of the same bounds they land in the same buckets,
/// so merging is exact.
fn histogram_pairs(h: &Histogram<u64>) -> Value {
    Value::Array(
        h.iter_recorded()
            .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
            .collect(),
    )
}

fn merge_pairs(into: &mut Histogram<u64>, pairs: &Value) -> anyhow::Result<()> {
    for pair in pairs.as_array().context("histogram is not an array")? {
        let value = pair.get(0).and_then(Value::as_u64).context("bad pair")?;
        let count = pair.get(1).and_then(Value::as_u64).context("bad pair")?;
        into.record_n(value, count)?;
    }
    Ok(())
}

/// What one worker's streams received.
struct Tally {
    latency: Histogram<u64>,
    streams: usize,
    expected: usize,
    /// Events carrying a sequence number, duplicates included.
    received: u64,
    unique: u64,
    duplicates: u64,
    /// Events of another topic, or beyond the run's sequence numbers.
    misrouted: u64,
    /// Events whose data is not `<seq> <nanos> ...`.
    unparsed: u64,
    /// Streams the hub ended while the run went on: with the end of the
    /// body, by closing the connection, or with a connection error.
    closed: usize,
    closed_by_body_end: usize,
    closed_by_eof: usize,
    closed_by_error: usize,
    protocol_errors: usize,
    complete: usize,
    first_delivery_ns: u64,
    last_delivery_ns: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Tally> {
        Ok(Tally {
            latency: latency_histogram()?,
            streams: 0,
            expected: 0,
            received: 0,
            unique: 0,
            duplicates: 0,
            misrouted: 0,
            unparsed: 0,
            closed: 0,
            closed_by_body_end: 0,
            closed_by_eof: 0,
            closed_by_error: 0,
            protocol_errors: 0,
            complete: 0,
            first_delivery_ns: 0,
            last_delivery_ns: 0,
        })
    }

    fn record(&mut self, stream: &mut StreamState, data: &str, now_ns: u64) -> bool {
        let mut fields = data.split(' ');
        let seq = fields.next().and_then(|s| s.parse::<usize>().ok());
        let sent = fields.next().and_then(|s| s.parse::<u64>().ok());
        let (Some(seq), Some(sent)) = (seq, sent) else {
            self.unparsed += 1;
            return false;
        };
        self.received += 1;
        let expect = stream.expect;
        if seq % expect.topics != expect.topic || seq / expect.topics >= expect.count {
            self.misrouted += 1;
            return false;
        }
        let local = seq / expect.topics;
        let (word, bit) = (local / 64, 1u64 << (local % 64));
        let Some(slot) = stream.seen.get_mut(word) else {
            self.misrouted += 1;
            return false;
        };
        if *slot & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        *slot |= bit;
        stream.unique += 1;
        self.unique += 1;
        self.latency
            .saturating_record((now_ns.saturating_sub(sent) / 1000).max(1));
        if self.first_delivery_ns == 0 {
            self.first_delivery_ns = now_ns;
        }
        self.last_delivery_ns = self.last_delivery_ns.max(now_ns);
        if stream.unique == expect.count {
            self.complete += 1;
            return self.complete == self.streams;
        }
        false
    }
}

/// Which of its events one stream received.
struct StreamState {
    expect: Expect,
    seen: Vec<u64>,
    unique: usize,
}

impl StreamState {
    fn new(expect: Expect) -> StreamState {
        StreamState {
            expect,
            seen: vec![0; expect.count.div_ceil(64)],
            unique: 0,
        }
    }

    /// Sequence numbers of the first and the last event it missed.
    fn missing_range(&self) -> Option<(usize, usize)> {
        if self.unique >= self.expect.count {
            return None;
        }
        let missing = |local: &usize| self.seen[local / 64] & (1u64 << (local % 64)) == 0;
        let first = (0..self.expect.count).find(missing)?;
        let last = (0..self.expect.count).rev().find(missing)?;
        let seq = |local: usize| local * self.expect.topics + self.expect.topic;
        Some((seq(first), seq(last)))
    }
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
async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
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

/// What the publisher connections did.
struct Published {
    ok: u64,
    failed: u64,
    first_error: Option<String>,
    first_ns: u64,
    last_ns: u64,
    latency: Histogram<u64>,
}

/// Publishes `events` events at `rate` over `publishers` connections.
async fn publish_events(
    kind: Kind,
    args: &LoadArgs,
    prefix: &str,
    topics: usize,
) -> anyhow::Result<Published> {
    let target = args.target;
    let addrs = match (args.publish_round_robin, args.publish_to) {
        (true, None) if !args.hub.is_empty() => args.hub.clone(),
        _ => vec![target.publish_addr(args)],
    };
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let batch = args.batch.max(1);
    let mut tasks = Vec::new();
    for i in 0..args.publishers.max(1) {
        let addr = addrs[i % addrs.len()];
        let next = next.clone();
        let (events, rate, size) = (args.events, args.rate, args.size);
        let key = args.key.clone();
        let prefix = prefix.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut out = Published {
                ok: 0,
                failed: 0,
                first_error: None,
                first_ns: 0,
                last_ns: 0,
                latency: latency_histogram()?,
            };
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(4096);
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= events {
                    return Ok::<_, anyhow::Error>(out);
                }
                let last = (first + batch).min(events);
                if rate > 0.0 {
                    let due = started + Duration::from_secs_f64(first as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let n = (last - first) as u64;
                // One retry on a fresh connection: keep-alive connections
                // may have been closed by the hub in between.
                let mut outcome = Err(anyhow::anyhow!("not sent"));
                for _attempt in 0..2 {
                    let reused = conn.is_some();
                    let sent_ns = unix_nanos();
                    let items: Vec<(String, String)> = (first..last)
                        .map(|seq| {
                            (
                                topic_name(&prefix, kind, seq % topics),
                                event_data(seq, sent_ns, size),
                            )
                        })
                        .collect();
                    let request = target.publish_request(addr, key.as_deref(), &items)?;
                    let t = Instant::now();
                    let attempt = async {
                        if conn.is_none() {
                            let stream = TcpStream::connect(addr).await?;
                            stream.set_nodelay(true)?;
                            buf.clear();
                            conn = Some(stream);
                        }
                        let stream = conn.as_mut().context("no connection")?;
                        stream.write_all(&request).await?;
                        read_response(stream, &mut buf).await
                    };
                    outcome = match tokio::time::timeout(Duration::from_secs(30), attempt).await {
                        Ok(r) => r,
                        Err(_) => Err(anyhow::anyhow!("publish timed out")),
                    };
                    match &outcome {
                        Ok(response) => {
                            out.latency
                                .saturating_record((t.elapsed().as_micros() as u64).max(1));
                            if out.first_ns == 0 {
                                out.first_ns = sent_ns;
                            }
                            out.last_ns = sent_ns;
                            if response.close {
                                conn = None;
                            }
                            break;
                        }
                        Err(_) => {
                            conn = None;
                            if !reused {
                                break;
                            }
                        }
                    }
                }
                match outcome {
                    Ok(r) if (200..300).contains(&r.status) => out.ok += n,
                    Ok(r) => {
                        out.failed += n;
                        out.first_error.get_or_insert_with(|| {
                            format!(
                                "status {}: {}",
                                r.status,
                                String::from_utf8_lossy(&r.body).trim()
                            )
                        });
                    }
                    Err(e) => {
                        out.failed += n;
                        out.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        }));
    }
    let mut total = Published {
        ok: 0,
        failed: 0,
        first_error: None,
        first_ns: 0,
        last_ns: 0,
        latency: latency_histogram()?,
    };
    for task in tasks {
        let p = task.await??;
        total.ok += p.ok;
        total.failed += p.failed;
        if total.first_error.is_none() {
            total.first_error = p.first_error;
        }
        if p.first_ns != 0 && (total.first_ns == 0 || p.first_ns < total.first_ns) {
            total.first_ns = p.first_ns;
        }
        total.last_ns = total.last_ns.max(p.last_ns);
        total.latency.add(p.latency)?;
    }
    Ok(total)
}

/// What the coordinator hears from a worker.
enum Heard {
    Ready(Value),
    Done,
    Result(Value),
    /// The worker's stdout closed.
    Gone,
}

/// Worker processes, killed if still running when dropped.
struct Workers {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
}

impl Workers {
    fn stop_all(&mut self) {
        for stdin in &mut self.stdins {
            if let Some(mut s) = stdin.take() {
                let _ = s.write_all(b"stop\n");
                let _ = s.flush();
            }
        }
    }

    /// Waits up to `grace` for every worker to exit, then kills the rest.
    fn reap(&mut self, grace: Duration) {
        let until = Instant::now() + grace;
        for child in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= until => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_all();
        self.reap(Duration::from_secs(2));
    }
}

fn quantiles_us(h: &Histogram<u64>) -> Value {
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": (h.mean() * 10.0).round() / 10.0,
    })
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The coordinator of `fanout` and `spread`.
async fn load(kind: Kind, args: LoadArgs) -> anyhow::Result<()> {
    let processes = args.processes.clamp(1, args.streams.max(1));
    if args.hub.is_empty() {
        bail!("give at least one --hub");
    }
    if args.batch > 1 && matches!(args.target, Target::Nchan | Target::Mercure) {
        bail!("Nchan and Mercure hubs take one message per request: use --batch 1");
    }
    if !args.rate.is_finite() || args.rate < 0.0 {
        bail!("--rate must be 0 or more");
    }
    let fd_limit = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024) as usize;
    if args.streams.div_ceil(processes) + 64 > fd_limit {
        bail!(
            "{} streams over {processes} processes exceed {fd_limit} open files per process: raise --processes",
            args.streams
        );
    }
    let prefix = match &args.topic_prefix {
        Some(p) if valid_name(p) => p.clone(),
        Some(p) => bail!("--topic-prefix {p:?}: use letters, digits, '-', '_' or '.'"),
        None => format!("b{}x{}", std::process::id(), unix_nanos() % 1_000_000_000),
    };
    let topics = match kind {
        Kind::Fanout => 1,
        Kind::Spread => args.streams,
    };
    let before = hub_usage(&args.hub_pid)?;

    // Workers, each with its share of streams and of source addresses.
    let exe = std::env::current_exe()?;
    let sources = args.sources.max(1) as usize;
    let expected_publish = if args.rate > 0.0 {
        args.events as f64 / args.rate
    } else {
        60.0
    };
    let lifetime = args.connect_deadline
        + args.settle
        + args.deadline
        + args.linger
        + Duration::from_secs_f64(expected_publish * 2.0 + 60.0);
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Heard)>();
    let mut workers = Workers {
        children: Vec::new(),
        stdins: Vec::new(),
    };
    let started = Instant::now();
    for k in 0..processes {
        let first = args.streams * k / processes;
        let count = args.streams * (k + 1) / processes - first;
        let octets: Vec<String> = if processes <= sources {
            (0..sources)
                .filter(|i| i % processes == k)
                .map(|i| (i + 1).to_string())
                .collect()
        } else {
            vec![(k % sources + 1).to_string()]
        };
        let mut child = Command::new(&exe)
            .arg("worker")
            .args(["--target", target_name(args.target)])
            .args([
                "--kind",
                match kind {
                    Kind::Fanout => "fanout",
                    Kind::Spread => "spread",
                },
            ])
            .args(["--hub", &args.hub[k % args.hub.len()].to_string()])
            .args(["--topic-prefix", &prefix])
            .args(["--topics", &topics.to_string()])
            .args(["--first", &first.to_string()])
            .args(["--count", &count.to_string()])
            .args(["--events", &args.events.to_string()])
            .args(["--sources", &octets.join(",")])
            .args(["--concurrency", &args.concurrency.to_string()])
            .args([
                "--connect-deadline",
                &format!("{}ms", args.connect_deadline.as_millis()),
            ])
            .args(["--connect-retries", &args.connect_retries.to_string()])
            .args(["--lifetime", &format!("{}ms", lifetime.as_millis())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a worker")?;
        let stdout = child.stdout.take().context("worker without stdout")?;
        workers.stdins.push(child.stdin.take());
        workers.children.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let heard = if let Some(rest) = line.strip_prefix("ready ") {
                    Heard::Ready(serde_json::from_str(rest).unwrap_or(Value::Null))
                } else if line.trim() == "done" {
                    Heard::Done
                } else if let Some(rest) = line.strip_prefix("result ") {
                    Heard::Result(serde_json::from_str(rest).unwrap_or(Value::Null))
                } else {
                    continue;
                };
                if tx.send((k, heard)).is_err() {
                    return;
                }
            }
            let _ = tx.send((k, Heard::Gone));
        });
    }
    drop(tx);

    // Every worker has its streams open (or gave up on some).
    let mut ready = vec![None; processes];
    let mut done = vec![false; processes];
    let mut results: Vec<Option<Value>> = vec![None; processes];
    let ready_by = Instant::now() + args.connect_deadline + Duration::from_secs(10);
    while ready.iter().any(Option::is_none) {
        let left = ready_by.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((k, Heard::Ready(v)))) => ready[k] = Some(v),
            Ok(Some((k, Heard::Done))) => done[k] = true,
            Ok(Some((k, Heard::Gone))) => bail!("worker {k} exited before its streams were open"),
            Ok(Some((_, Heard::Result(_)))) => {}
            Ok(None) => bail!("workers exited"),
            Err(_) => bail!("workers did not open their streams in time"),
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    let ready: Vec<Value> = ready.into_iter().flatten().collect();
    let streams: u64 = ready.iter().filter_map(|r| r["streams"].as_u64()).sum();
    let failed: u64 = ready.iter().filter_map(|r| r["failed"].as_u64()).sum();
    let retries: u64 = ready.iter().filter_map(|r| r["retries"].as_u64()).sum();
    let first_error = ready
        .iter()
        .find_map(|r| r["first_error"].as_str().map(str::to_owned));
    let connected = hub_usage(&args.hub_pid)?;
    tokio::time::sleep(args.settle).await;
    let settled = hub_usage(&args.hub_pid)?;

    // Publish, then wait for the deliveries.
    let publish_started = Instant::now();
    let published = publish_events(kind, &args, &prefix, topics).await?;
    let publish_seconds = publish_started.elapsed().as_secs_f64();
    let wait_by = Instant::now() + args.deadline;
    while done.iter().any(|d| !d) {
        let left = wait_by.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((k, Heard::Done))) => done[k] = true,
            Ok(Some((k, Heard::Gone))) => bail!("worker {k} exited during the run"),
            Ok(Some(_)) => {}
            Ok(None) => bail!("workers exited"),
            Err(_) => break,
        }
    }
    let delivered = hub_usage(&args.hub_pid)?;
    tokio::time::sleep(args.linger).await;
    workers.stop_all();
    let results_by = Instant::now() + Duration::from_secs(30);
    while results.iter().any(Option::is_none) {
        let left = results_by.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((k, Heard::Result(v)))) => results[k] = Some(v),
            Ok(Some((k, Heard::Gone))) if results[k].is_none() => {
                bail!("worker {k} exited without a result")
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => bail!("workers did not report their results"),
        }
    }
    workers.reap(Duration::from_secs(10));

    // Aggregate.
    let mut latency = latency_histogram()?;
    let sum = |field: &str| -> u64 {
        results
            .iter()
            .flatten()
            .filter_map(|r| r[field].as_u64())
            .sum()
    };
    for r in results.iter().flatten() {
        merge_pairs(&mut latency, &r["latency"])?;
    }
    let last_delivery_ns = results
        .iter()
        .flatten()
        .filter_map(|r| r["last_delivery_ns"].as_u64())
        .max()
        .unwrap_or(0);
    let expected = sum("expected");
    let first_missing = results
        .iter()
        .flatten()
        .filter_map(|r| r["first_missing_seq"].as_u64())
        .min();
    let last_missing = results
        .iter()
        .flatten()
        .filter_map(|r| r["last_missing_seq"].as_u64())
        .max();
    let unique = sum("unique");
    let window = if last_delivery_ns > published.first_ns {
        (last_delivery_ns - published.first_ns) as f64 / 1e9
    } else {
        0.0
    };
    let publish_window = (published.last_ns.saturating_sub(published.first_ns)) as f64 / 1e9;
    let mut report = json!({
        "mode": match kind { Kind::Fanout => "fanout", Kind::Spread => "spread" },
        "target": target_name(args.target),
        "streams_requested": args.streams,
        "streams": streams,
        "streams_failed": failed,
        "connect_retries": retries,
        "first_error": first_error,
        "topics": topics,
        "processes": processes,
        "hubs": args.hub.len(),
        "connect_seconds": connect_seconds,
        "events": args.events,
        "size": args.size,
        "rate": args.rate,
        "publishers": args.publishers,
        "batch": args.batch,
        "events_published": published.ok,
        "events_failed": published.failed,
        "publish_error": published.first_error,
        "publish_seconds": publish_seconds,
        "publish_rate": if publish_window > 0.0 { (args.events as f64 - 1.0) / publish_window } else { 0.0 },
        "publish_latency_us": quantiles_us(&published.latency),
        "deliveries_expected": expected,
        "deliveries_received": unique,
        "lost": expected.saturating_sub(unique),
        "streams_with_loss": sum("streams_with_loss"),
        "first_missing_seq": first_missing,
        "last_missing_seq": last_missing,
        "duplicated": sum("duplicates"),
        "misrouted": sum("misrouted"),
        "unparsed": sum("unparsed"),
        "streams_closed": sum("closed"),
        "streams_closed_how": {
            "body_end": sum("closed_by_body_end"),
            "eof": sum("closed_by_eof"),
            "error": sum("closed_by_error"),
        },
        "protocol_errors": sum("protocol_errors"),
        "complete": expected > 0 && unique == expected,
        "window_seconds": window,
        "deliveries_per_second": if window > 0.0 { (unique as f64 / window).round() } else { 0.0 },
        "latency_us": quantiles_us(&latency),
    });
    if let Some(label) = &args.label {
        report["label"] = json!(label);
    }
    if let Some(workload) = &args.workload {
        report["workload"] = json!(workload);
    }
    if let (Some(u0), Some(u1), Some(u2), Some(u3)) = (before, connected, settled, delivered) {
        let count = streams.max(1) as f64;
        report["hub_rss_before_kib"] = json!(u0.rss_kib);
        report["hub_rss_kib"] = json!(u1.rss_kib);
        report["hub_rss_end_kib"] = json!(u3.rss_kib);
        report["hub_pss_kib"] = json!(u1.pss_kib);
        report["hub_pss_end_kib"] = json!(u3.pss_kib);
        report["hub_bytes_per_stream"] =
            json!((u1.rss_kib.saturating_sub(u0.rss_kib) as f64 * 1024.0 / count).round());
        report["hub_pss_bytes_per_stream"] =
            json!((u1.pss_kib.saturating_sub(u0.pss_kib) as f64 * 1024.0 / count).round());
        report["hub_cpu_connect_seconds"] = json!(u1.cpu_seconds - u0.cpu_seconds);
        let cpu = u3.cpu_seconds - u2.cpu_seconds;
        report["hub_cpu_seconds"] = json!(cpu);
        if unique > 0 {
            report["hub_cpu_us_per_delivery"] =
                json!((cpu * 1e6 / unique as f64 * 100.0).round() / 100.0);
        }
    }
    println!("{report}");
    Ok(())
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Pushwire => "pushwire",
        Target::Nchan => "nchan",
        Target::Pushpin => "pushpin",
        Target::Mercure => "mercure",
    }
}

// ---------------------------------------------------------------------------
// grip-origin

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

async fn grip_origin(args: GripOriginArgs) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------
// report

/// One row of the comparison table.
struct Metric {
    /// The workload (or mode) of the run it reads.
    workload: &'static str,
    title: &'static str,
    /// Reads the figure from a report.
    value: fn(&Value) -> Option<f64>,
    /// Digits after the point.
    digits: usize,
    /// Whether a ratio of this figure means something.
    ratio: bool,
}

const fn metric(
    workload: &'static str,
    title: &'static str,
    value: fn(&Value) -> Option<f64>,
    digits: usize,
    ratio: bool,
) -> Metric {
    Metric {
        workload,
        title,
        value,
        digits,
        ratio,
    }
}

fn latency_ms(r: &Value, q: &str) -> Option<f64> {
    r["latency_us"][q].as_f64().map(|us| us / 1000.0)
}

fn deliveries_per_second(r: &Value) -> Option<f64> {
    r["deliveries_per_second"].as_f64()
}

fn cpu_per_delivery(r: &Value) -> Option<f64> {
    r["hub_cpu_us_per_delivery"].as_f64()
}

fn lost(r: &Value) -> Option<f64> {
    r["lost"].as_f64()
}

fn duplicated(r: &Value) -> Option<f64> {
    r["duplicated"].as_f64()
}

const METRICS: &[Metric] = &[
    metric(
        "idle",
        "idle: memory per stream (KiB)",
        |r| r["hub_pss_bytes_per_stream"].as_f64().map(|b| b / 1024.0),
        1,
        true,
    ),
    metric(
        "idle",
        "idle: time to open all streams (s)",
        |r| r["connect_seconds"].as_f64(),
        1,
        true,
    ),
    metric(
        "fanout",
        "fanout: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "fanout",
        "fanout: latency p50 (ms)",
        |r| latency_ms(r, "p50"),
        1,
        true,
    ),
    metric(
        "fanout",
        "fanout: latency p99 (ms)",
        |r| latency_ms(r, "p99"),
        1,
        true,
    ),
    metric(
        "fanout",
        "fanout: latency max (ms)",
        |r| latency_ms(r, "max"),
        1,
        true,
    ),
    metric(
        "fanout",
        "fanout: publish answered, p50 (ms)",
        |r| {
            r["publish_latency_us"]["p50"]
                .as_f64()
                .map(|us| us / 1000.0)
        },
        1,
        true,
    ),
    metric(
        "fanout",
        "fanout: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric("fanout", "fanout: lost", lost, 0, false),
    metric("fanout", "fanout: duplicated", duplicated, 0, false),
    metric(
        "burst",
        "burst: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "burst",
        "burst: last delivery after (s)",
        |r| r["window_seconds"].as_f64(),
        1,
        true,
    ),
    metric(
        "burst",
        "burst: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric("burst", "burst: lost", lost, 0, false),
    metric("burst", "burst: duplicated", duplicated, 0, false),
    metric(
        "spread",
        "spread: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "spread",
        "spread: latency p50 (ms)",
        |r| latency_ms(r, "p50"),
        1,
        true,
    ),
    metric(
        "spread",
        "spread: latency p99 (ms)",
        |r| latency_ms(r, "p99"),
        1,
        true,
    ),
    metric(
        "spread",
        "spread: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric("spread", "spread: lost", lost, 0, false),
    metric("spread", "spread: duplicated", duplicated, 0, false),
];

/// A number with thousands separators.
fn format_number(value: f64, digits: usize) -> String {
    let text = format!("{value:.digits$}");
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i.to_owned(), Some(f.to_owned())),
        None => (text.clone(), None),
    };
    let (sign, int) = match int.strip_prefix('-') {
        Some(rest) => ("-", rest.to_owned()),
        None => ("", int),
    };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("cannot read {}", args.results.display()))?;
    // The last report of each (label, mode) wins.
    let mut runs: BTreeMap<(String, String), Value> = BTreeMap::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let Ok(run) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let workload = run["workload"].as_str().or(run["mode"].as_str());
        let (Some(label), Some(mode)) = (run["label"].as_str(), workload) else {
            continue;
        };
        runs.insert((label.to_owned(), mode.to_owned()), run);
    }
    let hubs: Vec<(String, String)> = args
        .hubs
        .iter()
        .map(|h| match h.split_once('=') {
            Some((label, title)) => (label.to_owned(), title.to_owned()),
            None => (h.clone(), h.clone()),
        })
        .collect();
    let title_of = |label: &str| {
        hubs.iter()
            .find(|(l, _)| l == label)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| label.to_owned())
    };
    let ratios: Vec<(String, String)> = args
        .ratios
        .iter()
        .filter_map(|r| r.split_once('/'))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    let figure = |label: &str, metric: &Metric| -> Result<f64, String> {
        match runs.get(&(label.to_owned(), metric.workload.to_owned())) {
            None => Err("not run".to_owned()),
            Some(run) if run.get("error").is_some() => Err("failed".to_owned()),
            Some(run) => (metric.value)(run).ok_or_else(|| "n/a".to_owned()),
        }
    };

    let mut table = String::new();
    table.push_str("| |");
    for (_, title) in &hubs {
        table.push_str(&format!(" {title} |"));
    }
    for (a, b) in &ratios {
        table.push_str(&format!(" {} / {} |", title_of(a), title_of(b)));
    }
    table.push_str("\n|---|");
    for _ in 0..hubs.len() + ratios.len() {
        table.push_str("---:|");
    }
    table.push('\n');
    for metric in METRICS {
        table.push_str(&format!("| {} |", metric.title));
        for (label, _) in &hubs {
            let cell = match figure(label, metric) {
                Ok(v) => format_number(v, metric.digits),
                Err(e) => e,
            };
            table.push_str(&format!(" {cell} |"));
        }
        for (a, b) in &ratios {
            let cell = match (metric.ratio, figure(a, metric), figure(b, metric)) {
                (true, Ok(x), Ok(y)) if y > 0.0 => format!("{:.2}", x / y),
                _ => "–".to_owned(),
            };
            table.push_str(&format!(" {cell} |"));
        }
        table.push('\n');
    }
    // Runs that failed or were incomplete, said plainly.
    let mut remarks = Vec::new();
    for ((label, mode), run) in &runs {
        let title = title_of(label);
        if let Some(error) = run["error"].as_str() {
            remarks.push(format!("{title}, {mode}: failed: {error}"));
            continue;
        }
        if let Some(failed) = run["streams_failed"].as_u64().filter(|&f| f > 0) {
            remarks.push(format!(
                "{title}, {mode}: {failed} streams did not open ({})",
                run["first_error"].as_str().unwrap_or("no error text")
            ));
        }
        if let Some(failed) = run["events_failed"].as_u64().filter(|&f| f > 0) {
            remarks.push(format!(
                "{title}, {mode}: {failed} publishes failed ({})",
                run["publish_error"].as_str().unwrap_or("no error text")
            ));
        }
        if run["complete"] == json!(false) {
            remarks.push(format!(
                "{title}, {mode}: {} of {} deliveries arrived before the deadline",
                format_number(run["deliveries_received"].as_f64().unwrap_or(0.0), 0),
                format_number(run["deliveries_expected"].as_f64().unwrap_or(0.0), 0),
            ));
        }
        if let Some(closed) = run["streams_closed"].as_u64().filter(|&c| c > 0) {
            let how = &run["streams_closed_how"];
            remarks.push(format!(
                "{title}, {mode}: the hub closed {closed} streams during the run \
                 ({} by ending the body, {} by closing the connection, {} with an error); \
                 {} streams missed events",
                how["body_end"], how["eof"], how["error"], run["streams_with_loss"]
            ));
        }
        if let Some(retries) = run["connect_retries"].as_u64().filter(|&r| r > 0) {
            remarks.push(format!(
                "{title}, {mode}: {retries} refused stream requests were tried again"
            ));
        }
    }
    let mut section = String::new();
    section.push('\n');
    section.push_str(&table);
    if !remarks.is_empty() {
        section.push('\n');
        for r in &remarks {
            section.push_str(&format!("- {r}\n"));
        }
    }
    if !args.notes.is_empty() {
        section.push('\n');
        for n in &args.notes {
            section.push_str(&format!("{n}\n"));
        }
    }
    match &args.doc {
        None => print!("{section}"),
        Some(path) => {
            let doc = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let start = doc
                .find(&args.begin)
                .with_context(|| format!("{} has no {}", path.display(), args.begin))?
                + args.begin.len();
            let stop = doc[start..]
                .find(&args.end)
                .map(|i| start + i)
                .with_context(|| format!("{} has no {}", path.display(), args.end))?;
            let updated = format!("{}{}{}", &doc[..start], section, &doc[stop..]);
            std::fs::write(path, updated)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chunked() -> Framing {
        Framing::Chunked(Chunk::Size {
            size: 0,
            extension: false,
        })
    }

    #[test]
    fn chunked_body_decodes_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..wire.len() {
            let mut framing = chunked();
            let mut out = Vec::new();
            let open = framing.feed(&wire[..split], &mut out).unwrap();
            let open = open && framing.feed(&wire[split..], &mut out).unwrap();
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(!open);
        }
    }

    #[test]
    fn expectations_cover_every_event_once() {
        let (topics, events) = (7, 100);
        let total: usize = (0..topics)
            .map(|i| Expect::new(Kind::Spread, i, topics, events).count)
            .sum();
        assert_eq!(total, events);
        assert_eq!(Expect::new(Kind::Spread, 9, 10, 5).count, 0);
        assert_eq!(Expect::new(Kind::Fanout, 3, 1, 5).count, 5);
    }

    #[test]
    fn tally_counts_duplicates_and_misrouted_events() {
        let mut tally = Tally::new().unwrap();
        tally.streams = 1;
        let expect = Expect::new(Kind::Spread, 1, 2, 4);
        let mut stream = StreamState::new(expect);
        assert!(!tally.record(&mut stream, &event_data(1, 1_000, 32), 5_000));
        assert!(!tally.record(&mut stream, &event_data(1, 1_000, 32), 5_000));
        assert!(!tally.record(&mut stream, &event_data(2, 1_000, 32), 5_000));
        assert!(!tally.record(&mut stream, "hello", 5_000));
        assert!(tally.record(&mut stream, &event_data(3, 1_000, 32), 9_000));
        assert_eq!(
            (
                tally.unique,
                tally.duplicates,
                tally.misrouted,
                tally.unparsed
            ),
            (2, 1, 1, 1)
        );
        assert_eq!(tally.latency.max(), 8);
        assert_eq!(stream.missing_range(), None);
        let mut partial = StreamState::new(Expect::new(Kind::Spread, 2, 3, 20));
        assert!(!tally.record(&mut partial, &event_data(5, 1_000, 32), 5_000));
        assert_eq!(partial.missing_range(), Some((2, 17)));
    }

    #[test]
    fn histograms_merge_exactly_through_pairs() {
        let mut a = latency_histogram().unwrap();
        for v in [1, 5, 900, 12_345, 2_000_000] {
            a.record(v).unwrap();
        }
        let mut b = latency_histogram().unwrap();
        merge_pairs(&mut b, &histogram_pairs(&a)).unwrap();
        assert_eq!(a.len(), b.len());
        for q in [0.5, 0.9, 0.99, 1.0] {
            assert_eq!(a.value_at_quantile(q), b.value_at_quantile(q));
        }
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(format_number(1234567.0, 0), "1,234,567");
        assert_eq!(format_number(999.25, 1), "999.2");
        assert_eq!(format_number(-1234.5, 1), "-1,234.5");
    }
}
