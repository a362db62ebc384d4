//! Target `cursor`: where a `Last-Event-ID` points in the memory engine's
//! history, checked against a model of the history written here; and the
//! query and header forms a client can send it in, which must never panic.
//!
//! The model's rule (docs/history.md): an id resolves to "after sequence
//! s" when it is a hub id (the decimal sequence number) from the event
//! right before the retained window up to the newest event, or a
//! publisher's id still in the window; anything else is unknown. So a
//! resolved cursor never points past the newest event, and never skips a
//! retained event the client has not seen.

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
    /// Resolve the hub id of this many events back from the newest.
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

/// The history as the model sees it: (sequence, publisher id) of retained events.
struct Model {
    window: usize,
    kept: VecDeque<(u64, Option<String>)>,
    next_seq: u64,
}

impl Model {
    fn first_seq(&self) -> u64 {
        self.kept.front().map_or(self.next_seq, |(s, _)| *s)
    }

    fn resolve(&self, id: &str) -> Cursor {
        // `#` and the canonical decimal, or the bare decimal of earlier
        // releases.
        let digits = id.strip_prefix('#').unwrap_or(id);
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if canonical {
            return match digits.parse::<u64>() {
                Ok(seq) if seq < self.next_seq && seq + 1 >= self.first_seq() => Cursor::After(seq),
                _ => Cursor::Unknown,
            };
        }
        self.kept
            .iter()
            .find(|(_, own)| own.as_deref() == Some(id))
            .map_or(Cursor::Unknown, |(seq, _)| Cursor::After(*seq))
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
                        model.kept.push_back((model.next_seq, id));
                        model.next_seq += 1;
                        while model.kept.len() > model.window {
                            model.kept.pop_front();
                        }
                    }
                    Err(_) => {
                        let id = id.unwrap_or_default();
                        assert!(
                            model
                                .kept
                                .iter()
                                .any(|(_, own)| own.as_deref() == Some(&id)),
                            "refused `{id}`, which is not in the window"
                        );
                    }
                }
            }
            Op::Resolve(id) => check_resolve(&log, &model, &id),
            Op::ResolveRecent(back) => {
                let seq = model.next_seq.saturating_sub(1 + u64::from(back));
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
