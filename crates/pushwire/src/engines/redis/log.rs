//! The Redis [`EventLog`]: the shared history in one Redis Stream
//! (`<prefix>:events`, see docs/cluster.md).
//!
//! Sequence numbers are the stream entry ids `0-<seq>`: Redis (7.0 or newer)
//! gives `XADD <key> 0-*` the id after the last one it ever generated, so
//! sequence numbers are contiguous, strictly increasing and never reused,
//! even after trimming. The hub's event id is the sequence number and the
//! event's tag (`pushwire_core::id`), exactly as with the embedded engine,
//! and each entry carries the record the embedded engine also writes (`r`,
//! see `pushwire_core::record`), so every node decodes an event the same
//! way. Three more fields serve retention and resumes: `t` (the time, in
//! milliseconds), `i` (the publisher-supplied id, if any) and `g` (the tag
//! of a hub id). What retention removes last leaves its tag in
//! `<prefix>:boundary`, so the id of that event still resumes. A history
//! that Redis lost or restored from an older copy hands sequence numbers
//! out again, but with other tags: a client holding an id of the lost
//! events gets a reset.
//!
//! Writes are Lua scripts, so each is atomic: `append` checks every
//! publisher-supplied id against `<prefix>:ids` before its first write (a
//! script is not rolled back), adds the batch and trims beyond
//! `max_events`; `trim` drops what is too old together with its ids. A
//! publish is acknowledged once Redis acknowledged the script.
//!
//! Users' last-seen cursors (`pushwire_core::seen`) are one hash,
//! `<prefix>:seen` (user → `<seq>:<tag>`), shared by every node: the
//! [`SEEN`] script keeps the greater sequence per user, so a node that
//! flushes late never moves a cursor back. Past `MAX_CURSORS` users, each
//! write also prunes a page of the cursors older than the retained history
//! (`<prefix>:seen-scan` keeps where the scan is).
//!
//! `append` does not hand events to the fanout: the node's tail (see
//! `tail.rs`) does, in the shared history's order, just after. A stream
//! starts only once the tail knows where it starts ([`RedisLog`]'s `last`
//! waits for it), so every later event reaches it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::future::{BoxFuture, FutureExt};
use redis::streams::{StreamId, StreamRangeReply};
use redis::{RedisError, Script, Value};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use prometheus_client::metrics::counter::Counter;
use pushwire_core::event::{Draft, Event};
use pushwire_core::id::{fresh_tag, locate, HubId, Span, PUBLISHER_ID};
use pushwire_core::log::{now_ms, Cursor, EventLog, Fanout, Retained, Retention, StoreError};
use pushwire_core::record::{decode, encode};
use pushwire_core::seen::{Seen, SeenStore, MAX_CURSORS};

use super::tail::Tail;
use super::{unavailable, Keys, RedisNode, COMMAND_TIMEOUT};

/// Most events one `trim` removes; the rest go on the next call.
const MAX_TRIM_PER_CALL: usize = 100_000;
/// With `--redis-replicas-ack`, how long a publish waits for the replicas
/// (Redis's `WAIT` timeout): well within [`COMMAND_TIMEOUT`].
pub const REPLICA_ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);
/// How long readiness waits for Redis to answer: shorter than a load
/// balancer's probe timeout, so that a hung Redis reads as not ready.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// KEYS: events, ids, epoch, boundary. ARGV: max_events, an epoch for a
/// new history, then per event: publisher id (or empty), time, record, tag
/// (`0` for a publisher id). Refuses the whole batch if a publisher id is
/// taken (before any write); otherwise adds every event, records the
/// publisher ids, trims beyond max_events (with the ids of what goes,
/// keeping the tag of the newest removed) and returns `{"ok", id...}`.
const APPEND: &str = r#"
local events, ids, epoch, boundary = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local max = tonumber(ARGV[1])
for i = 3, #ARGV, 4 do
  if ARGV[i] ~= '' and redis.call('HEXISTS', ids, ARGV[i]) == 1 then
    return {'duplicate', ARGV[i]}
  end
