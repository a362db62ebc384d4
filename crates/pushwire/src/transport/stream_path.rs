//! Plain HTTP/1.1 connections whose first request opens an event stream,
//! served without hyper's per-connection state.
//!
//! Why: open streams are almost all of what a push hub holds, and hyper keeps
//! a read buffer and a write buffer (8 KiB each) for every HTTP/1 connection
//! for as long as it is open: most of an idle stream's memory (see
//! docs/performance.md). A stream needs neither. Its request is one head with
//! no body, its response a head followed by frames, and between frames the
//! only state is the stream's queue.
//!
//! So the accept loop hands every plain connection to [`serve`], which reads
//! the first request head itself with `httparse` (the parser hyper uses):
//! - a well-formed `GET` of a stream route, without a body, goes through the
//!   same axum router as every other request, and its response is written
//!   here: the head, then each frame as one chunk (frames queued together go
//!   out in one write), with no buffer kept between writes;
//! - anything else (another method or route, a malformed or oversized head,
//!   a request with a body) goes to hyper with the bytes already read put
//!   back in front of the socket, so hyper serves it exactly as if it had
//!   read them itself: its limits, errors and keep-alive apply unchanged.
//!
//! A stream's connection is closed when the stream ends (`Connection:
//! close`): an `EventSource` reconnects on a new connection anyway. A client
//! closing its end is seen at once, because the connection is read while
//! the stream waits for frames; whatever a client sends after its request is
//! discarded.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue, Method, Request, Response, Version};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// Largest request head served here; larger ones (big cookies) go to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers served here; requests with more go to hyper.
const MAX_HEADERS: usize = 48;
/// Largest non-stream response body a stream route may answer with (its
/// errors are short JSON documents).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What became of the connection's first request.
pub enum Served {
    /// The connection carried a stream and is finished.
    Stream,
    /// Not a stream request: serve the connection with hyper.
    Other(Rewound),
    /// The request head did not arrive within the header read timeout; the
    /// connection is closed.
    HeadTimeout,
}

/// Serves the connection if its first request opens a stream; otherwise
/// gives it back, with what was read, for hyper to serve.
pub async fn serve(
    mut socket: TcpStream,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    is_stream_route: fn(&str) -> bool,
) -> Served {
    let mut head = Vec::new();
    let read = tokio::time::timeout(header_read_timeout, read_head(&mut socket, &mut head)).await;
    let request = match read {
        // A client that does not send its request in time, or goes away, is
        // closed, as hyper would close it.
        Err(_) => return Served::HeadTimeout,
        Ok(Err(_)) => return Served::Stream,
        Ok(Ok(Some(len))) => parse(&head[..len], is_stream_route),
        Ok(Ok(None)) => None,
    };
    let Some((mut request, version)) = request else {
        return Served::Other(Rewound::new(head, socket));
    };
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if let Err(error) = respond(&mut socket, response, version).await {
        tracing::debug!(%error, %peer, "stream connection ended with an error");
    }
    let _ = socket.shutdown().await;
    Served::Stream
}

/// Reads until the request head is complete. `Ok(Some(len))`: the head is
/// `buf[..len]`; `Ok(None)`: not a request this module serves (not `GET`,
/// or the head grew past [`MAX_HEAD`]), leave it to hyper.
async fn read_head(socket: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    loop {
        if buf.len() >= MAX_HEAD {
            return Ok(None);
        }
        buf.reserve(1024.min(MAX_HEAD - buf.len()));
        if socket.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if !b"GET ".starts_with(&buf[..buf.len().min(4)]) {
            return Ok(None);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Some(end + 4));
        }
        // A head ended by bare line feeds: not for this path.
        if buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(None);
        }
    }
}

