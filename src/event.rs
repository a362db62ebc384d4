//! Events and their wire form.
//!
//! An [`Event`] is what a publisher sent, after validation, with the id and
//! sequence number the history gave it. Its server-sent-events frame is
//! encoded exactly once, when the event is made, and every stream that
//! receives it shares those bytes (`Bytes` clones are a reference count).
//!
//! Invariants of a frame: field values never contain CR, LF or NUL where the
//! browser would misread them (ids and event types are validated, data is
//! split into one `data:` line per source line), and the frame ends with the
//! blank line that makes a browser dispatch it.

use std::fmt;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::limits::{FieldLimits, Limit};
use crate::route::Target;

/// Ceiling of `--max-id-length`, in bytes. Ids travel in every frame.
pub const MAX_ID_LEN: usize = 256;
/// Ceiling of `--max-event-type-length`, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 256;
/// Largest `retry` a publisher may ask browsers to wait, in milliseconds (one day).
pub const MAX_RETRY_MS: u64 = 86_400_000;

/// Why a draft was refused. Nothing is stored when a draft is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("field `{field}` must not contain CR, LF or NUL")]
    LineBreak { field: &'static str },
    #[error("field `{field}` is longer than {max} bytes ({})", limit.option())]
    TooLong {
        field: &'static str,
        max: usize,
        limit: Limit,
    },
    #[error("more than {max} {field} ({})", limit.option())]
    TooMany {
        field: &'static str,
        max: usize,
        limit: Limit,
    },
    #[error("field `{field}` must not be empty")]
    Empty { field: &'static str },
    #[error("id must not start with `#`")]
    IdStartsWithHash,
    #[error("id must not consist of digits only: such ids are the hub's own")]
    IdAllDigits,
    #[error("retry must be at most {MAX_RETRY_MS} milliseconds")]
    RetryTooLarge,
    #[error("only events sent to topics can be private: authorization is granted per topic")]
    PrivateNeedsTopics,
    #[error("topic `{0}` is in the namespace the hub reserves for its own events (/.well-known/mercure)")]
    ReservedTopic(String),
}

impl EventError {
    /// The configured limit this refusal is about, if it is about one.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            EventError::TooLong { limit, .. } | EventError::TooMany { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

/// What a publisher asks to send, before the history gives it an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub target: Target,
    /// The SSE `event:` field; `None` dispatches as `message` in browsers.
    pub event: Option<String>,
    pub data: String,
    /// A publisher-supplied id; `None` lets the hub assign one.
    pub id: Option<String>,
    pub retry: Option<u64>,
    /// Only streams allowed to read one of the event's topics receive it
    /// (see [`Interest::may_read`](crate::route::Interest::may_read)).
    pub private: bool,
}

impl Draft {
    /// A plain `message` event with hub-assigned id.
    pub fn new(target: Target, data: impl Into<String>) -> Self {
        Draft {
            target,
            event: None,
            data: data.into(),
            id: None,
            retry: None,
            private: false,
        }
    }

    /// Checks every field that reaches the wire against `limits`. Data may
    /// contain anything: the encoder splits it into lines.
    pub fn validate(&self, limits: &FieldLimits) -> Result<(), EventError> {
        if let Some(id) = &self.id {
            check_field("id", id, limits.id_length, Limit::IdLength)?;
            if id.starts_with('#') {
                return Err(EventError::IdStartsWithHash);
            }
            if id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(EventError::IdAllDigits);
            }
        }
        if let Some(event) = &self.event {
            check_field(
                "event",
                event,
                limits.event_type_length,
                Limit::EventTypeLength,
            )?;
        }
        if self.retry.is_some_and(|r| r > MAX_RETRY_MS) {
            return Err(EventError::RetryTooLarge);
        }
        if self.private && !matches!(self.target, Target::Topics(_)) {
            return Err(EventError::PrivateNeedsTopics);
        }
        self.target.validate(limits)
    }
}

/// The sequence number a hub-assigned id stands for. The hub writes its ids
/// as the plain decimal sequence number: no sign, no leading zero. Any other
/// text, such as `+5` or `05`, is not a hub id, even though Rust's integer
/// parser would read it as one: `+5` may be a publisher's own id, and must be
/// looked up as such, never mistaken for sequence 5.
pub fn hub_sequence(id: &str) -> Option<u64> {
    let canonical = id.bytes().all(|b| b.is_ascii_digit()) && (id == "0" || !id.starts_with('0'));
    if canonical {
        id.parse().ok()
    } else {
        None
    }
}

