//! Faults from below and from outside, against the real binary: a disk that
//! fills up or turns read-only under the durable history, SIGTERM while
//! publishers hammer the hub, clients that stop reading, and connection
//! storms. Each test asserts what the hub promises (a clear error, nothing
//! acknowledged lost, nothing duplicated, memory and descriptors bounded)
//! and then records a row of docs/reliability.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushwire_testkit::prelude::{get, history, post_json, Connection, HubProcess, SseClient, WAIT};
use pushwire_testkit::reliability::{record, Row};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// The hub binary under test.
const BIN: &str = pushwire_testkit::hub_binary!();

fn durable_hub(dir: &Path, extra: &[&str]) -> HubProcess {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--storage".as_ref(), "embedded".as_ref()];
    args.extend(["--data-dir".as_ref(), dir.as_os_str()]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    HubProcess::spawn(BIN, args)
}

fn pid(hub: &HubProcess) -> i32 {
    i32::try_from(hub.child.id()).unwrap()
}

/// Fails the test if the hub process has exited.
fn assert_running(hub: &mut HubProcess) {
    let status = hub.child.try_wait().unwrap();
    assert!(status.is_none(), "the hub died: {status:?}");
}

fn seq(id: &str) -> u64 {
    pushwire_core::event::hub_sequence(id).unwrap_or_else(|| panic!("`{id}` is not a hub id"))
}

/// Acknowledged events missing from `history` (or stored under another id).
/// Also fails the test if the history is not in strictly increasing id
/// order or holds any data twice.
fn lost(acked: &[(String, String)], history: &[(String, String)]) -> u64 {
    let seqs: Vec<u64> = history.iter().map(|(id, _)| seq(id)).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "history ids are not strictly increasing"
    );
    let mut datas: Vec<&str> = history.iter().map(|(_, d)| d.as_str()).collect();
    datas.sort_unstable();
    let before = datas.len();
    datas.dedup();
    assert_eq!(before, datas.len(), "an event is in the history twice");
    let stored: std::collections::HashMap<&str, &str> = history
        .iter()
        .map(|(id, d)| (id.as_str(), d.as_str()))
        .collect();
    acked
        .iter()
        .filter(|(id, data)| stored.get(id.as_str()) != Some(&data.as_str()))
        .count() as u64
}

/// One metric's value from `/metrics`.
async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let text = get(addr, "/metrics").await.body;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

async fn open_streams(addr: SocketAddr) -> u64 {
    get(addr, "/api/v1/stats").await.json()["streams"]
        .as_u64()
        .unwrap()
}

/// Polls `check` every 50 ms until it holds or `limit` passes.
async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// disk faults

/// What one publish got: the id, or the status and error body.
async fn publish_to(addr: SocketAddr, user: &str, data: &str) -> Result<String, (u16, Value)> {
    let reply = post_json(
        addr,
        "/api/v1/publish",
        &json!({"to": {"users": [user]}, "data": data}),
    )
    .await;
    if reply.status == 200 {
        Ok(reply.json()["id"].as_str().unwrap().to_owned())
    } else {
        Err((reply.status, reply.json()))
    }
}

/// What a disk-fault scenario saw.
struct FaultRun {
    /// Publishes refused while the fault lasted.
    refused: u64,
    lost: u64,
}

