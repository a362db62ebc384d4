//! What a hardening test tried and what came of it, for docs/reliability.md.
//!
//! A test calls [`record`] after its assertions passed, so a row only ever
//! describes a run that held. When `PUSHWIRE_RELIABILITY_DIR` is set (as
//! `scripts/reliability` does), each row is written there as one JSON file;
//! otherwise recording does nothing and the test is an ordinary test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

/// One family of cases tried against the hub.
pub struct Row<'a> {
    /// What was tried, e.g. "CR/LF/NUL injection in every wire field".
    pub family: &'a str,
    /// How many distinct cases (requests, connections, faults) were tried.
    pub cases: u64,
    /// Hub crashes observed (a row is only written when the test passed).
    pub crashes: u64,
    /// Acknowledged events not delivered or not found in the history.
    pub lost: u64,
    /// What the hub did, in a few words: "400 invalid_field, nothing stored".
    pub outcome: &'a str,
    /// The test that produced the row: `cargo test --test <file> <name>`.
    pub test: &'a str,
}

pub fn record(row: Row<'_>) {
    let Some(dir) = std::env::var_os("PUSHWIRE_RELIABILITY_DIR").map(PathBuf::from) else {
        return;
    };
    std::fs::create_dir_all(&dir).expect("reliability dir");
    let json = serde_json::json!({
        "family": row.family,
        "cases": row.cases,
        "crashes": row.crashes,
        "lost": row.lost,
        "outcome": row.outcome,
        "test": row.test,
    });
    let name: String = row
        .test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    std::fs::write(dir.join(format!("{name}.json")), json.to_string()).expect("write row");
}
