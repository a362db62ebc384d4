//! `pushwire-soak`: a bounded soak run against a running hub.
//!
//! The coordinator spreads `--streams` user streams over `--processes`
//! worker processes of this binary, each connecting from its own loopback
//! source addresses (so no process nears its open-file limit or runs out of
//! ports). While the run lasts it publishes steadily (events to single
//! users, and now and then one to everyone), each worker closes and reopens
//! `--churn` percent of its streams every second, and every `--sample` the
//! coordinator writes the hub's resident memory, open descriptors and open
//! streams to a CSV file.
//!
//! At the end the workers close every stream and the coordinator checks:
//! the hub's resident memory at the end grew by at most `--max-rss-growth`
//! percent over what it was after the warm-up; at every sample the hub's
//! descriptors were its open streams plus the constant it had before the
//! first stream (within `--fd-slack`, for connections caught mid-churn);
//! and once the streams are gone, its descriptors are back to that
//! constant. It prints one JSON line and exits 1 when a check failed.
//! Every run is bounded in time: workers stop by themselves after the run's
//! length plus a margin.
//!
//! This file is the command line; `run` is the coordinator, `worker` a
//! process holding streams, and `probe` what the coordinator reads of the
//! hub (memory and descriptors from /proc, open streams from its stats).

mod probe;
mod run;
mod worker;

use clap::{Parser, Subcommand};

use run::RunArgs;
use worker::WorkerArgs;

#[derive(Parser)]
#[command(
    name = "pushwire-soak",
    about = "A bounded soak run against a pushwire hub"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Run the soak (the coordinator).
    Run(RunArgs),
    /// One process holding streams (started by the coordinator).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match cli.mode {
        Mode::Run(args) => run::run(args),
        Mode::Worker(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, worker::worker(args))
        }
    }
}
