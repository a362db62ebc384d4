//! Hostile input: each family loops over many generated cases, checks the
//! exact answer of every one, then checks that nothing changed (the
//! history, what an open stream received) and that the hub still answers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use serde_json::{json, Value};

use pushwire_testkit::prelude::{config, get, raw_exchange, request, start, Reply, SseClient};
use pushwire_testkit::reliability::{self, Row};

const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

/// Every retained event, oldest first.
async fn history(addr: SocketAddr) -> Vec<Value> {
    let reply = get(addr, "/api/v1/events?limit=10000").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()["events"].as_array().unwrap().clone()
}

/// Collects every case whose answer differs from the expected one, so a
/// failure lists them all.
#[derive(Default)]
struct Cases {
    tried: u64,
    wrong: Vec<String>,
}

impl Cases {
    /// `reply` must be `status` with the JSON error `code`.
    fn expect(&mut self, what: &str, reply: &Reply, status: u16, code: &str) {
        self.tried += 1;
        let got_code = serde_json::from_str::<Value>(&reply.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        if reply.status != status || got_code != code {
            self.wrong.push(format!(
                "{what}: expected {status} {code}, got {} {}",
                reply.status, reply.body
            ));
        }
    }

    fn expect_ok(&mut self, what: &str, reply: &Reply) {
        self.tried += 1;
        if reply.status != 200 {
            self.wrong.push(format!(
                "{what}: expected 200, got {} {}",
                reply.status, reply.body
            ));
        }
    }

    fn check(&self) {
        assert!(
            self.wrong.is_empty(),
            "{} of {} cases answered wrongly:\n{}",
            self.wrong.len(),
            self.tried,
            self.wrong.join("\n")
        );
    }
}

fn pct(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn pct_bytes(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Reply {
    request(addr, "POST", path, &[("Content-Type", content_type)], body).await
}

/// Publishes a sentinel to everyone and checks it is the next thing the
/// watcher receives: nothing injected or smuggled reached it before.
async fn sentinel(addr: SocketAddr, watcher: &mut SseClient) {
    let id = pushwire_testkit::publish(addr, json!({"to": "all", "data": "sentinel"})).await;
    let next = watcher.next().await;
    assert_eq!(next.data, "sentinel", "the watcher received {next:?} first");
    assert_eq!(next.id.as_deref(), Some(id.as_str()));
    assert_eq!(next.event, "message");
}

/// A watcher of everything the hostile requests aim at.
async fn watcher(addr: SocketAddr) -> SseClient {
    let w = SseClient::connect(addr, "/api/v1/stream?user=victim&topic=t").await;
    assert_eq!(w.status, 200);
    w
}

/// Values that would end an SSE line or field if they reached the wire.
const INJECTIONS: &[&str] = &[
    "\r",
    "\n",
    "\r\n",
    "\0",
    "a\rb",
    "a\nb",
    "a\r\nb",
    "a\0b",
    "x\r\nid: 666",
    "x\nevent: evil",
    "x\rretry: 1",
    "x\r\n\r\ndata: smuggled",
    "\n\n",
    "\r\r",
    "ok\n",
    "\rok",
];

#[tokio::test]
async fn crlf_injection_in_every_field() {
    let server = start(config()).await;
    let addr = server.addr();
    let mut w = watcher(addr).await;
    let mut cases = Cases::default();

    for bad in INJECTIONS {
        let p = pct(bad);
        // JSON API: every field that names something or reaches the wire.
        for (field, event) in [
            ("id", json!({"to": "all", "data": "x", "id": bad})),
            ("event", json!({"to": "all", "data": "x", "event": bad})),
            ("topic", json!({"to": {"topics": ["t", bad]}, "data": "x"})),
            (
                "users",
                json!({"to": {"users": ["victim", bad]}, "data": "x"}),
            ),
            (
                "user_prefix",
                json!({"to": {"user_prefix": bad}, "data": "x"}),
            ),
        ] {
            let reply = post(addr, "/api/v1/publish", JSON, event.to_string().as_bytes()).await;
            cases.expect(
                &format!("json {field} {bad:?}"),
                &reply,
                400,
                "invalid_field",
            );
        }
        let retry = json!({"to": "all", "data": "x", "retry": bad});
        let reply = post(addr, "/api/v1/publish", JSON, retry.to_string().as_bytes()).await;
        cases.expect(&format!("json retry {bad:?}"), &reply, 400, "invalid_json");

        // Seed routes, in the query and in a form body.
        for params in [
            format!("id={p}&content=x"),
            format!("userId={p}&message=x"),
            format!("groupId={p}&message=x"),
            format!("ids=a,v{p}v&message=x"),
        ] {
            let route = match params.split('=').next().unwrap() {
                "id" => "/sse/push",
                "userId" => "/sse/sendMessage",
                "groupId" => "/sse/groupSendMessage",
                _ => "/sse/batchSendMessage",
            };
            let reply = get(addr, &format!("{route}?{params}")).await;
            cases.expect(
                &format!("query {route} {bad:?}"),
                &reply,
                400,
                "invalid_field",
            );
            let reply = post(addr, route, FORM, params.as_bytes()).await;
            cases.expect(
                &format!("form {route} {bad:?}"),
                &reply,
                400,
                "invalid_field",
            );
        }

        // Mercure's form.
        for form in [
            format!("topic={p}&data=x"),
            format!("topic=t&id={p}&data=x"),
            format!("topic=t&type={p}&data=x"),
            format!("topic=t&retry={p}&data=x"),
        ] {
            let reply = post(addr, "/.well-known/mercure", FORM, form.as_bytes()).await;
            cases.expect(&format!("mercure {form}"), &reply, 400, "invalid_field");
        }

        // Streams: the user id and topics they name.
        for path in [
            format!("/sse/subscribe/{p}"),
            format!("/sse/subscribe?id={p}"),
            format!("/api/v1/stream?user={p}"),
            format!("/api/v1/stream?topic={p}"),
        ] {
            let reply = get(addr, &path).await;
            cases.expect(&format!("stream {path}"), &reply, 400, "invalid_field");
        }
        // Mercure names a bad selector by its own code.
        let path = format!("/.well-known/mercure?topic={p}");
        let reply = get(addr, &path).await;
        cases.expect(&format!("stream {path}"), &reply, 400, "invalid_request");
    }
    cases.check();
    assert!(
        history(addr).await.is_empty(),
        "a refused request stored something"
    );

    // Data may hold any text: every line becomes its own `data:` line and
    // the page gets it back exactly, with no field of its own.
    let mut delivered = 0;
    let mut resumes = 0;
    for bad in INJECTIONS {
        let text = format!("before{bad}after");
        let expected = text.replace("\r\n", "\n").replace('\r', "\n");
        let p = pct(&text);
        let ids = [
            pushwire_testkit::publish(addr, json!({"to": {"users": ["victim"]}, "data": text}))
                .await,
            post(
                addr,
                "/sse/push",
                FORM,
                format!("id=victim&content={p}").as_bytes(),
            )
            .await
            .json()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
            post(
                addr,
                "/.well-known/mercure",
                FORM,
                format!("topic=t&data={p}").as_bytes(),
            )
            .await
            .body,
        ];
        for id in ids {
            let event = w.next().await;
            assert_eq!(event.data, expected, "data {text:?}");
            assert_eq!(event.id.as_deref(), Some(id.as_str()), "data {text:?}");
            assert_eq!(event.event, "message", "data {text:?}");
            delivered += 1;
        }
        // A resume point with line breaks comes back inside JSON, escaped.
        let mut reset =
            SseClient::connect(addr, &format!("/sse/subscribe/r?lastEventID={}", pct(bad))).await;
        let event = reset.next().await;
        assert_eq!(event.event, "reset");
        let data: Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(data["requested"], *bad);
        resumes += 1;
    }
    assert_eq!(history(addr).await.len(), delivered);
    sentinel(addr, &mut w).await;
    assert_eq!(get(addr, "/healthz").await.status, 200);
    reliability::record(Row {
        family: "CR/LF/NUL injection in every field that reaches the wire (JSON, seed query and form, Mercure form, stream routes)",
        cases: cases.tried + delivered as u64 + resumes,
        crashes: 0,
        lost: 0,
        outcome: "names and ids 400 invalid_field, nothing stored; data split into data lines, delivered exactly",
        test: "cargo test --test hostile crlf_injection_in_every_field",
    });
}

/// Byte sequences that are not UTF-8: lone continuation bytes, truncated
/// sequences, overlong forms, surrogates, out-of-range code points.
const NOT_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xfe",
    b"\x80",
    b"\xbf",
    b"\xc3\x28",
    b"\xc3",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xc0\xaf",
    b"\xe0\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"ok\xffok",
];

/// Sends raw bytes as one request on a fresh connection and returns the
/// answer (a reset after it is fine).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_exchange(addr, bytes).await.unwrap()
}

/// The status and body of the first response in `raw` (status 0: none).
fn first_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Reply {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

#[tokio::test]
async fn invalid_utf8_in_query_form_and_json() {
    let server = start(config()).await;
    let addr = server.addr();
    let mut w = watcher(addr).await;
    let mut cases = Cases::default();

    for bad in NOT_UTF8 {
        let p = pct_bytes(bad);
        let shown = format!("{bad:x?}");
        // Percent-encoded, in queries and forms of every route kind.
        for path in [
            format!("/sse/push?id=victim&content={p}"),
            format!("/sse/push?id={p}&content=x"),
            format!("/sse/sendMessage?user{p}=victim&message=x"),
            format!("/api/v1/stream?topic={p}"),
            format!("/sse/subscribe?id={p}"),
            format!("/api/v1/events?after={p}"),
            format!("/.well-known/mercure?topic={p}"),
            format!("/sse/subscribe/{p}"),
            format!("/sse/close/{p}"),
        ] {
            let reply = get(addr, &path).await;
            cases.expect(&format!("query {path}"), &reply, 400, "invalid_utf8");
        }
        let path = format!("/api/v1/users/{p}");
        let reply = request(addr, "DELETE", &path, &[], b"").await;
        cases.expect(&format!("path {path}"), &reply, 400, "invalid_utf8");
        for (route, form) in [
            ("/sse/push", format!("id=victim&content={p}")),
            ("/.well-known/mercure", format!("topic=t&data={p}")),
            ("/.well-known/mercure", format!("topic={p}&data=x")),
        ] {
            let reply = post(addr, route, FORM, form.as_bytes()).await;
            cases.expect(&format!("form {route} {form}"), &reply, 400, "invalid_utf8");
        }
        // Raw bytes in a form body.
        let mut form = b"id=victim&content=".to_vec();
        form.extend_from_slice(bad);
        let reply = post(addr, "/sse/push", FORM, &form).await;
        cases.expect(&format!("raw form {shown}"), &reply, 400, "invalid_utf8");
        // Raw bytes inside a JSON string.
        for template in [
            &br#"{"to": "all", "data": "@"}"#[..],
            br#"{"to": {"users": ["@"]}, "data": "x"}"#,
            br#"{"to": "all", "data": "x", "id": "@"}"#,
            br#"[{"to": "all", "data": "@"}]"#,
        ] {
            let at = template.iter().position(|&b| b == b'@').unwrap();
            let mut body = template[..at].to_vec();
            body.extend_from_slice(bad);
            body.extend_from_slice(&template[at + 1..]);
            let reply = post(addr, "/api/v1/publish", JSON, &body).await;
            cases.expect(&format!("json {shown}"), &reply, 400, "invalid_json");
        }
    }
    // JSON escapes of lone surrogates are not text either.
    for escape in [
        r"\ud800",
        r"\udfff",
        r"\ud800\u0041",
        r"\udc00\ud800",
        r"x\ud83d",
    ] {
        let body = format!(r#"{{"to": "all", "data": "{escape}"}}"#);
        let reply = post(addr, "/api/v1/publish", JSON, body.as_bytes()).await;
        cases.expect(
            &format!("json escape {escape}"),
            &reply,
            400,
            "invalid_json",
        );
    }
    cases.check();

    // Raw non-ASCII bytes in the request target never reach a handler as
    // text: the hub answers 400 (JSON when the router sees the request).
    let mut raw_cases = 0;
    for bad in NOT_UTF8 {
        let mut head = b"GET /sse/push?id=victim&content=".to_vec();
        head.extend_from_slice(bad);
        head.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let reply = first_reply(&raw(addr, &head).await);
        assert_eq!(reply.status, 400, "raw target {bad:x?}: {}", reply.body);
        raw_cases += 1;
    }

    assert!(
        history(addr).await.is_empty(),
        "a refused request stored something"
    );
    sentinel(addr, &mut w).await;
    assert_eq!(get(addr, "/healthz").await.status, 200);
    reliability::record(Row {
        family: "invalid UTF-8 in queries, forms, JSON bodies, percent-encoded and raw",
        cases: cases.tried + raw_cases,
        crashes: 0,
        lost: 0,
        outcome: "400 invalid_utf8 (parameters) or invalid_json (bodies), nothing stored",
        test: "cargo test --test hostile invalid_utf8_in_query_form_and_json",
    });
}

#[tokio::test]
async fn duplicated_and_conflicting_parameters() {
    let server = start(config()).await;
    let addr = server.addr();
    let mut w = watcher(addr).await;
    let mut cases = Cases::default();
    let conflict = "conflicting_parameter";

    // Every single-valued parameter of every route, given twice differently,
    // in the query, in the form, and once in each.
    let routes: &[(&str, &[(&str, &str)])] = &[
        ("/sse/push", &[("id", "victim"), ("content", "x")]),
        (
            "/sse/sendMessage",
            &[("userId", "victim"), ("message", "x")],
        ),
        (
            "/sse/groupSendMessage",
            &[("groupId", "vic"), ("message", "x")],
        ),
        (
            "/sse/batchSendMessage",
            &[("ids", "victim"), ("message", "x")],
        ),
        ("/sse/over", &[("id", "victim")]),
        (
            "/.well-known/mercure",
            &[
                ("topic", "t"),
                ("id", "i"),
                ("type", "e"),
                ("data", "x"),
                ("retry", "5"),
            ],
        ),
    ];
    for (route, params) in routes {
        for (twice, value) in params.iter() {
            if *twice == "topic" {
                continue; // topics are a list
            }
            let mut pairs: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let other = format!("{twice}={value}-other");
            let query = format!("{}&{other}", pairs.join("&"));
            if *route != "/.well-known/mercure" {
                let reply = get(addr, &format!("{route}?{query}")).await;
                cases.expect(&format!("query {route} {twice}"), &reply, 400, conflict);
            }
            let reply = post(addr, route, FORM, query.as_bytes()).await;
            cases.expect(&format!("form {route} {twice}"), &reply, 400, conflict);
            // One in the query, the other in the form.
            pairs.retain(|p| !p.starts_with(&format!("{twice}=")));
            let path = format!("{route}?{twice}={value}");
            let reply = post(
                addr,
                &path,
                FORM,
                format!("{}&{other}", pairs.join("&")).as_bytes(),
            )
            .await;
            cases.expect(
                &format!("query+form {route} {twice}"),
                &reply,
                400,
                conflict,
            );
        }
    }
    for path in [
        "/api/v1/stream?user=a&user=b",
        "/sse/subscribe?id=a&id=b",
        "/sse/subscribe/u?lastEventID=1&lastEventID=2",
        "/api/v1/events?limit=1&limit=2",
        "/api/v1/events?after=1&after=2",
        "/api/v1/events?user=a&user=b",
    ] {
        let reply = get(addr, path).await;
        cases.expect(path, &reply, 400, conflict);
    }
    // JSON objects with a key twice are refused whole.
    for body in [
        r#"{"to": "all", "data": "a", "data": "b"}"#,
        r#"{"to": "all", "to": {"users": ["victim"]}, "data": "a"}"#,
        r#"{"to": "all", "data": "a", "id": "x", "id": "y"}"#,
        r#"{"to": "all", "data": "a", "event": "x", "event": "x"}"#,
        r#"{"to": {"users": ["a"], "users": ["b"]}, "data": "a"}"#,
        r#"{"to": {"users": ["a"], "topics": ["t"]}, "data": "a"}"#,
        r#"[{"to": "all", "data": "a"}, {"to": "all", "data": "a", "retry": 1, "retry": 2}]"#,
    ] {
        let reply = post(addr, "/api/v1/publish", JSON, body.as_bytes()).await;
        cases.expect(body, &reply, 400, "invalid_json");
    }
    cases.check();
    assert!(
        history(addr).await.is_empty(),
        "a refused request stored something"
    );
    assert_eq!(
        pushwire_testkit::user_count(addr).await,
        1,
        "the victim's stream is still open"
    );

    // A repeat with the same value is not ambiguous: one event, once.
    let reply = get(
        addr,
        "/sse/push?id=victim&id=victim&content=same&content=same",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(w.next().await.data, "same");
    assert_eq!(history(addr).await.len(), 1);
    sentinel(addr, &mut w).await;
    reliability::record(Row {
        family: "duplicated and conflicting parameters (query, form, both, JSON keys)",
        cases: cases.tried + 1,
        crashes: 0,
        lost: 0,
        outcome: "400 conflicting_parameter or invalid_json, nothing stored; identical repeats accepted once",
        test: "cargo test --test hostile duplicated_and_conflicting_parameters",
    });
}

#[tokio::test]
async fn absurd_numbers() {
    let server = start(config()).await;
    let addr = server.addr();
    let mut w = watcher(addr).await;
    let mut cases = Cases::default();
    let existing = pushwire_testkit::publish(addr, json!({"to": "all", "data": "first"})).await;
    assert_eq!(w.next().await.data, "first");

    const NOT_NUMBERS: &[&str] = &[
        "99999999999999999999",
        "18446744073709551616",
        "-1",
        "-0",
        "1.5",
        "1e3",
        "1e400",
        "-1e400",
        "0x10",
        "+5",
        " 5",
        "5 ",
        "NaN",
        "Infinity",
        "",
        "١٢",
    ];
    // JSON retry: anything but an integer in range is not valid JSON for it.
    // (Spaces around a JSON number are JSON's own whitespace.)
    for text in NOT_NUMBERS
        .iter()
        .filter(|t| !t.trim().is_empty() && t.trim() == **t)
    {
        let body = format!(r#"{{"to": "all", "data": "x", "retry": {text}}}"#);
        let reply = post(addr, "/api/v1/publish", JSON, body.as_bytes()).await;
        cases.expect(&format!("json retry {text}"), &reply, 400, "invalid_json");
    }
    for retry in [86_400_001u64, u64::MAX] {
        let body = json!({"to": "all", "data": "x", "retry": retry});
        let reply = post(addr, "/api/v1/publish", JSON, body.to_string().as_bytes()).await;
        cases.expect(&format!("json retry {retry}"), &reply, 400, "invalid_field");
    }
    // Mercure's retry: ASCII digits only, and not above a day.
    for text in NOT_NUMBERS.iter().chain(&["86400001"]) {
        let form = format!("topic=t&data=x&retry={}", pct(text));
        let reply = post(addr, "/.well-known/mercure", FORM, form.as_bytes()).await;
        cases.expect(
            &format!("mercure retry {text:?}"),
            &reply,
            400,
            "invalid_field",
        );
    }
    // The history API's limit.
    for text in NOT_NUMBERS.iter().chain(&["0", "10001"]) {
        let reply = get(addr, &format!("/api/v1/events?limit={}", pct(text))).await;
        cases.expect(&format!("limit {text:?}"), &reply, 400, "invalid_parameter");
    }
    // `after` is an event id: numbers that were never issued are unknown.
    for text in NOT_NUMBERS.iter().filter(|t| !t.is_empty()) {
        let reply = get(addr, &format!("/api/v1/events?after={}", pct(text))).await;
        cases.expect(
            &format!("after {text:?}"),
            &reply,
            404,
            "unknown_last_event_id",
        );
    }
    cases.check();
    // As a resume point, such a number is an unknown id: a reset, never a
    // pretended continuity.
    let mut resets = 0;
    for text in NOT_NUMBERS.iter().filter(|t| !t.is_empty()) {
        let mut s =
            SseClient::connect(addr, &format!("/sse/subscribe/r?lastEventID={}", pct(text))).await;
        assert_eq!(s.header("pushwire-reset"), Some("1"), "{text}");
        let reset = s.next().await;
        assert_eq!(reset.event, "reset");
        assert_eq!(reset.id.as_deref(), Some(existing.as_str()));
        resets += 1;
    }

    assert_eq!(
        history(addr).await.len(),
        1,
        "a refused request stored something"
    );
    sentinel(addr, &mut w).await;
    reliability::record(Row {
        family: "absurd numbers (overflow, negative, floats, 1e400, non-ASCII digits) in retry, limit, after, Last-Event-ID",
        cases: cases.tried + resets,
        crashes: 0,
        lost: 0,
        outcome: "400 invalid_json / invalid_field / invalid_parameter, 404 or a reset for ids, nothing stored",
        test: "cargo test --test hostile absurd_numbers",
    });
}

#[tokio::test]
async fn huge_and_deeply_nested_json() {
    let server = start(config()).await;
    let addr = server.addr();
    let mut w = watcher(addr).await;
    let mut cases = Cases::default();

    // Nesting far beyond serde_json's recursion limit (128): refused, and
    // the stack holds (a stack overflow would abort this test process).
    for depth in [129, 1_000, 10_000, 100_000, 400_000] {
        let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let reply = post(addr, "/api/v1/publish", JSON, arrays.as_bytes()).await;
        cases.expect(&format!("arrays {depth}"), &reply, 400, "invalid_json");
        let unclosed = "[".repeat(depth);
        let reply = post(addr, "/api/v1/publish", JSON, unclosed.as_bytes()).await;
        cases.expect(&format!("unclosed {depth}"), &reply, 400, "invalid_json");
        let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
        if objects.len() <= 1_048_576 {
            let reply = post(addr, "/api/v1/publish", JSON, objects.as_bytes()).await;
            cases.expect(&format!("objects {depth}"), &reply, 400, "invalid_json");
        }
        let in_data = format!(
            r#"{{"to": "all", "data": {}{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        if in_data.len() <= 1_048_576 {
            let reply = post(addr, "/api/v1/publish", JSON, in_data.as_bytes()).await;
            cases.expect(&format!("data {depth}"), &reply, 400, "invalid_json");
        }
    }
    cases.check();
    assert!(history(addr).await.is_empty());

    // Nesting within the limit is data like any other.
    let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let body = format!(r#"{{"to": "all", "data": {nested}}}"#);
    let reply = post(addr, "/api/v1/publish", JSON, body.as_bytes()).await;
    cases.expect_ok("nested 100 in data", &reply);
    assert_eq!(w.next().await.data, nested);

    // A string that fills the body up to its last byte is stored and
    // delivered whole; one byte more is refused before it is read.
    let skeleton = json!({"to": "all", "data": ""}).to_string();
    let fill = 1_048_576 - skeleton.len();
    let big = "é".repeat(fill / 2) + &"x".repeat(fill % 2);
    let body = json!({"to": "all", "data": big}).to_string();
    assert_eq!(body.len(), 1_048_576);
    let reply = post(addr, "/api/v1/publish", JSON, body.as_bytes()).await;
    cases.expect_ok("body of exactly the limit", &reply);
    assert_eq!(w.next().await.data, big);
    let over = json!({"to": "all", "data": big.clone() + "x"}).to_string();
    let reply = post(addr, "/api/v1/publish", JSON, over.as_bytes()).await;
    cases.expect("one byte over", &reply, 413, "body_too_large");
    // Many tiny events in one batch are fine; one bad one refuses them all.
    let mut batch: Vec<Value> = (0..5_000)
        .map(|i| json!({"to": "all", "data": i.to_string()}))
        .collect();
    batch.push(json!({"to": "all", "data": "x", "id": "1"}));
    let reply = post(
        addr,
        "/api/v1/publish",
        JSON,
        Value::from(batch).to_string().as_bytes(),
    )
    .await;
    cases.expect("batch with one bad event", &reply, 400, "invalid_field");
    cases.check();

    assert_eq!(history(addr).await.len(), 2);
    sentinel(addr, &mut w).await;
    assert_eq!(get(addr, "/healthz").await.status, 200);
    reliability::record(Row {
        family: "huge and deeply nested JSON (to 400,000 levels), strings up to the body limit",
        cases: cases.tried,
        crashes: 0,
        lost: 0,
        outcome: "400 invalid_json past serde_json's recursion limit, no stack overflow; the limit-sized body delivered whole, one byte more 413",
        test: "cargo test --test hostile huge_and_deeply_nested_json",
    });
}

#[tokio::test]
async fn path_traversal_never_leaves_the_embedded_page() {
    let server = start(config()).await;
    let addr = server.addr();
    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.starts_with("<!doctype html>"));

    let prefixes = [
        "/",
        "/static/",
        "/web/",
        "/assets/",
        "/./",
        "//",
        "/index.html/",
    ];
    let ups = [
        "../",
        "..%2f",
        "..%2F",
        "%2e%2e/",
        "%2e%2e%2f",
        ".%2e/",
        "%2e./",
        "..\\",
        "..%5c",
        "%252e%252e%252f",
        "..%252f",
        "%c0%ae%c0%ae/",
        "%uff0e%uff0e/",
        "....//",
        "..;/",
        "..%00/",
        ".../",
    ];
    let targets = [
        "etc/passwd",
        "Cargo.toml",
        "src/main.rs",
        "web/index.html",
        "proc/self/environ",
    ];
    let mut cases = 0u64;
    let mut wrong = Vec::new();
    for prefix in prefixes {
        for up in ups {
            for depth in [1, 4] {
                for target in targets {
                    let path = format!("{prefix}{}{target}", up.repeat(depth));
                    let raw = raw(
                        addr,
                        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .await;
                    let reply = first_reply(&raw);
                    cases += 1;
                    // Either the router's JSON 404 or hyper's 400 for a
                    // target it will not parse; never a file.
                    let code = serde_json::from_str::<Value>(&reply.body)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
                    let fine = (reply.status == 404 && code.as_deref() == Some("not_found"))
                        || (reply.status == 400 && reply.body.is_empty());
                    if !fine
                        || reply.body.contains("root:")
                        || reply.body.contains("[package]")
                        || reply.body.contains("fn main")
                    {
                        wrong.push(format!("{path}: {} {}", reply.status, reply.body));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cases}:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The query never picks a file either.
    for query in [
        "?file=../Cargo.toml",
        "?../../etc/passwd",
        "?%2e%2e%2fCargo.toml",
    ] {
        let reply = get(addr, &format!("/{query}")).await;
        assert_eq!(reply.body, page.body, "{query}");
        cases += 1;
    }
    assert_eq!(get(addr, "/healthz").await.status, 200);
    reliability::record(Row {
        family: "path traversal against the embedded demo page (encoded, double-encoded, backslashes, overlong)",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "404 not_found (or 400 for targets hyper refuses), never a file outside the embedded page",
        test: "cargo test --test hostile path_traversal_never_leaves_the_embedded_page",
    });
}

#[tokio::test]
async fn unsupported_methods_on_every_route_get_a_json_405() {
    let server = start(config()).await;
    let addr = server.addr();
    let mut w = watcher(addr).await;
    let mut cases = Cases::default();

    let routes: &[(&str, &[&str])] = &[
        ("/", &["GET"]),
        ("/metrics", &["GET"]),
        ("/healthz", &["GET"]),
        ("/sse/subscribe/victim", &["GET"]),
        ("/sse/subscribe?id=victim", &["GET"]),
        ("/api/v1/stream?user=victim", &["GET"]),
        ("/sse/sendMessage?userId=victim&message=x", &["GET", "POST"]),
        ("/sse/push?id=victim&content=x", &["GET", "POST"]),
        (
            "/sse/groupSendMessage?groupId=v&message=x",
            &["GET", "POST"],
        ),
        ("/sse/batchSendMessage?message=x", &["GET", "POST"]),
        ("/sse/close/victim", &["GET", "POST"]),
        ("/sse/over?id=victim", &["GET", "POST"]),
        ("/sse/getUserCount", &["GET", "POST"]),
        ("/sse/getIds", &["GET", "POST"]),
        ("/api/v1/publish", &["POST"]),
        ("/api/v1/stats", &["GET"]),
        ("/api/v1/users", &["GET"]),
        ("/api/v1/users/victim", &["DELETE"]),
        ("/api/v1/events", &["GET"]),
        ("/.well-known/mercure?topic=t", &["GET", "POST", "OPTIONS"]),
        ("/.well-known/mercure/subscriptions", &["GET", "OPTIONS"]),
        ("/.well-known/mercure/subscriptions/t", &["GET", "OPTIONS"]),
        (
            "/.well-known/mercure/subscriptions/t/s",
            &["GET", "OPTIONS"],
        ),
    ];
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "MKCOL", "LOCK",
        "PURGE", "FOO",
    ];
    for (path, allowed) in routes {
        for method in methods.iter().filter(|m| !allowed.contains(m)) {
            let reply = request(addr, method, path, &[], b"").await;
            cases.expect(
                &format!("{method} {path}"),
                &reply,
                405,
                "method_not_allowed",
            );
        }
    }
    cases.check();
    assert!(history(addr).await.is_empty());
    assert_eq!(
        pushwire_testkit::user_count(addr).await,
        1,
        "no close went through"
    );
    sentinel(addr, &mut w).await;
    reliability::record(Row {
        family: "unsupported methods on every route",
        cases: cases.tried,
        crashes: 0,
        lost: 0,
        outcome: "405 method_not_allowed (JSON), nothing published or closed",
        test: "cargo test --test hostile unsupported_methods_on_every_route_get_a_json_405",
    });
}

/// A publish to everyone carrying `marker`, as it would be smuggled.
fn smuggled(marker: &str) -> String {
    let body = json!({"to": "all", "data": marker}).to_string();
    format!(
        "POST /api/v1/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn request_smuggling_shapes_are_refused_and_never_executed() {
    let server = start(config()).await;
    let addr = server.addr();
    let mut w = watcher(addr).await;

    // Each shape: a front publish whose framing is ambiguous or malformed,
    // followed by a publish that would run if the hub read the framing the
    // way a lenient front proxy might. `true`: the hub must refuse the front
    // request itself (400, or close without answering); `false`: it may
    // serve it, but must then close (hyper reads Transfer-Encoding over
    // Content-Length and drops keep-alive).
    let body = json!({"to": "all", "data": "front"}).to_string();
    let n = body.len();
    let chunked = format!("{n:x}\r\n{body}\r\n0\r\n\r\n");
    let front = |headers: &str, rest: &str| {
        format!(
            "POST /api/v1/publish HTTP/1.1\r\nHost: localhost\r\n\
             Content-Type: application/json\r\n{headers}\r\n{rest}"
        )
    };
    let te = "Transfer-Encoding: chunked\r\n";
    let bare_lf = format!(
        "POST /api/v1/publish HTTP/1.1\nHost: localhost\nContent-Type: application/json\n\
         Content-Length: {n}\n\n{body}"
    );
    let shapes: Vec<(&str, String, bool)> = vec![
        (
            "CL and TE",
            front(&format!("Content-Length: {n}\r\n{te}"), &chunked),
            false,
        ),
        (
            "TE and CL",
            front(&format!("{te}Content-Length: {n}\r\n"), &chunked),
            false,
        ),
        (
            "two differing CL",
            front(
                &format!("Content-Length: {n}\r\nContent-Length: 0\r\n"),
                &body,
            ),
            true,
        ),
        (
            "CL list",
            front(&format!("Content-Length: {n}, 0\r\n"), &body),
            true,
        ),
        (
            "TE chunked, identity",
            front("Transfer-Encoding: chunked, identity\r\n", &chunked),
            true,
        ),
        (
            "TE with a space before the colon",
            front("Transfer-Encoding : chunked\r\n", &chunked),
            true,
        ),
        (
            "TE xchunked",
            front("Transfer-Encoding: xchunked\r\n", &chunked),
            true,
        ),
        (
            "TE folded onto the next line",
            front("Transfer-Encoding:\r\n chunked\r\n", &chunked),
            true,
        ),
        (
            "TE with a vertical tab",
            front("Transfer-Encoding:\x0bchunked\r\n", &chunked),
            true,
        ),
        (
            "TE chunked in HTTP/1.0",
            front(te, &chunked).replacen("HTTP/1.1", "HTTP/1.0", 1),
            true,
        ),
        (
            "chunk size overflow",
            front(
                te,
                &format!("ffffffffffffffffff{n:x}\r\n{body}\r\n0\r\n\r\n"),
            ),
            true,
        ),
        (
            "chunk size not hex",
            front(te, &format!("zz\r\n{body}\r\n0\r\n\r\n")),
            true,
        ),
        (
            "chunk without CRLF after its data",
            front(te, &format!("{n:x}\r\n{body}0\r\n\r\n")),
            true,
        ),
        (
            "chunk size ended by LF alone",
            front(te, &format!("{n:x}\n{body}\r\n0\r\n\r\n")),
            true,
        ),
        ("negative CL", front("Content-Length: -1\r\n", &body), true),
        (
            "CL with a plus",
            front(&format!("Content-Length: +{n}\r\n"), &body),
            true,
        ),
        (
            "CL in hex",
            front(&format!("Content-Length: 0x{n:x}\r\n"), &body),
            true,
        ),
        (
            "CL overflow",
            front("Content-Length: 99999999999999999999999\r\n", &body),
            true,
        ),
        ("bare LF line endings", bare_lf.clone(), true),
        (
            "one bare LF hiding a Content-Length",
            front(&format!("X-A: a\nContent-Length: {n}\r\n"), &body),
            true,
        ),
        ("bare CR line endings", bare_lf.replace('\n', "\r"), true),
        (
            "NUL in a header",
            front(&format!("X-A: a\0b\r\nContent-Length: {n}\r\n"), &body),
            true,
        ),
        (
            "space in a header name",
            front(&format!("Content Length: {n}\r\n"), &body),
            true,
        ),
        (
            "TE padded past any sane length, then a bare-LF request",
            front(
                &format!("Transfer-Encoding:{}chunked\r\n", " ".repeat(100)),
                &chunked,
            ) + &bare_lf.replace("front", "SMUGG"),
            true,
        ),
        (
            "a clean request, then one with bare LF",
            front(&format!("Content-Length: {n}\r\n"), &body) + &bare_lf,
            false,
        ),
    ];
    let mut cases = 0u64;
    let mut wrong = Vec::new();
    for (i, (name, front, must_refuse)) in shapes.iter().enumerate() {
        let marker = format!("smuggled-{i}");
        let answer = raw(addr, format!("{front}{}", smuggled(&marker)).as_bytes()).await;
        let text = String::from_utf8_lossy(&answer).to_string();
        let responses = text.matches("HTTP/1.1 ").count();
        let status = first_reply(&answer).status;
        cases += 1;
        // The connection closed (raw() read to its end) after at most the
        // front request's answer: the smuggled one got none.
        let refused = status == 400 || responses == 0;
        if responses > 1 || (*must_refuse && !refused) {
            wrong.push(format!(
                "{name}: {responses} responses, first {status}: {text:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let stored = history(addr).await;
    assert!(
        stored.iter().all(|e| e["data"] == "front"),
        "a smuggled publish was executed: {stored:?}"
    );
    // Only the fronts hyper may serve were stored: the two CL+TE orders,
    // and the clean request before the bare-LF one unless both arrived in
    // one read (the read that holds the bare LF closes the connection).
    assert!((2..=3).contains(&stored.len()), "{stored:?}");
    for _ in 0..stored.len() {
        assert_eq!(w.next().await.data, "front");
    }
    sentinel(addr, &mut w).await;
    assert_eq!(get(addr, "/healthz").await.status, 200);
    reliability::record(Row {
        family: "HTTP request smuggling shapes over raw TCP (CL+TE, duplicate CL, obfuscated TE, chunk overflow, bare LF/CR)",
        cases,
        crashes: 0,
        lost: 0,
        outcome: "400 or connection closed after the front request; the smuggled publish never executed",
        test: "cargo test --test hostile request_smuggling_shapes_are_refused_and_never_executed",
    });
}

/// A raw request for `path` with exactly the given head lines (no `Host`
/// added), sent in pieces cut at `cuts`, each its own segment.
async fn raw_in_pieces(addr: SocketAddr, bytes: &[u8], cuts: &[usize]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.set_nodelay(true).unwrap();
    let mut from = 0;
    for &cut in cuts.iter().chain([&bytes.len()]) {
        let cut = cut.min(bytes.len());
        if cut <= from {
            continue;
        }
        if socket.write_all(&bytes[from..cut]).await.is_err() {
            break;
        }
        from = cut;
        // Separate segments: the hub reads the head in pieces.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        pushwire_testkit::prelude::WAIT,
        socket.read_to_end(&mut out),
    )
    .await;
    out
}

/// `status` and the JSON error code of the first answer in `raw`.
fn status_and_code(raw: &[u8]) -> (u16, String) {
    let reply = first_reply(raw);
    let code = serde_json::from_str::<Value>(&reply.body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (reply.status, code)
}

#[tokio::test]
async fn requests_without_one_valid_host_get_400_and_run_nothing() {
    let server = start(config()).await;
    let addr = server.addr();
    let mut w = watcher(addr).await;
    let hosts: Vec<(&str, String)> = vec![
        ("no Host", String::new()),
        ("two Hosts", "Host: localhost\r\nHost: localhost\r\n".into()),
        (
            "two differing Hosts",
            "Host: localhost\r\nHost: evil\r\n".into(),
        ),
        ("empty Host", "Host: \r\n".into()),
        ("a space", "Host: a b\r\n".into()),
        ("a slash", "Host: a/b\r\n".into()),
        ("userinfo", "Host: user@h\r\n".into()),
        ("unclosed IPv6 literal", "Host: [::1\r\n".into()),
        ("negative port", "Host: localhost:-1\r\n".into()),
        ("port over 65535", "Host: host:99999\r\n".into()),
    ];
    let mut cases = Cases::default();
    let mut wrong = Vec::new();
    for (i, (name, host)) in hosts.iter().enumerate() {
        let body = json!({"to": "all", "data": format!("badhost-{i}")}).to_string();
        let publish = format!(
            "POST /api/v1/publish HTTP/1.1\r\n{host}Content-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let stream = format!(
            "GET /api/v1/stream?topic=t HTTP/1.1\r\n{host}Accept: text/event-stream\r\n\r\n"
        );
        let seed = format!(
            "GET /sse/sendMessage?userId=victim&message=badhost-{i} HTTP/1.1\r\n{host}\r\n"
        );
        for (route, request) in [("publish", &publish), ("stream", &stream), ("seed", &seed)] {
            let bytes = request.as_bytes();
            // Whole, and cut inside the request line, the Host line and
            // right after its colon.
            let host_at = request.find("Host").unwrap_or(5);
            let splits: [&[usize]; 3] = [&[], &[3, 9], &[host_at + 2, host_at + 5, host_at + 7]];
            for cuts in splits {
                cases.tried += 1;
                let answer = raw_in_pieces(addr, bytes, cuts).await;
                let (status, code) = status_and_code(&answer);
                if (status, code.as_str()) != (400, "invalid_host") {
                    wrong.push(format!(
                        "{name} ({route}, cut at {cuts:?}): {status} {code}"
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    cases.check();
    // HTTP/1.0 may leave Host out; a valid one is served.
    let old = raw(addr, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert_eq!(first_reply(&old).status, 200);
    let ok = raw(
        addr,
        b"GET /healthz HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(first_reply(&ok).status, 200);
    sentinel(addr, &mut w).await;
    assert!(
        history(addr).await.iter().all(|e| e["data"] == "sentinel"),
        "a request with a bad Host was served"
    );
    reliability::record(Row {
        family: "missing, repeated and invalid Host headers over raw TCP, split across segments",
        cases: cases.tried + 2,
        crashes: 0,
        lost: 0,
        outcome: "400 invalid_host on every route, nothing published or opened",
        test: "cargo test --test hostile requests_without_one_valid_host_get_400_and_run_nothing",
    });
}

#[tokio::test]
async fn every_forwarding_header_makes_a_loopback_publish_remote() {
    let server = start(config()).await;
    let addr = server.addr();
    let body = json!({"to": "all", "data": "proxied"}).to_string();
    let mut cases = Cases::default();
    for header in [
        ("Via", "1.1 proxy.example"),
        ("Forwarded", "for=203.0.113.7"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Real-IP", "203.0.113.7"),
    ] {
        let reply = request(
            addr,
            "POST",
            "/api/v1/publish",
            &[("Content-Type", JSON), header],
            body.as_bytes(),
        )
        .await;
        cases.expect(header.0, &reply, 403, "unauthorized");
        let seed = request(
            addr,
            "GET",
            "/sse/push?id=u&content=proxied",
            &[header],
            b"",
        )
        .await;
        cases.expect(header.0, &seed, 403, "unauthorized");
    }
    cases.check();
    assert!(history(addr).await.is_empty());
    reliability::record(Row {
        family: "keyless loopback publishes carrying Via, Forwarded, X-Forwarded-For or X-Real-IP",
        cases: cases.tried,
        crashes: 0,
        lost: 0,
        outcome: "403 unauthorized (treated as remote), nothing stored",
        test: "cargo test --test hostile every_forwarding_header_makes_a_loopback_publish_remote",
    });
}

/// A raw `GET` with the given `Host` and extra head lines.
async fn get_with_host(addr: SocketAddr, path: &str, host: &str, extra: &str) -> (u16, String) {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    status_and_code(&raw(addr, request.as_bytes()).await)
}

#[tokio::test]
async fn keyless_writes_refuse_other_sites_and_rebound_hosts() {
    let mut c = config();
    c.allowed_hosts = vec!["hub.internal".into()];
    let server = start(c).await;
    let addr = server.addr();
    let mut tab = SseClient::connect(addr, "/sse/subscribe/victim").await;
    assert_eq!(tab.status, 200);
    let send = "/sse/sendMessage?userId=victim&message=";
    let mut cases = Cases::default();

    // A page elsewhere: an image or link (no Origin, Sec-Fetch-Site), a
    // fetch or form (Origin).
    for (what, headers) in [
        ("cross-site GET", vec![("Sec-Fetch-Site", "cross-site")]),
        ("foreign Origin", vec![("Origin", "https://evil.example")]),
        (
            "look-alike Origin",
            vec![("Origin", "http://localhost.evil.example")],
        ),
    ] {
        for path in [format!("{send}evil"), "/sse/close/victim".to_owned()] {
            let reply = request(addr, "GET", &path, &headers, b"").await;
            cases.expect(&format!("{what} {path}"), &reply, 403, "cross_origin");
        }
        let mut with_type = headers.clone();
        with_type.push(("Content-Type", JSON));
        let body = json!({"to": {"user": "victim"}, "data": "evil"}).to_string();
        let reply = request(addr, "POST", "/api/v1/publish", &with_type, body.as_bytes()).await;
        cases.expect(&format!("{what} publish"), &reply, 403, "cross_origin");
        let reply = request(addr, "GET", "/sse/getIds", &headers, b"").await;
        cases.expect(&format!("{what} getIds"), &reply, 403, "cross_origin");
    }
    // The seed's page opened from a file, and a local dev server.
    for (what, origin) in [
        ("file page", "null"),
        ("local page", "http://localhost:3000"),
    ] {
        let path = format!("{send}{}", pct(what));
        let reply = request(
            addr,
            "GET",
            &path,
            &[("Origin", origin), ("Sec-Fetch-Site", "cross-site")],
            b"",
        )
        .await;
        cases.expect_ok(what, &reply);
        // The first thing the tab receives: nothing refused reached it.
        assert_eq!(tab.next().await.data, what);
    }

    // DNS rebinding: the page's own name, resolved to 127.0.0.1.
    for path in [
        "/api/v1/events",
        "/api/v1/stats",
        "/sse/getUserCount",
        "/sse/sendMessage?userId=victim&message=rebound",
    ] {
        cases.tried += 1;
        let got = get_with_host(addr, path, "rebind.attacker.example", "").await;
        if got != (421, "host_not_allowed".to_owned()) {
            cases.wrong.push(format!("rebound {path}: {got:?}"));
        }
        cases.tried += 1;
        let got = get_with_host(addr, path, "hub.internal:8080", "").await;
        if got.0 != 200 {
            cases.wrong.push(format!("allowed host {path}: {got:?}"));
        }
    }
    cases.check();
    // The allowed host's publish is the next delivery; nothing else came.
    assert_eq!(tab.next().await.data, "rebound");
    tab.expect_silence(std::time::Duration::from_millis(200))
        .await;
    assert!(!tab.ended, "a refused close reached the stream");

    // With a publisher credential these checks do not apply.
    let mut keyed = config();
    keyed.publisher_key = Some("k".into());
    let keyed = start(keyed).await;
    let reply = request(
        keyed.addr(),
        "GET",
        "/sse/getUserCount",
        &[
            ("Authorization", "Bearer k"),
            ("Origin", "https://app.example"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let got = get_with_host(
        keyed.addr(),
        "/api/v1/stats",
        "hub.example.com",
        "Authorization: Bearer k\r\n",
    )
    .await;
    assert_eq!(got.0, 200, "{got:?}");
    reliability::record(Row {
        family: "browser requests to a keyless hub: cross-site GETs and Origins, DNS-rebound Host names",
        cases: cases.tried + 2,
        crashes: 0,
        lost: 0,
        outcome: "403 cross_origin / 421 host_not_allowed, nothing published or closed; Origin null, loopback origins and --allowed-hosts served",
        test: "cargo test --test hostile keyless_writes_refuse_other_sites_and_rebound_hosts",
    });
}
