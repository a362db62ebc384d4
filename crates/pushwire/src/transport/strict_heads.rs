//! Strict line endings in HTTP/1.1 request heads.
//!
//! hyper (through httparse) accepts a bare LF as the end of a head line, as
//! RFC 9112 allows a recipient to. A proxy in front of the hub that does
//! not (it takes the LF as part of a header value) then frames the bytes
//! differently: a header it never saw, a `Content-Length` say, makes the hub
//! read a second request the proxy never sent, a smuggled one. So the hub
//! refuses a head with a bare LF, or a CR not followed by LF, by closing the
//! connection before hyper reads it.
//!
//! [`StrictHeads`] wraps a connection's reads and follows its framing as
//! hyper will: heads are scanned byte by byte (and their `Content-Length`
//! and `Transfer-Encoding` noted), bodies are skipped by their length or
//! chunk sizes without looking inside. Where the framing is invalid hyper
//! answers 400 and closes on its own; the scanner then stops checking.
//!
//! The lean stream path (`stream_path.rs`) applies the same rule to the
//! head it reads itself, through [`head_is_strict`], so the rule lives here
//! alone. When it hands a connection to hyper, the bytes it already read are
//! given back through [`StrictHeads::rewound`]: they are replayed in front
//! of the socket and scanned like any other, and this type is the only
//! place a connection's writes are forwarded.
//!
//! Cost: a few dozen bytes of state per connection and one pass over the
//! bytes of each head; body bytes are only counted.
//!
//! The head's other rule, one valid `Host` (RFC 9112 section 3.2), needs
//! the parsed headers, so it is [`check_host`]: the router applies it to
//! every request before anything else runs, which covers hyper's
//! connections and the lean stream path alike (both hand their requests to
//! the same router).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest head line prefix kept to recognize `Content-Length` and
/// `Transfer-Encoding` and read their values.
const LINE_PREFIX: usize = 64;

/// Where in the request stream the next byte is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a request head (or, with `trailers`, a chunked body's trailers).
    Head { trailers: bool },
    /// In a body of known length: this many bytes remain.
    Body(u64),
    /// In a chunk-size line: the size so far, and whether an extension began.
    ChunkSize { size: u64, extension: bool },
    /// In a chunk's data: this many bytes remain, then CRLF.
    ChunkData(u64),
    /// After a chunk's data: the CRLF that ends it.
    ChunkEnd,
    /// The framing is one hyper refuses: it answers and closes by itself.
    Unchecked,
}

/// The scanner's state for one connection.
#[derive(Debug)]
pub struct HeadScanner {
    phase: Phase,
    /// The previous byte was CR.
    after_cr: bool,
    /// Bytes in the current line (without its CR LF), and the first of them.
    line_len: usize,
    line: [u8; LINE_PREFIX],
    /// Lines ended in the current head (saturating: only 0, 1 and more matter).
    lines: u8,
    /// What the current head's framing headers said.
    content_length: Option<u64>,
    conflicting_lengths: bool,
    transfer_encoding: Option<bool>,
}

/// A head line ended with LF alone, had a CR not followed by LF, or was a
/// `Content-Length` or `Transfer-Encoding` line too long to follow (no
/// client sends one; refusing it keeps the scanner in step with hyper).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl Default for HeadScanner {
    fn default() -> Self {
        HeadScanner {
            phase: Phase::Head { trailers: false },
            after_cr: false,
            line_len: 0,
            line: [0; LINE_PREFIX],
            lines: 0,
            content_length: None,
            conflicting_lengths: false,
            transfer_encoding: None,
        }
    }
}

impl HeadScanner {
    /// Follows `bytes`, the next bytes the client sent.
    pub fn scan(&mut self, mut bytes: &[u8]) -> Result<(), Refused> {
        while !bytes.is_empty() {
            match self.phase {
                Phase::Unchecked => return Ok(()),
                Phase::Body(remaining) => {
                    let skip = remaining.min(bytes.len() as u64);
                    bytes = &bytes[skip as usize..];
                    self.phase = if remaining == skip {
                        self.new_head(false)
                    } else {
                        Phase::Body(remaining - skip)
                    };
                }
                Phase::ChunkData(remaining) => {
                    let skip = remaining.min(bytes.len() as u64);
                    bytes = &bytes[skip as usize..];
                    self.phase = if remaining == skip {
                        Phase::ChunkEnd
                    } else {
                        Phase::ChunkData(remaining - skip)
                    };
                }
                _ => {
                    self.byte(bytes[0])?;
                    bytes = &bytes[1..];
                }
            }
        }
        Ok(())
    }

    fn new_head(&mut self, trailers: bool) -> Phase {
        *self = HeadScanner::default();
        Phase::Head { trailers }
    }

