//! The current Mercure draft (draft-dunglas-mercure, the `main` branch of
//! the protocol's repository), requirement by requirement: one test per
//! MUST the hub implements, named after it and grouped by the draft's
//! sections. Tokens and requests are written as the draft's own examples
//! write them. The classic generation keeps its own tests (mercure.rs);
//! where the two generations differ, both are checked here.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushwire_testkit::prelude::*;
use serde_json::{json, Value};

const PUBLISHER_KEY: &str = "draft-publisher-secret-for-tests";
const SUBSCRIBER_KEY: &str = "draft-subscriber-secret-for-tests";
/// The hub's resource identifier, as the draft's examples name it.
const RESOURCE: &str = "https://hub.example.com/.well-known/mercure";
/// The authorization detail type of the current draft.
const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
const SILENCE: Duration = Duration::from_millis(300);

fn hub_config() -> pushwire::config::ServeConfig {
    let mut c = config();
    c.publisher_jwt_key = vec![PUBLISHER_KEY.into()];
    c.subscriber_jwt_key = vec![SUBSCRIBER_KEY.into()];
    c.jwt_audience = Some(RESOURCE.into());
    c.hub_url = RESOURCE.into();
    c
}

fn in_an_hour() -> u64 {
    pushwire_core::log::now_ms() / 1000 + 3600
}

/// An access token: the header `{"alg":"HS256","typ":"at+jwt"}` and these
/// claims, exactly.
fn access_token(key: &str, claims: &Value) -> String {
    let header = Header {
        typ: Some("at+jwt".into()),
        ..Header::new(Algorithm::HS256)
    };
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key.as_bytes())).expect("sign")
}

/// A publisher token granting `actions` on these matcher objects.
fn publisher(actions: &[&str], topics: Value) -> String {
    access_token(
        PUBLISHER_KEY,
        &json!({
            "aud": RESOURCE,
            "exp": in_an_hour(),
            "authorization_details": [{"type": DETAIL_TYPE, "actions": actions, "topics": topics}],
        }),
    )
}

fn publish_all() -> String {
    publisher(&["publish"], json!([{"match": "*"}]))
}

/// A subscriber token granting `subscribe` on these matcher objects.
fn subscriber(topics: Value) -> String {
    access_token(
        SUBSCRIBER_KEY,
        &json!({
            "aud": RESOURCE,
            "exp": in_an_hour(),
            "sub": "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
            "authorization_details": [{"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": topics}],
        }),
    )
}

/// `POST /.well-known/mercure` with this form body, as the draft's
/// publication example sends it.
async fn post(addr: SocketAddr, token: Option<&str>, body: &str) -> Reply {
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
        body.as_bytes(),
    )
    .await
}

/// A query value, encoded.
fn enc(text: &str) -> String {
    form_value(text)
}

async fn publish(addr: SocketAddr, fields: &[(&str, &str)]) -> String {
    let reply = post(addr, Some(&publish_all()), &form(fields)).await;
    assert_eq!(reply.status, 200, "publish failed: {}", reply.body);
    reply.body
}

async fn subscribe(addr: SocketAddr, query: &str) -> SseClient {
    let client = SseClient::connect(addr, &format!("/.well-known/mercure?{query}")).await;
    assert_eq!(client.status, 200, "subscribe {query} refused");
    client
}

async fn subscribe_status(addr: SocketAddr, query: &str) -> u16 {
    get(addr, &format!("/.well-known/mercure?{query}"))
        .await
        .status
}

// Terminology: topics

#[tokio::test]
async fn topic_strings_must_not_contain_control_or_format_characters() -> TestResult {
    let hub = start(hub_config()).await;
    for topic in [
        "a\u{1}b",
        "a\u{7f}b",
        "a\u{85}b",
        "a\u{200b}b",
        "a\u{202e}b",
        "\u{feff}a",
    ] {
        let reply = post(hub.addr(), Some(&publish_all()), &form(&[("topic", topic)])).await;
        assert_eq!(reply.status, 400, "{topic:?}: {}", reply.body);
    }
    // Visible text of any script is fine.
    publish(hub.addr(), &[("topic", "https://example.com/livres/café")]).await;
    Ok(())
}

// Subscription

/// The draft's subscription example: `match`, a second `match`, and
/// `match_urlpattern`.
#[tokio::test]
async fn subscribers_receive_updates_for_topics_matching_at_least_one_matcher() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let mut client = subscribe(
        addr,
        &format!(
            "match={}&match=bar&match_urlpattern={}",
            enc("https://example.com/foo"),
            enc("https://example.com/bar/:id")
        ),
    )
    .await;
    for topic in [
        "https://example.com/foo",
        "bar",
        "https://example.com/bar/7",
        "https://example.com/baz",
    ] {
        publish(addr, &[("topic", topic), ("data", topic)]).await;
    }
    let got: Vec<String> = client.take(3).await.into_iter().map(|e| e.data).collect();
    assert_eq!(
        got,
        [
            "https://example.com/foo",
            "bar",
            "https://example.com/bar/7"
        ]
    );
    client.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn match_exact_is_the_explicit_spelling_of_match() -> TestResult {
    let hub = start(hub_config()).await;
    let mut client = subscribe(hub.addr(), "match_exact=books").await;
    publish(hub.addr(), &[("topic", "books"), ("data", "1")]).await;
    assert_eq!(client.next().await.data, "1");
    Ok(())
}

