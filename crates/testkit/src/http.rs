//! The one HTTP/1.1 client of the tests, over raw TCP so that a test sees
//! the status, the headers and the body exactly as the hub framed them,
//! with no client library in between that could hide a framing bug. Every
//! exchange is fallible ([`HttpError`]) so that tests that expect the hub
//! to be gone or to refuse (a crash, a shutdown, a full disk) can tell an
//! answer from no answer; the panicking helpers ([`request`], [`get`],
//! [`post_json`]) are for tests to which no answer is a failure. Bodies
//! sent chunked are decoded by the one [`Dechunker`], which the SSE client
//! shares. Nothing here ever waits longer than [`WAIT`] for one read.

use std::fmt;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::hub::WAIT;

/// Why an exchange gave no complete answer.
#[derive(Debug)]
pub enum HttpError {
    /// The connection could not be opened (nothing listens, or refused).
    Connect(std::io::Error),
    /// Writing the request or reading the answer failed (a reset).
    Io(std::io::Error),
    /// No (complete) answer within [`WAIT`].
    Timeout,
    /// The hub closed the connection before the answer was complete.
    Closed,
    /// The bytes are not an HTTP/1.1 answer.
    Malformed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Connect(e) => write!(f, "connect: {e}"),
            HttpError::Io(e) => write!(f, "io: {e}"),
            HttpError::Timeout => write!(f, "no answer within {WAIT:?}"),
            HttpError::Closed => write!(f, "connection closed before a complete answer"),
            HttpError::Malformed(why) => write!(f, "malformed answer: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A complete HTTP response, its body decoded when it was sent chunked.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// The body as JSON; fails the test if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub(crate) fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The bytes of a request: the head (`Host`, `Connection: close` when
/// `close`, `Content-Length`, then `headers` in order) followed by `body`.
fn request_bytes(
    host: &str,
    close: bool,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// One request on a fresh connection (`Connection: close`); the answer is
/// read until the hub closes the connection.
pub async fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, HttpError> {
    let mut stream = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
    let bytes = request_bytes(&addr.to_string(), true, method, path, headers, body);
    stream.write_all(&bytes).await.map_err(HttpError::Io)?;
    let mut raw = Vec::new();
    timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .map_err(|_| HttpError::Timeout)?
        .map_err(HttpError::Io)?;
    parse_reply(&raw)
}

/// [`try_request`], failing the test when there is no answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    try_request(addr, method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"").await
}

/// `GET` with these headers (a token, a cookie, an origin).
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(addr, "GET", path, headers, b"").await
}

/// These fields as an `application/x-www-form-urlencoded` body or query.
pub fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// One value encoded as a form or query value is (`#` becomes `%23`).
pub fn form_value(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub async fn post_json(addr: SocketAddr, path: &str, json: &serde_json::Value) -> Reply {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        json.to_string().as_bytes(),
    )
    .await
}

/// A keep-alive HTTP/1.1 connection: each [`Connection::send`] writes one
/// request and reads exactly one answer, framed by its `Content-Length` or
/// its chunks, so that the next answer starts where this one ended.
pub struct Connection {
    stream: TcpStream,
    host: String,
    /// Bytes read past the end of the last answer.
    buf: Vec<u8>,
}

impl Connection {
    /// Opens a connection to `addr` with Nagle off, since every request is
    /// small and waits for its answer.
    pub async fn open(addr: SocketAddr, host: &str) -> Result<Connection, HttpError> {
        let stream = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
        stream.set_nodelay(true).map_err(HttpError::Connect)?;
        Ok(Connection::over(stream, host))
    }

    /// Talks over a connection the test opened itself (from a chosen
    /// source address, say).
    pub fn over(stream: TcpStream, host: &str) -> Connection {
        Connection {
            stream,
            host: host.to_owned(),
            buf: Vec::new(),
        }
    }

