//! Ids that know their history: when a history is wiped, replaced or
//! restored from an older copy, it hands sequence numbers out again, and a
//! client holding an id of the lost events must get a `reset`, never a
//! resume that silently skips the events that took those numbers. Real
//! binaries on real data directories and a real `redis-server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use pushwire_testkit::prelude::*;
use pushwire_testkit::redis::RedisServer;
use pushwire_testkit::reliability::{self, Row};

const BIN: &str = pushwire_testkit::hub_binary!();

/// Publishes `n` events to user `u` with data `<label><i>`; their ids.
async fn publish_n(addr: SocketAddr, label: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(
            publish(
                addr,
                json!({ "to": { "users": ["u"] }, "data": format!("{label}{i}") }),
            )
            .await,
        );
    }
    ids
}

/// What a stream resumed from an id received.
#[derive(Debug, PartialEq, Eq)]
enum Resumed {
    /// A `reset` first (and the `pushwire-reset` header): the client knows.
    Reset,
    /// The data of the events replayed, in order.
    Replayed(Vec<String>),
}

/// Resumes `u`'s stream from `last_event_id`, then publishes a marker of
/// its own and reads up to it (the markers of earlier resumes left out).
async fn resume(addr: SocketAddr, last_event_id: &str) -> Resumed {
    static MARKERS: AtomicUsize = AtomicUsize::new(0);
    let marker = format!("marker-{}", MARKERS.fetch_add(1, Ordering::Relaxed));
    let mut client = SseClient::connect_with(
        addr,
        "/api/v1/stream?user=u",
        &[("Last-Event-ID", last_event_id)],
    )
    .await;
    assert_eq!(client.status, 200);
    let header = client.header("pushwire-reset") == Some("1");
    publish(addr, json!({ "to": { "users": ["u"] }, "data": marker })).await;
    let mut seen = Vec::new();
    loop {
        let event = client.next().await;
        if event.event == "reset" {
            assert!(header, "a reset event comes with the header");
            assert!(seen.is_empty(), "a reset comes first");
            return Resumed::Reset;
        }
        if event.data == marker {
            assert!(!header, "the header without a reset event");
            return Resumed::Replayed(seen);
        }
        if !event.data.starts_with("marker-") {
            seen.push(event.data);
        }
    }
}

fn replayed(data: &[&str]) -> Resumed {
    Resumed::Replayed(data.iter().map(|d| (*d).to_owned()).collect())
}

fn embedded(dir: &Path) -> HubProcess {
    let mut args = vec![
        "--storage".as_ref(),
        "embedded".as_ref(),
        "--data-dir".as_ref(),
    ];
    args.push(dir.as_os_str());
    HubProcess::spawn(BIN, args)
}

