//! What a run cost the hub: resident and proportional memory and CPU time,
//! read from /proc for each of the hub's pids and summed (a hub may be
//! several processes).

use anyhow::Context;

/// Memory and CPU time of a hub, summed over its processes.
#[derive(Clone, Copy, Default)]
pub struct Usage {
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Proportional set, KiB: shared pages (a multi-process hub's shared
    /// memory zone) are split among the processes that map them, so the sum
    /// counts them once.
    pub pss_kib: u64,
    pub cpu_seconds: f64,
}

/// Resident memory (KiB) and CPU seconds of a process.
fn process_usage(pid: u32) -> anyhow::Result<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start at ") ".
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = fields
        .get(11)
        .and_then(|u| u.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0);
    Ok((rss, ticks / 100.0))
}

/// Proportional set size of a process, KiB (its RSS when the kernel has no
/// `smaps_rollup`).
fn process_pss(pid: u32) -> Option<u64> {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub fn hub_usage(pids: &[u32]) -> anyhow::Result<Option<Usage>> {
    if pids.is_empty() {
        return Ok(None);
    }
    let mut usage = Usage::default();
    for &pid in pids {
        let (rss, cpu) = process_usage(pid)?;
        usage.rss_kib += rss;
        usage.pss_kib += process_pss(pid).unwrap_or(rss);
        usage.cpu_seconds += cpu;
    }
    Ok(Some(usage))
}
