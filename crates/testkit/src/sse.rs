//! A subscriber on a raw TCP connection that reads the stream's wire
//! exactly: the status and headers as sent, every body byte as sent
//! ([`SseClient::raw`], after the HTTP framing is taken off), and the
//! events parsed the way a browser parses them, with the client crate's
//! spec-following parser. The body is framed as the head says: chunked
//! (decoded by the one [`Dechunker`]), a `Content-Length` (a refusal's
//! JSON), or until the hub closes the connection (HTTP/1.0).
//!
//! Waits are bounded by [`WAIT`]; the helpers that expect something fail
//! the test (panic) with the wire read so far when it does not come.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use pushwire_client::sse::{ParsedEvent, Parser};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::http::{content_length, find, header_in, is_chunked, parse_head, Dechunker};
use crate::hub::WAIT;

/// How the hub frames the body of this answer.
enum Framing {
    Chunked(Dechunker),
    /// Body bytes still to come.
    Length(usize),
    UntilClose,
}

/// A subscriber on a raw TCP connection.
pub struct SseClient {
    stream: TcpStream,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    framing: Framing,
    parser: Parser,
    pending: VecDeque<ParsedEvent>,
    /// Every body byte received so far, as sent on the wire.
    pub raw: Vec<u8>,
    pub ended: bool,
}

impl SseClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> SseClient {
        SseClient::connect_with(addr, path, &[]).await
    }

    /// `GET path` with `Accept: text/event-stream` and `headers`; returns
    /// once the head of the answer is in.
    pub async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        SseClient::over(stream, &addr.to_string(), path, headers).await
    }

    /// [`SseClient::connect_with`] over a connection the test opened itself
    /// (from a chosen source address, say), with `Host: host`.
    pub async fn over(
        mut stream: TcpStream,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> SseClient {
        let mut head =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        let split = loop {
            if let Some(at) = find(&raw, b"\r\n\r\n") {
                break at;
            }
            let n = timeout(WAIT, stream.read(&mut buf))
                .await
                .expect("headers in time")
                .expect("read");
            assert!(n > 0, "connection closed before headers");
            raw.extend_from_slice(&buf[..n]);
        };
        let (status, headers) = parse_head(&raw[..split]).unwrap_or_else(|e| panic!("{e}"));
        let framing = if is_chunked(&headers) {
            Framing::Chunked(Dechunker::default())
        } else {
            match content_length(&headers).unwrap_or_else(|e| panic!("{e}")) {
                Some(length) => Framing::Length(length),
                None => Framing::UntilClose,
            }
        };
        let mut client = SseClient {
            stream,
            status,
            headers,
            framing,
            parser: Parser::default(),
            pending: Default::default(),
            raw: Vec::new(),
            ended: false,
        };
        let rest = raw[split + 4..].to_vec();
        client.absorb(&rest);
        client
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    fn absorb(&mut self, bytes: &[u8]) {
        let body = match &mut self.framing {
            Framing::Chunked(dechunker) => {
                let body = dechunker
                    .feed(bytes)
                    .unwrap_or_else(|e| panic!("stream body: {e}"));
                if dechunker.finished {
                    self.ended = true;
                }
                body
            }
            Framing::Length(left) => {
                let take = bytes.len().min(*left);
                *left -= take;
                if *left == 0 {
                    self.ended = true;
                }
                bytes[..take].to_vec()
            }
            Framing::UntilClose => bytes.to_vec(),
        };
        self.raw.extend_from_slice(&body);
        self.pending.extend(self.parser.feed(&body));
    }

    /// Reads until `until` says stop, the stream ends, or the deadline passes.
    async fn pump(&mut self, deadline: Instant, mut until: impl FnMut(&Self) -> bool) {
        let mut buf = vec![0u8; 64 * 1024];
        while !until(self) && !self.ended {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            match timeout(deadline - now, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.ended = true;
                }
                Ok(Ok(n)) => {
                    let chunk = buf[..n].to_vec();
                    self.absorb(&chunk);
                }
                Err(_) => return,
            }
        }
    }

    /// The next event, or `None` if the stream ended or none came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<ParsedEvent> {
        let deadline = Instant::now() + wait;
        self.pump(deadline, |c| !c.pending.is_empty()).await;
        self.pending.pop_front()
    }

    /// The next event; fails the test if none comes in time.
    pub async fn next(&mut self) -> ParsedEvent {
        match self.next_within(WAIT).await {
            Some(e) => e,
            None => panic!(
                "no event within {WAIT:?} (ended: {}); wire so far: {:?}",
                self.ended,
                String::from_utf8_lossy(&self.raw)
            ),
        }
    }

    /// `n` events, failing the test if they do not all come.
    pub async fn take(&mut self, n: usize) -> Vec<ParsedEvent> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }

    /// Asserts that no event arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(e) = self.next_within(wait).await {
            panic!("unexpected event: {e:?}");
        }
    }

    /// Waits until the hub ends the stream; true if it did in time.
    pub async fn wait_end(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        self.pump(deadline, |_| false).await;
        self.ended
    }

    /// Comment lines seen so far (heartbeats).
    pub fn comments(&self) -> usize {
        self.parser.comments()
    }

    /// The last event id the stream set (what a browser would send back).
    pub fn last_event_id(&self) -> String {
        self.parser.last_event_id().to_owned()
    }

    /// Reads whatever arrives within `wait`, to see heartbeats and the like.
    pub async fn drain_for(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        self.pump(deadline, |_| false).await;
    }
}
