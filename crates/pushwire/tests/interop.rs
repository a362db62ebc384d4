//! Interoperability with a client we did not write: the npm package
//! `eventsource` (a WHATWG EventSource for Node), driven by
//! tests/interop/subscribe.mjs, against the hub's Mercure endpoint in both
//! generations of the protocol (classic `topic=` with `mercure`-claim
//! tokens; the current draft's `match=`/`match_urlpattern=` with access
//! tokens). The
//! script prints each event it dispatches as a JSON line; these tests
//! publish from Rust and compare ids, types and data byte for byte.
//!
//! They need Node.js and the package installed by
//! `npm ci --prefix tests/interop` (scripts/test does both), and fail, not
//! skip, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header};
use pushwire::config::{ServeConfig, Storage};
use pushwire::server::Server;
use pushwire_testkit::prelude::{Reply, WAIT};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::timeout;

const PUBLISHER_KEY: &str = "interop-publisher-secret";
const SUBSCRIBER_KEY: &str = "interop-subscriber-secret";
const BOOKS: &str = "https://example.com/books/{id}";

/// The hub's resource identifier, which current-draft tokens name in `aud`.
const RESOURCE: &str = "https://hub.example.com/.well-known/mercure";

fn hub_config() -> ServeConfig {
    let mut c = pushwire_testkit::config();
    c.publisher_jwt_key = vec![PUBLISHER_KEY.into()];
    c.subscriber_jwt_key = vec![SUBSCRIBER_KEY.into()];
    c.jwt_audience = Some(RESOURCE.into());
    c
}

/// A current-draft access token: `typ: at+jwt`, `aud`, `exp` and one
/// authorization detail of the draft's type.
fn access_token(key: &str, action: &str, topics: Value) -> String {
    let header = Header {
        typ: Some("at+jwt".into()),
        ..Header::default()
    };
    let exp = pushwire_core::log::now_ms() / 1000 + 3600;
    jsonwebtoken::encode(
        &header,
        &json!({
            "aud": RESOURCE,
            "exp": exp,
            "authorization_details": [{
                "type": "https://mercure.rocks/authorization-detail",
                "actions": [action],
                "topics": topics,
            }],
        }),
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("sign a token")
}

fn sign(key: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("sign a token")
}

fn publisher_token() -> String {
    sign(PUBLISHER_KEY, json!({ "mercure": { "publish": ["*"] } }))
}

fn subscriber_token(selectors: &[&str]) -> String {
    sign(
        SUBSCRIBER_KEY,
        json!({ "mercure": { "subscribe": selectors } }),
    )
}

/// `POST /.well-known/mercure` with a wildcard publisher token; returns the
/// reply, which must be a 200 with the event id as plain text.
async fn publish(addr: SocketAddr, fields: &[(&str, &str)]) -> String {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish();
    let auth = format!("Bearer {}", publisher_token());
    let reply: Reply = pushwire_testkit::request(
        addr,
        "POST",
        "/.well-known/mercure",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &auth),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "publishing {fields:?} was refused: {reply:?}"
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "the publish reply is not text/plain: {reply:?}"
    );
    let id = reply.body.trim().to_owned();
    if let Some((_, given)) = fields.iter().find(|(k, _)| *k == "id") {
        assert_eq!(id, *given, "the hub did not keep the publisher's id");
    }
    id
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Fails the test, with what to do, unless `eventsource` is installed at
/// the version the lockfile pins.
fn require_installed_client() {
    let dir = interop_dir();
    let installed = dir.join("node_modules/eventsource/package.json");
    let read_json = |path: &Path| -> Value {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "cannot read {} ({e}): the interop tests need the npm package `eventsource`; \
                 install it with `npm ci --prefix tests/interop` (scripts/test does)",
                path.display()
            )
        });
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let locked = read_json(&dir.join("package-lock.json"))["packages"]["node_modules/eventsource"]
        ["version"]
        .clone();
    let found = read_json(&installed)["version"].clone();
    assert_eq!(
        found, locked,
        "tests/interop/node_modules holds eventsource {found}, the lockfile pins {locked}: \
         run `npm ci --prefix tests/interop`"
    );
}

