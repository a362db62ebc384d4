//! The accept loop and shutdown; each accepted connection is served by
//! `transport/connection.rs` (TLS, h2c, hyper) or, for a plain HTTP/1.1
//! stream, by `transport/stream_path.rs`.
//!
//! We serve connections ourselves on hyper's HTTP/1 builder instead of
//! `axum::serve`: it costs less memory per open stream, lets us set the
//! header read timeout, and lets shutdown end streams on purpose.
//!
//! Other protocols are opt-in and cost nothing when off:
//! - TLS (`--tls-cert`/`--tls-key`): the handshake runs in the connection's
//!   own task, bounded by the header read timeout; ALPN `h2` gets hyper's
//!   HTTP/2 server, anything else HTTP/1.1. Many streams then share one
//!   connection, which lifts browsers' six-connections-per-host limit.
//! - h2c (`--h2c`): the connection's first bytes are peeked (not read); the
//!   HTTP/2 preface gets HTTP/2, anything else the same HTTP/1 path as
//!   without it.
//!
//! Every HTTP/1.1 connection reads through [`StrictHeads`]: a request head
//! whose lines do not end with CR LF closes it (see [`crate::transport::strict_heads`]).
//!
//! Plain HTTP/1.1 streams run on a runtime of their own ([`Streams`]),
//! with the fanout stage that feeds them; the accept loop, hyper's
//! connections (publishes, the API) and everything else run on the
//! runtime the server was started on. A burst of events wakes thousands of
//! stream tasks at once, and in one runtime a publish waiting for its
//! commit was woken behind all of them (tokio's queues are first in, first
//! out): its answer waited for the fanout of the events before it. With
//! two runtimes the operating system's scheduler shares the cores between
//! them, and a publish is answered as soon as it is stored.
//!
//! Shutdown: `/readyz` turns to 503 at once and, for `--drain-delay`,
//! everything else is still served; then stop accepting, end every stream
//! (clients reconnect, to another node or to this one once it is back, and
//! resume from `Last-Event-ID`), let in-flight requests finish within the
//! grace period, return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{App, AppError};
use crate::config::ServeConfig;
use crate::engines::redis::presence::Cluster;
use crate::http::is_stream_route;
use crate::limits::Limit;
use crate::transport::connection::{
    connection_service, count_refusal, serve_h2c, serve_tls, Protocols,
};
use crate::transport::stream_path::{self, First};
use crate::transport::strict_heads::StrictHeads;
use crate::transport::tls::{Tls, TlsError};
use pushwire_core::hub::Hub;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The configuration could not be built into a running hub: the
    /// history, the certificate or a token key (see [`AppError`]).
    #[error(transparent)]
    App(#[from] AppError),
    #[error("cannot start the streams' threads")]
    Runtime {
        #[source]
        source: std::io::Error,
    },
}

/// A running hub.
pub struct Server {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    hub: Arc<Hub>,
    stop: CancellationToken,
    task: JoinHandle<()>,
    tls: Option<Arc<Tls>>,
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the `--metrics-listen` listener, as bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The TLS configuration, when the hub serves HTTPS: its
    /// [`reload`](Tls::reload) reads the certificate and key files again for
    /// connections accepted afterwards (what SIGHUP does).
    pub fn tls(&self) -> Option<&Arc<Tls>> {
        self.tls.as_ref()
    }

    /// Reads the certificate and key files again; see [`Tls::reload`].
    /// Without TLS there is nothing to reload and this does nothing.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        match &self.tls {
            Some(tls) => tls.reload(),
            None => Ok(()),
        }
    }

    /// A token that stops the server when cancelled.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops the server and waits until it has shut down.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Waits until the server has stopped (after its stop token is cancelled).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// The runtime of the plain HTTP/1.1 streams and the fanout stage (see the
/// module documentation), and the streams' tasks on it. Dropping it ends
/// whatever still runs there, without waiting, from any context.
struct Streams {
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    tasks: TaskTracker,
}