end
redis.call('SET', epoch, ARGV[2], 'NX')
local out = {'ok'}
for i = 3, #ARGV, 4 do
  local id
  if ARGV[i] == '' then
    id = redis.call('XADD', events, '0-*', 't', ARGV[i + 1], 'r', ARGV[i + 2], 'g', ARGV[i + 3])
  else
    id = redis.call('XADD', events, '0-*', 't', ARGV[i + 1], 'r', ARGV[i + 2], 'i', ARGV[i])
    redis.call('HSET', ids, ARGV[i], string.sub(id, 3))
  end
  out[#out + 1] = id
end
local excess = redis.call('XLEN', events) - max
if excess > 0 then
  local tag = '0'
  for _, entry in ipairs(redis.call('XRANGE', events, '-', '+', 'COUNT', excess)) do
    local f = entry[2]
    tag = '0'
    for j = 1, #f, 2 do
      if f[j] == 'i' then redis.call('HDEL', ids, f[j + 1]) tag = 'p' elseif f[j] == 'g' then tag = f[j + 1] end
    end
  end
  redis.call('XTRIM', events, 'MAXLEN', max)
  redis.call('SET', boundary, tag)
end
return out
"#;

/// KEYS: seen, events, seen scan position. ARGV: most cursors to keep
/// before pruning, then per user: user, sequence, tag. Sets each user's
/// cursor unless the one stored has a greater or equal sequence (compared
/// as decimal text, exactly, not as Lua's doubles). Past the most, each
/// call also looks at one page of the hash (resuming an `HSCAN` where the
/// last call left it) and drops the cursors older than the oldest
/// retained event: bounded work per call, however large the hash.
const SEEN: &str = r#"
local seen, events, scan = KEYS[1], KEYS[2], KEYS[3]
local function less(a, b)
  return #a < #b or (#a == #b and a < b)
end
for i = 2, #ARGV, 3 do
  local kept = redis.call('HGET', seen, ARGV[i])
  local newer = true
  if kept then
    local seq = string.match(kept, '^(%d+)')
    if seq then newer = less(seq, ARGV[i + 1]) end
  end
  if newer then
    redis.call('HSET', seen, ARGV[i], ARGV[i + 1] .. ':' .. ARGV[i + 2])
  end
end
if redis.call('HLEN', seen) <= tonumber(ARGV[1]) then return 0 end
local first = redis.call('XRANGE', events, '-', '+', 'COUNT', 1)
if #first == 0 then return 0 end
local oldest = tonumber(string.sub(first[1][1], 3))
local page = redis.call('HSCAN', seen, redis.call('GET', scan) or '0', 'COUNT', 1000)
redis.call('SET', scan, page[1])
local gone = 0
local fields = page[2]
for j = 1, #fields, 2 do
  local seq = tonumber(string.match(fields[j + 1], '^(%d+)') or '0')
  if seq + 1 < oldest then
    redis.call('HDEL', seen, fields[j])
    gone = gone + 1
  end
end
return gone
"#;

/// KEYS: events, ids, boundary. ARGV: max_events, cutoff (ms), most to
/// remove. Removes the oldest entries while there are more than max_events
/// or they are older than the cutoff, with their publisher ids, keeping the
/// tag of the newest removed; returns how many.
const TRIM: &str = r#"
local events, ids, boundary = KEYS[1], KEYS[2], KEYS[3]
local max, cutoff, most = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local len = redis.call('XLEN', events)
local gone = 0
local tag = '0'
local from = '-'
-- The oldest entry alone first: most calls find it young enough and stop.
local count = 1
while gone < most do
  local page = redis.call('XRANGE', events, from, '+', 'COUNT', count)
  if #page == 0 then break end
  local stop = false
  for _, entry in ipairs(page) do
    local f = entry[2]
    local time, pid, g = 0, nil, '0'
    for j = 1, #f, 2 do
      if f[j] == 't' then time = tonumber(f[j + 1])
      elseif f[j] == 'i' then pid = f[j + 1]
      elseif f[j] == 'g' then g = f[j + 1] end
    end
    if gone >= most or (len - gone <= max and time >= cutoff) then stop = true break end
    if pid then redis.call('HDEL', ids, pid) g = 'p' end
    tag = g
    gone = gone + 1
  end
  if stop or #page < count then break end
  from = '(' .. page[#page][1]
  count = 256
end
if gone > 0 then
  redis.call('XTRIM', events, 'MAXLEN', len - gone)
  redis.call('SET', boundary, tag)
end
return gone
"#;

/// KEYS: events, ids, epoch, boundary. ARGV: a publisher id or empty, a
/// sequence number or empty. Returns the last generated id ("0-0" for
/// none), the oldest retained id (empty for none), the sequence of the
/// publisher id (empty when unknown), the history's epoch (empty before the
/// first append), the tag of the newest event retention removed ("0" for
/// none) and the tag of the event with that sequence number (empty when it
/// is not retained, "0" when it has none). A tag is `p` for an event with a
/// publisher's id.
const BOUNDS: &str = r#"
local events, ids, epoch, boundary = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
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
local tag = ''
if ARGV[2] ~= '' then
  local at = '0-' .. ARGV[2]
  local found = redis.call('XRANGE', events, at, at)
  if #found > 0 then
    tag = '0'
    local f = found[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'g' then tag = f[j + 1] elseif f[j] == 'i' then tag = 'p' end
    end
  end
end
return {last, first, seq, redis.call('GET', epoch) or '', redis.call('GET', boundary) or '0', tag}
"#;

/// Where the stream stands.
#[derive(Debug, Clone)]
pub(super) struct Bounds {
    /// The last sequence ever generated (0: none).
    pub(super) last: u64,
    /// The oldest retained sequence, or `last + 1` when none is.
    pub(super) first: u64,
    /// The sequence of the publisher id asked about, if retained.
    pub(super) found: Option<u64>,
    /// Set by the first append to a new history: another value means the
    /// history was lost and started over.
    pub(super) epoch: String,
    /// The tag of the newest event retention removed (0: none, or untagged).
    pub(super) boundary_tag: u64,
    /// The tag of the event asked about, if it is retained.
    pub(super) tag: Option<u64>,
}

/// The bounds script's answer, as Redis gives it (see [`BOUNDS`]).
pub(super) type BoundsReply = (String, String, String, String, String, String);

/// What the bounds script is asked about besides the bounds.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Lookup<'a> {
    /// A publisher-supplied id, for its sequence number.
    pub(super) publisher_id: &'a str,
    /// A sequence number, for its event's tag.
    pub(super) seq: Option<u64>,
}

/// The sequence number of an entry id `0-<seq>`.
pub(super) fn seq_of(id: &str) -> Result<u64, StoreError> {
    id.strip_prefix("0-")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            StoreError::Unavailable(format!(
                "the event stream holds entry `{id}`, which pushwire did not write"
            ))
        })
}

