//! The JSON API, topics, auth and input errors, against the real server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pushwire_testkit::prelude::*;
use serde_json::json;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn publish_one_and_a_batch_with_ids_in_order() {
    let server = start_default().await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/api/v1/stream?user=u1").await;

    let one = post_json(
        addr,
        "/api/v1/publish",
        &json!({"to": {"users": ["u1"]}, "event": "note", "data": "first", "retry": 1500}),
    )
    .await;
    assert_eq!(one.status, 200, "{}", one.body);
    let first_id = one.json()["id"].as_str().unwrap().to_owned();

    let batch = post_json(
        addr,
        "/api/v1/publish",
        &json!([
            {"to": {"users": ["u1"]}, "data": "second"},
            {"to": "all", "data": {"structured": [1, 2]}},
            {"to": {"users": ["u1"]}, "data": "fourth", "id": "order-42"}
        ]),
    )
    .await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    let ids: Vec<String> = batch.json()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], "order-42");

    let events = tab.take(4).await;
    assert_eq!(events[0].event, "note");
    assert_eq!(events[0].id.as_deref(), Some(first_id.as_str()));
    assert_eq!(events[1].data, "second");
    assert_eq!(events[2].data, r#"{"structured":[1,2]}"#);
    assert_eq!(events[3].id.as_deref(), Some("order-42"));
    let got: Vec<_> = events[1..].iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(got, ids);
    // Hub ids strictly increase.
    let n: Vec<u64> = [&first_id, &ids[0], &ids[1]]
        .iter()
        .map(|s| pushwire_core::event::hub_sequence(s).unwrap())
        .collect();
    assert!(n.windows(2).all(|w| w[0] < w[1]), "{n:?}");
    assert!(String::from_utf8_lossy(&tab.raw).contains("retry: 1500\n"));
}

