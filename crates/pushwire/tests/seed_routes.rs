//! The seed service's routes, same paths and parameters, against the real
//! server over TCP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use pushwire_testkit::prelude::*;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn stream_opens_with_headers_and_a_retry_frame_only() {
    let server = start_default().await;
    let mut tab = SseClient::connect(server.addr(), "/sse/subscribe/u1").await;
    assert_eq!(tab.status, 200);
    assert_eq!(
        tab.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    assert_eq!(tab.header("cache-control"), Some("no-cache"));
    assert_eq!(tab.header("x-accel-buffering"), Some("no"));
    tab.expect_silence(QUIET).await;
    // The first frame carries retry and no data: no greeting event.
    assert_eq!(String::from_utf8_lossy(&tab.raw), "retry: 3000\n\n");
}

#[tokio::test]
async fn send_message_reaches_the_user_by_path_and_by_query_subscription() {
    let server = start_default().await;
    let addr = server.addr();
    let mut by_path = SseClient::connect(addr, "/sse/subscribe/alice").await;
    let mut by_query = SseClient::connect(addr, "/sse/subscribe?id=bob").await;

    let reply = get(addr, "/sse/sendMessage?userId=alice&message=hi%20alice").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let id = reply.json()["id"].as_str().unwrap().to_owned();
    let event = by_path.next().await;
    assert_eq!(event.data, "hi alice");
    assert_eq!(event.id.as_deref(), Some(id.as_str()));

    let reply = get(addr, "/sse/push?id=bob&content=hi%20bob").await;
    assert_eq!(reply.status, 200);
    assert_eq!(by_query.next().await.data, "hi bob");

    by_path.expect_silence(QUIET).await;
    by_query.expect_silence(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn management_calls_accept_post_with_a_form_body() {
    let server = start_default().await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/sse/subscribe/u1").await;
    let reply = request(
        addr,
        "POST",
        "/sse/sendMessage",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"userId=u1&message=line+one%0Aline+two",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(tab.next().await.data, "line one\nline two");

    let reply = request(addr, "POST", "/sse/push?id=u1&content=by%20query", &[], b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(tab.next().await.data, "by query");
}

#[tokio::test]
async fn two_tabs_of_one_user_both_receive() {
    let server = start_default().await;
    let addr = server.addr();
    let mut tab1 = SseClient::connect(addr, "/sse/subscribe/u1").await;
    let mut tab2 = SseClient::connect(addr, "/sse/subscribe/u1").await;
    get(addr, "/sse/sendMessage?userId=u1&message=both").await;
    assert_eq!(tab1.next().await.data, "both");
    assert_eq!(tab2.next().await.data, "both");
    assert_eq!(user_count(addr).await, 1);
}

#[tokio::test]
async fn group_send_reaches_exactly_the_users_with_the_prefix() {
    let server = start_default().await;
    let addr = server.addr();
    let mut in_group = Vec::new();
    for user in ["g1-a", "g1-b", "g1-"] {
        in_group.push(SseClient::connect(addr, &format!("/sse/subscribe/{user}")).await);
    }
    let mut outside = Vec::new();
    for user in ["g2-a", "g1", "xg1-a", "G1-a"] {
        outside.push(SseClient::connect(addr, &format!("/sse/subscribe/{user}")).await);
    }
    let reply = get(addr, "/sse/groupSendMessage?groupId=g1-&message=team").await;
    assert_eq!(reply.status, 200);
    for tab in &mut in_group {
        assert_eq!(tab.next().await.data, "team");
    }
    for tab in &mut outside {
        tab.expect_silence(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn batch_send_reaches_everyone_or_the_listed_users() {
    let server = start_default().await;
    let addr = server.addr();
    let mut a = SseClient::connect(addr, "/sse/subscribe/a").await;
    let mut b = SseClient::connect(addr, "/sse/subscribe/b").await;
    let mut c = SseClient::connect(addr, "/sse/subscribe/c").await;

    get(addr, "/sse/batchSendMessage?message=everyone").await;
    for tab in [&mut a, &mut b, &mut c] {
        assert_eq!(tab.next().await.data, "everyone");
    }

    let reply = get(addr, "/sse/batchSendMessage?message=some&ids=a,c,a").await;
    assert_eq!(reply.status, 200);
    assert_eq!(a.next().await.data, "some");
    assert_eq!(c.next().await.data, "some");
    // `a` was listed twice and still gets it once; `b` was not listed.
    a.expect_silence(QUIET).await;
    b.expect_silence(Duration::from_millis(1)).await;
}

#[tokio::test]
async fn close_ends_all_of_the_users_streams_and_count_follows() {
    let server = start_default().await;
    let addr = server.addr();
    let mut t1 = SseClient::connect(addr, "/sse/subscribe/u1").await;
    let mut t2 = SseClient::connect(addr, "/sse/subscribe/u1").await;
    let mut other = SseClient::connect(addr, "/sse/subscribe/u2").await;
    assert_eq!(user_count(addr).await, 2);

    let reply = get(addr, "/sse/close/u1").await;
    assert_eq!(reply.json()["closed"], 2);
    assert!(t1.wait_end(WAIT).await, "tab 1 still open");
    assert!(t2.wait_end(WAIT).await, "tab 2 still open");
    assert_eq!(user_count(addr).await, 1);
    assert_eq!(
        get(addr, "/sse/getIds").await.json(),
        serde_json::json!(["u2"])
    );

    let reply = get(addr, "/sse/over?id=u2").await;
    assert_eq!(reply.json()["closed"], 1);
    assert!(other.wait_end(WAIT).await);
    assert_eq!(user_count(addr).await, 0);
}

#[tokio::test]
async fn count_and_ids_are_exact_after_a_storm_of_open_close_cycles() {
    let server = start_default().await;
    let addr = server.addr();
    let _stays = SseClient::connect(addr, "/sse/subscribe/steady").await;
    let mut tasks = Vec::new();
    for worker in 0..10 {
        tasks.push(tokio::spawn(async move {
            for cycle in 0..20 {
                // Page refreshes: a new tab opens, the old one drops.
                let user = format!("storm-{}", (worker * 20 + cycle) % 7);
                let tab = SseClient::connect(addr, &format!("/sse/subscribe/{user}")).await;
                assert_eq!(tab.status, 200);
                drop(tab);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    eventually("only the steady user is online", || async {
        user_count(addr).await == 1
    })
    .await;
    assert_eq!(
        get(addr, "/sse/getIds").await.json(),
        serde_json::json!(["steady"])
    );
    let stats = get(addr, "/api/v1/stats").await.json();
    assert_eq!(stats["streams"], 1);
}

#[tokio::test]
async fn missing_parameters_are_clear_errors_and_publish_nothing() {
    let server = start_default().await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/sse/subscribe/u1").await;
    for path in [
        "/sse/sendMessage?userId=u1",
        "/sse/sendMessage?message=x",
        "/sse/groupSendMessage?message=x",
        "/sse/subscribe",
        "/sse/over",
    ] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 400, "{path}: {}", reply.body);
        assert_eq!(reply.json()["error"]["code"], "missing_parameter", "{path}");
    }
    let reply = get(addr, "/sse/sendMessage?userId=u1&userId=u2&message=x").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "conflicting_parameter");
    let reply = get(addr, "/sse/sendMessage?userId=u1&message=%FF").await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["error"]["code"], "invalid_utf8");
    tab.expect_silence(QUIET).await;
}

#[tokio::test]
async fn cross_origin_pages_may_open_streams_but_get_no_grant_for_management() {
    let server = start_default().await;
    let addr = server.addr();
    let tab = SseClient::connect_with(
        addr,
        "/sse/subscribe/u1",
        &[("Origin", "http://elsewhere.example")],
    )
    .await;
    assert_eq!(tab.header("access-control-allow-origin"), Some("*"));
    let reply = request(
        addr,
        "GET",
        "/sse/getUserCount",
        &[("Origin", "http://elsewhere.example")],
        b"",
    )
    .await;
    // A keyless hub does not even serve it: the page is of another site.
    assert_eq!(reply.status, 403);
    assert_eq!(reply.json()["error"]["code"], "cross_origin");
    assert_eq!(reply.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn listed_origins_may_open_streams_with_credentials_the_wildcard_never() {
    let mut config = config();
    config.cors_origins = vec!["https://app.example.com".to_owned()];
    let server = start(config).await;
    for path in [
        "/sse/subscribe/u1",
        "/sse/subscribe?id=u1",
        "/api/v1/stream?topic=t",
    ] {
        let tab = SseClient::connect_with(
            server.addr(),
            path,
            &[("Origin", "https://app.example.com")],
        )
        .await;
        assert_eq!(tab.status, 200, "{path}");
        assert_eq!(
            tab.header("access-control-allow-origin"),
            Some("https://app.example.com"),
            "{path}"
        );
        assert_eq!(
            tab.header("access-control-allow-credentials"),
            Some("true"),
            "{path}"
        );
    }
    // An origin not listed gets no grant at all.
    let tab = SseClient::connect_with(
        server.addr(),
        "/sse/subscribe/u1",
        &[("Origin", "https://elsewhere.example")],
    )
    .await;
    assert_eq!(tab.header("access-control-allow-origin"), None);

    // `*` (the default): any origin, never with credentials (the Fetch
    // standard forbids it, and a browser would refuse the stream).
    let open = start_default().await;
    let tab = SseClient::connect_with(
        open.addr(),
        "/sse/subscribe/u1",
        &[("Origin", "https://app.example.com")],
    )
    .await;
    assert_eq!(tab.header("access-control-allow-origin"), Some("*"));
    assert_eq!(tab.header("access-control-allow-credentials"), None);
}
