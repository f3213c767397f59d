//! `wsfault echo` (placeholder until the echo branch lands).
/// Flags.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Scenario.
    #[arg(long)]
    pub scenario: String,
}
/// Runs the command.
pub async fn run_command(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo: pending merge")
}
