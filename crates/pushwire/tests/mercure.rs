//! The Mercure protocol, section by section: publication and its
//! validation, every selector kind, authorization (tokens, their
//! precedence, private updates), reconciliation, subscription events and
//! the subscriptions API, CORS. Both generations of the protocol: the
//! classic one (`topic=`, the `mercure` claim) and the current draft
//! (`match=`, `match_urlpattern=`, `authorization_details`).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushwire_testkit::prelude::*;
use serde_json::{json, Value};

const PUBLISHER_KEY: &str = "publisher-secret-for-tests";
const SUBSCRIBER_KEY: &str = "subscriber-secret-for-tests";
const AUDIENCE: &str = "https://hub.example/.well-known/mercure";
const BOOKS: &str = "https://example.com/books/{id}";

fn hub_config() -> pushwire::config::ServeConfig {
    let mut c = config();
    c.publisher_jwt_key = vec![PUBLISHER_KEY.into()];
    c.subscriber_jwt_key = vec![SUBSCRIBER_KEY.into()];
    c.jwt_audience = Some(AUDIENCE.into());
    c
}

fn sign(key: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .expect("sign")
}

/// A classic publisher token that may publish to these selectors.
fn publisher(selectors: &[&str]) -> String {
    sign(
        PUBLISHER_KEY,
        json!({ "mercure": { "publish": selectors } }),
    )
}

/// A classic subscriber token that may read these selectors' private updates.
fn subscriber(selectors: &[&str]) -> String {
    sign(
        SUBSCRIBER_KEY,
        json!({ "mercure": { "subscribe": selectors } }),
    )
}

/// A query value, encoded.
fn enc(text: &str) -> String {
    form_value(text)
}

/// `POST /.well-known/mercure` with a form and an optional Bearer token.
async fn post(addr: SocketAddr, token: Option<&str>, fields: &[(&str, &str)]) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    request(
        addr,
        "POST",
        "/.well-known/mercure",
        &headers,
        form(fields).as_bytes(),
    )
    .await
}

/// Publishes with a wildcard publisher token and returns the id.
async fn publish_update(addr: SocketAddr, fields: &[(&str, &str)]) -> String {
    let reply = post(addr, Some(&publisher(&["*"])), fields).await;
    assert_eq!(reply.status, 200, "publish failed: {}", reply.body);
    reply.body
}

/// `POST /api/v1/publish` with a wildcard publisher token.
async fn api_publish(addr: SocketAddr, body: &Value) -> Reply {
    let auth = format!("Bearer {}", publisher(&["*"]));
    request(
        addr,
        "POST",
        "/api/v1/publish",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        body.to_string().as_bytes(),
    )
    .await
}

async fn subscribe(addr: SocketAddr, query: &str) -> SseClient {
    let client = SseClient::connect(addr, &format!("/.well-known/mercure?{query}")).await;
    assert_eq!(client.status, 200, "subscribe {query} refused");
    client
}

fn topic_query(selectors: &[&str]) -> String {
    selectors
        .iter()
        .map(|s| format!("topic={}", enc(s)))
        .collect::<Vec<_>>()
        .join("&")
}

const SILENCE: Duration = Duration::from_millis(300);

// Publication

#[tokio::test]
async fn every_publish_field_reaches_the_subscriber() -> TestResult {
    let hub = start(hub_config()).await;
    let mut client = subscribe(hub.addr(), &topic_query(&["https://example.com/books/1"])).await;
    let reply = post(
        hub.addr(),
        Some(&publisher(&["*"])),
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "{\"title\":\"x\"}\n\nsecond paragraph"),
            ("id", "urn:uuid:book-1-v2"),
            ("type", "book-updated"),
            ("retry", "2500"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .is_some_and(|v| v.starts_with("text/plain")));
    assert_eq!(reply.body, "urn:uuid:book-1-v2");
    let event = client.next().await;
    assert_eq!(event.id.as_deref(), Some("urn:uuid:book-1-v2"));
    assert_eq!(event.event, "book-updated");
    assert_eq!(event.data, "{\"title\":\"x\"}\n\nsecond paragraph");
    Ok(())
}

