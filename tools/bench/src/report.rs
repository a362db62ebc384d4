//! `report`: turns the JSON lines of a comparison run into the markdown
//! table of docs/bench.md (or prints it), with a remark for every run that
//! failed or was incomplete.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};

#[derive(Args)]
pub struct ReportArgs {
    /// JSON lines of the runs (`idle`, `fanout`, `spread` reports with a `label`; or `{"label","mode","error"}`).
    #[arg(long)]
    results: PathBuf,
    /// Markdown file whose text between the markers is replaced (printed to stdout when not given).
    #[arg(long)]
    doc: Option<PathBuf>,
    #[arg(long, default_value = "<!-- compare:begin -->")]
    begin: String,
    #[arg(long, default_value = "<!-- compare:end -->")]
    end: String,
    /// Hubs as `label=Title`, in column order.
    #[arg(long = "hub", required = true)]
    hubs: Vec<String>,
    /// Ratio columns as `label/label` (the first divided by the second).
    #[arg(long = "ratio")]
    ratios: Vec<String>,
    /// Lines printed under the table.
    #[arg(long = "note")]
    notes: Vec<String>,
}

/// One row of the comparison table.
struct Metric {
    /// The workload (or mode) of the run it reads.
    workload: &'static str,
    title: &'static str,
    /// Reads the figure from a report.
    value: fn(&Value) -> Option<f64>,
    /// Digits after the point.
    digits: usize,
    /// Whether a ratio of this figure means something.
    ratio: bool,
}

const fn metric(
    workload: &'static str,
    title: &'static str,
    value: fn(&Value) -> Option<f64>,
    digits: usize,
    ratio: bool,
) -> Metric {
    Metric {
        workload,
        title,
        value,
        digits,
        ratio,
    }
}

fn latency_ms(r: &Value, q: &str) -> Option<f64> {
    r["latency_us"][q].as_f64().map(|us| us / 1000.0)
}

fn deliveries_per_second(r: &Value) -> Option<f64> {
    r["deliveries_per_second"].as_f64()
}

fn cpu_per_delivery(r: &Value) -> Option<f64> {
    r["hub_cpu_us_per_delivery"].as_f64()
}

fn load_cpu_per_delivery(r: &Value) -> Option<f64> {
    r["load_cpu_us_per_delivery"].as_f64()
}

/// How long the hub took to answer a publish, at quantile `q`.
fn answered_ms(r: &Value, q: &str) -> Option<f64> {
    r["publish_latency_us"][q].as_f64().map(|us| us / 1000.0)
}

fn lost(r: &Value) -> Option<f64> {
    r["lost"].as_f64()
}

fn duplicated(r: &Value) -> Option<f64> {
    r["duplicated"].as_f64()
}

