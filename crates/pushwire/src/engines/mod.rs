//! The history engines behind the core's [`EventLog`](pushwire_core::log::EventLog):
//! `memory` (a bounded window, nothing on disk), `embedded` (a durable
//! file, group commit), `redis` (one history shared by the nodes of a
//! cluster, with `cluster`, each node's share of presence).
//!
//! Every engine keeps the trait's promises: sequence numbers strictly
//! increase and are never reused, and the fanout sees events in that order,
//! after they are stored.

pub mod cluster;
pub mod embedded;
pub mod memory;
pub mod redis;
