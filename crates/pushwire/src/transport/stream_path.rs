//! HTTP/1.1 connections whose first request opens an event stream, served
//! without hyper's per-connection state: plain ones, and over TLS once the
//! handshake has chosen HTTP/1.1.
//!
//! Why: open streams are almost all of what a push hub holds, and hyper keeps
//! a read buffer and a write buffer (8 KiB each) for every HTTP/1 connection
//! for as long as it is open: most of an idle stream's memory (see
//! docs/performance.md). A stream needs neither. Its request is one head with
//! no body, its response a head followed by frames, and between frames the
//! only state is the stream's queue.
//!
//! So the accept loop hands every plain connection (and the TLS path every
//! HTTP/1.1 one) to [`serve`], which reads the first request head itself
//! with `httparse` (the parser hyper uses):
//! - a well-formed `GET` of a stream route, without a body, goes through the
//!   same axum router as every other request, and its response is written
//!   here: the head, then each frame as one chunk (frames queued together go
//!   out in one vectored write of chunk headers and the shared frames
//!   themselves, uncopied), with no buffer kept between writes;
//! - anything else (another method or route, a malformed or oversized head,
//!   a request with a body) goes to hyper with the bytes already read put
//!   back in front of the socket ([`StrictHeads::rewound`]), so hyper serves
//!   it exactly as if it had read them itself: its limits, errors and
//!   keep-alive apply unchanged.
//!
//! Which heads are strict enough (every line ending with CR LF) is decided
//! by the same scanner that guards hyper's connections
//! ([`strict_heads::head_is_strict`]).
//!
//! A stream's connection is closed when the stream ends (`Connection:
//! close`): an `EventSource` reconnects on a new connection anyway. A client
//! closing its end is seen at once, because the connection is read while
//! the stream waits for frames; whatever a client sends after its request is
//! discarded.

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
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

use crate::transport::strict_heads;
#[cfg(doc)]
use crate::transport::strict_heads::StrictHeads;

/// Largest request head served here; larger ones (big cookies) go to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers served here; requests with more go to hyper.
const MAX_HEADERS: usize = 48;
/// Largest non-stream response body a stream route may answer with (its
/// errors are short JSON documents).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Most frames one write system call carries (three slices each when
/// chunked, well under the kernel's limit of 1024); more take another call.
const FRAMES_PER_WRITE: usize = 16;
/// What is left to write, if no more than this, is first gathered into one
/// buffer on the stack and written as one slice: for frames this small the
/// kernel's per-slice cost of a vectored write is more than the copy
/// (measured: docs/performance.md). Larger frames go out uncopied.
const COPY_AT_MOST: usize = 512;
/// Several frames taken together, if their bytes on the wire come to no
/// more than this, are copied into one buffer and written as one slice: a
/// burst of small frames is then one plain write (as many slices of a few
/// dozen bytes each cost the kernel more than the copy; measured:
/// docs/performance.md). The buffer is allocated for that write only.
const GATHER_AT_MOST: usize = 64 * 1024;

/// What the stream path reads and writes: a TCP socket, or a TLS stream on
/// one.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection for S {}

/// What became of the connection's first request.
pub enum Served<S = TcpStream> {
    /// The connection carried a stream and is finished.
    Stream,
    /// Not a stream request: serve the connection with hyper, with `read`,
    /// the bytes already read from `socket`, replayed first
    /// ([`StrictHeads::rewound`]). Handed back in pieces, not wrapped: the
    /// caller keeps this value in every connection's task, where a bigger
    /// one would cost every stream memory.
    Other { read: Vec<u8>, socket: S },
    /// The request head did not arrive within the header read timeout; the
    /// connection is closed.
    HeadTimeout,
}

/// Serves the connection if its first request opens a stream; otherwise
/// gives it back, with what was read, for hyper to serve.
pub async fn serve<S: Connection>(
    socket: S,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    is_stream_route: fn(&str) -> bool,
) -> Served<S> {
    match first_request(socket, header_read_timeout, is_stream_route).await {
        First::Stream(stream) => {
            stream.serve(peer, app).await;
            Served::Stream
        }
        First::Other { read, socket } => Served::Other { read, socket },
        First::HeadTimeout => Served::HeadTimeout,
        First::Gone => Served::Stream,
    }
}