/// The common course of a disk fault: publish and hold a stream open,
/// `break_disk`, publish until refused (each refusal must be `status` +
/// `code`), check that the hub, its stream and its history are fine, `heal`,
/// then the next publishes succeed and continue the ids; after a clean
/// restart the history holds every acknowledged event once, in order.
async fn disk_fault(
    dir: &Path,
    status: u16,
    code: &str,
    break_disk: impl FnOnce(&HubProcess),
    heal: impl FnOnce(&HubProcess),
) -> FaultRun {
    let mut hub = durable_hub(dir, &[]);
    let addr = hub.addr;
    assert_eq!(get(addr, "/readyz").await.status, 200);
    let mut stream = SseClient::connect(addr, "/sse/subscribe/disk").await;
    assert_eq!(stream.status, 200);
    let mut acked = Vec::new();
    for i in 0..20 {
        let data = format!("before-{i}");
        acked.push((publish_to(addr, "disk", &data).await.unwrap(), data));
    }
    break_disk(&hub);
    // Large events, so the file has to grow; bounded in count.
    let filler = "f".repeat(32 * 1024);
    let mut refused = 0u64;
    let mut error = None;
    for i in 0..1000 {
        let data = format!("during-{i}-{filler}");
        match publish_to(addr, "disk", &data).await {
            Ok(id) => acked.push((id, data)),
            Err(e) => {
                refused += 1;
                error = Some(e);
                break;
            }
        }
    }
    let (got, body) = error.expect("no publish was refused: the fault did not happen");
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("nothing of this request was stored"),
        "{message}"
    );
    // While the fault lasts: every publish is refused the same way, the hub
    // stays up, its stream stays open and reads are served.
    for i in 0..5 {
        let (got, body) = publish_to(addr, "disk", &format!("refused-{i}"))
            .await
            .unwrap_err();
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)));
        refused += 1;
    }
    assert_running(&mut hub);
    assert_eq!(get(addr, "/healthz").await.status, 200);
    // Alive but not ready: a load balancer takes the node out, naming why.
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.json()["error"]["code"], "not_ready");
    assert!(
        ready.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("history: "),
        "{}",
        ready.body
    );
    let delivered = stream.take(acked.len()).await;
    let ids: Vec<String> = delivered.iter().filter_map(|e| e.id.clone()).collect();
    let want: Vec<String> = acked.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, want, "the stream got exactly the acknowledged events");
    assert!(!stream.ended, "the stream was closed by the disk fault");

    heal(&hub);
    // The writer opens the file again within about a second; until then
    // publishes keep being refused with the same error.
    let last = seq(&acked.last().unwrap().0);
    let deadline = Instant::now() + WAIT;
    let id = loop {
        match publish_to(addr, "disk", "after").await {
            Ok(id) => break id,
            Err((got, body)) => {
                assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)));
                refused += 1;
                assert!(Instant::now() < deadline, "the hub did not recover: {body}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(seq(&id), last + 1, "ids continue where they stopped");
    assert_eq!(get(addr, "/readyz").await.status, 200, "ready again");
    acked.push((id.clone(), "after".to_owned()));
    let next = stream.next().await;
    assert_eq!(
        (next.id.as_deref(), next.data.as_str()),
        (Some(id.as_str()), "after")
    );
    let lost_live = lost(&acked, &history(addr).await);
    assert_eq!(lost_live, 0, "acknowledged events missing from the history");

    tokio::task::spawn_blocking(move || hub.terminate())
        .await
        .unwrap();
    let hub = durable_hub(dir, &[]);
    let stored = history(hub.addr).await;
    let lost = lost(&acked, &stored);
    assert_eq!(lost, 0, "acknowledged events missing after a restart");
    assert_eq!(stored.len(), acked.len(), "refused publishes were stored");
    let id = publish_to(hub.addr, "disk", "after restart").await.unwrap();
    assert_eq!(
        seq(&id),
        last + 2,
        "no id is issued twice across the restart"
    );
    FaultRun { refused, lost }
}

/// Disk full, portably and without privileges: the hub's file size limit
/// (RLIMIT_FSIZE, set from outside with prlimit) is lowered to the size its
/// history file has, so the next write that grows the file fails with EFBIG
/// (and raises SIGXFSZ, which kills a process that does not catch it), as a
/// write to a full disk fails with ENOSPC. Raising the limit is space
/// coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_publishes_then_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.redb");
    let file_in_break = file.clone();
    let run = disk_fault(
        dir.path(),
        507,
        "insufficient_storage",
        move |hub| {
            let size = std::fs::metadata(&file_in_break).unwrap().len();
            rlimit::prlimit(
                pid(hub),
                rlimit::Resource::FSIZE,
                Some((size, u64::MAX)),
                None,
            )
            .expect("prlimit");
        },
        |hub| {
            rlimit::prlimit(
                pid(hub),
                rlimit::Resource::FSIZE,
                Some((u64::MAX, u64::MAX)),
                None,
            )
            .expect("prlimit");
        },
    )
    .await;
    record(Row {
        family: "disk full (file size limit reached while publishing)",
        cases: run.refused,
        crashes: 0,
        lost: run.lost,
        outcome: "507 insufficient_storage, streams stay open; recovers by itself, ids continue",
        test: "cargo test --test faults a_full_disk_refuses_publishes_then_recovers_by_itself",
    });
}

