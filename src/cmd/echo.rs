//! `wsfault echo`: flags, then the reference backend until a signal.

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::error::UsageError;

/// Flags of `wsfault echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {
    /// Address to listen on, e.g. `0.0.0.0:9000` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: String,
    /// Refuse connections beyond this many live ones with HTTP 503.
    #[arg(long, value_name = "N", value_parser = parse_positive)]
    pub max_connections: Option<usize>,
}

fn parse_positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a positive integer (1 or more)")),
    }
}

/// Runs `wsfault echo`: binds `--listen`, serves until SIGINT/SIGTERM.
pub async fn run_command(args: EchoArgs) -> anyhow::Result<()> {
    if !args.listen.contains(':') {
        return Err(UsageError(format!(
            "--listen: `{}` is not an address (expected HOST:PORT, e.g. 0.0.0.0:9000)",
            args.listen
        ))
        .into());
    }
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("--listen: cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    tracing::info!(listen = %addr, max_connections = ?args.max_connections, "echo server listening");
    crate::echo::serve(
        listener,
        args.max_connections,
        crate::shutdown::shutdown_signal(),
    )
    .await?;
    tracing::info!("echo server stopped");
    Ok(())
}
