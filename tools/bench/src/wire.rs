//! The bench's own HTTP/1.1 plumbing, written on raw TCP so that it costs
//! little per connection and measures the hub, not a client library:
//! opening an event stream from a chosen loopback source address, decoding
//! a chunked body as it arrives, and reading one response of a keep-alive
//! connection without consuming the next.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub fn loopback(octet: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, octet))
}

/// How a response body is framed.
pub enum Framing {
    /// Until the connection closes.
    Identity,
    Chunked(Chunk),
}

#[derive(Clone, Copy)]
pub enum Chunk {
    Size {
        size: usize,
        extension: bool,
    },
    SizeLf {
        size: usize,
    },
    Data {
        left: usize,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    Trailer,
    TrailerLine,
    TrailerLf,
    Done,
}

impl Framing {
    /// Appends the body bytes in `input` to `out`; `Ok(false)` once the body ended.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> anyhow::Result<bool> {
        let chunk = match self {
            Framing::Identity => {
                out.extend_from_slice(input);
                return Ok(true);
            }
            Framing::Chunked(chunk) => chunk,
        };
        while let Some((&b, rest)) = input.split_first() {
            *chunk = match *chunk {
                Chunk::Data { left } => {
                    let take = left.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if left == take {
                        Chunk::DataCr
                    } else {
                        Chunk::Data { left: left - take }
                    }
                }
                Chunk::Done => return Ok(false),
                state => {
                    input = rest;
                    match (state, b) {
                        (Chunk::Size { size, .. }, b'\r') => Chunk::SizeLf { size },
                        (Chunk::Size { size, .. } | Chunk::SizeLf { size }, b'\n') => {
                            if size == 0 {
                                Chunk::Trailer
                            } else {
                                Chunk::Data { left: size }
                            }
                        }
                        (Chunk::Size { size, .. }, b';') => Chunk::Size {
                            size,
                            extension: true,
                        },
                        (
                            Chunk::Size {
                                extension: true, ..
                            },
                            _,
                        ) => state,
                        (Chunk::Size { size, .. }, _) => {
                            let digit = (b as char).to_digit(16).context("bad chunk size")?;
                            Chunk::Size {
                                size: size
                                    .checked_mul(16)
                                    .and_then(|s| s.checked_add(digit as usize))
                                    .context("chunk too large")?,
                                extension: false,
                            }
                        }
                        (Chunk::DataCr, b'\r') => Chunk::DataLf,
                        (Chunk::DataCr | Chunk::DataLf, b'\n') => Chunk::Size {
                            size: 0,
                            extension: false,
                        },
                        (Chunk::Trailer, b'\r') => Chunk::TrailerLf,
                        (Chunk::Trailer | Chunk::TrailerLf, b'\n') => Chunk::Done,
                        (Chunk::TrailerLine, b'\n') => Chunk::Trailer,
                        (Chunk::Trailer | Chunk::TrailerLine, _) => Chunk::TrailerLine,
                        _ => bail!("bad chunked framing"),
                    }
                }
            };
        }
        Ok(!matches!(chunk, Chunk::Done))
    }
}

/// An open event stream: the connection, its framing, and whatever arrived
/// after the headers in the same read.
pub struct SseStream {
    pub stream: TcpStream,
    pub framing: Framing,
    pub leftover: Vec<u8>,
}

/// Position of the blank line ending an HTTP head.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// The value of a header in an HTTP head.
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Opens one stream from `source` and returns once its headers arrived.
pub async fn open_sse(hub: SocketAddr, source: IpAddr, path: &str) -> anyhow::Result<SseStream> {
    let socket = if hub.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // Several source addresses give a loopback run more than one range of
    // ephemeral ports; a remote hub is reached from the host's own address.
    if hub.ip().is_loopback() && hub.is_ipv4() {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let mut stream = socket.connect(hub).await?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {hub}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let end = loop {
        if let Some(end) = head_end(&head) {
            break end;
        }
        if head.len() > 64 * 1024 {
            bail!("response head too large");
        }
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            bail!("closed before headers");
        }
        head.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        bail!("{}", text.lines().next().unwrap_or(""));
    }
    let chunked = header(&text, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let framing = if chunked {
        Framing::Chunked(Chunk::Size {
            size: 0,
            extension: false,
        })
    } else {
        Framing::Identity
    };
    Ok(SseStream {
        stream,
        framing,
        leftover: head.split_off(end + 4),
    })
}

/// One HTTP/1.1 response.
pub struct Response {
    pub status: u16,
    /// The server will close the connection after it.
    pub close: bool,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 response (Content-Length, chunked, or up to the close).
pub async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Response> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(end) = head_end(buf) {
            break end;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end])?.to_owned();
    buf.drain(..end + 4);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let chunked = header(&head, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let length: Option<usize> = header(&head, "content-length").and_then(|v| v.parse().ok());
    let mut body = Vec::new();
    if let Some(length) = length.filter(|_| !chunked) {
        while buf.len() < length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-response");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        body.extend(buf.drain(..length));
    } else if chunked {
        let mut framing = Framing::Chunked(Chunk::Size {
            size: 0,
            extension: false,
        });
        // Feed byte by byte what is buffered, so that bytes of a next
        // response stay in `buf`.
        loop {
            let mut ended = false;
            let mut used = 0;
            for &b in buf.iter() {
                used += 1;
                if !framing.feed(&[b], &mut body)? {
                    ended = true;
                    break;
                }
            }
            buf.drain(..used);
            if ended {
                break;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("connection closed mid-response");
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.append(buf);
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        return Ok(Response {
            status,
            close: true,
            body,
        });
    }
    Ok(Response {
        status,
        close,
        body,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chunked() -> Framing {
        Framing::Chunked(Chunk::Size {
            size: 0,
            extension: false,
        })
    }

    #[test]
    fn chunked_body_decodes_across_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..wire.len() {
            let mut framing = chunked();
            let mut out = Vec::new();
            let open = framing.feed(&wire[..split], &mut out).unwrap();
            let open = open && framing.feed(&wire[split..], &mut out).unwrap();
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(!open);
        }
    }
}
