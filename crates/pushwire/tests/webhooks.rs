//! Webhooks against a real receiver: an HTTP server in the test that
//! verifies every signature (Standard Webhooks) and can fail, time out or
//! be down. User presence (online, offline after the delay, a refresh that
//! is no pair), undelivered events, retries in order, the failed list and
//! its retry, and no message lost across a kill -9 of the hub or of the
//! cluster node that was sending.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use pushwire::config::Storage;
use pushwire_testkit::prelude::*;
use pushwire_testkit::redis::RedisServer;

const BIN: &str = pushwire_testkit::hub_binary!();
const KEY: &[u8] = b"test-webhook-key-0123456789abcdef";

fn secret() -> String {
    format!("whsec_{}", STANDARD.encode(KEY))
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Accept,
    Fail(u16),
    /// Never answers (the hub's timeout ends the attempt).
    Hang,
}

#[derive(Debug, Clone)]
struct Received {
    id: String,
    kind: String,
    data: Value,
    /// The answer it got: 2xx means delivered.
    accepted: bool,
}

#[derive(Default)]
struct Seen {
    attempts: Vec<Received>,
    bad_signatures: usize,
}

/// A webhook receiver on a fixed loopback port, which can be stopped (the
/// port refuses connections) and started again.
struct Receiver {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    seen: Arc<Mutex<Seen>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut receiver = Receiver {
            addr: listener.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(Mode::Accept)),
            seen: Arc::default(),
            task: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn url(&self) -> String {
        format!("http://{}/webhooks", self.addr)
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn serve(&mut self, listener: TcpListener) {
        let (mode, seen) = (self.mode.clone(), self.seen.clone());
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let (mode, seen) = (mode.clone(), seen.clone());
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let (mode, seen) = (mode.clone(), seen.clone());
                        async move { Ok::<_, Infallible>(answer(request, &mode, &seen).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        }));
    }

    /// The port refuses connections until [`Receiver::restart`].
    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    fn attempts(&self) -> Vec<Received> {
        self.seen.lock().unwrap().attempts.clone()
    }

    fn bad_signatures(&self) -> usize {
        self.seen.lock().unwrap().bad_signatures
    }

    /// The messages delivered (answered 2xx), in the order they came.
    fn delivered(&self) -> Vec<Received> {
        self.attempts().into_iter().filter(|r| r.accepted).collect()
    }

    fn delivered_of(&self, kind: &str) -> Vec<Received> {
        self.delivered()
            .into_iter()
            .filter(|r| r.kind == kind)
            .collect()
    }