fn node(redis: &RedisServer, prefix: &str) -> HubProcess {
    let url = redis.url();
    let args = [
        "--storage",
        "redis",
        "--redis-url",
        &url,
        "--redis-prefix",
        prefix,
    ];
    HubProcess::spawn(BIN, args)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn record_row(family: &str, cases: u64, test: &str) {
    reliability::record(Row {
        family,
        cases,
        crashes: 0,
        lost: 0,
        outcome: "ids of lost events get a reset (0 silently skipped); ids of kept events resume with nothing missed",
        test,
    });
}

#[tokio::test]
async fn an_embedded_history_restored_from_an_older_backup_resets_ids_it_forgot() {
    let data = tempfile::tempdir().unwrap();
    let backup = tempfile::tempdir().unwrap();
    let hub = embedded(data.path());
    let first = publish_n(hub.addr, "a", 3).await;
    hub.terminate();
    copy_dir(data.path(), backup.path());

    let hub = embedded(data.path());
    let forgotten = publish_n(hub.addr, "b", 3).await;
    hub.terminate();
    // The backup goes back in place of the newer history.
    std::fs::remove_dir_all(data.path()).unwrap();
    copy_dir(backup.path(), data.path());

    let hub = embedded(data.path());
    let reissued = publish_n(hub.addr, "c", 4).await;
    let seq = |id: &str| pushwire_core::event::hub_sequence(id).unwrap();
    assert_eq!(
        seq(&reissued[2]),
        seq(&forgotten[2]),
        "the number came again"
    );
    assert_ne!(reissued[2], forgotten[2], "but not the id");

    // Ids of the events the backup does not hold: a reset, never c4 alone.
    for id in &forgotten {
        assert_eq!(resume(hub.addr, id).await, Resumed::Reset, "{id}");
    }
    // Ids of events the backup holds resume with everything after them.
    assert_eq!(
        resume(hub.addr, &first[1]).await,
        replayed(&["a3", "c1", "c2", "c3", "c4"])
    );
    assert_eq!(resume(hub.addr, &reissued[3]).await, replayed(&[]));
    record_row(
        "embedded history restored from an older backup",
        (forgotten.len() + 2) as u64,
        "cargo test --test identity an_embedded_history_restored_from_an_older_backup_resets_ids_it_forgot",
    );
}

#[tokio::test]
async fn a_wiped_data_dir_or_a_restarted_memory_hub_resets_every_old_id() {
    let data = tempfile::tempdir().unwrap();
    let hub = embedded(data.path());
    let old = publish_n(hub.addr, "a", 5).await;
    hub.terminate();
    std::fs::remove_dir_all(data.path()).unwrap();
    let hub = embedded(data.path());
    publish_n(hub.addr, "b", 8).await;
    let mut cases = 0;
    for id in &old {
        assert_eq!(resume(hub.addr, id).await, Resumed::Reset, "{id}");
        cases += 1;
    }
    drop(hub);

    let memory = || HubProcess::spawn(BIN, ["--storage", "memory"]);
    let hub = memory();
    let old = publish_n(hub.addr, "a", 5).await;
    hub.terminate();
    let hub = memory();
    publish_n(hub.addr, "b", 8).await;
    for id in &old {
        assert_eq!(resume(hub.addr, id).await, Resumed::Reset, "{id}");
        cases += 1;
    }
    record_row(
        "history wiped (embedded data dir removed, memory hub restarted)",
        cases,
        "cargo test --test identity a_wiped_data_dir_or_a_restarted_memory_hub_resets_every_old_id",
    );
}

async fn flushall(redis: &RedisServer) {
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn redis_flushed_restored_from_an_older_copy_or_another_prefix_resets_old_ids() {
    let mut cases = 0;
    // FLUSHALL, then more events than before: their numbers come again.
    let redis = RedisServer::start();
    let hub = node(&redis, "pushwire");
    let flushed = publish_n(hub.addr, "a", 3).await;
    flushall(&redis).await;
    publish_n(hub.addr, "b", 5).await;
    for id in &flushed {
        assert_eq!(resume(hub.addr, id).await, Resumed::Reset, "{id}");
        cases += 1;
    }

    // Another prefix on the same Redis is another history.
    let other = node(&redis, "other");
    publish_n(other.addr, "x", 8).await;
    let here = publish_n(hub.addr, "c", 1).await;
    assert_eq!(resume(other.addr, &here[0]).await, Resumed::Reset);
    cases += 1;
    drop((hub, other));

    // The issue's reproduction: Redis restored from an older copy of its
    // append-only files (what a failover to a lagging replica does too).
    let mut redis = RedisServer::start();
    let hub = node(&redis, "pushwire");
    let kept = publish_n(hub.addr, "a", 3).await;
    let copy = tempfile::tempdir().unwrap();
    copy_dir(redis.dir(), copy.path());
    let forgotten = publish_n(hub.addr, "b", 3).await;
    redis.kill();
    std::fs::remove_dir_all(redis.dir()).unwrap();
    copy_dir(copy.path(), redis.dir());
    redis.restart();
    let mut reissued = Vec::new();
    for i in 1..=4 {
        let body = json!({ "to": { "users": ["u"] }, "data": format!("c{i}") });
        let mut reply = post_json(hub.addr, "/api/v1/publish", &body).await;
        // The hub's connection to Redis reconnects on the next request.
        for _ in 0..50 {
            if reply.status == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            reply = post_json(hub.addr, "/api/v1/publish", &body).await;
        }
        assert_eq!(reply.status, 200, "{}", reply.body);
        reissued.push(reply.json()["id"].as_str().unwrap().to_owned());
    }
    let seq = |id: &str| pushwire_core::event::hub_sequence(id).unwrap();
    assert_eq!(
        seq(&reissued[2]),
        seq(&forgotten[2]),
        "the number came again"
    );
    for id in &forgotten {
        assert_eq!(resume(hub.addr, id).await, Resumed::Reset, "{id}");
        cases += 1;
    }
    assert_eq!(
        resume(hub.addr, &kept[2]).await,
        replayed(&["c1", "c2", "c3", "c4"])
    );
    cases += 1;
    record_row(
        "Redis history flushed, restored from an older AOF copy, or read under another prefix",
        cases,
        "cargo test --test identity redis_flushed_restored_from_an_older_copy_or_another_prefix_resets_old_ids",
    );
}

/// A history written by a release that drew no tags: its entries carry no
/// `g` field and their records no `tag`. The ids that release handed out
/// (`#2`, and the bare `2` before that) still resume after the upgrade.
#[tokio::test]
async fn untagged_ids_of_an_earlier_release_resume_after_the_upgrade() {
    let redis = RedisServer::start();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Just stored, so that age retention keeps them.
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_millis();
    for i in 1..=3 {
        let record = [
            &[1u8][..],
            format!(r#"{{"to":{{"users":["u"]}},"data":"old{i}","time":{now}}}"#).as_bytes(),
        ]
        .concat();
        ::redis::cmd("XADD")
            .arg("pushwire:events")
            .arg("0-*")
            .arg("t")
            .arg(now as u64)
            .arg("r")
            .arg(record)
            .query_async::<String>(&mut conn)
            .await
            .unwrap();
    }
    ::redis::cmd("SET")
        .arg("pushwire:epoch")
        .arg("earlier")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    let hub = node(&redis, "pushwire");
    let history = history(hub.addr).await;
    assert_eq!(history[0].0, "#1", "stored events keep their ids");
    publish_n(hub.addr, "new", 1).await;
    for id in ["#2", "2"] {
        assert_eq!(
            resume(hub.addr, id).await,
            replayed(&["old3", "new1"]),
            "{id}"
        );
    }
    // The tagged form of a number whose event has no tag is not its id.
    assert_eq!(resume(hub.addr, "#2.abcdefgh").await, Resumed::Reset);
}