const METRICS: &[Metric] = &[
    metric(
        "idle",
        "idle: memory per stream (KiB)",
        |r| r["hub_pss_bytes_per_stream"].as_f64().map(|b| b / 1024.0),
        1,
        true,
    ),
    metric(
        "idle",
        "idle: time to open all streams (s)",
        |r| r["connect_seconds"].as_f64(),
        1,
        true,
    ),
    metric(
        "fanout",
        "fanout: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "fanout",
        "fanout: latency p50 (ms)",
        |r| latency_ms(r, "p50"),
        1,
        true,
    ),
    metric(
        "fanout",
        "fanout: latency p99 (ms)",
        |r| latency_ms(r, "p99"),
        1,
        true,
    ),
    metric(
        "fanout",
        "fanout: publish answered, p50 (ms)",
        |r| answered_ms(r, "p50"),
        2,
        true,
    ),
    metric(
        "fanout",
        "fanout: publish answered, p99 (ms)",
        |r| answered_ms(r, "p99"),
        2,
        true,
    ),
    metric(
        "fanout",
        "fanout: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric(
        "fanout",
        "fanout: load generator CPU per delivery (µs)",
        load_cpu_per_delivery,
        2,
        false,
    ),
    metric("fanout", "fanout: lost", lost, 0, false),
    metric("fanout", "fanout: duplicated", duplicated, 0, false),
    metric(
        "fanout1k",
        "fanout 1k: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "fanout1k",
        "fanout 1k: publish answered, p50 (ms)",
        |r| answered_ms(r, "p50"),
        2,
        true,
    ),
    metric(
        "fanout1k",
        "fanout 1k: publish answered, p99 (ms)",
        |r| answered_ms(r, "p99"),
        2,
        true,
    ),
    metric(
        "fanout1k",
        "fanout 1k: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric(
        "fanout1k",
        "fanout 1k: load generator CPU per delivery (µs)",
        load_cpu_per_delivery,
        2,
        false,
    ),
    metric("fanout1k", "fanout 1k: lost", lost, 0, false),
    metric("fanout1k", "fanout 1k: duplicated", duplicated, 0, false),
    metric(
        "fanout10k",
        "fanout 10k: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "fanout10k",
        "fanout 10k: latency p50 (ms)",
        |r| latency_ms(r, "p50"),
        1,
        true,
    ),
    metric(
        "fanout10k",
        "fanout 10k: latency p99 (ms)",
        |r| latency_ms(r, "p99"),
        1,
        true,
    ),
    metric(
        "fanout10k",
        "fanout 10k: publish answered, p50 (ms)",
        |r| answered_ms(r, "p50"),
        2,
        true,
    ),
    metric(
        "fanout10k",
        "fanout 10k: publish answered, p99 (ms)",
        |r| answered_ms(r, "p99"),
        2,
        true,
    ),
    metric(
        "fanout10k",
        "fanout 10k: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric(
        "fanout10k",
        "fanout 10k: load generator CPU per delivery (µs)",
        load_cpu_per_delivery,
        2,
        false,
    ),
    metric("fanout10k", "fanout 10k: lost", lost, 0, false),
    metric("fanout10k", "fanout 10k: duplicated", duplicated, 0, false),
    metric(
        "burst",
        "burst: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "burst",
        "burst: publishes answered/s",
        |r| r["publish_rate"].as_f64(),
        0,
        true,
    ),
    metric(
        "burst",
        "burst: last delivery after (s)",
        |r| r["window_seconds"].as_f64(),
        1,
        true,
    ),
    metric(
        "burst",
        "burst: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric(
        "burst",
        "burst: load generator CPU per delivery (µs)",
        load_cpu_per_delivery,
        2,
        false,
    ),
    metric("burst", "burst: lost", lost, 0, false),
    metric("burst", "burst: duplicated", duplicated, 0, false),
    metric(
        "spread",
        "spread: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "spread",
        "spread: latency p50 (ms)",
        |r| latency_ms(r, "p50"),
        1,
        true,
    ),
    metric(
        "spread",
        "spread: latency p99 (ms)",
        |r| latency_ms(r, "p99"),
        1,
        true,
    ),
    metric(
        "spread",
        "spread: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric(
        "spread",
        "spread: load generator CPU per delivery (µs)",
        load_cpu_per_delivery,
        2,
        false,
    ),
    metric("spread", "spread: lost", lost, 0, false),
    metric("spread", "spread: duplicated", duplicated, 0, false),
    metric(
        "spread16",
        "spread 16: deliveries/s",
        deliveries_per_second,
        0,
        true,
    ),
    metric(
        "spread16",
        "spread 16: latency p50 (ms)",
        |r| latency_ms(r, "p50"),
        1,
        true,
    ),
    metric(
        "spread16",
        "spread 16: latency p99 (ms)",
        |r| latency_ms(r, "p99"),
        1,
        true,
    ),
    metric(
        "spread16",
        "spread 16: hub CPU per delivery (µs)",
        cpu_per_delivery,
        2,
        true,
    ),
    metric(
        "spread16",
        "spread 16: load generator CPU per delivery (µs)",
        load_cpu_per_delivery,
        2,
        false,
    ),
    metric("spread16", "spread 16: lost", lost, 0, false),
    metric("spread16", "spread 16: duplicated", duplicated, 0, false),
];

