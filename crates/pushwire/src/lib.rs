//! pushwire, the server: the hub of `pushwire-core` behind HTTP.
//!
//! - [`engines`]: the history engines behind the core's `EventLog` trait
//!   (`memory`, `embedded`, `redis`) and the cluster presence of the Redis
//!   engine;
//! - [`http`]: the router, extractors and the one mapping from core errors
//!   to HTTP responses; handlers only translate;
//! - [`transport`]: below the router: serving one connection (HTTP/1.1,
//!   TLS, h2c), the lean HTTP/1.1 stream path, the strict request-head
//!   filter, TLS certificates;
//! - [`auth`]: who may publish, manage and read (keys, JWTs);
//! - [`limits`]: what one client, user or publisher may take;
//! - [`config`]: flags, environment and TOML, parsed once;
//! - [`app`]: the hub, its history, TLS, policies and routes, built once
//!   from the parsed configuration;
//! - [`server`]: binds, serves connections and shuts down;
//! - [`startup`]: the summary line a hub writes once it listens;
//! - [`log_limit`]: at most so many lines of a kind a caller can provoke;
//! - [`process`]: the process figures `/metrics` reads from `/proc`;
//! - [`outbound`]: the HTTP client for the calls the hub itself makes
//!   (JWKS key sets).

pub mod app;
pub mod auth;
pub mod config;
pub mod engines;
pub mod http;
pub mod limits;
pub mod log_limit;
pub mod outbound;
pub mod process;
pub mod server;
pub mod startup;
pub mod transport;
pub mod webhooks;
