//! Target `cursor`: where a `Last-Event-ID` points in the memory engine's
//! history, checked against a model of the history written here; and the
//! query and header forms a client can send it in, which must never panic.
//!
//! The model's rule (docs/history.md): an id resolves to "after sequence
//! s" when it is the hub id (`#`, the decimal sequence number, `.` and the
//! event's tag) of an event in the retained window or of the one right
//! before it, or a publisher's id still in the window; anything else is
//! unknown, the untagged forms of earlier releases included (this history
//! stored no event without a tag). So a resolved cursor never points past
//! the newest event, never skips a retained event the client has not seen,
//! and never takes an id for another event under the same number.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderValue};
use pushwire::engines::memory::MemoryLog;
use pushwire::http::{requested_last_event_id, Params, LAST_EVENT_ID};
use pushwire_core::event::Target;
use pushwire_core::event::{Draft, Event};
use pushwire_core::limits::FieldLimits;
use pushwire_core::log::{Cursor, EventLog, Fanout, Retention};

#[derive(Debug, Clone, Arbitrary)]
pub struct Input {
    /// How many events the window keeps (1 to 16).
    pub window: u8,
    pub ops: Vec<Op>,
}

#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    /// Publish one event, with the publisher's id or the hub's.
    Publish(Option<String>),
    /// Resolve this text as a client's `Last-Event-ID`.
    Resolve(String),
    /// Resolve the hub id of this many events back from the newest, and
    /// its untagged forms.
    ResolveRecent(u8),
    /// A request's query string and `Last-Event-ID` header.
    Request {
        query: Vec<u8>,
        header: Option<Vec<u8>>,
    },
}

struct Nowhere;

impl Fanout for Nowhere {
    fn deliver(&self, _: &[Arc<Event>]) {}
}

/// The memory engine's futures are ready at once: one poll answers.
fn now<T>(future: impl Future<Output = T>) -> T {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("the memory engine awaited"),
    }
}

/// One retained event as the model sees it.
struct Kept {
    seq: u64,
    /// The publisher's id, if it had one.
    own: Option<String>,
    /// The id the engine gave it.
    id: String,
    /// The tag of its hub id (0 with a publisher's id).
    tag: u64,
}

/// The history as the model sees it.
struct Model {
    window: usize,
    kept: VecDeque<Kept>,
    next_seq: u64,
    /// The event that left the window last: (sequence, tag, id).
    boundary: (u64, u64, String),
}

/// A hub id as docs/history.md writes it: `#<seq>.<8 base32 chars>`, or the
/// untagged `#<seq>` and `<seq>` of earlier releases; the sequence in
/// canonical decimal, the tag not all `a`. (sequence, tag 0 for none).
fn hub_id(id: &str) -> Option<(u64, u64)> {
    let (digits, tag) = match id.strip_prefix('#') {
        Some(rest) => match rest.split_once('.') {
            Some((digits, tag)) => (digits, Some(tag)),
            None => (rest, None),
        },
        None => (id, None),
    };
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    let seq = digits.parse::<u64>().ok()?;
    let tag = match tag {
        None => 0,
        Some(text) if text.len() == 8 => {
            let mut value = 0u64;
            for c in text.bytes() {
                let digit = match c {
                    b'a'..=b'z' => c - b'a',
                    b'2'..=b'7' => c - b'2' + 26,
                    _ => return None,
                };
                value = value * 32 + u64::from(digit);
            }
            if value == 0 {
                return None;
            }
            value
        }
        Some(_) => return None,
    };
    Some((seq, tag))
}

impl Model {
    fn first_seq(&self) -> u64 {
        self.kept.front().map_or(self.next_seq, |k| k.seq)
    }

    fn resolve(&self, id: &str) -> Cursor {
        if let Some((seq, tag)) = hub_id(id) {
            let issued = self
                .kept
                .iter()
                .any(|k| k.seq == seq && k.tag == tag && k.own.is_none())
                || (seq.checked_add(1) == Some(self.first_seq()) && tag == self.boundary.1);
            return if issued {
                Cursor::After(seq)
            } else {
                Cursor::Unknown
            };
        }
        self.kept
            .iter()
            .find(|k| k.own.as_deref() == Some(id))
            .map_or(Cursor::Unknown, |k| Cursor::After(k.seq))
    }

    /// The id the engine gave the event with this sequence, if the model
    /// still knows it.
    fn id_of(&self, seq: u64) -> Option<&str> {
        if self.boundary.0 == seq && !self.boundary.2.is_empty() {
            return Some(&self.boundary.2);
        }
        self.kept
            .iter()
            .find(|k| k.seq == seq)
            .map(|k| k.id.as_str())
    }
}