    fn byte(&mut self, b: u8) -> Result<(), Refused> {
        let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
        if after_cr && b != b'\n' {
            return Err(Refused);
        }
        match (self.phase, b) {
            (Phase::Head { .. }, b'\n') if !after_cr => Err(Refused),
            (Phase::Head { trailers }, b'\n') => self.end_head_line(trailers),
            (Phase::Head { .. }, b'\r') => Ok(()),
            (Phase::Head { .. }, _) => {
                if self.line_len < LINE_PREFIX {
                    self.line[self.line_len] = b;
                }
                self.line_len += 1;
                Ok(())
            }
            // hyper refuses a chunk-size line ended by LF alone.
            (Phase::ChunkSize { .. }, b'\n') if !after_cr => {
                self.phase = Phase::Unchecked;
                Ok(())
            }
            (Phase::ChunkSize { size, extension }, _) => {
                self.chunk_size_byte(size, extension, b);
                Ok(())
            }
            (Phase::ChunkEnd, b'\r') => Ok(()),
            (Phase::ChunkEnd, b'\n') if after_cr => {
                self.phase = Phase::ChunkSize {
                    size: 0,
                    extension: false,
                };
                Ok(())
            }
            // hyper refuses a chunk not followed by CRLF.
            _ => {
                self.phase = Phase::Unchecked;
                Ok(())
            }
        }
    }

    fn chunk_size_byte(&mut self, size: u64, extension: bool, b: u8) {
        self.phase = match b {
            b'\r' => Phase::ChunkSize { size, extension },
            // The chunked body ends with trailers and an empty line, read
            // like a head that carries no framing of its own.
            b'\n' if size == 0 => self.new_head(true),
            b'\n' => Phase::ChunkData(size),
            _ if extension => Phase::ChunkSize { size, extension },
            b';' => Phase::ChunkSize {
                size,
                extension: true,
            },
            _ => match (b as char).to_digit(16) {
                Some(digit) => match size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit.into()))
                {
                    Some(size) => Phase::ChunkSize { size, extension },
                    // hyper refuses an oversized chunk.
                    None => Phase::Unchecked,
                },
                // Whitespace before an extension, or junk hyper refuses.
                None if b == b' ' || b == b'\t' => Phase::ChunkSize { size, extension },
                None => Phase::Unchecked,
            },
        };
    }

    fn end_head_line(&mut self, trailers: bool) -> Result<(), Refused> {
        let len = std::mem::take(&mut self.line_len);
        if len == 0 {
            // Empty lines before a request line are skipped; otherwise an
            // empty line ends the head and says how the body is framed.
            if self.lines > 0 || trailers {
                self.phase = self.body_after_head(trailers);
            }
            return Ok(());
        }
        self.lines = self.lines.saturating_add(1);
        if trailers || self.lines == 1 {
            return Ok(());
        }
        let kept = &self.line[..len.min(LINE_PREFIX)];
        let Some(colon) = kept.iter().position(|&b| b == b':') else {
            return Ok(());
        };
        let (name, value) = (&kept[..colon], &kept[colon + 1..]);
        let content_length = name.eq_ignore_ascii_case(b"content-length");
        let transfer_encoding = name.eq_ignore_ascii_case(b"transfer-encoding");
        if (content_length || transfer_encoding) && len > LINE_PREFIX {
            // hyper might read a framing this scanner cannot: stopping
            // here is the only way not to fall out of step with it.
            return Err(Refused);
        }
        let value = std::str::from_utf8(value).ok();
        if content_length {
            // hyper refuses anything but digits; then it closes anyway.
            let length = value.and_then(|v| v.trim().parse::<u64>().ok());
            match (length, self.content_length) {
                (Some(n), None) => self.content_length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => self.conflicting_lengths = true,
            }
        } else if transfer_encoding {
            // The last coding of the last such line decides, as for hyper.
            let chunked = value.is_some_and(|v| {
                v.rsplit(',')
                    .next()
                    .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
            });
            self.transfer_encoding = Some(chunked);
        }
        Ok(())
    }

    fn body_after_head(&mut self, trailers: bool) -> Phase {
        if trailers {
            return self.new_head(false);
        }
        if self.conflicting_lengths {
            return Phase::Unchecked;
        }
        match (self.transfer_encoding, self.content_length) {
            (Some(true), _) => Phase::ChunkSize {
                size: 0,
                extension: false,
            },
            (Some(false), _) => Phase::Unchecked,
            (None, Some(n)) if n > 0 => Phase::Body(n),
            (None, _) => self.new_head(false),
        }
    }
}

/// Whether a complete request head (up to and including its empty line)
/// follows the rule [`StrictHeads`] enforces: every line ends with CR LF.
pub fn head_is_strict(head: &[u8]) -> bool {
    HeadScanner::default().scan(head).is_ok()
}

