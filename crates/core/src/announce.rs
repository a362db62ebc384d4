//! Presence of topic subscribers: who listens to which selector, announced
//! as events when a subscription starts and ends (the Mercure protocol's
//! "subscription events") and listed on demand (its subscriptions API); and
//! the namespace the hub keeps for those events.
//!
//! Each announcement is an ordinary private event, stored in the history
//! like any other, so a client that watches presence resumes it with
//! `Last-Event-ID` and loses nothing. Private: only subscribers whose grants
//! select its topic read it. The two generations of the protocol name a
//! subscription differently, so each subscription is announced once per
//! form, each with its own document:
//!
//! - classic: `/.well-known/mercure/subscriptions/{topic}/{subscriber}`,
//!   documents with `topic` and `matchType`;
//! - current draft ("Subscription Events"):
//!   `/.well-known/mercure/subscriptions/{match_type}/{match}/{subscriber}`,
//!   documents with `match_type`.
//!
//! Invariant: no publisher can speak in the namespace (see
//! [`is_reserved_topic`]), so every event there is the hub's own.

use serde_json::{json, Value};
use url::Url;

use crate::event::{Draft, Target};
use crate::route::Selector;

/// The path of the hub's URL: everything below it is the hub's own.
pub const HUB_PATH: &str = "/.well-known/mercure";

/// Where subscription topics live; publishers may not use this namespace.
pub const SUBSCRIPTIONS_PATH: &str = "/.well-known/mercure/subscriptions";

/// The JSON-LD context of presence documents.
pub const CONTEXT: &str = "https://mercure.rocks/";

/// The two ways the protocol's generations name a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `{topic}/{subscriber}`, with `topic` and `matchType` (`Exact`, ...).
    Classic,
    /// `{match_type}/{match}/{subscriber}`, with `match_type` (`exact`, ...).
    Draft,
}

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

impl Subscription {
    /// The collection of this subscription's selector, in `form`:
    /// `.../subscriptions/{topic}` or `.../subscriptions/{match_type}/{match}`.
    pub fn collection(&self, form: Form) -> String {
        let selector = self.selector.as_str();
        match form {
            Form::Classic => format!("{SUBSCRIPTIONS_PATH}/{}", encode(selector)),
            Form::Draft => format!(
                "{SUBSCRIPTIONS_PATH}/{}/{}",
                self.selector.kind().draft_name(),
                encode(selector)
            ),
        }
    }
}

impl Subscriber {
    /// The announcements for this subscriber's start (`active`) or end:
    /// one per subscription and form.
    pub fn announcements(&self, active: bool) -> Vec<Draft> {
        self.subscriptions
            .iter()
            .flat_map(|s| [Form::Classic, Form::Draft].map(|form| (s, form)))
            .map(|(s, form)| Draft {
                private: true,
                ..Draft::new(
                    Target::Topics(vec![self.topic(s, form)]),
                    self.document(s, active, form).to_string(),
                )
            })
            .collect()
    }

    /// The topic announcing one subscription in `form`: each part
    /// percent-encoded as a whole, once, as an RFC 6570 simple expansion
    /// encodes it.
    pub fn topic(&self, subscription: &Subscription, form: Form) -> String {
        format!("{}/{}", subscription.collection(form), encode(&self.id))
    }

