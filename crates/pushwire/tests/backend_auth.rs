//! Subscribers authorized by the application's backend (`--auth-url`),
//! against the real server: the backend is a small HTTP server of the
//! test's own on 127.0.0.1 that knows three sessions by their cookie,
//! records every request it gets and can be told to fail (a status, a body
//! that is not an answer, no answer in time); subscribers are raw TCP SSE
//! clients, and one test is a page in headless Chromium that sends its
//! session cookie cross-origin with `withCredentials`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "browser/cdp.rs"]
#[allow(dead_code)]
mod cdp;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pushwire::config::ServeConfig;
use pushwire_testkit::prelude::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ALICE: &str = "session=alice-session";
const BOB: &str = "session=bob-session";
const BANNED: &str = "session=banned-session";

/// What the backend does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// Answers by the session cookie: alice, bob, 403 for the banned one,
    /// 401 for anyone else.
    Sessions,
    /// Answers this status, whatever the session.
    Status(u16),
    /// Answers `200` with a body that is not JSON.
    Garbage,
    /// Never answers (holds the connection).
    Hang,
}

#[derive(Default)]
struct Shared {
    mode: Option<Mode>,
    /// How long each answer takes.
    delay: Duration,
    /// The `expires_in` of the sessions' answers.
    expires_in: Option<u64>,
    /// Every authorization request's JSON body, in arrival order.
    requests: Vec<Value>,
}

/// The application's backend: `POST /auth` for the hub, and for the
/// browser `GET /login` (sets the session cookie) and `GET /app` (the page).
struct AppBackend {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl AppBackend {
    async fn start() -> AppBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared {
            mode: Some(Mode::Sessions),
            expires_in: Some(3600),
            ..Shared::default()
        }));
        let state = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, state.clone()));
            }
        });
        AppBackend { addr, shared }
    }

    fn url(&self) -> String {
        format!("http://{}/auth", self.addr)
    }

    fn set(&self, mode: Mode) {
        self.shared.lock().unwrap().mode = Some(mode);
    }

    fn requests(&self) -> Vec<Value> {
        self.shared.lock().unwrap().requests.clone()
    }
}