#[tokio::test]
async fn a_parameter_in_the_reserved_match_namespace_naming_no_supported_type_is_rejected_with_400(
) -> TestResult {
    let hub = start(hub_config()).await;
    for name in [
        "matchURLPattern",
        "matchExact",
        "Match",
        "MATCH_EXACT",
        "match_Exact",
        "match_regexp",
        "matchfoo",
        "match_",
    ] {
        assert_eq!(
            subscribe_status(hub.addr(), &format!("{name}=a")).await,
            400,
            "{name}"
        );
    }
    // Names outside the namespace are ignored.
    subscribe(hub.addr(), "match=a&other=1&xmatch=2").await;
    Ok(())
}

#[tokio::test]
async fn matcher_values_with_control_or_format_characters_or_invalid_for_their_type_are_rejected_with_400(
) -> TestResult {
    let hub = start(hub_config()).await;
    for query in [
        "match=a%01b",
        "match=a%E2%80%8Bb",
        "match_urlpattern=a%E2%80%AEb",
        "match_urlpattern=https%3A%2F%2Fexample.com%2F%3Aid(",
        "match=",
    ] {
        assert_eq!(subscribe_status(hub.addr(), query).await, 400, "{query}");
    }
    Ok(())
}

#[tokio::test]
async fn requests_exceeding_the_matcher_count_or_length_limits_are_rejected_with_400() -> TestResult
{
    let mut c = hub_config();
    c.max_topics_per_stream = 3;
    let hub = start(c).await;
    assert_eq!(
        subscribe_status(hub.addr(), "match=a&match=b&match=c&match=d").await,
        400
    );
    let long = "a".repeat(pushwire_core::route::MAX_SELECTOR_LEN + 1);
    assert_eq!(
        subscribe_status(hub.addr(), &format!("match={long}")).await,
        400
    );
    Ok(())
}

// Matcher Types

#[tokio::test]
async fn exact_matching_is_byte_for_byte_without_resolution_or_normalization() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let mut client = subscribe(addr, &format!("match={}", enc("/books/1"))).await;
    for topic in [
        "https://hub.example.com/books/1",
        "/books/./1",
        "/Books/1",
        "/books/%31",
        "/books/1",
    ] {
        publish(addr, &[("topic", topic), ("data", topic)]).await;
    }
    assert_eq!(client.next().await.data, "/books/1");
    client.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn relative_url_patterns_and_relative_topics_resolve_against_the_hub_url() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let mut relative_pattern =
        subscribe(addr, &format!("match_urlpattern={}", enc("/books/:id"))).await;
    let mut absolute_pattern = subscribe(
        addr,
        &format!(
            "match_urlpattern={}",
            enc("https://hub.example.com/authors/:id")
        ),
    )
    .await;
    publish(
        addr,
        &[
            ("topic", "https://hub.example.com/books/1"),
            ("data", "absolute topic"),
        ],
    )
    .await;
    publish(addr, &[("topic", "/authors/2"), ("data", "relative topic")]).await;
    publish(
        addr,
        &[
            ("topic", "https://other.example/books/3"),
            ("data", "other host"),
        ],
    )
    .await;
    assert_eq!(relative_pattern.next().await.data, "absolute topic");
    assert_eq!(absolute_pattern.next().await.data, "relative topic");
    relative_pattern.expect_silence(SILENCE).await;
    absolute_pattern.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn the_wildcard_matches_every_topic_whatever_the_matcher_type() -> TestResult {
    let hub = start(hub_config()).await;
    let mut exact = subscribe(hub.addr(), "match=*").await;
    let mut pattern = subscribe(hub.addr(), "match_urlpattern=*").await;
    publish(hub.addr(), &[("topic", "urn:isbn:1"), ("data", "x")]).await;
    assert_eq!(exact.next().await.data, "x");
    assert_eq!(pattern.next().await.data, "x");
    Ok(())
}

// Publication

/// The draft's publication example, byte for byte.
#[tokio::test]
async fn on_success_the_body_is_the_id_as_text_plain_utf8() -> TestResult {
    let hub = start(hub_config()).await;
    let mut client = subscribe(
        hub.addr(),
        &format!("match={}", enc("https://example.com/foo")),
    )
    .await;
    let reply = post(
        hub.addr(),
        Some(&publish_all()),
        "topic=https://example.com/foo&data=the%20content",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    let event = client.next().await;
    assert_eq!(event.data, "the content");
    assert_eq!(event.id.as_deref(), Some(reply.body.as_str()));
    Ok(())
}

#[tokio::test]
async fn a_request_carrying_more_than_one_topic_field_is_rejected_with_400() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let mut client = subscribe(addr, "match=a&match=b").await;
    let two = form(&[("topic", "a"), ("topic", "b"), ("data", "x")]);
    assert_eq!(post(addr, Some(&publish_all()), &two).await.status, 400);
    assert_eq!(post(addr, Some(&publish_all()), "data=x").await.status, 400);
    client.expect_silence(SILENCE).await;
    // A classic publisher token keeps the classic rule: the other topics
    // are alternates of the first.
    let classic = jsonwebtoken::encode(
        &Header::default(),
        &json!({"mercure": {"publish": ["*"]}}),
        &EncodingKey::from_secret(PUBLISHER_KEY.as_bytes()),
    )?;
    assert_eq!(post(addr, Some(&classic), &two).await.status, 200);
    assert_eq!(client.next().await.data, "x");
    Ok(())
}

