//! Documentation that must stay true: the configuration table.
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