impl Streams {
    /// The runtime, its threads `nice` steps nicer than the thread that
    /// starts them (`--streams-nice`).
    fn new(nice: u8) -> std::io::Result<Streams> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("pushwire-streams")
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()?;
        Ok(Streams {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            tasks: TaskTracker::new(),
        })
    }

    /// Waits, at most until `deadline`, for the streams to finish.
    async fn settle(&self, deadline: tokio::time::Instant) {
        self.tasks.close();
        let _ = tokio::time::timeout_at(deadline, self.tasks.wait()).await;
    }
}

/// Makes the calling thread `by` steps nicer (at most 19), which any thread
/// may do. On Linux a niceness set for a thread id is that thread's alone.
fn lower_priority(by: u8) {
    if by == 0 {
        return;
    }
    let thread = rustix::thread::gettid();
    let result = rustix::process::getpriority_process(Some(thread)).and_then(|now| {
        rustix::process::setpriority_process(Some(thread), (now + i32::from(by)).min(19))
    });
    if let Err(error) = result {
        tracing::warn!(%error, "cannot lower the priority of a stream thread");
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Most connections waiting to be accepted. A mass reconnect after a
/// deploy or a network blip brings them all at once; the kernel caps the
/// figure at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listener and starts serving in the background.
pub async fn start(config: ServeConfig) -> Result<Server, ServerError> {
    // The port first: when it is taken, nothing else (the data dir, the
    // history file) is created. The configuration itself was checked when
    // it was read; what remains to refuse (history, TLS files, keys) only
    // holds the port for the moment it takes to say so.
    let listener = bind(config.listen).map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(
            bind(at)
                .and_then(|l| Ok((l.local_addr()?, l)))
                .map_err(|source| ServerError::Bind { addr: at, source })?,
        ),
        None => None,
    };
    let streams =
        Streams::new(config.streams_nice).map_err(|source| ServerError::Runtime { source })?;
    let App {
        hub,
        cluster,
        tls,
        router: app,
        verifier,
        webhooks,
    } = App::build(&config, &streams.handle)?;
    // Before serving, so that the first tokens find their keys; a set that
    // cannot be fetched delays the start by at most the fetch timeout.
    verifier.start_key_sets(hub.metrics().clone()).await;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let stop = CancellationToken::new();
    // Scrapes are answered through the drain and the shutdown, until the
    // server has stopped.
    let scrapes_end = CancellationToken::new();
    let metrics_addr = metrics_listener.map(|(addr, listener)| {
        serve_metrics(listener, addr, hub.clone(), scrapes_end.clone());
        addr
    });
    let serving = run(
        listener,
        app,
        hub.clone(),
        Companions {
            cluster,
            webhooks,
            streams,
        },
        config,
        tls.clone(),
        stop.clone(),
    );
    let task = tokio::spawn(async move {
        serving.await;
        scrapes_end.cancel();
    });
    Ok(Server {
        addr,
        metrics_addr,
        hub,
        stop,
        task,
        tls,
    })
}

/// A listening socket with address reuse (a restarted hub binds while the
/// old connections linger in TIME_WAIT) and [`LISTEN_BACKLOG`].
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `/metrics` on the `--metrics-listen` socket until `stop`. A
/// scrape is one short request: axum's own server is enough, with none of
/// the stream path's care.
fn serve_metrics(listener: TcpListener, addr: SocketAddr, hub: Arc<Hub>, stop: CancellationToken) {
    let router = crate::http::metrics_router(hub);
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, %addr, "the metrics listener stopped");
        }
    });
}