/// One HTTP/1.1 exchange per connection.
async fn serve(mut stream: TcpStream, shared: Arc<Mutex<Shared>>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while raw.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let reply = if request_line.starts_with("POST /auth ") {
        let body: Value = serde_json::from_slice(&raw[head_end..]).unwrap_or(Value::Null);
        authorize(body, &shared).await
    } else if request_line.starts_with("GET /login ") {
        // The application's login: an HttpOnly session cookie, which the
        // page's scripts cannot read.
        response(
            200,
            &[(
                "Set-Cookie",
                "session=alice-session; Path=/; HttpOnly; SameSite=Lax",
            )],
            "text/html",
            "<p>logged in</p>",
        )
    } else if request_line.starts_with("GET /app ") {
        response(200, &[], "text/html", "<!doctype html><p>app</p>")
    } else {
        response(404, &[], "text/plain", "no such page")
    };
    let Some(reply) = reply else {
        // Hang: keep the connection open without a word.
        tokio::time::sleep(Duration::from_secs(30)).await;
        return;
    };
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The answer to one authorization request, or `None` to never answer.
async fn authorize(body: Value, shared: &Mutex<Shared>) -> Option<String> {
    let (mode, delay, expires_in) = {
        let mut shared = shared.lock().unwrap();
        shared.requests.push(body.clone());
        (
            shared.mode.unwrap_or(Mode::Sessions),
            shared.delay,
            shared.expires_in,
        )
    };
    tokio::time::sleep(delay).await;
    let json =
        |status: u16, value: Value| response(status, &[], "application/json", &value.to_string());
    match mode {
        Mode::Hang => None,
        Mode::Garbage => response(200, &[], "application/json", "{\"user\": \"alice\", oops"),
        Mode::Status(status) => json(status, json!({"error": "backend says no"})),
        Mode::Sessions => {
            let cookie = body["headers"]["cookie"].as_str().unwrap_or_default();
            let session = cookie
                .split(';')
                .find_map(|pair| pair.trim().strip_prefix("session="));
            match session {
                Some("alice-session") => json(
                    200,
                    json!({
                        "user": "alice",
                        "topics": ["news", "orders/alice/*"],
                        "private": ["orders/alice/*"],
                        "expires_in": expires_in,
                    }),
                ),
                Some("bob-session") => json(
                    200,
                    json!({"user": "bob", "topics": ["news"], "expires_in": expires_in}),
                ),
                Some("banned-session") => json(403, json!({"error": "banned"})),
                _ => json(401, json!({"error": "who are you"})),
            }
        }
    }
}

fn response(status: u16, headers: &[(&str, &str)], kind: &str, body: &str) -> Option<String> {
    let mut text = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    Some(text)
}

fn hub_config(backend: &AppBackend) -> ServeConfig {
    let mut c = config();
    c.auth_url = Some(backend.url());
    c
}

async fn metric(addr: SocketAddr, series: &str) -> u64 {
    let metrics = get(addr, "/metrics").await.body;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{series} ")))
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
        .trim()
        .parse()
        .unwrap()
}

async fn auth_requests(addr: SocketAddr, outcome: &str) -> u64 {
    metric(
        addr,
        &format!("pushwire_auth_requests_total{{outcome=\"{outcome}\"}}"),
    )
    .await
}

/// A refused stream: its status and the hub's JSON error code.
async fn refused(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let reply = get_with(addr, path, headers).await;
    let code = reply.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (reply.status, code)
}

/// Nothing was registered: no stream, no user online.
async fn nothing_registered(server: &pushwire::server::Server) {
    assert_eq!(server.hub().stats().await.streams, 0);
    assert_eq!(user_count(server.addr()).await, 0);
}

#[tokio::test]
async fn a_logged_in_user_opens_their_own_stream_and_the_backend_is_told_about_it() {
    let backend = AppBackend::start().await;
    let server = start(hub_config(&backend)).await;
    let addr = server.addr();

    let mut stream = SseClient::connect_with(
        addr,
        "/sse/subscribe/alice",
        &[("Cookie", ALICE), ("User-Agent", "test-agent/1")],
    )
    .await;
    assert_eq!(stream.status, 200);
    publish(
        addr,
        json!({"to": {"users": ["alice"]}, "data": "for alice"}),
    )
    .await;
    publish(addr, json!({"to": {"users": ["bob"]}, "data": "for bob"})).await;
    publish(addr, json!({"to": "all", "data": "for everyone"})).await;
    let got: Vec<String> = stream.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["for alice", "for everyone"]);

    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(
        requests[0],
        json!({
            "route": "/sse/subscribe/alice",
            "user": "alice",
            "topics": [],
            "last_event_id": null,
            "client": {"address": "127.0.0.1", "user_agent": "test-agent/1"},
            "headers": {"cookie": ALICE},
        })
    );
    assert_eq!(auth_requests(addr, "allowed").await, 1);
}

#[tokio::test]
async fn another_users_stream_is_forbidden_and_nothing_is_registered() {
    let backend = AppBackend::start().await;
    let server = start(hub_config(&backend)).await;
    let addr = server.addr();
    for path in [
        "/sse/subscribe/bob",
        "/sse/subscribe?id=bob",
        "/api/v1/stream?user=bob",
    ] {
        assert_eq!(
            refused(addr, path, &[("Cookie", ALICE)]).await,
            (403, "forbidden".to_owned()),
            "{path}"
        );
    }
    nothing_registered(&server).await;
    // Bob's own session opens it.
    let stream = SseClient::connect_with(addr, "/sse/subscribe/bob", &[("Cookie", BOB)]).await;
    assert_eq!(stream.status, 200);
}

