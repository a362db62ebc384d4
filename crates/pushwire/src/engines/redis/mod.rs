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
//! This file holds what they share: the [`Keys`] of one cluster, all under
//! one prefix, and the [`RedisNode`] that talks to Redis, with its
//! connection settings. A hub whose Redis is down starts anyway: the
//! shared connection connects lazily and fails fast (one attempt per
//! request, every command bounded by [`COMMAND_TIMEOUT`]), so what needs
//! Redis gets 503 instead of waiting, and the next request tries again.
//! Nodes ask each other to close a user's streams through
//! `<prefix>:control` ([`request_close`]), which every tail also follows.

mod log;
pub mod presence;
mod tail;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, RedisError, Value};

use pushwire_core::log::StoreError;

pub use log::RedisLog;

/// Every command on the shared connection answers within this, or the
/// request fails with 503: a publish waits no longer while Redis is gone.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
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

/// What a node needs to talk to the cluster's Redis: the client (for
/// dedicated connections), a shared reconnecting connection, the keys and
/// this node's id.
#[derive(Clone)]
pub struct RedisNode {
    client: Client,
    conn: ConnectionManager,
    pub keys: Arc<Keys>,
    /// Unique per process start (uuid v4).
    pub node: Arc<str>,
}

impl RedisNode {
    /// Prepares the connection without connecting: a hub whose Redis is
    /// down starts anyway, answers 503 to what needs Redis and connects in
    /// the background (see docs/cluster.md). Only a malformed URL fails.
    pub fn new(url: &str, prefix: &str) -> Result<RedisNode, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("bad redis-url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            // Fail fast while Redis is down: one attempt per request; the
            // next request tries again.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| unavailable("cannot prepare the Redis connection", e))?;
        Ok(RedisNode {
            client,
            conn,
            keys: Arc::new(Keys::new(prefix)),
            node: uuid::Uuid::new_v4().to_string().into(),
        })
    }

    /// The shared connection (cheap to clone; commands are pipelined).
    pub fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs one command or script on the shared connection, bounded by
    /// [`COMMAND_TIMEOUT`].
    pub async fn run<T, F>(&self, what: &str, op: F) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, RedisError>>,
    {
        match tokio::time::timeout(COMMAND_TIMEOUT, op).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(unavailable(what, e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what}: Redis did not answer within {COMMAND_TIMEOUT:?}"
            ))),
        }
    }

    /// A connection of its own, without a response timeout: for the tail's
    /// blocking reads.
    async fn dedicated(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
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
    let mut conn = redis.conn();
    let _: Value = redis
        .run("cannot reach the other nodes", cmd.query_async(&mut conn))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys::new("app");
        assert_eq!(keys.events, "app:events");
        assert_eq!(keys.node_users("n1"), "app:node:n1:users");
    }
}