/// What runs beside the accept loop until the stop: the streams' runtime,
/// a cluster node's presence and the webhooks' sender.
struct Companions {
    streams: Streams,
    cluster: Option<Arc<Cluster>>,
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

async fn run(
    listener: TcpListener,
    app: Router,
    hub: Arc<Hub>,
    Companions {
        cluster,
        webhooks,
        streams,
    }: Companions,
    config: ServeConfig,
    tls: Option<Arc<Tls>>,
    requested: CancellationToken,
) {
    // A stop request first drains: readiness turns to 503 at once, while
    // everything is still served for --drain-delay; only then does `stop`,
    // which everything below follows, end streams and connections.
    let stop = CancellationToken::new();
    {
        let (hub, stop, delay) = (hub.clone(), stop.clone(), config.drain_delay);
        tokio::spawn(async move {
            requested.cancelled().await;
            hub.begin_draining();
            if !delay.is_zero() {
                tracing::info!(?delay, "draining: /readyz answers 503 before streams end");
                tokio::time::sleep(delay).await;
            }
            stop.cancel();
        });
    }
    let maintenance = {
        let hub = hub.clone();
        let stop = stop.clone();
        tokio::spawn(async move { hub.run_maintenance(config.heartbeat, stop).await })
    };
    let presence =
        cluster.map(|cluster| tokio::spawn(cluster.run(Arc::downgrade(&hub), stop.clone())));
    let sender =
        webhooks.map(|webhooks| tokio::spawn(webhooks.run(Arc::downgrade(&hub), stop.clone())));
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let mut http = http1::Builder::new();
    // The router answers heads over --max-header-bytes with a JSON 431;
    // hyper stops reading at twice that, so a client cannot make the hub
    // buffer more (and gets hyper's bare 431).
    let head_ceiling = config.max_header_bytes.saturating_mul(2);
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_header_size(head_ceiling)
        .keep_alive(true);
    // Only the TLS and h2c paths need more than the HTTP/1 builder.
    let protocols = (tls.is_some() || config.h2c).then(|| {
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.h2_max_streams)
            .max_header_list_size(u32::try_from(head_ceiling).unwrap_or(u32::MAX));
        Arc::new(Protocols {
            http1: http.clone(),
            http2,
            first_bytes_timeout: config.header_read_timeout,
            hub: hub.clone(),
        })
    });

    loop {
        let (socket, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors (or a transient error): back off
                    // instead of spinning; pending connections wait in the backlog.
                    hub.metrics().connections_refused.inc();
                    tracing::warn!(%error, "accept failed; pausing accepts for 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            hub.metrics().connections_refused.inc();
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let app = app.clone();
        let Some(protocols) = &protocols else {
            // Plain HTTP/1.1, the default: streams on the lean path of
            // transport/stream_path.rs, every other request on hyper.
            let (http, watcher) = (http.clone(), graceful.watcher());
            let header_read_timeout = config.header_read_timeout;
            let hub = hub.clone();
            let (handle, tasks) = (streams.handle.clone(), streams.tasks.clone());
            tokio::spawn(async move {
                let first =
                    stream_path::first_request(socket, header_read_timeout, is_stream_route).await;
                match first {
                    First::Stream(request) => {
                        // Served on the streams' runtime, which then holds
                        // the connection's permit.
                        if let Ok(request) = request.detached() {
                            tasks.spawn_on(
                                async move {
                                    if let Ok(request) = request.registered() {
                                        request.serve(peer, app).await;
                                    }
                                    drop(permit);
                                },
                                &handle,
                            );
                        }
                        return;
                    }
                    First::Gone => {}
                    First::HeadTimeout => hub.metrics().limit_rejected(Limit::HeaderReadTimeout),
                    First::Other { read, socket } => {
                        let service = connection_service(app, peer);
                        let io = TokioIo::new(StrictHeads::rewound(read, socket));
                        let connection = watcher.watch(http.serve_connection(io, service));
                        if let Err(error) = connection.await {
                            count_refusal(&hub, &error);
                            tracing::debug!(%error, %peer, "connection ended with an error");
                        }
                    }
                }
                drop(permit);
            });
            continue;
        };
        let protocols = protocols.clone();
        let watcher = graceful.watcher();
        let stop = stop.clone();
        match &tls {
            Some(tls) => {
                let acceptor = tls.acceptor();
                tokio::spawn(async move {
                    serve_tls(socket, peer, acceptor, &protocols, app, watcher, &stop).await;
                    drop(permit);
                });
            }
            None => {
                tokio::spawn(async move {
                    serve_h2c(socket, peer, &protocols, app, watcher, &stop).await;
                    drop(permit);
                });
            }
        }
    }

    drop(listener);
    tracing::info!("shutting down: ending streams");
    hub.end_all_streams();
    let deadline = tokio::time::Instant::now() + config.shutdown_grace;
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?config.shutdown_grace,
            "connections still open after the grace period; closing them"
        );
    }
    streams.settle(deadline).await;
    let _ = maintenance.await;
    if let Some(presence) = presence {
        let _ = presence.await;
    }
    if let Some(sender) = sender {
        let _ = sender.await;
    }
}