#[tokio::test]
async fn topics_must_be_granted_exactly_or_by_a_url_pattern() {
    let backend = AppBackend::start().await;
    let server = start(hub_config(&backend)).await;
    let addr = server.addr();

    let (status, code) = refused(
        addr,
        "/api/v1/stream?topic=news&topic=secret",
        &[("Cookie", ALICE)],
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let (status, _) = refused(
        addr,
        "/api/v1/stream?topic=orders/bob/1",
        &[("Cookie", ALICE)],
    )
    .await;
    assert_eq!(status, 403);
    nothing_registered(&server).await;

    // `orders/alice/*` grants alice's orders; the stream is alice's too.
    let mut stream = SseClient::connect_with(
        addr,
        "/api/v1/stream?topic=news&topic=orders/alice/42",
        &[("Cookie", ALICE)],
    )
    .await;
    assert_eq!(stream.status, 200);
    let topic = |topic: &str, data: &str, private: bool| json!({"to": {"topics": [topic]}, "data": data, "private": private});
    publish(addr, topic("orders/alice/42", "order 42 shipped", false)).await;
    // Private updates: only those the `private` grants cover.
    publish(addr, topic("news", "private news", true)).await;
    publish(addr, topic("orders/alice/42", "order 42 invoice", true)).await;
    publish(
        addr,
        json!({"to": {"users": ["alice"]}, "data": "to alice"}),
    )
    .await;
    let got: Vec<String> = stream.take(3).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["order 42 shipped", "order 42 invoice", "to alice"]);
}

#[tokio::test]
async fn mercure_subscriptions_need_every_selector_granted() {
    let backend = AppBackend::start().await;
    let server = start(hub_config(&backend)).await;
    let addr = server.addr();
    let (status, code) = refused(
        addr,
        "/.well-known/mercure?topic=news&topic=secret",
        &[("Cookie", ALICE)],
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    // A template is granted only by itself or `*`, not by a pattern that
    // happens to match its text.
    let (status, _) = refused(
        addr,
        "/.well-known/mercure?topic=orders/alice/%7Bid%7D",
        &[("Cookie", ALICE)],
    )
    .await;
    assert_eq!(status, 403);
    nothing_registered(&server).await;

    let mut stream = SseClient::connect_with(
        addr,
        "/.well-known/mercure?topic=orders/alice/7",
        &[("Cookie", ALICE)],
    )
    .await;
    assert_eq!(stream.status, 200);
    let id = request(
        addr,
        "POST",
        "/.well-known/mercure",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        form(&[
            ("topic", "orders/alice/7"),
            ("data", "via mercure"),
            ("private", "on"),
        ])
        .as_bytes(),
    )
    .await;
    assert_eq!(id.status, 200, "{}", id.body);
    assert_eq!(stream.next().await.data, "via mercure");
    // One question for the session; the answer of the first one served all three.
    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["route"], "/.well-known/mercure");
    assert_eq!(requests[0]["topics"], json!(["news", "secret"]));
    assert_eq!(requests[0]["user"], Value::Null);
}

#[tokio::test]
async fn backend_401_and_403_reach_the_client_with_the_hubs_error_body() {
    let backend = AppBackend::start().await;
    let server = start(hub_config(&backend)).await;
    let addr = server.addr();

    let anonymous = get_with(addr, "/sse/subscribe/alice", &[]).await;
    assert_eq!(anonymous.status, 401);
    assert_eq!(anonymous.json()["error"]["code"], "unauthorized");
    assert!(anonymous.json()["error"]["message"].is_string());
    let unknown = get_with(
        addr,
        "/sse/subscribe/alice",
        &[("Cookie", "session=forged")],
    )
    .await;
    assert_eq!(unknown.status, 401);
    let banned = get_with(addr, "/api/v1/stream?topic=news", &[("Cookie", BANNED)]).await;
    assert_eq!(banned.status, 403);
    assert_eq!(banned.json()["error"]["code"], "forbidden");
    // The backend's own body stays with the backend.
    assert!(!banned.body.contains("banned\""), "{}", banned.body);
    nothing_registered(&server).await;
    assert_eq!(auth_requests(addr, "unauthorized").await, 2);
    assert_eq!(auth_requests(addr, "forbidden").await, 1);
}

#[tokio::test]
async fn a_failing_backend_refuses_streams_with_503_and_counts_each_failure() {
    let backend = AppBackend::start().await;
    let mut config = hub_config(&backend);
    config.auth_timeout = Duration::from_millis(300);
    let server = start(config).await;
    let addr = server.addr();

    for (mode, outcome) in [
        (Mode::Status(500), "http_error"),
        (Mode::Status(302), "http_error"),
        (Mode::Garbage, "invalid"),
        (Mode::Hang, "timeout"),
    ] {
        backend.set(mode);
        let before = auth_requests(addr, outcome).await;
        let (status, code) = refused(addr, "/sse/subscribe/alice", &[("Cookie", ALICE)]).await;
        assert_eq!(
            (status, code.as_str()),
            (503, "auth_unavailable"),
            "{mode:?}"
        );
        assert_eq!(auth_requests(addr, outcome).await, before + 1, "{mode:?}");
        nothing_registered(&server).await;
    }
    // Failures are not cached: once the backend is back, the same session opens.
    backend.set(Mode::Sessions);
    let stream = SseClient::connect_with(addr, "/sse/subscribe/alice", &[("Cookie", ALICE)]).await;
    assert_eq!(stream.status, 200);
}

