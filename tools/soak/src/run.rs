//! The coordinator: spreads the streams over worker processes, publishes
//! steadily while they churn, samples the hub into the CSV file, and at
//! the end checks memory growth and descriptors and prints the report.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use crate::probe::{open_fds, open_streams, rss_kib, Sample};

#[derive(Args)]
pub struct RunArgs {
    /// Hub address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    hub: SocketAddr,
    /// Pid of the hub, to read its memory and descriptors from /proc.
    #[arg(long)]
    hub_pid: u32,
    /// Length of the run with every stream open.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Streams held open (the hub needs one descriptor for each).
    #[arg(long, default_value_t = 19_500)]
    streams: usize,
    /// Worker processes the streams are spread over.
    #[arg(long, default_value_t = 4)]
    processes: usize,
    /// Loopback source addresses (127.0.0.1 ..), shared out among the workers.
    #[arg(long, default_value_t = 16)]
    sources: u8,
    /// Percent of the streams closed and reopened every second.
    #[arg(long, default_value_t = 5.0)]
    churn: f64,
    /// Events per second published to single users.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds between two events published to everyone (0: none).
    #[arg(long, default_value_t = 10)]
    broadcast_every: u64,
    /// Interval between two samples.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    sample: Duration,
    /// Samples before this are the warm-up (default: a fifth of the run, at most 2 minutes).
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// Most the resident memory may grow after the warm-up, in percent.
    #[arg(long, default_value_t = 10.0)]
    max_rss_growth: f64,
    /// Descriptors beyond streams plus the constant tolerated at a sample
    /// (default: one second of churn, plus 200): connections the clients
    /// closed that the hub has not yet noticed, and new ones it has accepted
    /// but not yet counted as streams.
    #[arg(long)]
    fd_slack: Option<usize>,
    /// CSV file the samples go to.
    #[arg(long)]
    csv: PathBuf,
}

