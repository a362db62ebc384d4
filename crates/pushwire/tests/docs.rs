//! Documentation that must stay true: the configuration table, the
//! README's quick start, the Grafana dashboard's metric names.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::Args;
use pushwire::config::ServeConfig;

/// Every option of `pushwire serve` has a row in docs/config.md that states
/// its default exactly as the code has it.
#[test]
fn config_table_documents_every_option_and_its_default() {
    let doc = include_str!("../../../docs/config.md");
    let command = ServeConfig::augment_args(clap::Command::new("pushwire"));
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `--{long}` |")))
            .unwrap_or_else(|| panic!("docs/config.md has no row for --{long}"));
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let cell = row.split('|').nth(2).unwrap_or_default().trim();
        if defaults.is_empty() {
            assert!(
                !cell.starts_with('`'),
                "--{long} has no default but the table says {cell}"
            );
        } else {
            assert_eq!(
                cell,
                format!("`{}`", defaults.join(",")),
                "default of --{long}"
            );
        }
    }
}

/// The README's quick start is the two commands CI relies on.
#[test]
fn readme_quick_start_names_the_test_command_ci_runs() {
    let readme = include_str!("../../../README.md");
    let ci = include_str!("../../../.ci/run");
    assert!(readme.contains("cargo run --release -- serve"));
    assert!(readme.contains("scripts/test"));
    assert!(ci.contains("scripts/test"));
}

/// docs/grafana-dashboard.json is valid JSON and every metric its queries
/// name is in a scrape of a running hub.
#[tokio::test]
async fn the_grafana_dashboard_uses_only_metrics_the_hub_exports() {
    use pushwire_testkit::prelude::*;
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../../../docs/grafana-dashboard.json")).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs.extend(
        dashboard["templating"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v["definition"].as_str().map(str::to_owned)),
    );
    let names = regex::Regex::new(r"\b(?:pushwire|process)_[a-z_]+").unwrap();
    let used: std::collections::BTreeSet<&str> = exprs
        .iter()
        .flat_map(|e| names.find_iter(e).map(|m| m.as_str()))
        .collect();
    assert!(
        used.len() >= 10,
        "the dashboard names too few metrics: {used:?}"
    );

    let hub = start_default().await;
    let scrape = get(hub.addr(), "/metrics").await.body;
    let exported: std::collections::BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in used {
        assert!(
            exported.contains(name),
            "the dashboard uses {name}, which /metrics does not export:\n{scrape}"
        );
    }
}