#[tokio::test]
async fn a_topic_addressing_the_reserved_hub_namespace_is_rejected_with_403() -> TestResult {
    let mut c = hub_config();
    c.subscriptions = true;
    let hub = start(c).await;
    let addr = hub.addr();
    let watcher_token =
        subscriber(json!([{"match": "/.well-known/mercure/*", "match_type": "urlpattern"}]));
    let mut watcher = subscribe(
        addr,
        &format!(
            "match_urlpattern={}&access_token={watcher_token}",
            enc("https://hub.example.com/.well-known/mercure/subscriptions/*")
        ),
    )
    .await;
    // The watcher's own arrival, announced by the hub in both forms.
    let own: Vec<Value> = watcher
        .take(2)
        .await
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap_or_default())
        .collect();
    assert!(own.iter().all(|doc| doc["type"] == "Subscription"));
    watcher.expect_silence(SILENCE).await;
    for topic in [
        "/.well-known/mercure",
        "/.well-known/mercure/subscriptions/a/b",
        "https://hub.example.com/.well-known/mercure/subscriptions/a/b",
        "https://evil.example/.well-known/mercure/subscriptions/a/b",
        "mercure/subscriptions/a/b",
        "./mercure/subscriptions/a/b",
        "../.well-known/mercure/subscriptions/x/y",
        "a/../../.well-known/mercure/subscriptions/x",
        "//localhost/.well-known/mercure/subscriptions/x",
        "https://hub.example.com//.well-known/mercure/subscriptions/x",
        "https://hub.example.com/a\\..\\.well-known/mercure/subscriptions/x",
        "/.well-known/%6Dercure/subscriptions/x",
        "/.well-known/mercure/../mercure/subscriptions/x",
        "?query",
    ] {
        let reply = post(
            addr,
            Some(&publish_all()),
            &form(&[("topic", topic), ("data", "forged")]),
        )
        .await;
        assert_eq!(reply.status, 403, "{topic}: {}", reply.body);
    }
    // The same rule through the hub's own publish route.
    let reply = request(
        addr,
        "POST",
        "/api/v1/publish",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &format!("Bearer {}", publish_all())),
        ],
        json!({"to": {"topics": ["mercure/subscriptions/a/b"]}, "data": "forged"})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 403, "{}", reply.body);
    watcher.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn ids_starting_with_hash_being_earliest_or_with_control_or_format_characters_are_rejected_with_400(
) -> TestResult {
    let hub = start(hub_config()).await;
    for id in ["#1", "earliest", "a\u{1}b", "a\u{9f}b", "a\u{200d}b"] {
        let reply = post(
            hub.addr(),
            Some(&publish_all()),
            &form(&[("topic", "t"), ("id", id)]),
        )
        .await;
        assert_eq!(reply.status, 400, "{id:?}: {}", reply.body);
    }
    let reply = post(
        hub.addr(),
        Some(&publish_all()),
        &form(&[("topic", "t"), ("id", "urn:uuid:1")]),
    )
    .await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "urn:uuid:1"));
    Ok(())
}

#[tokio::test]
async fn types_with_control_or_format_characters_and_retries_not_all_digits_are_rejected_with_400(
) -> TestResult {
    let hub = start(hub_config()).await;
    for fields in [
        [("topic", "t"), ("type", "a\u{7}b")],
        [("topic", "t"), ("type", "a\u{2066}b")],
        [("topic", "t"), ("retry", "1e3")],
        [("topic", "t"), ("retry", "-1")],
        [("topic", "t"), ("retry", "")],
    ] {
        let reply = post(hub.addr(), Some(&publish_all()), &form(&fields)).await;
        assert_eq!(reply.status, 400, "{fields:?}: {}", reply.body);
    }
    Ok(())
}

#[tokio::test]
async fn data_is_one_data_field_per_line_and_private_is_set_by_presence_alone() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let mut anonymous = subscribe(addr, "match=t").await;
    publish(addr, &[("topic", "t"), ("data", "a\r\nb\rc\nid: forged")]).await;
    let event = anonymous.next().await;
    assert_eq!(event.data, "a\nb\nc\nid: forged");
    assert_ne!(event.id.as_deref(), Some("forged"));
    // `private` with an empty value, and with `off`, both mark it private.
    for body in ["topic=t&data=p1&private", "topic=t&data=p2&private=off"] {
        assert_eq!(post(addr, Some(&publish_all()), body).await.status, 200);
    }
    anonymous.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn hubs_ignore_fields_they_do_not_recognize() -> TestResult {
    let hub = start(hub_config()).await;
    let mut client = subscribe(hub.addr(), "match=t").await;
    publish(
        hub.addr(),
        &[
            ("topic", "t"),
            ("data", "x"),
            ("future_field", "1"),
            ("target", "old"),
        ],
    )
    .await;
    assert_eq!(client.next().await.data, "x");
    Ok(())
}

// Authorization

/// The issue's reproduction, and the draft's own token shape.
#[tokio::test]
async fn a_publisher_token_with_the_draft_detail_type_may_publish() -> TestResult {
    let hub = start(hub_config()).await;
    let token = access_token(
        PUBLISHER_KEY,
        &json!({
            "aud": RESOURCE,
            "exp": 4_102_444_800u64,
            "authorization_details": [{"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]}],
        }),
    );
    assert_eq!(
        post(hub.addr(), Some(&token), "topic=a&data=x")
            .await
            .status,
        200
    );
    // A matcher object with `match_type: urlpattern`.
    let books = publisher(
        &["publish"],
        json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}]),
    );
    let addr = hub.addr();
    assert_eq!(
        post(
            addr,
            Some(&books),
            &form(&[("topic", "https://example.com/books/1")])
        )
        .await
        .status,
        200
    );
    assert_eq!(
        post(
            addr,
            Some(&books),
            &form(&[("topic", "https://example.com/authors/1")])
        )
        .await
        .status,
        403
    );
    Ok(())
}

