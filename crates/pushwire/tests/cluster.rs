//! Several hub processes on one real Redis: delivery across nodes, a node
//! killed while events flow, Redis stopped and started again, presence and
//! close across nodes, and the Redis history engine's rules (publisher ids,
//! batches, retention, resume). Each test runs its own `redis-server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use pushwire::engines::redis::{RedisLog, RedisNode};
use pushwire_core::event::Target;
use pushwire_core::event::{Draft, Event};
use pushwire_core::log::{Cursor, EventLog, Fanout, Retention, StoreError};
use pushwire_testkit::prelude::*;
use pushwire_testkit::redis::RedisServer;

/// The hub binary under test.
const BIN: &str = pushwire_testkit::hub_binary!();

/// A hub process of the cluster on `redis`.
fn node(redis: &RedisServer, extra: &[&str]) -> HubProcess {
    let url = redis.url();
    let mut args = vec!["--storage", "redis", "--redis-url", url.as_str()];
    args.extend_from_slice(extra);
    HubProcess::spawn(BIN, args)
}

fn stream_path(user: Option<&str>, topics: &[&str]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if let Some(user) = user {
        query.append_pair("user", user);
    }
    for topic in topics {
        query.append_pair("topic", topic);
    }
    format!("/api/v1/stream?{}", query.finish())
}

async fn subscribe(addr: SocketAddr, user: Option<&str>, topics: &[&str]) -> SseClient {
    let client = SseClient::connect(addr, &stream_path(user, topics)).await;
    assert_eq!(client.status, 200, "stream refused");
    client
}

async fn resume(addr: SocketAddr, user: &str, last_event_id: &str) -> SseClient {
    let path = stream_path(Some(user), &[]);
    let client = SseClient::connect_with(addr, &path, &[("Last-Event-ID", last_event_id)]).await;
    assert_eq!(client.status, 200, "stream refused");
    client
}

/// A hub id without its tag (`#3.kq3vz7ma` → `#3`), to compare sequences;
/// other ids as they are.
fn untagged(id: &str) -> String {
    match pushwire_core::id::HubId::parse(id) {
        Some(hub) => format!("#{}", hub.seq),
        None => id.to_owned(),
    }
}

/// The ids of some events, untagged.
fn untagged_ids(events: Vec<pushwire_client::sse::ParsedEvent>) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e.id.as_deref())
        .map(untagged)
        .collect()
}

/// Publishes and returns the reply (any status).
async fn try_publish(addr: SocketAddr, body: &Value) -> Reply {
    post_json(addr, "/api/v1/publish", body).await
}

fn error_code(reply: &Reply) -> String {
    reply.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Reads events until one whose data is `marker`; returns the data of those
/// before it.
async fn until_marker(client: &mut SseClient, marker: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let event = client.next().await;
        if event.data == marker {
            return seen;
        }
        seen.push(event.data);
    }
}

/// Whether a stream (user, topics) receives an event sent to `to`.
fn reaches(to: &Value, user: Option<&str>, topics: &[&str]) -> bool {
    if to == "all" {
        return true;
    }
    if let Some(users) = to.get("users").and_then(Value::as_array) {
        return users.iter().any(|u| Some(u.as_str().unwrap()) == user);
    }
    if let Some(prefix) = to.get("user_prefix").and_then(Value::as_str) {
        return user.is_some_and(|u| u.starts_with(prefix));
    }
    if let Some(names) = to.get("topics").and_then(Value::as_array) {
        return names.iter().any(|t| topics.contains(&t.as_str().unwrap()));
    }
    false
}

