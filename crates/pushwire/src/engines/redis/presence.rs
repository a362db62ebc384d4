//! Presence across the nodes of a cluster that share one Redis (see
//! docs/cluster.md): who is online anywhere, how many streams are open, and
//! closing a user's streams on every node.
//!
//! Each node writes its own share under keys that carry its id (a uuid v4
//! chosen at start): `<prefix>:node:<id>:users` (user → open streams),
//! `…:topics` (topic → open streams) and `…:stats` (streams and counters),
//! and lists itself in `<prefix>:nodes`. Changes go out within
//! [`PUSH_INTERVAL`] as deltas; every heartbeat (a third of the TTL) and
//! after any Redis error the node rewrites its whole share and sets the
//! keys' TTL again. So a node that dies without a word (`kill -9`, a lost
//! machine) drops out of every answer at most one TTL after its last write,
//! when Redis expires its keys.
//!
//! Readers take this node's figures from memory (exact, at once) and every
//! other live node's from Redis, and merge them: a user with streams on two
//! nodes counts once as a user and twice as streams.
//!
//! It lives with the Redis engine: it talks to Redis through the same
//! [`RedisNode`] and keys, and asks other nodes to close a user's streams
//! through the control stream their tails follow ([`request_close`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use redis::Value;
use tokio_util::sync::CancellationToken;

use futures_util::future::BoxFuture;
use pushwire_core::hub::{Hub, LocalPresence, Peers, Stats};

use super::{request_close, RedisNode};
use pushwire_core::log::{now_ms, StoreError};
use pushwire_core::registry::{TopicStreams, UserStreams};

/// How often a node looks for changes in its share and sends them.
pub const PUSH_INTERVAL: Duration = Duration::from_millis(250);

/// Merged figures of every live node.
struct Shares {
    /// Other live nodes, each with its users and topics (name → streams)
    /// and stats.
    others: Vec<Share>,
}

#[derive(Default)]
struct Share {
    users: HashMap<String, usize>,
    topics: HashMap<String, usize>,
    stats: HashMap<String, u64>,
}

/// This node's part in the cluster's presence.
pub struct Cluster {
    redis: RedisNode,
    /// How long a node's share outlives its last write.
    ttl: Duration,
}

/// What was last written, to send only what changed.
#[derive(Default)]
struct Sent {
    users: BTreeMap<Arc<str>, usize>,
    topics: BTreeMap<Arc<str>, usize>,
}

impl Cluster {
    pub fn new(redis: RedisNode, ttl: Duration) -> Cluster {
        Cluster { redis, ttl }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.redis.node
    }

