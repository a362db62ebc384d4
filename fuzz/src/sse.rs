//! An event-stream reader written from the WHATWG HTML standard, section
//! "Server-sent events", subsections "Parsing an event stream" and
//! "Interpreting an event stream", step by step. It reads a whole stream at
//! once: the fuzz targets hand it complete frames.
//!
//! What it follows: the stream is decoded as UTF-8 (invalid sequences
//! become U+FFFD) and one leading byte order mark is dropped; lines end at
//! CRLF, LF or CR; an empty line dispatches; a line starting with `:` is a
//! comment; a field's value is what follows the first `:`, less one leading
//! space; `data` appends the value and a LF, `event` sets the type, `id`
//! sets the last event id unless the value holds NUL, `retry` is used only
//! when it is ASCII digits; unknown fields are ignored; dispatch drops the
//! final LF of the data, dispatches nothing when the data buffer is empty,
//! and keeps the last event id for later events; an event still open at the
//! end of the stream is discarded.

/// One dispatched event, as a page's `MessageEvent` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// `type`: the `event` field, or `message`.
    pub kind: String,
    pub data: String,
    /// `lastEventId`.
    pub last_event_id: String,
}

/// Everything a browser takes from a stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    pub events: Vec<Dispatched>,
    /// Every `retry` value the browser accepted, in order, as the digits
    /// sent (the standard reads them as an integer of any size).
    pub retries: Vec<String>,
    /// Comment lines seen, without their leading `:`.
    pub comments: Vec<String>,
}

/// Reads a complete stream.
pub fn read(bytes: &[u8]) -> Stream {
    let text = String::from_utf8_lossy(bytes);
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(&text);

    let mut stream = Stream::default();
    let mut data = String::new();
    let mut kind = String::new();
    let mut last_event_id = String::new();

    for line in lines(text) {
        if line.is_empty() {
            // Dispatch.
            if data.is_empty() {
                kind.clear();
                continue;
            }
            if data.ends_with('\n') {
                data.pop();
            }
            stream.events.push(Dispatched {
                kind: if kind.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut kind)
                },
                data: std::mem::take(&mut data),
                last_event_id: last_event_id.clone(),
            });
            kind.clear();
            continue;
        }
        if let Some(comment) = line.strip_prefix(':') {
            stream.comments.push(comment.to_owned());
            continue;
        }
        let (field, value) = match line.find(':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line, ""),
        };
        match field {
            "event" => kind = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => last_event_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                stream.retries.push(value.to_owned());
            }
            _ => {}
        }
    }
    stream
}

/// The lines of a stream. The last piece counts only when a line end
/// follows it: an unterminated line is still being received.
fn lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push(&text[start..i]);
                i += 1;
                start = i;
            }
            b'\r' => {
                out.push(&text[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                start = i;
            }
            _ => i += 1,
        }
    }
    out
}

/// Text as a browser's `data` shows it after a round trip: every CRLF, CR
/// and LF of the source reads as one LF.
pub fn normalize_line_ends(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(stream: &str) -> Dispatched {
        let read = read(stream.as_bytes());
        assert_eq!(read.events.len(), 1, "{read:?}");
        read.events[0].clone()
    }

    /// The standard's own examples.
    #[test]
    fn the_standards_examples() {
        let e = one("data: YHOO\ndata: +2\ndata: 10\n\n");
        assert_eq!(e.data, "YHOO\n+2\n10");
        assert_eq!(e.kind, "message");

        let s = read(b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n");
        assert_eq!(s.events.len(), 2, "the third is never terminated");
        assert_eq!(s.events[0].data, "first event");
        assert_eq!(s.events[0].last_event_id, "1");
        assert_eq!(s.events[1].data, "second event");
        assert_eq!(s.events[1].last_event_id, "");
        assert_eq!(s.comments, [" test stream"]);

        let s = read(b"data\n\ndata\ndata\n\ndata:");
        assert_eq!(s.events.len(), 2);
        assert_eq!(s.events[0].data, "");
        assert_eq!(s.events[1].data, "\n");

        let s = read(b"data:test\n\ndata: test\n\n");
        assert_eq!(s.events[0].data, s.events[1].data);
    }

    #[test]
    fn every_line_end_ends_a_line() {
        let e = one("event: a\r\ndata: x\rdata: y\n\r\n");
        assert_eq!(e.kind, "a");
        assert_eq!(e.data, "x\ny");
    }

    #[test]
    fn a_leading_bom_is_dropped_once() {
        assert_eq!(one("\u{FEFF}data: x\n\n").data, "x");
        let s = read("\u{FEFF}\u{FEFF}data: x\n\n".as_bytes());
        assert!(
            s.events.is_empty(),
            "the second BOM is part of a field name"
        );
    }

    #[test]
    fn ids_with_nul_are_ignored_and_ids_persist() {
        let s = read(b"id: 1\ndata: a\n\nid: x\0y\ndata: b\n\n");
        assert_eq!(s.events[1].last_event_id, "1");
    }

    #[test]
    fn retry_needs_ascii_digits() {
        let s =
            read(b"retry: 10\nretry: 1x\nretry: -1\nretry:\nretry: 99999999999999999999999\n\n");
        assert_eq!(s.retries, ["10", "99999999999999999999999"]);
        assert!(s.events.is_empty());
    }

    #[test]
    fn only_one_space_is_stripped_and_type_resets() {
        let s = read(b"event:  x\ndata:  y\n\ndata: z\n\n");
        assert_eq!(s.events[0].kind, " x");
        assert_eq!(s.events[0].data, " y");
        assert_eq!(s.events[1].kind, "message");
    }

    #[test]
    fn a_type_without_data_dispatches_nothing_and_is_forgotten() {
        let s = read(b"event: a\n\ndata: b\n\n");
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].kind, "message");
    }
}
