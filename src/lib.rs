//! pushwire: a message-push hub over server-sent events.
//!
//! The core (`event`, `route`, `hub`, `stream`, `store`) knows nothing of
//! HTTP; `http` translates requests into core calls; `server` accepts
//! connections and shuts down; `client` is the small HTTP client behind the
//! `publish` and `subscribe` commands.

pub mod auth;
pub mod cluster;
pub mod config;
pub mod event;
pub mod framing;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod presence;
pub mod route;
pub mod server;
pub mod store;
pub mod stream;
mod stream_conn;
pub mod tls;
