//! `wsfault load`: flags → [`LoadConfig`], the run, the report files and
//! the exit status from the verdict.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::error::{FailedError, UsageError};
use crate::load::{invalid, render_table, scenario, ConfigError, LoadConfig, Mode, Report, Slo};

/// Flags of `wsfault load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// WebSocket URL to load (ws://HOST:PORT/PATH); with --script, overrides the script's `url`.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Connections to open (ignored with --scenario).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub connections: u32,
    /// Open at most this many connections per second (default: no limit).
    #[arg(long, value_name = "CONN_PER_S")]
    pub ramp_rate: Option<f64>,
    /// Messages per second per connection.
    #[arg(long, value_name = "MSG_PER_S_PER_CONN", default_value_t = 10.0)]
    pub rate: f64,
    /// How long to send messages (e.g. 30s, 2m; ignored with --scenario).
    #[arg(long, value_name = "D", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Size of each message in bytes (echo mode: at least 24).
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub message_bytes: usize,
    /// echo: any echo server; resume: the resume protocol of `wsfault echo`;
    /// script: any service, as --script says [default: echo, or script with --script].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Session script for script mode: open steps, send template, reply and
    /// sequence checks (docs/reference.md#script-mode).
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Reconnect after any disconnect (exponential backoff, full jitter).
    #[arg(long)]
    pub reconnect: bool,
    /// Extra header on the upgrade request (repeatable).
    #[arg(long = "header", value_name = "K:V")]
    pub headers: Vec<String>,
    /// Subprotocol to ask for (Sec-WebSocket-Protocol).
    #[arg(long, value_name = "P")]
    pub subprotocol: Option<String>,
    /// YAML phases {name, duration, connections, rate} run in order.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// SLOs and the report files.
    #[command(flatten)]
    pub verdict: VerdictArgs,
    /// Compare with an earlier --report (throughput, p50, p99).
    #[arg(long, value_name = "FILE.json")]
    pub baseline: Option<PathBuf>,
    /// Largest acceptable regression against --baseline, in percent.
    #[arg(long, value_name = "PCT", default_value = "10%", value_parser = parse_percent)]
    pub max_regression: f64,
}

/// The verdict's flags, shared by `wsfault load` and `wsfault report merge`.
#[derive(Debug, clap::Args)]
pub struct VerdictArgs {
    /// SLO such as p99<100ms, loss==0, errors<1% (repeatable; default: loss==0 dup==0 reorder==0 corrupt==0).
    #[arg(long = "slo", value_name = "EXPR")]
    pub slo: Vec<String>,
    /// Write the JSON report here.
    #[arg(long, value_name = "FILE.json")]
    pub report: Option<PathBuf>,
    /// Write JUnit XML (one test case per SLO) here.
    #[arg(long, value_name = "FILE.xml")]
    pub junit: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("`{s}` must be longer than zero")),
        Err(err) => Err(format!(
            "`{s}` is not a duration ({err}); e.g. 30s, 500ms, 2m"
        )),
    }
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix('%').unwrap_or(t).trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not a percentage (e.g. 10%)")),
    }
}