#[tokio::test]
async fn an_unreachable_backend_refuses_streams_with_503() {
    // A port nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut config = config();
    config.auth_url = Some(format!("http://127.0.0.1:{port}/auth"));
    let server = start(config).await;
    let addr = server.addr();
    for path in [
        "/sse/subscribe/alice",
        "/api/v1/stream?topic=news",
        "/.well-known/mercure?topic=news",
    ] {
        let (status, code) = refused(addr, path, &[("Cookie", ALICE)]).await;
        assert_eq!((status, code.as_str()), (503, "auth_unavailable"), "{path}");
    }
    nothing_registered(&server).await;
    assert_eq!(auth_requests(addr, "unreachable").await, 3);
}

#[tokio::test]
async fn a_second_stream_of_the_same_session_uses_the_cached_answer() {
    let backend = AppBackend::start().await;
    let server = start(hub_config(&backend)).await;
    let addr = server.addr();

    let first = SseClient::connect_with(addr, "/sse/subscribe/alice", &[("Cookie", ALICE)]).await;
    let second =
        SseClient::connect_with(addr, "/api/v1/stream?topic=news", &[("Cookie", ALICE)]).await;
    assert_eq!((first.status, second.status), (200, 200));
    // Refusals are cached too: a session the backend refused costs it once.
    assert_eq!(
        refused(addr, "/sse/subscribe/x", &[("Cookie", BANNED)])
            .await
            .0,
        403
    );
    assert_eq!(
        refused(addr, "/sse/subscribe/x", &[("Cookie", BANNED)])
            .await
            .0,
        403
    );
    assert_eq!(backend.requests().len(), 2, "{:?}", backend.requests());
    assert_eq!(metric(addr, "pushwire_auth_cache_hits_total").await, 2);
    // Another session is another question.
    let bob = SseClient::connect_with(addr, "/sse/subscribe/bob", &[("Cookie", BOB)]).await;
    assert_eq!(bob.status, 200);
    assert_eq!(backend.requests().len(), 3);
}

#[tokio::test]
async fn without_a_cache_every_stream_asks_the_backend() {
    let backend = AppBackend::start().await;
    let mut config = hub_config(&backend);
    config.auth_cache_ttl = Duration::ZERO;
    let server = start(config).await;
    let addr = server.addr();
    for _ in 0..3 {
        let stream =
            SseClient::connect_with(addr, "/sse/subscribe/alice", &[("Cookie", ALICE)]).await;
        assert_eq!(stream.status, 200);
    }
    assert_eq!(backend.requests().len(), 3);
}

#[tokio::test]
async fn concurrent_streams_of_one_session_cost_one_backend_request() {
    let backend = AppBackend::start().await;
    backend.shared.lock().unwrap().delay = Duration::from_secs(1);
    let mut config = hub_config(&backend);
    // No cache: only the sharing of the call in flight can save requests.
    config.auth_cache_ttl = Duration::ZERO;
    let server = start(config).await;
    let addr = server.addr();

    let streams = futures_util::future::join_all((0..20).map(|i| async move {
        let path = if i % 2 == 0 {
            "/sse/subscribe/alice"
        } else {
            "/api/v1/stream?topic=news"
        };
        SseClient::connect_with(addr, path, &[("Cookie", ALICE)]).await
    }))
    .await;
    assert!(streams.iter().all(|s| s.status == 200));
    assert_eq!(backend.requests().len(), 1, "{:?}", backend.requests());
    assert_eq!(server.hub().stats().await.streams, 20);
}