#[tokio::test]
async fn unrecognized_actions_are_ignored_and_do_not_invalidate_the_token() -> TestResult {
    let hub = start(hub_config()).await;
    let with_extra = publisher(&["publish", "moderate"], json!([{"match": "*"}]));
    assert_eq!(
        post(hub.addr(), Some(&with_extra), "topic=a").await.status,
        200
    );
    let only_unknown = publisher(&["moderate"], json!([{"match": "*"}]));
    let reply = post(hub.addr(), Some(&only_unknown), "topic=a").await;
    assert_eq!(reply.status, 403);
    assert_eq!(
        reply
            .header("www-authenticate")
            .map(|c| c.contains("error=\"insufficient_scope\"")),
        Some(true)
    );
    Ok(())
}

#[tokio::test]
async fn a_match_type_the_hub_does_not_support_rejects_the_token_with_401_invalid_token(
) -> TestResult {
    let hub = start(hub_config()).await;
    for topics in [
        json!([{"match": "*", "match_type": "regexp"}]),
        json!([{"match": "a", "match_type": "URLPattern"}]),
        json!(["a"]),
        json!([{"match_type": "exact"}]),
    ] {
        let reply = post(
            hub.addr(),
            Some(&publisher(&["publish"], topics.clone())),
            "topic=a",
        )
        .await;
        assert_eq!(reply.status, 401, "{topics}");
        assert_eq!(
            reply
                .header("www-authenticate")
                .map(|c| c.contains("error=\"invalid_token\"")),
            Some(true),
            "{topics}"
        );
    }
    // A non-string action is a validation failure, unlike an unknown one.
    let token = access_token(
        PUBLISHER_KEY,
        &json!({"aud": RESOURCE, "exp": in_an_hour(), "authorization_details": [
            {"type": DETAIL_TYPE, "actions": ["publish", 1], "topics": [{"match": "*"}]}
        ]}),
    );
    assert_eq!(post(hub.addr(), Some(&token), "topic=a").await.status, 401);
    Ok(())
}

