//! Every limit at its boundary: N allowed, N+1 refused with the right
//! status, code and metric, and a refusal changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use pushwire_testkit::prelude::{
    config, eventually, get, post_json, raw_exchange, request, start, Connection, Reply, SseClient,
    WAIT,
};
use pushwire_testkit::reliability::{self, Row};

/// `pushwire_limit_rejections_total{limit="<limit>"}`.
async fn rejections(addr: SocketAddr, limit: &str) -> u64 {
    let metrics = get(addr, "/metrics").await.body;
    let prefix = format!("pushwire_limit_rejections_total{{limit=\"{limit}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// Every retained event, oldest first.
async fn history(addr: SocketAddr) -> Vec<Value> {
    let reply = get(addr, "/api/v1/events?limit=10000").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["events"].as_array().unwrap().clone()
}

async fn open_streams(addr: SocketAddr) -> u64 {
    get(addr, "/api/v1/stats").await.json()["streams"]
        .as_u64()
        .unwrap()
}

fn assert_error(reply: &Reply, status: u16, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], code, "{}", reply.body);
}

/// A TCP connection from a chosen loopback address.
async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(IpAddr::from(source), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// A stream request's answer; the connection stays open while this lives.
struct Opened {
    status: u16,
    retry_after: Option<String>,
    /// The JSON error of a refusal.
    error: Option<Value>,
    _stream: SseClient,
}

/// Opens `path` as a stream from `source`.
async fn open_from(source: [u8; 4], addr: SocketAddr, path: &str) -> Opened {
    let socket = connect_from(source, addr).await;
    let mut stream = SseClient::over(socket, &addr.to_string(), path, &[]).await;
    let status = stream.status;
    if status == 200 {
        return Opened {
            status,
            retry_after: None,
            error: None,
            _stream: stream,
        };
    }
    // A refusal is a whole JSON answer: read it to its end.
    assert!(stream.wait_end(WAIT).await, "no whole answer in time");
    Opened {
        status,
        retry_after: stream.header("retry-after").map(str::to_owned),
        error: Some(serde_json::from_slice(&stream.raw).unwrap()),
        _stream: stream,
    }
}

fn assert_refused(opened: &Opened, code: &str) {
    assert_eq!(opened.status, 429);
    let error = opened.error.as_ref().unwrap();
    assert_eq!(error["error"]["code"], code, "{error}");
    let wait: u64 = opened.retry_after.as_deref().unwrap().parse().unwrap();
    assert!(wait >= 1);
}

#[tokio::test]
async fn streams_per_ip_are_counted_per_loopback_address() {
    let mut config = config();
    config.max_streams_per_ip = Some(3);
    let server = start(config).await;
    let addr = server.addr();
    let mut cases = 0;

    let mut held = Vec::new();
    for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        for i in 0..3 {
            // Every stream route draws from the same share.
            let path = match i {
                0 => "/sse/subscribe/u".to_owned(),
                1 => "/api/v1/stream?topic=t".to_owned(),
                _ => "/.well-known/mercure?topic=t".to_owned(),
            };
            let opened = open_from(source, addr, &path).await;
            assert_eq!(opened.status, 200, "stream {i} from {source:?}");
            held.push(opened);
            cases += 1;
        }
        for path in ["/sse/subscribe/u", "/api/v1/stream?topic=t"] {
            let refused = open_from(source, addr, path).await;
            assert_refused(&refused, "too_many_streams_from_ip");
            assert!(refused.error.unwrap()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--max-streams-per-ip"));
            cases += 1;
        }
    }
    assert_eq!(
        open_streams(addr).await,
        6,
        "refused streams were not opened"
    );
    assert_eq!(rejections(addr, "streams_per_ip").await, 4);

    // A closed stream gives its place back.
    held.remove(0);
    eventually("the closed stream's place is free", || async {
        open_from([127, 0, 0, 2], addr, "/sse/subscribe/u")
            .await
            .status
            == 200
    })
    .await;
    cases += 1;

    reliability::record(Row {
        family: "streams per client address at the boundary (HTTP/1.1, several loopback addresses)",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "N open, N+1 429 too_many_streams_from_ip with Retry-After, nothing opened",
        test: "cargo test --test limits streams_per_ip_are_counted_per_loopback_address",
    });
}

type H2Body = Full<Bytes>;

async fn h2_stream(
    client: &mut http2::SendRequest<H2Body>,
    addr: SocketAddr,
    path: &str,
) -> hyper::Response<hyper::body::Incoming> {
    let request = Request::get(format!("http://{addr}{path}"))
        .header(header::HOST, "localhost")
        .body(H2Body::default())
        .unwrap();
    timeout(WAIT, client.send_request(request))
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_per_ip_count_every_http2_stream_on_one_connection() {
    let mut config = config();
    config.max_streams_per_ip = Some(3);
    config.h2c = true;
    let server = start(config).await;
    let addr = server.addr();

    let socket = connect_from([127, 0, 0, 5], addr).await;
    let (mut client, connection) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(socket))
        .await
        .unwrap();
    tokio::spawn(connection);
    let attempts = std::cell::Cell::new(0u64);
    let mut open = Vec::new();
    for _ in 0..3 {
        let response = h2_stream(&mut client, addr, "/api/v1/stream?topic=t").await;
        assert_eq!(response.status(), StatusCode::OK);
        open.push(response);
        attempts.set(attempts.get() + 1);
    }
    let refused = h2_stream(&mut client, addr, "/api/v1/stream?topic=t").await;
    attempts.set(attempts.get() + 1);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    let body = timeout(WAIT, refused.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(error["error"]["code"], "too_many_streams_from_ip");
    assert_eq!(open_streams(addr).await, 3);

    // Dropping one HTTP/2 stream (the connection stays) frees its place.
    open.pop();
    eventually("the reset stream's place is free", || {
        let mut client = client.clone();
        attempts.set(attempts.get() + 1);
        async move {
            let response = h2_stream(&mut client, addr, "/api/v1/stream?topic=t").await;
            response.status() == StatusCode::OK
        }
    })
    .await;
    reliability::record(Row {
        family: "streams per client address over one HTTP/2 connection",
        cases: attempts.get(),
        crashes: 0,
        lost: 0,
        outcome: "each HTTP/2 stream counts; N+1 429 too_many_streams_from_ip",
        test: "cargo test --test limits streams_per_ip_count_every_http2_stream_on_one_connection",
    });
}

#[tokio::test]
async fn streams_per_user_count_every_route_of_that_user() {
    let mut config = config();
    config.max_streams_per_user = Some(2);
    let server = start(config).await;
    let addr = server.addr();
    let source = [127, 0, 0, 1];

    let mut cases = 0;
    let a = open_from(source, addr, "/sse/subscribe/alice").await;
    let b = open_from(source, addr, "/api/v1/stream?user=alice&topic=t").await;
    assert_eq!((a.status, b.status), (200, 200));
    cases += 2;
    for path in [
        "/sse/subscribe/alice",
        "/sse/subscribe?id=alice",
        "/api/v1/stream?user=alice",
    ] {
        let refused = open_from(source, addr, path).await;
        assert_refused(&refused, "too_many_streams_for_user");
        cases += 1;
    }
    // Other users and user-less streams are not affected.
    let bob = open_from(source, addr, "/sse/subscribe/bob").await;
    let topic = open_from(source, addr, "/api/v1/stream?topic=t").await;
    assert_eq!((bob.status, topic.status), (200, 200));
    cases += 2;

    let users = get(addr, "/api/v1/users").await.json();
    assert_eq!(
        users["users"],
        json!([{"id": "alice", "streams": 2}, {"id": "bob", "streams": 1}])
    );
    assert_eq!(rejections(addr, "streams_per_user").await, 3);
    reliability::record(Row {
        family: "streams per user at the boundary, over every user stream route",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "N open, N+1 429 too_many_streams_for_user, nothing opened",
        test: "cargo test --test limits streams_per_user_count_every_route_of_that_user",
    });
}

/// A publish from `source` to `path` with a JSON or form body.
async fn publish_from(
    source: [u8; 4],
    addr: SocketAddr,
    path: &str,
    content_type: &str,
    body: &str,
    key: Option<&str>,
) -> Reply {
    let socket = connect_from(source, addr).await;
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    Connection::over(socket, &addr.to_string())
        .send("POST", path, &headers, body.as_bytes())
        .await
        .unwrap()
}

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn publish_rate_allows_the_burst_then_refuses_with_retry_after() {
    let mut config = config();
    config.publish_rate = Some("3/h".parse().unwrap());
    let server = start(config).await;
    let addr = server.addr();
    let one = [127, 0, 0, 1];

    // The three publish routes draw from one bucket per caller.
    let event = json!({"to": {"topics": ["t"]}, "data": "x"}).to_string();
    let api = publish_from(one, addr, "/api/v1/publish", JSON, &event, None).await;
    let seed = publish_from(one, addr, "/sse/push", FORM, "id=u&content=x", None).await;
    let mercure = publish_from(
        one,
        addr,
        "/.well-known/mercure",
        FORM,
        "topic=t&data=x",
        None,
    )
    .await;
    let accepted = [api.status, seed.status, mercure.status];
    assert_eq!(accepted, [200; 3]);
    let mut cases = accepted.len() as u64;
    let stored = history(addr).await;
    assert_eq!(stored.len(), 3);

    let refusals = [
        publish_from(one, addr, "/api/v1/publish", JSON, &event, None).await,
        publish_from(
            one,
            addr,
            "/sse/sendMessage",
            FORM,
            "userId=u&message=x",
            None,
        )
        .await,
        publish_from(
            one,
            addr,
            "/.well-known/mercure",
            FORM,
            "topic=t&data=x",
            None,
        )
        .await,
    ];
    for refused in &refusals {
        cases += 1;
        assert_error(refused, 429, "rate_limited");
        let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        // 3 per hour: the next one comes back after about 20 minutes.
        assert!((1000..=1200).contains(&wait), "Retry-After {wait}");
    }
    assert_eq!(
        history(addr).await,
        stored,
        "a refused publish stores nothing"
    );
    // Management reads are not publishes.
    assert_eq!(get(addr, "/api/v1/stats").await.status, 200);

    // Another caller without a credential has its own bucket.
    let two = [127, 0, 0, 2];
    for _ in 0..3 {
        let ok = publish_from(two, addr, "/api/v1/publish", JSON, &event, None).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        cases += 1;
    }
    let refused = publish_from(two, addr, "/api/v1/publish", JSON, &event, None).await;
    assert_error(&refused, 429, "rate_limited");
    cases += 1;
    assert_eq!(history(addr).await.len(), 6);
    assert_eq!(rejections(addr, "publish_rate").await, 4);
    reliability::record(Row {
        family: "publish rate per anonymous loopback caller, over every publish route",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "burst accepted, then 429 rate_limited with Retry-After, nothing stored",
        test:
            "cargo test --test limits publish_rate_allows_the_burst_then_refuses_with_retry_after",
    });
}

#[tokio::test]
async fn publish_rate_is_per_credential_not_per_address() {
    let mut config = config();
    config.publish_rate = Some("100/h".parse().unwrap());
    config.publish_burst = Some(2);
    config.publisher_key = Some("secret".into());
    let server = start(config).await;
    let addr = server.addr();
    let event = json!({"to": "all", "data": "x"}).to_string();
    let key = Some("secret");

    let mut cases = 0;
    for source in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let ok = publish_from(source, addr, "/api/v1/publish", JSON, &event, key).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        cases += 1;
    }
    let c = publish_from([127, 0, 0, 4], addr, "/api/v1/publish", JSON, &event, key).await;
    assert_error(&c, 429, "rate_limited");
    // A caller without the key is refused for that (401), whatever the
    // key's bucket holds.
    let anonymous = publish_from([127, 0, 0, 4], addr, "/api/v1/publish", JSON, &event, None).await;
    assert_error(&anonymous, 401, "unauthorized");
    let reply = request(
        addr,
        "GET",
        "/api/v1/events",
        &[("Authorization", "Bearer secret")],
        b"",
    )
    .await;
    assert_eq!(reply.json()["events"].as_array().unwrap().len(), 2);
    cases += 2;
    reliability::record(Row {
        family: "publish rate per credential across addresses",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "the key's burst is shared by every address; 429 after it",
        test: "cargo test --test limits publish_rate_is_per_credential_not_per_address",
    });
}

/// A publish that must be refused as `400 invalid_field` naming `option`.
async fn assert_field_refused(addr: SocketAddr, event: Value, option: &str) {
    let reply = post_json(addr, "/api/v1/publish", &event).await;
    assert_error(&reply, 400, "invalid_field");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains(option), "{message}");
}