    /// The JSON-LD document describing one subscription in `form`.
    pub fn document(&self, subscription: &Subscription, active: bool, form: Form) -> Value {
        let selector = &subscription.selector;
        let mut doc = json!({
            "@context": CONTEXT,
            "id": self.topic(subscription, form),
            "type": "Subscription",
            "match": selector.as_str(),
            "subscriber": self.id,
            "active": active,
        });
        if let Some(map) = doc.as_object_mut() {
            match form {
                Form::Classic => {
                    map.insert("topic".to_owned(), json!(selector.as_str()));
                    map.insert("matchType".to_owned(), json!(selector.kind().name()));
                }
                Form::Draft => {
                    map.insert("match_type".to_owned(), json!(selector.kind().draft_name()));
                }
            }
            if let Some(payload) = &subscription.payload {
                map.insert("payload".to_owned(), payload.clone());
            }
        }
        doc
    }
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

/// Whether a topic is in the namespace the hub reserves for its own events.
///
/// Subscribers match topics two ways, and the topic is refused when either
/// would place it in the namespace:
///
/// - as a URL pattern sees it: resolved as a URL reference against the
///   hub's URL by the WHATWG URL parser (relative references,
///   scheme-relative `//host/...`, backslashes in special schemes, dot
///   segments and their percent-encoded forms, case of scheme and host,
///   default ports);
/// - as exact matchers and URI templates see it: the text as written, whose
///   path (after any `scheme://authority`) starts in the namespace, even if
///   dot segments would lead a URL parser out of it again.
///
/// Either path has its percent-encoded unreserved characters decoded and
/// runs of slashes taken as one; the resolved one also loses its dot
/// segments. It is reserved when it is [`HUB_PATH`] or below, whatever the
/// scheme and authority (the current draft's "Publication" and "Reserved
/// Hub Namespace"; the slash and written-path rules are stricter than the
/// draft, which a hub may be). A topic that is no URL reference names no
/// hub path by resolution.
pub fn is_reserved_topic(topic: &str, hub_url: &Url) -> bool {
    // Every publish asks this of every topic. A topic that neither spells
    // `mercure` nor escapes anything can name the namespace only through
    // the part of the hub's URL a relative reference keeps: its whole path
    // for a reference with no path (`""`, `?q`, `#f`), its directory for
    // any other.
    if !topic.contains("mercure")
        && !topic.contains('%')
        && !topic.is_empty()
        && !topic.starts_with(['?', '#'])
        && !directory_in_namespace(hub_url)
    {
        return false;
    }
    let resolved = Url::options()
        .base_url(Some(hub_url))
        .parse(topic)
        .is_ok_and(|url| in_namespace(&normalize_path(&decode_unreserved(url.path()))));
    resolved || in_namespace(&collapse_slashes(&decode_unreserved(written_path(topic))))
}

/// Whether relative references resolved against `hub_url` land in the
/// namespace whatever they say (a hub URL like `.../.well-known/mercure/`).
fn directory_in_namespace(hub_url: &Url) -> bool {
    let path = hub_url.path();
    let directory = &path[..path.rfind('/').map_or(0, |at| at + 1)];
    in_namespace(directory.trim_end_matches('/'))
}

fn in_namespace(path: &str) -> bool {
    path == HUB_PATH
        || path
            .strip_prefix(HUB_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The path of a topic as written: after `scheme://authority` or
/// `//authority` when it has one, up to any query or fragment.
fn written_path(topic: &str) -> &str {
    fn after_authority(rest: &str) -> &str {
        rest.find('/').map_or("", |at| &rest[at..])
    }
    let path = match topic.find("://") {
        Some(at) => after_authority(&topic[at + 3..]),
        None => match topic.strip_prefix("//") {
            Some(rest) => after_authority(rest),
            None => topic,
        },
    };
    path.split(['?', '#']).next().unwrap_or_default()
}

fn collapse_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Decodes the percent-encoded octets that stand for unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3), which mean the same encoded or
/// not, and keeps every other escape.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
        match decoded {
            Some(b) => {
                out.push(char::from(b));
                i += 3;
            }
            None => {
                let len = path[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&path[i..i + len]);
                i += len;
            }
        }
    }
    out
}

