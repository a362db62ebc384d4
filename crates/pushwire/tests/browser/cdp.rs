//! A small Chrome DevTools Protocol client: starts headless Chromium, talks
//! to it over its websocket, evaluates JavaScript in a page and takes
//! screenshots. Just enough for end-to-end tests of pages.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the browser is expected.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long any one wait (start-up, a call, a condition) may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Flags without which Chromium stalls on a machine with no outside network.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
];

/// Lines of browser output kept for error messages.
const TAIL: usize = 40;

/// A running headless Chromium; killed on drop.
pub struct Browser {
    child: Child,
    ws_url: String,
    stderr: Arc<Mutex<VecDeque<String>>>,
    // Dropped after the browser is killed (fields drop after `drop` runs).
    _profile: TempDir,
}

impl Browser {
    /// Starts Chromium with a fresh profile and waits for its DevTools URL.
    pub async fn launch() -> Result<Browser> {
        Browser::launch_with(&[]).await
    }

    /// Like [`Browser::launch`], with these flags added to the standard ones
    /// (e.g. `--ignore-certificate-errors` for a self-signed test certificate).
    pub async fn launch_with(extra_flags: &[&str]) -> Result<Browser> {
        if !Path::new(CHROMIUM).exists() {
            return Err(format!(
                "{CHROMIUM} not found: the browser tests need Chromium; \
                 install chromium, e.g. by running scripts/test"
            )
            .into());
        }
        let profile = tempfile::tempdir()?;
        let mut child = Command::new(CHROMIUM)
            .args(FLAGS)
            .args(extra_flags)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {CHROMIUM}: {e}"))?;
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        let (found, url) = oneshot::channel::<String>();
        if let Some(pipe) = child.stderr.take() {
            let tail = stderr.clone();
            // The pipe is read to its end so that Chromium never blocks on it.
            std::thread::spawn(move || {
                let mut found = Some(found);
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("DevTools listening on ") {
                        if let Some(tx) = found.take() {
                            let _ = tx.send(url.trim().to_owned());
                        }
                    }
                    if let Ok(mut tail) = tail.lock() {
                        if tail.len() == TAIL {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                }
            });
        }
        let mut browser = Browser {
            child,
            ws_url: String::new(),
            stderr,
            _profile: profile,
        };
        match timeout(DEADLINE, url).await {
            Ok(Ok(url)) => browser.ws_url = url,
            Ok(Err(_)) => {
                return Err(format!(
                    "Chromium exited before announcing its DevTools URL; its output:\n{}",
                    browser.output()
                )
                .into())
            }
            Err(_) => {
                return Err(format!(
                "Chromium did not announce its DevTools URL within {DEADLINE:?}; its output:\n{}",
                browser.output()
            )
                .into())
            }
        }
        Ok(browser)
    }

    /// The last lines Chromium wrote to stderr.
    pub fn output(&self) -> String {
        self.stderr
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Opens the DevTools connection to the browser.
    pub async fn connect(&self) -> Result<Cdp> {
        Cdp::connect(&self.ws_url).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;
type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One DevTools connection: commands go out with an id, replies are matched
/// back by that id; console output and page errors are kept for diagnostics.
pub struct Cdp {
    sink: tokio::sync::Mutex<Sink>,
    pending: Pending,
    next_id: AtomicU64,
    log: Arc<Mutex<Vec<String>>>,
    reader: JoinHandle<()>,
}

impl Cdp {
    async fn connect(url: &str) -> Result<Cdp> {
        let (socket, _) = timeout(DEADLINE, tokio_tungstenite::connect_async(url))
            .await
            .map_err(|_| "timed out connecting to the DevTools websocket")??;
        let (sink, mut stream) = socket.split();
        let pending: Pending = Arc::default();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let reader = {
            let pending = pending.clone();
            let log = log.clone();
            tokio::spawn(async move {
                while let Some(Ok(message)) = stream.next().await {
                    let Message::Text(text) = message else {
                        continue;
                    };
                    let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    if let Some(id) = value.get("id").and_then(Value::as_u64) {
                        let waiter = pending.lock().ok().and_then(|mut p| p.remove(&id));
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(value);
                        }
                    } else if let Some(line) = describe_event(&value) {
                        if let Ok(mut log) = log.lock() {
                            log.push(line);
                        }
                    }
                }
                // The connection is gone: fail every call still waiting.
                if let Ok(mut p) = pending.lock() {
                    p.clear();
                }
            })
        };
        Ok(Cdp {
            sink: tokio::sync::Mutex::new(sink),
            pending,
            next_id: AtomicU64::new(1),
            log,
            reader,
        })
    }

    /// Sends one command and waits for its result.
    pub async fn call(&self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| "poisoned lock")?
            .insert(id, tx);
        self.sink
            .lock()
            .await
            .send(Message::text(command.to_string()))
            .await?;
        let reply = match timeout(DEADLINE, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(format!("{method}: the DevTools connection closed").into()),
            Err(_) => {
                if let Ok(mut p) = self.pending.lock() {
                    p.remove(&id);
                }
                return Err(format!("{method}: no reply within {DEADLINE:?}").into());
            }
        };
        if let Some(error) = reply.get("error") {
            return Err(format!("{method} failed: {error}").into());
        }
        Ok(reply.get("result").cloned().unwrap_or(Value::Null))
    }

    /// Opens a new tab and attaches to it.
    pub async fn new_page(&self) -> Result<Page<'_>> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await?;
        let target_id = target["targetId"]
            .as_str()
            .ok_or("Target.createTarget returned no targetId")?;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or("Target.attachToTarget returned no sessionId")?
            .to_owned();
        let page = Page { cdp: self, session };
        page.call("Runtime.enable", json!({})).await?;
        page.call("Log.enable", json!({})).await?;
        page.call("Page.enable", json!({})).await?;
        Ok(page)
    }

    /// Console messages, page errors and browser log entries seen so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Cdp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

fn describe_event(event: &Value) -> Option<String> {
    let params = &event["params"];
    match event["method"].as_str()? {
        "Runtime.consoleAPICalled" => {
            let args: Vec<String> = params["args"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|v| match &v["value"] {
                            Value::String(s) => s.clone(),
                            Value::Null => v["description"].as_str().unwrap_or("").to_owned(),
                            other => other.to_string(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(format!("console.{}: {}", params["type"], args.join(" ")))
        }
        "Runtime.exceptionThrown" => Some(format!(
            "exception: {}",
            params["exceptionDetails"]["exception"]["description"]
                .as_str()
                .unwrap_or_else(|| params["exceptionDetails"]["text"].as_str().unwrap_or("?"))
        )),
        "Log.entryAdded" => Some(format!(
            "log.{}: {} {}",
            params["entry"]["level"].as_str().unwrap_or("?"),
            params["entry"]["text"].as_str().unwrap_or(""),
            params["entry"]["url"].as_str().unwrap_or("")
        )),
        _ => None,
    }
}

/// One tab, driven through a flattened session.
pub struct Page<'a> {
    cdp: &'a Cdp,
    session: String,
}

impl Page<'_> {
    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        self.cdp.call(Some(&self.session), method, params).await
    }

    /// Sets the viewport, so that screenshots have a known size.
    pub async fn set_viewport(&self, width: u32, height: u32) -> Result<()> {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await?;
        Ok(())
    }

    /// Navigates and waits until the new document has loaded.
    pub async fn navigate(&self, url: &str) -> Result<()> {
        let result = self.call("Page.navigate", json!({ "url": url })).await?;
        if let Some(error) = result.get("errorText").and_then(Value::as_str) {
            return Err(format!("navigating to {url} failed: {error}").into());
        }
        self.wait_for(
            &format!("{url} has loaded"),
            "document.readyState === 'complete' && location.href !== 'about:blank'",
        )
        .await?;
        Ok(())
    }

    /// Evaluates an expression (awaiting a promise) and returns its value.
    pub async fn eval(&self, expression: &str) -> Result<Value> {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(details) = result.get("exceptionDetails") {
            let text = details["exception"]["description"]
                .as_str()
                .or_else(|| details["text"].as_str())
                .unwrap_or("?");
            return Err(format!("`{expression}` threw: {text}").into());
        }
        Ok(result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Polls an expression until its value is truthy; returns that value.
    pub async fn wait_for(&self, what: &str, expression: &str) -> Result<Value> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let last = match self.eval(expression).await {
                Ok(value) if truthy(&value) => return Ok(value),
                Ok(value) => format!("last value: {value}"),
                // A navigation can destroy the context between polls.
                Err(e) => format!("last error: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {DEADLINE:?} waiting until {what} ({last});\n\
                     page log:\n{}",
                    self.cdp.log()
                )
                .into());
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets a form field's value the way typing would, firing input and change.
    pub async fn fill(&self, selector: &str, value: &str) -> Result<()> {
        self.eval(&format!(
            "(() => {{ const el = document.querySelector({}); el.value = {};
               el.dispatchEvent(new Event('input', {{ bubbles: true }}));
               el.dispatchEvent(new Event('change', {{ bubbles: true }})); }})()",
            js(selector),
            js(value)
        ))
        .await?;
        Ok(())
    }

    pub async fn click(&self, selector: &str) -> Result<()> {
        self.eval(&format!("document.querySelector({}).click()", js(selector)))
            .await?;
        Ok(())
    }

    /// The text of the first element matching `selector` ("" if none).
    pub async fn text_of(&self, selector: &str) -> Result<String> {
        let value = self
            .eval(&format!(
                "document.querySelector({})?.textContent ?? null",
                js(selector)
            ))
            .await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// Saves a PNG of the viewport.
    pub async fn screenshot(&self, path: &Path) -> Result<()> {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = shot["data"]
            .as_str()
            .ok_or("Page.captureScreenshot returned no data")?;
        let png = base64_decode(data)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

/// A JavaScript string literal for `text`.
pub fn js(text: &str) -> String {
    Value::String(text.to_owned()).to_string()
}

/// Where a test's screenshot goes: `target/screenshots/<name>`.
pub fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join("screenshots")
        .join(name)
}

fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Standard base64 (with padding), as DevTools sends binary data.
pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let data: Vec<u8> = chunk.iter().copied().take_while(|&b| b != b'=').collect();
        if data.len() < 2 {
            return Err("invalid base64".into());
        }
        let mut n = 0u32;
        for (i, &c) in data.iter().enumerate() {
            n |= sextet(c).ok_or("invalid base64")? << (18 - 6 * i);
        }
        let all = n.to_be_bytes();
        out.extend_from_slice(&all[1..data.len()]);
    }
    Ok(out)
}