#[tokio::test]
async fn field_limits_hold_exactly_at_their_boundaries() {
    let mut config = config();
    config.max_id_length = 8;
    config.max_event_type_length = 5;
    config.max_topic_length = 10;
    config.max_user_id_length = 6;
    config.max_topics_per_event = 3;
    config.max_topics_per_stream = 2;
    let server = start(config).await;
    let addr = server.addr();
    let mut cases = 0;

    // At the limit: accepted.
    let ok = [
        json!({"to": "all", "data": "x", "id": "abcdefgh"}),
        json!({"to": "all", "data": "x", "event": "abcde"}),
        json!({"to": {"topics": ["0123456789"]}, "data": "x"}),
        json!({"to": {"users": ["abcdef"]}, "data": "x"}),
        json!({"to": {"user_prefix": "abcdef"}, "data": "x"}),
        json!({"to": {"topics": ["a", "b", "c"]}, "data": "x"}),
    ];
    for event in ok {
        let reply = post_json(addr, "/api/v1/publish", &event).await;
        assert_eq!(reply.status, 200, "{event}: {}", reply.body);
        cases += 1;
    }
    let stored = history(addr).await;

    // One over: refused, naming the option.
    let over = [
        (
            json!({"to": "all", "data": "x", "id": "abcdefghi"}),
            "--max-id-length",
            "id_length",
        ),
        (
            json!({"to": "all", "data": "x", "event": "abcdef"}),
            "--max-event-type-length",
            "event_type_length",
        ),
        (
            json!({"to": {"topics": ["0123456789a"]}, "data": "x"}),
            "--max-topic-length",
            "topic_length",
        ),
        (
            json!({"to": {"users": ["abcdefg"]}, "data": "x"}),
            "--max-user-id-length",
            "user_id_length",
        ),
        (
            json!({"to": {"user_prefix": "abcdefg"}, "data": "x"}),
            "--max-user-id-length",
            "user_id_length",
        ),
        (
            json!({"to": {"topics": ["a", "b", "c", "d"]}, "data": "x"}),
            "--max-topics-per-event",
            "topics_per_event",
        ),
    ];
    for (event, option, _) in &over {
        assert_field_refused(addr, event.clone(), option).await;
        cases += 1;
    }
    // A batch with one event over a limit stores nothing of the batch.
    let batch = json!([{"to": "all", "data": "fine"}, over[0].0]);
    let reply = post_json(addr, "/api/v1/publish", &batch).await;
    assert_error(&reply, 400, "invalid_field");
    cases += 1;
    // Mercure's form: topic and type.
    let reply = request(
        addr,
        "POST",
        "/.well-known/mercure",
        &[("Content-Type", FORM)],
        b"topic=a&topic=b&topic=c&topic=d&data=x",
    )
    .await;
    assert_error(&reply, 400, "invalid_field");
    let reply = request(
        addr,
        "POST",
        "/.well-known/mercure",
        &[("Content-Type", FORM)],
        b"topic=a&type=abcdef&data=x",
    )
    .await;
    assert_error(&reply, 400, "invalid_field");
    cases += 2;
    assert_eq!(history(addr).await, stored, "refusals stored nothing");

    // Streams: user id length and topics per stream, on every stream route.
    let mut held = Vec::new();
    for (path, status) in [
        ("/sse/subscribe/abcdef", 200),
        ("/sse/subscribe/abcdefg", 400),
        ("/api/v1/stream?user=abcdefg", 400),
        ("/api/v1/stream?topic=a&topic=b", 200),
        ("/api/v1/stream?topic=a&topic=b&topic=c", 400),
        ("/api/v1/stream?topic=0123456789a", 400),
        ("/.well-known/mercure?topic=a&topic=b", 200),
        ("/.well-known/mercure?topic=a&topic=b&topic=c", 400),
        (
            "/.well-known/mercure?topic=a&match=b&match_urlpattern=/c",
            400,
        ),
        (
            "/.well-known/mercure?topic=a&topic=https://x/{id}&topic=c",
            400,
        ),
    ] {
        let opened = open_from([127, 0, 0, 1], addr, path).await;
        assert_eq!(opened.status, status, "{path}");
        if status == 400 {
            let error = opened.error.as_ref().unwrap();
            assert_eq!(error["error"]["code"], "invalid_field", "{path}: {error}");
        }
        held.push(opened);
        cases += 1;
    }
    assert_eq!(
        open_streams(addr).await,
        3,
        "only the streams within limits opened"
    );

    assert_eq!(rejections(addr, "id_length").await, 2);
    assert_eq!(rejections(addr, "event_type_length").await, 2);
    assert_eq!(rejections(addr, "topic_length").await, 2);
    assert_eq!(rejections(addr, "user_id_length").await, 4);
    assert_eq!(rejections(addr, "topics_per_event").await, 2);
    assert_eq!(rejections(addr, "topics_per_stream").await, 4);
    reliability::record(Row {
        family:
            "field lengths and topic counts at their boundaries (JSON, form, every stream route)",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "N accepted, N+1 400 invalid_field naming the option, nothing stored or opened",
        test: "cargo test --test limits field_limits_hold_exactly_at_their_boundaries",
    });
}