    async fn wait_for(&self, what: &str, check: impl Fn(&Receiver) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !check(self) {
            assert!(
                Instant::now() < deadline,
                "{what}: not seen; the receiver got {:#?}",
                self.attempts()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Verifies the request as a receiver must (all three headers, at least
/// one `v1,` signature over `id.timestamp.body`, a timestamp within five
/// minutes), records it, and answers as the mode says.
async fn answer(
    request: hyper::Request<hyper::body::Incoming>,
    mode: &Mutex<Mode>,
    seen: &Mutex<Seen>,
) -> hyper::Response<Full<Bytes>> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (id, timestamp, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let content_type = header("content-type");
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let reply = |status: u16| {
        hyper::Response::builder()
            .status(status)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        seen.lock().unwrap().bad_signatures += 1;
        return reply(400);
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, KEY);
    let signed = [id.as_bytes(), b".", timestamp.as_bytes(), b".", &body].concat();
    let valid = signatures.split(' ').any(|entry| {
        entry
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|tag| ring::hmac::verify(&key, &signed, &tag).is_ok())
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = timestamp
        .parse::<u64>()
        .is_ok_and(|t| t.abs_diff(now) <= 300);
    if !valid || !fresh || content_type.as_deref() != Some("application/json") {
        seen.lock().unwrap().bad_signatures += 1;
        return reply(401);
    }
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        humantime::parse_rfc3339(message["timestamp"].as_str().unwrap()).is_ok(),
        "{message}"
    );
    let now_mode = *mode.lock().unwrap();
    let mut received = Received {
        id,
        kind: message["type"].as_str().unwrap().to_owned(),
        data: message["data"].clone(),
        accepted: false,
    };
    match now_mode {
        Mode::Accept => {
            received.accepted = true;
            seen.lock().unwrap().attempts.push(received);
            reply(204)
        }
        Mode::Fail(status) => {
            seen.lock().unwrap().attempts.push(received);
            reply(status)
        }
        Mode::Hang => {
            seen.lock().unwrap().attempts.push(received);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            reply(204)
        }
    }
}

fn hooked(receiver: &Receiver) -> pushwire::config::ServeConfig {
    let mut config = pushwire_testkit::config();
    config.webhook_url = Some(receiver.url());
    config.webhook_secret = Some(secret());
    config.webhook_offline_delay = Duration::from_millis(800);
    config.webhook_retry_backoff = Duration::from_millis(100);
    config.webhook_retry_max_delay = Duration::from_millis(400);
    config
}

/// Publishes `count` events, event `n` to the user `<prefix><n % users>`
/// through hub `n % hubs.len()`; their ids, in order.
async fn publish_spread(
    hubs: &[SocketAddr],
    prefix: &str,
    users: usize,
    count: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in 0..count {
        let event =
            json!({"to": {"users": [format!("{prefix}{}", n % users)]}, "data": n.to_string()});
        ids.push(publish(hubs[n % hubs.len()], event).await);
    }
    ids
}

/// The event ids the receiver was told of as undelivered.
fn undelivered_ids(receiver: &Receiver) -> HashSet<String> {
    receiver
        .delivered_of("event.undelivered")
        .iter()
        .map(|r| r.data["event"]["id"].as_str().unwrap().to_owned())
        .collect()
}

/// After a storm of refreshes (and past the offline delay): no
/// `user.offline` yet and exactly one `user.online` per user; once the
/// `open` streams close, exactly one `user.offline` per user.
async fn refreshes_made_no_pair(receiver: &Receiver, users: &[String], open: Vec<SseClient>) {
    assert!(
        receiver.delivered_of("user.offline").is_empty(),
        "a refresh made an offline: {:#?}",
        receiver.delivered_of("user.offline")
    );
    let mut expected = users.to_vec();
    expected.sort();
    let mut online = users_of(&receiver.delivered_of("user.online"));
    online.sort();
    assert_eq!(online, expected, "exactly one user.online per user");
    drop(open);
    receiver
        .wait_for("every user.offline", |r| {
            r.delivered_of("user.offline").len() >= users.len()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut offline = users_of(&receiver.delivered_of("user.offline"));
    offline.sort();
    assert_eq!(offline, expected, "exactly one user.offline per user");
}

fn users_of(received: &[Received]) -> Vec<String> {
    received
        .iter()
        .map(|r| r.data["user"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_user_comes_online_then_goes_offline_after_the_delay_signed() {
    let receiver = Receiver::start().await;
    let server = start(hooked(&receiver)).await;
    let addr = server.addr();

    let alice = SseClient::connect(addr, "/sse/subscribe/alice").await;
    assert_eq!(alice.status, 200);
    receiver
        .wait_for("user.online", |r| !r.delivered_of("user.online").is_empty())
        .await;
    // A second stream of the same user announces nothing.
    let again = SseClient::connect(addr, "/api/v1/stream?user=alice").await;
    drop(alice);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        receiver.delivered_of("user.offline").is_empty(),
        "offline while a stream was open"
    );
    let left = Instant::now();
    drop(again);
    receiver
        .wait_for("user.offline", |r| {
            !r.delivered_of("user.offline").is_empty()
        })
        .await;
    assert!(
        left.elapsed() >= Duration::from_millis(800),
        "offline before --webhook-offline-delay: {:?}",
        left.elapsed()
    );
    let kinds: Vec<_> = receiver.delivered().into_iter().map(|r| r.kind).collect();
    assert_eq!(kinds, ["user.online", "user.offline"]);
    assert_eq!(users_of(&receiver.delivered()), ["alice", "alice"]);
    assert_eq!(receiver.bad_signatures(), 0);
    let ids: HashSet<_> = receiver.delivered().into_iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 2, "one id per message");
    assert!(ids.iter().all(|id| id.starts_with("msg_")), "{ids:?}");
}

#[tokio::test]
async fn a_refresh_storm_makes_no_offline_and_online_pairs() {
    let receiver = Receiver::start().await;
    let mut config = hooked(&receiver);
    // The default: long enough that a loaded machine's slow reconnects
    // stay refreshes.
    config.webhook_offline_delay = Duration::from_secs(5);
    let server = start(config).await;
    let addr = server.addr();
    let users: Vec<String> = (0..20).map(|i| format!("storm-{i}")).collect();

    let mut open = Vec::new();
    for user in &users {
        open.push(SseClient::connect(addr, &format!("/sse/subscribe/{user}")).await);
    }
    // Every page refreshes five times: the stream closes, and the new one
    // opens a little later, as a browser does.
    for _ in 0..5 {
        let old = std::mem::take(&mut open);
        drop(old);
        tokio::time::sleep(Duration::from_millis(150)).await;
        for user in &users {
            let stream = SseClient::connect(addr, &format!("/sse/subscribe/{user}")).await;
            assert_eq!(stream.status, 200);
            open.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Past the delay after the last refresh: any offline it caused is out.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    refreshes_made_no_pair(&receiver, &users, open).await;
    assert_eq!(receiver.bad_signatures(), 0);
}

#[tokio::test]
async fn an_event_for_users_without_a_stream_is_reported_undelivered() {
    let receiver = Receiver::start().await;
    let mut config = hooked(&receiver);
    config.webhook_max_data = 5;
    config.webhook_events = vec!["event.undelivered".into()];
    let server = start(config).await;
    let addr = server.addr();
    let mut alice = SseClient::connect(addr, "/sse/subscribe/alice").await;

    let both = publish(
        addr,
        json!({"to": {"users": ["alice", "bob"]}, "event": "order", "data": "parcel 42 shipped"}),
    )
    .await;
    assert_eq!(alice.next().await.data, "parcel 42 shipped");
    publish(
        addr,
        json!({"to": {"users": ["alice"]}, "data": "only alice"}),
    )
    .await;
    assert_eq!(alice.next().await.data, "only alice");
    // The seed's unicast route, to nobody online.
    let seed = get(addr, "/sse/sendMessage?userId=carol&message=hello").await;
    assert_eq!(seed.status, 200, "{}", seed.body);
    publish(
        addr,
        json!({"to": {"topics": ["news"]}, "data": "topics are not users"}),
    )
    .await;

    receiver
        .wait_for("two event.undelivered", |r| r.delivered().len() >= 2)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.delivered();
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got.iter().all(|r| r.kind == "event.undelivered"),
        "{got:#?}"
    );
    assert_eq!(got[0].data["users"], json!(["bob"]));
    assert_eq!(got[0].data["event"]["id"], json!(both));
    assert_eq!(got[0].data["event"]["type"], "order");
    assert_eq!(got[0].data["event"]["data"], "parce");
    assert_eq!(got[0].data["event"]["truncated"], true);
    assert_eq!(got[1].data["users"], json!(["carol"]));
    assert_eq!(got[1].data["event"]["data"], "hello");
    assert_eq!(got[1].data["event"]["truncated"], false);
    assert_eq!(receiver.bad_signatures(), 0);
}

#[tokio::test]
async fn stream_messages_say_route_reason_and_duration_when_turned_on() {
    let receiver = Receiver::start().await;
    let mut config = hooked(&receiver);
    config.webhook_events = vec!["stream.opened".into(), "stream.closed".into()];
    let server = start(config).await;
    let addr = server.addr();
    let stream = SseClient::connect(addr, "/sse/subscribe/dora").await;
    receiver
        .wait_for("stream.opened", |r| {
            !r.delivered_of("stream.opened").is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed = delete(addr, "/api/v1/users/dora").await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    drop(stream);
    let anonymous = SseClient::connect(addr, "/api/v1/stream?topic=news").await;
    drop(anonymous);
    receiver
        .wait_for("three stream messages", |r| r.delivered().len() >= 4)
        .await;
    let opened = receiver.delivered_of("stream.opened");
    let closed = receiver.delivered_of("stream.closed");
    assert_eq!(opened[0].data["user"], "dora");
    assert_eq!(opened[0].data["route"], "/sse/subscribe/dora");
    let dora = closed.iter().find(|r| r.data["user"] == "dora").unwrap();
    assert_eq!(dora.data["reason"], "closed");
    assert_eq!(dora.data["stream"], opened[0].data["stream"]);
    assert!(
        dora.data["duration_ms"].as_u64().unwrap() >= 200,
        "{dora:?}"
    );
    let other = closed.iter().find(|r| r.data["user"].is_null()).unwrap();
    assert_eq!(other.data["route"], "/api/v1/stream");
    assert_eq!(other.data["reason"], "client_gone");
    assert!(
        receiver.delivered_of("user.online").is_empty(),
        "off by choice"
    );
}

async fn delete(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "DELETE", path, &[], b"").await
}

async fn failed(addr: SocketAddr) -> Value {
    let reply = get(addr, "/api/v1/webhooks/failed").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_in_order_then_the_failed_list_and_retry() {
    let mut receiver = Receiver::start().await;
    receiver.set(Mode::Fail(500));
    let mut config = hooked(&receiver);
    config.webhook_max_attempts = 3;
    config.webhook_events = vec!["event.undelivered".into()];
    let server = start(config).await;
    let addr = server.addr();
    for n in 0..3 {
        publish(
            addr,
            json!({"to": {"users": ["bob"]}, "data": format!("m{n}")}),
        )
        .await;
    }
    publish(
        addr,
        json!({"to": {"users": ["eve"]}, "data": "other user"}),
    )
    .await;
    eventually("four failed messages", || async {
        failed(addr).await["count"] == 4
    })
    .await;
    let listing = failed(addr).await;
    let entry = &listing["failed"][0];
    assert_eq!(entry["attempts"], 3);
    assert_eq!(entry["last_error"], "HTTP 500");
    assert_eq!(entry["type"], "event.undelivered");
    assert!(entry["message"]["data"]["users"].is_array(), "{entry}");

    // Each message got three attempts, and bob's came strictly one message
    // after the other: no attempt of m1 before m0 was given up.
    let attempts = receiver.attempts();
    let bob: Vec<String> = attempts
        .iter()
        .filter(|r| r.data["users"] == json!(["bob"]))
        .map(|r| r.data["event"]["data"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(bob, ["m0", "m0", "m0", "m1", "m1", "m1", "m2", "m2", "m2"]);
    let per_id = attempts
        .iter()
        .fold(HashMap::<_, usize>::new(), |mut m, r| {
            *m.entry(r.id.clone()).or_default() += 1;
            m
        });
    assert!(per_id.values().all(|n| *n == 3), "{per_id:?}");

    // The receiver is fixed: a retry delivers one, under its id.
    receiver.set(Mode::Accept);
    let id = listing["failed"][1]["id"].as_str().unwrap().to_owned();
    let retried = request(
        addr,
        "POST",
        &format!("/api/v1/webhooks/failed/{id}/retry"),
        &[],
        b"",
    )
    .await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.json()["retried"], true);
    receiver
        .wait_for("the retried message", |r| !r.delivered().is_empty())
        .await;
    assert_eq!(receiver.delivered()[0].id, id);
    assert_eq!(failed(addr).await["count"], 3);
    let again = request(
        addr,
        "POST",
        &format!("/api/v1/webhooks/failed/{id}/retry"),
        &[],
        b"",
    )
    .await;
    assert_eq!(again.status, 404, "{}", again.body);
    let unknown = request(
        addr,
        "POST",
        "/api/v1/webhooks/failed/msg_none/retry",
        &[],
        b"",
    )
    .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(receiver.bad_signatures(), 0);
    let metrics = get(addr, "/metrics").await.body;
    assert!(
        metrics.contains("pushwire_webhook_failed_total 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pushwire_webhook_attempts_total{outcome=\"http_error\"} 12"),
        "{metrics}"
    );
    receiver.stop().await;
}

#[tokio::test]
async fn a_receiver_that_hangs_then_is_down_gets_everything_once_back() {
    let mut receiver = Receiver::start().await;
    receiver.set(Mode::Hang);
    let mut config = hooked(&receiver);
    // Long enough that a loaded machine answers an accepting receiver
    // within it: a delivery timed out after the receiver took it would be
    // sent twice (at least once allows that; this test wants none).
    config.webhook_timeout = Duration::from_secs(1);
    config.webhook_events = vec!["event.undelivered".into()];
    let server = start(config).await;
    let addr = server.addr();
    let produced = publish_spread(&[addr], "u", 4, 20).await;
    receiver
        .wait_for("attempts that time out", |r| r.attempts().len() >= 4)
        .await;
    // Past the hub's timeout for those attempts, and more.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    receiver.stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    receiver.set(Mode::Accept);
    receiver.restart().await;
    receiver
        .wait_for("all twenty", |r| r.delivered().len() >= 20)
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered = receiver.delivered();
    let events = undelivered_ids(&receiver);
    assert_eq!(events, produced.iter().cloned().collect(), "none lost");
    assert_eq!(delivered.len(), 20, "none delivered twice");
    // In order per user.
    for user in 0..4 {
        let data: Vec<u32> = delivered
            .iter()
            .filter(|r| r.data["users"] == json!([format!("u{user}")]))
            .map(|r| r.data["event"]["data"].as_str().unwrap().parse().unwrap())
            .collect();
        let mut sorted = data.clone();
        sorted.sort();
        assert_eq!(data, sorted, "u{user} out of order");
    }
    let metrics = get(addr, "/metrics").await.body;
    assert!(
        !metrics.contains("pushwire_webhook_attempts_total{outcome=\"timeout\"} 0"),
        "{metrics}"
    );
    assert_eq!(receiver.bad_signatures(), 0);
}

#[test]
fn webhook_options_are_checked_at_start() {
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--storage", "memory"])
            .args(args)
            .output()
            .unwrap()
    };
    for (args, named) in [
        (
            vec!["--webhook-url", "http://127.0.0.1:9/x"],
            "webhook-secret",
        ),
        (vec!["--webhook-secret", "whsec_AAAA"], "webhook-url"),
        (
            vec![
                "--webhook-url",
                "http://127.0.0.1:9/x",
                "--webhook-secret",
                "plain",
            ],
            "whsec_",
        ),
        (
            vec!["--webhook-url", "ftp://x/", "--webhook-secret", &secret()],
            "webhook-url",
        ),
        (
            vec![
                "--webhook-url",
                "http://127.0.0.1:9/x",
                "--webhook-secret",
                &secret(),
                "--webhook-events",
                "user.online,user.teleported",
            ],
            "user.teleported",
        ),
        (
            vec![
                "--webhook-url",
                "http://127.0.0.1:9/x",
                "--webhook-secret",
                &secret(),
                "--webhook-max-attempts",
                "0",
            ],
            "webhook-max-attempts",
        ),
        (
            vec!["--webhook-offline-delay", "30d"],
            "webhook-offline-delay",
        ),
    ] {
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}

/// A receiver that refuses everything, a backlog, kill -9, a fixed
/// receiver and a restart on the same data dir: every message arrives,
/// and the user who was online before the kill is announced offline.
#[tokio::test]
async fn a_kill_9_of_the_hub_loses_no_message() {
    let receiver = Receiver::start().await;
    receiver.set(Mode::Fail(503));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let args = hub_args(
        &receiver,
        "1s",
        &["--storage", "embedded", "--data-dir", data],
    );
    let hub = HubProcess::spawn(BIN, &args);
    let addr = hub.addr;
    let online = SseClient::connect(addr, "/sse/subscribe/zoe").await;
    assert_eq!(online.status, 200);
    let produced = publish_spread(&[addr], "away-", 5, 50).await;
    receiver
        .wait_for("attempts refused", |r| r.attempts().len() >= 5)
        .await;
    hub.kill();
    drop(online);

    receiver.set(Mode::Accept);
    let hub = HubProcess::spawn(BIN, &args);
    receiver
        .wait_for("all fifty and zoe's offline", |r| {
            r.delivered_of("event.undelivered").len() >= 50
                && !r.delivered_of("user.offline").is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let undelivered = receiver.delivered_of("event.undelivered");
    let events = undelivered_ids(&receiver);
    let lost = produced.iter().filter(|id| !events.contains(*id)).count();
    assert_eq!(lost, 0, "lost across kill -9");
    let online = receiver.delivered_of("user.online");
    assert_eq!(users_of(&online), ["zoe"]);
    assert_eq!(users_of(&receiver.delivered_of("user.offline")), ["zoe"]);
    assert_eq!(receiver.bad_signatures(), 0);
    println!(
        "kill -9 of the hub: {} produced, {} delivered, {} duplicates, {lost} lost",
        produced.len() + 2,
        events.len() + 2,
        undelivered.len() - events.len()
    );
    hub.kill();
}

/// Two nodes on one Redis: each message sent once while both live; the
/// node that holds the right to send is killed mid-backlog and the other
/// takes over, losing nothing; a user whose streams were on the dead node
/// is announced offline by the survivor.
#[tokio::test]
async fn in_a_cluster_one_node_sends_and_a_dead_senders_backlog_moves_on() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let redis_url = redis.url();
    let args = hub_args(
        &receiver,
        "1s",
        &[
            "--storage",
            "redis",
            "--redis-url",
            &redis_url,
            "--redis-presence-ttl",
            "3s",
        ],
    );
    let a = HubProcess::spawn(BIN, &args);
    let b = HubProcess::spawn(BIN, &args);
    // A user online on each node, and one on both: one user.online each.
    let on_a = SseClient::connect(a.addr, "/sse/subscribe/ann").await;
    let on_b = SseClient::connect(b.addr, "/sse/subscribe/ben").await;
    let both_a = SseClient::connect(a.addr, "/sse/subscribe/cat").await;
    let both_b = SseClient::connect(b.addr, "/sse/subscribe/cat").await;
    receiver
        .wait_for("three user.online", |r| {
            r.delivered_of("user.online").len() >= 3
        })
        .await;
    // An event for ann reaches her on node A: not undelivered, even if
    // published on node B.
    tokio::time::sleep(Duration::from_millis(600)).await;
    publish(
        b.addr,
        json!({"to": {"users": ["ann", "nobody"]}, "data": "x"}),
    )
    .await;
    receiver
        .wait_for("the undelivered", |r| {
            !r.delivered_of("event.undelivered").is_empty()
        })
        .await;
    assert_eq!(
        receiver.delivered_of("event.undelivered")[0].data["users"],
        json!(["nobody"])
    );

    // Backlog: the receiver refuses, messages pile up, the sender dies.
    receiver.set(Mode::Fail(503));
    let produced = publish_spread(&[a.addr, b.addr], "gone-", 3, 30).await;
    receiver
        .wait_for("refused attempts", |r| {
            r.attempts().iter().filter(|m| !m.accepted).count() >= 3
        })
        .await;
    let sender = redis_get(&redis, "pushwire:webhooks:sender");
    let node_of = |hub: &HubProcess| {
        hub.wait_for_log(|l| l["fields"]["message"] == "cluster node on Redis")["fields"]["node"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a_node, b_node) = (node_of(&a), node_of(&b));
    assert!(
        sender == a_node || sender == b_node,
        "{sender} is neither {a_node} nor {b_node}"
    );
    let (survivor, dead_user_stream, survivor_streams) = if sender == a_node {
        a.kill();
        drop(on_a);
        drop(both_a);
        (b, "ann", vec![on_b, both_b])
    } else {
        b.kill();
        drop(on_b);
        drop(both_b);
        (a, "ben", vec![on_a, both_a])
    };
    receiver.set(Mode::Accept);
    receiver
        .wait_for("the whole backlog and the dead node's user offline", |r| {
            r.delivered_of("event.undelivered").len() > produced.len()
                && users_of(&r.delivered_of("user.offline")).contains(&dead_user_stream.to_owned())
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events = undelivered_ids(&receiver);
    let lost = produced.iter().filter(|id| !events.contains(*id)).count();
    assert_eq!(lost, 0, "lost when the sending node died");
    // cat still has a stream on the survivor: no offline for her.
    assert!(!users_of(&receiver.delivered_of("user.offline")).contains(&"cat".to_owned()));
    let online = users_of(&receiver.delivered_of("user.online"));
    assert_eq!(
        online.iter().filter(|u| *u == "cat").count(),
        1,
        "{online:?}"
    );
    assert_eq!(receiver.bad_signatures(), 0);
    let delivered = receiver.delivered();
    let distinct: HashSet<_> = delivered.iter().map(|r| r.id.clone()).collect();
    println!(
        "cluster, sender killed: {} undelivered produced, {} delivered, {} duplicates, {lost} lost",
        produced.len() + 1,
        events.len(),
        delivered.len() - distinct.len()
    );
    drop(survivor_streams);
    drop(survivor);
}

/// The arguments of a hub process sending to `receiver`, with short retry
/// delays, after `storage`.
fn hub_args(receiver: &Receiver, offline_delay: &str, storage: &[&str]) -> Vec<String> {
    let hooks = [
        "--webhook-url",
        &receiver.url(),
        "--webhook-secret",
        &secret(),
        "--webhook-offline-delay",
        offline_delay,
        "--webhook-retry-backoff",
        "100ms",
        "--webhook-retry-max-delay",
        "300ms",
    ]
    .map(str::to_owned);
    storage.iter().map(|s| s.to_string()).chain(hooks).collect()
}

fn redis_get(redis: &RedisServer, key: &str) -> String {
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("GET").arg(key).query(&mut conn).unwrap()
}

#[tokio::test]
async fn the_failed_routes_need_webhooks_and_a_manager() {
    let server = start(pushwire_testkit::config()).await;
    let reply = get(server.addr(), "/api/v1/webhooks/failed").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "webhooks_off");

    let receiver = Receiver::start().await;
    let mut config = hooked(&receiver);
    config.publisher_key = Some("k".into());
    config.storage = Storage::Memory;
    let server = start(config).await;
    let reply = get(server.addr(), "/api/v1/webhooks/failed").await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = get_with(
        server.addr(),
        "/api/v1/webhooks/failed?limit=0",
        &[("Authorization", "Bearer k")],
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = get_with(
        server.addr(),
        "/api/v1/webhooks/failed",
        &[("Authorization", "Bearer k")],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"count": 0, "failed": []}));
}

/// Refreshes that land on the other node of a cluster (a load balancer
/// spreads the new stream anywhere) are no offline and online pairs
/// either: the sender sees the user's stream through the other node's
/// presence, and the node that opened it confirmed the user first.
#[tokio::test]
async fn a_refresh_onto_another_node_is_no_pair() {
    let redis = RedisServer::start();
    let receiver = Receiver::start().await;
    let redis_url = redis.url();
    let args = hub_args(
        &receiver,
        "3s",
        &["--storage", "redis", "--redis-url", &redis_url],
    );
    let nodes = [HubProcess::spawn(BIN, &args), HubProcess::spawn(BIN, &args)];
    let users: Vec<String> = (0..10).map(|i| format!("hop-{i}")).collect();
    let mut open = Vec::new();
    for user in &users {
        open.push(SseClient::connect(nodes[0].addr, &format!("/sse/subscribe/{user}")).await);
    }
    for round in 1..=6 {
        drop(std::mem::take(&mut open));
        tokio::time::sleep(Duration::from_millis(200)).await;
        for user in &users {
            let node = &nodes[round % 2];
            open.push(SseClient::connect(node.addr, &format!("/sse/subscribe/{user}")).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the delay after the last hop.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    refreshes_made_no_pair(&receiver, &users, open).await;
    assert_eq!(receiver.bad_signatures(), 0);
}
