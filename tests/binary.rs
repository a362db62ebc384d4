//! The real `pushwire` binary: startup, configuration errors, the CLI's
//! publish and subscribe commands, graceful shutdown on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_pushwire");

/// A hub process, killed when dropped.
struct Hub {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_hub(extra: &[&str]) -> Hub {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--storage",
            "memory",
            "--log-format",
            "json",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pushwire");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + WAIT;
    let addr = loop {
        assert!(Instant::now() < deadline, "hub did not report its address");
        let line = lines.next().expect("hub exited early").unwrap();
        let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if let Some(addr) = log["fields"]["addr"].as_str() {
            break addr.parse().unwrap();
        }
    };
    // Keep draining the log so the hub never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Hub { child, addr }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "hub did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_streams_and_exits_zero() {
    let mut hub = spawn_hub(&[]);
    let mut tab = SseClient::connect(hub.addr, "/sse/subscribe/u1").await;
    let status = tokio::task::block_in_place(|| terminate(&mut hub.child));
    assert!(status.success(), "exit status {status:?}");
    assert!(tab.wait_end(WAIT).await, "stream not ended cleanly");
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
    let out = Command::new(BIN)
        .args(["publish", "--url", &url, "--all", "--data", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = Command::new(BIN)
        .args([
            "publish", "--url", &url, "--all", "--data", "x", "--key", "k",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_configuration_exits_with_code_2_and_says_why() {
    let out = Command::new(BIN)
        .args(["serve", "--heartbeat", "0s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat"));

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
fn bench_idle_opens_every_stream_and_reports_memory() {
    let hub = spawn_hub(&[]);
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire-bench"))
        .args([
            "idle",
            "--streams",
            "200",
            "--sources",
            "4",
            "--settle",
            "100ms",
        ])
        .args(["--hub", &hub.addr.to_string()])
        .args(["--hub-pid", &hub.child.id().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["streams"], 200);
    assert!(report["hub_rss_after_kib"].as_u64().unwrap() > 0);
    assert!(report["hub_bytes_per_stream"].is_number());
}
