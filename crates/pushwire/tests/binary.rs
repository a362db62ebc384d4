//! The real `pushwire` binary: startup, configuration errors, the CLI's
//! publish, subscribe (and its reconnection) and token commands, graceful
//! shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pushwire_testkit::prelude::*;
use serde_json::json;

/// The hub binary under test.
const BIN: &str = pushwire_testkit::hub_binary!();

/// Runs the binary with these arguments to its end.
fn pushwire(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// The hub binary with in-memory history.
fn spawn_hub(extra: &[&str]) -> HubProcess {
    HubProcess::spawn(BIN, ["--storage", "memory"].iter().chain(extra))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_streams_and_exits_zero() {
    let hub = spawn_hub(&[]);
    let mut tab = SseClient::connect(hub.addr, "/sse/subscribe/u1").await;
    tokio::task::block_in_place(|| hub.terminate());
    assert!(tab.wait_end(WAIT).await, "stream not ended cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_first_drains_readiness_then_ends_streams() {
    let hub = spawn_hub(&["--drain-delay", "2s"]);
    let ready = get(hub.addr, "/readyz").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "ready");
    let mut tab = SseClient::connect(hub.addr, "/sse/subscribe/u1").await;
    hub.signal("TERM");
    eventually("readiness turns to 503", || async {
        get(hub.addr, "/readyz").await.status == 503
    })
    .await;
    let reply = get(hub.addr, "/readyz").await;
    assert_eq!(reply.json()["error"]["code"], "not_ready");
    assert_eq!(reply.json()["error"]["message"], "shutting down");
    // Still serving during the delay: the stream stays open and publishes
    // reach it; liveness still says ok.
    assert_eq!(get(hub.addr, "/healthz").await.status, 200);
    publish(hub.addr, json!({ "to": "all", "data": "during the drain" })).await;
    assert_eq!(tab.next().await.data, "during the drain");
    assert!(!tab.ended);
    // Then the streams end and the process exits cleanly.
    assert!(tab.wait_end(WAIT).await, "stream not ended after the drain");
    let mut hub = hub;
    let deadline = std::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = hub.child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "hub did not exit");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.success(), "hub exited with {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cli_publish_reaches_cli_subscribe() {
    let hub = spawn_hub(&[]);
    let url = format!("http://{}", hub.addr);
    let mut subscriber = Command::new(BIN)
        .args([
            "subscribe",
            "--url",
            &url,
            "--user",
            "u1",
            "--topic",
            "news",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    eventually("the CLI subscriber is online", || async {
        user_count(hub.addr).await == 1
    })
    .await;
    for args in [
        vec![
            "--user",
            "u1",
            "--data",
            "hello\nworld",
            "--event",
            "greeting",
        ],
        vec!["--topic", "news", "--data", "headline"],
        vec!["--prefix", "u", "--data", "group"],
        vec!["--all", "--data", "everyone"],
    ] {
        let out = Command::new(BIN)
            .args(["publish", "--url", &url])
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(reply["id"].is_string());
    }
    let stdout = subscriber.stdout.take().unwrap();
    let lines: Vec<serde_json::Value> = tokio::task::block_in_place(|| {
        BufReader::new(stdout)
            .lines()
            .take(4)
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    });
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    assert_eq!(lines[0]["data"], "hello\nworld");
    assert_eq!(lines[0]["event"], "greeting");
    assert_eq!(lines[1]["data"], "headline");
    assert_eq!(lines[2]["data"], "group");
    assert_eq!(lines[3]["data"], "everyone");
}

#[test]
fn cli_publish_reports_hub_errors() {
    let hub = spawn_hub(&["--publisher-key", "k"]);
    let url = format!("http://{}", hub.addr);
    let out = pushwire(&["publish", "--url", &url, "--all", "--data", "x"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    for flag in ["--key", "--token"] {
        let out = pushwire(&["publish", "--url", &url, "--all", "--data", "x", flag, "k"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn bad_configuration_exits_with_code_2_and_says_why() {
    let out = pushwire(&["serve", "--heartbeat", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat"));

    // A timeout this long once started, then every connection panicked
    // computing its deadline.
    let out = pushwire(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--header-read-timeout=18446744073709551615s",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("header-read-timeout"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushwire.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9999\"\nunknown-option = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown-option"));
}

#[test]
fn a_bad_log_filter_stops_the_hub_with_code_2() {
    for bad in ["[[[", "warn,pushwire=bogus"] {
        let mut hub = Command::new(BIN)
            .args(["serve", "--storage", "memory", "--listen", "127.0.0.1:0"])
            .args(["--log", bad])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A hub that accepted the filter would run on: bounded, it fails.
        let deadline = std::time::Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = hub.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = hub.kill();
                panic!("the hub started with --log {bad:?}");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut hub.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(2), "{bad}: {stderr}");
        assert!(
            stderr.contains("log: ") && stderr.contains(bad),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn check_config_prints_secrets_redacted() {
    let out = Command::new(BIN)
        .args(["check-config", "--publisher-key", "pk-secret"])
        .args([
            "--publisher-jwt-key",
            "a-shared-jwt-secret-of-32-bytes-at-least",
        ])
        .args(["--redis-url", "redis://:redis-secret@127.0.0.1:6379/0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("publisher-key = \"<redacted>\""),
        "{stdout}"
    );
    for secret in ["pk-secret", "jwt-secret", "redis-secret"] {
        assert!(!stdout.contains(secret), "{secret} in {stdout}");
    }
}

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushwire.toml");
    std::fs::write(
        &file,
        "heartbeat = \"7s\"\nretry = \"9s\"\nqueue-capacity = 5\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--queue-capacity", "6", "--config"])
        .arg(&file)
        .env("PUSHWIRE_RETRY", "2s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: toml::Table = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(shown["heartbeat"].as_str(), Some("7s"));
    assert_eq!(shown["retry"].as_str(), Some("2s"));
    assert_eq!(shown["queue-capacity"].as_integer(), Some(6));
    assert_eq!(shown["listen"].as_str(), Some("127.0.0.1:8080"));
}

#[test]
fn a_bad_environment_variable_is_named_as_such() {
    let out = Command::new(BIN)
        .args(["check-config"])
        .env("PUSHWIRE_MAX_BODY", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PUSHWIRE_MAX_BODY") && stderr.contains("'lots'"),
        "{stderr}"
    );
    // The same value as a flag is the flag's error.
    let out = pushwire(&["check-config", "--max-body", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-body") && !stderr.contains("PUSHWIRE_"),
        "{stderr}"
    );
}

#[test]
fn listen_takes_a_host_name() {
    let out = pushwire(&["check-config", "--listen", "localhost:9000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("listen = \"127.0.0.1:9000\"")
            || stdout.contains("listen = \"[::1]:9000\""),
        "{stdout}"
    );
    let out = pushwire(&["check-config", "--listen", "localhost"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("port"));
}

#[test]
fn a_port_in_use_is_reported_once_and_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("in use").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(
        !data.exists(),
        "the data dir was created before the bind failed"
    );
}

#[test]
fn config_prints_a_file_that_check_config_accepts() {
    let out = Command::new(BIN).arg("config").output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pushwire.toml");
    std::fs::write(&file, &out.stdout).unwrap();
    let checked = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}

// `pushwire publish --data -`.

#[tokio::test(flavor = "multi_thread")]
async fn publish_reads_the_data_from_stdin_byte_for_byte() {
    let hub = spawn_hub(&[]);
    let url = format!("http://{}", hub.addr);
    let mut tab = SseClient::connect(hub.addr, "/api/v1/stream?user=u1").await;
    let publish_stdin = |input: &'static [u8]| {
        let mut child = Command::new(BIN)
            .args(["publish", "--url", &url, "--user", "u1", "--data", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || std::io::Write::write_all(&mut stdin, input).unwrap());
        child.wait_with_output().unwrap()
    };
    let text = "first line\n  second: \"quoted\"\r\n\nfourth ✓\n";
    let out = publish_stdin(text.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // CR LF arrives as LF, as a browser reads it; nothing else changes.
    assert_eq!(tab.next().await.data, text.replace("\r\n", "\n"));

    let out = publish_stdin(b"not \xff UTF-8");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not UTF-8"), "{stderr}");
    tab.expect_silence(std::time::Duration::from_millis(300))
        .await;
}

// `pushwire subscribe`: it reconnects as a browser does.

/// A running `pushwire subscribe`, its JSON lines read on a thread so that a
/// test waiting for a line that never comes fails after `WAIT`.
struct CliSubscriber {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl CliSubscriber {
    fn spawn(hub_url: &str, args: &[&str], env: &[(&str, &str)]) -> CliSubscriber {
        let mut child = Command::new(BIN)
            .args(["subscribe", "--url", hub_url])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        CliSubscriber { child, lines }
    }

    fn next(&self) -> serde_json::Value {
        self.lines
            .recv_timeout(WAIT)
            .expect("the subscriber printed no event")
    }

    fn datas(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| self.next()["data"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits for the process to exit; its exit status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the subscriber did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for CliSubscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ends every stream of `user` through the hub's close route.
async fn close_user(hub: &HubProcess, user: &str) {
    let path = format!("/api/v1/users/{user}");
    let reply = request(hub.addr, "DELETE", &path, &[], b"").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_reconnects_through_a_close_and_a_restart_losing_and_repeating_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    // A fixed port, so that the restarted hub is where the subscriber
    // reconnects to.
    let port = pushwire_testkit::redis::RedisServer::unused_port();
    let listen = format!("127.0.0.1:{port}");
    let args = ["--data-dir", data, "--retry", "200ms"];
    let hub = HubProcess::spawn_on(BIN, &listen, args);
    let url = format!("http://{listen}");
    let subscriber = CliSubscriber::spawn(&url, &["--user", "u1"], &[]);
    eventually("the subscriber is online", || async {
        user_count(hub.addr).await == 1
    })
    .await;
    let send = |addr, data: &str| {
        let body = json!({ "to": { "users": ["u1"] }, "data": data });
        async move { publish(addr, body).await }
    };
    let mut ids = vec![send(hub.addr, "1").await, send(hub.addr, "2").await];
    close_user(&hub, "u1").await;
    // While it waits to reconnect, or just after.
    ids.push(send(hub.addr, "3").await);
    assert_eq!(subscriber.datas(3), ["1", "2", "3"]);

    // A restart on the same data: the subscriber retries until the hub is
    // back, then resumes after event 3.
    tokio::task::block_in_place(|| hub.terminate());
    let hub = HubProcess::spawn_on(BIN, &listen, args);
    for data in ["4", "5"] {
        ids.push(send(hub.addr, data).await);
    }
    assert_eq!(subscriber.datas(2), ["4", "5"]);
    close_user(&hub, "u1").await;
    ids.push(send(hub.addr, "6").await);
    // Had anything come twice, it would come before 6.
    let last = subscriber.next();
    assert_eq!(last["data"], "6");
    assert_eq!(last["id"].as_str(), ids.last().map(String::as_str));
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribe_once_exits_when_the_stream_ends() {
    let hub = spawn_hub(&[]);
    let url = format!("http://{}", hub.addr);
    let mut subscriber = CliSubscriber::spawn(&url, &["--user", "u1", "--once"], &[]);
    eventually("the subscriber is online", || async {
        user_count(hub.addr).await == 1
    })
    .await;
    publish(hub.addr, json!({ "to": "all", "data": "last words" })).await;
    assert_eq!(subscriber.datas(1), ["last words"]);
    close_user(&hub, "u1").await;
    assert!(subscriber.wait_exit().success());
}

// `pushwire token`, and the tokens it mints at work on a hub.

const PUBLISHER_SECRET: &str = "the publisher secret, thirty-two bytes or more";
const SUBSCRIBER_SECRET: &str = "the subscriber secret, thirty-two bytes or more";

/// `pushwire token <args>` with `env` set; the token, or the failure.
fn mint(args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    let out = Command::new(BIN)
        .arg("token")
        .args(args)
        .env_remove("PUSHWIRE_PUBLISHER_JWT_KEY")
        .env_remove("PUSHWIRE_SUBSCRIBER_JWT_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    match out.status.success() {
        // The token alone on its line.
        true => Ok(stdout.strip_suffix('\n').unwrap().to_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// `pushwire publish --url <hub> <args>`: its reply, or its failure.
fn cli_publish(hub: &HubProcess, args: &[&str]) -> Result<serde_json::Value, String> {
    let url = format!("http://{}", hub.addr);
    let out = pushwire(&[&["publish", "--url", url.as_str()][..], args].concat());
    match out.status.success() {
        true => Ok(serde_json::from_slice(&out.stdout).unwrap()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

fn hub_with_token_keys() -> HubProcess {
    spawn_hub(&[
        "--publisher-jwt-key",
        PUBLISHER_SECRET,
        "--subscriber-jwt-key",
        SUBSCRIBER_SECRET,
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn minted_tokens_publish_and_open_private_streams() {
    let hub = hub_with_token_keys();
    let url = format!("http://{}", hub.addr);
    // The keys come from where the hub reads them, or a named variable.
    let publisher = mint(
        &["publisher", "--topic", "*"],
        &[("PUSHWIRE_PUBLISHER_JWT_KEY", PUBLISHER_SECRET)],
    )
    .unwrap();
    let subscriber = mint(
        &[
            "subscriber",
            "--user",
            "alice",
            "--topic",
            "news",
            "--topic",
            "orders/{id}",
            "--secret-env",
            "APP_SUBSCRIBER_KEY",
        ],
        &[("APP_SUBSCRIBER_KEY", SUBSCRIBER_SECRET)],
    )
    .unwrap();
    let alice = CliSubscriber::spawn(
        &url,
        &["--user", "alice", "--topic", "orders/7"],
        &[("PUSHWIRE_TOKEN", &subscriber)],
    );
    let bearer = format!("Bearer {publisher}");
    eventually("alice's stream is open", || async {
        let count = get_with(hub.addr, "/sse/getUserCount", &[("authorization", &bearer)]).await;
        count.body.trim() == "1"
    })
    .await;
    for args in [
        [
            "--topic",
            "orders/7",
            "--private",
            "--data",
            "order 7 shipped",
        ]
        .as_slice(),
        ["--user", "alice", "--data", "hello alice"].as_slice(),
    ] {
        cli_publish(&hub, &[&["--token", publisher.as_str()][..], args].concat()).unwrap();
    }
    assert_eq!(alice.datas(2), ["order 7 shipped", "hello alice"]);

    // The same token opens no one else's stream: refused, not retried.
    let mut bob = CliSubscriber::spawn(&url, &["--user", "bob", "--token", &subscriber], &[]);
    assert_eq!(bob.wait_exit().code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_minted_with_another_secret_are_refused() {
    let hub = hub_with_token_keys();
    let url = format!("http://{}", hub.addr);
    let forged = mint(
        &[
            "publisher",
            "--topic",
            "*",
            "--secret",
            "not the hub's secret",
        ],
        &[],
    )
    .unwrap();
    let error = cli_publish(&hub, &["--token", &forged, "--all", "--data", "x"]).unwrap_err();
    assert!(error.contains("401"), "{error}");
    // Subscribing with one fails at once with the hub's answer.
    let forged = mint(
        &[
            "subscriber",
            "--user",
            "alice",
            "--secret",
            "not the hub's secret",
        ],
        &[],
    )
    .unwrap();
    let out = pushwire(&[
        "subscribe",
        "--url",
        &url,
        "--user",
        "alice",
        "--token",
        &forged,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
    // And the publisher's key does not sign subscriber tokens.
    let crossed = mint(
        &["subscriber", "--user", "alice"],
        &[("PUSHWIRE_SUBSCRIBER_JWT_KEY", PUBLISHER_SECRET)],
    )
    .unwrap();
    let out = pushwire(&[
        "subscribe",
        "--url",
        &url,
        "--user",
        "alice",
        "--token",
        &crossed,
    ]);
    assert_eq!(out.status.code(), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_minted_token_is_refused() {
    let hub = hub_with_token_keys();
    let env = [("PUSHWIRE_PUBLISHER_JWT_KEY", PUBLISHER_SECRET)];
    let token = mint(&["publisher", "--topic", "*", "--ttl", "1s"], &env).unwrap();
    cli_publish(&hub, &["--token", &token, "--all", "--data", "in time"]).unwrap();
    // Past `exp` and the hub's clock leeway.
    let leeway = pushwire::auth::jwt::CLOCK_LEEWAY_SECS;
    tokio::time::sleep(std::time::Duration::from_secs(leeway + 2)).await;
    let error = cli_publish(&hub, &["--token", &token, "--all", "--data", "late"]).unwrap_err();
    assert!(error.contains("401"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_signed_with_a_private_key_and_access_tokens_are_accepted() {
    let fixture = |name: &str| format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    let audience = "https://hub.example.com/.well-known/mercure";
    let hub = spawn_hub(&[
        "--jwt-alg",
        "ES256",
        "--publisher-jwt-key",
        &fixture("ec.pub.pem"),
        "--jwt-audience",
        audience,
    ]);
    let key = fixture("ec.pem");
    let classic = mint(
        &[
            "publisher",
            "--alg",
            "ES256",
            "--key-file",
            &key,
            "--topic",
            "books/{id}",
        ],
        &[],
    )
    .unwrap();
    let access = mint(
        &[
            "publisher",
            "--alg",
            "ES256",
            "--key-file",
            &key,
            "--topic",
            "books/{id}",
            "--claims",
            "authorization-details",
            "--audience",
            audience,
        ],
        &[],
    )
    .unwrap();
    for token in [&classic, &access] {
        cli_publish(
            &hub,
            &["--token", token, "--topic", "books/1", "--data", "x"],
        )
        .unwrap();
        // Only the topics granted.
        let error = cli_publish(
            &hub,
            &["--token", token, "--topic", "films/1", "--data", "x"],
        )
        .unwrap_err();
        assert!(error.contains("403"), "{error}");
    }
    // A public key cannot sign, and says so.
    let error = mint(
        &[
            "publisher",
            "--alg",
            "ES256",
            "--key-file",
            &fixture("ec.pub.pem"),
        ],
        &[],
    )
    .unwrap_err();
    assert!(error.contains("public half"), "{error}");
}

/// The niceness in a `/proc/.../stat` line: field 19, counting the name
/// (in parentheses, which may hold spaces) as field 2.
fn nice_in(stat: &str) -> i64 {
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(16).unwrap().parse().unwrap()
}

/// The niceness of each of the process's threads named `name` (the kernel
/// keeps the first 15 bytes of a thread's name; tokio names its workers
/// `tokio-rt-worker`).
fn nice_of_threads(pid: u32, name: &str) -> Vec<i64> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() == &name[..name.len().min(15)] {
            nice.push(nice_in(&std::fs::read_to_string(dir.join("stat")).unwrap()));
        }
    }
    nice
}

#[test]
fn the_streams_threads_run_nicer_than_the_rest() {
    for (flag, by) in [("7", 7), ("0", 0)] {
        let hub = spawn_hub(&["--streams-nice", flag]);
        let pid = hub.child.id();
        let main = nice_in(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
        let streams = nice_of_threads(pid, "pushwire-streams");
        assert!(!streams.is_empty(), "no stream threads");
        let want = (main + by).min(19);
        assert!(
            streams.iter().all(|&n| n == want),
            "{streams:?}, want {want}"
        );
        // The rest of the hub keeps the priority it was started with.
        let others = nice_of_threads(pid, "tokio-rt-worker");
        assert!(!others.is_empty() && others.iter().all(|&n| n == main));
    }
}
