//! The OpenAPI document at `/api/openapi.json` describes what the hub really
//! answers: it lists the JSON API's routes, and every answer the hub gives
//! (successes and each error status) validates against the schema the
//! document gives for that route, method and status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pushwire_testkit::prelude::*;
use pushwire_testkit::reliability::{self, Row};
use serde_json::{json, Value};

/// The routes and methods the document must describe.
const ROUTES: [(&str, &str); 28] = [
    ("/sse/subscribe/{user}", "get"),
    ("/sse/subscribe", "get"),
    ("/sse/sendMessage", "get"),
    ("/sse/sendMessage", "post"),
    ("/sse/push", "get"),
    ("/sse/push", "post"),
    ("/sse/groupSendMessage", "get"),
    ("/sse/groupSendMessage", "post"),
    ("/sse/batchSendMessage", "get"),
    ("/sse/batchSendMessage", "post"),
    ("/sse/close/{user}", "get"),
    ("/sse/over", "get"),
    ("/sse/getUserCount", "get"),
    ("/sse/getIds", "get"),
    ("/.well-known/mercure", "get"),
    ("/.well-known/mercure", "post"),
    ("/.well-known/mercure/subscriptions", "get"),
    ("/.well-known/mercure/subscriptions/{selector}", "get"),
    (
        "/.well-known/mercure/subscriptions/{selector}/{subscriber}",
        "get",
    ),
    (
        "/.well-known/mercure/subscriptions/{match_type}/{selector}/{subscriber}",
        "get",
    ),
    ("/api/v1/publish", "post"),
    ("/api/v1/stats", "get"),
    ("/api/v1/users", "get"),
    ("/api/v1/topics", "get"),
    ("/api/v1/users/{user}", "delete"),
    ("/api/v1/events", "get"),
    ("/api/v1/stream", "get"),
    ("/healthz", "get"),
];

async fn document(addr: std::net::SocketAddr) -> Value {
    let reply = get(addr, "/api/openapi.json").await;
    assert_eq!(reply.status, 200);
    assert!(reply
        .header("content-type")
        .is_some_and(|t| t.starts_with("application/json")));
    reply.json()
}