#[tokio::test]
async fn tokens_without_exp_or_for_another_audience_or_of_another_type_are_rejected_with_401(
) -> TestResult {
    let hub = start(hub_config()).await;
    let detail = json!([{"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]}]);
    for claims in [
        json!({"aud": RESOURCE, "authorization_details": detail}),
        json!({"aud": "https://other.example/.well-known/mercure", "exp": in_an_hour(), "authorization_details": detail}),
        json!({"aud": RESOURCE, "exp": 1, "authorization_details": detail}),
        json!({"aud": RESOURCE, "exp": in_an_hour(), "nbf": in_an_hour(), "authorization_details": detail}),
    ] {
        let reply = post(
            hub.addr(),
            Some(&access_token(PUBLISHER_KEY, &claims)),
            "topic=a",
        )
        .await;
        assert_eq!(reply.status, 401, "{claims}");
    }
    // `typ` must be `at+jwt` for an access token: an ID token is no token here.
    let id_token = jsonwebtoken::encode(
        &Header {
            typ: Some("id+jwt".into()),
            ..Header::new(Algorithm::HS256)
        },
        &json!({"aud": RESOURCE, "exp": in_an_hour(), "authorization_details": detail}),
        &EncodingKey::from_secret(PUBLISHER_KEY.as_bytes()),
    )?;
    assert_eq!(
        post(hub.addr(), Some(&id_token), "topic=a").await.status,
        401
    );
    // `alg: none` is never accepted.
    let unsigned = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"at+jwt"}"#),
        base64url(
            json!({"aud": RESOURCE, "exp": in_an_hour(), "authorization_details": detail})
                .to_string()
                .as_bytes()
        )
    );
    assert_eq!(
        post(hub.addr(), Some(&unsigned), "topic=a").await.status,
        401
    );
    Ok(())
}

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn with_trusted_authorization_servers_iss_must_name_one_of_them() -> TestResult {
    let mut c = hub_config();
    c.authorization_servers = vec!["https://auth.example.com".into()];
    let hub = start(c).await;
    let with_iss = |iss: &str| {
        access_token(
            PUBLISHER_KEY,
            &json!({"iss": iss, "aud": RESOURCE, "exp": in_an_hour(), "authorization_details": [
                {"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]}
            ]}),
        )
    };
    assert_eq!(
        post(
            hub.addr(),
            Some(&with_iss("https://auth.example.com")),
            "topic=a"
        )
        .await
        .status,
        200
    );
    assert_eq!(
        post(
            hub.addr(),
            Some(&with_iss("https://evil.example")),
            "topic=a"
        )
        .await
        .status,
        401
    );
    Ok(())
}

#[tokio::test]
async fn no_token_where_one_is_needed_is_401_with_a_bare_challenge_pointing_to_the_metadata(
) -> TestResult {
    let hub = start(hub_config()).await;
    let reply = post(hub.addr(), None, "topic=a").await;
    assert_eq!(reply.status, 401);
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_default()
        .to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(!challenge.contains("error="), "{challenge}");
    assert!(
        challenge.contains(
            "resource_metadata=\"https://hub.example.com/.well-known/oauth-protected-resource/.well-known/mercure\""
        ),
        "{challenge}"
    );
    // Every token failure's challenge points there too.
    let reply = post(hub.addr(), Some("not.a.token"), "topic=a").await;
    assert!(reply
        .header("www-authenticate")
        .unwrap_or_default()
        .contains("resource_metadata="));
    Ok(())
}

#[tokio::test]
async fn private_updates_reach_only_subscribers_whose_token_grants_subscribe_on_the_topic(
) -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    // The draft's example: routing selects every book, the token only 1 and 7.
    let token = subscriber(json!([
        {"match": "https://example.com/books/1", "match_type": "exact"},
        {"match": "https://example.com/books/7", "match_type": "exact"},
    ]));
    let pattern = enc("https://example.com/books/:id");
    let mut reader = subscribe(
        addr,
        &format!("match_urlpattern={pattern}&access_token={token}"),
    )
    .await;
    let mut anonymous = subscribe(addr, &format!("match_urlpattern={pattern}")).await;
    for n in [1, 2] {
        let topic = format!("https://example.com/books/{n}");
        publish(
            addr,
            &[
                ("topic", &topic),
                ("data", &n.to_string()),
                ("private", "on"),
            ],
        )
        .await;
    }
    assert_eq!(reader.next().await.data, "1");
    reader.expect_silence(SILENCE).await;
    anonymous.expect_silence(SILENCE).await;
    Ok(())
}

/// "Presenting the Access Token": header, then `access_token`, then the cookie.
#[tokio::test]
async fn the_header_wins_over_the_access_token_parameter_which_wins_over_the_cookie() -> TestResult
{
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let grants = subscriber(json!([{"match": "t"}]));
    let nothing = subscriber(json!([{"match": "other"}]));
    let cookie = format!("__Secure-mercure_access_token={nothing}");
    let mut query_wins = SseClient::connect_with(
        addr,
        &format!("/.well-known/mercure?match=t&access_token={grants}"),
        &[("Cookie", &cookie)],
    )
    .await;
    let auth = format!("Bearer {nothing}");
    let mut header_wins = SseClient::connect_with(
        addr,
        &format!("/.well-known/mercure?match=t&access_token={grants}"),
        &[("Authorization", &auth)],
    )
    .await;
    let cookie = format!("__Secure-mercure_access_token={grants}");
    let mut cookie_only =
        SseClient::connect_with(addr, "/.well-known/mercure?match=t", &[("Cookie", &cookie)]).await;
    publish(addr, &[("topic", "t"), ("data", "p"), ("private", "on")]).await;
    assert_eq!(query_wins.next().await.data, "p");
    assert_eq!(cookie_only.next().await.data, "p");
    header_wins.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn the_connection_is_closed_no_later_than_the_tokens_exp() -> TestResult {
    let hub = start(hub_config()).await;
    let exp = pushwire_core::log::now_ms() / 1000 + 2;
    let token = access_token(
        SUBSCRIBER_KEY,
        &json!({"aud": RESOURCE, "exp": exp, "authorization_details": []}),
    );
    let mut client = subscribe(hub.addr(), &format!("match=a&access_token={token}")).await;
    assert!(client.wait_end(WAIT).await, "the stream outlived its token");
    Ok(())
}

/// How a browser keeps reading past its token's expiry: the stream ends at
/// `exp`, the application renews the cookie, and `EventSource` reconnects
/// with `Last-Event-ID`: every update published meanwhile arrives, once.
#[tokio::test]
async fn a_client_renews_its_cookie_and_resumes_with_nothing_missed() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let cookie_for = |exp: u64| {
        let token = access_token(
            SUBSCRIBER_KEY,
            &json!({"aud": RESOURCE, "exp": exp, "authorization_details": [
                {"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "inbox"}]}
            ]}),
        );
        format!("__Secure-mercure_access_token={token}")
    };
    let now = pushwire_core::log::now_ms() / 1000;
    let cookie = cookie_for(now + 2);
    let mut first = SseClient::connect_with(
        addr,
        "/.well-known/mercure?match=inbox",
        &[("Cookie", &cookie)],
    )
    .await;
    assert_eq!(first.status, 200);
    publish(
        addr,
        &[("topic", "inbox"), ("data", "before"), ("private", "on")],
    )
    .await;
    let seen = first.next().await;
    assert!(first.wait_end(WAIT).await, "the stream outlived its token");
    // Published while the client is away.
    for data in ["away 1", "away 2"] {
        publish(
            addr,
            &[("topic", "inbox"), ("data", data), ("private", "on")],
        )
        .await;
    }
    let renewed = cookie_for(in_an_hour());
    let last = seen.id.clone().unwrap_or_default();
    let mut second = SseClient::connect_with(
        addr,
        "/.well-known/mercure?match=inbox",
        &[("Cookie", &renewed), ("Last-Event-ID", &last)],
    )
    .await;
    assert_eq!(second.header("mercure-last-event-id"), Some(last.as_str()));
    let got: Vec<String> = second.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["away 1", "away 2"]);
    second.expect_silence(SILENCE).await;
    Ok(())
}

// Reconciliation

#[tokio::test]
async fn the_last_event_id_parameter_is_accepted_and_the_header_takes_precedence() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let ids = [
        publish(addr, &[("topic", "r"), ("data", "0")]).await,
        publish(addr, &[("topic", "r"), ("data", "1")]).await,
        publish(addr, &[("topic", "r"), ("data", "2")]).await,
    ];
    let mut by_query = subscribe(addr, &format!("match=r&last_event_id={}", enc(&ids[0]))).await;
    assert_eq!(
        by_query.header("mercure-last-event-id"),
        Some(ids[0].as_str())
    );
    assert_eq!(by_query.next().await.data, "1");
    let mut by_header = SseClient::connect_with(
        addr,
        &format!(
            "/.well-known/mercure?match=r&last_event_id={}",
            enc(&ids[0])
        ),
        &[("Last-Event-ID", &ids[1])],
    )
    .await;
    assert_eq!(by_header.next().await.data, "2");
    by_header.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn mercure_last_event_id_is_earliest_when_the_requested_event_does_not_exist() -> TestResult {
    let hub = start(hub_config()).await;
    publish(hub.addr(), &[("topic", "r"), ("data", "0")]).await;
    let lost = subscribe(hub.addr(), "match=r&last_event_id=urn%3Auuid%3Anever").await;
    assert_eq!(lost.header("mercure-last-event-id"), Some("earliest"));
    let mut all = subscribe(hub.addr(), "match=r&last_event_id=earliest").await;
    assert_eq!(all.header("mercure-last-event-id"), Some("earliest"));
    assert_eq!(all.next().await.data, "0");
    Ok(())
}

#[tokio::test]
async fn replayed_private_events_are_re_evaluated_against_the_current_token() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    publish(
        addr,
        &[("topic", "a"), ("data", "private a"), ("private", "on")],
    )
    .await;
    publish(
        addr,
        &[("topic", "b"), ("data", "private b"), ("private", "on")],
    )
    .await;
    let token = subscriber(json!([{"match": "b"}]));
    let mut client = subscribe(
        addr,
        &format!("match=a&match=b&last_event_id=earliest&access_token={token}"),
    )
    .await;
    assert_eq!(client.next().await.data, "private b");
    client.expect_silence(SILENCE).await;
    Ok(())
}

