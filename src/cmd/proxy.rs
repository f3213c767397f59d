//! `wsfault proxy`: flags, then the registry and the admin API until a signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::ProxySpec;
use crate::error::UsageError;
use crate::proxy::Server;

/// `wsfault proxy` flags.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// YAML config with proxies and toxics.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address of a single proxy (with --upstream).
    #[arg(long, value_name = "ADDR", requires = "upstream")]
    pub listen: Option<String>,
    /// Upstream of a single proxy: host:port, ws://host:port[/prefix].
    #[arg(long, value_name = "TARGET", requires = "listen")]
    pub upstream: Option<String>,
    /// PEM certificate chain: the proxy of --listen speaks wss:// (with --tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["listen", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Name of the single proxy.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Admin API address.
    #[arg(long, default_value = "127.0.0.1:8474", value_name = "ADDR")]
    pub admin: String,
    /// Bearer token required by the admin API.
    #[arg(long, env = "WSFAULT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Seed for every random decision (reproducible runs).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// Runs `wsfault proxy` until SIGINT/SIGTERM.
pub async fn run_command(args: ProxyArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut specs = Vec::new();
    if let Some(path) = &args.config {
        specs.extend(crate::config::load_file(path)?.proxies);
    }
    if let (Some(listen), Some(upstream)) = (&args.listen, &args.upstream) {
        let mut spec = ProxySpec::new(&args.name, listen, upstream);
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            spec.tls = Some(crate::config::TlsSetting::Files {
                cert: cert.display().to_string(),
                key: key.display().to_string(),
            });
        }
        spec.validate()
            .map_err(|e| UsageError(format!("--upstream/--listen: {e}")))?;
        specs.push(spec);
    }
    crate::proxy::workers::start().map_err(UsageError)?;
    let token = args.admin_token.clone().filter(|t| !t.is_empty());
    let admin_addr: SocketAddr = args.admin.parse().map_err(|_| {
        UsageError(format!(
            "--admin {:?} is not a socket address: expected IP:PORT such as 127.0.0.1:8474",
            args.admin
        ))
    })?;
    let server = Server::new(args.seed);
    for spec in specs {
        let name = spec.name.clone();
        server.create(spec).await.map_err(|e| match e {
            // A bad spec (TLS files included) is bad usage: exit 2.
            crate::proxy::RegistryError::BadRequest(message) => {
                anyhow::Error::from(UsageError(format!("proxy {name}: {message}")))
            }
            other => anyhow::anyhow!(other).context(format!("starting proxy {name}")),
        })?;
    }
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("cannot bind the admin API on {admin_addr}"))?;
    if !admin_addr.ip().is_loopback() && token.is_none() {
        tracing::warn!(admin = %admin_addr, "admin API bound to a non-loopback address without --admin-token: anyone who can reach it can change faults");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let admin = tokio::spawn(crate::admin::serve(
        admin_listener,
        server.clone(),
        crate::admin::AdminOptions { token },
        stop_rx,
    ));
    tracing::info!(admin = %admin_addr, "admin API listening");
    crate::shutdown::shutdown_signal().await;
    tracing::info!("shutting down: closing live connections with 1001");
    server.shutdown(Duration::from_secs(4)).await;
    let _ = stop_tx.send(true);
    admin.abort();
    Ok(())
}
