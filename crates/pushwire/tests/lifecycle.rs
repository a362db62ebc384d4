//! Stream lifecycle: heartbeats, timeouts, slow consumers, resume from
//! Last-Event-ID, shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pushwire_testkit::prelude::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn heartbeat_comments_arrive_on_idle_streams() {
    let mut config = config();
    config.heartbeat = Duration::from_millis(100);
    let server = start(config).await;
    let mut tab = SseClient::connect(server.addr(), "/sse/subscribe/u1").await;
    tab.drain_for(Duration::from_millis(550)).await;
    assert!(tab.comments() >= 3, "only {} heartbeats", tab.comments());
    assert!(!tab.ended);
}

#[tokio::test]
async fn stream_timeout_ends_the_stream_and_the_user_goes_offline() {
    let mut config = config();
    config.stream_timeout = Some(Duration::from_millis(300));
    let server = start(config).await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/sse/subscribe/u1").await;
    assert_eq!(user_count(addr).await, 1);
    assert!(tab.wait_end(WAIT).await, "stream outlived its timeout");
    eventually("the user is offline", || async {
        user_count(addr).await == 0
    })
    .await;
}

#[tokio::test]
async fn slow_consumer_is_cut_while_a_fast_one_gets_everything() {
    let mut config = config();
    config.queue_capacity = 16;
    let server = start(config).await;
    let addr = server.addr();
    let mut fast = SseClient::connect(addr, "/api/v1/stream?topic=feed").await;
    // A client that subscribes and then never reads.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /api/v1/stream?topic=feed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    eventually("both streams are open", || async {
        get(addr, "/api/v1/stats").await.json()["streams"] == 2
    })
    .await;

    // 64 KiB events: the never-reading client's socket buffers fill up, then its queue.
    let payload = "x".repeat(64 * 1024);
    let total = 400;
    let reader = tokio::spawn(async move {
        let events = fast.take(total).await;
        (events, fast)
    });
    for i in 0..total {
        publish(
            addr,
            json!({"to": {"topics": ["feed"]}, "data": format!("{i}:{payload}")}),
        )
        .await;
    }
    let (events, _fast) = reader.await.unwrap();
    for (i, event) in events.iter().enumerate() {
        assert!(
            event.data.starts_with(&format!("{i}:")),
            "event {i} out of order"
        );
    }
    let metrics = get(addr, "/metrics").await.body;
    assert!(
        metrics.contains("pushwire_slow_consumer_closes_total 1"),
        "slow consumer not cut:\n{metrics}"
    );
    assert_eq!(get(addr, "/api/v1/stats").await.json()["streams"], 1);
    drop(slow);
}

#[tokio::test]
async fn reconnect_with_last_event_id_gets_exactly_the_missed_events_then_live() {
    let server = start_default().await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/sse/subscribe/g1-u1").await;
    publish(addr, json!({"to": {"users": ["g1-u1"]}, "data": "seen"})).await;
    let seen = tab.next().await;
    drop(tab);
    eventually("the tab is gone", || async { user_count(addr).await == 0 }).await;

    let mut expected = Vec::new();
    for i in 0..100 {
        let (to, mine) = match i % 5 {
            0 => (json!({"users": ["g1-u1"]}), true),
            1 => (json!({"users": ["other"]}), false),
            2 => (json!({"user_prefix": "g1-"}), true),
            3 => (json!("all"), true),
            _ => (json!({"topics": ["t"]}), false),
        };
        let id = publish(addr, json!({"to": to, "data": format!("m{i}")})).await;
        if mine {
            expected.push((id, format!("m{i}")));
        }
    }
    let last = seen.id.unwrap();
    let mut tab =
        SseClient::connect_with(addr, "/sse/subscribe/g1-u1", &[("Last-Event-ID", &last)]).await;
    let replayed = tab.take(expected.len()).await;
    let got: Vec<_> = replayed
        .iter()
        .map(|e| (e.id.clone().unwrap(), e.data.clone()))
        .collect();
    assert_eq!(got, expected);
    tab.expect_silence(Duration::from_millis(200)).await;
    let live = publish(addr, json!({"to": {"users": ["g1-u1"]}, "data": "live"})).await;
    let event = tab.next().await;
    assert_eq!((event.id.unwrap(), event.data), (live, "live".to_owned()));
}

