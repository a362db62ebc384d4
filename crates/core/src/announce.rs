//! Presence of topic subscribers: who listens to which selector, announced
//! as events when a subscription starts and ends (the Mercure protocol's
//! "subscription events") and listed on demand (its subscriptions API).
//!
//! Each announcement is an ordinary private event on the topic
//! `/.well-known/mercure/subscriptions/{selector}/{subscriber}`, stored in the
//! history like any other, so a client that watches presence resumes it with
//! `Last-Event-ID` and loses nothing. Private: only subscribers whose grants
//! select that topic read it.

use serde_json::{json, Value};

use crate::event::{Draft, Target};
use crate::route::Selector;

/// Where subscription topics live; publishers may not use this namespace.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

/// The JSON-LD context of presence documents.
const CONTEXT: &str = "https://mercure.rocks/";

/// One subscriber: a stream and the selectors it listens to.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Unique among open streams, chosen by the hub (never by the client).
    pub id: String,
    pub subscriptions: Vec<Subscription>,
}

/// One selector of a subscriber and the payload its token attached to it.
#[derive(Debug, Clone)]
pub struct Subscription {
    pub selector: Selector,
    pub payload: Option<Value>,
}

impl Subscriber {
    /// The announcements for this subscriber's start (`active`) or end.
    pub fn announcements(&self, active: bool) -> Vec<Draft> {
        self.subscriptions
            .iter()
            .map(|s| Draft {
                private: true,
                ..Draft::new(
                    Target::Topics(vec![topic(s.selector.as_str(), &self.id)]),
                    self.document(s, active).to_string(),
                )
            })
            .collect()
    }

    /// The JSON-LD document describing one subscription.
    pub fn document(&self, subscription: &Subscription, active: bool) -> Value {
        let mut doc = json!({
            "@context": CONTEXT,
            "id": topic(subscription.selector.as_str(), &self.id),
            "type": "Subscription",
            "topic": subscription.selector.as_str(),
            "match": subscription.selector.as_str(),
            "matchType": subscription.selector.kind().name(),
            "subscriber": self.id,
            "active": active,
        });
        if let (Some(payload), Some(map)) = (&subscription.payload, doc.as_object_mut()) {
            map.insert("payload".to_owned(), payload.clone());
        }
        doc
    }
}

/// The topic announcing one subscription: each part percent-encoded as a
/// whole, as an RFC 6570 simple expansion encodes it.
pub fn topic(selector: &str, subscriber: &str) -> String {
    format!(
        "{SUBSCRIPTIONS_PATH}/{}/{}",
        encode(selector),
        encode(subscriber)
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn encode(text: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, RESERVED).to_string()
}

/// Whether a topic is in the namespace the hub reserves for its own events,
/// resolved the way a URL would be: `/.well-known/mercure` or below, as a
/// path, whatever scheme and host precede it.
pub fn is_reserved_topic(topic: &str) -> bool {
    let path = match topic.find("://") {
        Some(at) => {
            let rest = &topic[at + 3..];
            rest.find('/').map_or("", |p| &rest[p..])
        }
        None => topic,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    // Every publish asks this of every topic: a path that neither names
    // `mercure` nor percent-encodes anything cannot resolve into the
    // namespace, and needs no decoding.
    if !path.contains('%') && !path.contains("mercure") {
        return false;
    }
    let decoded = percent_encoding::percent_decode_str(path).decode_utf8_lossy();
    let normalized = normalize_dots(&decoded);
    normalized == "/.well-known/mercure" || normalized.starts_with("/.well-known/mercure/")
}

/// Removes `.` and `..` segments, as URL resolution does.
fn normalize_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "." => {}
            ".." => {
                if out.len() > 1 {
                    out.pop();
                }
            }
            s => out.push(s),
        }
    }
    out.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_encode_each_part_once() {
        assert_eq!(
            topic("https://example.com/{id}", "urn:uuid:1"),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bid%7D/urn%3Auuid%3A1"
        );
        assert_eq!(encode("a%2F"), "a%252F");
    }

    #[test]
    fn announcements_are_private_json_ld() {
        let subscriber = Subscriber {
            id: "urn:uuid:s".into(),
            subscriptions: vec![Subscription {
                selector: Selector::exact("/books/1").unwrap_or_else(|_| unreachable!()),
                payload: Some(json!({"user": 7})),
            }],
        };
        let drafts = subscriber.announcements(false);
        assert_eq!(drafts.len(), 1);
        assert!(drafts[0].private);
        let doc: Value = serde_json::from_str(&drafts[0].data).unwrap_or_default();
        assert_eq!(doc["type"], "Subscription");
        assert_eq!(doc["active"], false);
        assert_eq!(doc["payload"]["user"], 7);
        assert_eq!(
            doc["id"],
            "/.well-known/mercure/subscriptions/%2Fbooks%2F1/urn%3Auuid%3As"
        );
    }

    #[test]
    fn the_hub_namespace_is_reserved_however_it_is_spelled() {
        for t in [
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions/x/y",
            "https://evil.example/.well-known/mercure/subscriptions/a/b",
            "/books/../.well-known/mercure/subscriptions",
            "/%2Ewell-known/mercure/x",
            "/.well-known/./mercure/x",
            "/.well-known/%6Dercure",
        ] {
            assert!(is_reserved_topic(t), "{t}");
        }
        for t in [
            "/.well-known/mercurex",
            "https://example.com/books/1",
            "urn:isbn:1",
            "/.well-known/other",
        ] {
            assert!(!is_reserved_topic(t), "{t}");
        }
    }
}