/// Removes `.` and `..` segments and empty segments, so that `/a//b/../c`
/// is `/a/c`.
fn normalize_path(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut normalized = String::with_capacity(path.len());
    for segment in out {
        normalized.push('/');
        normalized.push_str(segment);
    }
    normalized
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    use crate::route::MatchKind;

    const HUB: &str = "https://hub.example.com/.well-known/mercure";

    fn reserved(topic: &str) -> bool {
        is_reserved_topic(topic, &Url::parse(HUB).unwrap_or_else(|_| unreachable!()))
    }

    fn subscriber(selector: Selector) -> Subscriber {
        Subscriber {
            id: "urn:uuid:s".into(),
            subscriptions: vec![Subscription {
                selector,
                payload: Some(json!({"user": 7})),
            }],
        }
    }

    #[test]
    fn topics_encode_each_part_once() {
        let s = subscriber(
            Selector::classic("https://example.com/{id}").unwrap_or_else(|_| unreachable!()),
        );
        let sub = &s.subscriptions[0];
        assert_eq!(
            s.topic(sub, Form::Classic),
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%7Bid%7D/urn%3Auuid%3As"
        );
        assert_eq!(
            s.topic(sub, Form::Draft),
            "/.well-known/mercure/subscriptions/uritemplate/https%3A%2F%2Fexample.com%2F%7Bid%7D/urn%3Auuid%3As"
        );
        assert_eq!(encode("a%2F"), "a%252F");
    }

    /// The draft's own example of a subscription event ("Subscription
    /// Events").
    #[test]
    fn the_draft_form_matches_the_drafts_example() {
        let s = Subscriber {
            id: "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6".into(),
            subscriptions: vec![Subscription {
                selector: Selector::parse(
                    MatchKind::UrlPattern,
                    "https://example.com/:selector",
                    HUB,
                )
                .unwrap_or_else(|_| unreachable!()),
                payload: Some(json!({"foo": "bar"})),
            }],
        };
        let doc = s.document(&s.subscriptions[0], true, Form::Draft);
        assert_eq!(
            doc["id"],
            "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"
        );
        assert_eq!(doc["type"], "Subscription");
        assert_eq!(doc["match_type"], "urlpattern");
        assert_eq!(doc["match"], "https://example.com/:selector");
        assert_eq!(doc["active"], true);
        assert_eq!(doc["payload"], json!({"foo": "bar"}));
        assert!(doc.get("matchType").is_none() && doc.get("topic").is_none());
    }

    #[test]
    fn announcements_are_private_json_ld_in_both_forms() {
        let s = subscriber(Selector::exact("/books/1").unwrap_or_else(|_| unreachable!()));
        let drafts = s.announcements(false);
        assert_eq!(drafts.len(), 2);
        let docs: Vec<Value> = drafts
            .iter()
            .map(|d| serde_json::from_str(&d.data).unwrap_or_default())
            .collect();
        assert!(drafts.iter().all(|d| d.private));
        assert!(docs
            .iter()
            .all(|d| d["type"] == "Subscription" && d["active"] == false));
        assert!(docs.iter().all(|d| d["payload"]["user"] == 7));
        assert_eq!(
            docs[0]["id"],
            "/.well-known/mercure/subscriptions/%2Fbooks%2F1/urn%3Auuid%3As"
        );
        assert_eq!(docs[0]["matchType"], "Exact");
        assert_eq!(
            docs[1]["id"],
            "/.well-known/mercure/subscriptions/exact/%2Fbooks%2F1/urn%3Auuid%3As"
        );
        assert_eq!(docs[1]["match_type"], "exact");
        for (draft, doc) in drafts.iter().zip(&docs) {
            assert_eq!(
                draft.target,
                Target::Topics(vec![doc["id"].as_str().unwrap_or_default().to_owned()])
            );
        }
    }

    #[test]
    fn a_hub_url_inside_the_namespace_reserves_every_relative_topic() {
        let inside = Url::parse("https://hub.example.com/.well-known/mercure/")
            .unwrap_or_else(|_| unreachable!());
        assert!(is_reserved_topic("books/1", &inside));
        assert!(!is_reserved_topic("/books/1", &inside));
        let outside = Url::parse(HUB).unwrap_or_else(|_| unreachable!());
        assert!(!is_reserved_topic("books/1", &outside));
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
            "/.well-known/%6dercure/x",
            // Relative references resolve against the hub's URL.
            "mercure/subscriptions/a/b",
            "./mercure/subscriptions/a/b",
            "../.well-known/mercure/subscriptions/x/y",
            "a/../../.well-known/mercure/subscriptions/x",
            "?query",
            "#fragment",
            "//localhost/.well-known/mercure/subscriptions/x",
            "https://hub.example.com//.well-known/mercure/subscriptions/x",
            "https://hub.example.com/a\\..\\.well-known/mercure/subscriptions/x",
            "HTTPS://HUB.EXAMPLE.COM:443/.well-known/mercure/x",
            "https://hub.example.com/%2e%2E/.well-known/mercure/x",
            "https://hub.example.com/.well-known/mercure/%2e%2e/mercure/x",
            "foo:/.well-known/mercure/x",
            // As written, a URI template or exact matcher would place it in
            // the namespace, although resolution leads out of it.
            "https://example.com/.well-known/mercure/../x",
            "/.well-known/mercure/subscriptions/a/../../../b",
        ] {
            assert!(reserved(t), "{t}");
        }
        for t in [
            "/.well-known/mercurex",
            "https://example.com/books/1",
            "urn:isbn:1",
            "/.well-known/other",
            "subscriptions/a/b",
            "/.well-known/Mercure/x",
            "/.well-known/mercure%2Fx",
            "books/1",
        ] {
            assert!(!reserved(t), "{t}");
        }
    }

    /// Topics spelled with every trick that could move them in or out of
    /// the namespace: most aim at it (a prefix, a few segments, a spelling
    /// of `.well-known`, one of `mercure`, more segments), the rest are
    /// random walks over the same parts.
    fn tricky_topic() -> impl Strategy<Value = String> {
        let prefix = || {
            prop::sample::select(vec![
                "",
                "",
                "",
                "/",
                "//",
                "//localhost",
                "https://hub.example.com",
                "HTTPS://Hub.Example.COM:443",
                "http://other.example",
                "./",
                "../",
                "a/../",
                "foo:",
                "foo:/",
                "https://hub.example.com/a\\..\\",
            ])
        };
        let segment = || {
            prop::sample::select(vec![
                ".well-known",
                "%2Ewell-known",
                "%2ewell-known",
                "mercure",
                "%6Dercure",
                "%6dercure",
                "MERCURE",
                "mercur%65",
                ".",
                "..",
                "%2e",
                "%2E%2E",
                "",
                "subscriptions",
                "x",
                "a%2Fb",
                "exact",
                "%2F",
            ])
        };
        let well_known = prop::sample::select(vec![
            ".well-known",
            "%2Ewell-known",
            "%2ewell-known",
            ".well-knowN",
        ]);
        let mercure = prop::sample::select(vec![
            "mercure",
            "%6Dercure",
            "mercur%65",
            "MERCURE",
            "mercurex",
        ]);
        let separator = || prop::sample::select(vec!["/", "/", "/", "/", "\\", "//"]);
        let suffix = || prop::sample::select(vec!["", "?q", "#f", "?/.well-known/mercure"]);
        let path = |parts: Vec<(&str, &str)>| {
            parts
                .into_iter()
                .fold(String::new(), |mut out, (separator, segment)| {
                    out.push_str(separator);
                    out.push_str(segment);
                    out
                })
        };
        let aimed = (
            prefix(),
            prop::collection::vec((separator(), segment()), 0..3),
            separator(),
            well_known,
            separator(),
            mercure,
            prop::collection::vec((separator(), segment()), 0..5),
            suffix(),
        )
            .prop_map(move |(prefix, lead, s1, wk, s2, m, tail, suffix)| {
                format!(
                    "{prefix}{}{s1}{wk}{s2}{m}{}{suffix}",
                    path(lead),
                    path(tail)
                )
            });
        let random = (
            prefix(),
            prop::collection::vec((separator(), segment()), 0..6),
            suffix(),
        )
            .prop_map(move |(prefix, parts, suffix)| format!("{prefix}{}{suffix}", path(parts)));
        prop_oneof![3 => aimed, 1 => random]
    }

    /// Selectors a watcher of the hub's own events would use, of every
    /// kind, compiled once for all cases.
    static NAMESPACE_SELECTORS: std::sync::LazyLock<Vec<Selector>> =
        std::sync::LazyLock::new(namespace_selectors);

    fn namespace_selectors() -> Vec<Selector> {
        let pattern = |text| Selector::parse(MatchKind::UrlPattern, text, HUB);
        let template = |text| Selector::parse(MatchKind::UriTemplate, text, HUB);
        let exact = |text| Selector::parse(MatchKind::Exact, text, HUB);
        [
            pattern("/.well-known/mercure"),
            pattern("/.well-known/mercure/*"),
            pattern("/.well-known/mercure/subscriptions/:a/:b"),
            pattern("https://hub.example.com/.well-known/mercure/*"),
            pattern("*://*/.well-known/mercure/*"),
            template("/.well-known/mercure{/rest*}"),
            template("/.well-known/mercure/{+rest}"),
            template("/.well-known/mercure/subscriptions/{a}/{b}"),
            template("https://hub.example.com/.well-known/mercure/{+rest}"),
            template("{scheme}://{host}/.well-known/mercure/{+rest}"),
            exact("/.well-known/mercure"),
            exact("https://hub.example.com/.well-known/mercure/subscriptions/x/x"),
        ]
        .into_iter()
        .map(|s| s.unwrap_or_else(|e| panic!("{e}")))
        .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        /// If any selector in the namespace could match a topic, publishing
        /// it is refused: nobody can forge the hub's own events.
        #[test]
        fn a_topic_any_namespace_selector_matches_is_reserved(topic in tricky_topic()) {
            if let Some(selector) = NAMESPACE_SELECTORS.iter().find(|s| s.matches(&topic)) {
                prop_assert!(reserved(&topic), "{topic} is matched by {selector:?} but not reserved");
            }
        }
    }
}
