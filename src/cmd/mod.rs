//! The command layer, on top of everything else: flags (clap), logging,
//! signals and exit codes. One file per subcommand; each parses its flags,
//! builds the library's typed configuration and calls into the library
//! (`proxy`, `admin`, `echo`, `load`, `ctl`). Nothing below imports this.
//! Exit codes follow docs/reference.md#exit-status:
//! 0 success, 1 failed verdict / refused by the server, 2 bad usage or config.

pub mod ctl;
pub mod demo;
pub mod echo;
pub mod load;
pub mod proxy;
pub mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::error::{UsageError, EXIT_FAILED, EXIT_USAGE};

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// wsfault: a WebSocket-aware chaos proxy.
#[derive(Debug, Parser)]
#[command(name = "wsfault", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (filter with RUST_LOG).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
pub enum Command {
    /// Run the fault-injecting proxy and its admin API.
    Proxy(proxy::ProxyArgs),
    /// Run the reference WebSocket backend (echo + resume protocol).
    Echo(echo::EchoArgs),
    /// Drive load through a proxy and return a verdict.
    Load(load::LoadArgs),
    /// Talk to a running proxy's admin API (like toxiproxy-cli).
    Ctl(ctl::CtlArgs),
    /// Run the whole chaos loop in one process.
    Demo(demo::DemoArgs),
    /// Work with load reports: `merge` the reports of many load workers.
    Report(report::ReportArgs),
}

/// Sets up the global tracing subscriber on stderr.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Parses arguments, runs the chosen subcommand and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own progress; per-connection lines would drown it.
    let default_level = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, default_level);
    // Thousands of connections need thousands of descriptors (nginx's
    // worker_rlimit_nofile): lift the soft limit to the hard one.
    if let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() {
        if soft < hard {
            let _ = rlimit::Resource::NOFILE.set(hard, hard);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("wsfault: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Proxy(args) => proxy::run_command(args).await,
            Command::Echo(args) => echo::run_command(args).await,
            Command::Load(args) => load::run_command(args).await,
            Command::Ctl(args) => ctl::run_command(args).await,
            Command::Demo(args) => demo::run_command(args).await,
            Command::Report(args) => report::run_command(args).await,
        }
    });
    // Do not wait for lingering connection tasks.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit_code_for(&err),
    }
}

/// Prints an error and picks the exit code from its type.
pub fn exit_code_for(err: &anyhow::Error) -> ExitCode {
    eprintln!("wsfault: {err:#}");
    if err.downcast_ref::<UsageError>().is_some()
        || err.downcast_ref::<crate::config::ConfigError>().is_some()
    {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}
