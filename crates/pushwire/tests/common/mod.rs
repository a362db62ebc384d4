//! Test support: the hub on an ephemeral port, a raw HTTP/1.1 client and a
//! raw SSE client over TCP that decodes chunked bodies and parses events the
//! way a browser does (with the crate's spec-following parser).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod redis;
pub mod reliability;

use std::net::SocketAddr;
use std::time::Duration;

use pushwire::config::{ServeConfig, Storage};
use pushwire::server::Server;
use pushwire_client::sse::{ParsedEvent, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

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

/// A complete HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request on a fresh connection (`Connection: close`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(body).await.expect("write body");
    let mut raw = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    parse_reply(&raw)
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"").await
}

pub async fn post_json(addr: SocketAddr, path: &str, json: &serde_json::Value) -> Reply {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        json.to_string().as_bytes(),
    )
    .await
}

/// Publishes one event through the JSON API and returns its id.
pub async fn publish(addr: SocketAddr, json: serde_json::Value) -> String {
    let reply = post_json(addr, "/api/v1/publish", &json).await;
    assert_eq!(reply.status, 200, "publish failed: {}", reply.body);
    reply.json()["id"].as_str().expect("id").to_owned()
}

fn parse_reply(raw: &[u8]) -> Reply {
    let split = find(raw, b"\r\n\r\n").expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut decoder = Dechunker::default();
        body = decoder.feed(&body);
    }
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes HTTP/1.1 chunked transfer encoding incrementally.
#[derive(Default)]
pub struct Dechunker {
    buf: Vec<u8>,
    pub finished: bool,
}

impl Dechunker {
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(line_end) = find(&self.buf, b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .expect("chunk size");
            if size == 0 {
                self.finished = true;
                self.buf.clear();
                break;
            }
            if self.buf.len() < line_end + 2 + size + 2 {
                break;
            }
            out.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
        }
        out
    }
}

/// A subscriber on a raw TCP connection.
pub struct SseClient {
    stream: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    dechunker: Dechunker,
    parser: Parser,
    pending: std::collections::VecDeque<ParsedEvent>,
    /// Every body byte received so far, as sent on the wire.
    pub raw: Vec<u8>,
    pub ended: bool,
}

impl SseClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> SseClient {
        SseClient::connect_with(addr, path, &[]).await
    }

    pub async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let split = loop {
            if let Some(at) = find(&raw, b"\r\n\r\n") {
                break at;
            }
            let n = timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("headers in time")
                .expect("read");
            assert!(n > 0, "connection closed before headers");
            raw.extend_from_slice(&buf[..n]);
        };
        let reply = parse_reply(&raw[..split + 4]);
        let mut client = SseClient {
            stream,
            status: reply.status,
            headers: reply.headers,
            dechunker: Dechunker::default(),
            parser: Parser::default(),
            pending: Default::default(),
            raw: Vec::new(),
            ended: false,
        };
        let rest = raw[split + 4..].to_vec();
        client.absorb(&rest);
        client
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn absorb(&mut self, bytes: &[u8]) {
        let body = self.dechunker.feed(bytes);
        self.raw.extend_from_slice(&body);
        self.pending.extend(self.parser.feed(&body));
        if self.dechunker.finished {
            self.ended = true;
        }
    }

    /// Reads until `until` says stop, the stream ends, or the deadline passes.
    async fn pump(&mut self, deadline: Instant, mut until: impl FnMut(&Self) -> bool) {
        let mut buf = vec![0u8; 64 * 1024];
        while !until(self) && !self.ended {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match timeout(deadline - now, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.ended = true;
                }
                Ok(Ok(n)) => {
                    let chunk = buf[..n].to_vec();
                    self.absorb(&chunk);
                }
                Err(_) => return,
            }
        }
    }

    /// The next event, or `None` if the stream ended or none came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<ParsedEvent> {
        let deadline = Instant::now() + wait;
        self.pump(deadline, |c| !c.pending.is_empty()).await;
        self.pending.pop_front()
    }

    /// The next event; fails the test if none comes in time.
    pub async fn next(&mut self) -> ParsedEvent {
        match self.next_within(WAIT).await {
            Some(e) => e,
            None => panic!(
                "no event within {WAIT:?} (ended: {}); wire so far: {:?}",
                self.ended,
                String::from_utf8_lossy(&self.raw)
            ),
        }
    }

    /// `n` events, failing the test if they do not all come.
    pub async fn take(&mut self, n: usize) -> Vec<ParsedEvent> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    /// Asserts that no event arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(e) = self.next_within(wait).await {
            panic!("unexpected event: {e:?}");
        }
    }

    /// Waits until the hub ends the stream; true if it did in time.
    pub async fn wait_end(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        self.pump(deadline, |_| false).await;
        self.ended
    }

    /// Comment lines seen so far (heartbeats).
    pub fn comments(&self) -> usize {
        self.parser.comments()
    }

    /// The last event id the stream set (what a browser would send back).
    pub fn last_event_id(&self) -> String {
        self.parser.last_event_id().to_owned()
    }

    /// Reads whatever arrives within `wait`, to see heartbeats and the like.
    pub async fn drain_for(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        self.pump(deadline, |_| false).await;
    }
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

/// The hub binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_pushwire");

/// A hub process started from the real binary; killed (SIGKILL) when dropped.
pub struct HubProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HubProcess {
    /// Runs `pushwire serve --listen 127.0.0.1:0 --log-format json <args>`
    /// and waits until it logs the address it listens on.
    pub fn spawn<I, S>(args: I) -> HubProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::{BufRead, BufReader};
        let mut child = std::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn pushwire");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = std::time::Instant::now() + WAIT;
        let addr = loop {
            assert!(
                std::time::Instant::now() < deadline,
                "hub did not report its address"
            );
            let line = lines.next().expect("hub exited early").unwrap();
            let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(addr) = log["fields"]["addr"].as_str() {
                break addr.parse().unwrap();
            }
        };
        // Keep draining the log so the hub never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        HubProcess { child, addr }
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