/// A GET of `/healthz` whose head is exactly `size` bytes on the wire.
fn head_of_size(addr: SocketAddr, size: usize) -> Vec<u8> {
    let start = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nX-Pad: ");
    let end = "\r\n\r\n";
    let pad = size - start.len() - end.len();
    format!("{start}{}{end}", "a".repeat(pad)).into_bytes()
}

fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split(' ')
        .nth(1)
        .unwrap_or_default()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn request_heads_up_to_the_limit_pass_and_longer_get_a_json_431() {
    let mut config = config();
    config.max_header_bytes = 2048;
    let server = start(config).await;
    let addr = server.addr();

    let at = raw_exchange(addr, &head_of_size(addr, 2048)).await.unwrap();
    assert_eq!(status_of(&at), 200, "{}", String::from_utf8_lossy(&at));
    let over = raw_exchange(addr, &head_of_size(addr, 2049)).await.unwrap();
    assert_eq!(status_of(&over), 431);
    let text = String::from_utf8_lossy(&over).to_string();
    let body: Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--max-header-bytes"));

    // Far over: hyper stops reading and still answers 431, not a reset;
    // many headers count by their bytes the same way.
    let mut cases = 2;
    for size in [4097, 10_000, 60_000] {
        let far = raw_exchange(addr, &head_of_size(addr, size)).await.unwrap();
        assert_eq!(status_of(&far), 431, "{size} bytes");
        cases += 1;
    }
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let many = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
    assert_eq!(
        status_of(&raw_exchange(addr, many.as_bytes()).await.unwrap()),
        431
    );
    cases += 1;
    assert_eq!(get(addr, "/healthz").await.status, 200);
    assert_eq!(rejections(addr, "header_size").await, 5);
    reliability::record(Row {
        family: "request heads at and over --max-header-bytes, over raw TCP",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "at the limit 200; over it 431 (JSON headers_too_large), never a reset",
        test:
            "cargo test --test limits request_heads_up_to_the_limit_pass_and_longer_get_a_json_431",
    });
}