pub(super) fn decode_entry(entry: &StreamId) -> Result<Event, StoreError> {
    let seq = seq_of(&entry.id)?;
    match entry.map.get("r") {
        Some(Value::BulkString(bytes)) => decode(seq, bytes),
        _ => Err(StoreError::Unavailable(format!(
            "stored event {seq} has no record"
        ))),
    }
}

/// Runs the bounds script, as Redis answers it.
pub(super) async fn bounds_query(
    conn: &mut impl redis::aio::ConnectionLike,
    scripts: &Scripts,
    keys: &Keys,
    lookup: Lookup<'_>,
) -> Result<BoundsReply, RedisError> {
    scripts
        .bounds
        .key(&keys.events)
        .key(&keys.ids)
        .key(&keys.epoch)
        .key(&keys.boundary)
        .arg(lookup.publisher_id)
        .arg(lookup.seq.map(|s| s.to_string()).unwrap_or_default())
        .invoke_async(conn)
        .await
}

/// A tag as the scripts answer it: decimal, `0` for none, `p` for an event
/// with a publisher's id.
fn parse_tag(text: &str) -> Result<u64, StoreError> {
    if text == "p" {
        return Ok(PUBLISHER_ID);
    }
    text.parse().map_err(|_| {
        StoreError::Unavailable(format!(
            "the history holds the tag `{text}`, which pushwire did not write"
        ))
    })
}