/// A number with thousands separators.
fn format_number(value: f64, digits: usize) -> String {
    let text = format!("{value:.digits$}");
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i.to_owned(), Some(f.to_owned())),
        None => (text.clone(), None),
    };
    let (sign, int) = match int.strip_prefix('-') {
        Some(rest) => ("-", rest.to_owned()),
        None => ("", int),
    };
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("cannot read {}", args.results.display()))?;
    // The last report of each (label, mode) wins.
    let mut runs: BTreeMap<(String, String), Value> = BTreeMap::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('{')) {
        let Ok(run) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let workload = run["workload"].as_str().or(run["mode"].as_str());
        let (Some(label), Some(mode)) = (run["label"].as_str(), workload) else {
            continue;
        };
        runs.insert((label.to_owned(), mode.to_owned()), run);
    }
    let hubs: Vec<(String, String)> = args
        .hubs
        .iter()
        .map(|h| match h.split_once('=') {
            Some((label, title)) => (label.to_owned(), title.to_owned()),
            None => (h.clone(), h.clone()),
        })
        .collect();
    let title_of = |label: &str| {
        hubs.iter()
            .find(|(l, _)| l == label)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| label.to_owned())
    };
    let ratios: Vec<(String, String)> = args
        .ratios
        .iter()
        .filter_map(|r| r.split_once('/'))
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
    let figure = |label: &str, metric: &Metric| -> Result<f64, String> {
        match runs.get(&(label.to_owned(), metric.workload.to_owned())) {
            None => Err("not run".to_owned()),
            Some(run) if run.get("error").is_some() => Err("failed".to_owned()),
            Some(run) => (metric.value)(run).ok_or_else(|| "n/a".to_owned()),
        }
    };

    let mut table = String::new();
    table.push_str("| |");
    for (_, title) in &hubs {
        table.push_str(&format!(" {title} |"));
    }
    for (a, b) in &ratios {
        table.push_str(&format!(" {} / {} |", title_of(a), title_of(b)));
    }
    table.push_str("\n|---|");
    for _ in 0..hubs.len() + ratios.len() {
        table.push_str("---:|");
    }
    table.push('\n');
    for metric in METRICS {
        table.push_str(&format!("| {} |", metric.title));
        for (label, _) in &hubs {
            let cell = match figure(label, metric) {
                Ok(v) => format_number(v, metric.digits),
                Err(e) => e,
            };
            table.push_str(&format!(" {cell} |"));
        }
        for (a, b) in &ratios {
            let cell = match (metric.ratio, figure(a, metric), figure(b, metric)) {
                (true, Ok(x), Ok(y)) if y > 0.0 => format!("{:.2}", x / y),
                _ => "–".to_owned(),
            };
            table.push_str(&format!(" {cell} |"));
        }
        table.push('\n');
    }
    // Runs that failed or were incomplete, said plainly.
    let mut remarks = Vec::new();
    for ((label, mode), run) in &runs {
        let title = title_of(label);
        if let Some(error) = run["error"].as_str() {
            remarks.push(format!("{title}, {mode}: failed: {error}"));
            continue;
        }
        if let Some(failed) = run["streams_failed"].as_u64().filter(|&f| f > 0) {
            remarks.push(format!(
                "{title}, {mode}: {failed} streams did not open ({})",
                run["first_error"].as_str().unwrap_or("no error text")
            ));
        }
        if let Some(failed) = run["events_failed"].as_u64().filter(|&f| f > 0) {
            remarks.push(format!(
                "{title}, {mode}: {failed} publishes failed ({})",
                run["publish_error"].as_str().unwrap_or("no error text")
            ));
        }
        if run["complete"] == json!(false) {
            remarks.push(format!(
                "{title}, {mode}: {} of {} deliveries arrived before the deadline",
                format_number(run["deliveries_received"].as_f64().unwrap_or(0.0), 0),
                format_number(run["deliveries_expected"].as_f64().unwrap_or(0.0), 0),
            ));
        }
        if let Some(closed) = run["streams_closed"].as_u64().filter(|&c| c > 0) {
            let how = &run["streams_closed_how"];
            remarks.push(format!(
                "{title}, {mode}: the hub closed {closed} streams during the run \
                 ({} by ending the body, {} by closing the connection, {} with an error); \
                 {} streams missed events",
                how["body_end"], how["eof"], how["error"], run["streams_with_loss"]
            ));
        }
        if let Some(retries) = run["connect_retries"].as_u64().filter(|&r| r > 0) {
            remarks.push(format!(
                "{title}, {mode}: {retries} refused stream requests were tried again"
            ));
        }
    }
    let mut section = String::new();
    section.push('\n');
    section.push_str(&table);
    if !remarks.is_empty() {
        section.push('\n');
        for r in &remarks {
            section.push_str(&format!("- {r}\n"));
        }
    }
    if !args.notes.is_empty() {
        section.push('\n');
        for n in &args.notes {
            section.push_str(&format!("{n}\n"));
        }
    }
    match &args.doc {
        None => print!("{section}"),
        Some(path) => {
            let doc = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let start = doc
                .find(&args.begin)
                .with_context(|| format!("{} has no {}", path.display(), args.begin))?
                + args.begin.len();
            let stop = doc[start..]
                .find(&args.end)
                .map(|i| start + i)
                .with_context(|| format!("{} has no {}", path.display(), args.end))?;
            let updated = format!("{}{}{}", &doc[..start], section, &doc[stop..]);
            std::fs::write(path, updated)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(format_number(1234567.0, 0), "1,234,567");
        assert_eq!(format_number(999.25, 1), "999.2");
        assert_eq!(format_number(-1234.5, 1), "-1,234.5");
    }
}