#[tokio::test]
async fn slowloris_is_cut_by_the_header_read_timeout() {
    let mut config = config();
    config.header_read_timeout = Duration::from_millis(500);
    let server = start(config).await;
    let addr = server.addr();

    // One byte every 100 ms: each arrives well within any idle timeout, but
    // the head as a whole never completes in time.
    let mut cases = 0;
    for _ in 0..3 {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        let trickle = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
        let mut closed = false;
        for (i, byte) in trickle.iter().cycle().enumerate() {
            if socket.write_all(&[*byte]).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(i < 100, "the hub never cut the trickle");
            let mut buf = [0u8; 256];
            if let Ok(read) = timeout(Duration::from_millis(1), socket.read(&mut buf)).await {
                let n = read.unwrap_or(0);
                assert!(
                    n == 0 || status_of(&buf[..n]) != 200,
                    "a trickled request was served"
                );
                closed = true;
                break;
            }
        }
        assert!(closed);
        cases += 1;
    }
    // Prompt clients are served meanwhile and after.
    assert_eq!(get(addr, "/healthz").await.status, 200);
    eventually("the timeouts are counted", || async {
        rejections(addr, "header_read_timeout").await >= 3
    })
    .await;
    reliability::record(Row {
        family: "slowloris: heads trickled a byte at a time",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "connection closed at the header read timeout, request never served",
        test: "cargo test --test limits slowloris_is_cut_by_the_header_read_timeout",
    });
}

