//! A history shared by every node of a cluster, in one Redis Stream
//! (`<prefix>:events`, see docs/cluster.md).
//!
//! Sequence numbers are the stream entry ids `0-<seq>`: Redis (7.0 or newer)
//! gives `XADD <key> 0-*` the id after the last one it ever generated, so
//! sequence numbers are contiguous, strictly increasing and never reused,
//! even after trimming. The hub's event id is the sequence number in
//! decimal, exactly as with the embedded engine, and each entry carries the
//! record the embedded engine also writes (`r`, see `pushwire_core::record`),
//! so every node decodes an event the same way. Two more fields serve
//! retention: `t` (the time, in milliseconds) and `i` (the
//! publisher-supplied id, if any).
//!
//! Writes are Lua scripts, so each is atomic: `append` checks every
//! publisher-supplied id against `<prefix>:ids` before its first write (a
//! script is not rolled back), adds the batch and trims beyond
//! `max_events`; `trim` drops what is too old together with its ids. A
//! publish is acknowledged once Redis acknowledged the script.
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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamId, StreamRangeReply, StreamReadReply};
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use pushwire_core::event::{Draft, Event};
use pushwire_core::log::{now_ms, Cursor, EventLog, Fanout, Retention, StoreError};
use pushwire_core::record::{decode, encode};

/// Most events one `trim` removes; the rest go on the next call.
const MAX_TRIM_PER_CALL: usize = 100_000;
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
        }
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

fn unavailable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {error}"))
}

/// KEYS: events, ids, epoch. ARGV: max_events, an epoch for a new history,
/// then per event: publisher id (or empty), time, record. Refuses the whole batch if a publisher id is taken
/// (before any write); otherwise adds every event, records the publisher
/// ids, trims beyond max_events (with the ids of what goes) and returns
/// `{"ok", id...}`.
const APPEND: &str = r#"
local events, ids, epoch = KEYS[1], KEYS[2], KEYS[3]
local max = tonumber(ARGV[1])
for i = 3, #ARGV, 3 do
  if ARGV[i] ~= '' and redis.call('HEXISTS', ids, ARGV[i]) == 1 then
    return {'duplicate', ARGV[i]}
  end
end
redis.call('SET', epoch, ARGV[2], 'NX')
local out = {'ok'}
for i = 3, #ARGV, 3 do
  local id
  if ARGV[i] == '' then
    id = redis.call('XADD', events, '0-*', 't', ARGV[i + 1], 'r', ARGV[i + 2])
  else
    id = redis.call('XADD', events, '0-*', 't', ARGV[i + 1], 'r', ARGV[i + 2], 'i', ARGV[i])
    redis.call('HSET', ids, ARGV[i], string.sub(id, 3))
  end
  out[#out + 1] = id
end
local excess = redis.call('XLEN', events) - max
if excess > 0 then
  for _, entry in ipairs(redis.call('XRANGE', events, '-', '+', 'COUNT', excess)) do
    local f = entry[2]
    for j = 1, #f, 2 do
      if f[j] == 'i' then redis.call('HDEL', ids, f[j + 1]) end
    end
  end
  redis.call('XTRIM', events, 'MAXLEN', max)
end
return out
"#;

/// KEYS: events, ids. ARGV: max_events, cutoff (ms), most to remove.
/// Removes the oldest entries while there are more than max_events or they
/// are older than the cutoff, with their publisher ids; returns how many.
const TRIM: &str = r#"
local events, ids = KEYS[1], KEYS[2]
local max, cutoff, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local len = redis.call('XLEN', events)
local gone = 0
local from = '-'
-- The oldest entry alone first: most calls find it young enough and stop.
local count = 1
while gone < most do
  local page = redis.call('XRANGE', events, from, '+', 'COUNT', count)
  if #page == 0 then break end
  local stop = false
  for _, entry in ipairs(page) do
    local f = entry[2]
    local time, pid = 0, nil
    for j = 1, #f, 2 do
      if f[j] == 't' then time = tonumber(f[j + 1]) elseif f[j] == 'i' then pid = f[j + 1] end
    end
    if gone >= most or (len - gone <= max and time >= cutoff) then stop = true break end
    if pid then redis.call('HDEL', ids, pid) end
    gone = gone + 1
  end
  if stop or #page < count then break end
  from = '(' .. page[#page][1]
  count = 256
end
if gone > 0 then redis.call('XTRIM', events, 'MAXLEN', len - gone) end
return gone
"#;

/// KEYS: events, ids, epoch. ARGV: a publisher id or empty. Returns the
/// last generated id ("0-0" for none), the oldest retained id (empty for
/// none), the sequence of the publisher id (empty when unknown) and the
/// history's epoch (empty before the first append).
const BOUNDS: &str = r#"
local events, ids, epoch = KEYS[1], KEYS[2], KEYS[3]
local last, first = '0-0', ''
if redis.call('EXISTS', events) == 1 then
  local info = redis.call('XINFO', 'STREAM', events)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
  local head = redis.call('XRANGE', events, '-', '+', 'COUNT', 1)
  if #head > 0 then first = head[1][1] end
end
local seq = ''
if ARGV[1] ~= '' then seq = redis.call('HGET', ids, ARGV[1]) or '' end
return {last, first, seq, redis.call('GET', epoch) or ''}
"#;

/// Where the stream stands.
#[derive(Debug, Clone)]
struct Bounds {
    /// The last sequence ever generated (0: none).
    last: u64,
    /// The oldest retained sequence, or `last + 1` when none is.
    first: u64,
    /// The sequence of the publisher id asked about, if retained.
    found: Option<u64>,
    /// Set by the first append to a new history: another value means the
    /// history was lost and started over.
    epoch: String,
}

/// The sequence number of an entry id `0-<seq>`.
fn seq_of(id: &str) -> Result<u64, StoreError> {
    id.strip_prefix("0-")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            StoreError::Unavailable(format!(
                "the event stream holds entry `{id}`, which pushwire did not write"
            ))
        })
}