/// A value that goes on one SSE line: not empty, at most `max` bytes (the
/// `limit`), no line breaks or NUL.
pub fn check_field(
    field: &'static str,
    value: &str,
    max: usize,
    limit: Limit,
) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(EventError::Empty { field });
    }
    if value.len() > max {
        return Err(EventError::TooLong { field, max, limit });
    }
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(EventError::LineBreak { field });
    }
    Ok(())
}

/// A stored event. `seq` orders all events of one hub; `id` is what
/// subscribers see and send back as `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Event {
    #[serde(skip)]
    pub seq: u64,
    #[schema(value_type = String)]
    pub id: Arc<str>,
    #[serde(rename = "to")]
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    pub data: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// Milliseconds since the Unix epoch when the hub accepted the event.
    pub time: u64,
    #[serde(skip)]
    frame: Bytes,
}

impl Event {
    /// Makes the stored form of a validated draft and encodes its frame once.
    pub fn new(seq: u64, draft: Draft, time: u64) -> Event {
        let id: Arc<str> = match draft.id {
            Some(id) => id.into(),
            None => seq.to_string().into(),
        };
        let frame = encode_event(&id, draft.event.as_deref(), draft.retry, &draft.data);
        Event {
            seq,
            id,
            target: draft.target,
            event: draft.event,
            data: draft.data,
            retry: draft.retry,
            private: draft.private,
            time,
            frame,
        }
    }

    /// The encoded SSE frame, shared by every receiver.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event {} (seq {})", self.id, self.seq)
    }
}