/// What the first request of a connection is.
pub enum First<S = TcpStream> {
    /// A stream request, to be served with [`StreamRequest::serve`].
    Stream(Box<StreamRequest<S>>),
    /// Not a stream request: as [`Served::Other`].
    Other { read: Vec<u8>, socket: S },
    /// As [`Served::HeadTimeout`].
    HeadTimeout,
    /// The client went away (or the read failed) before its head was read.
    Gone,
}

/// A connection whose first request opens a stream, read but not yet
/// answered. It may be moved to another runtime first
/// ([`StreamRequest::detached`]).
pub struct StreamRequest<S = TcpStream> {
    socket: S,
    request: Request<Body>,
    version: Version,
}

/// Reads the first request head and decides who serves the connection.
pub async fn first_request<S: Connection>(
    mut socket: S,
    header_read_timeout: Duration,
    is_stream_route: fn(&str) -> bool,
) -> First<S> {
    let mut head = Vec::new();
    let read = tokio::time::timeout(header_read_timeout, read_head(&mut socket, &mut head)).await;
    let request = match read {
        // A client that does not send its request in time, or goes away, is
        // closed, as hyper would close it.
        Err(_) => return First::HeadTimeout,
        Ok(Err(_)) => return First::Gone,
        Ok(Ok(Some(len))) => parse(&head[..len], is_stream_route),
        Ok(Ok(None)) => None,
    };
    match request {
        // The request took what it needs: the head's buffer is dropped here
        // and does not live as long as the stream does.
        Some((request, version)) => First::Stream(Box::new(StreamRequest {
            socket,
            request,
            version,
        })),
        None => First::Other { read: head, socket },
    }
}

impl StreamRequest {
    /// The same request with its socket taken out of this runtime's
    /// reactor, to be served on another runtime
    /// ([`StreamRequest::registered`] there).
    pub fn detached(self) -> io::Result<StreamRequest<std::net::TcpStream>> {
        Ok(StreamRequest {
            socket: self.socket.into_std()?,
            request: self.request,
            version: self.version,
        })
    }
}

impl<S: Connection> StreamRequest<S> {
    /// Answers the request: the stream, frame by frame, until it ends or the
    /// client goes away; then the connection is closed.
    pub async fn serve(self, peer: SocketAddr, app: Router) {
        let StreamRequest {
            mut socket,
            mut request,
            version,
        } = self;
        request.extensions_mut().insert(ConnectInfo(peer));
        let response = match app.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        if let Err(error) = respond(&mut socket, response, version).await {
            tracing::debug!(%error, %peer, "stream connection ended with an error");
        }
        let _ = socket.shutdown().await;
    }
}

impl StreamRequest<std::net::TcpStream> {
    /// Registers the socket with the reactor of the runtime this is called
    /// on (see [`StreamRequest::detached`]).
    pub fn registered(self) -> io::Result<StreamRequest> {
        Ok(StreamRequest {
            socket: TcpStream::from_std(self.socket)?,
            request: self.request,
            version: self.version,
        })
    }
}

