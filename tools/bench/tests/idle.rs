//! The real `pushwire-bench` binary against the real hub binary: `idle`
//! opens every stream it was asked for and reads the hub's memory.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the hub may take to start.
const WAIT: Duration = Duration::from_secs(10);

/// The hub binary, next to this package's binary: `cargo` builds it first
/// (with the same profile, into the same target directory), so that the
/// test never runs a stale hub, whether the whole workspace was built or
/// only this package.
fn hub_binary() -> PathBuf {
    let bench = Path::new(env!("CARGO_BIN_EXE_pushwire-bench"));
    let profile_dir = bench.parent().expect("the bench binary has a directory");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory has a parent");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "--package",
            "pushwire",
            "--bin",
            "pushwire",
        ])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--manifest-path")
        .arg(&workspace)
        .status()
        .expect("run cargo");
    assert!(status.success(), "cannot build the hub binary");
    profile_dir.join(format!("pushwire{}", std::env::consts::EXE_SUFFIX))
}

/// A hub process with in-memory history; killed when dropped.
struct Hub {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hub {
    /// Runs `pushwire serve --listen 127.0.0.1:0 --log-format json
    /// --storage memory` and waits until it logs the address it listens on.
    fn spawn() -> Hub {
        let mut child = Command::new(hub_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(["--storage", "memory"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pushwire");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            assert!(Instant::now() < deadline, "hub did not report its address");
            let line = lines.next().expect("hub exited early").unwrap();
            let log: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if let Some(addr) = log["fields"]["addr"].as_str() {
                break addr.parse().unwrap();
            }
        };
        // Keep draining the log so the hub never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Hub { child, addr }
    }
}

#[test]
fn bench_idle_opens_every_stream_and_reports_memory() {
    let hub = Hub::spawn();
    let out = Command::new(env!("CARGO_BIN_EXE_pushwire-bench"))
        .args([
            "idle",
            "--streams",
            "200",
            "--sources",
            "4",
            "--settle",
            "100ms",
        ])
        .args(["--hub", &hub.addr.to_string()])
        .args(["--hub-pid", &hub.child.id().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["streams"], 200);
    assert!(report["hub_rss_after_kib"].as_u64().unwrap() > 0);
    assert!(report["hub_bytes_per_stream"].is_number());
}
