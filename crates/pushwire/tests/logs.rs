//! What the hub logs for an operator: the startup summary and its warning
//! (the real binary), credential refusals with the peer (the real binary),
//! and the `debug` lines of streams and publishes (in process, through a
//! subscriber that keeps every line).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use pushwire_testkit::prelude::*;
use serde_json::{json, Value};

const BIN: &str = pushwire_testkit::hub_binary!();

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

#[test]
fn the_startup_line_says_what_runs_and_warns_of_an_open_publisher() {
    let hub = HubProcess::spawn_on(BIN, "0.0.0.0:0", ["--storage", "memory"]);
    let start = hub.wait_for_log(|l| message(l).starts_with("pushwire listening"));
    let fields = &start["fields"];
    assert_eq!(fields["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(fields["storage"], "memory");
    assert_eq!(fields["publisher_auth"], "keyless loopback");
    assert_eq!(fields["protocols"], "plain HTTP/1.1");
    assert_eq!(fields["limits"], "defaults");
    assert!(fields["addr"].as_str().unwrap().starts_with("0.0.0.0:"));
    let warning = hub.wait_for_log(|l| {
        l["level"] == "WARN" && message(l).contains("without a publisher credential")
    });
    assert!(message(&warning).contains("reverse proxy"), "{warning}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_key_there_is_no_warning_and_a_wrong_key_is_logged_with_the_peer() {
    let hub = HubProcess::spawn_on(
        BIN,
        "0.0.0.0:0",
        [
            "--storage",
            "memory",
            "--publisher-key",
            "right",
            "--max-streams",
            "50",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", hub.addr.port()).parse().unwrap();
    let body = json!({ "to": { "users": ["u"] }, "data": "x" }).to_string();
    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer wrong"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    let refusal =
        tokio::task::block_in_place(|| hub.wait_for_log(|l| message(l) == "credential refused"));
    assert_eq!(refusal["level"], "INFO");
    assert_eq!(
        refusal["fields"]["reason"],
        "the publisher key is not valid"
    );
    assert!(
        refusal["fields"]["peer"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{refusal}"
    );
    // The refusal came after the startup lines: a warning would be there.
    let lines = hub.log_lines();
    let start = lines
        .iter()
        .find(|l| message(l).starts_with("pushwire listening"))
        .expect("startup line");
    assert_eq!(start["fields"]["publisher_auth"], "publisher key");
    assert_eq!(start["fields"]["limits"], "max-streams=50");
    let scrape_at: std::net::SocketAddr = start["fields"]["metrics_addr"]
        .as_str()
        .expect("the metrics address")
        .parse()
        .unwrap();
    let scrape = get(scrape_at, "/metrics").await;
    assert!(
        scrape.body.contains("pushwire_build_info"),
        "{}",
        scrape.body
    );
    assert!(
        !lines.iter().any(|l| l["level"] == "WARN"),
        "unexpected warning: {lines:#?}"
    );
}

/// Every line the tests of this file log in process, as JSON.
fn captured() -> Arc<Mutex<Vec<u8>>> {
    static LINES: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LINES
        .get_or_init(|| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            tracing_subscriber::fmt()
                .json()
                .with_max_level(tracing::Level::DEBUG)
                .with_writer(move || Sink(sink.clone()))
                .init();
            lines
        })
        .clone()
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lines_where(want: impl Fn(&Value) -> bool) -> Vec<Value> {
    let bytes = captured().lock().unwrap().clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| want(l))
        .collect()
}

/// Waits for the one line with `text` as its message about `user`.
async fn line_about(user: &str, text: &str) -> Value {
    let find = || lines_where(|l| message(l) == text && l["fields"]["user"] == user);
    eventually(&format!("`{text}` is logged for {user}"), || async {
        !find().is_empty()
    })
    .await;
    find().remove(0)
}

#[tokio::test]
async fn streams_log_how_they_open_and_why_they_close() {
    captured();
    let hub = start_default().await;
    let addr = hub.addr();

    let mut tab = SseClient::connect(addr, "/api/v1/stream?user=log-alice&topic=a&topic=b").await;
    let opened = line_about("log-alice", "stream opened").await;
    assert_eq!(opened["level"], "DEBUG");
    assert_eq!(opened["fields"]["route"], "api");
    assert_eq!(opened["fields"]["topics"], 2);
    assert_eq!(opened["fields"]["resumed"], false);
    assert_eq!(opened["fields"]["reset"], false);

    // An id of this test's own: every hub of this file issues `#1`.
    let id = publish(
        addr,
        json!({ "to": { "users": ["log-alice"] }, "data": "hi", "id": "alice-1" }),
    )
    .await;
    assert_eq!(tab.next().await.data, "hi");
    let published = lines_where(|l| message(l) == "published" && l["fields"]["first_id"] == id);
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0]["fields"]["count"], 1);
    assert_eq!(published[0]["fields"]["target"], "users");
    let delivered = lines_where(|l| message(l) == "delivered" && l["fields"]["first_id"] == id);
    assert_eq!(delivered[0]["fields"]["deliveries"], 1, "{delivered:?}");

    let reply = request(addr, "DELETE", "/api/v1/users/log-alice", &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let closed = line_about("log-alice", "stream closed").await;
    assert_eq!(closed["fields"]["reason"], "closed");
    assert_eq!(closed["fields"]["route"], "api");
    assert!(closed["fields"]["duration"].is_string(), "{closed}");

    // A seed stream resuming from an id the history never issued, then
    // the client leaving.
    let tab = SseClient::connect_with(
        addr,
        "/sse/subscribe/log-bob",
        &[("last-event-id", "never-issued")],
    )
    .await;
    let opened = line_about("log-bob", "stream opened").await;
    assert_eq!(opened["fields"]["route"], "seed");
    assert_eq!(opened["fields"]["reset"], true);
    assert_eq!(opened["fields"]["resumed"], false);
    drop(tab);
    let closed = line_about("log-bob", "stream closed").await;
    assert_eq!(closed["fields"]["reason"], "client_gone");
    assert_eq!(closed["fields"]["reset"], true);
}

#[tokio::test]
async fn a_refused_stream_is_logged_with_its_limit_and_key() {
    captured();
    let mut config = config();
    config.max_streams_per_user = Some(1);
    let hub = start(config).await;
    let _first = SseClient::connect(hub.addr(), "/sse/subscribe/log-carol").await;
    line_about("log-carol", "stream opened").await;
    let refused = get(hub.addr(), "/sse/subscribe/log-carol").await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    eventually("the refusal is logged", || async {
        !lines_where(|l| {
            message(l) == "refused by a limit" && l["fields"]["limit"] == "streams_per_user"
        })
        .is_empty()
    })
    .await;
    let line = lines_where(|l| message(l) == "refused by a limit").remove(0);
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["fields"]["key"], "user");
    assert!(line["fields"]["peer"]
        .as_str()
        .unwrap()
        .contains("127.0.0.1"));
}

#[tokio::test]
async fn a_slow_consumer_cut_is_a_warning_and_the_reason_its_stream_closed() {
    captured();
    let mut config = config();
    // One queued frame: a batch of three to the user overflows it at once,
    // before the stream's task can take the first.
    config.queue_capacity = 1;
    let hub = start(config).await;
    let addr = hub.addr();
    let mut tab = SseClient::connect(addr, "/api/v1/stream?user=log-dave").await;
    line_about("log-dave", "stream opened").await;
    let batch = json!([
        { "to": { "users": ["log-dave"] }, "data": "1", "id": "dave-1" },
        { "to": { "users": ["log-dave"] }, "data": "2" },
        { "to": { "users": ["log-dave"] }, "data": "3" },
    ]);
    let reply = post_json(addr, "/api/v1/publish", &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(tab.wait_end(WAIT).await, "the slow stream was not ended");
    let cut = line_about("log-dave", "slow consumer cut: its queue overflowed (--queue-capacity); the client resumes from the history").await;
    assert_eq!(cut["level"], "WARN");
    assert_eq!(cut["fields"]["route"], "api");
    let closed = line_about("log-dave", "stream closed").await;
    assert_eq!(closed["fields"]["reason"], "slow_consumer");
    // An id of this test's own, not `#1`, which every hub of this file issues.
    let first = "dave-1";
    let published = lines_where(|l| message(l) == "published" && l["fields"]["first_id"] == first);
    assert_eq!(published[0]["fields"]["count"], 3, "{published:?}");
    let delivered = lines_where(|l| message(l) == "delivered" && l["fields"]["first_id"] == first);
    assert_eq!(delivered[0]["fields"]["slow_consumers"], 1, "{delivered:?}");
}
