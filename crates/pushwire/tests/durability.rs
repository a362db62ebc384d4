//! Durable history: nothing acknowledged is lost across restarts and
//! crashes (the real binary, killed with SIGKILL), sequence numbers never
//! go back, retention, refusing to start on a bad data directory, and
//! replay joining live delivery under load.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushwire::config::Storage;
use pushwire_testkit::prelude::*;
use serde_json::{json, Value};

const BIN: &str = pushwire_testkit::hub_binary!();

/// A hub process on a data directory; killed (SIGKILL) when dropped.
type Hub = HubProcess;

/// The binary on `dir` with the embedded (durable) history.
fn durable_hub(dir: &Path, extra: &[&str]) -> Hub {
    let mut args: Vec<&std::ffi::OsStr> = vec!["--storage".as_ref(), "embedded".as_ref()];
    args.extend(["--data-dir".as_ref(), dir.as_os_str()]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    HubProcess::spawn(BIN, args)
}

/// Runs the binary expecting it to refuse to start: returns its exit
/// status and stderr. Fails the test if it is still running after `WAIT`.
fn run_to_exit(dir: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--storage", "embedded"])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pushwire");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the hub started on a data directory it should have refused");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// Publishes one event; `None` when the hub did not acknowledge it (no
/// answer, connection refused or reset, or an error status).
async fn try_publish(addr: SocketAddr, event: &Value) -> Option<String> {
    let reply = acknowledged(addr, event).await?;
    reply["id"].as_str().map(str::to_owned)
}

/// The JSON answer to a publish of `body` if the hub answered it with 200.
async fn acknowledged(addr: SocketAddr, body: &Value) -> Option<Value> {
    let reply = try_request(
        addr,
        "POST",
        "/api/v1/publish",
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await
    .ok()?;
    if reply.status != 200 {
        return None;
    }
    serde_json::from_str(&reply.body).ok()
}

fn seq(id: &str) -> u64 {
    pushwire_core::event::hub_sequence(id).unwrap_or_else(|| panic!("`{id}` is not a hub id"))
}

/// Every acknowledged (id, data) is in `history` with its data; the history
/// is in strictly increasing id order (so no duplicates).
fn assert_all_acknowledged_present(acked: &[(String, String)], history: &[(String, String)]) {
    let seqs: Vec<u64> = history.iter().map(|(id, _)| seq(id)).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "history is not in strictly increasing order: {seqs:?}"
    );
    let stored: HashMap<&str, &str> = history
        .iter()
        .map(|(id, data)| (id.as_str(), data.as_str()))
        .collect();
    let mut lost = Vec::new();
    for (id, data) in acked {
        match stored.get(id.as_str()) {
            Some(got) => assert_eq!(got, data, "event {id} came back with other data"),
            None => lost.push(id.clone()),
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged events lost, among them {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
}

/// A small xorshift generator: enough randomness for timings and sizes.
struct Rng(u64);

impl Rng {
    fn seeded(salt: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        Rng((nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_restart_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &[]);
    // The stream below listens as user alice and to topic news.
    let targets = [
        (json!({"users": ["alice"]}), true),
        (json!({"users": ["bob"]}), false),
        (json!({"topics": ["news"]}), true),
        (json!({"topics": ["sports"]}), false),
        (json!({"user_prefix": "al"}), true),
        (json!("all"), true),
    ];
    let mut published = Vec::new();
    for i in 0..200 {
        let (to, reaches) = &targets[i % targets.len()];
        let data = format!("event {i}\nsecond line");
        let id = try_publish(hub.addr, &json!({"to": to, "data": data, "event": "note"}))
            .await
            .expect("publish acknowledged");
        published.push((id, data, *reaches));
    }
    tokio::task::block_in_place(|| hub.terminate());

    let hub = durable_hub(dir.path(), &[]);
    let resume_from = &published[49].0;
    let expected: Vec<(String, String)> = published[50..]
        .iter()
        .filter(|(_, _, reaches)| *reaches)
        .map(|(id, data, _)| (id.clone(), data.clone()))
        .collect();
    let mut tab = SseClient::connect_with(
        hub.addr,
        "/api/v1/stream?user=alice&topic=news",
        &[("Last-Event-ID", resume_from)],
    )
    .await;
    assert_eq!(tab.status, 200);
    assert_eq!(tab.header("pushwire-reset"), None);
    let got: Vec<(String, String)> = tab
        .take(expected.len())
        .await
        .into_iter()
        .map(|e| {
            assert_eq!(e.event, "note");
            (e.id.unwrap(), e.data)
        })
        .collect();
    assert_eq!(got, expected);
    tab.expect_silence(Duration::from_millis(300)).await;
    // And the stream goes on live after the replay.
    let live = try_publish(
        hub.addr,
        &json!({"to": {"users": ["alice"]}, "data": "live"}),
    )
    .await
    .unwrap();
    let event = tab.next().await;
    assert_eq!((event.id.unwrap(), event.data), (live, "live".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_kill_minus_9_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &[]);
    let addr = hub.addr;
    let publishers = 10;
    let each = 50;
    let mut tasks = Vec::new();
    for p in 0..publishers {
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..each {
                let data = format!("publisher {p} event {i}");
                let to = if i % 2 == 0 {
                    json!({"users": [format!("u{p}")]})
                } else {
                    json!({"topics": ["t"]})
                };
                let id = try_publish(addr, &json!({"to": to, "data": data}))
                    .await
                    .expect("publish acknowledged");
                acked.push((id, data));
            }
            acked
        }));
    }
    let mut per_publisher = Vec::new();
    for task in tasks {
        per_publisher.push(task.await.unwrap());
    }
    // Right after the last acknowledgement: no clean shutdown.
    hub.kill();

    let hub = durable_hub(dir.path(), &[]);
    let stored = history(hub.addr).await;
    let acked: Vec<(String, String)> = per_publisher.iter().flatten().cloned().collect();
    assert_eq!(acked.len(), publishers * each);
    assert_all_acknowledged_present(&acked, &stored);
    assert_eq!(
        stored.len(),
        acked.len(),
        "events appeared that nobody published"
    );
    // Each publisher's events are stored in the order it published them.
    let position: HashMap<&str, usize> = stored
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.as_str(), i))
        .collect();
    for mine in &per_publisher {
        let order: Vec<usize> = mine.iter().map(|(id, _)| position[id.as_str()]).collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_in_the_middle_of_a_publish_stream_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &[]);
    let addr = hub.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let attempted = Arc::new(Mutex::new(HashSet::new()));
    let mut tasks = Vec::new();
    for p in 0..8 {
        let (stop, attempted) = (stop.clone(), attempted.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let data = format!("p{p}-{i}");
                i += 1;
                attempted.lock().unwrap().insert(data.clone());
                // Some single events, some batches of three.
                let body = if i % 4 == 0 {
                    let batch: Vec<Value> = (0..3)
                        .map(|k| json!({"to": "all", "data": format!("{data}.{k}")}))
                        .collect();
                    for k in 0..3 {
                        attempted.lock().unwrap().insert(format!("{data}.{k}"));
                    }
                    json!(batch)
                } else {
                    json!({"to": {"users": ["u"]}, "data": data})
                };
                if body.is_array() {
                    if let Some(ids) = try_publish_batch(addr, &body).await {
                        for (k, id) in ids.into_iter().enumerate() {
                            acked.push((id, format!("{data}.{k}")));
                        }
                    }
                } else if let Some(id) = try_publish(addr, &body).await {
                    acked.push((id, data));
                }
            }
            acked
        }));
    }
    let mut rng = Rng::seeded(7);
    tokio::time::sleep(Duration::from_millis(400 + rng.below(1200))).await;
    tokio::task::block_in_place(|| hub.kill());
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    assert!(
        acked.len() > 20,
        "too few publishes before the kill to mean anything"
    );

    let hub = durable_hub(dir.path(), &[]);
    let stored = history(hub.addr).await;
    assert_all_acknowledged_present(&acked, &stored);
    // Unacknowledged publishes may or may not be there, but nothing else.
    let attempted = std::mem::take(&mut *attempted.lock().unwrap());
    for (id, data) in &stored {
        assert!(
            attempted.contains(data),
            "event {id} ({data:?}) was never published"
        );
    }
    // The hub goes on after the crash with new, larger ids.
    let next = try_publish(hub.addr, &json!({"to": "all", "data": "after"}))
        .await
        .unwrap();
    let newest = stored.last().map_or(0, |(id, _)| seq(id));
    assert!(seq(&next) > newest);
}