/// The request, if it is a well-formed `GET` of a stream route without a
/// body; `None` leaves it to hyper.
fn parse(head: &[u8], is_stream_route: fn(&str) -> bool) -> Option<(Request<Body>, Version)> {
    // httparse, like hyper, takes a lone LF as a line end; the hub refuses
    // such heads (see framing.rs), so they go the way that refuses them.
    if has_bare_line_end(head) {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(_) = parsed.parse(head).ok()? else {
        return None;
    };
    let (method, target, version) = (parsed.method?, parsed.path?, parsed.version?);
    let path = target.split('?').next().unwrap_or(target);
    if method != "GET" || !is_stream_route(path) {
        return None;
    }
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(target)
        .version(version);
    for h in parsed.headers.iter() {
        let name = header::HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            return None;
        }
        request = request.header(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    Some((request.body(Body::empty()).ok()?, version))
}

/// Whether a line of the head ends with a lone LF, or a CR stands alone.
fn has_bare_line_end(head: &[u8]) -> bool {
    head.iter().enumerate().any(|(i, &b)| match b {
        b'\n' => i == 0 || head[i - 1] != b'\r',
        b'\r' => head.get(i + 1) != Some(&b'\n'),
        _ => false,
    })
}

/// Writes the response: a stream frame by frame until it ends or the client
/// goes away, anything else (an error) whole.
async fn respond(
    socket: &mut TcpStream,
    response: Response<Body>,
    version: Version,
) -> io::Result<()> {
    let is_stream = response.status().is_success()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let (parts, body) = response.into_parts();
    if !is_stream {
        let body = http_body_util::Limited::new(body, MAX_ERROR_BODY)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut out = head(&parts, Some(body.len()), false);
        out.extend_from_slice(&body);
        return socket.write_all(&out).await;
    }
    // HTTP/1.0 has no chunked encoding: the body then ends with the connection.
    let chunked = version == Version::HTTP_11;
    socket.write_all(&head(&parts, None, chunked)).await?;
    let (mut reader, mut writer) = socket.split();
    let mut body = std::pin::pin!(body);
    let mut discard = [0u8; 64];
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(Ok(frame)) = frame else { break };
                let mut out = Vec::new();
                put_frame(&mut out, frame.into_data().ok(), chunked);
                // Frames already queued go out in the same write.
                while let Some(Some(Ok(frame))) = body.frame().now_or_never() {
                    put_frame(&mut out, frame.into_data().ok(), chunked);
                }
                writer.write_all(&out).await?;
            }
            read = reader.read(&mut discard) => match read {
                Ok(0) | Err(_) => return Ok(()),
                Ok(_) => {}
            },
        }
    }
    if chunked {
        writer.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// The response head. `length`: a body of known length; otherwise the body
/// is chunked (or, for HTTP/1.0, ends with the connection).
fn head(parts: &http::response::Parts, length: Option<usize>, chunked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    let reason = parts.status.canonical_reason().unwrap_or("");
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", parts.status.as_u16()).as_bytes());
    for (name, value) in parts.headers.iter() {
        if name == header::CONTENT_LENGTH
            || name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n");
    match length {
        Some(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn put_frame(out: &mut Vec<u8>, data: Option<Bytes>, chunked: bool) {
    let Some(data) = data.filter(|d| !d.is_empty()) else {
        return;
    };
    if chunked {
        out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\r\n");
    } else {
        out.extend_from_slice(&data);
    }
}

/// A socket with the bytes already read from it put back in front.
pub struct Rewound {
    prefix: Vec<u8>,
    read: usize,
    socket: TcpStream,
}

impl Rewound {
    fn new(prefix: Vec<u8>, socket: TcpStream) -> Rewound {
        Rewound {
            prefix,
            read: 0,
            socket,
        }
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read < this.prefix.len() {
            let rest = &this.prefix[this.read..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                // Done with it: free it for the rest of the connection.
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn streams(path: &str) -> bool {
        path == "/stream"
    }

    #[test]
    fn a_get_of_a_stream_route_is_served_here() {
        let head = b"GET /stream?topic=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n";
        let (request, version) = parse(head, streams).expect("served here");
        assert_eq!(version, Version::HTTP_11);
        assert_eq!(request.uri(), "/stream?topic=a");
        assert_eq!(request.headers()["last-event-id"], "7");
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for head in [
            &b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /stream HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nX: \x01\r\n\r\n",
            b"GET /stream HTTP/2.0\r\n\r\n",
            b"GET /stream HTTP/1.1\nHost: x\r\n\r\n",
            b"GET /stream HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",
        ] {
            assert!(
                parse(head, streams).is_none(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn chunks_carry_their_length_in_hex() {
        let mut out = Vec::new();
        put_frame(&mut out, Some(Bytes::from(vec![b'a'; 26])), true);
        put_frame(&mut out, Some(Bytes::new()), true);
        assert_eq!(out, [&b"1a\r\n"[..], &[b'a'; 26], b"\r\n"].concat());
    }
}
