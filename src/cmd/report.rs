//! `wsfault report merge FILE...`: many load workers' reports → one
//! verdict (docs/reference.md#merged-reports), with the same table, JSON
//! report, JUnit and exit status as `wsfault load`.

use std::path::PathBuf;

use crate::error::UsageError;
use crate::load::{render_table, Report, Slo};

/// Flags of `wsfault report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// What to do with reports.
    #[command(subcommand)]
    pub action: ReportAction,
}

/// `wsfault report` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ReportAction {
    /// Add up `wsfault load --report` files of workers that ran side by side:
    /// exact percentiles from their HDR histograms, summed counters, the
    /// SLO verdict over the whole (exit 1 when it fails).
    Merge(MergeArgs),
}

/// Flags of `wsfault report merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Reports written by `wsfault load --report` (at least one).
    #[arg(value_name = "FILE.json", required = true)]
    pub files: Vec<PathBuf>,
    /// SLOs over the whole, and the merged report's files.
    #[command(flatten)]
    pub verdict: super::load::VerdictArgs,
}

/// Runs `wsfault report`.
pub async fn run_command(args: ReportArgs) -> anyhow::Result<()> {
    match args.action {
        ReportAction::Merge(args) => merge(args),
    }
}

fn merge(args: MergeArgs) -> anyhow::Result<()> {
    let slos = args
        .verdict
        .slo
        .iter()
        .map(|e| Slo::parse(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| UsageError(e.to_string()))?;
    let mut reports = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("{shown}: cannot read the report: {e}")))?;
        let report: Report = serde_json::from_str(&text)
            .map_err(|e| UsageError(format!("{shown}: not a wsfault load report: {e}")))?;
        reports.push((shown, report));
    }
    let merged =
        crate::load::merge::merge(&reports, &slos).map_err(|e| UsageError(e.to_string()))?;
    println!("merged {} reports", reports.len());
    print!("{}", render_table(&merged));
    super::load::write_verdict(&merged, &args.verdict)
}