// Active Subscriptions

fn presence_hub() -> pushwire::config::ServeConfig {
    let mut c = hub_config();
    c.subscriptions = true;
    c
}

/// A token that may watch every subscription, as a matcher over the
/// draft's topic form.
fn watcher_token() -> String {
    subscriber(
        json!([{"match": "/.well-known/mercure/subscriptions{/*}?", "match_type": "urlpattern"}]),
    )
}

#[tokio::test]
async fn subscription_events_use_the_match_type_match_subscriber_topic_and_are_private(
) -> TestResult {
    let hub = start(presence_hub()).await;
    let addr = hub.addr();
    let token = watcher_token();
    let mut watcher = subscribe(
        addr,
        &format!(
            "match_urlpattern={}&access_token={token}",
            enc("/.well-known/mercure/subscriptions/:match_type/:match/:subscriber")
        ),
    )
    .await;
    let mut anonymous = subscribe(addr, "match=*").await;
    let payload_token = access_token(
        SUBSCRIBER_KEY,
        &json!({"aud": RESOURCE, "exp": in_an_hour(), "authorization_details": [
            {"type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{"match": "https://example.com/:selector", "match_type": "urlpattern"}], "payload": {"foo": "bar"}}
        ]}),
    );
    let client = subscribe(
        addr,
        &format!(
            "match_urlpattern={}&access_token={payload_token}",
            enc("https://example.com/:selector")
        ),
    )
    .await;
    let joined = loop {
        let event = watcher.next().await;
        let doc: Value = serde_json::from_str(&event.data)?;
        if doc["match"] == "https://example.com/:selector" {
            break doc;
        }
    };
    let subscriber_id = joined["subscriber"].as_str().unwrap_or_default().to_owned();
    assert!(subscriber_id.starts_with("urn:uuid:"), "{joined}");
    assert_eq!(
        joined["id"],
        format!(
            "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/{}",
            subscriber_id.replace(':', "%3A")
        )
    );
    assert_eq!(joined["@context"], "https://mercure.rocks/");
    assert_eq!(joined["type"], "Subscription");
    assert_eq!(joined["match_type"], "urlpattern");
    assert_eq!(joined["active"], true);
    assert_eq!(joined["payload"], json!({"foo": "bar"}));
    drop(client);
    let left = loop {
        let doc: Value = serde_json::from_str(&watcher.next().await.data)?;
        if doc["subscriber"] == subscriber_id.as_str() {
            break doc;
        }
    };
    assert_eq!(left["active"], false);
    anonymous.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn the_subscription_api_serves_collections_and_single_subscriptions_as_json_ld() -> TestResult
{
    let hub = start(presence_hub()).await;
    let addr = hub.addr();
    let _books = subscribe(addr, "match=books").await;
    let auth = format!("Bearer {}", watcher_token());
    let fetch = |path: String| {
        let auth = auth.clone();
        async move { get_with(addr, &path, &[("Authorization", &auth)]).await }
    };

    let all = fetch("/.well-known/mercure/subscriptions".into()).await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert_eq!(all.header("content-type"), Some("application/ld+json"));
    let all = all.json();
    assert_eq!(all["type"], "Subscriptions");
    assert_eq!(all["id"], "/.well-known/mercure/subscriptions");
    assert!(all["last_event_id"].is_string(), "{all}");
    let books = all["subscriptions"]
        .as_array()
        .and_then(|subs| subs.iter().find(|s| s["match"] == "books").cloned())
        .expect("the books subscription is listed");
    assert_eq!(books["match_type"], "exact");
    let subscriber_id = books["subscriber"].as_str().unwrap_or_default().to_owned();

    let collection = fetch("/.well-known/mercure/subscriptions/exact/books".into()).await;
    assert_eq!(collection.status, 200, "{}", collection.body);
    let collection = collection.json();
    assert_eq!(
        collection["id"],
        "/.well-known/mercure/subscriptions/exact/books"
    );
    assert_eq!(
        collection["subscriptions"].as_array().map(Vec::len),
        Some(1)
    );

    let one_path = format!(
        "/.well-known/mercure/subscriptions/exact/books/{}",
        enc(&subscriber_id)
    );
    let one = fetch(one_path.clone()).await;
    assert_eq!(one.status, 200, "{}", one.body);
    let one = one.json();
    assert_eq!(one["id"], one_path.as_str());
    assert_eq!(one["subscriber"], subscriber_id.as_str());
    assert!(one["last_event_id"].is_string());

    let missing =
        fetch("/.well-known/mercure/subscriptions/exact/books/urn%3Auuid%3Anobody".into()).await;
    assert_eq!(missing.status, 404);
    // Access needs `subscribe` granted on the requested path.
    let narrow = format!("Bearer {}", subscriber(json!([{"match": "books"}])));
    let forbidden = get_with(
        addr,
        "/.well-known/mercure/subscriptions/exact/books",
        &[("Authorization", &narrow)],
    )
    .await;
    assert_eq!(forbidden.status, 403);
    Ok(())
}

// Discovery: protected resource metadata

#[tokio::test]
async fn the_protected_resource_metadata_is_published_at_the_derived_location() -> TestResult {
    let mut c = presence_hub();
    c.authorization_servers = vec!["https://auth.example.com".into()];
    let hub = start(c).await;
    let reply = get(
        hub.addr(),
        "/.well-known/oauth-protected-resource/.well-known/mercure",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let doc = reply.json();
    assert_eq!(doc["resource"], RESOURCE);
    assert_eq!(
        doc["authorization_servers"],
        json!(["https://auth.example.com"])
    );
    assert!(doc["authorization_details_types_supported"]
        .as_array()
        .is_some_and(|types| types.contains(&json!(DETAIL_TYPE))));
    assert_eq!(doc["bearer_methods_supported"], json!(["header", "query"]));
    assert_eq!(doc["mercure_cookie"], true);
    assert_eq!(doc["mercure_subscriptions"], true);
    assert!(doc["mercure_matcher_types_supported"]
        .as_array()
        .is_some_and(
            |types| types.contains(&json!("exact")) && types.contains(&json!("urlpattern"))
        ));
    // Without a resource identifier there is nothing to publish.
    let mut bare = config();
    bare.publisher_jwt_key = vec![PUBLISHER_KEY.into()];
    let bare = start(bare).await;
    assert_eq!(
        get(
            bare.addr(),
            "/.well-known/oauth-protected-resource/.well-known/mercure"
        )
        .await
        .status,
        404
    );
    Ok(())
}

// More of Subscription, Authorization and Error Responses

#[tokio::test]
async fn the_query_is_parsed_as_form_urlencoded() -> TestResult {
    let hub = start(hub_config()).await;
    let mut client = subscribe(hub.addr(), "match=a+b&match=c%26d").await;
    publish(hub.addr(), &[("topic", "a b"), ("data", "space")]).await;
    publish(hub.addr(), &[("topic", "c&d"), ("data", "ampersand")]).await;
    let got: Vec<String> = client.take(2).await.into_iter().map(|e| e.data).collect();
    assert_eq!(got, ["space", "ampersand"]);
    Ok(())
}

#[tokio::test]
async fn url_patterns_are_case_sensitive_but_for_the_host() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let mut client = subscribe(
        addr,
        &format!("match_urlpattern={}", enc("https://example.com/books/:id")),
    )
    .await;
    publish(
        addr,
        &[
            ("topic", "https://example.com/Books/1"),
            ("data", "other path"),
        ],
    )
    .await;
    publish(
        addr,
        &[
            ("topic", "https://EXAMPLE.com/books/1"),
            ("data", "same host"),
        ],
    )
    .await;
    assert_eq!(client.next().await.data, "same host");
    client.expect_silence(SILENCE).await;
    Ok(())
}

#[tokio::test]
async fn hub_generated_ids_are_fragments() -> TestResult {
    let hub = start(hub_config()).await;
    let id = publish(hub.addr(), &[("topic", "t")]).await;
    // `#`, the sequence number, `.` and the event's tag.
    let parsed = pushwire_core::id::HubId::parse(&id);
    assert!(parsed.is_some_and(|h| h.seq == 1 && h.tag != 0), "{id}");
    assert!(id.starts_with("#1.") && id.len() == 11, "{id}");
    Ok(())
}

#[tokio::test]
async fn the_bearer_scheme_is_matched_case_insensitively() -> TestResult {
    let hub = start(hub_config()).await;
    let reply = request(
        hub.addr(),
        "POST",
        "/.well-known/mercure",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Authorization", &format!("bEaReR {}", publish_all())),
        ],
        b"topic=t",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    Ok(())
}

#[tokio::test]
async fn a_malformed_token_presentation_is_400_with_an_invalid_request_challenge() -> TestResult {
    let hub = start(hub_config()).await;
    let addr = hub.addr();
    let token = publish_all();
    for headers in [
        vec![("Authorization", "Basic dXNlcjpwYXNz".to_owned())],
        vec![("Authorization", "Bearer".to_owned())],
        vec![("Authorization", "Bearer ".to_owned())],
        vec![
            ("Authorization", format!("Bearer {token}")),
            ("Authorization", format!("Bearer {token}")),
        ],
    ] {
        let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
        all.extend(headers.iter().map(|(k, v)| (*k, v.as_str())));
        let reply = request(addr, "POST", "/.well-known/mercure", &all, b"topic=t").await;
        assert_eq!(reply.status, 400, "{headers:?}: {}", reply.body);
        let challenge = reply.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.contains("error=\"invalid_request\""),
            "{challenge}"
        );
        let subscribe_headers: Vec<(&str, &str)> =
            headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let stream =
            SseClient::connect_with(addr, "/.well-known/mercure?match=t", &subscribe_headers).await;
        assert_eq!(stream.status, 400, "subscribe with {headers:?}");
    }
    Ok(())
}

#[tokio::test]
async fn keys_named_by_the_token_itself_are_never_used() -> TestResult {
    let hub = start(hub_config()).await;
    // Signed with the attacker's own key, which the header offers.
    let attacker = "attacker-chosen-secret-of-some-length";
    let offered: jsonwebtoken::jwk::Jwk = serde_json::from_value(
        json!({"kty": "oct", "k": base64url(attacker.as_bytes()), "alg": "HS256"}),
    )?;
    let claims = json!({"aud": RESOURCE, "exp": in_an_hour(), "authorization_details": [
        {"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]}
    ]});
    let base = Header {
        typ: Some("at+jwt".into()),
        ..Header::new(Algorithm::HS256)
    };
    for header in [
        Header {
            jku: Some("https://attacker.example/jwks.json".into()),
            ..base.clone()
        },
        Header {
            jwk: Some(offered),
            ..base.clone()
        },
        Header {
            x5u: Some("https://attacker.example/cert.pem".into()),
            ..base.clone()
        },
    ] {
        let token = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(attacker.as_bytes()),
        )?;
        assert_eq!(
            post(hub.addr(), Some(&token), "topic=t").await.status,
            401,
            "{header:?}"
        );
    }
    Ok(())
}

/// "Security Considerations": a publish authorized by a cookie must come
/// from the hub's own origin or a listed one.
#[tokio::test]
async fn a_cookie_authorized_publish_from_another_site_is_refused() -> TestResult {
    let mut c = hub_config();
    c.cors_origins = vec!["https://app.example.com".into()];
    let hub = start(c).await;
    let addr = hub.addr();
    let cookie = format!("__Secure-mercure_access_token={}", publish_all());
    let host = addr.to_string();
    let cases = [
        (vec![("Origin", "https://evil.example")], 403),
        (vec![("Referer", "https://evil.example/page")], 403),
        (vec![], 403),
        (vec![("Origin", "https://app.example.com")], 200),
        (vec![("Referer", "https://app.example.com/editor")], 200),
    ];
    let mut client = subscribe(addr, "match=t").await;
    for (extra, status) in cases {
        let mut headers = vec![
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie.as_str()),
        ];
        headers.extend(extra.iter().copied());
        let reply = request(
            addr,
            "POST",
            "/.well-known/mercure",
            &headers,
            b"topic=t&data=x",
        )
        .await;
        assert_eq!(reply.status, status, "{extra:?}: {}", reply.body);
    }
    // The hub's own origin.
    let own = format!("http://{host}");
    let reply = request(
        addr,
        "POST",
        "/.well-known/mercure",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", cookie.as_str()),
            ("Origin", own.as_str()),
        ],
        b"topic=t&data=x",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(client.take(3).await.len(), 3);
    client.expect_silence(SILENCE).await;
    // A token in the header needs no origin: a page cannot send it.
    assert_eq!(
        post(addr, Some(&publish_all()), "topic=t").await.status,
        200
    );
    Ok(())
}

