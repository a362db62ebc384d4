//! The history engines behind the core's [`EventLog`](pushwire_core::log::EventLog):
//! `memory` (a bounded window, nothing on disk), `embedded` (a durable
//! file, group commit), `redis` (one history shared by the nodes of a
//! cluster, with `redis::presence`, each node's share of presence). The
//! durable engines store one record format, the core's
//! [`record`](pushwire_core::record).
//!
//! Every engine keeps the trait's promises: sequence numbers strictly
//! increase and are never reused, and the fanout sees events in that order,
//! after they are stored.

pub mod embedded;
pub mod memory;
pub mod redis;
