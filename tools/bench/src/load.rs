//! The coordinator of `fanout` (N subscribers on one topic) and `spread`
//! (N topics with one subscriber each): starts worker processes of this
//! binary with their share of the streams, waits until every stream is
//! open, publishes the events at a fixed rate over several connections,
//! waits for the deliveries, and merges the workers' results into one
//! report.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::plan::{event_data, topic_name, unix_nanos, valid_name, Kind};
use crate::tally::{latency_histogram, merge_pairs};
use crate::target::{target_name, Target};
use crate::usage::hub_usage;
use crate::wire::read_response;

#[derive(Args)]
pub struct LoadArgs {
    /// Which hub: it decides the stream paths and the publish requests.
    #[arg(long, value_enum, default_value = "pushwire")]
    pub target: Target,
    /// Address streams are opened to. Repeat it (or give a comma-separated list) for the nodes of a cluster: the worker processes take the addresses in turn, so the streams spread over the nodes.
    #[arg(long, default_value = "127.0.0.1:8080", value_delimiter = ',')]
    pub hub: Vec<SocketAddr>,
    /// Address publishes go to (default: the first --hub; for Pushpin its control API, 127.0.0.1:5561).
    #[arg(long)]
    pub publish_to: Option<SocketAddr>,
    /// With several --hub addresses: publisher connections take them in turn instead of all using the first.
    #[arg(long)]
    pub publish_round_robin: bool,
    /// Streams to open (fanout: subscribers of the one topic; spread: topics, one subscriber each).
    #[arg(long, default_value_t = 1_000)]
    pub streams: usize,
    /// Events to publish.
    #[arg(long, default_value_t = 200)]
    pub events: usize,
    /// Events per second to publish (0 = as fast as the publisher connections go).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Bytes of data per event (sequence number, send time, padding).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Worker processes the streams are spread over.
    #[arg(long, default_value_t = 2)]
    pub processes: usize,
    /// Loopback source addresses (127.0.0.1 ..), shared out among the workers.
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Connections each worker opens at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Concurrent publisher connections.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Events per publish request (pushwire: JSON array; Pushpin: items; Nchan takes one).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Topic names start with this (default: unique per run).
    #[arg(long)]
    pub topic_prefix: Option<String>,
    /// Publisher key or token, if the hub needs one (pushwire: `--publisher-key` or a publisher JWT; Mercure: the publisher JWT).
    #[arg(long)]
    pub key: Option<String>,
    /// Pids of the hub (comma-separated; a hub of several processes is summed), to read memory and CPU time.
    #[arg(long, value_delimiter = ',')]
    pub hub_pid: Vec<u32>,
    /// Pause between the last stream opening and the first publish.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Give up opening streams after this long.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub connect_deadline: Duration,
    /// Times a refused stream is tried again, 200 ms later (counted in the report).
    #[arg(long, default_value_t = 3)]
    pub connect_retries: usize,
    /// How long after the last publish to wait for missing deliveries.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
    /// How long to keep reading after the last expected delivery (catches duplicates).
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    pub linger: Duration,
    /// Copied into the report, to tell runs apart.
    #[arg(long)]
    pub label: Option<String>,
    /// Copied into the report: the name of the workload this run is (default: the mode).
    #[arg(long)]
    pub workload: Option<String>,
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

/// The coordinator of `fanout` and `spread`.
pub async fn load(kind: Kind, args: LoadArgs) -> anyhow::Result<()> {
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
    // The load generator's own CPU over the same phase (this process and its
    // workers), so that a reader can tell which side set the pace.
    let load_pids: Vec<u32> = std::iter::once(std::process::id())
        .chain(workers.children.iter().map(Child::id))
        .collect();
    let load_settled = hub_usage(&load_pids).ok().flatten();

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
    let load_delivered = hub_usage(&load_pids).ok().flatten();
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
    if let (Some(l0), Some(l1)) = (load_settled, load_delivered) {
        let cpu = l1.cpu_seconds - l0.cpu_seconds;
        report["load_cpu_seconds"] = json!(cpu);
        if unique > 0 {
            report["load_cpu_us_per_delivery"] =
                json!((cpu * 1e6 / unique as f64 * 100.0).round() / 100.0);
        }
    }
    println!("{report}");
    Ok(())
}