#[tokio::test]
async fn the_hub_generates_an_id_when_none_is_given() -> TestResult {
    let hub = start(hub_config()).await;
    let mut client = subscribe(hub.addr(), "topic=a").await;
    let id = publish_update(hub.addr(), &[("topic", "a"), ("data", "d")]).await;
    assert!(!id.is_empty());
    let event = client.next().await;
    assert_eq!(event.id.as_deref(), Some(id.as_str()));
    assert_eq!(event.event, "message");
    Ok(())
}

#[tokio::test]
async fn invalid_updates_are_refused_and_change_nothing() -> TestResult {
    let mut c = hub_config();
    c.max_body = 4096;
    let hub = start(c).await;
    let mut client = subscribe(hub.addr(), "topic=a").await;
    let token = publisher(&["*"]);
    let cases: Vec<(Vec<(&str, String)>, u16)> = vec![
        (vec![("id", "a\nb".into())], 400),
        (vec![("id", "a\rb".into())], 400),
        (vec![("id", "a\0b".into())], 400),
        (vec![("id", "#fragment".into())], 400),
        (vec![("type", "a\nb".into())], 400),
        (vec![("type", "a\rb".into())], 400),
        (vec![("retry", "12a".into())], 400),
        (vec![("retry", "-1".into())], 400),
        (vec![("retry", "".into())], 400),
        (vec![("data", "x".repeat(8192))], 413),
    ];
    for (extra, status) in cases {
        let mut fields: Vec<(&str, &str)> = vec![("topic", "a")];
        fields.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let reply = post(hub.addr(), Some(&token), &fields).await;
        assert_eq!(reply.status, status, "{extra:?}: {}", reply.body);
    }
    let reply = post(hub.addr(), Some(&token), &[("data", "no topic")]).await;
    assert_eq!(reply.status, 400);
    let reply = request(
        hub.addr(),
        "POST",
        "/.well-known/mercure",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {token}")),
        ],
        b"{\"topic\":\"a\"}",
    )
    .await;
    assert_eq!(reply.status, 415);
    client.expect_silence(SILENCE).await;
    let auth = format!("Bearer {token}");
    let history = get_with(hub.addr(), "/api/v1/events", &[("Authorization", &auth)])
        .await
        .json();
    assert_eq!(history["events"], json!([]));
    Ok(())
}