    /// Writes this node's share until `stop` is cancelled, then removes it
    /// (a clean stop leaves no stale users behind).
    pub async fn run(self: Arc<Self>, hub: Weak<Hub>, stop: CancellationToken) {
        let heartbeat = (self.ttl / 3).max(Duration::from_millis(100));
        let mut ticks = tokio::time::interval(PUSH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent: Option<Sent> = None;
        let mut last_full = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            let Some(hub) = hub.upgrade() else { break };
            let now = hub.local_presence();
            drop(hub);
            let full = sent.is_none() || last_full.elapsed() >= heartbeat;
            let result = if full {
                self.write_full(&now).await
            } else if let Some(before) = &sent {
                self.write_delta(before, &now).await
            } else {
                Ok(())
            };
            match result {
                Ok(()) => {
                    if full {
                        last_full = tokio::time::Instant::now();
                    }
                    if failing {
                        tracing::info!(node = self.node(), "cluster presence written again");
                    }
                    failing = false;
                    sent = Some(Sent {
                        users: now.users.into_iter().collect(),
                        topics: now.topics.into_iter().collect(),
                    });
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "cannot write cluster presence; will rewrite it once Redis answers");
                    }
                    failing = true;
                    sent = None;
                }
            }
        }
        if let Err(error) = self.leave().await {
            tracing::warn!(%error, "cannot remove this node's presence; it expires on its own");
        }
    }

    fn node_keys(&self) -> [String; 3] {
        let keys = &self.redis.keys;
        let node = self.node();
        [
            keys.node_users(node),
            keys.node_topics(node),
            keys.node_stats(node),
        ]
    }

    /// Replaces this node's whole share and sets its TTL.
    async fn write_full(&self, now: &LocalPresence) -> Result<(), StoreError> {
        let [users, topics, stats] = self.node_keys();
        let ttl = self.ttl.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(&users).ignore().del(&topics).ignore();
        for (key, share) in [(&users, &now.users), (&topics, &now.topics)] {
            if !share.is_empty() {
                let pairs: Vec<(&str, usize)> = share.iter().map(|(k, n)| (&**k, *n)).collect();
                pipe.hset_multiple(key, &pairs).ignore();
                pipe.pexpire(key, ttl as i64).ignore();
            }
        }
        self.send_with_stats(pipe, &stats, now, ttl).await
    }

    /// Sends what changed since `before`.
    async fn write_delta(&self, before: &Sent, now: &LocalPresence) -> Result<(), StoreError> {
        let [users, topics, stats] = self.node_keys();
        let ttl = self.ttl.as_millis() as u64;
        let mut pipe = redis::pipe();
        pipe.atomic();
        let mut changed = false;
        for (key, old, new) in [
            (&users, &before.users, &now.users),
            (&topics, &before.topics, &now.topics),
        ] {
            let new_map: BTreeMap<&str, usize> = new.iter().map(|(k, n)| (&**k, *n)).collect();
            let set: Vec<(&str, usize)> = new_map
                .iter()
                .filter(|(k, n)| old.get(**k) != Some(*n))
                .map(|(k, n)| (*k, *n))
                .collect();
            let gone: Vec<&str> = old
                .keys()
                .map(|k| &**k)
                .filter(|k| !new_map.contains_key(k))
                .collect();
            if !set.is_empty() {
                pipe.hset_multiple(key, &set).ignore();
                pipe.pexpire(key, ttl as i64).ignore();
                changed = true;
            }
            if !gone.is_empty() {
                pipe.hdel(key, gone).ignore();
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        self.send_with_stats(pipe, &stats, now, ttl).await
    }

    /// Adds this node's figures and liveness to `pipe`, and sends it.
    async fn send_with_stats(
        &self,
        mut pipe: redis::Pipeline,
        stats: &str,
        now: &LocalPresence,
        ttl: u64,
    ) -> Result<(), StoreError> {
        let figures = [
            ("streams", now.streams as u64),
            ("events_published", now.events_published),
            ("deliveries", now.deliveries),
            ("slow_consumer_closes", now.slow_consumer_closes),
        ];
        pipe.hset_multiple(stats, &figures).ignore();
        pipe.pexpire(stats, ttl as i64).ignore();
        let time = now_ms();
        pipe.zadd(&self.redis.keys.nodes, self.node(), time)
            .ignore();
        // Nodes gone for a long while leave the list (their keys expired
        // long ago); a live node is back in it at its next heartbeat.
        pipe.zrembyscore(&self.redis.keys.nodes, 0, time.saturating_sub(3_600_000))
            .ignore();
        let mut conn = self.redis.primary_conn().await?;
        let _: Value = self
            .redis
            .run("cannot write cluster presence", pipe.query_async(&mut conn))
            .await?;
        Ok(())
    }

    /// Removes this node's share (clean stop).
    async fn leave(&self) -> Result<(), StoreError> {
        let [users, topics, stats] = self.node_keys();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(&[users, topics, stats])
            .ignore()
            .zrem(&self.redis.keys.nodes, self.node())
            .ignore();
        let mut conn = self.redis.primary_conn().await?;
        let _: Value = self
            .redis
            .run(
                "cannot remove cluster presence",
                pipe.query_async(&mut conn),
            )
            .await?;
        Ok(())
    }

    /// The users with an open stream on any other live node (within
    /// [`PUSH_INTERVAL`] of their nodes' last write).
    pub async fn users_elsewhere(&self) -> Result<std::collections::HashSet<String>, StoreError> {
        Ok(self
            .others()
            .await?
            .others
            .into_iter()
            .flat_map(|share| share.users.into_iter())
            .filter(|(_, streams)| *streams > 0)
            .map(|(user, _)| user)
            .collect())
    }

    /// Every other live node's share.
    async fn others(&self) -> Result<Shares, StoreError> {
        let mut conn = self.redis.primary_conn().await?;
        let nodes: Vec<String> = self
            .redis
            .run(
                "cannot read cluster presence",
                redis::cmd("ZRANGE")
                    .arg(&self.redis.keys.nodes)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .await?;
        let nodes: Vec<String> = nodes.into_iter().filter(|n| n != self.node()).collect();
        if nodes.is_empty() {
            return Ok(Shares { others: Vec::new() });
        }
        let keys = &self.redis.keys;
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.hgetall(keys.node_users(node))
                .hgetall(keys.node_topics(node))
                .hgetall(keys.node_stats(node));
        }
        type Answer = (
            HashMap<String, usize>,
            HashMap<String, usize>,
            HashMap<String, u64>,
        );
        let answers: Vec<Answer> = self
            .redis
            .run("cannot read cluster presence", pipe.query_async(&mut conn))
            .await?;
        let others = answers
            .into_iter()
            // A node whose keys expired is dead: it counts for nothing.
            .filter(|(users, _, stats)| !users.is_empty() || !stats.is_empty())
            .map(|(users, topics, stats)| Share {
                users,
                topics,
                stats,
            })
            .collect();
        Ok(Shares { others })
    }

    /// Online users anywhere in the cluster with their stream counts,
    /// sorted by id.
    async fn users(&self, local: &LocalPresence) -> Result<Vec<UserStreams>, StoreError> {
        let shares = self.others().await?;
        let mut merged: BTreeMap<String, usize> = local
            .users
            .iter()
            .map(|(u, n)| (u.to_string(), *n))
            .collect();
        for share in shares.others {
            for (user, streams) in share.users {
                *merged.entry(user).or_default() += streams;
            }
        }
        Ok(merged
            .into_iter()
            .map(|(id, streams)| UserStreams { id, streams })
            .collect())
    }

    /// Exact topics with open streams anywhere in the cluster, sorted by
    /// name, each with its streams on every node added up.
    async fn topics(&self, local: &LocalPresence) -> Result<Vec<TopicStreams>, StoreError> {
        let shares = self.others().await?;
        let mut merged: BTreeMap<String, usize> = local
            .topics
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect();
        for share in shares.others {
            for (topic, streams) in share.topics {
                *merged.entry(topic).or_default() += streams;
            }
        }
        Ok(merged
            .into_iter()
            .map(|(topic, streams)| TopicStreams { topic, streams })
            .collect())
    }

    /// The cluster's figures: `local` is this node's, as `Hub::stats` gives
    /// them.
    async fn stats(&self, presence: &LocalPresence, mut local: Stats) -> Result<Stats, StoreError> {
        let shares = self.others().await?;
        let mut users: std::collections::HashSet<&str> =
            presence.users.iter().map(|(u, _)| &**u).collect();
        let mut topics: std::collections::HashSet<&str> =
            presence.topics.iter().map(|(t, _)| &**t).collect();
        for share in &shares.others {
            users.extend(share.users.keys().map(String::as_str));
            topics.extend(share.topics.keys().map(String::as_str));
            let figure = |name: &str| share.stats.get(name).copied().unwrap_or(0);
            local.streams += figure("streams") as usize;
            local.events_published += figure("events_published");
            local.deliveries += figure("deliveries");
            local.slow_consumer_closes += figure("slow_consumer_closes");
        }
        local.users = users.len();
        local.topics = topics.len();
        local.nodes = Some(shares.others.len() + 1);
        Ok(local)
    }

    /// Asks the other nodes to close `user`'s streams; returns how many
    /// streams they had open for that user, as their presence says.
    async fn close_user(&self, user: &str) -> Result<usize, StoreError> {
        let shares = self.others().await?;
        let remote = shares.others.iter().filter_map(|s| s.users.get(user)).sum();
        request_close(&self.redis, user).await?;
        Ok(remote)
    }
}

impl Peers for Cluster {
    fn users<'a>(
        &'a self,
        local: &'a LocalPresence,
    ) -> BoxFuture<'a, Result<Vec<UserStreams>, StoreError>> {
        Box::pin(Cluster::users(self, local))
    }

    fn topics<'a>(
        &'a self,
        local: &'a LocalPresence,
    ) -> BoxFuture<'a, Result<Vec<TopicStreams>, StoreError>> {
        Box::pin(Cluster::topics(self, local))
    }

    fn stats<'a>(
        &'a self,
        local: &'a LocalPresence,
        stats: Stats,
    ) -> BoxFuture<'a, Result<Stats, StoreError>> {
        Box::pin(Cluster::stats(self, local, stats))
    }

    fn close_user<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<usize, StoreError>> {
        Box::pin(Cluster::close_user(self, user))
    }
}