#[tokio::test]
async fn topic_streams_and_user_streams_with_topics() {
    let server = start_default().await;
    let addr = server.addr();
    let mut prices = SseClient::connect(addr, "/api/v1/stream?topic=prices&topic=news").await;
    let mut user_and_topic = SseClient::connect(addr, "/sse/subscribe/u1?topic=prices").await;
    let mut other = SseClient::connect(addr, "/api/v1/stream?topic=weather").await;

    publish(
        addr,
        json!({"to": {"topics": ["prices"]}, "data": "EUR/CNY 7.8"}),
    )
    .await;
    assert_eq!(prices.next().await.data, "EUR/CNY 7.8");
    assert_eq!(user_and_topic.next().await.data, "EUR/CNY 7.8");

    // Named twice by one event, a stream on both topics still gets it once.
    publish(
        addr,
        json!({"to": {"topics": ["prices", "news"]}, "data": "both"}),
    )
    .await;
    assert_eq!(prices.next().await.data, "both");
    assert_eq!(user_and_topic.next().await.data, "both");
    prices.expect_silence(QUIET).await;

    publish(addr, json!({"to": {"users": ["u1"]}, "data": "direct"})).await;
    assert_eq!(user_and_topic.next().await.data, "direct");
    other.expect_silence(Duration::from_millis(1)).await;
    prices.expect_silence(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let server = start_default().await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/api/v1/stream?user=u1").await;
    let cases = [
        (
            json!({"to": "all", "data": "x", "event": "a\nb"}),
            400,
            "invalid_field",
        ),
        (
            json!({"to": "all", "data": "x", "id": "a\rb"}),
            400,
            "invalid_field",
        ),
        (
            json!({"to": "all", "data": "x", "id": "#x"}),
            400,
            "invalid_field",
        ),
        (
            json!({"to": "all", "data": "x", "id": "123"}),
            400,
            "invalid_field",
        ),
        (
            json!({"to": {"users": []}, "data": "x"}),
            400,
            "invalid_field",
        ),
        (
            json!({"to": {"group": "g"}, "data": "x"}),
            400,
            "invalid_json",
        ),
        (json!({"to": "all"}), 400, "invalid_json"),
        (
            json!({"to": "all", "data": "x", "extra": 1}),
            400,
            "invalid_json",
        ),
        (
            json!({"to": "all", "data": "x", "retry": -1}),
            400,
            "invalid_json",
        ),
        (json!([]), 400, "empty_batch"),
        // One bad event refuses the whole batch.
        (
            json!([{"to": "all", "data": "ok"}, {"to": "all", "data": "x", "event": "\n"}]),
            400,
            "invalid_field",
        ),
    ];
    for (body, status, code) in cases {
        let reply = post_json(addr, "/api/v1/publish", &body).await;
        assert_eq!(reply.status, status, "{body}: {}", reply.body);
        assert_eq!(reply.json()["error"]["code"], code, "{body}");
        assert!(reply.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[("Content-Type", "application/json")],
        b"{not json",
    )
    .await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "invalid_json");

    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[("Content-Type", "text/plain")],
        b"x",
    )
    .await;
    assert_eq!(reply.status, 415);

    let big = json!({"to": "all", "data": "x".repeat(2 * 1024 * 1024)});
    let reply = post_json(addr, "/api/v1/publish", &big).await;
    assert_eq!(reply.status, 413);
    assert_eq!(reply.json()["error"]["code"], "body_too_large");

    let reply = get(addr, "/no/such/route").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["error"]["code"], "not_found");
    let reply = get(addr, "/api/v1/publish").await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.json()["error"]["code"], "method_not_allowed");

    tab.expect_silence(QUIET).await;
    let stats = get(addr, "/api/v1/stats").await.json();
    assert_eq!(stats["events_published"], 0);
    assert_eq!(stats["last_event_id"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_publisher_id_is_unique() {
    let server = start_default().await;
    let addr = server.addr();
    publish(addr, json!({"to": "all", "data": "x", "id": "once"})).await;
    let reply = post_json(
        addr,
        "/api/v1/publish",
        &json!({"to": "all", "data": "y", "id": "once"}),
    )
    .await;
    assert_eq!(reply.status, 409);
    assert_eq!(reply.json()["error"]["code"], "duplicate_id");
    let reply = post_json(
        addr,
        "/api/v1/publish",
        &json!([{"to": "all", "data": "a", "id": "twin"}, {"to": "all", "data": "b", "id": "twin"}]),
    )
    .await;
    assert_eq!(reply.status, 409);
    assert_eq!(
        get(addr, "/api/v1/stats").await.json()["events_published"],
        1
    );
}

#[tokio::test]
async fn publisher_key_is_required_from_everyone_when_configured() {
    let mut config = config();
    config.publisher_key = Some("s3cret".into());
    let server = start(config).await;
    let addr = server.addr();
    let body = json!({"to": "all", "data": "x"}).to_string();

    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 401);
    assert!(reply
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));

    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer wrong"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403);

    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", "Bearer s3cret"),
        ],
        body.as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);

    // Seed management routes too; streams stay open to anonymous subscribers.
    assert_eq!(get(addr, "/sse/getUserCount").await.status, 401);
    assert_eq!(get(addr, "/sse/close/u1").await.status, 401);
    let tab = SseClient::connect(addr, "/sse/subscribe/u1").await;
    assert_eq!(tab.status, 200);
}

