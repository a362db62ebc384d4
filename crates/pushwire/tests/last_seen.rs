//! `since=last-seen`: a user's stream opened without a `Last-Event-ID`
//! replays what the user missed since the newest event written to any of
//! their streams (another device, a cold start), then goes live; on the
//! in-memory hub, on the embedded history across a clean restart, and
//! across two nodes of one Redis. Real servers, real SSE over TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pushwire::engines::redis::{RedisLog, RedisNode};
use pushwire_core::event::{Draft, Event, Target};
use pushwire_core::log::{EventLog, Fanout, Retention};
use pushwire_core::seen::Seen;
use pushwire_testkit::prelude::*;
use pushwire_testkit::redis::RedisServer;
use serde_json::json;

const BIN: &str = pushwire_testkit::hub_binary!();

/// Longer than a few of the hub's cursor flush windows (500 ms).
const FLUSHED: Duration = Duration::from_millis(1500);

async fn publish_to(addr: SocketAddr, user: &str, data: &str) -> String {
    publish(addr, json!({"to": {"users": [user]}, "data": data})).await
}

async fn open(addr: SocketAddr, path: &str) -> SseClient {
    let client = SseClient::connect(addr, path).await;
    assert_eq!(client.status, 200, "stream refused: {:?}", client.raw);
    client
}

