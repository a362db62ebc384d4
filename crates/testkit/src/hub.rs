//! The hub under test, two ways: in process on an ephemeral loopback port
//! with in-memory storage ([`start`], [`config`]), or as the real binary
//! in a child process ([`HubProcess`]), killed when dropped so that a
//! failing test never leaves a hub behind. Also the few calls of the hub's
//! API that most tests make ([`publish`], [`history`], [`user_count`]) and
//! the one wait every test is bounded by ([`WAIT`]).
//!
//! Everything here fails the test (panics) when the hub does not do what
//! a test can take for granted, such as starting.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use pushwire::config::{ServeConfig, Storage};
use pushwire::server::Server;
use tokio::time::Instant;

use crate::http::{get, post_json};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// The defaults, on `127.0.0.1:0` with in-memory storage.
pub fn config() -> ServeConfig {
    let mut c = ServeConfig::defaults();
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.storage = Storage::Memory;
    c
}

pub async fn start(config: ServeConfig) -> Server {
    pushwire::server::start(config)
        .await
        .expect("server starts")
}

pub async fn start_default() -> Server {
    start(config()).await
}

/// Publishes one event through the JSON API and returns its id.
pub async fn publish(addr: SocketAddr, json: serde_json::Value) -> String {
    let reply = post_json(addr, "/api/v1/publish", &json).await;
    assert_eq!(reply.status, 200, "publish failed: {}", reply.body);
    reply.json()["id"].as_str().expect("id").to_owned()
}

/// Polls `check` until it returns true or the wait runs out.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// The whole retained history, oldest first, as (id, data).
pub async fn history(addr: SocketAddr) -> Vec<(String, String)> {
    let reply = get(addr, "/api/v1/events?limit=10000").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_owned(),
                e["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

pub async fn user_count(addr: SocketAddr) -> usize {
    get(addr, "/sse/getUserCount")
        .await
        .body
        .trim()
        .parse()
        .expect("integer")
}

/// The path of the hub binary, for `HubProcess::spawn` and `Command::new`.
/// A macro because cargo tells only the integration tests of the
/// `pushwire` package where it built the binary, at their compile time.
#[macro_export]
macro_rules! hub_binary {
    () => {
        env!("CARGO_BIN_EXE_pushwire")
    };
}

/// A hub process started from the real binary; killed (SIGKILL) when dropped.
/// Every line it logs (JSON, on stdout) is kept in `log`.
pub struct HubProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HubProcess {
    /// Runs `<bin> serve --listen 127.0.0.1:0 --log-format json <args>`
    /// (`bin` from [`hub_binary!`]) and waits until it logs the address it
    /// listens on.
    pub fn spawn<I, S>(bin: &str, args: I) -> HubProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        HubProcess::spawn_on(bin, "127.0.0.1:0", args)
    }

    /// [`HubProcess::spawn`] listening on `listen`.
    pub fn spawn_on<I, S>(bin: &str, listen: &str, args: I) -> HubProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--listen", listen, "--log-format", "json"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn pushwire");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let deadline = std::time::Instant::now() + WAIT;
        let addr = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "hub did not report its address"
            );
            let line = lines.next().expect("hub exited early").unwrap();
            let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            log.lock().unwrap().push(line);
            if let Some(addr) = parsed["fields"]["addr"].as_str() {
                break addr.parse().unwrap();
            }
        };
        // Keep draining the log so the hub never blocks on a full pipe.
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in lines {
                match line {
                    Ok(line) => kept.lock().unwrap().push(line),
                    // A line that is not UTF-8 is skipped, not the rest.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
                    Err(_) => break,
                }
            }
        });
        HubProcess { child, addr, log }
    }

    /// The log lines so far, parsed (lines that are not JSON are left out).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits until a log line satisfies `want` and returns it.
    pub fn wait_for_log(&self, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| want(l)) {
                return line;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no such log line in {:#?}",
                self.log_lines()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal by name (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL, and wait until the process is gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM (a clean stop); the hub must exit 0 within `WAIT`.
    pub fn terminate(mut self) {
        self.signal("TERM");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "hub exited with {status:?} after SIGTERM");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "hub did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
