//! The hubs a `fanout` or `spread` run can talk to (pushwire, Nchan,
//! Pushpin, any Mercure hub): the path of a topic's stream and the request
//! that publishes to it, for each.

use std::net::SocketAddr;

use anyhow::bail;
use clap::ValueEnum;
use serde_json::{json, Value};

use crate::load::LoadArgs;

/// The hub a `fanout` or `spread` run talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Streams `GET /api/v1/stream?topic=<t>`; publishes `POST /api/v1/publish`.
    Pushwire,
    /// Streams `GET /sub/<t>` (nchan_subscriber eventsource); publishes `POST /pub/<t>`.
    Nchan,
    /// Streams `GET /stream/<t>` through Pushpin to a GRIP origin; publishes to the control API's `POST /publish/`.
    Pushpin,
    /// Any Mercure hub (pushwire included): streams `GET /.well-known/mercure?topic=<t>`; publishes the form `POST /.well-known/mercure` (`--key` is then the publisher's JWT).
    Mercure,
}

impl Target {
    pub fn stream_path(self, topic: &str) -> String {
        match self {
            Target::Pushwire => format!("/api/v1/stream?topic={topic}"),
            Target::Nchan => format!("/sub/{topic}"),
            Target::Pushpin => format!("/stream/{topic}"),
            Target::Mercure => format!(
                "/.well-known/mercure?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("topic", topic)
                    .finish()
            ),
        }
    }

    pub fn publish_addr(self, args: &LoadArgs) -> SocketAddr {
        match (args.publish_to, self) {
            (Some(addr), _) => addr,
            (None, Target::Pushpin) => SocketAddr::from(([127, 0, 0, 1], 5561)),
            (None, _) => args
                .hub
                .first()
                .copied()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
        }
    }

    /// One request publishing each `(topic, data)` of `items`.
    pub fn publish_request(
        self,
        addr: SocketAddr,
        key: Option<&str>,
        items: &[(String, String)],
    ) -> anyhow::Result<Vec<u8>> {
        let (path, content_type, body) = match self {
            Target::Pushwire => {
                let mut events: Vec<Value> = items
                    .iter()
                    .map(|(topic, data)| json!({"to": {"topics": [topic]}, "data": data}))
                    .collect();
                let body = match events.len() {
                    1 => events.remove(0).to_string(),
                    _ => Value::Array(events).to_string(),
                };
                ("/api/v1/publish".to_owned(), "application/json", body)
            }
            Target::Nchan => {
                let [(topic, data)] = items else {
                    bail!("Nchan publishes one message per request (use --batch 1)");
                };
                (format!("/pub/{topic}"), "text/plain", data.clone())
            }
            Target::Mercure => {
                let [(topic, data)] = items else {
                    bail!("a Mercure hub takes one update per request (use --batch 1)");
                };
                let body = form_urlencoded::Serializer::new(String::new())
                    .append_pair("topic", topic)
                    .append_pair("data", data)
                    .finish();
                (
                    "/.well-known/mercure".to_owned(),
                    "application/x-www-form-urlencoded",
                    body,
                )
            }
            Target::Pushpin => {
                let items: Vec<Value> = items
                    .iter()
                    .map(|(topic, data)| {
                        json!({
                            "channel": topic,
                            "formats": {"http-stream": {"content": format!("event: message\ndata: {data}\n\n")}},
                        })
                    })
                    .collect();
                (
                    "/publish/".to_owned(),
                    "application/json",
                    json!({ "items": items }).to_string(),
                )
            }
        };
        let auth = key
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        Ok(format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{auth}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes())
    }
}

pub fn target_name(target: Target) -> &'static str {
    match target {
        Target::Pushwire => "pushwire",
        Target::Nchan => "nchan",
        Target::Pushpin => "pushpin",
        Target::Mercure => "mercure",
    }
}