fn decode_entry(entry: &StreamId) -> Result<Event, StoreError> {
    let seq = seq_of(&entry.id)?;
    match entry.map.get("r") {
        Some(Value::BulkString(bytes)) => decode(seq, bytes),
        _ => Err(StoreError::Unavailable(format!(
            "stored event {seq} has no record"
        ))),
    }
}

/// Runs the bounds script: (last generated id, oldest id, publisher id's
/// sequence), as Redis answers them.
async fn bounds_query(
    conn: &mut impl redis::aio::ConnectionLike,
    scripts: &Scripts,
    keys: &Keys,
    publisher_id: &str,
) -> Result<(String, String, String, String), RedisError> {
    scripts
        .bounds
        .key(&keys.events)
        .key(&keys.ids)
        .key(&keys.epoch)
        .arg(publisher_id)
        .invoke_async(conn)
        .await
}

impl Bounds {
    fn parse(
        (last, first, seq, epoch): (String, String, String, String),
    ) -> Result<Bounds, StoreError> {
        let last = seq_of(&last)?;
        let first = if first.is_empty() {
            last.saturating_add(1)
        } else {
            seq_of(&first)?
        };
        Ok(Bounds {
            last,
            first,
            found: seq.parse().ok(),
            epoch,
        })
    }
}

struct Scripts {
    append: Script,
    trim: Script,
    bounds: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            append: Script::new(APPEND),
            trim: Script::new(TRIM),
            bounds: Script::new(BOUNDS),
        }
    }
}

/// The Redis [`EventLog`]; see the module documentation.
pub struct RedisLog {
    redis: RedisNode,
    scripts: Arc<Scripts>,
    retention: Retention,
    /// Stops the tail when the log is dropped.
    stop: CancellationToken,
    /// True once the tail has a position.
    following: watch::Receiver<bool>,
}

impl RedisLog {
    /// Starts the tail (which connects in the background) and returns the
    /// log. Needs a tokio runtime.
    pub fn open(redis: RedisNode, retention: Retention, fanout: Arc<dyn Fanout>) -> RedisLog {
        let scripts = Arc::new(Scripts::new());
        let stop = CancellationToken::new();
        let (ready, following) = watch::channel(false);
        let tail = Tail {
            redis: redis.clone(),
            scripts: scripts.clone(),
            fanout,
            stop: stop.clone(),
            position: None,
            control: None,
            failing: false,
            ready,
            epoch: None,
        };
        tokio::spawn(tail.run());
        RedisLog {
            redis,
            scripts,
            retention,
            stop,
            following,
        }
    }