#[tokio::test]
async fn every_node_delivers_what_any_node_published_once_in_order() -> TestResult {
    let redis = RedisServer::start();
    let nodes = [node(&redis, &[]), node(&redis, &[]), node(&redis, &[])];
    let subscribers: [(usize, Option<&str>, &[&str]); 7] = [
        (0, Some("g-alice"), &[]),
        (1, Some("g-alice"), &[]),
        (2, Some("g-bob"), &[]),
        (1, Some("h-carol"), &["sport"]),
        (2, None, &["news"]),
        (0, None, &["news", "sport"]),
        (2, Some("dave"), &[]),
    ];
    let mut clients = Vec::new();
    for (at, user, topics) in subscribers {
        clients.push(subscribe(nodes[at].addr, user, topics).await);
    }
    let targets = [
        json!({ "users": ["g-alice"] }),
        json!({ "users": ["g-bob", "h-carol"] }),
        json!({ "user_prefix": "g-" }),
        json!({ "topics": ["news"] }),
        json!({ "topics": ["sport", "news"] }),
        json!("all"),
        json!({ "users": ["nobody"] }),
    ];
    // A fixed pseudo-random walk over targets and publishing nodes.
    let mut state = 0x2545_f491_u64;
    let mut published = Vec::new();
    for i in 0..60 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let to = targets[(state % targets.len() as u64) as usize].clone();
        let at = ((state >> 8) % 3) as usize;
        let data = format!("e{i}");
        publish(nodes[at].addr, json!({ "to": to, "data": data })).await;
        published.push((to, data));
    }
    publish(nodes[1].addr, json!({ "to": "all", "data": "end" })).await;
    for ((_, user, topics), client) in subscribers.iter().zip(&mut clients) {
        let expected: Vec<String> = published
            .iter()
            .filter(|(to, _)| reaches(to, *user, topics))
            .map(|(_, data)| data.clone())
            .collect();
        assert!(!expected.is_empty());
        let got = until_marker(client, "end").await;
        assert_eq!(got, expected, "stream of {user:?} {topics:?}");
    }
    Ok(())
}