/// One event as the Node client dispatched it.
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
struct Received {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: String,
}

impl Received {
    fn new(id: &str, kind: &str, data: &str) -> Received {
        Received {
            id: id.to_owned(),
            kind: kind.to_owned(),
            data: data.to_owned(),
        }
    }
}

enum Line {
    Out(String),
    Err(String),
}

/// `node tests/interop/subscribe.mjs` as a child process, killed on drop.
/// Its stdout (events) and stderr (`open`, errors) arrive on one channel,
/// read by two threads.
struct NodeSubscriber {
    child: Child,
    lines: mpsc::UnboundedReceiver<Line>,
    /// Events read while waiting for something else.
    events: std::collections::VecDeque<String>,
    /// Everything the script wrote to stderr, for failure messages.
    stderr: Vec<String>,
    opens: usize,
}

/// What a subscription asks for.
#[derive(Default)]
struct Subscription<'a> {
    /// Classic selectors (`topic=`).
    topics: &'a [&'a str],
    /// Current-draft selectors (`match=`, `match_urlpattern=`).
    matches: &'a [&'a str],
    url_patterns: &'a [&'a str],
    count: usize,
    token: Option<&'a str>,
    last_event_id: Option<&'a str>,
    types: &'a [&'a str],
}

impl NodeSubscriber {
    fn spawn(addr: SocketAddr, s: Subscription<'_>) -> NodeSubscriber {
        require_installed_client();
        let script = interop_dir().join("subscribe.mjs");
        let mut command = Command::new("node");
        command
            .arg(&script)
            .arg("--hub")
            .arg(format!("http://{addr}/.well-known/mercure"))
            .arg("--count")
            .arg(s.count.to_string())
            // Longer than any wait here, so that the test reports first.
            .arg("--timeout-ms")
            .arg((WAIT * 3).as_millis().to_string());
        for topic in s.topics {
            command.args(["--topic", topic]);
        }
        for exact in s.matches {
            command.args(["--match", exact]);
        }
        for pattern in s.url_patterns {
            command.args(["--match-urlpattern", pattern]);
        }
        for kind in s.types {
            command.args(["--type", kind]);
        }
        if let Some(token) = s.token {
            command.args(["--token", token]);
        }
        if let Some(id) = s.last_event_id {
            command.args(["--last-event-id", id]);
        }
        let mut child = match command
            .current_dir(interop_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "`node` not found on PATH: the interop tests need Node.js; install nodejs \
                 and npm (scripts/test does) and run `npm ci --prefix tests/interop`"
            ),
            Err(e) => panic!("cannot start node: {e}"),
        };
        let (tx, lines) = mpsc::unbounded_channel();
        fn forward(
            pipe: impl Read + Send + 'static,
            tx: mpsc::UnboundedSender<Line>,
            wrap: fn(String) -> Line,
        ) {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(wrap(line)).is_err() {
                        break;
                    }
                }
            });
        }
        forward(child.stdout.take().expect("piped"), tx.clone(), Line::Out);
        forward(child.stderr.take().expect("piped"), tx, Line::Err);
        NodeSubscriber {
            child,
            lines,
            events: Default::default(),
            stderr: Vec::new(),
            opens: 0,
        }
    }

    fn note(&mut self, stderr_line: &str) {
        if stderr_line == "open" {
            self.opens += 1;
        }
        self.stderr.push(stderr_line.to_owned());
    }

    /// Reads one line from the script, failing the test with its stderr if
    /// none comes in time or the script has ended.
    async fn read_line(&mut self, what: &str) -> Line {
        match timeout(WAIT, self.lines.recv()).await {
            Ok(Some(line)) => {
                if let Line::Err(text) = &line {
                    self.note(text);
                }
                line
            }
            Ok(None) => {
                let status = self.child.wait().ok();
                panic!(
                    "the Node client ended ({status:?}) while the test waited for {what}; \
                     its stderr:\n{}",
                    self.stderr.join("\n")
                )
            }
            Err(_) => panic!(
                "timed out after {WAIT:?} waiting for {what} from the Node client; its stderr:\n{}",
                self.stderr.join("\n")
            ),
        }
    }

    /// Waits until the client has opened its stream `n` times in all.
    async fn wait_open(&mut self, n: usize) {
        while self.opens < n {
            if let Line::Out(event) = self.read_line("an open stream").await {
                self.events.push_back(event);
            }
        }
    }

    async fn next_event(&mut self) -> Received {
        let line = loop {
            if let Some(line) = self.events.pop_front() {
                break line;
            }
            if let Line::Out(line) = self.read_line("an event").await {
                break line;
            }
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not an event line ({e}): {line}"))
    }

    async fn take(&mut self, n: usize) -> Vec<Received> {
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            got.push(self.next_event().await);
        }
        got
    }

    /// After its last event the script closes the source and exits 0;
    /// returns how many times the client opened its stream in all.
    async fn finished(mut self) -> usize {
        loop {
            match timeout(WAIT, self.lines.recv()).await {
                Ok(Some(Line::Err(text))) => self.note(&text),
                Ok(Some(Line::Out(extra))) => {
                    panic!("an event beyond the expected count: {extra}")
                }
                Ok(None) => break,
                Err(_) => panic!(
                    "the Node client did not exit after its last event; its stderr:\n{}",
                    self.stderr.join("\n")
                ),
            }
        }
        let status = self.child.wait().expect("wait for node");
        assert!(
            status.success(),
            "the Node client exited with {status}; its stderr:\n{}",
            self.stderr.join("\n")
        );
        self.opens
    }
}

