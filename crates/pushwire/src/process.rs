//! The process figures of `/metrics`, read from `/proc/self` at each scrape
//! under the names Prometheus' own clients use, so that existing
//! dashboards and alerts work unchanged: `process_resident_memory_bytes`,
//! `process_open_fds`, `process_cpu_seconds_total`,
//! `process_start_time_seconds`.
//!
//! A scrape reads three small files and lists one directory; nothing is
//! read between scrapes. Where `/proc` is missing (not Linux) or a file
//! cannot be read, the figures it would give are left out of the scrape,
//! never reported as zero.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The unit of the times in `/proc/<pid>/stat`: `USER_HZ`, which the
/// kernel fixes at 100 for what it shows to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// The figures of this process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl Figures {
    /// Reads them now.
    pub fn read() -> Figures {
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        let boot_time = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        Figures {
            resident_bytes: fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|text| parse_resident_bytes(&text)),
            // The listing's own descriptor is among those it counts, as
            // in Prometheus' clients.
            open_fds: fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
            cpu_seconds: stat.map(|s| (s.user_ticks + s.system_ticks) as f64 / TICKS_PER_SECOND),
            start_time_seconds: stat
                .zip(boot_time)
                .map(|(s, boot)| boot as f64 + s.start_ticks as f64 / TICKS_PER_SECOND),
        }
    }
}

/// The fields of `/proc/self/stat` the metrics use, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    user_ticks: u64,
    system_ticks: u64,
    start_ticks: u64,
}

/// `pid (comm) state ppid ...`: the command name may hold spaces and
/// parentheses, so fields are counted from after the last `)`; there the
/// state is field 3 of proc(5), utime 14, stime 15 and starttime 22.
fn parse_stat(text: &str) -> Option<Stat> {
    let (_, after) = text.rsplit_once(')')?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        user_ticks: field(14)?,
        system_ticks: field(15)?,
        start_ticks: field(22)?,
    })
}

/// `VmRSS:   1234 kB` in `/proc/self/status`.
fn parse_resident_bytes(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kib * 1024)
}

/// `btime 1700000000` in `/proc/stat`: the boot time, in Unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The collector `/metrics` registers.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = Figures::read();
        if let Some(bytes) = figures.resident_bytes {
            let gauge = ConstGauge::new(bytes as i64);
            gauge.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Some(fds) = figures.open_fds {
            let gauge = ConstGauge::new(fds as i64);
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Some(seconds) = figures.cpu_seconds {
            // A counter: the encoder adds `_total`.
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        if let Some(start) = figures.start_time_seconds {
            let gauge = ConstGauge::new(start);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis of its own.
        let text = "4242 (push wire) d) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    250 75 0 0 20 0 9 0 123456 2000000 3000 18446744073709551615";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                user_ticks: 250,
                system_ticks: 75,
                start_ticks: 123456,
            })
        );
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
    }

    #[test]
    fn resident_memory_and_boot_time_are_read_from_their_lines() {
        let status = "Name:\tpushwire\nVmPeak:\t  9000 kB\nVmRSS:\t    1536 kB\n";
        assert_eq!(parse_resident_bytes(status), Some(1536 * 1024));
        assert_eq!(parse_resident_bytes("Name:\tx\n"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn this_process_has_figures() {
        let figures = Figures::read();
        assert!(figures.resident_bytes.is_some_and(|b| b > 0));
        assert!(figures.open_fds.is_some_and(|n| n >= 3));
        assert!(figures.cpu_seconds.is_some());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let start = figures.start_time_seconds.unwrap_or(0.0);
        assert!(
            start > 1.0e9 && start <= now + 1.0,
            "start {start}, now {now}"
        );
    }
}