/// Reads until the request head is complete. `Ok(Some(len))`: the head is
/// `buf[..len]`; `Ok(None)`: not a request this module serves (not `GET`,
/// or the head grew past [`MAX_HEAD`]), leave it to hyper.
async fn read_head<S: Connection>(socket: &mut S, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
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
    // such heads (see strict_heads.rs), so they go the way that refuses them.
    if !strict_heads::head_is_strict(head) {
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

/// Writes the response: a stream frame by frame until it ends or the client
/// goes away, anything else (an error) whole.
async fn respond<S: Connection>(
    socket: &mut S,
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
    let written = head(&parts, None, chunked);
    // Nothing of the response head is needed while the stream lasts.
    drop(parts);
    socket.write_all(&written).await?;
    drop(written);
    let mut body = std::pin::pin!(body);
    loop {
        let Some(frame) = next_frame(body.as_mut(), socket).await else {
            // The client went away.
            return Ok(());
        };
        let Some(Ok(frame)) = frame else { break };
        let mut batch = Batch::Empty;
        batch.push(frame.into_data().ok());
        // Frames already queued go out in the same write.
        while let Some(Some(Ok(frame))) = body.frame().now_or_never() {
            batch.push(frame.into_data().ok());
        }
        write_frames(socket, batch, chunked).await?;
    }
    if chunked {
        socket.write_all(b"0\r\n\r\n").await?;
    }
    Ok(())
}

/// The body's next frame (`None` inside: the body ended), reading the
/// connection meanwhile so that a client closing its end is seen at once:
/// `None` when it did, or the read failed. What the client sends is
/// discarded; over TLS, reading also lets the TLS layer take what arrives.
async fn next_frame<S: Connection>(
    mut body: Pin<&mut Body>,
    socket: &mut S,
) -> Option<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
    let mut discard = [0u8; 64];
    std::future::poll_fn(|cx| {
        if let Poll::Ready(frame) = http_body::Body::poll_frame(body.as_mut(), cx) {
            return Poll::Ready(Some(frame));
        }
        loop {
            let mut buf = ReadBuf::new(&mut discard);
            match Pin::new(&mut *socket).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                Poll::Ready(_) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await
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

/// Frames taken from the body together, written in one go. One frame, the
/// usual case, is held as it is; only several take a vector of handles
/// (never copies of the frames). The batch lives only while it is written
/// and is about the size of the `Vec` the writer used to fill, so an idle
/// stream's task is no bigger than before.
enum Batch {
    Empty,
    One(Bytes),
    Many(Vec<Bytes>),
}

impl Batch {
    /// Adds a frame's data; an empty one is dropped (as a chunk it would
    /// end the body).
    fn push(&mut self, data: Option<Bytes>) {
        let Some(data) = data.filter(|d| !d.is_empty()) else {
            return;
        };
        *self = match std::mem::replace(self, Batch::Empty) {
            Batch::Empty => Batch::One(data),
            Batch::One(first) => Batch::Many(vec![first, data]),
            Batch::Many(mut frames) => {
                frames.push(data);
                Batch::Many(frames)
            }
        };
    }

    /// What is written: several frames whose bytes on the wire fit in
    /// [`GATHER_AT_MOST`] as one buffer, anything else as it is.
    fn into_write(self, chunked: bool) -> Write {
        let Batch::Many(frames) = self else {
            return Write::Frames(self);
        };
        let total: usize = frames.iter().map(|f| wire_len(f.len(), chunked)).sum();
        if total > GATHER_AT_MOST {
            return Write::Frames(Batch::Many(frames));
        }
        let mut out = Vec::with_capacity(total);
        for frame in &frames {
            if chunked {
                out.extend_from_slice(ChunkHeader::new(frame.len()).as_bytes());
            }
            out.extend_from_slice(frame);
            if chunked {
                out.extend_from_slice(b"\r\n");
            }
        }
        Write::Gathered(out)
    }

    fn frames(&self) -> &[Bytes] {
        match self {
            Batch::Empty => &[],
            Batch::One(frame) => std::slice::from_ref(frame),
            Batch::Many(frames) => frames,
        }
    }
}

/// A batch as it goes to the socket.
enum Write {
    /// Frames written uncopied (small leftovers through a stack buffer).
    Frames(Batch),
    /// Several small frames copied together, chunk framing included.
    Gathered(Vec<u8>),
}

/// A chunk-size line: the length in hex, then CR LF, on the stack.
struct ChunkHeader {
    buf: [u8; 18],
    len: usize,
}

impl ChunkHeader {
    const EMPTY: ChunkHeader = ChunkHeader {
        buf: [0; 18],
        len: 0,
    };

    fn new(length: usize) -> ChunkHeader {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        let (mut n, mut count) = (length as u64, 0);
        loop {
            digits[count] = HEX[(n & 0xf) as usize];
            count += 1;
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let mut header = ChunkHeader::EMPTY;
        for (slot, digit) in header.buf.iter_mut().zip(digits[..count].iter().rev()) {
            *slot = *digit;
        }
        header.buf[count..count + 2].copy_from_slice(b"\r\n");
        header.len = count + 2;
        header
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Writes the batch whole (each frame as one chunk if `chunked`) with
/// vectored writes of the frames themselves, uncopied. A write that takes
/// only part of the bytes is continued at the first byte it did not take.
fn write_frames<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: Batch,
    chunked: bool,
) -> WriteFrames<'_, W> {
    WriteFrames {
        writer,
        write: batch.into_write(chunked),
        chunked,
        written: 0,
    }
}

/// The future of [`write_frames`]: the batch and how many of its bytes
/// (chunk framing included) are written. The chunk headers are formatted
/// afresh for each system call rather than kept: they cost a few
/// instructions, and keeping them would enlarge every stream's state.
struct WriteFrames<'a, W> {
    writer: &'a mut W,
    write: Write,
    chunked: bool,
    written: usize,
}

impl<W: AsyncWrite + Unpin> Future for WriteFrames<'_, W> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let frames = match &this.write {
            Write::Frames(batch) => batch.frames(),
            Write::Gathered(bytes) => {
                while let Some(left) = bytes.get(this.written..).filter(|l| !l.is_empty()) {
                    match ready!(Pin::new(&mut *this.writer).poll_write(cx, left)) {
                        Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        Ok(n) => this.written += n,
                        Err(error) => return Poll::Ready(Err(error)),
                    }
                }
                return Poll::Ready(Ok(()));
            }
        };
        let chunked = this.chunked;
        loop {
            // Skip the frames written whole; this call carries the next ones.
            let (mut first, mut skip) = (0, this.written);
            while let Some(frame) = frames.get(first) {
                let len = wire_len(frame.len(), chunked);
                if skip < len {
                    break;
                }
                skip -= len;
                first += 1;
            }
            let pending = &frames[first..frames.len().min(first + FRAMES_PER_WRITE)];
            if pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let mut headers = [ChunkHeader::EMPTY; FRAMES_PER_WRITE];
            if chunked {
                for (header, frame) in headers.iter_mut().zip(pending) {
                    *header = ChunkHeader::new(frame.len());
                }
            }
            let mut slices = [IoSlice::new(&[]); 3 * FRAMES_PER_WRITE];
            let count = unwritten(&headers, pending, chunked, skip, &mut slices);
            let slices = &slices[..count];
            let mut small = [0u8; COPY_AT_MOST];
            let left: usize = slices.iter().map(|s| s.len()).sum();
            let writer = Pin::new(&mut *this.writer);
            let result = if left <= COPY_AT_MOST && slices.len() > 1 {
                let mut filled = 0;
                for slice in slices {
                    small[filled..filled + slice.len()].copy_from_slice(slice);
                    filled += slice.len();
                }
                ready!(writer.poll_write(cx, &small[..filled]))
            } else {
                ready!(writer.poll_write_vectored(cx, slices))
            };
            match result {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => this.written += n,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

/// Bytes a frame of `len` bytes takes on the wire.
fn wire_len(len: usize, chunked: bool) -> usize {
    if chunked {
        // The chunk-size line: one hex digit per started 4 bits (at least
        // one), then CR LF; counted, not formatted.
        let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
        digits + 2 + len + 2
    } else {
        len
    }
}

/// Fills `slices` with what remains of the frames (with their chunk headers
/// and CR LFs if `chunked`) after the first `written` bytes; returns how
/// many slices it filled.
fn unwritten<'a>(
    headers: &'a [ChunkHeader],
    frames: &'a [Bytes],
    chunked: bool,
    mut written: usize,
    slices: &mut [IoSlice<'a>],
) -> usize {
    let parts = frames.iter().zip(headers).flat_map(|(frame, header)| {
        let framing: [&[u8]; 2] = if chunked {
            [header.as_bytes(), b"\r\n"]
        } else {
            [&[], &[]]
        };
        [framing[0], &frame[..], framing[1]]
    });
    let mut count = 0;
    for part in parts {
        if written >= part.len() {
            written -= part.len();
            continue;
        }
        slices[count] = IoSlice::new(&part[written..]);
        written = 0;
        count += 1;
    }
    count
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

    fn batch(frames: &[Option<Bytes>]) -> Batch {
        let mut batch = Batch::Empty;
        for frame in frames {
            batch.push(frame.clone());
        }
        batch
    }

    fn written(frames: &[Option<Bytes>], chunked: bool) -> Vec<u8> {
        let mut out = Vec::new();
        futures_util::FutureExt::now_or_never(write_frames(&mut out, batch(frames), chunked))
            .expect("a Vec is always ready")
            .expect("a Vec takes every byte");
        out
    }

    #[test]
    fn chunks_carry_their_length_in_hex() {
        let out = written(
            &[Some(Bytes::from(vec![b'a'; 26])), Some(Bytes::new())],
            true,
        );
        assert_eq!(out, [&b"1a\r\n"[..], &[b'a'; 26], b"\r\n"].concat());
    }

    #[test]
    fn chunk_headers_are_hex_lengths() {
        for len in [
            0,
            1,
            15,
            16,
            255,
            256,
            4095,
            4096,
            65_535,
            1 << 20,
            usize::MAX >> 1,
        ] {
            assert_eq!(
                wire_len(len, true),
                ChunkHeader::new(len).len + len + 2,
                "{len}"
            );
        }
        for (length, header) in [
            (1, &b"1\r\n"[..]),
            (15, b"f\r\n"),
            (16, b"10\r\n"),
            (0xabc, b"abc\r\n"),
            (usize::MAX, b"ffffffffffffffff\r\n"),
        ] {
            assert_eq!(ChunkHeader::new(length).as_bytes(), header);
        }
    }

    #[test]
    fn frames_without_chunking_are_written_as_they_are() {
        let frames = [
            Some(Bytes::from_static(b"data: a\n\n")),
            None,
            Some(Bytes::from_static(b"data: b\n\n")),
        ];
        assert_eq!(written(&frames, false), b"data: a\n\ndata: b\n\n");
    }

    /// Takes at most `per_call` bytes per write, and is not ready every
    /// other call: a writer as slow as a full socket.
    struct Trickle {
        out: Vec<u8>,
        per_call: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            if this.calls.is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let mut room = this.per_call;
            for buf in bufs {
                let n = buf.len().min(room);
                this.out.extend_from_slice(&buf[..n]);
                room -= n;
            }
            Poll::Ready(Ok(this.per_call - room))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_partial_vectored_write_continues_where_it_stopped() {
        let frames = [
            Some(Bytes::from_static(b"id: 1\ndata: first\n\n")),
            Some(Bytes::from(vec![b'x'; 300])),
            Some(Bytes::from_static(b"data: z\n\n")),
        ];
        // More frames than one system call carries, to cross that boundary
        // too.
        let many: Vec<_> = (0..2 * FRAMES_PER_WRITE + 3)
            .map(|i| Some(Bytes::from(format!("data: {i}\n\n"))))
            .collect();
        let big = [
            Some(Bytes::from(vec![b'y'; 3 * COPY_AT_MOST])),
            Some(Bytes::from_static(b"data: after\n\n")),
        ];
        // Too much to gather into one buffer: written uncopied.
        let huge = [
            Some(Bytes::from(vec![b'h'; GATHER_AT_MOST / 2])),
            Some(Bytes::from_static(b"data: between\n\n")),
            Some(Bytes::from(vec![b'i'; GATHER_AT_MOST / 2])),
        ];
        assert!(matches!(
            batch(&huge).into_write(true),
            Write::Frames(Batch::Many(_))
        ));
        assert!(matches!(batch(&many).into_write(true), Write::Gathered(_)));
        for frames in [&frames[..], &frames[..1], &many, &big, &huge] {
            for chunked in [true, false] {
                let whole = written(frames, chunked);
                for per_call in [1, 2, 3, 5, 7, 64, 1000] {
                    let mut trickle = Trickle {
                        out: Vec::new(),
                        per_call,
                        calls: 0,
                    };
                    write_frames(&mut trickle, batch(frames), chunked)
                        .await
                        .expect("every byte is taken in the end");
                    assert_eq!(
                        trickle.out, whole,
                        "{per_call} bytes per write, chunked: {chunked}"
                    );
                }
            }
        }
        let expected = [
            &b"13\r\nid: 1\ndata: first\n\n\r\n"[..],
            b"12c\r\n",
            &[b'x'; 300],
            b"\r\n9\r\ndata: z\n\n\r\n",
        ]
        .concat();
        assert_eq!(written(&frames, true), expected);
        let expected: Vec<u8> = many.iter().flatten().flat_map(|f| f.to_vec()).collect();
        assert_eq!(written(&many, false), expected);
    }
}