impl Drop for NodeSubscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(config: ServeConfig) -> Server {
    pushwire::server::start(config).await.expect("hub starts")
}

#[tokio::test(flavor = "multi_thread")]
async fn eventsource_client_receives_ids_types_and_multiline_data() {
    let server = start(hub_config()).await;
    let addr = server.addr();
    let mut node = NodeSubscriber::spawn(
        addr,
        Subscription {
            topics: &[BOOKS],
            types: &["book-updated"],
            count: 3,
            ..Default::default()
        },
    );
    node.wait_open(1).await;

    // A publisher id, blank lines and a trailing line break.
    publish(
        addr,
        &[
            ("topic", "https://example.com/books/1"),
            ("id", "book-1-v1"),
            ("data", "first\n\nthird\n"),
        ],
    )
    .await;
    // A hub-assigned id, a type, CRLF (one line break to the client).
    let assigned = publish(
        addr,
        &[
            ("topic", "https://example.com/books/2"),
            ("type", "book-updated"),
            ("data", "{\"title\": \"Dune\"}\r\nline two"),
        ],
    )
    .await;
    // Not selected by the template: never reaches the client.
    publish(
        addr,
        &[
            ("topic", "https://example.com/authors/1"),
            ("data", "an author"),
        ],
    )
    .await;
    // Selected through an alternate topic; non-ASCII survives.
    publish(
        addr,
        &[
            ("topic", "urn:isbn:0441013597"),
            ("topic", "https://example.com/books/3"),
            ("id", "book-3-v1"),
            ("data", "Dune — Frank Herbert"),
        ],
    )
    .await;

    assert_eq!(
        node.take(3).await,
        vec![
            Received::new("book-1-v1", "message", "first\n\nthird\n"),
            Received::new(&assigned, "book-updated", "{\"title\": \"Dune\"}\nline two"),
            Received::new("book-3-v1", "message", "Dune — Frank Herbert"),
        ]
    );
    node.finished().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eventsource_client_with_bearer_token_receives_private_updates() {
    let server = start(hub_config()).await;
    let addr = server.addr();
    let token = subscriber_token(&[BOOKS]);
    // The token goes out as `Authorization: Bearer` through the client's fetch.
    let mut authorized = NodeSubscriber::spawn(
        addr,
        Subscription {
            topics: &[BOOKS],
            token: Some(&token),
            count: 2,
            ..Default::default()
        },
    );
    let mut anonymous = NodeSubscriber::spawn(
        addr,
        Subscription {
            topics: &[BOOKS],
            count: 1,
            ..Default::default()
        },
    );
    authorized.wait_open(1).await;
    anonymous.wait_open(1).await;

    publish(
        addr,
        &[
            ("topic", "https://example.com/books/7"),
            ("id", "book-7-private"),
            ("data", "for readers\nwith a token"),
            ("private", "on"),
        ],
    )
    .await;
    publish(
        addr,
        &[
            ("topic", "https://example.com/books/7"),
            ("id", "book-7-public"),
            ("data", "for everyone"),
        ],
    )
    .await;

    assert_eq!(
        authorized.take(2).await,
        vec![
            Received::new("book-7-private", "message", "for readers\nwith a token"),
            Received::new("book-7-public", "message", "for everyone"),
        ]
    );
    // A stream receives in publish order: the anonymous client's first event
    // being the public one means the private one never reached it.
    assert_eq!(
        anonymous.next_event().await,
        Received::new("book-7-public", "message", "for everyone")
    );
    authorized.finished().await;
    anonymous.finished().await;
    server.shutdown().await;
}

/// The current draft end to end with a client nobody here wrote: `match`
/// and `match_urlpattern` selectors, an access token, a publisher that
/// presents an access token and names one topic per update, and a resume
/// from the id the client last saw.
#[tokio::test(flavor = "multi_thread")]
async fn eventsource_client_speaks_the_current_draft() {
    let server = start(hub_config()).await;
    let addr = server.addr();
    let reader = access_token(
        SUBSCRIBER_KEY,
        "subscribe",
        json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}]),
    );
    let publisher = access_token(PUBLISHER_KEY, "publish", json!([{"match": "*"}]));
    let publish_draft = |fields: Vec<(&'static str, String)>| {
        let publisher = publisher.clone();
        async move {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish();
            let reply: Reply = pushwire_testkit::request(
                addr,
                "POST",
                "/.well-known/mercure",
                &[
                    ("Content-Type", "application/x-www-form-urlencoded"),
                    ("Authorization", &format!("Bearer {publisher}")),
                ],
                body.as_bytes(),
            )
            .await;
            assert_eq!(reply.status, 200, "publish: {}", reply.body);
            reply.body
        }
    };
    let mut node = NodeSubscriber::spawn(
        addr,
        Subscription {
            matches: &["https://example.com/news"],
            url_patterns: &["https://example.com/books/:id"],
            token: Some(&reader),
            types: &["headline"],
            count: 3,
            ..Default::default()
        },
    );
    node.wait_open(1).await;
    let private = publish_draft(vec![
        ("topic", "https://example.com/books/1".into()),
        ("data", "private\nbook".into()),
        ("private", "on".into()),
    ])
    .await;
    let news = publish_draft(vec![
        ("topic", "https://example.com/news".into()),
        ("type", "headline".into()),
        ("data", "public".into()),
    ])
    .await;
    publish_draft(vec![
        ("topic", "https://example.com/elsewhere".into()),
        ("data", "no".into()),
    ])
    .await;
    let last = publish_draft(vec![
        ("topic", "https://example.com/books/2".into()),
        ("data", "public book".into()),
    ])
    .await;
    assert_eq!(
        node.take(3).await,
        vec![
            Received::new(&private, "message", "private\nbook"),
            Received::new(&news, "headline", "public"),
            Received::new(&last, "message", "public book"),
        ]
    );
    node.finished().await;

    // The same client resumes after the private update: the two after it
    // that match, the typed one included.
    let mut resumed = NodeSubscriber::spawn(
        addr,
        Subscription {
            matches: &["https://example.com/news"],
            url_patterns: &["https://example.com/books/:id"],
            token: Some(&reader),
            last_event_id: Some(&private),
            types: &["headline"],
            count: 2,
            ..Default::default()
        },
    );
    assert_eq!(
        resumed.take(2).await,
        vec![
            Received::new(&news, "headline", "public"),
            Received::new(&last, "message", "public book"),
        ]
    );
    resumed.finished().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eventsource_client_resumes_after_a_given_last_event_id() {
    let server = start(hub_config()).await;
    let addr = server.addr();
    for n in 1..=3 {
        publish(
            addr,
            &[
                ("topic", &format!("https://example.com/books/{n}")),
                ("id", &format!("resume-{n}")),
                ("data", &format!("update {n}\n\nend")),
            ],
        )
        .await;
    }
    // Sent as `Last-Event-ID` on the first request, through the client's fetch.
    let mut node = NodeSubscriber::spawn(
        addr,
        Subscription {
            topics: &[BOOKS],
            last_event_id: Some("resume-1"),
            count: 3,
            ..Default::default()
        },
    );
    node.wait_open(1).await;
    let live = publish(
        addr,
        &[("topic", "https://example.com/books/4"), ("data", "live")],
    )
    .await;
    assert_eq!(
        node.take(3).await,
        vec![
            Received::new("resume-2", "message", "update 2\n\nend"),
            Received::new("resume-3", "message", "update 3\n\nend"),
            Received::new(&live, "message", "live"),
        ]
    );
    node.finished().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eventsource_client_reconnects_after_a_hub_restart_and_misses_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = hub_config();
    config.storage = Storage::Embedded;
    config.data_dir = dir.path().to_owned();
    // Long enough for the hub to restart and take the updates below
    // before the client comes back.
    config.retry = Duration::from_secs(2);
    let server = start(config.clone()).await;
    let addr = server.addr();
    let mut node = NodeSubscriber::spawn(
        addr,
        Subscription {
            topics: &[BOOKS],
            count: 4,
            ..Default::default()
        },
    );
    node.wait_open(1).await;
    for n in 1..=2 {
        publish(
            addr,
            &[
                ("topic", "https://example.com/books/1"),
                ("id", &format!("before-{n}")),
                ("data", &format!("before\nrestart {n}")),
            ],
        )
        .await;
    }
    assert_eq!(
        node.take(2).await,
        vec![
            Received::new("before-1", "message", "before\nrestart 1"),
            Received::new("before-2", "message", "before\nrestart 2"),
        ]
    );

    // The stream ends with the hub; the client will reconnect on its own.
    server.shutdown().await;
    config.listen = addr;
    let server = start(config).await;
    for n in 1..=2 {
        publish(
            addr,
            &[
                ("topic", "https://example.com/books/1"),
                ("id", &format!("while-away-{n}")),
                ("data", &format!("published\nwhile away {n}")),
            ],
        )
        .await;
    }
    assert_eq!(
        server.hub().stats().await.streams,
        0,
        "the client came back before the updates were published, so this run \
         cannot show that it resumed from its last event id"
    );
    // Only its Last-Event-ID (before-2) can bring these two, and nothing twice.
    assert_eq!(
        node.take(2).await,
        vec![
            Received::new("while-away-1", "message", "published\nwhile away 1"),
            Received::new("while-away-2", "message", "published\nwhile away 2"),
        ]
    );
    assert_eq!(
        node.finished().await,
        2,
        "the client did not reconnect exactly once"
    );
    server.shutdown().await;
}
