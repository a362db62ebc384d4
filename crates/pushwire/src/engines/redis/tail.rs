//! Each node's tail: live delivery from the shared history.
//!
//! Live delivery does not happen in `append`: every node runs one tail
//! ([`Tail`]) on its own connection, reading the stream in order with
//! `XREAD BLOCK` and handing each batch to the hub's [`Fanout`], so a
//! subscriber on any node sees what a publisher sent to any node, in history
//! order. Because sequence numbers are contiguous the tail notices any gap
//! (entries trimmed before it read them, a history that went backwards after
//! Redis lost data): it then ends the local streams, which reconnect and
//! resume from their `Last-Event-ID` (or get the documented `reset`), and
//! continues from the current end. The same read also follows
//! `<prefix>:control`, where nodes ask each other to close a user's streams.
//!
//! The tail's connection is its own, with no response timeout (a blocking
//! read waits by design); every read is bounded by [`TAIL_BLOCK`] plus
//! [`TAIL_SLACK`] instead. After any error it connects again every
//! [`RECONNECT_DELAY`] and continues from the last sequence it handed over,
//! logging once per outage, not once per attempt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{RedisError, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use prometheus_client::metrics::counter::Counter;
use pushwire_core::log::{Fanout, StoreError};

use super::log::{bounds_query, decode_entry, seq_of, Bounds, Lookup, Scripts};
use super::sentinel::says_primary;
use super::{unavailable, RedisNode, COMMAND_TIMEOUT};

/// How long one `XREAD BLOCK` of the tail waits for new entries. The tail's
/// connection has no response timeout; its own bound is this plus
/// [`TAIL_SLACK`].
const TAIL_BLOCK: Duration = Duration::from_millis(1000);
/// Beyond the block time, how long the tail waits for an answer before it
/// treats the connection as dead (Redis gone without closing the socket).
const TAIL_SLACK: Duration = Duration::from_secs(5);
/// Most entries one tail read takes from each stream.
const TAIL_COUNT: usize = 1024;
/// The pause between two attempts to reach Redis again.
const RECONNECT_DELAY: Duration = Duration::from_millis(250);

/// Follows the event and control streams for this node; see the module
/// documentation.
pub(super) struct Tail {
    redis: RedisNode,
    scripts: Arc<Scripts>,
    fanout: Arc<dyn Fanout>,
    stop: CancellationToken,
    /// The last sequence handed to the fanout (`None` before the first
    /// successful connection).
    position: Option<u64>,
    /// The last control entry id read.
    control: Option<String>,
    /// The last attempt failed (an outage is being logged).
    failing: bool,
    /// Set once the tail knows where it starts.
    ready: watch::Sender<bool>,
    /// The history's epoch when the tail last looked.
    epoch: Option<String>,
    /// The tag of the event at `position`, when the tail delivered it.
    tag: Option<u64>,
    /// `position`, shared with the log for `/metrics`.
    delivered: Arc<AtomicU64>,
    /// `pushwire_redis_reconnects_total`.
    reconnects: Counter,
}

impl Tail {
    /// A tail that has not connected yet: it knows where it starts only
    /// once it has (then it sets `ready`).
    pub(super) fn new(
        redis: RedisNode,
        scripts: Arc<Scripts>,
        fanout: Arc<dyn Fanout>,
        stop: CancellationToken,
        ready: watch::Sender<bool>,
        delivered: Arc<AtomicU64>,
        reconnects: Counter,
    ) -> Tail {
        Tail {
            redis,
            scripts,
            fanout,
            stop,
            position: None,
            control: None,
            failing: false,
            ready,
            epoch: None,
            tag: None,
            delivered,
            reconnects,
        }
    }

    /// Follows until stopped; after an error, connects again every
    /// [`RECONNECT_DELAY`] and continues from the last sequence it saw.
    pub(super) async fn run(mut self) {
        while !self.stop.is_cancelled() {
            let error = match self.follow().await {
                Ok(()) => return,
                Err(error) => error,
            };
            // Once per outage, not once per attempt.
            if !self.failing && self.position.is_none() {
                tracing::error!(
                    %error,
                    "cannot reach Redis: publishes and new streams get 503 until it answers; retrying"
                );
            } else if !self.failing {
                tracing::error!(
                    %error,
                    "lost the Redis event stream: publishes get 503 and live delivery waits \
                     until it is back; retrying"
                );
            }
            self.failing = true;
            // With sentinels, the primary may have moved: the next attempt
            // goes wherever they now say it is.
            self.redis.rediscover().await;
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
        }
    }

