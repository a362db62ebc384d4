//! The Redis engine: a history shared by every node of a cluster, in one
//! Redis Stream (`<prefix>:events`, see docs/cluster.md), and each node's
//! share of the cluster's presence.
//!
//! Its parts, one file each:
//! - `log.rs`: [`RedisLog`], the [`EventLog`](pushwire_core::log::EventLog)
//!   on the stream: sequence numbers are the entry ids `0-<seq>`, and every
//!   write is one atomic Lua script (append, trim, bounds);
//! - `tail.rs`: each node's tail, which follows the stream in order and
//!   hands each batch to the hub's fanout, notices any gap and reconnects;
//!   live delivery happens there, not in `append`;
//! - [`presence`]: who is online anywhere and how many streams are open,
//!   each node's share in Redis under a TTL (the core's `Peers`).
//!
//! - [`sentinel`]: finding the primary through Redis Sentinel.
//!
//! This file holds what they share: the [`Keys`] of one cluster, all under
//! one prefix, and the [`RedisNode`] that talks to Redis, with its
//! connection settings. With sentinels, the node asks them for the primary
//! before its first command and again whenever a command to the primary
//! fails or answers `READONLY`; when they name another server, the shared
//! connection is replaced and the tail reconnects to it (see
//! docs/cluster.md). A hub whose Redis is down starts anyway: the
//! shared connection connects lazily and fails fast (one attempt per
//! request, every command bounded by [`COMMAND_TIMEOUT`]), so what needs
//! Redis gets 503 instead of waiting, and the next request tries again.
//! Nodes ask each other to close a user's streams through
//! `<prefix>:control` ([`request_close`]), which every tail also follows.

mod log;
pub mod presence;
pub mod sentinel;
mod tail;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Client, ConnectionInfo, ErrorKind, IntoConnectionInfo, RedisError,
    ServerErrorKind, Value,
};

use pushwire_core::log::StoreError;

pub use log::RedisLog;
use sentinel::{Address, Sentinels};

/// Every command on the shared connection answers within this, or the
/// request fails with 503: a publish waits no longer while Redis is gone.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// With sentinels, the least time between two resolutions of the primary.
const REDISCOVER_EVERY: Duration = Duration::from_millis(200);
/// With `--redis-replicas-ack`, how many appends may wait for the
/// replicas at once (each on a connection of its own).
const ACK_CONNECTIONS: usize = 8;
/// The control stream keeps about this many entries.
const CONTROL_MAXLEN: usize = 1000;

/// The Redis keys of one cluster, all under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// The event stream.
    pub events: String,
    /// Publisher-supplied id → sequence number, for retained events.
    pub ids: String,
    /// Requests between nodes (close a user's streams).
    pub control: String,
    /// Node id → time of its last full presence write (milliseconds).
    pub nodes: String,
    /// A random value the first append of a history sets: if it changes,
    /// the history was lost and started over.
    pub epoch: String,
    /// The tag of the newest event retention removed (see log.rs).
    pub boundary: String,
    /// User → last-seen cursor, `<seq>:<tag>` (see log.rs).
    pub seen: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
            events: format!("{prefix}:events"),
            ids: format!("{prefix}:ids"),
            control: format!("{prefix}:control"),
            nodes: format!("{prefix}:nodes"),
            epoch: format!("{prefix}:epoch"),
            boundary: format!("{prefix}:boundary"),
            seen: format!("{prefix}:seen"),
        }
    }

    /// A key of its own under the prefix (`<prefix>:<name>`), for parts
    /// beside the history such as the webhook outbox.
    pub fn named(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// One node's users (user → open streams).
    pub fn node_users(&self, node: &str) -> String {
        format!("{}:node:{node}:users", self.prefix)
    }

    /// One node's topics (topic → open streams).
    pub fn node_topics(&self, node: &str) -> String {
        format!("{}:node:{node}:topics", self.prefix)
    }

    /// One node's figures (streams, counters).
    pub fn node_stats(&self, node: &str) -> String {
        format!("{}:node:{node}:stats", self.prefix)
    }
}