/// Publishes a JSON array as one batch; its ids, or `None` if not acknowledged.
async fn try_publish_batch(addr: SocketAddr, batch: &Value) -> Option<Vec<String>> {
    let reply = acknowledged(addr, batch).await?;
    reply["ids"]
        .as_array()?
        .iter()
        .map(|id| id.as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_continues_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--history-max-age", "1s"];
    let hub = durable_hub(dir.path(), &args);
    let mut newest = 0;
    for i in 0..5 {
        let id = try_publish(hub.addr, &json!({"to": "all", "data": i.to_string()}))
            .await
            .unwrap();
        assert!(seq(&id) > newest);
        newest = seq(&id);
    }
    // Retention empties the history; the sequence must still go on.
    let addr = hub.addr;
    eventually("the history is trimmed", || async {
        history(addr).await.is_empty()
    })
    .await;
    tokio::task::block_in_place(|| hub.terminate());

    let hub = durable_hub(dir.path(), &args);
    let id = try_publish(
        hub.addr,
        &json!({"to": "all", "data": "after a clean stop"}),
    )
    .await
    .unwrap();
    assert!(seq(&id) > newest, "id {id} issued again after a restart");
    newest = seq(&id);
    tokio::task::block_in_place(|| hub.kill());

    let hub = durable_hub(dir.path(), &args);
    let id = try_publish(hub.addr, &json!({"to": "all", "data": "after a crash"}))
        .await
        .unwrap();
    assert!(seq(&id) > newest, "id {id} issued again after a crash");
}

/// Publishes events "0", "1", … to everyone; returns (id, data) of each.
async fn publish_numbered(addr: SocketAddr, n: usize) -> Vec<(String, String)> {
    let mut acked = Vec::with_capacity(n);
    for i in 0..n {
        let data = i.to_string();
        let id = try_publish(addr, &json!({"to": "all", "data": data}))
            .await
            .expect("publish acknowledged");
        acked.push((id, data));
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_interval_makes_acknowledged_events_durable_within_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--fsync", "interval:100"];
    let hub = durable_hub(dir.path(), &args);
    let acked = publish_numbered(hub.addr, 50).await;
    // Idle for several intervals: the writer forces the commits to disk
    // without waiting for another publish or a clean stop.
    tokio::time::sleep(Duration::from_millis(600)).await;
    tokio::task::block_in_place(|| hub.kill());
    let hub = durable_hub(dir.path(), &args);
    let stored = history(hub.addr).await;
    assert_all_acknowledged_present(&acked, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsync_never_still_keeps_everything_across_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--fsync", "never"];
    let hub = durable_hub(dir.path(), &args);
    let acked = publish_numbered(hub.addr, 20).await;
    tokio::task::block_in_place(|| hub.terminate());
    let hub = durable_hub(dir.path(), &args);
    let stored = history(hub.addr).await;
    assert_all_acknowledged_present(&acked, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_never_issued_twice_even_when_a_crash_loses_unforced_commits() {
    for fsync in ["never", "interval:60000"] {
        let dir = tempfile::tempdir().unwrap();
        let args = ["--fsync", fsync];
        let hub = durable_hub(dir.path(), &args);
        let mut newest = 0;
        for i in 0..20 {
            let id = try_publish(hub.addr, &json!({"to": "all", "data": i.to_string()}))
                .await
                .unwrap();
            newest = newest.max(seq(&id));
        }
        // Acknowledged but not forced to disk: the crash may lose them (the
        // mode's documented risk), but their ids were seen by clients.
        tokio::task::block_in_place(|| hub.kill());
        let hub = durable_hub(dir.path(), &args);
        let id = try_publish(hub.addr, &json!({"to": "all", "data": "after"}))
            .await
            .unwrap();
        assert!(
            seq(&id) > newest,
            "{fsync}: id {id} issued again after a crash (newest before: {newest})"
        );
        // A clean stop gives back the unused reservation: no jump.
        tokio::task::block_in_place(|| hub.terminate());
        let hub = durable_hub(dir.path(), &args);
        let next = try_publish(hub.addr, &json!({"to": "all", "data": "again"}))
            .await
            .unwrap();
        assert_eq!(seq(&next), seq(&id) + 1, "{fsync}");
    }
}

fn embedded_config(dir: &Path) -> pushwire::config::ServeConfig {
    let mut c = config();
    c.storage = Storage::Embedded;
    c.data_dir = dir.to_owned();
    c
}

/// The stages of a durable publish are timed: one sample of each for one
/// publish, in `/metrics`.
#[tokio::test]
async fn a_durable_publish_is_timed_stage_by_stage() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(embedded_config(dir.path())).await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/sse/subscribe/u").await;
    publish(addr, json!({"to": "all", "data": "x"})).await;
    assert_eq!(tab.next().await.data, "x");
    let metrics = get(addr, "/metrics").await.body;
    for line in [
        "pushwire_publish_stage_seconds_count{stage=\"queue\"} 1",
        "pushwire_publish_stage_seconds_count{stage=\"write\"} 1",
        "pushwire_publish_stage_seconds_count{stage=\"sync\"} 1",
        "pushwire_publish_stage_seconds_count{stage=\"answer\"} 1",
        "pushwire_publish_stage_seconds_count{stage=\"fanout\"} 1",
        "pushwire_history_group_requests_count 1",
        "pushwire_history_group_requests_sum 1.0",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn retention_by_count_and_age() {
    // By count.
    let dir = tempfile::tempdir().unwrap();
    let mut c = embedded_config(dir.path());
    c.history_max_events = 10;
    let server = start(c).await;
    let addr = server.addr();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            publish(
                addr,
                json!({"to": {"users": ["u"]}, "data": format!("{i}")}),
            )
            .await,
        );
    }
    let kept = history(addr).await;
    let expected: Vec<(String, String)> =
        (20..30).map(|i| (ids[i].clone(), i.to_string())).collect();
    assert_eq!(kept, expected);
    let mut tab =
        SseClient::connect_with(addr, "/sse/subscribe/u", &[("Last-Event-ID", &ids[5])]).await;
    assert_eq!(tab.header("pushwire-reset"), Some("1"));
    assert_eq!(tab.header("last-event-id"), Some(ids[29].as_str()));
    let reset = tab.next().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.id.as_deref(), Some(ids[29].as_str()));
    let data: Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(data["reason"], "unknown_last_event_id");
    assert_eq!(data["requested"], ids[5].as_str());
    assert_eq!(data["last_event_id"], ids[29].as_str());
    tab.expect_silence(Duration::from_millis(200)).await;
    // The predecessor of the oldest retained event still resumes.
    let mut tab =
        SseClient::connect_with(addr, "/sse/subscribe/u", &[("Last-Event-ID", &ids[19])]).await;
    assert_eq!(tab.header("pushwire-reset"), None);
    let replayed: Vec<String> = tab.take(10).await.into_iter().map(|e| e.data).collect();
    assert_eq!(
        replayed,
        (20..30).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    server.shutdown().await;

    // By age.
    let dir = tempfile::tempdir().unwrap();
    let mut c = embedded_config(dir.path());
    c.history_max_age = Duration::from_secs(1);
    let server = start(c).await;
    let addr = server.addr();
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            publish(
                addr,
                json!({"to": {"users": ["u"]}, "data": format!("{i}")}),
            )
            .await,
        );
    }
    assert_eq!(history(addr).await.len(), 5, "trimmed too early");
    let deadline = Instant::now() + WAIT;
    while !history(addr).await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "events older than 1s were not trimmed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "trimmed too early"
    );
    let mut tab =
        SseClient::connect_with(addr, "/sse/subscribe/u", &[("Last-Event-ID", &ids[0])]).await;
    assert_eq!(tab.header("pushwire-reset"), Some("1"));
    assert_eq!(tab.next().await.event, "reset");
    // A fresh event is kept again.
    publish(addr, json!({"to": {"users": ["u"]}, "data": "new"})).await;
    assert_eq!(history(addr).await.len(), 1);
}

#[test]
fn corrupt_data_dir_refuses_to_start() {
    // Not a database at all.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.redb");
    let mut rng = Rng::seeded(3);
    let garbage: Vec<u8> = (0..64 * 1024).map(|_| rng.below(256) as u8).collect();
    std::fs::write(&file, &garbage).unwrap();
    let (status, stderr) = run_to_exit(dir.path());
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        stderr.contains(&file.display().to_string()),
        "stderr does not name the file: {stderr}"
    );
    assert!(stderr.contains("refuses to start"), "{stderr}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        garbage,
        "the file was modified"
    );

    // A real history, stopped cleanly, then damaged: once in its pages
    // (the header still says "redb"), once in its header.
    for damage in ["pages", "header"] {
        let dir = tempfile::tempdir().unwrap();
        let hub = durable_hub(dir.path(), &[]);
        let addr = hub.addr;
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            for b in 0..20 {
                let batch: Vec<Value> = (0..100)
                    .map(|i| json!({"to": "all", "data": format!("{b}-{i}")}))
                    .collect();
                try_publish_batch(addr, &json!(batch)).await.unwrap();
            }
        });
        hub.terminate();
        let file = dir.path().join("events.redb");
        let mut bytes = std::fs::read(&file).unwrap();
        if damage == "header" {
            bytes[..512].fill(0xAB);
        } else {
            for page in bytes.chunks_mut(4096).skip(2) {
                page[100..116].fill(0xFF);
            }
        }
        std::fs::write(&file, &bytes).unwrap();
        let (status, stderr) = run_to_exit(dir.path());
        assert!(!status.success(), "started on a damaged file ({damage})");
        assert!(
            stderr.contains(&file.display().to_string()),
            "{damage}: {stderr}"
        );
        assert!(stderr.contains("refuses to start"), "{damage}: {stderr}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            bytes,
            "the file was modified ({damage})"
        );
    }

    // A data directory that cannot be created: its parent is a regular file.
    let dir = tempfile::tempdir().unwrap();
    let parent = dir.path().join("plain-file");
    std::fs::write(&parent, b"not a directory").unwrap();
    let data_dir = parent.join("data");
    let (status, stderr) = run_to_exit(&data_dir);
    assert!(!status.success());
    assert!(
        stderr.contains(&data_dir.display().to_string()),
        "stderr does not name the directory: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
}

