//! The accept loop and shutdown.
//!
//! We serve connections ourselves on hyper's HTTP/1 builder instead of
//! `axum::serve`: it costs less memory per open stream, lets us set the
//! header read timeout, and lets shutdown end streams on purpose.
//!
//! Shutdown: stop accepting, end every stream (clients reconnect, to another
//! node or to this one once it is back, and resume from `Last-Event-ID`),
//! let in-flight requests finish within the grace period, return.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::PublisherPolicy;
use crate::config::{ServeConfig, Storage};
use crate::http::{router, AppState};
use crate::hub::{Hub, HubConfig};
use crate::metrics::Metrics;
use crate::store::embedded::EmbeddedLog;
use crate::store::memory::MemoryLog;
use crate::store::{EventLog, Retention, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The history could not be opened; its message names the file.
    #[error(transparent)]
    Storage(#[from] StoreError),
}

/// A running hub.
pub struct Server {
    addr: SocketAddr,
    hub: Arc<Hub>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
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

/// Builds the core from the configuration. Fails when the history cannot
/// be opened.
pub fn build_hub(config: &ServeConfig) -> Result<Arc<Hub>, ServerError> {
    let hub_config = HubConfig {
        queue_capacity: config.queue_capacity,
        retry_ms: config.retry.as_millis() as u64,
        max_streams: config.max_streams,
        stream_lifetime: config.stream_timeout,
    };
    let retention = Retention {
        max_events: config.history_max_events,
        max_age: config.history_max_age,
    };
    let hub = Hub::new(hub_config, Arc::new(Metrics::new()), |fanout| {
        Ok::<Arc<dyn EventLog>, StoreError>(match config.storage {
            Storage::Embedded => Arc::new(EmbeddedLog::open(
                &config.data_dir,
                retention,
                config.fsync,
                fanout,
            )?),
            Storage::Memory => Arc::new(MemoryLog::new(retention, fanout)),
        })
    })?;
    Ok(Arc::new(hub))
}

/// Binds the listener and starts serving in the background.
pub async fn start(config: ServeConfig) -> Result<Server, ServerError> {
    // The history first: a hub that cannot open it does not take the port.
    let hub = build_hub(&config)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let state = Arc::new(AppState {
        hub: hub.clone(),
        policy: PublisherPolicy::new(config.publisher_key.clone()),
        max_body: config.max_body,
    });
    let app = router(state, &config);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(listener, app, hub.clone(), config, stop.clone()));
    Ok(Server {
        addr,
        hub,
        stop,
        task,
    })
}

async fn run(
    listener: TcpListener,
    app: Router,
    hub: Arc<Hub>,
    config: ServeConfig,
    stop: CancellationToken,
) {
    let maintenance = {
        let hub = hub.clone();
        let stop = stop.clone();
        tokio::spawn(async move { hub.run_maintenance(config.heartbeat, stop).await })
    };
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .keep_alive(true);

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
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(req)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(socket), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }

    drop(listener);
    tracing::info!("shutting down: ending streams");
    hub.end_all_streams();
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?config.shutdown_grace,
            "connections still open after the grace period; closing them"
        );
    }
    let _ = maintenance.await;
}