#[tokio::test]
async fn clients_of_a_killed_node_resume_elsewhere_with_nothing_lost() -> TestResult {
    let redis = RedisServer::start();
    let [a, b, victim] = [node(&redis, &[]), node(&redis, &[]), node(&redis, &[])];
    let (a_addr, b_addr) = (a.addr, b.addr);
    let users: Vec<String> = (0..6).map(|i| format!("u{i}")).collect();
    let mut clients = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let at = if i < 4 { victim.addr } else { a_addr };
        clients.push(subscribe(at, Some(user), &[]).await);
    }
    let total = 80;
    for i in 0..20 {
        let at = if i % 2 == 0 { a_addr } else { b_addr };
        publish(at, json!({ "to": "all", "data": format!("e{i}") })).await;
    }
    // The rest flows while the node dies and its clients come back.
    let publisher = tokio::spawn(async move {
        for i in 20..total {
            let at = if i % 2 == 0 { a_addr } else { b_addr };
            publish(at, json!({ "to": "all", "data": format!("e{i}") })).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    victim.kill();
    let expected: Vec<String> = (0..total).map(|i| format!("e{i}")).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        if i < 4 {
            // What the dead node sent before it died, then the end.
            while let Some(event) = client.next_within(WAIT).await {
                got.push(event.data);
            }
            assert!(client.ended, "the killed node's stream ends");
            let last = client.last_event_id();
            let elsewhere = if i % 2 == 0 { a_addr } else { b_addr };
            *client = resume(elsewhere, &users[i], &last).await;
        }
        while got.len() < total {
            got.push(client.next().await.data);
        }
        assert_eq!(got, expected, "client {i}");
    }
    publisher.await?;
    drop((a, b));
    Ok(())
}

#[tokio::test]
async fn redis_outage_refuses_publishes_keeps_streams_and_loses_nothing() -> TestResult {
    let mut redis = RedisServer::start();
    let nodes = [node(&redis, &[]), node(&redis, &[])];
    let mut alice = subscribe(nodes[0].addr, Some("alice"), &[]).await;
    let mut bob = subscribe(nodes[1].addr, Some("bob"), &[]).await;
    let mut acknowledged = Vec::new();
    for i in 0..5 {
        let data = format!("before{i}");
        publish(nodes[i % 2].addr, json!({ "to": "all", "data": data })).await;
        acknowledged.push(data);
    }
    let datas = |events: Vec<pushwire_client::sse::ParsedEvent>| -> Vec<String> {
        events.into_iter().map(|e| e.data).collect()
    };
    let mut alice_got = datas(alice.take(5).await);
    let mut bob_got = datas(bob.take(5).await);
    for node in &nodes {
        assert_eq!(get(node.addr, "/readyz").await.status, 200);
    }

    redis.kill();
    // Readiness says so, naming Redis, so a load balancer can act on it.
    for node in &nodes {
        let reply = get(node.addr, "/readyz").await;
        assert_eq!(
            (reply.status, error_code(&reply)),
            (503, "not_ready".to_owned())
        );
        assert!(reply.body.contains("Redis"), "{}", reply.body);
    }
    for (i, node) in nodes.iter().enumerate() {
        let reply = try_publish(
            node.addr,
            &json!({ "to": "all", "data": format!("lost{i}") }),
        )
        .await;
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(error_code(&reply), "storage_unavailable");
    }
    // No node crashed: each still answers (what needs Redis with 503),
    // and the streams are still open.
    let mut nodes = nodes;
    for node in &nodes {
        let reply = get(node.addr, "/sse/getUserCount").await;
        assert_eq!(
            (reply.status, error_code(&reply)),
            (503, "storage_unavailable".to_owned())
        );
    }
    for node in &mut nodes {
        assert!(node.child.try_wait()?.is_none(), "a node exited");
    }
    // A close that cannot reach the other nodes closes nothing.
    let close = request(nodes[0].addr, "DELETE", "/api/v1/users/alice", &[], b"").await;
    assert_eq!(
        (close.status, error_code(&close)),
        (503, "storage_unavailable".to_owned())
    );
    assert!(alice
        .next_within(Duration::from_millis(300))
        .await
        .is_none());
    assert!(bob.next_within(Duration::from_millis(300)).await.is_none());
    assert!(
        !alice.ended && !bob.ended,
        "streams stay open during the outage"
    );

    redis.restart();
    for node in &nodes {
        eventually("the node is ready again", || async {
            get(node.addr, "/readyz").await.status == 200
        })
        .await;
    }
    for i in 0..5 {
        let data = format!("after{i}");
        let body = json!({ "to": "all", "data": data });
        let addr = nodes[i % 2].addr;
        let deadline = Instant::now() + WAIT;
        loop {
            let reply = try_publish(addr, &body).await;
            if reply.status == 200 {
                acknowledged.push(data);
                break;
            }
            assert_eq!(error_code(&reply), "storage_unavailable", "{}", reply.body);
            assert!(Instant::now() < deadline, "publishes never resumed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    publish(nodes[0].addr, json!({ "to": "all", "data": "end" })).await;
    alice_got.extend(until_marker(&mut alice, "end").await);
    bob_got.extend(until_marker(&mut bob, "end").await);
    assert_eq!(alice_got, acknowledged);
    assert_eq!(bob_got, acknowledged);
    for node in &mut nodes {
        assert!(node.child.try_wait()?.is_none(), "a node exited");
        // Each tail lost Redis and connected again.
        let scrape = get(node.addr, "/metrics").await.body;
        let reconnects = scrape
            .lines()
            .find_map(|l| l.strip_prefix("pushwire_redis_reconnects_total "))
            .and_then(|n| n.parse::<u64>().ok());
        assert!(reconnects.is_some_and(|n| n >= 1), "{scrape}");
    }
    Ok(())
}

#[tokio::test]
async fn a_node_starts_without_redis_and_serves_once_it_is_there() -> TestResult {
    let port = RedisServer::unused_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let hub = HubProcess::spawn(BIN, ["--storage", "redis", "--redis-url", url.as_str()]);
    let reply = try_publish(hub.addr, &json!({ "to": "all", "data": "x" })).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(error_code(&reply), "storage_unavailable");
    let refused = SseClient::connect(hub.addr, &stream_path(Some("a"), &[])).await;
    assert_eq!(refused.status, 503);

    let _redis = RedisServer::start_on(port);
    let deadline = Instant::now() + WAIT;
    let mut client = loop {
        let client = SseClient::connect(hub.addr, &stream_path(Some("a"), &[])).await;
        if client.status == 200 {
            break client;
        }
        assert!(Instant::now() < deadline, "streams never opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    publish(hub.addr, json!({ "to": "all", "data": "hello" })).await;
    assert_eq!(client.next().await.data, "hello");
    Ok(())
}

async fn users_json(addr: SocketAddr) -> Value {
    let reply = get(addr, "/api/v1/users").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[tokio::test]
async fn presence_counts_and_closes_across_nodes() -> TestResult {
    let redis = RedisServer::start();
    let ttl = Duration::from_secs(2);
    let args = ["--redis-presence-ttl", "2s"];
    let nodes = [
        node(&redis, &args),
        node(&redis, &args),
        node(&redis, &args),
    ];
    let [n0, n1, n2] = [nodes[0].addr, nodes[1].addr, nodes[2].addr];
    let mut alice0 = subscribe(n0, Some("alice"), &[]).await;
    let mut alice1 = subscribe(n1, Some("alice"), &["news"]).await;
    let mut bob = subscribe(n1, Some("bob"), &["news"]).await;
    let _carol = subscribe(n2, Some("carol"), &["sport"]).await;

    // Each node sends its share within 250 ms; once every node lists the
    // same users, the counts are exact everywhere.
    let expected = json!({ "count": 3, "users": [
        { "id": "alice", "streams": 2 },
        { "id": "bob", "streams": 1 },
        { "id": "carol", "streams": 1 },
    ]});
    eventually("every node lists the same users", || async {
        for addr in [n0, n1, n2] {
            if users_json(addr).await != expected {
                return false;
            }
        }
        true
    })
    .await;
    for addr in [n0, n1, n2] {
        assert_eq!(user_count(addr).await, 3);
    }
    let ids = get(n0, "/sse/getIds").await.json();
    assert_eq!(ids, json!(["alice", "bob", "carol"]));
    let stats = get(n1, "/api/v1/stats").await.json();
    assert_eq!(
        (
            &stats["streams"],
            &stats["users"],
            &stats["topics"],
            &stats["nodes"]
        ),
        (&json!(4), &json!(3), &json!(2), &json!(3)),
        "{stats}"
    );
    // A topic's streams on every node are added up, on any node asked.
    let topics = json!({ "count": 2, "topics": [
        { "topic": "news", "streams": 2 },
        { "topic": "sport", "streams": 1 },
    ]});
    let extra = subscribe(n0, None, &["sport"]).await;
    let more = json!({ "count": 2, "topics": [
        { "topic": "news", "streams": 2 },
        { "topic": "sport", "streams": 2 },
    ]});
    eventually("every node lists the topics of every node", || async {
        for addr in [n0, n1, n2] {
            if get(addr, "/api/v1/topics").await.json() != more {
                return false;
            }
        }
        true
    })
    .await;
    drop(extra);
    eventually("the closed stream leaves the topic everywhere", || async {
        for addr in [n0, n1, n2] {
            if get(addr, "/api/v1/topics").await.json() != topics {
                return false;
            }
        }
        true
    })
    .await;

    // Close on a node where alice has no stream: both tabs end.
    let closed = request(n2, "DELETE", "/api/v1/users/alice", &[], b"").await;
    assert_eq!(closed.json(), json!({ "closed": 2 }));
    assert!(alice0.wait_end(WAIT).await, "alice's stream on node 0 ends");
    assert!(alice1.wait_end(WAIT).await, "alice's stream on node 1 ends");
    let closed = get(n0, "/sse/close/bob").await;
    assert_eq!(closed.json(), json!({ "closed": 1 }));
    assert!(bob.wait_end(WAIT).await, "bob's stream on node 1 ends");
    eventually("only carol is left", || async {
        get(n0, "/sse/getIds").await.json() == json!(["carol"])
    })
    .await;

    // A node killed without a word: its users go within the TTL.
    let [a, b, c] = nodes;
    c.kill();
    let killed = Instant::now();
    let deadline = killed + ttl + Duration::from_secs(5);
    while user_count(n0).await != 0 {
        assert!(
            Instant::now() < deadline,
            "carol still listed {:?} after her node died",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = get(n1, "/api/v1/stats").await.json();
    assert_eq!((&stats["streams"], &stats["nodes"]), (&json!(0), &json!(2)));
    drop((a, b));
    Ok(())
}

#[tokio::test]
async fn publisher_ids_batches_and_retention_hold_across_nodes() -> TestResult {
    let redis = RedisServer::start();
    let args = ["--history-max-events", "5"];
    let nodes = [node(&redis, &args), node(&redis, &args)];
    let [n0, n1] = [nodes[0].addr, nodes[1].addr];

    assert_eq!(
        publish(n0, json!({ "to": "all", "data": "a", "id": "order-1" })).await,
        "order-1"
    );
    let taken = try_publish(n1, &json!({ "to": "all", "data": "b", "id": "order-1" })).await;
    assert_eq!(
        (taken.status, error_code(&taken)),
        (409, "duplicate_id".to_owned())
    );

    // All or nothing: the batch is refused whole, and takes no number.
    let batch = json!([
        { "to": "all", "data": "c", "id": "order-2" },
        { "to": "all", "data": "d", "id": "order-1" },
    ]);
    let refused = try_publish(n1, &batch).await;
    assert_eq!(
        (refused.status, error_code(&refused)),
        (409, "duplicate_id".to_owned())
    );
    assert_eq!(
        publish(n1, json!({ "to": "all", "data": "c", "id": "order-2" })).await,
        "order-2"
    );
    assert_eq!(
        untagged(&publish(n0, json!({ "to": "all", "data": "e" })).await),
        "#3"
    );

    // Resume by a publisher id on the other node.
    let mut tab = resume(n1, "alice", "order-1").await;
    assert_eq!(tab.header("pushwire-reset"), None);
    assert_eq!(untagged_ids(tab.take(2).await), ["order-2", "#3"]);

    // Retention keeps the newest five: 6..=10.
    let mut ids = Vec::new();
    for i in 4..=10 {
        let id = publish(n0, json!({ "to": "all", "data": i })).await;
        assert_eq!(untagged(&id), format!("#{i}"));
        ids.push(id);
    }
    let (fifth, sixth) = (ids[1].clone(), ids[2].clone());
    let mut from_five = resume(n1, "alice", &fifth).await;
    assert_eq!(
        untagged_ids(from_five.take(5).await),
        ["#6", "#7", "#8", "#9", "#10"]
    );
    for gone in ["#4", "order-1", "#11", "4"] {
        let mut tab = resume(n0, "alice", gone).await;
        assert_eq!(tab.header("pushwire-reset"), Some("1"), "{gone}");
        let reset = tab.next().await;
        assert_eq!(reset.event, "reset");
        assert_eq!(reset.id.as_deref().map(untagged).as_deref(), Some("#10"));
    }
    // A trimmed publisher id may be used again, as with the embedded engine.
    assert_eq!(
        publish(n1, json!({ "to": "all", "data": "again", "id": "order-1" })).await,
        "order-1"
    );
    let after = form_urlencoded::byte_serialize(sixth.as_bytes()).collect::<String>();
    let history = get(n0, &format!("/api/v1/events?after={after}"))
        .await
        .json();
    let ids: Vec<String> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| untagged(e["id"].as_str().unwrap()))
        .collect();
    assert_eq!(ids, ["#7", "#8", "#9", "#10", "order-1"]);
    Ok(())
}

#[tokio::test]
async fn resuming_streams_under_concurrent_publishes_get_exactly_the_sequence() -> TestResult {
    let redis = RedisServer::start();
    let nodes = [node(&redis, &[]), node(&redis, &[])];
    let (n0, n1) = (nodes[0].addr, nodes[1].addr);
    let total = 150usize;
    let mut first = subscribe(n1, Some("r1"), &[]).await;
    let mut second = subscribe(n0, Some("r2"), &[]).await;
    let publisher = tokio::spawn(async move {
        for i in 0..total {
            publish(n0, json!({ "to": "all", "data": format!("e{i}") })).await;
        }
    });
    let expected: Vec<String> = (0..total).map(|i| format!("e{i}")).collect();
    // Each client takes a few events, drops its stream and resumes (on
    // alternating nodes) while events keep coming.
    for (client, user) in [(&mut first, "r1"), (&mut second, "r2")] {
        let mut got: Vec<String> = Vec::new();
        let mut last = String::new();
        let mut round = 0;
        while got.len() < total {
            let want = (3 + round % 5).min(total - got.len());
            for event in client.take(want).await {
                got.push(event.data);
                last = event.id.unwrap_or_default();
            }
            round += 1;
            if got.len() < total {
                // What was taken, not what was read: the rest of what the
                // old connection had buffered is dropped with it.
                let at = if round % 2 == 0 { n0 } else { n1 };
                *client = resume(at, user, &last).await;
                assert_eq!(client.header("pushwire-reset"), None);
            }
        }
        assert_eq!(got, expected, "{user}");
    }
    publisher.await?;
    Ok(())
}

/// Records what the tail hands over, and how often it gave up continuity.
#[derive(Default)]
struct Seen(Mutex<Vec<u64>>, AtomicUsize);

impl Fanout for Seen {
    fn deliver(&self, events: &[Arc<Event>]) {
        self.0.lock().unwrap().extend(events.iter().map(|e| e.seq));
    }

    fn resync(&self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

impl Seen {
    fn seqs(&self) -> Vec<u64> {
        self.0.lock().unwrap().clone()
    }

    fn resyncs(&self) -> usize {
        self.1.load(Ordering::SeqCst)
    }
}

fn retention(max_events: usize) -> Retention {
    Retention {
        max_events,
        max_age: Duration::from_secs(3600),
    }
}

fn draft(data: &str, id: Option<&str>) -> Draft {
    Draft {
        id: id.map(str::to_owned),
        ..Draft::new(Target::All, data)
    }
}

#[tokio::test]
async fn engine_trims_by_age_with_the_ids_and_its_tail_delivers_in_order() -> TestResult {
    let redis = RedisServer::start();
    let seen = Arc::new(Seen::default());
    let retention = Retention {
        max_events: 1000,
        max_age: Duration::from_secs(60),
    };
    let log = RedisLog::open(
        RedisNode::new(&redis.url(), "engine")?,
        retention,
        seen.clone(),
    );
    assert!(log.last().await?.is_none());
    let first = log
        .append(vec![draft("a", Some("x")), draft("b", None)])
        .await?;
    assert_eq!(first.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
    let err = log
        .append(vec![draft("c", Some("y")), draft("d", Some("y"))])
        .await;
    assert!(matches!(err, Err(StoreError::DuplicateId(id)) if id == "y"));
    let third = log.append(vec![draft("e", None)]).await?;
    assert_eq!(log.resolve("x").await?, Cursor::After(1));
    assert_eq!(log.resolve("0").await?, Cursor::After(0));
    assert_eq!(log.resolve(&third[0].id).await?, Cursor::After(3));
    assert_eq!(log.resolve("3").await?, Cursor::Unknown, "not its id");
    assert_eq!(log.resolve("#4").await?, Cursor::Unknown);
    // `+5` and `03` are publisher ids, not hub ids in another spelling.
    assert_eq!(log.resolve("03").await?, Cursor::Unknown);
    let plus = log.append(vec![draft("g", Some("+5"))]).await?;
    assert_eq!(log.resolve("+5").await?, Cursor::After(plus[0].seq));
    let page = log.read_after(1, 10).await?;
    assert_eq!(
        page.iter().map(|e| &*e.data).collect::<Vec<_>>(),
        ["b", "e", "g"]
    );

    // Nothing is old yet; a minute later, everything is.
    assert_eq!(log.trim(pushwire_core::log::now_ms()).await?, 0);
    assert_eq!(log.trim(pushwire_core::log::now_ms() + 61_000).await?, 4);
    assert!(log.read_after(0, 10).await?.is_empty());
    assert!(log.last().await?.is_none());
    assert_eq!(log.resolve("x").await?, Cursor::Unknown);
    // 4 had a publisher's id: no hub id names it, even trimmed.
    assert_eq!(log.resolve("4").await?, Cursor::Unknown);
    assert_eq!(log.resolve("3").await?, Cursor::Unknown);
    let again = log.append(vec![draft("f", Some("x"))]).await?;
    assert_eq!(again[0].seq, 5);
    // The newest event trimmed stays a valid point to resume from, by its
    // id only; numbers go on.
    let sixth = log.append(vec![draft("h", None)]).await?;
    assert_eq!(log.trim(pushwire_core::log::now_ms() + 61_000).await?, 2);
    assert_eq!(log.resolve(&sixth[0].id).await?, Cursor::After(6));
    assert_eq!(log.resolve("#6").await?, Cursor::Unknown);
    assert_eq!(log.resolve(&third[0].id).await?, Cursor::Unknown);

    eventually("the tail delivered every event in order", || async {
        seen.seqs() == [1, 2, 3, 4, 5, 6]
    })
    .await;
    Ok(())
}

#[tokio::test]
async fn a_tail_that_finds_events_trimmed_before_it_read_them_ends_local_streams() -> TestResult {
    let redis = RedisServer::start();
    let seen = Arc::new(Seen::default());
    let log = RedisLog::open(
        RedisNode::new(&redis.url(), "gap")?,
        retention(5),
        seen.clone(),
    );
    assert!(log.last().await?.is_none());
    // One batch of 20 with room for 5: 1..=15 are gone before any read.
    let batch: Vec<Draft> = (0..20).map(|i| draft(&i.to_string(), None)).collect();
    log.append(batch).await?;
    eventually("the tail delivered what is left", || async {
        seen.seqs() == [16, 17, 18, 19, 20]
    })
    .await;
    assert_eq!(seen.resyncs(), 1, "local streams were told to resume");
    log.append(vec![draft("next", None)]).await?;
    eventually("and goes on", || async { seen.seqs().last() == Some(&21) }).await;
    assert_eq!(seen.resyncs(), 1);
    Ok(())
}

#[tokio::test]
async fn a_history_lost_under_a_live_tail_ends_local_streams() -> TestResult {
    let redis = RedisServer::start();
    let seen = Arc::new(Seen::default());
    let log = RedisLog::open(
        RedisNode::new(&redis.url(), "lost")?,
        retention(100),
        seen.clone(),
    );
    assert!(log.last().await?.is_none());
    for i in 0..3 {
        log.append(vec![draft(&i.to_string(), None)]).await?;
    }
    eventually("three delivered", || async { seen.seqs() == [1, 2, 3] }).await;
    // Redis loses everything while the tail's connection stays up.
    let client = ::redis::Client::open(redis.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    ::redis::cmd("FLUSHDB").query_async::<()>(&mut conn).await?;
    let again = log.append(vec![draft("new", None)]).await?;
    assert_eq!(again[0].seq, 1, "the new history starts over");
    eventually("the tail noticed", || async { seen.resyncs() == 1 }).await;
    log.append(vec![draft("newer", None)]).await?;
    eventually("and follows the new history", || async {
        seen.seqs().last() == Some(&2)
    })
    .await;
    assert_eq!(seen.seqs(), [1, 2, 3, 2]);
    Ok(())
}

#[tokio::test]
async fn a_node_that_stops_cleanly_leaves_presence_at_once() -> TestResult {
    let redis = RedisServer::start();
    // The default TTL (15 s) is longer than any wait below: only the
    // node's own goodbye can make its user vanish in time.
    let [stays, leaves] = [node(&redis, &[]), node(&redis, &[])];
    let _tab = subscribe(leaves.addr, Some("erin"), &[]).await;
    eventually("erin is seen from the other node", || async {
        user_count(stays.addr).await == 1
    })
    .await;
    leaves.terminate();
    eventually("erin is gone", || async {
        user_count(stays.addr).await == 0
    })
    .await;
    let stats = get(stays.addr, "/api/v1/stats").await.json();
    assert_eq!(stats["nodes"], json!(1));
    Ok(())
}

#[tokio::test]
async fn an_unreadable_entry_is_skipped_once_and_the_tail_goes_on() -> TestResult {
    let redis = RedisServer::start();
    let seen = Arc::new(Seen::default());
    let log = RedisLog::open(
        RedisNode::new(&redis.url(), "odd")?,
        retention(100),
        seen.clone(),
    );
    assert!(log.last().await?.is_none());
    log.append(vec![draft("a", None)]).await?;
    // Something other than pushwire wrote into the stream.
    let client = ::redis::Client::open(redis.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    ::redis::cmd("XADD")
        .arg("odd:events")
        .arg("0-*")
        .arg("r")
        .arg("not a record")
        .query_async::<String>(&mut conn)
        .await?;
    log.append(vec![draft("c", None)]).await?;
    eventually("the tail went past it", || async { seen.seqs() == [1, 3] }).await;
    assert_eq!(seen.resyncs(), 0);
    Ok(())
}

#[tokio::test]
async fn streams_end_when_redis_lost_the_history_and_resume_with_a_reset() -> TestResult {
    let redis = RedisServer::start();
    let hub = node(&redis, &[]);
    let mut tab = subscribe(hub.addr, Some("alice"), &[]).await;
    for i in 0..3 {
        publish(hub.addr, json!({ "to": "all", "data": i })).await;
    }
    let ids = untagged_ids(tab.take(3).await);
    assert_eq!(ids, ["#1", "#2", "#3"]);

    // Redis loses everything (as after a restart without persistence).
    let client = ::redis::Client::open(redis.url())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    ::redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await?;
    assert_eq!(
        untagged(&publish(hub.addr, json!({ "to": "all", "data": "new" })).await),
        "#1"
    );

    assert!(tab.wait_end(WAIT).await, "the stream ends rather than skip");
    let mut back = resume(hub.addr, "alice", "#3").await;
    assert_eq!(back.header("pushwire-reset"), Some("1"));
    let reset = back.next().await;
    assert_eq!(
        (reset.event.as_str(), reset.id.as_deref().map(untagged)),
        ("reset", Some("#1".to_owned()))
    );
    publish(hub.addr, json!({ "to": "all", "data": "after" })).await;
    assert_eq!(back.next().await.data, "after");
    Ok(())
}

/// The value of an unlabelled sample in a scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn each_node_reports_the_shared_history_and_how_far_behind_its_tail_is() -> TestResult {
    let redis = RedisServer::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    // Once both tails follow (a publish is refused until they do).
    eventually("node a takes publishes", || async {
        try_publish(a.addr, &json!({ "to": "all", "data": "0" }))
            .await
            .status
            == 200
    })
    .await;
    for n in 1..=4 {
        let reply = try_publish(a.addr, &json!({ "to": "all", "data": n.to_string() })).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // Node b published nothing; it sees the shared history through Redis
    // and its tail catches up with it.
    eventually("node b's tail has delivered the whole history", || async {
        let scrape = get(b.addr, "/metrics").await.body;
        sample(&scrape, "pushwire_history_newest_seq") == Some(5.0)
            && sample(&scrape, "pushwire_history_oldest_seq") == Some(1.0)
            && sample(&scrape, "pushwire_history_events") == Some(5.0)
            && sample(&scrape, "pushwire_redis_tail_lag_events") == Some(0.0)
    })
    .await;
    Ok(())
}
