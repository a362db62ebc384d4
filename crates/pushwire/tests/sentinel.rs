//! Hub processes that find their Redis primary through three real Redis
//! Sentinels (`--redis-sentinels`), and what a failover does to them: the
//! primary is killed (SIGKILL) while a publisher runs, Sentinel promotes a
//! replica, and the nodes must follow it without a restart. With
//! `--redis-replicas-ack 1` nothing acknowledged may be lost; without it,
//! whatever is lost must show as a `reset` to the clients that resume,
//! never as a silent gap. Each test runs its own Redis processes, all on
//! loopback; `redis-sentinel` missing fails them (scripts/test installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use pushwire_testkit::prelude::*;
use pushwire_testkit::redis::RedisServer;
use pushwire_testkit::reliability::{record, Row};
use pushwire_testkit::sentinel::SentinelSetup;

/// The hub binary under test.
const BIN: &str = pushwire_testkit::hub_binary!();
/// How long publishes may fail after the primary died before the test
/// fails: generous, this is a correctness test (Sentinel itself needs
/// `down-after-milliseconds` plus an election and a promotion).
const FAILOVER_BOUND: Duration = Duration::from_secs(30);
/// Publishes in one run, and after how many acknowledged ones the primary
/// is killed.
const TOTAL: usize = 120;
const KILL_AT: usize = 40;

/// A hub process that asks `setup`'s sentinels for the primary.
fn node(setup: &SentinelSetup, extra: &[&str]) -> HubProcess {
    let sentinels = setup.sentinels_flag();
    let mut args = vec![
        "--storage",
        "redis",
        "--redis-sentinels",
        sentinels.as_str(),
        "--redis-sentinel-master",
        setup.name.as_str(),
    ];
    args.extend_from_slice(extra);
    HubProcess::spawn(BIN, args)
}

fn stream_path(user: &str) -> String {
    format!("/api/v1/stream?user={user}")
}

