//! How stream connections are served on the wire: streams on the hub's lean
//! HTTP/1.1 path, every other request (and any stream request that path
//! leaves alone) on hyper, on the same port.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pushwire_testkit::prelude::*;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Reads until `needle` has arrived; returns everything read.
async fn read_until(stream: &mut TcpStream, raw: &mut Vec<u8>, needle: &str) {
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(raw).contains(needle) {
        let n = timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(raw)))
            .expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(raw)
        );
        raw.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn a_stream_is_chunked_and_its_connection_closes_when_it_ends() {
    let server = start_default().await;
    let mut alice = SseClient::connect(server.addr(), "/sse/subscribe/alice").await;
    assert_eq!(alice.status, 200);
    assert_eq!(alice.header("transfer-encoding"), Some("chunked"));
    assert_eq!(alice.header("connection"), Some("close"));
    assert!(alice.header("date").is_some());
    assert_eq!(
        alice.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    publish(
        server.addr(),
        json!({"to": {"users": ["alice"]}, "data": "one\ntwo"}),
    )
    .await;
    assert_eq!(alice.next().await.data, "one\ntwo");
    let closed = request(server.addr(), "DELETE", "/api/v1/users/alice", &[], b"").await;
    assert_eq!(closed.json()["closed"], 1);
    assert!(alice.wait_end(WAIT).await, "stream and connection end");
}

#[tokio::test]
async fn an_http10_client_gets_a_stream_that_ends_with_the_connection() {
    let server = start_default().await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(b"GET /sse/subscribe/bob HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    read_until(&mut stream, &mut raw, "retry: 3000\n\n").await;
    publish(
        server.addr(),
        json!({"to": {"users": ["bob"]}, "data": "hello"}),
    )
    .await;
    read_until(&mut stream, &mut raw, "data: hello\n\n").await;
    let head = String::from_utf8_lossy(&raw).to_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(
        !head.contains("transfer-encoding"),
        "no chunks for 1.0: {head}"
    );
    request(server.addr(), "DELETE", "/api/v1/users/bob", &[], b"").await;
    timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("connection closes")
        .unwrap();
}

#[tokio::test]
async fn a_stream_request_with_a_large_head_is_still_served() {
    let server = start_default().await;
    let cookie = "c".repeat(24 * 1024);
    let mut carol = SseClient::connect_with(
        server.addr(),
        "/api/v1/stream?user=carol",
        &[("Cookie", cookie.as_str())],
    )
    .await;
    assert_eq!(carol.status, 200);
    publish(
        server.addr(),
        json!({"to": {"users": ["carol"]}, "data": "big"}),
    )
    .await;
    assert_eq!(carol.next().await.data, "big");
}

#[tokio::test]
async fn other_requests_keep_their_connection_alive_and_pipelined_ones_are_answered() {
    let server = start_default().await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    let one = "GET /sse/getUserCount HTTP/1.1\r\nHost: localhost\r\n\r\n";
    // Two requests in one write, then a third on the same connection.
    stream
        .write_all(format!("{one}{one}").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&raw)
        .matches("HTTP/1.1 200")
        .count()
        < 2
    {
        let n = timeout(WAIT, stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    let body = r#"{"to": "all", "data": "kept alive"}"#;
    let publish = format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(publish.as_bytes()).await.unwrap();
    read_until(&mut stream, &mut raw, "{\"id\":\"#1.").await;
}

#[tokio::test]
async fn a_refused_stream_request_gets_a_whole_json_answer() {
    let server = start_default().await;
    let mut stream = TcpStream::connect(server.addr()).await.unwrap();
    stream
        .write_all(b"GET /api/v1/stream?user=a&user=b HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("answered and closed")
        .unwrap();
    let reply = String::from_utf8_lossy(&raw);
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 400 Bad Request"), "{reply}");
    assert!(
        head.to_lowercase()
            .contains(&format!("content-length: {}", body.len())),
        "{reply}"
    );
    let error: serde_json::Value = serde_json::from_str(body).expect("JSON body");
    assert_eq!(error["error"]["code"], "conflicting_parameter");
    assert_eq!(user_count(server.addr()).await, 0);
}
