//! The backend examples of `examples/`: each publishing example reaches a
//! user's, a group member's and a topic's stream of a live hub, each
//! `--auth-url` example lets a stream in by its session cookie and refuses
//! the others, and each webhook receiver acts once on a message signed as
//! the hub signs them (the test signs them itself) and refuses the forged,
//! the stale and the incomplete. They run with the machine's `node`,
//! `python3`, `java` (single-file source launch, JDK 11 or newer) and `go`
//! (`scripts/test` installs what is missing); a missing one fails the test
//! rather than skip it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use pushwire_testkit::prelude::*;
use serde_json::json;

const KEY: &str = "example-publisher-key";

fn example(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path)
}

/// How an example is run: `<interpreter> <file>`, or for Go the binary
/// built from it into `built`. Not `go run`: killed, it would leave the
/// program it built running, a grandchild holding the test's pipes open.
fn command(interpreter: &str, script: &str, built: &Path) -> Command {
    if interpreter != "go" {
        let mut command = Command::new(interpreter);
        command.arg(example(script));
        return command;
    }
    let binary = built.join("example");
    let status = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(example(script))
        .status()
        .unwrap_or_else(|e| panic!("cannot run go: {e}"));
    assert!(status.success(), "go build {script} failed");
    Command::new(binary)
}