    /// One request on this connection and its answer. After an error the
    /// connection is in an unknown state; open a new one.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, HttpError> {
        let bytes = request_bytes(&self.host, false, method, path, headers, body);
        self.stream.write_all(&bytes).await.map_err(HttpError::Io)?;
        let end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            self.read_more().await?;
        };
        let (status, headers) = parse_head(&self.buf[..end])?;
        self.buf.drain(..end + 4);
        let body = if is_chunked(&headers) {
            let mut dechunker = Dechunker::default();
            let mut body = dechunker.feed(&std::mem::take(&mut self.buf))?;
            while !dechunker.finished {
                self.read_more().await?;
                body.extend(dechunker.feed(&std::mem::take(&mut self.buf))?);
            }
            // What followed the last chunk belongs to the next answer.
            self.buf = dechunker.rest();
            body
        } else {
            let length = content_length(&headers)?.unwrap_or(0);
            while self.buf.len() < length {
                self.read_more().await?;
            }
            self.buf.drain(..length).collect()
        };
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    async fn read_more(&mut self) -> Result<(), HttpError> {
        let mut chunk = [0u8; 4096];
        let n = timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .map_err(|_| HttpError::Timeout)?
            .map_err(HttpError::Io)?;
        if n == 0 {
            return Err(HttpError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Sends `bytes` exactly as given on a fresh connection and returns every
/// byte the hub answered until it closed the connection, for tests that
/// send what no well-behaved client would. The hub may close or reset
/// before it has read everything, or reset after its answer: what was read
/// until then is the answer, so a failed write or read is not an error.
/// Only a failed connect or no close within [`WAIT`] is.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut socket = TcpStream::connect(addr).await.map_err(HttpError::Connect)?;
    let _ = socket.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = timeout(WAIT, socket.read_to_end(&mut out))
        .await
        .map_err(|_| HttpError::Timeout)?;
    Ok(out)
}

/// A whole answer as read until the connection closed: the head, then the
/// body (decoded when chunked; whatever arrived when not).
pub fn parse_reply(raw: &[u8]) -> Result<Reply, HttpError> {
    let split = find(raw, b"\r\n\r\n")
        .ok_or_else(|| HttpError::Malformed("no end of headers".to_owned()))?;
    let (status, headers) = parse_head(&raw[..split])?;
    let mut body = raw[split + 4..].to_vec();
    if is_chunked(&headers) {
        body = Dechunker::default().feed(&body)?;
    }
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The status and headers of a head (without its blank line).
pub(crate) fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), HttpError> {
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| HttpError::Malformed(format!("status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

pub(crate) fn is_chunked(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
}

pub(crate) fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, HttpError> {
    header_in(headers, "content-length")
        .map(|v| {
            v.parse()
                .map_err(|_| HttpError::Malformed(format!("content-length {v:?}")))
        })
        .transpose()
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Decodes HTTP/1.1 chunked transfer encoding incrementally: feed it the
/// bytes as they arrive, it returns the body bytes of every chunk that is
/// complete and keeps the rest for the next feed.
#[derive(Default)]
pub struct Dechunker {
    buf: Vec<u8>,
    /// The last (empty) chunk has been seen.
    pub finished: bool,
    /// The blank line after the last chunk has not arrived yet.
    awaiting_blank: bool,
}

impl Dechunker {
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, HttpError> {
        let mut out = Vec::new();
        self.buf.extend_from_slice(bytes);
        if self.finished {
            if self.awaiting_blank && self.buf.len() >= 2 {
                self.awaiting_blank = false;
                if self.buf.starts_with(b"\r\n") {
                    self.buf.drain(..2);
                }
            }
            return Ok(out);
        }
        while let Some(line_end) = find(&self.buf, b"\r\n") {
            let size_text = String::from_utf8_lossy(&self.buf[..line_end]).to_string();
            let size_hex = size_text.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| HttpError::Malformed(format!("chunk size {size_text:?}")))?;
            if size == 0 {
                self.finished = true;
                // The last chunk, no trailers, and the blank line.
                self.buf.drain(..line_end + 2);
                self.awaiting_blank = true;
                return self.feed(&[]).map(|_| out);
            }
            if self.buf.len() < line_end + 2 + size + 2 {
                break;
            }
            out.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..line_end + 2 + size + 2);
        }
        Ok(out)
    }

    /// What was fed after the last chunk (the start of a next answer).
    fn rest(self) -> Vec<u8> {
        if self.finished {
            self.buf
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn chunks_split_anywhere_decode_to_the_body_and_keep_what_follows() {
        let wire = b"5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
        for cut in 0..wire.len() {
            let mut dechunker = Dechunker::default();
            let mut body = dechunker.feed(&wire[..cut]).unwrap();
            body.extend(dechunker.feed(&wire[cut..]).unwrap());
            assert_eq!(body, b"hello!", "cut at {cut}");
            assert!(dechunker.finished);
            assert_eq!(dechunker.rest(), b"HTTP/1.1 200 OK\r\n", "cut at {cut}");
        }
    }

    #[test]
    fn a_bad_chunk_size_is_an_error_not_a_panic() {
        let mut dechunker = Dechunker::default();
        assert!(matches!(
            dechunker.feed(b"zz\r\nhello\r\n"),
            Err(HttpError::Malformed(_))
        ));
    }

    #[test]
    fn a_whole_answer_parses_with_its_chunked_body_decoded() {
        let raw =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        let reply = parse_reply(raw).unwrap();
        assert_eq!(reply.status, 404);
        assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
        assert_eq!(reply.body, "{}");
        assert!(matches!(
            parse_reply(b"HTTP/1.1 200"),
            Err(HttpError::Malformed(_))
        ));
    }
}
