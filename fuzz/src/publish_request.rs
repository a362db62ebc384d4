//! Target `publish_request`: the three ways to ask for an event (the JSON
//! body of `/api/v1/publish`, the seed's query or form calls, Mercure's
//! form POST) never panic on any bytes, and every event they accept that
//! the hub then validates encodes into a frame a browser reads back as that
//! event.
//!
//! The input is raw bytes, so that the seed corpus can hold readable
//! requests: the first byte picks the parser, the rest is its input.

use pushwire::http::{mercure_update, publish_body, Params, SeedPublish};
use pushwire_core::event::Target;
use pushwire_core::event::{Draft, Event};
use pushwire_core::id::HubId;
use pushwire_core::limits::FieldLimits;

use crate::sse;

const SEED_CALLS: [SeedPublish; 4] = [
    SeedPublish::SendMessage,
    SeedPublish::Push,
    SeedPublish::GroupSendMessage,
    SeedPublish::BatchSendMessage,
];

pub fn check(bytes: &[u8]) {
    let Some((&selector, rest)) = bytes.split_first() else {
        return;
    };
    let drafts = match selector % 3 {
        0 => publish_body(rest).map(|body| {
            assert!(
                body.batch || body.drafts.len() == 1,
                "one object, one event"
            );
            body.drafts
        }),
        1 => Params::decode(rest).and_then(|params| {
            let call = SEED_CALLS[usize::from(selector / 3) % SEED_CALLS.len()];
            call.draft(&params).map(|d| vec![d])
        }),
        _ => Params::decode(rest).and_then(|params| mercure_update(&params).map(|d| vec![d])),
    };
    let Ok(drafts) = drafts else { return };
    for (seq, draft) in (1u64..).zip(drafts) {
        check_accepted(seq, draft);
    }
}

/// What the hub does with a parsed draft: normalize, validate, encode.
fn check_accepted(seq: u64, mut draft: Draft) {
    draft.target.normalize();
    if draft.validate(&FieldLimits::default()).is_err() {
        return;
    }
    if let Target::Topics(topics) | Target::Users(topics) = &draft.target {
        assert!(!topics.is_empty(), "a validated target names someone");
    }
    let expected = sse::Dispatched {
        kind: draft.event.clone().unwrap_or_else(|| "message".to_owned()),
        data: sse::normalize_line_ends(&draft.data),
        last_event_id: draft.id.clone().unwrap_or_default(),
    };
    let retry = draft.retry;
    let event = Event::new(seq, draft, 0);
    let expected = sse::Dispatched {
        last_event_id: if expected.last_event_id.is_empty() {
            HubId {
                seq,
                tag: event.tag,
            }
            .to_string()
        } else {
            expected.last_event_id
        },
        ..expected
    };
    let read = sse::read(event.frame());
    assert_eq!(read.events, [expected], "frame {:?}", event.frame());
    assert_eq!(
        read.retries,
        retry.map(|r| r.to_string()).into_iter().collect::<Vec<_>>()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Vec<u8> {
        [&[0u8][..], body.as_bytes()].concat()
    }

    #[test]
    fn json_bodies() {
        check(&json(r#"{"to":"all","data":"a\r\nb"}"#));
        check(&json(
            r#"[{"to":{"topics":["t"]},"data":{"x":[1,"\n"]},"private":true}]"#,
        ));
        check(&json(r#"{"to":{"users":[]},"data":1}"#));
        check(&json("[]"));
        check(&json("\u{FEFF}{}"));
        check(&json(
            r#"{"to":"all","data":"x","retry":18446744073709551616}"#,
        ));
    }

    #[test]
    fn seed_and_mercure_forms() {
        for selector in [1u8, 4, 7, 10] {
            check(
                &[
                    &[selector][..],
                    b"userId=u&id=u&groupId=g&message=a%0D%0Ab&content=c&ids=a,,b",
                ]
                .concat(),
            );
            check(&[&[selector][..], b"message=%FF"].concat());
        }
        check(b"\x02topic=t&data=x%0Ay&retry=10&type=e&id=%2B5&private");
        check(b"\x02topic=t&retry=99999999999999999999999");
        check(b"\x02topic=t&retry=+1");
        check(b"\x02data=x");
    }
}