/// Publishes `n` events one at a time to a durable hub on `dir`, copying
/// the journal just before the last, then kills the hub (SIGKILL): returns
/// what was acknowledged, the journal before the last event and after it.
fn journal_around_a_kill(dir: &Path, n: usize) -> (Vec<(String, String)>, Vec<u8>, Vec<u8>) {
    let journal = dir.join("events.journal");
    let hub = durable_hub(dir, &[]);
    let addr = hub.addr;
    let mut acked = Vec::new();
    let mut before = Vec::new();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        for i in 0..n {
            if i == n - 1 {
                before = std::fs::read(&journal).unwrap();
            }
            let data = format!("event {i}");
            let id = try_publish(addr, &json!({"to": "all", "data": data}))
                .await
                .expect("publish acknowledged");
            acked.push((id, data));
        }
    });
    hub.kill();
    let after = std::fs::read(&journal).unwrap();
    (acked, before, after)
}

/// The journal after a crash: a last write torn anywhere is dropped (it was
/// never acknowledged: here the test tears one that was, to have a real
/// frame to tear), and everything before it is recovered; damage before
/// frames that are whole is refused at start, naming the journal, and
/// nothing is changed.
#[test]
fn a_torn_journal_tail_is_dropped_and_damage_before_it_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let (acked, before, after) = journal_around_a_kill(dir.path(), 30);
    // The last frame: where the journal changed with the last publish.
    let start = (0..after.len())
        .find(|&i| before.get(i) != after.get(i))
        .unwrap();
    let end = (0..after.len())
        .rfind(|&i| before.get(i) != after.get(i))
        .unwrap()
        + 1;
    assert!(end - start > 40, "one frame: {start}..{end}");
    let mut torn = after.clone();
    torn[(start + end) / 2..end].fill(0);
    std::fs::write(dir.path().join("events.journal"), &torn).unwrap();
    let hub = durable_hub(dir.path(), &[]);
    let stored = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(history(hub.addr));
    assert_eq!(
        stored,
        acked[..29],
        "everything before the torn write, once"
    );
    hub.terminate();

    // Damage in the first frame, with 29 whole frames after it.
    let dir = tempfile::tempdir().unwrap();
    let (_, _, after) = journal_around_a_kill(dir.path(), 30);
    let mut damaged = after.clone();
    damaged[50] ^= 0x20;
    let journal = dir.path().join("events.journal");
    std::fs::write(&journal, &damaged).unwrap();
    let (status, stderr) = run_to_exit(dir.path());
    assert!(!status.success(), "started on a damaged journal");
    assert!(
        stderr.contains(&journal.display().to_string()) && stderr.contains("damaged"),
        "{stderr}"
    );
    assert!(stderr.contains("refuses to start"), "{stderr}");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        damaged,
        "the journal was modified"
    );
}