impl Bounds {
    pub(super) fn parse(
        (last, first, seq, epoch, boundary, tag): BoundsReply,
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
            boundary_tag: parse_tag(&boundary)?,
            tag: match tag.as_str() {
                "" => None,
                text => Some(parse_tag(text)?),
            },
        })
    }
}

pub(super) struct Scripts {
    append: Script,
    trim: Script,
    seen: Script,
    pub(super) bounds: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            append: Script::new(APPEND),
            trim: Script::new(TRIM),
            seen: Script::new(SEEN),
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
    /// The last sequence number the tail handed to the fanout (or knows
    /// it starts after), for `/metrics`.
    delivered: Arc<AtomicU64>,
    /// Cursors kept in `<prefix>:seen` before older ones are pruned.
    max_cursors: usize,
}

impl RedisLog {
    /// Starts the tail (which connects in the background) and returns the
    /// log. Needs a tokio runtime.
    pub fn open(redis: RedisNode, retention: Retention, fanout: Arc<dyn Fanout>) -> RedisLog {
        RedisLog::open_counted(redis, retention, fanout, Counter::default())
    }

    /// [`RedisLog::open`], the tail counting in `reconnects` each time it
    /// connects again after losing Redis (`pushwire_redis_reconnects_total`).
    pub fn open_counted(
        redis: RedisNode,
        retention: Retention,
        fanout: Arc<dyn Fanout>,
        reconnects: Counter,
    ) -> RedisLog {
        let scripts = Arc::new(Scripts::new());
        let stop = CancellationToken::new();
        let (ready, following) = watch::channel(false);
        let delivered = Arc::new(AtomicU64::new(0));
        let tail = Tail::new(
            redis.clone(),
            scripts.clone(),
            fanout,
            stop.clone(),
            ready,
            delivered.clone(),
            reconnects,
        );
        tokio::spawn(tail.run());
        RedisLog {
            redis,
            scripts,
            retention,
            stop,
            following,
            delivered,
            max_cursors: MAX_CURSORS,
        }
    }