/// A small tmpfs mounted for one test; unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why it cannot (not root, no CAP_SYS_ADMIN, a
    /// container that forbids mounts).
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs { dir })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the file system holding `file` until a write fails with ENOSPC.
fn fill(file: &Path) {
    use std::io::Write;
    let mut filler = std::fs::File::create(file).unwrap();
    let block = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = filler.write_all(&block).and_then(|()| filler.sync_all()) {
            assert_eq!(e.raw_os_error(), Some(28), "{e}");
            return;
        }
    }
}

/// A real full disk: the history on a 32 MiB tmpfs that a filler file fills
/// up; deleting the filler is space coming back. Needs permission to mount
/// (root with CAP_SYS_ADMIN), so it is ignored by default; `scripts/test`
/// runs it with `--ignored` wherever it can mount a tmpfs, and run without
/// the privilege it fails rather than pass. The file size limit test above
/// covers the write path everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAP_SYS_ADMIN (mounts a tmpfs); scripts/test runs it where it can"]
async fn a_real_full_disk_refuses_publishes_then_recovers_by_itself() {
    let tmpfs = match Tmpfs::mount("32m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => panic!("cannot mount a tmpfs here ({why}): run as root with CAP_SYS_ADMIN"),
    };
    let dir = tmpfs.dir.path().join("data");
    let filler = tmpfs.dir.path().join("filler");
    let filler_gone = filler.clone();
    let run = disk_fault(
        &dir,
        507,
        "insufficient_storage",
        move |_| fill(&filler),
        move |_| std::fs::remove_file(&filler_gone).unwrap(),
    )
    .await;
    record(Row {
        family: "disk full (ENOSPC on a small tmpfs) while publishing",
        cases: run.refused,
        crashes: 0,
        lost: run.lost,
        outcome: "507 insufficient_storage, streams stay open; recovers by itself, ids continue",
        test: "cargo test --test faults a_real_full_disk_refuses_publishes_then_recovers_by_itself",
    });
}