/// Runs a publishing example against the hub at `url`; its ids, one a line.
fn run_publisher(interpreter: &str, script: &str, url: &str) -> Vec<String> {
    let built = tempfile::tempdir().unwrap();
    let output = command(interpreter, script, built.path())
        .env("PUSHWIRE_URL", url)
        .env("PUSHWIRE_KEY", KEY)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    assert!(
        output.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn publishing_example_reaches_user_group_and_topic(interpreter: &str, script: &str) {
    let mut config = pushwire_testkit::config();
    config.publisher_key = Some(KEY.to_owned());
    let server = start(config).await;
    let addr = server.addr();
    let mut alice = SseClient::connect(addr, "/sse/subscribe/alice").await;
    let mut member = SseClient::connect(addr, "/api/v1/stream?user=team-7/bob").await;
    let mut prices = SseClient::connect(addr, "/api/v1/stream?topic=prices/EURCNY").await;
    for stream in [&alice, &member, &prices] {
        assert_eq!(stream.status, 200);
    }
    let url = format!("http://{addr}");
    let ids = tokio::task::spawn_blocking({
        let (interpreter, script) = (interpreter.to_owned(), script.to_owned());
        move || run_publisher(&interpreter, &script, &url)
    })
    .await
    .unwrap();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let order = alice.take(1).await.remove(0);
    assert_eq!(
        (
            order.event.as_str(),
            order.data.as_str(),
            order.id.as_deref()
        ),
        ("order", "order 42 shipped", Some(ids[0].as_str()))
    );
    assert_eq!(member.take(1).await.remove(0).data, "standup in 5");
    assert_eq!(prices.take(1).await.remove(0).data, r#"{"bid":7.81}"#);
}

#[tokio::test]
async fn node_publishes_to_a_user_a_group_and_a_topic() {
    publishing_example_reaches_user_group_and_topic("node", "node/publish.mjs").await;
}

#[tokio::test]
async fn python_publishes_to_a_user_a_group_and_a_topic() {
    publishing_example_reaches_user_group_and_topic("python3", "python/publish.py").await;
}

#[tokio::test]
async fn java_publishes_to_a_user_a_group_and_a_topic() {
    publishing_example_reaches_user_group_and_topic("java", "java/Publish.java").await;
}

#[tokio::test]
async fn go_publishes_to_a_user_a_group_and_a_topic() {
    publishing_example_reaches_user_group_and_topic("go", "go/publish.go").await;
}

/// An auth example, started on a free port; killed when dropped.
struct AuthBackend {
    child: Child,
    port: u16,
    /// Where a compiled server lives while it runs.
    _built: tempfile::TempDir,
}

impl Drop for AuthBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_auth_backend(interpreter: &str, script: &str) -> AuthBackend {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let built = tempfile::tempdir().unwrap();
    let mut child = command(interpreter, script, built.path())
        .env("PORT", port.to_string())
        .env("SESSIONS", r#"{"s3cr3t": "alice"}"#)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
    // It says when it listens.
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening"), "{script}: {line}");
    AuthBackend {
        child,
        port,
        _built: built,
    }
}

async fn auth_example_lets_in_by_session(interpreter: &str, script: &str) {
    let backend = start_auth_backend(interpreter, script);
    let mut config = pushwire_testkit::config();
    config.publisher_key = Some(KEY.to_owned());
    config.auth_url = Some(format!("http://127.0.0.1:{}/pushwire/auth", backend.port));
    config.auth_cache_ttl = Duration::ZERO;
    let server = start(config).await;
    let addr = server.addr();
    let session = [("Cookie", "theme=dark; session=s3cr3t")];

    let mut alice = SseClient::connect_with(addr, "/sse/subscribe/alice", &session).await;
    assert_eq!(alice.status, 200);
    let orders =
        SseClient::connect_with(addr, "/api/v1/stream?topic=orders/alice/42", &session).await;
    assert_eq!(orders.status, 200);
    // Another user's stream, a topic not granted, no session, a wrong one.
    let bob = SseClient::connect_with(addr, "/sse/subscribe/bob", &session).await;
    assert_eq!(bob.status, 403);
    let secret = SseClient::connect_with(addr, "/api/v1/stream?topic=secret", &session).await;
    assert_eq!(secret.status, 403);
    let anonymous = SseClient::connect(addr, "/sse/subscribe/alice").await;
    assert_eq!(anonymous.status, 401);
    let wrong =
        SseClient::connect_with(addr, "/sse/subscribe/alice", &[("Cookie", "session=guess")]).await;
    assert_eq!(wrong.status, 401);

    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {KEY}")),
        ],
        br#"{"to": {"users": ["alice"]}, "data": "hello alice"}"#,
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(alice.take(1).await.remove(0).data, "hello alice");
}

#[tokio::test]
async fn node_auth_backend_lets_in_by_session_cookie() {
    auth_example_lets_in_by_session("node", "node/auth-backend.mjs").await;
}

#[tokio::test]
async fn python_auth_backend_lets_in_by_session_cookie() {
    auth_example_lets_in_by_session("python3", "python/auth_backend.py").await;
}

#[tokio::test]
async fn java_auth_backend_lets_in_by_session_cookie() {
    auth_example_lets_in_by_session("java", "java/AuthBackend.java").await;
}

#[tokio::test]
async fn go_auth_backend_lets_in_by_session_cookie() {
    auth_example_lets_in_by_session("go", "go/auth-backend.go").await;
}

/// The receivers' secret, and another one (a hub configured differently).
const WEBHOOK_SECRET: &str = "whsec_cHVzaHdpcmUtZXhhbXBsZS13ZWJob29rLWtleQ==";
const OTHER_SECRET: &str = "whsec_YW5vdGhlciBodWIncyBrZXk=";

/// The `webhook-signature` entry the hub sends: `v1,` and the base64 of
/// HMAC-SHA256 over `<id>.<timestamp>.<body>`, keyed with the secret's
/// base64 after `whsec_`.
fn signature(secret: &str, id: &str, timestamp: u64, body: &str) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let tag = ring::hmac::sign(&key, format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(tag.as_ref()))
}

#[test]
fn the_tests_sign_as_the_standard_webhooks_test_vector_says() {
    assert_eq!(
        signature(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#
        ),
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A webhook receiver example, on a port it chose; killed when dropped.
struct WebhookReceiver {
    child: Child,
    addr: SocketAddr,
    /// What it printed after its `listening` line, one line at a time.
    lines: mpsc::Receiver<String>,
    /// Where a compiled receiver lives while it runs.
    _built: tempfile::TempDir,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WebhookReceiver {
    fn start(interpreter: &str, script: &str) -> WebhookReceiver {
        let built = tempfile::tempdir().unwrap();
        let mut child = command(interpreter, script, built.path())
            .env("PORT", "0")
            .env("PUSHWIRE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {interpreter}: {e}"));
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim_end()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("{script} did not say where it listens: {line:?}"));
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        WebhookReceiver {
            child,
            addr,
            lines,
            _built: built,
        }
    }

    /// The next line it printed, as JSON.
    fn next_line(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("no line printed within WAIT");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// POSTs `body` to `/webhooks` with these webhook headers; the status.
    async fn post(&self, headers: &[(&str, &str)], body: &str) -> u16 {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        request(self.addr, "POST", "/webhooks", &all, body.as_bytes())
            .await
            .status
    }

    /// One delivery as the hub makes it, signed with `secret` at `timestamp`.
    async fn deliver(&self, secret: &str, id: &str, timestamp: u64, body: &str) -> u16 {
        let signature = signature(secret, id, timestamp, body);
        let timestamp = timestamp.to_string();
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.as_str()),
            ("webhook-signature", signature.as_str()),
        ];
        self.post(&headers, body).await
    }
}

async fn receiver_verifies_and_acts_once(interpreter: &str, script: &str) {
    let receiver = WebhookReceiver::start(interpreter, script);
    let online = json!({
        "type": "user.online",
        "timestamp": "2026-12-03T14:00:00Z",
        "data": {"user": "alice"}
    })
    .to_string();
    assert_eq!(
        receiver
            .deliver(WEBHOOK_SECRET, "msg_1", now(), &online)
            .await,
        204
    );
    assert_eq!(
        receiver.next_line(),
        json!({"id": "msg_1", "type": "user.online", "data": {"user": "alice"}})
    );
    // A retry: the same id, a later attempt.
    assert_eq!(
        receiver
            .deliver(WEBHOOK_SECRET, "msg_1", now() + 1, &online)
            .await,
        204
    );

    // A body changed after signing, another secret, a stale or a future
    // timestamp.
    let timestamp = now();
    let signed = signature(WEBHOOK_SECRET, "msg_2", timestamp, &online);
    let tampered = online.replace("alice", "mallory");
    let stamp = timestamp.to_string();
    let headers = [
        ("webhook-id", "msg_2"),
        ("webhook-timestamp", stamp.as_str()),
        ("webhook-signature", signed.as_str()),
    ];
    assert_eq!(receiver.post(&headers, &tampered).await, 401);
    assert_eq!(
        receiver
            .deliver(OTHER_SECRET, "msg_2", now(), &online)
            .await,
        401
    );
    for skew in [now() - 600, now() + 600] {
        assert_eq!(
            receiver
                .deliver(WEBHOOK_SECRET, "msg_2", skew, &online)
                .await,
            401
        );
    }
    // Each header missing in turn.
    for missing in 0..headers.len() {
        let mut some = headers.to_vec();
        some.remove(missing);
        assert_eq!(
            receiver.post(&some, &online).await,
            400,
            "without {}",
            headers[missing].0
        );
    }

    // A refused message does not use up its id; the next line is this one,
    // so that nothing was printed for the retry or the refusals.
    let closed = json!({
        "type": "stream.closed",
        "timestamp": "2026-12-03T14:00:01Z",
        "data": {"user": "alice", "route": "/sse/subscribe/alice", "stream": "s-9",
                 "reason": "client_closed", "duration_ms": 61250}
    });
    assert_eq!(
        receiver
            .deliver(WEBHOOK_SECRET, "msg_2", now(), &closed.to_string())
            .await,
        204
    );
    assert_eq!(
        receiver.next_line(),
        json!({"id": "msg_2", "type": "stream.closed", "data": closed["data"]})
    );

    // Several signatures (a secret being rotated): one matching is enough.
    // Non-ASCII and escapes in the body: the bytes are signed as sent.
    let undelivered = json!({
        "type": "event.undelivered",
        "timestamp": "2026-12-03T14:00:02Z",
        "data": {"event": {"id": "42", "type": "order", "data": "café \"à emporter\"\n",
                           "truncated": false},
                 "users": ["bob", "zoë"]}
    })
    .to_string();
    let timestamp = now();
    let stamp = timestamp.to_string();
    let both = format!(
        "{} {}",
        signature(OTHER_SECRET, "msg_3", timestamp, &undelivered),
        signature(WEBHOOK_SECRET, "msg_3", timestamp, &undelivered)
    );
    let headers = [
        ("webhook-id", "msg_3"),
        ("webhook-timestamp", stamp.as_str()),
        ("webhook-signature", both.as_str()),
    ];
    assert_eq!(receiver.post(&headers, &undelivered).await, 204);
    let line = receiver.next_line();
    assert_eq!(line["id"], "msg_3");
    assert_eq!(line["type"], "event.undelivered");
    assert_eq!(
        line["data"],
        serde_json::from_str::<serde_json::Value>(&undelivered).unwrap()["data"]
    );
    from_a_live_hub(&receiver).await;
}

/// A real hub with `--webhook-url` pointing at the receiver: a user who
/// opens a stream is announced online, and an event for a user nobody
/// listens as is reported undelivered; the receiver verifies both.
async fn from_a_live_hub(receiver: &WebhookReceiver) {
    let mut config = pushwire_testkit::config();
    config.webhook_url = Some(format!("http://{}/webhooks", receiver.addr));
    config.webhook_secret = Some(WEBHOOK_SECRET.to_owned());
    let server = start(config).await;
    let stream = SseClient::connect(server.addr(), "/sse/subscribe/alice").await;
    assert_eq!(stream.status, 200);
    let online = receiver.next_line();
    assert_eq!(online["type"], "user.online", "{online}");
    assert_eq!(online["data"]["user"], "alice");
    assert!(
        online["id"].as_str().unwrap().starts_with("msg_"),
        "{online}"
    );
    let id = publish(
        server.addr(),
        json!({"to": {"users": ["alice", "bob"]}, "data": "your parcel"}),
    )
    .await;
    let undelivered = receiver.next_line();
    assert_eq!(undelivered["type"], "event.undelivered", "{undelivered}");
    assert_eq!(undelivered["data"]["users"], json!(["bob"]));
    assert_eq!(undelivered["data"]["event"]["id"], json!(id));
}

// The receiver is read with blocking calls while the hub runs in this
// runtime: it needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_webhook_receiver_verifies_and_acts_once() {
    receiver_verifies_and_acts_once("node", "node/webhook-receiver.mjs").await;
}

// The receiver is read with blocking calls while the hub runs in this
// runtime: it needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_webhook_receiver_verifies_and_acts_once() {
    receiver_verifies_and_acts_once("python3", "python/webhook_receiver.py").await;
}

// The receiver is read with blocking calls while the hub runs in this
// runtime: it needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_webhook_receiver_verifies_and_acts_once() {
    receiver_verifies_and_acts_once("java", "java/WebhookReceiver.java").await;
}

// The receiver is read with blocking calls while the hub runs in this
// runtime: it needs threads of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_webhook_receiver_verifies_and_acts_once() {
    receiver_verifies_and_acts_once("go", "go/webhook-receiver.go").await;
}
