//! The outbox of a cluster, in its Redis under `<prefix>:webhooks:*`:
//! every change one Lua script, so that two nodes never both announce a
//! user or both send a message. Keys:
//! - `…:seq` the last place given;
//! - `…:pending` (hash seq → message) and `…:queue` (sorted set of
//!   places): the messages waiting, in order;
//! - `…:failed` (hash id → message) and `…:failed-order` (sorted by
//!   time of failure);
//! - `…:announced` (hash user → ms last confirmed present);
//! - `…:sender` the node that holds the right to send, with a TTL.
//!
//! Durability is Redis's (its `appendfsync`), as for the history.

use std::time::Duration;

use futures_util::FutureExt as _;
use redis::{Script, Value};

use pushwire_core::log::StoreError;

use super::{decode, encode, revived, Answer, Queued, Store};
use crate::engines::redis::RedisNode;
use crate::webhooks::message::Message;

/// Places a message at the end: `push(json)`; shared by the scripts.
const PUSH: &str = r"
local function push(json)
  local seq = redis.call('INCR', KEYS[1])
  redis.call('HSET', KEYS[2], seq, json)
  redis.call('ZADD', KEYS[3], seq, seq)
end
";

const ENQUEUE: &str = r"
for i = 1, #ARGV do push(ARGV[i]) end
return #ARGV
";