/// What a node needs to talk to the cluster's Redis: the primary it talks
/// to now, the keys and this node's id.
#[derive(Clone)]
pub struct RedisNode {
    link: Arc<Link>,
    pub keys: Arc<Keys>,
    /// Unique per process start (uuid v4).
    pub node: Arc<str>,
    /// `--redis-replicas-ack`: replicas that must have taken a write
    /// before a publish is acknowledged (0: the primary alone).
    pub replicas_ack: usize,
}

/// Where the primary is and the connection to it. With sentinels the
/// connection is replaced when they name another primary; without, it is
/// the one of `--redis-url` for the life of the node.
struct Link {
    /// The settings of `--redis-url` (database, user, password; with
    /// sentinels its address is not used).
    base: ConnectionInfo,
    sentinels: Option<Sentinels>,
    /// `None` with sentinels until one named a primary. Never held across
    /// an await: readers clone what they need and let go.
    current: RwLock<Option<Primary>>,
    /// One resolution at a time; the time the last one ended.
    looking: tokio::sync::Mutex<Option<Instant>>,
    /// Which append connection the next append takes.
    turn: AtomicUsize,
    /// The last resolution found no primary (its failure was logged).
    searching: AtomicBool,
    /// What [`RedisNode::conn`] hands out while no primary is known: a
    /// connection to port 0, which refuses every command at once.
    unknown: ConnectionManager,
}

#[derive(Clone)]
struct Primary {
    address: Option<Address>,
    client: Client,
    conn: ConnectionManager,
    /// With `--redis-replicas-ack`: connections of their own for appends.
    /// `WAIT` blocks the connection it runs on until the replicas answer,
    /// so on the one shared connection every publish would wait for the
    /// one before it; [`ACK_CONNECTIONS`] of them let that many wait at
    /// once. Empty without it.
    appends: Arc<[ConnectionManager]>,
}

/// The shared connection's settings: every command bounded, one attempt per
/// request while Redis is down (the next request tries again).
fn primary(
    info: ConnectionInfo,
    address: Option<Address>,
    appends: usize,
) -> Result<Primary, StoreError> {
    let client = Client::open(info).map_err(|e| unavailable("bad Redis address", e))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let manager = || {
        ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| unavailable("cannot prepare the Redis connection", e))
    };
    let conn = manager()?;
    let appends = (0..appends).map(|_| manager()).collect::<Result<_, _>>()?;
    Ok(Primary {
        address,
        client,
        conn,
        appends,
    })
}

impl RedisNode {
    /// Prepares the connection to the one primary of `url` without
    /// connecting: a hub whose Redis is down starts anyway, answers 503 to
    /// what needs Redis and connects in the background (see
    /// docs/cluster.md). Only a malformed URL fails.
    pub fn new(url: &str, prefix: &str) -> Result<RedisNode, StoreError> {
        let base = base_info(Some(url))?;
        let current = primary(base.clone(), None, 0)?;
        RedisNode::with_link(base, None, Some(current), prefix)
    }

    /// A node that finds its primary through `sentinels`; `url`, if given,
    /// carries the database, user and password (its host and port are not
    /// used). Nothing is asked before the first command, which asks the
    /// sentinels.
    pub fn with_sentinels(
        url: Option<&str>,
        sentinels: Sentinels,
        prefix: &str,
    ) -> Result<RedisNode, StoreError> {
        let base = base_info(url)?;
        RedisNode::with_link(base, Some(sentinels), None, prefix)
    }

    fn with_link(
        base: ConnectionInfo,
        sentinels: Option<Sentinels>,
        current: Option<Primary>,
        prefix: &str,
    ) -> Result<RedisNode, StoreError> {
        let nowhere = Address {
            host: "127.0.0.1".to_owned(),
            port: 0,
        };
        let unknown = primary(sentinel::at(&base, &nowhere), None, 0)?.conn;
        Ok(RedisNode {
            link: Arc::new(Link {
                base,
                sentinels,
                current: RwLock::new(current),
                looking: tokio::sync::Mutex::new(None),
                turn: AtomicUsize::new(0),
                searching: AtomicBool::new(false),
                unknown,
            }),
            keys: Arc::new(Keys::new(prefix)),
            node: uuid::Uuid::new_v4().to_string().into(),
            replicas_ack: 0,
        })
    }

