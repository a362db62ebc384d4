//! The webhook outbox: messages written before they count as sent, their
//! delivery state, the failed ones, and who was announced online. Kept by
//! the same engine as the history: in memory (`--storage memory`), in its
//! own file beside the embedded history, or in the cluster's Redis.
//!
//! Each message has a place in the outbox (`seq`, increasing): the sender
//! reads the outbox in that order. A retried failed message is written
//! again at the end, under the same `webhook-id`.
//!
//! The announced set (user → when their presence was last confirmed, in
//! ms) is what makes `user.online` and `user.offline` come in pairs across
//! restarts and nodes: a user is announced online once, when they are not
//! in the set, and offline once, by whoever removes them from it.

mod embedded;
mod memory;
mod redis;

use std::time::Duration;

use futures_util::future::BoxFuture;

use pushwire_core::log::StoreError;

use super::message::Message;

pub use embedded::EmbeddedStore;
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// Most failed messages kept; beyond it the oldest failure is dropped
/// (and logged when it is given up, like every failure).
pub const MAX_FAILED: usize = 100_000;

/// A message at its place in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    pub seq: u64,
    pub message: Message,
}

pub type Answer<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

pub trait Store: Send + Sync {
    /// Writes messages at the end of the outbox; once this returns they
    /// are as durable as the engine makes anything.
    fn enqueue(&self, messages: Vec<Message>) -> Answer<'_, ()>;

    /// Confirms that `user` is present at `now_ms`. When they were not in
    /// the announced set, adds them and writes `message` (their
    /// `user.online`, if that type is on) in the same step: `true`.
    fn come_online<'a>(
        &'a self,
        user: &'a str,
        now_ms: u64,
        message: Option<Message>,
    ) -> Answer<'a, bool>;

    /// The announced set: user → the time their presence was last confirmed.
    fn announced(&self) -> Answer<'_, Vec<(String, u64)>>;

    /// Removes `user` from the announced set, and writes `message` (their
    /// `user.offline`) in the same step, only if their entry still reads
    /// `confirmed_ms` (nobody confirmed them since): `true` when it did.
    fn go_offline<'a>(
        &'a self,
        user: &'a str,
        confirmed_ms: u64,
        message: Option<Message>,
    ) -> Answer<'a, bool>;

    /// Up to `limit` messages after place `after`, in order.
    fn pending(&self, after: u64, limit: usize) -> Answer<'_, Vec<Queued>>;

    /// Stores a message's new delivery state (attempts, next, last error).
    fn save<'a>(&'a self, queued: &'a Queued) -> Answer<'a, ()>;

    /// Removes a delivered message.
    fn delivered(&self, seq: u64) -> Answer<'_, ()>;

    /// Moves a message to the failed list, dropping the oldest failures
    /// beyond `keep` (the sender keeps [`MAX_FAILED`]).
    fn give_up<'a>(&'a self, queued: &'a Queued, keep: usize) -> Answer<'a, ()>;

    /// The failed messages, oldest failure first, at most `limit`.
    fn failed(&self, limit: usize) -> Answer<'_, Vec<Message>>;

    /// Writes a failed message again at the end of the outbox, attempts
    /// reset; `false` when no failed message has that id.
    fn retry<'a>(&'a self, id: &'a str) -> Answer<'a, bool>;

    /// Messages waiting (not delivered, not failed).
    fn backlog(&self) -> Answer<'_, u64>;

    /// Takes or keeps the right to send for `ttl`: in a cluster, one node
    /// at a time holds it. A single node always does.
    fn lease<'a>(&'a self, node: &'a str, ttl: Duration) -> Answer<'a, bool>;
}

/// A failed message as it goes back into the outbox.
fn revived(mut message: Message) -> Message {
    message.attempts = 0;
    message.next_ms = 0;
    message.failed_ms = None;
    message
}

fn encode(message: &Message) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(message)
        .map_err(|e| StoreError::Unavailable(format!("cannot encode a webhook message: {e}")))
}

fn decode(bytes: &[u8]) -> Result<Message, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| {
        StoreError::Unavailable(format!("a stored webhook message does not read: {e}"))
    })
}

#[cfg(test)]
pub(crate) mod contract {
    //! What every store must do, run against each of them.
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    pub async fn keeps_order_state_and_failures(store: &dyn Store) {
        let a = Message::user_online("a");
        let b = Message::user_online("b");
        store.enqueue(vec![a.clone(), b.clone()]).await.unwrap();
        let pending = store.pending(0, 10).await.unwrap();
        assert_eq!(pending.len(), 2);
        assert!(pending[0].seq < pending[1].seq);
        assert_eq!(pending[0].message, a);
        assert_eq!(store.pending(pending[0].seq, 10).await.unwrap().len(), 1);
        assert_eq!(store.backlog().await.unwrap(), 2);

        let mut first = pending[0].clone();
        first.message.attempts = 2;
        first.message.last_error = Some("HTTP 500".into());
        store.save(&first).await.unwrap();
        assert_eq!(store.pending(0, 1).await.unwrap()[0], first);

        store.delivered(pending[1].seq).await.unwrap();
        first.message.failed_ms = Some(5);
        store.give_up(&first, 2).await.unwrap();
        assert!(store.pending(0, 10).await.unwrap().is_empty());
        assert_eq!(store.backlog().await.unwrap(), 0);
        let failed = store.failed(10).await.unwrap();
        assert_eq!(failed, vec![first.message.clone()]);

        assert!(!store.retry("msg_nobody").await.unwrap());
        assert!(store.retry(&a.id).await.unwrap());
        assert!(store.failed(10).await.unwrap().is_empty());
        let again = store.pending(0, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert!(again[0].seq > pending[1].seq, "written again at the end");
        assert_eq!(again[0].message.id, a.id);
        assert_eq!(again[0].message.attempts, 0);
        assert!(!store.retry(&a.id).await.unwrap(), "once");

        // Beyond `keep`, the oldest failures go.
        store
            .enqueue((0..3).map(|_| Message::user_online("c")).collect())
            .await
            .unwrap();
        let mut kept = Vec::new();
        for (n, mut queued) in store.pending(0, 10).await.unwrap().into_iter().enumerate() {
            queued.message.failed_ms = Some(100 + n as u64);
            store.give_up(&queued, 2).await.unwrap();
            kept.push(queued.message);
        }
        assert_eq!(
            store.failed(10).await.unwrap(),
            kept[kept.len() - 2..].to_vec()
        );
    }

    pub async fn announces_each_user_once(store: &dyn Store) {
        let online = Message::user_online("u");
        assert!(store
            .come_online("u", 10, Some(online.clone()))
            .await
            .unwrap());
        assert!(!store
            .come_online("u", 20, Some(Message::user_online("u")))
            .await
            .unwrap());
        assert_eq!(store.announced().await.unwrap(), vec![("u".to_owned(), 20)]);
        // Confirmed at 20 since: an offline decided on 10 is stale.
        assert!(!store
            .go_offline("u", 10, Some(Message::user_offline("u")))
            .await
            .unwrap());
        let offline = Message::user_offline("u");
        assert!(store
            .go_offline("u", 20, Some(offline.clone()))
            .await
            .unwrap());
        assert!(store.announced().await.unwrap().is_empty());
        let written: Vec<_> = store
            .pending(0, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|q| q.message)
            .collect();
        assert_eq!(written, vec![online, offline]);
        // Without a message (the type is off) the set is kept all the same.
        assert!(store.come_online("v", 1, None).await.unwrap());
        assert_eq!(store.pending(0, 10).await.unwrap().len(), 2);
    }
}