    /// Connects, checks continuity, then reads until an error or the stop.
    async fn follow(&mut self) -> Result<(), StoreError> {
        let mut conn = self.redis.dedicated().await?;
        if self.redis.follows_sentinels() {
            // A demoted primary still serves reads: following it would
            // lag behind the new primary, or stop when it is reconfigured.
            let role: Value = bounded(redis::cmd("ROLE").query_async(&mut conn)).await?;
            says_primary(&role).map_err(|what| {
                StoreError::Unavailable(format!(
                    "the server the tail connected to {what}, not the primary"
                ))
            })?;
        }
        let keys = self.redis.keys.clone();
        let from = self.check_continuity(&mut conn).await?;
        // From now on every event after `from` reaches the fanout: streams
        // may start (see `RedisLog::last`).
        self.ready.send_replace(true);
        if self.control.is_none() {
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&keys.control).arg("+").arg("-").arg("COUNT").arg(1);
            let newest: StreamRangeReply = bounded(cmd.query_async(&mut conn)).await?;
            self.control = Some(
                newest
                    .ids
                    .first()
                    .map_or_else(|| "0-0".to_owned(), |e| e.id.clone()),
            );
        }
        if self.failing {
            self.reconnects.inc();
        }
        self.failing = false;
        tracing::info!(position = from, "following the Redis event stream");
        loop {
            let position = self.position.unwrap_or(from);
            let control = self.control.clone().unwrap_or_else(|| "0-0".to_owned());
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(TAIL_COUNT)
                .arg("BLOCK")
                .arg(TAIL_BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&keys.events)
                .arg(&keys.control)
                .arg(format!("0-{position}"))
                .arg(control);
            let read = tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                read = tokio::time::timeout(TAIL_BLOCK + TAIL_SLACK, cmd.query_async::<Option<StreamReadReply>>(&mut conn)) => read,
            };
            let reply = match read {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => return Err(unavailable("reading the event stream failed", e)),
                Err(_) => {
                    return Err(StoreError::Unavailable(
                        "Redis did not answer a blocking read in time".to_owned(),
                    ))
                }
            };
            let Some(reply) = reply else {
                // Idle for a whole block: a history that was emptied or
                // replaced under a live connection (FLUSHALL, a restored
                // backup) issues ids at or below ours, which XREAD never
                // returns; look where it stands.
                self.check_continuity(&mut conn).await?;
                continue;
            };
            for stream in reply.keys {
                if stream.key == keys.events {
                    self.deliver(&stream.ids);
                } else if stream.key == keys.control {
                    self.control_entries(&stream.ids);
                }
            }
        }
    }

    /// Where to read from: the last sequence seen, unless Redis's history
    /// now ends before it (Redis lost data): then local streams end (they
    /// resume from what is there) and the tail goes on from the new end.
    async fn check_continuity(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<u64, StoreError> {
        let keys = self.redis.keys.clone();
        let lookup = Lookup {
            seq: self
                .position
                .filter(|_| self.tag.is_some() && self.redis.follows_sentinels()),
            ..Lookup::default()
        };
        let b = Bounds::parse(bounded(bounds_query(conn, &self.scripts, &keys, lookup)).await?)?;
        // With sentinels: a replica promoted after the primary died may
        // lack its last events and hand their sequence numbers out again:
        // the event now at our position then carries another tag. (Events
        // with a publisher's id all carry the same tag; for them only a
        // shorter history shows.) Ending the local streams then also ends
        // those that opened after the divergence and are whole, which a
        // node on one fixed Redis does not do for a restored copy (there
        // only a shorter history or another epoch counts, as before).
        let replaced = self.redis.follows_sentinels()
            && matches!(
                (self.tag, b.tag),
                (Some(mine), Some(now)) if mine != now
            );
        let lost = match (&self.epoch, self.position) {
            (Some(known), _) if !known.is_empty() && *known != b.epoch => true,
            (_, Some(seen)) => b.last < seen || replaced,
            _ => false,
        };
        self.epoch = Some(b.epoch.clone());
        let from = match self.position {
            Some(seen) if lost => {
                tracing::error!(
                    seen,
                    redis_last = b.last,
                    "the Redis history went backwards (Redis lost data: a restart without \
                     appendonly yes and appendfsync always, a restored backup, or a failover \
                     to a replica that lacked the last writes); ending local streams so they \
                     resume from what is there"
                );
                self.fanout.resync();
                self.tag = None;
                b.last
            }
            Some(seen) => seen,
            None => b.last,
        };
        self.position = Some(from);
        self.delivered.store(from, Ordering::Relaxed);
        Ok(from)
    }

    /// Hands a batch to the fanout, after checking that it continues
    /// exactly where the tail stood.
    fn deliver(&mut self, entries: &[StreamId]) {
        // The position follows the entry ids, readable or not, so that an
        // entry that cannot be decoded is skipped once, not read forever.
        let seqs: Vec<u64> = entries.iter().filter_map(|e| seq_of(&e.id).ok()).collect();
        let (Some(&first), Some(&last)) = (seqs.first(), seqs.last()) else {
            return;
        };
        let expected = self.position.unwrap_or(0).saturating_add(1);
        if first != expected {
            tracing::error!(
                expected,
                found = first,
                "events were trimmed before this node read them; ending local streams so \
                 they resume from the history"
            );
            self.fanout.resync();
        }
        self.position = Some(last);
        self.tag = None;
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            match decode_entry(entry) {
                Ok(event) => {
                    if event.seq == last {
                        self.tag = Some(event.tag);
                    }
                    events.push(Arc::new(event))
                }
                Err(error) => {
                    tracing::error!(%error, id = %entry.id, "skipping an unreadable event")
                }
            }
        }
        if !events.is_empty() {
            self.fanout.deliver(&events);
        }
        self.delivered.store(last, Ordering::Relaxed);
    }

    fn control_entries(&mut self, entries: &[StreamId]) {
        for entry in entries {
            self.control = Some(entry.id.clone());
            let field = |name: &str| match entry.map.get(name) {
                Some(Value::BulkString(bytes)) => String::from_utf8(bytes.clone()).ok(),
                _ => None,
            };
            if field("node").as_deref() == Some(&*self.redis.node) {
                continue;
            }
            if let Some(user) = field("close") {
                let closed = self.fanout.close_user(&user);
                tracing::debug!(%user, closed, "closed a user's streams at another node's request");
            }
        }
    }
}

/// Bounds a command on the tail's own connection (which has no response
/// timeout of its own).
async fn bounded<T>(
    op: impl std::future::Future<Output = Result<T, RedisError>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, op).await {
        Ok(result) => result.map_err(|e| unavailable("Redis command failed", e)),
        Err(_) => Err(StoreError::Unavailable(
            "Redis did not answer in time".to_owned(),
        )),
    }
}