    /// Acknowledges a publish only once `replicas` replicas took it
    /// (`WAIT`, see `log.rs`), on connections of its own.
    pub fn with_replicas_ack(mut self, replicas: usize) -> Result<RedisNode, StoreError> {
        self.replicas_ack = replicas;
        let current = self.current();
        if let Some(current) = current.filter(|_| replicas > 0) {
            let info = current.client.get_connection_info().clone();
            let next = primary(info, current.address, self.append_connections())?;
            self.replace(next);
        }
        Ok(self)
    }

    fn append_connections(&self) -> usize {
        if self.replicas_ack > 0 {
            ACK_CONNECTIONS
        } else {
            0
        }
    }

    fn replace(&self, next: Primary) {
        match self.link.current.write() {
            Ok(mut current) => *current = Some(next),
            Err(poisoned) => *poisoned.into_inner() = Some(next),
        }
    }

    /// A connection for an append that waits for replicas: one of the
    /// primary's append connections, in turn (the shared one without).
    pub(super) async fn append_conn(&self) -> Result<ConnectionManager, StoreError> {
        let conn = self.primary_conn().await?;
        let Some(current) = self.current() else {
            return Ok(conn);
        };
        if current.appends.is_empty() {
            return Ok(conn);
        }
        let turn = self.link.turn.fetch_add(1, Ordering::Relaxed);
        Ok(current.appends[turn % current.appends.len()].clone())
    }

    /// Whether the primary is found through sentinels (and may move).
    pub(super) fn follows_sentinels(&self) -> bool {
        self.link.sentinels.is_some()
    }

    fn current(&self) -> Option<Primary> {
        match self.link.current.read() {
            Ok(current) => current.clone(),
            // A writer panicked mid-swap: what it left is still a whole value.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The shared connection to the primary known now (cheap to clone;
    /// commands are pipelined). With sentinels, before they named one, a
    /// connection that every command fails on (at once: nothing listens on
    /// port 0), and the node goes asking them; [`RedisNode::primary_conn`]
    /// waits for their answer instead.
    pub fn conn(&self) -> ConnectionManager {
        match self.current() {
            Some(current) => current.conn,
            None => {
                self.suspect();
                self.link.unknown.clone()
            }
        }
    }

    /// The shared connection to the primary; with sentinels and no primary
    /// known yet, asks them first (503 when none answers).
    pub async fn primary_conn(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(current) = self.current() {
            return Ok(current.conn);
        }
        self.rediscover().await;
        self.current().map(|c| c.conn).ok_or_else(|| {
            StoreError::Unavailable("no Redis primary known yet (asking the sentinels)".to_owned())
        })
    }

    /// Runs one command or script on the shared connection, bounded by
    /// [`COMMAND_TIMEOUT`]. A failure that may mean the primary is gone or
    /// demoted sends the node looking for it again (with sentinels).
    pub async fn run<T, F>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        match tokio::time::timeout(COMMAND_TIMEOUT, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                if primary_lost(&e) {
                    self.suspect();
                }
                Err(unavailable(what, e))
            }
            Err(_) => {
                self.suspect();
                Err(StoreError::Unavailable(format!(
                    "{what}: Redis did not answer within {COMMAND_TIMEOUT:?}"
                )))
            }
        }
    }