pub fn check(input: Input) {
    let window = usize::from(input.window % 16) + 1;
    let retention = Retention {
        max_events: window,
        max_age: Duration::from_secs(3600),
    };
    let log = MemoryLog::new(retention, Arc::new(Nowhere));
    let mut model = Model {
        window,
        kept: VecDeque::new(),
        next_seq: 1,
        boundary: (0, 0, String::new()),
    };
    for op in input.ops.into_iter().take(64) {
        match op {
            Op::Publish(id) => {
                let draft = Draft {
                    id: id.clone(),
                    ..Draft::new(Target::All, "x")
                };
                if draft.validate(&FieldLimits::default()).is_err() {
                    continue;
                }
                match now(log.append(vec![draft])) {
                    Ok(events) => {
                        assert_eq!(events.len(), 1);
                        assert_eq!(events[0].seq, model.next_seq);
                        model.kept.push_back(Kept {
                            seq: model.next_seq,
                            own: id,
                            id: events[0].id.to_string(),
                            tag: events[0].tag,
                        });
                        model.next_seq += 1;
                        while model.kept.len() > model.window {
                            if let Some(gone) = model.kept.pop_front() {
                                // No hub id names an event with a
                                // publisher's id, not even an untagged one.
                                let tag = if gone.own.is_some() {
                                    u64::MAX
                                } else {
                                    gone.tag
                                };
                                model.boundary = (gone.seq, tag, gone.id);
                            }
                        }
                    }
                    Err(_) => {
                        let id = id.unwrap_or_default();
                        assert!(
                            model.kept.iter().any(|k| k.own.as_deref() == Some(&id)),
                            "refused `{id}`, which is not in the window"
                        );
                    }
                }
            }
            Op::Resolve(id) => check_resolve(&log, &model, &id),
            Op::ResolveRecent(back) => {
                let seq = model.next_seq.saturating_sub(1 + u64::from(back));
                if let Some(id) = model.id_of(seq) {
                    check_resolve(&log, &model, id);
                }
                check_resolve(&log, &model, &format!("#{seq}"));
                check_resolve(&log, &model, &seq.to_string());
            }
            Op::Request { query, header } => check_request(&query, header.as_deref()),
        }
    }
}

fn check_resolve(log: &MemoryLog, model: &Model, id: &str) {
    let Ok(cursor) = now(log.resolve(id)) else {
        panic!("the memory engine failed to resolve `{id}`");
    };
    if let Cursor::After(seq) = cursor {
        let newest = model.next_seq - 1;
        assert!(seq <= newest, "`{id}` resolved past the newest event");
        assert!(
            seq + 1 >= model.first_seq(),
            "`{id}` resolved before the window: events would be skipped"
        );
    }
    assert_eq!(cursor, model.resolve(id), "resolving `{id}`");
}

/// The header wins; else the first query form present; empty means none.
fn check_request(query: &[u8], header: Option<&[u8]>) {
    let Ok(params) = Params::decode(query) else {
        return;
    };
    let mut headers = HeaderMap::new();
    if let Some(value) = header.and_then(|h| HeaderValue::from_bytes(h).ok()) {
        headers.insert(LAST_EVENT_ID, value);
    }
    let Ok(found) = requested_last_event_id(&headers, &params) else {
        return;
    };
    if let Some(id) = found {
        assert!(!id.is_empty(), "an empty id means no id");
        let from_header = headers
            .get(LAST_EVENT_ID)
            .is_some_and(|h| h.as_bytes() == id.as_bytes());
        let from_query = ["lastEventID", "last_event_id", "Last-Event-ID"]
            .iter()
            .any(|name| params.all(name).any(|v| v == id));
        assert!(from_header || from_query, "`{id}` came from nowhere");
        if headers.contains_key(LAST_EVENT_ID) {
            assert!(from_header, "the header wins over the query");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(id: &str) -> Op {
        Op::Publish(Some(id.to_owned()))
    }

    /// `+5` is a valid publisher id; it used to resolve as sequence 5.
    #[test]
    fn a_signed_publisher_id_resolves_to_its_own_event() {
        let mut ops: Vec<Op> = (0..6).map(|_| Op::Publish(None)).collect();
        ops.push(publish("+5"));
        ops.push(Op::Resolve("+5".to_owned()));
        ops.push(Op::Resolve("05".to_owned()));
        check(Input { window: 15, ops });
    }

    #[test]
    fn trimmed_and_future_ids_are_unknown() {
        let mut ops: Vec<Op> = vec![publish("old")];
        ops.extend((0..5).map(|_| Op::Publish(None)));
        for id in [
            "old",
            "0",
            "1",
            "2",
            "3",
            "6",
            "7",
            "18446744073709551615",
            "99999999999999999999",
        ] {
            ops.push(Op::Resolve(id.to_owned()));
        }
        ops.extend((0..8).map(Op::ResolveRecent));
        check(Input { window: 2, ops });
    }

    #[test]
    fn request_forms() {
        for (query, header) in [
            (&b"lastEventID=a&last_event_id=b"[..], None),
            (b"lastEventID=a&lastEventID=b", None),
            (b"lastEventID=", Some(&b"h"[..])),
            (b"Last-Event-ID=%FF", None),
            (b"", Some(b"\xC3\xA9")),
            (b"", Some(b"\xFF")),
            (b"", Some(b"")),
        ] {
            check_request(query, header);
        }
    }
}