    /// Prunes last-seen cursors past `max` instead of `MAX_CURSORS` (a
    /// test sees the pruning without a million users).
    pub fn with_max_cursors(mut self, max: usize) -> RedisLog {
        self.max_cursors = max;
        self
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
            let tag = if draft.id.is_none() { fresh_tag() } else { 0 };
            let record = encode(
                &Event::stored(0, draft.clone(), time, tag),
                draft.id.is_some(),
            )?;
            records.push((record, tag));
        }
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .key(&self.redis.keys.events)
            .key(&self.redis.keys.ids)
            .key(&self.redis.keys.epoch)
            .key(&self.redis.keys.boundary)
            .arg(self.retention.max_events)
            .arg(uuid::Uuid::new_v4().to_string());
        for (draft, (record, tag)) in drafts.iter().zip(&records) {
            invocation
                .arg(draft.id.as_deref().unwrap_or(""))
                .arg(time)
                .arg(record.as_slice())
                .arg(tag);
        }
        let answer = self.run_append(&invocation).await?;
        match answer.split_first() {
            Some((status, rest)) if status == "duplicate" => Err(StoreError::DuplicateId(
                rest.first().cloned().unwrap_or_default(),
            )),
            Some((status, ids)) if status == "ok" && ids.len() == drafts.len() => drafts
                .into_iter()
                .zip(ids)
                .zip(&records)
                .map(|((draft, id), (_, tag))| {
                    Ok(Arc::new(Event::stored(seq_of(id)?, draft, time, *tag)))
                })
                .collect(),
            _ => Err(StoreError::Unavailable(
                "unexpected answer from the append script".to_owned(),
            )),
        }
    }

    /// Runs the append script; with `--redis-replicas-ack N`, `WAIT N` in
    /// the same pipeline, so on the very connection that wrote (a `WAIT` on
    /// another connection would wait for nothing), and refuses the publish
    /// when fewer than N replicas took it within [`REPLICA_ACK_TIMEOUT`].
    async fn run_append(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Vec<String>, StoreError> {
        const WHAT: &str = "cannot append to the history";
        let wanted = self.redis.replicas_ack;
        if wanted == 0 {
            let mut conn = self.redis.primary_conn().await?;
            return self
                .redis
                .run(WHAT, invocation.invoke_async(&mut conn))
                .await;
        }
        let mut conn = self.redis.append_conn().await?;
        let mut pipe = redis::pipe();
        pipe.invoke_script(invocation)
            .cmd("WAIT")
            .arg(wanted)
            .arg(REPLICA_ACK_TIMEOUT.as_millis() as u64);
        let mut answer = pipe.query_async::<(Vec<String>, usize)>(&mut conn).await;
        if let Err(e) = &answer {
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
                // Redis does not know the script yet (it started, or this
                // is the first append): nothing ran; load it and try once
                // more.
                self.redis
                    .run(WHAT, invocation.load_async(&mut conn))
                    .await?;
                answer = pipe.query_async(&mut conn).await;
            }
        }
        let (ids, acked) = self.redis.run(WHAT, async { answer }).await?;
        if acked < wanted && ids.first().is_some_and(|status| status == "ok") {
            return Err(StoreError::Unavailable(format!(
                "{acked} of the {wanted} replicas asked for (--redis-replicas-ack) took the \
                 publish within {REPLICA_ACK_TIMEOUT:?}; it is stored on the primary only, \
                 and a failover may lose it: retry with the same id"
            )));
        }
        Ok(ids)
    }

    async fn range(&self, cmd: redis::Cmd, what: &str) -> Result<Vec<Arc<Event>>, StoreError> {
        let mut conn = self.redis.primary_conn().await?;
        let reply: StreamRangeReply = self.redis.run(what, cmd.query_async(&mut conn)).await?;
        reply
            .ids
            .iter()
            .map(|entry| decode_entry(entry).map(Arc::new))
            .collect()
    }

    async fn bounds(&self, lookup: Lookup<'_>) -> Result<Bounds, StoreError> {
        let mut conn = self.redis.primary_conn().await?;
        self.redis
            .run(
                "cannot read the history",
                bounds_query(&mut conn, &self.scripts, &self.redis.keys, lookup),
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

impl SeenStore for RedisLog {
    fn load<'a>(&'a self, user: &'a str) -> BoxFuture<'a, Result<Option<Seen>, StoreError>> {
        async move {
            let mut conn = self.redis.primary_conn().await?;
            let mut cmd = redis::cmd("HGET");
            cmd.arg(&self.redis.keys.seen).arg(user);
            let kept: Option<String> = self
                .redis
                .run("cannot read a last-seen cursor", cmd.query_async(&mut conn))
                .await?;
            // A value this release did not write is no cursor at all.
            Ok(kept.as_deref().and_then(Seen::from_text))
        }
        .boxed()
    }

    fn store(&self, batch: Vec<(Arc<str>, Seen)>) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            let mut invocation = self.scripts.seen.prepare_invoke();
            invocation
                .key(&self.redis.keys.seen)
                .key(&self.redis.keys.events)
                .key(format!("{}-scan", self.redis.keys.seen))
                .arg(self.max_cursors);
            for (user, seen) in &batch {
                invocation.arg(&**user).arg(seen.seq).arg(seen.tag);
            }
            let mut conn = self.redis.primary_conn().await?;
            let _: i64 = self
                .redis
                .run(
                    "cannot store last-seen cursors",
                    invocation.invoke_async(&mut conn),
                )
                .await?;
            Ok(())
        }
        .boxed()
    }
}

