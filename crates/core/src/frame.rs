//! The server-sent-events wire form: one frame per event, a `retry:` frame
//! that opens every stream, comment frames for heartbeats.
//!
//! Invariants of a frame: field values never contain CR, LF or NUL where the
//! browser would misread them (ids and event types are validated before
//! they get here, data is split into one `data:` line per source line), and
//! the frame ends with the blank line that makes a browser dispatch it.
//! Each event is encoded once; every stream shares those bytes.

use bytes::{BufMut, Bytes, BytesMut};

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
    fn comments_are_colon_lines() {
        assert_eq!(
            &encode_comment("ping\nsecond line")[..],
            b": ping\n: second line\n\n"
        );
        assert_eq!(&encode_comment("")[..], b":\n\n");
    }
}
