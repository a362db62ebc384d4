//! Fuzz targets for pushwire, and the oracles they check against.
//!
//! Each target in `fuzz_targets/` is one line that hands libFuzzer's input
//! to a `check` function here; a crash reproducer becomes a unit test that
//! calls the same function with the same input (`cargo test` in this crate,
//! on stable).
//!
//! The oracles are written from the specifications, not from the hub's code:
//! [`sse`] reads an event stream as the WHATWG HTML standard's "event
//! stream interpretation" says a browser does, and [`expand`] expands RFC
//! 6570 URI templates. A bug copied into both the hub and its oracle would
//! hide itself, so neither shares code with `src/`.
#![forbid(unsafe_code)]

pub mod cursor;
pub mod encode;
pub mod expand;
pub mod publish_request;
pub mod sse;
pub mod topic_match;