fn data_of(events: &[pushwire_client::sse::ParsedEvent]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

/// Opens a plain stream of `user`, reads `data` (in order) off it, and
/// closes it.
async fn read_and_leave(addr: SocketAddr, user: &str, data: &[&str]) {
    let mut device = open(addr, &format!("/api/v1/stream?user={user}")).await;
    for &want in data {
        publish_to(addr, user, want).await;
    }
    let got = device.take(data.len()).await;
    assert_eq!(data_of(&got), data);
    drop(device);
    gone(addr).await;
}

/// Waits until the hub has seen every stream close: until then, what it
/// writes to a stream whose client left still counts as written.
async fn gone(addr: SocketAddr) {
    eventually("the hub saw the stream close", || async {
        user_count(addr).await == 0
    })
    .await;
}

#[tokio::test]
async fn a_new_device_gets_what_was_missed_then_live_without_duplicates() {
    let server = start_default().await;
    let addr = server.addr();
    read_and_leave(addr, "u", &["1", "2", "3"]).await;
    for data in ["4", "5", "6"] {
        publish_to(addr, "u", data).await;
    }
    publish_to(addr, "someone-else", "not yours").await;
    let mut second = open(addr, "/api/v1/stream?user=u&since=last-seen").await;
    assert_eq!(second.header("pushwire-reset"), None);
    assert_eq!(data_of(&second.take(3).await), ["4", "5", "6"]);
    publish_to(addr, "u", "7").await;
    assert_eq!(second.next().await.data, "7");
    second.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_cursor_follows_what_an_open_device_was_written() {
    let server = start_default().await;
    let addr = server.addr();
    let mut first = open(addr, "/api/v1/stream?user=u").await;
    publish_to(addr, "u", "1").await;
    publish_to(addr, "u", "2").await;
    assert_eq!(data_of(&first.take(2).await), ["1", "2"]);
    // Opened while the first device is still reading: nothing missed.
    let mut second = open(addr, "/api/v1/stream?user=u&lastEventID=last-seen").await;
    second.expect_silence(Duration::from_millis(300)).await;
    publish_to(addr, "u", "3").await;
    assert_eq!(first.next().await.data, "3");
    assert_eq!(second.next().await.data, "3");
    drop(second);
    // The seed route, with the Mercure draft's spelling.
    publish_to(addr, "u", "4").await;
    assert_eq!(first.next().await.data, "4");
    let mut third = open(addr, "/sse/subscribe/u?last_event_id=last-seen").await;
    third.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn without_a_cursor_everything_retained_was_missed() {
    let server = start_default().await;
    let addr = server.addr();
    for data in ["1", "2", "3"] {
        publish_to(addr, "u", data).await;
    }
    publish(addr, json!({"to": "all", "data": "everyone"})).await;
    let mut stream = open(addr, "/sse/subscribe/u?since=last-seen").await;
    assert_eq!(data_of(&stream.take(4).await), ["1", "2", "3", "everyone"]);
    stream.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_cursor_older_than_the_history_gets_a_reset_then_the_retained_events() {
    let mut config = config();
    config.history_max_events = 3;
    let server = start(config).await;
    let addr = server.addr();
    read_and_leave(addr, "u", &["1"]).await;
    for data in ["2", "3", "4", "5", "6", "7"] {
        publish_to(addr, "u", data).await;
    }
    let mut stream = open(addr, "/api/v1/stream?user=u&since=last-seen").await;
    assert_eq!(stream.header("pushwire-reset"), Some("1"));
    let reset = stream.next().await;
    assert_eq!(reset.event, "reset");
    let why: serde_json::Value = serde_json::from_str(&reset.data).unwrap();
    assert_eq!(why["requested"], "last-seen");
    assert_eq!(data_of(&stream.take(3).await), ["5", "6", "7"]);
    stream.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_last_event_id_header_wins_over_last_seen() {
    let server = start_default().await;
    let addr = server.addr();
    let first = publish_to(addr, "u", "1").await;
    read_and_leave(addr, "u", &["2", "3"]).await;
    let mut stream = SseClient::connect_with(
        addr,
        "/api/v1/stream?user=u&since=last-seen",
        &[("Last-Event-ID", &first)],
    )
    .await;
    assert_eq!(stream.status, 200);
    assert_eq!(data_of(&stream.take(2).await), ["2", "3"]);
    stream.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn last_seen_needs_a_user() {
    let server = start_default().await;
    let addr = server.addr();
    let refused = get(addr, "/api/v1/stream?topic=news&since=last-seen").await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(
        refused.json()["error"]["code"],
        "last_seen_needs_user",
        "{}",
        refused.body
    );
    let refused = get(addr, "/api/v1/stream?topic=news&lastEventID=last-seen").await;
    assert_eq!(refused.json()["error"]["code"], "last_seen_needs_user");
    let refused = get(addr, "/api/v1/stream?user=u&since=yesterday").await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.json()["error"]["code"], "invalid_last_event_id");
}

#[tokio::test]
async fn the_embedded_cursor_survives_a_clean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--storage", "embedded", "--data-dir"];
    let spawn = || {
        let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        all.push(dir.path().as_os_str());
        HubProcess::spawn(BIN, all)
    };
    let hub = spawn();
    read_and_leave(hub.addr, "u", &["1", "2", "3"]).await;
    hub.terminate();
    let hub = spawn();
    publish_to(hub.addr, "u", "4").await;
    let mut stream = open(hub.addr, "/api/v1/stream?user=u&since=last-seen").await;
    assert_eq!(stream.next().await.data, "4");
    stream.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_stream_on_another_node_gets_only_what_the_first_node_did_not_write() {
    let redis = RedisServer::start();
    let url = redis.url();
    let node = || HubProcess::spawn(BIN, ["--storage", "redis", "--redis-url", url.as_str()]);
    let (a, b) = (node(), node());
    read_and_leave(a.addr, "u", &["1", "2", "3"]).await;
    for data in ["4", "5"] {
        publish_to(b.addr, "u", data).await;
    }
    // The cursor reaches Redis in the background.
    tokio::time::sleep(FLUSHED).await;
    let mut stream = open(b.addr, "/api/v1/stream?user=u&since=last-seen").await;
    assert_eq!(data_of(&stream.take(2).await), ["4", "5"]);
    publish_to(a.addr, "u", "6").await;
    assert_eq!(stream.next().await.data, "6");
    stream.expect_silence(Duration::from_millis(300)).await;
    drop(stream);
    gone(b.addr).await;
    // What B wrote moves the cursor for A too.
    tokio::time::sleep(FLUSHED).await;
    publish_to(b.addr, "u", "7").await;
    let mut back = open(a.addr, "/api/v1/stream?user=u&since=last-seen").await;
    assert_eq!(back.next().await.data, "7");
    back.expect_silence(Duration::from_millis(300)).await;
}

struct Nowhere;

impl Fanout for Nowhere {
    fn deliver(&self, _: &[Arc<Event>]) {}
}

#[tokio::test]
async fn redis_cursors_only_move_forward_and_are_pruned_past_their_bound() -> TestResult {
    let redis = RedisServer::start();
    let retention = Retention {
        max_events: 3,
        max_age: Duration::from_secs(60),
    };
    let log = RedisLog::open(
        RedisNode::new(&redis.url(), "seen")?,
        retention,
        Arc::new(Nowhere),
    )
    .with_max_cursors(2);
    let cursors = log.cursors().expect("the Redis engine keeps cursors");
    let at = |seq| Seen { seq, tag: 7 };
    cursors.store(vec![("a".into(), at(5))]).await?;
    cursors.store(vec![("a".into(), at(4))]).await?;
    assert_eq!(cursors.load("a").await?, Some(at(5)), "never moves back");
    for _ in 0..10 {
        log.append(vec![Draft::new(Target::All, "x")]).await?;
    }
    // Retained: 8..=10. A third user is past the bound: `a`, older than
    // the history, goes.
    cursors
        .store(vec![("b".into(), at(10)), ("c".into(), at(9))])
        .await?;
    assert_eq!(cursors.load("a").await?, None);
    assert_eq!(cursors.load("c").await?, Some(at(9)));
    // 9 < 10 as numbers, though not as text.
    cursors.store(vec![("b".into(), at(9))]).await?;
    assert_eq!(cursors.load("b").await?, Some(at(10)));
    cursors.store(vec![("b".into(), at(11))]).await?;
    assert_eq!(cursors.load("b").await?, Some(at(11)));
    Ok(())
}