    async fn append_now(&self, drafts: Vec<Draft>) -> Result<Vec<Arc<Event>>, StoreError> {
        // All or nothing, decided before the script's first write.
        let mut seen = HashSet::new();
        for id in drafts.iter().filter_map(|d| d.id.as_deref()) {
            if !seen.insert(id) {
                return Err(StoreError::DuplicateId(id.to_owned()));
            }
        }
        let time = now_ms();
        let mut records = Vec::with_capacity(drafts.len());
        for draft in &drafts {
            let record = encode(&Event::new(0, draft.clone(), time), draft.id.is_some())?;
            records.push(record);
        }
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .key(&self.redis.keys.events)
            .key(&self.redis.keys.ids)
            .key(&self.redis.keys.epoch)
            .arg(self.retention.max_events)
            .arg(uuid::Uuid::new_v4().to_string());
        for (draft, record) in drafts.iter().zip(&records) {
            invocation
                .arg(draft.id.as_deref().unwrap_or(""))
                .arg(time)
                .arg(record.as_slice());
        }
        let mut conn = self.redis.conn();
        let answer: Vec<String> = self
            .redis
            .run(
                "cannot append to the history",
                invocation.invoke_async(&mut conn),
            )
            .await?;
        match answer.split_first() {
            Some((status, rest)) if status == "duplicate" => Err(StoreError::DuplicateId(
                rest.first().cloned().unwrap_or_default(),
            )),
            Some((status, ids)) if status == "ok" && ids.len() == drafts.len() => drafts
                .into_iter()
                .zip(ids)
                .map(|(draft, id)| Ok(Arc::new(Event::new(seq_of(id)?, draft, time))))
                .collect(),
            _ => Err(StoreError::Unavailable(
                "unexpected answer from the append script".to_owned(),
            )),
        }
    }

    async fn range(&self, cmd: redis::Cmd, what: &str) -> Result<Vec<Arc<Event>>, StoreError> {
        let mut conn = self.redis.conn();
        let reply: StreamRangeReply = self.redis.run(what, cmd.query_async(&mut conn)).await?;
        reply
            .ids
            .iter()
            .map(|entry| decode_entry(entry).map(Arc::new))
            .collect()
    }

    async fn bounds(&self, publisher_id: &str) -> Result<Bounds, StoreError> {
        let mut conn = self.redis.conn();
        self.redis
            .run(
                "cannot read the history",
                bounds_query(&mut conn, &self.scripts, &self.redis.keys, publisher_id),
            )
            .await
            .and_then(Bounds::parse)
    }
}

impl Drop for RedisLog {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl EventLog for RedisLog {
    fn append(&self, drafts: Vec<Draft>) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
        self.append_now(drafts).boxed()
    }

    fn read_after(
        &self,
        after: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, StoreError>> {
        async move {
            let Some(start) = after.checked_add(1).filter(|_| limit > 0) else {
                return Ok(Vec::new());
            };
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(&self.redis.keys.events)
                .arg(format!("0-{start}"))
                .arg("+")
                .arg("COUNT")
                .arg(limit);
            self.range(cmd, "cannot read the history").await
        }
        .boxed()
    }

    fn resolve(&self, id: &str) -> BoxFuture<'_, Result<Cursor, StoreError>> {
        let id = id.to_owned();
        async move {
            // The embedded engine's rules: a hub id is valid while issued
            // and not trimmed, and the one right before the oldest retained
            // event is a valid point to resume from; a publisher id while
            // its event is retained.
            // Only the canonical decimal form is a hub id (`+5` and `05`
            // may be publishers' ids): see `event::hub_sequence`.
            Ok(match pushwire_core::event::hub_sequence(&id) {
                Some(seq) => {
                    let b = self.bounds("").await?;
                    if seq <= b.last && seq.saturating_add(1) >= b.first {
                        Cursor::After(seq)
                    } else {
                        Cursor::Unknown
                    }
                }
                None => {
                    let b = self.bounds(&id).await?;
                    match b.found {
                        Some(seq) if seq.saturating_add(1) >= b.first => Cursor::After(seq),
                        _ => Cursor::Unknown,
                    }
                }
            })
        }
        .boxed()
    }

