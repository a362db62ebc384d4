//! How bytes reach the hub and leave it, below the router: serving one
//! accepted connection over HTTP/1.1, TLS or h2c (`connection`), the lean
//! HTTP/1.1 path that writes streams without hyper (`stream_path`), the
//! filter that refuses ambiguous request heads on every HTTP/1.1
//! connection (`strict_heads`), and certificate loading for TLS (`tls`).

pub(crate) mod connection;
pub(crate) mod stream_path;
pub mod strict_heads;
pub mod tls;