#[tokio::test]
async fn last_event_id_in_the_query_works_and_the_header_wins() {
    let server = start_default().await;
    let addr = server.addr();
    let first = publish(addr, json!({"to": "all", "data": "1"})).await;
    let second = publish(addr, json!({"to": "all", "data": "2"})).await;
    publish(addr, json!({"to": "all", "data": "3"})).await;

    let mut by_query = SseClient::connect(
        addr,
        &format!(
            "/api/v1/stream?user=u&lastEventID={}",
            first.replace('#', "%23")
        ),
    )
    .await;
    assert_eq!(by_query.next().await.data, "2");
    assert_eq!(by_query.next().await.data, "3");

    let mut both = SseClient::connect_with(
        addr,
        &format!(
            "/api/v1/stream?user=u&lastEventID={}",
            first.replace('#', "%23")
        ),
        &[("Last-Event-ID", &second)],
    )
    .await;
    assert_eq!(both.next().await.data, "3");
}

#[tokio::test]
async fn resume_from_a_publisher_supplied_id() {
    let server = start_default().await;
    let addr = server.addr();
    publish(addr, json!({"to": "all", "data": "a", "id": "evt-a"})).await;
    publish(addr, json!({"to": "all", "data": "b"})).await;
    let mut tab =
        SseClient::connect_with(addr, "/sse/subscribe/u", &[("Last-Event-ID", "evt-a")]).await;
    assert_eq!(tab.next().await.data, "b");
}

#[tokio::test]
async fn unknown_or_expired_last_event_id_gets_a_reset_event_never_pretended_continuity() {
    let mut config = config();
    config.history_max_events = 5;
    let server = start(config).await;
    let addr = server.addr();
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(publish(addr, json!({"to": "all", "data": format!("{i}")})).await);
    }
    for stale in [ids[0].as_str(), "no-such-id", "999999"] {
        let mut tab =
            SseClient::connect_with(addr, "/sse/subscribe/u", &[("Last-Event-ID", stale)]).await;
        assert_eq!(tab.header("pushwire-reset"), Some("1"), "{stale}");
        assert_eq!(tab.header("last-event-id"), Some(ids[9].as_str()));
        let reset = tab.next().await;
        assert_eq!(reset.event, "reset", "{stale}");
        assert_eq!(reset.id.as_deref(), Some(ids[9].as_str()));
        let data: serde_json::Value = serde_json::from_str(&reset.data).unwrap();
        assert_eq!(data["requested"], stale);
        assert_eq!(data["last_event_id"], ids[9].as_str());
        // Nothing retained is replayed as if it followed the stale id.
        tab.expect_silence(Duration::from_millis(200)).await;
    }
    // The oldest retained event's predecessor is still a valid resume point.
    let mut tab =
        SseClient::connect_with(addr, "/sse/subscribe/u", &[("Last-Event-ID", &ids[4])]).await;
    let events = tab.take(5).await;
    assert_eq!(events[0].data, "5");
    assert_eq!(events[4].data, "9");
}

#[tokio::test]
async fn history_api_pages_and_filters() {
    let server = start_default().await;
    let addr = server.addr();
    let mut ids = Vec::new();
    for i in 0..10 {
        let to = if i % 2 == 0 {
            json!({"users": ["u1"]})
        } else {
            json!({"topics": ["t"]})
        };
        ids.push(publish(addr, json!({"to": to, "data": format!("{i}")})).await);
    }
    let page = get(addr, "/api/v1/events?limit=3").await.json();
    let data: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(data, vec![json!("0"), json!("1"), json!("2")]);
    assert_eq!(page["next"], ids[2].as_str());

    let page = get(
        addr,
        &format!(
            "/api/v1/events?after={}&limit=100",
            ids[2].replace('#', "%23")
        ),
    )
    .await
    .json();
    assert_eq!(page["events"].as_array().unwrap().len(), 7);

    let page = get(addr, "/api/v1/events?user=u1").await.json();
    let data: Vec<_> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["data"].clone())
        .collect();
    assert_eq!(
        data,
        vec![json!("0"), json!("2"), json!("4"), json!("6"), json!("8")]
    );
    assert_eq!(page["events"][0]["to"], json!({"users": ["u1"]}));

    let page = get(addr, "/api/v1/events?topic=t&limit=2").await.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);

    let reply = get(addr, "/api/v1/events?after=nope").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "unknown_last_event_id");
    assert_eq!(get(addr, "/api/v1/events?limit=0").await.status, 400);
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = start_default().await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/sse/subscribe/u1").await;
    let stopping = tokio::spawn(server.shutdown());
    assert!(tab.wait_end(WAIT).await, "stream not ended by shutdown");
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn resume_from_a_non_ascii_publisher_id_as_browsers_send_it() {
    let server = start_default().await;
    let addr = server.addr();
    publish(addr, json!({"to": "all", "data": "a", "id": "订单-42"})).await;
    publish(addr, json!({"to": "all", "data": "b"})).await;
    let mut tab =
        SseClient::connect_with(addr, "/sse/subscribe/u", &[("Last-Event-ID", "订单-42")]).await;
    assert_eq!(tab.status, 200);
    assert_eq!(tab.next().await.data, "b");
}