#[tokio::test]
async fn the_document_lists_every_route_and_error_status() {
    let server = start_default().await;
    let doc = document(server.addr()).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for (path, method) in ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    assert!(
        doc["paths"]["/api/v1/stream"]["get"]["responses"]["200"]["content"]["text/event-stream"]
            .is_object(),
        "the stream is described as text/event-stream"
    );
    let mut statuses: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .flat_map(|op| op["responses"].as_object().unwrap().keys().cloned())
        .collect();
    statuses.extend(
        doc["components"]["responses"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|r| r["description"].as_str()?.get(..3).map(str::to_owned)),
    );
    for status in [
        "400", "401", "403", "404", "405", "409", "413", "415", "503",
    ] {
        assert!(
            statuses.iter().any(|s| s == status),
            "{status} is not documented"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

/// One real answer and where the document describes it.
struct Case {
    path: &'static str,
    method: &'static str,
    reply: Reply,
}

#[tokio::test]
async fn every_answer_validates_against_its_documented_schema() {
    let mut config = config();
    config.max_streams = 2;
    config.max_body = 4096;
    let server = start(config).await;
    let addr = server.addr();
    let doc = document(addr).await;

    let stream = SseClient::connect(addr, "/api/v1/stream?user=alice&topic=t").await;
    assert_eq!(stream.status, 200);
    assert!(stream
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream")));

    let json_header = [("Content-Type", "application/json")];
    let publish = |body: Value| {
        let body = body.to_string();
        async move {
            request(
                addr,
                "POST",
                "/api/v1/publish",
                &json_header,
                body.as_bytes(),
            )
            .await
        }
    };
    let mut cases = vec![
        Case {
            path: "/api/v1/publish",
            method: "post",
            reply: publish(json!({"to": {"users": ["alice"]}, "data": "hi", "id": "first"})).await,
        },
        Case {
            path: "/api/v1/publish",
            method: "post",
            reply: publish(json!([{"to": "all", "data": {"a": 1}}, {"to": {"topics": ["t"]}, "data": "x", "retry": 5}])).await,
        },
        Case {
            path: "/api/v1/publish",
            method: "post",
            reply: publish(json!({"to": "all", "data": "again", "id": "first"})).await,
        },
        Case {
            path: "/api/v1/publish",
            method: "post",
            reply: request(addr, "POST", "/api/v1/publish", &json_header, b"{not json").await,
        },
        Case {
            path: "/api/v1/publish",
            method: "post",
            reply: request(addr, "POST", "/api/v1/publish", &[("Content-Type", "text/plain")], b"x").await,
        },
        Case {
            path: "/api/v1/publish",
            method: "post",
            reply: publish(json!({"to": "all", "data": "x".repeat(5000)})).await,
        },
        Case {
            path: "/api/v1/publish",
            method: "post",
            reply: publish(json!({"to": {"topics": ["/.well-known/mercure/subscriptions/x"]}, "data": "x"})).await,
        },
        Case { path: "/api/v1/stats", method: "get", reply: get(addr, "/api/v1/stats").await },
        Case { path: "/api/v1/users", method: "get", reply: get(addr, "/api/v1/users").await },
        Case { path: "/api/v1/topics", method: "get", reply: get(addr, "/api/v1/topics").await },
        Case { path: "/api/v1/events", method: "get", reply: get(addr, "/api/v1/events").await },
        Case {
            path: "/api/v1/events",
            method: "get",
            reply: get(addr, "/api/v1/events?after=first&limit=1&user=alice&topic=t").await,
        },
        Case {
            path: "/api/v1/events",
            method: "get",
            reply: get(addr, "/api/v1/events?after=never-issued").await,
        },
        Case {
            path: "/api/v1/events",
            method: "get",
            reply: get(addr, "/api/v1/events?limit=0").await,
        },
        Case {
            path: "/api/v1/stream",
            method: "get",
            reply: get(addr, "/api/v1/stream").await,
        },
        Case {
            path: "/api/v1/users/{user}",
            method: "delete",
            reply: request(addr, "DELETE", "/api/v1/users/%FF", &[], b"").await,
        },
        Case { path: "/healthz", method: "get", reply: get(addr, "/healthz").await },
        // The seed's routes, GET and POST (query or form).
        Case { path: "/sse/sendMessage", method: "get", reply: get(addr, "/sse/sendMessage?userId=alice&message=hi").await },
        Case { path: "/sse/sendMessage", method: "get", reply: get(addr, "/sse/sendMessage?userId=alice").await },
        Case {
            path: "/sse/push",
            method: "post",
            reply: request(addr, "POST", "/sse/push", &[("Content-Type", "application/x-www-form-urlencoded")], b"id=alice&content=x").await,
        },
        Case {
            path: "/sse/groupSendMessage",
            method: "post",
            reply: request(addr, "POST", "/sse/groupSendMessage", &[("Content-Type", "text/plain")], b"groupId=a").await,
        },
        Case { path: "/sse/batchSendMessage", method: "get", reply: get(addr, "/sse/batchSendMessage?message=all&ids=a,b").await },
        Case { path: "/sse/getIds", method: "get", reply: get(addr, "/sse/getIds").await },
        Case { path: "/sse/getUserCount", method: "get", reply: get(addr, "/sse/getUserCount").await },
        Case { path: "/sse/close/{user}", method: "get", reply: get(addr, "/sse/close/nobody").await },
        Case { path: "/sse/over", method: "get", reply: get(addr, "/sse/over").await },
        Case { path: "/sse/subscribe", method: "get", reply: get(addr, "/sse/subscribe").await },
        // Mercure: a subscription without a topic, a publish that is not a
        // form, the subscriptions API while it is off.
        Case { path: "/.well-known/mercure", method: "get", reply: get(addr, "/.well-known/mercure").await },
        Case {
            path: "/.well-known/mercure",
            method: "post",
            reply: request(addr, "POST", "/.well-known/mercure", &[("Content-Type", "text/plain")], b"x").await,
        },
        Case {
            path: "/.well-known/mercure/subscriptions",
            method: "get",
            reply: get(addr, "/.well-known/mercure/subscriptions").await,
        },
    ];
    // Each event of the stream fits the documented event schema.
    let mut stream = stream;
    let stream_schema = &doc["paths"]["/api/v1/stream"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"];
    for event in stream.take(3).await {
        let read = json!({"data": event.data, "event": event.event, "id": event.id});
        validate(&doc, stream_schema, &read, "event").unwrap();
    }

    // The second stream fills the hub (two at most): a third is refused.
    let _second = SseClient::connect(addr, "/api/v1/stream?user=bob").await;
    cases.push(Case {
        path: "/api/v1/stream",
        method: "get",
        reply: get(addr, "/api/v1/stream?user=carol").await,
    });
    cases.push(Case {
        path: "/api/v1/users/{user}",
        method: "delete",
        reply: request(addr, "DELETE", "/api/v1/users/alice", &[], b"").await,
    });

    // With a publisher key: no credential, then a wrong one.
    let mut keyed = pushwire_testkit::config();
    keyed.publisher_key = Some("sekret".to_owned());
    let keyed = start(keyed).await;
    for path in [
        "/api/v1/stats",
        "/api/v1/users",
        "/api/v1/topics",
        "/api/v1/events",
        "/sse/getIds",
    ] {
        cases.push(Case {
            path,
            method: "get",
            reply: get(keyed.addr(), path).await,
        });
        cases.push(Case {
            path,
            method: "get",
            reply: request(
                keyed.addr(),
                "GET",
                path,
                &[("Authorization", "Bearer wrong")],
                b"",
            )
            .await,
        });
    }

    let mut statuses = std::collections::BTreeSet::new();
    for case in &cases {
        check_against_document(&doc, case);
        statuses.insert(case.reply.status);
    }
    for status in [200, 400, 401, 403, 404, 409, 413, 415, 503] {
        assert!(statuses.contains(&status), "no case answered {status}");
    }

    // The answers every route may give, described once in components.
    let not_found = get(addr, "/api/v1/nope").await;
    let wrong_method = get(addr, "/api/v1/publish").await;
    assert_eq!((not_found.status, wrong_method.status), (404, 405));
    for (name, reply) in [
        ("NotFound", &not_found),
        ("MethodNotAllowed", &wrong_method),
    ] {
        let schema = &doc["components"]["responses"][name]["content"]["application/json"]["schema"];
        validate(&doc, schema, &reply.json(), name).unwrap();
    }

    reliability::record(Row {
        family: "OpenAPI document against real answers (every documented status)",
        cases: cases.len() as u64 + 2,
        crashes: 0,
        lost: 0,
        outcome: "every answer matches its documented schema",
        test: "cargo test --test openapi every_answer_validates_against_its_documented_schema",
    });
}

/// Finds the response the document gives for the case and validates it.
fn check_against_document(doc: &Value, case: &Case) {
    let what = format!(
        "{} {} -> {}: {}",
        case.method, case.path, case.reply.status, case.reply.body
    );
    let response =
        &doc["paths"][case.path][case.method]["responses"][case.reply.status.to_string()];
    assert!(response.is_object(), "undocumented status: {what}");
    let content_type = case
        .reply
        .header("content-type")
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let media = &response["content"][content_type.as_str()];
    assert!(
        media.is_object(),
        "undocumented content type {content_type}: {what}"
    );
    if content_type == "application/json" {
        let body: Value = serde_json::from_str(&case.reply.body).expect("JSON body");
        if let Err(why) = validate(doc, &media["schema"], &body, "body") {
            panic!("{why}: {what}");
        }
    }
}

/// A JSON Schema validator for what the document uses: `$ref` into
/// `components.schemas`, `type` (one or a list), `properties`, `required`,
/// `additionalProperties: false`, `items`, `oneOf`, `enum`, `minimum`,
/// `maximum`. Any other keyword in the document fails the test, so the
/// validator cannot silently skip a constraint.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = schema
        .as_object()
        .ok_or(format!("{at}: schema is not an object"))?;
    for key in schema.keys() {
        let known = [
            "$ref",
            "type",
            "properties",
            "required",
            "additionalProperties",
            "items",
            "oneOf",
            "enum",
            "minimum",
            "maximum",
            "format",
            "description",
        ];
        if !known.contains(&key.as_str()) {
            return Err(format!("{at}: the validator does not know `{key}`"));
        }
    }
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .ok_or(format!("{at}: unsupported $ref {reference}"))?;
        return validate(
            doc,
            &doc["components"]["schemas"][name],
            value,
            &format!("{at}<{name}>"),
        );
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: bad type keyword")),
        };
        let fits = types.iter().any(|t| match *t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            "null" => value.is_null(),
            _ => false,
        });
        if !fits {
            return Err(format!("{at}: {value} is not of type {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(n) = value.as_f64() {
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|min| n < min)
        {
            return Err(format!("{at}: {n} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|max| n > max)
        {
            return Err(format!("{at}: {n} is above the maximum"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: required `{name}` is missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => validate(doc, sub, field, &format!("{at}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: `{name}` is not allowed"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
        let fitting = choices
            .iter()
            .filter(|choice| validate(doc, choice, value, at).is_ok())
            .count();
        if fitting != 1 {
            return Err(format!(
                "{at}: {value} fits {fitting} of the oneOf choices, not one"
            ));
        }
    }
    Ok(())
}

/// The validator itself refuses what it should.
#[test]
fn the_validator_catches_mismatches() {
    let doc = json!({"components": {"schemas": {
        "E": {"type": "object", "required": ["code"], "properties": {"code": {"type": "string"}},
              "additionalProperties": false}
    }}});
    let e = json!({"$ref": "#/components/schemas/E"});
    assert!(validate(&doc, &e, &json!({"code": "x"}), "t").is_ok());
    assert!(validate(&doc, &e, &json!({"code": 1}), "t").is_err());
    assert!(validate(&doc, &e, &json!({}), "t").is_err());
    assert!(validate(&doc, &e, &json!({"code": "x", "more": 1}), "t").is_err());
    let n = json!({"type": ["integer", "null"], "minimum": 0});
    assert!(validate(&doc, &n, &json!(null), "t").is_ok());
    assert!(validate(&doc, &n, &json!(-1), "t").is_err());
    let one = json!({"oneOf": [{"type": "string"}, {"type": "string", "enum": ["a"]}]});
    assert!(validate(&doc, &one, &json!("b"), "t").is_ok());
    assert!(validate(&doc, &one, &json!("a"), "t").is_err());
    assert!(validate(&doc, &json!({"pattern": "x"}), &json!("a"), "t").is_err());
}