impl EventLog for RedisLog {
    fn cursors(&self) -> Option<&dyn SeenStore> {
        Some(self)
    }

    /// Ready when Redis answers a `PING` within [`READY_TIMEOUT`] and the
    /// tail has found its position (before that, new streams wait).
    fn ready(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async move {
            if !*self.following.borrow() {
                return Err(StoreError::Unavailable(
                    "this node has not yet found its place in the Redis history".to_owned(),
                ));
            }
            let mut conn = self.redis.primary_conn().await?;
            let ping = redis::cmd("PING");
            let ping = ping.query_async::<String>(&mut conn);
            let answer = match tokio::time::timeout(READY_TIMEOUT, ping).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => unavailable("Redis refused PING", e),
                Err(_) => StoreError::Unavailable(format!(
                    "Redis did not answer PING within {READY_TIMEOUT:?}"
                )),
            };
            // With sentinels, the primary may have moved.
            self.redis.suspect();
            Err(answer)
        }
        .boxed()
    }

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
            // The embedded engine's rules (`pushwire_core::id::locate`): a
            // hub id is valid for the event it was issued for while that is
            // retained or is the newest one retention removed; a publisher
            // id while its event is retained. Only the canonical form is a
            // hub id (`+5` and `05` may be publishers' ids).
            Ok(match HubId::parse(&id) {
                Some(hub_id) => {
                    let lookup = Lookup {
                        seq: Some(hub_id.seq),
                        ..Lookup::default()
                    };
                    let b = self.bounds(lookup).await?;
                    let span = Span {
                        first: b.first,
                        next: b.last.saturating_add(1),
                        boundary_tag: b.boundary_tag,
                    };
                    locate(hub_id, span, |_| Ok::<_, StoreError>(b.tag))?
                }
                None => {
                    let lookup = Lookup {
                        publisher_id: &id,
                        ..Lookup::default()
                    };
                    let b = self.bounds(lookup).await?;
                    match b.found {
                        Some(seq) if seq.saturating_add(1) >= b.first => Cursor::After(seq),
                        _ => Cursor::Unknown,
                    }
                }
            })
        }
        .boxed()
    }

    /// The default's bounds, and how far this node's tail is behind them.
    /// The tail's place is read first: a batch delivered meanwhile makes
    /// the lag look larger for one scrape, never smaller.
    fn retained(&self) -> BoxFuture<'_, Result<Retained, StoreError>> {
        async move {
            let delivered = self.delivered.load(Ordering::Relaxed);
            let oldest = self.read_after(0, 1).await?.first().map(|e| e.seq);
            let newest = self.last().await?.map(|e| e.seq);
            Ok(Retained {
                undelivered: newest.map_or(0, |n| n.saturating_sub(delivered)),
                ..Retained::span(oldest, newest)
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
                .key(&self.redis.keys.boundary)
                .arg(self.retention.max_events)
                .arg(cutoff)
                .arg(MAX_TRIM_PER_CALL);
            let mut conn = self.redis.primary_conn().await?;
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
            let reply = (
                last.into(),
                first.into(),
                seq.into(),
                "e".into(),
                "0".into(),
                String::new(),
            );
            Bounds::parse(reply).ok()
        };
        let empty = parsed("0-7", "", "").map(|b| (b.last, b.first, b.found));
        assert_eq!(empty, Some((7, 8, None)));
        let kept = parsed("0-9", "0-5", "6").map(|b| (b.last, b.first, b.found));
        assert_eq!(kept, Some((9, 5, Some(6))));
        assert!(parsed("1-1", "", "").is_none());
    }
}