/// Encodes one event. `id` and `event` must already be validated; `data` may
/// hold any text: each of its lines (split at CRLF, CR or LF, as browsers
/// split) becomes one `data:` line, so the browser joins them back with LF.
pub fn encode_event(id: &str, event: Option<&str>, retry: Option<u64>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + id.len() + 32);
    put_field(&mut out, "id", id);
    if let Some(event) = event {
        put_field(&mut out, "event", event);
    }
    if let Some(retry) = retry {
        put_field(&mut out, "retry", &retry.to_string());
    }
    for line in data_lines(data) {
        put_field(&mut out, "data", line);
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The frame that opens every stream: how long a browser waits before it
/// reconnects. It carries no data, so it dispatches no event.
pub fn encode_retry(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// A comment frame: browsers ignore it, proxies see traffic.
pub fn encode_comment(text: &str) -> Bytes {
    let mut out = BytesMut::new();
    for line in data_lines(text) {
        out.put_slice(b":");
        if !line.is_empty() {
            out.put_u8(b' ');
            out.put_slice(line.as_bytes());
        }
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

fn put_field(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    if value.is_empty() {
        out.put_slice(b":\n");
    } else {
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_u8(b'\n');
    }
}

/// Splits text at CRLF, CR or LF, the three line ends of the SSE grammar.
/// Always yields at least one (possibly empty) line.
pub fn data_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushwire_client::sse::{parse_all, ParsedEvent};

    fn roundtrip(data: &str) -> Vec<ParsedEvent> {
        parse_all(&encode_event("7", None, None, data))
    }

    #[test]
    fn single_line_data_is_one_field() {
        assert_eq!(
            &encode_event("1", None, None, "hello")[..],
            b"id: 1\ndata: hello\n\n"
        );
    }

    #[test]
    fn every_line_break_becomes_a_data_line() {
        let frame = encode_event("1", Some("note"), Some(2000), "a\nb\r\nc\rd");
        assert_eq!(
            &frame[..],
            b"id: 1\nevent: note\nretry: 2000\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
    }

    #[test]
    fn browsers_reassemble_data_with_lf() {
        let events = roundtrip("a\r\nb\rc\n\nd\n");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a\nb\nc\n\nd\n");
        assert_eq!(events[0].id.as_deref(), Some("7"));
    }

    #[test]
    fn empty_data_still_dispatches_an_event() {
        let events = roundtrip("");
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "");
    }

    #[test]
    fn leading_spaces_and_colons_survive() {
        let events = roundtrip("  indented: yes\n:not a comment");
        assert_eq!(events[0].data, "  indented: yes\n:not a comment");
    }

    #[test]
    fn utf8_is_kept_byte_for_byte() {
        let text = "连接成功 ✓ \u{1F600}";
        assert_eq!(roundtrip(text)[0].data, text);
    }

    #[test]
    fn retry_frame_dispatches_nothing() {
        let mut parser = pushwire_client::sse::Parser::default();
        assert!(parser.feed(&encode_retry(3000)).is_empty());
        assert_eq!(parser.retry(), Some(3000));
    }

    #[test]
    fn comments_dispatch_nothing() {
        assert!(parse_all(&encode_comment("ping\nsecond line")).is_empty());
        assert_eq!(&encode_comment("")[..], b":\n\n");
    }

    fn draft() -> Draft {
        Draft::new(Target::All, "x")
    }

    #[test]
    fn ids_and_types_with_line_breaks_are_refused() {
        for bad in ["a\nb", "a\rb", "a\0b"] {
            let d = Draft {
                id: Some(bad.into()),
                ..draft()
            };
            assert_eq!(
                d.validate(&FieldLimits::default()),
                Err(EventError::LineBreak { field: "id" })
            );
            let d = Draft {
                event: Some(bad.into()),
                ..draft()
            };
            assert_eq!(
                d.validate(&FieldLimits::default()),
                Err(EventError::LineBreak { field: "event" })
            );
        }
    }

    #[test]
    fn publisher_ids_cannot_collide_with_hub_ids() {
        let d = Draft {
            id: Some("123".into()),
            ..draft()
        };
        assert_eq!(
            d.validate(&FieldLimits::default()),
            Err(EventError::IdAllDigits)
        );
        let d = Draft {
            id: Some("#x".into()),
            ..draft()
        };
        assert_eq!(
            d.validate(&FieldLimits::default()),
            Err(EventError::IdStartsWithHash)
        );
        let d = Draft {
            id: Some("order-42".into()),
            ..draft()
        };
        assert_eq!(d.validate(&FieldLimits::default()), Ok(()));
    }

    #[test]
    fn only_canonical_decimal_ids_are_hub_ids() {
        assert_eq!(hub_sequence("0"), Some(0));
        assert_eq!(hub_sequence("42"), Some(42));
        assert_eq!(hub_sequence("18446744073709551615"), Some(u64::MAX));
        for not_ours in [
            "",
            "+5",
            "-5",
            "05",
            "00",
            " 5",
            "5 ",
            "5a",
            "18446744073709551616",
        ] {
            assert_eq!(hub_sequence(not_ours), None, "{not_ours:?}");
        }
        // A publisher may choose `+5`; validation lets it through, so the
        // history must not read it as sequence 5.
        let d = Draft {
            id: Some("+5".into()),
            ..draft()
        };
        assert_eq!(d.validate(&FieldLimits::default()), Ok(()));
    }

    #[test]
    fn oversized_fields_are_refused() {
        let d = Draft {
            event: Some("e".repeat(MAX_EVENT_TYPE_LEN + 1)),
            ..draft()
        };
        assert!(matches!(
            d.validate(&FieldLimits::default()),
            Err(EventError::TooLong { .. })
        ));
        let d = Draft {
            retry: Some(MAX_RETRY_MS + 1),
            ..draft()
        };
        assert_eq!(
            d.validate(&FieldLimits::default()),
            Err(EventError::RetryTooLarge)
        );
    }

    #[test]
    fn configured_lengths_hold_exactly_at_their_boundary() {
        let limits = FieldLimits {
            id_length: 4,
            event_type_length: 3,
            ..FieldLimits::default()
        };
        let with = |id: &str, event: &str| Draft {
            id: Some(id.into()),
            event: Some(event.into()),
            ..draft()
        };
        assert_eq!(with("abcd", "abc").validate(&limits), Ok(()));
        let long_id = with("abcde", "abc").validate(&limits);
        assert_eq!(long_id.map_err(|e| e.limit()), Err(Some(Limit::IdLength)));
        let long_type = with("abcd", "abcd").validate(&limits);
        assert_eq!(
            long_type.as_ref().map_err(|e| e.limit()),
            Err(Some(Limit::EventTypeLength))
        );
        let message = long_type.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("--max-event-type-length"), "{message}");
    }

    #[test]
    fn hub_assigned_id_is_the_sequence_number() {
        let e = Event::new(42, draft(), 0);
        assert_eq!(&*e.id, "42");
        assert_eq!(&e.frame()[..], b"id: 42\ndata: x\n\n");
    }
}