/// KEYS[4] announced; ARGV user, now, message or ''.
const COME_ONLINE: &str = r"
local existed = redis.call('HEXISTS', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
if existed == 0 and ARGV[3] ~= '' then push(ARGV[3]) end
return 1 - existed
";

/// KEYS[4] announced; ARGV user, confirmed, message or ''.
const GO_OFFLINE: &str = r"
if redis.call('HGET', KEYS[4], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[4], ARGV[1])
if ARGV[3] ~= '' then push(ARGV[3]) end
return 1
";

/// KEYS[3] queue, KEYS[2] pending; ARGV after, limit.
const PENDING: &str = r"
local seqs = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. ARGV[1], '+inf', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, seq in ipairs(seqs) do
  local json = redis.call('HGET', KEYS[2], seq)
  if json then out[#out + 1] = seq; out[#out + 1] = json end
end
return out
";

/// ARGV seq, message.
const SAVE: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 1
";

const DELIVERED: &str = r"
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
";

/// KEYS[5] failed, KEYS[6] failed-order; ARGV seq, id, failed_ms,
/// message, most kept.
const GIVE_UP: &str = r"
if redis.call('HDEL', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[6], ARGV[3], ARGV[2])
while redis.call('ZCARD', KEYS[6]) > tonumber(ARGV[5]) do
  local oldest = redis.call('ZPOPMIN', KEYS[6])
  redis.call('HDEL', KEYS[5], oldest[1])
end
return 1
";

/// ARGV limit.
const FAILED: &str = r"
local ids = redis.call('ZRANGE', KEYS[6], 0, tonumber(ARGV[1]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local json = redis.call('HGET', KEYS[5], id)
  if json then out[#out + 1] = json end
end
return out
";

/// ARGV id, the revived message.
const RETRY: &str = r"
if redis.call('HDEL', KEYS[5], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[6], ARGV[1])
push(ARGV[2])
return 1
";

/// KEYS[7] sender; ARGV node, ttl ms.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[7])
if holder == false then
  redis.call('SET', KEYS[7], ARGV[1], 'PX', ARGV[2])
  return 1
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[7], ARGV[2])
  return 1
end
return 0
";

struct Scripts {
    enqueue: Script,
    come_online: Script,
    go_offline: Script,
    pending: Script,
    save: Script,
    delivered: Script,
    give_up: Script,
    failed: Script,
    retry: Script,
    lease: Script,
}

pub struct RedisStore {
    redis: RedisNode,
    /// seq, pending, queue, announced, failed, failed-order, sender: every
    /// script gets them all, in this order.
    keys: [String; 7],
    scripts: Scripts,
}

impl RedisStore {
    pub fn new(redis: RedisNode) -> RedisStore {
        let key = |name: &str| redis.keys.named(&format!("webhooks:{name}"));
        let keys = [
            key("seq"),
            key("pending"),
            key("queue"),
            key("announced"),
            key("failed"),
            key("failed-order"),
            key("sender"),
        ];
        let with_push = |body: &str| Script::new(&format!("{PUSH}{body}"));
        RedisStore {
            keys,
            scripts: Scripts {
                enqueue: with_push(ENQUEUE),
                come_online: with_push(COME_ONLINE),
                go_offline: with_push(GO_OFFLINE),
                pending: Script::new(PENDING),
                save: Script::new(SAVE),
                delivered: Script::new(DELIVERED),
                give_up: Script::new(GIVE_UP),
                failed: Script::new(FAILED),
                retry: with_push(RETRY),
                lease: Script::new(LEASE),
            },
            redis,
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        args: Vec<Vec<u8>>,
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let mut conn = self.redis.primary_conn().await?;
        self.redis
            .run("webhook outbox", invocation.invoke_async(&mut conn))
            .await
    }
}

fn json(message: &Option<Message>) -> Result<Vec<u8>, StoreError> {
    message.as_ref().map_or(Ok(Vec::new()), encode)
}

fn text(value: impl ToString) -> Vec<u8> {
    value.to_string().into_bytes()
}

impl Store for RedisStore {
    fn enqueue(&self, messages: Vec<Message>) -> Answer<'_, ()> {
        async move {
            let args = messages.iter().map(encode).collect::<Result<Vec<_>, _>>()?;
            let _: Value = self.run(&self.scripts.enqueue, args).await?;
            Ok(())
        }
        .boxed()
    }

    fn come_online<'a>(
        &'a self,
        user: &'a str,
        now_ms: u64,
        message: Option<Message>,
    ) -> Answer<'a, bool> {
        async move {
            let args = vec![text(user), text(now_ms), json(&message)?];
            let new: i64 = self.run(&self.scripts.come_online, args).await?;
            Ok(new == 1)
        }
        .boxed()
    }

    fn announced(&self) -> Answer<'_, Vec<(String, u64)>> {
        async move {
            let mut conn = self.redis.primary_conn().await?;
            let mut all: Vec<(String, u64)> = self
                .redis
                .run(
                    "webhook outbox",
                    redis::cmd("HGETALL")
                        .arg(&self.keys[3])
                        .query_async(&mut conn),
                )
                .await?;
            all.sort();
            Ok(all)
        }
        .boxed()
    }

    fn go_offline<'a>(
        &'a self,
        user: &'a str,
        confirmed_ms: u64,
        message: Option<Message>,
    ) -> Answer<'a, bool> {
        async move {
            let args = vec![text(user), text(confirmed_ms), json(&message)?];
            let done: i64 = self.run(&self.scripts.go_offline, args).await?;
            Ok(done == 1)
        }
        .boxed()
    }

    fn pending(&self, after: u64, limit: usize) -> Answer<'_, Vec<Queued>> {
        async move {
            let flat: Vec<Vec<u8>> = self
                .run(&self.scripts.pending, vec![text(after), text(limit.max(1))])
                .await?;
            flat.chunks_exact(2)
                .map(|pair| {
                    let seq = std::str::from_utf8(&pair[0])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| {
                            StoreError::Unavailable(
                                "webhook outbox: a place is not a number".into(),
                            )
                        })?;
                    Ok(Queued {
                        seq,
                        message: decode(&pair[1])?,
                    })
                })
                .collect()
        }
        .boxed()
    }

    fn save<'a>(&'a self, queued: &'a Queued) -> Answer<'a, ()> {
        async move {
            let args = vec![text(queued.seq), encode(&queued.message)?];
            let _: Value = self.run(&self.scripts.save, args).await?;
            Ok(())
        }
        .boxed()
    }

    fn delivered(&self, seq: u64) -> Answer<'_, ()> {
        async move {
            let _: Value = self.run(&self.scripts.delivered, vec![text(seq)]).await?;
            Ok(())
        }
        .boxed()
    }

    fn give_up<'a>(&'a self, queued: &'a Queued, keep: usize) -> Answer<'a, ()> {
        async move {
            let m = &queued.message;
            let args = vec![
                text(queued.seq),
                text(&m.id),
                text(m.failed_ms.unwrap_or(0)),
                encode(m)?,
                text(keep),
            ];
            let _: Value = self.run(&self.scripts.give_up, args).await?;
            Ok(())
        }
        .boxed()
    }

    fn failed(&self, limit: usize) -> Answer<'_, Vec<Message>> {
        async move {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let all: Vec<Vec<u8>> = self.run(&self.scripts.failed, vec![text(limit)]).await?;
            all.iter().map(|bytes| decode(bytes)).collect()
        }
        .boxed()
    }

    fn retry<'a>(&'a self, id: &'a str) -> Answer<'a, bool> {
        async move {
            let mut conn = self.redis.primary_conn().await?;
            let stored: Option<Vec<u8>> = self
                .redis
                .run(
                    "webhook outbox",
                    redis::cmd("HGET")
                        .arg(&self.keys[4])
                        .arg(id)
                        .query_async(&mut conn),
                )
                .await?;
            let Some(stored) = stored else {
                return Ok(false);
            };
            let args = vec![text(id), encode(&revived(decode(&stored)?))?];
            let done: i64 = self.run(&self.scripts.retry, args).await?;
            Ok(done == 1)
        }
        .boxed()
    }

    fn backlog(&self) -> Answer<'_, u64> {
        async move {
            let mut conn = self.redis.primary_conn().await?;
            self.redis
                .run(
                    "webhook outbox",
                    redis::cmd("HLEN").arg(&self.keys[1]).query_async(&mut conn),
                )
                .await
        }
        .boxed()
    }

    fn lease<'a>(&'a self, node: &'a str, ttl: Duration) -> Answer<'a, bool> {
        async move {
            let args = vec![text(node), text(ttl.as_millis().max(1))];
            let held: i64 = self.run(&self.scripts.lease, args).await?;
            Ok(held == 1)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::webhooks::store::contract;
    use pushwire_testkit::redis::RedisServer;

    fn store(redis: &RedisServer, prefix: &str) -> RedisStore {
        RedisStore::new(RedisNode::new(&redis.url(), prefix).unwrap())
    }

    #[tokio::test]
    async fn keeps_order_state_and_failures() {
        let redis = RedisServer::start();
        contract::keeps_order_state_and_failures(&store(&redis, "a")).await;
    }

    #[tokio::test]
    async fn announces_each_user_once() {
        let redis = RedisServer::start();
        contract::announces_each_user_once(&store(&redis, "b")).await;
    }

    #[tokio::test]
    async fn one_node_at_a_time_holds_the_right_to_send() {
        let redis = RedisServer::start();
        let store = store(&redis, "c");
        let ttl = Duration::from_millis(300);
        assert!(store.lease("n1", ttl).await.unwrap());
        assert!(!store.lease("n2", ttl).await.unwrap());
        assert!(store.lease("n1", ttl).await.unwrap(), "kept by its holder");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            store.lease("n2", ttl).await.unwrap(),
            "taken over once it lapsed"
        );
        assert!(!store.lease("n1", ttl).await.unwrap());
    }
}
