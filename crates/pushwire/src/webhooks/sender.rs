//! The sending loop. On a single node it always runs; in a cluster every
//! node runs it and one at a time holds the right to send (a lease in
//! Redis renewed every [`LEASE_RENEW`]; a node that dies loses it within
//! [`LEASE_TTL`], and the next holder reads the whole outbox again, so
//! messages the dead node had in flight are sent again: at least once).
//!
//! The holder does two things:
//! - **offline**: once a second it compares the announced set with who has
//!   a stream (this node's registry and the other nodes' presence); a user
//!   absent for `--webhook-offline-delay`, and not confirmed present within
//!   it, is removed from the set and their `user.offline` written, in one
//!   step that fails if someone confirmed them meanwhile;
//! - **delivery**: it reads the outbox in order, at most [`LOADED`]
//!   messages at a time, and sends each one once it is at the head of every
//!   key it has (a user's messages in the order they were made), up to
//!   [`IN_FLIGHT`] at once. A 2xx removes it; anything else is tried again
//!   after `--webhook-retry-backoff` doubled per attempt up to
//!   `--webhook-retry-max-delay`, with jitter (the delay drawn between half
//!   and all of it), and given up after `--webhook-max-attempts`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use pushwire_core::hub::Hub;
use pushwire_core::log::{now_ms, StoreError};
use pushwire_core::metrics::WebhookAttempt;

use super::message::{Kind, Message};
use super::store::{Queued, MAX_FAILED};
use super::Webhooks;

/// The loop's tick: how soon a message written on another node, or due
/// again, is looked at.
const TICK: Duration = Duration::from_millis(250);
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
pub const LEASE_TTL: Duration = Duration::from_secs(10);
pub const LEASE_RENEW: Duration = Duration::from_secs(3);
/// Messages held in memory at once; more are read as these go.
const LOADED: usize = 10_000;
/// Requests to the backend at once.
const IN_FLIGHT: usize = 32;

/// The messages read from the outbox and the order they must keep.
#[derive(Default)]
struct Lanes {
    messages: BTreeMap<u64, (Queued, bool)>,
    heads: HashMap<String, VecDeque<u64>>,
}

impl Lanes {
    fn add(&mut self, queued: Queued) {
        for key in &queued.message.keys {
            self.heads
                .entry(key.clone())
                .or_default()
                .push_back(queued.seq);
        }
        self.messages.insert(queued.seq, (queued, false));
    }

    fn len(&self) -> usize {
        self.messages.len()
    }

    /// Up to `limit` messages due by `now` and first in each of their
    /// keys, marked in flight.
    fn ready(&mut self, now: u64, limit: usize) -> Vec<Queued> {
        let mut out = Vec::new();
        for (seq, (queued, flying)) in self.messages.iter_mut() {
            if out.len() >= limit {
                break;
            }
            if *flying || queued.message.next_ms > now {
                continue;
            }
            let first = queued
                .message
                .keys
                .iter()
                .all(|k| self.heads.get(k).and_then(|q| q.front()) == Some(seq));
            if first {
                *flying = true;
                out.push(queued.clone());
            }
        }
        out
    }

    fn finish(&mut self, seq: u64) {
        if let Some((queued, _)) = self.messages.remove(&seq) {
            for key in &queued.message.keys {
                if let Some(lane) = self.heads.get_mut(key) {
                    lane.retain(|s| *s != seq);
                    if lane.is_empty() {
                        self.heads.remove(key);
                    }
                }
            }
        }
    }

    fn later(&mut self, queued: Queued) {
        if let Some(entry) = self.messages.get_mut(&queued.seq) {
            *entry = (queued, false);
        }
    }

    fn clear(&mut self) {
        self.messages.clear();
        self.heads.clear();
    }
}

/// How one attempt ended.
struct Attempt {
    queued: Queued,
    outcome: WebhookAttempt,
    error: Option<String>,
}