/// Why a request's `Host` is refused (RFC 9112 section 3.2, RFC 9110
/// section 7.2): a server must answer 400 to an HTTP/1.1 request without
/// one, with more than one, or with one that is not a valid authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadHost {
    Missing,
    Repeated,
    Invalid,
}

impl std::fmt::Display for BadHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadHost::Missing => "an HTTP/1.1 request needs a Host header",
            BadHost::Repeated => "a request may carry only one Host header",
            BadHost::Invalid => "the Host header is not a valid host[:port]",
        })
    }
}

/// The `Host` rule of HTTP/1.x requests: HTTP/1.1 needs exactly one, and
/// any that is present must be a valid `host[:port]`. HTTP/2 and later
/// carry the authority in `:authority`, which hyper checks as it parses.
pub fn check_host(version: http::Version, headers: &http::HeaderMap) -> Result<(), BadHost> {
    if version > http::Version::HTTP_11 {
        return Ok(());
    }
    let mut hosts = headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if version == http::Version::HTTP_11 => Err(BadHost::Missing),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(BadHost::Repeated),
        (Some(host), None) if host_is_valid(host.as_bytes()) => Ok(()),
        (Some(_), None) => Err(BadHost::Invalid),
    }
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 3986): an IP literal in
/// brackets, or a registered name or IPv4 address (unreserved characters,
/// sub-delimiters and percent-escapes, so no space, `/`, `@` or `:`), and a
/// port of one to five digits no greater than 65535.
pub fn host_is_valid(value: &[u8]) -> bool {
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(literal) => {
            let Some(end) = literal.iter().position(|&b| b == b']') else {
                return false;
            };
            let address = std::str::from_utf8(&literal[..end])
                .ok()
                .and_then(|a| a.parse::<std::net::Ipv6Addr>().ok());
            match &literal[end + 1..] {
                [] => (address.is_some(), None),
                [b':', port @ ..] => (address.is_some(), Some(port)),
                _ => return false,
            }
        }
        None => {
            let (name, port) = match value.iter().rposition(|&b| b == b':') {
                Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
                None => (value, None),
            };
            (reg_name_is_valid(name), port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        (1..=5).contains(&p.len())
            && p.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(p)
                .ok()
                .and_then(|p| p.parse::<u16>().ok())
                .is_some()
    });
    host_ok && port_ok
}

fn reg_name_is_valid(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if b == b'%' {
            let escape = name.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)) {
            return false;
        }
        i += 1;
    }
    !name.is_empty()
}

/// A connection whose reads pass through a [`HeadScanner`]: a head with a
/// bare line end fails the read, and hyper closes the connection.
pub struct StrictHeads<IO> {
    io: IO,
    scanner: HeadScanner,
    /// Bytes already read from `io` by someone else, read again first.
    replay: Vec<u8>,
    replayed: usize,
}

impl<IO> StrictHeads<IO> {
    pub fn new(io: IO) -> StrictHeads<IO> {
        StrictHeads::rewound(Vec::new(), io)
    }