#[tokio::test]
async fn the_hub_namespace_cannot_be_published_to() -> TestResult {
    let hub = start(hub_config()).await;
    for topic in [
        "/.well-known/mercure/subscriptions/x/y",
        "https://any.example/.well-known/mercure/subscriptions/x/y",
        "/.well-known/mercure",
    ] {
        let reply = post(hub.addr(), Some(&publisher(&["*"])), &[("topic", topic)]).await;
        assert_eq!(reply.status, 403, "{topic}: {}", reply.body);
    }
    let reply = api_publish(
        hub.addr(),
        &json!({"to": {"topics": ["/.well-known/mercure/subscriptions/a/b"]}, "data": "x"}),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    Ok(())
}

// Selectors

#[tokio::test]
async fn every_selector_kind_selects_what_it_should_and_nothing_else() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let mut exact = subscribe(addr, &topic_query(&["https://example.com/books/1"])).await;
    let mut any = subscribe(addr, "topic=*").await;
    let mut template = subscribe(addr, &topic_query(&[BOOKS])).await;
    let mut matched = subscribe(
        addr,
        &format!("match={}", enc("https://example.com/books/1")),
    )
    .await;
    let mut pattern = subscribe(
        addr,
        &format!("match_urlpattern={}", enc("https://example.com/books/:id")),
    )
    .await;
    let mut other = subscribe(addr, &topic_query(&["https://example.com/authors/{id}"])).await;

    publish_update(
        addr,
        &[("topic", "https://example.com/books/1"), ("data", "one")],
    )
    .await;
    publish_update(
        addr,
        &[("topic", "https://example.com/books/2"), ("data", "two")],
    )
    .await;
    publish_update(
        addr,
        &[
            ("topic", "https://example.com/books/1/reviews"),
            ("data", "deep"),
        ],
    )
    .await;

    assert_eq!(exact.next().await.data, "one");
    exact.expect_silence(SILENCE).await;
    let all: Vec<String> = any.take(3).await.into_iter().map(|e| e.data).collect();
    assert_eq!(all, ["one", "two", "deep"]);
    for client in [&mut template, &mut pattern] {
        let got: Vec<String> = client.take(2).await.into_iter().map(|e| e.data).collect();
        assert_eq!(got, ["one", "two"]);
        client.expect_silence(SILENCE).await;
    }
    assert_eq!(matched.next().await.data, "one");
    matched.expect_silence(SILENCE).await;
    other.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn a_union_of_selectors_delivers_each_update_once() -> TestResult {
    let hub = start(hub_config()).await;
    let query = format!(
        "{}&match={}&match_urlpattern={}",
        topic_query(&[BOOKS, "*"]),
        enc("https://example.com/books/3"),
        enc("https://example.com/books/:id")
    );
    let mut client = subscribe(hub.addr(), &query).await;
    publish_update(
        hub.addr(),
        &[("topic", "https://example.com/books/3"), ("data", "x")],
    )
    .await;
    publish_update(
        hub.addr(),
        &[("topic", "https://example.com/other"), ("data", "y")],
    )
    .await;
    let got: Vec<String> = client.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["x", "y"]);
    client.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn alternate_topics_reach_their_subscribers() -> TestResult {
    let hub = start(hub_config()).await;
    let mut alternate = subscribe(hub.addr(), "topic=alt").await;
    publish_update(
        hub.addr(),
        &[("topic", "canonical"), ("topic", "alt"), ("data", "x")],
    )
    .await;
    assert_eq!(alternate.next().await.data, "x");
    Ok(())
}

#[tokio::test]
async fn malformed_selectors_are_refused() -> TestResult {
    let hub = start(hub_config()).await;
    for query in [
        "matchFoo=x".to_owned(),
        "MATCHEXACT=x".to_owned(),
        "topic=a%01b".to_owned(),
        format!("topic={}", enc("https://example.com/{unclosed")),
        format!("match_urlpattern={}", enc("https://example.com/(")),
        "other=1".to_owned(),
    ] {
        let reply = get(hub.addr(), &format!("/.well-known/mercure?{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
    }
    Ok(())
}

#[tokio::test]
async fn mercure_and_api_streams_share_topic_events() -> TestResult {
    let hub = start(hub_config()).await;
    let mut mercure = subscribe(hub.addr(), "topic=shared").await;
    let mut api = SseClient::connect(hub.addr(), "/api/v1/stream?topic=shared").await;
    let first = publish_update(hub.addr(), &[("topic", "shared"), ("data", "from mercure")]).await;
    let second = api_publish(
        hub.addr(),
        &json!({"to": {"topics": ["shared"]}, "data": "from api"}),
    )
    .await
    .json()["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for client in [&mut mercure, &mut api] {
        let got = client.take(2).await;
        assert_eq!(got[0].id.as_deref(), Some(first.as_str()));
        assert_eq!(got[0].data, "from mercure");
        assert_eq!(got[1].id.as_deref(), Some(second.as_str()));
        assert_eq!(got[1].data, "from api");
    }
    // A Mercure subscription listens to topics only: no broadcasts.
    let reply = api_publish(hub.addr(), &json!({"to": "all", "data": "everyone"})).await;
    assert_eq!(reply.status, 200);
    mercure.expect_silence(SILENCE).await;
    Ok(())
}

// Authorization

#[tokio::test]
async fn publishing_needs_a_valid_token_that_grants_the_topic() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let fields = [("topic", "https://example.com/books/1"), ("data", "x")];

    let reply = post(addr, None, &fields).await;
    assert_eq!(reply.status, 401);
    assert!(reply
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer") && !v.contains("error=")));

    let expired = sign(
        PUBLISHER_KEY,
        json!({"mercure": {"publish": ["*"]}, "exp": 1_000_000_000}),
    );
    let not_yet = sign(
        PUBLISHER_KEY,
        json!({"mercure": {"publish": ["*"]}, "nbf": 4_000_000_000u64}),
    );
    let wrong_key = sign("another-secret", json!({"mercure": {"publish": ["*"]}}));
    let wrong_alg = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &json!({"mercure": {"publish": ["*"]}}),
        &EncodingKey::from_secret(PUBLISHER_KEY.as_bytes()),
    )?;
    let subscriber_token = subscriber(&["*"]);
    for token in [
        &expired,
        &not_yet,
        &wrong_key,
        &wrong_alg,
        &subscriber_token,
        &"garbage".to_owned(),
    ] {
        let reply = post(addr, Some(token), &fields).await;
        assert_eq!(reply.status, 401, "{token}: {}", reply.body);
        assert!(reply
            .header("www-authenticate")
            .is_some_and(|v| v.contains("error=\"invalid_token\"")));
    }

    let narrow = publisher(&["https://example.com/authors/{id}"]);
    let reply = post(addr, Some(&narrow), &fields).await;
    assert_eq!(reply.status, 403);
    assert!(reply
        .header("www-authenticate")
        .is_some_and(|v| v.contains("insufficient_scope")));
    // Every topic of the update must be granted, alternates included.
    let books = publisher(&[BOOKS]);
    let reply = post(
        addr,
        Some(&books),
        &[
            ("topic", "https://example.com/books/1"),
            ("topic", "elsewhere"),
        ],
    )
    .await;
    assert_eq!(reply.status, 403);
    let reply = post(addr, Some(&books), &fields).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    Ok(())
}

#[tokio::test]
async fn private_updates_reach_only_subscribers_whose_token_grants_a_topic() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let query = topic_query(&[BOOKS]);
    let mut anonymous = subscribe(addr, &query).await;
    let mut unrelated = subscribe(
        addr,
        &format!(
            "{query}&authorization={}",
            subscriber(&["https://example.com/authors/{id}"])
        ),
    )
    .await;
    let mut reader = subscribe(
        addr,
        &format!(
            "{query}&authorization={}",
            subscriber(&["https://example.com/books/1"])
        ),
    )
    .await;
    let mut via_alternate = subscribe(
        addr,
        &format!(
            "{query}&authorization={}",
            subscriber(&["https://example.com/users/ann/{+t}"])
        ),
    )
    .await;

    publish_update(
        addr,
        &[
            ("topic", "https://example.com/books/1"),
            ("topic", "https://example.com/users/ann/books/1"),
            ("data", "secret"),
            ("private", ""),
        ],
    )
    .await;
    publish_update(
        addr,
        &[
            ("topic", "https://example.com/books/2"),
            ("data", "secret 2"),
            ("private", "on"),
        ],
    )
    .await;
    publish_update(
        addr,
        &[("topic", "https://example.com/books/1"), ("data", "public")],
    )
    .await;

    assert_eq!(anonymous.next().await.data, "public");
    assert_eq!(unrelated.next().await.data, "public");
    let got: Vec<String> = reader.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["secret", "public"]);
    let got: Vec<String> = via_alternate
        .take(2)
        .await
        .into_iter()
        .map(|e| e.data)
        .collect();
    assert_eq!(got, ["secret", "public"]);
    for client in [
        &mut anonymous,
        &mut unrelated,
        &mut reader,
        &mut via_alternate,
    ] {
        client.expect_silence(SILENCE).await;
    }

    // Replay applies the same rule.
    let mut replay = subscribe(addr, &format!("{query}&lastEventID=earliest")).await;
    assert_eq!(replay.next().await.data, "public");
    replay.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn the_header_token_wins_over_the_query_which_wins_over_the_cookie() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let grants = subscriber(&["t"]);
    let nothing = subscriber(&[]);
    let path = |token: &str| format!("/.well-known/mercure?topic=t&authorization={token}");

    // Query (granting) beats cookie (not granting): the private update arrives.
    let cookie = format!("mercureAuthorization={nothing}");
    let mut query_wins =
        SseClient::connect_with(addr, &path(&grants), &[("Cookie", &cookie)]).await;
    // Header (not granting) beats query (granting): it does not.
    let auth = format!("Bearer {nothing}");
    let mut header_wins =
        SseClient::connect_with(addr, &path(&grants), &[("Authorization", &auth)]).await;
    // The cookie alone counts, under either generation's name.
    let cookie = format!("other=1; __Secure-mercure_access_token={grants}");
    let mut cookie_only =
        SseClient::connect_with(addr, "/.well-known/mercure?topic=t", &[("Cookie", &cookie)]).await;
    // The current draft's query parameter.
    let mut access_token = subscribe(addr, &format!("topic=t&access_token={grants}")).await;
    // An invalid header token is refused even when the query's is valid.
    let bad =
        SseClient::connect_with(addr, &path(&grants), &[("Authorization", "Bearer bad")]).await;
    assert_eq!(bad.status, 401);

    publish_update(
        addr,
        &[("topic", "t"), ("data", "private"), ("private", "on")],
    )
    .await;
    assert_eq!(query_wins.next().await.data, "private");
    assert_eq!(cookie_only.next().await.data, "private");
    assert_eq!(access_token.next().await.data, "private");
    header_wins.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn invalid_subscriber_tokens_are_refused_and_anonymous_ones_can_be() -> TestResult {
    let hub = start(hub_config()).await;
    let expired = sign(
        SUBSCRIBER_KEY,
        json!({"mercure": {"subscribe": ["*"]}, "exp": 1}),
    );
    let reply = get(
        hub.addr(),
        &format!("/.well-known/mercure?topic=a&authorization={expired}"),
    )
    .await;
    assert_eq!(reply.status, 401);
    let publisher_token = publisher(&["*"]);
    let reply = get(
        hub.addr(),
        &format!("/.well-known/mercure?topic=a&authorization={publisher_token}"),
    )
    .await;
    assert_eq!(
        reply.status, 401,
        "a publisher token is not a subscriber token"
    );

    let mut c = hub_config();
    c.require_subscriber_auth = true;
    let strict = start(c).await;
    let reply = get(strict.addr(), "/.well-known/mercure?topic=a").await;
    assert_eq!(reply.status, 401);
    assert!(reply.header("www-authenticate").is_some());
    subscribe(
        strict.addr(),
        &format!("topic=a&authorization={}", subscriber(&[])),
    )
    .await;
    Ok(())
}

#[tokio::test]
async fn a_stream_ends_when_its_token_expires() -> TestResult {
    let hub = start(hub_config()).await;
    let exp = pushwire_core::log::now_ms() / 1000 + 2;
    let token = sign(
        SUBSCRIBER_KEY,
        json!({"mercure": {"subscribe": ["*"]}, "exp": exp}),
    );
    let mut client = subscribe(hub.addr(), &format!("topic=a&authorization={token}")).await;
    assert!(client.wait_end(WAIT).await, "the stream outlived its token");
    Ok(())
}

#[tokio::test]
async fn current_draft_tokens_need_the_access_token_type_and_audience() -> TestResult {
    let hub = start(hub_config()).await;
    let at = |aud: &str, actions: &[&str]| {
        jsonwebtoken::encode(
            &Header {
                typ: Some("at+jwt".into()),
                ..Header::new(Algorithm::HS256)
            },
            &json!({
                "aud": aud,
                "exp": 4_102_444_800u64,
                "authorization_details": [{
                    "type": "mercure",
                    "actions": actions,
                    "topics": [{"match": "https://example.com/books/:id", "matchType": "URLPattern"}],
                }],
            }),
            &EncodingKey::from_secret(PUBLISHER_KEY.as_bytes()),
        )
        .expect("sign")
    };
    let fields = [("topic", "https://example.com/books/9"), ("data", "x")];
    let reply = post(hub.addr(), Some(&at(AUDIENCE, &["publish"])), &fields).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = post(
        hub.addr(),
        Some(&at("https://other.example/", &["publish"])),
        &fields,
    )
    .await;
    assert_eq!(reply.status, 401);
    let reply = post(hub.addr(), Some(&at(AUDIENCE, &["subscribe"])), &fields).await;
    assert_eq!(reply.status, 403);
    let reply = post(
        hub.addr(),
        Some(&at(AUDIENCE, &["publish"])),
        &[("topic", "https://example.com/authors/1")],
    )
    .await;
    assert_eq!(reply.status, 403);
    Ok(())
}

#[tokio::test]
async fn user_streams_need_a_token_for_that_user_when_subscriber_keys_are_set() -> TestResult {
    let hub = start(hub_config()).await;
    let reply = get(hub.addr(), "/sse/subscribe/alice").await;
    assert_eq!(reply.status, 401);
    let bob = sign(SUBSCRIBER_KEY, json!({"sub": "bob"}));
    let reply = get(
        hub.addr(),
        &format!("/sse/subscribe/alice?authorization={bob}"),
    )
    .await;
    assert_eq!(reply.status, 403);
    let alice = sign(SUBSCRIBER_KEY, json!({"sub": "alice"}));
    let mut client = SseClient::connect(
        hub.addr(),
        &format!("/sse/subscribe/alice?authorization={alice}"),
    )
    .await;
    assert_eq!(client.status, 200);
    // The seed's push calls take the same publisher tokens.
    let reply = request(
        hub.addr(),
        "POST",
        "/sse/push?id=alice&content=hi",
        &[("Authorization", &format!("Bearer {}", publisher(&["*"])))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(client.next().await.data, "hi");
    // A token scoped to topics may not address users.
    let reply = request(
        hub.addr(),
        "POST",
        "/sse/push?id=alice&content=hi",
        &[("Authorization", &format!("Bearer {}", publisher(&["t"])))],
        b"",
    )
    .await;
    assert_eq!(reply.status, 403);
    Ok(())
}

// Reconciliation

#[tokio::test]
async fn reconciliation_resumes_after_the_given_id_or_from_the_earliest() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(publish_update(addr, &[("topic", "r"), ("data", &n.to_string())]).await);
    }
    publish_update(addr, &[("topic", "elsewhere"), ("data", "skip")]).await;

    let mut classic = subscribe(addr, &format!("topic=r&lastEventID={}", enc(&ids[0]))).await;
    assert_eq!(classic.header("last-event-id"), Some(ids[0].as_str()));
    let got: Vec<String> = classic.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["1", "2"]);

    let mut current = subscribe(addr, &format!("topic=r&last_event_id={}", enc(&ids[1]))).await;
    assert_eq!(current.next().await.data, "2");

    let mut earliest = subscribe(addr, "topic=r&lastEventID=earliest").await;
    assert_eq!(earliest.header("last-event-id"), Some("earliest"));
    let got: Vec<String> = earliest.take(3).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["0", "1", "2"]);

    let mut lost = subscribe(addr, "topic=r&lastEventID=never-issued").await;
    assert_eq!(lost.header("last-event-id"), Some("earliest"));
    assert_eq!(lost.header("mercure-last-event-id"), Some("earliest"));
    lost.expect_silence(SILENCE).await;

    // The header wins over the query parameter.
    let mut header = SseClient::connect_with(
        addr,
        &format!("/.well-known/mercure?topic=r&lastEventID={}", enc(&ids[0])),
        &[("Last-Event-ID", &ids[1])],
    )
    .await;
    assert_eq!(header.next().await.data, "2");
    header.expect_silence(SILENCE).await;

    // Without a requested id, the header names the newest event.
    let fresh = subscribe(addr, "topic=r").await;
    assert!(fresh.header("last-event-id").is_some());
    Ok(())
}

