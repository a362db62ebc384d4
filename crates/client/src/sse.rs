//! A server-sent-events parser that follows the WHATWG HTML "event stream
//! interpretation" rules step by step. The hub itself only writes SSE; this
//! parser reads it back for the `pushwire subscribe` command, for the load
//! generator and for tests, so that what the hub writes is checked the way a
//! browser would read it.

/// One dispatched event, as `EventSource` would hand it to a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEvent {
    /// The `lastEventId` of the event (`None` when the stream never set one).
    pub id: Option<String>,
    /// The event type; `message` when the stream named none.
    pub event: String,
    pub data: String,
}

/// An incremental parser: feed it bytes as they arrive, in chunks of any size.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The previous chunk ended in CR: a LF starting this one belongs to it.
    skip_lf: bool,
    started: bool,
    data: String,
    event: String,
    /// The last event ID buffer: what the latest `id:` field set.
    id_buffer: String,
    /// The last event ID string: the buffer as of the latest dispatch. An
    /// `id:` of an event the stream never completed is not in it, so a
    /// client resuming from it does not skip that event.
    last_id: String,
    retry: Option<u64>,
    comments: usize,
}

impl Parser {
    /// A parser for a reconnection, starting from the last event id the
    /// previous connection left (a browser's `EventSource` keeps it across
    /// connections: events without an `id:` carry it on).
    pub fn resuming(last_event_id: &str) -> Parser {
        Parser {
            id_buffer: last_event_id.to_owned(),
            last_id: last_event_id.to_owned(),
            ..Parser::default()
        }
    }

    /// Feeds bytes and returns the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<ParsedEvent> {
        let mut out = Vec::new();
        let mut bytes = bytes;
        if !self.started && !bytes.is_empty() {
            self.started = true;
            // A leading UTF-8 byte order mark is dropped.
            if let Some(rest) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
                bytes = rest;
            }
        }
        for &b in bytes {
            if self.skip_lf {
                self.skip_lf = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\r' => {
                    self.skip_lf = true;
                    self.end_line(&mut out);
                }
                b'\n' => self.end_line(&mut out),
                _ => self.line.push(b),
            }
        }
        out
    }

    /// The reconnection time the stream asked for, if any.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// The last event id of the events dispatched so far (what a browser
    /// sends back as `Last-Event-ID`); empty when none was set.
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// How many comment lines were seen (heartbeats).
    pub fn comments(&self) -> usize {
        self.comments
    }

    fn end_line(&mut self, out: &mut Vec<ParsedEvent>) {
        let line = std::mem::take(&mut self.line);
        let line = String::from_utf8_lossy(&line);
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.find(':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (&line[..], ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<ParsedEvent>) {
        // Even a blank line that dispatches no event sets the string.
        self.last_id.clone_from(&self.id_buffer);
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        out.push(ParsedEvent {
            id: (!self.last_id.is_empty()).then(|| self.last_id.clone()),
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
        });
    }
}

/// Parses a complete byte string.
pub fn parse_all(bytes: &[u8]) -> Vec<ParsedEvent> {
    Parser::default().feed(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_boundaries_do_not_matter() {
        let stream = b"id: 1\r\nevent: a\r\ndata: x\r\ndata: y\r\n\r\nid: 2\rdata: z\r\r";
        let whole = parse_all(stream);
        for split in 0..stream.len() {
            let mut p = Parser::default();
            let mut got = p.feed(&stream[..split]);
            got.extend(p.feed(&stream[split..]));
            assert_eq!(got, whole, "split at {split}");
        }
        assert_eq!(whole.len(), 2);
        assert_eq!(whole[0].data, "x\ny");
        assert_eq!(whole[0].event, "a");
        assert_eq!(whole[1].id.as_deref(), Some("2"));
        assert_eq!(whole[1].event, "message");
    }

    #[test]
    fn field_without_colon_and_unknown_fields() {
        let events = parse_all(b"data\nfoo: bar\n\n");
        assert_eq!(events[0].data, "");
    }

    #[test]
    fn id_persists_and_nul_ids_are_ignored() {
        let events = parse_all(b"id: a\ndata: 1\n\ndata: 2\n\nid: b\0c\ndata: 3\n\n");
        let ids: Vec<_> = events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(
            ids,
            vec![Some("a".into()), Some("a".into()), Some("a".into())]
        );
    }

    #[test]
    fn the_id_of_an_event_cut_short_is_not_the_last_event_id() {
        let mut p = Parser::default();
        let events = p.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b\n");
        assert_eq!(events.len(), 1);
        assert_eq!(p.last_event_id(), "1");
        // A blank line completes it, even with no data.
        p.feed(b"\n");
        assert_eq!(p.last_event_id(), "2");
        let mut p = Parser::default();
        p.feed(b"id: 3\n\n");
        assert_eq!(p.last_event_id(), "3");
    }

    #[test]
    fn a_resuming_parser_carries_the_last_event_id_on() {
        let mut p = Parser::resuming("7");
        assert_eq!(p.last_event_id(), "7");
        let events = p.feed(b"data: x\n\n");
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(Parser::resuming("").feed(b"data: y\n\n")[0].id, None);
    }

    #[test]
    fn bom_is_dropped_only_at_start() {
        let events = parse_all(b"\xEF\xBB\xBFdata: x\n\n");
        assert_eq!(events[0].data, "x");
    }

    #[test]
    fn bad_retry_is_ignored() {
        let mut p = Parser::default();
        p.feed(b"retry: 12x\n\nretry: 500\n\nretry: 1e3\n\n");
        assert_eq!(p.retry(), Some(500));
    }
}