struct WorkerProcess {
    child: Child,
    /// Lines the worker printed.
    lines: mpsc::Receiver<String>,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_workers(args: &RunArgs, lifetime: Duration) -> anyhow::Result<Vec<WorkerProcess>> {
    let exe = std::env::current_exe()?;
    let processes = args.processes.max(1);
    let mut workers = Vec::with_capacity(processes);
    for p in 0..processes {
        let first = args.streams * p / processes;
        let count = args.streams * (p + 1) / processes - first;
        let sources: Vec<String> = (1..=args.sources.max(1))
            .filter(|s| {
                usize::from(*s - 1) % processes == p || usize::from(args.sources) < processes
            })
            .map(|s| s.to_string())
            .collect();
        let mut child = Command::new(&exe)
            .arg("worker")
            .args(["--hub", &args.hub.to_string()])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--sources", &sources.join(",")])
            .args(["--churn", &args.churn.to_string()])
            .args(["--lifetime", &format!("{}s", lifetime.as_secs())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start a worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        workers.push(WorkerProcess { child, lines });
    }
    Ok(workers)
}

/// A keep-alive publishing connection.
struct Publisher {
    hub: SocketAddr,
    stream: Option<std::net::TcpStream>,
    published: u64,
    failed: u64,
}

impl Publisher {
    fn publish(&mut self, body: &str) {
        match self.try_publish(body) {
            Ok(()) => self.published += 1,
            Err(_) => {
                self.failed += 1;
                self.stream = None;
            }
        }
    }

    fn try_publish(&mut self, body: &str) -> anyhow::Result<()> {
        use std::io::Read;
        if self.stream.is_none() {
            let stream = std::net::TcpStream::connect(self.hub)?;
            stream.set_read_timeout(Some(Duration::from_secs(10)))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().context("no connection")?;
        write!(
            stream,
            "POST /api/v1/publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            self.hub,
            body.len()
        )?;
        let mut raw = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                bail!("connection closed");
            }
            raw.extend_from_slice(&chunk[..n]);
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if raw.len() >= end + 4 + length {
                if !head.starts_with("http/1.1 200") {
                    bail!("{}", head.lines().next().unwrap_or_default());
                }
                return Ok(());
            }
        }
    }
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let length = Duration::from_secs_f64(args.minutes.max(0.0) * 60.0);
    let warmup = args
        .warmup
        .unwrap_or_else(|| (length / 5).min(Duration::from_secs(120)));
    let pid = args.hub_pid;
    let fds_before = open_fds(pid)?;
    let rss_before = rss_kib(pid)?;
    let mut csv = std::fs::File::create(&args.csv)
        .with_context(|| format!("cannot write {}", args.csv.display()))?;
    writeln!(csv, "seconds,phase,rss_kib,fds,streams")?;
    writeln!(csv, "0,before,{rss_before},{fds_before},0")?;

    // Opening 20,000 streams takes a while; the workers' own deadline
    // covers it, the run and the closing.
    let opened_at = Instant::now();
    let mut workers = spawn_workers(&args, length + Duration::from_secs(600))?;
    for worker in &mut workers {
        let line = worker
            .lines
            .recv_timeout(Duration::from_secs(300))
            .context("a worker did not open its streams in time")?;
        if line != "ready" {
            bail!("a worker failed: {line}");
        }
    }
    let open_seconds = opened_at.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut publisher = Publisher {
        hub: args.hub,
        stream: None,
        published: 0,
        failed: 0,
    };
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(0.1));
    let mut next_publish = started;
    let mut next_sample = started;
    let mut next_broadcast = started + Duration::from_secs(args.broadcast_every.max(1));
    let mut samples: Vec<Sample> = Vec::new();
    let mut n = 0u64;
    while started.elapsed() < length {
        let now = Instant::now();
        if now >= next_sample {
            let sample = Sample {
                seconds: started.elapsed().as_secs_f64(),
                rss_kib: rss_kib(pid)?,
                fds: open_fds(pid)?,
                streams: open_streams(args.hub)?,
            };
            writeln!(
                csv,
                "{:.0},{},{},{},{}",
                sample.seconds,
                if sample.seconds < warmup.as_secs_f64() {
                    "warmup"
                } else {
                    "load"
                },
                sample.rss_kib,
                sample.fds,
                sample.streams
            )?;
            csv.flush()?;
            samples.push(sample);
            next_sample += args.sample;
        }
        if args.broadcast_every > 0 && now >= next_broadcast {
            publisher.publish(&json!({"to": "all", "data": format!("soak all {n}")}).to_string());
            next_broadcast += Duration::from_secs(args.broadcast_every);
        }
        if now >= next_publish {
            // Users spread over every stream: a large prime step.
            let user = (n * 7919) % args.streams.max(1) as u64;
            let body =
                json!({"to": {"users": [format!("soak-{user}")]}, "data": format!("soak {n}")});
            publisher.publish(&body.to_string());
            n += 1;
            next_publish += interval;
        }
        let wake = next_publish.min(next_sample).min(next_broadcast);
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100)),
        );
    }

    // Closing: workers close every stream and report.
    let mut reports = Vec::new();
    for worker in &mut workers {
        drop(worker.child.stdin.take());
    }
    for worker in &mut workers {
        let line = worker
            .lines
            .recv_timeout(Duration::from_secs(120))
            .context("a worker did not stop")?;
        let report: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("worker said: {line}"))?;
        reports.push(report);
        let status = worker.child.wait()?;
        if !status.success() {
            bail!("a worker exited with {status}");
        }
    }
    let settle_deadline = Instant::now() + Duration::from_secs(120);
    let (streams_end, fds_end) = loop {
        let streams = open_streams(args.hub)?;
        let fds = open_fds(pid)?;
        if (streams == 0 && fds <= fds_before) || Instant::now() >= settle_deadline {
            break (streams, fds);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let rss_end_idle = rss_kib(pid)?;
    writeln!(
        csv,
        "{:.0},after,{rss_end_idle},{fds_end},{streams_end}",
        started.elapsed().as_secs_f64()
    )?;

    let warm = samples
        .iter()
        .find(|s| s.seconds >= warmup.as_secs_f64())
        .or(samples.first())
        .context("no sample taken")?;
    let last = samples.last().context("no sample taken")?;
    let peak = samples
        .iter()
        .filter(|s| s.seconds >= warm.seconds)
        .map(|s| s.rss_kib)
        .max()
        .unwrap_or(warm.rss_kib);
    let growth = (last.rss_kib as f64 - warm.rss_kib as f64) * 100.0 / warm.rss_kib as f64;
    let worst_fd_excess = samples
        .iter()
        .map(|s| s.fds as i64 - s.streams as i64 - fds_before as i64)
        .max()
        .unwrap_or(0);
    let sum = |key: &str| {
        reports
            .iter()
            .map(|r| r[key].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    let mut failures = Vec::new();
    if growth > args.max_rss_growth {
        failures.push(format!(
            "resident memory grew {growth:.1}% after the warm-up (limit {}%)",
            args.max_rss_growth
        ));
    }
    let fd_slack = args
        .fd_slack
        .unwrap_or((args.streams as f64 * args.churn / 100.0) as usize + 200);
    if worst_fd_excess > fd_slack as i64 {
        failures.push(format!(
            "descriptors exceeded streams + {fds_before} by {worst_fd_excess} at a sample \
             (slack {fd_slack})"
        ));
    }
    if streams_end != 0 || fds_end > fds_before {
        failures.push(format!(
            "after closing: {streams_end} streams and {fds_end} descriptors ({fds_before} before)"
        ));
    }
    let report = json!({
        "mode": "soak",
        "minutes": args.minutes,
        "streams": args.streams,
        "processes": args.processes,
        "churn_percent_per_second": args.churn,
        "open_seconds": open_seconds,
        "samples": samples.len(),
        "warmup_seconds": warmup.as_secs(),
        "rss_kib": {"before": rss_before, "after_warmup": warm.rss_kib, "end": last.rss_kib,
                    "peak_after_warmup": peak, "after_close": rss_end_idle},
        "rss_growth_percent": (growth * 10.0).round() / 10.0,
        "fds": {"before": fds_before, "worst_excess_over_streams": worst_fd_excess,
                "after_close": fds_end},
        "published": publisher.published,
        "publish_failures": publisher.failed,
        "streams_opened": sum("opened"),
        "reopen_failures": sum("failed"),
        "events_received": sum("events"),
        "ok": failures.is_empty(),
        "failures": failures,
        "csv": args.csv,
    });
    println!("{report}");
    if !failures.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
