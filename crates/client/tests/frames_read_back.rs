//! The core's frames, read back by the WHATWG parser a browser follows:
//! what the encoder writes is what `EventSource` dispatches. (Here rather
//! than in the core, so that the core has no dependency on a client.)

use pushwire_client::sse::{parse_all, ParsedEvent, Parser};
use pushwire_core::frame::{encode_comment, encode_event, encode_retry};

fn roundtrip(data: &str) -> Vec<ParsedEvent> {
    parse_all(&encode_event("7", None, None, data))
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
    let mut parser = Parser::default();
    assert!(parser.feed(&encode_retry(3000)).is_empty());
    assert_eq!(parser.retry(), Some(3000));
}

#[test]
fn comments_dispatch_nothing() {
    assert!(parse_all(&encode_comment("ping\nsecond line")).is_empty());
}
