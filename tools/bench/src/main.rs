//! `pushwire-bench`: load tools for any SSE hub.
//!
//! `idle` opens N streams spread over several loopback source addresses,
//! waits until every one has its response headers, and reports what they
//! cost the hub: memory growth per stream, read from /proc of the hub's
//! pids. `publish` measures acknowledged publishes per second over
//! keep-alive connections, single events or batches. `replay` measures how
//! fast a stream that resumes from an old `Last-Event-ID` receives the
//! history.
//!
//! `fanout` (N subscribers on one topic) and `spread` (N topics with one
//! subscriber each) measure delivery: the coordinator spawns worker
//! processes of this binary that open the streams (each from its own
//! loopback source addresses, so no process runs out of descriptors or
//! ports), waits until every stream has its headers, publishes M events at
//! a fixed rate, each carrying its sequence number and send time, and waits
//! until every expected delivery arrived or a deadline passed. Workers read
//! their streams with the WHATWG parser of `pushwire_client::sse`, record
//! publish-to-receive latency in a histogram and which events each stream
//! got; the coordinator merges the histograms. Given several `--hub`
//! addresses (the nodes of a pushwire cluster), the workers take them in
//! turn, so the streams spread over the nodes, and `--publish-round-robin`
//! spreads the publishers too. They talk to pushwire, Nchan
//! or Pushpin (`--target`); `grip-origin` is the small backend Pushpin needs
//! to turn requests into streams. `report` turns the JSON lines of a
//! comparison run into a markdown table.
//!
//! Every measuring mode prints one JSON line.
//!
//! This file is the command line; each mode lives in the module of its
//! name (`idle`, `publish`, `replay`, `load` with `worker` for `fanout` and
//! `spread`, `grip_origin`, `report`). `load` and `worker` share `target`
//! (what each hub expects on the wire), `plan` (what a run publishes and
//! what each stream should receive) and `tally` (what the streams received);
//! every mode shares `wire` (raw HTTP/1.1 and event streams) and `usage`
//! (the hub's memory and CPU time).

mod grip_origin;
mod idle;
mod load;
mod plan;
mod publish;
mod replay;
mod report;
mod tally;
mod target;
mod usage;
mod wire;
mod worker;

use clap::{Parser, Subcommand};

use grip_origin::GripOriginArgs;
use idle::IdleArgs;
use load::LoadArgs;
use plan::Kind;
use publish::PublishArgs;
use replay::ReplayArgs;
use report::ReportArgs;
use worker::WorkerArgs;

#[derive(Parser)]
#[command(name = "pushwire-bench", about = "Load tools for SSE hubs")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Memory per open idle stream.
    Idle(IdleArgs),
    /// Acknowledged publishes per second through `POST /api/v1/publish`.
    Publish(PublishArgs),
    /// Speed of a history replay to one stream.
    Replay(ReplayArgs),
    /// N subscribers on one topic; M events published at a fixed rate.
    Fanout(LoadArgs),
    /// N topics with one subscriber each; M events published round-robin over them.
    Spread(LoadArgs),
    /// A GRIP origin for Pushpin: answers every request with `Grip-Hold: stream` on the channel named by the last path segment.
    GripOrigin(GripOriginArgs),
    /// Writes the markdown comparison table from the JSON lines of a comparison run.
    Report(ReportArgs),
    /// One process of a `fanout` or `spread` run (started by the coordinator).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match cli.mode {
        Mode::Worker(args) => {
            // One thread per worker: the coordinator runs several of them.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, worker::worker(args))
        }
        Mode::Report(args) => report::report(args),
        mode => {
            let runtime = tokio::runtime::Runtime::new()?;
            match mode {
                Mode::Idle(args) => runtime.block_on(idle::idle(args)),
                Mode::Publish(args) => runtime.block_on(publish::publish(args)),
                Mode::Replay(args) => runtime.block_on(replay::replay(args)),
                Mode::Fanout(args) => runtime.block_on(load::load(Kind::Fanout, args)),
                Mode::Spread(args) => runtime.block_on(load::load(Kind::Spread, args)),
                Mode::GripOrigin(args) => runtime.block_on(grip_origin::grip_origin(args)),
                Mode::Report(_) | Mode::Worker(_) => Ok(()),
            }
        }
    }
}