#[tokio::test]
async fn the_subscription_api_last_event_id_is_earliest_before_any_event() -> TestResult {
    let hub = start(presence_hub()).await;
    let reply = get_with(
        hub.addr(),
        "/.well-known/mercure/subscriptions",
        &[("Authorization", &format!("Bearer {}", watcher_token()))],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["last_event_id"], "earliest");
    Ok(())
}

/// The draft's minimal self-issued subscriber token ("Authorization"),
/// header `{"alg": "ES256", "typ": "at+jwt"}` and its claims as written,
/// but for `exp`, whose example date has passed.
#[tokio::test]
async fn the_drafts_es256_subscriber_token_reads_private_updates() -> TestResult {
    let fixture = |name: &str| format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut c = config();
    c.jwt_alg = "ES256".into();
    c.publisher_jwt_key = vec![fixture("ec.pub.pem")];
    c.subscriber_jwt_key = vec![fixture("ec.pub.pem")];
    c.jwt_audience = Some(RESOURCE.into());
    let hub = start(c).await;
    let addr = hub.addr();
    let key = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec.pem"))?)?;
    let es256 = |claims: &Value| {
        let header = Header {
            typ: Some("at+jwt".into()),
            ..Header::new(Algorithm::ES256)
        };
        jsonwebtoken::encode(&header, claims, &key)
    };
    let reader = es256(&json!({
        "aud": "https://hub.example.com/.well-known/mercure",
        "exp": in_an_hour(),
        "sub": "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6",
        "authorization_details": [
            {
                "type": "mercure",
                "actions": ["subscribe"],
                "topics": [{"match": "https://example.com/books/:id", "match_type": "urlpattern"}]
            }
        ]
    }))?;
    let publisher = es256(&json!({
        "aud": RESOURCE,
        "exp": in_an_hour(),
        "authorization_details": [{"type": DETAIL_TYPE, "actions": ["publish"], "topics": [{"match": "*"}]}],
    }))?;
    let mut client = subscribe(
        addr,
        &format!(
            "match_urlpattern={}&access_token={reader}",
            enc("https://example.com/books/:id")
        ),
    )
    .await;
    let reply = post(
        addr,
        Some(&publisher),
        "topic=https://example.com/books/1&data=private&private=on",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(client.next().await.data, "private");
    Ok(())
}