/// Sets or clears the immutable attribute (`chattr +i`): even root's writes
/// to an open file then fail (EPERM), like a file that turned read-only
/// under the hub. Needs a file system with the attribute (ext4, xfs, btrfs)
/// and CAP_LINUX_IMMUTABLE.
fn immutable(file: &Path, on: bool) -> Result<(), String> {
    let flag = if on { "+i" } else { "-i" };
    let out = std::process::Command::new("chattr")
        .arg(flag)
        .arg(file)
        .output()
        .map_err(|e| format!("chattr: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Ignored by default: it needs CAP_LINUX_IMMUTABLE and a file system with
/// the immutable attribute. `scripts/test` runs it with `--ignored` wherever
/// `chattr +i` works; run without the privilege it fails rather than pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs CAP_LINUX_IMMUTABLE (chattr +i); scripts/test runs it where it can"]
async fn a_history_file_turned_read_only_refuses_publishes_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").unwrap();
    if let Err(why) = immutable(&probe, true) {
        panic!(
            "cannot make a file immutable here ({}): needs CAP_LINUX_IMMUTABLE",
            why.trim()
        );
    }
    immutable(&probe, false).unwrap();
    // The history is the file and its journal: both turn read-only.
    let files = ["events.redb", "events.journal"].map(|name| dir.path().join(name));
    let (on, off) = (files.clone(), files);
    let run = disk_fault(
        dir.path(),
        503,
        "storage_unavailable",
        move |_| on.iter().for_each(|f| immutable(f, true).unwrap()),
        move |_| off.iter().for_each(|f| immutable(f, false).unwrap()),
    )
    .await;
    record(Row {
        family: "history file turned read-only while publishing",
        cases: run.refused,
        crashes: 0,
        lost: run.lost,
        outcome: "503 storage_unavailable, streams stay open; recovers by itself, ids continue",
        test: "cargo test --test faults a_history_file_turned_read_only_refuses_publishes_then_recovers",
    });
}

/// A data directory the hub may not write to is reported as such, not as
/// a history the hub refuses to discard, and nothing is left in it.
/// Ignored by default for the same reason as the test above: as root,
/// only an immutable directory is unwritable.
#[tokio::test]
#[ignore = "needs CAP_LINUX_IMMUTABLE (chattr +i); scripts/test runs it where it can"]
async fn an_unwritable_empty_data_dir_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    if let Err(why) = immutable(&data, true) {
        panic!(
            "cannot make a directory immutable here ({}): needs CAP_LINUX_IMMUTABLE",
            why.trim()
        );
    }
    let mut config = pushwire_testkit::config();
    config.storage = pushwire::config::Storage::Embedded;
    config.data_dir = data.clone();
    let result = pushwire::server::start(config).await;
    immutable(&data, false).unwrap();
    let Err(error) = result else {
        panic!("the hub started on an unwritable data directory");
    };
    let message = format!("{error:#}");
    assert!(message.contains("must be writable"), "{message}");
    assert!(!message.contains("discard"), "{message}");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------
// SIGTERM under load

/// A keep-alive HTTP/1.1 connection that publishes one event per request.
struct Publisher {
    connection: Connection,
}

impl Publisher {
    async fn connect(addr: SocketAddr) -> Option<Publisher> {
        // A loopback Host: a keyless hub serves publishes for no other.
        let connection = Connection::open(addr, "localhost").await.ok()?;
        Some(Publisher { connection })
    }

    /// The id if the hub acknowledged the event with 200; `None` for any
    /// other outcome (refused, no answer, connection closed).
    async fn publish(&mut self, data: &str) -> Option<String> {
        let body = json!({"to": "all", "data": data}).to_string();
        let reply = self
            .connection
            .send(
                "POST",
                "/api/v1/publish",
                &[("Content-Type", "application/json")],
                body.as_bytes(),
            )
            .await
            .ok()?;
        if reply.status != 200 {
            return None;
        }
        let reply: Value = serde_json::from_str(&reply.body).ok()?;
        reply["id"].as_str().map(str::to_owned)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_publish() {
    const PUBLISHERS: usize = 16;
    const EACH: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &[]);
    let addr = hub.addr;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let (acked, attempts) = (acked.clone(), attempts.clone());
        tasks.push(tokio::spawn(async move {
            let Some(mut publisher) = Publisher::connect(addr).await else {
                return;
            };
            for i in 0..EACH {
                let data = format!("p{p}-{i}");
                attempts.fetch_add(1, Ordering::Relaxed);
                match publisher.publish(&data).await {
                    Some(id) => acked.lock().unwrap().push((id, data)),
                    // Refused or cut by the shutdown: a new connection, or
                    // stop once the hub no longer accepts any.
                    None => match Publisher::connect(addr).await {
                        Some(fresh) => publisher = fresh,
                        None => return,
                    },
                }
            }
        }));
    }
    wait_until("publishers are well under way", WAIT, || async {
        acked.lock().unwrap().len() >= 1500
    })
    .await;
    // SIGTERM in the middle of the load: exit status 0 within the grace.
    tokio::task::spawn_blocking(move || hub.terminate())
        .await
        .unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(
        acked.len() < PUBLISHERS * EACH,
        "every publish went through: the SIGTERM came too late to test anything"
    );
    let hub = durable_hub(dir.path(), &[]);
    let stored = history(hub.addr).await;
    let lost = lost(&acked, &stored);
    assert_eq!(lost, 0, "acknowledged publishes missing after SIGTERM");
    record(Row {
        family: "SIGTERM while 16 publishers hammer the durable hub",
        cases: attempts.load(Ordering::Relaxed),
        crashes: 0,
        lost,
        outcome: "exit 0 within the grace; every 2xx publish in the history once",
        test: "cargo test --test faults sigterm_under_load_exits_cleanly_and_keeps_every_acknowledged_publish",
    });
}

// ---------------------------------------------------------------------------
// slow clients

/// Resident memory of a process, KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// How a slow client reads.
#[derive(Clone, Copy)]
enum Slowness {
    /// Opens a stream, then never reads from its socket.
    NeverReads,
    /// Reads one byte a second.
    OneBytePerSecond,
}

/// One slow client among two fast ones, on a hub whose stream queues hold
/// 64 frames: 16 KiB events are published until the slow stream is cut,
/// then 48 MiB more. The slow stream must be cut (the metric says so), the
/// fast streams must get every event in order, and the hub's memory must
/// not follow what is published.
async fn slow_client(slowness: Slowness) -> (u64, u64) {
    const SIZE: usize = 16 * 1024;
    const MORE: usize = 3000;
    let hub = HubProcess::spawn(
        BIN,
        [
            "--storage",
            "memory",
            "--queue-capacity",
            "64",
            "--history-max-events",
            "64",
        ],
    );
    let addr = hub.addr;
    let socket = TcpSocket::new_v4().unwrap();
    // A small receive buffer, so the hub's side fills up soon.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(addr).await.unwrap();
    slow.write_all(b"GET /api/v1/stream?topic=feed HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await
        .unwrap();
    let slow_reader = tokio::spawn(async move {
        let mut byte = [0u8; 1];
        if let Slowness::OneBytePerSecond = slowness {
            loop {
                match slow.read(&mut byte).await {
                    Ok(1) => tokio::time::sleep(Duration::from_secs(1)).await,
                    _ => return,
                }
            }
        } else {
            // Hold the socket, never read.
            std::future::pending::<()>().await;
        }
    });
    let mut fast: Vec<SseClient> = Vec::new();
    for _ in 0..2 {
        fast.push(SseClient::connect(addr, "/api/v1/stream?topic=feed").await);
    }
    wait_until("the three streams are open", WAIT, || async {
        open_streams(addr).await == 3
    })
    .await;
    let published = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // The fast clients read concurrently, everything, until told the total.
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut client| {
            let (published, done) = (published.clone(), done.clone());
            tokio::spawn(async move {
                let mut next = 0u64;
                loop {
                    if done.load(Ordering::Acquire) && next == published.load(Ordering::Acquire) {
                        return (next, client);
                    }
                    let Some(event) = client.next_within(Duration::from_millis(200)).await else {
                        assert!(!client.ended, "a fast client was cut");
                        continue;
                    };
                    assert!(
                        event.data.starts_with(&format!("{next}:")),
                        "a fast client missed event {next}"
                    );
                    next += 1;
                }
            })
        })
        .collect();
    let payload = "x".repeat(SIZE);
    let publish_one = |n: u64| {
        let data = format!("{n}:{payload}");
        async move {
            let reply = post_json(
                addr,
                "/api/v1/publish",
                &json!({"to": {"topics": ["feed"]}, "data": data}),
            )
            .await;
            assert_eq!(reply.status, 200, "{}", reply.body);
        }
    };
    let mut n = 0u64;
    while metric(addr, "pushwire_slow_consumer_closes_total").await == 0 {
        assert!(n < 5000, "the slow client was never cut");
        publish_one(n).await;
        n += 1;
        published.store(n, Ordering::Release);
    }
    let to_cut = n;
    let rss_after_cut = rss_kib(pid(&hub));
    for _ in 0..MORE {
        publish_one(n).await;
        n += 1;
        published.store(n, Ordering::Release);
    }
    done.store(true, Ordering::Release);
    let mut fast = Vec::new();
    for reader in readers {
        let (got, client) = reader.await.unwrap();
        assert_eq!(got, n, "a fast client missed events");
        fast.push(client);
    }
    let rss_end = rss_kib(pid(&hub));
    let published_kib = MORE as u64 * SIZE as u64 / 1024;
    assert!(
        rss_end < rss_after_cut + 16 * 1024,
        "the hub grew from {rss_after_cut} KiB to {rss_end} KiB while {published_kib} KiB \
         were published"
    );
    assert_eq!(metric(addr, "pushwire_slow_consumer_closes_total").await, 1);
    assert_eq!(open_streams(addr).await, 2, "only the slow stream was cut");
    slow_reader.abort();
    drop(fast);
    eprintln!(
        "slow client cut after {to_cut} events; hub RSS {rss_after_cut} KiB -> {rss_end} KiB \
         while {published_kib} KiB more were published"
    );
    (n, rss_end.saturating_sub(rss_after_cut))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_and_the_others_get_everything() {
    let (published, _) = slow_client(Slowness::NeverReads).await;
    record(Row {
        family: "a client that never reads its socket (one among fast ones)",
        cases: published,
        crashes: 0,
        lost: 0,
        outcome: "cut as slow consumer; fast clients got every event; hub memory flat",
        test: "cargo test --test faults a_client_that_never_reads_is_cut_and_the_others_get_everything",
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reading_one_byte_a_second_is_cut_with_bounded_memory() {
    let (published, _) = slow_client(Slowness::OneBytePerSecond).await;
    record(Row {
        family: "a client that reads one byte a second",
        cases: published,
        crashes: 0,
        lost: 0,
        outcome: "cut as slow consumer; fast clients got every event; hub memory flat",
        test:
            "cargo test --test faults a_client_reading_one_byte_a_second_is_cut_with_bounded_memory",
    });
}

// ---------------------------------------------------------------------------
// connection storms

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Opens a connection from `source`; `None` if the hub refused it.
async fn connect_from(source: u8, addr: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket
        .bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, source)),
            0,
        ))
        .ok()?;
    socket.connect(addr).await.ok()
}

/// Sends a stream request and waits for the end of the response head.
async fn open_stream(stream: &mut TcpStream, user: &str) -> bool {
    let request = format!("GET /sse/subscribe/{user} HTTP/1.1\r\nHost: hub\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    head.starts_with(b"HTTP/1.1 200")
}

/// 10,000 connections from 8 loopback addresses in 8 tasks, each holding at
/// most 100 at a time (both processes stay far below their 20,000 open
/// files): a quarter closed right after connecting, a quarter right after
/// sending the request, half once the stream is open. Afterwards the hub
/// must have no stream, no user and no descriptor more than before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_opened_and_dropped_leak_nothing() {
    const TASKS: u8 = 8;
    const EACH: usize = 1250;
    const HOLD: usize = 100;
    let mut hub = HubProcess::spawn(BIN, ["--storage", "memory"]);
    let addr = hub.addr;
    let pid = pid(&hub);
    // A first stream and request, so lazily created descriptors exist.
    let warm = SseClient::connect(addr, "/sse/subscribe/warm").await;
    drop(warm);
    wait_until("the warm-up stream is gone", WAIT, || async {
        open_streams(addr).await == 0
    })
    .await;
    let fds_before = open_fds(pid);
    let opened = Arc::new(AtomicU64::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (opened, attempts) = (opened.clone(), attempts.clone());
        tasks.push(tokio::spawn(async move {
            let mut held = Vec::with_capacity(HOLD);
            for n in 0..EACH {
                attempts.fetch_add(1, Ordering::Relaxed);
                let Some(mut stream) = connect_from(1 + t, addr).await else {
                    continue;
                };
                match n % 4 {
                    0 => drop(stream),
                    1 => {
                        let _ = stream
                            .write_all(b"GET /sse/subscribe/gone HTTP/1.1\r\nHost: hub\r\n\r\n")
                            .await;
                        drop(stream);
                    }
                    _ => {
                        if open_stream(&mut stream, &format!("storm-{t}-{}", n % 50)).await {
                            opened.fetch_add(1, Ordering::Relaxed);
                        }
                        held.push(stream);
                    }
                }
                if held.len() >= HOLD {
                    held.clear();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let attempts = attempts.load(Ordering::Relaxed);
    let opened = opened.load(Ordering::Relaxed);
    assert_eq!(attempts, u64::from(TASKS) * EACH as u64);
    assert!(
        opened >= attempts / 2 * 9 / 10,
        "only {opened} of {attempts} streams opened"
    );
    // Settle: the hub notices every close.
    let limit = Duration::from_secs(60);
    wait_until("every stream is gone", limit, || async {
        open_streams(addr).await == 0
    })
    .await;
    wait_until("no user is online", limit, || async {
        pushwire_testkit::user_count(addr).await == 0
    })
    .await;
    wait_until(
        "the hub's descriptors are back to before",
        limit,
        || async { open_fds(pid) <= fds_before },
    )
    .await;
    assert_running(&mut hub);
    assert_eq!(metric(addr, "pushwire_streams_open").await, 0);
    eprintln!(
        "{attempts} connections, {opened} streams opened; hub fds {fds_before} before, {} after",
        open_fds(pid)
    );
    record(Row {
        family: "10,000 connections opened and dropped (8 source addresses)",
        cases: attempts,
        crashes: 0,
        lost: 0,
        outcome: "no crash; streams and online count back to 0; no descriptor leaked",
        test: "cargo test --test faults ten_thousand_connections_opened_and_dropped_leak_nothing",
    });
}
