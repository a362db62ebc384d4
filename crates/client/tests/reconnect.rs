//! `HubClient::follow` against a scripted hub on a loopback socket: each
//! connection gets the next answer of a script, and the test checks what
//! the follower sent back (`Last-Event-ID`) and what it handed on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use pushwire_client::{ClientError, HubClient, Reconnect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

fn stream(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}")
}

fn refusal(status: &str, extra: &str) -> String {
    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n{extra}\r\n")
}

/// Serves one answer of `script` per connection and records each request's
/// `Last-Event-ID` (empty when it sent none).
async fn scripted(script: Vec<String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        for answer in script {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if socket.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let id = head
                .lines()
                .find_map(|line| line.strip_prefix("last-event-id: "))
                .unwrap_or_default()
                .to_owned();
            kept.lock().unwrap().push(id);
            socket.write_all(answer.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
        }
    });
    (base, seen)
}

fn quick() -> Reconnect {
    Reconnect {
        default_retry: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_failures: None,
    }
}

#[tokio::test]
async fn follows_across_ends_breaks_and_failures_and_stops_at_a_refusal() {
    let (base, seen) = scripted(vec![
        stream("retry: 30\nid: 1\ndata: a\n\n"),
        // Cut in the middle of event 3: it was never dispatched.
        stream("id: 2\ndata: b\n\nid: 3\ndata: c"),
        refusal("503 Service Unavailable", "retry-after: 0\r\n"),
        refusal("502 Bad Gateway", ""),
        stream("id: 3\ndata: c\n\n"),
        refusal("401 Unauthorized", ""),
    ])
    .await;
    let client = HubClient::new(&base, Some("token".into()));
    let events = Arc::new(Mutex::new(Vec::new()));
    let mut notices = Vec::new();
    let got = events.clone();
    let result = tokio::time::timeout(
        WAIT,
        client.follow(
            "/api/v1/stream?user=u",
            "0",
            &quick(),
            move |event| {
                got.lock().unwrap().push(event.data);
                ControlFlow::Continue(())
            },
            |notice| notices.push(notice.clone()),
        ),
    )
    .await
    .expect("the follow ended");
    assert!(
        matches!(result, Err(ClientError::Status { status, .. }) if status == StatusCode::UNAUTHORIZED),
        "{result:?}"
    );
    assert_eq!(*events.lock().unwrap(), ["a", "b", "c"]);
    assert_eq!(*seen.lock().unwrap(), ["0", "1", "2", "2", "2", "3"]);
    // The stream's `retry: 30` replaced the default; the second failed
    // attempt in a row doubled it, and the stream that opened reset it.
    let waits: Vec<_> = notices.iter().map(|n| n.after.as_millis()).collect();
    assert_eq!(waits, [30, 30, 30, 60, 30]);
}

#[tokio::test]
async fn gives_up_after_max_failures_in_a_row() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // Nobody listens there any more.
    drop(listener);
    let client = HubClient::new(&base, None);
    let policy = Reconnect {
        max_failures: Some(3),
        ..quick()
    };
    let mut notices = 0;
    let result = tokio::time::timeout(
        WAIT,
        client.follow(
            "/api/v1/stream?user=u",
            "",
            &policy,
            |_| ControlFlow::Continue(()),
            |_| notices += 1,
        ),
    )
    .await
    .expect("the follow ended");
    assert!(
        matches!(&result, Err(ClientError::GaveUp { attempts: 3, last }) if matches!(**last, ClientError::Connect(_))),
        "{result:?}"
    );
    assert_eq!(notices, 2);
}

#[tokio::test]
async fn a_body_that_is_not_an_event_stream_is_refused() {
    let (base, _) = scripted(vec![
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 2\r\n\r\nhi".to_owned(),
    ])
    .await;
    let client = HubClient::new(&base, None);
    let result = tokio::time::timeout(
        WAIT,
        client.follow("/", "", &quick(), |_| ControlFlow::Continue(()), |_| {}),
    )
    .await
    .expect("the follow ended");
    assert!(
        matches!(&result, Err(ClientError::NotAStream(t)) if t == "text/html"),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_caller_that_breaks_stops_the_follow() {
    let (base, seen) = scripted(vec![stream("id: 1\ndata: a\n\nid: 2\ndata: b\n\n")]).await;
    let client = HubClient::new(&base, None);
    let mut events = Vec::new();
    let result = tokio::time::timeout(
        WAIT,
        client.follow(
            "/",
            "",
            &quick(),
            |event| {
                events.push(event.data);
                ControlFlow::Break(())
            },
            |_| {},
        ),
    )
    .await
    .expect("the follow ended");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(events, ["a"]);
    assert_eq!(*seen.lock().unwrap(), [""]);
}
