//! Target `encode`: any event the validator accepts is encoded into a frame
//! that a browser reads back as exactly that event; anything it refuses has
//! a reason a browser would misread (or the hub forbids), and is never
//! encoded.

use arbitrary::Arbitrary;
use pushwire_core::event::{Draft, Event, EventError, Target, MAX_RETRY_MS};
use pushwire_core::frame::{encode_comment, encode_retry};
use pushwire_core::id::HubId;
use pushwire_core::limits::{FieldLimits, MAX_EVENT_TYPE_LEN, MAX_ID_LEN};

use crate::sse;

#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    /// `None`: the hub assigns the id (the sequence number).
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
    pub seq: u64,
    /// A comment sent on the same stream before the event.
    pub comment: String,
    /// The stream's opening `retry` frame.
    pub stream_retry: u32,
}

/// Why a browser would misread a one-line field, or the hub forbids it,
/// as the specification and the hub's documented rules say, written here
/// independently of `Draft::validate`.
/// Not empty, within its length, and no character an identifier may not
/// carry: line breaks and NUL, any other control character, and Unicode
/// format characters (which class a character is in comes from the core's
/// `text` module, whose own tests pin it).
fn one_line_field_ok(value: &str, max: usize) -> bool {
    !value.is_empty()
        && value.len() <= max
        && !value.contains(['\r', '\n', '\0'])
        && !value.chars().any(pushwire_core::text::is_forbidden)
}

fn expected_valid(input: &Input) -> bool {
    let id_ok = input.id.as_deref().is_none_or(|id| {
        one_line_field_ok(id, MAX_ID_LEN)
            && !id.starts_with('#')
            && !id.chars().all(|c| c.is_ascii_digit())
            && id != "earliest"
    });
    let event_ok = input
        .event
        .as_deref()
        .is_none_or(|e| one_line_field_ok(e, MAX_EVENT_TYPE_LEN));
    let retry_ok = input.retry.is_none_or(|r| r <= MAX_RETRY_MS);
    id_ok && event_ok && retry_ok
}

pub fn check(input: Input) {
    let draft = Draft {
        target: Target::All,
        event: input.event.clone(),
        data: input.data.clone(),
        id: input.id.clone(),
        retry: input.retry,
        private: false,
    };
    let verdict = draft.validate(&FieldLimits::default());
    assert_eq!(
        verdict.is_ok(),
        expected_valid(&input),
        "validator disagrees with the rules: {verdict:?} for {input:?}"
    );
    if let Err(e) = verdict {
        assert!(
            !matches!(
                e,
                EventError::PrivateNeedsTopics | EventError::ReservedTopic(_)
            ),
            "refused for a reason that is not in the draft: {e}"
        );
        return;
    }
    let event = Event::new(input.seq, draft, 0);
    check_frame(&event, &input);
}

/// Reads the frame back alone and inside a stream, as a browser would.
fn check_frame(event: &Event, input: &Input) {
    let expected_id = match &input.id {
        Some(id) => id.clone(),
        None => {
            assert_ne!(event.tag, 0, "a hub id carries a tag");
            HubId {
                seq: input.seq,
                tag: event.tag,
            }
            .to_string()
        }
    };
    let expected = sse::Dispatched {
        kind: input.event.clone().unwrap_or_else(|| "message".to_owned()),
        data: sse::normalize_line_ends(&input.data),
        last_event_id: expected_id,
    };
    let alone = sse::read(event.frame());
    assert_eq!(
        alone.events,
        std::slice::from_ref(&expected),
        "frame {:?}",
        event.frame()
    );
    assert_eq!(
        alone.retries,
        input
            .retry
            .map(|r| r.to_string())
            .into_iter()
            .collect::<Vec<_>>()
    );
    assert!(alone.comments.is_empty(), "data leaked into a comment");

    // A stream: the opening retry, a comment (heartbeat-like), the event
    // twice. Nothing from one frame may bleed into the next.
    let mut stream = encode_retry(u64::from(input.stream_retry)).to_vec();
    stream.extend_from_slice(&encode_comment(&input.comment));
    stream.extend_from_slice(event.frame());
    stream.extend_from_slice(event.frame());
    let read = sse::read(&stream);
    assert_eq!(read.events, [expected.clone(), expected]);
    assert_eq!(read.retries[0], input.stream_retry.to_string());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(id: Option<&str>, event: Option<&str>, data: &str) -> Input {
        Input {
            id: id.map(str::to_owned),
            event: event.map(str::to_owned),
            data: data.to_owned(),
            retry: Some(5),
            seq: 9,
            comment: "a\nb\rc".to_owned(),
            stream_retry: 3000,
        }
    }

    #[test]
    fn awkward_but_valid_events_round_trip() {
        check(input(None, None, ""));
        check(input(Some("+5"), Some(" spaced"), "\r\n\n\r"));
        check(input(
            Some(" id: x"),
            Some("a:b"),
            ":not a comment\ndata: nested\r",
        ));
        check(input(Some("x\u{2028}"), Some("\u{2028}"), "\u{FEFF}\0nul"));
    }

    #[test]
    fn refused_events_are_never_encoded() {
        check(input(Some("a\rb"), None, "x"));
        check(input(Some("12"), None, "x"));
        check(input(Some("#1"), None, "x"));
        check(input(Some("earliest"), None, "x"));
        check(input(Some("\u{FEFF}x"), None, "x"));
        check(input(Some("a\tb"), None, "x"));
        check(input(None, Some("a\u{200B}b"), "x"));
        check(input(Some(""), None, "x"));
        check(input(None, Some("a\0"), "x"));
        check(Input {
            retry: Some(MAX_RETRY_MS + 1),
            ..input(None, None, "x")
        });
    }
}
