//! The backend examples of `examples/` run against a live hub: each
//! publishing example reaches a user's, a group member's and a topic's
//! stream, and each `--auth-url` example lets a stream in by its session
//! cookie and refuses the others. They run with the machine's `node`,
//! `python3`, `java` (single-file source launch, JDK 11 or newer) and `go`
//! (`scripts/test` installs what is missing); a missing one fails the test
//! rather than skip it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use pushwire_testkit::prelude::*;

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
