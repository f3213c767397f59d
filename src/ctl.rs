//! `wsfault echo` (placeholder until the echo branch lands).
/// Flags.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Admin.
    #[arg(long)]
    pub admin: String,
}
/// Runs the command.
pub async fn run_command(_args: CtlArgs) -> anyhow::Result<()> {
    anyhow::bail!("ctl: pending merge")
}
