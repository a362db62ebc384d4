//! What every integration test of the hub uses, in one place so that the
//! tests talk to the hub the same way: [`hub`] starts it (in process on an
//! ephemeral port, or as the real binary), [`http`] is the one HTTP/1
//! client over raw TCP and its chunked decoder, [`sse`] reads a stream's
//! wire exactly, [`redis`] runs a real `redis-server` (a primary or a
//! replica), [`sentinel`] a primary, a replica and three Redis Sentinels
//! watching them, and [`reliability`]
//! records what a hardening test tried for docs/reliability.md.
//!
//! The modules are not glob-exported at the root, because `http` and
//! `redis` would shadow the crates of those names in the tests; a test
//! takes what it uses from [`prelude`], whose items are also at the root
//! (`pushwire_testkit::publish`).

pub mod http;
pub mod hub;
pub mod redis;
pub mod reliability;
pub mod sentinel;
pub mod sse;

pub use prelude::*;

/// The items nearly every test uses, for `use pushwire_testkit::prelude::*`.
pub mod prelude {
    pub use crate::http::{
        form, form_value, get, get_with, post_json, raw_exchange, request, try_request, Connection,
        Dechunker, HttpError, Reply,
    };
    pub use crate::hub::{
        config, eventually, history, publish, start, start_default, user_count, HubProcess,
        TestResult, WAIT,
    };
    pub use crate::sse::SseClient;
}