/// Builds a configuration from flags: reads the scenario and baseline
/// files, parses SLOs and headers.
pub fn load_config(args: &LoadArgs) -> Result<LoadConfig, ConfigError> {
    let mode = match (args.mode, &args.script) {
        (None, None) => Mode::Echo,
        (None | Some(Mode::Script), Some(_)) => Mode::Script,
        (Some(Mode::Script), None) => {
            return Err(invalid(
                "--mode",
                "script mode needs --script FILE (docs/reference.md#script-mode)".into(),
            ))
        }
        (Some(m), Some(_)) => {
            return Err(invalid(
                "--script",
                format!(
                    "a script drives script mode, not --mode {}: drop --mode or use --mode script",
                    m.as_str()
                ),
            ))
        }
        (Some(m), None) => m,
    };
    let script = match &args.script {
        Some(path) => Some(crate::load::script::load_script(path)?),
        None => None,
    };
    let url = match (&args.url, script.as_ref().and_then(|s| s.url.as_ref())) {
        (Some(url), _) => url.clone(),
        (None, Some(url)) => url.clone(),
        (None, None) => {
            return Err(invalid(
                "--url",
                if script.is_some() {
                    "missing: give --url or `url:` in the script".into()
                } else {
                    "missing: give the WebSocket URL to load, e.g. --url ws://127.0.0.1:8080/"
                        .into()
                },
            ))
        }
    };
    let mut cfg = LoadConfig::new(url, args.connections, args.rate, args.duration);
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(invalid(
            "--rate",
            format!("`{}` must be 0 or more messages per second", args.rate),
        ));
    }
    if let Some(path) = &args.scenario {
        cfg.phases = scenario::load_scenario(path, args.rate)?;
        cfg.initial_connections = 0;
    }
    cfg.ramp_rate = args.ramp_rate;
    cfg.message_bytes = args.message_bytes;
    cfg.mode = mode;
    cfg.reconnect = args.reconnect;
    cfg.subprotocol = args
        .subprotocol
        .clone()
        .or_else(|| script.as_ref().and_then(|s| s.subprotocol.clone()));
    if let Some(s) = &script {
        cfg.headers.extend(s.headers.iter().cloned());
    }
    cfg.script = script;
    for h in &args.headers {
        let Some((k, v)) = h.split_once(':') else {
            return Err(invalid(
                "--header",
                format!("`{h}` is not K:V (e.g. --header 'Authorization: Bearer x')"),
            ));
        };
        cfg.headers
            .push((k.trim().to_string(), v.trim().to_string()));
    }
    cfg.slos = args
        .verdict
        .slo
        .iter()
        .map(|e| Slo::parse(e))
        .collect::<Result<_, _>>()?;
    if let Some(path) = &args.baseline {
        let text = std::fs::read_to_string(path).map_err(|err| {
            invalid(
                "--baseline",
                format!("cannot read {}: {err}", path.display()),
            )
        })?;
        let base: Report = serde_json::from_str(&text).map_err(|err| {
            invalid(
                "--baseline",
                format!("{} is not a wsfault load report: {err}", path.display()),
            )
        })?;
        cfg.baseline = Some(base);
    }
    cfg.max_regression_pct = args.max_regression;
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `wsfault load`: the verdict decides the exit status (1 on a failed
/// verdict, 2 on bad flags, an unparsable SLO or a bad scenario).
pub async fn run_command(args: LoadArgs) -> anyhow::Result<()> {
    let cfg = load_config(&args).map_err(|err| UsageError(err.to_string()))?;
    let cancel = cfg.cancel.clone();
    tokio::spawn(async move {
        crate::shutdown::shutdown_signal().await;
        tracing::warn!("interrupted: stopping the load test (still reporting)");
        cancel.cancel();
    });
    let report = crate::load::run(cfg).await?;
    print!("{}", render_table(&report));
    write_verdict(&report, &args.verdict)
}

/// Writes `--report` and `--junit` (when given) and turns the verdict into
/// the exit status: `Ok` on a pass, a [`FailedError`] (exit 1) otherwise.
pub(crate) fn write_verdict(report: &Report, files: &VerdictArgs) -> anyhow::Result<()> {
    if let Some(path) = &files.report {
        let json = serde_json::to_string_pretty(report).context("serializing the report")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("--report: cannot write {}", path.display()))?;
    }
    if let Some(path) = &files.junit {
        std::fs::write(path, crate::load::report::junit_xml(report))
            .with_context(|| format!("--junit: cannot write {}", path.display()))?;
    }
    if report.pass {
        Ok(())
    } else {
        Err(FailedError(format!("verdict FAIL: {}", report.failures.join("; "))).into())
    }
}