    /// With sentinels: looks for the primary again in the background (the
    /// request that noticed answers at once).
    pub(super) fn suspect(&self) {
        if self.link.sentinels.is_none() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let node = self.clone();
            runtime.spawn(async move { node.rediscover().await });
        }
    }

    /// With sentinels: asks them where the primary is and, if it moved,
    /// replaces the shared connection (the tail connects to the new one on
    /// its next attempt). At most one resolution at a time, and at most one
    /// every [`REDISCOVER_EVERY`]: a burst of failing requests asks once.
    pub(super) async fn rediscover(&self) {
        let Some(sentinels) = &self.link.sentinels else {
            return;
        };
        let Ok(mut looking) = self.link.looking.try_lock() else {
            // Another resolution runs: wait for it, then use what it found.
            let _ = self.link.looking.lock().await;
            return;
        };
        if looking.is_some_and(|t| t.elapsed() < REDISCOVER_EVERY) && self.current().is_some() {
            return;
        }
        let found = sentinels.primary().await;
        *looking = Some(Instant::now());
        let address = match found {
            Ok(address) => address,
            Err(error) => {
                // Once per outage, not once per attempt.
                if !self.link.searching.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "cannot find the Redis primary; asking the sentinels again on each failure");
                }
                return;
            }
        };
        self.link.searching.store(false, Ordering::Relaxed);
        let known = self.current().and_then(|c| c.address);
        if known.as_ref() == Some(&address) {
            return;
        }
        match primary(
            sentinel::at(&self.link.base, &address),
            Some(address.clone()),
            self.append_connections(),
        ) {
            Ok(next) => {
                tracing::warn!(
                    primary = %address,
                    before = %known.map_or_else(|| "none".to_owned(), |a| a.to_string()),
                    master = %sentinels.master,
                    "the sentinels name a new Redis primary; using it"
                );
                self.replace(next);
            }
            Err(error) => tracing::error!(%error, "cannot use the primary the sentinels named"),
        }
    }

    /// A connection of its own to the current primary, without a response
    /// timeout: for the tail's blocking reads.
    async fn dedicated(&self) -> Result<MultiplexedConnection, StoreError> {
        if self.current().is_none() {
            self.rediscover().await;
        }
        let Some(current) = self.current() else {
            return Err(StoreError::Unavailable(
                "no Redis primary known yet (asking the sentinels)".to_owned(),
            ));
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(None);
        current
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| {
                if primary_lost(&e) {
                    self.suspect();
                }
                unavailable("cannot connect to Redis", e)
            })
    }
}

/// The settings of `--redis-url`, or the defaults (database 0, no password).
fn base_info(url: Option<&str>) -> Result<ConnectionInfo, StoreError> {
    url.unwrap_or("redis://127.0.0.1:6379/0")
        .into_connection_info()
        .map_err(|e| StoreError::Unavailable(format!("bad redis-url: {e}")))
}

/// Whether an error may mean that the primary is gone (the connection
/// failed or dropped, or timed out) or is no longer the primary
/// (`READONLY`: a demoted primary refuses writes).
pub(super) fn primary_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || error.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

pub(super) fn unavailable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {error}"))
}

/// Asks every other node to close a user's streams (through the control
/// stream their tails follow).
pub async fn request_close(redis: &RedisNode, user: &str) -> Result<(), StoreError> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&redis.keys.control)
        .arg("MAXLEN")
        .arg("~")
        .arg(CONTROL_MAXLEN)
        .arg("*")
        .arg("node")
        .arg(&*redis.node)
        .arg("close")
        .arg(user);
    let mut conn = redis.primary_conn().await?;
    let _: Value = redis
        .run("cannot reach the other nodes", cmd.query_async(&mut conn))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demoted_or_unreachable_primary_sends_the_node_to_the_sentinels() {
        let server = |kind, text| RedisError::from((ErrorKind::Server(kind), text));
        // What a write to a primary turned replica answers.
        assert!(primary_lost(&server(
            ServerErrorKind::ReadOnly,
            "You can't write against a read only replica."
        )));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(primary_lost(&RedisError::from(refused)));
        // A script's own error says nothing about where the primary is.
        assert!(!primary_lost(&server(
            ServerErrorKind::ResponseError,
            "ERR user_script:1"
        )));
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys::new("app");
        assert_eq!(keys.events, "app:events");
        assert_eq!(keys.node_users("n1"), "app:node:n1:users");
    }
}