#[tokio::test]
async fn a_stream_ends_when_its_answer_expires_and_the_reconnect_misses_nothing() {
    let backend = AppBackend::start().await;
    backend.shared.lock().unwrap().expires_in = Some(1);
    let server = start(hub_config(&backend)).await;
    let addr = server.addr();

    let opened = tokio::time::Instant::now();
    let mut stream =
        SseClient::connect_with(addr, "/sse/subscribe/alice", &[("Cookie", ALICE)]).await;
    assert_eq!(stream.status, 200);
    publish(addr, json!({"to": {"users": ["alice"]}, "data": "one"})).await;
    assert_eq!(stream.next().await.data, "one");
    assert!(
        stream.wait_end(Duration::from_secs(5)).await,
        "the stream outlived its answer"
    );
    assert!(opened.elapsed() >= Duration::from_millis(900));
    let last = stream.last_event_id();

    // Published while the client was away.
    publish(addr, json!({"to": {"users": ["alice"]}, "data": "two"})).await;
    publish(addr, json!({"to": {"users": ["alice"]}, "data": "three"})).await;
    let mut again = SseClient::connect_with(
        addr,
        "/sse/subscribe/alice",
        &[("Cookie", ALICE), ("Last-Event-ID", &last)],
    )
    .await;
    assert_eq!(again.status, 200);
    let got: Vec<String> = again.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["two", "three"]);
    // The expired answer was not reused: the backend was asked again, and
    // told where the client resumes.
    let requests = backend.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[1]["last_event_id"], json!(last));
}

#[tokio::test]
async fn only_the_configured_headers_are_forwarded() {
    let backend = AppBackend::start().await;
    let server = start(hub_config(&backend)).await;
    let sent = [
        ("Cookie", ALICE),
        ("Authorization", "Bearer app-token"),
        ("X-Forged", "1"),
        ("X-Forwarded-For", "10.0.0.1"),
    ];
    let stream = SseClient::connect_with(server.addr(), "/sse/subscribe/alice", &sent).await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        backend.requests()[0]["headers"],
        json!({"cookie": ALICE, "authorization": "Bearer app-token"})
    );
    // The client address is the TCP peer, whatever the request claims.
    assert_eq!(backend.requests()[0]["client"]["address"], "127.0.0.1");

    let only_cookies = AppBackend::start().await;
    let mut config = hub_config(&only_cookies);
    config.auth_forward_headers = vec!["cookie".to_owned()];
    let server = start(config).await;
    let stream = SseClient::connect_with(server.addr(), "/sse/subscribe/alice", &sent).await;
    assert_eq!(stream.status, 200);
    assert_eq!(
        only_cookies.requests()[0]["headers"],
        json!({"cookie": ALICE})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logged_in_page_receives_its_events_cross_origin_with_its_cookie() -> cdp::Result<()> {
    let backend = AppBackend::start().await;
    let app_origin = format!("http://{}", backend.addr);
    let mut config = hub_config(&backend);
    config.cors_origins = vec![app_origin.clone()];
    let server = start(config).await;
    let hub = server.addr();

    let browser = cdp::Browser::launch().await?;
    let cdp = browser.connect().await?;
    let page = cdp.new_page().await?;
    // Logging in sets an HttpOnly cookie; the page holds no token.
    page.navigate(&format!("{app_origin}/login")).await?;
    page.navigate(&format!("{app_origin}/app")).await?;
    assert_eq!(page.eval("document.cookie").await?, json!(""));
    // The hub is another origin (another port): the cookie goes with the
    // stream only with `withCredentials`, and only if the hub allows it.
    page.eval(&format!(
        "window.received = [];
         window.source = new EventSource('http://127.0.0.1:{}/sse/subscribe/alice',
                                         {{ withCredentials: true }});
         window.source.onmessage = (e) => window.received.push(e.data);
         window.source.onopen = () => {{ window.opened = true; }};
         true",
        hub.port()
    ))
    .await?;
    page.wait_for("the stream is open", "window.opened === true")
        .await?;
    publish(
        hub,
        json!({"to": {"users": ["alice"]}, "data": "hello alice"}),
    )
    .await;
    page.wait_for(
        "the page received the event",
        "window.received.includes('hello alice')",
    )
    .await?;

    let requests = backend.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0]["headers"]["cookie"], ALICE);
    assert!(requests[0]["client"]["user_agent"]
        .as_str()
        .is_some_and(|agent| agent.contains("Chrome")));
    page.eval("window.source.close()").await?;
    drop(cdp);
    drop(browser);
    server.shutdown().await;
    Ok(())
}