/// Opens a stream, retrying while the node answers 503 (no primary yet).
async fn open_stream(addr: SocketAddr, user: &str, last_event_id: Option<&str>) -> SseClient {
    let headers: Vec<(&str, &str)> = last_event_id
        .map(|id| ("Last-Event-ID", id))
        .into_iter()
        .collect();
    let deadline = Instant::now() + FAILOVER_BOUND;
    loop {
        let client = SseClient::connect_with(addr, &stream_path(user), &headers).await;
        if client.status == 200 {
            return client;
        }
        assert_eq!(client.status, 503, "stream refused");
        assert!(Instant::now() < deadline, "streams never opened again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn error_code(reply: &Reply) -> String {
    reply.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// What the publisher saw during a run.
struct Run {
    /// Every acknowledged publish: (data, the id the hub answered).
    acked: Vec<(String, String)>,
    /// Publishes refused (503) on the way.
    refused: usize,
    /// From the first refused publish to the next acknowledged one.
    failover: Option<Duration>,
}

/// Publishes `TOTAL` events to everyone from node `addr`, one every 10 ms,
/// each retried on 503 until it is acknowledged (with a publisher id, a 409
/// on a retry means the first attempt was stored: acknowledged too). Once
/// `KILL_AT` are acknowledged, `kill` runs (in the test's task).
async fn publish_through_failover(addr: SocketAddr, with_ids: bool, kill: impl FnOnce()) -> Run {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let publisher = tokio::spawn(async move {
        let mut run = Run {
            acked: Vec::new(),
            refused: 0,
            failover: None,
        };
        let mut first_refusal: Option<Instant> = None;
        for i in 0..TOTAL {
            let data = format!("e{i}");
            let body = if with_ids {
                json!({ "to": "all", "id": data, "data": data })
            } else {
                json!({ "to": "all", "data": data })
            };
            loop {
                let reply = post_json(addr, "/api/v1/publish", &body).await;
                let acknowledged = match reply.status {
                    200 => Some(reply.json()["id"].as_str().unwrap().to_owned()),
                    409 if with_ids && error_code(&reply) == "duplicate_id" => Some(data.clone()),
                    503 => None,
                    other => panic!("publish answered {other}: {}", reply.body),
                };
                if let Some(id) = acknowledged {
                    if let (Some(start), None) = (first_refusal, run.failover) {
                        run.failover = Some(start.elapsed());
                    }
                    run.acked.push((data.clone(), id));
                    counted.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                assert_eq!(error_code(&reply), "storage_unavailable", "{}", reply.body);
                run.refused += 1;
                let start = *first_refusal.get_or_insert_with(Instant::now);
                assert!(
                    run.failover.is_some() || start.elapsed() < FAILOVER_BOUND,
                    "publishes still refused {FAILOVER_BOUND:?} after the primary died: {}",
                    reply.body
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        run
    });
    let deadline = Instant::now() + WAIT * 3;
    while count.load(Ordering::SeqCst) < KILL_AT {
        assert!(
            Instant::now() < deadline,
            "the first publishes were not acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    kill();
    publisher.await.expect("publisher")
}

/// What one subscriber got over a run: the events in order (id, data)
/// across its reconnections, and the `reset`s it was sent.
#[derive(Default)]
struct Received {
    events: Vec<(String, String)>,
    resets: usize,
    reconnects: usize,
}

/// Reads a stream until the `end` marker, reconnecting with `Last-Event-ID`
/// (to `nodes` in turn) whenever it ends, as a browser would.
async fn receive_until_end(mut client: SseClient, user: &str, nodes: &[SocketAddr]) -> Received {
    let mut got = Received::default();
    let deadline = Instant::now() + FAILOVER_BOUND * 2;
    loop {
        assert!(Instant::now() < deadline, "{user} never saw the end");
        match client.next_within(WAIT).await {
            Some(event) if event.event == "reset" => got.resets += 1,
            Some(event) if event.data == "end" => return got,
            Some(event) => got.events.push((event.id.unwrap_or_default(), event.data)),
            None => {
                assert!(client.ended, "{user}: the stream went quiet without ending");
                got.reconnects += 1;
                let last = client.last_event_id();
                let at = nodes[got.reconnects % nodes.len()];
                client = open_stream(at, user, Some(&last)).await;
            }
        }
    }
}

/// Publishes the `end` marker, retrying while the nodes settle.
async fn publish_end(addr: SocketAddr) {
    let deadline = Instant::now() + FAILOVER_BOUND;
    loop {
        let reply = post_json(
            addr,
            "/api/v1/publish",
            &json!({ "to": "all", "data": "end" }),
        )
        .await;
        if reply.status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the end marker was refused: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The port of the primary every sentinel names, once they agree on one
/// other than `old`.
async fn promoted(setup: &SentinelSetup, old: u16) -> u16 {
    let deadline = Instant::now() + FAILOVER_BOUND;
    loop {
        if let Some(port) = setup.master_port().filter(|p| *p != old) {
            return port;
        }
        assert!(
            Instant::now() < deadline,
            "the sentinels promoted no replica"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn xlen(port: u16, key: &str) -> u64 {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/0")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    ::redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn nodes_find_the_primary_through_the_sentinels_and_serve() -> TestResult {
    let setup = SentinelSetup::start();
    let (a, b) = (node(&setup, &[]), node(&setup, &[]));
    let mut tab = open_stream(b.addr, "alice", None).await;
    for i in 0..5 {
        publish(
            a.addr,
            json!({ "to": { "users": ["alice"] }, "data": format!("m{i}") }),
        )
        .await;
    }
    let got: Vec<String> = tab.take(5).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
    // The events are on the primary the sentinels know, and a replica
    // refuses writes: the node did not write to the replica.
    assert_eq!(xlen(setup.primary.port, "pushwire:events").await, 5);
    assert_eq!(setup.master_port(), Some(setup.primary.port));
    assert_eq!(setup.replicas[0].role(), "replica");
    assert_eq!(get(a.addr, "/readyz").await.status, 200);
    Ok(())
}

#[tokio::test]
async fn a_node_whose_sentinels_do_not_answer_refuses_with_503() -> TestResult {
    let sentinels = format!(
        "127.0.0.1:{},127.0.0.1:{}",
        RedisServer::unused_port(),
        RedisServer::unused_port()
    );
    let hub = HubProcess::spawn(
        BIN,
        [
            "--storage",
            "redis",
            "--redis-sentinels",
            sentinels.as_str(),
            "--redis-sentinel-master",
            "nowhere",
        ],
    );
    let reply = post_json(
        hub.addr,
        "/api/v1/publish",
        &json!({ "to": "all", "data": "x" }),
    )
    .await;
    assert_eq!(
        (reply.status, error_code(&reply)),
        (503, "storage_unavailable".to_owned())
    );
    let ready = get(hub.addr, "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    Ok(())
}

#[tokio::test]
async fn a_killed_primary_is_replaced_and_publishes_resume_without_a_restart() -> TestResult {
    let mut setup = SentinelSetup::start();
    let old = setup.primary.port;
    let (a, b) = (node(&setup, &[]), node(&setup, &[]));
    let nodes = [a.addr, b.addr];
    let tab = open_stream(b.addr, "watcher", None).await;
    let run = publish_through_failover(a.addr, false, || setup.primary.kill()).await;
    let new = promoted(&setup, old).await;
    assert_eq!(
        new, setup.replicas[0].port,
        "the sentinels promoted the replica"
    );
    let failover = run
        .failover
        .expect("publishes were refused while the primary was gone");
    assert!(run.refused > 0);
    assert_eq!(run.acked.len(), TOTAL);
    eprintln!(
        "failover: publishes refused for {failover:?} ({} refusals)",
        run.refused
    );
    // Both nodes write to the new primary now, and the other node's tail
    // follows it: what is published after the failover reaches the stream.
    publish(b.addr, json!({ "to": "all", "data": "from-b" })).await;
    publish_end(a.addr).await;
    let got = receive_until_end(tab, "watcher", &nodes).await;
    let datas: Vec<&str> = got.events.iter().map(|(_, d)| d.as_str()).collect();
    assert!(
        datas.contains(&"from-b") && datas.contains(&"e119"),
        "{datas:?}"
    );
    assert!(xlen(new, "pushwire:events").await >= (TOTAL - KILL_AT) as u64);
    for node in [&a, &b] {
        assert_eq!(get(node.addr, "/readyz").await.status, 200);
    }
    record(Row {
        family: "Redis primary killed (SIGKILL), Sentinel promotes the replica",
        cases: run.refused as u64,
        crashes: 0,
        lost: 0,
        outcome: &format!(
            "503 storage_unavailable for {:.1} s, then publishes succeed on the promoted replica without a restart",
            failover.as_secs_f64()
        ),
        test: "cargo test --test sentinel a_killed_primary_is_replaced_and_publishes_resume_without_a_restart",
    });
    Ok(())
}

#[tokio::test]
async fn with_replicas_ack_every_acknowledged_event_reaches_resuming_clients_once() -> TestResult {
    // Two replicas: after the failover one is still there to acknowledge.
    let mut setup = SentinelSetup::with_replicas(2);
    let old = setup.primary.port;
    let ack = ["--redis-replicas-ack", "1"];
    let (a, b) = (node(&setup, &ack), node(&setup, &ack));
    let nodes = [a.addr, b.addr];
    let tabs = [
        open_stream(a.addr, "u-a", None).await,
        open_stream(b.addr, "u-b", None).await,
    ];
    let run = publish_through_failover(a.addr, true, || setup.primary.kill()).await;
    promoted(&setup, old).await;
    publish_end(b.addr).await;
    let mut skipped = 0;
    let mut lost = 0;
    for (tab, user) in tabs.into_iter().zip(["u-a", "u-b"]) {
        let got = receive_until_end(tab, user, &nodes).await;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (id, _) in &got.events {
            *seen.entry(id.as_str()).or_default() += 1;
        }
        let missing: Vec<&str> = run
            .acked
            .iter()
            .map(|(_, id)| id.as_str())
            .filter(|id| !seen.contains_key(id))
            .collect();
        let twice: Vec<&&str> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, _)| id)
            .collect();
        if got.resets == 0 {
            skipped += missing.len();
        }
        lost += missing.len();
        assert!(
            missing.is_empty(),
            "{user} missed acknowledged events {missing:?}"
        );
        assert!(twice.is_empty(), "{user} got events twice: {twice:?}");
        assert_eq!(
            got.resets, 0,
            "{user}: nothing acknowledged was lost, so no reset"
        );
    }
    // And the history of the new primary holds every one of them.
    let kept: HashSet<String> = history(b.addr)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let gone = run
        .acked
        .iter()
        .filter(|(_, id)| !kept.contains(id))
        .count();
    assert_eq!(
        gone, 0,
        "acknowledged events missing from the promoted replica"
    );
    let failover = run
        .failover
        .expect("publishes were refused during the failover");
    record(Row {
        family: "Redis primary killed with --redis-replicas-ack 1 (two replicas), clients resume",
        cases: run.acked.len() as u64,
        crashes: 0,
        lost: (lost + gone) as u64,
        outcome: &format!(
            "every acknowledged event reached each resuming client once ({skipped} silently skipped); \
             503 for {:.1} s during the failover",
            failover.as_secs_f64()
        ),
        test: "cargo test --test sentinel with_replicas_ack_every_acknowledged_event_reaches_resuming_clients_once",
    });
    Ok(())
}

#[tokio::test]
async fn without_replicas_ack_a_lost_event_shows_as_a_reset_never_a_silent_gap() -> TestResult {
    let mut setup = SentinelSetup::start();
    let old = setup.primary.port;
    let (a, b) = (node(&setup, &[]), node(&setup, &[]));
    let nodes = [a.addr, b.addr];
    let tabs = [
        open_stream(a.addr, "u-a", None).await,
        open_stream(b.addr, "u-b", None).await,
    ];
    let run = publish_through_failover(a.addr, false, || setup.primary.kill()).await;
    promoted(&setup, old).await;
    publish_end(b.addr).await;
    let kept: HashSet<String> = history(b.addr)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let lost_from_history = run
        .acked
        .iter()
        .filter(|(_, id)| !kept.contains(id))
        .count();
    let mut skipped = 0;
    for (tab, user) in tabs.into_iter().zip(["u-a", "u-b"]) {
        let got = receive_until_end(tab, user, &nodes).await;
        let ids: Vec<&str> = got.events.iter().map(|(id, _)| id.as_str()).collect();
        let unique: HashSet<&str> = ids.iter().copied().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{user} got an event twice: {ids:?}"
        );
        let missing = run
            .acked
            .iter()
            .filter(|(_, id)| !unique.contains(id.as_str()))
            .count();
        eprintln!(
            "{user}: {} events, {missing} acknowledged ones missing, {} resets, {} reconnects; \
             {lost_from_history} lost from the history",
            ids.len(),
            got.resets,
            got.reconnects
        );
        if missing > 0 && got.resets == 0 {
            skipped += missing;
        }
        // Lost ⇒ reset seen: a client never misses an event silently.
        assert!(
            missing == 0 || got.resets > 0,
            "{user} missed {missing} acknowledged events without a reset"
        );
    }
    record(Row {
        family: "Redis primary killed without --redis-replicas-ack, clients resume",
        cases: run.acked.len() as u64,
        crashes: 0,
        lost: lost_from_history as u64,
        outcome: &format!(
            "asynchronous replication: whatever the promoted replica lacked is announced by a reset \
             ({skipped} silently skipped)"
        ),
        test: "cargo test --test sentinel without_replicas_ack_a_lost_event_shows_as_a_reset_never_a_silent_gap",
    });
    Ok(())
}

#[tokio::test]
async fn too_few_replicas_refuse_the_publish_and_a_retry_is_deduplicated() -> TestResult {
    let setup = SentinelSetup::start();
    // Two replicas asked for, one there: every publish is refused, though
    // stored on the primary.
    let hub = node(&setup, &["--redis-replicas-ack", "2"]);
    let body = json!({ "to": "all", "id": "order-1", "data": "x" });
    let started = Instant::now();
    let reply = post_json(hub.addr, "/api/v1/publish", &body).await;
    assert_eq!(
        (reply.status, error_code(&reply)),
        (503, "storage_unavailable".to_owned())
    );
    assert!(reply.body.contains("replicas"), "{}", reply.body);
    // WAIT gave up after its timeout, not the command timeout.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The retry finds the id taken: the first attempt was stored.
    let retry = post_json(hub.addr, "/api/v1/publish", &body).await;
    assert_eq!(
        (retry.status, error_code(&retry)),
        (409, "duplicate_id".to_owned())
    );
    let one = node(&setup, &["--redis-replicas-ack", "1"]);
    let reply = post_json(
        one.addr,
        "/api/v1/publish",
        &json!({ "to": "all", "data": "y" }),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    Ok(())
}

#[tokio::test]
async fn a_manual_failover_demotes_the_primary_and_nodes_follow_it() -> TestResult {
    let setup = SentinelSetup::start();
    let old = setup.primary.port;
    let hub = node(&setup, &[]);
    let mut tab = open_stream(hub.addr, "alice", None).await;
    publish(hub.addr, json!({ "to": "all", "data": "before" })).await;
    assert_eq!(tab.next().await.data, "before");
    // The old primary stays up and becomes a replica (Sentinel drops its
    // clients; a write that reached it anyway would answer READONLY): the
    // node must go to the sentinels again and follow the promoted one.
    let sentinel = ::redis::Client::open(format!("redis://127.0.0.1:{}", setup.sentinels[0].port))?;
    let mut conn = sentinel.get_multiplexed_async_connection().await?;
    ::redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(&setup.name)
        .query_async::<()>(&mut conn)
        .await?;
    let new = promoted(&setup, old).await;
    assert_eq!(new, setup.replicas[0].port);
    let deadline = Instant::now() + FAILOVER_BOUND;
    while setup.primary.role() != "replica" {
        assert!(Instant::now() < deadline, "the old primary was not demoted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publish_end(hub.addr).await;
    let got = receive_until_end(tab, "alice", &[hub.addr]).await;
    assert_eq!(got.resets, 0);
    // Written to the promoted replica, and replicated to the demoted one.
    assert_eq!(xlen(new, "pushwire:events").await, 2);
    Ok(())
}

/// Replaces the events after the first `keep` by copies of the oldest
/// ones under the same sequence numbers, as a promoted replica that lacked
/// the last events looks once new publishes arrive: same epoch, same
/// length, other events (other tags) under those numbers. Run on the
/// primary itself, so it happens at one instant, between two tail reads.
const REPLACE_THE_NEWEST: &str = r"
local events, keep = KEYS[1], tonumber(ARGV[1])
local all = redis.call('XRANGE', events, '-', '+')
for i = keep + 1, #all do redis.call('XDEL', events, all[i][1]) end
redis.call('XSETID', events, '0-' .. keep)
for i = 1, #all - keep do redis.call('XADD', events, '0-*', unpack(all[i][2])) end
return #all
";

#[tokio::test]
async fn a_promoted_replica_that_lacked_the_newest_events_ends_streams_and_resets_their_ids(
) -> TestResult {
    let setup = SentinelSetup::start();
    let hub = node(&setup, &[]);
    let mut tab = open_stream(hub.addr, "alice", None).await;
    for i in 1..=5 {
        publish(hub.addr, json!({ "to": "all", "data": format!("old{i}") })).await;
    }
    let ids: Vec<String> = tab
        .take(5)
        .await
        .into_iter()
        .map(|e| e.id.unwrap())
        .collect();
    let client = ::redis::Client::open(setup.primary.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let n: usize = ::redis::Script::new(REPLACE_THE_NEWEST)
        .key("pushwire:events")
        .arg(3)
        .invoke_async(&mut conn)
        .await?;
    assert_eq!(n, 5);
    // The history is as long as before, but #4 and #5 are other events:
    // the tail must not go on as if nothing happened.
    assert!(tab.wait_end(WAIT).await, "the stream ends rather than skip");
    let mut lost = open_stream(hub.addr, "alice", Some(&ids[4])).await;
    assert_eq!(lost.header("pushwire-reset"), Some("1"));
    assert_eq!(lost.next().await.event, "reset");
    // An id from before the divergence still resumes, with what is there now.
    let mut kept = open_stream(hub.addr, "alice", Some(&ids[2])).await;
    assert_eq!(kept.header("pushwire-reset"), None);
    let replay: Vec<String> = kept.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(replay, ["old1", "old2"]);
    Ok(())
}