/// Past a checkpoint (the journal holds 16 MiB, then starts again from its
/// beginning in a new epoch, over the old frames) a crash still loses
/// nothing: what the checkpoint wrote is in the file, what came after in
/// the new epoch's frames.
#[test]
fn a_crash_after_a_checkpoint_keeps_every_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let hub = durable_hub(dir.path(), &[]);
    let addr = hub.addr;
    let filler = "c".repeat(32 * 1024);
    let mut acked = Vec::new();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        // 40 batches of 20 events of 32 KiB: about 26 MiB of journal.
        for b in 0..40 {
            let batch: Vec<Value> = (0..20)
                .map(|i| json!({"to": "all", "data": format!("{b}-{i} {filler}")}))
                .collect();
            let ids = try_publish_batch(addr, &json!(batch)).await.unwrap();
            for (id, event) in ids.into_iter().zip(batch) {
                acked.push((id, event["data"].as_str().unwrap().to_owned()));
            }
        }
    });
    let journal = std::fs::read(dir.path().join("events.journal")).unwrap();
    hub.kill();
    // The journal started again: its first frame is not its first one.
    let first_seq = u64::from_le_bytes(journal[24..32].try_into().unwrap());
    assert!(
        first_seq > 1,
        "no checkpoint happened (first frame at {first_seq})"
    );
    let hub = durable_hub(dir.path(), &[]);
    let stored = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(history(hub.addr));
    assert_eq!(stored.len(), acked.len());
    assert!(
        stored == acked,
        "the history differs from what was acknowledged"
    );
    hub.terminate();
}