    /// `io` with `read`, the bytes already read from it, put back in front.
    pub fn rewound(read: Vec<u8>, io: IO) -> StrictHeads<IO> {
        StrictHeads {
            io,
            scanner: HeadScanner::default(),
            replay: read,
            replayed: 0,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for StrictHeads<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = if this.replayed < this.replay.len() {
            let rest = &this.replay[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            if this.replayed == this.replay.len() {
                // Done with it: free it for the rest of the connection.
                this.replay = Vec::new();
                this.replayed = 0;
            }
            Poll::Ready(Ok(()))
        } else {
            Pin::new(&mut this.io).poll_read(cx, buf)
        };
        match read {
            Poll::Ready(Ok(())) => match this.scanner.scan(&buf.filled()[before..]) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(Refused) => {
                    buf.set_filled(before);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a request head line did not end with CR LF",
                    )))
                }
            },
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for StrictHeads<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` in pieces of every size from 1 to its length: the
    /// verdict must not depend on how reads split the bytes.
    fn verdict(input: &[u8]) -> Result<(), Refused> {
        let whole = HeadScanner::default().scan(input);
        for piece in 1..input.len().max(1) {
            let mut scanner = HeadScanner::default();
            let split = input.chunks(piece).try_for_each(|c| scanner.scan(c));
            assert_eq!(split, whole, "pieces of {piece}");
        }
        whole
    }

    #[test]
    fn crlf_heads_and_pipelined_requests_pass() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(verdict(input), Ok(()));
    }

    #[test]
    fn a_bare_lf_or_cr_in_a_head_fails() {
        for input in [
            &b"GET / HTTP/1.1\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\n",
            b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\nHost: x\n\n",
        ] {
            assert_eq!(
                verdict(input),
                Err(Refused),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn bodies_may_hold_bare_line_ends_and_the_next_head_is_still_checked() {
        let body = b"{\"data\": \"a\nb\rc\"}";
        let mut input =
            format!("POST /p HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        input.extend_from_slice(body);
        input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(verdict(&input), Ok(()));
        input.extend_from_slice(b"GET / HTTP/1.1\nHost: x\n\n");
        assert_eq!(verdict(&input), Err(Refused));
    }

    #[test]
    fn chunked_bodies_are_skipped_chunk_by_chunk() {
        let mut input =
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5;ext=1\r\na\nb\rc\r\n3\r\n\n\n\n\r\n0\r\nX-Trailer: t\r\n\r\n"
                .to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(verdict(&input), Ok(()));
        input.extend_from_slice(b"GET / HTTP/1.1\nHost: x\n\n");
        assert_eq!(verdict(&input), Err(Refused));
    }

    #[test]
    fn framing_hyper_refuses_is_left_to_hyper() {
        for input in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx\ny"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\n\r\nx\ny",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nx\ny",
        ] {
            assert_eq!(
                verdict(input),
                Ok(()),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn framing_lines_too_long_to_follow_are_refused_not_skipped() {
        let padded = format!("Transfer-Encoding:{}chunked", " ".repeat(LINE_PREFIX));
        let input =
            format!("POST / HTTP/1.1\r\n{padded}\r\n\r\n0\r\n\r\nGET / HTTP/1.1\nHost: x\n\n");
        assert_eq!(verdict(input.as_bytes()), Err(Refused));
        let long_length = format!("Content-Length: {}1\r\n", "0".repeat(LINE_PREFIX));
        let input = format!("POST / HTTP/1.1\r\n{long_length}\r\nx");
        assert_eq!(verdict(input.as_bytes()), Err(Refused));
        // Other long headers are fine.
        let cookie = format!("GET / HTTP/1.1\r\nCookie: {}\r\n\r\n", "c".repeat(4000));
        assert_eq!(verdict(cookie.as_bytes()), Ok(()));
    }

    #[test]
    fn a_whole_head_is_strict_only_with_crlf_line_ends() {
        assert!(head_is_strict(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!head_is_strict(b"GET /s HTTP/1.1\nHost: x\r\n\r\n"));
        assert!(!head_is_strict(b"GET /s HTTP/1.1\r\nHost: x\rY: z\r\n\r\n"));
    }

    #[tokio::test]
    async fn replayed_bytes_are_read_first_and_scanned_like_the_rest() {
        use tokio::io::AsyncReadExt;
        let rest = &b"Host: x\r\n\r\n"[..];
        let mut io = StrictHeads::rewound(b"GET / HTTP/1.1\r\n".to_vec(), rest);
        let mut read = Vec::new();
        let done = io.read_to_end(&mut read).await;
        assert!(done.is_ok(), "{done:?}");
        assert_eq!(read, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut io = StrictHeads::rewound(b"GET / HTTP/1.1\n".to_vec(), rest);
        let refused = io.read_to_end(&mut Vec::new()).await;
        assert!(refused.is_err_and(|e| e.kind() == io::ErrorKind::InvalidData));
    }

    #[test]
    fn hosts_are_one_valid_authority() {
        for good in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:65535",
            "a.example",
            "xn--bcher-kva.example",
            "a%41b",
        ] {
            assert!(host_is_valid(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "user@h",
            "[::1",
            "[::1]x",
            "[nope]",
            "localhost:-1",
            "host:99999",
            "host:",
            "host:123456",
            ":80",
            "a:b:c",
            "a%4",
            "a\tb",
        ] {
            assert!(!host_is_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn http11_needs_exactly_one_host_http10_may_omit_it() {
        use http::{HeaderMap, HeaderValue, Version};
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_host(Version::HTTP_11, &headers),
            Err(BadHost::Missing)
        );
        assert_eq!(check_host(Version::HTTP_10, &headers), Ok(()));
        assert_eq!(check_host(Version::HTTP_2, &headers), Ok(()));
        headers.append(http::header::HOST, HeaderValue::from_static("a"));
        assert_eq!(check_host(Version::HTTP_11, &headers), Ok(()));
        headers.append(http::header::HOST, HeaderValue::from_static("a"));
        assert_eq!(
            check_host(Version::HTTP_11, &headers),
            Err(BadHost::Repeated)
        );
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("a/b"));
        assert_eq!(
            check_host(Version::HTTP_10, &headers),
            Err(BadHost::Invalid)
        );
    }

    #[test]
    fn leading_empty_lines_are_not_a_head() {
        assert_eq!(
            verdict(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(())
        );
    }
}