// Active subscriptions

fn presence_token() -> String {
    subscriber(&["/.well-known/mercure/subscriptions{/topic}{/subscriber}"])
}

#[tokio::test]
async fn subscriptions_are_announced_and_listed() -> TestResult {
    let mut c = hub_config();
    c.subscriptions = true;
    let hub = start(c).await;
    let addr = hub.addr();
    let token = presence_token();
    let mut watcher = subscribe(
        addr,
        &format!(
            "topic={}&authorization={token}",
            enc("/.well-known/mercure/subscriptions/{topic}/{subscriber}")
        ),
    )
    .await;
    let mut anonymous = subscribe(addr, "topic=*").await;

    let payload_token = sign(
        SUBSCRIBER_KEY,
        json!({"mercure": {"subscribe": ["books"], "payload": {"user": "ann"}}}),
    );
    let ann = subscribe(addr, &format!("topic=books&authorization={payload_token}")).await;
    // The watcher also sees its own and the anonymous subscriber's arrival.
    let joined = loop {
        let doc: Value = serde_json::from_str(&watcher.next().await.data)?;
        if doc["topic"] == "books" {
            break doc;
        }
    };
    assert_eq!(joined["type"], "Subscription");
    assert_eq!(joined["topic"], "books");
    assert_eq!(joined["active"], true);
    assert_eq!(joined["payload"], json!({"user": "ann"}));
    let subscriber_id = joined["subscriber"].as_str().unwrap_or_default().to_owned();
    assert!(subscriber_id.starts_with("urn:uuid:"));

    let auth = format!("Bearer {token}");
    let list = get_with(
        addr,
        "/.well-known/mercure/subscriptions",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.header("content-type"), Some("application/ld+json"));
    let list = list.json();
    assert_eq!(list["type"], "Subscriptions");
    assert!(list["lastEventID"].is_string());
    let subs = list["subscriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(subs
        .iter()
        .any(|s| s["subscriber"] == subscriber_id.as_str()));

    let one_path = format!(
        "/.well-known/mercure/subscriptions/books/{}",
        enc(&subscriber_id)
    );
    let one = get_with(addr, &one_path, &[("Authorization", &auth)]).await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["subscriber"], subscriber_id.as_str());
    let missing = get_with(
        addr,
        "/.well-known/mercure/subscriptions/books/urn%3Auuid%3Anobody",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        get(addr, "/.well-known/mercure/subscriptions").await.status,
        401
    );
    let narrow = format!("Bearer {}", subscriber(&["books"]));
    let forbidden = get_with(
        addr,
        "/.well-known/mercure/subscriptions",
        &[("Authorization", &narrow)],
    )
    .await;
    assert_eq!(forbidden.status, 403);

    drop(ann);
    let left: Value = serde_json::from_str(&watcher.next().await.data)?;
    assert_eq!(left["subscriber"], subscriber_id.as_str());
    assert_eq!(left["active"], false);
    // Presence events are private: an anonymous `*` subscriber sees none.
    anonymous.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn the_subscriptions_api_is_off_unless_enabled() -> TestResult {
    let hub = start(hub_config()).await;
    let auth = format!("Bearer {}", presence_token());
    let reply = get_with(
        hub.addr(),
        "/.well-known/mercure/subscriptions",
        &[("Authorization", &auth)],
    )
    .await;
    assert_eq!(reply.status, 404);
    Ok(())
}

// CORS

#[tokio::test]
async fn listed_origins_may_send_credentials_and_the_wildcard_may_not() -> TestResult {
    let preflight = |addr| async move {
        request(
            addr,
            "OPTIONS",
            "/.well-known/mercure",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            b"",
        )
        .await
    };
    let mut c = hub_config();
    c.cors_origins = vec!["https://app.example".into()];
    let listed = start(c).await;
    let reply = preflight(listed.addr()).await;
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials"),
        Some("true")
    );

    let open = start(hub_config()).await;
    let reply = preflight(open.addr()).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    assert_eq!(reply.header("access-control-allow-credentials"), None);
    Ok(())
}