#[test]
fn a_second_hub_on_the_same_data_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = durable_hub(dir.path(), &[]);
    let (status, stderr) = run_to_exit(dir.path());
    assert!(!status.success());
    assert!(stderr.contains("another hub"), "{stderr}");
    assert!(
        stderr.contains(&dir.path().join("events.redb").display().to_string()),
        "{stderr}"
    );
    first.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_replay_joins_live_without_gap_or_duplicate() {
    const PUBLISHERS: usize = 20;
    const PER_PUBLISHER: usize = 100;
    const CLIENTS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let server = start(embedded_config(dir.path())).await;
    let addr = server.addr();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The newest acknowledged id once publishing is over; 0 until then.
    let newest = Arc::new(AtomicU64::new(0));

    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let newest = newest.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = Rng::seeded(100 + c as u64);
            let mut seen: Vec<u64> = Vec::new();
            let mut last_id: Option<String> = None;
            loop {
                assert!(
                    Instant::now() < deadline,
                    "client {c} did not catch up in time"
                );
                let last = last_id.clone().unwrap_or_else(|| "earliest".to_owned());
                let mut tab = SseClient::connect_with(
                    addr,
                    "/api/v1/stream?user=racer",
                    &[("Last-Event-ID", &last)],
                )
                .await;
                assert_eq!(tab.status, 200);
                assert_eq!(tab.header("pushwire-reset"), None, "client {c} got a reset");
                let want = 1 + rng.below(20);
                for _ in 0..want {
                    let Some(event) = tab.next_within(Duration::from_millis(300)).await else {
                        break;
                    };
                    assert_eq!(event.event, "message", "client {c}: {event:?}");
                    let id = event.id.unwrap();
                    seen.push(seq(&id));
                    last_id = Some(id);
                }
                drop(tab);
                let newest = newest.load(Ordering::SeqCst);
                if newest != 0 && seen.last() == Some(&newest) {
                    return seen;
                }
            }
        }));
    }

    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        publishers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..PER_PUBLISHER {
                let id = publish(
                    addr,
                    json!({"to": {"users": ["racer"]}, "data": format!("{p}-{i}")}),
                )
                .await;
                acked.push(seq(&id));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for task in publishers {
        acked.extend(task.await.unwrap());
    }
    acked.sort_unstable();
    assert_eq!(acked.len(), PUBLISHERS * PER_PUBLISHER);
    newest.store(*acked.last().unwrap(), Ordering::SeqCst);

    for (c, client) in clients.into_iter().enumerate() {
        let seen = client.await.unwrap();
        if seen != acked {
            let missing: Vec<_> = acked.iter().filter(|s| !seen.contains(s)).collect();
            let mut counts = HashMap::new();
            for s in &seen {
                *counts.entry(s).or_insert(0) += 1;
            }
            let doubled: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
            panic!(
                "client {c} saw {} events, expected {}; missing {missing:?}; duplicated {doubled:?}",
                seen.len(),
                acked.len()
            );
        }
    }
}
