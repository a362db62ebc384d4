//! Serving one accepted connection once the accept loop has chosen its
//! path: hyper's HTTP/1.1 behind the strict-heads filter, TLS (handshake in
//! the connection's own task, bounded in time and abandoned on shutdown,
//! then HTTP/2 if ALPN chose `h2`, else HTTP/1.1, whose streams take the
//! lean path of `stream_path.rs` as plain ones do), and h2c (the first bytes
//! peeked, never read: the HTTP/2 preface gets HTTP/2, anything else the
//! same HTTP/1.1 path as without h2c). Every request gets the peer's
//! address for the handlers that check where it came from; a connection
//! hyper ends for a limit is counted in the metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::http::is_stream_route;
use crate::limits::Limit;
use crate::transport::stream_path::{self, Served};
use crate::transport::strict_heads::StrictHeads;
use crate::transport::tls::ALPN_H2;
use pushwire_core::hub::Hub;

/// What the per-connection tasks of the TLS and h2c paths share.
pub(crate) struct Protocols {
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
    /// Bounds the TLS handshake and the wait for the first bytes (h2c).
    pub(crate) first_bytes_timeout: Duration,
    /// Where connections ended for a limit are counted.
    pub(crate) hub: Arc<Hub>,
}

/// The first bytes an HTTP/2 client sends (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Counts a connection hyper ended for a limit: a head over twice
/// `--max-header-bytes` (hyper answered 431), or headers not complete within
/// `--header-read-timeout` (which also ends keep-alive connections left idle
/// that long).
pub(crate) fn count_refusal(hub: &Hub, error: &hyper::Error) {
    if error.is_parse_too_large() {
        hub.metrics().limit_rejected(Limit::HeaderSize);
    } else if error.is_timeout() {
        hub.metrics().limit_rejected(Limit::HeaderReadTimeout);
    }
}

/// The service of one connection: the router, with the peer's address for
/// the handlers that check where a request came from.
pub(crate) fn connection_service(
    app: Router,
    peer: SocketAddr,
) -> impl hyper::service::Service<
    http::Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = tower::util::Oneshot<Router, http::Request<Incoming>>,
> {
    hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    })
}

/// Serves one TLS connection: handshake (bounded in time, abandoned on
/// shutdown), then HTTP/2 if ALPN chose `h2`, else HTTP/1.1.
pub(crate) async fn serve_tls(
    socket: TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    protocols: &Protocols,
    app: Router,
    watcher: Watcher,
    stop: &CancellationToken,
) {
    let Some(stream) = before_first_request(
        acceptor.accept(socket),
        protocols,
        stop,
        peer,
        ("TLS handshake failed", "TLS handshake timed out"),
    )
    .await
    else {
        return;
    };
    if stream.get_ref().1.alpn_protocol() == Some(ALPN_H2) {
        return serve_http2(stream, peer, protocols, app, watcher).await;
    }
    serve_first_http1(stream, peer, protocols, app, watcher).await;
}

/// What must happen before a connection's first request (a TLS handshake,
/// the peek at the HTTP/2 preface), bounded by the header read timeout and
/// abandoned on shutdown. `None`, with a debug line, when it failed, timed
/// out or the hub is stopping.
async fn before_first_request<T, E: std::fmt::Display>(
    step: impl std::future::Future<Output = Result<T, E>>,
    protocols: &Protocols,
    stop: &CancellationToken,
    peer: SocketAddr,
    (failed, timed_out): (&'static str, &'static str),
) -> Option<T> {
    let bounded = tokio::time::timeout(protocols.first_bytes_timeout, step);
    tokio::select! {
        _ = stop.cancelled() => None,
        done = bounded => match done {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                tracing::debug!(%error, %peer, "{failed}");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "{timed_out}");
                None
            }
        },
    }
}

/// Serves one plain-text connection with `--h2c`: HTTP/2 when it starts
/// with the HTTP/2 preface, HTTP/1.1 otherwise.
pub(crate) async fn serve_h2c(
    socket: TcpStream,
    peer: SocketAddr,
    protocols: &Protocols,
    app: Router,
    watcher: Watcher,
    stop: &CancellationToken,
) {
    let Some(h2) = before_first_request(
        h2_preface(&socket),
        protocols,
        stop,
        peer,
        (
            "connection failed before its first request",
            "no request within the header read timeout",
        ),
    )
    .await
    else {
        return;
    };
    if h2 {
        return serve_http2(socket, peer, protocols, app, watcher).await;
    }
    serve_first_http1(socket, peer, protocols, app, watcher).await;
}

/// Serves an HTTP/1.1 connection whose first request may open a stream:
/// a stream on the lean path of `stream_path.rs`, anything else with hyper.
async fn serve_first_http1<I: stream_path::Connection + 'static>(
    io: I,
    peer: SocketAddr,
    protocols: &Protocols,
    app: Router,
    watcher: Watcher,
) {
    let timeout = protocols.first_bytes_timeout;
    match stream_path::serve(io, peer, app.clone(), timeout, is_stream_route).await {
        Served::Stream => {}
        Served::HeadTimeout => {
            let limit = Limit::HeaderReadTimeout;
            protocols.hub.metrics().limit_rejected(limit);
        }
        Served::Other { read, socket } => {
            let io = StrictHeads::rewound(read, socket);
            serve_http1(io, peer, protocols, app, watcher).await
        }
    }
}

/// Serves an HTTP/2 connection (ALPN `h2`, or the h2c preface).
pub(crate) async fn serve_http2<I>(
    io: I,
    peer: SocketAddr,
    protocols: &Protocols,
    app: Router,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = connection_service(app, peer);
    let result = watcher
        .watch(protocols.http2.serve_connection(TokioIo::new(io), service))
        .await;
    if let Err(error) = result {
        count_refusal(&protocols.hub, &error);
        tracing::debug!(%error, %peer, h2 = true, "connection ended with an error");
    }
}

/// Serves an HTTP/1.1 connection with hyper, its reads checked for strict
/// heads (and any bytes already read replayed first).
pub(crate) async fn serve_http1<I>(
    io: StrictHeads<I>,
    peer: SocketAddr,
    protocols: &Protocols,
    app: Router,
    watcher: Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = connection_service(app, peer);
    let result = watcher
        .watch(protocols.http1.serve_connection(TokioIo::new(io), service))
        .await;
    if let Err(error) = result {
        count_refusal(&protocols.hub, &error);
        tracing::debug!(%error, %peer, h2 = false, "connection ended with an error");
    }
}

/// Whether the connection starts with the HTTP/2 preface. Peeks, so the
/// bytes stay for whichever protocol then reads them; returns as soon as
/// they differ from the preface (the first byte, for any HTTP/1 method but
/// `P…`).
pub(crate) async fn h2_preface(socket: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = socket.peek(&mut buf).await?;
        if n == 0 || buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A prefix of the preface: peeking again would return at once, so
        // give the rest of it time to arrive.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
