//! `wsfault echo` (placeholder until the echo branch lands).
/// Flags.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Listen address.
    #[arg(long)]
    pub listen: String,
}
/// Runs the command.
pub async fn run_command(_args: EchoArgs) -> anyhow::Result<()> {
    anyhow::bail!("echo: pending merge")
}
