//! `wsfault echo` (placeholder until the echo branch lands).
/// Flags.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// URL.
    #[arg(long)]
    pub url: String,
}
/// Runs the command.
pub async fn run_command(_args: LoadArgs) -> anyhow::Result<()> {
    anyhow::bail!("load: pending merge")
}