#[tokio::test]
async fn without_a_key_proxied_requests_are_not_trusted_as_local() {
    let server = start_default().await;
    let reply = request(
        server.addr(),
        "GET",
        "/sse/getUserCount",
        &[("X-Forwarded-For", "203.0.113.9")],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403);
    assert!(reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--publisher-key"));
}

#[tokio::test]
async fn users_stats_and_delete() {
    let server = start_default().await;
    let addr = server.addr();
    let _a1 = SseClient::connect(addr, "/sse/subscribe/a").await;
    let _a2 = SseClient::connect(addr, "/sse/subscribe/a").await;
    let mut b = SseClient::connect(addr, "/sse/subscribe/b").await;
    let _t = SseClient::connect(addr, "/api/v1/stream?topic=t").await;

    let users = get(addr, "/api/v1/users").await.json();
    assert_eq!(
        users,
        json!({"count": 2, "users": [{"id": "a", "streams": 2}, {"id": "b", "streams": 1}]})
    );
    let stats = get(addr, "/api/v1/stats").await.json();
    assert_eq!(stats["streams"], 4);
    assert_eq!(stats["users"], 2);
    assert_eq!(stats["topics"], 1);

    let reply = request(addr, "DELETE", "/api/v1/users/b", &[], b"").await;
    assert_eq!(reply.json()["closed"], 1);
    assert!(b.wait_end(WAIT).await);
    assert_eq!(get(addr, "/api/v1/users").await.json()["count"], 1);
}

#[tokio::test]
async fn metrics_and_health() {
    let server = start_default().await;
    let addr = server.addr();
    let _tab = SseClient::connect(addr, "/sse/subscribe/u1").await;
    publish(addr, json!({"to": "all", "data": "x"})).await;
    let metrics = get(addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    for line in [
        "pushwire_streams_open 1",
        "pushwire_users_online 1",
        "pushwire_events_published_total 1",
        "pushwire_deliveries_total 1",
        "pushwire_publish_duration_seconds_count 1",
        &format!(
            "pushwire_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
        "pushwire_history_events 1",
        "pushwire_history_oldest_seq 1",
        "pushwire_history_newest_seq 1",
    ] {
        assert!(
            metrics.body.contains(line),
            "missing {line} in\n{}",
            metrics.body
        );
    }
    assert_eq!(get(addr, "/healthz").await.body, "ok\n");
}

/// The value of an unlabelled sample in a scrape.
fn sample(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in\n{scrape}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_include_the_process_and_the_history_bounds() {
    let server = start_default().await;
    let addr = server.addr();
    let empty = get(addr, "/metrics").await.body;
    assert_eq!(sample(&empty, "pushwire_history_events"), 0.0);
    for n in 0..3 {
        publish(addr, json!({"to": "all", "data": n.to_string()})).await;
    }
    let scrape = get(addr, "/metrics").await.body;
    assert_eq!(sample(&scrape, "pushwire_history_events"), 3.0);
    assert_eq!(sample(&scrape, "pushwire_history_oldest_seq"), 1.0);
    assert_eq!(sample(&scrape, "pushwire_history_newest_seq"), 3.0);
    assert!(sample(&scrape, "process_resident_memory_bytes") > 1e6);
    assert!(sample(&scrape, "process_open_fds") >= 3.0);
    assert!(sample(&scrape, "process_cpu_seconds_total") >= 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = sample(&scrape, "process_start_time_seconds");
    assert!(
        started > now - 86_400.0 && started <= now + 1.0,
        "{started}"
    );
}

#[tokio::test]
async fn metrics_listen_serves_metrics_and_nothing_else() {
    let mut config = config();
    config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let server = start(config).await;
    let scrape_at = server.metrics_addr().expect("a metrics listener");
    assert_ne!(scrape_at, server.addr());
    publish(server.addr(), json!({"to": "all", "data": "x"})).await;
    let scrape = get(scrape_at, "/metrics").await;
    assert_eq!(scrape.status, 200);
    assert_eq!(sample(&scrape.body, "pushwire_events_published_total"), 1.0);
    // Still on the main port, as before.
    assert_eq!(get(server.addr(), "/metrics").await.status, 200);
    for path in ["/", "/healthz", "/api/v1/stats", "/sse/subscribe/u"] {
        assert_eq!(get(scrape_at, path).await.status, 404, "{path}");
    }
    let publish = post_json(
        scrape_at,
        "/api/v1/publish",
        &json!({"to": "all", "data": "x"}),
    )
    .await;
    assert_eq!(publish.status, 404);
}

#[tokio::test]
async fn streams_beyond_the_limit_are_refused_with_503() {
    let mut config = config();
    config.max_streams = 2;
    let server = start(config).await;
    let addr = server.addr();
    let _a = SseClient::connect(addr, "/sse/subscribe/a").await;
    let b = SseClient::connect(addr, "/sse/subscribe/b").await;
    let refused = get(addr, "/sse/subscribe/c").await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json()["error"]["code"], "too_many_streams");
    assert!(get(addr, "/metrics")
        .await
        .body
        .contains("pushwire_streams_refused_total 1"));
    drop(b);
    eventually("a slot is free again", || async {
        SseClient::connect(addr, "/sse/subscribe/c").await.status == 200
    })
    .await;
}
