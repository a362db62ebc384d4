//! The outbox of `--storage memory`: as durable as that history (lost on
//! restart), with the same order and states as the others.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;

use super::{revived, Answer, Queued, Store};
use crate::webhooks::message::Message;

#[derive(Default)]
struct State {
    next: u64,
    pending: BTreeMap<u64, Message>,
    failed: Vec<Message>,
    announced: HashMap<String, u64>,
}

impl State {
    fn push(&mut self, message: Message) {
        self.next += 1;
        self.pending.insert(self.next, message);
    }
}

#[derive(Default)]
pub struct MemoryStore(Mutex<State>);

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemoryStore {
    fn enqueue(&self, messages: Vec<Message>) -> Answer<'_, ()> {
        let mut state = self.lock();
        messages.into_iter().for_each(|m| state.push(m));
        async { Ok(()) }.boxed()
    }

    fn come_online<'a>(
        &'a self,
        user: &'a str,
        now_ms: u64,
        message: Option<Message>,
    ) -> Answer<'a, bool> {
        let mut state = self.lock();
        let new = state.announced.insert(user.to_owned(), now_ms).is_none();
        if let (true, Some(message)) = (new, message) {
            state.push(message);
        }
        async move { Ok(new) }.boxed()
    }

    fn announced(&self) -> Answer<'_, Vec<(String, u64)>> {
        let mut all: Vec<_> = self
            .lock()
            .announced
            .iter()
            .map(|(u, t)| (u.clone(), *t))
            .collect();
        all.sort();
        async move { Ok(all) }.boxed()
    }

    fn go_offline<'a>(
        &'a self,
        user: &'a str,
        confirmed_ms: u64,
        message: Option<Message>,
    ) -> Answer<'a, bool> {
        let mut state = self.lock();
        let current = state.announced.get(user) == Some(&confirmed_ms);
        if current {
            state.announced.remove(user);
            if let Some(message) = message {
                state.push(message);
            }
        }
        async move { Ok(current) }.boxed()
    }

    fn pending(&self, after: u64, limit: usize) -> Answer<'_, Vec<Queued>> {
        let found: Vec<_> = self
            .lock()
            .pending
            .range(after.saturating_add(1)..)
            .take(limit)
            .map(|(seq, message)| Queued {
                seq: *seq,
                message: message.clone(),
            })
            .collect();
        async move { Ok(found) }.boxed()
    }

    fn save<'a>(&'a self, queued: &'a Queued) -> Answer<'a, ()> {
        if let Some(stored) = self.lock().pending.get_mut(&queued.seq) {
            *stored = queued.message.clone();
        }
        async { Ok(()) }.boxed()
    }

    fn delivered(&self, seq: u64) -> Answer<'_, ()> {
        self.lock().pending.remove(&seq);
        async { Ok(()) }.boxed()
    }

    fn give_up<'a>(&'a self, queued: &'a Queued, keep: usize) -> Answer<'a, ()> {
        let mut state = self.lock();
        if state.pending.remove(&queued.seq).is_some() {
            state.failed.push(queued.message.clone());
            let over = state.failed.len().saturating_sub(keep);
            state.failed.drain(..over);
        }
        async { Ok(()) }.boxed()
    }

    fn failed(&self, limit: usize) -> Answer<'_, Vec<Message>> {
        let failed: Vec<_> = self.lock().failed.iter().take(limit).cloned().collect();
        async move { Ok(failed) }.boxed()
    }

    fn retry<'a>(&'a self, id: &'a str) -> Answer<'a, bool> {
        let mut state = self.lock();
        let found = state.failed.iter().position(|m| m.id == id);
        if let Some(at) = found {
            let message = state.failed.remove(at);
            state.push(revived(message));
        }
        async move { Ok(found.is_some()) }.boxed()
    }

    fn backlog(&self) -> Answer<'_, u64> {
        let count = self.lock().pending.len() as u64;
        async move { Ok(count) }.boxed()
    }

    fn lease<'a>(&'a self, _node: &'a str, _ttl: Duration) -> Answer<'a, bool> {
        async { Ok(true) }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::store::contract;

    #[tokio::test]
    async fn keeps_order_state_and_failures() {
        contract::keeps_order_state_and_failures(&MemoryStore::default()).await;
    }

    #[tokio::test]
    async fn announces_each_user_once() {
        contract::announces_each_user_once(&MemoryStore::default()).await;
    }
}