#[tokio::test]
async fn bodies_up_to_max_body_pass_and_longer_get_413() {
    let mut config = config();
    config.max_body = 1024;
    let server = start(config).await;
    let addr = server.addr();

    let event = |size: usize| {
        let skeleton = json!({"to": "all", "data": ""}).to_string();
        json!({"to": "all", "data": "d".repeat(size - skeleton.len())}).to_string()
    };
    let at = event(1024);
    assert_eq!(at.len(), 1024);
    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[("Content-Type", JSON)],
        at.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let mut cases = 1;
    let stored = history(addr).await;

    let over = event(1025);
    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[("Content-Type", JSON)],
        over.as_bytes(),
    )
    .await;
    assert_error(&reply, 413, "body_too_large");
    cases += 1;
    // The same body sent chunked (no length announced) is cut while read.
    let mut chunked = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: {JSON}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for piece in over.as_bytes().chunks(100) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(status_of(&raw_exchange(addr, &chunked).await.unwrap()), 413);
    cases += 1;
    // Forms on the seed routes too.
    let form = format!("userId=u&message={}", "m".repeat(1100));
    let reply = request(
        addr,
        "POST",
        "/sse/sendMessage",
        &[("Content-Type", FORM)],
        form.as_bytes(),
    )
    .await;
    assert_error(&reply, 413, "body_too_large");
    cases += 1;

    assert_eq!(history(addr).await, stored);
    assert_eq!(rejections(addr, "body_size").await, 3);
    reliability::record(Row {
        family: "request bodies at and over --max-body (declared and chunked)",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "at the limit stored; over it 413 body_too_large, nothing stored",
        test: "cargo test --test limits bodies_up_to_max_body_pass_and_longer_get_413",
    });
}