impl Webhooks {
    /// Runs until `stop`.
    pub async fn run(self: Arc<Self>, hub: Weak<Hub>, stop: CancellationToken) {
        let mut lanes = Lanes::default();
        let mut loaded = 0u64;
        let mut holder = false;
        let mut last_lease: Option<Instant> = None;
        let mut last_reconcile = Instant::now();
        let mut absent_since: HashMap<String, Instant> = HashMap::new();
        let started = Instant::now();
        let mut flying = FuturesUnordered::new();
        let mut ticks = tokio::time::interval(TICK);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
                _ = self.wake.notified() => {}
                Some(attempt) = flying.next(), if !flying.is_empty() => {
                    self.settle(attempt, &mut lanes).await;
                }
            }
            if last_lease.is_none_or(|at| at.elapsed() >= LEASE_RENEW) {
                let held = match self.store.lease(&self.node, LEASE_TTL).await {
                    Ok(held) => held,
                    Err(error) => {
                        tracing::warn!(%error, "webhooks: cannot renew the right to send");
                        false
                    }
                };
                if held != holder {
                    tracing::info!(node = %self.node, sending = held, "webhooks: right to send {}", if held { "taken" } else { "lost" });
                }
                if !held {
                    lanes.clear();
                    loaded = 0;
                    absent_since.clear();
                }
                holder = held;
                last_lease = Some(Instant::now());
            }
            if !holder {
                continue;
            }
            if self.settings.kinds.presence() && last_reconcile.elapsed() >= RECONCILE_EVERY {
                last_reconcile = Instant::now();
                let Some(hub) = hub.upgrade() else { break };
                if let Err(error) = self.reconcile(&hub, &mut absent_since, started).await {
                    tracing::warn!(%error, "webhooks: cannot tell who went offline now; trying again");
                }
            }
            if lanes.len() < LOADED / 2 {
                match self.store.pending(loaded, LOADED - lanes.len()).await {
                    Ok(found) => {
                        for queued in found {
                            loaded = loaded.max(queued.seq);
                            lanes.add(queued);
                        }
                    }
                    Err(error) => tracing::warn!(%error, "webhooks: cannot read the outbox"),
                }
                let backlog = match self.store.backlog().await {
                    Ok(count) => count as i64,
                    Err(_) => lanes.len() as i64,
                };
                self.metrics.webhook_backlog.set(backlog);
            }
            let room = IN_FLIGHT.saturating_sub(flying.len());
            for queued in lanes.ready(now_ms(), room) {
                flying.push(self.attempt(queued));
            }
        }
    }

    /// Who went offline: see the module documentation.
    async fn reconcile(
        &self,
        hub: &Hub,
        absent_since: &mut HashMap<String, Instant>,
        started: Instant,
    ) -> Result<(), StoreError> {
        let announced = self.store.announced().await?;
        if announced.is_empty() {
            absent_since.clear();
            return Ok(());
        }
        let mut present: HashSet<String> = hub.users().into_iter().map(|u| u.id).collect();
        if let Some(cluster) = &self.cluster {
            present.extend(cluster.users_elsewhere().await?);
        }
        let delay = self.settings.offline_delay;
        let now = now_ms();
        let mut seen = HashSet::new();
        for (user, confirmed) in announced {
            if present.contains(&user) {
                absent_since.remove(&user);
                continue;
            }
            // Absent since this loop first saw it so (or since it started,
            // for users announced before).
            let since = *absent_since.entry(user.clone()).or_insert_with(|| {
                if started.elapsed() < RECONCILE_EVERY * 2 {
                    started
                } else {
                    Instant::now()
                }
            });
            seen.insert(user.clone());
            if since.elapsed() < delay || now.saturating_sub(confirmed) < delay.as_millis() as u64 {
                continue;
            }
            let offline = self.wanted(Kind::UserOffline, || Message::user_offline(&user));
            let wanted = offline.is_some();
            if self.store.go_offline(&user, confirmed, offline).await? && wanted {
                self.written(&[Kind::UserOffline]);
            }
            absent_since.remove(&user);
        }
        absent_since.retain(|user, _| seen.contains(user));
        Ok(())
    }

    /// One attempt to deliver a message.
    async fn attempt(&self, queued: Queued) -> Attempt {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let message = &queued.message;
        let signature = self
            .settings
            .secret
            .signature(&message.id, timestamp, &message.body);
        let sent = self
            .client
            .post(&self.settings.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(message.body.clone())
            .send()
            .await;
        let (outcome, error) = match sent {
            Ok(answer) if answer.status().is_success() => (WebhookAttempt::Delivered, None),
            Ok(answer) => (
                WebhookAttempt::HttpError,
                Some(format!("HTTP {}", answer.status().as_u16())),
            ),
            Err(e) if e.is_timeout() => (
                WebhookAttempt::Timeout,
                Some(format!("no answer within {:?}", self.settings.timeout)),
            ),
            Err(e) => (
                WebhookAttempt::Unreachable,
                Some(format!("unreachable: {e}")),
            ),
        };
        Attempt {
            queued,
            outcome,
            error,
        }
    }

    /// Records how an attempt ended, in the outbox first.
    async fn settle(&self, attempt: Attempt, lanes: &mut Lanes) {
        self.metrics.webhook_attempted(attempt.outcome);
        let Attempt {
            mut queued, error, ..
        } = attempt;
        let seq = queued.seq;
        let Some(error) = error else {
            let age = now_ms().saturating_sub(queued.message.created_ms);
            self.metrics
                .webhook_delivery_seconds
                .observe(age as f64 / 1000.0);
            match self.store.delivered(seq).await {
                Ok(()) => lanes.finish(seq),
                Err(e) => {
                    // Sent again later: at least once.
                    tracing::warn!(error = %e, "webhooks: cannot mark a message delivered");
                    lanes.later(queued);
                }
            }
            return;
        };
        let message = &mut queued.message;
        message.attempts += 1;
        message.last_error = Some(error);
        if message.attempts >= self.settings.max_attempts {
            message.failed_ms = Some(now_ms());
            tracing::warn!(
                id = %message.id,
                r#type = message.kind.as_str(),
                attempts = message.attempts,
                error = message.last_error.as_deref(),
                "webhook message given up; see GET /api/v1/webhooks/failed"
            );
            match self.store.give_up(&queued, MAX_FAILED).await {
                Ok(()) => {
                    self.metrics.webhook_failed.inc();
                    lanes.finish(seq);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "webhooks: cannot move a message to the failed list");
                    lanes.later(queued);
                }
            }
            return;
        }
        message.next_ms = now_ms() + self.backoff(message.attempts).as_millis() as u64;
        if let Err(e) = self.store.save(&queued).await {
            tracing::warn!(error = %e, "webhooks: cannot store a message's attempts");
        }
        lanes.later(queued);
    }

    /// The delay before attempt `attempts + 1`: doubled per attempt from
    /// the backoff, capped, then drawn between half and all of it.
    fn backoff(&self, attempts: u32) -> Duration {
        let doubled = self
            .settings
            .retry_backoff
            .saturating_mul(2u32.saturating_pow(attempts.saturating_sub(1).min(31)));
        let capped = doubled.min(self.settings.retry_max_delay);
        capped.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn queued(seq: u64, keys: &[&str]) -> Queued {
        let mut message = Message::user_online("x");
        message.keys = keys.iter().map(|k| k.to_string()).collect();
        Queued { seq, message }
    }

    #[test]
    fn a_message_waits_for_every_earlier_one_of_its_keys() {
        let mut lanes = Lanes::default();
        lanes.add(queued(1, &["u:a"]));
        lanes.add(queued(2, &["u:a", "u:b"]));
        lanes.add(queued(3, &["u:b"]));
        lanes.add(queued(4, &["u:c"]));
        let seqs = |v: Vec<Queued>| v.into_iter().map(|q| q.seq).collect::<Vec<_>>();
        assert_eq!(seqs(lanes.ready(0, 10)), [1, 4]);
        assert_eq!(seqs(lanes.ready(0, 10)), Vec::<u64>::new(), "in flight");
        lanes.finish(1);
        assert_eq!(seqs(lanes.ready(0, 10)), [2]);
        // 2 fails and is due later: 3 (same key b) waits behind it.
        let mut two = queued(2, &["u:a", "u:b"]);
        two.message.next_ms = 1_000;
        lanes.later(two);
        assert_eq!(seqs(lanes.ready(500, 10)), Vec::<u64>::new());
        assert_eq!(seqs(lanes.ready(1_000, 10)), [2]);
        lanes.finish(2);
        lanes.finish(4);
        assert_eq!(seqs(lanes.ready(1_000, 10)), [3]);
        lanes.finish(3);
        assert_eq!(lanes.len(), 0);
        assert!(lanes.heads.is_empty());
    }
}