    /// The hub reads this right after registering a stream. It waits until
    /// the tail knows where it starts: the tail's start is then at or
    /// before the answer, so every later event reaches the new stream.
    fn last(&self) -> BoxFuture<'_, Result<Option<Arc<Event>>, StoreError>> {
        async move {
            let mut following = self.following.clone();
            match tokio::time::timeout(COMMAND_TIMEOUT, following.wait_for(|f| *f)).await {
                Ok(Ok(_)) => {}
                _ => {
                    return Err(StoreError::Unavailable(
                        "not yet following the Redis event stream".to_owned(),
                    ))
                }
            }
            let mut cmd = redis::cmd("XREVRANGE");
            cmd.arg(&self.redis.keys.events)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1);
            Ok(self
                .range(cmd, "cannot read the history")
                .await?
                .into_iter()
                .next())
        }
        .boxed()
    }

    fn trim(&self, now_ms: u64) -> BoxFuture<'_, Result<usize, StoreError>> {
        async move {
            let cutoff = now_ms.saturating_sub(
                u64::try_from(self.retention.max_age.as_millis()).unwrap_or(u64::MAX),
            );
            let mut invocation = self.scripts.trim.prepare_invoke();
            invocation
                .key(&self.redis.keys.events)
                .key(&self.redis.keys.ids)
                .arg(self.retention.max_events)
                .arg(cutoff)
                .arg(MAX_TRIM_PER_CALL);
            let mut conn = self.redis.conn();
            self.redis
                .run(
                    "cannot trim the history",
                    invocation.invoke_async(&mut conn),
                )
                .await
        }
        .boxed()
    }
}

/// Follows the event and control streams for this node; see the module
/// documentation.
struct Tail {
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
}

impl Tail {
    /// Follows until stopped; after an error, connects again every
    /// [`RECONNECT_DELAY`] and continues from the last sequence it saw.
    async fn run(mut self) {
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
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT_DELAY) => {}
            }
        }
    }

    /// Connects, checks continuity, then reads until an error or the stop.
    async fn follow(&mut self) -> Result<(), StoreError> {
        let mut conn = self
            .redis
            .dedicated()
            .await
            .map_err(|e| unavailable("cannot connect to Redis", e))?;
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
        let b = Bounds::parse(bounded(bounds_query(conn, &self.scripts, &keys, "")).await?)?;
        let lost = match (&self.epoch, self.position) {
            (Some(known), _) if !known.is_empty() && *known != b.epoch => true,
            (_, Some(seen)) => b.last < seen,
            _ => false,
        };
        self.epoch = Some(b.epoch.clone());
        let from = match self.position {
            Some(seen) if lost => {
                tracing::error!(
                    seen,
                    redis_last = b.last,
                    "the Redis history went backwards (Redis lost acknowledged data: \
                     run it with appendonly yes and appendfsync always); ending local \
                     streams so they resume from what is there"
                );
                self.fanout.resync();
                b.last
            }
            Some(seen) => seen,
            None => b.last,
        };
        self.position = Some(from);
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
        let mut events = Vec::with_capacity(entries.len());
        for entry in entries {
            match decode_entry(entry) {
                Ok(event) => events.push(Arc::new(event)),
                Err(error) => {
                    tracing::error!(%error, id = %entry.id, "skipping an unreadable event")
                }
            }
        }
        if !events.is_empty() {
            self.fanout.deliver(&events);
        }
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
    fn entry_ids_are_sequence_numbers() {
        assert_eq!(seq_of("0-1").ok(), Some(1));
        assert_eq!(seq_of("0-18446744073709551615").ok(), Some(u64::MAX));
        // Entries pushwire did not write (time-based ids) are refused.
        assert!(seq_of("1700000000000-0").is_err());
        assert!(seq_of("0-x").is_err());
    }

    #[test]
    fn bounds_of_an_empty_history_resume_after_the_last_issued() {
        let parsed = |last: &str, first: &str, seq: &str| {
            Bounds::parse((last.into(), first.into(), seq.into(), "e".into())).ok()
        };
        let empty = parsed("0-7", "", "").map(|b| (b.last, b.first, b.found));
        assert_eq!(empty, Some((7, 8, None)));
        let kept = parsed("0-9", "0-5", "6").map(|b| (b.last, b.first, b.found));
        assert_eq!(kept, Some((9, 5, Some(6))));
        assert!(parsed("1-1", "", "").is_none());
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let keys = Keys::new("app");
        assert_eq!(keys.events, "app:events");
        assert_eq!(keys.node_users("n1"), "app:node:n1:users");
    }
}
